//! The hops of `arng check-e2e`: does the whole chain work, right now? Publishes
//! uniquely identified probe readings and follows them hop by hop, each within the
//! timeout:
//!
//! | hop | passes when |
//! |---|---|
//! | `api` | `GET /zones` answers |
//! | `mqtt publish` | the broker acknowledges the probe (QoS 1 PUBACK; an MQTT 5 refusal fails it) |
//! | `influxdb` | a Flux query finds the probe's point (`sensor=e2e-probe`, `seq` = its id) |
//! | `rest latest` | `GET /zones/{zone}/latest` shows the probe on its InfluxDB side |
//! | `alert mqtt` | after `debounce` critical probes, the critical alert arrives on `entrepot/alerts/<zone>` |
//! | `alert rest` | the same alert is listed by `GET /alerts?zone=<zone>` |
//! | `alert cleared` | after `debounce` normal probes, the clearing alert arrives on MQTT |
//! | `heartbeats` | every zone of the scope has a heartbeat in InfluxDB younger than the limit |
//! | `broker $SYS` | `$SYS/broker/uptime` (retained) arrives within [`SYS_WAIT`] of subscribing |
//!
//! Each hop reports its own cause ([`Cause`]): a hop that cannot reach its own
//! server (refused, DNS, credentials) fails at once with that cause, without waiting
//! for the timeout and without taking the hops that do not depend on it down with
//! it. A hop is reported as skipped only when what it needs is proven missing (the
//! probe is not in InfluxDB although InfluxDB answers). The zones probed and checked
//! are [`super::scope`]'s.

use std::time::Duration;

use chrono::Utc;
use indicatif::ProgressBar;
use rumqttc::QoS;
use tokio::time::Instant;

use super::alerts::{alert_hops, ALERT_HOPS};
use super::influx::{last_heartbeats, probe_in_influx};
use super::prober::RETAINED_WAIT;
use super::scope::{self, LastHeartbeats, Scope, ZoneOptions};
use super::{ms, poll, ApiClient, Cause, Failure, ProbeError, Prober};
use crate::config::Chain;
use crate::domain::topic::{Topic, HEARTBEATS_FILTER, THRESHOLDS_TOPIC};
use crate::domain::{AlertLevel, Thresholds, Zone};
use crate::report::{Check, Report};
use crate::store::InfluxClient;
use crate::supervision::{self, SYS_UPTIME_TOPIC};

pub const HOP_API: &str = "api";
pub const HOP_PUBLISH: &str = "mqtt publish";
pub const HOP_INFLUX: &str = "influxdb";
pub const HOP_REST: &str = "rest latest";
pub const HOP_ALERT_MQTT: &str = "alert mqtt";
pub const HOP_ALERT_REST: &str = "alert rest";
pub const HOP_ALERT_CLEARED: &str = "alert cleared";
pub const HOP_HEARTBEATS: &str = "heartbeats";
pub const HOP_SYS: &str = "broker $SYS";

/// The hops that need a published probe, in report order.
const AFTER_PUBLISH: [&str; 5] = [
    HOP_INFLUX,
    HOP_REST,
    HOP_ALERT_MQTT,
    HOP_ALERT_REST,
    HOP_ALERT_CLEARED,
];

/// How long after subscribing the `broker $SYS` hop waits for `$SYS/broker/uptime`
/// (at most `--timeout`). Mosquitto keeps it retained, so it comes right after the
/// SUBACK whenever the broker publishes statistics; a broker with `sys_interval 0`
/// publishes none, ever, and waiting out the timeout would tell nothing more.
pub const SYS_WAIT: Duration = Duration::from_secs(3);

/// Where this check's InfluxDB options are, for a failure of its own queries.
const INFLUX_HINT: &str =
    "check --influx-url / INFLUX_URL of this check (ingest and the API may use another)";

/// One run of the check: where everything is, which zones, how long each hop may
/// take.
#[derive(Debug, Clone)]
pub struct E2eCheck {
    /// Where the broker, InfluxDB and the API are.
    pub chain: Chain,
    /// Which zones are probed and whose heartbeats are checked, by the rule of
    /// [`super::scope`]; the oldest heartbeat accepted.
    pub zones: ZoneOptions,
    /// How long each hop may take (more than zero).
    pub timeout: Duration,
}

/// What a run found: the hops, and the zones it was about.
#[derive(Debug, Clone)]
pub struct E2eReport {
    pub report: Report,
    pub scope: Scope,
}

