//! `arng simulate`: a fleet of simulated temperature/humidity sensors that publish
//! the contract's readings, zone heartbeats, status and alerts to the broker, with
//! faults and a heatwave scenario on demand. Values come from the pure model in
//! [`crate::sim`]; this module owns the timing and the MQTT side.
//!
//! Shape of a run (one task each, so that a slow part never stalls another):
//! - one *driver* per MQTT connection polls rumqttc's event loop without pause: it
//!   reconnects with capped exponential backoff, announces `online` on every
//!   (re)connection, re-sends what was queued or in flight when a connection dropped
//!   (rumqttc would discard it on a clean session), and counts acknowledgements;
//! - one *generator* per connection paces the readings of its share of the sensors,
//!   spread evenly across the interval, and hands them to the connection, awaiting
//!   when the connection's queue is full: back-pressure, never a drop;
//! - a *heartbeat* task on a real `tokio::time::interval` (first beat at start);
//! - a *reporter* that logs one line per cycle across the zones (at most one per
//!   second for fast cycles) and draws a progress line on a terminal.
//!
//! A run ends when `--count`/`--duration` is reached or on Ctrl-C/SIGTERM: the
//! generators stop, each connection publishes `offline` (retained), the process waits
//! until the broker has acknowledged everything (bounded by `--ack-timeout`; a second
//! signal stops waiting) and disconnects cleanly, so the broker does not fire the last
//! will. Exit 0 when everything was acknowledged, 1 otherwise or when the broker could
//! not be reached within `--connect-timeout`, 2 on bad usage. docs/simulate.md is the
//! user's guide.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, LastWill, Outgoing, Packet,
    Publish, QoS, Request,
};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};

use super::UsageError;
use crate::config::{MqttArgs, Secret};
use crate::domain::alert::{Alert, AlertKind, AlertSource, AlertState};
use crate::domain::names::{parse_zone_list, validate_name};
use crate::domain::payload::{AlertLevel, Heartbeat, Reading};
use crate::domain::thresholds::{Metric, Thresholds, ZoneThresholds};
use crate::domain::{SensorId, Topic, Zone};
use crate::sim::{Fault, Sample, Scenario, SensorModel, SensorSetup};

/// Readings a connection may queue before its generator waits. Large enough to ride
/// out a scheduling hiccup at 50,000 messages/s, small enough to bound memory.
const QUEUE_CAPACITY: usize = 8192;
/// QoS 1/2 messages in flight per connection before rumqttc waits for acks.
const INFLIGHT: u16 = 1000;
/// Reconnection backoff: first delay, doubled per failed attempt, up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Above this many readings per second per connection, more connections are opened
/// by default (one rumqttc event loop is one task, i.e. at most one core).
const AUTO_RATE_PER_CONNECTION: f64 = 50_000.0;
const AUTO_MAX_CONNECTIONS: usize = 4;
/// How long, at the end, clean disconnections may take before tasks are abandoned.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Zones to simulate, comma-separated (e.g. nord,sud,est).
    #[arg(long, value_parser = parse_zones, value_name = "ZONES")]
    pub zones: ZoneList,

    /// Sensors per zone, named s1, s2... sN.
    #[arg(long, default_value_t = 3, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sensors_per_zone: u32,

    /// Time between two readings of one sensor (humantime: 5s, 200ms, 1m). The
    /// sensors' readings are spread evenly across it.
    #[arg(long, default_value = "5s", value_parser = positive_duration, value_name = "DURATION")]
    pub interval: Duration,

    /// Publish N readings per sensor, then exit once the broker has acknowledged them
    /// all (QoS 0: once written to the socket).
    #[arg(long, value_name = "N", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Publish the readings scheduled within this time (one per sensor per interval),
    /// then exit like --count. Without --count or --duration: run until Ctrl-C/SIGTERM.
    #[arg(long, value_parser = positive_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Seed of the signal model (noise, drift): the same seed and options give the
    /// same values. Random when absent; the seed in use is logged.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// QoS of the readings. Heartbeats are always QoS 0, alerts and status QoS 1.
    #[arg(long, default_value_t = 1, value_name = "0|1|2",
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,

    /// Publish readings as retained messages.
    #[arg(long)]
    pub retain: bool,

    /// Load generation: target readings per second across all sensors (overrides
    /// --interval: each sensor publishes every sensors/R seconds), or `max` for as
    /// fast as the broker accepts them.
    #[arg(long, value_parser = parse_rate, value_name = "R|max")]
    pub rate: Option<Rate>,

    /// MQTT connections to spread the sensors over. Default: 1, or one per 50,000
    /// readings/s of target rate (at most 4; `--rate max`: 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: Option<u16>,

    /// Time between two heartbeats of a zone (retained, on entrepot/heartbeat/<zone>).
    #[arg(long, default_value = "30s", value_parser = positive_duration, value_name = "DURATION")]
    pub heartbeat_interval: Duration,

    /// Inject a fault, KIND:ZONE[/SENSOR]@START[+DURATION] with KIND spike, stuck,
    /// dropout or drift; times relative to the start (e.g. spike:nord/s1@30s,
    /// dropout:sud@1m+20s). Repeatable. See docs/simulate.md.
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    pub faults: Vec<Fault>,

    /// Run a scenario: heatwave:ZONE@START[+DURATION] drives the zone's temperature
    /// above warning at START and above critical 3 intervals later. Repeatable.
    #[arg(long = "scenario", value_name = "SPEC", value_parser = parse_scenario)]
    pub scenarios: Vec<Scenario>,

    /// Thresholds document (JSON, the format of GET /thresholds) for `alert_level` and
    /// alerts. Default: the built-in thresholds.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,

    /// Do not publish alerts on entrepot/alerts/<zone>/sensor (`alert_level` stays in every
    /// reading). Implied with per-zone accounts, which may not publish alerts.
    #[arg(long)]
    pub no_alerts: bool,

    /// MQTT client name, also the status topic entrepot/status/<NAME> (last will).
    /// Default: `simulator`, or the account name with per-zone accounts. `{zone}` is
    /// replaced by the zone; with several connections `-1`, `-2`... are appended.
    #[arg(long, value_name = "NAME")]
    pub client_id: Option<String>,

    /// Give up (exit 1) when the broker cannot be reached for this long at start.
    #[arg(long, default_value = "10s", value_parser = positive_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// At the end, how long to wait for the broker to acknowledge what was published
    /// (exit 1 if it has not by then).
    #[arg(long, default_value = "10s", value_parser = positive_duration, value_name = "DURATION")]
    pub ack_timeout: Duration,

    /// Print a JSON summary on stdout at exit (published per zone, acknowledged,
    /// alerts, heartbeats, duration, rate).
    #[arg(long)]
    pub json: bool,

    /// Broker connection. A `{zone}` in --mqtt-username (and --mqtt-password) opens one
    /// connection per zone with that zone's account (e.g. sensor-{zone}).
    #[command(flatten)]
    pub mqtt: MqttArgs,
}

