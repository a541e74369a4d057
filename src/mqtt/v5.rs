//! The MQTT 5 side of the broker edge: client options from the shared configuration
//! (the same TLS, credentials, keep-alive, packet size and TCP_NODELAY as
//! [`super::options`]), the broker's reason codes in words, and a repair of rumqttc's
//! in-flight window after refused QoS 2 publishes.
//!
//! Why MQTT 5 at all: an MQTT 3.1.1 broker cannot tell a publisher that it dropped a
//! message. Mosquitto 2.x checks every PUBLISH against the ACL (`handle__publish`) and,
//! when it denies one, answers an MQTT 5 client's QoS 1 publish with PUBACK and its
//! QoS 2 publish with PUBREC, both with reason code 0x87 "not authorized"; a 3.1.1
//! client gets the same packets without a reason code (the packet has no room for
//! one), i.e. a success, and the message is gone. A QoS 0 publish gets no answer in
//! either version, so its refusal cannot be known. docs/decisions.md records the
//! choice; [`super::dual`] uses this module and falls back to 3.1.1.

use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, PubAck, PubAckReason, PubRec, PubRecReason,
};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::{ConnectionError, EventLoop, MqttOptions, MqttState, StateError};
use rumqttc::{NetworkOptions, QoS};

use super::MAX_PACKET_BYTES;
use crate::config::MqttArgs;

/// Client options for `client_id` from the shared configuration: those of
/// [`super::options`] (broker, keep-alive, account, TLS transport) carried over, so
/// both versions connect the same way; TCP_NODELAY is on for the reason
/// [`super::client`] gives.
pub fn options(args: &MqttArgs, client_id: &str) -> MqttOptions {
    let reference = super::options(args, client_id);
    let (host, port) = reference.broker_address();
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(reference.keep_alive());
    if let Some(login) = reference.credentials() {
        o.set_credentials(login.username, login.password);
    }
    o.set_transport(reference.transport());
    // Told to the broker in CONNECT: it will not send us anything larger.
    o.set_max_packet_size(Some(MAX_PACKET_BYTES as u32));
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    o.set_network_options(network);
    o
}

/// The same QoS in rumqttc's MQTT 5 type.
pub fn qos(q: QoS) -> QoS5 {
    match q {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

/// Explains a CONNACK refusal in words a user can act on (the MQTT 5 twin of
/// [`super::refusal_reason`]).
pub fn refusal_reason(code: ConnectReturnCode) -> &'static str {
    use ConnectReturnCode as C;
    match code {
        C::Success => "accepted",
        C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => "protocol version refused",
        C::BadClientId | C::ClientIdentifierNotValid => "client id rejected",
        C::BadUserNamePassword => {
            "bad username or password (check --mqtt-username / --mqtt-password)"
        }
        // Mosquitto answers this (not BadUserNamePassword) for a wrong password too.
        C::NotAuthorized => "not authorized (wrong or missing --mqtt-username / --mqtt-password)",
        C::Banned => "this client is banned by the broker",
        C::BadAuthenticationMethod => "authentication method not supported by the broker",
        C::ServiceUnavailable | C::ServerUnavailable => "service unavailable",
        C::ServerBusy => "server busy",
        C::ConnectionRateExceeded => "connection rate exceeded",
        C::QuotaExceeded => "quota exceeded",
        C::UseAnotherServer | C::ServerMoved => "the broker sends clients to another server",
        C::PacketTooLarge => "CONNECT packet too large for the broker",
        C::MalformedPacket | C::ProtocolError => "the broker found the CONNECT malformed",
        C::TopicNameInvalid => "invalid last-will topic",
        C::PayloadFormatInvalid => "invalid last-will payload",
        C::RetainNotSupported => "the broker does not support retained messages",
        C::QoSNotSupported => "the broker does not support the last will's QoS",
        C::UnspecifiedError | C::ImplementationSpecificError => "refused (unspecified error)",
    }
}

/// Whether retrying cannot change the broker's answer (wrong account, banned, client
/// id or protocol refused...). Only a broker that says it is unavailable, busy or
/// rate-limiting, or gives no reason, is worth another attempt.
pub fn refusal_is_permanent(code: ConnectReturnCode) -> bool {
    use ConnectReturnCode as C;
    !matches!(
        code,
        C::Success
            | C::ServiceUnavailable
            | C::ServerUnavailable
            | C::ServerBusy
            | C::ConnectionRateExceeded
            | C::QuotaExceeded
            | C::UnspecifiedError
            | C::ImplementationSpecificError
    )
}

/// Whether `e`, on a first MQTT 5 connection attempt, says the broker does not speak
/// MQTT 5, so that 3.1.1 is worth trying: a CONNACK "unsupported protocol version"
/// (0x84), or what a 3.1.1-only broker does instead: answer with its own CONNACK
/// (return code 0x01, which does not parse as MQTT 5: rumqttc then sees the
/// connection end) or close the connection right after CONNECT.
pub fn refuses_protocol(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::UnsupportedProtocolVersion
            | ConnectReturnCode::RefusedProtocolVersion,
        ) => true,
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::v5::mqttbytes::Error::Io(io),
        )) => is_closed(io),
        ConnectionError::MqttState(
            StateError::ConnectionAborted | StateError::Deserialization(_),
        ) => true,
        ConnectionError::NotConnAck(_) => true,
        ConnectionError::Io(io) | ConnectionError::MqttState(StateError::Io(io)) => is_closed(io),
        _ => false,
    }
}

