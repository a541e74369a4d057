//! A broker connection that speaks MQTT 5 where the broker offers it and MQTT 3.1.1
//! where it does not, behind one [`Client`] and one [`EventLoop`] whose [`Event`]s
//! are the same for both. The simulator and the probes use it so that a publish the
//! broker refuses (an MQTT 5 reason code ≥ 0x80, see [`super::v5`]) is seen, with
//! its topic.
//!
//! - Negotiation: the first connection tries MQTT 5. If the broker refuses that
//!   version ([`super::v5::refuses_protocol`]), 3.1.1 is tried at once; if it connects,
//!   the connection stays on 3.1.1 ([`Event::Connected`] says which) and refusals can
//!   no longer be seen. The choice is made once: reconnections keep it.
//! - Topics of refusals: a PUBACK names only a packet id. [`Client::publish`] notes
//!   the topic of each QoS 1/2 publish in the order its request enters rumqttc's
//!   channel (publishers take turns), and the event loop pairs the notes with packet
//!   ids as rumqttc writes the requests: first its pending queue, then the channel,
//!   both in order. The notes are bounded by the channel's capacity plus the
//!   in-flight window. QoS 0 publishes (packet id 0, no answer) are left out.
//! - What a lost connection held: rumqttc drops its pending requests when the next
//!   session is clean. The event loop keeps them, and [`EventLoop::requeue`] puts them
//!   back after the CONNACK, so a reconnecting caller loses nothing it handed over.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use rumqttc::v5::{self as r5};
use rumqttc::{Outgoing, Packet, QoS};

use super::v5::{self, Refusal};
use super::MqttError;
use crate::config::MqttArgs;

mod client;
mod v5_loop;

pub use client::{Client, ClientError};
use client::{Handle, Shared};
use v5_loop::V5Loop;

/// The MQTT version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V311,
}

impl Protocol {
    /// The version as `--json` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V5 => "5",
            Protocol::V311 => "3.1.1",
        }
    }

    /// Whether the broker can tell this client it refused a publish.
    pub fn sees_refusals(self) -> bool {
        self == Protocol::V5
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MQTT {}", self.as_str())
    }
}

/// A last will.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

/// What a connection is, beyond the shared configuration.
#[derive(Debug, Clone)]
pub struct Setup {
    client_id: String,
    will: Option<Will>,
    inflight: u16,
    clean: bool,
    capacity: usize,
    connect_timeout: Duration,
}

impl Setup {
    /// Defaults: no last will, 100 QoS 1/2 messages in flight (rumqttc's 3.1.1
    /// default), a clean session, 256 queued requests, 5 s to connect.
    pub fn new(client_id: impl Into<String>) -> Setup {
        Setup {
            client_id: client_id.into(),
            will: None,
            inflight: 100,
            clean: true,
            capacity: 256,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Published by the broker if the connection dies without a DISCONNECT.
    pub fn will(mut self, will: Will) -> Setup {
        self.will = Some(will);
        self
    }

    /// QoS 1/2 messages in flight before the client waits for acknowledgements (MQTT 5:
    /// at most the broker's Receive Maximum).
    pub fn inflight(mut self, n: u16) -> Setup {
        self.inflight = n.max(1);
        self
    }

    /// Requests the client may queue before `publish` waits.
    pub fn capacity(mut self, n: usize) -> Setup {
        self.capacity = n.max(1);
        self
    }

    /// How long one connection attempt (TCP, TLS, CONNACK) may take; whole seconds,
    /// at least one.
    pub fn connect_timeout(mut self, d: Duration) -> Setup {
        self.connect_timeout = d;
        self
    }

    fn timeout_secs(&self) -> u64 {
        self.connect_timeout.as_secs().max(1)
    }

    fn options_v5(&self, args: &MqttArgs) -> r5::MqttOptions {
        let mut o = v5::options(args, &self.client_id);
        if let Some(w) = &self.will {
            o.set_last_will(r5::mqttbytes::v5::LastWill::new(
                w.topic.clone(),
                w.payload.clone(),
                v5::qos(w.qos),
                w.retain,
                None,
            ));
        }
        o.set_outgoing_inflight_upper_limit(self.inflight);
        o.set_clean_start(self.clean);
        o.set_connection_timeout(self.timeout_secs());
        o
    }

    fn pair_v311(&self, args: &MqttArgs) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
        let mut o = super::options(args, &self.client_id);
        if let Some(w) = &self.will {
            o.set_last_will(rumqttc::LastWill::new(
                w.topic.clone(),
                w.payload.clone(),
                w.qos,
                w.retain,
            ));
        }
        o.set_inflight(self.inflight);
        o.set_clean_session(self.clean);
        let (client, mut eventloop) = super::client(o, self.capacity);
        let mut network = eventloop.network_options();
        network.set_connection_timeout(self.timeout_secs());
        eventloop.set_network_options(network);
        (client, eventloop)
    }
}

/// What the event loop saw, in the same words for both protocols.
#[derive(Debug)]
pub enum Event {
    /// The broker accepted the connection.
    Connected {
        session_present: bool,
        protocol: Protocol,
    },
    /// A PUBLISH was written to the socket (packet id 0: QoS 0).
    Published {
        pkid: u16,
    },
    /// The broker took a QoS 1 (PUBACK) or QoS 2 (PUBCOMP) publish.
    Acked {
        pkid: u16,
    },
    /// The broker refused a publish (MQTT 5 only); `topic` is `None` only if the
    /// pairing of topics with packet ids was lost (never expected).
    Refused {
        pkid: u16,
        topic: Option<Arc<str>>,
        refusal: Refusal,
    },
    /// SUBACK: which filters, in request order, the broker granted.
    SubAck(Vec<bool>),
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    /// Our DISCONNECT was written.
    Disconnected,
    Other,
}

/// Why polling failed. Failures that do not depend on the MQTT version (TCP, TLS,
/// timeout) are carried as rumqttc's 3.1.1 error in both cases (see
/// [`v5::split_transport`]), so the explanations of [`super`] apply.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    V311(rumqttc::ConnectionError),
    #[error(transparent)]
    V5(r5::ConnectionError),
}

