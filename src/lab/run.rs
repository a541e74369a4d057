//! The sequence of one `arng check-lab` run:
//!
//! 1. side by side: an anonymous connection attempt, the subscriptions to
//!    `entrepot/#` (QoS 2, to see the publishers' QoS) and `entrepot/+/+/v1`,
//!    `GET /thresholds`, the bucket's retention;
//! 2. during the window: the probe reading's round trip, the probe alert (`POST`,
//!    then where it shows), and `GET /zones/{zone}/latest` every `poll_every`;
//! 3. at the end of the window, while `entrepot/#` still listens: a fresh
//!    subscription to the heartbeats (what a new subscriber gets retained);
//! 4. InfluxDB: the bucket's measurements, their numeric points of the window, and,
//!    for the one that holds the readings, a wait until every reading is there (or
//!    the timeout).
//!
//! Then the pure evaluators judge it all ([`super::eval`]).

use std::time::Duration;

use chrono::Utc;
use indicatif::ProgressBar;
use reqwest::Method;
use rumqttc::QoS;
use serde_json::Value;
use tokio::time::Instant;

use super::backend::{self, store_gap, LOOK_EVERY};
use super::eval::influx::{discover, missing, InfluxSeen, StoredPoint};
use super::eval::{self, Expect, MqttSeen, RestSeen};
use super::observed::{AlertProbe, Gap, LatestAnswer, Markers, Sample, Seen};
use super::watch::{self, Watch};
use super::{LabReport, Lang, Target};
use crate::config::Chain;
use crate::domain::topic::READINGS_FILTER;
use crate::domain::Zone;
use crate::probe::{ms, ApiClient};
use crate::store::InfluxClient;
use crate::supervision::PROBE_SENSOR;
use crate::tr;

/// `GET /zones/{zone}/latest` answers kept at most (a long window polls less often
/// than it could, never unboundedly).
pub const MAX_LATEST: usize = 5_000;
/// How long the fresh heartbeat subscription listens for retained copies.
pub const RETAINED_LISTEN: Duration = Duration::from_millis(1500);

/// One check of a team's chain, as the options describe it.
#[derive(Debug, Clone)]
pub struct LabCheck {
    /// The team's broker (and account), InfluxDB, API.
    pub chain: Chain,
    /// The zones that must publish (the lab's three by default); the first one
    /// carries the probes.
    pub zones: Vec<Zone>,
    /// How long to watch the broker and poll the API.
    pub window: Duration,
    /// How long a write may take to show (probe round trip, alert, InfluxDB).
    pub timeout: Duration,
    /// How long one HTTP request or Flux query may take.
    pub request_timeout: Duration,
    pub heartbeat_period: Duration,
    pub heartbeat_tolerance: Duration,
    /// Time between two polls of `GET /zones/{zone}/latest`.
    pub poll_every: Duration,
    /// Publish the probe reading and post the probe alert (false: read only).
    pub probe: bool,
    /// Where the API lists alerts (`GET`).
    pub alerts_path: String,
    /// The body of the probe alert, with `{zone}` and `{marker}` to fill in
    /// (None: [`DEFAULT_ALERT_BODY`]).
    pub alert_body: Option<String>,
    pub lang: Lang,
}

/// The probe alert arng's API and the lab's take: a manual warning of the probe
/// sensor whose message carries the marker.
pub const DEFAULT_ALERT_BODY: &str = r#"{"zone": "{zone}", "sensor": "e2e-probe", "metric": "manual", "severity": "warning", "message": "arng check-lab probe {marker} (test alert, ignore)"}"#;

/// The alert body for `zone` and `marker`: a JSON object, or why not. Checked on the
/// command line with a sample zone and marker.
pub fn alert_body(template: &str, zone: &str, marker: &str) -> Result<Value, String> {
    if !template.contains("{marker}") {
        return Err(
            "the alert body must hold {marker}, so that the alert can be found again".into(),
        );
    }
    let text = template.replace("{zone}", zone).replace("{marker}", marker);
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err("the alert body must be a JSON object".into()),
        Err(e) => Err(format!("the alert body is not JSON: {e}")),
    }
}

impl LabCheck {
    fn target(&self) -> Target {
        Target {
            mqtt_url: self.chain.mqtt.url.to_string(),
            mqtt_username: self.chain.mqtt.username.clone(),
            api_url: self.chain.api.url.to_string(),
            influx_url: self.chain.influx.url.to_string(),
            influx_org: self.chain.influx.org.clone(),
            influx_bucket: self.chain.influx.bucket.clone(),
            zones: self.zones.iter().map(Zone::to_string).collect(),
        }
    }

