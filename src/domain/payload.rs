//! The JSON payloads: a sensor reading and a zone heartbeat, read liberally in form and
//! strictly in values.
//!
//! A reading, as arng publishes it on `entrepot/<zone>/<sensor>/v1`:
//!
//! ```json
//! {"version":1,"zone":"nord","sensor":"s1","seq":42,
//!  "timestamp":"2026-11-28T09:15:02.125Z","temp":21.4,"hum":44.9,"alert_level":"normal"}
//! ```
//!
//! `temp` and `hum` are the only fields a reading cannot lack. Other producers (the
//! lab's students' paho-mqtt sensors, the lab's own `mosquitto_pub` test message) write
//! the other fields in other forms; the default [`ReadPolicy`] accepts them and says
//! which [`Normalized`] form it read, so ingest can count and log sloppy producers:
//!
//! - `version`: `1`, `"1"`, `"1.0"`, `1.0`, or absent (then 1);
//! - `alert_level`: `normal`/`warning`/`critical` in any letter case, the codes
//!   0/1/2, or absent (then derived from the zone's thresholds, see
//!   [`Reading::apply_thresholds`]);
//! - `timestamp`: RFC 3339, ISO 8601 without offset (read as UTC), seconds or
//!   milliseconds since the epoch (told apart by magnitude), or absent (then the
//!   receiver's clock at receipt, flagged in [`Provenance`]).
//!
//! `ReadPolicy { strict: true, .. }` (`arng ingest --strict-payload`) accepts only
//! arng's own version-1 contract: integer version, lowercase level, RFC 3339 or epoch
//! seconds, all present. Values are strict under both policies: out-of-range numbers,
//! integers InfluxDB cannot store, duplicate keys, names the topic rules refuse, and
//! timestamps further in the future than [`ReadPolicy::future_margin`] are refused.
//! `zone` and `sensor` are optional but must equal the topic's when present (the topic
//! is what the broker's ACL vouches for); `seq`, a per-sensor counter, lets consumers
//! detect loss and duplicates. Unknown fields are ignored so that producers can add
//! fields without breaking older consumers.
//!
//! Parsing works on untrusted bytes: it checks the size first, never panics, and says
//! precisely what is wrong in a bounded message. [`PayloadError::reason`] gives a
//! stable label for counters and dead letters, [`PayloadError::field`] the field.
//! Pure: the receiver's clock comes in as an argument.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::json::{short_number, JsonError};
use super::names::{NameError, SensorId, Zone};
use super::thresholds::Thresholds;

mod fields;

// Fields is also how `arng check-lab` judges each field of a team's payload alone.
pub(crate) use fields::{check_not_future, parse_object};
pub(crate) use fields::{type_name, Fields};

/// Largest payload accepted, in bytes. A reading is about 170 bytes; the limit leaves
/// room for extra fields while keeping a misbehaving client from costing memory.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// The payload version this build reads and writes.
pub const PAYLOAD_VERSION: u64 = 1;
/// Physical range accepted for temperatures, in °C (wider than any warehouse, narrower
/// than a broken sensor's 1e38).
pub const TEMP_RANGE: (f64, f64) = (-60.0, 100.0);
/// Physical range accepted for relative humidity, in %.
pub const HUM_RANGE: (f64, f64) = (0.0, 100.0);
/// Default of [`ReadPolicy::future_margin`]: how far ahead of the receiver's clock a
/// timestamp may be. Five minutes absorbs a sensor clock that NTP has not corrected
/// yet; a reading dated 2099 is a broken clock that would otherwise pin a zone's
/// `last_seen` in the future and hide its silence.
pub const DEFAULT_FUTURE_MARGIN: Duration = Duration::from_secs(300);

/// Severity carried by a reading and by alerts. Ordered: `Normal < Warning < Critical`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AlertLevel {
    Normal,
    Warning,
    Critical,
}

impl AlertLevel {
    pub const ALL: [AlertLevel; 3] = [
        AlertLevel::Normal,
        AlertLevel::Warning,
        AlertLevel::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::Normal => "normal",
            AlertLevel::Warning => "warning",
            AlertLevel::Critical => "critical",
        }
    }

    /// Numeric code stored in InfluxDB (0, 1, 2) so that dashboards can plot and
    /// aggregate it (`max()` of a window is its worst level).
    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(code: i64) -> Option<AlertLevel> {
        AlertLevel::ALL.get(usize::try_from(code).ok()?).copied()
    }

    pub fn parse(s: &str) -> Option<AlertLevel> {
        AlertLevel::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl std::fmt::Display for AlertLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a reading's time and level came from, when not from its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Provenance {
    /// The payload had no timestamp: `timestamp` is the receiver's clock at receipt
    /// (ingest's, for the stored point). A redelivery of such a reading is a new point.
    pub stamped_on_receipt: bool,
    /// The payload had no `alert_level`: it is derived from the zone's thresholds.
    pub level_derived: bool,
}

