//! Probing the chain from the outside, as a user would: the work of `arng doctor`,
//! `arng check-e2e` and `arng latency`.
//!
//! - [`reach`]: can this configuration reach the broker and InfluxDB (doctor)?
//! - [`prober`]: the MQTT client that publishes probe readings (sensor `e2e-probe`,
//!   see [`crate::supervision`]) one at a time, times their PUBACK and keeps what
//!   arrives on its subscriptions;
//! - [`api`]: a small client of the arng REST API and what it shows of a probe;
//! - [`influx`]: the Flux queries that find a probe and the zones' last heartbeats;
//! - [`check`]: check-e2e's hops, each with its own verdict and cause;
//! - [`latency`]: latency's measurement loop, percentiles and report.
//!
//! Hops and samples wait with [`poll`], which keeps the last error so that a hop
//! that times out says why.

pub mod api;
pub mod check;
pub mod influx;
pub mod latency;
pub mod prober;
pub mod reach;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

pub use api::{ApiClient, ProbeView};
pub use prober::{Prober, Received};

/// Why a probe step failed: the API, InfluxDB or the broker, in words a user can act
/// on.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("bad API path {path}: {reason}")]
    ApiPath { path: String, reason: String },
    #[error("cannot reach the API at {base}: {reason} (is arng serve running? --api-url)")]
    ApiUnreachable { base: String, reason: String },
    /// The API answered with an error status; `hint` names the option to change.
    #[error("GET {path}: HTTP {status}: {message}{hint}")]
    ApiStatus {
        path: String,
        status: u16,
        message: String,
        hint: &'static str,
    },
    #[error("GET /zones: HTTP 404: is --api-url an arng API?")]
    NotAnArngApi,
    #[error("GET /zones: not a JSON list")]
    ZonesNotAList,
    #[error("GET /zones lists no zone to probe yet: pass --zone")]
    NoZoneToProbe,
    #[error(transparent)]
    Influx(#[from] crate::store::StoreError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[error("{0}")]
    MqttClient(#[from] rumqttc::ClientError),
    #[error("lost the broker connection: {0}")]
    BrokerLost(String),
    #[error("no SUBACK from the broker")]
    NoSubAck,
    #[error("no PUBACK for the probe on {topic} within the timeout")]
    NoPubAck { topic: String },
}

/// How often a hop that waits for something looks again.
pub const POLL_EVERY: Duration = Duration::from_millis(25);

/// A duration in milliseconds, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Calls `f` every [`POLL_EVERY`] until it gives a value or `deadline` passes.
/// Returns the value and when it was seen, or the last error (None: just not seen).
pub async fn poll<T, E, F, Fut>(deadline: Instant, mut f: F) -> Result<(T, Instant), Option<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let mut last_err = None;
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Ok(Some(v))) => return Ok((v, Instant::now())),
            Ok(Ok(None)) => last_err = None,
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
            async move { Ok::<_, String>((v >= 3).then_some(v)) }
        })
        .await;
        assert_eq!(got.map(|(v, _)| v), Ok(3));
        let deadline = Instant::now() + Duration::from_millis(100);
        let got: Result<((), Instant), _> =
            poll(deadline, || async { Err("InfluxDB down".to_owned()) }).await;
        assert_eq!(got.unwrap_err().as_deref(), Some("InfluxDB down"));
    }
}
