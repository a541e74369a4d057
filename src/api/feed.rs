//! What keeps the API's state live: an MQTT subscription (readings, heartbeats,
//! alerts, the retained thresholds) and a periodic read of the last points in
//! InfluxDB. Both feed [`super::AppState`] and the server-sent-events stream.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use tracing::{debug, info, warn};

use super::{queries, AppState, LiveEvent, ThresholdSource};
use crate::backoff::Backoff;
use crate::config::MqttArgs;
use crate::domain::topic::{self, Topic};
use crate::domain::{Alert, Heartbeat, Reading, Thresholds};
use crate::supervision::is_probe;

/// The status topic of the API process (its last will says `offline`).
pub fn status_topic() -> String {
    Topic::Status {
        client: "api".into(),
    }
    .to_string()
}

/// An MQTT client for the API, not yet connected (the event loop connects when
/// [`run_mqtt`] polls it).
pub fn mqtt_client(args: &MqttArgs) -> (AsyncClient, EventLoop) {
    let id = format!("arng-serve-{}", std::process::id());
    let mut o = crate::mqtt::options(args, &id);
    o.set_last_will(LastWill::new(
        status_topic(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    crate::mqtt::client(o, 1000)
}

/// Drives the API's MQTT connection, reconnecting with backoff. Returns only when the
/// broker refuses this client for good (a wrong password, an unknown account: see
/// [`crate::mqtt::refusal_is_permanent`]), with that refusal, for `serve` to stop on.
pub async fn run_mqtt(
    state: AppState,
    client: AsyncClient,
    mut eventloop: EventLoop,
) -> rumqttc::ConnectionError {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                state.mqtt_connected.store(true, Ordering::Relaxed);
                info!("API connected to the broker");
                // Readings at QoS 0: the cache only needs the newest value, and a lost
                // one is replaced by the next. Alerts and config at QoS 1.
                let subs = [
                    (topic::READINGS_FILTER, QoS::AtMostOnce),
                    (topic::HEARTBEATS_FILTER, QoS::AtMostOnce),
                    (topic::ALERTS_FILTER, QoS::AtLeastOnce),
                    (topic::THRESHOLDS_TOPIC, QoS::AtLeastOnce),
                ];
                for (f, q) in subs {
                    let _ = client.subscribe(f, q).await;
                }
                let _ = client
                    .publish(status_topic(), QoS::AtLeastOnce, true, "online")
                    .await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&state, &p.topic, &p.payload),
            Ok(_) => {}
            Err(e) => {
                state.mqtt_connected.store(false, Ordering::Relaxed);
                if let rumqttc::ConnectionError::ConnectionRefused(code) = e {
                    if crate::mqtt::refusal_is_permanent(code) {
                        return e;
                    }
                }
                let why = crate::mqtt::tls_failure(&e).unwrap_or_else(|| e.to_string());
                let wait = backoff.next_delay();
                warn!(error = %why, retry_in = ?wait, "API lost the broker; reconnecting");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn on_publish(state: &AppState, topic: &str, payload: &[u8]) {
    let now = Utc::now();
    // Invalid messages are ingest's business (it dead-letters them); the API skips them.
    match Topic::parse(topic) {
        Ok(Topic::Reading { zone, sensor }) => {
            // The default (liberal) policy, as ingest's default: the lab's readings
            // without timestamp or level show here too, dated and levelled by the API.
            if let Ok(mut r) = Reading::parse(&zone, &sensor, payload) {
                if r.provenance.level_derived {
                    r.apply_thresholds(&state.thresholds().0);
                }
                // A reading dated too far ahead changes nothing (live.rs says why).
                if state.live_write().on_reading(&r, now) {
                    let probe = is_probe(r.sensor.as_str());
                    state.publish_event(LiveEvent::new("reading", r.to_json()).probe(probe));
                }
            }
        }
        Ok(Topic::Heartbeat { zone }) => {
            if let Ok(h) = Heartbeat::parse(&zone, payload) {
                if state.live_write().on_heartbeat(&h, now) {
                    state.publish_event(LiveEvent::new("heartbeat", h.to_json()));
                }
            }
        }
        Ok(ref t @ (Topic::Alert { ref zone } | Topic::SensorAlert { ref zone })) => {
            // A source the topic does not allow is a forgery (AlertSource::allowed_on).
            if let Some(a) = Alert::parse(zone, payload)
                .ok()
                .filter(|a| a.source.allowed_on(t))
            {
                let probe = a.sensor.as_ref().is_some_and(|s| is_probe(s.as_str()));
                state.publish_event(LiveEvent::new("alert", a.to_json()).probe(probe));
            }
        }
        Ok(Topic::Thresholds) => match Thresholds::from_json(payload) {
            // Our own PUT comes back through the subscription: keep its source.
            Ok(t) if t == state.thresholds().0 => {}
            Ok(t) => {
                debug!("thresholds updated from the retained configuration");
                state.set_thresholds(t, ThresholdSource::Retained);
            }
            Err(e) => warn!(error = %e, "ignoring an invalid retained thresholds message"),
        },
        _ => {}
    }
}

/// Reads the last point of every sensor and zone heartbeat every `every`.
pub async fn run_influx_refresh(state: AppState, every: Duration, lookback: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match refresh_once(&state, lookback).await {
            Ok(()) => state.influx_reachable.store(true, Ordering::Relaxed),
            Err(e) => {
                if state.influx_reachable.swap(false, Ordering::Relaxed) {
                    warn!(error = %e, "cannot refresh the InfluxDB view");
                }
            }
        }
    }
}

pub async fn refresh_once(
    state: &AppState,
    lookback: Duration,
) -> Result<(), crate::store::StoreError> {
    let bucket = state.influx.bucket();
    let readings = state
        .influx
        .query(&queries::latest_readings(bucket, None, lookback))
        .await?;
    let heartbeats = state
        .influx
        .query(&queries::latest_heartbeats(bucket, lookback))
        .await?;
    state.live_write().set_influx(
        queries::stored_points(&readings),
        queries::heartbeat_times(&heartbeats),
        Utc::now(),
    );
    Ok(())
}
