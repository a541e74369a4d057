//! `arng check-lab`: the lab's checklist (TP ARNG), automated, against any team's
//! implementation — their broker, their sensor, their REST API, their InfluxDB.
//!
//! For a window (70 s by default) it watches `entrepot/#` and `entrepot/+/+/v1`,
//! publishes one probe reading and posts one probe alert, polls the API, then reads
//! InfluxDB. Each requirement becomes an [`Item`]: pass, fail, or not checked (with
//! the reason: no critical reading in the window, no right to read the bucket's
//! settings...), each with its evidence — what was seen, where.
//!
//! | id | passes when |
//! |---|---|
//! | `broker.auth` | an anonymous CONNECT is refused |
//! | `broker.round_trip` | the probe published on `entrepot/<zone>/e2e-probe/v1` comes back on a subscription to that topic |
//! | `broker.wildcard_plus` | `entrepot/+/+/v1` delivers readings (and only topics it matches) |
//! | `broker.wildcard_hash` | `entrepot/#` delivers topics of several depths, the probe included |
//! | `broker.zones` | every zone of `--zones` publishes at least one reading in the window |
//! | `payload.<field>` | every reading has `timestamp`, `temp`, `hum`, `alert_level`, `version`, typed |
//! | `payload.critical` | a reading says `critical` in `alert_level` (not checked if none in the window) |
//! | `heartbeat.retained` | a fresh subscription gets, per zone, a retained copy of a heartbeat published in the window |
//! | `heartbeat.qos` | heartbeats arrive at QoS 0 on a QoS 2 subscription |
//! | `heartbeat.period` | per zone, heartbeats every `--heartbeat-period` ± `--heartbeat-tolerance` |
//! | `influx.measurement` | a measurement has a tag holding the zones, one holding the sensors, numeric fields |
//! | `influx.values` | every reading of the window is there with the same values |
//! | `influx.retention` | the bucket has a finite retention |
//! | `rest.latest` | `GET /zones/{zone}/latest` shows what MQTT carried (with the lag) |
//! | `rest.thresholds` | `GET /thresholds` answers JSON holding threshold values |
//! | `rest.alert_post` | `POST /alerts` accepts the probe alert |
//! | `rest.alert_visible` | the alert then shows in `GET /alerts`, on MQTT or in InfluxDB |
//!
//! Layout: [`observed`] (what was seen, plain data, bounded), [`eval`] (the checks,
//! pure), [`watch`] (MQTT I/O), [`backend`] (REST and
//! InfluxDB I/O), [`run`](mod@run) (the sequence), [`render`] (table, JSON, Markdown),
//! [`lang`] (French and English).

pub mod backend;
pub mod eval;
pub mod lang;
pub mod observed;
pub mod render;
pub mod run;
pub mod watch;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use lang::Lang;
pub use run::LabCheck;

/// The stable ids of the items, in report order.
pub mod ids {
    pub const BROKER_AUTH: &str = "broker.auth";
    pub const BROKER_ROUND_TRIP: &str = "broker.round_trip";
    pub const BROKER_PLUS: &str = "broker.wildcard_plus";
    pub const BROKER_HASH: &str = "broker.wildcard_hash";
    pub const BROKER_ZONES: &str = "broker.zones";
    pub const PAYLOAD_TIMESTAMP: &str = "payload.timestamp";
    pub const PAYLOAD_TEMP: &str = "payload.temp";
    pub const PAYLOAD_HUM: &str = "payload.hum";
    pub const PAYLOAD_ALERT_LEVEL: &str = "payload.alert_level";
    pub const PAYLOAD_VERSION: &str = "payload.version";
    pub const PAYLOAD_CRITICAL: &str = "payload.critical";
    pub const HEARTBEAT_RETAINED: &str = "heartbeat.retained";
    pub const HEARTBEAT_QOS: &str = "heartbeat.qos";
    pub const HEARTBEAT_PERIOD: &str = "heartbeat.period";
    pub const INFLUX_MEASUREMENT: &str = "influx.measurement";
    pub const INFLUX_VALUES: &str = "influx.values";
    pub const INFLUX_RETENTION: &str = "influx.retention";
    pub const REST_LATEST: &str = "rest.latest";
    pub const REST_THRESHOLDS: &str = "rest.thresholds";
    pub const REST_ALERT_POST: &str = "rest.alert_post";
    pub const REST_ALERT_VISIBLE: &str = "rest.alert_visible";

