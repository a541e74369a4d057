//! The JSON payloads: a sensor reading and a zone heartbeat.
//!
//! A reading, as published on `entrepot/<zone>/<sensor>/v1`:
//!
//! ```json
//! {"version":1,"zone":"nord","sensor":"s1","seq":42,
//!  "timestamp":"2026-11-28T09:15:02.125Z","temp":21.4,"hum":44.9,"alert_level":"normal"}
//! ```
//!
//! `version`, `timestamp`, `temp`, `hum` and `alert_level` are required (the lab's
//! fields); `zone` and `sensor` are optional but must equal the topic's when present
//! (the topic is what the broker's ACL vouches for); `seq`, a per-sensor counter, lets
//! consumers detect loss and duplicates. Unknown fields are ignored so that producers
//! can add fields without breaking older consumers.
//!
//! Parsing works on untrusted bytes: it checks the size first, never panics, and says
//! precisely what is wrong. [`PayloadError::reason`] gives a stable label for counters.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::names::{NameError, SensorId, Zone};

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

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is {len} bytes, more than the {max}-byte limit")]
    Oversize { len: usize, max: usize },
    #[error("payload is not valid JSON: {0}")]
    Malformed(String),
    #[error("payload is JSON but not an object")]
    NotAnObject,
    #[error("field {0:?} is missing")]
    Missing(&'static str),
    #[error("field {field:?} must be {expected}, got {got}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("field {field:?} is {value}, outside the accepted range {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("field {field:?} is not a finite number")]
    NonFinite { field: &'static str },
    #[error("field \"timestamp\": {0}")]
    BadTimestamp(String),
    #[error("field \"alert_level\" must be one of normal, warning, critical, got {0:?}")]
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
}

impl PayloadError {
    /// A short, stable label for metrics, logs and dead-letter records.
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::Oversize { .. } => "oversize",
            PayloadError::Malformed(_) => "malformed_json",
            PayloadError::NotAnObject => "not_an_object",
            PayloadError::Missing(_) => "missing_field",
            PayloadError::WrongType { .. } => "wrong_type",
            PayloadError::OutOfRange { .. } => "out_of_range",
            PayloadError::NonFinite { .. } => "non_finite",
            PayloadError::BadTimestamp(_) => "bad_timestamp",
            PayloadError::BadAlertLevel(_) => "bad_alert_level",
            PayloadError::UnsupportedVersion(_) => "unsupported_version",
            PayloadError::TopicMismatch { .. } => "topic_mismatch",
            PayloadError::Name { .. } => "invalid_name",
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Earliest and latest timestamps accepted: a clock at 1970 or in 2100 is a broken
/// clock, and InfluxDB would file its points where no dashboard looks.
fn timestamp_bounds() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap(),
    )
}

struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn required(&self, field: &'static str) -> Result<&'a Value, PayloadError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(PayloadError::Missing(field)),
            Some(v) => Ok(v),
        }
    }

    fn optional(&self, field: &'static str) -> Option<&'a Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    fn number(&self, field: &'static str, range: (f64, f64)) -> Result<f64, PayloadError> {
        let v = self.required(field)?;
        let n = v.as_f64().ok_or(PayloadError::WrongType {
            field,
            expected: "a number",
            got: type_name(v),
        })?;
        if !n.is_finite() {
            return Err(PayloadError::NonFinite { field });
        }
        if n < range.0 || n > range.1 {
            return Err(PayloadError::OutOfRange {
                field,
                value: n,
                min: range.0,
                max: range.1,
            });
        }
        Ok(n)
    }

    fn unsigned(&self, field: &'static str, v: &Value) -> Result<u64, PayloadError> {
        v.as_u64().ok_or(PayloadError::WrongType {
            field,
            expected: "a non-negative integer",
            got: type_name(v),
        })
    }

    fn version(&self, default: Option<u64>) -> Result<(), PayloadError> {
        let version = match (self.optional("version"), default) {
            (None, Some(d)) => d,
            (None, None) => return Err(PayloadError::Missing("version")),
            (Some(Value::Number(n)), _) => n
                .as_u64()
                .ok_or_else(|| PayloadError::UnsupportedVersion(n.to_string()))?,
            (Some(v), _) => {
                return Err(PayloadError::WrongType {
                    field: "version",
                    expected: "an integer",
                    got: type_name(v),
                })
            }
        };
        if version != PAYLOAD_VERSION {
            return Err(PayloadError::UnsupportedVersion(version.to_string()));
        }
        Ok(())
    }

    fn timestamp(&self) -> Result<DateTime<Utc>, PayloadError> {
        let ts = match self.required("timestamp")? {
            Value::String(s) => DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    PayloadError::BadTimestamp(format!(
                        "{e} (expected RFC 3339, e.g. 2026-11-28T09:15:02.125Z)"
                    ))
                })?,
            Value::Number(n) => {
                let secs = n.as_f64().filter(|s| s.is_finite()).ok_or_else(|| {
                    PayloadError::BadTimestamp("not a finite number of seconds".into())
                })?;
                // Seconds since the epoch, as Python's time.time() gives (the lab's).
                let millis = (secs * 1000.0).round();
                if !(-1e15..=1e15).contains(&millis) {
                    return Err(PayloadError::BadTimestamp(format!(
                        "{secs} seconds since the epoch is out of range"
                    )));
                }
                Utc.timestamp_millis_opt(millis as i64)
                    .single()
                    .ok_or_else(|| {
                        PayloadError::BadTimestamp(format!("{secs} is not a valid time"))
                    })?
            }
            other => {
                return Err(PayloadError::WrongType {
                    field: "timestamp",
                    expected: "an RFC 3339 string or seconds since the epoch",
                    got: type_name(other),
                })
            }
        };
        let (min, max) = timestamp_bounds();
        if ts < min || ts >= max {
            return Err(PayloadError::BadTimestamp(format!(
                "{} is outside 2000-01-01..2100-01-01",
                ts.to_rfc3339()
            )));
        }
        Ok(ts)
    }

    /// An optional name field that must equal the topic's when present.
    fn matching_name(&self, field: &'static str, topic_value: &str) -> Result<(), PayloadError> {
        match self.optional(field) {
            None => Ok(()),
            Some(Value::String(s)) if s == topic_value => Ok(()),
            Some(Value::String(s)) => Err(PayloadError::TopicMismatch {
                field,
                payload: s.chars().take(40).collect(),
                topic: topic_value.to_owned(),
            }),
            Some(v) => Err(PayloadError::WrongType {
                field,
                expected: "a string",
                got: type_name(v),
            }),
        }
    }
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, PayloadError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::Oversize {
            len: bytes.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(PayloadError::NotAnObject),
        Err(e) => Err(PayloadError::Malformed(e.to_string())),
    }
}

impl Reading {
    /// Parses and validates a reading received on the topic of `zone`/`sensor`.
    pub fn parse(zone: &Zone, sensor: &SensorId, bytes: &[u8]) -> Result<Reading, PayloadError> {
        let map = parse_object(bytes)?;
        let f = Fields(&map);
        f.version(None)?;
        f.matching_name("zone", zone.as_str())?;
        f.matching_name("sensor", sensor.as_str())?;
        let timestamp = f.timestamp()?;
        let temp = f.number("temp", TEMP_RANGE)?;
        let hum = f.number("hum", HUM_RANGE)?;
        let alert_level = match f.required("alert_level")? {
            Value::String(s) => AlertLevel::parse(s)
                .ok_or_else(|| PayloadError::BadAlertLevel(s.chars().take(40).collect()))?,
            v => {
                return Err(PayloadError::WrongType {
                    field: "alert_level",
                    expected: "a string",
                    got: type_name(v),
                })
            }
        };
        let seq = f
            .optional("seq")
            .map(|v| f.unsigned("seq", v))
            .transpose()?;
        Ok(Reading {
            zone: zone.clone(),
            sensor: sensor.clone(),
            seq,
            timestamp,
            temp,
            hum,
            alert_level,
        })
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
    /// Parses and validates a heartbeat received on `entrepot/heartbeat/<zone>`.
    pub fn parse(zone: &Zone, bytes: &[u8]) -> Result<Heartbeat, PayloadError> {
        let map = parse_object(bytes)?;
        let f = Fields(&map);
        f.version(Some(PAYLOAD_VERSION))?;
        f.matching_name("zone", zone.as_str())?;
        let timestamp = f.timestamp()?;
        let sensors = f
            .optional("sensors")
            .map(|v| f.unsigned("sensors", v))
            .transpose()?;
        Ok(Heartbeat {
            zone: zone.clone(),
            timestamp,
            sensors,
        })
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
    use proptest::prelude::*;

    fn nord() -> Zone {
        Zone::new("nord").unwrap()
    }
    fn s1() -> SensorId {
        SensorId::new("s1").unwrap()
    }
    fn parse(s: &str) -> Result<Reading, PayloadError> {
        Reading::parse(&nord(), &s1(), s.as_bytes())
    }

    const GOOD: &str = r#"{"version":1,"zone":"nord","sensor":"s1","seq":42,"timestamp":"2026-11-28T09:15:02.125Z","temp":21.4,"hum":44.9,"alert_level":"normal"}"#;

    #[test]
    fn parses_a_good_reading() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.seq, Some(42));
        assert_eq!(r.temp, 21.4);
        assert_eq!(r.hum, 44.9);
        assert_eq!(r.alert_level, AlertLevel::Normal);
        assert_eq!(format_timestamp(r.timestamp), "2026-11-28T09:15:02.125Z");
        // And it round-trips through our own encoder.
        assert_eq!(parse(&r.to_json()).unwrap(), r);
    }

