//! InfluxDB line protocol encoding.
//!
//! `measurement,tag=value field=1.5,count=3i 1732780800123` — with the escaping rules of
//! the InfluxDB 2 reference: commas and spaces in measurements; commas, equals signs and
//! spaces in tag keys, tag values and field keys; double quotes and backslashes in
//! string field values. Newlines cannot be escaped anywhere, so they are refused, as
//! are non-finite floats and points without fields (InfluxDB rejects all three, and a
//! single bad line makes it reject the whole batch).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// A field value. Integers get the `i` suffix, unsigned integers `u`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
}

/// One point: measurement, tags (sorted on encoding, as InfluxDB recommends for write
/// speed), fields and a timestamp in milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, FieldValue)>,
    timestamp_ms: Option<i64>,
}

/// Why a point cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("point {0:?} has no fields")]
    NoFields(String),
    #[error("point {measurement:?}: field {field:?} is not a finite number")]
    NonFinite { measurement: String, field: String },
    #[error("point {0:?}: names and values may not contain newlines")]
    Newline(String),
    #[error("point has an empty measurement, tag key or field key")]
    EmptyName,
    #[error("point {0:?}: a name ends with a backslash or has one before ',', '=', ' ' or '\"'")]
    AmbiguousBackslash(String),
}

