//! Reading the fields of one payload under a [`ReadPolicy`]: the liberal forms, the
//! strict values, and the record of every normalisation. Used by the reading,
//! heartbeat and alert parsers of [`super`].

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use super::{format_timestamp, AlertLevel, Normalized, PayloadError, ReadPolicy, PAYLOAD_VERSION};
use crate::domain::json::{self, short_number, short_text};

/// Largest integer a field may carry: InfluxDB integers are signed 64-bit.
const MAX_INT: u64 = i64::MAX as u64;
/// Epoch numbers at least this large are milliseconds: 1e11 seconds is the year 5138,
/// 1e11 milliseconds is 1973, and both are outside the accepted 2000..2100 window, so
/// no accepted time can be read both ways.
const EPOCH_MS_FROM: f64 = 1e11;
/// How a JSON value's type is said in an error (`a number`, `a string`...).
pub(crate) fn type_name(v: &Value) -> &'static str {
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

/// Parses `bytes` as a JSON object (size checked first, duplicate keys refused).
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, PayloadError> {
    Ok(json::parse_object(bytes, super::MAX_PAYLOAD_BYTES)?)
}

/// Refuses a timestamp further ahead of `now` than the policy's margin.
pub(crate) fn check_not_future(
    t: DateTime<Utc>,
    policy: &ReadPolicy,
    now: DateTime<Utc>,
) -> Result<(), PayloadError> {
    let ahead = t - now;
    let margin =
        chrono::TimeDelta::from_std(policy.future_margin).unwrap_or(chrono::TimeDelta::MAX);
    if ahead > margin {
        return Err(PayloadError::FutureTimestamp {
            timestamp: format_timestamp(t),
            ahead_s: ahead.num_seconds(),
            margin_s: policy.future_margin.as_secs(),
        });
    }
    Ok(())
}

