//! `arng qos-bench`: what QoS 0, 1 and 2 cost and guarantee on the configured broker.
//!
//! For each QoS level in turn: M subscribers subscribe at that level to a topic tree of
//! their own (`entrepot/qosbench/<run>-q<qos>/+`, never read by ingest), then N
//! publishers each send K messages (or publish for a duration), optionally on a rate
//! schedule. Every payload starts with a header (publisher, sequence number, send and
//! scheduled times, see [`payload`]), so subscribers measure end-to-end latency and
//! account for losses, duplicates and reordering per publisher ([`crate::stats`]).
//! Publishers pair each outgoing PUBLISH with its PUBACK (QoS 1) or PUBCOMP (QoS 2) by
//! packet id to time acknowledgements, and disconnect only once every message is
//! acknowledged, so nothing in flight is lost at the end. docs/qos.md explains the
//! figures and the pairing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS, SubscribeReasonCode};
use serde::Serialize;
use tabled::settings::Style;
use tabled::{Table, Tabled};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::MqttArgs;
use crate::stats::{
    self, Arrival, Delivery, Histogram, LatencySummary, RateSchedule, SequenceTracker,
};

use super::UsageError;

/// Largest payload accepted by `--size`: the broker's `max_packet_size` (16384, see
/// [`crate::mqtt::MAX_PACKET_BYTES`]) less the PUBLISH fixed header (3 bytes), topic
/// (2 + ~45 bytes) and packet id (2), rounded down with room to spare.
pub const MAX_PAYLOAD: usize = 16_000;
const MAX_CLIENTS: i64 = 200;
const MAX_MESSAGES: u64 = 10_000_000;
const DEFAULT_MESSAGES: u64 = 1000;
/// Topic tree of the bench; `entrepot/qosbench/<run>-q<n>/p<i>` has four levels and
/// does not end in `v1`, so ingest (`entrepot/+/+/v1`, heartbeats, alerts, thresholds)
/// never mistakes it for a reading. The `operator` account may use it.
pub const TOPIC_ROOT: &str = "entrepot/qosbench";
/// Once a subscriber has every message, it still waits this long without traffic so a
/// late duplicate is counted.
const LINGER: Duration = Duration::from_millis(150);
/// How long a client may take to close after DISCONNECT before its task is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// QoS levels to measure, comma-separated, one after the other (e.g. 0,1,2 or 1).
    #[arg(long, default_value = "0,1,2", value_parser = parse_qos_levels, value_name = "LEVELS")]
    pub qos: QosLevels,

    /// Publishing clients, each with its own connection and topic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_CLIENTS),
          value_name = "N")]
    pub publishers: u32,

    /// Subscribing clients; each one receives every message of every publisher.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_CLIENTS),
          value_name = "M")]
    pub subscribers: u32,

    /// Messages per publisher and QoS level [default: 1000, unless --duration is given].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_MESSAGES), value_name = "K",
          conflicts_with = "duration")]
    pub messages: Option<u64>,

    /// Publish for this long per QoS level instead of a fixed number of messages (e.g. 10s).
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Payload size in bytes: a 32-byte header (publisher, sequence number, send times)
    /// padded to this size; at most 16000 (the broker's max_packet_size is 16384).
    #[arg(long, default_value_t = 200, value_parser = parse_size, value_name = "BYTES")]
    pub size: usize,

    /// Total publishing rate in messages/s, shared evenly by the publishers. Latency is
    /// then measured from each message's scheduled send time, which corrects for
    /// coordinated omission. Without it publishers send as fast as they can.
    #[arg(long, value_parser = parse_rate, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,

    /// QoS 1/2 messages a publisher may have unacknowledged at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000),
          value_name = "N")]
    pub inflight: u16,

    /// After the last publisher is done, how long a subscriber waits for stragglers
    /// once nothing arrives any more.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub grace: Duration,

    /// How long to wait for the broker to accept a connection or subscription, and for
    /// the last acknowledgements once everything is published.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Leave Nagle's algorithm on in the bench's clients (rumqttc's default) instead of
    /// setting TCP_NODELAY as the broker does: shows what it costs, up to a delayed-ACK
    /// timeout (40 ms on Linux) on small QoS 0 publishes.
    #[arg(long)]
    pub nagle: bool,

    /// Print the results as JSON: a list with one object per QoS level.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,

    /// Print the results as CSV: a header row, then one row per QoS level.
    #[arg(long)]
    pub csv: bool,

    /// Also write the latency distribution of each QoS level as an SVG chart.
    #[arg(long, value_parser = parse_svg_path, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,

    /// Demonstrate QoS 1 redelivery: at QoS 1 the first subscriber uses a persistent
    /// session, leaves its first N messages unacknowledged, drops its connection and
    /// reconnects; the broker redelivers exactly those N, which must be reported as N
    /// duplicates and no loss.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=500), value_name = "N",
          conflicts_with = "duration")]
    pub inject_redelivery: Option<u64>,

    // Last, so that the options above are listed under "Options" in --help and the
    // shared ones under their own heading.
    #[command(flatten)]
    pub mqtt: MqttArgs,
}

/// The QoS levels of `--qos`, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosLevels(pub Vec<u8>);

fn parse_qos_levels(s: &str) -> Result<QosLevels, String> {
    let mut levels = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err("list at least one QoS level, comma-separated (e.g. 0,1,2)".into());
        }
        let level = match part {
            "0" => 0,
            "1" => 1,
            "2" => 2,
            other => {
                return Err(format!(
                    "QoS {other:?} does not exist (expected 0, 1 or 2, comma-separated)"
                ))
            }
        };
        if levels.contains(&level) {
            return Err(format!("QoS {level} is listed twice"));
        }
        levels.push(level);
    }
    Ok(QosLevels(levels))
}

fn parse_size(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if n < payload::HEADER_LEN {
        Err(format!(
            "{n} bytes cannot hold the {}-byte header (publisher, sequence number, send times)",
            payload::HEADER_LEN
        ))
    } else if n > MAX_PAYLOAD {
        Err(format!(
            "{n} bytes is over {MAX_PAYLOAD}: the broker disconnects clients whose packets exceed its max_packet_size (16384)"
        ))
    } else {
        Ok(n)
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of messages per second"))?;
    if r.is_finite() && r > 0.0 && r <= 1e7 {
        Ok(r)
    } else {
        Err("must be a number of messages per second above 0".into())
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 10s, 2m)"))?;
    if d.is_zero() {
        Err("must be longer than zero".into())
    } else {
        Ok(d)
    }
}

fn parse_svg_path(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    match p.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => Ok(p),
        _ => Err("the chart is written as SVG: give a file name ending in .svg".into()),
    }
}

