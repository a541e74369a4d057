//! The MQTT side of probing: a client that publishes probe readings (sensor
//! `e2e-probe`) one at a time at QoS 1, times each PUBACK, and keeps what arrives on
//! its subscriptions (alerts, the retained thresholds, `$SYS`) so that a hop can ask
//! for a message that came while it was waiting on something else.
//!
//! It speaks MQTT 5 where the broker offers it ([`crate::mqtt::dual`]), so a probe
//! the broker refuses (an account without the right to publish there) fails at once
//! with the broker's reason instead of passing for acknowledged (MQTT 3.1.1) or
//! waiting for something downstream that will never come.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::Utc;
use rumqttc::QoS;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::scope::LastHeartbeats;
use super::ProbeError;
use crate::config::MqttArgs;
use crate::domain::topic::{Topic, THRESHOLDS_TOPIC};
use crate::domain::{AlertLevel, Heartbeat, Reading, SensorClock, SensorId, Thresholds, Zone};
use crate::mqtt::dual::{self, Client, Event, Protocol, Setup};
use crate::mqtt::v5::Refusal;
use crate::mqtt::MqttError;
use crate::supervision::{self, PROBE_SENSOR};

/// How long to wait for the retained thresholds after subscribing (none retained
/// means ingest applies the defaults).
pub const RETAINED_WAIT: Duration = Duration::from_millis(500);

/// The most messages kept aside (the oldest go first): a long `arng latency` run
/// keeps receiving heartbeats, and memory stays bounded whatever its duration.
pub const KEPT_MESSAGES: usize = 1024;

/// Keeps `m`, dropping the oldest message once [`KEPT_MESSAGES`] are kept.
fn keep(received: &mut VecDeque<Received>, m: Received) {
    if received.len() >= KEPT_MESSAGES {
        received.pop_front();
    }
    received.push_back(m);
}

/// A message the prober received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
enum ProbeEvent {
    Sent(u16),
    Acked(u16),
    Refused(u16, Refusal),
    SubAck(Vec<bool>),
    Message(Received),
    Down(String),
}

/// An MQTT client that publishes probe readings one at a time, times their PUBACK,
/// and keeps what arrives on its subscriptions.
pub struct Prober {
    client: Client,
    /// The broker account, named when the broker refuses a probe.
    account: String,
    events: mpsc::UnboundedReceiver<ProbeEvent>,
    pump: tokio::task::JoinHandle<()>,
    /// The last [`KEPT_MESSAGES`] messages received, oldest first.
    received: VecDeque<Received>,
    sensor: SensorId,
    next_seq: u64,
    /// The probes' timestamps: each in a millisecond of its own.
    clock: SensorClock,
    down: Option<String>,
}

