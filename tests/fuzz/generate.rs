//! The structure-aware half of the stable driver: inputs built from each format's
//! grammar with values at the edges the parsers check (ranges, time bounds, integer
//! widths, escapes, reserved names), so that a run reaches the deep branches that
//! random bytes rarely get through (a JSON object with every field right but one).

use super::mutate::Rng;

/// JSON values that sit on the edges of the payload checks.
const JSON_NUMBERS: &[&str] = &[
    "1",
    "0",
    "-0",
    "-0.0",
    "2",
    "1.0",
    "1.5",
    "-1",
    "21.4",
    "44.9",
    "-60",
    "-60.001",
    "-59.995",
    "100",
    "100.0000000001",
    "99.995",
    "99.99499999",
    "0.004999",
    "5e-324",
    "-5e-324",
    "1e38",
    "1e308",
    "1E2",
    "1e-2",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "946684800",
    "946684799.9995",
    "946684799.9994",
    "4102444799.999",
    "4102444799.9995",
    "4102444800",
    "1795850102.5",
    "1e15",
    "-1e15",
    "9.2e18",
];

const JSON_STRINGS: &[&str] = &[
    "nord",
    "s1",
    "sud",
    "Nord",
    "",
    "normal",
    "warning",
    "critical",
    "Critical",
    "2026-11-28T09:15:02.125Z",
    "2026-11-28T09:15:02Z",
    "2026-11-28T10:00:00+01:00",
    "2026-11-28T09:15:02.123456789123Z",
    "2000-01-01T00:00:00Z",
    "1999-12-31T23:59:59.999999999Z",
    "2000-01-01T00:59:59+01:00",
    "2099-12-31T23:59:59.9999Z",
    "2100-01-01T00:00:00Z",
    "2099-12-31T23:00:00-01:00",
    "2016-12-31T23:59:60Z",
    "2016-12-31T23:59:60.999999999+23:59",
    "2026-11-28t09:15:02z",
    "2026-11-28 09:15:02Z",
    "2026-02-30T00:00:00Z",
    "+2026-11-28T09:15:02Z",
    "9999-12-31T23:59:59Z",
    "2026-11-28T09:15:02",
    "1795850102",
    "\\u006eord",
    "s\\u0031",
    "\\u0000",
    "\\ud83d\\ude00",
    "\\ud800",
    "nord\\\") |> drop(",
];

/// A JSON object in the shape of a reading or heartbeat, each field present, absent,
/// null, repeated or of another type, with random spacing and nesting.
pub fn payload(rng: &mut Rng) -> Vec<u8> {
    const FIELDS: &[&str] = &[
        "version",
        "zone",
        "sensor",
        "seq",
        "timestamp",
        "temp",
        "hum",
        "alert_level",
        "sensors",
    ];
    let mut members = Vec::new();
    for field in FIELDS {
        // Usually there and of the right type: that is what reaches the next check.
        if rng.one_in(6) {
            continue;
        }
        let value = if rng.one_in(5) {
            json_value(rng, 2)
        } else {
            typical(rng, field)
        };
        members.push(format!("{:?}:{value}", field));
        if rng.one_in(20) {
            members.push(format!("{:?}:{}", field, json_value(rng, 1)));
        }
    }
    if rng.one_in(4) {
        members.push(format!("\"extra\":{}", json_value(rng, 3)));
    }
    // Shuffle: the parser must not depend on field order.
    for i in (1..members.len()).rev() {
        members.swap(i, rng.below(i + 1));
    }
    let sep = *rng.pick(&[",", ", ", ",\n  ", " ,\t"]);
    let mut text = format!("{{{}}}", members.join(sep));
    if rng.one_in(30) {
        text = format!("[{text}]");
    }
    if rng.one_in(30) {
        // Past the size limit, or just under it.
        let pad = (4095 + rng.below(3)).saturating_sub(text.len() + 9);
        text = format!("{{\"pad\":\"{}\",{}", "x".repeat(pad), &text[1..]);
    }
    text.into_bytes()
}

