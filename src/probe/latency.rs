//! The measurement of `arng latency`: how long a reading takes to become visible,
//! measured with real probe readings (sensor `e2e-probe`, see [`crate::supervision`])
//! published one at a time, and how fresh each zone's heartbeat is. Percentiles come
//! from an HdrHistogram (microsecond resolution, 3 significant digits).
//!
//! Measured paths, each from the moment the probe is handed to the MQTT client:
//! - `broker_ack`: the broker's PUBACK (QoS 1);
//! - `publish_to_influxdb`: a Flux query finds the point (polled every 25 ms);
//! - `publish_to_api_mqtt`: `GET /zones/{zone}/latest` shows it on its MQTT side;
//! - `publish_to_rest`: `GET /zones/{zone}/latest` shows it on its InfluxDB side (what
//!   an API client sees; includes the API's refresh period, `serve --influx-refresh`);
//! - `influx_age_at_api`: at that moment, `influx.age_ms` of the answer: the API's
//!   clock minus the point's `_time` (the probe's timestamp, from our clock).
//!
//! Heartbeat freshness: after each probe, `now() - last(_time)` of the heartbeat in
//! InfluxDB of every zone of the scope.
//!
//! The zones are chosen as `arng check-e2e` chooses them ([`super::scope`]): the
//! zones named with `--zone` (the probes go to the first), else those the thresholds
//! configure, else those seen with a heartbeat in 24 h; the probes go to the first
//! with a recent heartbeat; `--exclude-zone` leaves zones out.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rumqttc::QoS;
use serde::Serialize;
use tabled::builder::Builder;
use tabled::settings::Style;
use tokio::time::Instant;

use super::influx::{last_heartbeats, probe_in_influx};
use super::prober::RETAINED_WAIT;
use super::scope::{Scope, ZoneOptions};
use super::{poll, ApiClient, ProbeError, Prober, POLL_EVERY};
use crate::config::Chain;
use crate::domain::topic::{HEARTBEATS_FILTER, THRESHOLDS_TOPIC};
use crate::domain::{AlertLevel, Zone};
use crate::store::InfluxClient;
use crate::supervision;

/// Consecutive lost probes after which the measurement stops.
const MAX_LOST_IN_A_ROW: u32 = 3;

/// The measured paths, in report order, with what each one measures.
pub const PATHS: [(&str, &str); 5] = [
    ("broker_ack", "publish → broker PUBACK (QoS 1)"),
    (
        "publish_to_influxdb",
        "publish → point found by a Flux query",
    ),
    (
        "publish_to_api_mqtt",
        "publish → GET /zones/{zone}/latest, MQTT side",
    ),
    (
        "publish_to_rest",
        "publish → GET /zones/{zone}/latest, InfluxDB side",
    ),
    (
        "influx_age_at_api",
        "API clock − InfluxDB _time (influx.age_ms) when first served",
    ),
];

/// Percentiles of one path, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

/// Latencies of one path, recorded in microseconds.
#[derive(Debug, Clone)]
pub struct Recorder(Histogram<u64>);

impl Default for Recorder {
    fn default() -> Self {
        // 1 µs to 1 h at 3 significant digits: fixed, small memory.
        Recorder(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid"))
    }
}

impl Recorder {
    /// Records `d`; values outside 1 µs..1 h are clamped to the range (a
    /// measurement rounded to 0 is still a measurement).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.max(1));
    }

    pub fn record_ms(&mut self, ms: f64) {
        if ms.is_finite() {
            self.record(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
        }
    }

    /// None before the first sample. Ordered: p50 ≤ p90 ≤ p99 ≤ max.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let h = &self.0;
        if h.is_empty() {
            return None;
        }
        let to_ms = |us: u64| us as f64 / 1000.0;
        let max = h.max();
        let q = |x: f64| to_ms(h.value_at_quantile(x).min(max));
        Some(Percentiles {
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            max_ms: to_ms(max),
            samples: h.len(),
        })
    }
}

/// Heartbeat freshness of one zone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeartbeatFreshness {
    #[serde(flatten)]
    pub age: Percentiles,
    /// The age at the last sample.
    pub latest_ms: f64,
}

