//! The writer task: rules, batching, InfluxDB writes, spooling and acknowledgements.
//!
//! Invariant: an MQTT message is acknowledged only after every point it produced is
//! in InfluxDB or in the disk spool. Acknowledgements leave in arrival order (MQTT
//! 3.1.1 §4.6): batches are settled strictly in the order they were closed.
//!
//! Pipelining: while InfluxDB is healthy, up to `--writes-in-flight` batches are being
//! written at once (a write takes 10-60 ms, during which the next batch fills and is
//! encoded). Each write runs in its own task and reports back; a batch is settled
//! (its messages acknowledged) only when it and every batch before it are. A batch
//! whose first attempt failed is settled through the slow path below, in order; the
//! batches behind it wait, written or not, and are acknowledged after it.
//!
//! Write policy, per batch:
//! - success: acknowledge;
//! - 413 or a 4xx data error: split the batch in halves until the offending lines are
//!   isolated; those become dead letters, the rest is written;
//! - timeout, connection error, 429, 5xx (and auth/bucket errors, which an operator
//!   fixes): retry twice with exponential backoff and jitter (or the server's
//!   Retry-After), then spool to disk and acknowledge; while InfluxDB is unhealthy,
//!   new batches go straight to the spool and a drain loop retries the oldest
//!   spooled batch with growing delays;
//! - spool full: log loudly, count, keep the batch unacknowledged and retry until it
//!   is written (the broker holds the rest of the stream meanwhile).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use rumqttc::{AsyncClient, ClientError, Publish, QoS};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::pipeline::Pipeline;
use super::spool::{Spool, SpoolError};
use super::{Inbound, IngestConfig, IngestError, IngestMetrics};
use crate::domain::line_protocol::Point;
use crate::domain::rules::RuleEngine;
use crate::domain::schema::{
    broker_point, dead_letter_point, heartbeat_point, ingest_point, reading_point, IngestStats,
};
use crate::domain::{Alert, AlertKind, AlertSource, Thresholds, Topic};
use crate::store::{InfluxClient, StoreError};
use crate::supervision::{LagWindow, SUPERVISION_INTERVAL};

/// Attempts on the live path before a batch is spooled.
const LIVE_ATTEMPTS: u32 = 3;
/// Longest wait between two attempts to drain the spool.
const MAX_DRAIN_DELAY: Duration = Duration::from_secs(10);
/// At most one log line per rejection reason in this interval.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// On shutdown with a full spool, how long to keep trying before leaving the batch
/// unacknowledged for the broker to redeliver.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// On shutdown, how long to wait for room in the MQTT client's request queue before
/// leaving the remaining acknowledgements to redelivery.
const SHUTDOWN_ACK_WAIT: Duration = Duration::from_secs(2);
/// How soon acknowledgements that found the client's queue full are retried.
const ACK_RETRY: Duration = Duration::from_millis(2);

/// `d` scaled by a random factor in [0.5, 1.5), so that many clients retrying after
/// the same outage do not all come back at the same instant.
pub fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_nanos())
            .unwrap_or(0),
    );
    let frac = (h.finish() % 10_000) as f64 / 10_000.0;
    d.mul_f64(0.5 + frac)
}

#[derive(Default)]
struct Batch {
    body: String,
    points: usize,
    acks: Vec<Publish>,
    /// Timestamps (ms) of the readings in the batch, for the lag metric.
    reading_ms: Vec<i64>,
    opened: Option<tokio::time::Instant>,
}

enum Stored {
    Written,
    Spooled,
    /// Neither written nor spooled: kept unacknowledged and retried.
    Held,
}

pub struct Writer {
    influx: InfluxClient,
    client: AsyncClient,
    spool: Spool,
    metrics: IngestMetrics,
    engine: RuleEngine,
    thresholds: Thresholds,
    batch: Batch,
    /// Closed batches, oldest first, not yet acknowledged, with the outcome of
    /// their first write: when it ended (ms since the epoch) or why it failed.
    in_flight: Pipeline<Batch, Result<i64, StoreError>>,
    max_writes: usize,
    done_tx: mpsc::UnboundedSender<(u64, Result<i64, StoreError>)>,
    done_rx: mpsc::UnboundedReceiver<(u64, Result<i64, StoreError>)>,
    batch_size: usize,
    ack_window: usize,
    batch_timeout: Duration,
    tick: Duration,
    instance: String,
    healthy: bool,
    dead_letter_ms: i64,
    drain_delay: Duration,
    next_drain: tokio::time::Instant,
    rejection_logs: HashMap<&'static str, (Instant, u64)>,
    shutting_down: bool,
    /// Set by the MQTT task as soon as shutdown begins, while the writer still
    /// works through what it was handed.
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Acknowledgements not yet handed to the MQTT client, oldest first.
    ack_backlog: std::collections::VecDeque<Publish>,
    /// Acknowledgements decided but not yet sent on the wire (the MQTT task counts
    /// them down as the event loop sends them): while there are any, the MQTT task
    /// must keep polling, never pause.
    acks_unsent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Shutting down with no room for acknowledgements: the rest are dropped.
    acks_abandoned: bool,
    /// Lags of the readings written since the last `ingest` statistics point.
    lag_window: LagWindow,
    readings_in_window: u64,
    next_stats: tokio::time::Instant,
}

