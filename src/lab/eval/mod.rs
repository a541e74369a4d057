//! The checks of `arng check-lab`, pure: each judges what was observed
//! ([`super::observed`]) and gives an [`Item`] with its evidence. No I/O; every
//! evaluator is unit-tested next to its code.
//!
//! - [`broker`]: authentication, round trip, wildcards, zones;
//! - [`payload`]: the five fields and the critical level;
//! - [`heartbeat`]: retained, QoS 0, period;
//! - [`influx`]: measurement, values, retention;
//! - [`rest`]: the three routes.

pub mod broker;
pub mod heartbeat;
pub mod influx;
pub mod payload;
pub mod rest;

use std::time::Duration;

use super::observed::{Anonymous, RoundTrip, Sample, Seen};
use super::{Item, Judge, Lang, Status};

pub use influx::InfluxSeen;
pub use rest::RestSeen;

/// What the checks expect (from the options).
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub zones: Vec<String>,
    pub window: Duration,
    pub heartbeat_period: Duration,
    pub heartbeat_tolerance: Duration,
}

/// What the broker showed.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSeen {
    /// An anonymous connection attempt.
    pub anonymous: Seen<Anonymous>,
    /// `entrepot/#` during the window (QoS 2).
    pub hash: Seen<Sample>,
    /// `entrepot/+/+/v1` during the window.
    pub plus: Seen<Sample>,
    /// The probe reading.
    pub round_trip: Seen<RoundTrip>,
    /// A new subscription to `entrepot/heartbeat/+` at the end of the window.
    pub retained: Seen<Sample>,
}

/// The broker, payload and heartbeat items, in report order.
pub fn evaluate_mqtt(seen: &MqttSeen, expect: &Expect, lang: Lang) -> Vec<Item> {
    let mut items = vec![
        broker::auth(&seen.anonymous, lang),
        broker::round_trip(&seen.round_trip, lang),
        broker::plus(seen, expect, lang),
        broker::hash(seen, expect, lang),
        broker::zones(&seen.hash, expect, lang),
    ];
    for (i, id) in super::ids::PAYLOAD_FIELDS.iter().enumerate() {
        items.push(payload::field(&seen.hash, i, id, lang));
    }
    items.push(payload::critical(&seen.hash, lang));
    items.push(heartbeat::retained(seen, expect, lang));
    items.push(heartbeat::qos(&seen.hash, lang));
    items.push(heartbeat::period(&seen.hash, expect, lang));
    items
}

/// A duration in seconds, as a report shows it (`30 s`, `1.5 s`).
pub(crate) fn s(d: Duration) -> String {
    let x = d.as_secs_f64();
    if x.fract() == 0.0 {
        format!("{x:.0} s")
    } else {
        format!("{x:.1} s")
    }
}

/// Verdicts zone by zone made into one item: the worst verdict wins (any failure
/// fails, else any zone not checked leaves the item not checked), each zone's line
/// is evidence.
#[derive(Debug, Default)]
pub(crate) struct PerZone {
    zones: Vec<String>,
    statuses: Vec<Status>,
    lines: Vec<String>,
}

impl PerZone {
    pub(crate) fn push(&mut self, zone: &str, status: Status, line: String) {
        self.zones.push(zone.to_owned());
        self.statuses.push(status);
        self.lines.push(line);
    }

    /// The item; `say` gives its summary from the verdict and the zones that have it.
    pub(crate) fn item(self, judge: Judge, say: impl FnOnce(Status, String) -> String) -> Item {
        let status = if self.statuses.contains(&Status::Fail) {
            Status::Fail
        } else if self.statuses.contains(&Status::NotChecked) || self.statuses.is_empty() {
            Status::NotChecked
        } else {
            Status::Pass
        };
        let which: Vec<&str> = self
            .zones
            .iter()
            .zip(&self.statuses)
            .filter(|(_, s)| **s == status)
            .map(|(z, _)| z.as_str())
            .collect();
        judge
            .verdict(status, say(status, which.join(", ")))
            .with(self.lines)
    }
}

/// Observations made by hand, for the evaluators' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::time::Duration;

    use chrono::Utc;

    use crate::lab::observed::{inspect_reading, Delivered, Sample, SeenHeartbeat, SeenReading};

    pub fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A reading of `zone`/`sensor` published at `at` seconds with this payload.
    pub fn reading_json(at: f64, zone: &str, sensor: &str, payload: &str) -> SeenReading {
        let topic = format!("entrepot/{zone}/{sensor}/v1");
        let m = Delivered {
            at: secs(at),
            topic: &topic,
            payload: payload.as_bytes(),
            qos: 1,
            retain: false,
        };
        inspect_reading(&m, zone, sensor, Utc::now())
    }

    /// A lab-shaped reading.
    pub fn reading(at: f64, zone: &str, temp: f64, hum: f64, level: &str) -> SeenReading {
        let payload = format!(
            r#"{{"timestamp": "2026-11-28T09:15:02Z", "temp": {temp}, "hum": {hum}, "alert_level": "{level}", "version": 1}}"#
        );
        reading_json(at, zone, "th1", &payload)
    }

    pub fn heartbeat(at: f64, zone: &str, qos: u8, retain: bool, n: u32) -> SeenHeartbeat {
        SeenHeartbeat {
            at: secs(at),
            zone: zone.into(),
            qos,
            retain,
            excerpt: format!(r#"{{"zone": "{zone}", "timestamp": {n}}}"#),
        }
    }

    pub fn sample(readings: Vec<SeenReading>, heartbeats: Vec<SeenHeartbeat>) -> Sample {
        let mut s = Sample {
            granted: vec![("entrepot/#".into(), Some(2))],
            readings_total: readings.len() as u64,
            heartbeats_total: heartbeats.len() as u64,
            ..Sample::default()
        };
        s.messages = s.readings_total + s.heartbeats_total;
        if !readings.is_empty() {
            s.depths.insert(4, s.readings_total);
        }
        if !heartbeats.is_empty() {
            s.depths.insert(3, s.heartbeats_total);
        }
        s.readings = readings;
        s.heartbeats = heartbeats;
        s
    }

    /// Every zone of the lab publishing normal readings every 5 s for 60 s, and one
    /// critical reading in est.
    pub fn good_readings() -> Vec<crate::lab::observed::SeenReading> {
        let mut v = Vec::new();
        for i in 0..12 {
            for (j, zone) in ["nord", "sud", "est"].iter().enumerate() {
                let t = 5.0 * i as f64 + j as f64 * 0.1;
                let temp = 20.0 + i as f64 / 10.0 + j as f64;
                v.push(reading(t, zone, temp, 40.0 + j as f64, "normal"));
            }
        }
        v.push(reading(61.0, "est", 31.5, 40.0, "critical"));
        v
    }

    /// Retained heartbeats at the start, then one every 30 s per zone.
    pub fn good_heartbeats() -> Vec<SeenHeartbeat> {
        let mut v = Vec::new();
        for zone in ["nord", "sud", "est"] {
            v.push(heartbeat(0.0, zone, 0, true, 0));
            for (k, at) in [5.0, 35.0, 65.0].into_iter().enumerate() {
                v.push(heartbeat(at, zone, 0, false, k as u32 + 1));
            }
        }
        v
    }
}
