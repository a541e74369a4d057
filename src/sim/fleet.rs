//! The simulated fleet at work: one `Generator` per connection paces the readings
//! of its share of the sensors, spread evenly across the interval, and hands them to
//! its [`Link`], awaiting when the connection's queue is full (back-pressure, never a
//! drop); sensors publish their own alerts when a metric changes level; the zones'
//! retained `heartbeats` go out on a real timer. Counters per zone are shared with
//! the reporter and the summary.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use rumqttc::QoS;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use super::link::Link;
use super::model::{Sample, SensorModel, SensorSetup};
use super::plan::{sensor_name, LinkPlan, Plan};
use crate::domain::alert::{Alert, AlertKind, AlertSource, AlertState};
use crate::domain::payload::{AlertLevel, Heartbeat, Reading};
use crate::domain::thresholds::{Metric, Thresholds, ZoneThresholds};
use crate::domain::{SensorClock, SensorId, Topic, Zone};
use crate::mqtt::dual::ClientError;

#[derive(Default)]
pub(crate) struct ZoneStats {
    pub(crate) readings: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) alerts: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    /// Sensors whose latest reading is at this level.
    pub(crate) warning: AtomicI64,
    pub(crate) critical: AtomicI64,
}

impl ZoneStats {
    fn count_level(&self, level: AlertLevel, delta: i64) {
        match level {
            AlertLevel::Normal => {}
            AlertLevel::Warning => {
                self.warning.fetch_add(delta, Relaxed);
            }
            AlertLevel::Critical => {
                self.critical.fetch_add(delta, Relaxed);
            }
        }
    }
}

/// What tasks share about the run.
pub(crate) struct Shared {
    pub(crate) zones: Vec<Zone>,
    pub(crate) stats: Vec<ZoneStats>,
    pub(crate) thresholds: Thresholds,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) alerts: bool,
    pub(crate) interval: Duration,
    pub(crate) paced: bool,
    pub(crate) per_sensor: Option<u64>,
    pub(crate) wall_limit: Option<Duration>,
    /// Start of the schedule: reading k of a generator is due at `t0 + slot(k)`.
    pub(crate) t0: Instant,
    /// How far schedules were pushed back because publishing fell behind.
    pub(crate) slipped_ns: AtomicU64,
}

/// One simulated sensor with what the generator tracks about it.
pub(crate) struct SimSensor {
    pub(crate) zone_index: usize,
    pub(crate) zone: Zone,
    pub(crate) id: SensorId,
    pub(crate) topic: String,
    pub(crate) model: SensorModel,
    pub(crate) bands: ZoneThresholds,
    /// Level of the latest reading (both metrics).
    pub(crate) level: AlertLevel,
    /// Per metric ([`Metric::ALL`] order): level and the open alert (id, threshold).
    pub(crate) metric_levels: [AlertLevel; 2],
    pub(crate) open_alerts: [Option<(String, Option<f64>)>; 2],
    /// Its timestamps: one millisecond each, strictly increasing.
    pub(crate) clock: SensorClock,
}

pub(crate) struct Generator {
    pub(crate) link: Arc<Link>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) sensors: Vec<SimSensor>,
}

impl Generator {
    pub(crate) fn new(
        plan: &Plan,
        link_plan: &LinkPlan,
        link: Arc<Link>,
        shared: Arc<Shared>,
    ) -> Generator {
        let per_zone = plan.per_zone as usize;
        let sensors = link_plan
            .sensors
            .clone()
            .map(|g| {
                let zone_index = g / per_zone;
                let index = (g % per_zone) as u32;
                let zone = plan.zones[zone_index].clone();
                let id = sensor_name(index);
                let bands = *plan.thresholds.for_zone(&zone);
                let model = SensorModel::new(&SensorSetup {
                    seed: plan.seed,
                    zone: &zone,
                    sensor: &id,
                    index,
                    bands: &bands,
                    interval: plan.interval,
                    faults: &plan.faults,
                    scenarios: &plan.scenarios,
                });
                SimSensor {
                    zone_index,
                    topic: Topic::reading(&zone, &id).to_string(),
                    zone,
                    id,
                    model,
                    bands,
                    level: AlertLevel::Normal,
                    metric_levels: [AlertLevel::Normal; 2],
                    open_alerts: [None, None],
                    clock: SensorClock::default(),
                }
            })
            .collect();
        Generator {
            link,
            shared,
            sensors,
        }
    }

