//! The hops of `arng check-e2e`: does the whole chain work, right now? Publishes
//! uniquely identified probe readings and follows them hop by hop, each within the
//! timeout:
//!
//! | hop | passes when |
//! |---|---|
//! | `api` | `GET /zones` answers (it names the probe zone when none is given) |
//! | `mqtt publish` | the broker acknowledges the probe (QoS 1 PUBACK) |
//! | `influxdb` | a Flux query finds the probe's point (`sensor=e2e-probe`, `seq` = its id) |
//! | `rest latest` | `GET /zones/{zone}/latest` shows the probe on its InfluxDB side |
//! | `alert mqtt` | after `debounce` critical probes, the critical alert arrives on `entrepot/alerts/<zone>` |
//! | `alert rest` | the same alert is listed by `GET /alerts?zone=<zone>` |
//! | `alert cleared` | after `debounce` normal probes, the clearing alert arrives on MQTT |
//! | `heartbeats` | every zone's last heartbeat in InfluxDB is younger than the limit |
//! | `broker $SYS` | the broker answers on `$SYS/broker/uptime` |
//!
//! A hop whose input never arrived is reported as skipped (failed) without waiting.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::QoS;
use tokio::time::Instant;

use super::influx::{last_heartbeats, probe_in_influx};
use super::prober::RETAINED_WAIT;
use super::{ms, poll, ApiClient, ProbeError, Prober};
use crate::config::Chain;
use crate::domain::schema::READINGS;
use crate::domain::topic::{Topic, THRESHOLDS_TOPIC};
use crate::domain::{Alert, AlertKind, AlertLevel, AlertState, Thresholds, Zone};
use crate::report::{Check, Report};
use crate::store::InfluxClient;
use crate::supervision::{self, PROBE_SENSOR, SYS_UPTIME_TOPIC};

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
/// The hops of the probe's alert.
const ALERT_HOPS: [&str; 3] = [HOP_ALERT_MQTT, HOP_ALERT_REST, HOP_ALERT_CLEARED];

/// One run of the check: where everything is and how long each hop may take.
#[derive(Debug, Clone)]
pub struct E2eCheck {
    /// Where the broker, InfluxDB and the API are.
    pub chain: Chain,
    /// Zone of the probes; `None`: the first zone `GET /zones` lists.
    pub zone: Option<Zone>,
    /// How long each hop may take (more than zero).
    pub timeout: Duration,
    /// Oldest zone heartbeat accepted; `None`: `silence_after_s` of the thresholds
    /// in force.
    pub heartbeat_max_age: Option<Duration>,
}

fn skipped(name: &str, why: &str) -> Check {
    Check::fail(name, None, format!("skipped: {why}"))
}

fn skip_all(hops: &mut Vec<Check>, names: &[&str], why: &str) {
    hops.extend(names.iter().map(|hop| skipped(hop, why)));
}

impl E2eCheck {
    /// Runs every hop (each within `timeout`) and reports them in order.
    pub async fn run(&self) -> Report {
        check(self).await
    }
}