fn typical(rng: &mut Rng, field: &str) -> String {
    let quoted = |s: &&str| format!("\"{s}\"");
    match field {
        "version" => rng
            .pick(&["1", "1", "1", "2", "0", "1.0", "\"1\""])
            .to_string(),
        "zone" => quoted(rng.pick(&["nord", "nord", "sud", "\\u006eord", "NORD"])),
        "sensor" => quoted(rng.pick(&["s1", "s1", "s2", "s\\u0031", ""])),
        "alert_level" => quoted(rng.pick(&["normal", "warning", "critical", "panic", ""])),
        "timestamp" if rng.one_in(3) => rng.pick(JSON_NUMBERS).to_string(),
        "timestamp" => quoted(rng.pick(&JSON_STRINGS[9..27])),
        "seq" | "sensors" => rng
            .pick(&["0", "42", "18446744073709551615", "-1", "1.5", "1e3"])
            .to_string(),
        _ if rng.one_in(2) => random_number(rng),
        _ => rng.pick(JSON_NUMBERS).to_string(),
    }
}

fn random_number(rng: &mut Rng) -> String {
    let int = rng.below(200) as i64 - 80;
    let frac: String = (0..rng.small(20))
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect();
    let mut s = int.to_string();
    if !frac.is_empty() {
        s = format!("{s}.{frac}");
    }
    if rng.one_in(8) {
        s = format!("{s}e{}", rng.below(40) as i64 - 20);
    }
    s
}

