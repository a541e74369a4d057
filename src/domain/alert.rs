//! Alerts: what they say, on the wire (`entrepot/alerts/<zone>`) and in InfluxDB (the
//! `alerts` measurement).
//!
//! ```json
//! {"version":1,"id":"ingest-nord-s1-temp-1795850102125","zone":"nord","sensor":"s1",
//!  "metric":"temp","severity":"critical","state":"raised","value":31.2,"threshold":30.0,
//!  "source":"ingest","message":"temp 31.2 above critical 30","timestamp":"2026-11-28T09:15:02.125Z"}
//! ```
//!
//! An alert is raised once and cleared once (the rule engine guarantees it); `source`
//! says who raised it: a sensor (its own `alert_level` turned bad), the ingest rules,
//! or the API (an operator or an external system).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::line_protocol::Point;
use super::names::{SensorId, Zone};
use super::payload::{
    check_not_future, format_timestamp, parse_object, AlertLevel, PayloadError, ReadPolicy,
};
use super::topic::Topic;

/// Measurement of alerts.
pub const ALERTS: &str = "alerts";

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    Temp,
    Hum,
    /// No reading or heartbeat for longer than `silence_after_s`.
    Silence,
    /// Raised by a person or an external system.
    Manual,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Temp => "temp",
            AlertKind::Hum => "hum",
            AlertKind::Silence => "silence",
            AlertKind::Manual => "manual",
        }
    }
}

impl From<super::thresholds::Metric> for AlertKind {
    fn from(m: super::thresholds::Metric) -> AlertKind {
        match m {
            super::thresholds::Metric::Temp => AlertKind::Temp,
            super::thresholds::Metric::Hum => AlertKind::Hum,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Raised,
    Cleared,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Raised => "raised",
            AlertState::Cleared => "cleared",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertSource {
    Sensor,
    Ingest,
    Api,
}

impl AlertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSource::Sensor => "sensor",
            AlertSource::Ingest => "ingest",
            AlertSource::Api => "api",
        }
    }

    /// May an alert published on `topic` carry this source? A broker cannot read
    /// payloads, so the topic is what proves who published: the ACL lets only the
    /// services (`ingest`, `api`) and operators write `entrepot/alerts/<zone>`, and the
    /// simulator only `entrepot/alerts/<zone>/sensor` (docs/decisions.md, 12). An
    /// alert claiming `source: ingest` on the sensors' topic is a forgery; readers
    /// refuse it (issue 15: one flipped ingest's health gauge and showed on the live
    /// page as a rule alert).
    pub fn allowed_on(self, topic: &Topic) -> bool {
        match topic {
            Topic::Alert { .. } => matches!(self, AlertSource::Ingest | AlertSource::Api),
            Topic::SensorAlert { .. } => self == AlertSource::Sensor,
            _ => false,
        }
    }
}

/// One alert event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    #[serde(default = "version_1")]
    pub version: u64,
    /// Unique id of the raise/clear pair's event (source, zone, sensor, metric, time).
    pub id: String,
    #[schema(value_type = String)]
    pub zone: Zone,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub sensor: Option<SensorId>,
    pub metric: AlertKind,
    /// `warning` or `critical`.
    pub severity: AlertLevel,
    pub state: AlertState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub source: AlertSource,
    #[serde(default)]
    pub message: String,
    #[serde(with = "timestamp_serde")]
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: DateTime<Utc>,
}

fn version_1() -> u64 {
    1
}

mod timestamp_serde {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_timestamp(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("timestamp: {e} (expected RFC 3339)")))
    }
}

/// Longest accepted alert message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

impl Alert {
    /// An id that is the same for the same event, so a re-sent alert overwrites
    /// instead of duplicating (in InfluxDB and in consumers that deduplicate).
    pub fn make_id(
        source: AlertSource,
        zone: &Zone,
        sensor: Option<&SensorId>,
        metric: AlertKind,
        t: DateTime<Utc>,
    ) -> String {
        format!(
            "{}-{}-{}-{}-{}",
            source.as_str(),
            zone,
            sensor.map_or("-", |s| s.as_str()),
            metric.as_str(),
            t.timestamp_millis()
        )
    }

