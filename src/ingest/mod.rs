//! The ingest middleware: MQTT → validation → rules and alerts → InfluxDB, at least
//! once and idempotent.
//!
//! Two tasks:
//! - the **MQTT task** owns the rumqttc event loop. It subscribes (QoS 1, persistent
//!   session, optionally a shared-subscription group), parses every message with the
//!   domain parsers and hands the result to the writer, together with what is needed to
//!   acknowledge it later. Acknowledgements are manual: nothing is acknowledged here.
//! - the **writer task** ([`writer`]) runs the rule engine, batches points by size and
//!   time, writes them to InfluxDB (gzip, retries with backoff, split on 413/400,
//!   dead letters), spools batches to disk while InfluxDB is down, and acknowledges
//!   the MQTT messages of a batch only once the batch is in InfluxDB or on disk.
//!
//! A redelivered message produces the same point (same measurement, tags and
//! timestamp), which overwrites the first: at-least-once delivery without duplicates.

pub mod deadletter;
pub mod pipeline;
pub mod reader;
pub mod spool;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{Event, LastWill, Outgoing, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::{InfluxArgs, MqttArgs};
use crate::domain::topic::{self, Topic};
use crate::domain::{Alert, Heartbeat, Reading, Thresholds};
use crate::metrics::{Counter, Gauge, Histogram, Registry, LATENCY_BUCKETS};
use crate::store::InfluxClient;

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
    /// Flush as soon as this many messages await acknowledgement. The broker sends a
    /// client at most `max_inflight_messages` unacknowledged messages; a batch waiting
    /// for more than that would wait for its timeout every time.
    pub ack_window: usize,
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
    #[error("the writer task failed: {0}")]
    Writer(String),
}

/// What the MQTT task hands to the writer. `ack` is the message to acknowledge once
/// its points are safe (None for QoS 0 messages, which have no acknowledgement).
#[derive(Debug)]
pub enum Inbound {
    Reading(Reading, Option<Publish>),
    Heartbeat(Heartbeat, Option<Publish>),
    Alert(Alert, Option<Publish>),
    Thresholds(Thresholds, Option<Publish>),
    /// Nothing to store (our own status or dead-letter messages, `$SYS` statistics we
    /// do not keep); acknowledged in order with the rest.
    Skip(Option<Publish>),
    /// One broker statistic from `$SYS/broker/...`, received at `at`. Mosquitto
    /// publishes them at QoS 0: there is nothing to acknowledge.
    BrokerStat {
        field: &'static str,
        value: f64,
        at: chrono::DateTime<chrono::Utc>,
    },
    Invalid {
        topic: String,
        payload: Vec<u8>,
        reason: &'static str,
        /// The payload field at fault, when one is (for the dead-letter copy).
        field: Option<String>,
        error: String,
        ack: Option<Publish>,
    },
}

/// Ingest's Prometheus metrics.
#[derive(Clone)]
pub struct IngestMetrics {
    pub registry: Registry,
    pub received: Arc<Counter>,
    pub readings_written: Arc<Counter>,
    pub points_written: Arc<Counter>,
    pub write_retries: Arc<Counter>,
    pub spooled_batches: Arc<Counter>,
    pub spool_full: Arc<Counter>,
    pub spool_bytes: Arc<Gauge>,
    pub buffered_points: Arc<Gauge>,
    pub batch_points: Arc<Histogram>,
    pub write_seconds: Arc<Histogram>,
    pub lag_seconds: Arc<Histogram>,
    pub mqtt_connected: Arc<Gauge>,
    pub influx_healthy: Arc<Gauge>,
}

