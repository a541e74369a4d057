//! Probing the chain from the outside, as a user would: the work of `arng doctor`,
//! `arng check-e2e` and `arng latency`.
//!
//! - [`reach`]: can this configuration reach the broker and InfluxDB (doctor)?
//! - [`prober`]: the MQTT client (MQTT 5 where the broker offers it) that publishes
//!   probe readings (sensor `e2e-probe`, see [`crate::supervision`]) one at a time,
//!   times their PUBACK (or reports the broker's refusal) and keeps what arrives on
//!   its subscriptions;
//! - [`api`]: a small client of the arng REST API and what it shows of a probe;
//! - [`influx`]: the Flux queries that find a probe and the zones' last heartbeats;
//! - [`check`]: check-e2e's hops, each with its own verdict and cause, and
//!   [`alerts`]: its alert hops (raise, see on MQTT and REST, clear);
//! - [`scope`]: which zones check-e2e probes and whose heartbeats it checks;
//! - [`latency`]: latency's measurement loop, percentiles and report.
//!
//! Hops and samples wait with [`poll`], which keeps the last error so that a hop
//! that times out says why, and gives up at once on an error that waiting cannot
//! fix ([`Failure::cause`], [`Cause::is_permanent`]): a refused connection, a name
//! that does not resolve, refused credentials.

pub mod alerts;
pub mod api;
pub mod check;
pub mod influx;
pub mod latency;
pub mod prober;
pub mod reach;
pub mod scope;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

pub use api::{ApiClient, ProbeView};
pub use prober::{Prober, Received};

use crate::mqtt::MqttError;
pub use crate::report::Cause;
use crate::store::StoreError;

