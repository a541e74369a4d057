//! What must hold for any input to arng's three parsers of untrusted text: the reading
//! and heartbeat payloads (`domain::payload`), MQTT topics (`domain::topic`) and the
//! annotated CSV that InfluxDB answers queries with (`store::csv`).
//!
//! Each check feeds one input to a parser and panics when an invariant breaks; a panic
//! inside the parser is a failure too. Past "no panic", the checks hold the parsers to
//! what their callers rely on: what is accepted is in range and re-encodes to itself,
//! errors stay short whatever the input size (they end up in logs and dead-letter
//! records), a topic's kind is told apart by exactly one subscription filter, and the
//! CSV reader reads back what a writer of the format produces.
//!
//! Two drivers share this file: the libFuzzer targets in `fuzz/fuzz_targets/`
//! (`cargo +nightly fuzz run <target>`, coverage-guided) and the bounded stable driver
//! `tests/fuzz/main.rs` (run by scripts/test.sh), which includes it with `#[path]`. So
//! it names only `arng`, std and crates that arng itself depends on, never `crate::`.
//!
//! Each check returns a short outcome label ("ok", or the error's reason and the shape
//! of its message). libFuzzer ignores it; the stable driver, which has no coverage
//! instrumentation, uses it as a coarse signal of which inputs are worth mutating.

use arng::domain::payload::{format_timestamp, MAX_PAYLOAD_BYTES};
use arng::domain::topic::{
    filter_matches, ALERTS_FILTER, HEARTBEATS_FILTER, READINGS_FILTER, STATUS_FILTER,
    THRESHOLDS_TOPIC,
};
use arng::domain::{Heartbeat, Reading, SensorId, Topic, Zone};
use arng::store::csv::{self as annotated, Record, Value};
use chrono::{DateTime, Utc};

/// A fuzz target's body: feeds one input, panics on a broken invariant, returns the
/// outcome label.
pub type Check = fn(&[u8]) -> String;

/// The fuzz targets by name, as the stable driver runs them and as `fuzz/Cargo.toml`
/// names its binaries (and `fuzz/seeds/<name>/`, `fuzz/dict/<name>.dict`).
pub const TARGETS: [(&str, Check); 3] = [
    ("payload", payload),
    ("topic", topic),
    ("annotated_csv", annotated_csv),
];

/// Longest error message accepted for any input. Messages quote a shortened, escaped
/// piece of the input (up to 200 characters of a topic, 40 of a name or a field); each
/// character may escape to ten (`\u{10ffff}`), so a few KiB is the honest bound. What
/// matters is that it does not grow with the input.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// The sub-filter of dead letters (ingest publishes them; nothing in `topic` names it).
const DEADLETTER_FILTER: &str = "entrepot/deadletter/+";

/// Readings and heartbeats, parsed as if received on `entrepot/nord/s1/v1` and
/// `entrepot/heartbeat/nord`.
pub fn payload(data: &[u8]) -> String {
    let zone = Zone::new("nord").unwrap();
    let sensor = SensorId::new("s1").unwrap();
    let reading = Reading::parse(&zone, &sensor, data);
    let heartbeat = Heartbeat::parse(&zone, data);

    let oversize = data.len() > MAX_PAYLOAD_BYTES;
    for (what, err) in [
        ("reading", reading.as_ref().err()),
        ("heartbeat", heartbeat.as_ref().err()),
    ] {
        let Some(err) = err else {
            assert!(!oversize, "{what}: accepted {} bytes", data.len());
            continue;
        };
        assert_eq!(
            err.reason() == "oversize",
            oversize,
            "{what}: {} bytes refused as {err}",
            data.len()
        );
        assert_short(&err.to_string());
    }

    if let Ok(r) = &reading {
        check_reading(&zone, &sensor, r);
    }
    if let Ok(h) = &heartbeat {
        check_heartbeat(&zone, h);
    }
    let label = |r: Result<(), &arng::domain::PayloadError>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => outcome(e.reason(), e),
    };
    format!(
        "{}|{}",
        label(reading.as_ref().map(|_| ())),
        label(heartbeat.as_ref().map(|_| ()))
    )
}

