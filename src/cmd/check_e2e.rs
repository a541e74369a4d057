//! `arng check-e2e`: does the whole chain work, right now? Publishes uniquely
//! identified probe readings and follows them hop by hop, each within `--timeout`:
//!
//! | hop | passes when |
//! |---|---|
//! | `api` | `GET /zones` answers (it names the probe zone when `--zone` is not given) |
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
//! The probe convention (sensor `e2e-probe`, see [`crate::supervision`]) keeps probes
//! out of dashboards. The helpers here ([`ApiClient`], [`Prober`], the probe queries)
//! are shared with `arng latency`.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::config::{ApiArgs, InfluxArgs, MqttArgs, Secret};
use crate::domain::payload::format_timestamp;
use crate::domain::schema::{HEARTBEATS, READINGS};
use crate::domain::topic::{Topic, THRESHOLDS_TOPIC};
use crate::domain::{flux, Alert, AlertKind, AlertLevel, AlertState, Reading, SensorId};
use crate::domain::{Thresholds, Zone};
use crate::mqtt::MqttError;
use crate::report::{Check, Report};
use crate::store::InfluxClient;
use crate::supervision::{self, PROBE_SENSOR, SYS_UPTIME_TOPIC};

use super::ingest::parse_positive_duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Zone the probes are published in (sensor e2e-probe) [default: the first zone
    /// that GET /zones lists].
    #[arg(long, env = "ARNG_PROBE_ZONE", value_parser = parse_zone, value_name = "ZONE")]
    pub zone: Option<Zone>,

    /// How long each hop may take.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Oldest zone heartbeat accepted [default: silence_after_s of the thresholds in
    /// force, 90 s unless changed].
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    pub heartbeat_max_age: Option<Duration>,

    /// Print the result as JSON: {"ok": bool, "hops": [{"name", "ok", "latency_ms", "detail"}]}.
    #[arg(long)]
    pub json: bool,

    // Last: clap's help headings of these groups carry over to later options.
    #[command(flatten)]
    pub mqtt: MqttArgs,

    #[command(flatten)]
    pub influx: InfluxArgs,

    #[command(flatten)]
    pub api: ApiArgs,
}

pub(crate) fn parse_zone(s: &str) -> Result<Zone, String> {
    Zone::new(s).map_err(|e| e.to_string())
}

pub const HOP_API: &str = "api";
pub const HOP_PUBLISH: &str = "mqtt publish";
pub const HOP_INFLUX: &str = "influxdb";
pub const HOP_REST: &str = "rest latest";
pub const HOP_ALERT_MQTT: &str = "alert mqtt";
pub const HOP_ALERT_REST: &str = "alert rest";
pub const HOP_ALERT_CLEARED: &str = "alert cleared";
pub const HOP_HEARTBEATS: &str = "heartbeats";
pub const HOP_SYS: &str = "broker $SYS";