impl IngestMetrics {
    pub fn new(registry: &Registry) -> IngestMetrics {
        let r = registry;
        IngestMetrics {
            registry: r.clone(),
            received: r.counter(
                "arng_ingest_messages_received_total",
                "MQTT messages received.",
                &[],
            ),
            readings_written: r.counter(
                "arng_ingest_readings_written_total",
                "Readings written to InfluxDB.",
                &[],
            ),
            points_written: r.counter(
                "arng_ingest_points_written_total",
                "Points written to InfluxDB (readings, heartbeats, alerts, dead letters).",
                &[],
            ),
            write_retries: r.counter(
                "arng_ingest_write_retries_total",
                "InfluxDB write attempts that were retried.",
                &[],
            ),
            spooled_batches: r.counter(
                "arng_ingest_spooled_batches_total",
                "Batches spooled to disk while InfluxDB was unavailable.",
                &[],
            ),
            spool_full: r.counter(
                "arng_ingest_spool_full_total",
                "Times the disk spool was full (ingest then stops acknowledging).",
                &[],
            ),
            spool_bytes: r.gauge(
                "arng_ingest_spool_bytes",
                "Bytes waiting in the disk spool.",
                &[],
            ),
            buffered_points: r.gauge(
                "arng_ingest_buffered_points",
                "Points in the batch being built.",
                &[],
            ),
            batch_points: r.histogram(
                "arng_ingest_batch_points",
                "Points per InfluxDB write.",
                &[],
                &[1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0],
            ),
            write_seconds: r.histogram(
                "arng_ingest_write_duration_seconds",
                "Duration of successful InfluxDB writes.",
                &[],
                LATENCY_BUCKETS,
            ),
            lag_seconds: r.histogram(
                "arng_ingest_lag_seconds",
                "From a reading's timestamp to its write in InfluxDB (MQTT to InfluxDB lag).",
                &[],
                LATENCY_BUCKETS,
            ),
            mqtt_connected: r.gauge(
                "arng_ingest_mqtt_connected",
                "1 when connected to the broker.",
                &[],
            ),
            influx_healthy: r.gauge(
                "arng_ingest_influx_healthy",
                "1 when the last InfluxDB write succeeded.",
                &[],
            ),
        }
    }

    pub fn rejected(&self, reason: &str) -> Arc<Counter> {
        self.registry.counter(
            "arng_ingest_rejected_total",
            "Messages or points rejected, by reason (all are dead-lettered).",
            &[("reason", reason)],
        )
    }

    pub fn alert(&self, severity: &str, state: &str) -> Arc<Counter> {
        self.registry.counter(
            "arng_ingest_alerts_total",
            "Alerts raised and cleared by the rules, by severity.",
            &[("severity", severity), ("state", state)],
        )
    }

    pub fn alerts_active(&self, severity: &str) -> Arc<Gauge> {
        self.registry.gauge(
            "arng_ingest_alerts_active",
            "Alerts currently raised, by severity.",
            &[("severity", severity)],
        )
    }

