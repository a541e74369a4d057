//! The writer task: rules and alerts, batching, and settlement in order.
//!
//! Invariant: a message is released to the link (which acknowledges it) only after
//! every point it produced is in InfluxDB or in the disk spool. Releases go out in
//! arrival order (MQTT 3.1.1 §4.6): batches are settled strictly in the order they
//! were closed ([`Pipeline`]).
//!
//! Pipelining: while InfluxDB is not known to be down, up to `--writes-in-flight`
//! batches are being written at once (a write takes 10-60 ms, during which the next
//! batch fills and is encoded). Each write runs in its own task and reports back; a
//! batch is settled only when it and every batch before it are. A batch whose first
//! attempt failed is settled through [`Storage::store`] (retries, splitting, the
//! spool), in order; the batches behind it wait, written or not. A batch with no
//! point (only messages with nothing to store) settles nothing about InfluxDB: its
//! messages are released in their turn and health is left as it was.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::classify::Inbound;
use super::outbox::{Delivery, Outbox};
use super::pipeline::Pipeline;
use super::rule_state::{RuleSnapshot, RuleState};
use super::storage::{DrainOutcome, Health, LineSink, Storage, Stored};
use super::{IngestConfig, IngestError, IngestMetrics};
use crate::backoff::jitter;
use crate::domain::line_protocol::Point;
use crate::domain::rules::RuleEngine;
use crate::domain::schema::{
    broker_point, heartbeat_point, ingest_point, reading_point, IngestStats,
};
use crate::domain::{Alert, AlertKind, AlertSource, Thresholds, Topic};
use crate::store::StoreError;
use crate::supervision::{LagWindow, SUPERVISION_INTERVAL};

/// Longest wait between two attempts to store a held batch (spool full).
const MAX_HOLD_DELAY: Duration = Duration::from_secs(10);
/// At most one log line per rejection reason in this interval.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// On shutdown with a full spool, how long to keep trying before leaving the batch
/// unacknowledged for the broker to redeliver.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Batch {
    body: String,
    points: usize,
    deliveries: Vec<Delivery>,
    /// Timestamps (ms) of the readings in the batch, for the lag metric.
    reading_ms: Vec<i64>,
    opened: Option<tokio::time::Instant>,
    /// The rules' alert state once this batch's messages are processed, when it
    /// changed: saved before the batch's messages are acknowledged.
    rules: Option<RuleSnapshot>,
}

/// How the first write of a batch ended, when it did not fail.
#[derive(Debug, Clone, Copy)]
enum Written {
    /// Its points were written; when (ms since the epoch).
    At(i64),
    /// It had no point to write.
    Nothing,
}

type Outcome = Result<Written, StoreError>;

pub struct Writer<S> {
    storage: Storage<S>,
    outbox: Outbox,
    metrics: IngestMetrics,
    engine: RuleEngine,
    rule_state: RuleState,
    thresholds: Thresholds,
    batch: Batch,
    /// Closed batches, oldest first, not yet settled, with the outcome of their first
    /// write once it ended.
    in_flight: Pipeline<Batch, Outcome>,
    max_writes: usize,
    done_tx: mpsc::UnboundedSender<(u64, Outcome)>,
    done_rx: mpsc::UnboundedReceiver<(u64, Outcome)>,
    batch_size: usize,
    ack_window: usize,
    batch_timeout: Duration,
    tick: Duration,
    instance: String,
    rejection_logs: HashMap<&'static str, (Instant, u64)>,
    shutting_down: bool,
    /// Lags of the readings written since the last `ingest` statistics point.
    lag_window: LagWindow,
    readings_in_window: u64,
    next_stats: tokio::time::Instant,
}

