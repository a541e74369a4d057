//! The API's in-memory view of the warehouse: the last reading of each sensor as seen
//! on MQTT (a live subscription) next to the last point of that sensor in InfluxDB
//! (refreshed in the background), and the zones' heartbeats. `GET /zones/{zone}/latest`
//! and `GET /zones` answer from here, without a query per request.
//!
//! Pure: updates and views take the current time as an argument.
//!
//! One odd reading must not change what the view says about a zone (issue 15):
//! - nothing dated more than [`MAX_CLOCK_AHEAD`] after the API's clock enters it, from
//!   MQTT or InfluxDB (a reading dated 2099 showed as the zone's `last_seen`, and,
//!   being the "newest", froze the sensor's MQTT side for good);
//! - a late reading does not replace a newer one, and ages (`age_s`, `age_ms`) are
//!   never negative: a clock a little fast reads as "just now";
//! - the supervision probe ([`crate::supervision::PROBE_SENSOR`]) is no sensor of the
//!   warehouse: the views leave it out unless asked (`include_probe`), and a zone only
//!   the probe has spoken in is not listed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::payload::format_timestamp;
use crate::domain::{AlertLevel, Heartbeat, Reading, SensorId, Zone};
use crate::supervision::{is_probe, MAX_CLOCK_AHEAD};

/// A reading as last seen on MQTT, with the time the API received it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MqttReading {
    /// The reading's own timestamp (RFC 3339).
    pub timestamp: String,
    pub temp: f64,
    pub hum: f64,
    pub alert_level: AlertLevel,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When the API received it on MQTT (RFC 3339).
    pub received_at: String,
    /// `"api"` when the payload had no timestamp and `timestamp` is the API's time of
    /// receipt (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stamped_by: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub timestamp_ms: i64,
}

/// The last point of a sensor in InfluxDB.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredReading {
    /// The point's `_time` (RFC 3339).
    pub timestamp: String,
    pub temp: Option<f64>,
    pub hum: Option<f64>,
    pub alert_level: Option<AlertLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Now minus `timestamp`: how old the newest stored point is, in milliseconds.
    pub age_ms: i64,
    /// `"ingest"` when the payload had no timestamp and ingest dated the point at
    /// receipt (absent otherwise; docs/data-model.md says what that costs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stamped_by: Option<String>,
}

/// One sensor in `GET /zones/{zone}/latest`: MQTT and InfluxDB side by side.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SensorLatest {
    pub sensor: String,
    /// Last reading received on MQTT by this API process (null before the first one).
    pub mqtt: Option<MqttReading>,
    /// Last point in InfluxDB (null when none in the lookback window).
    pub influx: Option<StoredReading>,
    /// MQTT timestamp minus InfluxDB timestamp, in ms: 0 when InfluxDB holds the last
    /// reading seen on MQTT, positive when InfluxDB lags behind (null if a side is
    /// missing).
    pub lag_ms: Option<i64>,
    /// True when both sides hold the same reading.
    pub in_sync: bool,
}

/// Heartbeat freshness of a zone.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HeartbeatStatus {
    /// Timestamp of the last heartbeat seen on MQTT.
    pub last_mqtt: Option<String>,
    /// `_time` of the last heartbeat in InfluxDB.
    pub last_influx: Option<String>,
    /// Now minus the newest of the two, in seconds (the lab's `now() - last(_time)`).
    pub age_s: Option<f64>,
}

/// `GET /zones/{zone}/latest`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ZoneLatest {
    pub zone: String,
    /// When this answer was built (the API's clock).
    pub generated_at: String,
    /// When the InfluxDB side was last refreshed (null before the first refresh).
    pub influx_refreshed_at: Option<String>,
    pub heartbeat: HeartbeatStatus,
    pub sensors: Vec<SensorLatest>,
}

/// One zone in `GET /zones`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ZoneSummary {
    pub zone: String,
    pub sensors: usize,
    /// Newest reading timestamp seen (MQTT or InfluxDB).
    pub last_seen: Option<String>,
    /// Worst `alert_level` among the sensors' last readings.
    pub alert_level: AlertLevel,
    pub heartbeat: HeartbeatStatus,
}

