//! The benchmark's plan: the options checked against each other before anything
//! connects ([`Plan::new`]), the value parsers of `arng qos-bench`'s flags, the names
//! of a run (topics, client ids) so that two runs never meet, and how the run's MQTT
//! clients are made and closed.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, QoS};

use super::payload;
use crate::config::MqttArgs;

/// Largest payload accepted by `--size`: the broker's `max_packet_size` (16384, see
/// [`crate::mqtt::MAX_PACKET_BYTES`]) less the PUBLISH fixed header (3 bytes), topic
/// (2 + ~45 bytes) and packet id (2), rounded down with room to spare.
pub const MAX_PAYLOAD: usize = 16_000;
/// Most publishers (and most subscribers) of a run.
pub const MAX_CLIENTS: i64 = 200;
/// Most messages per publisher and level.
pub const MAX_MESSAGES: u64 = 10_000_000;
/// Messages per publisher and level when neither a count nor a duration is given.
pub const DEFAULT_MESSAGES: u64 = 1000;
/// Topic tree of the bench; `entrepot/qosbench/<run>-q<n>/p<i>` has four levels and
/// does not end in `v1`, so ingest (`entrepot/+/+/v1`, heartbeats, alerts, thresholds)
/// never mistakes it for a reading. The `operator` account may use it.
pub const TOPIC_ROOT: &str = "entrepot/qosbench";
/// Once a subscriber has every message, it still waits this long without traffic so a
/// late duplicate is counted.
pub(crate) const LINGER: Duration = Duration::from_millis(150);
/// How long a client may take to close after DISCONNECT before its task is dropped.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The QoS levels of `--qos`, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosLevels(pub Vec<u8>);

pub fn parse_qos_levels(s: &str) -> Result<QosLevels, String> {
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

pub fn parse_size(s: &str) -> Result<usize, String> {
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

pub fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of messages per second"))?;
    if r.is_finite() && r > 0.0 && r <= 1e7 {
        Ok(r)
    } else {
        Err("must be a number of messages per second above 0".into())
    }
}

pub fn parse_svg_path(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    match p.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => Ok(p),
        _ => Err("the chart is written as SVG: give a file name ending in .svg".into()),
    }
}

pub(crate) fn to_qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// What the user asked for, before the checks across options.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mqtt: MqttArgs,
    /// QoS levels to measure, one after the other.
    pub levels: Vec<u8>,
    pub publishers: u32,
    pub subscribers: u32,
    /// Messages per publisher and level (default [`DEFAULT_MESSAGES`]); exclusive
    /// with `duration`.
    pub messages: Option<u64>,
    /// Publish for this long per level instead of a number of messages.
    pub duration: Option<Duration>,
    /// Payload size in bytes (header included).
    pub size: usize,
    /// Total publishing rate in messages/s; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// QoS 1/2 messages a publisher may have unacknowledged.
    pub inflight: u16,
    pub grace: Duration,
    pub timeout: Duration,
    pub inject_redelivery: Option<u64>,
    pub nagle: bool,
}

/// Why [`Settings`] cannot be run: options that contradict each other.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("--messages and --duration cannot be used together")]
    MessagesAndDuration,
    #[error("--inject-redelivery demonstrates QoS 1 redelivery: include 1 in --qos")]
    RedeliveryWithoutQos1,
    #[error("--inject-redelivery {n} needs more than {n} messages in all (--messages x --publishers is {total})")]
    RedeliveryTooLarge { n: u64, total: u64 },
}

/// When publishers stop.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    Messages(u64),
    After(Duration),
}

/// The validated run: everything a level needs, shared by its tasks.
#[derive(Debug)]
pub struct Plan {
    pub(crate) mqtt: MqttArgs,
    pub(crate) levels: Vec<u8>,
    pub(crate) publishers: u32,
    pub(crate) subscribers: u32,
    pub(crate) stop: Stop,
    pub(crate) size: usize,
    pub(crate) rate: Option<f64>,
    pub(crate) inflight: u16,
    pub(crate) grace: Duration,
    pub(crate) timeout: Duration,
    pub(crate) inject: Option<u64>,
    pub(crate) nagle: bool,
    pub(crate) run_id: String,
}

