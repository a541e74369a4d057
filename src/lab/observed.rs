//! What `arng check-lab` saw of a team's chain, as plain data: the messages of the
//! sampling window, the probe's round trip, the REST answers, the InfluxDB points.
//! The I/O edges ([`super::watch`], [`super::backend`]) fill these in; the evaluators
//! ([`super::eval_mqtt`], [`super::eval_backend`]) judge them without any I/O.
//!
//! Memory is bounded whatever the team's traffic: at most [`MAX_READINGS`] readings
//! and [`MAX_HEARTBEATS`] heartbeats are kept per subscription (the others are
//! counted), payloads are kept as excerpts of [`EXCERPT_CHARS`] characters, and at
//! most [`MAX_TOPICS`] other topics are named. With the defaults that is under 16 MiB
//! for the busiest broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::domain::payload::{type_name, Fields, ReadPolicy, HUM_RANGE, TEMP_RANGE};
use crate::domain::topic::{READING_VERSION_SEGMENT, ROOT};
use crate::domain::AlertLevel;

/// Readings kept per subscription; beyond, they are only counted.
pub const MAX_READINGS: usize = 20_000;
/// Heartbeats kept per subscription.
pub const MAX_HEARTBEATS: usize = 2_000;
/// Other topics named per subscription (alerts, status...).
pub const MAX_TOPICS: usize = 1_000;
/// Characters of a payload kept as evidence.
pub const EXCERPT_CHARS: usize = 240;

/// Why something could not be observed: the requirement failed (the team's service
/// is down or answers wrong), or it could not be checked (our access, our options).
#[derive(Debug, Clone, PartialEq)]
pub enum Gap {
    Failed(String),
    NotChecked(String),
}

/// An observation, or why there is none.
pub type Seen<T> = Result<T, Gap>;

/// The five fields the lab asks of a reading, in the order of the report.
pub const FIELDS: [&str; 5] = ["timestamp", "temp", "hum", "alert_level", "version"];

/// One field of one reading.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldState {
    Ok,
    Missing,
    /// Present but of the wrong type or out of range: why.
    Wrong(String),
}

/// The `alert_level` of a reading: one of arng's three levels (any case, or the codes
/// 0/1/2), or another value (kept, short).
#[derive(Debug, Clone, PartialEq)]
pub enum Level {
    Known(AlertLevel),
    Other(String),
}

impl Level {
    /// Critical in arng's words or the lab's (French "critique").
    pub fn is_critical(&self) -> bool {
        match self {
            Level::Known(l) => *l == AlertLevel::Critical,
            Level::Other(s) => matches!(s.to_lowercase().as_str(), "critique" | "crit"),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Level::Known(l) => l.to_string(),
            Level::Other(s) => s.clone(),
        }
    }
}

/// A reading seen on `entrepot/<zone>/<capteur>/v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenReading {
    /// Since the window started.
    pub at: Duration,
    pub topic: String,
    pub zone: String,
    pub sensor: String,
    /// QoS of the delivery (the publisher's, up to the subscription's).
    pub qos: u8,
    pub excerpt: String,
    /// In the order of [`FIELDS`].
    pub fields: [FieldState; 5],
    pub temp: Option<f64>,
    pub hum: Option<f64>,
    pub level: Option<Level>,
}

/// A message seen on `entrepot/heartbeat/<zone>`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenHeartbeat {
    pub at: Duration,
    pub zone: String,
    pub qos: u8,
    /// Delivered as a retained message (only at subscription time).
    pub retain: bool,
    pub excerpt: String,
}

