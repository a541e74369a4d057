//! Supervision in `arng serve`: every [`SUPERVISION_INTERVAL`], gathers what the three
//! key indicators need (ingest's and the broker's statistics from InfluxDB, the zones'
//! heartbeats from the live view), evaluates them ([`crate::supervision`]), sets the
//! `arng_indicator_*` gauges that `GET /metrics` shows, and writes one `supervision`
//! point per indicator to InfluxDB so dashboards can plot them over time.
//!
//! Missing data is not ok: an indicator whose input cannot be read (InfluxDB down,
//! ingest not reporting) turns red with a reason, it does not keep its last value.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use super::live::ZoneSummary;
use super::AppState;
use crate::domain::schema::{supervision_point, BROKER, INGEST};
use crate::domain::{flux, Thresholds, Zone};
use crate::metrics::Registry;
use crate::store::{Record, StoreError};
use crate::supervision::{
    self, Indicator, Inputs, BROKER_STATS_MAX_AGE, DROPPED_WINDOW, INGEST_REPORT_WINDOW,
    SUPERVISION_INTERVAL,
};

/// Evaluates the indicators every `every` (normally [`SUPERVISION_INTERVAL`]), forever.
pub async fn run(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ok: HashMap<&'static str, bool> = HashMap::new();
    let mut writes_failing = false;
    loop {
        tick.tick().await;
        let indicators = evaluate_once(&state).await;
        for i in &indicators {
            if last_ok.insert(i.name, i.ok) != Some(i.ok) {
                if i.ok {
                    info!(indicator = i.name, detail = %i.detail, "indicator ok");
                } else {
                    warn!(indicator = i.name, detail = %i.detail, "indicator NOT ok");
                }
            }
        }
        match write(&state, &indicators).await {
            Ok(()) => writes_failing = false,
            Err(e) => {
                if !writes_failing {
                    warn!(error = %e, "cannot write the supervision indicators to InfluxDB (GET /metrics still has them)");
                }
                writes_failing = true;
            }
        }
    }
}

/// Gathers the inputs, evaluates the indicators and updates the gauges.
pub async fn evaluate_once(state: &AppState) -> Vec<Indicator> {
    let inputs = gather(state).await;
    let indicators = supervision::evaluate(&inputs);
    set_gauges(state.registry(), &indicators);
    indicators
}

async fn write(state: &AppState, indicators: &[Indicator]) -> Result<(), StoreError> {
    let now = Utc::now();
    let points: Vec<_> = indicators
        .iter()
        .map(|i| {
            let measures: Vec<(&str, Option<f64>, f64)> = i
                .measures
                .iter()
                .map(|m| (m.name, m.value, m.limit))
                .collect();
            supervision_point(i.name, i.ok, &measures, now)
        })
        .collect();
    state.influx.write_points(&points).await
}

/// `arng_indicator_ok{indicator}`, and per measure `arng_indicator_<measure>` (NaN
/// when missing) and `arng_indicator_<measure>_limit`.
pub fn set_gauges(r: &Registry, indicators: &[Indicator]) {
    for i in indicators {
        r.gauge(
            "arng_indicator_ok",
            "1 when the supervision indicator is within its limits (docs/supervision.md).",
            &[("indicator", i.name)],
        )
        .set(if i.ok { 1.0 } else { 0.0 });
        for m in &i.measures {
            r.gauge(
                &format!("arng_indicator_{}", m.name),
                &format!(
                    "Supervision indicator {}: {} (NaN: no data).",
                    i.name, m.name
                ),
                &[],
            )
            .set(m.value.unwrap_or(f64::NAN));
            r.gauge(
                &format!("arng_indicator_{}_limit", m.name),
                &format!("Limit of arng_indicator_{} (ok when at or below).", m.name),
                &[],
            )
            .set(m.limit);
        }
    }
}

/// ingest's lag p99 (with the samples it summarises) and spool bytes over the report
/// window.
pub fn ingest_query(bucket: &str) -> String {
    format!(
        r#"from(bucket: {}) |> range(start: -{}, stop: 1h) |> filter(fn: (r) => r._measurement == {} and (r._field == "lag_p99_s" or r._field == "lag_samples" or r._field == "readings" or r._field == "spool_bytes"))"#,
        flux::string(bucket),
        flux::duration(INGEST_REPORT_WINDOW),
        flux::string(INGEST),
    )
}

/// The broker's uptime over the freshness window (present: the broker reports).
pub fn broker_uptime_query(bucket: &str) -> String {
    format!(
        r#"from(bucket: {}) |> range(start: -{}, stop: 1h) |> filter(fn: (r) => r._measurement == {} and r._field == "uptime_s") |> last()"#,
        flux::string(bucket),
        flux::duration(BROKER_STATS_MAX_AGE),
        flux::string(BROKER),
    )
}