/// The peer closed the connection (not: refused it, or failed a TLS handshake).
fn is_closed(io: &std::io::Error) -> bool {
    matches!(
        io.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
    )
}

/// The failures that do not depend on the MQTT version (TCP, TLS, the connect
/// timeout) have the same types (or, for the timeout, an equivalent variant) in rumqttc's 3.1.1 and 5 modules: they are carried as
/// the 3.1.1 error, so that [`super::connection_error`] and [`super::tls_failure`]
/// explain both. Anything else stays an MQTT 5 error.
pub fn split_transport(e: ConnectionError) -> Result<rumqttc::ConnectionError, ConnectionError> {
    use rumqttc::v5::mqttbytes::Error as Codec;
    match e {
        // Reading the socket fails inside the codec or the state (e.g. the TLS 1.3
        // alert of a broker that requires a client certificate, on the first read).
        ConnectionError::Io(io)
        | ConnectionError::MqttState(StateError::Io(io))
        | ConnectionError::MqttState(StateError::Deserialization(Codec::Io(io))) => {
            Ok(rumqttc::ConnectionError::Io(io))
        }
        ConnectionError::Tls(tls) => Ok(rumqttc::ConnectionError::Tls(tls)),
        // The connect attempt took longer than the connection timeout.
        ConnectionError::Timeout(_) => Ok(rumqttc::ConnectionError::NetworkTimeout),
        other => Err(other),
    }
}

/// A publish the broker refused: its reason code (≥ 0x80) and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub code: u8,
    pub reason: &'static str,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (reason code 0x{:02x})", self.reason, self.code)
    }
}

impl Refusal {
    const fn new(code: u8, reason: &'static str) -> Refusal {
        Refusal { code, reason }
    }
}

/// The refusal an acknowledgement's reason carries: PUBACK and PUBREC have the same
/// reason codes, in two enums.
macro_rules! refusal_of {
    ($reason:expr, $R:ident) => {
        Some(match $reason {
            $R::Success | $R::NoMatchingSubscribers => return None,
            $R::NotAuthorized => Refusal::new(0x87, "not authorized"),
            $R::UnspecifiedError => Refusal::new(0x80, "unspecified error"),
            $R::ImplementationSpecificError => Refusal::new(0x83, "implementation specific error"),
            $R::TopicNameInvalid => Refusal::new(0x90, "topic name invalid"),
            $R::PacketIdentifierInUse => Refusal::new(0x91, "packet identifier in use"),
            $R::QuotaExceeded => Refusal::new(0x97, "quota exceeded"),
            $R::PayloadFormatInvalid => Refusal::new(0x99, "payload format invalid"),
        })
    };
}

/// The refusal a PUBACK carries, if any ("no matching subscribers", 0x10, is a
/// success: the broker took the message).
pub fn puback_refusal(ack: &PubAck) -> Option<Refusal> {
    refusal_of!(ack.reason, PubAckReason)
}

/// The refusal a PUBREC (QoS 2) carries, if any; a refusal ends that exchange.
pub fn pubrec_refusal(rec: &PubRec) -> Option<Refusal> {
    refusal_of!(rec.reason, PubRecReason)
}