    /// Runs the whole check; `bar` shows the window going by.
    pub async fn run(&self, bar: &ProgressBar) -> LabReport {
        let lang = self.lang;
        let started_at = Utc::now();
        let t0 = Instant::now();
        let marker = format!(
            "check-lab-{}-{}",
            std::process::id(),
            started_at.timestamp_millis()
        );
        let marks = Markers {
            probe_sensor: PROBE_SENSOR.into(),
            alert_marker: if self.probe {
                marker.clone()
            } else {
                String::new()
            },
        };
        let mqtt = &self.chain.mqtt;
        let api = ApiClient::new(&self.chain.api, self.request_timeout);
        let influx = InfluxClient::with_timeout(&self.chain.influx, self.request_timeout);

        let (anonymous, hash, plus, thresholds, retention) = tokio::join!(
            watch::anonymous(mqtt, self.timeout),
            Watch::start(
                mqtt,
                "hash",
                &[("entrepot/#", QoS::ExactlyOnce)],
                marks.clone(),
                t0,
                self.timeout
            ),
            Watch::start(
                mqtt,
                "plus",
                &[(READINGS_FILTER, QoS::AtMostOnce)],
                marks.clone(),
                t0,
                self.timeout
            ),
            backend::http(&api, Method::GET, "/thresholds", None),
            async { influx.bucket_retention().await.map_err(store_gap) },
        );

        let end = t0 + self.window;
        let zone = &self.zones[0];
        let no_probe = || {
            Gap::NotChecked(tr!(
                lang,
                "--no-probe : rien n'est publié",
                "--no-probe: nothing is published"
            ))
        };
        let round_trip = async {
            if self.probe {
                watch::round_trip(mqtt, zone, self.timeout).await
            } else {
                Err(no_probe())
            }
        };
        let alert = async {
            if self.probe {
                Ok(self.alert_probe(&api, &influx, zone, &marker, t0).await)
            } else {
                Err(no_probe())
            }
        };
        let (round_trip, alert, latest, ()) = tokio::join!(
            round_trip,
            alert,
            self.poll_latest(&api, t0, end),
            progress(bar, t0, end, self.window)
        );

        bar.set_message("heartbeats");
        let retained = watch::retained(mqtt, marks.clone(), self.timeout, RETAINED_LISTEN).await;
        let hash: Seen<Sample> = match hash {
            Ok(w) => Ok(w.finish().await),
            Err(g) => Err(g),
        };
        let plus: Seen<Sample> = match plus {
            Ok(w) => Ok(w.finish().await),
            Err(g) => Err(g),
        };
        let alert = alert.map(|mut a| {
            if let Ok((at, topic)) = hash
                .as_ref()
                .map_err(drop)
                .and_then(|h| h.marker.clone().ok_or(()))
            {
                a.found
                    .push((format!("MQTT {topic}"), ms(at.saturating_sub(a.posted_at))));
            }
            a
        });

        bar.set_message("InfluxDB");
        let influx_seen = self
            .read_influx(&influx, &hash, started_at, retention)
            .await;
        bar.finish_and_clear();

        let mqtt_seen = MqttSeen {
            anonymous,
            hash,
            plus,
            round_trip,
            retained,
        };
        let rest_seen = RestSeen {
            api_url: self.chain.api.url.to_string(),
            latest,
            poll_every: self.poll_every,
            thresholds,
            alert,
        };
        let expect = Expect {
            zones: self.zones.iter().map(Zone::to_string).collect(),
            window: self.window,
            heartbeat_period: self.heartbeat_period,
            heartbeat_tolerance: self.heartbeat_tolerance,
        };
        let mut items = eval::evaluate_mqtt(&mqtt_seen, &expect, lang);
        items.extend(eval::influx::evaluate(
            &influx_seen,
            &mqtt_seen.hash,
            &expect.zones,
            lang,
        ));
        items.extend(eval::rest::evaluate(
            &rest_seen,
            &mqtt_seen.hash,
            &expect.zones,
            lang,
        ));
        LabReport {
            lang,
            target: self.target(),
            started_at,
            finished_at: Utc::now(),
            window: self.window,
            left_behind: self.left_behind(&mqtt_seen, &rest_seen),
            items,
        }
    }

    /// What the run leaves in the team's chain, said plainly.
    fn left_behind(&self, mqtt: &MqttSeen, rest: &RestSeen) -> Vec<String> {
        let lang = self.lang;
        let mut out = Vec::new();
        if let Ok(rt) = &mqtt.round_trip {
            let (topic, payload) = (&rt.topic, &rt.payload);
            out.push(tr!(
                lang,
                "une mesure du capteur {PROBE_SENSOR} sur {topic} (non retenue) : {payload}",
                "one reading of sensor {PROBE_SENSOR} on {topic} (not retained): {payload}"
            ));
        }
        if let Ok(a) = &rest.alert {
            if a.post
                .as_ref()
                .is_ok_and(|h| (200..300).contains(&h.status))
            {
                let body = &a.body;
                out.push(tr!(
                    lang,
                    "une alerte via POST /alerts : {body}",
                    "one alert through POST /alerts: {body}"
                ));
            }
        }
        out
    }