fn to_qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// When publishers stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Messages(u64),
    After(Duration),
}

/// The validated run: everything a level needs, shared by its tasks.
#[derive(Debug)]
struct Plan {
    mqtt: MqttArgs,
    publishers: u32,
    subscribers: u32,
    stop: Stop,
    size: usize,
    rate: Option<f64>,
    inflight: u16,
    grace: Duration,
    timeout: Duration,
    inject: Option<u64>,
    nagle: bool,
    run_id: String,
}

impl Plan {
    fn from_args(args: &Args) -> Result<Plan, UsageError> {
        let stop = match (args.messages, args.duration) {
            (Some(_), Some(_)) => {
                return Err(UsageError(
                    "--messages and --duration cannot be used together".into(),
                ))
            }
            (_, Some(d)) => Stop::After(d),
            (k, None) => Stop::Messages(k.unwrap_or(DEFAULT_MESSAGES)),
        };
        if let Some(n) = args.inject_redelivery {
            if !args.qos.0.contains(&1) {
                return Err(UsageError(
                    "--inject-redelivery demonstrates QoS 1 redelivery: include 1 in --qos".into(),
                ));
            }
            let total = match stop {
                Stop::Messages(k) => k * u64::from(args.publishers),
                Stop::After(_) => 0,
            };
            if n >= total {
                return Err(UsageError(format!(
                    "--inject-redelivery {n} needs more than {n} messages in all (--messages x --publishers is {total})"
                )));
            }
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Ok(Plan {
            mqtt: args.mqtt.clone(),
            publishers: args.publishers,
            subscribers: args.subscribers,
            stop,
            size: args.size,
            rate: args.rate,
            inflight: args.inflight,
            grace: args.grace,
            timeout: args.timeout,
            inject: args.inject_redelivery,
            nagle: args.nagle,
            run_id: format!("{unix_ms:x}-{:x}", std::process::id()),
        })
    }

    fn base_topic(&self, qos: u8) -> String {
        format!("{TOPIC_ROOT}/{}-q{qos}", self.run_id)
    }

    fn client_id(&self, qos: u8, role: char, i: u32) -> String {
        format!("arng-qb-{}-q{qos}-{role}{i}", self.run_id)
    }

    /// A client and its event loop, with TCP_NODELAY (as every arng client, see
    /// `mqtt::client`) unless --nagle, which measures what Nagle's algorithm costs.
    fn client(&self, opts: rumqttc::MqttOptions) -> (AsyncClient, EventLoop) {
        let (client, mut eventloop) = crate::mqtt::client(opts, 64);
        if self.nagle {
            let mut net = eventloop.network_options();
            net.set_tcp_nodelay(false);
            eventloop.set_network_options(net);
        }
        (client, eventloop)
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = Arc::new(Plan::from_args(&args)?);
    let clock = Clock::new();
    tracing::debug!(run = %plan.run_id, levels = ?args.qos.0, "qos-bench starting");

    let mut levels = Vec::new();
    for &qos in &args.qos.0 {
        let bar = progress_bar(&plan, qos);
        let level = run_level(plan.clone(), qos, clock, bar.clone()).await;
        bar.finish_and_clear();
        levels.push(level);
    }

    let reports: Vec<LevelReport> = levels.iter().map(|l| l.report(&plan)).collect();
    if let Some(path) = &args.chart {
        let series: Vec<(u8, &Histogram)> = levels
            .iter()
            .filter(|l| !l.latency.is_empty())
            .map(|l| (l.qos, &l.latency))
            .collect();
        let title = chart_title(&plan);
        std::fs::write(path, latency_chart_svg(&series, &title))
            .with_context(|| format!("cannot write the chart to {}", path.display()))?;
    }
    let out = if args.json {
        serde_json::to_string_pretty(&reports)? + "\n"
    } else if args.csv {
        to_csv(&reports)?
    } else {
        to_table(&reports, plan.rate.is_some()) + "\n"
    };
    print_stdout(&out)?;
    let failed: Vec<&LevelReport> = reports.iter().filter(|r| !r.ok).collect();
    for r in &failed {
        eprintln!(
            "error: QoS {}: {}",
            r.qos,
            r.error.as_deref().unwrap_or("failed")
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Writes the result; a closed pipe (`arng qos-bench --json | head`) is not an error.
fn print_stdout(s: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write the results"))
        }
        _ => Ok(()),
    }
}

fn chart_title(plan: &Plan) -> String {
    let what = match plan.stop {
        Stop::Messages(k) => format!("{k} msgs/publisher"),
        Stop::After(d) => format!("{}", humantime::format_duration(d)),
    };
    let rate = plan
        .rate
        .map_or("max rate".to_owned(), |r| format!("{r} msgs/s"));
    format!(
        "arng qos-bench: end-to-end latency, {} pub x {} sub, {what}, {} B, {rate}",
        plan.publishers, plan.subscribers, plan.size
    )
}

/// A progress bar on stderr, counting first deliveries; hidden when stderr is not a
/// terminal (CI logs, pipes), so scripted runs print nothing but their result.
fn progress_bar(plan: &Plan, qos: u8) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match plan.stop {
        Stop::Messages(k) => {
            let total = k * u64::from(plan.publishers) * u64::from(plan.subscribers);
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} deliveries, {per_sec}, {elapsed}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        Stop::After(_) => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} {spinner} {pos} deliveries, {per_sec}, {elapsed}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        }
    };
    bar.set_prefix(format!("QoS {qos}"));
    bar
}

/// Wall-clock nanoseconds derived from a monotonic clock: comparable between the
/// tasks of this process (publishers and subscribers share it) and immune to clock
/// steps during a run, while still meaning "Unix time" in the payload.
#[derive(Debug, Clone, Copy)]
struct Clock {
    origin: Instant,
    origin_unix_ns: u64,
}

impl Clock {
    fn new() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Clock {
            origin: Instant::now(),
            origin_unix_ns: unix,
        }
    }

    fn now_ns(&self) -> u64 {
        self.origin_unix_ns + self.origin.elapsed().as_nanos() as u64
    }

    fn instant_at(&self, unix_ns: u64) -> tokio::time::Instant {
        let after = Duration::from_nanos(unix_ns.saturating_sub(self.origin_unix_ns));
        tokio::time::Instant::from_std(self.origin + after)
    }
}

