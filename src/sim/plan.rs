//! The simulator's plan: the options of a run ([`Options`]) checked against each
//! other before anything connects ([`Plan::new`]): fault and scenario targets, the
//! thresholds file, per-zone accounts, and how the fleet is cut into MQTT
//! connections.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::QoS;

use super::model::{Fault, Scenario};
use crate::config::{MqttArgs, Secret};
use crate::domain::names::validate_name;
use crate::domain::thresholds::Thresholds;
use crate::domain::{SensorId, Zone};

/// Above this many readings per second per connection, more connections are opened
/// by default (one rumqttc event loop is one task, i.e. at most one core).
const AUTO_RATE_PER_CONNECTION: f64 = 50_000.0;
const AUTO_MAX_CONNECTIONS: usize = 4;

/// What a run is asked to do (the flags of `arng simulate`, see its `--help`).
#[derive(Debug, Clone)]
pub struct Options {
    pub mqtt: MqttArgs,
    pub zones: Vec<Zone>,
    pub sensors_per_zone: u32,
    /// Time between two readings of one sensor.
    pub interval: Duration,
    /// Readings per sensor, then stop.
    pub count: Option<u64>,
    /// Publish the readings scheduled within this time, then stop.
    pub duration: Option<Duration>,
    /// Seed of the signal model; `None`: a random one.
    pub seed: Option<u64>,
    /// QoS of the readings (0, 1 or 2).
    pub qos: u8,
    pub retain: bool,
    /// Readings per second across the fleet (overrides `interval`).
    pub rate: Option<Rate>,
    pub connections: Option<u16>,
    pub heartbeat_interval: Duration,
    pub faults: Vec<Fault>,
    pub scenarios: Vec<Scenario>,
    /// A thresholds document (JSON) instead of the built-in thresholds.
    pub thresholds: Option<PathBuf>,
    pub no_alerts: bool,
    /// Client name; `{zone}` is replaced with per-zone accounts.
    pub client_id: Option<String>,
    pub connect_timeout: Duration,
    pub ack_timeout: Duration,
}

/// Why [`Options`] cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{total} sensors is more than one process simulates (at most 1000000: fewer zones or --sensors-per-zone)")]
    TooManySensors { total: usize },
    /// A fault or scenario names a zone or sensor that is not simulated.
    #[error("{option} {spec}: {reason}")]
    Target {
        option: &'static str,
        spec: String,
        reason: String,
    },
    #[error("--thresholds {path}: {reason}")]
    Thresholds { path: String, reason: String },
    #[error("--connections cannot be combined with per-zone accounts ({{zone}} in --mqtt-username): they open one connection per zone")]
    ConnectionsWithZoneAccounts,
    #[error("--client-id: {0}")]
    ClientId(String),
    #[error("--client-id: {{zone}} needs per-zone accounts ({{zone}} in --mqtt-username)")]
    ZoneClientIdWithoutZoneAccounts,
    /// A sensor would publish more than once a millisecond: InfluxDB stores a
    /// sensor's readings one per millisecond, so some would overwrite others.
    #[error("{option}: each sensor would publish every {every_us} µs, more often than once a millisecond (InfluxDB keeps one point per sensor and millisecond): {fix}")]
    TooFast {
        option: &'static str,
        every_us: u128,
        fix: &'static str,
    },
}

/// The shortest time between two readings of one sensor: their timestamps are
/// stored in milliseconds ([`crate::domain::SensorClock`]).
pub const MIN_SENSOR_INTERVAL: Duration = Duration::from_millis(1);

/// `--rate`: readings per second across the fleet, or unthrottled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    PerSecond(f64),
    Max,
}

pub fn parse_rate(s: &str) -> Result<Rate, String> {
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

/// One MQTT connection of the run.
#[derive(Debug, Clone)]
pub(crate) struct LinkPlan {
    pub(crate) client_id: String,
    pub(crate) mqtt: MqttArgs,
    /// Indices into the fleet (zone-major: nord s1, nord s2, sud s1...).
    pub(crate) sensors: Range<usize>,
    /// Zones whose heartbeat this connection publishes.
    pub(crate) heartbeat_zones: Vec<usize>,
}

#[derive(Debug)]
pub struct Plan {
    pub(crate) zones: Vec<Zone>,
    pub(crate) per_zone: u32,
    /// Time between two readings of one sensor.
    pub(crate) interval: Duration,
    /// False for `--rate max`.
    pub(crate) paced: bool,
    /// Readings per sensor, when the run is bounded by --count or a paced --duration.
    pub(crate) per_sensor: Option<u64>,
    /// `--duration` of an unpaced run (`--rate max`), measured on the clock.
    pub(crate) wall_limit: Option<Duration>,
    pub(crate) seed: u64,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) faults: Vec<Fault>,
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) thresholds: Thresholds,
    pub(crate) alerts: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) links: Vec<LinkPlan>,
}

