//! The alert rule engine: thresholds with debounce and hysteresis, and silence.
//!
//! For each (zone, sensor, metric) there are two independent alerts, `warning` and
//! `critical`. An alert of level L is **raised** after `debounce` consecutive readings
//! at level L or worse, and **cleared** after `debounce` consecutive readings back
//! inside L's bounds by at least the band's hysteresis. So a temperature climbing
//! through 25 °C then 30 °C and back raises warning, raises critical, clears critical,
//! clears warning: each exactly once, and a value hovering around a bound does not
//! flap.
//!
//! Silence: a sensor with no reading, or a zone with no heartbeat, for
//! `silence_after_s` raises a `silence` alert (warning for a sensor, critical for a
//! zone), cleared by the next reading or heartbeat.
//!
//! Pure: time comes in as arguments, alerts go out as return values. Alert times are
//! the readings' own timestamps (silence alerts: the time of the check), so a reading
//! processed twice yields alerts with the same ids.
//!
//! What must survive a restart is [`AlertMemory`]: ingest saves it (in its spool
//! directory) and gives it back to a new engine with [`RuleEngine::restore`], so a
//! condition that still holds is not raised twice and one that ended while ingest was
//! down is cleared by the next readings.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::alert::{Alert, AlertKind, AlertSource, AlertState};
use super::names::{SensorId, Zone};
use super::payload::{AlertLevel, Reading};
use super::thresholds::{Metric, Thresholds};

#[derive(Debug, Default, Clone, Copy)]
struct LevelState {
    active: bool,
    /// Consecutive readings pointing to the other state.
    streak: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct MetricState {
    warning: LevelState,
    critical: LevelState,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    last: DateTime<Utc>,
    silenced: bool,
}

/// Alerts currently active, by severity, for counters and the API.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ActiveCounts {
    pub warning: u64,
    pub critical: u64,
}

/// The engine's memory.
#[derive(Debug, Default)]
pub struct RuleEngine {
    metrics: HashMap<(Zone, SensorId, Metric), MetricState>,
    sensors: HashMap<(Zone, SensorId), Seen>,
    zones: HashMap<Zone, Seen>,
    /// Bumped whenever [`AlertMemory`] would change (an alert raised or cleared, a
    /// sensor or zone seen for the first time), so a caller saves it only then.
    generation: u64,
}