/// Gives back the in-flight slots rumqttc 0.25 keeps for refused QoS 2 publishes.
///
/// rumqttc counts a QoS 2 publish in flight until its PUBCOMP; a PUBREC with a
/// failure reason ends the exchange (no PUBREL, no PUBCOMP) but the count is never
/// decremented (bytebeamio/rumqtt issue 1060), so after as many refusals as the
/// window holds (the broker's Receive Maximum, Mosquitto's `max_inflight_messages`)
/// the connection stops sending for good. The state's counter is not reachable, so
/// once everything still counted in flight is a leaked slot (nothing awaits an
/// acknowledgement), the state is replaced by a fresh one with the same window:
/// there is then nothing in it to lose but the buffered events, which are moved over.
/// Used only on connections that do not receive QoS 2 messages (the simulator), whose
/// incoming QoS 2 bookkeeping a fresh state would forget.
#[derive(Debug, Default)]
pub struct WindowRepair {
    /// The window negotiated at CONNACK: min(our limit, the broker's Receive Maximum).
    window: u16,
    /// Refused QoS 2 publishes rumqttc still counts in flight.
    leaked: u16,
}

impl WindowRepair {
    /// At CONNACK: rumqttc's state was cleaned (nothing leaked) and the window is
    /// min(`limit`, the broker's Receive Maximum).
    pub fn on_connack(&mut self, ack: &ConnAck, limit: u16) {
        let receive_max = ack
            .properties
            .as_ref()
            .and_then(|p| p.receive_max)
            .unwrap_or(u16::MAX);
        self.window = receive_max.min(limit).max(1);
        self.leaked = 0;
    }

    /// After the connection dropped: rumqttc's `clean` reset its count.
    pub fn on_connection_lost(&mut self) {
        self.leaked = 0;
    }

    /// A PUBREC with a failure reason arrived.
    pub fn on_refused_pubrec(&mut self) {
        self.leaked = self.leaked.saturating_add(1);
    }

    /// Replaces the state once only leaked slots are counted in flight. Returns
    /// whether it did.
    pub fn repair(&mut self, eventloop: &mut EventLoop) -> bool {
        let state = &mut eventloop.state;
        if self.leaked == 0 || state.inflight() != self.leaked || state.collision.is_some() {
            return false;
        }
        let mut fresh = MqttState::new(self.window, state.manual_acks);
        fresh.events = std::mem::take(&mut state.events);
        fresh.broker_topic_alias_max = state.broker_topic_alias_max;
        fresh.await_pingresp = state.await_pingresp;
        fresh.collision_ping_count = state.collision_ping_count;
        *state = fresh;
        self.leaked = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{ConnAckProperties, Packet, PubComp, Publish};
    use rumqttc::v5::{Incoming, Request};

    #[test]
    fn options_carry_the_account_and_tls_of_the_311_options() {
        let mut args = MqttArgs {
            username: Some("sensor-nord".into()),
            ..MqttArgs::default()
        };
        let o = options(&args, "c");
        assert!(matches!(o.transport(), rumqttc::Transport::Tcp));
        assert_eq!(
            o.credentials().map(|l| l.username).as_deref(),
            Some("sensor-nord")
        );
        assert_eq!(o.keep_alive(), std::time::Duration::from_secs(15));
        assert_eq!(o.max_packet_size(), Some(MAX_PACKET_BYTES as u32));
        args.url = crate::config::parse_mqtt_url("mqtts://127.0.0.1").unwrap();
        assert!(matches!(
            options(&args, "c").transport(),
            rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(_))
        ));
    }

    #[test]
    fn refusals_are_reason_codes_from_0x80() {
        let mut ack = PubAck::new(7, None);
        assert_eq!(puback_refusal(&ack), None);
        ack.reason = PubAckReason::NoMatchingSubscribers;
        assert_eq!(puback_refusal(&ack), None);
        ack.reason = PubAckReason::NotAuthorized;
        let r = puback_refusal(&ack).unwrap();
        assert_eq!(r.code, 0x87);
        assert_eq!(r.to_string(), "not authorized (reason code 0x87)");
        let mut rec = PubRec::new(7, None);
        assert_eq!(pubrec_refusal(&rec), None);
        rec.reason = PubRecReason::QuotaExceeded;
        assert_eq!(pubrec_refusal(&rec).unwrap().code, 0x97);
    }