/// What `--json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyReport {
    pub zone: String,
    /// Why that zone, and whose heartbeats were measured (check-e2e's sentence).
    pub zone_choice: String,
    /// Probes published.
    pub samples: u64,
    /// Probes not seen on every path within --timeout.
    pub lost: u64,
    /// Per path; null when nothing was measured on it.
    pub paths: BTreeMap<String, Option<Percentiles>>,
    pub heartbeats: BTreeMap<String, HeartbeatFreshness>,
    /// Why probes were lost (the first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// One measurement: where everything is, which zone, how many probes.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    /// Where the broker, InfluxDB and the API are.
    pub chain: Chain,
    /// Which zone is probed and whose heartbeats are measured, by the rule of
    /// [`super::scope`].
    pub zones: ZoneOptions,
    /// Probes to measure, one at a time (unless `duration` is set).
    pub samples: u32,
    /// Measure for this long instead of a number of samples.
    pub duration: Option<Duration>,
    /// Pause between two probes.
    pub interval: Duration,
    /// How long one probe may take to be visible everywhere (more than zero).
    pub timeout: Duration,
}

impl LatencyRun {
    /// Publishes the probes one at a time and times each on every path. `bar` moves
    /// by one per probe (or per second with `duration`); its message counts losses.
    pub async fn run(&self, bar: &ProgressBar) -> Result<LatencyReport, ProbeError> {
        let api = ApiClient::new(&self.chain.api, self.timeout);
        let influx = InfluxClient::with_timeout(&self.chain.influx, self.timeout);
        let client_id = format!("arng-latency-{}", std::process::id());
        let mut prober = Prober::connect(&self.chain.mqtt, &client_id, self.timeout).await?;
        // Heartbeats before thresholds: the broker sends the retained messages in the
        // order of the filters, so they are all in when the thresholds arrive.
        let filters = vec![
            (HEARTBEATS_FILTER.to_owned(), QoS::AtMostOnce),
            (THRESHOLDS_TOPIC.to_owned(), QoS::AtLeastOnce),
        ];
        prober
            .subscribe(filters, Instant::now() + self.timeout)
            .await?;
        let thresholds = prober.retained_thresholds(RETAINED_WAIT).await;
        let stored = last_heartbeats(&influx).await;
        let scope = self.zones.scope(
            &thresholds,
            stored.as_ref().unwrap_or(&Default::default()),
            &prober.heartbeats(),
            Utc::now(),
        );
        let zone = match &scope.probe {
            Ok(z) => z.clone(),
            Err(why) => {
                prober.disconnect().await;
                let influx = stored.err().map(|e| format!(" (InfluxDB: {e})"));
                return Err(ProbeError::NoZoneToProbe(format!(
                    "{why}{}",
                    influx.unwrap_or_default()
                )));
            }
        };
        let (temp, hum) = supervision::normal_probe_values(thresholds.for_zone(&zone));

        let started = Instant::now();
        let mut m = Measurements::default();
        let mut lost_in_a_row = 0;
        loop {
            let done = match self.duration {
                Some(d) => started.elapsed() >= d,
                None => m.samples >= u64::from(self.samples),
            };
            if done {
                break;
            }
            let r = prober.reading(&zone, temp, hum, AlertLevel::Normal);
            m.samples += 1;
            match sample(&mut prober, &api, &influx, &zone, &r, self.timeout, &mut m).await {
                Ok(()) => lost_in_a_row = 0,
                Err(e) => {
                    m.lost += 1;
                    lost_in_a_row += 1;
                    if m.errors.len() < 5 {
                        m.errors
                            .push(format!("probe seq={}: {e}", r.seq.unwrap_or_default()));
                    }
                }
            }
            // A broken chain would cost a whole timeout per probe: stop and say so.
            if lost_in_a_row >= MAX_LOST_IN_A_ROW {
                m.errors.push(format!(
                    "stopped after {MAX_LOST_IN_A_ROW} probes lost in a row (try arng check-e2e)"
                ));
                break;
            }
            heartbeat_sample(&influx, &scope, &mut m).await;
            match self.duration {
                Some(d) => bar.set_position(started.elapsed().as_secs().min(d.as_secs())),
                None => bar.inc(1),
            }
            bar.set_message(format!("{} lost", m.lost));
            if !self.interval.is_zero() {
                tokio::time::sleep(self.interval).await;
            }
        }
        prober.disconnect().await;
        Ok(m.report(&scope))
    }
}

