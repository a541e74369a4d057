//! The InfluxDB schema: which measurement, tags and fields each message becomes.
//!
//! | measurement | tags | fields | time |
//! |---|---|---|---|
//! | `readings` | `zone`, `sensor` | `temp` (float, °C), `hum` (float, %), `alert_level` (int 0/1/2), `seq` (int, when sent), `stamped_by` (`"ingest"`, when the payload had no timestamp) | reading's `timestamp` (or ingest's clock) |
//! | `heartbeats` | `zone` | `sensors` (int, 0 when not sent) | heartbeat's `timestamp` |
//! | `broker` | (none) | one float per `$SYS` statistic (`clients_connected`, `publish_dropped`, ...) | ingest's clock, whole second |
//! | `ingest` | `instance` | `readings`, `spool_bytes`, `received` (int); `lag_p50_s`, `lag_p99_s`, `lag_max_s` (float) and `lag_samples` (int), when readings were written | ingest's clock, every 10 s |
//! | `supervision` | `indicator` | `ok` (int 0/1), one float per measure and `<measure>_limit` | serve's clock, every 10 s |
//!
//! Tags are the low-cardinality dimensions dashboards filter on (a few zones, tens to
//! thousands of sensors); everything measured is a field. Because a point is identified
//! by measurement + tag set + timestamp, writing the same reading twice (an MQTT
//! redelivery) overwrites the first point instead of adding a second one: that is what
//! makes the at-least-once chain idempotent.

use super::line_protocol::Point;
use super::payload::{Heartbeat, Reading};

/// Measurement of sensor readings.
pub const READINGS: &str = "readings";

/// Readings in a line-protocol body (lines of the [`READINGS`] measurement), for the
/// counters of batches read back from ingest's disk spool.
pub fn count_reading_lines(body: &str) -> u64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(READINGS)
                .is_some_and(|rest| rest.starts_with(',') || rest.starts_with(' '))
        })
        .count() as u64
}
/// Measurement of zone heartbeats.
pub const HEARTBEATS: &str = "heartbeats";

/// Measurement of messages and points that were rejected, with the reason.
pub const DEADLETTERS: &str = "deadletters";

/// Measurement of the broker's `$SYS` statistics, written by ingest (see
/// [`crate::supervision::BROKER_STATS`]). No tag: two ingest processes reading the
/// same broker write the same values at the same second, which overwrite each other.
pub const BROKER: &str = "broker";
/// Measurement of ingest's own statistics (lag percentiles, spool), every 10 s.
pub const INGEST: &str = "ingest";
/// Measurement of the supervision indicators, written by `arng serve` every 10 s.
pub const SUPERVISION: &str = "supervision";

/// Longest raw payload kept in a dead letter, in characters.
pub const DEADLETTER_PAYLOAD_CHARS: usize = 4096;

/// Timestamp precision used for every write (payload timestamps carry milliseconds).
pub const WRITE_PRECISION: &str = "ms";

pub fn reading_point(r: &Reading) -> Point {
    let mut p = Point::new(READINGS)
        .tag("zone", r.zone.as_str())
        .tag("sensor", r.sensor.as_str())
        .float("temp", r.temp)
        .float("hum", r.hum)
        .int("alert_level", r.alert_level.code());
    if let Some(seq) = r.seq {
        // Stored as a signed integer: Flux handles `int` everywhere, `uint` poorly.
        p = p.int("seq", i64::try_from(seq).unwrap_or(i64::MAX));
    }
    if r.provenance.stamped_on_receipt {
        // Says that the time is ingest's clock at receipt, not the sensor's: such a
        // point is not idempotent (docs/data-model.md, "Accepted forms").
        p = p.string("stamped_by", "ingest");
    }
    p.timestamp(r.timestamp)
}

pub fn heartbeat_point(h: &Heartbeat) -> Point {
    Point::new(HEARTBEATS)
        .tag("zone", h.zone.as_str())
        .int(
            "sensors",
            h.sensors
                .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        )
        .timestamp(h.timestamp)
}

/// One `$SYS` statistic of the broker, at `time` truncated to the second so that the
/// statistics of one `sys_interval` share a row.
pub fn broker_point(field: &str, value: f64, time: chrono::DateTime<chrono::Utc>) -> Point {
    let secs = time.timestamp();
    Point::new(BROKER)
        .float(field, value)
        .timestamp(chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default())
}

/// Ingest's statistics over one interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct IngestStats {
    /// Readings written to InfluxDB in the interval.
    pub readings: u64,
    /// Lag percentiles (reading timestamp → written), when readings were written.
    pub lag_p50_s: Option<f64>,
    pub lag_p99_s: Option<f64>,
    pub lag_max_s: Option<f64>,
    /// How many lag samples the percentiles summarise (`arng serve` needs three
    /// readings at or above a lag before its indicator reports it).
    pub lag_samples: Option<u64>,
    /// Bytes waiting in the disk spool.
    pub spool_bytes: u64,
    /// MQTT messages received since the process started.
    pub received: u64,
}

pub fn ingest_point(instance: &str, s: &IngestStats, time: chrono::DateTime<chrono::Utc>) -> Point {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut p = Point::new(INGEST)
        .tag("instance", instance)
        .int("readings", int(s.readings))
        .int("spool_bytes", int(s.spool_bytes))
        .int("received", int(s.received));
    for (name, v) in [
        ("lag_p50_s", s.lag_p50_s),
        ("lag_p99_s", s.lag_p99_s),
        ("lag_max_s", s.lag_max_s),
    ] {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            p = p.float(name, v);
        }
    }
    if let Some(n) = s.lag_samples {
        p = p.int("lag_samples", int(n));
    }
    p.timestamp(time)
}