/// One validated temperature/humidity reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub zone: Zone,
    pub sensor: SensorId,
    /// Per-sensor sequence number, if the producer sends one.
    pub seq: Option<u64>,
    pub timestamp: DateTime<Utc>,
    /// Temperature in °C.
    pub temp: f64,
    /// Relative humidity in %.
    pub hum: f64,
    pub alert_level: AlertLevel,
    pub provenance: Provenance,
}

/// A zone heartbeat, as published (retained) on `entrepot/heartbeat/<zone>`.
///
/// The lab's own heartbeat, `{"zone": "nord", "timestamp": 1732780800.5}`, is valid:
/// `version` defaults to 1 here, and `sensors` to none.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub zone: Zone,
    pub timestamp: DateTime<Utc>,
    /// How many sensors the publisher runs in this zone, if it says.
    pub sensors: Option<u64>,
}

/// How payloads are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPolicy {
    /// Accept only arng's own version-1 forms (`arng ingest --strict-payload`).
    pub strict: bool,
    /// Timestamps later than the receiver's clock plus this are refused
    /// (`future_timestamp`).
    pub future_margin: Duration,
}

impl Default for ReadPolicy {
    fn default() -> ReadPolicy {
        ReadPolicy {
            strict: false,
            future_margin: DEFAULT_FUTURE_MARGIN,
        }
    }
}

/// A form outside arng's own contract that the liberal reader accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// `version`, `alert_level` or `timestamp`.
    pub field: &'static str,
    /// Stable label of the form (docs/data-model.md, "Accepted forms"): `string`,
    /// `float`, `absent`, `case`, `code`, `no_offset`, `epoch_ms`.
    pub how: &'static str,
    /// The value as given, short and quoted (`absent` when there was none).
    pub given: String,
}

/// A payload read, with the normalisations it needed (usually none).
#[derive(Debug, Clone, PartialEq)]
pub struct Read<T> {
    pub value: T,
    pub normalized: Vec<Normalized>,
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is {len} bytes, more than the {max}-byte limit")]
    Oversize { len: usize, max: usize },
    #[error("payload is not valid JSON: {0}")]
    Malformed(String),
    #[error("payload is JSON but not an object")]
    NotAnObject,
    #[error("key {0} appears twice in the payload (refused rather than guess which one counts)")]
    DuplicateKey(String),
    #[error("field {0:?} is missing")]
    Missing(&'static str),
    #[error("field {field:?} must be {expected}, got {got}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("field {field:?} is {}, outside the accepted range {}..={}", short_number(*.value), short_number(*.min), short_number(*.max))]
    OutOfRange {
        field: &'static str,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error(
        "field {field:?} is {value}, larger than {}, the largest integer InfluxDB stores",
        i64::MAX
    )]
    IntegerTooLarge { field: &'static str, value: String },
    #[error("field {field:?} is not a finite number")]
    NonFinite { field: &'static str },
    #[error("field \"timestamp\": {0}")]
    BadTimestamp(String),
    #[error("field \"timestamp\" is {timestamp}, {ahead_s} s ahead of the receiver's clock (the accepted margin is {margin_s} s: check the producer's clock)")]
    FutureTimestamp {
        timestamp: String,
        ahead_s: i64,
        margin_s: u64,
    },
    #[error(
        "field \"alert_level\" must be one of normal, warning, critical (or 0, 1, 2), got {0}"
    )]
    BadAlertLevel(String),
    #[error("payload version {0} is not supported (this build reads version {PAYLOAD_VERSION})")]
    UnsupportedVersion(String),
    #[error("field {field:?} says {payload:?} but the topic says {topic:?}")]
    TopicMismatch {
        field: &'static str,
        payload: String,
        topic: String,
    },
    #[error("field {field:?}: {source}")]
    Name {
        field: &'static str,
        #[source]
        source: NameError,
    },
    #[error("invalid alert: {0}")]
    BadAlert(String),
}