async fn check(args: &E2eCheck) -> Report {
    let timeout = args.timeout;
    let api = ApiClient::new(&args.chain.api, timeout);
    let influx = InfluxClient::with_timeout(&args.chain.influx, timeout);
    let mut hops = Vec::new();

    // The API first: it names the zones (probe zone, heartbeat check).
    let started = Instant::now();
    let api_zones = api.zones().await;
    let zone = args
        .zone
        .clone()
        .or_else(|| api_zones.as_ref().ok().and_then(|z| z.first().cloned()));
    hops.push(match &api_zones {
        Ok(zones) => {
            let names: Vec<&str> = zones.iter().map(Zone::as_str).collect();
            let probe = zone.as_ref().map_or_else(
                || "no zone to probe: pass --zone".to_owned(),
                |z| format!("probes go to zone {z}"),
            );
            let detail = format!("{} zone(s) [{}]; {probe}", zones.len(), names.join(", "));
            let took = Some(ms(started.elapsed()));
            if zone.is_some() {
                Check::pass(HOP_API, took, detail)
            } else {
                Check::fail(HOP_API, took, detail)
            }
        }
        Err(e) => Check::fail(HOP_API, Some(ms(started.elapsed())), e.to_string()),
    });

    let client_id = format!("arng-check-e2e-{}", std::process::id());
    let mut prober = match (
        &zone,
        Prober::connect(&args.chain.mqtt, &client_id, timeout).await,
    ) {
        (_, Err(e)) => {
            hops.push(Check::fail(HOP_PUBLISH, None, e.to_string()));
            None
        }
        (None, Ok(p)) => {
            hops.push(skipped(HOP_PUBLISH, "no zone to probe (pass --zone)"));
            Some(p)
        }
        (Some(_), Ok(p)) => Some(p),
    };

    // Subscribe before publishing: the alert, the thresholds ingest applies, $SYS.
    let mut sys_subscribed: Option<Result<Instant, String>> = None;
    let mut thresholds = Thresholds::default();
    if let Some(p) = prober.as_mut() {
        let mut filters = vec![
            (SYS_UPTIME_TOPIC.to_owned(), QoS::AtMostOnce),
            (THRESHOLDS_TOPIC.to_owned(), QoS::AtLeastOnce),
        ];
        if let Some(z) = &zone {
            filters.push((
                Topic::Alert { zone: z.clone() }.to_string(),
                QoS::AtLeastOnce,
            ));
        }
        let at = Instant::now();
        match p.subscribe(filters, at + timeout).await {
            Ok(granted) => {
                sys_subscribed = Some(if granted[0] {
                    Ok(at)
                } else {
                    Err(format!(
                        "the broker refused the subscription to {SYS_UPTIME_TOPIC} \
                         (the account needs `topic read $SYS/#`, as operator has)"
                    ))
                });
                thresholds = p.retained_thresholds(RETAINED_WAIT).await;
            }
            Err(e) => sys_subscribed = Some(Err(e.to_string())),
        }
    }

    if let (Some(p), Some(z)) = (prober.as_mut(), zone.as_ref()) {
        probe_hops(p, z, &thresholds, &api, &influx, timeout, &mut hops).await;
    } else {
        skip_all(&mut hops, &AFTER_PUBLISH, "no probe was published");
    }

    let limit = args
        .heartbeat_max_age
        .unwrap_or_else(|| Duration::from_secs(thresholds.silence_after_s));
    hops.push(heartbeat_hop(&influx, api_zones.as_ref().ok(), limit).await);

    hops.push(match (prober.as_mut(), sys_subscribed) {
        (Some(p), Some(Ok(at))) => {
            let seen = p
                .wait_message(at, at + timeout, |t, _| t == SYS_UPTIME_TOPIC)
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
                None => Check::fail(
                    HOP_SYS,
                    Some(ms(at.elapsed())),
                    format!(
                        "no {SYS_UPTIME_TOPIC} within {}: is sys_interval 0 in mosquitto.conf, \
                         or may this account not read $SYS/# (operator may)?",
                        humantime::format_duration(timeout)
                    ),
                ),
            }
        }
        (Some(_), Some(Err(e))) => Check::fail(HOP_SYS, None, e),
        _ => skipped(HOP_SYS, "no MQTT connection"),
    });

    if let Some(p) = prober {
        p.disconnect().await;
    }
    Report::new(hops)
}

/// Publishes the probes and checks the hops they cross.
async fn probe_hops(
    p: &mut Prober,
    zone: &Zone,
    thresholds: &Thresholds,
    api: &ApiClient,
    influx: &InfluxClient,
    timeout: Duration,
    hops: &mut Vec<Check>,
) {
    let zt = thresholds.for_zone(zone);
    let (temp, hum) = supervision::normal_probe_values(zt);

    // 1. The broker accepts the probe.
    let probe = p.reading(zone, temp, hum, AlertLevel::Normal);
    let seq = probe.seq.unwrap_or_default();
    let topic = Topic::reading(zone, &probe.sensor).to_string();
    let published = Instant::now();
    match p.publish(&probe, published + timeout).await {
        Ok(took) => hops.push(Check::pass(
            HOP_PUBLISH,
            Some(ms(took)),
            format!("PUBACK for probe seq={seq} on {topic} (QoS 1)"),
        )),
        Err(e) => {
            hops.push(Check::fail(
                HOP_PUBLISH,
                Some(ms(published.elapsed())),
                e.to_string(),
            ));
            skip_all(hops, &AFTER_PUBLISH, "the broker did not accept the probe");
            return;
        }
    }

    // 2 and 3, side by side: InfluxDB has it; the API serves it from InfluxDB.
    let deadline = published + timeout;
    let (in_influx, over_rest) = tokio::join!(
        poll(deadline, || probe_in_influx(
            influx,
            zone,
            seq,
            probe.timestamp
        )),
        poll(deadline, || async {
            Ok::<_, ProbeError>(api.probe_view(zone, seq).await?.filter(|v| v.influx))
        })
    );
    let influx_ok = in_influx.is_ok();
    hops.push(match in_influx {
        Ok(((), at)) => Check::pass(
            HOP_INFLUX,
            Some(ms(at - published)),
            format!(
                "probe seq={seq} in bucket {:?} (measurement {READINGS}, sensor={PROBE_SENSOR})",
                influx.bucket()
            ),
        ),
        Err(last) => Check::fail(
            HOP_INFLUX,
            Some(ms(published.elapsed())),
            match last {
                Some(e) => format!("probe seq={seq}: cannot query InfluxDB: {e}"),
                None => format!(
                    "probe seq={seq} not in InfluxDB bucket {:?} after {}: is arng ingest running \
                     and connected? (its log; arng_ingest_* metrics)",
                    influx.bucket(),
                    humantime::format_duration(timeout)
                ),
            },
        ),
    });
    hops.push(match over_rest {
        Ok((v, at)) => Check::pass(
            HOP_REST,
            Some(ms(at - published)),
            format!(
                "GET /zones/{zone}/latest shows seq={seq} from InfluxDB (age {} ms){}",
                v.influx_age_ms.unwrap_or_default(),
                if v.mqtt { " and from MQTT" } else { "" }
            ),
        ),
        Err(_) if !influx_ok => skipped(HOP_REST, "the probe never reached InfluxDB"),
        Err(last) => Check::fail(
            HOP_REST,
            Some(ms(published.elapsed())),
            last.map(|e| e.to_string()).unwrap_or_else(|| {
                format!(
                    "GET /zones/{zone}/latest did not show seq={seq} on its InfluxDB side within {}",
                    humantime::format_duration(timeout)
                )
            }),
        ),
    });
    if !influx_ok {
        skip_all(
            hops,
            &ALERT_HOPS,
            "the probe never reached InfluxDB (the rules run in arng ingest)",
        );
        return;
    }

    alert_hops(p, zone, thresholds, api, timeout, hops).await;
}

