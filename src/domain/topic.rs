//! The MQTT topic scheme under the `entrepot` root.
//!
//! | topic | published by | retained | QoS |
//! |---|---|---|---|
//! | `entrepot/<zone>/<sensor>/v1` | sensors | no | 1 (0 allowed) |
//! | `entrepot/heartbeat/<zone>` | sensors (one per zone) | yes | 0 |
//! | `entrepot/alerts/<zone>` | ingest (rules), API (`POST /alerts`) | no | 1 |
//! | `entrepot/alerts/<zone>/sensor` | sensors (level changes, `arng simulate`) | no | 1 |
//! | `entrepot/status/<client>` | every arng process (last will) | yes | 1 |
//! | `entrepot/config/thresholds` | API (and ingest at first start) | yes | 1 |
//! | `entrepot/deadletter/<reason>` | ingest | no | 1 |
//!
//! The version suffix `v1` lets a future payload format live beside this one: a
//! subscriber to `entrepot/+/+/v1` never sees `v2` payloads it cannot parse.

use std::fmt;

use super::names::{validate_name, NameError, SensorId, Zone};

/// Root of every topic the warehouse uses.
pub const ROOT: &str = "entrepot";
/// Version segment of reading topics; bumped with an incompatible payload change.
pub const READING_VERSION_SEGMENT: &str = "v1";
/// Subscription filter for every reading of every zone.
pub const READINGS_FILTER: &str = "entrepot/+/+/v1";
/// Subscription filter for every zone's heartbeat.
pub const HEARTBEATS_FILTER: &str = "entrepot/heartbeat/+";
/// Subscription filter for alerts of every zone, the services' and the sensors'.
pub const ALERTS_FILTER: &str = "entrepot/alerts/#";
/// Last level of the topic of alerts raised by sensors themselves.
pub const SENSOR_ALERT_SEGMENT: &str = "sensor";
/// Subscription filter for the status (online/offline) of every client.
pub const STATUS_FILTER: &str = "entrepot/status/+";
/// The retained message that carries the thresholds in force.
pub const THRESHOLDS_TOPIC: &str = "entrepot/config/thresholds";

/// A topic of the warehouse scheme, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    Reading {
        zone: Zone,
        sensor: SensorId,
    },
    Heartbeat {
        zone: Zone,
    },
    /// An alert of a service: the rule engine of ingest, or the API.
    Alert {
        zone: Zone,
    },
    /// An alert a sensor raised itself (its level changed). A topic of its own so
    /// that the broker, which cannot read payloads, can tell who published it: only
    /// services may write `entrepot/alerts/<zone>` (mosquitto-conf/acl).
    SensorAlert {
        zone: Zone,
    },
    Status {
        client: String,
    },
    Thresholds,
    DeadLetter {
        reason: String,
    },
}

/// Why a topic is not part of the scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} is not under the {ROOT:?} root")]
    WrongRoot(String),
    #[error("topic {0:?} does not match any entrepot topic (expected entrepot/<zone>/<sensor>/v1, entrepot/heartbeat/<zone>, ...)")]
    Unknown(String),
    #[error("topic {topic:?}: unsupported version segment {segment:?} (this build reads v1)")]
    UnsupportedVersion { topic: String, segment: String },
    #[error("topic {topic:?}: {source}")]
    Name {
        topic: String,
        #[source]
        source: NameError,
    },
}

impl TopicError {
    /// A short, stable label for metrics and dead-letter records.
    pub fn reason(&self) -> &'static str {
        match self {
            TopicError::WrongRoot(_) | TopicError::Unknown(_) => "unknown_topic",
            TopicError::UnsupportedVersion { .. } => "unsupported_version",
            TopicError::Name { .. } => "invalid_name",
        }
    }
}

impl Topic {
    pub fn reading(zone: &Zone, sensor: &SensorId) -> Topic {
        Topic::Reading {
            zone: zone.clone(),
            sensor: sensor.clone(),
        }
    }

    /// Parses a concrete topic (no wildcards) into its meaning.
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let shown = || topic.chars().take(200).collect::<String>();
        let mut parts = topic.split('/');
        if parts.next() != Some(ROOT) {
            return Err(TopicError::WrongRoot(shown()));
        }
        let rest: Vec<&str> = parts.collect();
        let name_err = |source| TopicError::Name {
            topic: shown(),
            source,
        };
        match rest.as_slice() {
            ["heartbeat", zone] => Ok(Topic::Heartbeat {
                zone: Zone::new(zone).map_err(name_err)?,
            }),
            ["alerts", zone] => Ok(Topic::Alert {
                zone: Zone::new(zone).map_err(name_err)?,
            }),
            ["alerts", zone, SENSOR_ALERT_SEGMENT] => Ok(Topic::SensorAlert {
                zone: Zone::new(zone).map_err(name_err)?,
            }),
            ["status", client] => {
                validate_name("client", client).map_err(name_err)?;
                Ok(Topic::Status {
                    client: (*client).to_owned(),
                })
            }
            ["config", "thresholds"] => Ok(Topic::Thresholds),
            ["deadletter", reason] => {
                validate_name("reason", reason).map_err(name_err)?;
                Ok(Topic::DeadLetter {
                    reason: (*reason).to_owned(),
                })
            }
            [zone, sensor, version] => {
                if *version != READING_VERSION_SEGMENT {
                    return Err(TopicError::UnsupportedVersion {
                        topic: shown(),
                        segment: version.chars().take(20).collect(),
                    });
                }
                Ok(Topic::Reading {
                    zone: Zone::new(zone).map_err(name_err)?,
                    sensor: SensorId::new(sensor).map_err(name_err)?,
                })
            }
            _ => Err(TopicError::Unknown(shown())),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Reading { zone, sensor } => {
                write!(f, "{ROOT}/{zone}/{sensor}/{READING_VERSION_SEGMENT}")
            }
            Topic::Heartbeat { zone } => write!(f, "{ROOT}/heartbeat/{zone}"),
            Topic::Alert { zone } => write!(f, "{ROOT}/alerts/{zone}"),
            Topic::SensorAlert { zone } => {
                write!(f, "{ROOT}/alerts/{zone}/{SENSOR_ALERT_SEGMENT}")
            }
            Topic::Status { client } => write!(f, "{ROOT}/status/{client}"),
            Topic::Thresholds => f.write_str(THRESHOLDS_TOPIC),
            Topic::DeadLetter { reason } => write!(f, "{ROOT}/deadletter/{reason}"),
        }
    }
}