/// The bench payload: a fixed header, then padding up to `--size`.
///
/// ```text
/// 0..4    b"AQB1"                magic and layout version
/// 4..8    publisher index        u32, big endian
/// 8..16   sequence number        u64, big endian, 0, 1, 2... per publisher and level
/// 16..24  send time              u64, Unix ns, just before the client is handed it
/// 24..32  scheduled send time    u64, Unix ns (= send time without --rate)
/// 32..    b'.' padding
/// ```
pub mod payload {
    pub const MAGIC: [u8; 4] = *b"AQB1";
    pub const HEADER_LEN: usize = 32;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Header {
        pub publisher: u32,
        pub seq: u64,
        pub sent_ns: u64,
        pub intended_ns: u64,
    }

    /// The payload for `h`, padded to `size` bytes (never shorter than the header).
    pub fn encode(h: &Header, size: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(size.max(HEADER_LEN));
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(&h.publisher.to_be_bytes());
        v.extend_from_slice(&h.seq.to_be_bytes());
        v.extend_from_slice(&h.sent_ns.to_be_bytes());
        v.extend_from_slice(&h.intended_ns.to_be_bytes());
        v.resize(size.max(HEADER_LEN), b'.');
        v
    }

    /// The header of a bench payload; `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN || b[..4] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(Header {
            publisher: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
            seq: u64_at(8),
            sent_ns: u64_at(16),
            intended_ns: u64_at(24),
        })
    }
}

// ---------------------------------------------------------------------------
// One QoS level
// ---------------------------------------------------------------------------

/// Everything measured at one QoS level.
struct LevelRun {
    qos: u8,
    error: Option<String>,
    publishers: Vec<PubOutcome>,
    subscribers: Vec<SubOutcome>,
    /// End-to-end latency: from the scheduled send time with --rate, else the send time.
    latency: Histogram,
    /// From the actual send time (only differs from `latency` with --rate).
    raw: Histogram,
    ack: Histogram,
}

impl LevelRun {
    fn failed(qos: u8, error: String) -> LevelRun {
        LevelRun {
            qos,
            error: Some(error),
            publishers: Vec::new(),
            subscribers: Vec::new(),
            latency: Histogram::new(),
            raw: Histogram::new(),
            ack: Histogram::new(),
        }
    }
}