    /// Checks what serde cannot: severity, numbers, message length, id shape.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!(
                "version: {} is not supported (expected 1)",
                self.version
            ));
        }
        if self.severity == AlertLevel::Normal {
            return Err("severity: must be warning or critical".into());
        }
        for (name, v) in [("value", self.value), ("threshold", self.threshold)] {
            if v.is_some_and(|x| !x.is_finite()) {
                return Err(format!("{name}: must be a finite number"));
            }
        }
        let chars = self.message.chars().count();
        if chars > MAX_MESSAGE_CHARS {
            return Err(format!(
                "message: {chars} characters, longer than the {MAX_MESSAGE_CHARS} allowed"
            ));
        }
        if self.id.is_empty()
            || self.id.len() > 128
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err("id: 1 to 128 characters from a-z, A-Z, 0-9, '-', '_', '.', ':'".into());
        }
        Ok(())
    }

    /// Reads an alert received on `entrepot/alerts/<zone>` at `now` (the receiver's
    /// clock). Alerts have one form only (arng's own, `deny_unknown_fields`); the
    /// policy's future margin applies to their timestamp. Errors say what is wrong
    /// with the alert (`invalid_alert`), not that its JSON is invalid when it is not.
    pub fn read(
        zone: &Zone,
        bytes: &[u8],
        policy: &ReadPolicy,
        now: DateTime<Utc>,
    ) -> Result<Alert, PayloadError> {
        let map = parse_object(bytes)?;
        let alert: Alert = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| PayloadError::BadAlert(e.to_string()))?;
        if &alert.zone != zone {
            return Err(PayloadError::TopicMismatch {
                field: "zone",
                payload: alert.zone.to_string(),
                topic: zone.to_string(),
            });
        }
        alert.validate().map_err(PayloadError::BadAlert)?;
        check_not_future(alert.timestamp, policy, now)?;
        Ok(alert)
    }

    /// [`Alert::read`] with the default policy, now.
    pub fn parse(zone: &Zone, bytes: &[u8]) -> Result<Alert, PayloadError> {
        Alert::read(zone, bytes, &ReadPolicy::default(), Utc::now())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("alert serializes")
    }

    /// The InfluxDB point: tags `zone`, `sensor`, `metric`, `severity`, `state`,
    /// `source`; fields `value`, `threshold`, `message`, `id`.
    pub fn point(&self) -> Point {
        let mut p = Point::new(ALERTS)
            .tag("zone", self.zone.as_str())
            .tag("sensor", self.sensor.as_ref().map_or("", |s| s.as_str()))
            .tag("metric", self.metric.as_str())
            .tag("severity", self.severity.as_str())
            .tag("state", self.state.as_str())
            .tag("source", self.source.as_str())
            .string("id", self.id.clone())
            .string("message", self.message.clone());
        if let Some(v) = self.value {
            p = p.float("value", v);
        }
        if let Some(t) = self.threshold {
            p = p.float("threshold", t);
        }
        p.timestamp(self.timestamp)
    }

    pub fn timestamp_str(&self) -> String {
        format_timestamp(self.timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Alert {
        let zone = Zone::new("nord").unwrap();
        let sensor = SensorId::new("s1").unwrap();
        let t = Utc.timestamp_millis_opt(1_795_850_102_125).unwrap();
        Alert {
            version: 1,
            id: Alert::make_id(
                AlertSource::Ingest,
                &zone,
                Some(&sensor),
                AlertKind::Temp,
                t,
            ),
            zone,
            sensor: Some(sensor),
            metric: AlertKind::Temp,
            severity: AlertLevel::Critical,
            state: AlertState::Raised,
            value: Some(31.2),
            threshold: Some(30.0),
            source: AlertSource::Ingest,
            message: "temp 31.2 above critical 30".into(),
            timestamp: t,
        }
    }

    #[test]
    fn round_trip_and_point() {
        let a = sample();
        assert_eq!(a.id, "ingest-nord-s1-temp-1795850102125");
        let zone = a.zone.clone();
        assert_eq!(Alert::parse(&zone, a.to_json().as_bytes()).unwrap(), a);
        assert_eq!(
            a.point().to_line().unwrap(),
            "alerts,metric=temp,sensor=s1,severity=critical,source=ingest,state=raised,zone=nord id=\"ingest-nord-s1-temp-1795850102125\",message=\"temp 31.2 above critical 30\",value=31.2,threshold=30.0 1795850102125"
        );
    }

    #[test]
    fn rejects() {
        let zone = Zone::new("nord").unwrap();
        let mut a = sample();
        a.severity = AlertLevel::Normal;
        assert!(Alert::parse(&zone, a.to_json().as_bytes())
            .unwrap_err()
            .to_string()
            .contains("severity"));
        let a = sample();
        assert_eq!(
            Alert::parse(&Zone::new("sud").unwrap(), a.to_json().as_bytes())
                .unwrap_err()
                .reason(),
            "topic_mismatch"
        );
        assert_eq!(
            Alert::parse(&zone, b"{\"zone\":\"nord\"}")
                .unwrap_err()
                .reason(),
            "invalid_alert"
        );
        assert_eq!(
            Alert::parse(&zone, b"{").unwrap_err().reason(),
            "malformed_json"
        );
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["unknown"] = 1.into();
        assert!(Alert::parse(&zone, v.to_string().as_bytes()).is_err());
    }

    #[test]
    fn refusals_say_what_happened() {
        let zone = Zone::new("nord").unwrap();
        let now = sample().timestamp;
        let read = |bytes: &[u8]| Alert::read(&zone, bytes, &ReadPolicy::default(), now);
        // Issue 15: a long message is not "payload is not valid JSON".
        let mut a = sample();
        a.message = "x".repeat(612);
        let e = read(a.to_json().as_bytes()).unwrap_err();
        assert_eq!(e.reason(), "invalid_alert");
        assert_eq!(
            e.to_string(),
            "invalid alert: message: 612 characters, longer than the 500 allowed"
        );
        // Duplicate keys are refused, whichever comes first.
        let json = sample()
            .to_json()
            .replacen('{', r#"{"severity":"warning","#, 1);
        assert_eq!(read(json.as_bytes()).unwrap_err().reason(), "duplicate_key");
        // Dated more than the margin ahead of the receiver's clock.
        let mut a = sample();
        a.timestamp = now + chrono::TimeDelta::seconds(301);
        let e = read(a.to_json().as_bytes()).unwrap_err();
        assert_eq!(
            (e.reason(), e.field()),
            ("future_timestamp", Some("timestamp"))
        );
        a.timestamp = now + chrono::TimeDelta::seconds(300);
        assert!(read(a.to_json().as_bytes()).is_ok());
        // serde's own words for a missing field, under the alert's reason.
        let e = read(br#"{"zone":"nord"}"#).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid alert: missing field"),
            "{e}"
        );
    }
}