/// Every stored value of the broker's dropped-messages counter within `lookback`
/// (Mosquitto publishes it only when it changes: few points).
pub fn broker_dropped_query(bucket: &str, lookback: Duration) -> String {
    format!(
        r#"from(bucket: {}) |> range(start: -{}, stop: 1h) |> filter(fn: (r) => r._measurement == {} and r._field == "publish_dropped") |> keep(columns: ["_time", "_value"]) |> sort(columns: ["_time"])"#,
        flux::string(bucket),
        flux::duration(lookback.max(DROPPED_WINDOW)),
        flux::string(BROKER),
    )
}

/// (lag the indicator reports, total spool bytes of each instance's last report, any
/// report). The lag is [`supervision::witnessed_lag`] over every report of the window:
/// at least three readings had it, so one odd reading cannot turn the indicator red.
pub fn ingest_inputs(rows: &[Record]) -> (Option<f64>, Option<f64>, bool) {
    #[derive(Default)]
    struct Report {
        p99: Option<f64>,
        samples: Option<f64>,
        readings: Option<f64>,
    }
    let mut reports: HashMap<(String, i64), Report> = HashMap::new();
    let mut spool: HashMap<String, (i64, f64)> = HashMap::new();
    for r in rows {
        let (Some(field), Some(v)) = (r.str("_field"), r.f64("_value")) else {
            continue;
        };
        let t = r.time("_time").map_or(0, |t| t.timestamp_millis());
        let instance = r.str("instance").unwrap_or_default().to_owned();
        let key = (instance.clone(), t);
        match field {
            "lag_p99_s" => reports.entry(key).or_default().p99 = Some(v),
            // Written by ingest since issue 15; `readings` stands in for older ones.
            "lag_samples" => reports.entry(key).or_default().samples = Some(v),
            "readings" => reports.entry(key).or_default().readings = Some(v),
            "spool_bytes" => {
                let e = spool.entry(instance).or_insert((t, v));
                if t >= e.0 {
                    *e = (t, v);
                }
            }
            _ => {}
        }
    }
    let lags: Vec<(f64, u64)> = reports
        .values()
        .filter_map(|r| {
            let n = r.samples.or(r.readings).unwrap_or(1.0);
            Some((r.p99?, n.max(1.0) as u64))
        })
        .collect();
    let lag = supervision::witnessed_lag(&lags);
    let reporting = !spool.is_empty() || lag.is_some();
    let spool_total = (!spool.is_empty()).then(|| spool.values().map(|(_, v)| v).sum());
    (lag, spool_total, reporting)
}

async fn gather(state: &AppState) -> Inputs {
    let bucket = state.influx.bucket();
    let now = Utc::now();
    let (thresholds, _, _) = state.thresholds();
    let (heartbeat_ages_s, zones_without_heartbeat) =
        heartbeat_inputs(&state.live().zones(now, false), &thresholds);
    let mut inputs = Inputs {
        heartbeat_ages_s,
        zones_without_heartbeat,
        heartbeat_limit_s: thresholds.silence_after_s as f64,
        ..Inputs::default()
    };
    if let Ok(rows) = state.influx.query(&ingest_query(bucket)).await {
        let (lag, spool, reporting) = ingest_inputs(&rows);
        inputs.lag_p99_s = lag;
        inputs.spool_bytes = spool;
        inputs.ingest_reporting = reporting;
    }
    if let Ok(rows) = state.influx.query(&broker_uptime_query(bucket)).await {
        inputs.broker_reporting = !rows.is_empty();
    }
    if inputs.broker_reporting {
        let q = broker_dropped_query(bucket, state.options.lookback);
        if let Ok(rows) = state.influx.query(&q).await {
            let mut points: Vec<(i64, f64)> = rows
                .iter()
                .filter_map(|r| Some((r.time("_time")?.timestamp_millis(), r.f64("_value")?)))
                .collect();
            points.sort_by_key(|p| p.0);
            let since = now.timestamp_millis() - DROPPED_WINDOW.as_millis() as i64;
            inputs.dropped_in_window = supervision::counter_increase(&points, since);
        } else {
            // Unknown is not zero.
            inputs.broker_reporting = false;
        }
    }
    inputs
}

/// The zones whose heartbeat the freshness indicator watches, with its age: those that
/// have sent one, and those with thresholds of their own (configured, so expected);
/// and, apart, the zones seen only through readings (named in the detail, not
/// counted: one stray reading in a new zone would otherwise keep the indicator red).
pub fn heartbeat_inputs(
    zones: &[ZoneSummary],
    thresholds: &Thresholds,
) -> (Vec<(String, Option<f64>)>, Vec<String>) {
    let mut watched = Vec::new();
    let mut without = Vec::new();
    for z in zones {
        let configured = Zone::new(&z.zone).is_ok_and(|n| thresholds.zones.contains_key(&n));
        if z.heartbeat.age_s.is_some() || configured {
            watched.push((z.zone.clone(), z.heartbeat.age_s));
        } else {
            without.push(z.zone.clone());
        }
    }
    for zone in thresholds.zones.keys() {
        if !zones.iter().any(|z| z.zone == zone.as_str()) {
            watched.push((zone.to_string(), None));
        }
    }
    (watched, without)
}

