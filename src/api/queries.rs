//! The Flux queries behind the API, and how their rows become API types. Pure: every
//! value placed in a query is a validated name, a duration or a time formatted here,
//! quoted by [`crate::domain::flux`] (InfluxDB OSS has no query parameters).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::live::StoredPoint;
use crate::domain::alert::ALERTS;
use crate::domain::flux;
use crate::domain::schema::{HEARTBEATS, READINGS};
use crate::domain::{AlertLevel, SensorId, Zone};
use crate::store::Record;
use crate::supervision::{MAX_CLOCK_AHEAD, PROBE_SENSOR};

/// Where a query's time range starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Since {
    Ago(Duration),
    At(DateTime<Utc>),
}

impl Since {
    fn flux(&self) -> String {
        match self {
            Since::Ago(d) => format!("-{}", flux::duration(*d)),
            // RFC 3339 from chrono: digits, '-', ':', 'T', '.', 'Z' only.
            Since::At(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }
}

fn from(bucket: &str) -> String {
    format!("from(bucket: {})", flux::string(bucket))
}

/// Where every range stops: [`MAX_CLOCK_AHEAD`] after now, so points from a sensor
/// whose clock runs a little fast are still shown (Flux's default stop is now()), and
/// none dated further ahead (issue 15: a reading dated 2099 pinned a zone's
/// `last_seen` in the future).
fn stop() -> String {
    flux::duration(MAX_CLOCK_AHEAD)
}

/// The Flux predicate that leaves the supervision probe's points out. Alerts without
/// a sensor have no `sensor` column at all, hence `not exists`.
fn not_probe() -> String {
    format!(
        "(not exists r.sensor or r.sensor != {})",
        flux::string(PROBE_SENSOR)
    )
}

/// The last reading of every sensor (optionally of one zone) within `lookback`.
pub fn latest_readings(bucket: &str, zone: Option<&Zone>, lookback: Duration) -> String {
    let zone_filter = zone.map_or(String::new(), |z| {
        format!(" and r.zone == {}", flux::string(z.as_str()))
    });
    format!(
        r#"{} |> range(start: -{}, stop: {}) |> filter(fn: (r) => r._measurement == {}{zone_filter}) |> last() |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")"#,
        from(bucket),
        flux::duration(lookback),
        stop(),
        flux::string(READINGS),
    )
}

/// The last heartbeat of every zone within `lookback`.
pub fn latest_heartbeats(bucket: &str, lookback: Duration) -> String {
    format!(
        r#"{} |> range(start: -{}, stop: {}) |> filter(fn: (r) => r._measurement == {} and r._field == "sensors") |> last()"#,
        from(bucket),
        flux::duration(lookback),
        stop(),
        flux::string(HEARTBEATS),
    )
}

/// The newest stored point of each sensor. `last()` works per field, so a field that
/// only some points carry (`seq`, `stamped_by`) can have its last value at an older
/// time than `temp`; the pivot then gives that sensor a second, older row. Only the
/// newest row of each sensor is its last point.
pub fn stored_points(rows: &[Record]) -> Vec<StoredPoint> {
    let mut newest: std::collections::BTreeMap<(Zone, SensorId), StoredPoint> = Default::default();
    for p in rows.iter().filter_map(|r| {
        Some(StoredPoint {
            zone: Zone::new(r.str("zone")?).ok()?,
            sensor: SensorId::new(r.str("sensor")?).ok()?,
            time_ms: r.time("_time")?.timestamp_millis(),
            temp: r.f64("temp"),
            hum: r.f64("hum"),
            alert_level: r.i64("alert_level").and_then(AlertLevel::from_code),
            seq: r.i64("seq"),
            stamped_by_ingest: r.str("stamped_by") == Some("ingest"),
        })
    }) {
        let key = (p.zone.clone(), p.sensor.clone());
        match newest.get(&key) {
            Some(old) if old.time_ms >= p.time_ms => {}
            _ => {
                newest.insert(key, p);
            }
        }
    }
    newest.into_values().collect()
}

pub fn heartbeat_times(rows: &[Record]) -> Vec<(Zone, i64)> {
    rows.iter()
        .filter_map(|r| {
            Some((
                Zone::new(r.str("zone")?).ok()?,
                r.time("_time")?.timestamp_millis(),
            ))
        })
        .collect()
}

/// Mean temperature and humidity per sensor in windows of `every` over `range`
/// (without the supervision probe unless `include_probe`).
pub fn history(
    bucket: &str,
    zone: &Zone,
    range: Duration,
    every: Duration,
    include_probe: bool,
) -> String {
    let probe_filter = if include_probe {
        String::new()
    } else {
        format!(" and {}", not_probe())
    };
    format!(
        r#"{} |> range(start: -{}) |> filter(fn: (r) => r._measurement == {} and r.zone == {}{probe_filter} and (r._field == "temp" or r._field == "hum")) |> aggregateWindow(every: {}, fn: mean, createEmpty: false) |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") |> group(columns: ["sensor"]) |> sort(columns: ["_time"])"#,
        from(bucket),
        flux::duration(range),
        flux::string(READINGS),
        flux::string(zone.as_str()),
        flux::duration(every),
    )
}

/// One point of a history series.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryPoint {
    pub time: String,
    pub temp: Option<f64>,
    pub hum: Option<f64>,
}

/// One sensor's series.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistorySeries {
    pub sensor: String,
    pub points: Vec<HistoryPoint>,
}

