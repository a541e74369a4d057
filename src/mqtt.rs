//! The MQTT edge: client options from the shared configuration, and small helpers
//! every subcommand needs (connect and wait for the broker's answer).
//!
//! The client is rumqttc (see docs/decisions.md). Its event loop must be polled for
//! anything to happen, so helpers here either drive it themselves or hand it back.

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet};

use crate::config::MqttArgs;

/// Largest packet we accept from or send to the broker: the reference broker's
/// `max_packet_size` (mosquitto-conf/mosquitto.conf). Readings are ~200 bytes.
pub const MAX_PACKET_BYTES: usize = 16 * 1024;

/// Errors of the MQTT edge.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("broker {endpoint} refused the connection: {reason}")]
    Refused { endpoint: String, reason: String },
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
        o.set_transport(rumqttc::Transport::tls_with_default_config());
    }
    o
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
            Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => {
                return Err(MqttError::Refused {
                    endpoint,
                    reason: refusal_reason(code).into(),
                })
            }
            Ok(Err(source)) => return Err(MqttError::Connection { endpoint, source }),
        }
    }
}

/// Connects a client and waits for the broker's answer. The event loop is returned so
/// the caller keeps driving it.
pub async fn connect(
    args: &MqttArgs,
    client_id: &str,
    timeout: Duration,
) -> Result<(AsyncClient, EventLoop), MqttError> {
    let (client, mut eventloop) = AsyncClient::new(options(args, client_id), 256);
    wait_connected(&mut eventloop, args, timeout).await?;
    Ok((client, eventloop))
}