/// How often a hop that waits for something looks again.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(25);
/// How long to wait for the retained thresholds after subscribing (none retained
/// means ingest applies the defaults).
const RETAINED_WAIT: Duration = Duration::from_millis(500);

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.timeout.is_zero() {
        return Err(super::UsageError("--timeout must be greater than zero".into()).into());
    }
    let report = check(&args).await;
    if args.json {
        println!("{}", report.to_json_as("hops"));
    } else {
        println!("{}", report.to_table_as("hop"));
    }
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        let failed: Vec<&str> = report.failures().map(|c| c.name.as_str()).collect();
        eprintln!(
            "check-e2e: {} hop(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

fn skipped(name: &str, why: &str) -> Check {
    Check::fail(name, None, format!("skipped: {why}"))
}

async fn check(args: &Args) -> Report {
    let timeout = args.timeout;
    let api = ApiClient::new(&args.api, timeout);
    let influx = InfluxClient::with_timeout(&args.influx, timeout);
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
        Err(e) => Check::fail(HOP_API, Some(ms(started.elapsed())), e.clone()),
    });

    let client_id = format!("arng-check-e2e-{}", std::process::id());
    let mut prober = match (
        &zone,
        Prober::connect(&args.mqtt, &client_id, timeout).await,
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
            Err(e) => sys_subscribed = Some(Err(e)),
        }
    }

    if let (Some(p), Some(z)) = (prober.as_mut(), zone.as_ref()) {
        probe_hops(p, z, &thresholds, &api, &influx, timeout, &mut hops).await;
    } else {
        for hop in [
            HOP_INFLUX,
            HOP_REST,
            HOP_ALERT_MQTT,
            HOP_ALERT_REST,
            HOP_ALERT_CLEARED,
        ] {
            hops.push(skipped(hop, "no probe was published"));
        }
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
            hops.push(Check::fail(HOP_PUBLISH, Some(ms(published.elapsed())), e));
            for hop in [
                HOP_INFLUX,
                HOP_REST,
                HOP_ALERT_MQTT,
                HOP_ALERT_REST,
                HOP_ALERT_CLEARED,
            ] {
                hops.push(skipped(hop, "the broker did not accept the probe"));
            }
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
            Ok(api.probe_view(zone, seq).await?.filter(|v| v.influx))
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
            last.unwrap_or_else(|| {
                format!(
                    "GET /zones/{zone}/latest did not show seq={seq} on its InfluxDB side within {}",
                    humantime::format_duration(timeout)
                )
            }),
        ),
    });
    if !influx_ok {
        for hop in [HOP_ALERT_MQTT, HOP_ALERT_REST, HOP_ALERT_CLEARED] {
            hops.push(skipped(
                hop,
                "the probe never reached InfluxDB (the rules run in arng ingest)",
            ));
        }
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
        for hop in [HOP_ALERT_MQTT, HOP_ALERT_REST, HOP_ALERT_CLEARED] {
            hops.push(skipped(
                hop,
                "no valid temperature is critical for this zone's thresholds",
            ));
        }
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
        for hop in [HOP_ALERT_MQTT, HOP_ALERT_REST, HOP_ALERT_CLEARED] {
            hops.push(Check::fail(
                hop,
                None,
                format!("publishing the normal probes: {e}"),
            ));
        }
        return;
    }
    let since = Instant::now();
    let raised = match probes(hot, AlertLevel::Critical).send(p).await {
        Ok(Some(last)) => last,
        Ok(None) | Err(_) => {
            for hop in [HOP_ALERT_MQTT, HOP_ALERT_REST, HOP_ALERT_CLEARED] {
                hops.push(Check::fail(
                    hop,
                    None,
                    "publishing the critical probes failed",
                ));
            }
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
            last.unwrap_or_else(|| {
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
    async fn send(&self, p: &mut Prober) -> Result<Option<(Instant, DateTime<Utc>)>, String> {
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

// ----- shared with `arng latency` ----------------------------------------------------

/// Calls `f` every [`POLL_EVERY`] until it gives a value or `deadline` passes.
/// Returns the value and when it was seen, or the last error (None: just not seen).
pub(crate) async fn poll<T, F, Fut>(
    deadline: Instant,
    mut f: F,
) -> Result<(T, Instant), Option<String>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let mut last_err = None;
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Ok(Some(v))) => return Ok((v, Instant::now())),
            Ok(Ok(None)) => last_err = None,
            Ok(Err(e)) => last_err = Some(e),
            Err(_) => return Err(last_err),
        }
        if Instant::now() + POLL_EVERY >= deadline {
            return Err(last_err);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The Flux query that finds one probe by its `seq`, in a narrow range around its
/// timestamp.
pub(crate) fn probe_query(bucket: &str, zone: &Zone, seq: u64, at: DateTime<Utc>) -> String {
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        r#"from(bucket: {}) |> range(start: {}, stop: {}) |> filter(fn: (r) => r._measurement == {} and r.zone == {} and r.sensor == {} and r._field == "seq" and r._value == {seq}) |> keep(columns: ["_time", "_value"])"#,
        flux::string(bucket),
        rfc(at - chrono::Duration::minutes(1)),
        rfc(at + chrono::Duration::minutes(1)),
        flux::string(READINGS),
        flux::string(zone.as_str()),
        flux::string(PROBE_SENSOR),
    )
}

pub(crate) async fn probe_in_influx(
    influx: &InfluxClient,
    zone: &Zone,
    seq: u64,
    at: DateTime<Utc>,
) -> Result<Option<()>, String> {
    let rows = influx
        .query(&probe_query(influx.bucket(), zone, seq, at))
        .await
        .map_err(|e| e.to_string())?;
    Ok((!rows.is_empty()).then_some(()))
}

/// The newest heartbeat `_time` of every zone within 24 h.
pub(crate) fn last_heartbeats_query(bucket: &str) -> String {
    format!(
        r#"from(bucket: {}) |> range(start: -24h, stop: 1h) |> filter(fn: (r) => r._measurement == {} and r._field == "sensors") |> group(columns: ["zone"]) |> last() |> keep(columns: ["zone", "_time"])"#,
        flux::string(bucket),
        flux::string(HEARTBEATS),
    )
}

pub(crate) async fn last_heartbeats(
    influx: &InfluxClient,
) -> Result<Vec<(String, DateTime<Utc>)>, crate::store::StoreError> {
    let rows = influx
        .query(&last_heartbeats_query(influx.bucket()))
        .await?;
    let mut out: Vec<(String, DateTime<Utc>)> = rows
        .iter()
        .filter_map(|r| Some((r.str("zone")?.to_owned(), r.time("_time")?)))
        .collect();
    out.sort();
    Ok(out)
}

/// What `GET /zones/{zone}/latest` shows of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct ProbeView {
    /// The InfluxDB side holds this probe (or a newer one).
    pub influx: bool,
    /// The MQTT side does.
    pub mqtt: bool,
    /// `influx.age_ms`: the API's clock minus the point's `_time`.
    pub influx_age_ms: Option<i64>,
}

/// Reads the probe sensor's entry of a `GET /zones/{zone}/latest` answer.
pub(crate) fn probe_view(latest: &Value, seq: u64) -> ProbeView {
    let Some(sensor) = latest["sensors"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["sensor"] == PROBE_SENSOR))
    else {
        return ProbeView::default();
    };
    let has = |side: &str| sensor[side]["seq"].as_u64().is_some_and(|s| s >= seq);
    ProbeView {
        influx: has("influx"),
        mqtt: has("mqtt"),
        influx_age_ms: sensor["influx"]["age_ms"].as_i64(),
    }
}

/// A small client of the arng REST API.
pub(crate) struct ApiClient {
    http: reqwest::Client,
    base: url::Url,
    token: Option<Secret>,
}

impl ApiClient {
    pub fn new(args: &ApiArgs, timeout: Duration) -> ApiClient {
        let per_request = timeout.min(Duration::from_secs(10));
        let http = reqwest::Client::builder()
            .timeout(per_request)
            .connect_timeout(per_request.min(Duration::from_secs(5)))
            .user_agent(concat!("arng/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("static reqwest configuration is valid");
        ApiClient {
            http,
            base: args.url.clone(),
            token: args.token.clone(),
        }
    }

    /// GET `path` with `query`: the JSON body, `Ok(None)` for a 404, or why not.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Option<Value>, String> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| format!("bad API path {path}: {e}"))?;
        let mut rb = self.http.get(url.clone()).query(query);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t.expose());
        }
        let resp = rb.send().await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = s.to_string();
                src = s.source();
            }
            format!(
                "cannot reach the API at {}: {msg} (is arng serve running? --api-url)",
                self.base
            )
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let why = body["error"].as_str().unwrap_or("no error message");
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
                " (set --api-token / ARNG_API_TOKEN)"
            } else {
                ""
            };
            return Err(format!(
                "GET {}: HTTP {}: {why}{hint}",
                url.path(),
                status.as_u16()
            ));
        }
        Ok(Some(body))
    }

    /// The zones `GET /zones` lists, in its order (sorted).
    pub async fn zones(&self) -> Result<Vec<Zone>, String> {
        let body = self
            .get("/zones", &[])
            .await?
            .ok_or("GET /zones: HTTP 404: is --api-url an arng API?")?;
        let list = body.as_array().ok_or("GET /zones: not a JSON list")?;
        Ok(list
            .iter()
            .filter_map(|z| z["zone"].as_str().and_then(|s| Zone::new(s).ok()))
            .collect())
    }

    pub async fn probe_view(&self, zone: &Zone, seq: u64) -> Result<Option<ProbeView>, String> {
        // The lab's views hide the probe; it asks for it.
        let body = self
            .get(
                &format!("/zones/{zone}/latest"),
                &[("include_probe", "true")],
            )
            .await?;
        Ok(body.map(|b| probe_view(&b, seq)))
    }

    /// Is the probe's critical alert raised at `ts` listed by `GET /alerts`?
    pub async fn probe_alert(&self, zone: &Zone, ts: DateTime<Utc>) -> Result<Option<()>, String> {
        let since = format_timestamp(ts - chrono::Duration::seconds(1));
        let body = self
            .get(
                "/alerts",
                &[
                    ("zone", zone.as_str()),
                    ("severity", "critical"),
                    ("since", &since),
                    ("limit", "1000"),
                    ("include_probe", "true"),
                ],
            )
            .await?
            .unwrap_or(Value::Null);
        let want_ts = format_timestamp(ts);
        let found = body["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["sensor"] == PROBE_SENSOR
                    && x["metric"] == "temp"
                    && x["state"] == "raised"
                    && x["timestamp"] == want_ts.as_str()
            })
        });
        Ok(found.then_some(()))
    }
}