impl E2eReport {
    /// `{"ok", "hops": [{"name", "ok", "latency_ms", "detail", "cause"}], "zone",
    /// "zones", "zone_choice"}`: the contract's shape, plus the probe zone (null
    /// when none), the zones whose heartbeats were checked, and why that zone.
    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = serde_json::Map::new();
        doc.insert("ok".into(), self.report.ok.into());
        doc.insert(
            "hops".into(),
            serde_json::to_value(&self.report.checks).expect("checks serialize"),
        );
        doc.insert(
            "zone".into(),
            self.scope.probe.as_ref().ok().map(Zone::as_str).into(),
        );
        let zones: Vec<&str> = self.scope.zones.iter().map(Zone::as_str).collect();
        doc.insert("zones".into(), zones.into());
        doc.insert("zone_choice".into(), self.zone_choice().into());
        serde_json::Value::Object(doc)
    }

    /// The probe zone and why, and whose heartbeats were checked, in one sentence.
    pub fn zone_choice(&self) -> String {
        self.scope.choice("checked")
    }
}

/// Messages for a person watching (`arng check-e2e` shows them next to a spinner).
fn stage(progress: &ProgressBar, what: &str) {
    progress.set_message(what.to_owned());
}

fn skipped(name: &str, why: &str) -> Check {
    Check::failed(name, Cause::Skipped, None, format!("skipped: {why}"))
}

fn skip_all(hops: &mut Vec<Check>, names: &[&str], why: &str) {
    hops.extend(names.iter().map(|hop| skipped(hop, why)));
}

impl E2eCheck {
    /// Runs every hop (each within `timeout`) and reports them in order, telling
    /// `progress` what it waits for.
    pub async fn run(&self, progress: &ProgressBar) -> E2eReport {
        check(self, progress).await
    }
}

/// The broker side once subscribed: the prober, whether `$SYS` was granted (and
/// when), and the retained thresholds and heartbeats.
struct Listening {
    prober: Prober,
    sys: Result<Instant, String>,
    thresholds: Thresholds,
}

/// Connects and subscribes to `$SYS`, the heartbeats and the thresholds, then waits
/// for the retained messages.
async fn listen(chain: &Chain, timeout: Duration) -> Result<Listening, ProbeError> {
    let client_id = format!("arng-check-e2e-{}", std::process::id());
    let mut prober = Prober::connect(&chain.mqtt, &client_id, timeout).await?;
    // Heartbeats before thresholds: the broker sends the retained messages in the
    // order of the filters, so they are all in when the thresholds arrive.
    let filters = vec![
        (SYS_UPTIME_TOPIC.to_owned(), QoS::AtMostOnce),
        (HEARTBEATS_FILTER.to_owned(), QoS::AtMostOnce),
        (THRESHOLDS_TOPIC.to_owned(), QoS::AtLeastOnce),
    ];
    let at = Instant::now();
    let (sys, thresholds) = match prober.subscribe(filters, at + timeout).await {
        Ok(granted) => {
            let sys = if granted[0] {
                Ok(at)
            } else {
                Err(format!(
                    "the broker refused the subscription to {SYS_UPTIME_TOPIC} \
                     (the account needs `topic read $SYS/#`, as operator has)"
                ))
            };
            (sys, prober.retained_thresholds(RETAINED_WAIT).await)
        }
        Err(e) => (Err(e.to_string()), Thresholds::default()),
    };
    Ok(Listening {
        prober,
        sys,
        thresholds,
    })
}

