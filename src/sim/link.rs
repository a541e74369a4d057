//! The simulator's reconnecting publisher: one [`Link`] per MQTT connection, driven by
//! `drive`, which polls rumqttc's event loop without pause. It reconnects with
//! capped exponential backoff and jitter ([`crate::backoff`]), announces `online`
//! (retained) on every (re)connection, re-sends what was queued or in flight when a
//! connection dropped (rumqttc would discard it on a clean session), and counts
//! acknowledgements and refusals, so that the end of a run knows what the broker
//! holds. It speaks MQTT 5 where the broker offers it ([`crate::mqtt::dual`]): a
//! message the broker refuses (ACL) is then counted per topic instead of passing for
//! acknowledged.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::plan::LinkPlan;
use super::refusals::Refusals;
use super::SimError;
use crate::backoff::Backoff;
use crate::domain::Topic;
use crate::mqtt::dual::{self, ClientError, Event, EventLoop, First, Protocol, Setup, Will};
use crate::mqtt::v5::Refusal;

/// Readings a connection may queue before its generator waits. Large enough to ride
/// out a scheduling hiccup at 50,000 messages/s, small enough to bound memory.
pub(crate) const QUEUE_CAPACITY: usize = 8192;
/// QoS 1/2 messages in flight per connection before rumqttc waits for acks (MQTT 5:
/// at most the broker's Receive Maximum, Mosquitto's `max_inflight_messages`).
pub(crate) const INFLIGHT: u16 = 1000;
/// Reconnection backoff: first delay, doubled per failed attempt, up to the cap.
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LinkState {
    Connecting {
        attempts: u32,
        last_error: Option<String>,
    },
    Connected,
    /// Refused by the broker before ever being accepted (bad account, ACL...).
    Refused(String),
    /// The TLS handshake failed before the first connection (untrusted broker
    /// certificate, missing client certificate...): retrying cannot fix it.
    TlsFailed(String),
}

/// One MQTT connection, as the tasks see it.
pub struct Link {
    pub(crate) client_id: String,
    /// The broker account (`--mqtt-username`), named when the broker refuses messages.
    pub(crate) account: Option<String>,
    pub(crate) status_topic: String,
    pub(crate) client: dual::Client,
    /// Messages handed to the connection.
    pub(crate) sent: AtomicU64,
    /// Of those, acknowledged by the broker (QoS 1: PUBACK, QoS 2: PUBCOMP) or, for
    /// QoS 0, written to the socket.
    pub(crate) acked: AtomicU64,
    /// Of those, refused by the broker (MQTT 5 reason code ≥ 0x80); per topic in
    /// `refusals`.
    pub(crate) refused: AtomicU64,
    pub(crate) refusals: Mutex<Refusals>,
    pub(crate) reconnects: AtomicU64,
    /// Reading slots its generator has gone through (published or dropped).
    pub(crate) produced: AtomicU64,
    pub(crate) sensors: usize,
    pub(crate) state: watch::Sender<LinkState>,
}