/// A message the prober received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub at: Instant,
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
enum ProbeEvent {
    Sent(u16),
    Acked(u16),
    SubAck(Vec<SubscribeReasonCode>),
    Message(Received),
    Down(String),
}

/// An MQTT client that publishes probe readings one at a time, times their PUBACK,
/// and keeps what arrives on its subscriptions.
pub(crate) struct Prober {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<ProbeEvent>,
    pump: tokio::task::JoinHandle<()>,
    received: Vec<Received>,
    sensor: SensorId,
    next_seq: u64,
    last_ms: i64,
    down: Option<String>,
}

impl Prober {
    pub async fn connect(
        args: &MqttArgs,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Prober, MqttError> {
        let (client, mut eventloop) = crate::mqtt::connect(args, client_id, timeout).await?;
        let (tx, events) = mpsc::unbounded_channel();
        // The event loop runs on its own so that the broker is answered (pings,
        // QoS 1 acknowledgements) while a hop waits on InfluxDB or the API.
        let pump = tokio::spawn(async move {
            loop {
                let ev = match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => ProbeEvent::Sent(pkid),
                    Ok(Event::Incoming(Packet::PubAck(a))) => ProbeEvent::Acked(a.pkid),
                    Ok(Event::Incoming(Packet::SubAck(s))) => ProbeEvent::SubAck(s.return_codes),
                    Ok(Event::Incoming(Packet::Publish(p))) => ProbeEvent::Message(Received {
                        at: Instant::now(),
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                    }),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(ProbeEvent::Down(e.to_string()));
                        break;
                    }
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        let micros = Utc::now().timestamp_micros().max(0) as u64;
        Ok(Prober {
            client,
            events,
            pump,
            received: Vec::new(),
            sensor: SensorId::new(PROBE_SENSOR).expect("the probe sensor name is valid"),
            // Unique across runs (microseconds) and increasing, like a sensor counter.
            next_seq: micros,
            last_ms: 0,
            down: None,
        })
    }

    /// A new probe reading of `zone`: the next `seq`, a timestamp in a millisecond of
    /// its own (two probes never share a point in InfluxDB).
    pub fn reading(&mut self, zone: &Zone, temp: f64, hum: f64, level: AlertLevel) -> Reading {
        let ms = Utc::now().timestamp_millis().max(self.last_ms + 1);
        self.last_ms = ms;
        let seq = self.next_seq;
        self.next_seq += 1;
        Reading {
            zone: zone.clone(),
            sensor: self.sensor.clone(),
            seq: Some(seq),
            timestamp: DateTime::from_timestamp_millis(ms).unwrap_or_default(),
            temp,
            hum: supervision::clamp_hum(hum),
            alert_level: level,
        }
    }

    /// The next event, keeping messages aside; None once `deadline` passes or the
    /// connection is gone.
    async fn next_event(&mut self, deadline: Instant) -> Option<ProbeEvent> {
        if self.down.is_some() {
            return None;
        }
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some(ProbeEvent::Message(m))) => {
                self.received.push(m.clone());
                Some(ProbeEvent::Message(m))
            }
            Ok(Some(ProbeEvent::Down(e))) => {
                self.down = Some(e);
                None
            }
            Ok(Some(ev)) => Some(ev),
            Ok(None) => {
                self.down.get_or_insert_with(|| "connection closed".into());
                None
            }
            Err(_) => None,
        }
    }

    fn lost(&self) -> String {
        format!(
            "lost the broker connection: {}",
            self.down.as_deref().unwrap_or("closed")
        )
    }

    /// Subscribes to `filters` in one request; which ones the broker granted.
    pub async fn subscribe(
        &mut self,
        filters: Vec<(String, QoS)>,
        deadline: Instant,
    ) -> Result<Vec<bool>, String> {
        let n = filters.len();
        self.client
            .subscribe_many(filters.into_iter().map(|(f, q)| SubscribeFilter::new(f, q)))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match self.next_event(deadline).await {
                Some(ProbeEvent::SubAck(codes)) => {
                    let mut granted: Vec<bool> = codes
                        .iter()
                        .map(|c| matches!(c, SubscribeReasonCode::Success(_)))
                        .collect();
                    granted.resize(n, false);
                    return Ok(granted);
                }
                Some(_) => {}
                None if self.down.is_some() => return Err(self.lost()),
                None => return Err("no SUBACK from the broker".into()),
            }
        }
    }