    /// Scheduled time of reading slot `k` (sensor `k % n`, its reading `k / n`),
    /// from the start: the sensors are spread evenly across the interval. Integer
    /// nanoseconds, so fault windows and heatwave steps fall on exact readings.
    fn slot(&self, k: u64) -> Duration {
        let n = self.sensors.len() as u128;
        Duration::from_nanos((u128::from(k) * self.shared.interval.as_nanos() / n) as u64)
    }

    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), ClientError> {
        let n = self.sensors.len() as u64;
        let limit = self.shared.per_sensor.map(|c| c.saturating_mul(n));
        let t0 = self.shared.t0;
        // Falling further behind than this pushes the schedule back instead of
        // bursting the whole backlog at once.
        let slip_after = self.shared.interval.max(Duration::from_secs(1));
        let mut shift = Duration::ZERO;
        let mut last_slip_warning: Option<Instant> = None;
        let mut k: u64 = 0;
        loop {
            if limit.is_some_and(|l| k >= l) || *stop.borrow() {
                return Ok(());
            }
            if !self.shared.paced {
                if self.shared.wall_limit.is_some_and(|d| t0.elapsed() >= d) {
                    return Ok(());
                }
                let batch = async {
                    for _ in 0..256 {
                        if limit.is_some_and(|l| k >= l) {
                            break;
                        }
                        self.produce(k, t0.elapsed()).await?;
                        k += 1;
                    }
                    Ok::<(), ClientError>(())
                };
                // A full queue (broker gone) must not keep a stop request waiting.
                tokio::select! {
                    r = batch => r?,
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
                tokio::task::yield_now().await;
                continue;
            }
            let due = t0 + shift + self.slot(k);
            let now = Instant::now();
            if now < due {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
                continue;
            }
            let late = now - due;
            if late > slip_after {
                shift += late;
                self.shared
                    .slipped_ns
                    .fetch_add(late.as_nanos() as u64, Relaxed);
                if last_slip_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    warn!(
                        late_ms = late.as_millis() as u64,
                        unacked = self.link.unacked(),
                        "publishing fell behind schedule (broker slow or unreachable?); schedule pushed back, no reading skipped"
                    );
                    last_slip_warning = Some(Instant::now());
                }
            }
            let now_rel = Instant::now().saturating_duration_since(t0 + shift);
            let batch = async {
                while limit.is_none_or(|l| k < l) && self.slot(k) <= now_rel {
                    self.produce(k, shift + self.slot(k)).await?;
                    k += 1;
                }
                Ok::<(), ClientError>(())
            };
            tokio::select! {
                r = batch => r?,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    }

    /// Reading slot `k`, scheduled `at` after the start: sample, publish, alert.
    async fn produce(&mut self, k: u64, at: Duration) -> Result<(), ClientError> {
        let n = self.sensors.len() as u64;
        let seq = k / n;
        let sensor = &mut self.sensors[(k % n) as usize];
        let shared = &*self.shared;
        let stats = &shared.stats[sensor.zone_index];
        let now = Utc::now();
        let day_secs = f64::from(now.num_seconds_from_midnight())
            + f64::from(now.nanosecond() % 1_000_000_000) / 1e9;
        match sensor.model.sample(seq, at, day_secs) {
            Sample::Dropped => {
                stats.dropped.fetch_add(1, Relaxed);
            }
            Sample::Value { temp, hum } => {
                // Never two readings of a sensor in one millisecond (they would be
                // one point in InfluxDB): at --rate max, wait for the next one.
                let now = loop {
                    match sensor.clock.stamp(Utc::now()) {
                        Ok(t) => break t,
                        Err(wait) => tokio::time::sleep(wait).await,
                    }
                };
                let level = shared.thresholds.level(&sensor.zone, temp, hum);
                let reading = Reading {
                    zone: sensor.zone.clone(),
                    sensor: sensor.id.clone(),
                    seq: Some(seq),
                    timestamp: now,
                    temp,
                    hum,
                    alert_level: level,
                    provenance: Default::default(),
                };
                self.link
                    .publish(
                        sensor.topic.clone(),
                        shared.qos,
                        shared.retain,
                        reading.to_json(),
                    )
                    .await?;
                stats.readings.fetch_add(1, Relaxed);
                if level != sensor.level {
                    stats.count_level(sensor.level, -1);
                    stats.count_level(level, 1);
                    sensor.level = level;
                }
                if shared.alerts {
                    publish_alerts(&self.link, shared, sensor, [temp, hum], now).await?;
                }
            }
        }
        self.link.produced.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// Topic-side alerts: when a metric's level changes, the open alert (if any) is
/// cleared and a new one raised (if not back to normal), at QoS 1 on
/// `entrepot/alerts/<zone>/sensor` (the sensors' alert topic), after the reading that
/// caused it on the same connection.
pub(crate) async fn publish_alerts(
    link: &Link,
    shared: &Shared,
    sensor: &mut SimSensor,
    values: [f64; 2],
    now: DateTime<Utc>,
) -> Result<(), ClientError> {
    for (m, metric) in Metric::ALL.into_iter().enumerate() {
        let band = sensor.bands.band(metric);
        let value = values[m];
        let level = band.level(value);
        let previous = sensor.metric_levels[m];
        if level == previous {
            continue;
        }
        sensor.metric_levels[m] = level;
        // The sensors' alert topic: only services may write entrepot/alerts/<zone>.
        let topic = Topic::SensorAlert {
            zone: sensor.zone.clone(),
        }
        .to_string();
        let mut alert = Alert {
            version: 1,
            id: String::new(),
            zone: sensor.zone.clone(),
            sensor: Some(sensor.id.clone()),
            metric: AlertKind::from(metric),
            severity: previous,
            state: AlertState::Cleared,
            value: Some(value),
            threshold: None,
            source: AlertSource::Sensor,
            message: String::new(),
            timestamp: now,
        };
        if let Some((id, threshold)) = sensor.open_alerts[m].take() {
            alert.id = id;
            alert.threshold = threshold;
            alert.message = match threshold {
                _ if level > previous => {
                    format!("{} {value} now {level} (was {previous})", metric.as_str())
                }
                Some(t) => format!(
                    "{} {value} back inside {previous} bound {t}",
                    metric.as_str()
                ),
                None => format!("{} {value} no longer {previous}", metric.as_str()),
            };
            link.publish(topic.clone(), QoS::AtLeastOnce, false, alert.to_json())
                .await?;
            shared.stats[sensor.zone_index].alerts.fetch_add(1, Relaxed);
        }
        if level != AlertLevel::Normal {
            let threshold = band.bound_for(level, value);
            alert.id = Alert::make_id(
                AlertSource::Sensor,
                &sensor.zone,
                Some(&sensor.id),
                alert.metric,
                now,
            );
            alert.severity = level;
            alert.state = AlertState::Raised;
            alert.threshold = threshold;
            alert.message = match threshold {
                Some(t) if value >= t => format!("{} {value} above {level} {t}", metric.as_str()),
                Some(t) => format!("{} {value} below {level} {t}", metric.as_str()),
                None => format!("{} {value} {level}", metric.as_str()),
            };
            link.publish(topic, QoS::AtLeastOnce, false, alert.to_json())
                .await?;
            shared.stats[sensor.zone_index].alerts.fetch_add(1, Relaxed);
            sensor.open_alerts[m] = Some((alert.id, threshold));
        }
    }
    Ok(())
}

/// Every zone's retained heartbeat, on a real timer: the first beat at start, then
/// one per period (a late beat delays the next ones instead of bunching them).
pub(crate) async fn heartbeats(
    routes: Vec<(usize, Arc<Link>)>,
    shared: Arc<Shared>,
    sensors_per_zone: u64,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let beat_all = async {
            for (zone_index, link) in &routes {
                let zone = &shared.zones[*zone_index];
                let beat = Heartbeat {
                    zone: zone.clone(),
                    timestamp: Utc::now(),
                    sensors: Some(sensors_per_zone),
                };
                let topic = Topic::Heartbeat { zone: zone.clone() }.to_string();
                link.publish(topic, QoS::AtMostOnce, true, beat.to_json())
                    .await?;
                shared.stats[*zone_index].heartbeats.fetch_add(1, Relaxed);
            }
            Ok::<(), ClientError>(())
        };
        tokio::select! {
            r = beat_all => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