impl Writer {
    pub fn new(
        cfg: &IngestConfig,
        influx: InfluxClient,
        client: AsyncClient,
        spool: Spool,
        metrics: IngestMetrics,
    ) -> Writer {
        metrics.spool_bytes.set(spool.used_bytes() as f64);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Writer {
            influx,
            client,
            spool,
            metrics,
            engine: RuleEngine::new(),
            thresholds: cfg.thresholds_file.clone().unwrap_or_default(),
            batch: Batch::default(),
            in_flight: Pipeline::default(),
            max_writes: cfg.writes_in_flight.max(1),
            done_tx,
            done_rx,
            batch_size: cfg.batch_size.max(1),
            ack_window: cfg.ack_window.max(1),
            batch_timeout: cfg.batch_timeout,
            tick: cfg.tick,
            instance: cfg.client_id.clone(),
            healthy: true,
            dead_letter_ms: 0,
            drain_delay: Duration::from_millis(100),
            next_drain: tokio::time::Instant::now(),
            rejection_logs: HashMap::new(),
            shutting_down: false,
            stopping: Default::default(),
            ack_backlog: Default::default(),
            acks_unsent: Default::default(),
            acks_abandoned: false,
            lag_window: LagWindow::default(),
            readings_in_window: 0,
            next_stats: tokio::time::Instant::now() + SUPERVISION_INTERVAL,
        }
    }