    /// The retained thresholds (what ingest applies), or the defaults when none
    /// arrives within `wait`.
    pub async fn retained_thresholds(&mut self, wait: Duration) -> Thresholds {
        let since = Instant::now() - Duration::from_secs(3600);
        self.wait_message(since, Instant::now() + wait, |t, _| t == THRESHOLDS_TOPIC)
            .await
            .and_then(|m| Thresholds::from_json(&m.payload).ok())
            .unwrap_or_default()
    }

    /// Publishes `r` at QoS 1 and waits for its PUBACK; returns how long that took.
    pub async fn publish(&mut self, r: &Reading, deadline: Instant) -> Result<Duration, String> {
        let topic = Topic::reading(&r.zone, &r.sensor).to_string();
        let started = Instant::now();
        self.client
            .publish(topic.clone(), QoS::AtLeastOnce, false, r.to_json())
            .await
            .map_err(|e| e.to_string())?;
        // One probe in flight at a time: the next PUBLISH sent is this one.
        let mut pkid = None;
        loop {
            match self.next_event(deadline).await {
                Some(ProbeEvent::Sent(id)) if pkid.is_none() => pkid = Some(id),
                Some(ProbeEvent::Acked(id)) if Some(id) == pkid => {
                    debug!(%topic, seq = ?r.seq, "probe acknowledged");
                    return Ok(started.elapsed());
                }
                Some(_) => {}
                None if self.down.is_some() => return Err(self.lost()),
                None => {
                    return Err(format!(
                        "no PUBACK for the probe on {topic} within the timeout"
                    ))
                }
            }
        }
    }