/// The validated `--zones` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneList(pub Vec<Zone>);

fn parse_zones(s: &str) -> Result<ZoneList, String> {
    parse_zone_list(s)
        .map(ZoneList)
        .map_err(|e| format!("{e} (expected a comma-separated list such as nord,sud,est)"))
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 5s, 200ms, 1m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// `--rate`: readings per second across the fleet, or unthrottled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    PerSecond(f64),
    Max,
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s == "max" {
        return Ok(Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(Rate::PerSecond(r)),
        _ => Err(
            "expected a number of readings per second above 0 (at most 10000000) or `max`".into(),
        ),
    }
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    s.parse()
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    s.parse()
}

// ---------------------------------------------------------------------------
// The plan: every option checked against the others before anything connects
// ---------------------------------------------------------------------------

/// One MQTT connection of the run.
#[derive(Debug, Clone)]
struct LinkPlan {
    client_id: String,
    mqtt: MqttArgs,
    /// Indices into the fleet (zone-major: nord s1, nord s2, sud s1...).
    sensors: Range<usize>,
    /// Zones whose heartbeat this connection publishes.
    heartbeat_zones: Vec<usize>,
}

#[derive(Debug)]
struct Plan {
    zones: Vec<Zone>,
    per_zone: u32,
    /// Time between two readings of one sensor.
    interval: Duration,
    /// False for `--rate max`.
    paced: bool,
    /// Readings per sensor, when the run is bounded by --count or a paced --duration.
    per_sensor: Option<u64>,
    /// `--duration` of an unpaced run (`--rate max`), measured on the clock.
    wall_limit: Option<Duration>,
    seed: u64,
    qos: QoS,
    retain: bool,
    heartbeat_interval: Duration,
    faults: Vec<Fault>,
    scenarios: Vec<Scenario>,
    thresholds: Thresholds,
    alerts: bool,
    connect_timeout: Duration,
    ack_timeout: Duration,
    json: bool,
    links: Vec<LinkPlan>,
}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

impl Plan {
    fn new(args: Args) -> Result<Plan, UsageError> {
        let zones = args.zones.0.clone();
        let per_zone = args.sensors_per_zone;
        let total = zones.len() * per_zone as usize;
        if total > 1_000_000 {
            return Err(usage(format!(
                "{total} sensors is more than one process simulates (at most 1000000: fewer zones or --sensors-per-zone)"
            )));
        }
        for f in &args.faults {
            check_target(&zones, per_zone, &f.zone, f.sensor.as_ref())
                .map_err(|e| usage(format!("--fault {f}: {e}")))?;
        }
        for s in &args.scenarios {
            check_target(&zones, per_zone, s.zone(), None)
                .map_err(|e| usage(format!("--scenario {s}: {e}")))?;
        }

        let (interval, paced) = match args.rate {
            None => (args.interval, true),
            Some(Rate::PerSecond(r)) => {
                let ns = (total as f64 * 1e9 / r).round().max(1.0) as u64;
                (Duration::from_nanos(ns), true)
            }
            Some(Rate::Max) => (args.interval, false),
        };
        let (per_sensor, wall_limit) = match (args.count, args.duration) {
            (Some(n), _) => (Some(n), None),
            (None, Some(d)) if paced => {
                let (d, i) = (d.as_nanos(), interval.as_nanos());
                (Some(d.div_ceil(i) as u64), None)
            }
            (None, Some(d)) => (None, Some(d)),
            (None, None) => (None, None),
        };

        let thresholds = match &args.thresholds {
            None => Thresholds::default(),
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| usage(format!("--thresholds {}: {e}", path.display())))?;
                Thresholds::from_json(&bytes)
                    .map_err(|e| usage(format!("--thresholds {}: {e}", path.display())))?
            }
        };

        let per_zone_accounts = args
            .mqtt
            .username
            .as_deref()
            .is_some_and(|u| u.contains("{zone}"));
        let target_rate = match args.rate {
            Some(Rate::Max) => f64::INFINITY,
            _ => total as f64 / interval.as_secs_f64(),
        };
        let links = if per_zone_accounts {
            if args.connections.is_some_and(|n| n > 1) {
                return Err(usage(
                    "--connections cannot be combined with per-zone accounts ({zone} in --mqtt-username): they open one connection per zone",
                ));
            }
            zone_links(&args, &zones, per_zone)?
        } else {
            let wanted = match args.connections {
                Some(n) => usize::from(n),
                None if target_rate.is_infinite() => 2,
                None => ((target_rate / AUTO_RATE_PER_CONNECTION).ceil() as usize)
                    .clamp(1, AUTO_MAX_CONNECTIONS),
            };
            shared_links(&args, &zones, wanted.min(total))?
        };
        let alerts = !args.no_alerts && !per_zone_accounts;

        Ok(Plan {
            zones,
            per_zone,
            interval,
            paced,
            per_sensor,
            wall_limit,
            seed: args.seed.unwrap_or_else(random_seed),
            qos: match args.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            },
            retain: args.retain,
            heartbeat_interval: args.heartbeat_interval,
            faults: args.faults,
            scenarios: args.scenarios,
            thresholds,
            alerts,
            connect_timeout: args.connect_timeout,
            ack_timeout: args.ack_timeout,
            json: args.json,
            links,
        })
    }

    fn total_sensors(&self) -> usize {
        self.zones.len() * self.per_zone as usize
    }
}

/// Does a fault or scenario name a zone and sensor of this run?
fn check_target(
    zones: &[Zone],
    per_zone: u32,
    zone: &Zone,
    sensor: Option<&SensorId>,
) -> Result<(), String> {
    if !zones.contains(zone) {
        let list: Vec<&str> = zones.iter().map(Zone::as_str).collect();
        return Err(format!(
            "zone {zone} is not simulated (--zones {})",
            list.join(",")
        ));
    }
    if let Some(s) = sensor {
        if sensor_index(s).is_none_or(|i| i >= per_zone) {
            return Err(format!(
                "no sensor {s} in zone {zone} (sensors are s1..s{per_zone})"
            ));
        }
    }
    Ok(())
}

/// `s7` → 6.
fn sensor_index(s: &SensorId) -> Option<u32> {
    let n: u32 = s.as_str().strip_prefix('s')?.parse().ok()?;
    if n == 0 || s.as_str() != format!("s{n}") {
        return None;
    }
    Some(n - 1)
}

