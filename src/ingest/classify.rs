//! What one MQTT message means for the writer: parsed with the domain parsers into a
//! reading, heartbeat, alert, thresholds document, broker statistic, something to
//! skip, or a rejection with its reason. Pure: no I/O.

use rumqttc::Publish;

use super::outbox::Delivery;
use super::reader::Reader;
use crate::domain::topic::Topic;
use crate::domain::{Alert, Heartbeat, PayloadError, Reading, Thresholds};

/// What the link hands to the writer. Every variant carries the message's
/// [`Delivery`], which the writer gives back once the message is settled (that is
/// when it is acknowledged, and when the link may read more).
#[derive(Debug)]
pub enum Inbound {
    Reading(Reading, Delivery),
    Heartbeat(Heartbeat, Delivery),
    Alert(Alert, Delivery),
    Thresholds(Thresholds, Delivery),
    /// Nothing to store (our own status or dead-letter messages, `$SYS` statistics we
    /// do not keep); settled in order with the rest.
    Skip(Delivery),
    /// One broker statistic from `$SYS/broker/...`, received at `at` (QoS 0: nothing
    /// to acknowledge, but it is accounted for like any message).
    BrokerStat {
        field: &'static str,
        value: f64,
        at: chrono::DateTime<chrono::Utc>,
        delivery: Delivery,
    },
    Invalid {
        topic: String,
        payload: Vec<u8>,
        reason: &'static str,
        /// The payload field at fault, when one is (for the dead-letter copy).
        field: Option<String>,
        error: String,
        delivery: Delivery,
    },
}

impl Inbound {
    /// The message's delivery.
    pub fn delivery(&self) -> Delivery {
        match self {
            Inbound::Reading(_, d)
            | Inbound::Heartbeat(_, d)
            | Inbound::Alert(_, d)
            | Inbound::Thresholds(_, d)
            | Inbound::Skip(d) => *d,
            Inbound::BrokerStat { delivery, .. } | Inbound::Invalid { delivery, .. } => *delivery,
        }
    }

    /// Its payload size (the link's memory accounting).
    pub fn bytes(&self) -> usize {
        self.delivery().bytes()
    }
}

/// Parses one MQTT message into what the writer must do with it; `reader` reads the
/// payloads under ingest's policy and counts the forms it normalised.
pub fn classify(p: &Publish, delivery: Delivery, reader: &mut Reader) -> Inbound {
    let topic_str = p.topic.as_str();
    // Broker statistics are not part of the entrepot scheme: kept when useful,
    // skipped otherwise, never dead-lettered.
    if topic_str.starts_with("$SYS/") {
        return match crate::supervision::broker_stat(topic_str, &p.payload) {
            Some((field, value)) => Inbound::BrokerStat {
                field,
                value,
                at: chrono::Utc::now(),
                delivery,
            },
            None => Inbound::Skip(delivery),
        };
    }
    let invalid_field =
        |reason: &'static str, field: Option<String>, error: String| Inbound::Invalid {
            topic: topic_str.to_owned(),
            payload: p.payload.to_vec(),
            reason,
            field,
            error,
            delivery,
        };
    let refused =
        |e: PayloadError| invalid_field(e.reason(), e.field().map(str::to_owned), e.to_string());
    let parsed = match Topic::parse(topic_str) {
        Ok(t) => t,
        Err(e) => return invalid_field(e.reason(), None, e.to_string()),
    };
    match parsed {
        Topic::Reading { zone, sensor } => {
            match reader.reading(topic_str, &zone, &sensor, &p.payload) {
                Ok(r) => Inbound::Reading(r, delivery),
                Err(e) => refused(e),
            }
        }
        Topic::Heartbeat { zone } => match reader.heartbeat(topic_str, &zone, &p.payload) {
            Ok(h) => Inbound::Heartbeat(h, delivery),
            Err(e) => refused(e),
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
                ),
                Ok(a) => Inbound::Alert(a, delivery),
                Err(e) => refused(e),
            }
        }
        Topic::Thresholds => match Thresholds::from_json(&p.payload) {
            Ok(t) => Inbound::Thresholds(t, delivery),
            Err(e) => invalid_field("invalid_thresholds", Some(e.field.clone()), e.to_string()),
        },
        Topic::Status { .. } | Topic::DeadLetter { .. } => Inbound::Skip(delivery),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::QoS;

    fn publish(topic: &str, payload: &str) -> Publish {
        Publish::new(topic, QoS::AtLeastOnce, payload)
    }

    #[test]
    fn each_topic_kind_is_recognised_and_keeps_its_delivery() {
        let d = Delivery::for_test(7);
        let mut reader = Reader::new(Default::default(), &crate::metrics::Registry::new(), "test");
        let reading = r#"{"version":1,"timestamp":"2026-01-01T00:00:00Z","temp":20,"hum":40,"alert_level":"normal"}"#;
        assert!(matches!(
            classify(&publish("entrepot/nord/s1/v1", reading), d, &mut reader),
            Inbound::Reading(_, x) if x == d
        ));
        assert!(matches!(
            classify(&publish("entrepot/status/ingest", "online"), d, &mut reader),
            Inbound::Skip(x) if x == d
        ));
        assert!(matches!(
            classify(&publish("$SYS/broker/uptime", "12 seconds"), d, &mut reader),
            Inbound::Skip(_) | Inbound::BrokerStat { .. }
        ));
        match classify(&publish("entrepot/nord/s1/v1", "{"), d, &mut reader) {
            Inbound::Invalid {
                reason,
                payload,
                delivery,
                ..
            } => {
                assert_eq!(reason, "malformed_json");
                assert_eq!(payload, b"{");
                assert_eq!(delivery, d);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&publish("entrepot/alerts/nord", "{}"), d, &mut reader),
            Inbound::Invalid {
                reason: "invalid_alert",
                ..
            }
        ));
    }
}
