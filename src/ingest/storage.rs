//! Getting one closed batch of line protocol durably stored: InfluxDB first, with
//! retries and splitting, else the disk spool; and the drain of the spool once
//! InfluxDB is back. The writer decides *when* (in order, pipelined); this module
//! decides *how*, and keeps InfluxDB's health.
//!
//! Write policy, per batch:
//! - success: stored;
//! - 413 or a 4xx data error: split the batch in halves until the offending lines are
//!   isolated; those become dead letters, the rest is written;
//! - timeout, connection error, 429, 5xx (and auth/bucket errors, which an operator
//!   fixes): retry twice with exponential backoff and jitter (or the server's
//!   Retry-After), then spool to disk; while InfluxDB is down, batches go straight to
//!   the spool and [`Storage::drain_one`] retries the oldest spooled batch with
//!   growing delays;
//! - spool full: log loudly, count, and report the batch as held: the writer keeps
//!   its messages unacknowledged and tries again (the broker holds the stream).
//!
//! Health is what writes show, nothing else: it turns good only when a write of at
//! least one point succeeds (an empty batch settles nothing), and bad when a batch
//! has to be spooled or a drain attempt fails.
//!
//! Generic over [`LineSink`] so the policy is unit-tested against a scripted sink;
//! ingest uses [`InfluxClient`].

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{error, info, warn};

use super::deadletter::DeadLetters;
use super::outbox::Outbox;
use super::spool::{Spool, SpoolError};
use super::IngestMetrics;
use crate::backoff::jitter;
use crate::domain::line_protocol::Point;
use crate::domain::schema::dead_letter_point;
use crate::store::{InfluxClient, StoreError};