#[derive(Default)]
struct Measurements {
    samples: u64,
    lost: u64,
    errors: Vec<String>,
    paths: BTreeMap<&'static str, Recorder>,
    heartbeats: BTreeMap<String, (Recorder, f64)>,
}

impl Measurements {
    fn record(&mut self, path: &'static str, d: Duration) {
        self.paths.entry(path).or_default().record(d);
    }

    fn report(&self, scope: &Scope) -> LatencyReport {
        LatencyReport {
            zone: scope
                .probe
                .as_ref()
                .map(Zone::to_string)
                .unwrap_or_default(),
            zone_choice: scope.choice("measured"),
            samples: self.samples,
            lost: self.lost,
            paths: PATHS
                .iter()
                .map(|(p, _)| {
                    (
                        (*p).to_owned(),
                        self.paths.get(p).and_then(Recorder::percentiles),
                    )
                })
                .collect(),
            heartbeats: self
                .heartbeats
                .iter()
                .filter_map(|(z, (r, latest))| {
                    Some((
                        z.clone(),
                        HeartbeatFreshness {
                            age: r.percentiles()?,
                            latest_ms: *latest,
                        },
                    ))
                })
                .collect(),
            errors: self.errors.clone(),
        }
    }
}

/// Publishes one probe and times it on every path.
async fn sample(
    prober: &mut Prober,
    api: &ApiClient,
    influx: &InfluxClient,
    zone: &Zone,
    r: &crate::domain::Reading,
    timeout: Duration,
    m: &mut Measurements,
) -> Result<(), String> {
    let seq = r.seq.unwrap_or_default();
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    let acked = prober
        .publish(r, deadline)
        .await
        .map_err(|e| e.to_string())?;
    m.record("broker_ack", acked);
    let (in_influx, over_rest) = tokio::join!(
        poll(deadline, || probe_in_influx(influx, zone, seq, r.timestamp)),
        watch_rest(api, zone, seq, deadline)
    );
    let mut missing = Vec::new();
    match in_influx {
        Ok(((), at)) => m.record("publish_to_influxdb", at - t0),
        Err(e) => missing.push(format!(
            "not in InfluxDB{}",
            e.map(|e| format!(" ({e})")).unwrap_or_default()
        )),
    }
    if let Some(at) = over_rest.mqtt_at {
        m.record("publish_to_api_mqtt", at - t0);
    }
    match over_rest.influx {
        Some((at, age_ms)) => {
            m.record("publish_to_rest", at - t0);
            if let Some(age) = age_ms {
                m.paths
                    .entry("influx_age_at_api")
                    .or_default()
                    .record_ms(age as f64);
            }
        }
        None => missing.push(format!(
            "not served by GET /zones/{zone}/latest{}",
            over_rest
                .error
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} within {}",
            missing.join(", "),
            humantime::format_duration(timeout)
        ))
    }
}

#[derive(Debug, Default)]
struct RestSeen {
    mqtt_at: Option<Instant>,
    /// When the InfluxDB side showed it, and its `age_ms` then.
    influx: Option<(Instant, Option<i64>)>,
    error: Option<ProbeError>,
}

