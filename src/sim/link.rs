//! The simulator's reconnecting publisher: one [`Link`] per MQTT connection, driven by
//! `drive`, which polls rumqttc's event loop without pause. It reconnects with
//! capped exponential backoff and jitter ([`crate::backoff`]), announces `online`
//! (retained) on every (re)connection, re-sends what was queued or in flight when a
//! connection dropped (rumqttc would discard it on a clean session), and counts
//! acknowledgements, so that the end of a run knows what the broker holds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, LastWill, Outgoing, Packet,
    Publish, QoS, Request,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::plan::LinkPlan;
use super::SimError;
use crate::backoff::Backoff;
use crate::domain::Topic;

/// Readings a connection may queue before its generator waits. Large enough to ride
/// out a scheduling hiccup at 50,000 messages/s, small enough to bound memory.
pub(crate) const QUEUE_CAPACITY: usize = 8192;
/// QoS 1/2 messages in flight per connection before rumqttc waits for acks.
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
    pub(crate) status_topic: String,
    pub(crate) client: AsyncClient,
    /// Messages handed to the connection.
    pub(crate) sent: AtomicU64,
    /// Of those, acknowledged by the broker (QoS 1: PUBACK, QoS 2: PUBCOMP) or, for
    /// QoS 0, written to the socket.
    pub(crate) acked: AtomicU64,
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

    pub(crate) fn unacked(&self) -> u64 {
        self.sent
            .load(Relaxed)
            .saturating_sub(self.acked.load(Relaxed))
    }
}

pub(crate) fn open_link(plan: &LinkPlan, connect_timeout: Duration) -> (Arc<Link>, EventLoop) {
    let status_topic = Topic::Status {
        client: plan.client_id.clone(),
    }
    .to_string();
    let mut options = crate::mqtt::options(&plan.mqtt, &plan.client_id);
    // The broker publishes this if the connection dies without a DISCONNECT.
    options.set_last_will(LastWill::new(
        status_topic.clone(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    options.set_inflight(INFLIGHT);
    // A clean session: what was in flight is re-sent by the driver itself (below),
    // so no session is left behind on the broker by a short-lived simulator.
    options.set_clean_session(true);
    let (client, mut eventloop) = crate::mqtt::client(options, QUEUE_CAPACITY);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(connect_timeout.as_secs().clamp(1, 5));
    eventloop.set_network_options(network);
    let link = Link {
        client_id: plan.client_id.clone(),
        status_topic,
        client,
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
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

pub(crate) fn describe_error(e: &ConnectionError) -> String {
    if let Some(reason) = crate::mqtt::tls_failure(e) {
        return format!("TLS handshake failed: {reason}");
    }
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("connection refused: {}", crate::mqtt::refusal_reason(*code))
        }
        other => other.to_string(),
    }
}

/// Polls the connection's event loop until it has sent our DISCONNECT (or the task is
/// aborted). Never pauses except to back off between reconnection attempts.
pub(crate) async fn drive(link: Arc<Link>, mut eventloop: EventLoop, endpoint: String) {
    // Requests that were queued or unacknowledged when the connection dropped.
    // rumqttc moves them to `pending` and clears that on a new (clean) session; we
    // take them out first and put them back after the CONNACK.
    let mut backlog: VecDeque<Request> = VecDeque::new();
    let mut attempts: u32 = 0;
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_CAP);
    let mut ever_connected = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let mut online =
                    Publish::new(link.status_topic.clone(), QoS::AtLeastOnce, "online");
                online.retain = true;
                link.sent.fetch_add(1, Relaxed);
                let mut front =
                    VecDeque::with_capacity(1 + backlog.len() + eventloop.pending.len());
                front.push_back(Request::Publish(online));
                for request in backlog.drain(..) {
                    match request {
                        // The broker already owns a message it answered PUBREC to; a
                        // new session cannot release it again.
                        Request::PubRel(_) if !ack.session_present => {
                            link.acked.fetch_add(1, Relaxed);
                        }
                        Request::Publish(_) | Request::PubRel(_) | Request::Disconnect(_) => {
                            front.push_back(request)
                        }
                        _ => {}
                    }
                }
                front.extend(eventloop.pending.drain(..));
                let resent = front.len() - 1;
                eventloop.pending = front;
                if ever_connected {
                    link.reconnects.fetch_add(1, Relaxed);
                    info!(attempts, resent, "reconnected to {endpoint}");
                } else {
                    info!("connected to {endpoint}");
                }
                ever_connected = true;
                attempts = 0;
                backoff.reset();
                link.state.send_replace(LinkState::Connected);
            }
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                link.acked.fetch_add(1, Relaxed);
            }
            // Packet id 0: a QoS 0 publish, written and flushed.
            Ok(Event::Outgoing(Outgoing::Publish(0))) => {
                link.acked.fetch_add(1, Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                debug!("disconnected cleanly");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                backlog.extend(eventloop.pending.drain(..));
                attempts += 1;
                if let (false, ConnectionError::ConnectionRefused(code)) = (ever_connected, &e) {
                    let reason = crate::mqtt::refusal_reason(*code).to_owned();
                    link.state.send_replace(LinkState::Refused(reason));
                    return;
                }
                if let (false, Some(reason)) = (ever_connected, crate::mqtt::tls_failure(&e)) {
                    link.state.send_replace(LinkState::TlsFailed(reason));
                    return;
                }
                let reason = describe_error(&e);
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