impl Link {
    pub(crate) async fn publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), ClientError> {
        self.client.publish(topic, qos, retain, payload).await?;
        self.sent.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Messages neither acknowledged nor refused yet.
    pub(crate) fn unacked(&self) -> u64 {
        self.sent
            .load(Relaxed)
            .saturating_sub(self.acked.load(Relaxed) + self.refused.load(Relaxed))
    }

    /// The account as a log line names it.
    pub(crate) fn account(&self) -> &str {
        self.account.as_deref().unwrap_or("(none)")
    }

    pub(crate) fn refusals(&self) -> Refusals {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a refusal; the first one of each topic (up to the kept topics) is logged.
    fn refuse(&self, topic: Option<&str>, refusal: &Refusal) {
        let first = self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(topic, refusal);
        self.refused.fetch_add(1, Relaxed);
        if first {
            warn!(
                "the broker refused a message on {}: {refusal} for account {}",
                topic.unwrap_or("?"),
                self.account()
            );
        }
    }
}

pub(crate) fn open_link(plan: &LinkPlan, connect_timeout: Duration) -> (Arc<Link>, EventLoop) {
    let status_topic = Topic::Status {
        client: plan.client_id.clone(),
    }
    .to_string();
    let setup = Setup::new(plan.client_id.clone())
        // The broker publishes this if the connection dies without a DISCONNECT.
        .will(Will {
            topic: status_topic.clone(),
            payload: b"offline".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
        })
        .inflight(INFLIGHT)
        .capacity(QUEUE_CAPACITY)
        .connect_timeout(connect_timeout.clamp(Duration::from_secs(1), Duration::from_secs(5)));
    // A clean session (the setup's default): what was in flight is re-sent by the
    // driver itself (below), so no session is left behind on the broker by a
    // short-lived simulator.
    let (client, eventloop) = dual::pair(&plan.mqtt, setup);
    let link = Link {
        client_id: plan.client_id.clone(),
        account: plan.mqtt.username.clone(),
        status_topic,
        client,
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        refusals: Mutex::new(Refusals::default()),
        reconnects: AtomicU64::new(0),
        produced: AtomicU64::new(0),
        sensors: plan.sensors.len(),
        state: watch::Sender::new(LinkState::Connecting {
            attempts: 0,
            last_error: None,
        }),
    };
    (Arc::new(link), eventloop)
}

/// Polls the connection's event loop until it has sent our DISCONNECT (or the task is
/// aborted). Never pauses except to back off between reconnection attempts. What was
/// queued or unacknowledged when the connection dropped is re-sent after the next
/// CONNACK, behind the `online` status ([`EventLoop::requeue`]).
pub(crate) async fn drive(link: Arc<Link>, mut eventloop: EventLoop, endpoint: String) {
    let mut attempts: u32 = 0;
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_CAP);
    let mut ever_connected = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Connected {
                session_present,
                protocol,
            }) => {
                let online = First {
                    topic: link.status_topic.clone(),
                    payload: b"online".to_vec(),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                };
                link.sent.fetch_add(1, Relaxed);
                let requeued = eventloop.requeue(Some(online), session_present);
                link.acked.fetch_add(requeued.settled, Relaxed);
                if ever_connected {
                    link.reconnects.fetch_add(1, Relaxed);
                    info!(
                        attempts,
                        resent = requeued.resent,
                        "reconnected to {endpoint}"
                    );
                } else if protocol == Protocol::V5 {
                    info!("connected to {endpoint} ({protocol})");
                } else {
                    warn!(
                        "connected to {endpoint} with {protocol}: the broker does not offer MQTT 5, \
                         so messages it refuses (ACL) cannot be detected"
                    );
                }
                ever_connected = true;
                attempts = 0;
                backoff.reset();
                link.state.send_replace(LinkState::Connected);
            }
            Ok(Event::Acked { .. }) => {
                link.acked.fetch_add(1, Relaxed);
            }
            // Packet id 0: a QoS 0 publish, written and flushed.
            Ok(Event::Published { pkid: 0 }) => {
                link.acked.fetch_add(1, Relaxed);
            }
            Ok(Event::Refused { topic, refusal, .. }) => {
                link.refuse(topic.as_deref(), &refusal);
            }
            Ok(Event::Disconnected) => {
                debug!("disconnected cleanly");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                attempts += 1;
                if let (false, Some((reason, _))) = (ever_connected, e.refusal()) {
                    link.state
                        .send_replace(LinkState::Refused(reason.to_owned()));
                    return;
                }
                if let (false, Some(reason)) = (ever_connected, e.tls_failure()) {
                    link.state.send_replace(LinkState::TlsFailed(reason));
                    return;
                }
                let reason = e.describe();
                let delay = backoff.next_delay();
                if ever_connected && attempts == 1 {
                    warn!(
                        unacked = link.unacked(),
                        "lost the connection to {endpoint}: {reason}"
                    );
                }
                warn!(
                    attempt = attempts,
                    "cannot reach broker {endpoint}: {reason}; retrying in {delay:?}"
                );
                link.state.send_replace(LinkState::Connecting {
                    attempts,
                    last_error: Some(reason),
                });
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Waits until every connection is accepted, one is refused, the timeout passes or
/// a signal arrives.
pub(crate) async fn wait_connected(
    links: &[Arc<Link>],
    endpoint: &str,
    timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), SimError> {
    let deadline = Instant::now() + timeout;
    for link in links {
        let mut state = link.state.subscribe();
        let settled = tokio::select! {
            r = tokio::time::timeout_at(deadline, state.wait_for(|s| {
                matches!(s, LinkState::Connected | LinkState::Refused(_) | LinkState::TlsFailed(_))
            })) => r.map(|s| s.map(|s| s.clone())),
            _ = stop.wait_for(|s| *s) => return Err(SimError::Interrupted { endpoint: endpoint.to_owned() }),
        };
        match settled {
            Ok(Ok(LinkState::Connected)) => {}
            Ok(Ok(LinkState::Refused(reason))) => {
                return Err(SimError::Refused {
                    endpoint: endpoint.to_owned(),
                    client_id: link.client_id.clone(),
                    reason,
                })
            }
            Ok(Ok(LinkState::TlsFailed(reason))) => {
                return Err(SimError::Tls {
                    endpoint: endpoint.to_owned(),
                    reason,
                })
            }
            Ok(_) => {
                return Err(SimError::TaskEnded {
                    client_id: link.client_id.clone(),
                })
            }
            Err(_) => {
                let detail = match &*link.state.borrow() {
                    LinkState::Connecting {
                        attempts,
                        last_error: Some(e),
                    } => format!(" after {attempts} attempts (last error: {e})"),
                    _ => String::new(),
                };
                return Err(SimError::Unreachable {
                    endpoint: endpoint.to_owned(),
                    within: humantime::format_duration(timeout).to_string(),
                    detail,
                });
            }
        }
    }
    Ok(())
}