fn sensor_name(index: u32) -> SensorId {
    SensorId::new(&format!("s{}", index + 1)).expect("s<N> is a valid sensor name")
}

fn valid_client_id(id: String) -> Result<String, UsageError> {
    validate_name("client", &id)
        .map(|()| id)
        .map_err(|e| usage(format!("--client-id: {e}")))
}

/// One connection per zone, each with its zone's account.
fn zone_links(args: &Args, zones: &[Zone], per_zone: u32) -> Result<Vec<LinkPlan>, UsageError> {
    let user = args.mqtt.username.clone().unwrap_or_default();
    let mut links = Vec::new();
    for (z, zone) in zones.iter().enumerate() {
        let name = user.replace("{zone}", zone.as_str());
        let client_id = match &args.client_id {
            Some(id) => id.replace("{zone}", zone.as_str()),
            None => name.clone(),
        };
        let mqtt = MqttArgs {
            username: Some(name),
            password: args
                .mqtt
                .password
                .as_ref()
                .map(|p| Secret::new(p.expose().replace("{zone}", zone.as_str()))),
            ..args.mqtt.clone()
        };
        let start = z * per_zone as usize;
        links.push(LinkPlan {
            client_id: valid_client_id(client_id)?,
            mqtt,
            sensors: start..start + per_zone as usize,
            heartbeat_zones: vec![z],
        });
    }
    Ok(links)
}

/// `n` connections with the same account, the fleet cut into contiguous slices.
fn shared_links(args: &Args, zones: &[Zone], n: usize) -> Result<Vec<LinkPlan>, UsageError> {
    let base = args.client_id.clone().unwrap_or_else(|| "simulator".into());
    if base.contains("{zone}") {
        return Err(usage(
            "--client-id: {zone} needs per-zone accounts ({zone} in --mqtt-username)",
        ));
    }
    let total = zones.len() * args.sensors_per_zone as usize;
    (0..n)
        .map(|k| {
            let client_id = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{}", k + 1)
            };
            Ok(LinkPlan {
                client_id: valid_client_id(client_id)?,
                mqtt: args.mqtt.clone(),
                sensors: (total * k / n)..(total * (k + 1) / n),
                heartbeat_zones: if k == 0 {
                    (0..zones.len()).collect()
                } else {
                    Vec::new()
                },
            })
        })
        .collect()
}

/// `0.6`, `12.5`, `30000`: a rate with the digits that matter.
fn human_rate(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.2}")
    } else if r < 100.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

// ---------------------------------------------------------------------------
// Counters shared by the tasks
// ---------------------------------------------------------------------------

#[derive(Default)]
struct ZoneStats {
    readings: AtomicU64,
    dropped: AtomicU64,
    alerts: AtomicU64,
    heartbeats: AtomicU64,
    /// Sensors whose latest reading is at this level.
    warning: AtomicI64,
    critical: AtomicI64,
}

impl ZoneStats {
    fn count_level(&self, level: AlertLevel, delta: i64) {
        match level {
            AlertLevel::Normal => {}
            AlertLevel::Warning => {
                self.warning.fetch_add(delta, Relaxed);
            }
            AlertLevel::Critical => {
                self.critical.fetch_add(delta, Relaxed);
            }
        }
    }
}

/// What tasks share about the run.
struct Shared {
    zones: Vec<Zone>,
    stats: Vec<ZoneStats>,
    thresholds: Thresholds,
    qos: QoS,
    retain: bool,
    alerts: bool,
    interval: Duration,
    paced: bool,
    per_sensor: Option<u64>,
    wall_limit: Option<Duration>,
    /// Start of the schedule: reading k of a generator is due at `t0 + slot(k)`.
    t0: Instant,
    /// How far schedules were pushed back because publishing fell behind.
    slipped_ns: AtomicU64,
}

#[derive(Debug, Clone, PartialEq)]
enum LinkState {
    Connecting {
        attempts: u32,
        last_error: Option<String>,
    },
    Connected,
    /// Refused by the broker before ever being accepted (bad account, ACL...).
    Refused(String),
    /// The TLS handshake failed before the first connection (untrusted broker
    /// certificate, missing client certificate...): retrying cannot fix it.
    TlsFailed(String),
}

/// One MQTT connection, as the tasks see it.
struct Link {
    client_id: String,
    status_topic: String,
    client: AsyncClient,
    /// Messages handed to the connection.
    sent: AtomicU64,
    /// Of those, acknowledged by the broker (QoS 1: PUBACK, QoS 2: PUBCOMP) or, for
    /// QoS 0, written to the socket.
    acked: AtomicU64,
    reconnects: AtomicU64,
    /// Reading slots its generator has gone through (published or dropped).
    produced: AtomicU64,
    sensors: usize,
    state: watch::Sender<LinkState>,
}

impl Link {
    async fn publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), ClientError> {
        self.client.publish(topic, qos, retain, payload).await?;
        self.sent.fetch_add(1, Relaxed);
        Ok(())
    }

    fn unacked(&self) -> u64 {
        self.sent
            .load(Relaxed)
            .saturating_sub(self.acked.load(Relaxed))
    }
}

fn open_link(plan: &LinkPlan, connect_timeout: Duration) -> (Arc<Link>, EventLoop) {
    let status_topic = Topic::Status {
        client: plan.client_id.clone(),
    }
    .to_string();
    let mut options = crate::mqtt::options(&plan.mqtt, &plan.client_id);
    // The broker publishes this if the connection dies without a DISCONNECT.
    options.set_last_will(LastWill::new(
        status_topic.clone(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    options.set_inflight(INFLIGHT);
    // A clean session: what was in flight is re-sent by the driver itself (below),
    // so no session is left behind on the broker by a short-lived simulator.
    options.set_clean_session(true);
    let (client, mut eventloop) = crate::mqtt::client(options, QUEUE_CAPACITY);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(connect_timeout.as_secs().clamp(1, 5));
    eventloop.set_network_options(network);
    let link = Link {
        client_id: plan.client_id.clone(),
        status_topic,
        client,
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        produced: AtomicU64::new(0),
        sensors: plan.sensors.len(),
        state: watch::Sender::new(LinkState::Connecting {
            attempts: 0,
            last_error: None,
        }),
    };
    (Arc::new(link), eventloop)
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP)
}

fn describe_error(e: &ConnectionError) -> String {
    if let Some(reason) = crate::mqtt::tls_failure(e) {
        return format!("TLS handshake failed: {reason}");
    }
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("connection refused: {}", crate::mqtt::refusal_reason(*code))
        }
        other => other.to_string(),
    }
}