impl PayloadError {
    /// A short, stable label for metrics, logs and dead-letter records.
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::Oversize { .. } => "oversize",
            PayloadError::Malformed(_) => "malformed_json",
            PayloadError::NotAnObject => "not_an_object",
            PayloadError::DuplicateKey(_) => "duplicate_key",
            PayloadError::Missing(_) => "missing_field",
            PayloadError::WrongType { .. } => "wrong_type",
            PayloadError::OutOfRange { .. } | PayloadError::IntegerTooLarge { .. } => {
                "out_of_range"
            }
            PayloadError::NonFinite { .. } => "non_finite",
            PayloadError::BadTimestamp(_) => "bad_timestamp",
            PayloadError::FutureTimestamp { .. } => "future_timestamp",
            PayloadError::BadAlertLevel(_) => "bad_alert_level",
            PayloadError::UnsupportedVersion(_) => "unsupported_version",
            PayloadError::TopicMismatch { .. } => "topic_mismatch",
            PayloadError::Name { .. } => "invalid_name",
            PayloadError::BadAlert(_) => "invalid_alert",
        }
    }

    /// The payload field at fault, when one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            PayloadError::Missing(field)
            | PayloadError::WrongType { field, .. }
            | PayloadError::OutOfRange { field, .. }
            | PayloadError::IntegerTooLarge { field, .. }
            | PayloadError::NonFinite { field }
            | PayloadError::TopicMismatch { field, .. }
            | PayloadError::Name { field, .. } => Some(field),
            PayloadError::BadTimestamp(_) | PayloadError::FutureTimestamp { .. } => {
                Some("timestamp")
            }
            PayloadError::BadAlertLevel(_) => Some("alert_level"),
            PayloadError::UnsupportedVersion(_) => Some("version"),
            PayloadError::Oversize { .. }
            | PayloadError::Malformed(_)
            | PayloadError::NotAnObject
            | PayloadError::DuplicateKey(_)
            | PayloadError::BadAlert(_) => None,
        }
    }
}

impl From<JsonError> for PayloadError {
    fn from(e: JsonError) -> PayloadError {
        match e {
            JsonError::Oversize { len, max } => PayloadError::Oversize { len, max },
            JsonError::Malformed(m) => PayloadError::Malformed(m),
            JsonError::NotAnObject => PayloadError::NotAnObject,
            JsonError::DuplicateKey(k) => PayloadError::DuplicateKey(k),
        }
    }
}

impl Reading {
    /// Reads a reading received on the topic of `zone`/`sensor` at `now` (the
    /// receiver's clock), under `policy`.
    pub fn read(
        zone: &Zone,
        sensor: &SensorId,
        bytes: &[u8],
        policy: &ReadPolicy,
        now: DateTime<Utc>,
    ) -> Result<Read<Reading>, PayloadError> {
        let map = parse_object(bytes)?;
        let mut f = Fields::new(&map, policy, now);
        f.version(None)?;
        f.matching_name("zone", zone.as_str())?;
        f.matching_name("sensor", sensor.as_str())?;
        let (timestamp, stamped_on_receipt) = f.timestamp()?;
        let temp = f.number("temp", TEMP_RANGE)?;
        let hum = f.number("hum", HUM_RANGE)?;
        let level = f.alert_level()?;
        let seq = f.unsigned("seq")?;
        let mut reading = Reading {
            zone: zone.clone(),
            sensor: sensor.clone(),
            seq,
            timestamp,
            temp,
            hum,
            alert_level: level.unwrap_or(AlertLevel::Normal),
            provenance: Provenance {
                stamped_on_receipt,
                level_derived: level.is_none(),
            },
        };
        // Until the receiver applies the thresholds in force, the defaults.
        reading.apply_thresholds(&Thresholds::default());
        Ok(Read {
            value: reading,
            normalized: f.normalized,
        })
    }

    /// [`Reading::read`] with the default (liberal) policy, now.
    pub fn parse(zone: &Zone, sensor: &SensorId, bytes: &[u8]) -> Result<Reading, PayloadError> {
        Reading::read(zone, sensor, bytes, &ReadPolicy::default(), Utc::now()).map(|r| r.value)
    }

    /// A reading whose payload had no `alert_level` takes the level `t` gives its
    /// zone's values (the worse of temperature and humidity); others keep theirs.
    pub fn apply_thresholds(&mut self, t: &Thresholds) {
        if self.provenance.level_derived {
            self.alert_level = t.level(&self.zone, self.temp, self.hum);
        }
    }

    /// The JSON payload, as a sensor publishes it.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "version": PAYLOAD_VERSION,
            "zone": self.zone,
            "sensor": self.sensor,
            "timestamp": format_timestamp(self.timestamp),
            "temp": round2(self.temp),
            "hum": round2(self.hum),
            "alert_level": self.alert_level,
        });
        if let Some(seq) = self.seq {
            v["seq"] = seq.into();
        }
        v.to_string()
    }
}

impl Heartbeat {
    /// Reads a heartbeat received on `entrepot/heartbeat/<zone>` at `now`. `version`
    /// may always be absent (the lab's heartbeat has none); a heartbeat without a
    /// timestamp (liberal policy) is dated at receipt.
    pub fn read(
        zone: &Zone,
        bytes: &[u8],
        policy: &ReadPolicy,
        now: DateTime<Utc>,
    ) -> Result<Read<Heartbeat>, PayloadError> {
        let map = parse_object(bytes)?;
        let mut f = Fields::new(&map, policy, now);
        f.version(Some(PAYLOAD_VERSION))?;
        f.matching_name("zone", zone.as_str())?;
        let (timestamp, _) = f.timestamp()?;
        let sensors = f.unsigned("sensors")?;
        Ok(Read {
            value: Heartbeat {
                zone: zone.clone(),
                timestamp,
                sensors,
            },
            normalized: f.normalized,
        })
    }