/// The InfluxDB side of a sensor: its last stored point.
#[derive(Debug, Clone, Copy)]
struct InfluxSlot {
    time_ms: i64,
    temp: Option<f64>,
    hum: Option<f64>,
    alert_level: Option<AlertLevel>,
    seq: Option<i64>,
    stamped_by_ingest: bool,
}

#[derive(Debug, Default, Clone)]
struct SensorSlot {
    mqtt: Option<MqttReading>,
    influx: Option<InfluxSlot>,
}

#[derive(Debug, Default, Clone, Copy)]
struct HeartbeatSlot {
    mqtt_ms: Option<i64>,
    influx_ms: Option<i64>,
}

/// A stored point as the refresher reads it from InfluxDB.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub zone: Zone,
    pub sensor: SensorId,
    pub time_ms: i64,
    pub temp: Option<f64>,
    pub hum: Option<f64>,
    pub alert_level: Option<AlertLevel>,
    pub seq: Option<i64>,
    /// The point carries `stamped_by="ingest"`.
    pub stamped_by_ingest: bool,
}

/// The cache.
#[derive(Debug, Default)]
pub struct LiveState {
    sensors: BTreeMap<Zone, BTreeMap<SensorId, SensorSlot>>,
    heartbeats: BTreeMap<Zone, HeartbeatSlot>,
    influx_refreshed_ms: Option<i64>,
}