    /// `GET /zones/{zone}/latest` of every zone, every `poll_every`, until `end`.
    async fn poll_latest(&self, api: &ApiClient, t0: Instant, end: Instant) -> Vec<LatestAnswer> {
        let mut out = Vec::new();
        let mut tick = tokio::time::interval(self.poll_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if Instant::now() >= end {
                return out;
            }
            for zone in &self.zones {
                if out.len() >= MAX_LATEST {
                    return out;
                }
                let answer =
                    backend::http(api, Method::GET, &format!("/zones/{zone}/latest"), None).await;
                out.push(LatestAnswer::new(t0.elapsed(), zone.as_str(), answer));
            }
        }
    }

    /// Posts the probe alert, then looks for it in `GET <alerts_path>` and in
    /// InfluxDB until it shows or the timeout. (MQTT is looked at by `entrepot/#`.)
    async fn alert_probe(
        &self,
        api: &ApiClient,
        influx: &InfluxClient,
        zone: &Zone,
        marker: &str,
        t0: Instant,
    ) -> AlertProbe {
        let template = self.alert_body.as_deref().unwrap_or(DEFAULT_ALERT_BODY);
        let body = alert_body(template, zone.as_str(), marker).unwrap_or(Value::Null);
        let since = Utc::now() - chrono::Duration::minutes(1);
        let posted_at = t0.elapsed();
        let post = backend::http(api, Method::POST, "/alerts", Some(&body)).await;
        let mut probe = AlertProbe {
            zone: zone.to_string(),
            marker: marker.to_owned(),
            body: body.to_string(),
            posted_at,
            post,
            found: Vec::new(),
            looked: Vec::new(),
        };
        if !probe
            .post
            .as_ref()
            .is_ok_and(|h| (200..300).contains(&h.status))
        {
            return probe;
        }
        let posted = Instant::now();
        let deadline = posted + self.timeout;
        let (in_api, in_influx) = tokio::join!(
            self.look_in_api(api, marker, posted, deadline),
            look_in_influx(influx, marker, since, posted, deadline, self.lang)
        );
        for (found, looked) in [in_api, in_influx] {
            probe.found.extend(found);
            probe.looked.push(looked);
        }
        probe
    }