    /// [`Heartbeat::read`] with the default (liberal) policy, now.
    pub fn parse(zone: &Zone, bytes: &[u8]) -> Result<Heartbeat, PayloadError> {
        Heartbeat::read(zone, bytes, &ReadPolicy::default(), Utc::now()).map(|r| r.value)
    }

    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "version": PAYLOAD_VERSION,
            "zone": self.zone,
            "timestamp": format_timestamp(self.timestamp),
        });
        if let Some(n) = self.sensors {
            v["sensors"] = n.into();
        }
        v.to_string()
    }
}

/// RFC 3339 in UTC with millisecond precision, the form every arng payload uses.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Two decimals are below any real sensor's resolution and keep payloads short.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::Map;

    fn nord() -> Zone {
        Zone::new("nord").unwrap()
    }
    fn s1() -> SensorId {
        SensorId::new("s1").unwrap()
    }
    /// The receiver's clock in these tests: a few minutes after the sample readings.
    fn now() -> DateTime<Utc> {
        "2026-11-28T09:20:00Z".parse().unwrap()
    }
    fn strict() -> ReadPolicy {
        ReadPolicy {
            strict: true,
            ..ReadPolicy::default()
        }
    }
    fn read_with(policy: &ReadPolicy, s: &str) -> Result<Read<Reading>, PayloadError> {
        Reading::read(&nord(), &s1(), s.as_bytes(), policy, now())
    }
    fn parse(s: &str) -> Result<Reading, PayloadError> {
        read_with(&ReadPolicy::default(), s).map(|r| r.value)
    }

    const GOOD: &str = r#"{"version":1,"zone":"nord","sensor":"s1","seq":42,"timestamp":"2026-11-28T09:15:02.125Z","temp":21.4,"hum":44.9,"alert_level":"normal"}"#;

    #[test]
    fn parses_a_good_reading_under_both_policies() {
        for policy in [ReadPolicy::default(), strict()] {
            let read = read_with(&policy, GOOD).unwrap();
            assert!(read.normalized.is_empty(), "{:?}", read.normalized);
            let r = read.value;
            assert_eq!(r.seq, Some(42));
            assert_eq!(r.temp, 21.4);
            assert_eq!(r.hum, 44.9);
            assert_eq!(r.alert_level, AlertLevel::Normal);
            assert_eq!(r.provenance, Provenance::default());
            assert_eq!(format_timestamp(r.timestamp), "2026-11-28T09:15:02.125Z");
            // And it round-trips through our own encoder.
            assert_eq!(read_with(&policy, &r.to_json()).unwrap().value, r);
        }
    }

    #[test]
    fn accepts_epoch_seconds_and_offsets_in_strict_mode_too() {
        let r = read_with(&strict(), r#"{"version":1,"timestamp":1795850102.5,"temp":23.1,"hum":44.0,"alert_level":"critical","extra":"ignored"}"#).unwrap().value;
        assert_eq!(r.seq, None);
        assert_eq!(r.alert_level, AlertLevel::Critical);
        assert_eq!(r.timestamp.timestamp_millis(), 1_795_850_102_500);
        // Offsets other than Z are converted to UTC.
        let r = read_with(&strict(), r#"{"version":1,"timestamp":"2026-11-28T10:00:00+01:00","temp":1,"hum":2,"alert_level":"warning"}"#).unwrap().value;
        assert_eq!(format_timestamp(r.timestamp), "2026-11-28T09:00:00.000Z");
    }

    #[test]
    fn the_labs_test_message_is_a_reading_stamped_on_receipt() {
        // mosquitto_pub -t entrepot/nord/temp/v1 -m '{"temp":23.1,"hum":44.0}' -q 1
        let read = read_with(&ReadPolicy::default(), r#"{"temp":23.1,"hum":44.0}"#).unwrap();
        let r = &read.value;
        assert_eq!((r.temp, r.hum), (23.1, 44.0));
        assert_eq!(r.timestamp, now());
        assert_eq!(
            r.provenance,
            Provenance {
                stamped_on_receipt: true,
                level_derived: true
            }
        );
        assert_eq!(r.alert_level, AlertLevel::Normal);
        let hows: Vec<_> = read.normalized.iter().map(|n| (n.field, n.how)).collect();
        assert_eq!(
            hows,
            [
                ("version", "absent"),
                ("timestamp", "absent"),
                ("alert_level", "absent")
            ]
        );
        assert!(read.normalized.iter().all(|n| n.given == "absent"));
        // Under the strict contract it is refused, as before.
        let e = read_with(&strict(), r#"{"temp":23.1,"hum":44.0}"#).unwrap_err();
        assert_eq!((e.reason(), e.field()), ("missing_field", Some("version")));
    }

    #[test]
    fn a_derived_level_follows_the_thresholds_in_force() {
        let mut r = parse(r#"{"temp":27,"hum":40}"#).unwrap();
        assert_eq!(r.alert_level, AlertLevel::Warning, "default thresholds");
        let mut t = Thresholds::default();
        t.default.temp.warning_high = 28.0;
        r.apply_thresholds(&t);
        assert_eq!(r.alert_level, AlertLevel::Normal);
        t.default.temp.critical_high = 26.0;
        t.default.temp.warning_high = 24.0;
        r.apply_thresholds(&t);
        assert_eq!(r.alert_level, AlertLevel::Critical);
        // A level the sensor gave is the sensor's: thresholds never change it.
        let mut given = parse(r#"{"temp":27,"hum":40,"alert_level":"normal"}"#).unwrap();
        given.apply_thresholds(&t);
        assert_eq!(given.alert_level, AlertLevel::Normal);
    }

    /// One row of the "Accepted forms" table of docs/data-model.md: every row is read
    /// here, so the table cannot drift from the parser.
    struct FormRow {
        field: String,
        example: Option<String>,
        read_as: String,
        how: Option<String>,
    }

    fn accepted_forms() -> Vec<FormRow> {
        let doc = include_str!("../../docs/data-model.md");
        let table = doc
            .split("### Accepted forms")
            .nth(1)
            .expect("docs/data-model.md has a section \"### Accepted forms\"");
        let code = |cell: &str| {
            let c = cell.trim();
            (c != "–").then(|| c.trim_matches('`').to_owned())
        };
        table
            .lines()
            .skip_while(|l| !l.starts_with("| field"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').collect();
                assert_eq!(cells.len(), 5, "row {l:?}");
                FormRow {
                    field: code(cells[0]).unwrap(),
                    example: code(cells[2]),
                    read_as: cells[3].trim().trim_matches('`').to_owned(),
                    how: code(cells[4]),
                }
            })
            .collect()
    }

    #[test]
    fn every_row_of_the_accepted_forms_table_holds() {
        let rows = accepted_forms();
        assert!(rows.len() >= 14, "only {} rows", rows.len());
        for row in rows {
            let what = format!("{} = {:?}", row.field, row.example);
            // 27 °C is a warning under the default thresholds: a derived level shows.
            let mut json = String::from(r#"{"temp":27,"hum":40"#);
            if let Some(ex) = &row.example {
                json += &format!(r#","{}":{ex}"#, row.field);
            }
            json.push('}');
            let read = read_with(&ReadPolicy::default(), &json)
                .unwrap_or_else(|e| panic!("{what}: refused: {e}"));
            let r = &read.value;
            let shown = match row.field.as_str() {
                "version" => "1".to_owned(),
                "alert_level" if r.provenance.level_derived => "from the thresholds".into(),
                "alert_level" => r.alert_level.to_string(),
                "timestamp" if r.provenance.stamped_on_receipt => "time of receipt".into(),
                "timestamp" => format_timestamp(r.timestamp),
                other => panic!("unexpected field {other} in the table"),
            };
            assert_eq!(shown, row.read_as, "{what}");
            let how = read
                .normalized
                .iter()
                .find(|n| n.field == row.field)
                .map(|n| n.how.to_owned());
            assert_eq!(how, row.how, "{what}: {:?}", read.normalized);
            // Every normalised form is refused by the strict contract, and every form
            // without one is accepted by it (the other fields in arng's own form).
            let mut full: Map<String, serde_json::Value> = serde_json::from_str(
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","alert_level":"warning","temp":27,"hum":40}"#,
            )
            .unwrap();
            match &row.example {
                Some(ex) => {
                    full.insert(row.field.clone(), serde_json::from_str(ex).unwrap());
                }
                None => {
                    full.remove(&row.field);
                }
            }
            let full = serde_json::Value::Object(full).to_string();
            let strict_result = read_with(&strict(), &full);
            assert_eq!(
                strict_result.is_ok(),
                row.how.is_none(),
                "{what}: strict read of {full}: {strict_result:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_payloads_with_precise_reasons_under_both_policies() {
        let ts = r#""timestamp":"2026-11-28T09:15:02Z""#;
        let cases: Vec<(String, &str, &str)> = vec![
            (r#"{"version":1,"timestamp":"#.into(), "malformed_json", "not valid JSON"),
            ("".into(), "malformed_json", "not valid JSON"),
            ("[1,2]".into(), "not_an_object", "not an object"),
            (format!(r#"{{"version":1,{ts},"hum":1,"alert_level":"normal"}}"#), "missing_field", "\"temp\""),
            (format!(r#"{{"version":1,{ts},"temp":null,"hum":1,"alert_level":"normal"}}"#), "missing_field", "\"temp\""),
            (format!(r#"{{"version":1,{ts},"temp":"21.5","hum":1,"alert_level":"normal"}}"#), "wrong_type", "must be a number, got a string"),
            (format!(r#"{{"version":1,{ts},"temp":"NaN","hum":1,"alert_level":"normal"}}"#), "wrong_type", "\"temp\""),
            (format!(r#"{{"version":1,{ts},"temp":NaN,"hum":1,"alert_level":"normal"}}"#), "malformed_json", "JSON"),
            (format!(r#"{{"version":1,{ts},"temp":1e999,"hum":1,"alert_level":"normal"}}"#), "malformed_json", "JSON"),
            (format!(r#"{{"version":1,{ts},"temp":1e38,"hum":1,"alert_level":"normal"}}"#), "out_of_range", "is 1e38, outside the accepted range -60..=100"),
            (format!(r#"{{"version":1,{ts},"temp":20,"hum":-3,"alert_level":"normal"}}"#), "out_of_range", "\"hum\""),
            (format!(r#"{{"version":1,{ts},"temp":20,"hum":130,"alert_level":"normal"}}"#), "out_of_range", "\"hum\""),
            (format!(r#"{{"version":2,{ts},"temp":20,"hum":30,"alert_level":"normal"}}"#), "unsupported_version", "version 2"),
            (format!(r#"{{"version":1.5,{ts},"temp":20,"hum":30,"alert_level":"normal"}}"#), "unsupported_version", "1.5"),
            (r#"{"version":1,"timestamp":"yesterday","temp":20,"hum":30,"alert_level":"normal"}"#.into(), "bad_timestamp", "RFC 3339"),
            (r#"{"version":1,"timestamp":0,"temp":20,"hum":30,"alert_level":"normal"}"#.into(), "bad_timestamp", "outside"),
            (r#"{"version":1,"timestamp":1e300,"temp":20,"hum":30,"alert_level":"normal"}"#.into(), "bad_timestamp", "out of range"),
            (r#"{"version":1,"timestamp":true,"temp":20,"hum":30,"alert_level":"normal"}"#.into(), "wrong_type", "\"timestamp\""),
            (r#"{"version":1,"timestamp":"2099-12-31T23:59:59Z","temp":20,"hum":30,"alert_level":"normal"}"#.into(), "future_timestamp", "ahead of the receiver's clock"),
            (format!(r#"{{"version":1,{ts},"temp":20,"hum":30,"alert_level":"panic"}}"#), "bad_alert_level", "panic"),
            (format!(r#"{{"version":1,"zone":"sud",{ts},"temp":20,"hum":30,"alert_level":"normal"}}"#), "topic_mismatch", "topic says \"nord\""),
            (format!(r#"{{"version":1,"zone":"nord\") |> drop(",{ts},"temp":20,"hum":30,"alert_level":"normal"}}"#), "topic_mismatch", "zone"),
            (format!(r#"{{"version":1,"sensor":7,{ts},"temp":20,"hum":30,"alert_level":"normal"}}"#), "wrong_type", "sensor"),
            (format!(r#"{{"version":1,"seq":-1,{ts},"temp":20,"hum":30,"alert_level":"normal"}}"#), "wrong_type", "\"seq\""),
            (format!(r#"{{"version":1,"seq":1.5,{ts},"temp":20,"hum":30,"alert_level":"normal"}}"#), "wrong_type", "\"seq\""),
            (format!(r#"{{"version":1,"seq":18446744073709551615,{ts},"temp":20,"hum":30,"alert_level":"normal"}}"#), "out_of_range", "18446744073709551615, larger than 9223372036854775807"),
            (format!(r#"{{"version":1,"seq":9223372036854775808,{ts},"temp":20,"hum":30,"alert_level":"normal"}}"#), "out_of_range", "\"seq\""),
            (format!(r#"{{"version":1,"seq":1e20,{ts},"temp":20,"hum":30,"alert_level":"normal"}}"#), "out_of_range", "is 1e20, larger"),
            (format!(r#"{{"version":1,{ts},"temp":20,"hum":30,"temp":99,"alert_level":"normal"}}"#), "duplicate_key", "key \"temp\" appears twice"),
        ];
        for policy in [ReadPolicy::default(), strict()] {
            for (input, reason, needle) in &cases {
                match read_with(&policy, input) {
                    Ok(r) => panic!("accepted {input}: {r:?}"),
                    Err(e) => {
                        assert_eq!(e.reason(), *reason, "{input}: {e}");
                        assert!(
                            e.to_string().contains(needle),
                            "{input}: {e} lacks {needle:?}"
                        );
                        assert!(e.to_string().len() < 300, "{e}");
                    }
                }
            }
        }
        // The largest integer InfluxDB stores is accepted as it is.
        let r = parse(&format!(
            r#"{{"seq":9223372036854775807,{ts},"temp":20,"hum":30}}"#
        ))
        .unwrap();
        assert_eq!(r.seq, Some(i64::MAX as u64));
    }

    #[test]
    fn values_in_errors_are_short() {
        let e = parse(r#"{"temp":1e308,"hum":30}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field \"temp\" is 1e308, outside the accepted range -60..=100"
        );
        let e = parse(r#"{"temp":20,"hum":30,"timestamp":1e300}"#).unwrap_err();
        assert!(e.to_string().len() < 100, "{e}");
        let e = parse(&format!(
            r#"{{"temp":20,"hum":30,"alert_level":"{}"}}"#,
            "x".repeat(3000)
        ))
        .unwrap_err();
        assert!(e.to_string().len() < 160, "{e}");
    }

    #[test]
    fn strict_policy_refuses_every_liberal_form() {
        let cases = [
            (
                r#"{"timestamp":"2026-11-28T09:15:02Z","temp":1,"hum":1,"alert_level":"normal"}"#,
                "missing_field",
                "\"version\"",
            ),
            (
                r#"{"version":1,"temp":1,"hum":1,"alert_level":"normal"}"#,
                "missing_field",
                "\"timestamp\"",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":1,"hum":1}"#,
                "missing_field",
                "\"alert_level\"",
            ),
            (
                r#"{"version":"1","timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"normal"}"#,
                "wrong_type",
                "\"version\"",
            ),
            (
                r#"{"version":1.0,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"normal"}"#,
                "unsupported_version",
                "1.0",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":2}"#,
                "wrong_type",
                "alert_level",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"CRITICAL"}"#,
                "bad_alert_level",
                "CRITICAL",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02.125123","temp":20,"hum":30,"alert_level":"normal"}"#,
                "bad_timestamp",
                "RFC 3339",
            ),
            (
                r#"{"version":1,"timestamp":1795850102125,"temp":20,"hum":30,"alert_level":"normal"}"#,
                "bad_timestamp",
                "out of range",
            ),
        ];
        for (input, reason, needle) in cases {
            let e = read_with(&strict(), input).unwrap_err();
            assert_eq!(e.reason(), reason, "{input}: {e}");
            assert!(
                e.to_string().contains(needle),
                "{input}: {e} lacks {needle:?}"
            );
            assert!(read_with(&ReadPolicy::default(), input).is_ok(), "{input}");
        }
        // Liberal is not lax: other strings and codes are still refused.
        for (input, reason) in [
            (
                r#"{"temp":20,"hum":30,"version":"2"}"#,
                "unsupported_version",
            ),
            (
                r#"{"temp":20,"hum":30,"version":"one"}"#,
                "unsupported_version",
            ),
            (r#"{"temp":20,"hum":30,"alert_level":3}"#, "bad_alert_level"),
            (
                r#"{"temp":20,"hum":30,"alert_level":-1}"#,
                "bad_alert_level",
            ),
            (
                r#"{"temp":20,"hum":30,"alert_level":1.5}"#,
                "bad_alert_level",
            ),
            (
                r#"{"temp":20,"hum":30,"alert_level":"crit"}"#,
                "bad_alert_level",
            ),
            (
                r#"{"temp":20,"hum":30,"timestamp":"2026-11-28"}"#,
                "bad_timestamp",
            ),
            (
                r#"{"temp":20,"hum":30,"timestamp":"1795850102"}"#,
                "bad_timestamp",
            ),
            (
                r#"{"temp":20,"hum":30,"timestamp":4102444800000}"#,
                "bad_timestamp",
            ),
        ] {
            let e = parse(input).unwrap_err();
            assert_eq!(e.reason(), reason, "{input}: {e}");
        }
    }

    #[test]
    fn future_timestamps_are_refused_beyond_the_margin() {
        let at = |t: &str| format!(r#"{{"temp":20,"hum":30,"timestamp":"{t}"}}"#);
        // Default margin: 5 minutes.
        assert!(parse(&at("2026-11-28T09:25:00Z")).is_ok());
        let e = parse(&at("2026-11-28T09:25:01Z")).unwrap_err();
        assert_eq!(
            (e.reason(), e.field()),
            ("future_timestamp", Some("timestamp"))
        );
        assert_eq!(
            e.to_string(),
            "field \"timestamp\" is 2026-11-28T09:25:01.000Z, 301 s ahead of the receiver's \
             clock (the accepted margin is 300 s: check the producer's clock)"
        );
        let tight = ReadPolicy {
            future_margin: Duration::from_secs(1),
            ..ReadPolicy::default()
        };
        assert!(read_with(&tight, &at("2026-11-28T09:20:01Z")).is_ok());
        assert_eq!(
            read_with(&tight, &at("2026-11-28T09:20:02Z"))
                .unwrap_err()
                .reason(),
            "future_timestamp"
        );
        // Heartbeats too (issue 15: a heartbeat dated 2099 hid a stale zone).
        let e = Heartbeat::read(
            &nord(),
            br#"{"zone":"nord","timestamp":4102444799}"#,
            &ReadPolicy::default(),
            now(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "future_timestamp");
    }

    #[test]
    fn rejects_oversize_before_parsing() {
        let big = format!(r#"{{"version":1,"pad":"{}"}}"#, "x".repeat(1 << 20));
        let e = parse(&big).unwrap_err();
        assert_eq!(e.reason(), "oversize");
        assert!(e.to_string().contains("4096-byte limit"));
    }

    #[test]
    fn heartbeats() {
        let hb_read = |b: &[u8]| Heartbeat::read(&nord(), b, &ReadPolicy::default(), now());
        // The lab's heartbeat: {"zone": zone, "timestamp": time.time()}.
        let lab = hb_read(br#"{"zone": "nord", "timestamp": 1795850102.25}"#).unwrap();
        assert!(lab.normalized.is_empty());
        let lab = lab.value;
        assert_eq!(lab.sensors, None);
        let hb = Heartbeat {
            zone: nord(),
            timestamp: lab.timestamp,
            sensors: Some(3),
        };
        assert_eq!(hb_read(hb.to_json().as_bytes()).unwrap().value, hb);
        assert_eq!(
            hb_read(br#"{"zone":"sud","timestamp":1795850102}"#)
                .unwrap_err()
                .reason(),
            "topic_mismatch"
        );
        // Liberal: no timestamp is the time of receipt, "1" is version 1.
        let read = hb_read(br#"{"version":"1"}"#).unwrap();
        assert_eq!(read.value.timestamp, now());
        let hows: Vec<_> = read.normalized.iter().map(|n| (n.field, n.how)).collect();
        assert_eq!(hows, [("version", "string"), ("timestamp", "absent")]);
        let strict_hb = Heartbeat::read(&nord(), b"{}", &strict(), now()).unwrap_err();
        assert_eq!(strict_hb.reason(), "missing_field");
        assert_eq!(
            hb_read(br#"{"timestamp":1795850102,"sensors":18446744073709551615}"#)
                .unwrap_err()
                .reason(),
            "out_of_range"
        );
        assert_eq!(
            hb_read(br#"{"timestamp":1795850102,"zone":"nord","zone":"sud"}"#)
                .unwrap_err()
                .reason(),
            "duplicate_key"
        );
    }

    #[test]
    fn alert_level_codes() {
        for l in AlertLevel::ALL {
            assert_eq!(AlertLevel::from_code(l.code()), Some(l));
            assert_eq!(AlertLevel::parse(l.as_str()), Some(l));
        }
        assert_eq!(AlertLevel::from_code(3), None);
        assert_eq!(AlertLevel::from_code(-1), None);
        assert!(AlertLevel::Critical > AlertLevel::Warning);
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            for policy in [ReadPolicy::default(), strict()] {
                let _ = Reading::read(&nord(), &s1(), &bytes, &policy, now());
                let _ = Heartbeat::read(&nord(), &bytes, &policy, now());
            }
        }

        #[test]
        fn never_panics_on_json_shaped_input(
            version in prop_oneof![Just("1".to_string()), any::<i64>().prop_map(|v| v.to_string()), Just("\"1\"".into()), Just("null".into())],
            ts in prop_oneof![any::<f64>().prop_map(|v| format!("{v:?}")), "\\PC{0,30}".prop_map(|s| format!("{s:?}")), any::<i64>().prop_map(|v| v.to_string())],
            temp in any::<f64>(),
            hum in any::<f64>(),
            level in prop_oneof!["\\PC{0,10}".prop_map(|s| format!("{s:?}")), any::<i64>().prop_map(|v| v.to_string())],
            strict_mode in any::<bool>(),
        ) {
            let json = format!(r#"{{"version":{version},"timestamp":{ts},"temp":{temp:?},"hum":{hum:?},"alert_level":{level}}}"#);
            let policy = ReadPolicy { strict: strict_mode, ..ReadPolicy::default() };
            if let Ok(r) = read_with(&policy, &json) {
                let r = r.value;
                prop_assert!(r.temp.is_finite() && r.hum.is_finite());
                prop_assert!((TEMP_RANGE.0..=TEMP_RANGE.1).contains(&r.temp));
                prop_assert!((HUM_RANGE.0..=HUM_RANGE.1).contains(&r.hum));
                prop_assert!(r.timestamp <= now() + chrono::TimeDelta::seconds(300));
            }
        }

        #[test]
        fn valid_readings_round_trip(temp in -60.0f64..100.0, hum in 0.0f64..100.0, seq in 0..=i64::MAX as u64, ms in 946_684_800_000i64..1_795_850_400_000) {
            let r = Reading {
                zone: nord(), sensor: s1(), seq: Some(seq),
                timestamp: Utc.timestamp_millis_opt(ms).unwrap(),
                temp: round2(temp), hum: round2(hum), alert_level: AlertLevel::Warning,
                provenance: Provenance::default(),
            };
            prop_assert_eq!(read_with(&strict(), &r.to_json()).unwrap().value, r);
        }
    }
}