    /// The payload items, in the order of [`super::observed::FIELDS`].
    pub const PAYLOAD_FIELDS: [&str; 5] = [
        PAYLOAD_TIMESTAMP,
        PAYLOAD_TEMP,
        PAYLOAD_HUM,
        PAYLOAD_ALERT_LEVEL,
        PAYLOAD_VERSION,
    ];

    pub const ALL: [&str; 21] = [
        BROKER_AUTH,
        BROKER_ROUND_TRIP,
        BROKER_PLUS,
        BROKER_HASH,
        BROKER_ZONES,
        PAYLOAD_TIMESTAMP,
        PAYLOAD_TEMP,
        PAYLOAD_HUM,
        PAYLOAD_ALERT_LEVEL,
        PAYLOAD_VERSION,
        PAYLOAD_CRITICAL,
        HEARTBEAT_RETAINED,
        HEARTBEAT_QOS,
        HEARTBEAT_PERIOD,
        INFLUX_MEASUREMENT,
        INFLUX_VALUES,
        INFLUX_RETENTION,
        REST_LATEST,
        REST_THRESHOLDS,
        REST_ALERT_POST,
        REST_ALERT_VISIBLE,
    ];
}

/// The verdict on one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    NotChecked,
}

impl Status {
    pub fn label(self, lang: Lang) -> &'static str {
        match self {
            Status::Pass => lang.pick("OK", "PASS"),
            Status::Fail => lang.pick("ÉCHEC", "FAIL"),
            Status::NotChecked => lang.pick("NON VÉRIFIÉ", "NOT CHECKED"),
        }
    }
}

/// One requirement of the lab, judged: a one-line summary and the evidence lines
/// (what was seen, where).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    pub summary: String,
    pub evidence: Vec<String>,
}

impl Item {
    pub fn new(id: &'static str, lang: Lang, status: Status, summary: String) -> Item {
        Item {
            id,
            title: lang::title(id, lang),
            status,
            summary,
            evidence: Vec::new(),
        }
    }

    pub fn with(mut self, evidence: Vec<String>) -> Item {
        self.evidence = evidence;
        self
    }
}

/// The item an evaluator is judging, so that each of its verdicts says only a status
/// and its words: `let judge = Judge::new(INFLUX_VALUES, lang); … judge.fail(summary)`.
#[derive(Debug, Clone, Copy)]
pub struct Judge {
    id: &'static str,
    lang: Lang,
}

impl Judge {
    pub fn new(id: &'static str, lang: Lang) -> Judge {
        Judge { id, lang }
    }

    pub fn verdict(self, status: Status, summary: String) -> Item {
        Item::new(self.id, self.lang, status, summary)
    }

    pub fn pass(self, summary: String) -> Item {
        self.verdict(Status::Pass, summary)
    }

    pub fn fail(self, summary: String) -> Item {
        self.verdict(Status::Fail, summary)
    }

    pub fn not_checked(self, summary: String) -> Item {
        self.verdict(Status::NotChecked, summary)
    }

    /// The item could not be judged, for the reason `gap` gives.
    pub fn gap(self, gap: &observed::Gap) -> Item {
        match gap {
            observed::Gap::Failed(why) => self.fail(why.clone()),
            observed::Gap::NotChecked(why) => self.not_checked(why.clone()),
        }
    }
}

/// Where the checked chain is (never a secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub mqtt_url: String,
    pub mqtt_username: Option<String>,
    pub api_url: String,
    pub influx_url: String,
    pub influx_org: String,
    pub influx_bucket: String,
    pub zones: Vec<String>,
}

/// The whole check: what was checked, when, and every item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabReport {
    pub lang: Lang,
    pub target: Target,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    #[serde(serialize_with = "secs")]
    pub window: Duration,
    /// Probe data left in the team's chain (clearly named).
    pub left_behind: Vec<String>,
    pub items: Vec<Item>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl LabReport {
    /// Every checked item passed (items not checked do not count against it).
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.status != Status::Fail)
    }

    /// How many items have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.items.iter().filter(|i| i.status == status).count()
    }

    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.id == id)
    }
}