async fn run_level(plan: Arc<Plan>, qos: u8, clock: Clock, bar: ProgressBar) -> LevelRun {
    let base = plan.base_topic(qos);

    // Subscribers first, each confirmed by its SUBACK, so no message is published
    // before every subscriber can receive it.
    let mut subs = Vec::new();
    for j in 0..plan.subscribers {
        match start_subscriber(&plan, qos, j, &base, clock, bar.clone()).await {
            Ok(s) => subs.push(s),
            Err(e) => {
                stop_subscribers(subs).await;
                return LevelRun::failed(qos, e);
            }
        }
    }
    tracing::debug!(qos, subscribers = subs.len(), topic = %base, "subscribed");

    // Connect every publisher before any publishes, so connection set-up is not
    // counted in the throughput, and they all start on the same schedule.
    let mut connected = Vec::new();
    for i in 0..plan.publishers {
        let id = plan.client_id(qos, 'p', i);
        let mut opts = crate::mqtt::options(&plan.mqtt, &id);
        opts.set_inflight(plan.inflight);
        let (client, mut eventloop) = plan.client(opts);
        if let Err(e) = crate::mqtt::wait_connected(&mut eventloop, &plan.mqtt, plan.timeout).await
        {
            for (client, eventloop) in connected {
                close(client, eventloop).await;
            }
            stop_subscribers(subs).await;
            return LevelRun::failed(qos, format!("publisher {i}: {e}"));
        }
        connected.push((client, eventloop));
    }

    let start_ns = clock.now_ns() + 20_000_000;
    let tasks: Vec<JoinHandle<PubOutcome>> = connected
        .into_iter()
        .enumerate()
        .map(|(i, (client, eventloop))| {
            let plan = plan.clone();
            let topic = format!("{base}/p{i}");
            tokio::spawn(run_publisher(
                plan, qos, i as u32, topic, client, eventloop, clock, start_ns,
            ))
        })
        .collect();
    let mut publishers = Vec::new();
    for t in tasks {
        match t.await {
            Ok(p) => publishers.push(p),
            Err(e) => publishers.push(PubOutcome::crashed(e.to_string())),
        }
    }
    let publish_end_ns = clock.now_ns();
    let sent: BTreeMap<u32, u64> = publishers.iter().map(|p| (p.id, p.sent)).collect();
    let expected: u64 = sent.values().sum();
    tracing::debug!(qos, sent = expected, "publishers done");

    // Subscribers stop once they have everything (and a short linger for late
    // duplicates), or after `grace` without traffic, whichever comes first.
    let hard_stop = publish_end_ns + (plan.grace + plan.timeout).as_nanos() as u64;
    let mut active: Vec<bool> = vec![true; subs.len()];
    while active.iter().any(|a| *a) {
        let now = clock.now_ns();
        for (s, a) in subs.iter().zip(active.iter_mut()) {
            if !*a {
                continue;
            }
            let quiet_since = s
                .shared
                .last_recv_ns
                .load(Ordering::Relaxed)
                .max(publish_end_ns);
            let quiet = Duration::from_nanos(now.saturating_sub(quiet_since));
            let complete = s.shared.unique.load(Ordering::Relaxed) >= expected;
            let finished = s.shared.finished.load(Ordering::Relaxed) == 1;
            if finished || (complete && quiet >= LINGER) || quiet >= plan.grace || now >= hard_stop
            {
                let _ = s.client.try_disconnect();
                *a = false;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let subscribers = join_subscribers(subs).await;

    let mut latency = Histogram::new();
    let mut raw = Histogram::new();
    for s in &subscribers {
        latency.merge(&s.latency);
        raw.merge(&s.raw);
    }
    let mut ack = Histogram::new();
    for p in &publishers {
        ack.merge(&p.ack);
    }
    let received: u64 = subscribers.iter().map(|s| s.tracker.unique()).sum();
    let error = publishers
        .iter()
        .find_map(|p| p.error.clone())
        .or_else(|| subscribers.iter().find_map(|s| s.error.clone()))
        .or_else(|| {
            (expected > 0 && received == 0).then(|| {
                let who = plan.mqtt.username.as_deref().unwrap_or("(anonymous)");
                format!(
                    "nothing was delivered: may the account {who:?} publish and subscribe under {TOPIC_ROOT}/#? (the operator account may)"
                )
            })
        });
    LevelRun {
        qos,
        error,
        publishers,
        subscribers,
        latency,
        raw,
        ack,
    }
}

// ---------------------------------------------------------------------------
// Subscribers
// ---------------------------------------------------------------------------

#[derive(Default)]
struct SubShared {
    /// Distinct messages received so far (read by the level's stop logic).
    unique: AtomicU64,
    last_recv_ns: AtomicU64,
    /// 1 once the receive loop ended on its own (connection lost).
    finished: AtomicU64,
}

struct SubHandle {
    client: AsyncClient,
    shared: Arc<SubShared>,
    task: JoinHandle<SubOutcome>,
}

#[derive(Default)]
struct SubOutcome {
    id: u32,
    tracker: SequenceTracker,
    latency: Histogram,
    raw: Histogram,
    last_recv_ns: Option<u64>,
    malformed: u64,
    /// Messages left unacknowledged before the injected reconnect.
    injected: u64,
    error: Option<String>,
}

async fn start_subscriber(
    plan: &Arc<Plan>,
    qos: u8,
    j: u32,
    base: &str,
    clock: Clock,
    bar: ProgressBar,
) -> Result<SubHandle, String> {
    let id = plan.client_id(qos, 's', j);
    let inject = plan.inject.filter(|_| j == 0 && qos == 1);
    let mut opts = crate::mqtt::options(&plan.mqtt, &id);
    if inject.is_some() {
        // A persistent session, so the broker keeps (and redelivers) what it sent
        // but never got a PUBACK for; manual acks, so we choose what that is.
        opts.set_clean_session(false);
        opts.set_manual_acks(true);
    }
    let (client, mut eventloop) = plan.client(opts);
    crate::mqtt::wait_connected(&mut eventloop, &plan.mqtt, plan.timeout)
        .await
        .map_err(|e| format!("subscriber {j}: {e}"))?;
    let filter = format!("{base}/+");
    client
        .subscribe(&filter, to_qos(qos))
        .await
        .map_err(|e| format!("subscriber {j}: {e}"))?;
    let deadline = tokio::time::Instant::now() + plan.timeout;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => {
                return Err(format!(
                    "subscriber {j}: no SUBACK for {filter} within {:?}",
                    plan.timeout
                ))
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(granted)) if *granted as u8 >= qos => break,
                    Some(SubscribeReasonCode::Success(granted)) => {
                        return Err(format!(
                            "the broker granted only QoS {} to a QoS {qos} subscription: its max_qos is below {qos}, so this level cannot be measured on it",
                            *granted as u8
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "the broker refused the subscription to {filter} (may the account {:?} read it?)",
                            plan.mqtt.username.as_deref().unwrap_or("(anonymous)")
                        ))
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("subscriber {j}: connection lost: {e}")),
        }
    }
    let shared = Arc::new(SubShared::default());
    let task = tokio::spawn(receive(
        plan.clone(),
        id,
        j,
        eventloop,
        inject,
        shared.clone(),
        clock,
        bar,
    ));
    Ok(SubHandle {
        client,
        shared,
        task,
    })
}

/// Drives one subscriber's event loop until its DISCONNECT is sent (the level asks
/// for it) or the connection is lost.
#[allow(clippy::too_many_arguments)]
async fn receive(
    plan: Arc<Plan>,
    client_id: String,
    j: u32,
    mut eventloop: EventLoop,
    inject: Option<u64>,
    shared: Arc<SubShared>,
    clock: Clock,
    bar: ProgressBar,
) -> SubOutcome {
    let with_schedule = plan.rate.is_some();
    let mut out = SubOutcome {
        id: j,
        ..SubOutcome::default()
    };
    let mut withholding = inject;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let now = clock.now_ns();
                let Some(h) = payload::decode(&p.payload) else {
                    out.malformed += 1;
                    continue;
                };
                if out.tracker.observe(h.publisher, h.seq) != Arrival::Duplicate {
                    // A message's latency is that of its first delivery; a redelivery
                    // is counted as a duplicate, not as a slow message.
                    out.raw.record(now.saturating_sub(h.sent_ns));
                    let intended = with_schedule.then_some(h.intended_ns);
                    out.latency
                        .record(stats::corrected_latency_ns(now, h.sent_ns, intended));
                    shared.unique.fetch_add(1, Ordering::Relaxed);
                    bar.inc(1);
                }
                out.last_recv_ns = Some(now);
                shared.last_recv_ns.store(now, Ordering::Relaxed);
                if let Some(n) = withholding {
                    out.injected += 1;
                    if out.injected >= n {
                        // Crash and come back: drop the connection without DISCONNECT
                        // and forget what was read but not handled, as a killed
                        // process would; acknowledge normally from now on.
                        withholding = None;
                        eventloop.clean();
                        eventloop.state.events.clear();
                        eventloop.state.manual_acks = false;
                        eventloop.mqtt_options.set_manual_acks(false);
                        tracing::debug!(subscriber = j, withheld = n, "reconnecting to redeliver");
                    }
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if !ack.session_present {
                    out.error = Some(format!(
                        "subscriber {j}: the broker did not keep its persistent session across the reconnect"
                    ));
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                out.error = Some(format!("subscriber {j}: connection lost: {e}"));
                break;
            }
        }
    }
    shared.finished.store(1, Ordering::Relaxed);
    drop(eventloop);
    if inject.is_some() {
        forget_session(&plan, &client_id).await;
    }
    out
}

/// Connects once with a clean session so the broker drops the persistent session of
/// `client_id` (it would otherwise keep it, and queue for it, for days).
async fn forget_session(plan: &Plan, client_id: &str) {
    if let Ok((client, eventloop)) = crate::mqtt::connect(&plan.mqtt, client_id, plan.timeout).await
    {
        close(client, eventloop).await;
    }
}

/// Sends DISCONNECT and drives the loop until it is written (bounded in time).
async fn close(client: AsyncClient, mut eventloop: EventLoop) {
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Ok(ev) = eventloop.poll().await {
            if ev == Event::Outgoing(Outgoing::Disconnect) {
                break;
            }
        }
    })
    .await;
}

async fn stop_subscribers(subs: Vec<SubHandle>) {
    for s in &subs {
        let _ = s.client.try_disconnect();
    }
    join_subscribers(subs).await;
}