fn ts(ms: i64) -> String {
    format_timestamp(DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

/// Is `ms` later than `now_ms` by more than [`MAX_CLOCK_AHEAD`]?
fn too_far_ahead(ms: i64, now_ms: i64) -> bool {
    ms.saturating_sub(now_ms) > MAX_CLOCK_AHEAD.as_millis() as i64
}

impl LiveState {
    /// Takes a reading received on MQTT at `now`; false (and nothing changes) when it
    /// is dated too far ahead of `now`.
    pub fn on_reading(&mut self, r: &Reading, now: DateTime<Utc>) -> bool {
        if too_far_ahead(r.timestamp.timestamp_millis(), now.timestamp_millis()) {
            return false;
        }
        let slot = self
            .sensors
            .entry(r.zone.clone())
            .or_default()
            .entry(r.sensor.clone())
            .or_default();
        let ms = r.timestamp.timestamp_millis();
        // Keep the newest reading: a late redelivery must not move the view back.
        if slot.mqtt.as_ref().is_some_and(|m| m.timestamp_ms > ms) {
            return true;
        }
        slot.mqtt = Some(MqttReading {
            timestamp: format_timestamp(r.timestamp),
            temp: r.temp,
            hum: r.hum,
            alert_level: r.alert_level,
            seq: r.seq,
            received_at: format_timestamp(now),
            stamped_by: r.provenance.stamped_on_receipt.then(|| "api".to_owned()),
            timestamp_ms: ms,
        });
        true
    }

    /// Takes a heartbeat received on MQTT at `now`; false when it is dated too far
    /// ahead of `now`.
    pub fn on_heartbeat(&mut self, h: &Heartbeat, now: DateTime<Utc>) -> bool {
        let ms = h.timestamp.timestamp_millis();
        if too_far_ahead(ms, now.timestamp_millis()) {
            return false;
        }
        let slot = self.heartbeats.entry(h.zone.clone()).or_default();
        slot.mqtt_ms = Some(slot.mqtt_ms.map_or(ms, |old| old.max(ms)));
        true
    }

    /// Replaces the InfluxDB side with a fresh read of the last points.
    pub fn set_influx(
        &mut self,
        points: Vec<StoredPoint>,
        heartbeats: Vec<(Zone, i64)>,
        now: DateTime<Utc>,
    ) {
        for zone in self.sensors.values_mut() {
            for slot in zone.values_mut() {
                slot.influx = None;
            }
        }
        let now_ms = now.timestamp_millis();
        for p in points
            .into_iter()
            .filter(|p| !too_far_ahead(p.time_ms, now_ms))
        {
            let slot = self
                .sensors
                .entry(p.zone)
                .or_default()
                .entry(p.sensor)
                .or_default();
            slot.influx = Some(InfluxSlot {
                time_ms: p.time_ms,
                temp: p.temp,
                hum: p.hum,
                alert_level: p.alert_level,
                seq: p.seq,
                stamped_by_ingest: p.stamped_by_ingest,
            });
        }
        for slot in self.heartbeats.values_mut() {
            slot.influx_ms = None;
        }
        for (zone, ms) in heartbeats {
            if !too_far_ahead(ms, now_ms) {
                self.heartbeats.entry(zone).or_default().influx_ms = Some(ms);
            }
        }
        self.influx_refreshed_ms = Some(now_ms);
    }

    /// Has the zone sent anything: a heartbeat or a reading (the probe's counting
    /// only with `include_probe`)?
    pub fn knows(&self, zone: &Zone, include_probe: bool) -> bool {
        self.heartbeats.contains_key(zone)
            || self
                .sensors
                .get(zone)
                .is_some_and(|m| m.keys().any(|s| include_probe || !is_probe(s.as_str())))
    }

    fn heartbeat(&self, zone: &Zone, now_ms: i64) -> HeartbeatStatus {
        let slot = self.heartbeats.get(zone).copied().unwrap_or_default();
        let newest = slot.mqtt_ms.max(slot.influx_ms);
        HeartbeatStatus {
            last_mqtt: slot.mqtt_ms.map(ts),
            last_influx: slot.influx_ms.map(ts),
            age_s: newest.map(|ms| now_ms.saturating_sub(ms).max(0) as f64 / 1000.0),
        }
    }

    /// The zone's sensors, MQTT and InfluxDB side by side; `None` for an unknown zone.
    /// The probe is listed only with `include_probe`.
    pub fn zone_latest(
        &self,
        zone: &Zone,
        now: DateTime<Utc>,
        include_probe: bool,
    ) -> Option<ZoneLatest> {
        if !self.knows(zone, include_probe) {
            return None;
        }
        let now_ms = now.timestamp_millis();
        let sensors = self
            .sensors
            .get(zone)
            .map(|m| {
                m.iter()
                    .filter(|(sensor, _)| include_probe || !is_probe(sensor.as_str()))
                    .map(|(sensor, slot)| {
                        let influx = slot.influx.map(|i| StoredReading {
                            timestamp: ts(i.time_ms),
                            temp: i.temp,
                            hum: i.hum,
                            alert_level: i.alert_level,
                            seq: i.seq,
                            age_ms: now_ms.saturating_sub(i.time_ms).max(0),
                            stamped_by: i.stamped_by_ingest.then(|| "ingest".to_owned()),
                        });
                        let lag_ms = match (&slot.mqtt, &slot.influx) {
                            (Some(m), Some(i)) => Some(m.timestamp_ms - i.time_ms),
                            _ => None,
                        };
                        SensorLatest {
                            sensor: sensor.to_string(),
                            in_sync: lag_ms == Some(0),
                            mqtt: slot.mqtt.clone(),
                            influx,
                            lag_ms,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(ZoneLatest {
            zone: zone.to_string(),
            generated_at: format_timestamp(now),
            influx_refreshed_at: self.influx_refreshed_ms.map(ts),
            heartbeat: self.heartbeat(zone, now_ms),
            sensors,
        })
    }

    /// Every known zone with its freshness. The supervision probe counts neither in
    /// `sensors`, `last_seen` nor `alert_level`, and a zone only it has spoken in is not
    /// listed, unless `include_probe`.
    pub fn zones(&self, now: DateTime<Utc>, include_probe: bool) -> Vec<ZoneSummary> {
        let now_ms = now.timestamp_millis();
        let mut names: Vec<&Zone> = self.sensors.keys().chain(self.heartbeats.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|zone| self.knows(zone, include_probe))
            .map(|zone| {
                let sensors = self.sensors.get(zone);
                let mut last: Option<i64> = None;
                let mut level = AlertLevel::Normal;
                let shown = || {
                    sensors
                        .into_iter()
                        .flat_map(|m| m.iter())
                        .filter(|(s, _)| include_probe || !is_probe(s.as_str()))
                        .map(|(_, slot)| slot)
                };
                for slot in shown() {
                    let m = slot.mqtt.as_ref().map(|m| m.timestamp_ms);
                    let i = slot.influx.map(|x| x.time_ms);
                    last = last.max(m).max(i);
                    let l = slot
                        .mqtt
                        .as_ref()
                        .map(|m| m.alert_level)
                        .or(slot.influx.and_then(|x| x.alert_level));
                    level = level.max(l.unwrap_or(AlertLevel::Normal));
                }
                ZoneSummary {
                    zone: zone.to_string(),
                    sensors: shown().count(),
                    last_seen: last.map(ts),
                    alert_level: level,
                    heartbeat: self.heartbeat(zone, now_ms),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    fn reading(zone: &str, sensor: &str, ms: i64, temp: f64) -> Reading {
        Reading {
            zone: Zone::new(zone).unwrap(),
            sensor: SensorId::new(sensor).unwrap(),
            seq: Some(1),
            timestamp: t(ms),
            temp,
            hum: 40.0,
            alert_level: AlertLevel::Normal,
            provenance: Default::default(),
        }
    }

    #[test]
    fn correlates_mqtt_and_influx() {
        let mut s = LiveState::default();
        let nord = Zone::new("nord").unwrap();
        assert!(s.zone_latest(&nord, t(0), false).is_none());
        s.on_reading(&reading("nord", "s1", 1_000_000, 21.0), t(1_000_050));
        s.on_reading(&reading("nord", "s1", 999_000, 99.0), t(1_000_060)); // late: ignored
        s.set_influx(
            vec![StoredPoint {
                zone: nord.clone(),
                sensor: SensorId::new("s1").unwrap(),
                time_ms: 995_000,
                temp: Some(20.0),
                hum: Some(40.0),
                alert_level: Some(AlertLevel::Normal),
                seq: Some(0),
                stamped_by_ingest: false,
            }],
            vec![(nord.clone(), 990_000)],
            t(1_000_100),
        );
        let z = s.zone_latest(&nord, t(1_001_000), false).unwrap();
        assert_eq!(z.sensors.len(), 1);
        let s1 = &z.sensors[0];
        assert_eq!(s1.mqtt.as_ref().unwrap().temp, 21.0);
        assert_eq!(s1.influx.as_ref().unwrap().age_ms, 6_000);
        assert_eq!(s1.lag_ms, Some(5_000));
        assert!(!s1.in_sync);
        assert_eq!(z.heartbeat.age_s, Some(11.0));
        // InfluxDB catches up.
        s.set_influx(
            vec![StoredPoint {
                zone: nord.clone(),
                sensor: SensorId::new("s1").unwrap(),
                time_ms: 1_000_000,
                temp: Some(21.0),
                hum: Some(40.0),
                alert_level: None,
                seq: Some(1),
                stamped_by_ingest: true,
            }],
            vec![],
            t(1_000_200),
        );
        let z = s.zone_latest(&nord, t(1_001_000), false).unwrap();
        assert!(z.sensors[0].in_sync);
        assert_eq!(
            z.sensors[0].influx.as_ref().unwrap().stamped_by.as_deref(),
            Some("ingest")
        );
        assert_eq!(z.sensors[0].mqtt.as_ref().unwrap().stamped_by, None);
        assert_eq!(z.heartbeat.age_s, None);
        let zones = s.zones(t(1_001_000), false);
        assert_eq!(zones.len(), 1);
        assert_eq!(zones[0].sensors, 1);
        assert_eq!(
            zones[0].last_seen.as_deref(),
            Some("1970-01-01T00:16:40.000Z")
        );
        // A critical probe reading is not a sensor of the zone.
        let mut probe = reading("nord", crate::supervision::PROBE_SENSOR, 1_000_500, 40.0);
        probe.alert_level = AlertLevel::Critical;
        s.on_reading(&probe, t(1_000_600));
        let zones = s.zones(t(1_001_000), false);
        assert_eq!(
            (zones[0].sensors, zones[0].alert_level),
            (1, AlertLevel::Normal)
        );
        assert_eq!(
            zones[0].last_seen.as_deref(),
            Some("1970-01-01T00:16:40.000Z")
        );
        assert_eq!(
            s.zone_latest(&nord, t(1_001_000), false)
                .unwrap()
                .sensors
                .len(),
            1
        );
        assert_eq!(
            s.zone_latest(&nord, t(1_001_000), true)
                .unwrap()
                .sensors
                .len(),
            2
        );
        let with_probe = s.zones(t(1_001_000), true);
        assert_eq!(
            (with_probe[0].sensors, with_probe[0].alert_level),
            (2, AlertLevel::Critical)
        );
        // A zone only the probe has spoken in is not a zone of the warehouse.
        s.on_reading(
            &reading("sud", crate::supervision::PROBE_SENSOR, 1_000_500, 20.0),
            t(1_000_600),
        );
        let sud = Zone::new("sud").unwrap();
        assert!(s.zone_latest(&sud, t(1_001_000), false).is_none());
        assert!(s.zone_latest(&sud, t(1_001_000), true).is_some());
        assert_eq!(s.zones(t(1_001_000), false).len(), 1);
        assert_eq!(s.zones(t(1_001_000), true).len(), 2);
    }

    /// Issue 15: a reading or heartbeat dated 2099 showed as the zone's `last_seen`
    /// and gave `age_s: -2306170829`; one dated 29 minutes back moved nothing either.
    #[test]
    fn odd_timestamps_change_nothing() {
        let now = 1_795_850_102_000;
        let nord = Zone::new("nord").unwrap();
        let mut s = LiveState::default();
        assert!(s.on_reading(&reading("nord", "s1", now - 1_000, 21.0), t(now)));
        let future = DateTime::parse_from_rfc3339("2099-12-31T23:59:59Z")
            .unwrap()
            .timestamp_millis();
        assert!(!s.on_reading(&reading("nord", "s1", future, 99.0), t(now)));
        assert!(!s.on_reading(&reading("ouest", "s1", future, 99.0), t(now)));
        // 29 minutes back: kept out of the MQTT side, which has newer.
        assert!(s.on_reading(&reading("nord", "s1", now - 29 * 60_000, 5.0), t(now)));
        let hb = |ms: i64| Heartbeat {
            zone: nord.clone(),
            timestamp: t(ms),
            sensors: None,
        };
        assert!(s.on_heartbeat(&hb(now - 5_000), t(now)));
        assert!(!s.on_heartbeat(&hb(future), t(now)));
        // A clock a little fast (within the margin) reads as "just now".
        assert!(s.on_heartbeat(&hb(now + 60_000), t(now)));
        s.set_influx(
            vec![StoredPoint {
                zone: nord.clone(),
                sensor: SensorId::new("s2").unwrap(),
                time_ms: future,
                temp: Some(1.0),
                hum: Some(1.0),
                alert_level: Some(AlertLevel::Critical),
                seq: None,
                stamped_by_ingest: false,
            }],
            vec![(nord.clone(), future)],
            t(now),
        );
        let zones = s.zones(t(now), false);
        assert_eq!(zones.len(), 1, "{zones:?}");
        assert_eq!(
            zones[0].last_seen.as_deref(),
            Some(ts(now - 1_000).as_str())
        );
        assert_eq!(zones[0].alert_level, AlertLevel::Normal);
        assert_eq!(zones[0].heartbeat.age_s, Some(0.0));
        let latest = s.zone_latest(&nord, t(now), false).unwrap();
        assert_eq!(latest.sensors.len(), 1);
        assert_eq!(latest.sensors[0].mqtt.as_ref().unwrap().temp, 21.0);
    }
}
