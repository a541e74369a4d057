//! Ingest's broker connection, driven packet by packet so that *reading* and
//! *acknowledging* are separate decisions: the flow control and memory bound of
//! docs/ingest.md#flow-control.
//!
//! rumqttc connects (TLS, credentials, CONNACK) through [`EventLoop::poll`]; after the
//! CONNACK this module drives the connection's `network` and `state` itself instead of
//! calling `poll` again, because `poll` cannot do what ingest needs:
//! - **stop reading while still writing.** `poll` reads and writes in one `select!`:
//!   not polling stops acknowledgements and pings with the reads. Here the socket is
//!   not read while the writer holds `max_unacked` messages (or their payloads exceed
//!   `max_bytes`), while acknowledgements, alert publishes and pings still leave. The
//!   broker's in-flight window cannot be trusted to do this: Mosquitto before 2.0.13
//!   (Debian 12 ships 2.0.11) moves up to `max_inflight_messages` queued messages into
//!   flight on *every* in-order PUBACK (eclipse/mosquitto#2306), so a persistent
//!   session's backlog arrives as fast as the socket allows, whatever the window.
//! - **acknowledge in bulk.** `poll` writes and flushes one request per call, so every
//!   PUBACK was its own TCP segment and its own read in the broker. Here every
//!   acknowledgement the writer released is written, then flushed once.
//!
//! Accounting: every message handed to the writer carries a [`Delivery`], which the
//! writer gives back through the [`Outbox`] once the message is settled (stored,
//! spooled, or abandoned at shutdown). Acknowledgements of an earlier connection are
//! dropped: the broker redelivers those messages, and a point written twice is
//! overwritten, not duplicated.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{
    ConnectionError, Disconnect, Event, EventLoop, LastWill, Packet, PingReq, PubAck, Publish, QoS,
    Request, StateError, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::classify::{classify, Inbound};
use super::outbox::{self, Delivery, Outbox, ToLink};
use super::reader::Reader;
use super::{IngestConfig, IngestError, IngestMetrics};
use crate::backoff::Backoff;
use crate::domain::topic::{self, Topic};

/// Most payload bytes held at once, whatever `max_unacked` says: a flood of
/// maximum-size (16 KiB) messages stops the reading at about 1,000 of them.
pub const MAX_HELD_BYTES: usize = 16 << 20;

/// Most of our own publishes (alerts, dead letters) waiting for room in the client's
/// in-flight window. Beyond it new ones are dropped with a warning: the broker is not
/// taking them, and the alerts are in InfluxDB anyway.
const MAX_QUEUED_PUBLISHES: usize = 10_000;

/// How long the link waits for the broker to take the last acknowledgements and the
/// DISCONNECT at shutdown.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Reads (of up to 10 packets each, rumqttc's unit) taken in one turn while the
/// socket has data ready: fewer, larger hand-overs to the writer. The reading bound
/// may be exceeded by at most this many times 10 messages.
const READS_PER_TURN: usize = 20;

/// The broker connection of one ingest process.
pub struct Link {
    eventloop: EventLoop,
    cfg: IngestConfig,
    metrics: IngestMetrics,
    filters: Vec<String>,
    status_topic: String,
    /// Connection number (1 for the first CONNACK); deliveries of older ones are
    /// not acknowledged.
    conn: u32,
    /// Messages handed to the writer and not given back yet, and their payload bytes.
    held: usize,
    held_bytes: usize,
    max_held: usize,
    /// Subscriptions and the final DISCONNECT, written before anything else.
    control: VecDeque<Request>,
    /// Acknowledgements to write on the current connection, in order.
    acks: VecDeque<u16>,
    /// Our own publishes waiting for room in the client's in-flight window.
    publishes: VecDeque<Publish>,
    /// When a packet was last written: a PINGREQ is due `keep_alive` after it.
    last_sent: Instant,
    subscribed: bool,
    published_file_thresholds: bool,
    /// None once shutdown has begun: the writer then drains what it has and ends.
    to_writer: Option<mpsc::UnboundedSender<Vec<Inbound>>>,
    /// Messages of the current turn, handed to the writer in one send (one wake-up of
    /// the writer's task per turn instead of one per message).
    handing: Vec<Inbound>,
    from_writer: mpsc::UnboundedReceiver<ToLink>,
    paused_logged: bool,
    publishes_dropped: u64,
    /// Reads payloads under ingest's policy and makes the dead-letter copies.
    reader: Reader,
}