/// Why a probe step failed: the API, InfluxDB or the broker, in words a user can act
/// on.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("bad API path {path}: {reason}")]
    ApiPath { path: String, reason: String },
    #[error("cannot reach the API at {base}: {reason} (is arng serve running? --api-url)")]
    ApiUnreachable {
        base: String,
        reason: String,
        transport: crate::net::Transport,
    },
    /// The API answered with an error status; `hint` names the option to change.
    #[error("GET {path}: HTTP {status}: {message}{hint}")]
    ApiStatus {
        path: String,
        status: u16,
        message: String,
        hint: &'static str,
    },
    /// A raw request ([`ApiClient::send_raw`]) got no answer; `transport` is None
    /// when it timed out.
    #[error("no answer from {url}: {reason}")]
    Unanswered {
        url: String,
        reason: String,
        transport: Option<crate::net::Transport>,
    },
    #[error(
        "no answer from the API at {base} within {after:?} (--api-url; is arng serve overloaded?)"
    )]
    ApiTimeout { base: String, after: Duration },
    #[error("GET /zones: HTTP 404: is --api-url an arng API?")]
    NotAnArngApi,
    #[error("GET /zones: not a JSON list")]
    ZonesNotAList,
    /// The zone rule ([`scope`]) found no zone to probe; why, in words.
    #[error("{0}")]
    NoZoneToProbe(String),
    #[error(transparent)]
    Influx(#[from] crate::store::StoreError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[error("{0}")]
    MqttClient(#[from] crate::mqtt::dual::ClientError),
    #[error("lost the broker connection: {0}")]
    BrokerLost(String),
    #[error("no SUBACK from the broker")]
    NoSubAck,
    #[error("no PUBACK for the probe on {topic} within the timeout")]
    NoPubAck { topic: String },
    /// The broker answered the probe with a refusal (MQTT 5 reason code ≥ 0x80): the
    /// account may not publish there (ACL), and waiting longer cannot change that.
    #[error("the broker refused the publish on {topic}: {reason} (account {account})")]
    Refused {
        topic: String,
        reason: String,
        /// The reason code (0x87: not authorized).
        code: u8,
        account: String,
    },
}

/// An error a hop can report with its cause.
pub trait Failure: std::fmt::Display {
    /// Why, as a check reports it; [`Cause::is_permanent`] says whether waiting
    /// longer could help.
    fn cause(&self) -> Cause;
}

impl Failure for StoreError {
    fn cause(&self) -> Cause {
        match self {
            StoreError::Unreachable { transport, .. } => (*transport).into(),
            StoreError::Timeout(_) => Cause::Timeout,
            StoreError::Unauthorized { .. } => Cause::Auth,
            StoreError::NotFound(_) => Cause::NotFound,
            // A query InfluxDB refuses (bad Flux, 400) is refused every time.
            StoreError::TooLarge(_) | StoreError::Rejected { .. } => Cause::Rejected,
            StoreError::Unavailable { .. } | StoreError::Csv(_) | StoreError::Protocol(_) => {
                Cause::Other
            }
        }
    }
}

impl Failure for MqttError {
    fn cause(&self) -> Cause {
        match self {
            // A CONNACK refusal: the account (or, rarely, the client id).
            MqttError::Refused { .. } => Cause::Auth,
            MqttError::Tls { .. } => Cause::Tls,
            MqttError::Connection { source, .. } => crate::net::transport_failure(source).0.into(),
            MqttError::Timeout { .. } => Cause::Timeout,
            MqttError::Client(_) => Cause::Other,
        }
    }
}

impl Failure for ProbeError {
    fn cause(&self) -> Cause {
        match self {
            ProbeError::ApiUnreachable { transport, .. } => (*transport).into(),
            ProbeError::Unanswered { transport, .. } => {
                transport.map_or(Cause::Timeout, Cause::from)
            }
            ProbeError::ApiTimeout { .. } | ProbeError::NoSubAck | ProbeError::NoPubAck { .. } => {
                Cause::Timeout
            }
            ProbeError::ApiStatus { status, .. } => match status {
                401 | 403 => Cause::Auth,
                404 => Cause::NotFound,
                408 | 429 | 500.. => Cause::Other,
                _ => Cause::Rejected,
            },
            ProbeError::NotAnArngApi => Cause::NotFound,
            ProbeError::ApiPath { .. } => Cause::Rejected,
            ProbeError::Influx(e) => e.cause(),
            ProbeError::Mqtt(e) => e.cause(),
            // The account may not publish there (403's twin); other reasons (quota,
            // topic name) are the broker refusing this request.
            ProbeError::Refused { code: 0x87, .. } => Cause::Auth,
            ProbeError::Refused { .. } => Cause::Rejected,
            ProbeError::ZonesNotAList
            | ProbeError::NoZoneToProbe(_)
            | ProbeError::MqttClient(_)
            | ProbeError::BrokerLost(_) => Cause::Other,
        }
    }
}

/// How often a hop that waits for something looks again.
pub const POLL_EVERY: Duration = Duration::from_millis(25);

/// A duration in milliseconds, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Calls `f` every [`POLL_EVERY`] until it gives a value or `deadline` passes.
/// Returns the value and when it was seen, or the last error (None: just not seen).
/// An error of a permanent cause (a refused connection...) is returned at once.
pub async fn poll<T, E, F, Fut>(deadline: Instant, mut f: F) -> Result<(T, Instant), Option<E>>
where
    E: Failure,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let mut last_err = None;
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Ok(Some(v))) => return Ok((v, Instant::now())),
            Ok(Ok(None)) => last_err = None,
            Ok(Err(e)) if e.cause().is_permanent() => return Err(Some(e)),
            Ok(Err(e)) => last_err = Some(e),
            Err(_) => return Err(last_err),
        }
        if Instant::now() + POLL_EVERY >= deadline {
            return Err(last_err);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn poll_returns_the_value_or_the_last_error() {
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut n = 0;
        let got = poll(deadline, || {
            n += 1;
            let v = n;
            async move { Ok::<_, StoreError>((v >= 3).then_some(v)) }
        })
        .await;
        assert_eq!(got.map(|(v, _)| v).ok(), Some(3));
        let deadline = Instant::now() + Duration::from_millis(100);
        let got: Result<((), Instant), _> = poll(deadline, || async {
            Err(StoreError::Timeout(Duration::from_millis(10)))
        })
        .await;
        assert!(matches!(got, Err(Some(StoreError::Timeout(_)))));
    }

    #[tokio::test]
    async fn poll_gives_up_at_once_on_a_permanent_cause() {
        let started = Instant::now();
        let mut calls = 0;
        let got: Result<((), Instant), _> = poll(started + Duration::from_secs(30), || {
            calls += 1;
            async {
                Err(StoreError::Unreachable {
                    url: "http://127.0.0.1:9/".into(),
                    message: "Connection refused (os error 111)".into(),
                    transport: crate::net::Transport::Refused,
                })
            }
        })
        .await;
        let e = got.unwrap_err().unwrap();
        assert_eq!(e.cause(), Cause::ConnectionRefused);
        assert_eq!(calls, 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn causes_of_api_answers() {
        let status = |status| ProbeError::ApiStatus {
            path: "/zones".into(),
            status,
            message: String::new(),
            hint: "",
        };
        assert_eq!(status(401).cause(), Cause::Auth);
        assert_eq!(status(503).cause(), Cause::Other);
        assert_eq!(status(400).cause(), Cause::Rejected);
        assert!(!status(503).cause().is_permanent());
    }
}