/// One indicator's evaluation: `ok`, then each measure's value (when known and
/// finite: line protocol has no infinity) and limit.
pub fn supervision_point(
    indicator: &str,
    ok: bool,
    measures: &[(&str, Option<f64>, f64)],
    time: chrono::DateTime<chrono::Utc>,
) -> Point {
    let mut p = Point::new(SUPERVISION)
        .tag("indicator", indicator)
        .int("ok", i64::from(ok));
    for (name, value, limit) in measures {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            p = p.float(*name, v);
        }
        p = p.float(format!("{name}_limit"), *limit);
    }
    p.timestamp(time)
}

/// A dead letter: what was rejected, why, and where it came from. `instance` (the
/// ingest client id) and a per-process unique millisecond `time_ms` keep two dead
/// letters from overwriting each other. Newlines in the payload are shown as `\n`
/// so the record stays on one line-protocol line.
pub fn dead_letter_point(
    reason: &str,
    instance: &str,
    topic: &str,
    payload: &[u8],
    error: &str,
    time_ms: i64,
) -> Point {
    let text: String = String::from_utf8_lossy(payload)
        .chars()
        .take(DEADLETTER_PAYLOAD_CHARS)
        .collect::<String>()
        .replace('\n', "\\n")
        .replace('\r', "\\r");
    let one_line = |s: &str| {
        s.chars()
            .take(1000)
            .collect::<String>()
            .replace(['\n', '\r'], " ")
    };
    Point::new(DEADLETTERS)
        .tag("reason", reason)
        .tag("instance", instance)
        .string("topic", one_line(topic))
        .string("payload", text)
        .string("error", one_line(error))
        .int("size", i64::try_from(payload.len()).unwrap_or(i64::MAX))
        .timestamp(chrono::DateTime::from_timestamp_millis(time_ms).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AlertLevel, SensorId, Zone};
    use chrono::{TimeZone, Utc};

    #[test]
    fn reading_becomes_one_point() {
        let r = Reading {
            zone: Zone::new("nord").unwrap(),
            sensor: SensorId::new("s1").unwrap(),
            seq: Some(5),
            timestamp: Utc.timestamp_millis_opt(1_795_850_102_125).unwrap(),
            temp: 31.5,
            hum: 40.0,
            alert_level: AlertLevel::Critical,
            provenance: Default::default(),
        };
        assert_eq!(
            reading_point(&r).to_line().unwrap(),
            "readings,sensor=s1,zone=nord temp=31.5,hum=40.0,alert_level=2i,seq=5i 1795850102125"
        );
        let stamped = Reading {
            seq: None,
            provenance: crate::domain::Provenance {
                stamped_on_receipt: true,
                level_derived: true,
            },
            ..r
        };
        assert_eq!(
            reading_point(&stamped).to_line().unwrap(),
            "readings,sensor=s1,zone=nord temp=31.5,hum=40.0,alert_level=2i,stamped_by=\"ingest\" 1795850102125"
        );
    }

    #[test]
    fn dead_letters_stay_on_one_line() {
        let p = dead_letter_point(
            "malformed_json",
            "arng-ingest",
            "entrepot/nord/s1/v1",
            b"{\"a\":\n1",
            "bad\njson",
            1_795_850_102_000,
        );
        let line = p.to_line().unwrap();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(
            line,
            r#"deadletters,instance=arng-ingest,reason=malformed_json topic="entrepot/nord/s1/v1",payload="{\"a\":\\n1",error="bad json",size=7i 1795850102000"#
        );
    }

    #[test]
    fn supervision_points() {
        let t = Utc.timestamp_millis_opt(1_795_850_102_125).unwrap();
        assert_eq!(
            broker_point("clients_connected", 3.0, t).to_line().unwrap(),
            "broker clients_connected=3.0 1795850102000"
        );
        let s = IngestStats {
            readings: 10,
            lag_p50_s: Some(0.25),
            lag_p99_s: Some(0.5),
            lag_max_s: None,
            lag_samples: Some(10),
            spool_bytes: 0,
            received: 42,
        };
        assert_eq!(
            ingest_point("arng-ingest", &s, t).to_line().unwrap(),
            "ingest,instance=arng-ingest readings=10i,spool_bytes=0i,received=42i,lag_p50_s=0.25,lag_p99_s=0.5,lag_samples=10i 1795850102125"
        );
        assert_eq!(
            supervision_point(
                "heartbeat_freshness",
                false,
                &[("age", Some(f64::INFINITY), 90.0)],
                t
            )
            .to_line()
            .unwrap(),
            "supervision,indicator=heartbeat_freshness ok=0i,age_limit=90.0 1795850102125"
        );
    }

    #[test]
    fn heartbeat_becomes_one_point() {
        let h = Heartbeat {
            zone: Zone::new("sud").unwrap(),
            timestamp: Utc.timestamp_millis_opt(1_795_850_102_000).unwrap(),
            sensors: None,
        };
        assert_eq!(
            heartbeat_point(&h).to_line().unwrap(),
            "heartbeats,zone=sud sensors=0i 1795850102000"
        );
    }

    #[test]
    fn reading_lines_are_counted_by_measurement_name() {
        let body = "readings,zone=nord,sensor=s1 temp=1 1\n\
                    readings_extra,zone=nord temp=1 1\n\
                    heartbeats,zone=nord alive=1i 1\n\
                    readings,zone=sud,sensor=s2 temp=2 2\n";
        assert_eq!(super::count_reading_lines(body), 2);
        assert_eq!(super::count_reading_lines(""), 0);
    }
}