/// Polls the connection's event loop until it has sent our DISCONNECT (or the task is
/// aborted). Never pauses except to back off between reconnection attempts.
async fn drive(link: Arc<Link>, mut eventloop: EventLoop, endpoint: String) {
    // Requests that were queued or unacknowledged when the connection dropped.
    // rumqttc moves them to `pending` and clears that on a new (clean) session; we
    // take them out first and put them back after the CONNACK.
    let mut backlog: VecDeque<Request> = VecDeque::new();
    let mut attempts: u32 = 0;
    let mut ever_connected = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let mut online =
                    Publish::new(link.status_topic.clone(), QoS::AtLeastOnce, "online");
                online.retain = true;
                link.sent.fetch_add(1, Relaxed);
                let mut front =
                    VecDeque::with_capacity(1 + backlog.len() + eventloop.pending.len());
                front.push_back(Request::Publish(online));
                for request in backlog.drain(..) {
                    match request {
                        // The broker already owns a message it answered PUBREC to; a
                        // new session cannot release it again.
                        Request::PubRel(_) if !ack.session_present => {
                            link.acked.fetch_add(1, Relaxed);
                        }
                        Request::Publish(_) | Request::PubRel(_) | Request::Disconnect(_) => {
                            front.push_back(request)
                        }
                        _ => {}
                    }
                }
                front.extend(eventloop.pending.drain(..));
                let resent = front.len() - 1;
                eventloop.pending = front;
                if ever_connected {
                    link.reconnects.fetch_add(1, Relaxed);
                    info!(attempts, resent, "reconnected to {endpoint}");
                } else {
                    info!("connected to {endpoint}");
                }
                ever_connected = true;
                attempts = 0;
                link.state.send_replace(LinkState::Connected);
            }
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                link.acked.fetch_add(1, Relaxed);
            }
            // Packet id 0: a QoS 0 publish, written and flushed.
            Ok(Event::Outgoing(Outgoing::Publish(0))) => {
                link.acked.fetch_add(1, Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                debug!("disconnected cleanly");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                backlog.extend(eventloop.pending.drain(..));
                attempts += 1;
                if let (false, ConnectionError::ConnectionRefused(code)) = (ever_connected, &e) {
                    let reason = crate::mqtt::refusal_reason(*code).to_owned();
                    link.state.send_replace(LinkState::Refused(reason));
                    return;
                }
                if let (false, Some(reason)) = (ever_connected, crate::mqtt::tls_failure(&e)) {
                    link.state.send_replace(LinkState::TlsFailed(reason));
                    return;
                }
                let reason = describe_error(&e);
                let delay = backoff(attempts);
                if ever_connected && attempts == 1 {
                    warn!(
                        unacked = link.unacked(),
                        "lost the connection to {endpoint}: {reason}"
                    );
                }
                warn!(
                    attempt = attempts,
                    "cannot reach broker {endpoint}: {reason}; retrying in {delay:?}"
                );
                link.state.send_replace(LinkState::Connecting {
                    attempts,
                    last_error: Some(reason),
                });
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Waits until every connection is accepted, one is refused, the timeout passes or
/// a signal arrives.
async fn wait_connected(
    links: &[Arc<Link>],
    endpoint: &str,
    timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for link in links {
        let mut state = link.state.subscribe();
        let settled = tokio::select! {
            r = tokio::time::timeout_at(deadline, state.wait_for(|s| {
                matches!(s, LinkState::Connected | LinkState::Refused(_) | LinkState::TlsFailed(_))
            })) => r.map(|s| s.map(|s| s.clone())),
            _ = stop.wait_for(|s| *s) => anyhow::bail!("interrupted before the broker {endpoint} was reached"),
        };
        match settled {
            Ok(Ok(LinkState::Connected)) => {}
            Ok(Ok(LinkState::Refused(reason))) => anyhow::bail!(
                "broker {endpoint} refused client {:?}: {reason}",
                link.client_id
            ),
            Ok(Ok(LinkState::TlsFailed(reason))) => {
                anyhow::bail!("TLS handshake with {endpoint} failed: {reason}")
            }
            Ok(_) => anyhow::bail!("connection task for {:?} ended", link.client_id),
            Err(_) => {
                let detail = match &*link.state.borrow() {
                    LinkState::Connecting {
                        attempts,
                        last_error: Some(e),
                    } => format!(" after {attempts} attempts (last error: {e})"),
                    _ => String::new(),
                };
                anyhow::bail!(
                    "cannot connect to broker {endpoint} within {}{detail}",
                    humantime::format_duration(timeout)
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// One simulated sensor with what the generator tracks about it.
struct SimSensor {
    zone_index: usize,
    zone: Zone,
    id: SensorId,
    topic: String,
    model: SensorModel,
    bands: ZoneThresholds,
    /// Level of the latest reading (both metrics).
    level: AlertLevel,
    /// Per metric ([`Metric::ALL`] order): level and the open alert (id, threshold).
    metric_levels: [AlertLevel; 2],
    open_alerts: [Option<(String, Option<f64>)>; 2],
}

struct Generator {
    link: Arc<Link>,
    shared: Arc<Shared>,
    sensors: Vec<SimSensor>,
}

impl Generator {
    fn new(plan: &Plan, link_plan: &LinkPlan, link: Arc<Link>, shared: Arc<Shared>) -> Generator {
        let per_zone = plan.per_zone as usize;
        let sensors = link_plan
            .sensors
            .clone()
            .map(|g| {
                let zone_index = g / per_zone;
                let index = (g % per_zone) as u32;
                let zone = plan.zones[zone_index].clone();
                let id = sensor_name(index);
                let bands = *plan.thresholds.for_zone(&zone);
                let model = SensorModel::new(&SensorSetup {
                    seed: plan.seed,
                    zone: &zone,
                    sensor: &id,
                    index,
                    bands: &bands,
                    interval: plan.interval,
                    faults: &plan.faults,
                    scenarios: &plan.scenarios,
                });
                SimSensor {
                    zone_index,
                    topic: Topic::reading(&zone, &id).to_string(),
                    zone,
                    id,
                    model,
                    bands,
                    level: AlertLevel::Normal,
                    metric_levels: [AlertLevel::Normal; 2],
                    open_alerts: [None, None],
                }
            })
            .collect();
        Generator {
            link,
            shared,
            sensors,
        }
    }

    /// Scheduled time of reading slot `k` (sensor `k % n`, its reading `k / n`),
    /// from the start: the sensors are spread evenly across the interval. Integer
    /// nanoseconds, so fault windows and heatwave steps fall on exact readings.
    fn slot(&self, k: u64) -> Duration {
        let n = self.sensors.len() as u128;
        Duration::from_nanos((u128::from(k) * self.shared.interval.as_nanos() / n) as u64)
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), ClientError> {
        let n = self.sensors.len() as u64;
        let limit = self.shared.per_sensor.map(|c| c.saturating_mul(n));
        let t0 = self.shared.t0;
        // Falling further behind than this pushes the schedule back instead of
        // bursting the whole backlog at once.
        let slip_after = self.shared.interval.max(Duration::from_secs(1));
        let mut shift = Duration::ZERO;
        let mut last_slip_warning: Option<Instant> = None;
        let mut k: u64 = 0;
        loop {
            if limit.is_some_and(|l| k >= l) || *stop.borrow() {
                return Ok(());
            }
            if !self.shared.paced {
                if self.shared.wall_limit.is_some_and(|d| t0.elapsed() >= d) {
                    return Ok(());
                }
                let batch = async {
                    for _ in 0..256 {
                        if limit.is_some_and(|l| k >= l) {
                            break;
                        }
                        self.produce(k, t0.elapsed()).await?;
                        k += 1;
                    }
                    Ok::<(), ClientError>(())
                };
                // A full queue (broker gone) must not keep a stop request waiting.
                tokio::select! {
                    r = batch => r?,
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
                tokio::task::yield_now().await;
                continue;
            }
            let due = t0 + shift + self.slot(k);
            let now = Instant::now();
            if now < due {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
                continue;
            }
            let late = now - due;
            if late > slip_after {
                shift += late;
                self.shared
                    .slipped_ns
                    .fetch_add(late.as_nanos() as u64, Relaxed);
                if last_slip_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    warn!(
                        late_ms = late.as_millis() as u64,
                        unacked = self.link.unacked(),
                        "publishing fell behind schedule (broker slow or unreachable?); schedule pushed back, no reading skipped"
                    );
                    last_slip_warning = Some(Instant::now());
                }
            }
            let now_rel = Instant::now().saturating_duration_since(t0 + shift);
            let batch = async {
                while limit.is_none_or(|l| k < l) && self.slot(k) <= now_rel {
                    self.produce(k, shift + self.slot(k)).await?;
                    k += 1;
                }
                Ok::<(), ClientError>(())
            };
            tokio::select! {
                r = batch => r?,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    }

    /// Reading slot `k`, scheduled `at` after the start: sample, publish, alert.
    async fn produce(&mut self, k: u64, at: Duration) -> Result<(), ClientError> {
        let n = self.sensors.len() as u64;
        let seq = k / n;
        let sensor = &mut self.sensors[(k % n) as usize];
        let shared = &*self.shared;
        let stats = &shared.stats[sensor.zone_index];
        let now = Utc::now();
        let day_secs = f64::from(now.num_seconds_from_midnight())
            + f64::from(now.nanosecond() % 1_000_000_000) / 1e9;
        match sensor.model.sample(seq, at, day_secs) {
            Sample::Dropped => {
                stats.dropped.fetch_add(1, Relaxed);
            }
            Sample::Value { temp, hum } => {
                let level = shared.thresholds.level(&sensor.zone, temp, hum);
                let reading = Reading {
                    zone: sensor.zone.clone(),
                    sensor: sensor.id.clone(),
                    seq: Some(seq),
                    timestamp: now,
                    temp,
                    hum,
                    alert_level: level,
                };
                self.link
                    .publish(
                        sensor.topic.clone(),
                        shared.qos,
                        shared.retain,
                        reading.to_json(),
                    )
                    .await?;
                stats.readings.fetch_add(1, Relaxed);
                if level != sensor.level {
                    stats.count_level(sensor.level, -1);
                    stats.count_level(level, 1);
                    sensor.level = level;
                }
                if shared.alerts {
                    publish_alerts(&self.link, shared, sensor, [temp, hum], now).await?;
                }
            }
        }
        self.link.produced.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// Topic-side alerts: when a metric's level changes, the open alert (if any) is
/// cleared and a new one raised (if not back to normal), at QoS 1 on
/// `entrepot/alerts/<zone>/sensor` (the sensors' alert topic), after the reading that
/// caused it on the same connection.
async fn publish_alerts(
    link: &Link,
    shared: &Shared,
    sensor: &mut SimSensor,
    values: [f64; 2],
    now: DateTime<Utc>,
) -> Result<(), ClientError> {
    for (m, metric) in Metric::ALL.into_iter().enumerate() {
        let band = sensor.bands.band(metric);
        let value = values[m];
        let level = band.level(value);
        let previous = sensor.metric_levels[m];
        if level == previous {
            continue;
        }
        sensor.metric_levels[m] = level;
        // The sensors' alert topic: only services may write entrepot/alerts/<zone>.
        let topic = Topic::SensorAlert {
            zone: sensor.zone.clone(),
        }
        .to_string();
        let mut alert = Alert {
            version: 1,
            id: String::new(),
            zone: sensor.zone.clone(),
            sensor: Some(sensor.id.clone()),
            metric: AlertKind::from(metric),
            severity: previous,
            state: AlertState::Cleared,
            value: Some(value),
            threshold: None,
            source: AlertSource::Sensor,
            message: String::new(),
            timestamp: now,
        };
        if let Some((id, threshold)) = sensor.open_alerts[m].take() {
            alert.id = id;
            alert.threshold = threshold;
            alert.message = match threshold {
                _ if level > previous => {
                    format!("{} {value} now {level} (was {previous})", metric.as_str())
                }
                Some(t) => format!(
                    "{} {value} back inside {previous} bound {t}",
                    metric.as_str()
                ),
                None => format!("{} {value} no longer {previous}", metric.as_str()),
            };
            link.publish(topic.clone(), QoS::AtLeastOnce, false, alert.to_json())
                .await?;
            shared.stats[sensor.zone_index].alerts.fetch_add(1, Relaxed);
        }
        if level != AlertLevel::Normal {
            let threshold = band.bound_for(level, value);
            alert.id = Alert::make_id(
                AlertSource::Sensor,
                &sensor.zone,
                Some(&sensor.id),
                alert.metric,
                now,
            );
            alert.severity = level;
            alert.state = AlertState::Raised;
            alert.threshold = threshold;
            alert.message = match threshold {
                Some(t) if value >= t => format!("{} {value} above {level} {t}", metric.as_str()),
                Some(t) => format!("{} {value} below {level} {t}", metric.as_str()),
                None => format!("{} {value} {level}", metric.as_str()),
            };
            link.publish(topic, QoS::AtLeastOnce, false, alert.to_json())
                .await?;
            shared.stats[sensor.zone_index].alerts.fetch_add(1, Relaxed);
            sensor.open_alerts[m] = Some((alert.id, threshold));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Heartbeats, reporting
// ---------------------------------------------------------------------------

/// Every zone's retained heartbeat, on a real timer: the first beat at start, then
/// one per period (a late beat delays the next ones instead of bunching them).
async fn heartbeats(
    routes: Vec<(usize, Arc<Link>)>,
    shared: Arc<Shared>,
    sensors_per_zone: u64,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let beat_all = async {
            for (zone_index, link) in &routes {
                let zone = &shared.zones[*zone_index];
                let beat = Heartbeat {
                    zone: zone.clone(),
                    timestamp: Utc::now(),
                    sensors: Some(sensors_per_zone),
                };
                let topic = Topic::Heartbeat { zone: zone.clone() }.to_string();
                link.publish(topic, QoS::AtMostOnce, true, beat.to_json())
                    .await?;
                shared.stats[*zone_index].heartbeats.fetch_add(1, Relaxed);
            }
            Ok::<(), ClientError>(())
        };
        tokio::select! {
            r = beat_all => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The per-cycle log line and, on a terminal, the progress line.
struct Reporter {
    shared: Arc<Shared>,
    links: Vec<Arc<Link>>,
    /// Reading slots of the whole run, when bounded.
    total: Option<u64>,
    per_sensor: Option<u64>,
    progress: bool,
    logged_cycles: u64,
    last_sent: u64,
    last_at: Instant,
}

impl Reporter {
    fn cycles(&self) -> u64 {
        self.links
            .iter()
            .map(|l| l.produced.load(Relaxed) / l.sensors as u64)
            .min()
            .unwrap_or(0)
    }

    fn produced(&self) -> u64 {
        self.links.iter().map(|l| l.produced.load(Relaxed)).sum()
    }

    fn sent(&self) -> u64 {
        self.links.iter().map(|l| l.sent.load(Relaxed)).sum()
    }

    fn unacked(&self) -> u64 {
        self.links.iter().map(|l| l.unacked()).sum()
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Slow cycles get a line each; fast ones one line per second.
        let period = if self.shared.interval >= Duration::from_millis(100) {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(1)
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut redraw = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                _ = tick.tick() => self.log_cycles(),
                _ = redraw.tick(), if self.progress => self.draw(),
            }
        }
        self.log_cycles();
        self.clear();
    }

    fn log_cycles(&mut self) {
        let cycles = self.cycles();
        if cycles <= self.logged_cycles {
            return;
        }
        let now = Instant::now();
        let secs = (now - self.last_at).as_secs_f64().max(1e-3);
        let sent = self.sent();
        let rate = (sent - self.last_sent.min(sent)) as f64 / secs;
        // Totals so far (not deltas): generators run on other threads, so a delta
        // could straddle a cycle boundary by one reading and look wrong.
        let mut zones = String::new();
        let (mut warning, mut critical, mut readings, mut dropped, mut alerts) =
            (0i64, 0i64, 0u64, 0u64, 0u64);
        for (i, (zone, stats)) in self.shared.zones.iter().zip(&self.shared.stats).enumerate() {
            let r = stats.readings.load(Relaxed);
            readings += r;
            dropped += stats.dropped.load(Relaxed);
            alerts += stats.alerts.load(Relaxed);
            warning += stats.warning.load(Relaxed);
            critical += stats.critical.load(Relaxed);
            if i < 8 {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(zones, "{sep}{zone} {r}");
            } else if i == 8 {
                let _ = write!(zones, ", +{} zones", self.shared.zones.len() - 8);
            }
        }
        let cycle = match (self.logged_cycles + 1 == cycles, self.per_sensor) {
            (true, Some(n)) => format!("cycle {cycles}/{n}"),
            (true, None) => format!("cycle {cycles}"),
            (false, Some(n)) => format!("cycles {}-{cycles}/{n}", self.logged_cycles + 1),
            (false, None) => format!("cycles {}-{cycles}", self.logged_cycles + 1),
        };
        self.clear();
        info!(
            dropped,
            warning,
            critical,
            alerts,
            msg_per_s = rate.round() as u64,
            unacked = self.unacked(),
            "{cycle} done: {readings} readings so far ({zones})"
        );
        self.logged_cycles = cycles;
        self.last_sent = sent;
        self.last_at = now;
    }

    fn draw(&self) {
        let Some(total) = self.total else { return };
        let done = self.produced().min(total);
        let width = 30usize;
        let filled = (done as f64 / total.max(1) as f64 * width as f64) as usize;
        let line = format!(
            "\r\x1b[2K[{}{}] {done}/{total} readings, {} unacked",
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.unacked()
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.progress {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(b"\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(args)?;
    let endpoint = plan.links[0].mqtt.url.to_string();
    let total = plan.total_sensors();
    let zone_list: Vec<&str> = plan.zones.iter().map(Zone::as_str).collect();
    let pace = if plan.paced {
        format!(
            "every {} per sensor ({} readings/s)",
            humantime::format_duration(plan.interval),
            human_rate(total as f64 / plan.interval.as_secs_f64())
        )
    } else {
        "as fast as the broker accepts".to_owned()
    };
    info!(
        seed = plan.seed,
        "simulating {total} sensors ({} per zone in {}) {pace}, QoS {}, {} connection(s) to {endpoint} as {}",
        plan.per_zone,
        zone_list.join(", "),
        plan.qos as u8,
        plan.links.len(),
        plan.links
            .iter()
            .map(|l| l.client_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for f in &plan.faults {
        info!("fault scheduled: {f}");
    }
    for s in &plan.scenarios {
        info!("scenario scheduled: {s}");
    }
    if !plan.alerts {
        info!("alerts on entrepot/alerts/<zone>/sensor are off (--no-alerts or per-zone accounts)");
    }

    // Ctrl-C/SIGTERM: the first stops publishing, the second stops waiting for acks.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let (give_up_tx, mut give_up_rx) = watch::channel(false);
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signals = tokio::spawn({
        let stop_tx = stop_tx.clone();
        let interrupted = interrupted.clone();
        async move {
            super::shutdown_signal().await;
            interrupted.store(true, Relaxed);
            info!("signal received: stopping, then waiting for acknowledgements (signal again to skip)");
            stop_tx.send_replace(true);
            super::shutdown_signal().await;
            warn!("second signal: not waiting for acknowledgements");
            give_up_tx.send_replace(true);
        }
    });

    let mut links = Vec::new();
    let mut drivers: Vec<JoinHandle<()>> = Vec::new();
    for lp in &plan.links {
        let (link, eventloop) = open_link(lp, plan.connect_timeout);
        let span = tracing::info_span!("mqtt", client = %lp.client_id);
        drivers.push(tokio::spawn(
            drive(link.clone(), eventloop, endpoint.clone()).instrument(span),
        ));
        links.push(link);
    }
    if let Err(e) = wait_connected(&links, &endpoint, plan.connect_timeout, &mut stop_rx).await {
        for d in &drivers {
            d.abort();
        }
        signals.abort();
        return Err(e);
    }

    let started = Instant::now();
    let shared = Arc::new(Shared {
        zones: plan.zones.clone(),
        stats: plan.zones.iter().map(|_| ZoneStats::default()).collect(),
        thresholds: plan.thresholds.clone(),
        qos: plan.qos,
        retain: plan.retain,
        alerts: plan.alerts,
        interval: plan.interval,
        paced: plan.paced,
        per_sensor: plan.per_sensor,
        wall_limit: plan.wall_limit,
        t0: started,
        slipped_ns: AtomicU64::new(0),
    });
    let generators: Vec<JoinHandle<Result<(), ClientError>>> = plan
        .links
        .iter()
        .zip(&links)
        .map(|(lp, link)| {
            let g = Generator::new(&plan, lp, link.clone(), shared.clone());
            tokio::spawn(g.run(stop_rx.clone()))
        })
        .collect();
    let routes: Vec<(usize, Arc<Link>)> = plan
        .links
        .iter()
        .zip(&links)
        .flat_map(|(lp, link)| lp.heartbeat_zones.iter().map(|z| (*z, link.clone())))
        .collect();
    let beats = tokio::spawn(heartbeats(
        routes,
        shared.clone(),
        u64::from(plan.per_zone),
        plan.heartbeat_interval,
        stop_rx.clone(),
    ));
    let reporter = Reporter {
        shared: shared.clone(),
        links: links.clone(),
        total: plan.per_sensor.map(|n| n * total as u64),
        per_sensor: plan.per_sensor,
        // Only for bounded runs, on a terminal, and not under -q.
        progress: (plan.per_sensor.is_some() || plan.wall_limit.is_some())
            && std::io::stderr().is_terminal()
            && tracing::enabled!(tracing::Level::INFO),
        logged_cycles: 0,
        last_sent: 0,
        last_at: started,
    };
    let reporter = tokio::spawn(reporter.run(stop_rx.clone()));

    let mut failure: Option<String> = None;
    for g in generators {
        match g.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(format!("publishing failed: {e}")),
            Err(e) => failure = Some(format!("a generator task failed: {e}")),
        }
    }
    let generated = started.elapsed();
    stop_tx.send_replace(true);
    let _ = beats.await;
    let _ = reporter.await;

    let unacked = finish_links(
        &links,
        &mut drivers,
        plan.ack_timeout,
        &mut give_up_rx,
        started + generated,
    )
    .await;
    signals.abort();
    let elapsed = started.elapsed();

    let summary = summary(
        &plan,
        &shared,
        &links,
        elapsed,
        unacked,
        interrupted.load(Relaxed),
    );
    if unacked > 0 {
        let why = if *give_up_rx.borrow() {
            "(stopped waiting on a second signal)".to_owned()
        } else {
            format!("within {}", humantime::format_duration(plan.ack_timeout))
        };
        failure.get_or_insert(format!(
            "{unacked} message(s) not acknowledged by the broker {why}"
        ));
    }
    let readings = summary["readings"].as_u64().unwrap_or(0);
    info!(
        readings,
        alerts = summary["alerts"].as_u64().unwrap_or(0),
        heartbeats = summary["heartbeats"].as_u64().unwrap_or(0),
        unacked,
        "done in {:.2}s",
        elapsed.as_secs_f64()
    );
    if plan.json {
        let mut summary = summary;
        summary["ok"] = failure.is_none().into();
        if let Some(f) = &failure {
            summary["error"] = f.clone().into();
        }
        println!("{summary}");
    } else {
        println!(
            "published {readings} readings, {} alerts, {} heartbeats in {:.1} s ({:.0} readings/s); {} of {} messages acknowledged",
            summary["alerts"],
            summary["heartbeats"],
            elapsed.as_secs_f64(),
            summary["readings_per_s"].as_f64().unwrap_or(0.0),
            summary["messages_acked"],
            summary["messages_sent"],
        );
    }
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(f) => {
            error!("{f}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The clean end of a run: say `offline` ourselves (a clean DISCONNECT does not fire
/// the will), wait until the broker acknowledged everything (bounded by
/// `ack_timeout`, cut short by a second signal), disconnect the connections that are
/// up, and stop the drivers. Returns how many messages stayed unacknowledged.
async fn finish_links(
    links: &[Arc<Link>],
    drivers: &mut [JoinHandle<()>],
    ack_timeout: Duration,
    give_up_rx: &mut watch::Receiver<bool>,
    generated: Instant,
) -> u64 {
    let deadline = Instant::now() + ack_timeout;
    for link in links {
        let offline = link.publish(link.status_topic.clone(), QoS::AtLeastOnce, true, "offline");
        // Bounded: with the broker gone and the queue full, this could wait forever.
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, offline) => {}
            _ = give_up_rx.wait_for(|g| *g) => {}
        }
    }
    let mut announced = false;
    loop {
        let unacked: u64 = links.iter().map(|l| l.unacked()).sum();
        if unacked == 0 || Instant::now() >= deadline || *give_up_rx.borrow() {
            break;
        }
        if !announced && Instant::now() > generated + Duration::from_secs(1) {
            info!(unacked, "waiting for the broker to acknowledge");
            announced = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = give_up_rx.changed() => {}
        }
    }
    let unacked: u64 = links.iter().map(|l| l.unacked()).sum();
    // A clean DISCONNECT where the broker is there to receive it; a connection that
    // is down has nothing to say goodbye to.
    let grace = tokio::time::sleep(DISCONNECT_GRACE);
    tokio::pin!(grace);
    for (link, d) in links.iter().zip(drivers.iter_mut()) {
        let connected = *link.state.borrow() == LinkState::Connected;
        if connected && link.client.try_disconnect().is_ok() {
            tokio::select! {
                _ = &mut *d => {}
                _ = &mut grace => {}
            }
        }
    }
    for d in drivers.iter() {
        d.abort();
    }
    unacked
}

fn summary(
    plan: &Plan,
    shared: &Shared,
    links: &[Arc<Link>],
    elapsed: Duration,
    unacked: u64,
    interrupted: bool,
) -> serde_json::Value {
    let mut zones = serde_json::Map::new();
    let (mut readings, mut dropped, mut alerts, mut heartbeats) = (0u64, 0u64, 0u64, 0u64);
    for (zone, s) in shared.zones.iter().zip(&shared.stats) {
        let z = (
            s.readings.load(Relaxed),
            s.dropped.load(Relaxed),
            s.alerts.load(Relaxed),
            s.heartbeats.load(Relaxed),
        );
        readings += z.0;
        dropped += z.1;
        alerts += z.2;
        heartbeats += z.3;
        zones.insert(
            zone.to_string(),
            json!({"sensors": plan.per_zone, "readings": z.0, "dropped": z.1, "alerts": z.2, "heartbeats": z.3}),
        );
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let sent: u64 = links.iter().map(|l| l.sent.load(Relaxed)).sum();
    let acked: u64 = links.iter().map(|l| l.acked.load(Relaxed)).sum();
    json!({
        "seed": plan.seed,
        "qos": plan.qos as u8,
        "sensors": plan.total_sensors(),
        "interval_ms": if plan.paced { Some(plan.interval.as_secs_f64() * 1000.0) } else { None },
        "duration_s": secs,
        "readings": readings,
        "dropped": dropped,
        "alerts": alerts,
        "heartbeats": heartbeats,
        "messages_sent": sent,
        "messages_acked": acked.min(sent),
        "unacked": unacked,
        "readings_per_s": readings as f64 / secs,
        "messages_per_s": sent as f64 / secs,
        "schedule_slip_ms": shared.slipped_ns.load(Relaxed) as f64 / 1e6,
        "interrupted": interrupted,
        "zones": zones,
        "connections": links.iter().map(|l| json!({
            "client_id": l.client_id,
            "sensors": l.sensors,
            "sent": l.sent.load(Relaxed),
            "acked": l.acked.load(Relaxed),
            "reconnects": l.reconnects.load(Relaxed),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{FAULT_SYNTAX, SCENARIO_SYNTAX};
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        args: Args,
    }

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        let t = T::try_parse_from(argv).map_err(|e| e.to_string())?;
        Plan::new(t.args).map_err(|e| e.0)
    }

    #[test]
    fn defaults_and_rate() {
        let p = plan(&["--zones", "nord,sud,est"]).unwrap();
        assert_eq!(p.total_sensors(), 9);
        assert_eq!(p.interval, Duration::from_secs(5));
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert_eq!(p.links.len(), 1);
        assert_eq!(p.links[0].client_id, "simulator");
        assert_eq!(p.per_sensor, None);
        // 10,000 sensors at 1 Hz: one connection is enough.
        let p = plan(&[
            "--zones",
            "a,b",
            "--sensors-per-zone",
            "5000",
            "--interval",
            "1s",
        ])
        .unwrap();
        assert_eq!(p.links.len(), 1);
        // --rate overrides the interval: 30 sensors at 60,000/s → 500 µs each.
        let p = plan(&[
            "--zones",
            "a,b,c",
            "--sensors-per-zone",
            "10",
            "--rate",
            "60000",
        ])
        .unwrap();
        assert_eq!(p.interval, Duration::from_micros(500));
        assert_eq!(p.links.len(), 2);
        let covered: usize = p.links.iter().map(|l| l.sensors.len()).sum();
        assert_eq!(covered, 30);
        assert_eq!(p.links[0].sensors, 0..15);
        assert_eq!(p.links[1].client_id, "simulator-2");
        assert!(p.links[1].heartbeat_zones.is_empty());
        // --duration becomes a count of readings per sensor.
        let p = plan(&["--zones", "a", "--interval", "300ms", "--duration", "1s"]).unwrap();
        assert_eq!(p.per_sensor, Some(4));
        let p = plan(&["--zones", "a", "--rate", "max", "--duration", "1s"]).unwrap();
        assert_eq!(
            (p.paced, p.per_sensor, p.wall_limit),
            (false, None, Some(Duration::from_secs(1)))
        );
    }

    #[test]
    fn per_zone_accounts() {
        let p = plan(&[
            "--zones",
            "nord,sud",
            "--mqtt-username",
            "sensor-{zone}",
            "--mqtt-password",
            "sensor-{zone}-dev",
        ])
        .unwrap();
        assert_eq!(p.links.len(), 2);
        assert_eq!(p.links[1].client_id, "sensor-sud");
        assert_eq!(p.links[1].mqtt.username.as_deref(), Some("sensor-sud"));
        assert_eq!(
            p.links[1].mqtt.password.as_ref().unwrap().expose(),
            "sensor-sud-dev"
        );
        assert_eq!(p.links[1].heartbeat_zones, vec![1]);
        assert!(!p.alerts);
    }

    #[test]
    fn cross_field_mistakes() {
        for (args, needle) in [
            (
                &["--zones", "nord", "--fault", "spike:sud@1s"][..],
                "zone sud is not simulated",
            ),
            (
                &["--zones", "nord", "--fault", "spike:nord/s4@1s"][..],
                "no sensor s4",
            ),
            (
                &["--zones", "nord", "--fault", "spike:nord/temp@1s"][..],
                "no sensor temp",
            ),
            (
                &["--zones", "nord", "--scenario", "heatwave:est@1s"][..],
                "zone est is not simulated",
            ),
            (
                &["--zones", "nord", "--client-id", "Sim"][..],
                "--client-id",
            ),
            (
                &["--zones", "nord", "--client-id", "sim-{zone}"][..],
                "per-zone",
            ),
            (
                &["--zones", "nord", "--thresholds", "/nonexistent.json"][..],
                "--thresholds",
            ),
        ] {
            let e = plan(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        assert_eq!(sensor_index(&SensorId::new("s1").unwrap()), Some(0));
        assert_eq!(sensor_index(&SensorId::new("s01").unwrap()), None);
        assert_eq!(sensor_index(&SensorId::new("s0").unwrap()), None);
    }

    #[test]
    fn value_parsers_state_the_syntax() {
        for (args, needle) in [
            (&["--zones", ""][..], "nord,sud,est"),
            (
                &["--zones", "nord", "--interval", "0s"][..],
                "greater than zero",
            ),
            (&["--zones", "nord", "--count", "0"][..], "--count"),
            (
                &["--zones", "nord", "--count", "1", "--duration", "1s"][..],
                "cannot be used",
            ),
            (&["--zones", "nord", "--qos", "3"][..], "--qos"),
            (&["--zones", "nord", "--rate", "fast"][..], "`max`"),
            (
                &["--zones", "nord", "--fault", "boom"][..],
                "KIND:ZONE[/SENSOR]@START[+DURATION]",
            ),
            (
                &["--zones", "nord", "--scenario", "heatwave:nord"][..],
                "heatwave:ZONE@START",
            ),
        ] {
            let e = plan(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        assert!(FAULT_SYNTAX.contains("spike"));
        assert!(SCENARIO_SYNTAX.contains("heatwave"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(10), BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }
}