impl<S: LineSink> Writer<S> {
    pub fn new(
        cfg: &IngestConfig,
        storage: Storage<S>,
        rule_state: RuleState,
        outbox: Outbox,
        metrics: IngestMetrics,
    ) -> Writer<S> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut engine = RuleEngine::new();
        rule_state.restore_into(&mut engine, Utc::now());
        Writer {
            storage,
            outbox,
            metrics,
            engine,
            rule_state,
            thresholds: cfg.thresholds_file.clone().unwrap_or_default(),
            batch: Batch::default(),
            in_flight: Pipeline::default(),
            max_writes: cfg.writes_in_flight.max(1),
            done_tx,
            done_rx,
            batch_size: cfg.batch_size.max(1),
            // A batch waiting for more messages than the link may hold would only
            // ever close on its timeout.
            ack_window: cfg.ack_window.clamp(1, (cfg.max_unacked / 2).max(1)),
            batch_timeout: cfg.batch_timeout,
            tick: cfg.tick,
            instance: cfg.client_id.clone(),
            rejection_logs: HashMap::new(),
            shutting_down: false,
            lag_window: LagWindow::default(),
            readings_in_window: 0,
            next_stats: tokio::time::Instant::now() + SUPERVISION_INTERVAL,
        }
    }

    /// Consumes messages until the link closes the channel (shutdown), then flushes
    /// and settles everything.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Vec<Inbound>>,
    ) -> Result<(), IngestError> {
        self.update_alert_gauges();
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let deadline = self.batch.opened.map(|t| t + self.batch_timeout);
            let drain_at = (!self.storage.spool().is_empty()).then(|| self.storage.next_drain());
            tokio::select! {
                msgs = rx.recv() => match msgs {
                    Some(msgs) => {
                        for m in msgs {
                            self.accept(m);
                            if self.batch.points >= self.batch_size
                                || self.batch.deliveries.len() >= self.ack_window
                            {
                                self.flush().await;
                            }
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
                _ = tick.tick() => self.on_tick(),
                _ = tokio::time::sleep_until(drain_at.unwrap_or_else(tokio::time::Instant::now)), if drain_at.is_some() => {
                    if let DrainOutcome::Written { readings } = self.storage.drain_one().await {
                        self.metrics.readings_written.add(readings);
                        self.readings_in_window += readings;
                    }
                }
            }
        }
        self.shutting_down = true;
        self.flush().await;
        // The last batch carries the final alert state, saved as it settles.
        self.settle_all().await;
        Ok(())
    }

    fn accept(&mut self, m: Inbound) {
        let now = Utc::now();
        match m {
            Inbound::Reading(mut r, delivery) => {
                r.apply_thresholds(&self.thresholds);
                let alerts = self.engine.on_reading(&self.thresholds, &r, now);
                self.emit_alerts(alerts);
                self.add_point(&reading_point(&r));
                self.batch.reading_ms.push(r.timestamp.timestamp_millis());
                self.add_delivery(delivery);
            }
            Inbound::Heartbeat(h, delivery) => {
                let alerts = self.engine.on_heartbeat(&self.thresholds, &h.zone, now);
                self.emit_alerts(alerts);
                self.add_point(&heartbeat_point(&h));
                self.add_delivery(delivery);
            }
            Inbound::Alert(a, delivery) => {
                // Alerts from sensors and the API are stored; our own come back to us
                // through the subscription and are already in the batch.
                if a.source != AlertSource::Ingest {
                    self.add_point(&a.point());
                }
                self.add_delivery(delivery);
            }
            Inbound::Thresholds(t, delivery) => {
                if t != self.thresholds {
                    info!(thresholds = %t.to_json(), "applying new thresholds");
                    self.thresholds = t;
                }
                self.add_delivery(delivery);
            }
            Inbound::Skip(delivery) => self.add_delivery(delivery),
            Inbound::BrokerStat {
                field,
                value,
                at,
                delivery,
            } => {
                self.add_point(&broker_point(field, value, at));
                self.add_delivery(delivery);
            }
            Inbound::Invalid {
                topic,
                payload,
                reason,
                error,
                delivery,
                ..
            } => {
                self.reject(reason, &topic, &payload, &error);
                self.add_delivery(delivery);
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
        let point = self.storage.dead_letter(reason, topic, payload, error);
        self.add_point(&point);
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

    fn add_delivery(&mut self, delivery: Delivery) {
        self.batch.deliveries.push(delivery);
        self.batch
            .opened
            .get_or_insert_with(tokio::time::Instant::now);
    }

    fn emit_alerts(&mut self, mut alerts: Vec<Alert>) {
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
            if let Err(e) =
                self.outbox
                    .publish(topic, rumqttc::QoS::AtLeastOnce, false, a.to_json())
            {
                warn!(error = %e, "cannot publish alert on MQTT (it is still written to InfluxDB)");
            }
            self.add_point(&a.point());
        }
    }

    fn on_tick(&mut self) {
        let alerts = self.engine.tick(&self.thresholds, Utc::now());
        // Silence alerts go out with the current batch, which also carries the
        // alert state they changed (taken when it closes).
        self.emit_alerts(alerts);
        self.update_alert_gauges();
        self.metrics
            .spool_bytes
            .set(self.storage.spool().used_bytes() as f64);
        if tokio::time::Instant::now() >= self.next_stats {
            self.next_stats = tokio::time::Instant::now() + SUPERVISION_INTERVAL;
            self.add_stats_point();
        }
    }

    fn update_alert_gauges(&self) {
        let active = self.engine.active_except(crate::supervision::is_probe);
        self.metrics
            .alerts_active("warning")
            .set(active.warning as f64);
        self.metrics
            .alerts_active("critical")
            .set(active.critical as f64);
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
            spool_bytes: self.storage.spool().used_bytes(),
            received: self.metrics.received.get(),
        };
        let point = ingest_point(&self.instance, &stats, Utc::now());
        self.add_point(&point);
    }

    /// Closes the current batch: starts its write (pipelined while InfluxDB is not
    /// known to be down) or settles it at once through the slow path.
    async fn flush(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        self.metrics.buffered_points.set(0.0);
        if let Some(rules) = self.rule_state.snapshot_if_changed(&self.engine) {
            batch.rules = Some(rules);
        }
        if batch.points == 0 {
            if batch.deliveries.is_empty() && batch.rules.is_none() {
                return;
            }
            // Nothing to write, but its messages still wait for the batches before it.
            self.in_flight.push_done(batch, Ok(Written::Nothing));
            self.settle_ready().await;
            return;
        }
        self.metrics.batch_points.observe(batch.points as f64);
        if self.storage.health() == Health::Down || self.shutting_down {
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
        let sink = self.storage.sink().clone();
        let metrics = self.metrics.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let begun = Instant::now();
            let res = match sink.write_lines(&body).await {
                Ok(()) => {
                    metrics.write_seconds.observe(begun.elapsed().as_secs_f64());
                    metrics.points_written.add(points);
                    Ok(Written::At(Utc::now().timestamp_millis()))
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

    async fn on_write_done(&mut self, seq: u64, outcome: Outcome) {
        self.in_flight.complete(seq, outcome);
        self.settle_ready().await;
    }

    /// Settles closed batches from the oldest while their write has ended.
    async fn settle_ready(&mut self) {
        while let Some((batch, outcome)) = self.in_flight.pop_ready() {
            match outcome {
                Ok(Written::At(ms)) => {
                    self.storage.written(batch.points);
                    self.settle(batch, Some(ms));
                }
                Ok(Written::Nothing) => self.settle(batch, None),
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

    /// A batch is safe (written at `written_ms`, or spooled, or had nothing to
    /// write): saves the rule state it carries, then releases its messages.
    fn settle(&mut self, batch: Batch, written_ms: Option<i64>) {
        if let Some(ms) = written_ms {
            for t in &batch.reading_ms {
                let lag = (ms - t).max(0) as f64 / 1000.0;
                self.metrics.lag_seconds.observe(lag);
                self.lag_window.push(lag);
            }
            let readings = batch.reading_ms.len() as u64;
            self.readings_in_window += readings;
            self.metrics.readings_written.add(readings);
        }
        if let Some(rules) = &batch.rules {
            self.rule_state.save(rules);
        }
        self.outbox.release(batch.deliveries);
    }

    /// Writes (or spools) a batch with retries, then releases its messages. With the
    /// spool full, keeps trying until InfluxDB takes it (the link stops reading
    /// meanwhile, so the broker holds the stream).
    async fn settle_slow(&mut self, batch: Batch) {
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            match self.storage.store(&batch.body).await {
                Stored::Written => {
                    let now_ms = Utc::now().timestamp_millis();
                    self.settle(batch, Some(now_ms));
                    return;
                }
                // Its readings are counted when the spool is drained.
                Stored::Spooled => {
                    self.settle(batch, None);
                    return;
                }
                Stored::Held => {
                    if self.shutting_down && started.elapsed() > SHUTDOWN_GRACE {
                        error!(
                            points = batch.points,
                            "shutting down with InfluxDB unavailable and the spool full: \
                               {} messages left unacknowledged for the broker to redeliver",
                            batch.deliveries.len()
                        );
                        return;
                    }
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(MAX_HOLD_DELAY);
                    // Try the database directly; the spool may also have drained.
                    if self.storage.write_split(&batch.body).await.is_ok() {
                        let now_ms = Utc::now().timestamp_millis();
                        self.settle(batch, Some(now_ms));
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