/// The writer's ends of the channels to its link.
pub struct Wiring {
    pub outbox: Outbox,
    pub inbound: mpsc::UnboundedReceiver<Vec<Inbound>>,
}

/// What woke a connected link up.
enum Wake {
    Shutdown,
    WriterDone(Result<Result<(), IngestError>, tokio::task::JoinError>),
    FromWriter(Option<ToLink>),
    PingDue,
    Read(Result<(), StateError>),
}

impl Link {
    /// A link for `cfg` (not connected yet) and the writer's ends of its channels.
    pub fn new(cfg: &IngestConfig, metrics: IngestMetrics) -> (Link, Wiring) {
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
        let (to_writer, inbound) = mpsc::unbounded_channel();
        let (outbox, from_writer) = outbox::channel();
        let metrics_registry = metrics.registry.clone();
        let link = Link {
            eventloop: crate::mqtt::event_loop(options),
            cfg: cfg.clone(),
            metrics,
            filters: super::filters(cfg.share_group.as_deref()),
            status_topic,
            conn: 0,
            held: 0,
            held_bytes: 0,
            max_held: cfg.max_unacked.max(1),
            control: VecDeque::new(),
            acks: VecDeque::new(),
            publishes: VecDeque::new(),
            last_sent: Instant::now(),
            subscribed: false,
            published_file_thresholds: false,
            to_writer: Some(to_writer),
            handing: Vec::new(),
            from_writer,
            paused_logged: false,
            publishes_dropped: 0,
            reader: Reader::new(cfg.read_policy, &metrics_registry, &cfg.client_id),
        };
        (link, Wiring { outbox, inbound })
    }

    /// Whether the socket must not be read now: the writer holds as much as allowed,
    /// or shutdown has begun (what arrives now would not be stored and stays with the
    /// broker). Only what the writer holds counts: it settles without the link's help,
    /// so reading always resumes (counting our queued publishes would deadlock, as
    /// their window only opens when the broker's PUBACKs are read).
    fn reading_paused(&self) -> bool {
        self.to_writer.is_none() || self.held >= self.max_held || self.held_bytes >= MAX_HELD_BYTES
    }