/// Raises a critical alert with `debounce` critical probes, checks it comes back on
/// MQTT and over REST, then clears it with `debounce` normal probes.
async fn alert_hops(
    p: &mut Prober,
    zone: &Zone,
    thresholds: &Thresholds,
    api: &ApiClient,
    timeout: Duration,
    hops: &mut Vec<Check>,
) {
    let zt = thresholds.for_zone(zone);
    let (temp, hum) = supervision::normal_probe_values(zt);
    let debounce = thresholds.debounce.max(1);
    let Some(hot) = supervision::critical_probe_temp(&zt.temp) else {
        skip_all(
            hops,
            &ALERT_HOPS,
            "no valid temperature is critical for this zone's thresholds",
        );
        return;
    };
    let probes = |temp: f64, level: AlertLevel| Probes {
        zone,
        n: debounce,
        temp,
        hum,
        level,
        timeout,
    };
    // Normal probes first: a check interrupted earlier may have left the probe's
    // alert raised, and the raise below must be a new one.
    if let Err(e) = probes(temp, AlertLevel::Normal).send(p).await {
        let why = format!("publishing the normal probes: {e}");
        hops.extend(ALERT_HOPS.map(|hop| Check::fail(hop, None, why.clone())));
        return;
    }
    let since = Instant::now();
    let raised = match probes(hot, AlertLevel::Critical).send(p).await {
        Ok(Some(last)) => last,
        Ok(None) | Err(_) => {
            hops.extend(
                ALERT_HOPS
                    .map(|hop| Check::fail(hop, None, "publishing the critical probes failed")),
            );
            return;
        }
    };
    let (sent_at, raise_ts) = raised;
    let deadline = sent_at + timeout;
    let alert_topic = Topic::Alert { zone: zone.clone() }.to_string();
    let is_probe_alert = |state: AlertState, ts: DateTime<Utc>| {
        let (zone, alert_topic) = (zone.clone(), alert_topic.clone());
        move |topic: &str, payload: &[u8]| {
            topic == alert_topic
                && Alert::parse(&zone, payload).is_ok_and(|a| {
                    a.sensor
                        .as_ref()
                        .is_some_and(|s| s.as_str() == PROBE_SENSOR)
                        && a.metric == AlertKind::Temp
                        && a.severity == AlertLevel::Critical
                        && a.state == state
                        && a.timestamp == ts
                })
        }
    };
    let what =
        format!("critical temp alert of {zone}/{PROBE_SENSOR} ({debounce} readings at {hot} °C)");
    let (on_mqtt, on_rest) = tokio::join!(
        p.wait_message(
            since,
            deadline,
            is_probe_alert(AlertState::Raised, raise_ts)
        ),
        poll(deadline, || api.probe_alert(zone, raise_ts))
    );
    hops.push(match on_mqtt {
        Some(m) => Check::pass(
            HOP_ALERT_MQTT,
            Some(ms(m.at - sent_at)),
            format!("{what} raised on {alert_topic}"),
        ),
        None => Check::fail(
            HOP_ALERT_MQTT,
            Some(ms(sent_at.elapsed())),
            format!(
                "no {what} on {alert_topic} within {}",
                humantime::format_duration(timeout)
            ),
        ),
    });
    hops.push(match on_rest {
        Ok(((), at)) => Check::pass(
            HOP_ALERT_REST,
            Some(ms(at - sent_at)),
            format!("GET /alerts?zone={zone} lists it"),
        ),
        Err(last) => Check::fail(
            HOP_ALERT_REST,
            Some(ms(sent_at.elapsed())),
            last.map(|e| e.to_string()).unwrap_or_else(|| {
                format!(
                    "GET /alerts?zone={zone} did not list the {what} within {}",
                    humantime::format_duration(timeout)
                )
            }),
        ),
    });

    // Leave nothing raised behind.
    let since = Instant::now();
    hops.push(match probes(temp, AlertLevel::Normal).send(p).await {
        Ok(Some((sent_at, clear_ts))) => {
            let seen = p
                .wait_message(
                    since,
                    sent_at + timeout,
                    is_probe_alert(AlertState::Cleared, clear_ts),
                )
                .await;
            match seen {
                Some(m) => Check::pass(
                    HOP_ALERT_CLEARED,
                    Some(ms(m.at - sent_at)),
                    format!("cleared after {debounce} normal probe(s)"),
                ),
                None => Check::fail(
                    HOP_ALERT_CLEARED,
                    Some(ms(sent_at.elapsed())),
                    format!(
                        "no clearing alert on {alert_topic} within {}",
                        humantime::format_duration(timeout)
                    ),
                ),
            }
        }
        Ok(None) | Err(_) => Check::fail(
            HOP_ALERT_CLEARED,
            None,
            "publishing the clearing probes failed",
        ),
    });
}