    #[test]
    fn accepts_the_labs_minimal_form_and_epoch_seconds() {
        let r = parse(r#"{"version":1,"timestamp":1795850102.5,"temp":23.1,"hum":44.0,"alert_level":"critical","extra":"ignored"}"#).unwrap();
        assert_eq!(r.seq, None);
        assert_eq!(r.alert_level, AlertLevel::Critical);
        assert_eq!(r.timestamp.timestamp_millis(), 1_795_850_102_500);
        // Offsets other than Z are converted to UTC.
        let r = parse(r#"{"version":1,"timestamp":"2026-11-28T10:00:00+01:00","temp":1,"hum":2,"alert_level":"warning"}"#).unwrap();
        assert_eq!(format_timestamp(r.timestamp), "2026-11-28T09:00:00.000Z");
    }

    #[test]
    fn rejects_bad_payloads_with_precise_reasons() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"version":1,"timestamp":"#,
                "malformed_json",
                "not valid JSON",
            ),
            ("", "malformed_json", "not valid JSON"),
            ("[1,2]", "not_an_object", "not an object"),
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
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","hum":1,"alert_level":"normal"}"#,
                "missing_field",
                "\"temp\"",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":null,"hum":1,"alert_level":"normal"}"#,
                "missing_field",
                "\"temp\"",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":"21.5","hum":1,"alert_level":"normal"}"#,
                "wrong_type",
                "must be a number, got a string",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":"NaN","hum":1,"alert_level":"normal"}"#,
                "wrong_type",
                "\"temp\"",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":NaN,"hum":1,"alert_level":"normal"}"#,
                "malformed_json",
                "JSON",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":1e999,"hum":1,"alert_level":"normal"}"#,
                "malformed_json",
                "JSON",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":1e38,"hum":1,"alert_level":"normal"}"#,
                "out_of_range",
                "-60..=100",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":-3,"alert_level":"normal"}"#,
                "out_of_range",
                "\"hum\"",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":130,"alert_level":"normal"}"#,
                "out_of_range",
                "\"hum\"",
            ),
            (
                r#"{"version":2,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"normal"}"#,
                "unsupported_version",
                "version 2",
            ),
            (
                r#"{"version":1.5,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"normal"}"#,
                "unsupported_version",
                "1.5",
            ),
            (
                r#"{"version":"1","timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"normal"}"#,
                "wrong_type",
                "\"version\"",
            ),
            (
                r#"{"version":1,"timestamp":"yesterday","temp":20,"hum":30,"alert_level":"normal"}"#,
                "bad_timestamp",
                "RFC 3339",
            ),
            (
                r#"{"version":1,"timestamp":0,"temp":20,"hum":30,"alert_level":"normal"}"#,
                "bad_timestamp",
                "outside",
            ),
            (
                r#"{"version":1,"timestamp":1e300,"temp":20,"hum":30,"alert_level":"normal"}"#,
                "bad_timestamp",
                "out of range",
            ),
            (
                r#"{"version":1,"timestamp":true,"temp":20,"hum":30,"alert_level":"normal"}"#,
                "wrong_type",
                "\"timestamp\"",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"panic"}"#,
                "bad_alert_level",
                "panic",
            ),
            (
                r#"{"version":1,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":2}"#,
                "wrong_type",
                "alert_level",
            ),
            (
                r#"{"version":1,"zone":"sud","timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"normal"}"#,
                "topic_mismatch",
                "topic says \"nord\"",
            ),
            (
                r#"{"version":1,"zone":"nord\") |> drop(","timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"normal"}"#,
                "topic_mismatch",
                "zone",
            ),
            (
                r#"{"version":1,"sensor":7,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"normal"}"#,
                "wrong_type",
                "sensor",
            ),
            (
                r#"{"version":1,"seq":-1,"timestamp":"2026-11-28T09:15:02Z","temp":20,"hum":30,"alert_level":"normal"}"#,
                "wrong_type",
                "\"seq\"",
            ),
        ];
        for (input, reason, needle) in cases {
            match parse(input) {
                Ok(r) => panic!("accepted {input}: {r:?}"),
                Err(e) => {
                    assert_eq!(e.reason(), *reason, "{input}: {e}");
                    assert!(
                        e.to_string().contains(needle),
                        "{input}: {e} lacks {needle:?}"
                    );
                }
            }
        }
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
        let lab =
            Heartbeat::parse(&nord(), br#"{"zone": "nord", "timestamp": 1795850102.25}"#).unwrap();
        assert_eq!(lab.sensors, None);
        let hb = Heartbeat {
            zone: nord(),
            timestamp: lab.timestamp,
            sensors: Some(3),
        };
        assert_eq!(
            Heartbeat::parse(&nord(), hb.to_json().as_bytes()).unwrap(),
            hb
        );
        assert_eq!(
            Heartbeat::parse(&nord(), br#"{"zone":"sud","timestamp":1795850102}"#)
                .unwrap_err()
                .reason(),
            "topic_mismatch"
        );
        assert_eq!(
            Heartbeat::parse(&nord(), b"{}").unwrap_err().reason(),
            "missing_field"
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
            let _ = Reading::parse(&nord(), &s1(), &bytes);
            let _ = Heartbeat::parse(&nord(), &bytes);
        }

        #[test]
        fn never_panics_on_json_shaped_input(
            version in prop_oneof![Just("1".to_string()), any::<i64>().prop_map(|v| v.to_string()), Just("\"1\"".into()), Just("null".into())],
            ts in prop_oneof![any::<f64>().prop_map(|v| format!("{v:?}")), "\\PC{0,30}".prop_map(|s| format!("{s:?}")), any::<i64>().prop_map(|v| v.to_string())],
            temp in any::<f64>(),
            hum in any::<f64>(),
            level in "\\PC{0,10}",
        ) {
            let json = format!(r#"{{"version":{version},"timestamp":{ts},"temp":{temp:?},"hum":{hum:?},"alert_level":{level:?}}}"#);
            if let Ok(r) = parse(&json) {
                prop_assert!(r.temp.is_finite() && r.hum.is_finite());
                prop_assert!((TEMP_RANGE.0..=TEMP_RANGE.1).contains(&r.temp));
                prop_assert!((HUM_RANGE.0..=HUM_RANGE.1).contains(&r.hum));
            }
        }

        #[test]
        fn valid_readings_round_trip(temp in -60.0f64..100.0, hum in 0.0f64..100.0, seq in any::<u64>(), ms in 946_684_800_000i64..4_102_444_800_000) {
            let r = Reading {
                zone: nord(), sensor: s1(), seq: Some(seq),
                timestamp: Utc.timestamp_millis_opt(ms).unwrap(),
                temp: round2(temp), hum: round2(hum), alert_level: AlertLevel::Warning,
            };
            prop_assert_eq!(parse(&r.to_json()).unwrap(), r);
        }
    }
}