impl Prober {
    pub async fn connect(
        args: &MqttArgs,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Prober, MqttError> {
        let setup = Setup::new(client_id).connect_timeout(timeout);
        let (client, mut eventloop, protocol) = dual::connect(args, setup, timeout).await?;
        if protocol == Protocol::V311 {
            tracing::warn!(
                "the broker does not offer MQTT 5: connected with {protocol}, so a probe it \
                 refuses (ACL) cannot be told from one it accepted"
            );
        }
        let (tx, events) = mpsc::unbounded_channel();
        // The event loop runs on its own so that the broker is answered (pings,
        // QoS 1 acknowledgements) while a hop waits on InfluxDB or the API.
        let pump = tokio::spawn(async move {
            loop {
                let ev = match eventloop.poll().await {
                    Ok(Event::Published { pkid }) => ProbeEvent::Sent(pkid),
                    Ok(Event::Acked { pkid }) => ProbeEvent::Acked(pkid),
                    Ok(Event::Refused { pkid, refusal, .. }) => ProbeEvent::Refused(pkid, refusal),
                    Ok(Event::SubAck(granted)) => ProbeEvent::SubAck(granted),
                    Ok(Event::Message { topic, payload }) => ProbeEvent::Message(Received {
                        at: Instant::now(),
                        topic,
                        payload,
                    }),
                    Ok(Event::Disconnected) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(ProbeEvent::Down(e.describe()));
                        break;
                    }
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        let micros = Utc::now().timestamp_micros().max(0) as u64;
        Ok(Prober {
            client,
            account: args.username.clone().unwrap_or_else(|| "(none)".to_owned()),
            events,
            pump,
            received: VecDeque::new(),
            sensor: SensorId::new(PROBE_SENSOR).expect("the probe sensor name is valid"),
            // Unique across runs (microseconds) and increasing, like a sensor counter.
            next_seq: micros,
            clock: SensorClock::default(),
            down: None,
        })
    }

    /// A new probe reading of `zone`: the next `seq`, a timestamp in a millisecond of
    /// its own (two probes never share a point in InfluxDB).
    pub fn reading(&mut self, zone: &Zone, temp: f64, hum: f64, level: AlertLevel) -> Reading {
        let seq = self.next_seq;
        self.next_seq += 1;
        Reading {
            zone: zone.clone(),
            sensor: self.sensor.clone(),
            seq: Some(seq),
            timestamp: self.clock.stamp_ahead(Utc::now()),
            temp,
            hum: supervision::clamp_hum(hum),
            alert_level: level,
            provenance: Default::default(),
        }
    }

    /// The next event, keeping messages aside; None once `deadline` passes or the
    /// connection is gone.
    async fn next_event(&mut self, deadline: Instant) -> Option<ProbeEvent> {
        if self.down.is_some() {
            return None;
        }
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some(ProbeEvent::Message(m))) => {
                keep(&mut self.received, m.clone());
                Some(ProbeEvent::Message(m))
            }
            Ok(Some(ProbeEvent::Down(e))) => {
                self.down = Some(e);
                None
            }
            Ok(Some(ev)) => Some(ev),
            Ok(None) => {
                self.down.get_or_insert_with(|| "connection closed".into());
                None
            }
            Err(_) => None,
        }
    }

    fn lost(&self) -> ProbeError {
        ProbeError::BrokerLost(self.down.as_deref().unwrap_or("closed").to_owned())
    }

    /// The broker account this prober connected as (`(none)` without one).
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Subscribes to `filters` in one request; which ones the broker granted.
    pub async fn subscribe(
        &mut self,
        filters: Vec<(String, QoS)>,
        deadline: Instant,
    ) -> Result<Vec<bool>, ProbeError> {
        let n = filters.len();
        self.client.subscribe_many(filters).await?;
        loop {
            match self.next_event(deadline).await {
                Some(ProbeEvent::SubAck(mut granted)) => {
                    granted.resize(n, false);
                    return Ok(granted);
                }
                Some(_) => {}
                None if self.down.is_some() => return Err(self.lost()),
                None => return Err(ProbeError::NoSubAck),
            }
        }
    }

    /// The retained thresholds (what ingest applies), or the defaults when none
    /// arrives within `wait`.
    pub async fn retained_thresholds(&mut self, wait: Duration) -> Thresholds {
        let since = Instant::now() - Duration::from_secs(3600);
        self.wait_message(since, Instant::now() + wait, |t, _| t == THRESHOLDS_TOPIC)
            .await
            .and_then(|m| Thresholds::from_json(&m.payload).ok())
            .unwrap_or_default()
    }

    /// Each zone's newest heartbeat received so far (after subscribing to
    /// [`HEARTBEATS_FILTER`](crate::domain::topic::HEARTBEATS_FILTER), the retained
    /// ones arrive right after the SUBACK).
    pub fn heartbeats(&self) -> LastHeartbeats {
        let mut out = LastHeartbeats::new();
        for m in &self.received {
            let Ok(Topic::Heartbeat { zone }) = Topic::parse(&m.topic) else {
                continue;
            };
            if let Ok(h) = Heartbeat::parse(&zone, &m.payload) {
                let newest = out.entry(zone).or_insert(h.timestamp);
                *newest = (*newest).max(h.timestamp);
            }
        }
        out
    }

    /// Publishes `r` at QoS 1 and waits for its PUBACK; returns how long that took. A
    /// refusal (MQTT 5) is an error naming the topic, the reason and the account.
    pub async fn publish(
        &mut self,
        r: &Reading,
        deadline: Instant,
    ) -> Result<Duration, ProbeError> {
        let topic = Topic::reading(&r.zone, &r.sensor).to_string();
        let started = Instant::now();
        self.client
            .publish(topic.clone(), QoS::AtLeastOnce, false, r.to_json())
            .await?;
        // One probe in flight at a time: the next PUBLISH sent is this one.
        let mut pkid = None;
        loop {
            match self.next_event(deadline).await {
                Some(ProbeEvent::Sent(id)) if pkid.is_none() => pkid = Some(id),
                Some(ProbeEvent::Acked(id)) if Some(id) == pkid => {
                    debug!(%topic, seq = ?r.seq, "probe acknowledged");
                    return Ok(started.elapsed());
                }
                Some(ProbeEvent::Refused(id, refusal)) if Some(id) == pkid => {
                    return Err(ProbeError::Refused {
                        topic,
                        reason: refusal.reason.to_owned(),
                        code: refusal.code,
                        account: self.account.clone(),
                    });
                }
                Some(_) => {}
                None if self.down.is_some() => return Err(self.lost()),
                None => return Err(ProbeError::NoPubAck { topic }),
            }
        }
    }

    /// The first message received at or after `since` that `matches`, waiting until
    /// `deadline`.
    pub async fn wait_message(
        &mut self,
        since: Instant,
        deadline: Instant,
        matches: impl Fn(&str, &[u8]) -> bool,
    ) -> Option<Received> {
        if let Some(m) = self
            .received
            .iter()
            .find(|m| m.at >= since && matches(&m.topic, &m.payload))
        {
            return Some(m.clone());
        }
        loop {
            match self.next_event(deadline).await? {
                ProbeEvent::Message(m) if m.at >= since && matches(&m.topic, &m.payload) => {
                    return Some(m)
                }
                _ => {}
            }
        }
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let mut pump = self.pump;
        if tokio::time::timeout(Duration::from_secs(1), &mut pump)
            .await
            .is_err()
        {
            pump.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_messages_are_bounded_and_the_newest() {
        for n in [KEPT_MESSAGES / 2, KEPT_MESSAGES * 3] {
            let mut kept = VecDeque::new();
            for i in 0..n {
                let m = Received {
                    at: Instant::now(),
                    topic: format!("t/{i}"),
                    payload: Vec::new(),
                };
                keep(&mut kept, m);
            }
            assert_eq!(kept.len(), n.min(KEPT_MESSAGES));
            assert_eq!(kept.back().unwrap().topic, format!("t/{}", n - 1));
            assert_eq!(
                kept.front().unwrap().topic,
                format!("t/{}", n - n.min(KEPT_MESSAGES))
            );
        }
    }
}