impl ConnError {
    fn from_v5(e: r5::ConnectionError) -> ConnError {
        match v5::split_transport(e) {
            Ok(transport) => ConnError::V311(transport),
            Err(e) => ConnError::V5(e),
        }
    }

    /// A CONNACK refusal: its reason in words, and whether retrying cannot help.
    pub fn refusal(&self) -> Option<(&'static str, bool)> {
        match self {
            ConnError::V311(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                // Only "service unavailable" is worth another attempt.
                let permanent = *code != rumqttc::ConnectReturnCode::ServiceUnavailable;
                Some((super::refusal_reason(*code), permanent))
            }
            ConnError::V5(r5::ConnectionError::ConnectionRefused(code)) => {
                Some((v5::refusal_reason(*code), v5::refusal_is_permanent(*code)))
            }
            _ => None,
        }
    }

    /// A TLS failure in words naming the option to change ([`super::tls_failure`]).
    pub fn tls_failure(&self) -> Option<String> {
        match self {
            ConnError::V311(e) => super::tls_failure(e),
            ConnError::V5(_) => None,
        }
    }

    /// One line for a log.
    pub fn describe(&self) -> String {
        if let Some(reason) = self.tls_failure() {
            return format!("TLS handshake failed: {reason}");
        }
        match self.refusal() {
            Some((reason, _)) => format!("connection refused: {reason}"),
            None => self.to_string(),
        }
    }

    /// The error of the MQTT edge ([`MqttError`]) for a connection to `args`.
    pub fn into_mqtt_error(self, args: &MqttArgs) -> MqttError {
        if let Some((reason, _)) = self.refusal() {
            return MqttError::Refused {
                endpoint: args.url.to_string(),
                reason: reason.into(),
            };
        }
        match self {
            ConnError::V311(e) => super::connection_error(args, e),
            ConnError::V5(e) => super::connection_error(
                args,
                rumqttc::ConnectionError::Io(std::io::Error::other(e)),
            ),
        }
    }
}

/// What [`EventLoop::requeue`] put back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Requests re-sent from the lost connection (publishes and releases).
    pub resent: usize,
    /// QoS 2 publishes whose PUBREC had arrived: the broker owns them, and a new
    /// session cannot release them again, so they count as acknowledged.
    pub settled: u64,
}

