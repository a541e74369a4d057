//! The client half of [`super`]: the handle publishers and subscribers hold. It
//! notes the topic of every MQTT 5 QoS 1/2 publish in the order its request enters
//! rumqttc's channel (publishers take turns), for the event loop to pair with packet
//! ids. QoS 0 publishes get no answer from the broker: they are not noted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use rumqttc::v5::{self as r5};
use rumqttc::QoS;

use super::Protocol;
use crate::mqtt::v5;

/// A request the client could not hand to its event loop.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("not connected to the broker yet")]
    NotConnected,
    /// The event loop is gone, or rumqttc refused the request (an invalid topic).
    #[error("the MQTT client did not queue the request: {0}")]
    NotQueued(String),
}

pub(super) enum Handle {
    V5(r5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// What the client and its event loop share.
pub(super) struct Shared {
    /// Set by the event loop at the first CONNACK, in the protocol that connected.
    pub(super) handle: OnceLock<Handle>,
    /// Publishers take turns so that topics are noted in channel order.
    turn: tokio::sync::Mutex<()>,
    /// Topics of MQTT 5 QoS 1/2 publishes handed to rumqttc's channel, not yet written.
    topics: Mutex<VecDeque<Arc<str>>>,
}

impl Shared {
    pub(super) fn new() -> Shared {
        Shared {
            handle: OnceLock::new(),
            turn: tokio::sync::Mutex::new(()),
            topics: Mutex::new(VecDeque::new()),
        }
    }

    pub(super) fn topics(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<str>>> {
        // A panicking publisher cannot leave the queue half-changed: plain pushes/pops.
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle publishers and subscribers use; cheap to clone. Usable once the event
/// loop has connected ([`super::Event::Connected`]).
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    pub(super) fn new(shared: Arc<Shared>) -> Client {
        Client { shared }
    }

    fn handle(&self) -> Result<&Handle, ClientError> {
        self.shared.handle.get().ok_or(ClientError::NotConnected)
    }

    /// The protocol the connection settled on (none before the first CONNACK).
    pub fn protocol(&self) -> Option<Protocol> {
        self.shared.handle.get().map(|h| match h {
            Handle::V5(_) => Protocol::V5,
            Handle::V311(_) => Protocol::V311,
        })
    }

    /// Queues a publish; waits while the queue is full.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), ClientError> {
        let not_queued = |e: &dyn std::fmt::Display| ClientError::NotQueued(e.to_string());
        match self.handle()? {
            Handle::V311(c) => c
                .publish(topic, qos, retain, payload)
                .await
                .map_err(|e| not_queued(&e)),
            // QoS 0 gets no answer, so nothing to pair: no note, no turn to take.
            Handle::V5(c) if qos == QoS::AtMostOnce => c
                .publish(topic, v5::qos(qos), retain, payload.into())
                .await
                .map_err(|e| not_queued(&e)),
            Handle::V5(c) => {
                let topic: String = topic.into();
                let note: Arc<str> = Arc::from(topic.as_str());
                let payload: Vec<u8> = payload.into();
                let _turn = self.shared.turn.lock().await;
                self.shared.topics().push_back(note);
                let queued = c.publish(topic, v5::qos(qos), retain, payload).await;
                if let Err(e) = queued {
                    // Not in the channel, so not written: the note is the last one
                    // (publishers take turns) and must not pair with another publish.
                    self.shared.topics().pop_back();
                    return Err(not_queued(&e));
                }
                Ok(())
            }
        }
    }

    /// Subscribes to every filter in one request.
    pub async fn subscribe_many(&self, filters: Vec<(String, QoS)>) -> Result<(), ClientError> {
        let not_queued = |e: &dyn std::fmt::Display| ClientError::NotQueued(e.to_string());
        match self.handle()? {
            Handle::V311(c) => c
                .subscribe_many(
                    filters
                        .into_iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f, q)),
                )
                .await
                .map_err(|e| not_queued(&e)),
            Handle::V5(c) => c
                .subscribe_many(
                    filters
                        .into_iter()
                        .map(|(f, q)| r5::mqttbytes::v5::Filter::new(f, v5::qos(q))),
                )
                .await
                .map_err(|e| not_queued(&e)),
        }
    }

    /// Queues a DISCONNECT after everything queued so far.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        match self.handle()? {
            Handle::V311(c) => c
                .disconnect()
                .await
                .map_err(|e| ClientError::NotQueued(e.to_string())),
            Handle::V5(c) => c
                .disconnect()
                .await
                .map_err(|e| ClientError::NotQueued(e.to_string())),
        }
    }

    /// Queues a DISCONNECT unless the queue is full.
    pub fn try_disconnect(&self) -> Result<(), ClientError> {
        match self.handle()? {
            Handle::V311(c) => c
                .try_disconnect()
                .map_err(|e| ClientError::NotQueued(e.to_string())),
            Handle::V5(c) => c
                .try_disconnect()
                .map_err(|e| ClientError::NotQueued(e.to_string())),
        }
    }
}