fn json_value(rng: &mut Rng, depth: usize) -> String {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => rng.pick(JSON_NUMBERS).to_string(),
        1 => format!("\"{}\"", rng.pick(JSON_STRINGS)),
        2 => rng.pick(&["true", "false", "null"]).to_string(),
        3 => random_number(rng),
        4 => format!("\"{}\"", "é".repeat(rng.small(64))),
        5 => {
            let items: Vec<String> = (0..rng.small(4))
                .map(|_| json_value(rng, depth - 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let items: Vec<String> = (0..rng.small(4))
                .map(|i| format!("\"k{i}\":{}", json_value(rng, depth - 1)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// A topic of zero to seven levels from the scheme's words, names at the length limit,
/// wildcards and characters the naming rule refuses; sometimes a filter, a newline
/// and a topic, for the matcher.
pub fn topic(rng: &mut Rng) -> Vec<u8> {
    let mut text = one_topic(rng);
    if rng.one_in(3) {
        text = format!("{}\n{}", one_topic(rng), text);
    }
    text.into_bytes()
}

fn one_topic(rng: &mut Rng) -> String {
    const LEVELS: &[&str] = &[
        "entrepot",
        "heartbeat",
        "alerts",
        "status",
        "config",
        "thresholds",
        "deadletter",
        "v1",
        "v2",
        "V1",
        "nord",
        "s1",
        "0",
        "ingest",
        "malformed_json",
        "+",
        "#",
        "$SYS",
        "",
        " ",
        "_x",
        "-x",
        "x_y-z",
        "Nord",
        "nörd",
        "\u{1f600}",
        "\0",
        "a+b",
        "a#",
    ];
    let n = rng.small(7);
    let mut levels: Vec<String> = Vec::new();
    for i in 0..n {
        let level = match rng.below(10) {
            0 => "a".repeat(31 + rng.below(3)),
            1 => random_name(rng),
            _ if i == 0 && !rng.one_in(5) => "entrepot".into(),
            _ => rng.pick(LEVELS).to_string(),
        };
        levels.push(level);
    }
    levels.join("/")
}

fn random_name(rng: &mut Rng) -> String {
    const CHARS: &[u8] = b"abcz09_-A.~";
    (0..1 + rng.small(34))
        .map(|_| char::from(*rng.pick(CHARS)))
        .collect()
}

/// One to four blocks of annotated CSV: annotations in any order (or missing), a
/// header, rows with cells typed by `#datatype` (or not), quoting, defaults, short and
/// long rows, query-error blocks, and any of the three line endings.
pub fn annotated_csv(rng: &mut Rng) -> Vec<u8> {
    const TYPES: &[&str] = &[
        "string",
        "long",
        "unsignedLong",
        "double",
        "boolean",
        "dateTime:RFC3339",
        "dateTime:RFC3339Nano",
        "duration",
        "base64Binary",
        "",
        "dateTime",
        "decimal",
    ];
    const NAMES: &[&str] = &[
        "result",
        "table",
        "_start",
        "_stop",
        "_time",
        "_value",
        "_field",
        "_measurement",
        "zone",
        "sensor",
        "error",
        "reference",
        "",
        "#x",
        "a,b",
        "q\"q",
    ];
    let eol = *rng.pick(&["\r\n", "\n", "\r"]);
    let mut out = String::new();
    for _ in 0..1 + rng.small(3) {
        let cols = 1 + rng.small(9);
        let types: Vec<&str> = (0..cols).map(|_| *rng.pick(TYPES)).collect();
        let mut annotations = Vec::new();
        if !rng.one_in(6) {
            annotations.push(format!("#datatype,{}", types.join(",")));
        }
        if rng.one_in(2) {
            let groups: Vec<&str> = (0..cols).map(|_| *rng.pick(&["true", "false"])).collect();
            annotations.push(format!("#group,{}", groups.join(",")));
        }
        if rng.one_in(2) {
            let defaults: Vec<String> = types
                .iter()
                .map(|t| {
                    if rng.one_in(3) {
                        cell(rng, t)
                    } else {
                        String::new()
                    }
                })
                .collect();
            annotations.push(format!("#default,{}", defaults.join(",")));
        }
        for i in (1..annotations.len()).rev() {
            annotations.swap(i, rng.below(i + 1));
        }
        for a in annotations {
            out.push_str(&a);
            out.push_str(eol);
        }
        let header: Vec<String> = (0..cols)
            .map(|_| {
                let name = rng.pick(NAMES).to_string();
                quote(rng, name)
            })
            .collect();
        out.push(',');
        out.push_str(&header.join(","));
        out.push_str(eol);
        for _ in 0..rng.small(5) {
            // Rows may be shorter or longer than the header (the reader is flexible).
            let n = match rng.below(8) {
                0 => rng.small(cols),
                1 => cols + 1 + rng.small(2),
                _ => cols,
            };
            let cells: Vec<String> = (0..n)
                .map(|i| {
                    let t = if rng.one_in(6) {
                        rng.pick(TYPES)
                    } else {
                        types.get(i).unwrap_or(&"string")
                    };
                    let c = if rng.one_in(8) {
                        String::new()
                    } else {
                        cell(rng, t)
                    };
                    quote(rng, c)
                })
                .collect();
            out.push(',');
            out.push_str(&cells.join(","));
            out.push_str(eol);
        }
        out.push_str(eol);
    }
    out.into_bytes()
}

fn cell(rng: &mut Rng, datatype: &str) -> String {
    let pick = |rng: &mut Rng, items: &[&str]| rng.pick(items).to_string();
    match datatype {
        "long" => pick(
            rng,
            &[
                "0",
                "-1",
                "42",
                "+7",
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "1.0",
                "1e3",
                " 1",
            ],
        ),
        "unsignedLong" => pick(
            rng,
            &["0", "18446744073709551615", "18446744073709551616", "-1"],
        ),
        "double" => pick(
            rng,
            &[
                "21.5", "+Inf", "-Inf", "NaN", "inf", "-nan", "1e400", "-0", "5e-324", ".5", "1.",
                "0x10", "1_0",
            ],
        ),
        "boolean" => pick(rng, &["true", "false", "TRUE", "1"]),
        t if t.starts_with("dateTime") => pick(
            rng,
            &[
                "2026-11-28T00:10:00.125Z",
                "2026-11-28T00:10:00Z",
                "2026-11-28T00:10:00.123456789+02:00",
                "2016-12-31T23:59:60.5Z",
                "1677-09-21T00:12:43.145224192Z",
                "2262-04-11T23:47:16.854775807Z",
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999999-23:59",
                "2026-11-28",
                "not a time",
            ],
        ),
        "duration" => pick(rng, &["1h30m", "-5s", "0s", "1mo2w"]),
        _ => pick(
            rng,
            &[
                "_result",
                "temp",
                "readings",
                "nord",
                "a, \"b\"\nc",
                "#group",
                "é",
                "\u{feff}",
                " ",
            ],
        ),
    }
}

/// Quotes a cell (always when the format needs it, sometimes when it does not).
fn quote(rng: &mut Rng, cell: String) -> String {
    let needs = cell.contains([',', '"', '\n', '\r']);
    if needs || rng.one_in(10) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}