/// How often `arng serve` evaluates the indicators.
pub const INTERVAL: Duration = SUPERVISION_INTERVAL;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Value;
    use crate::supervision::{E2E_LATENCY, LOSS_BACKLOG};

    fn row(field: &str, instance: &str, t: i64, v: f64) -> Record {
        let mut r = Record::default();
        r.values
            .insert("_field".into(), Value::String(field.into()));
        r.values
            .insert("instance".into(), Value::String(instance.into()));
        r.values.insert(
            "_time".into(),
            Value::Time(chrono::DateTime::from_timestamp_millis(t).unwrap()),
        );
        r.values.insert("_value".into(), Value::Double(v));
        r
    }

    #[test]
    fn ingest_reports_combine_instances() {
        let rows = [
            row("lag_p99_s", "a", 1, 0.4),
            row("lag_samples", "a", 1, 30.0),
            row("lag_p99_s", "b", 1, 0.9),
            row("lag_samples", "b", 1, 30.0),
            row("spool_bytes", "a", 1, 100.0),
            row("spool_bytes", "a", 2, 0.0),
            row("spool_bytes", "b", 1, 50.0),
        ];
        assert_eq!(ingest_inputs(&rows), (Some(0.9), Some(50.0), true));
        assert_eq!(ingest_inputs(&[]), (None, None, false));
        // Issue 15: one reading 29 minutes late in a quiet report (one sample) among
        // normal ones does not make the lag; `readings` counts for an older ingest.
        let rows = [
            row("lag_p99_s", "a", 1, 1722.0),
            row("lag_samples", "a", 1, 1.0),
            row("lag_p99_s", "a", 2, 0.3),
            row("lag_samples", "a", 2, 1.0),
            row("lag_p99_s", "a", 3, 0.2),
            row("readings", "a", 3, 6.0),
        ];
        assert_eq!(ingest_inputs(&rows).0, Some(0.2));
    }

    #[test]
    fn heartbeats_are_watched_for_zones_that_send_them_or_are_configured() {
        let zone = |name: &str, age: Option<f64>| ZoneSummary {
            zone: name.into(),
            sensors: 1,
            last_seen: None,
            alert_level: crate::domain::AlertLevel::Normal,
            heartbeat: super::super::live::HeartbeatStatus {
                last_mqtt: None,
                last_influx: None,
                age_s: age,
            },
        };
        let mut t = Thresholds::default();
        t.zones.insert(Zone::new("froid").unwrap(), t.default);
        t.zones.insert(Zone::new("quai").unwrap(), t.default);
        let zones = [
            zone("nord", Some(12.0)),
            zone("stray", None),
            zone("froid", None),
        ];
        let (watched, without) = heartbeat_inputs(&zones, &t);
        assert_eq!(
            watched,
            vec![
                ("nord".into(), Some(12.0)),
                ("froid".into(), None),
                ("quai".into(), None)
            ]
        );
        assert_eq!(without, vec!["stray".to_owned()]);
    }

    #[test]
    fn queries_quote_and_bound() {
        assert!(ingest_query("entrepot").contains(r#"range(start: -60s, stop: 1h)"#));
        assert!(broker_uptime_query("entrepot").contains(r#"r._field == "uptime_s""#));
        assert!(broker_dropped_query("b\"x", Duration::from_secs(60))
            .starts_with(r#"from(bucket: "b\"x") |> range(start: -300s"#));
    }

    #[test]
    fn gauges_show_missing_data_as_nan() {
        let r = Registry::new();
        let v = supervision::evaluate(&Inputs::default());
        set_gauges(&r, &v);
        let text = r.render();
        assert!(
            text.contains(r#"arng_indicator_ok{indicator="e2e_latency"} 0"#),
            "{text}"
        );
        assert!(
            text.contains("arng_indicator_e2e_latency_p99_seconds NaN"),
            "{text}"
        );
        assert!(
            text.contains("arng_indicator_e2e_latency_p99_seconds_limit 5"),
            "{text}"
        );
        assert!(
            text.contains(r#"arng_indicator_ok{indicator="loss_backlog"} 0"#),
            "{text}"
        );
        assert!(
            v.iter().any(|i| i.name == LOSS_BACKLOG) && v.iter().any(|i| i.name == E2E_LATENCY)
        );
    }
}
