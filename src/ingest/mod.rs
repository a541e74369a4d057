//! The ingest middleware: MQTT → validation → rules and alerts → InfluxDB, at least
//! once and idempotent, in bounded memory.
//!
//! Layout:
//! - [`link`]: the broker connection (subscriptions, persistent session, manual
//!   acknowledgements). It hands every message, parsed by [`classify`], to the writer
//!   and acknowledges what the writer settles; it stops reading from the broker while
//!   the writer holds `--max-unacked` messages (docs/ingest.md#flow-control).
//! - [`writer`]: the rule engine, batching by size and time, pipelined writes settled
//!   in order ([`pipeline`]); [`storage`] gets each batch into InfluxDB (retries,
//!   splitting, dead letters) or into the fsynced disk [`spool`]; [`rule_state`] keeps
//!   the alerts raised across restarts.
//! - [`outbox`]: what passes between them (each message's delivery, given back when
//!   settled; the writer's alert publishes).
//! - [`metrics`]: the Prometheus metrics of both.
//!
//! A message is acknowledged only once every point it produced is in InfluxDB or on
//! disk. A redelivered message produces the same point (same measurement, tags and
//! timestamp), which overwrites the first: at-least-once delivery without duplicates.

pub mod classify;
pub mod deadletter;
pub mod link;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod reader;
pub mod rule_state;
pub mod spool;
pub mod storage;
pub mod writer;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{InfluxArgs, MqttArgs};
use crate::domain::topic;
use crate::domain::Thresholds;
use crate::store::InfluxClient;

pub use classify::{classify, Inbound};
pub use metrics::IngestMetrics;

/// Everything ingest needs, validated by the command line.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub mqtt: MqttArgs,
    pub influx: InfluxArgs,
    /// Stable MQTT client id: the broker keeps this session's queue while ingest is down.
    pub client_id: String,
    /// MQTT shared-subscription group: several ingest processes split the stream.
    pub share_group: Option<String>,
    pub batch_size: usize,
    pub batch_timeout: Duration,
    /// Flush as soon as this many messages await acknowledgement. A broker that
    /// honours its `max_inflight_messages` sends at most that many unacknowledged
    /// messages; a batch waiting for more would wait for its timeout every time.
    pub ack_window: usize,
    /// Most messages held (received, not yet settled) at once: above it the link stops
    /// reading from the broker. The memory bound of docs/ingest.md#flow-control.
    pub max_unacked: usize,
    /// Batches written to InfluxDB at once (pipelining) while it is healthy.
    pub writes_in_flight: usize,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// Thresholds from a file: published (retained) at start, then followed like any
    /// update on `entrepot/config/thresholds`.
    pub thresholds_file: Option<Thresholds>,
    pub write_timeout: Duration,
    /// Seconds between silence checks.
    pub tick: Duration,
    /// Subscribe to the broker's `$SYS/broker/#` statistics and store them in the
    /// `broker` measurement (the account needs `topic read $SYS/#`).
    pub broker_stats: bool,
    /// How payloads are read: liberal or strict forms, future margin (`reader`).
    pub read_policy: crate::domain::ReadPolicy,
}

/// Errors that stop ingest.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// The broker refused this client for a reason retrying cannot change (a wrong
    /// password, an unknown account): the message names the option to fix.
    #[error(transparent)]
    Broker(Box<crate::mqtt::MqttError>),
    #[error("the writer task failed: {0}")]
    Writer(String),
    #[error("cannot run ingest's thread: {0}")]
    Runtime(String),
}

/// The subscription filters for a configuration.
pub fn filters(share_group: Option<&str>) -> Vec<String> {
    let shared = [
        topic::READINGS_FILTER,
        topic::HEARTBEATS_FILTER,
        topic::ALERTS_FILTER,
    ];
    let mut out: Vec<String> = shared
        .iter()
        .map(|f| match share_group {
            Some(g) => format!("$share/{g}/{f}"),
            None => (*f).to_owned(),
        })
        .collect();
    // Every ingest process needs the thresholds, so this one is never shared.
    out.push(topic::THRESHOLDS_TOPIC.to_owned());
    out
}

/// Runs ingest until `shutdown` completes, then flushes, acknowledges and disconnects.
/// Stops early, with [`IngestError::Broker`], when the broker refuses the login.
///
/// The link, the writer and its InfluxDB writes run on one thread of their own (a
/// current-thread runtime), whatever runtime calls this. Handing every message from
/// one task to the other across worker threads cost more CPU than the work itself:
/// perf showed ingest's time mostly in the kernel, parking and waking tokio's worker
/// threads (futex) for each hand-over. One thread keeps up with a 2,000,000-reading
/// backlog (ingest needs about 0.05 s of CPU per 10,000 readings there).
pub async fn run(
    cfg: IngestConfig,
    metrics: IngestMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), IngestError> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("arng-ingest".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(run_here(cfg, metrics, async {
                    // Shutdown, or the caller gone.
                    let _ = stop_rx.await;
                })),
                Err(e) => Err(IngestError::Runtime(e.to_string())),
            };
            let _ = done_tx.send(result);
        })
        .map_err(|e| IngestError::Runtime(e.to_string()))?;
    let ended = |r: Result<Result<(), IngestError>, _>| {
        r.unwrap_or_else(|_| Err(IngestError::Runtime("the ingest thread ended early".into())))
    };
    tokio::select! {
        _ = shutdown => {}
        result = &mut done_rx => return ended(result),
    }
    let _ = stop_tx.send(());
    ended(done_rx.await)
}

/// [`run`], on the current runtime.
async fn run_here(
    cfg: IngestConfig,
    metrics: IngestMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), IngestError> {
    let spool = spool::Spool::open(&cfg.spool_dir, cfg.spool_max_bytes)?;
    if !spool.is_empty() {
        tracing::info!(files = spool.files(), bytes = spool.used_bytes(), dir = %cfg.spool_dir.display(), "spooled batches from a previous run will be written first");
    }
    let rules = rule_state::RuleState::open(&cfg.spool_dir);
    let (link, wiring) = link::Link::new(&cfg, metrics.clone());
    let influx = InfluxClient::with_timeout(&cfg.influx, cfg.write_timeout);
    let storage = storage::Storage::new(
        influx,
        spool,
        metrics.clone(),
        storage::RetryPolicy::default(),
        &cfg.client_id,
    )
    .with_dead_letter_copies(wiring.outbox.clone());
    let writer = writer::Writer::new(&cfg, storage, rules, wiring.outbox, metrics);
    let writer_task = tokio::spawn(writer.run(wiring.inbound));
    link.run(writer_task, shutdown).await
}