fn check_reading(zone: &Zone, sensor: &SensorId, r: &Reading) {
    assert_eq!((&r.zone, &r.sensor), (zone, sensor));
    assert_in_range("temp", r.temp, arng::domain::payload::TEMP_RANGE);
    assert_in_range("hum", r.hum, arng::domain::payload::HUM_RANGE);
    assert_timestamp(r.timestamp);

    // What ingest accepts, arng's own encoder must write back in a form ingest accepts,
    // losing only what the encoding rounds away (2 decimals, milliseconds).
    let json = r.to_json();
    assert!(
        json.len() <= MAX_PAYLOAD_BYTES,
        "own encoding too long: {json}"
    );
    let again = Reading::parse(zone, sensor, json.as_bytes())
        .unwrap_or_else(|e| panic!("own encoding {json} of {r:?} refused: {e}"));
    assert_eq!(
        (again.seq, again.alert_level),
        (r.seq, r.alert_level),
        "{json}"
    );
    assert_close("temp", again.temp, r.temp, &json);
    assert_close("hum", again.hum, r.hum, &json);
    assert_truncated_to_millis(again.timestamp, r.timestamp, &json);
    // One encoding is a fixed point: encoding the re-read value changes nothing.
    assert_eq!(again.to_json(), json, "re-encoding {again:?}");
}

fn check_heartbeat(zone: &Zone, h: &Heartbeat) {
    assert_eq!(&h.zone, zone);
    assert_timestamp(h.timestamp);
    let json = h.to_json();
    let again = Heartbeat::parse(zone, json.as_bytes())
        .unwrap_or_else(|e| panic!("own encoding {json} of {h:?} refused: {e}"));
    assert_eq!(again.sensors, h.sensors, "{json}");
    assert_truncated_to_millis(again.timestamp, h.timestamp, &json);
    assert_eq!(again.to_json(), json, "re-encoding {again:?}");
}

fn assert_in_range(field: &str, x: f64, (min, max): (f64, f64)) {
    assert!(
        x.is_finite() && (min..=max).contains(&x),
        "{field} {x} accepted outside {min}..={max}"
    );
}

/// Within the 2-decimal rounding of the encoder (and a float's error on top).
fn assert_close(field: &str, encoded: f64, original: f64, json: &str) {
    assert!(
        (encoded - original).abs() <= 0.005 + 1e-9,
        "{field}: {original} re-read as {encoded} from {json}"
    );
}

fn assert_truncated_to_millis(encoded: DateTime<Utc>, original: DateTime<Utc>, json: &str) {
    let lost = original - encoded;
    assert!(
        lost >= chrono::TimeDelta::zero() && lost < chrono::TimeDelta::milliseconds(1),
        "timestamp {} re-read as {} from {json}",
        format_timestamp(original),
        format_timestamp(encoded)
    );
}

fn assert_timestamp(t: DateTime<Utc>) {
    let min = "2000-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let max = "2100-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    assert!(
        min <= t && t < max,
        "timestamp {t:?} accepted outside 2000..2100"
    );
}

fn assert_short(message: &str) {
    assert!(
        message.len() <= MAX_ERROR_MESSAGE,
        "error message of {} bytes: {}…",
        message.len(),
        message.chars().take(300).collect::<String>()
    );
}

/// A concrete topic as ingest receives it (MQTT topics are UTF-8; invalid bytes are
/// replaced, as a lossy decoder would), and the wildcard matcher on the same text.
pub fn topic(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let result = Topic::parse(&text);
    match &result {
        Ok(t) => check_topic(&text, t),
        Err(e) => assert_short(&e.to_string()),
    }
    // A filter and a topic: the input split at its first newline.
    if let Some((filter, concrete)) = text.split_once('\n') {
        check_filter_laws(filter, concrete);
    }
    check_filter_laws(&text, &text);
    match result {
        Ok(t) => format!("ok:{}", topic_kind(&t)),
        Err(e) => outcome(e.reason(), &e),
    }
}

fn topic_kind(t: &Topic) -> &'static str {
    match t {
        Topic::Reading { .. } => "reading",
        Topic::Heartbeat { .. } => "heartbeat",
        Topic::Alert { .. } | Topic::SensorAlert { .. } => "alert",
        Topic::Status { .. } => "status",
        Topic::Thresholds => "thresholds",
        Topic::DeadLetter { .. } => "deadletter",
    }
}