impl Point {
    pub fn new(measurement: impl Into<String>) -> Point {
        Point {
            measurement: measurement.into(),
            tags: Vec::new(),
            fields: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// Adds a tag. Empty values are skipped: line protocol has no empty tag value, and
    /// a missing tag is what Flux treats as null anyway.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Point {
        let value = value.into();
        if !value.is_empty() {
            self.tags.push((key.into(), value));
        }
        self
    }

    pub fn field(mut self, key: impl Into<String>, value: FieldValue) -> Point {
        self.fields.push((key.into(), value));
        self
    }

    pub fn float(self, key: impl Into<String>, v: f64) -> Point {
        self.field(key, FieldValue::Float(v))
    }

    pub fn int(self, key: impl Into<String>, v: i64) -> Point {
        self.field(key, FieldValue::Int(v))
    }

    pub fn string(self, key: impl Into<String>, v: impl Into<String>) -> Point {
        self.field(key, FieldValue::Str(v.into()))
    }

    pub fn timestamp(mut self, t: DateTime<Utc>) -> Point {
        self.timestamp_ms = Some(t.timestamp_millis());
        self
    }

    pub fn measurement(&self) -> &str {
        &self.measurement
    }

    pub fn tag_value(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn field_value(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }

    /// Appends this point as one line (with its trailing newline) to `out`. On error
    /// `out` is left as it was.
    pub fn encode_into(&self, out: &mut String) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_unchecked(out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The point as one line, without the trailing newline.
    pub fn to_line(&self) -> Result<String, EncodeError> {
        let mut s = String::new();
        self.encode_into(&mut s)?;
        s.pop();
        Ok(s)
    }

    fn encode_unchecked(&self, out: &mut String) -> Result<(), EncodeError> {
        let m = &self.measurement;
        if self.fields.is_empty() {
            return Err(EncodeError::NoFields(m.clone()));
        }
        let names = std::iter::once(m.as_str())
            .chain(self.tags.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
            .chain(self.fields.iter().map(|(k, _)| k.as_str()));
        for s in names {
            if s.contains(['\n', '\r']) {
                return Err(EncodeError::Newline(m.clone()));
            }
            if ambiguous_backslash(s) {
                return Err(EncodeError::AmbiguousBackslash(m.clone()));
            }
        }
        if m.is_empty()
            || self.tags.iter().any(|(k, _)| k.is_empty())
            || self.fields.iter().any(|(k, _)| k.is_empty())
        {
            return Err(EncodeError::EmptyName);
        }
        escape_into(out, m, &[',', ' ']);
        let mut tags: Vec<&(String, String)> = self.tags.iter().collect();
        tags.sort();
        for (k, v) in tags {
            out.push(',');
            escape_into(out, k, NAME_SPECIALS);
            out.push('=');
            escape_into(out, v, NAME_SPECIALS);
        }
        for (i, (k, v)) in self.fields.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            escape_into(out, k, NAME_SPECIALS);
            out.push('=');
            match v {
                FieldValue::Float(x) => {
                    if !x.is_finite() {
                        return Err(EncodeError::NonFinite {
                            measurement: m.clone(),
                            field: k.clone(),
                        });
                    }
                    // `{:?}` keeps a decimal point on whole numbers (21.0, not 21), so
                    // the value can never be mistaken for an integer; it may use an
                    // exponent (1e300), which line protocol accepts.
                    let _ = write!(out, "{x:?}");
                }
                FieldValue::Int(x) => {
                    let _ = write!(out, "{x}i");
                }
                FieldValue::UInt(x) => {
                    let _ = write!(out, "{x}u");
                }
                FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                FieldValue::Str(s) => {
                    out.push('"');
                    escape_into(out, s, &['"', '\\']);
                    out.push('"');
                }
            }
        }
        if let Some(ts) = self.timestamp_ms {
            let _ = write!(out, " {ts}");
        }
        out.push('\n');
        Ok(())
    }
}

/// Characters escaped in tag keys, tag values and field keys.
///
/// Backslashes are written as they are: InfluxDB 2.7 stores `\\` in a tag value as two
/// backslashes (checked against a real server in tests/store.rs), so escaping them
/// would corrupt the value. A backslash at the end of a name, or right before a
/// character that needs escaping, cannot be written unambiguously and is refused.
const NAME_SPECIALS: &[char] = &[',', '=', ' '];

fn ambiguous_backslash(s: &str) -> bool {
    s.ends_with('\\')
        || s.as_bytes()
            .windows(2)
            .any(|w| w[0] == b'\\' && matches!(w[1], b',' | b'=' | b' ' | b'"'))
}

fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Encodes many points into one write body. Points that cannot be encoded are returned
/// with their error instead of spoiling the batch.
pub fn encode_batch(points: &[Point]) -> (String, Vec<(usize, EncodeError)>) {
    let mut body = String::with_capacity(points.len() * 120);
    let mut bad = Vec::new();
    for (i, p) in points.iter().enumerate() {
        if let Err(e) = p.encode_into(&mut body) {
            bad.push((i, e));
        }
    }
    (body, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn encodes_a_reading() {
        let p = Point::new("readings")
            .tag("zone", "nord")
            .tag("sensor", "s1")
            .float("temp", 21.0)
            .float("hum", 44.5)
            .int("seq", 7)
            .timestamp(Utc.timestamp_millis_opt(1_795_850_102_125).unwrap());
        assert_eq!(
            p.to_line().unwrap(),
            "readings,sensor=s1,zone=nord temp=21.0,hum=44.5,seq=7i 1795850102125"
        );
    }

    #[test]
    fn escapes_special_characters() {
        let p = Point::new("my meas,x")
            .tag("tag key", "a=b,c d")
            .tag("t", r"back\slash")
            .string("msg", r#"say "hi" \ bye"#)
            .field("ok", FieldValue::Bool(true))
            .field("n", FieldValue::UInt(3));
        assert_eq!(
            p.to_line().unwrap(),
            r#"my\ meas\,x,t=back\slash,tag\ key=a\=b\,c\ d msg="say \"hi\" \\ bye",ok=true,n=3u"#
        );
    }

    #[test]
    fn refuses_what_influxdb_would_reject() {
        let mut out = String::from("keep\n");
        assert!(matches!(
            Point::new("m").encode_into(&mut out),
            Err(EncodeError::NoFields(_))
        ));
        assert!(matches!(
            Point::new("m").float("x", f64::NAN).encode_into(&mut out),
            Err(EncodeError::NonFinite { .. })
        ));
        assert!(matches!(
            Point::new("m")
                .float("x", f64::INFINITY)
                .encode_into(&mut out),
            Err(EncodeError::NonFinite { .. })
        ));
        assert!(matches!(
            Point::new("m")
                .tag("z", "a\nb")
                .float("x", 1.0)
                .encode_into(&mut out),
            Err(EncodeError::Newline(_))
        ));
        assert!(matches!(
            Point::new("").float("x", 1.0).encode_into(&mut out),
            Err(EncodeError::EmptyName)
        ));
        for bad in [r"ends\", r"a\,b", r"a\ b"] {
            assert!(
                matches!(
                    Point::new("m")
                        .tag("t", bad)
                        .float("x", 1.0)
                        .encode_into(&mut out),
                    Err(EncodeError::AmbiguousBackslash(_))
                ),
                "{bad}"
            );
        }
        // Failed encodings leave the buffer untouched.
        assert_eq!(out, "keep\n");
    }

    #[test]
    fn empty_tag_values_are_left_out() {
        let p = Point::new("m").tag("a", "").float("x", 1.5);
        assert_eq!(p.to_line().unwrap(), "m x=1.5");
    }

    #[test]
    fn batch_keeps_good_points() {
        let pts = vec![
            Point::new("m").float("x", 1.0),
            Point::new("m").float("x", f64::NAN),
            Point::new("m").int("y", 2),
        ];
        let (body, bad) = encode_batch(&pts);
        assert_eq!(body, "m x=1.0\nm y=2i\n");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 1);
    }

    proptest! {
        /// Whatever the names, an encoded line has exactly the structure InfluxDB
        /// expects: one line, and unescaped spaces only as the two separators.
        #[test]
        fn structure_holds_for_any_names(m in "[^\n\r]{1,12}", k in "[^\n\r]{1,12}", v in "[^\n\r]{1,12}", s in "[^\n\r]{0,12}", x in -1e9f64..1e9) {
            let Ok(line) = Point::new(m).tag(k, v).string("s", s).float("x", x).timestamp(Utc.timestamp_millis_opt(0).unwrap()).to_line() else {
                return Ok(()); // refused (ambiguous backslash): nothing written
            };
            prop_assert!(!line.contains('\n'));
            // Quotes delimit strings only in the field section (after the first
            // unescaped space); elsewhere they are ordinary characters.
            let mut separators = 0;
            let mut escaped = false;
            let mut in_string = false;
            for c in line.chars() {
                if escaped { escaped = false; continue; }
                match c {
                    '\\' => escaped = true,
                    '"' if separators == 1 => in_string = !in_string,
                    ' ' if !in_string => separators += 1,
                    _ => {}
                }
            }
            prop_assert_eq!(separators, 2, "{}", line);
        }
    }
}