/// What one subscription delivered during its time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// The filters and the QoS the broker granted each (None: refused).
    pub granted: Vec<(String, Option<u8>)>,
    pub messages: u64,
    pub readings: Vec<SeenReading>,
    pub readings_total: u64,
    pub heartbeats: Vec<SeenHeartbeat>,
    pub heartbeats_total: u64,
    /// Messages on any other topic, by topic.
    pub other_topics: BTreeMap<String, u64>,
    /// Messages per topic depth (number of levels).
    pub depths: BTreeMap<usize, u64>,
    /// When the probe reading (sensor `probe_sensor`) came through, with its topic.
    pub probe: Option<(Duration, String)>,
    /// When a payload holding the probe alert's marker came through, and on which topic.
    pub marker: Option<(Duration, String)>,
    /// The connection dropped before the end: why (the sample stops there).
    pub lost: Option<String>,
}

/// What a [`Sample`] looks for besides the team's traffic.
#[derive(Debug, Clone)]
pub struct Markers {
    /// The probe reading's sensor name.
    pub probe_sensor: String,
    /// The unique text of the probe alert.
    pub alert_marker: String,
}

impl Sample {
    /// Records one delivered message, `at` after the window started, `now` on the
    /// wall clock (to read timestamps).
    pub fn record(&mut self, m: Delivered<'_>, marks: &Markers, now: DateTime<Utc>) {
        self.messages += 1;
        let depth = m.topic.split('/').count();
        *self.depths.entry(depth).or_default() += 1;
        if self.marker.is_none()
            && !marks.alert_marker.is_empty()
            && contains(m.payload, marks.alert_marker.as_bytes())
        {
            self.marker = Some((m.at, m.topic.to_owned()));
        }
        let levels: Vec<&str> = m.topic.split('/').collect();
        match levels[..] {
            [ROOT, zone, sensor, READING_VERSION_SEGMENT] => {
                if sensor == marks.probe_sensor {
                    self.probe.get_or_insert((m.at, m.topic.to_owned()));
                    return;
                }
                self.readings_total += 1;
                if self.readings.len() < MAX_READINGS {
                    self.readings.push(inspect_reading(&m, zone, sensor, now));
                }
            }
            [ROOT, "heartbeat", zone] => {
                self.heartbeats_total += 1;
                if self.heartbeats.len() < MAX_HEARTBEATS {
                    self.heartbeats.push(SeenHeartbeat {
                        at: m.at,
                        zone: zone.to_owned(),
                        qos: m.qos,
                        retain: m.retain,
                        excerpt: excerpt(m.payload),
                    });
                }
            }
            _ => {
                let known = self.other_topics.len() < MAX_TOPICS;
                if let Some(n) = self.other_topics.get_mut(m.topic) {
                    *n += 1;
                } else if known {
                    self.other_topics.insert(m.topic.to_owned(), 1);
                }
            }
        }
    }

    /// Every topic this subscription delivered (of the messages kept).
    pub fn topics(&self) -> BTreeSet<String> {
        let heartbeat = |h: &SeenHeartbeat| format!("{ROOT}/heartbeat/{}", h.zone);
        self.readings
            .iter()
            .map(|r| r.topic.clone())
            .chain(self.heartbeats.iter().map(heartbeat))
            .chain(self.other_topics.keys().cloned())
            .chain(self.probe.iter().map(|(_, t)| t.clone()))
            .collect()
    }
}

/// One message as the broker delivered it.
#[derive(Debug, Clone, Copy)]
pub struct Delivered<'a> {
    pub at: Duration,
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A payload as evidence: UTF-8 (lossy), on one line, at most [`EXCERPT_CHARS`].
pub fn excerpt(payload: &[u8]) -> String {
    let s = String::from_utf8_lossy(payload);
    cut(
        &s.split_whitespace().collect::<Vec<_>>().join(" "),
        EXCERPT_CHARS,
    )
}