/// `n` probe readings of the same values, published one after the other.
struct Probes<'a> {
    zone: &'a Zone,
    n: u32,
    temp: f64,
    hum: f64,
    level: AlertLevel,
    timeout: Duration,
}

impl Probes<'_> {
    /// Publishes them; when and with which timestamp the last one was sent.
    async fn send(&self, p: &mut Prober) -> Result<Option<(Instant, DateTime<Utc>)>, ProbeError> {
        let mut last = None;
        for _ in 0..self.n {
            let r = p.reading(self.zone, self.temp, self.hum, self.level);
            let sent = Instant::now();
            p.publish(&r, sent + self.timeout).await?;
            last = Some((sent, r.timestamp));
        }
        Ok(last)
    }
}

/// Every zone's newest heartbeat in InfluxDB must be younger than `limit`. The zones
/// are those the API knows, or, without the API, those with a heartbeat in 24 h.
async fn heartbeat_hop(
    influx: &InfluxClient,
    api_zones: Option<&Vec<Zone>>,
    limit: Duration,
) -> Check {
    let started = Instant::now();
    let last = match last_heartbeats(influx).await {
        Ok(v) => v,
        Err(e) => {
            return Check::fail(
                HOP_HEARTBEATS,
                Some(ms(started.elapsed())),
                format!("cannot query InfluxDB: {e}"),
            )
        }
    };
    let took = Some(ms(started.elapsed()));
    let now = Utc::now();
    let zones: Vec<String> = match api_zones {
        Some(z) => z.iter().map(|z| z.to_string()).collect(),
        None => last.iter().map(|(z, _)| z.clone()).collect(),
    };
    if zones.is_empty() {
        return Check::fail(HOP_HEARTBEATS, took, "no zone known (no heartbeat in 24 h)");
    }
    let limit_s = limit.as_secs_f64();
    let mut fresh = Vec::new();
    let mut stale = Vec::new();
    for z in &zones {
        match last.iter().find(|(name, _)| name == z) {
            Some((_, t)) => {
                let age = (now - *t).num_milliseconds() as f64 / 1000.0;
                if age <= limit_s {
                    fresh.push(format!("{z} {age:.1} s"));
                } else {
                    stale.push(format!("{z} {age:.1} s old"));
                }
            }
            None => stale.push(format!("{z}: no heartbeat in 24 h")),
        }
    }
    if stale.is_empty() {
        Check::pass(
            HOP_HEARTBEATS,
            took,
            format!("{} (limit {limit_s} s)", fresh.join(", ")),
        )
    } else {
        Check::fail(
            HOP_HEARTBEATS,
            took,
            format!("stale (limit {limit_s} s): {}", stale.join(", ")),
        )
    }
}