    /// Polls `GET <alerts_path>` for the marker: (where and when found, what it said).
    async fn look_in_api(
        &self,
        api: &ApiClient,
        marker: &str,
        posted: Instant,
        deadline: Instant,
    ) -> (Option<(String, f64)>, String) {
        let lang = self.lang;
        let path = &self.alerts_path;
        // arng's API leaves the probe sensor's alerts out of its views unless asked
        // (docs/supervision.md); an API that knows no such parameter ignores it.
        let sep = if path.contains('?') { '&' } else { '?' };
        let with_probe = format!("{path}{sep}include_probe=true");
        loop {
            let mut answer = backend::http(api, Method::GET, path, None).await;
            if answer
                .as_ref()
                .is_ok_and(|h| (200..300).contains(&h.status) && !h.body.contains(marker))
            {
                if let Ok(h) = backend::http(api, Method::GET, &with_probe, None).await {
                    if h.body.contains(marker) {
                        let code = h.status;
                        return (
                            Some((format!("GET {with_probe}"), ms(posted.elapsed()))),
                            format!("GET {with_probe} → HTTP {code}"),
                        );
                    }
                    answer = Ok(h);
                }
            }
            let said = match answer {
                Ok(h) if h.body.contains(marker) => {
                    let code = h.status;
                    return (
                        Some((format!("GET {path}"), ms(posted.elapsed()))),
                        format!("GET {path} → HTTP {code}"),
                    );
                }
                Ok(h) if matches!(h.status, 401 | 403 | 404 | 405) => {
                    let code = h.status;
                    let body = match h.excerpt() {
                        b if b.is_empty() => lang.pick("(corps vide)", "(empty body)").to_owned(),
                        b => b,
                    };
                    return (
                        None,
                        tr!(
                            lang,
                            "GET {path} → HTTP {code} : {body}",
                            "GET {path} → HTTP {code}: {body}"
                        ),
                    );
                }
                Ok(h) => {
                    let code = h.status;
                    tr!(
                        lang,
                        "GET {path} → HTTP {code}, sans le marqueur",
                        "GET {path} → HTTP {code}, without the marker"
                    )
                }
                Err(Gap::Failed(e) | Gap::NotChecked(e)) => {
                    tr!(lang, "GET {path} : {e}", "GET {path}: {e}")
                }
            };
            if Instant::now() + LOOK_EVERY >= deadline {
                return (None, said);
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// The measurements, their points, and a wait for the readings still missing.
    async fn read_influx(
        &self,
        influx: &InfluxClient,
        hash: &Seen<Sample>,
        started_at: chrono::DateTime<Utc>,
        retention: Seen<Option<Duration>>,
    ) -> InfluxSeen {
        // Readings are dated by their producers: allow for a clock a little off.
        let start = started_at - chrono::Duration::minutes(2);
        let stop = || Utc::now() + chrono::Duration::minutes(2);
        let mut seen = InfluxSeen {
            bucket: influx.bucket().to_owned(),
            measurements: Err(Gap::NotChecked(String::new())),
            points: Err(Gap::NotChecked(String::new())),
            truncated: false,
            retention,
        };
        let names = match backend::measurements(influx, start).await {
            Ok(n) => n,
            Err(e) => {
                let gap = store_gap(e);
                seen.measurements = Err(gap.clone());
                seen.points = Err(gap);
                return seen;
            }
        };
        let mut all: Vec<StoredPoint> = Vec::new();
        for m in &names {
            match backend::points(influx, m, start, stop()).await {
                Ok((p, cut)) => {
                    seen.truncated |= cut;
                    all.extend(p);
                }
                Err(e) => {
                    seen.measurements = Ok(names.clone());
                    seen.points = Err(store_gap(e));
                    return seen;
                }
            }
        }
        seen.measurements = Ok(names);
        let readings: &[_] = hash.as_ref().map_or(&[], |h| &h.readings);
        let zones: Vec<String> = self.zones.iter().map(Zone::to_string).collect();
        // The last readings of the window may still be on their way: wait for them.
        if let Some(schema) = discover(&all, readings, &zones).filter(|s| s.zone_tag.is_some()) {
            let deadline = Instant::now() + self.timeout;
            while !missing(&schema, &all, readings).is_empty()
                && Instant::now() + LOOK_EVERY < deadline
            {
                tokio::time::sleep(LOOK_EVERY).await;
                if let Ok((p, cut)) =
                    backend::points(influx, &schema.measurement, start, stop()).await
                {
                    seen.truncated |= cut;
                    all.retain(|x| x.measurement != schema.measurement);
                    all.extend(p);
                }
            }
        }
        seen.points = Ok(all);
        seen
    }
}

/// Polls InfluxDB for the marker: (where and when found, what it said).
async fn look_in_influx(
    influx: &InfluxClient,
    marker: &str,
    since: chrono::DateTime<Utc>,
    posted: Instant,
    deadline: Instant,
    lang: Lang,
) -> (Option<(String, f64)>, String) {
    let bucket = influx.bucket();
    loop {
        let said = match backend::find_marker(influx, marker, since).await {
            Ok(Some(place)) => {
                return (
                    Some((
                        format!("InfluxDB {place} (bucket {bucket})"),
                        ms(posted.elapsed()),
                    )),
                    tr!(
                        lang,
                        "InfluxDB : trouvée dans {place}",
                        "InfluxDB: found in {place}"
                    ),
                )
            }
            Ok(None) => tr!(
                lang,
                "InfluxDB : aucune valeur ne porte le marqueur dans {bucket}",
                "InfluxDB: no value holds the marker in {bucket}"
            ),
            Err(e @ crate::store::StoreError::Unauthorized { .. }) => {
                return (None, tr!(lang, "InfluxDB : {e}", "InfluxDB: {e}"))
            }
            Err(e) => tr!(lang, "InfluxDB : {e}", "InfluxDB: {e}"),
        };
        if Instant::now() + LOOK_EVERY >= deadline {
            return (None, said);
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// Moves `bar` through the window, in seconds.
async fn progress(bar: &ProgressBar, t0: Instant, end: Instant, window: Duration) {
    bar.set_length(window.as_secs().max(1));
    bar.set_message("broker, API");
    while Instant::now() < end {
        bar.set_position(t0.elapsed().as_secs());
        tokio::time::sleep(Duration::from_millis(250).min(end - Instant::now())).await;
    }
    bar.set_position(window.as_secs());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_bodies_are_checked() {
        let v = alert_body(DEFAULT_ALERT_BODY, "nord", "check-lab-1-2").unwrap();
        assert_eq!(v["zone"], "nord");
        assert!(v["message"].as_str().unwrap().contains("check-lab-1-2"));
        assert!(alert_body(r#"{"zone": "{zone}"}"#, "n", "m")
            .unwrap_err()
            .contains("{marker}"));
        assert!(alert_body(r#"["{marker}"]"#, "n", "m")
            .unwrap_err()
            .contains("object"));
        assert!(alert_body(r#"{"m": {marker}}"#, "n", "m")
            .unwrap_err()
            .contains("not JSON"));
    }
}