    #[test]
    fn logins_are_permanent_and_a_busy_broker_is_not() {
        for code in [
            ConnectReturnCode::NotAuthorized,
            ConnectReturnCode::BadUserNamePassword,
            ConnectReturnCode::Banned,
        ] {
            assert!(refusal_is_permanent(code), "{code:?}");
        }
        for code in [
            ConnectReturnCode::ServerUnavailable,
            ConnectReturnCode::ServerBusy,
            ConnectReturnCode::ConnectionRateExceeded,
        ] {
            assert!(!refusal_is_permanent(code), "{code:?}");
        }
        assert!(refusal_reason(ConnectReturnCode::NotAuthorized).contains("--mqtt-password"));
    }

    #[test]
    fn what_a_311_broker_answers_is_a_protocol_refusal() {
        assert!(refuses_protocol(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::UnsupportedProtocolVersion
        )));
        assert!(refuses_protocol(&ConnectionError::MqttState(
            StateError::ConnectionAborted
        )));
        assert!(!refuses_protocol(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized
        )));
        // Nobody listening is not a protocol question.
        assert!(!refuses_protocol(&ConnectionError::Io(
            std::io::ErrorKind::ConnectionRefused.into()
        )));
        assert!(split_transport(ConnectionError::Io(
            std::io::ErrorKind::ConnectionRefused.into()
        ))
        .is_ok());
        assert!(split_transport(ConnectionError::RequestsDone).is_err());
        // A TLS alert read by the codec is a transport failure, not a protocol one.
        let alert = std::io::Error::new(std::io::ErrorKind::InvalidData, "fatal alert");
        let in_codec = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::v5::mqttbytes::Error::Io(alert),
        ));
        assert!(!refuses_protocol(&in_codec));
        assert!(matches!(
            split_transport(in_codec),
            Ok(rumqttc::ConnectionError::Io(_))
        ));
    }

    fn connack(receive_max: Option<u16>) -> ConnAck {
        ConnAck {
            session_present: false,
            code: ConnectReturnCode::Success,
            properties: Some(ConnAckProperties {
                session_expiry_interval: None,
                receive_max,
                max_qos: None,
                retain_available: None,
                max_packet_size: None,
                assigned_client_identifier: None,
                topic_alias_max: None,
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: None,
                subscription_identifiers_available: None,
                shared_subscription_available: None,
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        }
    }

    /// rumqttc's state, driven by hand: a refused PUBREC leaks a slot (the bug this
    /// works around), and the repair gives it back only when nothing else is in
    /// flight.
    #[test]
    fn refused_qos2_slots_come_back_once_nothing_else_is_in_flight() {
        let options = MqttOptions::new("t", "127.0.0.1", 1);
        let mut el = EventLoop::new(options, 10);
        el.state = MqttState::new(2, false);
        let mut repair = WindowRepair::default();
        repair.on_connack(&connack(Some(20)), 2);
        assert_eq!(repair.window, 2);
        el.state
            .handle_incoming_packet(Incoming::ConnAck(connack(Some(20))))
            .unwrap();
        let publish =
            |topic: &str| Request::Publish(Publish::new(topic, QoS5::ExactlyOnce, "x", None));
        let sent = |el: &mut EventLoop, topic: &str| {
            let p = el.state.handle_outgoing_packet(publish(topic)).unwrap();
            match p {
                Some(Packet::Publish(p)) => p.pkid,
                other => panic!("{other:?}"),
            }
        };
        let refused = sent(&mut el, "denied");
        let accepted = sent(&mut el, "allowed");
        let mut rec = PubRec::new(refused, None);
        rec.reason = PubRecReason::NotAuthorized;
        el.state
            .handle_incoming_packet(Incoming::PubRec(rec))
            .unwrap();
        repair.on_refused_pubrec();
        // The accepted one still awaits its PUBCOMP: no repair yet.
        assert_eq!(el.state.inflight(), 2);
        assert!(!repair.repair(&mut el));
        el.state
            .handle_incoming_packet(Incoming::PubRec(PubRec::new(accepted, None)))
            .unwrap();
        el.state
            .handle_incoming_packet(Incoming::PubComp(PubComp::new(accepted, None)))
            .unwrap();
        // rumqttc still counts the refused one.
        assert_eq!(el.state.inflight(), 1);
        let buffered = el.state.events.len();
        assert!(repair.repair(&mut el));
        assert_eq!(el.state.inflight(), 0);
        assert_eq!(el.state.events.len(), buffered);
        // The window is whole again: two publishes go out.
        sent(&mut el, "allowed");
        sent(&mut el, "allowed");
        assert_eq!(el.state.inflight(), 2);
    }
}