impl Plan {
    /// Checks the options against each other and names this run (topics and client
    /// ids of a run never meet another's).
    pub fn new(s: Settings) -> Result<Plan, PlanError> {
        let stop = match (s.messages, s.duration) {
            (Some(_), Some(_)) => return Err(PlanError::MessagesAndDuration),
            (_, Some(d)) => Stop::After(d),
            (k, None) => Stop::Messages(k.unwrap_or(DEFAULT_MESSAGES)),
        };
        if let Some(n) = s.inject_redelivery {
            if !s.levels.contains(&1) {
                return Err(PlanError::RedeliveryWithoutQos1);
            }
            let total = match stop {
                Stop::Messages(k) => k * u64::from(s.publishers),
                Stop::After(_) => 0,
            };
            if n >= total {
                return Err(PlanError::RedeliveryTooLarge { n, total });
            }
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Ok(Plan {
            mqtt: s.mqtt,
            levels: s.levels,
            publishers: s.publishers,
            subscribers: s.subscribers,
            stop,
            size: s.size,
            rate: s.rate,
            inflight: s.inflight,
            grace: s.grace,
            timeout: s.timeout,
            inject: s.inject_redelivery,
            nagle: s.nagle,
            run_id: format!("{unix_ms:x}-{:x}", std::process::id()),
        })
    }

    /// The QoS levels, in the order they are measured.
    pub fn levels(&self) -> &[u8] {
        &self.levels
    }

    pub fn stop(&self) -> Stop {
        self.stop
    }

    pub fn publishers(&self) -> u32 {
        self.publishers
    }

    pub fn subscribers(&self) -> u32 {
        self.subscribers
    }

    /// Latency is measured from the scheduled send times (`--rate` given).
    pub fn corrected(&self) -> bool {
        self.rate.is_some()
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub(crate) fn base_topic(&self, qos: u8) -> String {
        format!("{TOPIC_ROOT}/{}-q{qos}", self.run_id)
    }

    pub(crate) fn client_id(&self, qos: u8, role: char, i: u32) -> String {
        format!("arng-qb-{}-q{qos}-{role}{i}", self.run_id)
    }

    /// A client and its event loop, with TCP_NODELAY (as every arng client, see
    /// `mqtt::client`) unless --nagle, which measures what Nagle's algorithm costs.
    pub(crate) fn client(&self, opts: rumqttc::MqttOptions) -> (AsyncClient, EventLoop) {
        let (client, mut eventloop) = crate::mqtt::client(opts, 64);
        if self.nagle {
            let mut net = eventloop.network_options();
            net.set_tcp_nodelay(false);
            eventloop.set_network_options(net);
        }
        (client, eventloop)
    }
}

/// Sends DISCONNECT and drives the loop until it is written (bounded in time).
pub(crate) async fn close(client: AsyncClient, mut eventloop: EventLoop) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            mqtt: MqttArgs::default(),
            levels: vec![0, 1, 2],
            publishers: 1,
            subscribers: 1,
            messages: None,
            duration: None,
            size: 200,
            rate: None,
            inflight: 100,
            grace: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            inject_redelivery: None,
            nagle: false,
        }
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
    fn cross_field_checks() {
        let p = Plan::new(settings()).unwrap();
        assert!(matches!(p.stop, Stop::Messages(DEFAULT_MESSAGES)));
        assert!(p.base_topic(1).starts_with("entrepot/qosbench/"));
        let both = Settings {
            messages: Some(5),
            duration: Some(Duration::from_secs(1)),
            ..settings()
        };
        assert!(matches!(
            Plan::new(both),
            Err(PlanError::MessagesAndDuration)
        ));
        let inject = |levels: Vec<u8>, messages: u64| Settings {
            levels,
            messages: Some(messages),
            inject_redelivery: Some(5),
            ..settings()
        };
        assert!(Plan::new(inject(vec![0], 6))
            .unwrap_err()
            .to_string()
            .contains("QoS 1"));
        assert!(Plan::new(inject(vec![1], 5)).is_err());
        assert!(Plan::new(inject(vec![1], 6)).is_ok());
    }

    #[test]
    fn topics_are_not_readings() {
        // ingest reads entrepot/+/+/v1: four levels ending in v1.
        let p = Plan::new(settings()).unwrap();
        let topic = format!("{}/p3", p.base_topic(1));
        let levels: Vec<&str> = topic.split('/').collect();
        assert_eq!(levels.len(), 4);
        assert_ne!(levels[3], "v1");
        // Room left in the packet for the largest payload.
        assert!(2 + topic.len() + 2 + 5 + MAX_PAYLOAD <= crate::mqtt::MAX_PACKET_BYTES);
    }
}