/// The filter for every reading of one zone, e.g. `entrepot/nord/+/v1`.
pub fn zone_readings_filter(zone: &Zone) -> String {
    format!("{ROOT}/{zone}/+/{READING_VERSION_SEGMENT}")
}

/// Does `filter` (with `+` and `#` wildcards) match the concrete `topic`? Implements
/// the MQTT 3.1.1 §4.7 rules, including that wildcards do not match `$`-topics.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn z(s: &str) -> Zone {
        Zone::new(s).unwrap()
    }

    #[test]
    fn round_trips() {
        let topics = [
            Topic::reading(&z("nord"), &SensorId::new("s1").unwrap()),
            Topic::Heartbeat { zone: z("sud") },
            Topic::Alert { zone: z("est") },
            Topic::SensorAlert { zone: z("est") },
            Topic::Status {
                client: "ingest".into(),
            },
            Topic::Thresholds,
            Topic::DeadLetter {
                reason: "malformed_json".into(),
            },
        ];
        for t in topics {
            assert_eq!(Topic::parse(&t.to_string()).unwrap(), t);
        }
        assert_eq!(
            Topic::Heartbeat { zone: z("nord") }.to_string(),
            "entrepot/heartbeat/nord"
        );
        assert_eq!(
            Topic::reading(&z("nord"), &SensorId::new("temp").unwrap()).to_string(),
            "entrepot/nord/temp/v1"
        );
        assert_eq!(
            Topic::SensorAlert { zone: z("sud") }.to_string(),
            "entrepot/alerts/sud/sensor"
        );
        assert!(filter_matches(ALERTS_FILTER, "entrepot/alerts/sud"));
        assert!(filter_matches(ALERTS_FILTER, "entrepot/alerts/sud/sensor"));
        assert!(Topic::parse("entrepot/alerts/sud/ingest").is_err());
    }

    #[test]
    fn rejects() {
        assert!(matches!(
            Topic::parse("other/nord/s1/v1"),
            Err(TopicError::WrongRoot(_))
        ));
        assert!(matches!(
            Topic::parse("entrepot/nord/s1/v2"),
            Err(TopicError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            Topic::parse("entrepot/Nord/s1/v1"),
            Err(TopicError::Name { .. })
        ));
        assert!(matches!(
            Topic::parse("entrepot/nord"),
            Err(TopicError::Unknown(_))
        ));
        assert!(matches!(
            Topic::parse("entrepot/nord/s1/v1/extra"),
            Err(TopicError::Unknown(_))
        ));
        // A reserved zone name cannot hide a reading inside the heartbeat branch.
        assert!(Topic::parse("entrepot/heartbeat/s1/v1").is_err());
        assert_eq!(
            Topic::parse("entrepot/nord/s1/v2").unwrap_err().reason(),
            "unsupported_version"
        );
    }

    #[test]
    fn wildcards() {
        assert!(filter_matches(READINGS_FILTER, "entrepot/nord/s1/v1"));
        assert!(!filter_matches(READINGS_FILTER, "entrepot/heartbeat/nord"));
        assert!(filter_matches("entrepot/#", "entrepot/heartbeat/nord"));
        assert!(filter_matches("entrepot/#", "entrepot"));
        assert!(!filter_matches("entrepot/#", "$SYS/broker/uptime"));
        assert!(filter_matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(filter_matches(
            &zone_readings_filter(&z("nord")),
            "entrepot/nord/s9/v1"
        ));
        assert!(!filter_matches(
            &zone_readings_filter(&z("nord")),
            "entrepot/sud/s9/v1"
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = Topic::parse(&s);
        }

        #[test]
        fn parsed_readings_render_back(zone in "[a-z][a-z0-9_-]{0,31}", sensor in "[a-z0-9][a-z0-9_-]{0,31}") {
            let topic = format!("entrepot/{zone}/{sensor}/v1");
            if let Ok(t) = Topic::parse(&topic) {
                prop_assert_eq!(t.to_string(), topic);
            }
        }
    }
}