    /// The first message received at or after `since` that `matches`, waiting until
    /// `deadline`.
    pub async fn wait_message(
        &mut self,
        since: Instant,
        deadline: Instant,
        matches: impl Fn(&str, &[u8]) -> bool,
    ) -> Option<Received> {
        if let Some(m) = self
            .received
            .iter()
            .find(|m| m.at >= since && matches(&m.topic, &m.payload))
        {
            return Some(m.clone());
        }
        loop {
            match self.next_event(deadline).await? {
                ProbeEvent::Message(m) if m.at >= since && matches(&m.topic, &m.payload) => {
                    return Some(m)
                }
                _ => {}
            }
        }
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let mut pump = self.pump;
        if tokio::time::timeout(Duration::from_secs(1), &mut pump)
            .await
            .is_err()
        {
            pump.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn probe_query_is_narrow_and_quoted() {
        let z = Zone::new("nord").unwrap();
        let at = DateTime::from_timestamp_millis(1_795_850_102_125).unwrap();
        let q = probe_query("entrepot", &z, 42, at);
        assert!(
            q.starts_with(r#"from(bucket: "entrepot") |> range(start: 2026-11-28T"#),
            "{q}"
        );
        assert!(
            q.contains(r#"r.sensor == "e2e-probe""#) && q.contains("r._value == 42)"),
            "{q}"
        );
        assert!(last_heartbeats_query("entrepot").contains(r#"r._measurement == "heartbeats""#));
    }

    #[test]
    fn reads_the_probe_from_latest() {
        let body = json!({"zone": "nord", "sensors": [
            {"sensor": "s1", "mqtt": {"seq": 99}, "influx": {"seq": 99, "age_ms": 5}},
            {"sensor": "e2e-probe", "mqtt": {"seq": 7}, "influx": {"seq": 6, "age_ms": 250}},
        ]});
        assert_eq!(
            probe_view(&body, 7),
            ProbeView {
                influx: false,
                mqtt: true,
                influx_age_ms: Some(250)
            }
        );
        assert!(probe_view(&body, 6).influx);
        assert_eq!(probe_view(&json!({"sensors": []}), 1), ProbeView::default());
        assert_eq!(probe_view(&Value::Null, 1), ProbeView::default());
    }

    #[tokio::test]
    async fn poll_returns_the_value_or_the_last_error() {
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut n = 0;
        let got = poll(deadline, || {
            n += 1;
            let v = n;
            async move { Ok::<_, String>((v >= 3).then_some(v)) }
        })
        .await;
        assert_eq!(got.map(|(v, _)| v), Ok(3));
        let deadline = Instant::now() + Duration::from_millis(100);
        let got: Result<((), Instant), _> =
            poll(deadline, || async { Err("InfluxDB down".to_owned()) }).await;
        assert_eq!(got.unwrap_err().as_deref(), Some("InfluxDB down"));
    }
}