/// `s` cut to `max` characters, an ellipsis saying it was cut.
pub fn cut(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Judges each field of a reading on its own, the way the lab asks for them:
/// `timestamp` a time (RFC 3339, ISO 8601 or seconds/milliseconds since the epoch, as
/// arng's liberal reader takes them), `temp` and `hum` numbers in their physical
/// range, `alert_level` a string or an integer code, `version` a number or a
/// non-empty string.
pub fn inspect_reading(
    m: &Delivered<'_>,
    zone: &str,
    sensor: &str,
    now: DateTime<Utc>,
) -> SeenReading {
    let mut seen = SeenReading {
        at: m.at,
        topic: m.topic.to_owned(),
        zone: zone.to_owned(),
        sensor: sensor.to_owned(),
        qos: m.qos,
        excerpt: excerpt(m.payload),
        fields: std::array::from_fn(|_| FieldState::Missing),
        temp: None,
        hum: None,
        level: None,
    };
    let map = match crate::domain::payload::parse_object(m.payload) {
        Ok(map) => map,
        Err(e) => {
            seen.fields = std::array::from_fn(|_| FieldState::Wrong(e.to_string()));
            return seen;
        }
    };
    let policy = ReadPolicy::default();
    let mut f = Fields::new(&map, &policy, now);
    seen.fields[0] = present(&map, "timestamp", || f.timestamp().map(drop));
    let number = |field, range| {
        present(&map, field, || {
            Fields::new(&map, &policy, now).number(field, range)
        })
    };
    seen.fields[1] = number("temp", TEMP_RANGE);
    seen.fields[2] = number("hum", HUM_RANGE);
    seen.temp = map.get("temp").and_then(Value::as_f64);
    seen.hum = map.get("hum").and_then(Value::as_f64);
    (seen.fields[3], seen.level) = alert_level(&map, &policy, now);
    seen.fields[4] = match map.get("version") {
        None | Some(Value::Null) => FieldState::Missing,
        Some(Value::Number(_)) => FieldState::Ok,
        Some(Value::String(s)) if !s.trim().is_empty() => FieldState::Ok,
        Some(other) => FieldState::Wrong(format!(
            "{} (expected a number or a string)",
            type_name(other)
        )),
    };
    seen
}

fn present<T, E: std::fmt::Display>(
    map: &Map<String, Value>,
    field: &str,
    read: impl FnOnce() -> Result<T, E>,
) -> FieldState {
    if map.get(field).is_none_or(Value::is_null) {
        return FieldState::Missing;
    }
    match read() {
        Ok(_) => FieldState::Ok,
        Err(e) => FieldState::Wrong(e.to_string()),
    }
}

fn alert_level(
    map: &Map<String, Value>,
    policy: &ReadPolicy,
    now: DateTime<Utc>,
) -> (FieldState, Option<Level>) {
    match map.get("alert_level") {
        None | Some(Value::Null) => (FieldState::Missing, None),
        Some(v @ (Value::String(_) | Value::Number(_))) => {
            match Fields::new(map, policy, now).alert_level() {
                Ok(Some(l)) => (FieldState::Ok, Some(Level::Known(l))),
                // A level of the team's own vocabulary is still a typed level.
                _ => match v {
                    Value::String(s) if !s.trim().is_empty() => {
                        (FieldState::Ok, Some(Level::Other(cut(s, 40))))
                    }
                    Value::Number(n) if n.is_i64() || n.is_u64() => {
                        (FieldState::Ok, Some(Level::Other(n.to_string())))
                    }
                    _ => (
                        FieldState::Wrong(format!(
                            "{} (expected a level name or code)",
                            type_name(v)
                        )),
                        None,
                    ),
                },
            }
        }
        Some(other) => (
            FieldState::Wrong(format!(
                "{} (expected a string or an integer)",
                type_name(other)
            )),
            None,
        ),
    }
}

/// The probe reading's round trip through the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundTrip {
    pub topic: String,
    pub payload: String,
    /// PUBACK time.
    pub acked_ms: f64,
    /// Back on the subscription to the same topic, after publishing.
    pub back_ms: Option<f64>,
}

/// An anonymous connection attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Anonymous {
    /// Refused, with the broker's reason.
    Refused(String),
    Accepted,
}

/// One HTTP answer, its body kept up to [`MAX_BODY_CHARS`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSeen {
    pub status: u16,
    pub body: String,
    /// How long the request took.
    pub took_ms: f64,
}