/// Where batches of line protocol are written: InfluxDB, or a test's stand-in.
pub trait LineSink: Clone + Send + Sync + 'static {
    /// Writes one body of line protocol (timestamps in milliseconds).
    fn write_lines(&self, body: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl LineSink for InfluxClient {
    fn write_lines(&self, body: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        InfluxClient::write_lines(self, body)
    }
}

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts on the live path before a batch is spooled.
    pub live_attempts: u32,
    /// Wait after the first failed attempt (doubled after each).
    pub first_delay: Duration,
    /// Longest wait honoured from a Retry-After header.
    pub max_retry_after: Duration,
    /// First and longest wait between two attempts to drain the spool.
    pub first_drain_delay: Duration,
    pub max_drain_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            live_attempts: 3,
            first_delay: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(5),
            first_drain_delay: Duration::from_millis(100),
            max_drain_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` after `error` (attempts count from 1).
    pub fn live_delay(&self, attempt: u32, error: &StoreError) -> Duration {
        match error {
            StoreError::Unavailable {
                retry_after: Some(d),
                ..
            } => (*d).min(self.max_retry_after),
            _ => jitter(self.first_delay * 2u32.saturating_pow(attempt.saturating_sub(1))),
        }
    }
}

/// Where a batch ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Written,
    Spooled,
    /// Neither written nor spooled (spool full or unwritable): keep it
    /// unacknowledged and try again.
    Held,
}

/// What the last writes say about InfluxDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No write of a point has ended yet.
    Unknown,
    Up,
    Down,
}

/// InfluxDB, the spool and the policy between them.
pub struct Storage<S> {
    sink: S,
    spool: Spool,
    metrics: IngestMetrics,
    policy: RetryPolicy,
    health: Health,
    instance: String,
    dead_letter_ms: i64,
    drain_delay: Duration,
    next_drain: tokio::time::Instant,
    /// Where the copies of points InfluxDB refuses go (`entrepot/deadletter/<reason>`),
    /// at their own bounded rate; None: only the `deadletters` measurement.
    copies: Option<(Outbox, DeadLetters)>,
}

impl<S: LineSink> Storage<S> {
    pub fn new(
        sink: S,
        spool: Spool,
        metrics: IngestMetrics,
        policy: RetryPolicy,
        instance: &str,
    ) -> Storage<S> {
        metrics.spool_bytes.set(spool.used_bytes() as f64);
        Storage {
            sink,
            spool,
            metrics,
            policy,
            health: Health::Unknown,
            instance: instance.to_owned(),
            dead_letter_ms: 0,
            drain_delay: policy.first_drain_delay,
            next_drain: tokio::time::Instant::now(),
            copies: None,
        }
    }

    /// Also publishes a copy of each point InfluxDB refuses on the dead-letter topic,
    /// through `outbox`, as the link does for the messages it refuses.
    pub fn with_dead_letter_copies(mut self, outbox: Outbox) -> Storage<S> {
        let copies = DeadLetters::new(&self.instance, &self.metrics.registry);
        self.copies = Some((outbox, copies));
        self
    }

    /// A handle on the sink for pipelined writes.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn health(&self) -> Health {
        self.health
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// When the next drain attempt is due (only meaningful while the spool has files).
    pub fn next_drain(&self) -> tokio::time::Instant {
        self.next_drain
    }

    /// Records that a write of `points` points (at least one) succeeded.
    pub fn written(&mut self, points: usize) {
        if points > 0 {
            self.set_health(Health::Up);
        }
    }

    fn set_health(&mut self, health: Health) {
        match (self.health, health) {
            (Health::Down, Health::Up) => info!("InfluxDB writes succeed again"),
            (Health::Up | Health::Unknown, Health::Down) => {
                warn!(spool = %self.spool_hint(), "InfluxDB unavailable: spooling batches to disk")
            }
            _ => {}
        }
        self.health = health;
        self.metrics
            .influx_healthy
            .set(if health == Health::Up { 1.0 } else { 0.0 });
    }

    fn spool_hint(&self) -> String {
        format!(
            "{} files, {} bytes",
            self.spool.files(),
            self.spool.used_bytes()
        )
    }

    /// A dead-letter point with a unique, increasing millisecond for this process: two
    /// dead letters of the same reason never share a timestamp, so neither overwrites
    /// the other.
    pub fn dead_letter(&mut self, reason: &str, topic: &str, payload: &[u8], error: &str) -> Point {
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

    /// Stores one batch: InfluxDB with retries while it is not known to be down, else
    /// (or then) the spool.
    pub async fn store(&mut self, body: &str) -> Stored {
        if self.health != Health::Down {
            for attempt in 1..=self.policy.live_attempts {
                match self.write_split(body).await {
                    Ok(_) => return Stored::Written,
                    Err(e) if attempt < self.policy.live_attempts => {
                        self.metrics.write_retries.inc();
                        let wait = self.policy.live_delay(attempt, &e);
                        warn!(error = %e, attempt, retry_in = ?wait, "InfluxDB write failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => warn!(error = %e, "InfluxDB write failed again; spooling the batch"),
                }
            }
            self.set_health(Health::Down);
        }
        self.spool_batch(body)
    }

    fn spool_batch(&mut self, body: &str) -> Stored {
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
                       (raise --spool-max or restore InfluxDB)");
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
    /// the problem (the whole batch may then be retried: rewriting points is
    /// idempotent). Returns the points written, dead letters excluded.
    pub async fn write_split(&mut self, body: &str) -> Result<usize, StoreError> {
        let lines: Vec<&str> = body.lines().filter(|l| !l.is_empty()).collect();
        let mut written = 0;
        let mut stack = vec![(0, lines.len())];
        while let Some((start, end)) = stack.pop() {
            if start == end {
                continue;
            }
            let chunk = lines[start..end].join("\n") + "\n";
            let begun = Instant::now();
            match self.sink.write_lines(&chunk).await {
                Ok(()) => {
                    self.metrics
                        .write_seconds
                        .observe(begun.elapsed().as_secs_f64());
                    self.metrics.points_written.add((end - start) as u64);
                    written += end - start;
                }
                Err(e @ (StoreError::TooLarge(_) | StoreError::Rejected { .. })) => {
                    self.metrics.write_error(e.kind()).inc();
                    if end - start > 1 {
                        let mid = start + (end - start) / 2;
                        // Second half pushed first: the first half is written first.
                        stack.push((mid, end));
                        stack.push((start, mid));
                    } else {
                        self.dead_letter_line(lines[start], &e).await;
                    }
                }
                Err(e) => {
                    self.metrics.write_error(e.kind()).inc();
                    return Err(e);
                }
            }
        }
        self.written(written);
        Ok(written)
    }

    /// A line InfluxDB refuses on its own becomes a dead letter holding it.
    async fn dead_letter_line(&mut self, line: &str, e: &StoreError) {
        let reason = if matches!(e, StoreError::TooLarge(_)) {
            "influx_too_large"
        } else {
            "influx_rejected"
        };
        self.metrics.rejected(reason).inc();
        warn!(error = %e, line = %line.chars().take(200).collect::<String>(), "InfluxDB rejected a point; dead-lettered");
        let error = e.to_string();
        if let Some((outbox, copies)) = &mut self.copies {
            if let Some(copy) = copies.copy("", line.as_bytes(), reason, None, &error) {
                match outbox.send(copy) {
                    Ok(()) => copies.queued(),
                    Err(_) => copies.dropped(),
                }
            }
        }
        let dl = self.dead_letter(reason, "", line.as_bytes(), &error);
        let mut body = String::new();
        let written = match dl.encode_into(&mut body) {
            Ok(()) => self.sink.write_lines(&body).await,
            Err(encode) => Err(StoreError::Protocol(encode.to_string())),
        };
        if let Err(e2) = written {
            error!(error = %e2, "cannot write the dead letter either; the point is lost");
        }
    }

    /// Writes the oldest spooled batch back to InfluxDB, if the drain delay has passed
    /// (the writer calls it when [`Storage::next_drain`] is due).
    pub async fn drain_one(&mut self) -> DrainOutcome {
        let (path, body) = match self.spool.oldest() {
            Ok(Some(x)) => x,
            Ok(None) => return DrainOutcome::Empty,
            Err(e) => {
                error!(error = %e, "cannot read the spool");
                self.next_drain = tokio::time::Instant::now() + self.policy.max_drain_delay;
                return DrainOutcome::Failed;
            }
        };
        match self.write_split(&body).await {
            Ok(_) => {
                if let Err(e) = self.spool.remove(&path) {
                    error!(error = %e, "cannot remove a drained spool file (it will be written again: harmless)");
                }
                self.metrics.spool_bytes.set(self.spool.used_bytes() as f64);
                self.drain_delay = self.policy.first_drain_delay;
                self.next_drain = tokio::time::Instant::now();
                if self.spool.is_empty() {
                    info!("spool drained: every buffered batch is in InfluxDB");
                }
                // The spool keeps only line protocol: its readings are counted from it.
                DrainOutcome::Written {
                    readings: crate::domain::schema::count_reading_lines(&body),
                }
            }
            Err(e) => {
                self.set_health(Health::Down);
                self.drain_delay = (self.drain_delay * 2).min(self.policy.max_drain_delay);
                let wait = jitter(self.drain_delay);
                info!(error = %e, retry_in = ?wait, pending = %self.spool_hint(), "InfluxDB still unavailable");
                self.next_drain = tokio::time::Instant::now() + wait;
                DrainOutcome::Failed
            }
        }
    }
}

/// What one drain attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    Empty,
    Written { readings: u64 },
    Failed,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// How the scripted sink answers a write.
    #[derive(Debug, Clone)]
    pub enum Answer {
        Accept,
        /// Connection refused.
        Down,
        /// 503 with a Retry-After.
        Busy(Duration),
        /// 400 for any body with a reading line holding this text, else accepted.
        RejectContaining(&'static str),
        /// 413 for bodies of more than this many lines, else accepted.
        TooLargeOver(usize),
    }

    /// A sink that answers from a script (the last answer repeats) and records
    /// every body it accepted.
    #[derive(Debug, Clone, Default)]
    pub struct ScriptedSink {
        pub script: Arc<Mutex<Vec<Answer>>>,
        pub accepted: Arc<Mutex<Vec<String>>>,
        pub calls: Arc<Mutex<usize>>,
    }

    impl ScriptedSink {
        pub fn new(answers: &[Answer]) -> ScriptedSink {
            let s = ScriptedSink::default();
            *s.script.lock().unwrap() = answers.to_vec();
            s
        }

        pub fn set(&self, answers: &[Answer]) {
            *self.script.lock().unwrap() = answers.to_vec();
        }

        /// Accepted lines, in order.
        pub fn lines(&self) -> Vec<String> {
            self.accepted
                .lock()
                .unwrap()
                .iter()
                .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
                .collect()
        }

        fn answer(&self, body: &str) -> Result<(), StoreError> {
            *self.calls.lock().unwrap() += 1;
            let answer = {
                let mut script = self.script.lock().unwrap();
                if script.len() > 1 {
                    script.remove(0)
                } else {
                    script.first().cloned().unwrap_or(Answer::Accept)
                }
            };
            let result = match answer {
                Answer::Accept => Ok(()),
                Answer::Down => Err(StoreError::Unreachable {
                    url: "http://test".into(),
                    message: "connection refused".into(),
                    transport: crate::net::Transport::Refused,
                }),
                Answer::Busy(d) => Err(StoreError::Unavailable {
                    status: 503,
                    message: "busy".into(),
                    retry_after: Some(d),
                }),
                Answer::RejectContaining(t)
                    if body
                        .lines()
                        .any(|l| l.starts_with("readings") && l.contains(t)) =>
                {
                    Err(StoreError::Rejected {
                        status: 400,
                        message: format!("bad line with {t}"),
                    })
                }
                Answer::TooLargeOver(n) if body.lines().count() > n => {
                    Err(StoreError::TooLarge("too many lines".into()))
                }
                Answer::RejectContaining(_) | Answer::TooLargeOver(_) => Ok(()),
            };
            if result.is_ok() {
                self.accepted.lock().unwrap().push(body.to_owned());
            }
            result
        }
    }

    impl LineSink for ScriptedSink {
        fn write_lines(&self, body: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
            let result = self.answer(body);
            async move { result }
        }
    }

    pub fn fast_policy() -> RetryPolicy {
        RetryPolicy {
            live_attempts: 3,
            first_delay: Duration::from_millis(1),
            max_retry_after: Duration::from_millis(20),
            first_drain_delay: Duration::from_millis(1),
            max_drain_delay: Duration::from_millis(4),
        }
    }

    pub fn metrics() -> IngestMetrics {
        IngestMetrics::new(&crate::metrics::Registry::new())
    }

    fn storage(
        sink: &ScriptedSink,
        spool_max: u64,
    ) -> (Storage<ScriptedSink>, tempfile::TempDir, IngestMetrics) {
        let dir = tempfile::tempdir().unwrap();
        let m = metrics();
        let spool = Spool::open(dir.path(), spool_max).unwrap();
        let s = Storage::new(sink.clone(), spool, m.clone(), fast_policy(), "test");
        (s, dir, m)
    }

    fn body(n: usize) -> String {
        (0..n)
            .map(|i| format!("readings,sensor=s{i},zone=nord temp={i} {}\n", 1000 + i))
            .collect()
    }

    #[tokio::test]
    async fn a_bad_line_is_isolated_and_dead_lettered_the_rest_written() {
        let sink = ScriptedSink::new(&[Answer::RejectContaining("s5,")]);
        let (mut s, _dir, m) = storage(&sink, 1 << 20);
        let written = s.write_split(&body(8)).await.unwrap();
        assert_eq!(written, 7);
        let lines = sink.lines();
        let readings: Vec<_> = lines.iter().filter(|l| l.starts_with("readings")).collect();
        assert_eq!(readings.len(), 7);
        assert!(!readings.iter().any(|l| l.contains("s5,")));
        let dead: Vec<_> = lines
            .iter()
            .filter(|l| l.starts_with("deadletters"))
            .collect();
        assert_eq!(dead.len(), 1, "{lines:?}");
        assert!(dead[0].contains("influx_rejected") && dead[0].contains("s5"));
        assert_eq!(m.rejected("influx_rejected").get(), 1, "counted by reason");
        assert_eq!(s.health(), Health::Up);
        // The first half was written before the second (order kept).
        assert!(readings[0].contains("sensor=s0,"));
    }

    #[tokio::test]
    async fn a_point_influxdb_refuses_is_also_copied_to_the_dead_letter_topic() {
        let sink = ScriptedSink::new(&[Answer::RejectContaining("s5,")]);
        let (s, _dir, m) = storage(&sink, 1 << 20);
        let (outbox, mut to_link) = Outbox::detached();
        let mut s = s.with_dead_letter_copies(outbox);
        assert_eq!(s.write_split(&body(8)).await.unwrap(), 7);
        let Some(crate::ingest::outbox::ToLink::Publish(p)) = to_link.try_recv().ok() else {
            panic!("no dead-letter copy published");
        };
        assert_eq!(p.topic, "entrepot/deadletter/influx_rejected");
        assert_eq!(p.qos, rumqttc::QoS::AtLeastOnce);
        assert!(!p.retain);
        let copy: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(copy["reason"], "influx_rejected");
        assert!(
            copy["payload"].as_str().unwrap().contains("sensor=s5,"),
            "{copy}"
        );
        assert!(to_link.try_recv().is_err(), "one refused point, one copy");
        let published = m
            .registry
            .counter("arng_ingest_deadletters_published_total", "", &[]);
        assert_eq!(published.get(), 1);
    }

    #[tokio::test]
    async fn too_large_bodies_are_halved_until_they_fit() {
        let sink = ScriptedSink::new(&[Answer::TooLargeOver(3)]);
        let (mut s, _dir, _m) = storage(&sink, 1 << 20);
        assert_eq!(s.write_split(&body(10)).await.unwrap(), 10);
        let accepted = sink.accepted.lock().unwrap().clone();
        assert!(
            accepted.iter().all(|b| b.lines().count() <= 3),
            "{accepted:?}"
        );
        let expected: Vec<String> = body(10).lines().map(str::to_owned).collect();
        assert_eq!(sink.lines(), expected, "every line once, in order");
    }

    #[tokio::test]
    async fn an_unavailable_database_is_retried_then_the_batch_spooled() {
        let sink = ScriptedSink::new(&[Answer::Down]);
        let (mut s, _dir, m) = storage(&sink, 1 << 20);
        assert_eq!(s.store(&body(4)).await, Stored::Spooled);
        assert_eq!(*sink.calls.lock().unwrap(), 3, "three live attempts");
        assert_eq!(m.write_retries.get(), 2);
        assert_eq!(s.health(), Health::Down);
        assert_eq!(m.influx_healthy.get(), 0.0);
        assert_eq!(s.spool().files(), 1);
        // While down, the next batch goes straight to the spool.
        assert_eq!(s.store(&body(2)).await, Stored::Spooled);
        assert_eq!(*sink.calls.lock().unwrap(), 3);
        // Back up: the drain writes the oldest batch first, then the next.
        sink.set(&[Answer::Accept]);
        assert_eq!(s.drain_one().await, DrainOutcome::Written { readings: 4 });
        assert_eq!(s.health(), Health::Up);
        assert_eq!(s.drain_one().await, DrainOutcome::Written { readings: 2 });
        assert_eq!(s.drain_one().await, DrainOutcome::Empty);
        assert!(s.spool().is_empty());
        assert_eq!(m.spool_bytes.get(), 0.0);
    }

    #[tokio::test]
    async fn retry_after_is_honoured_up_to_its_cap() {
        let policy = fast_policy();
        let busy = StoreError::Unavailable {
            status: 503,
            message: String::new(),
            retry_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(policy.live_delay(1, &busy), policy.max_retry_after);
        let down = StoreError::Timeout(Duration::from_secs(1));
        // Exponential with jitter in [0.5, 1.5).
        let d = policy.live_delay(3, &down);
        assert!(
            d >= policy.first_delay * 2 && d < policy.first_delay * 6,
            "{d:?}"
        );
        let sink = ScriptedSink::new(&[Answer::Busy(Duration::from_millis(5)), Answer::Accept]);
        let (mut s, _dir, m) = storage(&sink, 1 << 20);
        assert_eq!(s.store(&body(1)).await, Stored::Written);
        assert_eq!(m.write_retries.get(), 1);
    }

    #[tokio::test]
    async fn a_full_spool_holds_the_batch() {
        let sink = ScriptedSink::new(&[Answer::Down]);
        let (mut s, _dir, m) = storage(&sink, 10);
        assert_eq!(s.store(&body(4)).await, Stored::Held);
        assert_eq!(m.spool_full.get(), 1);
        assert_eq!(s.spool().files(), 0);
    }

    #[tokio::test]
    async fn writing_nothing_says_nothing_about_health() {
        let sink = ScriptedSink::new(&[Answer::Down]);
        let (mut s, _dir, m) = storage(&sink, 1 << 20);
        assert_eq!(s.write_split("").await.unwrap(), 0);
        assert_eq!(s.health(), Health::Unknown);
        assert_eq!(s.store(&body(1)).await, Stored::Spooled);
        assert_eq!(s.health(), Health::Down);
        // An empty body after an outage does not claim InfluxDB is back.
        assert_eq!(s.write_split("\n").await.unwrap(), 0);
        assert_eq!(s.health(), Health::Down);
        assert_eq!(m.influx_healthy.get(), 0.0);
        assert_eq!(
            *sink.calls.lock().unwrap(),
            3,
            "no request for an empty body"
        );
    }
}