async fn check(args: &E2eCheck, progress: &ProgressBar) -> E2eReport {
    let timeout = args.timeout;
    let api = ApiClient::new(&args.chain.api, timeout);
    let influx = InfluxClient::with_timeout(&args.chain.influx, timeout);
    let mut hops = Vec::new();

    // The API, InfluxDB's heartbeats and the broker side at once: none waits on
    // another, and each failure stays the failure of its own hop.
    stage(progress, "asking the API, InfluxDB and the broker");
    let started = Instant::now();
    let (api_zones, stored_beats, listening) = tokio::join!(
        async {
            let zones = api.zones().await;
            (zones, started.elapsed())
        },
        last_heartbeats(&influx),
        listen(&args.chain, timeout),
    );
    let (api_zones, api_took) = api_zones;
    hops.push(match &api_zones {
        Ok(zones) => {
            let names: Vec<&str> = zones.iter().map(Zone::as_str).collect();
            Check::pass(
                HOP_API,
                Some(ms(api_took)),
                format!("{} zone(s) [{}]", zones.len(), names.join(", ")),
            )
        }
        Err(e) => Check::failed(HOP_API, e.cause(), Some(ms(api_took)), e.to_string()),
    });

    let (mut listening, connect_error) = match listening {
        Ok(l) => (Some(l), None),
        Err(e) => (None, Some(e)),
    };
    let thresholds = listening
        .as_ref()
        .map(|l| l.thresholds.clone())
        .unwrap_or_default();
    let broker_beats = listening
        .as_ref()
        .map(|l| l.prober.heartbeats())
        .unwrap_or_default();
    let max_age = args.zones.max_age(&thresholds);
    let stored_beats = stored_beats.unwrap_or_default();
    let scope = args
        .zones
        .scope(&thresholds, &stored_beats, &broker_beats, Utc::now());

    match (listening.as_mut(), &scope.probe) {
        (None, _) => {
            let (cause, why) = connect_error.map_or((Cause::Other, String::new()), |e| {
                (e.cause(), e.to_string())
            });
            hops.push(Check::failed(HOP_PUBLISH, cause, None, why));
            skip_all(&mut hops, &AFTER_PUBLISH, "no MQTT connection");
        }
        (Some(_), Err(why)) => {
            hops.push(Check::failed(
                HOP_PUBLISH,
                Cause::Skipped,
                None,
                why.clone(),
            ));
            skip_all(&mut hops, &AFTER_PUBLISH, "no probe was published");
        }
        (Some(l), Ok(zone)) => {
            let probe = Probe {
                zone,
                thresholds: &thresholds,
                api: &api,
                influx: &influx,
                timeout,
            };
            probe.hops(&mut l.prober, progress, &mut hops).await;
        }
    }

    stage(progress, "reading the heartbeats");
    hops.push(heartbeat_hop(&influx, &scope, &broker_beats, args, max_age).await);

    stage(progress, "waiting for the broker's $SYS/broker/uptime");
    hops.push(match listening.as_mut() {
        Some(Listening {
            prober,
            sys: Ok(at),
            ..
        }) => {
            let (at, wait) = (*at, timeout.min(SYS_WAIT));
            let seen = prober
                .wait_message(at, at + wait, |t, _| t == SYS_UPTIME_TOPIC)
                .await;
            match seen {
                Some(m) => Check::pass(
                    HOP_SYS,
                    Some(ms(m.at - at)),
                    format!(
                        "{SYS_UPTIME_TOPIC}: {}",
                        String::from_utf8_lossy(&m.payload).trim()
                    ),
                ),
                None => Check::failed(
                    HOP_SYS,
                    Cause::NotSeen,
                    Some(ms(at.elapsed())),
                    format!(
                        "no {SYS_UPTIME_TOPIC} within {} of subscribing, although Mosquitto \
                         keeps it retained: the broker publishes no statistics (sys_interval 0 \
                         in mosquitto.conf; the reference config has 10), or account {} may \
                         not read $SYS/# (operator may)",
                        humantime::format_duration(wait),
                        prober.account()
                    ),
                ),
            }
        }
        Some(Listening { sys: Err(e), .. }) => Check::failed(HOP_SYS, Cause::Auth, None, e.clone()),
        None => skipped(HOP_SYS, "no MQTT connection"),
    });

    if let Some(l) = listening {
        l.prober.disconnect().await;
    }
    E2eReport {
        report: Report::new(hops),
        scope,
    }
}

/// The probe's way through the chain: one zone, the thresholds ingest applies, and
/// the clients of the hops.
struct Probe<'a> {
    zone: &'a Zone,
    thresholds: &'a Thresholds,
    api: &'a ApiClient,
    influx: &'a InfluxClient,
    timeout: Duration,
}