/// Characters of an HTTP body kept.
pub const MAX_BODY_CHARS: usize = 64 * 1024;

impl HttpSeen {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    pub fn excerpt(&self) -> String {
        excerpt(self.body.as_bytes())
    }
}

/// One `GET /zones/{zone}/latest` answer, reduced to what the check needs (its
/// numbers and an excerpt), so that a long window keeps little.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestAnswer {
    /// When the answer came, since the window started.
    pub at: Duration,
    pub zone: String,
    /// The HTTP status, or why there was none.
    pub status: Seen<u16>,
    pub excerpt: String,
    /// The numbers of the JSON body, at most [`MAX_NUMBERS`].
    pub numbers: Vec<f64>,
}

/// Numbers kept of one answer.
pub const MAX_NUMBERS: usize = 500;

impl LatestAnswer {
    pub fn new(at: Duration, zone: &str, answer: Seen<HttpSeen>) -> LatestAnswer {
        let (status, excerpt, numbers) = match answer {
            Ok(h) => {
                let mut nums = Vec::new();
                if let Some(v) = h.json() {
                    numbers(&v, MAX_NUMBERS, &mut nums);
                }
                (Ok(h.status), h.excerpt(), nums)
            }
            Err(gap) => (Err(gap), String::new(), Vec::new()),
        };
        LatestAnswer {
            at,
            zone: zone.to_owned(),
            status,
            excerpt,
            numbers,
        }
    }

    /// Does this answer show `r` (its temp, and its hum when it has one)?
    pub fn shows(&self, r: &SeenReading) -> bool {
        let has = |v: f64| self.numbers.iter().any(|x| same_value(*x, v));
        r.temp.is_some_and(has) && r.hum.is_none_or(has)
    }
}

/// The probe alert: what was posted and where it was looked for afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertProbe {
    pub zone: String,
    pub marker: String,
    pub body: String,
    /// When it was posted, since the window started.
    pub posted_at: Duration,
    pub post: Seen<HttpSeen>,
    /// Where it was found, with how long after the POST.
    pub found: Vec<(String, f64)>,
    /// Where it was looked for and what that place answered last.
    pub looked: Vec<String>,
}

/// Numbers in a JSON document (strings that hold a number too), at most `max`.
pub fn numbers(v: &Value, max: usize, out: &mut Vec<f64>) {
    if out.len() >= max {
        return;
    }
    match v {
        Value::Number(n) => out.extend(n.as_f64()),
        Value::String(s) => out.extend(s.trim().parse::<f64>().ok().filter(|x| x.is_finite())),
        Value::Array(a) => a.iter().for_each(|x| numbers(x, max, out)),
        Value::Object(o) => o.values().for_each(|x| numbers(x, max, out)),
        _ => {}
    }
}