    /// Consumes messages until the channel closes (shutdown), then flushes.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Inbound>,
        pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
        acks_unsent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> Result<(), IngestError> {
        self.stopping = stopping;
        self.acks_unsent = acks_unsent;
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let deadline = self.batch.opened.map(|t| t + self.batch_timeout);
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => {
                        pending.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        self.accept(m).await;
                        // Half the broker's in-flight window (the default) lets it keep
                        // sending the other half while this batch is written.
                        if self.batch.points >= self.batch_size || self.batch.acks.len() >= self.ack_window {
                            self.flush().await;
                        }
                    }
                    None => break,
                },
                // A partly filled batch waits at most batch_timeout (bounds the lag).
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    self.flush().await;
                }
                // A pipelined write ended: settle what can be, in order.
                Some((seq, outcome)) = self.done_rx.recv(), if self.in_flight.running() > 0 => {
                    self.on_write_done(seq, outcome).await;
                }
                // Acknowledgements that found no room in the client's queue.
                _ = tokio::time::sleep(ACK_RETRY), if !self.ack_backlog.is_empty() => {
                    self.pump_acks().await;
                }
                _ = tick.tick() => self.on_tick().await,
                _ = tokio::time::sleep_until(self.next_drain), if !self.spool.is_empty() => {
                    self.drain_one().await;
                }
            }
        }
        self.shutting_down = true;
        self.flush().await;
        self.settle_all().await;
        while !self.ack_backlog.is_empty() {
            self.pump_acks().await;
            if !self.ack_backlog.is_empty() {
                tokio::time::sleep(ACK_RETRY).await;
            }
        }
        Ok(())
    }

    async fn accept(&mut self, m: Inbound) {
        let now = Utc::now();
        match m {
            Inbound::Reading(mut r, ack) => {
                r.apply_thresholds(&self.thresholds);
                let alerts = self.engine.on_reading(&self.thresholds, &r, now);
                self.emit_alerts(alerts).await;
                self.add_point(&reading_point(&r));
                self.batch.reading_ms.push(r.timestamp.timestamp_millis());
                self.add_ack(ack);
            }
            Inbound::Heartbeat(h, ack) => {
                let alerts = self.engine.on_heartbeat(&self.thresholds, &h.zone, now);
                self.emit_alerts(alerts).await;
                self.add_point(&heartbeat_point(&h));
                self.add_ack(ack);
            }
            Inbound::Alert(a, ack) => {
                // Alerts from sensors and the API are stored; our own come back to us
                // through the subscription and are already in the batch.
                if a.source != AlertSource::Ingest {
                    self.add_point(&a.point());
                }
                self.add_ack(ack);
            }
            Inbound::Thresholds(t, ack) => {
                if t != self.thresholds {
                    info!(thresholds = %t.to_json(), "applying new thresholds");
                    self.thresholds = t;
                }
                self.add_ack(ack);
            }
            Inbound::Skip(ack) => self.add_ack(ack),
            Inbound::BrokerStat { field, value, at } => {
                self.add_point(&broker_point(field, value, at));
            }
            Inbound::Invalid {
                topic,
                payload,
                reason,
                error,
                ack,
                ..
            } => {
                self.reject(reason, &topic, &payload, &error);
                self.add_ack(ack);
            }
        }
        self.metrics.buffered_points.set(self.batch.points as f64);
    }

    /// Counts, logs (rate-limited) and dead-letters a rejected message.
    fn reject(&mut self, reason: &'static str, topic: &str, payload: &[u8], error: &str) {
        self.metrics.rejected(reason).inc();
        let now = Instant::now();
        let entry = self
            .rejection_logs
            .entry(reason)
            .or_insert((now - REJECTION_LOG_INTERVAL * 2, 0));
        if now.duration_since(entry.0) >= REJECTION_LOG_INTERVAL {
            warn!(
                reason,
                topic,
                error,
                suppressed_since_last = entry.1,
                "rejected message (dead-lettered)"
            );
            *entry = (now, 0);
        } else {
            entry.1 += 1;
        }
        let point = self.dead_letter(reason, topic, payload, error);
        self.add_point(&point);
    }

    fn dead_letter(&mut self, reason: &str, topic: &str, payload: &[u8], error: &str) -> Point {
        // A unique, increasing millisecond per process: two dead letters of the same
        // reason never share a timestamp, so neither overwrites the other.
        self.dead_letter_ms = (self.dead_letter_ms + 1).max(Utc::now().timestamp_millis());
        dead_letter_point(
            reason,
            &self.instance,
            topic,
            payload,
            error,
            self.dead_letter_ms,
        )
    }

    fn add_point(&mut self, p: &Point) {
        if let Err(e) = p.encode_into(&mut self.batch.body) {
            // Domain types only build encodable points; this is a bug, not input.
            error!(error = %e, "point cannot be encoded; dropped");
            self.metrics.rejected("encode").inc();
            return;
        }
        self.batch.points += 1;
        self.batch
            .opened
            .get_or_insert_with(tokio::time::Instant::now);
    }

    fn add_ack(&mut self, ack: Option<Publish>) {
        if let Some(a) = ack {
            self.batch.acks.push(a);
            self.batch
                .opened
                .get_or_insert_with(tokio::time::Instant::now);
        }
    }

    async fn emit_alerts(&mut self, mut alerts: Vec<Alert>) {
        // The supervision probe publishes only during a check: its silence is
        // expected, not an alarm (docs/supervision.md).
        alerts.retain(|a| {
            !(a.metric == AlertKind::Silence
                && a.sensor
                    .as_ref()
                    .is_some_and(|s| crate::supervision::is_probe(s.as_str())))
        });
        for a in alerts {
            info!(zone = %a.zone, sensor = ?a.sensor.as_ref().map(|s| s.as_str()), metric = a.metric.as_str(),
                  severity = %a.severity, state = a.state.as_str(), value = ?a.value, "alert");
            self.metrics
                .alert(a.severity.as_str(), a.state.as_str())
                .inc();
            let topic = Topic::Alert {
                zone: a.zone.clone(),
            }
            .to_string();
            if let Err(e) = self
                .client
                .publish(topic, QoS::AtLeastOnce, false, a.to_json())
                .await
            {
                warn!(error = %e, "cannot publish alert on MQTT (it is still written to InfluxDB)");
            }
            self.add_point(&a.point());
        }
    }

    async fn on_tick(&mut self) {
        let alerts = self.engine.tick(&self.thresholds, Utc::now());
        self.emit_alerts(alerts).await;
        let active = self.engine.active_except(crate::supervision::is_probe);
        self.metrics
            .alerts_active("warning")
            .set(active.warning as f64);
        self.metrics
            .alerts_active("critical")
            .set(active.critical as f64);
        self.metrics.spool_bytes.set(self.spool.used_bytes() as f64);
        if tokio::time::Instant::now() >= self.next_stats {
            self.next_stats = tokio::time::Instant::now() + SUPERVISION_INTERVAL;
            self.add_stats_point();
        }
    }

    /// Ingest's own statistics for supervision (`ingest` measurement): what `arng
    /// serve` computes the latency and backlog indicators from.
    fn add_stats_point(&mut self) {
        let lag = self.lag_window.take();
        let stats = IngestStats {
            readings: std::mem::take(&mut self.readings_in_window),
            lag_p50_s: lag.map(|l| l.p50_s),
            lag_p99_s: lag.map(|l| l.p99_s),
            lag_max_s: lag.map(|l| l.max_s),
            lag_samples: lag.map(|l| l.count),
            spool_bytes: self.spool.used_bytes(),
            received: self.metrics.received.get(),
        };
        let point = ingest_point(&self.instance, &stats, Utc::now());
        self.add_point(&point);
    }

    /// Hands acknowledgements to the MQTT client, in order, without ever blocking
    /// the writer: those the client's request queue has no room for wait in
    /// `ack_backlog` and are retried every few milliseconds. Under a flood the event
    /// loop serves its requests far less often than it reads (rumqttc reads up to 10
    /// packets per turn and sends one request), so a writer that waited for room here
    /// stopped writing until the flood ended: throughput collapsed to a few hundred
    /// readings/s (found by `bench/ingest.sh` at 40,000/s offered).
    async fn ack_all(&mut self, acks: Vec<Publish>) {
        self.acks_unsent
            .fetch_add(acks.len(), std::sync::atomic::Ordering::Relaxed);
        self.ack_backlog.extend(acks);
        self.pump_acks().await;
    }

    /// Moves acknowledgements from the backlog to the MQTT client while it has room.
    /// While shutting down, waits a little for room (the event loop is still being
    /// driven); if none comes (broker gone), drops the rest: their points are stored,
    /// so the broker redelivers them later and they are overwritten, not duplicated.
    async fn pump_acks(&mut self) {
        while let Some(a) = self.ack_backlog.front() {
            match self.client.try_ack(a) {
                Ok(()) => {}
                Err(ClientError::TryRequest(_)) if self.stopping() => {
                    // Waited once in vain: the broker is gone, do not wait per batch.
                    let waited = if self.acks_abandoned {
                        false
                    } else {
                        let w = tokio::time::timeout(SHUTDOWN_ACK_WAIT, self.client.ack(a)).await;
                        matches!(w, Ok(Ok(())))
                    };
                    if !waited {
                        self.acks_abandoned = true;
                        let dropped = self.ack_backlog.len();
                        self.ack_backlog.clear();
                        warn!(
                            dropped,
                            "shutting down with the broker unreachable: acknowledgements dropped; \
                             the broker will redeliver those messages (already stored, so overwritten)"
                        );
                        return;
                    }
                }
                // No room: the event loop is behind; try again shortly.
                Err(ClientError::TryRequest(_)) => return,
                Err(e) => {
                    warn!(error = %e, "cannot queue an acknowledgement; the broker will redeliver");
                }
            }
            self.ack_backlog.pop_front();
        }
    }

    /// Closes the current batch: starts its write (pipelined while InfluxDB is
    /// healthy) or settles it at once through the slow path.
    async fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        self.metrics.buffered_points.set(0.0);
        if batch.points == 0 {
            // Nothing to write, but its acknowledgements still wait for the batches
            // before it.
            let now = Utc::now().timestamp_millis();
            self.in_flight.push_done(batch, Ok(now));
            self.settle_ready().await;
            return;
        }
        self.metrics.batch_points.observe(batch.points as f64);
        if !self.healthy || self.shutting_down {
            // Outage or shutdown: one write at a time, with retries and the spool.
            self.settle_all().await;
            self.settle_slow(batch).await;
            return;
        }
        while self.in_flight.running() >= self.max_writes {
            self.wait_one_write().await;
        }
        let body = batch.body.clone();
        let points = batch.points as u64;
        let seq = self.in_flight.push_running(batch);
        let influx = self.influx.clone();
        let metrics = self.metrics.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let begun = Instant::now();
            let res = influx.write_lines(&body).await;
            let res = match res {
                Ok(()) => {
                    metrics.write_seconds.observe(begun.elapsed().as_secs_f64());
                    metrics.points_written.add(points);
                    Ok(Utc::now().timestamp_millis())
                }
                Err(e) => {
                    metrics.write_error(e.kind()).inc();
                    Err(e)
                }
            };
            // The writer outlives its write tasks; if it is gone, nothing to report.
            let _ = done.send((seq, res));
        });
    }

    /// Waits for one running write to end and settles what can be.
    async fn wait_one_write(&mut self) {
        match self.done_rx.recv().await {
            Some((seq, outcome)) => self.on_write_done(seq, outcome).await,
            // Unreachable: the writer holds a sender itself.
            None => error!("write tasks cannot report back; their batches stay unacknowledged"),
        }
    }

    async fn on_write_done(&mut self, seq: u64, outcome: Result<i64, StoreError>) {
        self.in_flight.complete(seq, outcome);
        self.settle_ready().await;
    }

    /// Settles closed batches from the oldest while their write has ended.
    async fn settle_ready(&mut self) {
        while let Some((batch, outcome)) = self.in_flight.pop_ready() {
            match outcome {
                Ok(written_ms) => self.written(batch, written_ms).await,
                Err(e) => {
                    // The first attempt failed: retries, splitting, the spool.
                    self.metrics.write_retries.inc();
                    warn!(error = %e, "InfluxDB write failed; retrying");
                    self.settle_slow(batch).await;
                }
            }
        }
    }

    /// Waits for every running write and settles every closed batch.
    async fn settle_all(&mut self) {
        while self.in_flight.running() > 0 {
            self.wait_one_write().await;
        }
        self.settle_ready().await;
    }

    /// Accounts for a written batch and acknowledges its messages.
    async fn written(&mut self, batch: Batch, written_ms: i64) {
        for ms in &batch.reading_ms {
            let lag = (written_ms - ms).max(0) as f64 / 1000.0;
            self.metrics.lag_seconds.observe(lag);
            self.lag_window.push(lag);
        }
        self.readings_in_window += batch.reading_ms.len() as u64;
        self.metrics
            .readings_written
            .add(batch.reading_ms.len() as u64);
        self.set_healthy(true);
        self.ack_all(batch.acks).await;
    }

    fn stopping(&self) -> bool {
        self.shutting_down || self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes (or spools) a batch with retries, then acknowledges its messages.
    async fn settle_slow(&mut self, batch: Batch) {
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            match self.store(&batch.body).await {
                Stored::Written => {
                    let now_ms = Utc::now().timestamp_millis();
                    self.written(batch, now_ms).await;
                    return;
                }
                Stored::Spooled => {
                    self.ack_all(batch.acks).await;
                    return;
                }
                Stored::Held => {
                    if self.shutting_down && started.elapsed() > SHUTDOWN_GRACE {
                        error!(
                            points = batch.points,
                            "shutting down with InfluxDB unavailable and the spool full: \
                               {} messages left unacknowledged for the broker to redeliver",
                            batch.acks.len()
                        );
                        return;
                    }
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(MAX_DRAIN_DELAY);
                    // Try the database directly; the spool may also have drained.
                    if self.write_split(&batch.body).await.is_ok() {
                        let now_ms = Utc::now().timestamp_millis();
                        self.written(batch, now_ms).await;
                        return;
                    }
                }
            }
        }
    }

    fn set_healthy(&mut self, healthy: bool) {
        if healthy != self.healthy {
            if healthy {
                info!("InfluxDB writes succeed again");
            } else {
                warn!(spool = %self.spool_dir_hint(), "InfluxDB unavailable: spooling batches to disk");
            }
        }
        self.healthy = healthy;
        self.metrics
            .influx_healthy
            .set(if healthy { 1.0 } else { 0.0 });
    }

    fn spool_dir_hint(&self) -> String {
        format!(
            "{} files, {} bytes",
            self.spool.files(),
            self.spool.used_bytes()
        )
    }

    async fn store(&mut self, body: &str) -> Stored {
        if self.healthy {
            let mut delay = Duration::from_millis(100);
            for attempt in 1..=LIVE_ATTEMPTS {
                match self.write_split(body).await {
                    Ok(()) => return Stored::Written,
                    Err(e) if attempt < LIVE_ATTEMPTS => {
                        self.metrics.write_retries.inc();
                        let wait = match &e {
                            StoreError::Unavailable {
                                retry_after: Some(d),
                                ..
                            } => (*d).min(Duration::from_secs(5)),
                            _ => jitter(delay),
                        };
                        warn!(error = %e, attempt, retry_in = ?wait, "InfluxDB write failed; retrying");
                        tokio::time::sleep(wait).await;
                        delay *= 2;
                    }
                    Err(e) => warn!(error = %e, "InfluxDB write failed again; spooling the batch"),
                }
            }
            self.set_healthy(false);
        }
        match self.spool.push(body) {
            Ok(()) => {
                self.metrics.spooled_batches.inc();
                self.metrics.spool_bytes.set(self.spool.used_bytes() as f64);
                Stored::Spooled
            }
            Err(e @ SpoolError::Full { .. }) => {
                self.metrics.spool_full.inc();
                error!(error = %e, "SPOOL FULL: InfluxDB is down and the disk spool limit is reached; \
                       messages are no longer acknowledged and wait in the broker's queue \
                       (raise --spool-max-bytes or restore InfluxDB)");
                Stored::Held
            }
            Err(e) => {
                self.metrics.spool_full.inc();
                error!(error = %e, "cannot spool the batch to disk; it stays unacknowledged");
                Stored::Held
            }
        }
    }

    /// Writes `body`, splitting it on 413 and on data errors to isolate and
    /// dead-letter the offending lines. Errs only when the server or the network is
    /// the problem (the whole batch may be retried: rewriting points is idempotent).
    async fn write_split(&mut self, body: &str) -> Result<(), StoreError> {
        let lines: Vec<&str> = body.lines().filter(|l| !l.is_empty()).collect();
        let mut stack = vec![(0, lines.len())];
        while let Some((start, end)) = stack.pop() {
            let chunk = lines[start..end].join("\n") + "\n";
            let begun = Instant::now();
            match self.influx.write_lines(&chunk).await {
                Ok(()) => {
                    self.metrics
                        .write_seconds
                        .observe(begun.elapsed().as_secs_f64());
                    self.metrics.points_written.add((end - start) as u64);
                }
                Err(e @ (StoreError::TooLarge(_) | StoreError::Rejected { .. })) => {
                    self.metrics.write_error(e.kind()).inc();
                    if end - start > 1 {
                        let mid = start + (end - start) / 2;
                        // Second half pushed first: the first half is written first.
                        stack.push((mid, end));
                        stack.push((start, mid));
                    } else {
                        let reason = if matches!(e, StoreError::TooLarge(_)) {
                            "influx_too_large"
                        } else {
                            "influx_rejected"
                        };
                        self.metrics.rejected(reason).inc();
                        warn!(error = %e, line = %lines[start].chars().take(200).collect::<String>(), "InfluxDB rejected a point; dead-lettered");
                        let dl =
                            self.dead_letter(reason, "", lines[start].as_bytes(), &e.to_string());
                        if let Err(e2) = self.influx.write_points(&[dl]).await {
                            error!(error = %e2, "cannot write the dead letter either; the point is lost");
                        }
                    }
                }
                Err(e) => {
                    self.metrics.write_error(e.kind()).inc();
                    return Err(e);
                }
            }
        }
        self.set_healthy(true);
        Ok(())
    }

    async fn drain_one(&mut self) {
        let (path, body) = match self.spool.oldest() {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(e) => {
                error!(error = %e, "cannot read the spool");
                self.next_drain = tokio::time::Instant::now() + MAX_DRAIN_DELAY;
                return;
            }
        };
        match self.write_split(&body).await {
            Ok(()) => {
                // The spool keeps only line protocol: count its readings from it, so
                // `readings_written` and the `ingest` statistics include them.
                let readings = crate::domain::schema::count_reading_lines(&body);
                self.metrics.readings_written.add(readings);
                self.readings_in_window += readings;
                if let Err(e) = self.spool.remove(&path) {
                    error!(error = %e, "cannot remove a drained spool file (it will be written again: harmless)");
                }
                self.metrics.spool_bytes.set(self.spool.used_bytes() as f64);
                self.drain_delay = Duration::from_millis(100);
                self.next_drain = tokio::time::Instant::now();
                if self.spool.is_empty() {
                    info!("spool drained: every buffered batch is in InfluxDB");
                }
            }
            Err(e) => {
                self.set_healthy(false);
                self.drain_delay = (self.drain_delay * 2).min(MAX_DRAIN_DELAY);
                let wait = jitter(self.drain_delay);
                info!(error = %e, retry_in = ?wait, pending = %self.spool_dir_hint(), "InfluxDB still unavailable");
                self.next_drain = tokio::time::Instant::now() + wait;
            }
        }
    }
}