/// A message to publish first after a reconnection.
#[derive(Debug, Clone)]
pub struct First {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

struct V311Loop {
    eventloop: rumqttc::EventLoop,
    backlog: VecDeque<rumqttc::Request>,
}

enum Inner {
    V5(Box<V5Loop>),
    V311(Box<V311Loop>),
}

/// Drives the connection: must be polled for anything to happen, as rumqttc's.
pub struct EventLoop {
    args: MqttArgs,
    setup: Setup,
    shared: Arc<Shared>,
    inner: Inner,
    /// The protocol is chosen (first CONNACK).
    decided: bool,
    /// Events that happened before an error, yielded before polling again.
    deferred: VecDeque<Event>,
}

/// A client and its event loop, not yet connected (polling connects).
pub fn pair(args: &MqttArgs, setup: Setup) -> (Client, EventLoop) {
    let shared = Arc::new(Shared::new());
    let (client, eventloop) = r5::AsyncClient::new(setup.options_v5(args), setup.capacity);
    let inner = Inner::V5(Box::new(V5Loop::new(eventloop, client)));
    let client = Client::new(shared.clone());
    let eventloop = EventLoop {
        args: args.clone(),
        setup,
        shared,
        inner,
        decided: false,
        deferred: VecDeque::new(),
    };
    (client, eventloop)
}

/// Connects a client and waits for the broker's answer (MQTT 5, else 3.1.1). The
/// event loop is returned so the caller keeps driving it.
pub async fn connect(
    args: &MqttArgs,
    setup: Setup,
    timeout: Duration,
) -> Result<(Client, EventLoop, Protocol), MqttError> {
    let (client, mut eventloop) = pair(args, setup);
    let endpoint = args.url.to_string();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => return Err(MqttError::Timeout { endpoint, timeout }),
            Ok(Ok(Event::Connected { protocol, .. })) => return Ok((client, eventloop, protocol)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into_mqtt_error(args)),
        }
    }
}

impl EventLoop {
    /// The next event; reconnects when polled after an error (as rumqttc does).
    pub async fn poll(&mut self) -> Result<Event, ConnError> {
        if let Some(event) = self.deferred.pop_front() {
            return Ok(event);
        }
        match &mut self.inner {
            Inner::V5(l) => match l.eventloop.poll().await {
                Ok(event) => Ok(self.on_v5(event)),
                Err(e) if !self.decided && v5::refuses_protocol(&e) => {
                    tracing::debug!("the broker refused MQTT 5 ({e}); trying MQTT 3.1.1");
                    self.try_v311().await.map_err(|e311| match e311 {
                        // A 3.1.1 refusal says more (the account); otherwise the
                        // broker's answer to MQTT 5 does.
                        e311 @ ConnError::V311(rumqttc::ConnectionError::ConnectionRefused(_)) => {
                            e311
                        }
                        _ => ConnError::from_v5(e),
                    })
                }
                Err(e) => {
                    let before = l.on_error(&self.shared, self.setup.inflight);
                    self.deferred.extend(before);
                    Err(ConnError::from_v5(e))
                }
            },
            Inner::V311(l) => match l.eventloop.poll().await {
                Ok(event) => Ok(self.on_v311(event)),
                Err(e) => {
                    l.backlog.extend(l.eventloop.pending.drain(..));
                    Err(ConnError::V311(e))
                }
            },
        }
    }