    /// Runs until the writer has finished after `shutdown`: connects, reconnects with
    /// backoff, hands messages to the writer and acknowledges what it settles. Returns
    /// the writer's result, or the permanent error (a refused login) that stopped it.
    pub async fn run(
        mut self,
        mut writer: tokio::task::JoinHandle<Result<(), IngestError>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), IngestError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        let mut next_attempt = Instant::now();
        loop {
            if self.eventloop.network.is_none() {
                // Connecting. Releases wait in their channel: they could not be
                // acknowledged on this connection anyway.
                tokio::select! {
                    biased;
                    _ = &mut shutdown, if self.to_writer.is_some() => self.begin_shutdown(),
                    res = &mut writer => return self.finish(res).await,
                    polled = async {
                        tokio::time::sleep_until(next_attempt).await;
                        self.eventloop.poll().await
                    } => match polled {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            backoff.reset();
                            self.on_connected(ack.session_present);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if let Some(refused) = crate::mqtt::permanent_failure(&self.cfg.mqtt, &e) {
                                writer.abort();
                                return Err(IngestError::Broker(Box::new(refused)));
                            }
                            let wait = backoff.next_delay();
                            self.connection_lost(&e, wait);
                            next_attempt = Instant::now() + wait;
                        }
                    },
                }
                continue;
            }
            let outcome = match self.write_due().await {
                Ok(()) => self.wait(&mut shutdown, &mut writer).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(None) => {}
                Ok(Some(res)) => return self.finish(res).await,
                Err(e) => {
                    self.eventloop.clean();
                    let wait = backoff.next_delay();
                    self.connection_lost(&e, wait);
                    next_attempt = Instant::now() + wait;
                }
            }
        }
    }

    /// Waits on a live connection for the next thing to do and does it. `Some` once
    /// the writer has ended.
    #[allow(clippy::type_complexity)]
    async fn wait(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        writer: &mut tokio::task::JoinHandle<Result<(), IngestError>>,
    ) -> Result<Option<Result<Result<(), IngestError>, tokio::task::JoinError>>, ConnectionError>
    {
        let paused = self.reading_paused();
        self.metrics.held_messages.set(self.held as f64);
        if paused != self.paused_logged && self.to_writer.is_some() {
            self.paused_logged = paused;
            if paused {
                self.metrics.read_pauses.inc();
            }
            debug!(
                paused,
                held = self.held,
                held_bytes = self.held_bytes,
                "reading from the broker {}",
                if paused {
                    "paused: the writer is behind"
                } else {
                    "resumed"
                }
            );
        }
        let keep_alive = self.eventloop.mqtt_options.keep_alive();
        let ping_at = self.last_sent + keep_alive;
        let stopping = self.to_writer.is_none();
        let Some(network) = self.eventloop.network.as_mut() else {
            return Ok(None);
        };
        let state = &mut self.eventloop.state;
        let wake = tokio::select! {
            biased;
            _ = shutdown.as_mut(), if !stopping => Wake::Shutdown,
            res = &mut *writer => Wake::WriterDone(res),
            // Settled messages and our publishes come before reading, so a busy
            // socket never delays acknowledgements.
            msg = self.from_writer.recv() => Wake::FromWriter(msg),
            _ = tokio::time::sleep_until(ping_at), if !keep_alive.is_zero() => Wake::PingDue,
            // The socket is read only while the writer has room: the back-pressure
            // that bounds ingest's memory (module docs).
            read = network.readb(state), if !paused => Wake::Read(read),
        };
        match wake {
            Wake::Shutdown => self.begin_shutdown(),
            Wake::WriterDone(res) => return Ok(Some(res)),
            Wake::FromWriter(msg) => {
                if let Some(m) = msg {
                    self.on_from_writer(m);
                    // Everything else already waiting goes out in the same write.
                    while let Ok(m) = self.from_writer.try_recv() {
                        self.on_from_writer(m);
                    }
                }
            }
            Wake::PingDue => {
                // Unread, a PINGRESP cannot be seen: do not count it missing.
                if paused {
                    self.eventloop.state.await_pingresp = false;
                }
                // Errs if the previous PINGREQ got no answer: the connection is dead.
                self.control.push_back(Request::PingReq(PingReq));
            }
            Wake::Read(read) => {
                read?;
                // More while the socket has data ready and the writer has room.
                for _ in 1..READS_PER_TURN {
                    let Some(network) = self.eventloop.network.as_mut() else {
                        break;
                    };
                    let pending = self.eventloop.state.events.len();
                    if self.held + pending >= self.max_held {
                        break;
                    }
                    match poll_once(network.readb(&mut self.eventloop.state)) {
                        Some(read) => read?,
                        None => break,
                    }
                }
                self.take_events();
            }
        }
        Ok(None)
    }

    fn begin_shutdown(&mut self) {
        info!("shutting down: flushing and acknowledging what was received");
        // The writer drains what it was handed, flushes and settles, then ends.
        self.to_writer = None;
    }

    fn on_connected(&mut self, session_present: bool) {
        self.conn += 1;
        // Acknowledgements of the previous connection are not sent: the broker
        // redelivers those messages (module docs).
        self.acks.clear();
        self.last_sent = Instant::now();
        self.metrics.mqtt_connected.set(1.0);
        info!(session_present, client_id = %self.cfg.client_id, "connected to the broker");
        let mut filters: Vec<SubscribeFilter> = self
            .filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
            .collect();
        // Not shared with the group: every member stores the same values at the same
        // second, so they overwrite each other in InfluxDB.
        if self.cfg.broker_stats {
            filters.push(SubscribeFilter::new(
                crate::supervision::SYS_FILTER.to_owned(),
                QoS::AtMostOnce,
            ));
        }
        self.subscribed = false;
        self.control
            .push_back(Request::Subscribe(Subscribe::new_many(filters)));
        // Our publishes of the previous connection first (rumqttc kept those the
        // broker had not acknowledged), then the status and, once, the thresholds file.
        let resend: Vec<Publish> = self
            .eventloop
            .pending
            .drain(..)
            .filter_map(|r| match r {
                Request::Publish(p) => Some(p),
                _ => None,
            })
            .collect();
        for p in resend.into_iter().rev() {
            self.publishes.push_front(p);
        }
        let mut status = Publish::new(&self.status_topic, QoS::AtLeastOnce, "online");
        status.retain = true;
        self.publishes.push_back(status);
        if let (Some(t), false) = (&self.cfg.thresholds_file, self.published_file_thresholds) {
            self.published_file_thresholds = true;
            let mut p = Publish::new(topic::THRESHOLDS_TOPIC, QoS::AtLeastOnce, t.to_json());
            p.retain = true;
            self.publishes.push_back(p);
        }
    }

    /// Hands what the last reads brought to the writer.
    fn take_events(&mut self) {
        while let Some(event) = self.eventloop.state.events.pop_front() {
            match event {
                Event::Incoming(Packet::Publish(p)) => self.on_publish(p),
                Event::Incoming(Packet::SubAck(s)) => {
                    if s.return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        error!(
                            ?s,
                            "the broker refused a subscription (check the account's ACL)"
                        );
                    }
                    if !self.subscribed {
                        self.subscribed = true;
                        // From here on nothing published is missed, even on a fresh
                        // broker (scripts and tests wait for this line).
                        info!("subscribed: receiving readings");
                    }
                }
                _ => {}
            }
        }
        if self.handing.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.handing);
        let (n, bytes) = (batch.len(), batch.iter().map(Inbound::bytes).sum::<usize>());
        match &self.to_writer {
            Some(tx) if tx.send(batch).is_ok() => {
                self.held += n;
                self.held_bytes += bytes;
            }
            _ => warn!(n, "writer stopped; messages left unacknowledged"),
        }
    }

    fn on_publish(&mut self, p: Publish) {
        self.metrics.received.inc();
        if self.to_writer.is_none() {
            // Shutting down: left unacknowledged, the broker redelivers it.
            return;
        }
        // Everything goes through the writer, even messages with nothing to store, so
        // acknowledgements leave in the order of arrival.
        let inbound = classify(&p, Delivery::new(self.conn, &p), &mut self.reader);
        if let Some(copy) = self.reader.dead_letter(&inbound) {
            let queued = self.queue_publish(copy);
            self.reader.dead_letter_queued(queued);
        }
        self.handing.push(inbound);
    }

    /// Queues one of our publishes (alert, dead-letter copy) for the broker; false if
    /// the queue is full and it was dropped.
    fn queue_publish(&mut self, p: Publish) -> bool {
        if self.publishes.len() < MAX_QUEUED_PUBLISHES {
            self.publishes.push_back(p);
            return true;
        }
        self.publishes_dropped += 1;
        if self.publishes_dropped % 1000 == 1 {
            warn!(topic = %p.topic, dropped = self.publishes_dropped,
                  "the broker is not taking our publishes; dropped (alerts and refusals are still written to InfluxDB)");
        }
        false
    }

    fn on_from_writer(&mut self, m: ToLink) {
        match m {
            ToLink::Release(deliveries) => {
                let live = self.eventloop.network.is_some();
                for d in deliveries {
                    self.held = self.held.saturating_sub(1);
                    self.held_bytes = self.held_bytes.saturating_sub(d.bytes());
                    if let (Some(pkid), true) = (d.ack_on(self.conn), live) {
                        self.acks.push_back(pkid);
                    }
                }
            }
            ToLink::Publish(p) => {
                self.queue_publish(p);
            }
        }
    }

    /// Writes the control packets, every acknowledgement due and as many of our
    /// publishes as the in-flight window allows, then flushes once: many PUBACKs in
    /// one TCP segment instead of one segment (and one broker wake-up) each.
    async fn write_due(&mut self) -> Result<(), ConnectionError> {
        let timeout = Duration::from_secs(self.eventloop.network_options.connection_timeout());
        let max_inflight = self.eventloop.mqtt_options.inflight();
        let Some(network) = self.eventloop.network.as_mut() else {
            return Ok(());
        };
        let state = &mut self.eventloop.state;
        let (control, acks, publishes) = (&mut self.control, &mut self.acks, &mut self.publishes);
        let write = async {
            let mut wrote = false;
            let acks = acks
                .drain(..)
                .map(|pkid| Request::PubAck(PubAck::new(pkid)));
            for request in control.drain(..).chain(acks) {
                if let Some(packet) = state.handle_outgoing_packet(request)? {
                    network.write(packet).await?;
                    wrote = true;
                }
            }
            while state.inflight() < max_inflight && state.collision.is_none() {
                let Some(p) = publishes.pop_front() else {
                    break;
                };
                if let Some(packet) = state.handle_outgoing_packet(Request::Publish(p))? {
                    network.write(packet).await?;
                    wrote = true;
                }
            }
            // Also flushes what a read answered on its own (PINGRESP needs nothing,
            // but a QoS 2 PUBREL would).
            network.flush().await?;
            Ok::<bool, StateError>(wrote)
        };
        let wrote = match tokio::time::timeout(timeout, write).await {
            Ok(res) => res?,
            Err(_) => return Err(ConnectionError::FlushTimeout),
        };
        if wrote {
            self.last_sent = Instant::now();
        }
        // Outgoing events are of no use here; dropped so the queue does not grow.
        state.events.retain(|e| matches!(e, Event::Incoming(_)));
        Ok(())
    }

    fn connection_lost(&mut self, e: &ConnectionError, retry_in: Duration) {
        self.metrics.mqtt_connected.set(0.0);
        self.acks.clear();
        if self.to_writer.is_none() {
            // Nothing more can be acknowledged; the broker will redeliver.
            debug!(error = %e, "connection lost while shutting down");
        }
        let why = crate::mqtt::tls_failure(e).unwrap_or_else(|| e.to_string());
        warn!(error = %why, retry_in = ?retry_in, "broker connection lost; reconnecting");
    }

    /// The writer has ended (shutdown): acknowledges what it settled last, says
    /// goodbye, and returns its result.
    async fn finish(
        mut self,
        res: Result<Result<(), IngestError>, tokio::task::JoinError>,
    ) -> Result<(), IngestError> {
        let mut unacked = 0usize;
        while let Ok(m) = self.from_writer.try_recv() {
            if let ToLink::Release(d) = &m {
                unacked += d.iter().filter(|d| d.acknowledges()).count();
            }
            self.on_from_writer(m);
        }
        if self.eventloop.network.is_some() {
            self.control.push_back(Request::Disconnect(Disconnect));
            match tokio::time::timeout(GOODBYE_TIMEOUT, self.write_due()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "could not acknowledge the last messages; the broker will redeliver them (already stored, so overwritten)"),
                Err(_) => warn!("the broker did not take the last acknowledgements in time; it will redeliver those messages (already stored, so overwritten)"),
            }
        } else if unacked > 0 {
            warn!(
                dropped = unacked,
                "shutting down with the broker unreachable: acknowledgements dropped; \
                 the broker will redeliver those messages (already stored, so overwritten)"
            );
        }
        match res {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "writer task failed");
                Err(IngestError::Writer(e.to_string()))
            }
        }
    }
}

/// The output of `f` if it is ready at once (nothing is waited for; a pending `f` is
/// dropped: rumqttc's `readb` is cancel-safe until its first packet is read).
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