fn check_topic(text: &str, t: &Topic) {
    // Every component was validated, nothing normalised: the topic prints as received.
    assert_eq!(t.to_string(), text, "{t:?}");
    // ingest subscribes per kind; each valid topic must be seen by exactly its filter.
    let filters = [
        ("reading", READINGS_FILTER),
        ("heartbeat", HEARTBEATS_FILTER),
        ("alert", ALERTS_FILTER),
        ("status", STATUS_FILTER),
        ("thresholds", THRESHOLDS_TOPIC),
        ("deadletter", DEADLETTER_FILTER),
    ];
    let matching: Vec<&str> = filters
        .iter()
        .filter(|(_, f)| filter_matches(f, text))
        .map(|(kind, _)| *kind)
        .collect();
    assert_eq!(matching, [topic_kind(t)], "filters matching {text:?}");
    // And the per-zone filter of a reading's zone sees it.
    if let Topic::Reading { zone, .. } = t {
        assert!(filter_matches(
            &arng::domain::topic::zone_readings_filter(zone),
            text
        ));
    }
}

/// How many levels of a topic `check_filter_laws` replaces by wildcards, one at a time.
const MAX_LEVELS_REPLACED: usize = 12;

/// MQTT 3.1.1 §4.7 on `filter` and `concrete`.
fn check_filter_laws(filter: &str, concrete: &str) {
    let system = concrete.starts_with('$');
    assert!(filter_matches(concrete, concrete), "{concrete:?} itself");
    assert_eq!(filter_matches("#", concrete), !system, "# on {concrete:?}");
    let levels: Vec<&str> = concrete.split('/').collect();
    // Any level replaced by `+`, or any tail by `#` (parent level included), still
    // matches, except that a wildcard first level never matches a `$` topic. Only the
    // first levels: each try rebuilds the topic, and real topics have a handful.
    for i in 0..levels.len().min(MAX_LEVELS_REPLACED) {
        let mut plus = levels.clone();
        plus[i] = "+";
        let hash = [&levels[..i], &["#"]].concat();
        let expected = !(system && i == 0);
        assert_eq!(
            filter_matches(&plus.join("/"), concrete),
            expected,
            "{plus:?} on {concrete:?}"
        );
        assert_eq!(
            filter_matches(&hash.join("/"), concrete),
            expected,
            "{hash:?} on {concrete:?}"
        );
    }
    assert!(
        filter_matches(&format!("{concrete}/#"), concrete),
        "parent level of {concrete:?}"
    );
    // Without wildcards, a filter matches only the very same topic.
    if !filter.split('/').any(|l| l == "+" || l == "#") {
        assert_eq!(
            filter_matches(filter, concrete),
            filter == concrete,
            "{filter:?} on {concrete:?}"
        );
    }
}

/// An annotated CSV body, as `store::query` reads it (the body is decoded lossily).
pub fn annotated_csv(data: &[u8]) -> String {
    let body = String::from_utf8_lossy(data);
    let result = annotated::parse(&body);
    let records = match &result {
        Ok(records) => records,
        // Labelled by kind and type only: the messages quote column names and
        // InfluxDB's error text, which would make every input an outcome of its own.
        Err(annotated::CsvError::Query(_)) => return "query".into(),
        Err(annotated::CsvError::Malformed { .. }) => return "malformed".into(),
        Err(annotated::CsvError::BadCell { datatype, .. }) => {
            let datatype = if datatype.starts_with("dateTime") {
                "dateTime"
            } else {
                datatype
            };
            return format!("bad_cell:{datatype}");
        }
    };
    // Each record needs a line of its own after a header line.
    let terminators = body.bytes().filter(|b| matches!(b, b'\n' | b'\r')).count();
    assert!(
        records.len() <= terminators,
        "{} records from {terminators} line ends",
        records.len()
    );
    for r in records {
        // Column 0 (annotations) and unnamed columns are never returned.
        assert!(!r.values.contains_key(""), "unnamed column in {r:?}");
        assert!(
            !(r.values.contains_key("error") && r.values.contains_key("reference")),
            "an error block read as data: {r:?}"
        );
    }
    // What the reader returns, written back as annotated CSV (one block per record,
    // every type the reader knows), reads back the same.
    let rewritten = write_annotated(records);
    let again = annotated::parse(&rewritten)
        .unwrap_or_else(|e| panic!("re-reading {rewritten:?}: {e}\nrecords {records:?}"));
    assert!(
        again.len() == records.len() && again.iter().zip(records).all(|(a, b)| same_record(a, b)),
        "re-read\n{again:?}\nfrom {rewritten:?}\ninstead of\n{records:?}"
    );
    // Outcome: how many records, and which cell types were read.
    let n = records.len();
    let mut types: Vec<&str> = records
        .iter()
        .flat_map(|r| r.values.values())
        .map(|v| match v {
            Value::Null => "null",
            Value::String(_) => "string",
            Value::Long(_) => "long",
            Value::Unsigned(_) => "unsigned",
            Value::Double(_) => "double",
            Value::Bool(_) => "bool",
            Value::Time(_) => "time",
            Value::Duration(_) => "duration",
        })
        .collect();
    types.sort_unstable();
    types.dedup();
    let n = if n < 4 { n.to_string() } else { "many".into() };
    format!("ok:{n}:{}", types.join(","))
}