/// Polls `GET /zones/{zone}/latest` until its InfluxDB side shows probe `seq`,
/// noting when the MQTT side showed it first.
async fn watch_rest(api: &ApiClient, zone: &Zone, seq: u64, deadline: Instant) -> RestSeen {
    let mut seen = RestSeen::default();
    while Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, api.probe_view(zone, seq)).await {
            Err(_) => break,
            Ok(Err(e)) => seen.error = Some(e),
            Ok(Ok(view)) => {
                seen.error = None;
                let now = Instant::now();
                let view = view.unwrap_or_default();
                if view.mqtt && seen.mqtt_at.is_none() {
                    seen.mqtt_at = Some(now);
                }
                if view.influx {
                    seen.influx = Some((now, view.influx_age_ms));
                    break;
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    seen
}

/// Records `now() - last(_time)` of the heartbeat of every zone of the scope.
async fn heartbeat_sample(influx: &InfluxClient, scope: &Scope, m: &mut Measurements) {
    let Ok(last) = last_heartbeats(influx).await else {
        return;
    };
    let now = Utc::now();
    for (zone, t) in last.into_iter().filter(|(z, _)| scope.zones.contains(z)) {
        let age_ms = (now - t).num_milliseconds().max(0) as f64;
        let entry = m.heartbeats.entry(zone.to_string()).or_default();
        entry.0.record_ms(age_ms);
        entry.1 = age_ms;
    }
}

/// The report as two tables: the paths, then the zones' heartbeat ages.
pub fn render_table(r: &LatencyReport) -> String {
    let f = |v: f64| format!("{v:.1} ms");
    let mut b = Builder::default();
    b.push_record(["path", "samples", "p50", "p90", "p99", "max", "what"]);
    for (name, what) in PATHS {
        let what = what.replace("{zone}", &r.zone);
        match r.paths.get(name).copied().flatten() {
            Some(p) => b.push_record([
                name.to_owned(),
                p.samples.to_string(),
                f(p.p50_ms),
                f(p.p90_ms),
                f(p.p99_ms),
                f(p.max_ms),
                what,
            ]),
            None => b.push_record([
                name.to_owned(),
                "0".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                what,
            ]),
        }
    }
    let mut out = format!(
        "zone {}: {} probe(s), {} lost\n{}",
        r.zone,
        r.samples,
        r.lost,
        b.build().with(Style::rounded())
    );
    let mut h = Builder::default();
    h.push_record([
        "zone",
        "samples",
        "heartbeat age p50",
        "p99",
        "max",
        "latest",
    ]);
    for (zone, hb) in &r.heartbeats {
        let s = |v: f64| format!("{:.1} s", v / 1000.0);
        h.push_record([
            zone.clone(),
            hb.age.samples.to_string(),
            s(hb.age.p50_ms),
            s(hb.age.p99_ms),
            s(hb.age.max_ms),
            s(hb.latest_ms),
        ]);
    }
    if r.heartbeats.is_empty() {
        out.push_str("\nno heartbeat in InfluxDB in the last 24 h");
    } else {
        out.push_str(&format!("\n{}", h.build().with(Style::rounded())));
    }
    out.push_str(&format!("\n{}", r.zone_choice));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_in_milliseconds() {
        let mut r = Recorder::default();
        assert_eq!(r.percentiles(), None);
        for i in 1..=1000u64 {
            r.record(Duration::from_micros(i * 1000));
        }
        let p = r.percentiles().unwrap();
        assert_eq!(p.samples, 1000);
        assert!((p.p50_ms - 500.0).abs() <= 0.5, "{p:?}");
        assert!((p.p90_ms - 900.0).abs() <= 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() <= 1.0, "{p:?}");
        assert!(p.p50_ms <= p.p90_ms && p.p90_ms <= p.p99_ms && p.p99_ms <= p.max_ms);
    }

    #[test]
    fn tiny_and_huge_values_are_clamped_not_lost() {
        let mut r = Recorder::default();
        r.record(Duration::ZERO);
        r.record_ms(-5.0);
        r.record_ms(f64::NAN);
        r.record(Duration::from_secs(10 * 3600));
        let p = r.percentiles().unwrap();
        assert_eq!(p.samples, 3);
        assert!(p.p50_ms > 0.0);
        assert!(p.max_ms >= 3_600_000.0 * 0.999, "{p:?}");
    }

    #[test]
    fn report_lists_every_path() {
        let mut m = Measurements {
            samples: 1,
            ..Measurements::default()
        };
        m.record("broker_ack", Duration::from_millis(2));
        let nord = Zone::new("nord").unwrap();
        let scope = Scope {
            basis: crate::probe::scope::Basis::Named,
            zones: vec![nord.clone()],
            probe: Ok(nord),
            why: "named with --zone".into(),
        };
        let r = m.report(&scope);
        assert_eq!(r.zone, "nord");
        assert!(
            r.zone_choice.contains("heartbeats measured: nord"),
            "{}",
            r.zone_choice
        );
        assert_eq!(r.paths.len(), PATHS.len());
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["paths"]["broker_ack"]["samples"], 1);
        assert!(j["paths"]["publish_to_rest"].is_null());
        assert!(j.get("errors").is_none());
        let t = render_table(&r);
        assert!(
            t.contains("broker_ack") && t.contains("no heartbeat"),
            "{t}"
        );
    }
}