/// The fields of one payload, read under a policy; collects the normalisations.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    policy: &'a ReadPolicy,
    now: DateTime<Utc>,
    pub(super) normalized: Vec<Normalized>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(
        map: &'a Map<String, Value>,
        policy: &'a ReadPolicy,
        now: DateTime<Utc>,
    ) -> Self {
        Fields {
            map,
            policy,
            now,
            normalized: Vec::new(),
        }
    }

    fn liberal(&self) -> bool {
        !self.policy.strict
    }

    fn note(&mut self, field: &'static str, how: &'static str, given: Option<&Value>) {
        let given = match given {
            None => "absent".to_owned(),
            Some(Value::String(s)) => short_text(s, 40),
            Some(v) => short_text(&v.to_string(), 40),
        };
        self.normalized.push(Normalized { field, how, given });
    }

    pub(super) fn optional(&self, field: &'static str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub(super) fn required(&self, field: &'static str) -> Result<&'a Value, PayloadError> {
        self.optional(field).ok_or(PayloadError::Missing(field))
    }

    pub(crate) fn number(
        &self,
        field: &'static str,
        range: (f64, f64),
    ) -> Result<f64, PayloadError> {
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

    /// A non-negative integer InfluxDB can store (signed 64-bit): never clamped.
    pub(super) fn unsigned(&self, field: &'static str) -> Result<Option<u64>, PayloadError> {
        let Some(v) = self.optional(field) else {
            return Ok(None);
        };
        let wrong = PayloadError::WrongType {
            field,
            expected: "a non-negative integer",
            got: type_name(v),
        };
        let Value::Number(n) = v else {
            return Err(wrong);
        };
        if let Some(u) = n.as_u64() {
            if u > MAX_INT {
                return Err(PayloadError::IntegerTooLarge {
                    field,
                    value: u.to_string(),
                });
            }
            return Ok(Some(u));
        }
        // Past u64, serde_json reads a float: a whole number that large is too large,
        // not of the wrong type.
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f > MAX_INT as f64 => {
                Err(PayloadError::IntegerTooLarge {
                    field,
                    value: short_number(f),
                })
            }
            _ => Err(wrong),
        }
    }

    /// Checks `version`; `default` applies when it is absent (heartbeats: always 1).
    pub(super) fn version(&mut self, default: Option<u64>) -> Result<(), PayloadError> {
        let given = self.optional("version");
        let version = match given {
            None => match default {
                Some(d) => d,
                None if self.liberal() => {
                    self.note("version", "absent", None);
                    PAYLOAD_VERSION
                }
                None => return Err(PayloadError::Missing("version")),
            },
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => v,
                None if self.liberal() && n.as_f64() == Some(PAYLOAD_VERSION as f64) => {
                    self.note("version", "float", given);
                    PAYLOAD_VERSION
                }
                None => return Err(PayloadError::UnsupportedVersion(n.to_string())),
            },
            Some(Value::String(s)) if self.liberal() => {
                if !matches!(s.as_str(), "1" | "1.0") {
                    return Err(PayloadError::UnsupportedVersion(short_text(s, 20)));
                }
                self.note("version", "string", given);
                PAYLOAD_VERSION
            }
            Some(v) => {
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

    /// The timestamp, and whether it was stamped on receipt (absent from the payload).
    pub(crate) fn timestamp(&mut self) -> Result<(DateTime<Utc>, bool), PayloadError> {
        let given = self.optional("timestamp");
        let ts = match given {
            None if self.liberal() => {
                self.note("timestamp", "absent", None);
                return Ok((self.now, true));
            }
            None => return Err(PayloadError::Missing("timestamp")),
            Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => t.with_timezone(&Utc),
                Err(e) => match naive_utc(s).filter(|_| self.liberal()) {
                    Some(t) => {
                        self.note("timestamp", "no_offset", given);
                        t
                    }
                    None => {
                        return Err(PayloadError::BadTimestamp(format!(
                            "{} is not RFC 3339 ({e}; expected e.g. 2026-11-28T09:15:02.125Z)",
                            short_text(s, 40)
                        )))
                    }
                },
            },
            Some(Value::Number(n)) => {
                let mut secs = n.as_f64().filter(|s| s.is_finite()).ok_or_else(|| {
                    PayloadError::BadTimestamp("not a finite number of seconds".into())
                })?;
                if self.liberal() && secs.abs() >= EPOCH_MS_FROM {
                    self.note("timestamp", "epoch_ms", given);
                    secs /= 1000.0;
                }
                // Seconds since the epoch, as Python's time.time() gives (the lab's).
                let millis = (secs * 1000.0).round();
                if !(-1e15..=1e15).contains(&millis) {
                    return Err(PayloadError::BadTimestamp(format!(
                        "{} seconds since the epoch is out of range",
                        short_number(secs)
                    )));
                }
                Utc.timestamp_millis_opt(millis as i64)
                    .single()
                    .ok_or_else(|| {
                        PayloadError::BadTimestamp(format!(
                            "{} is not a valid time",
                            short_number(secs)
                        ))
                    })?
            }
            Some(other) => {
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
                format_timestamp(ts)
            )));
        }
        check_not_future(ts, self.policy, self.now)?;
        Ok((ts, false))
    }

    /// The alert level, or `None` when absent and the policy derives it.
    pub(crate) fn alert_level(&mut self) -> Result<Option<AlertLevel>, PayloadError> {
        let given = self.optional("alert_level");
        match given {
            None if self.liberal() => {
                self.note("alert_level", "absent", None);
                Ok(None)
            }
            None => Err(PayloadError::Missing("alert_level")),
            Some(Value::String(s)) => {
                if let Some(l) = AlertLevel::parse(s) {
                    return Ok(Some(l));
                }
                match AlertLevel::parse(&s.to_ascii_lowercase()).filter(|_| self.liberal()) {
                    Some(l) => {
                        self.note("alert_level", "case", given);
                        Ok(Some(l))
                    }
                    None => Err(PayloadError::BadAlertLevel(short_text(s, 40))),
                }
            }
            Some(Value::Number(n)) if self.liberal() => {
                match n.as_i64().and_then(AlertLevel::from_code) {
                    Some(l) => {
                        self.note("alert_level", "code", given);
                        Ok(Some(l))
                    }
                    None => Err(PayloadError::BadAlertLevel(n.to_string())),
                }
            }
            Some(v) => Err(PayloadError::WrongType {
                field: "alert_level",
                expected: "a string",
                got: type_name(v),
            }),
        }
    }

    /// An optional name field that must equal the topic's when present.
    pub(super) fn matching_name(
        &self,
        field: &'static str,
        topic_value: &str,
    ) -> Result<(), PayloadError> {
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

/// ISO 8601 date and time without an offset (Python's `datetime.utcnow().isoformat()`,
/// or `str(datetime)` with a space), read as UTC.
fn naive_utc(s: &str) -> Option<DateTime<Utc>> {
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}