/// Annotated CSV for `records`, one block each, in InfluxDB's shape: `#datatype`
/// annotation, header, row; column 0 empty.
fn write_annotated(records: &[Record]) -> String {
    let mut blocks = Vec::new();
    for r in records {
        let mut w = csv::WriterBuilder::new()
            .flexible(true)
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        let mut datatypes = vec!["#datatype".to_owned()];
        let mut header = vec![String::new()];
        let mut row = vec![String::new()];
        for (name, value) in &r.values {
            let (datatype, cell) = cell_text(value);
            datatypes.push(datatype.to_owned());
            header.push(name.clone());
            row.push(cell);
        }
        w.write_record(&datatypes).unwrap();
        w.write_record(&header).unwrap();
        w.write_record(&row).unwrap();
        blocks.push(String::from_utf8(w.into_inner().unwrap()).unwrap());
    }
    // A blank line between blocks, as InfluxDB writes.
    blocks.join("\r\n")
}

fn cell_text(value: &Value) -> (&'static str, String) {
    match value {
        // Null is an empty cell of any type but string.
        Value::Null => ("long", String::new()),
        Value::String(s) => ("string", s.clone()),
        Value::Long(x) => ("long", x.to_string()),
        Value::Unsigned(x) => ("unsignedLong", x.to_string()),
        Value::Double(x) if x.is_nan() => ("double", "NaN".into()),
        Value::Double(x) if *x == f64::INFINITY => ("double", "+Inf".into()),
        Value::Double(x) if *x == f64::NEG_INFINITY => ("double", "-Inf".into()),
        Value::Double(x) => ("double", format!("{x:?}")),
        Value::Bool(b) => ("boolean", b.to_string()),
        Value::Time(t) => ("dateTime:RFC3339Nano", rfc3339(t)),
        Value::Duration(d) => ("duration", d.clone()),
    }
}

/// RFC 3339 for `t`. The reader accepts times whose UTC year has five digits or is
/// negative (`9999-12-31T23:59:59-23:59`); RFC 3339 has no such years, so those are
/// written at the offset that brings them back to four digits.
fn rfc3339(t: &DateTime<Utc>) -> String {
    use chrono::{Datelike, FixedOffset};
    let format = |t: DateTime<FixedOffset>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let day = 24 * 3600 - 60;
    match t.year() {
        0..=9999 => format(t.fixed_offset()),
        y if y > 9999 => format(t.with_timezone(&FixedOffset::west_opt(day).unwrap())),
        _ => format(t.with_timezone(&FixedOffset::east_opt(day).unwrap())),
    }
}

/// Equality, except that NaN equals NaN (the reader keeps Flux's NaN as a double).
fn same_record(a: &Record, b: &Record) -> bool {
    a.values.len() == b.values.len()
        && a.values.iter().zip(&b.values).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (va, vb) {
                    (Value::Double(x), Value::Double(y)) => x == y || (x.is_nan() && y.is_nan()),
                    _ => va == vb,
                }
        })
}

/// An error's reason and its message's shape: digits and quoted text removed,
/// so that "expected `,` at line 1 column 7" and "... column 9" are one outcome.
fn outcome(reason: &str, err: &dyn std::fmt::Display) -> String {
    let mut shape = String::from(reason);
    shape.push(':');
    let mut quoted = None;
    let mut chars = err.to_string().chars().collect::<Vec<_>>().into_iter();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            // Inside quotes, an escaped character is part of the quoted text.
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), _) if c == q => quoted = None,
            (None, '"' | '`' | '\'') => quoted = Some(c),
            _ if quoted.is_some() || c.is_ascii_digit() => {}
            _ => shape.push(c),
        }
        if shape.len() > 80 {
            break;
        }
    }
    shape
}