/// Two values the same reading carried (a store or an API may round to 1e-6).
pub fn same_value(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(topic: &'a str, payload: &'a str) -> Delivered<'a> {
        Delivered {
            at: Duration::from_millis(1500),
            topic,
            payload: payload.as_bytes(),
            qos: 1,
            retain: false,
        }
    }

    fn marks() -> Markers {
        Markers {
            probe_sensor: "e2e-probe".into(),
            alert_marker: "check-lab-42".into(),
        }
    }

    #[test]
    fn each_field_is_judged_alone() {
        let now = Utc::now();
        let r = inspect_reading(
            &msg(
                "entrepot/nord/th1/v1",
                r#"{"timestamp": 1795850102.5, "temp": "21.4", "hum": 44.0, "version": "1.0"}"#,
            ),
            "nord",
            "th1",
            now,
        );
        assert_eq!(r.fields[0], FieldState::Ok, "{r:?}");
        assert!(
            matches!(&r.fields[1], FieldState::Wrong(w) if w.contains("must be a number")),
            "{r:?}"
        );
        assert_eq!(r.fields[2], FieldState::Ok);
        assert_eq!(r.fields[3], FieldState::Missing);
        assert_eq!(r.fields[4], FieldState::Ok);
        assert_eq!((r.temp, r.hum, r.level.clone()), (None, Some(44.0), None));

        let r = inspect_reading(
            &msg(
                "entrepot/est/th1/v1",
                r#"{"timestamp": "hier", "temp": 31.2, "hum": 40, "alert_level": "CRITIQUE", "version": true}"#,
            ),
            "est",
            "th1",
            now,
        );
        assert!(
            matches!(&r.fields[0], FieldState::Wrong(w) if w.contains("RFC 3339")),
            "{r:?}"
        );
        assert_eq!(r.fields[3], FieldState::Ok);
        assert!(r.level.as_ref().unwrap().is_critical());
        assert!(matches!(&r.fields[4], FieldState::Wrong(w) if w.contains("boolean")));

        let r = inspect_reading(&msg("entrepot/est/th1/v1", "not json"), "est", "th1", now);
        assert!(
            r.fields.iter().all(|f| matches!(f, FieldState::Wrong(_))),
            "{r:?}"
        );
        let r = inspect_reading(
            &msg(
                "entrepot/est/th1/v1",
                r#"{"temp": 1, "hum": 2, "alert_level": 2}"#,
            ),
            "est",
            "th1",
            now,
        );
        assert_eq!(r.level, Some(Level::Known(AlertLevel::Critical)));
    }

    #[test]
    fn a_sample_sorts_and_bounds_what_it_sees() {
        let now = Utc::now();
        let mut s = Sample::default();
        s.record(
            msg("entrepot/nord/th1/v1", r#"{"temp": 20, "hum": 40}"#),
            &marks(),
            now,
        );
        s.record(msg("entrepot/nord/e2e-probe/v1", "{}"), &marks(), now);
        s.record(
            msg("entrepot/heartbeat/nord", r#"{"zone":"nord"}"#),
            &marks(),
            now,
        );
        s.record(
            msg(
                "entrepot/alerts/nord",
                r#"{"message":"check-lab-42 probe"}"#,
            ),
            &marks(),
            now,
        );
        assert_eq!(
            (s.messages, s.readings_total, s.heartbeats_total),
            (4, 1, 1)
        );
        assert_eq!(
            s.probe.as_ref().map(|p| p.1.as_str()),
            Some("entrepot/nord/e2e-probe/v1")
        );
        assert_eq!(
            s.marker.as_ref().map(|p| p.1.as_str()),
            Some("entrepot/alerts/nord")
        );
        assert_eq!(s.depths, BTreeMap::from([(3, 2), (4, 2)]));
        assert_eq!(
            s.topics().into_iter().collect::<Vec<_>>(),
            [
                "entrepot/alerts/nord",
                "entrepot/heartbeat/nord",
                "entrepot/nord/e2e-probe/v1",
                "entrepot/nord/th1/v1"
            ]
        );
        // Bounded: readings beyond the limit are counted, not kept.
        for _ in 0..MAX_READINGS + 10 {
            s.record(msg("entrepot/sud/th1/v1", "{}"), &marks(), now);
        }
        assert_eq!(s.readings.len(), MAX_READINGS);
        assert_eq!(s.readings_total, (MAX_READINGS + 11) as u64);
        for i in 0..MAX_TOPICS + 10 {
            s.record(msg(&format!("entrepot/status/c{i}"), "{}"), &marks(), now);
        }
        assert_eq!(s.other_topics.len(), MAX_TOPICS);
    }

    #[test]
    fn numbers_are_found_anywhere() {
        let v: Value = serde_json::json!({"a": [1, {"b": "2.5"}], "c": "x", "d": null});
        let mut out = Vec::new();
        numbers(&v, 10, &mut out);
        assert_eq!(out, [1.0, 2.5]);
        assert!(same_value(21.4, 21.400_000_1) && !same_value(21.4, 21.5));
        assert_eq!(excerpt(b"{\n  \"a\": 1\n}"), r#"{ "a": 1 }"#);
    }
}