/// The part of the engine's memory worth keeping across a restart: the alerts raised
/// and not cleared, and the sensors and zones seen (so one that falls silent across a
/// restart still raises its silence alert). Debounce streaks and last-seen times are
/// not kept: a streak in progress starts over, and silence counts from the restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertMemory {
    /// Threshold alerts raised and not cleared.
    pub raised: Vec<RaisedAlert>,
    /// Sensors seen; `silenced`: their silence alert is raised.
    pub sensors: Vec<SeenSensor>,
    /// Zones whose heartbeat was seen; `silenced` as for sensors.
    pub zones: Vec<SeenZone>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RaisedAlert {
    pub zone: String,
    pub sensor: String,
    pub metric: Metric,
    pub severity: AlertLevel,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeenSensor {
    pub zone: String,
    pub sensor: String,
    pub silenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeenZone {
    pub zone: String,
    pub silenced: bool,
}

/// Records that `key` (a sensor or a zone) was heard at `now`. True if it had been
/// declared silent (its silence alert is to be cleared). `generation` moves whenever
/// the state worth saving changes: a new key, or a silence ended.
fn heard<K: std::hash::Hash + Eq>(
    seen: &mut HashMap<K, Seen>,
    key: K,
    now: DateTime<Utc>,
    generation: &mut u64,
) -> bool {
    let fresh = Seen {
        last: now,
        silenced: false,
    };
    match seen.insert(key, fresh) {
        Some(before) if !before.silenced => false,
        Some(_) => {
            *generation += 1;
            true
        }
        None => {
            *generation += 1;
            false
        }
    }
}

impl RuleEngine {
    pub fn new() -> RuleEngine {
        RuleEngine::default()
    }

    /// Feeds one reading (received at `now`); returns the alerts it raises or clears.
    pub fn on_reading(&mut self, t: &Thresholds, r: &Reading, now: DateTime<Utc>) -> Vec<Alert> {
        let mut out = Vec::new();
        let key = (r.zone.clone(), r.sensor.clone());
        if heard(&mut self.sensors, key, now, &mut self.generation) {
            out.push(silence_alert(
                &r.zone,
                Some(&r.sensor),
                AlertLevel::Warning,
                AlertState::Cleared,
                now,
                t,
            ));
        }
        for metric in Metric::ALL {
            let value = match metric {
                Metric::Temp => r.temp,
                Metric::Hum => r.hum,
            };
            let band = t.band(&r.zone, metric);
            let raw = band.level(value);
            let state = self
                .metrics
                .entry((r.zone.clone(), r.sensor.clone(), metric))
                .or_default();
            // Warning first, so that a jump straight to critical raises warning then
            // critical, and a fall clears critical then warning.
            let levels = [
                (AlertLevel::Warning, &mut state.warning),
                (AlertLevel::Critical, &mut state.critical),
            ];
            let mut events = Vec::new();
            for (level, ls) in levels {
                let wants_change = if ls.active {
                    band.clears(level, value)
                } else {
                    raw >= level
                };
                if !wants_change {
                    ls.streak = 0;
                    continue;
                }
                ls.streak += 1;
                if ls.streak >= t.debounce {
                    self.generation += 1;
                    ls.active = !ls.active;
                    ls.streak = 0;
                    let state = if ls.active {
                        AlertState::Raised
                    } else {
                        AlertState::Cleared
                    };
                    events.push((level, state));
                }
            }
            // Clear in reverse order (critical before warning).
            if events.iter().all(|(_, s)| *s == AlertState::Cleared) {
                events.reverse();
            }
            for (level, state) in events {
                let threshold = band.bound_for(level, value);
                let kind = AlertKind::from(metric);
                let verb = match state {
                    AlertState::Raised => "crossed",
                    AlertState::Cleared => "back inside",
                };
                out.push(Alert {
                    version: 1,
                    id: Alert::make_id(
                        AlertSource::Ingest,
                        &r.zone,
                        Some(&r.sensor),
                        kind,
                        r.timestamp,
                    ) + "-"
                        + level.as_str()
                        + "-"
                        + state.as_str(),
                    zone: r.zone.clone(),
                    sensor: Some(r.sensor.clone()),
                    metric: kind,
                    severity: level,
                    state,
                    value: Some(value),
                    threshold,
                    source: AlertSource::Ingest,
                    message: format!(
                        "{} {value} {verb} {} bound {}",
                        metric.as_str(),
                        level.as_str(),
                        threshold.map_or_else(|| "-".into(), |x| x.to_string())
                    ),
                    timestamp: r.timestamp,
                });
            }
        }
        out
    }

    /// Records a zone heartbeat received at `now`.
    pub fn on_heartbeat(&mut self, t: &Thresholds, zone: &Zone, now: DateTime<Utc>) -> Vec<Alert> {
        let mut out = Vec::new();
        if heard(&mut self.zones, zone.clone(), now, &mut self.generation) {
            out.push(silence_alert(
                zone,
                None,
                AlertLevel::Critical,
                AlertState::Cleared,
                now,
                t,
            ));
        }
        out
    }

    /// Checks for silence at `now`; call it periodically (e.g. every second).
    pub fn tick(&mut self, t: &Thresholds, now: DateTime<Utc>) -> Vec<Alert> {
        let limit = chrono::Duration::seconds(
            i64::try_from(t.silence_after_s).unwrap_or(i64::MAX / 2_000_000),
        );
        let mut out = Vec::new();
        for ((zone, sensor), seen) in self.sensors.iter_mut() {
            if !seen.silenced && now - seen.last > limit {
                seen.silenced = true;
                self.generation += 1;
                out.push(silence_alert(
                    zone,
                    Some(sensor),
                    AlertLevel::Warning,
                    AlertState::Raised,
                    now,
                    t,
                ));
            }
        }
        for (zone, seen) in self.zones.iter_mut() {
            if !seen.silenced && now - seen.last > limit {
                seen.silenced = true;
                self.generation += 1;
                out.push(silence_alert(
                    zone,
                    None,
                    AlertLevel::Critical,
                    AlertState::Raised,
                    now,
                    t,
                ));
            }
        }
        out
    }

    /// Changes whenever [`RuleEngine::memory`] would (see [`AlertMemory`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What must survive a restart, in a stable order.
    pub fn memory(&self) -> AlertMemory {
        let mut m = AlertMemory::default();
        for ((zone, sensor, metric), state) in &self.metrics {
            for (severity, level) in [
                (AlertLevel::Warning, state.warning),
                (AlertLevel::Critical, state.critical),
            ] {
                if level.active {
                    m.raised.push(RaisedAlert {
                        zone: zone.to_string(),
                        sensor: sensor.to_string(),
                        metric: *metric,
                        severity,
                    });
                }
            }
        }
        m.sensors = self
            .sensors
            .iter()
            .map(|((zone, sensor), seen)| SeenSensor {
                zone: zone.to_string(),
                sensor: sensor.to_string(),
                silenced: seen.silenced,
            })
            .collect();
        m.zones = self
            .zones
            .iter()
            .map(|(zone, seen)| SeenZone {
                zone: zone.to_string(),
                silenced: seen.silenced,
            })
            .collect();
        m.raised.sort();
        m.sensors.sort();
        m.zones.sort();
        m
    }

    /// Takes back a saved [`AlertMemory`] at `now` (a fresh engine, at start):
    /// raised alerts are active again, silenced sensors and zones stay silenced, and
    /// the others count their silence from `now`. Returns how many entries were
    /// skipped because a name is not valid (a hand-edited file).
    pub fn restore(&mut self, m: &AlertMemory, now: DateTime<Utc>) -> usize {
        let mut skipped = 0;
        for a in &m.raised {
            let (Ok(zone), Ok(sensor)) = (Zone::new(&a.zone), SensorId::new(&a.sensor)) else {
                skipped += 1;
                continue;
            };
            let state = self.metrics.entry((zone, sensor, a.metric)).or_default();
            match a.severity {
                AlertLevel::Warning => state.warning.active = true,
                AlertLevel::Critical => state.critical.active = true,
                AlertLevel::Normal => skipped += 1,
            }
        }
        for s in &m.sensors {
            let (Ok(zone), Ok(sensor)) = (Zone::new(&s.zone), SensorId::new(&s.sensor)) else {
                skipped += 1;
                continue;
            };
            self.sensors.insert(
                (zone, sensor),
                Seen {
                    last: now,
                    silenced: s.silenced,
                },
            );
        }
        for z in &m.zones {
            let Ok(zone) = Zone::new(&z.zone) else {
                skipped += 1;
                continue;
            };
            self.zones.insert(
                zone,
                Seen {
                    last: now,
                    silenced: z.silenced,
                },
            );
        }
        self.generation += 1;
        skipped
    }

    /// Active alerts by severity (threshold and silence alerts).
    pub fn active(&self) -> ActiveCounts {
        self.active_except(|_| false)
    }

    /// Like [`RuleEngine::active`], without the silence of sensors for which
    /// `silence_expected` holds (the supervision probe publishes only during a check,
    /// so its silence is not an alarm and its alerts are never emitted).
    pub fn active_except(&self, silence_expected: impl Fn(&str) -> bool) -> ActiveCounts {
        let mut c = ActiveCounts::default();
        for s in self.metrics.values() {
            c.warning += u64::from(s.warning.active);
            c.critical += u64::from(s.critical.active);
        }
        c.warning += self
            .sensors
            .iter()
            .filter(|((_, sensor), s)| s.silenced && !silence_expected(sensor.as_str()))
            .count() as u64;
        c.critical += self.zones.values().filter(|s| s.silenced).count() as u64;
        c
    }
}

fn silence_alert(
    zone: &Zone,
    sensor: Option<&SensorId>,
    severity: AlertLevel,
    state: AlertState,
    now: DateTime<Utc>,
    t: &Thresholds,
) -> Alert {
    let what = match sensor {
        Some(s) => format!("sensor {zone}/{s}: no reading"),
        None => format!("zone {zone}: no heartbeat"),
    };
    let message = match state {
        AlertState::Raised => format!("{what} for more than {} s", t.silence_after_s),
        AlertState::Cleared => format!("{what} silence over"),
    };
    Alert {
        version: 1,
        id: Alert::make_id(AlertSource::Ingest, zone, sensor, AlertKind::Silence, now)
            + "-"
            + state.as_str(),
        zone: zone.clone(),
        sensor: sensor.cloned(),
        metric: AlertKind::Silence,
        severity,
        state,
        value: None,
        threshold: Some(t.silence_after_s as f64),
        source: AlertSource::Ingest,
        message,
        timestamp: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn reading(temp: f64, i: i64) -> Reading {
        Reading {
            zone: Zone::new("nord").unwrap(),
            sensor: SensorId::new("s1").unwrap(),
            seq: Some(i as u64),
            timestamp: t0() + chrono::Duration::seconds(i),
            temp,
            hum: 50.0,
            alert_level: AlertLevel::Normal,
            provenance: Default::default(),
        }
    }

    fn t0() -> DateTime<Utc> {
        Utc.timestamp_opt(1_795_850_000, 0).unwrap()
    }

    fn run(temps: &[f64], debounce: u32) -> Vec<(AlertLevel, AlertState, i64)> {
        let t = Thresholds {
            debounce,
            ..Thresholds::default()
        };
        let mut e = RuleEngine::new();
        let mut out = Vec::new();
        for (i, temp) in temps.iter().enumerate() {
            let r = reading(*temp, i as i64);
            for a in e.on_reading(&t, &r, r.timestamp) {
                out.push((a.severity, a.state, i as i64));
            }
        }
        out
    }

    use AlertLevel::{Critical, Warning};
    use AlertState::{Cleared, Raised};

    #[test]
    fn heatwave_raises_and_clears_each_level_once() {
        // Defaults: warning above 25, critical above 30, hysteresis 0.5.
        let temps = [20.0, 26.0, 27.0, 31.0, 32.0, 29.0, 28.0, 24.0, 20.0];
        assert_eq!(
            run(&temps, 1),
            vec![
                (Warning, Raised, 1),
                (Critical, Raised, 3),
                (Critical, Cleared, 5),
                (Warning, Cleared, 7)
            ]
        );
    }

    #[test]
    fn a_jump_raises_warning_then_critical_and_a_drop_clears_in_reverse() {
        assert_eq!(
            run(&[20.0, 35.0, 20.0], 1),
            vec![
                (Warning, Raised, 1),
                (Critical, Raised, 1),
                (Critical, Cleared, 2),
                (Warning, Cleared, 2)
            ]
        );
    }

    #[test]
    fn hysteresis_prevents_flapping() {
        // Oscillating around 25 ± 0.3: raised once, never cleared (needs < 24.5).
        let temps = [25.2, 24.8, 25.3, 24.7, 25.1, 24.9];
        assert_eq!(run(&temps, 1), vec![(Warning, Raised, 0)]);
    }

    #[test]
    fn debounce_needs_consecutive_readings() {
        // One spike is ignored with debounce 3; three in a row raise.
        assert_eq!(run(&[20.0, 40.0, 20.0, 20.0], 3), vec![]);
        assert_eq!(
            run(&[20.0, 26.0, 26.0, 26.0, 20.0, 20.0, 20.0], 3),
            vec![(Warning, Raised, 3), (Warning, Cleared, 6)]
        );
        // A streak interrupted by one normal reading starts over.
        assert_eq!(run(&[26.0, 26.0, 20.0, 26.0, 26.0], 3), vec![]);
    }

    #[test]
    fn low_side_too() {
        assert_eq!(
            run(&[10.0, 4.0, 1.0, 10.0], 1),
            vec![
                (Warning, Raised, 1),
                (Critical, Raised, 2),
                (Critical, Cleared, 3),
                (Warning, Cleared, 3)
            ]
        );
    }

    #[test]
    fn redelivered_readings_give_the_same_alert_ids() {
        let t = Thresholds {
            debounce: 1,
            ..Thresholds::default()
        };
        let r = reading(31.0, 1);
        let a = RuleEngine::new().on_reading(&t, &r, r.timestamp);
        let b = RuleEngine::new().on_reading(&t, &r, r.timestamp);
        assert_eq!(a.len(), 2);
        assert_eq!(a, b);
        assert_ne!(a[0].id, a[1].id);
    }

    #[test]
    fn restored_memory_neither_raises_again_nor_forgets_to_clear() {
        let t = Thresholds {
            debounce: 1,
            silence_after_s: 10,
            ..Thresholds::default()
        };
        let mut before = RuleEngine::new();
        let g0 = before.generation();
        let raised = before.on_reading(&t, &reading(31.0, 0), t0());
        assert_eq!(raised.len(), 2);
        assert!(before.generation() > g0);
        // Another reading in the same state changes nothing worth saving.
        let g1 = before.generation();
        assert!(before.on_reading(&t, &reading(31.5, 1), t0()).is_empty());
        assert_eq!(before.generation(), g1);
        let memory = before.memory();
        assert_eq!(memory.raised.len(), 2);
        assert_eq!(memory.sensors.len(), 1);
        let json = serde_json::to_string(&memory).unwrap();
        let back: AlertMemory = serde_json::from_str(&json).unwrap();
        assert_eq!(back, memory);

        // Still above critical after the restart: nothing raised a second time.
        let mut after = RuleEngine::new();
        assert_eq!(after.restore(&back, t0()), 0);
        assert_eq!(
            after.active(),
            ActiveCounts {
                warning: 1,
                critical: 1
            }
        );
        assert!(after.on_reading(&t, &reading(32.0, 2), t0()).is_empty());
        // Back to normal: cleared, critical first.
        let cleared = after.on_reading(&t, &reading(20.0, 3), t0());
        assert_eq!(
            cleared
                .iter()
                .map(|a| (a.severity, a.state))
                .collect::<Vec<_>>(),
            vec![(Critical, Cleared), (Warning, Cleared)]
        );
        // A known sensor silent since the restart raises its silence alert.
        let mut silent = RuleEngine::new();
        silent.restore(&back, t0());
        assert_eq!(
            silent.tick(&t, t0() + chrono::Duration::seconds(11)).len(),
            1
        );
        // Names that are not valid are skipped, not trusted.
        let mut bad = back.clone();
        bad.raised[0].zone = "Nord!".into();
        assert_eq!(RuleEngine::new().restore(&bad, t0()), 1);
    }

    #[test]
    fn silence() {
        let t = Thresholds {
            silence_after_s: 10,
            ..Thresholds::default()
        };
        let mut e = RuleEngine::new();
        let zone = Zone::new("nord").unwrap();
        let r = reading(20.0, 0);
        assert!(e.on_reading(&t, &r, t0()).is_empty());
        assert!(e.on_heartbeat(&t, &zone, t0()).is_empty());
        assert!(e.tick(&t, t0() + chrono::Duration::seconds(10)).is_empty());
        let raised = e.tick(&t, t0() + chrono::Duration::seconds(11));
        assert_eq!(raised.len(), 2);
        assert!(raised
            .iter()
            .all(|a| a.metric == AlertKind::Silence && a.state == Raised));
        assert_eq!(
            e.active(),
            ActiveCounts {
                warning: 1,
                critical: 1
            }
        );
        // A sensor whose silence is expected (the supervision probe) is not counted.
        assert_eq!(
            e.active_except(|s| s == "s1"),
            ActiveCounts {
                warning: 0,
                critical: 1
            }
        );
        // Raised once only.
        assert!(e.tick(&t, t0() + chrono::Duration::seconds(20)).is_empty());
        let cleared = e.on_reading(&t, &reading(20.0, 21), t0() + chrono::Duration::seconds(21));
        assert_eq!(cleared.len(), 1);
        assert_eq!((cleared[0].severity, cleared[0].state), (Warning, Cleared));
        let cleared = e.on_heartbeat(&t, &zone, t0() + chrono::Duration::seconds(21));
        assert_eq!((cleared[0].severity, cleared[0].state), (Critical, Cleared));
        assert_eq!(e.active(), ActiveCounts::default());
    }
}
