//! The MQTT edge: client options from the shared configuration (TLS included), and
//! small helpers every subcommand needs (build a client, connect and wait for the
//! broker's answer, explain a failure in one line).
//!
//! The client is rumqttc (see docs/decisions.md) over rustls with the ring provider.
//! Its event loop must be polled for anything to happen, so helpers here either drive
//! it themselves or hand it back. Every client is built by [`options`] and [`client`],
//! so TLS settings and TCP_NODELAY apply to all of them.

pub mod dual;
pub mod v5;

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet,
    TlsConfiguration, Transport,
};
use rustls::{AlertDescription, CertificateError};

use crate::config::MqttArgs;

/// Largest packet we accept from or send to the broker: the reference broker's
/// `max_packet_size` (mosquitto-conf/mosquitto.conf). Readings are ~200 bytes.
pub const MAX_PACKET_BYTES: usize = 16 * 1024;

/// Errors of the MQTT edge.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("broker {endpoint} refused the connection: {reason}")]
    Refused { endpoint: String, reason: String },
    /// The TLS handshake failed; `reason` says which side refused what, in words
    /// (see [`tls_failure`]).
    #[error("TLS handshake with {endpoint} failed: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("cannot reach broker {endpoint}: {source}")]
    Connection {
        endpoint: String,
        #[source]
        source: rumqttc::ConnectionError,
    },
    #[error("no answer from broker {endpoint} within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("MQTT client error: {0}")]
    Client(#[from] rumqttc::ClientError),
}

/// Client options for `client_id` from the shared configuration.
pub fn options(args: &MqttArgs, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, args.url.host.clone(), args.url.port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some(user) = &args.username {
        let pass = args.password.as_ref().map(|p| p.expose()).unwrap_or("");
        o.set_credentials(user.clone(), pass.to_owned());
    }
    if args.url.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            args.tls.client_config(),
        )));
    }
    o
}

/// A client and its event loop (not yet connected: polling connects), with
/// TCP_NODELAY on. Readings are small packets and latency matters more than packet
/// count (the broker sets `set_tcp_nodelay true` on its side for the same reason);
/// with Nagle's algorithm a small PUBLISH can wait for the broker's delayed ACK.
pub fn client(options: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options, capacity);
    set_nodelay(&mut eventloop);
    (client, eventloop)
}

/// An event loop without a client handle (TCP_NODELAY on, as [`client`]), for a caller
/// that drives the connection's packets itself once `poll` has connected it (ingest's
/// flow control, `src/ingest/link.rs`).
pub fn event_loop(options: MqttOptions) -> EventLoop {
    let mut eventloop = EventLoop::new(options, 1);
    set_nodelay(&mut eventloop);
    eventloop
}

fn set_nodelay(eventloop: &mut EventLoop) {
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
}

/// Explains a CONNACK refusal in words a user can act on.
pub fn refusal_reason(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "accepted",
        ConnectReturnCode::RefusedProtocolVersion => "protocol version refused",
        ConnectReturnCode::BadClientId => "client id rejected",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::BadUserNamePassword => {
            "bad username or password (check --mqtt-username / --mqtt-password)"
        }
        // Mosquitto answers this (not BadUserNamePassword) for a wrong password too.
        ConnectReturnCode::NotAuthorized => {
            "not authorized (wrong or missing --mqtt-username / --mqtt-password)"
        }
    }
}

/// Whether retrying cannot change the broker's answer: wrong credentials, an unknown
/// account, a client id or protocol version the broker rejects. A service then stops
/// with the reason instead of retrying forever; only "service unavailable" (a broker
/// starting or overloaded) is worth another attempt.
pub fn refusal_is_permanent(code: ConnectReturnCode) -> bool {
    !matches!(
        code,
        ConnectReturnCode::Success | ConnectReturnCode::ServiceUnavailable
    )
}

/// The error a long-running service (ingest, serve) stops on when `e` is a permanent
/// refusal ([`refusal_is_permanent`]); `None` for failures worth retrying (network,
/// TLS handshake, broker restarting).
pub fn permanent_failure(args: &MqttArgs, e: &ConnectionError) -> Option<MqttError> {
    match e {
        ConnectionError::ConnectionRefused(code) if refusal_is_permanent(*code) => {
            Some(MqttError::Refused {
                endpoint: args.url.to_string(),
                reason: refusal_reason(*code).into(),
            })
        }
        _ => None,
    }
}

/// Polls `eventloop` until the broker accepts the connection, refuses it, or `timeout`
/// passes. Returns whether the broker still had a session for this client id.
pub async fn wait_connected(
    eventloop: &mut EventLoop,
    args: &MqttArgs,
    timeout: Duration,
) -> Result<bool, MqttError> {
    let endpoint = args.url.to_string();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let polled = tokio::time::timeout_at(deadline, eventloop.poll()).await;
        match polled {
            Err(_) => return Err(MqttError::Timeout { endpoint, timeout }),
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                return if ack.code == ConnectReturnCode::Success {
                    Ok(ack.session_present)
                } else {
                    Err(MqttError::Refused {
                        endpoint,
                        reason: refusal_reason(ack.code).into(),
                    })
                };
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(connection_error(args, e)),
        }
    }
}