    /// One 3.1.1 attempt after the broker refused MQTT 5; on success the connection
    /// stays 3.1.1 for good.
    async fn try_v311(&mut self) -> Result<Event, ConnError> {
        let (client, mut eventloop) = self.setup.pair_v311(&self.args);
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack))) => {
                let _ = self.shared.handle.set(Handle::V311(client));
                self.inner = Inner::V311(Box::new(V311Loop {
                    eventloop,
                    backlog: VecDeque::new(),
                }));
                self.decided = true;
                Ok(Event::Connected {
                    session_present: ack.session_present,
                    protocol: Protocol::V311,
                })
            }
            Ok(other) => Err(ConnError::V311(rumqttc::ConnectionError::NotConnAck(
                match other {
                    rumqttc::Event::Incoming(p) => p,
                    rumqttc::Event::Outgoing(_) => Packet::PingResp,
                },
            ))),
            Err(e) => Err(ConnError::V311(e)),
        }
    }

    fn on_v311(&mut self, event: rumqttc::Event) -> Event {
        use rumqttc::Event as E;
        match event {
            E::Incoming(Packet::ConnAck(ack)) => {
                self.decided = true;
                Event::Connected {
                    session_present: ack.session_present,
                    protocol: Protocol::V311,
                }
            }
            E::Incoming(Packet::PubAck(a)) => Event::Acked { pkid: a.pkid },
            E::Incoming(Packet::PubComp(c)) => Event::Acked { pkid: c.pkid },
            E::Incoming(Packet::SubAck(s)) => Event::SubAck(
                s.return_codes
                    .iter()
                    .map(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                    .collect(),
            ),
            E::Incoming(Packet::Publish(p)) => Event::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
            },
            E::Outgoing(Outgoing::Publish(pkid)) => Event::Published { pkid },
            E::Outgoing(Outgoing::Disconnect) => Event::Disconnected,
            _ => Event::Other,
        }
    }

    fn on_v5(&mut self, event: r5::Event) -> Event {
        let Inner::V5(l) = &mut self.inner else {
            unreachable!("on_v5 is called on an MQTT 5 connection")
        };
        if let (r5::Event::Incoming(Packet5::ConnAck(_)), false) = (&event, self.decided) {
            self.decided = true;
            let _ = self.shared.handle.set(Handle::V5(l.client.clone()));
        }
        let event = l.convert(event, &self.shared, self.setup.inflight);
        if l.repair.repair(&mut l.eventloop) {
            tracing::debug!("in-flight window given back after refused QoS 2 publishes");
        }
        event
    }

    /// After a CONNACK: `first`, then what the lost connection held (a QoS 2
    /// publish whose PUBREC had arrived is settled instead when the session is new),
    /// then what rumqttc kept, all before anything queued since.
    pub fn requeue(&mut self, first: Option<First>, session_present: bool) -> Requeued {
        let mut done = Requeued::default();
        match &mut self.inner {
            Inner::V5(l) => done = l.requeue(first, session_present),
            Inner::V311(l) => {
                let mut front = VecDeque::with_capacity(1 + l.backlog.len());
                if let Some(f) = first {
                    let mut p = rumqttc::Publish::new(f.topic, f.qos, f.payload);
                    p.retain = f.retain;
                    front.push_back(rumqttc::Request::Publish(p));
                }
                let skip = front.len();
                for request in l.backlog.drain(..) {
                    match request {
                        rumqttc::Request::PubRel(_) if !session_present => done.settled += 1,
                        rumqttc::Request::Publish(_)
                        | rumqttc::Request::PubRel(_)
                        | rumqttc::Request::Disconnect(_) => front.push_back(request),
                        _ => {}
                    }
                }
                front.extend(l.eventloop.pending.drain(..));
                done.resent = front.len() - skip;
                l.eventloop.pending = front;
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Reads one MQTT packet; returns its first byte and body.
    async fn read_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let first = s.read_u8().await.unwrap();
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = s.read_u8().await.unwrap();
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).await.unwrap();
        (first, body)
    }

    /// What an MQTT 3.1.1-only broker does (Mosquitto before 1.6, per its
    /// `handle__connect`): a CONNECT of protocol level 5 gets the 3.1.1 CONNACK
    /// "unacceptable protocol version" (return code 1) and the connection is closed;
    /// level 4 is accepted. No Mosquitto 2 can play this part (it speaks MQTT 5), so
    /// the peer is scripted with those bytes.
    async fn broker_311_only(listener: TcpListener) -> Vec<u8> {
        let mut levels = Vec::new();
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let (kind, body) = read_packet(&mut s).await;
            assert_eq!(kind, 0x10, "CONNECT");
            // Protocol name "MQTT" (2 + 4 bytes), then the level.
            let level = body[6];
            levels.push(level);
            if level != 4 {
                s.write_all(&[0x20, 0x02, 0x00, 0x01]).await.unwrap();
                continue;
            }
            s.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
            let (kind, body) = read_packet(&mut s).await;
            assert_eq!(kind & 0xf0, 0x30, "PUBLISH");
            // QoS 1: topic (length-prefixed), then the packet id.
            let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let pkid = &body[2 + topic_len..4 + topic_len];
            s.write_all(&[0x40, 0x02, pkid[0], pkid[1]]).await.unwrap();
            // Keep the connection until the client is done.
            let _ = s.read_u8().await;
            return levels;
        }
    }

    #[tokio::test]
    async fn falls_back_to_311_where_the_broker_refuses_mqtt_5() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = tokio::spawn(broker_311_only(listener));
        let args = MqttArgs {
            url: crate::config::parse_mqtt_url(&format!("mqtt://127.0.0.1:{port}")).unwrap(),
            ..MqttArgs::default()
        };
        let (client, mut eventloop, protocol) =
            connect(&args, Setup::new("fallback"), Duration::from_secs(5))
                .await
                .unwrap();
        assert_eq!(protocol, Protocol::V311);
        assert_eq!(client.protocol(), Some(Protocol::V311));
        assert!(!protocol.sees_refusals());
        client
            .publish("entrepot/nord/s1/v1", QoS::AtLeastOnce, false, "{}")
            .await
            .unwrap();
        let acked = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Event::Acked { pkid } = eventloop.poll().await.unwrap() {
                    return pkid;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(acked, 1);
        drop((client, eventloop));
        assert_eq!(peer.await.unwrap(), vec![5, 4]);
    }
}
