//! Reading untrusted JSON objects, and showing untrusted values short.
//!
//! `serde_json` keeps the last of two equal keys (`{"temp":20,"temp":99}` reads as 99),
//! so a payload could say one thing to a reader that keeps the first key and another
//! to arng. [`parse_object`] refuses duplicate keys at every depth instead (issue 15:
//! bad input is refused with its reason, never altered). It also checks the size
//! before parsing.
//!
//! [`short_number`] and [`short_text`] bound what a value costs in an error message or
//! a log line: `1e308` is written `1e308`, not with its 309 digits.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why bytes are not a JSON object we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    Oversize { len: usize, max: usize },
    Malformed(String),
    NotAnObject,
    DuplicateKey(String),
}

/// Marks the custom error of a duplicate key among serde_json's data errors.
const DUPLICATE: &str = "\u{1}duplicate key ";

/// Parses `bytes` (at most `max` of them) into a JSON object, refusing duplicate keys.
pub fn parse_object(bytes: &[u8], max: usize) -> Result<Map<String, Value>, JsonError> {
    if bytes.len() > max {
        return Err(JsonError::Oversize {
            len: bytes.len(),
            max,
        });
    }
    match serde_json::from_slice::<Checked>(bytes) {
        Ok(Checked(Value::Object(map))) => Ok(map),
        Ok(_) => Err(JsonError::NotAnObject),
        Err(e) => {
            let text = e.to_string();
            match text.strip_prefix(DUPLICATE) {
                // serde_json appends " at line L column C"; the key is what matters.
                Some(rest) => Err(JsonError::DuplicateKey(
                    rest.rsplit_once(" at line ")
                        .map_or(rest, |(k, _)| k)
                        .to_owned(),
                )),
                None => Err(JsonError::Malformed(text)),
            }
        }
    }
}

/// A JSON value read with duplicate keys refused.
struct Checked(Value);

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(CheckedVisitor).map(Checked)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity, so this is always Some.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Checked::deserialize(d).map(|c| c.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Checked(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "{DUPLICATE}{}",
                    short_text(&key, 40)
                )));
            }
            let Checked(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// `x` written in at most about 25 characters: plain notation for everyday magnitudes,
/// scientific beyond (`1e308`, `1.5e-9`).
pub fn short_number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() || (1e-4..1e15).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// `s` quoted and escaped, cut to `max` characters (an ellipsis says it was cut).
pub fn short_text(s: &str, max: usize) -> String {
    let mut cut: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        cut.push('…');
    }
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        assert_eq!(
            parse_object(br#"{"temp":20,"hum":1,"temp":99}"#, 4096),
            Err(JsonError::DuplicateKey("\"temp\"".into()))
        );
        assert_eq!(
            parse_object(br#"{"a":{"b":1,"b":2}}"#, 4096),
            Err(JsonError::DuplicateKey("\"b\"".into()))
        );
        assert_eq!(
            parse_object(br#"{"a":[{"b":1},{"b":2}]}"#, 4096)
                .unwrap()
                .len(),
            1
        );
        // Escapes are decoded before comparing: "t\u0065mp" is "temp".
        assert!(matches!(
            parse_object(br#"{"temp":1,"t\u0065mp":2}"#, 4096),
            Err(JsonError::DuplicateKey(_))
        ));
    }

    #[test]
    fn other_errors() {
        assert!(matches!(
            parse_object(b"{", 4096),
            Err(JsonError::Malformed(_))
        ));
        assert_eq!(parse_object(b"[1]", 4096), Err(JsonError::NotAnObject));
        assert_eq!(
            parse_object(b"{}  ", 2),
            Err(JsonError::Oversize { len: 4, max: 2 })
        );
        // A key that only looks like our marker is not a duplicate.
        let m = parse_object(b"{\"\\u0001duplicate key x\":1}", 4096).unwrap();
        assert_eq!(m.len(), 1);
        let v = parse_object(
            br#"{"n":18446744073709551615,"f":1.5,"s":"x","z":null,"b":true}"#,
            4096,
        )
        .unwrap();
        assert_eq!(v["n"].as_u64(), Some(u64::MAX));
        assert_eq!(v["f"].as_f64(), Some(1.5));
    }

    #[test]
    fn values_are_shown_short() {
        assert_eq!(short_number(1e308), "1e308");
        assert_eq!(short_number(-1e308), "-1e308");
        assert_eq!(short_number(21.4), "21.4");
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(1.5e-9), "1.5e-9");
        assert_eq!(short_number(123456789012.5), "123456789012.5");
        assert!(short_number(f64::MAX).len() < 30);
        assert_eq!(short_text("abc", 2), "\"ab…\"");
        assert_eq!(short_text("ab", 2), "\"ab\"");
    }
}