impl Probe<'_> {
    /// Publishes the probes and checks the hops they cross.
    async fn hops(&self, p: &mut Prober, progress: &ProgressBar, hops: &mut Vec<Check>) {
        let (zone, timeout) = (self.zone, self.timeout);
        // The probe's alert, subscribed before anything is published.
        let alert_topic = Topic::Alert { zone: zone.clone() }.to_string();
        let subscribed = p
            .subscribe(
                vec![(alert_topic, QoS::AtLeastOnce)],
                Instant::now() + timeout,
            )
            .await;
        if let Err(e) = subscribed {
            hops.push(Check::failed(HOP_PUBLISH, e.cause(), None, e.to_string()));
            skip_all(hops, &AFTER_PUBLISH, "no subscription to the alerts");
            return;
        }

        // 1. The broker accepts the probe.
        stage(progress, &format!("publishing a probe in zone {zone}"));
        let zt = self.thresholds.for_zone(zone);
        let (temp, hum) = supervision::normal_probe_values(zt);
        let probe = p.reading(zone, temp, hum, AlertLevel::Normal);
        let seq = probe.seq.unwrap_or_default();
        let topic = Topic::reading(zone, &probe.sensor).to_string();
        let published = Instant::now();
        match p.publish(&probe, published + timeout).await {
            Ok(took) => hops.push(Check::pass(
                HOP_PUBLISH,
                Some(ms(took)),
                format!("PUBACK for seq={seq} on {topic}"),
            )),
            Err(e) => {
                hops.push(Check::failed(
                    HOP_PUBLISH,
                    e.cause(),
                    Some(ms(published.elapsed())),
                    e.to_string(),
                ));
                skip_all(hops, &AFTER_PUBLISH, "the broker did not accept the probe");
                return;
            }
        }

        // 2 and 3, side by side and each on its own: InfluxDB has it; the API
        // serves it from (its own) InfluxDB.
        stage(progress, "waiting for the probe in InfluxDB and the API");
        let deadline = published + timeout;
        // Each side keeps the moment it gave up, so that a hop that failed at once
        // says so even though the other one took longer.
        let (in_influx, over_rest) = tokio::join!(
            timed(poll(deadline, || probe_in_influx(
                self.influx,
                zone,
                seq,
                probe.timestamp
            ))),
            timed(poll(deadline, || async {
                Ok::<_, ProbeError>(self.api.probe_view(zone, seq).await?.filter(|v| v.influx))
            }))
        );
        let ((in_influx, influx_done), (over_rest, rest_done)) = (in_influx, over_rest);
        let bucket = self.influx.bucket();
        let influx_hop = match in_influx {
            Ok(((), at)) => Check::pass(
                HOP_INFLUX,
                Some(ms(at - published)),
                format!("seq={seq} in bucket {bucket:?}"),
            ),
            Err(Some(e)) => Check::failed(
                HOP_INFLUX,
                e.cause(),
                Some(ms(influx_done - published)),
                format!("{e}; {INFLUX_HINT} (probe seq={seq})"),
            ),
            Err(None) => Check::failed(
                HOP_INFLUX,
                Cause::NotSeen,
                Some(ms(influx_done - published)),
                format!(
                    "probe not in InfluxDB bucket {bucket:?} after {} (seq={seq}): is arng \
                     ingest running and connected? (its log; arng_ingest_* metrics)",
                    humantime::format_duration(timeout)
                ),
            ),
        };
        // Proven missing: InfluxDB answers, the probe is not there.
        let missing = influx_hop.cause == Some(Cause::NotSeen);
        let rest_hop = match over_rest {
            Ok((v, at)) => Check::pass(
                HOP_REST,
                Some(ms(at - published)),
                format!(
                    "seq={seq} from InfluxDB (age {} ms){} in GET /zones/{zone}/latest",
                    v.influx_age_ms.unwrap_or_default(),
                    if v.mqtt { " and MQTT" } else { "" }
                ),
            ),
            Err(None) if missing => skipped(HOP_REST, "the probe never reached InfluxDB"),
            Err(Some(e)) => Check::failed(
                HOP_REST,
                e.cause(),
                Some(ms(rest_done - published)),
                e.to_string(),
            ),
            Err(None) => Check::failed(
                HOP_REST,
                Cause::NotSeen,
                Some(ms(rest_done - published)),
                format!(
                    "GET /zones/{zone}/latest did not show seq={seq} on its InfluxDB side within {}",
                    humantime::format_duration(timeout)
                ),
            ),
        };
        // The rules run in ingest before the write: without proof that the probe
        // went through, waiting for its alert only repeats the failure above.
        let through = influx_hop.ok || rest_hop.ok || !missing;
        hops.push(influx_hop);
        hops.push(rest_hop);
        if !through {
            skip_all(
                hops,
                &ALERT_HOPS,
                "the probe never reached InfluxDB (the rules run in arng ingest)",
            );
            return;
        }
        stage(
            progress,
            &format!("raising and clearing the probe's alert in zone {zone}"),
        );
        alert_hops(p, zone, self.thresholds, self.api, timeout, hops).await;
    }
}

/// `f`'s output and when it came.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Instant) {
    let out = f.await;
    (out, Instant::now())
}

/// The zones of the scope must have a heartbeat in InfluxDB younger than `max_age`.
async fn heartbeat_hop(
    influx: &InfluxClient,
    scope: &Scope,
    broker: &LastHeartbeats,
    args: &E2eCheck,
    max_age: Duration,
) -> Check {
    let started = Instant::now();
    let stored = match last_heartbeats(influx).await {
        Ok(v) => v,
        Err(e) => {
            return Check::failed(
                HOP_HEARTBEATS,
                e.cause(),
                Some(ms(started.elapsed())),
                format!("{e}; {INFLUX_HINT}"),
            )
        }
    };
    let took = Some(ms(started.elapsed()));
    let excluded = &args.zones.exclude_zone;
    match scope::heartbeat_verdict(scope, &stored, broker, excluded, Utc::now(), max_age) {
        Ok(detail) => Check::pass(HOP_HEARTBEATS, took, detail),
        Err((cause, detail)) => Check::failed(HOP_HEARTBEATS, cause, took, detail),
    }
}