async fn join_subscribers(subs: Vec<SubHandle>) -> Vec<SubOutcome> {
    let mut out = Vec::new();
    for s in subs {
        let mut task = s.task;
        match tokio::time::timeout(CLOSE_TIMEOUT + Duration::from_secs(1), &mut task).await {
            Ok(Ok(o)) => out.push(o),
            Ok(Err(e)) => out.push(SubOutcome {
                error: Some(format!("subscriber task failed: {e}")),
                ..SubOutcome::default()
            }),
            Err(_) => {
                task.abort();
                out.push(SubOutcome {
                    error: Some("a subscriber did not close its connection".into()),
                    ..SubOutcome::default()
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------

#[derive(Default)]
struct PubShared {
    /// Messages done: written (QoS 0), PUBACK received (QoS 1), PUBCOMP received (QoS 2).
    completed: AtomicU64,
    last_done_ns: AtomicU64,
    notify: Notify,
    error: Mutex<Option<String>>,
}

impl PubShared {
    fn error(&self) -> Option<String> {
        self.error.lock().map(|e| e.clone()).unwrap_or(None)
    }
}

struct PubOutcome {
    id: u32,
    sent: u64,
    completed: u64,
    first_send_ns: Option<u64>,
    last_done_ns: Option<u64>,
    ack: Histogram,
    unpaired_acks: u64,
    error: Option<String>,
}

impl PubOutcome {
    fn crashed(e: String) -> PubOutcome {
        PubOutcome {
            id: u32::MAX,
            sent: 0,
            completed: 0,
            first_send_ns: None,
            last_done_ns: None,
            ack: Histogram::new(),
            unpaired_acks: 0,
            error: Some(format!("publisher task failed: {e}")),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_publisher(
    plan: Arc<Plan>,
    qos: u8,
    i: u32,
    topic: String,
    client: AsyncClient,
    eventloop: EventLoop,
    clock: Clock,
    start_ns: u64,
) -> PubOutcome {
    let shared = Arc::new(PubShared::default());
    let mut driver = tokio::spawn(drive_publisher(
        eventloop,
        qos,
        i,
        plan.inflight,
        shared.clone(),
        clock,
    ));

    // Publishers share the total rate evenly and are staggered within one interval.
    let schedule = plan.rate.map(|r| {
        RateSchedule::new(
            r / f64::from(plan.publishers),
            f64::from(i) / f64::from(plan.publishers),
        )
    });
    let end_ns = match plan.stop {
        Stop::After(d) => Some(start_ns + d.as_nanos() as u64),
        Stop::Messages(_) => None,
    };
    tokio::time::sleep_until(clock.instant_at(start_ns)).await;
    let mut sent = 0u64;
    let mut first_send_ns = None;
    let mut error = None;
    loop {
        if let Stop::Messages(k) = plan.stop {
            if sent >= k {
                break;
            }
        }
        let intended = match schedule {
            Some(s) => {
                let t = start_ns + s.intended_offset_ns(sent);
                if end_ns.is_some_and(|end| t >= end) {
                    break;
                }
                tokio::time::sleep_until(clock.instant_at(t)).await;
                Some(t)
            }
            None => None,
        };
        let now = clock.now_ns();
        if intended.is_none() && end_ns.is_some_and(|end| now >= end) {
            break;
        }
        let header = payload::Header {
            publisher: i,
            seq: sent,
            sent_ns: now,
            intended_ns: intended.unwrap_or(now),
        };
        let body = payload::encode(&header, plan.size);
        // Resolves once the event loop has room for the request: a publisher that is
        // out of in-flight slots waits here, and with --rate that delay shows in the
        // latency measured from the scheduled time.
        if let Err(e) = client
            .publish(topic.as_str(), to_qos(qos), false, body)
            .await
        {
            error = Some(
                shared
                    .error()
                    .unwrap_or_else(|| format!("publisher {i}: {e}")),
            );
            break;
        }
        first_send_ns.get_or_insert(now);
        sent += 1;
        if let Some(e) = shared.error() {
            error = Some(e);
            break;
        }
    }

    // Every message acknowledged (or written, at QoS 0) before DISCONNECT: a QoS 2
    // message whose PUBCOMP has not come back is still in flight, and closing now
    // could lose it.
    if error.is_none() {
        let deadline = tokio::time::Instant::now() + plan.timeout;
        while shared.completed.load(Ordering::Acquire) < sent {
            if let Some(e) = shared.error() {
                error = Some(e);
                break;
            }
            if tokio::time::timeout_at(deadline, shared.notify.notified())
                .await
                .is_err()
            {
                let done = shared.completed.load(Ordering::Acquire);
                error = Some(format!(
                    "publisher {i}: {} of {sent} messages not acknowledged within {:?}",
                    sent - done,
                    plan.timeout
                ));
                break;
            }
        }
    }
    let _ = client.try_disconnect();
    let out = match tokio::time::timeout(CLOSE_TIMEOUT, &mut driver).await {
        Ok(Ok(d)) => Some(d),
        Ok(Err(_)) => None,
        Err(_) => {
            driver.abort();
            None
        }
    };
    let (ack, unpaired_acks) = out.map_or((Histogram::new(), 0), |d| (d.ack, d.unpaired));
    let last = shared.last_done_ns.load(Ordering::Acquire);
    PubOutcome {
        id: i,
        sent,
        completed: shared.completed.load(Ordering::Acquire),
        first_send_ns,
        last_done_ns: (last > 0).then_some(last),
        ack,
        unpaired_acks,
        error: error.or_else(|| shared.error()),
    }
}

struct DriverOut {
    ack: Histogram,
    unpaired: u64,
}

/// Drives a publisher's event loop and times acknowledgements.
///
/// rumqttc's `publish` returns no packet id. The event loop assigns it when it takes
/// the request from its channel, writes and flushes the PUBLISH, and only then yields
/// `Outgoing::Publish(pkid)`: that instant is the send time. A packet id is not reused
/// before its acknowledgement arrives (rumqttc holds the next publish back on a
/// collision), so one slot per id pairs each PUBACK (QoS 1) or PUBCOMP (QoS 2) with
/// the PUBLISH it acknowledges, whatever order the broker acknowledges in.
async fn drive_publisher(
    mut eventloop: EventLoop,
    qos: u8,
    i: u32,
    inflight: u16,
    shared: Arc<PubShared>,
    clock: Clock,
) -> DriverOut {
    // rumqttc numbers packets 1..=inflight; slot 0 is QoS 0's "no id".
    let mut sent_at = vec![0u64; usize::from(inflight) + 1];
    let mut out = DriverOut {
        ack: Histogram::new(),
        unpaired: 0,
    };
    let complete = |shared: &PubShared, now: u64| {
        shared.last_done_ns.store(now, Ordering::Release);
        shared.completed.fetch_add(1, Ordering::AcqRel);
        shared.notify.notify_one();
    };
    loop {
        let ev = eventloop.poll().await;
        let now = clock.now_ns();
        let acked = match ev {
            Ok(Event::Outgoing(Outgoing::Publish(0))) => {
                complete(&shared, now);
                None
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(slot) = sent_at.get_mut(usize::from(pkid)) {
                    *slot = now;
                }
                None
            }
            Ok(Event::Incoming(Packet::PubAck(a))) if qos == 1 => Some(a.pkid),
            Ok(Event::Incoming(Packet::PubComp(c))) if qos == 2 => Some(c.pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => None,
            Err(e) => {
                let hint = if qos > 0 {
                    format!(
                        " (a broker whose max_qos is below {qos} disconnects QoS {qos} publishers)"
                    )
                } else {
                    String::new()
                };
                if let Ok(mut slot) = shared.error.lock() {
                    slot.get_or_insert(format!(
                        "publisher {i}: the broker closed the connection: {e}{hint}"
                    ));
                }
                shared.notify.notify_one();
                break;
            }
        };
        if let Some(pkid) = acked {
            let t = sent_at.get_mut(usize::from(pkid)).map_or(0, std::mem::take);
            if t == 0 {
                out.unpaired += 1;
            } else {
                out.ack.record(now.saturating_sub(t));
            }
            complete(&shared, now);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------

/// Latency figures in milliseconds; `null` percentiles when nothing was measured.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencyMs {
    pub samples: u64,
    pub min: Option<f64>,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

impl LatencyMs {
    fn of(h: &Histogram) -> LatencyMs {
        match LatencySummary::of(h) {
            None => LatencyMs::default(),
            Some(s) => LatencyMs {
                samples: s.samples,
                min: Some(round3(s.min)),
                mean: Some(round3(s.mean)),
                p50: Some(round3(s.p50)),
                p90: Some(round3(s.p90)),
                p99: Some(round3(s.p99)),
                p999: Some(round3(s.p999)),
                max: Some(round3(s.max)),
            },
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[derive(Debug, Clone, Serialize)]
pub struct PublisherFigures {
    pub id: u32,
    pub sent: u64,
    /// Written (QoS 0) or acknowledged (QoS 1, 2).
    pub completed: u64,
    pub throughput_msgs_per_s: f64,
    pub ack_ms: Option<LatencyMs>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriberFigures {
    pub id: u32,
    #[serde(flatten)]
    pub delivery: Delivery,
    pub throughput_msgs_per_s: f64,
    pub latency_ms: LatencyMs,
}

/// One QoS level's results: the JSON object, and the source of the table and CSV row.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    pub qos: u8,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Messages published (all publishers).
    pub sent: u64,
    /// Deliveries that should have happened: `sent` x subscribers.
    pub expected: u64,
    /// Distinct messages delivered, summed over subscribers (duplicates excluded).
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub loss_percent: f64,
    /// Delivered throughput: `received` over the time from the first send to the last
    /// delivery, all subscribers together.
    pub throughput_msgs_per_s: f64,
    /// `sent` over the time from the first send to the last write (QoS 0) or
    /// acknowledgement (QoS 1, 2).
    pub publish_throughput_msgs_per_s: f64,
    /// End-to-end latency, first deliveries only.
    pub latency_ms: LatencyMs,
    /// `"scheduled_send_time"` with --rate (coordinated-omission corrected), else
    /// `"send_time"`.
    pub latency_from: &'static str,
    /// With --rate: the same latency measured from the actual send time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_uncorrected_ms: Option<LatencyMs>,
    /// Publish-to-acknowledgement time (PUBACK at QoS 1, PUBCOMP at QoS 2); null at QoS 0.
    pub ack_ms: Option<LatencyMs>,
    pub ack_packet: Option<&'static str>,
    pub publishers: u32,
    pub subscribers: u32,
    pub size_bytes: usize,
    pub rate_msgs_per_s: Option<f64>,
    pub inflight: u16,
    /// TCP_NODELAY on the bench's client sockets (false with --nagle).
    pub tcp_nodelay: bool,
    /// Seconds from the first send to the last delivery.
    pub duration_s: f64,
    /// Messages left unacknowledged before the reconnect of --inject-redelivery.
    pub injected_redeliveries: u64,
    /// Payloads without a bench header (should be 0: nothing else publishes there).
    pub malformed: u64,
    /// Acknowledgements whose PUBLISH was not seen (should be 0).
    pub unpaired_acks: u64,
    pub per_publisher: Vec<PublisherFigures>,
    pub per_subscriber: Vec<SubscriberFigures>,
}

impl LevelRun {
    fn report(&self, plan: &Plan) -> LevelReport {
        let sent_map: BTreeMap<u32, u64> = self.publishers.iter().map(|p| (p.id, p.sent)).collect();
        let sent: u64 = sent_map.values().sum();
        let first_send = self.publishers.iter().filter_map(|p| p.first_send_ns).min();
        let secs = |from: Option<u64>, to: Option<u64>| match (from, to) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => 0.0,
        };
        let mut total = Delivery::default();
        let mut per_subscriber = Vec::new();
        for s in &self.subscribers {
            let mut d = s.tracker.delivery(&sent_map);
            if sent_map.is_empty() {
                d.expected = 0;
            }
            total.add(&d);
            per_subscriber.push(SubscriberFigures {
                id: s.id,
                delivery: d,
                throughput_msgs_per_s: round1(stats::throughput(
                    d.received,
                    secs(first_send, s.last_recv_ns),
                )),
                latency_ms: LatencyMs::of(&s.latency),
            });
        }
        // A subscriber that never reported still owed every message.
        let missing = u64::from(plan.subscribers).saturating_sub(self.subscribers.len() as u64);
        total.expected += missing * sent;
        total.lost += missing * sent;

        let last_recv = self.subscribers.iter().filter_map(|s| s.last_recv_ns).max();
        let last_done = self.publishers.iter().filter_map(|p| p.last_done_ns).max();
        let per_publisher = self
            .publishers
            .iter()
            .map(|p| PublisherFigures {
                id: p.id,
                sent: p.sent,
                completed: p.completed,
                throughput_msgs_per_s: round1(stats::throughput(
                    p.sent,
                    secs(p.first_send_ns, p.last_done_ns),
                )),
                ack_ms: (self.qos > 0).then(|| LatencyMs::of(&p.ack)),
            })
            .collect();
        let with_schedule = plan.rate.is_some();
        LevelReport {
            qos: self.qos,
            ok: self.error.is_none(),
            error: self.error.clone(),
            sent,
            expected: total.expected,
            received: total.received,
            lost: total.lost,
            duplicates: total.duplicates,
            reordered: total.reordered,
            loss_percent: if total.expected == 0 {
                0.0
            } else {
                round3(100.0 * total.lost as f64 / total.expected as f64)
            },
            throughput_msgs_per_s: round1(stats::throughput(
                total.received,
                secs(first_send, last_recv),
            )),
            publish_throughput_msgs_per_s: round1(stats::throughput(
                sent,
                secs(first_send, last_done),
            )),
            latency_ms: LatencyMs::of(&self.latency),
            latency_from: if with_schedule {
                "scheduled_send_time"
            } else {
                "send_time"
            },
            latency_uncorrected_ms: with_schedule.then(|| LatencyMs::of(&self.raw)),
            ack_ms: (self.qos > 0).then(|| LatencyMs::of(&self.ack)),
            ack_packet: match self.qos {
                1 => Some("PUBACK"),
                2 => Some("PUBCOMP"),
                _ => None,
            },
            publishers: plan.publishers,
            subscribers: plan.subscribers,
            size_bytes: plan.size,
            rate_msgs_per_s: plan.rate,
            inflight: plan.inflight,
            tcp_nodelay: !plan.nagle,
            duration_s: round3(secs(first_send, last_recv.max(last_done))),
            injected_redeliveries: self.subscribers.iter().map(|s| s.injected).sum(),
            malformed: self.subscribers.iter().map(|s| s.malformed).sum(),
            unpaired_acks: self.publishers.iter().map(|p| p.unpaired_acks).sum(),
            per_publisher,
            per_subscriber,
        }
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn to_table(reports: &[LevelReport], corrected: bool) -> String {
    #[derive(Tabled)]
    struct Row {
        #[tabled(rename = "QoS")]
        qos: u8,
        result: &'static str,
        sent: u64,
        received: u64,
        lost: u64,
        dup: u64,
        reord: u64,
        #[tabled(rename = "publish msg/s")]
        publish: String,
        #[tabled(rename = "delivered msg/s")]
        delivered: String,
        #[tabled(rename = "p50 ms")]
        p50: String,
        #[tabled(rename = "p90 ms")]
        p90: String,
        #[tabled(rename = "p99 ms")]
        p99: String,
        #[tabled(rename = "p99.9 ms")]
        p999: String,
        #[tabled(rename = "max ms")]
        max: String,
        #[tabled(rename = "ack p50/p99 ms")]
        ack: String,
    }
    let rows = reports.iter().map(|r| Row {
        qos: r.qos,
        result: if r.ok { "ok" } else { "FAIL" },
        sent: r.sent,
        received: r.received,
        lost: r.lost,
        dup: r.duplicates,
        reord: r.reordered,
        publish: format!("{:.0}", r.publish_throughput_msgs_per_s),
        delivered: format!("{:.0}", r.throughput_msgs_per_s),
        p50: fmt_ms(r.latency_ms.p50),
        p90: fmt_ms(r.latency_ms.p90),
        p99: fmt_ms(r.latency_ms.p99),
        p999: fmt_ms(r.latency_ms.p999),
        max: fmt_ms(r.latency_ms.max),
        ack: r.ack_ms.map_or_else(
            || "-".into(),
            |a| format!("{} / {}", fmt_ms(a.p50), fmt_ms(a.p99)),
        ),
    });
    let mut out = Table::new(rows).with(Style::rounded()).to_string();

    #[derive(Tabled)]
    struct ClientRow {
        #[tabled(rename = "QoS")]
        qos: u8,
        client: String,
        messages: u64,
        #[tabled(rename = "msg/s")]
        rate: String,
        #[tabled(rename = "p99 ms")]
        p99: String,
    }
    let clients: Vec<ClientRow> = reports
        .iter()
        .flat_map(|r| {
            let pubs = r.per_publisher.iter().map(move |p| ClientRow {
                qos: r.qos,
                client: format!("publisher {}", p.id),
                messages: p.sent,
                rate: format!("{:.0}", p.throughput_msgs_per_s),
                p99: p
                    .ack_ms
                    .map_or_else(|| "-".into(), |a| format!("{} (ack)", fmt_ms(a.p99))),
            });
            let subs = r.per_subscriber.iter().map(move |s| ClientRow {
                qos: r.qos,
                client: format!("subscriber {}", s.id),
                messages: s.delivery.received,
                rate: format!("{:.0}", s.throughput_msgs_per_s),
                p99: fmt_ms(s.latency_ms.p99),
            });
            pubs.chain(subs)
        })
        .collect();
    if !clients.is_empty() {
        out.push_str("\nPer client:\n");
        out.push_str(&Table::new(clients).with(Style::rounded()).to_string());
    }
    out.push('\n');
    out.push_str(if corrected {
        "Latency from each message's scheduled send time (coordinated-omission corrected)."
    } else {
        "Latency from each message's send time (no --rate: no coordinated-omission correction)."
    });
    for r in reports.iter().filter(|r| !r.ok) {
        let _ = write!(
            out,
            "\nQoS {} FAILED: {}",
            r.qos,
            r.error.as_deref().unwrap_or("")
        );
    }
    out
}

/// One CSV row per QoS level: the JSON object flattened (per-client lists left out).
#[derive(Debug, Serialize)]
struct CsvRow<'a> {
    qos: u8,
    ok: bool,
    sent: u64,
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    reordered: u64,
    loss_percent: f64,
    throughput_msgs_per_s: f64,
    publish_throughput_msgs_per_s: f64,
    latency_p50_ms: Option<f64>,
    latency_p90_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    latency_p999_ms: Option<f64>,
    latency_max_ms: Option<f64>,
    latency_from: &'a str,
    ack_p50_ms: Option<f64>,
    ack_p99_ms: Option<f64>,
    ack_max_ms: Option<f64>,
    publishers: u32,
    subscribers: u32,
    size_bytes: usize,
    rate_msgs_per_s: Option<f64>,
    duration_s: f64,
    error: &'a str,
}

fn to_csv(reports: &[LevelReport]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in reports {
        let ack = r.ack_ms.unwrap_or_default();
        w.serialize(CsvRow {
            qos: r.qos,
            ok: r.ok,
            sent: r.sent,
            expected: r.expected,
            received: r.received,
            lost: r.lost,
            duplicates: r.duplicates,
            reordered: r.reordered,
            loss_percent: r.loss_percent,
            throughput_msgs_per_s: r.throughput_msgs_per_s,
            publish_throughput_msgs_per_s: r.publish_throughput_msgs_per_s,
            latency_p50_ms: r.latency_ms.p50,
            latency_p90_ms: r.latency_ms.p90,
            latency_p99_ms: r.latency_ms.p99,
            latency_p999_ms: r.latency_ms.p999,
            latency_max_ms: r.latency_ms.max,
            latency_from: r.latency_from,
            ack_p50_ms: ack.p50,
            ack_p99_ms: ack.p99,
            ack_max_ms: ack.max,
            publishers: r.publishers,
            subscribers: r.subscribers,
            size_bytes: r.size_bytes,
            rate_msgs_per_s: r.rate_msgs_per_s,
            duration_s: r.duration_s,
            error: r.error.as_deref().unwrap_or(""),
        })?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

// ---------------------------------------------------------------------------
// Chart
// ---------------------------------------------------------------------------

/// The latency distribution of each QoS level as an SVG percentile plot: latency (ms,
/// linear) against percentile on a "nines" axis (50 %, 90 %, 99 %, 99.9 %...), where
/// the tail, the part that differs between QoS levels, gets as much room as the body.
pub fn latency_chart_svg(series: &[(u8, &Histogram)], title: &str) -> String {
    const W: f64 = 840.0;
    const H: f64 = 460.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 190.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);

    // As many nines as the largest sample count resolves, between 1 and 5.
    let most = series
        .iter()
        .map(|(_, h)| h.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let nines = (most as f64).log10().floor().clamp(1.0, 5.0);
    let y_top = series
        .iter()
        .filter_map(|(_, h)| h.max())
        .map(stats::ms)
        .fold(0.0, f64::max);
    let step = nice_step(y_top.max(0.001) / 5.0);
    let y_max = (y_top / step).ceil().max(1.0) * step;
    let x = |n: f64| LEFT + pw * n / nines;
    let y = |ms: f64| TOP + ph * (1.0 - ms / y_max);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"##,
        W / 2.0,
        xml_escape(title)
    );
    // Axes, grid and ticks.
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let mut v = 0.0;
    while v <= y_max + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            trim_float(v)
        );
        v += step;
    }
    for n in 0..=(nines as u32) {
        let xx = x(f64::from(n));
        let label = match n {
            0 => "0%".to_owned(),
            n => format!("{}%", 100.0 - 100.0 / 10f64.powi(n as i32)),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"##,
        LEFT + pw / 2.0,
        H - 16.0
    );
    let _ = writeln!(
        s,
        r##"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (ms)</text>"##,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // One line per QoS level.
    const COLORS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];
    const POINTS: u32 = 200;
    for (k, (qos, h)) in series.iter().enumerate() {
        let color = COLORS[usize::from(*qos).min(2)];
        let mut pts = String::new();
        for p in 0..=POINTS {
            let n = nines * f64::from(p) / f64::from(POINTS);
            let q = if p == POINTS {
                1.0
            } else {
                1.0 - 10f64.powf(-n)
            };
            if let Some(val) = h.quantile(q) {
                let _ = write!(pts, "{:.1},{:.1} ", x(n), y(stats::ms(val)));
            }
        }
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
            pts.trim_end()
        );
        let ly = TOP + 20.0 + 22.0 * k as f64;
        let lx = LEFT + pw + 16.0;
        let p99 = h.quantile(0.99).map_or(0.0, stats::ms);
        let _ = writeln!(
            s,
            r##"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">QoS {qos} (p99 {p99:.2} ms)</text>"##,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        T::try_parse_from(v).map(|t| t.args)
    }

    #[test]
    fn qos_lists() {
        assert_eq!(parse_qos_levels("0,1,2").unwrap().0, [0, 1, 2]);
        assert_eq!(parse_qos_levels(" 2 , 0").unwrap().0, [2, 0]);
        assert!(parse_qos_levels("3")
            .unwrap_err()
            .contains("does not exist"));
        assert!(parse_qos_levels("").unwrap_err().contains("at least one"));
        assert!(parse_qos_levels("0,,1").is_err());
        assert!(parse_qos_levels("1,1").unwrap_err().contains("twice"));
        assert!(parse_qos_levels("one").is_err());
    }

    #[test]
    fn defaults_and_limits() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            (a.qos.0.clone(), a.publishers, a.subscribers, a.size),
            (vec![0, 1, 2], 1, 1, 200)
        );
        let p = Plan::from_args(&a).unwrap();
        assert!(matches!(p.stop, Stop::Messages(DEFAULT_MESSAGES)));
        assert!(p.base_topic(1).starts_with("entrepot/qosbench/"));
        for bad in [
            &["--qos", "3"][..],
            &["--publishers", "0"],
            &["--subscribers", "0"],
            &["--messages", "0"],
            &["--size", "31"],
            &["--size", "16001"],
            &["--messages", "5", "--duration", "1s"],
            &["--json", "--csv"],
            &["--rate", "0"],
            &["--duration", "0s"],
            &["--chart", "x.png"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        assert_eq!(parse(&["--size", "32"]).unwrap().size, 32);
        assert_eq!(parse(&["--size", "16000"]).unwrap().size, 16000);
    }

    #[test]
    fn cross_field_checks() {
        let a = parse(&["--qos", "0", "--inject-redelivery", "5"]).unwrap();
        assert!(Plan::from_args(&a).unwrap_err().0.contains("QoS 1"));
        let a = parse(&["--qos", "1", "--messages", "5", "--inject-redelivery", "5"]).unwrap();
        assert!(Plan::from_args(&a).is_err());
        let a = parse(&["--qos", "1", "--messages", "6", "--inject-redelivery", "5"]).unwrap();
        assert!(Plan::from_args(&a).is_ok());
    }

    #[test]
    fn payload_round_trip() {
        let h = payload::Header {
            publisher: 7,
            seq: 123_456_789_012,
            sent_ns: 1_795_850_102_125_000_001,
            intended_ns: 1_795_850_102_124_000_000,
        };
        let b = payload::encode(&h, 100);
        assert_eq!(b.len(), 100);
        assert_eq!(payload::decode(&b), Some(h));
        assert_eq!(payload::encode(&h, 0).len(), payload::HEADER_LEN);
        assert_eq!(
            payload::decode(b"{\"temp\": 21.4, \"hum\": 40, \"x\": 1}"),
            None
        );
        assert_eq!(payload::decode(&b[..31]), None);
    }

    #[test]
    fn topics_are_not_readings() {
        // ingest reads entrepot/+/+/v1: four levels ending in v1.
        let p = Plan::from_args(&parse(&[]).unwrap()).unwrap();
        let topic = format!("{}/p3", p.base_topic(1));
        let levels: Vec<&str> = topic.split('/').collect();
        assert_eq!(levels.len(), 4);
        assert_ne!(levels[3], "v1");
        // Room left in the packet for the largest payload.
        assert!(2 + topic.len() + 2 + 5 + MAX_PAYLOAD <= crate::mqtt::MAX_PACKET_BYTES);
    }

    #[test]
    fn chart_has_one_line_per_level() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for i in 1..=1000u64 {
            a.record(i * 10_000);
            b.record(i * 30_000);
        }
        let svg = latency_chart_svg(&[(0, &a), (2, &b)], "t <&>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("QoS 2") && svg.contains("99.9%") && svg.contains("t &lt;&amp;&gt;"));
        // Nothing measured: still a valid, empty chart.
        assert!(latency_chart_svg(&[], "empty").contains("</svg>"));
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.5), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(42.0), 50.0);
        assert_eq!(trim_float(2.5), "2.5");
        assert_eq!(trim_float(10.0), "10");
    }
}