pub fn history_series(rows: &[Record]) -> Vec<HistorySeries> {
    let mut out: Vec<HistorySeries> = Vec::new();
    for r in rows {
        let (Some(sensor), Some(time)) = (r.str("sensor"), r.time("_time")) else {
            continue;
        };
        let point = HistoryPoint {
            time: crate::domain::payload::format_timestamp(time),
            temp: r.f64("temp").map(round2),
            hum: r.f64("hum").map(round2),
        };
        match out.iter_mut().find(|s| s.sensor == sensor) {
            Some(s) => s.points.push(point),
            None => out.push(HistorySeries {
                sensor: sensor.to_owned(),
                points: vec![point],
            }),
        }
    }
    out.sort_by(|a, b| a.sensor.cmp(&b.sensor));
    out
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Alerts since `since`, newest first, optionally of one zone and severity, without
/// the supervision probe's unless `include_probe`.
pub fn alerts(
    bucket: &str,
    zone: Option<&Zone>,
    severity: Option<AlertLevel>,
    since: Since,
    limit: usize,
    include_probe: bool,
) -> String {
    let mut filter = format!("r._measurement == {}", flux::string(ALERTS));
    if !include_probe {
        filter += &format!(" and {}", not_probe());
    }
    if let Some(z) = zone {
        filter += &format!(" and r.zone == {}", flux::string(z.as_str()));
    }
    if let Some(s) = severity {
        filter += &format!(" and r.severity == {}", flux::string(s.as_str()));
    }
    format!(
        r#"{} |> range(start: {}, stop: {}) |> filter(fn: (r) => {filter}) |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") |> group() |> sort(columns: ["_time"], desc: true) |> limit(n: {limit})"#,
        from(bucket),
        since.flux(),
        stop(),
    )
}

/// An alert as `GET /alerts` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredAlert {
    pub id: Option<String>,
    pub timestamp: String,
    pub zone: String,
    pub sensor: Option<String>,
    pub metric: Option<String>,
    pub severity: Option<String>,
    pub state: Option<String>,
    pub source: Option<String>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub message: Option<String>,
}

pub fn stored_alerts(rows: &[Record]) -> Vec<StoredAlert> {
    rows.iter()
        .filter_map(|r| {
            // A tag that was not written reads as an empty string: show it as null.
            let s = |c: &str| r.str(c).filter(|v| !v.is_empty()).map(str::to_owned);
            Some(StoredAlert {
                id: s("id"),
                timestamp: crate::domain::payload::format_timestamp(r.time("_time")?),
                zone: s("zone")?,
                sensor: s("sensor"),
                metric: s("metric"),
                severity: s("severity"),
                state: s("state"),
                source: s("source"),
                value: r.f64("value"),
                threshold: r.f64("threshold"),
                message: s("message"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::csv::Value;

    fn row(time_ms: i64, fields: &[(&str, Value)]) -> Record {
        let mut r = Record::default();
        r.values.insert("zone".into(), Value::String("nord".into()));
        r.values
            .insert("sensor".into(), Value::String("temp".into()));
        r.values.insert(
            "_time".into(),
            Value::Time(DateTime::from_timestamp_millis(time_ms).unwrap()),
        );
        for (k, v) in fields {
            r.values.insert((*k).into(), v.clone());
        }
        r
    }

    #[test]
    fn a_sensor_has_one_last_point_whatever_the_pivot_gives() {
        // The lab's message (stamped by ingest) then a reading with a timestamp: the
        // pivot of the per-field last() gives an old row with only `stamped_by`.
        let newer = row(
            2_000,
            &[
                ("temp", Value::Double(31.5)),
                ("alert_level", Value::Long(2)),
            ],
        );
        let older = row(1_000, &[("stamped_by", Value::String("ingest".into()))]);
        for rows in [vec![newer.clone(), older.clone()], vec![older, newer]] {
            let points = stored_points(&rows);
            assert_eq!(points.len(), 1, "{points:?}");
            assert_eq!(points[0].time_ms, 2_000);
            assert_eq!(points[0].temp, Some(31.5));
            assert!(!points[0].stamped_by_ingest);
        }
    }

    #[test]
    fn queries_quote_every_value() {
        let z = Zone::new("nord").unwrap();
        let q = history(
            "my \"bucket\"",
            &z,
            Duration::from_secs(3600),
            Duration::from_secs(60),
            false,
        );
        assert!(
            q.contains(r#"(not exists r.sensor or r.sensor != "e2e-probe")"#),
            "{q}"
        );
        assert!(
            q.starts_with(r#"from(bucket: "my \"bucket\"") |> range(start: -3600s)"#),
            "{q}"
        );
        assert!(
            q.contains(r#"r.zone == "nord""#) && q.contains("every: 60s"),
            "{q}"
        );
        let q = alerts(
            "entrepot",
            Some(&z),
            Some(AlertLevel::Critical),
            Since::At(DateTime::from_timestamp_millis(1_795_850_102_125).unwrap()),
            50,
            true,
        );
        assert!(
            q.contains("range(start: 2026-11-28T") && q.contains(".125Z, stop: 300s)"),
            "{q}"
        );
        assert!(!q.contains("e2e-probe"), "{q}");
        assert!(
            q.contains(r#"r.severity == "critical""#) && q.contains("limit(n: 50)"),
            "{q}"
        );
        assert!(alerts(
            "entrepot",
            None,
            None,
            Since::Ago(Duration::from_secs(90)),
            1,
            false,
        )
        .contains("range(start: -90s, stop: 300s)"));
        assert!(
            latest_readings("entrepot", Some(&z), Duration::from_secs(86400))
                .contains(r#"r.zone == "nord""#)
        );
    }
}