    pub fn write_error(&self, kind: &str) -> Arc<Counter> {
        self.registry.counter(
            "arng_ingest_write_errors_total",
            "Failed InfluxDB writes, by kind.",
            &[("kind", kind)],
        )
    }
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
pub async fn run(
    cfg: IngestConfig,
    metrics: IngestMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), IngestError> {
    let spool = spool::Spool::open(&cfg.spool_dir, cfg.spool_max_bytes)?;
    if !spool.is_empty() {
        info!(files = spool.files(), bytes = spool.used_bytes(), dir = %cfg.spool_dir.display(), "spooled batches from a previous run will be written first");
    }
    let status_topic = Topic::Status {
        client: "ingest".into(),
    }
    .to_string();
    let mut options = crate::mqtt::options(&cfg.mqtt, &cfg.client_id);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_last_will(LastWill::new(
        &status_topic,
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    // Flow control (see the benchmark that found a deadlock here): the MQTT task must
    // never wait on the writer, because the writer's acknowledgements and alert
    // publishes only leave through this event loop; if the MQTT task stopped polling
    // while the writer waited for room in the request channel, both would stall. So the
    // channel to the writer is unbounded, and held under a high-water mark instead:
    // above it the MQTT task pauses briefly per message (a timed pause that keeps
    // polling, never a wait on the writer). The broker's in-flight window does not
    // bound it by itself: Mosquitto 2.0.11 was seen sending ~20,000 unacknowledged
    // messages to this MQTT 3.1.1 session.
    let (client, mut eventloop) = crate::mqtt::client(options, 20_000);
    let (tx, rx) = mpsc::unbounded_channel::<Inbound>();
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let high_water = cfg.batch_size.max(cfg.ack_window) * 20;

    let influx = InfluxClient::with_timeout(&cfg.influx, cfg.write_timeout);
    let writer = writer::Writer::new(&cfg, influx, client.clone(), spool, metrics.clone());
    let mut reader = reader::Reader::new(
        cfg.read_policy,
        &metrics.registry,
        client.clone(),
        &cfg.client_id,
    );
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acks_unsent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writer_task =
        tokio::spawn(writer.run(rx, pending.clone(), stopping.clone(), acks_unsent.clone()));

    let filters = filters(cfg.share_group.as_deref());
    let mut tx = Some(tx);
    let mut backoff = Duration::from_millis(100);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut shutting_down = false;
    let mut published_file_thresholds = false;
    let mut subacks_pending = 0usize;
    loop {
        tokio::select! {
            // Shutdown: stop handing new messages to the writer (they stay
            // unacknowledged and the broker redelivers them later), let it flush.
            _ = &mut shutdown, if !shutting_down => {
                info!("shutting down: flushing and acknowledging what was received");
                shutting_down = true;
                stopping.store(true, std::sync::atomic::Ordering::Relaxed);
                tx = None;
            }
            // The writer is done (flushed): acknowledgements are queued on the client.
            res = &mut writer_task => {
                if let Err(e) = &res {
                    error!(error = %e, "writer task failed");
                }
                let _ = client.disconnect().await;
                // Drive the event loop until the queued acks and DISCONNECT are sent.
                let drain = async {
                    loop {
                        match eventloop.poll().await {
                            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                            _ => {}
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
                return match res {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(IngestError::Writer(e.to_string())),
                };
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    metrics.mqtt_connected.set(1.0);
                    info!(session_present = ack.session_present, client_id = %cfg.client_id, "connected to the broker");
                    subacks_pending = filters.len() + usize::from(cfg.broker_stats);
                    for f in &filters {
                        if let Err(e) = client.subscribe(f.as_str(), QoS::AtLeastOnce).await {
                            error!(filter = %f, error = %e, "cannot subscribe");
                        }
                    }
                    // Not shared with the group: every member stores the same values at
                    // the same second, so they overwrite each other in InfluxDB.
                    if cfg.broker_stats {
                        if let Err(e) = client.subscribe(crate::supervision::SYS_FILTER, QoS::AtMostOnce).await {
                            error!(filter = crate::supervision::SYS_FILTER, error = %e, "cannot subscribe");
                        }
                    }
                    let _ = client.publish(&status_topic, QoS::AtLeastOnce, true, "online").await;
                    if let (Some(t), false) = (&cfg.thresholds_file, published_file_thresholds) {
                        published_file_thresholds = true;
                        let _ = client.publish(topic::THRESHOLDS_TOPIC, QoS::AtLeastOnce, true, t.to_json()).await;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    metrics.received.inc();
                    let Some(tx) = &tx else { continue };
                    // Counted before it is sent: the writer decrements on receipt, and
                    // must never see the count below zero.
                    let queued = pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    // Everything goes through the writer, even messages with nothing
                    // to store, so acknowledgements leave in the order of arrival.
                    let inbound = classify(&p, &mut reader);
                    reader.dead_letter(&inbound);
                    if tx.send(inbound).is_err() {
                        pending.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        warn!("writer stopped; message left unacknowledged");
                    }
                    // Over the high-water mark, slow down reading the socket (never
                    // waiting on the writer) -- but only while no acknowledgement
                    // waits to be sent: a pause stops the event loop, acks included,
                    // and the writer's progress is what lowers the mark.
                    if queued > high_water && acks_unsent.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    if s.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                        error!(?s, "the broker refused a subscription (check the account's ACL)");
                    }
                    subacks_pending = subacks_pending.saturating_sub(1);
                    if subacks_pending == 0 {
                        // From here on nothing published is missed, even on a fresh
                        // broker (scripts and tests wait for this line).
                        info!("subscribed: receiving readings");
                    }
                }
                Ok(Event::Outgoing(Outgoing::PubAck(_))) => {
                    // Saturating: acks queued before a reconnect may never be sent.
                    let _ = acks_unsent.fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |n| Some(n.saturating_sub(1)),
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.mqtt_connected.set(0.0);
                    if shutting_down {
                        // Nothing more can be acknowledged; the broker will redeliver.
                        debug!(error = %e, "connection lost while shutting down");
                    }
                    let why = crate::mqtt::tls_failure(&e).unwrap_or_else(|| e.to_string());
                    warn!(error = %why, retry_in = ?backoff, "broker connection lost; reconnecting");
                    tokio::time::sleep(writer::jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            },
        }
    }
}

/// A copy of `p` with only what an acknowledgement needs (QoS and packet id), so
/// the writer does not hold payloads in memory.
fn ack_handle(p: &Publish) -> Option<Publish> {
    (p.qos != QoS::AtMostOnce).then(|| {
        let mut a = Publish::new("", p.qos, Vec::new());
        a.pkid = p.pkid;
        a
    })
}

/// Parses one MQTT message into what the writer must do with it; `reader` reads the
/// payloads under ingest's policy and counts the forms it normalised.
pub fn classify(p: &Publish, reader: &mut reader::Reader) -> Inbound {
    let ack = ack_handle(p);
    let topic_str = p.topic.clone();
    // Broker statistics are not part of the entrepot scheme: kept when useful,
    // skipped otherwise, never dead-lettered.
    if topic_str.starts_with("$SYS/") {
        return match crate::supervision::broker_stat(&topic_str, &p.payload) {
            Some((field, value)) => Inbound::BrokerStat {
                field,
                value,
                at: chrono::Utc::now(),
            },
            None => Inbound::Skip(ack),
        };
    }
    let invalid_field =
        |reason: &'static str, field: Option<String>, error: String, ack| Inbound::Invalid {
            topic: topic_str.clone(),
            payload: p.payload.to_vec(),
            reason,
            field,
            error,
            ack,
        };
    let invalid = |reason, error, ack| invalid_field(reason, None, error, ack);
    let refused = |e: crate::domain::PayloadError, ack| {
        invalid_field(e.reason(), e.field().map(str::to_owned), e.to_string(), ack)
    };
    let parsed = match Topic::parse(&topic_str) {
        Ok(t) => t,
        Err(e) => return invalid(e.reason(), e.to_string(), ack),
    };
    match parsed {
        Topic::Reading { zone, sensor } => {
            match reader.reading(&topic_str, &zone, &sensor, &p.payload) {
                Ok(r) => Inbound::Reading(r, ack),
                Err(e) => refused(e, ack),
            }
        }
        Topic::Heartbeat { zone } => match reader.heartbeat(&topic_str, &zone, &p.payload) {
            Ok(h) => Inbound::Heartbeat(h, ack),
            Err(e) => refused(e, ack),
        },
        Topic::Alert { ref zone } | Topic::SensorAlert { ref zone } => {
            match reader.alert(zone, &p.payload) {
                // The topic proves who published (mosquitto-conf/acl): a source it
                // does not allow is a forgery (issue 15).
                Ok(a) if !a.source.allowed_on(&parsed) => invalid_field(
                    "source_mismatch",
                    Some("source".to_owned()),
                    format!(
                        "an alert with source {:?} may not be published on {topic_str}",
                        a.source.as_str()
                    ),
                    ack,
                ),
                Ok(a) => Inbound::Alert(a, ack),
                Err(e) => refused(e, ack),
            }
        }
        Topic::Thresholds => match Thresholds::from_json(&p.payload) {
            Ok(t) => Inbound::Thresholds(t, ack),
            Err(e) => invalid_field(
                "invalid_thresholds",
                Some(e.field.clone()),
                e.to_string(),
                ack,
            ),
        },
        Topic::Status { .. } | Topic::DeadLetter { .. } => Inbound::Skip(ack),
    }
}