impl Plan {
    /// Checks every option against the others (fault and scenario targets, per-zone
    /// accounts, client ids), reads the thresholds file and cuts the fleet into
    /// connections.
    pub fn new(args: Options) -> Result<Plan, PlanError> {
        let zones = args.zones.clone();
        let per_zone = args.sensors_per_zone;
        let total = zones.len() * per_zone as usize;
        if total > 1_000_000 {
            return Err(PlanError::TooManySensors { total });
        }
        for f in &args.faults {
            check_target(&zones, per_zone, &f.zone, f.sensor.as_ref()).map_err(|reason| {
                PlanError::Target {
                    option: "--fault",
                    spec: f.to_string(),
                    reason,
                }
            })?;
        }
        for s in &args.scenarios {
            check_target(&zones, per_zone, s.zone(), None).map_err(|reason| PlanError::Target {
                option: "--scenario",
                spec: s.to_string(),
                reason,
            })?;
        }

        let (interval, paced) = match args.rate {
            None => (args.interval, true),
            Some(Rate::PerSecond(r)) => {
                let ns = (total as f64 * 1e9 / r).round().max(1.0) as u64;
                (Duration::from_nanos(ns), true)
            }
            Some(Rate::Max) => (args.interval, false),
        };
        if paced && interval < MIN_SENSOR_INTERVAL {
            return Err(PlanError::TooFast {
                option: if args.rate.is_some() {
                    "--rate"
                } else {
                    "--interval"
                },
                every_us: interval.as_micros(),
                fix: if args.rate.is_some() {
                    "lower the rate or add sensors (at most 1000 readings/s per sensor)"
                } else {
                    "an interval of 1ms or more"
                },
            });
        }
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
                let failed = |reason: String| PlanError::Thresholds {
                    path: path.display().to_string(),
                    reason,
                };
                let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
                Thresholds::from_json(&bytes).map_err(|e| failed(e.to_string()))?
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
                return Err(PlanError::ConnectionsWithZoneAccounts);
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
            links,
        })
    }

    pub fn total_sensors(&self) -> usize {
        self.zones.len() * self.per_zone as usize
    }

    /// Readings of the whole run, when it is bounded by a count (or a paced
    /// duration).
    pub fn total_readings(&self) -> Option<u64> {
        self.per_sensor.map(|n| n * self.total_sensors() as u64)
    }
}

/// Does a fault or scenario name a zone and sensor of this run?
pub(crate) fn check_target(
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
pub(crate) fn sensor_index(s: &SensorId) -> Option<u32> {
    let n: u32 = s.as_str().strip_prefix('s')?.parse().ok()?;
    if n == 0 || s.as_str() != format!("s{n}") {
        return None;
    }
    Some(n - 1)
}

pub(crate) fn sensor_name(index: u32) -> SensorId {
    SensorId::new(&format!("s{}", index + 1)).expect("s<N> is a valid sensor name")
}

pub(crate) fn valid_client_id(id: String) -> Result<String, PlanError> {
    validate_name("client", &id)
        .map(|()| id)
        .map_err(|e| PlanError::ClientId(e.to_string()))
}

/// One connection per zone, each with its zone's account.
pub(crate) fn zone_links(
    args: &Options,
    zones: &[Zone],
    per_zone: u32,
) -> Result<Vec<LinkPlan>, PlanError> {
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
pub(crate) fn shared_links(
    args: &Options,
    zones: &[Zone],
    n: usize,
) -> Result<Vec<LinkPlan>, PlanError> {
    let base = args.client_id.clone().unwrap_or_else(|| "simulator".into());
    if base.contains("{zone}") {
        return Err(PlanError::ZoneClientIdWithoutZoneAccounts);
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
pub(crate) fn human_rate(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.2}")
    } else if r < 100.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

pub(crate) fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}