/// Classifies a connection failure: a CONNACK refusal, a TLS handshake failure (in
/// words, see [`tls_failure`]), or anything else.
pub fn connection_error(args: &MqttArgs, e: ConnectionError) -> MqttError {
    let endpoint = args.url.to_string();
    if let ConnectionError::ConnectionRefused(code) = e {
        return MqttError::Refused {
            endpoint,
            reason: refusal_reason(code).into(),
        };
    }
    match tls_failure(&e) {
        Some(reason) => MqttError::Tls { endpoint, reason },
        None => MqttError::Connection {
            endpoint,
            source: e,
        },
    }
}

/// If `e` is a TLS failure, what went wrong in words a user can act on, naming the
/// option to change; `None` for any other failure. Covers the handshake itself and
/// the alert a broker that requires a client certificate sends right after it (in
/// TLS 1.3 the client learns of that refusal on its first read, not in the
/// handshake).
pub fn tls_failure(e: &ConnectionError) -> Option<String> {
    if let Some(tls) = find_rustls_error(e) {
        return Some(explain_tls(tls));
    }
    match e {
        ConnectionError::Tls(rumqttc::TlsError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Some(
                "the broker closed the connection during the handshake \
                 (is that port a TLS listener? plain MQTT needs mqtt://)"
                    .into(),
            )
        }
        ConnectionError::Tls(other) => Some(other.to_string()),
        _ => None,
    }
}

/// The rustls error somewhere in `e`'s chain. `io::Error` hides the error it wraps
/// from `source()` (it returns that error's source), so it is opened explicitly.
fn find_rustls_error(e: &ConnectionError) -> Option<&rustls::Error> {
    let mut current: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(inner);
        }
        current = current.source()?;
    }
}

fn explain_tls(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "unknown CA: the broker's certificate is not signed by a CA this client trusts \
             (give the CA that signed it with --mqtt-ca)"
                .into()
        }
        E::InvalidCertificate(
            cert @ (CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }),
        ) => format!(
            "{cert}: the host in --mqtt-url must be one of the names in the broker \
             certificate's subjectAltName"
        ),
        E::InvalidCertificate(CertificateError::BadSignature) => {
            "the broker's certificate names a trusted CA as its issuer but was not signed \
             by it (another CA of the same name? check --mqtt-ca)"
                .into()
        }
        E::InvalidCertificate(cert) => format!("the broker's certificate was rejected: {cert}"),
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            "the broker requires a client certificate (give one with --mqtt-cert and --mqtt-key)"
                .into()
        }
        E::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::DecryptError),
        ) => format!(
            "the broker rejected this client's certificate (alert {alert:?}: --mqtt-cert \
             must be a client certificate signed by the CA the broker trusts)"
        ),
        E::AlertReceived(alert) => format!("the broker refused the handshake (alert {alert:?})"),
        E::InvalidMessage(_) => {
            "the broker did not answer in TLS (is that port a plain MQTT listener? use mqtt://)"
                .into()
        }
        other => other.to_string(),
    }
}

/// Connects a client and waits for the broker's answer. The event loop is returned so
/// the caller keeps driving it.
pub async fn connect(
    args: &MqttArgs,
    client_id: &str,
    timeout: Duration,
) -> Result<(AsyncClient, EventLoop), MqttError> {
    let (client, mut eventloop) = client(options(args, client_id), 256);
    wait_connected(&mut eventloop, args, timeout).await?;
    Ok((client, eventloop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn wrapped(e: rustls::Error) -> ConnectionError {
        // What tokio-rustls hands back: the rustls error inside an io::Error.
        ConnectionError::Tls(rumqttc::TlsError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            e,
        )))
    }

    #[test]
    fn tls_failures_are_explained() {
        let unknown = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(tls_failure(&unknown).unwrap().starts_with("unknown CA"));
        // After the handshake (TLS 1.3), the alert arrives on the first read.
        let required = ConnectionError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        ));
        assert!(tls_failure(&required)
            .unwrap()
            .contains("requires a client certificate"));
        let eof = ConnectionError::Tls(rumqttc::TlsError::Io(io::ErrorKind::UnexpectedEof.into()));
        assert!(tls_failure(&eof).unwrap().contains("TLS listener"));
    }

    #[test]
    fn other_failures_are_not_tls() {
        assert_eq!(
            tls_failure(&ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized
            )),
            None
        );
        let reset = ConnectionError::Io(io::ErrorKind::ConnectionRefused.into());
        assert_eq!(tls_failure(&reset), None);
        let args = MqttArgs::default();
        let refused = connection_error(
            &args,
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
        );
        assert!(matches!(refused, MqttError::Refused { .. }));
    }

    #[test]
    fn refused_logins_are_permanent_and_name_the_options() {
        let args = MqttArgs::default();
        for code in [
            ConnectReturnCode::NotAuthorized,
            ConnectReturnCode::BadUserNamePassword,
        ] {
            let e = permanent_failure(&args, &ConnectionError::ConnectionRefused(code))
                .expect("a refused login is permanent");
            let line = e.to_string();
            assert!(line.contains("--mqtt-username / --mqtt-password"), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
        assert!(permanent_failure(
            &args,
            &ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable)
        )
        .is_none());
        let reset = ConnectionError::Io(io::ErrorKind::ConnectionRefused.into());
        assert!(permanent_failure(&args, &reset).is_none());
    }

    #[test]
    fn mqtts_options_use_tls_and_mqtt_options_do_not() {
        let mut args = MqttArgs::default();
        assert!(matches!(options(&args, "c").transport(), Transport::Tcp));
        args.url = crate::config::parse_mqtt_url("mqtts://127.0.0.1").unwrap();
        assert!(matches!(
            options(&args, "c").transport(),
            Transport::Tls(TlsConfiguration::Rustls(_))
        ));
    }
}
