//! Supervision against a real chain (Mosquitto, influxd, `arng ingest`, `arng serve`):
//! `arng check-e2e` passes every hop and names the InfluxDB hop when ingest is gone,
//! `arng latency` reports ordered percentiles from real probes, ingest stores the
//! broker's `$SYS` statistics, `arng serve` exposes the indicators, and the Flux
//! queries of docs/supervision.md run.

mod common;

use std::time::Duration;

use common::chain::{
    client_env, count_points, now_ms, publish_all, publish_all_with, reading_msg, IngestProc,
    ServeProc,
};
use common::influxd::Influxd;
use common::mosquitto::{account, Mosquitto};
use common::{arng, describe, eventually, run_arng};
use rumqttc::QoS;
use serde_json::Value;

/// Fresh heartbeats of `zones` (retained, as the simulator publishes them).
async fn heartbeats(broker: &Mosquitto, zones: &[&str]) {
    heartbeats_aged(broker, zones, 0).await
}

/// Heartbeats of `zones` sent `age_s` seconds ago (retained).
async fn heartbeats_aged(broker: &Mosquitto, zones: &[&str], age_s: i64) {
    let msgs: Vec<(String, String)> = zones
        .iter()
        .map(|z| {
            let h = arng::domain::Heartbeat {
                zone: arng::domain::Zone::new(z).unwrap(),
                timestamp: chrono::DateTime::from_timestamp_millis(now_ms() - age_s * 1000)
                    .unwrap(),
                sensors: Some(1),
            };
            (format!("entrepot/heartbeat/{z}"), h.to_json())
        })
        .collect();
    publish_all_with(broker, "simulator", &msgs, QoS::AtLeastOnce, true).await;
}

/// Waits until the API lists every zone of `zones`.
async fn api_knows(serve: &ServeProc, zones: &[&str]) {
    let url = format!("{}/zones", serve.url());
    eventually(
        "the API to list the zones",
        Duration::from_secs(20),
        || async {
            let v: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let names: Vec<&str> = v
                .as_array()?
                .iter()
                .filter_map(|z| z["zone"].as_str())
                .collect();
            zones.iter().all(|z| names.contains(z)).then_some(())
        },
    )
    .await;
}

/// A whole chain whose zones nord and sud are alive while "a-old", which sorts
/// first (`GET /zones` lists it first), fell silent an hour ago; its heartbeats in
/// InfluxDB and the API knowing the zones.
struct SilentZoneChain {
    // Dropped in this order: the processes before the servers they use.
    _serve: ServeProc,
    _ingest: IngestProc,
    db: Influxd,
    _broker: Mosquitto,
    env: Vec<(String, String)>,
}

impl SilentZoneChain {
    async fn start() -> SilentZoneChain {
        let broker = Mosquitto::start();
        let db = Influxd::start();
        let ingest = IngestProc::start(&broker, &db, &[]);
        let serve = ServeProc::start(&broker, &db, &[]);
        heartbeats_aged(&broker, &["a-old"], 3600).await;
        heartbeats(&broker, &["nord", "sud"]).await;
        eventually(
            "the three heartbeats in InfluxDB",
            Duration::from_secs(20),
            || async { (count_points(&db, "heartbeats", "sensors", "").await >= 3).then_some(()) },
        )
        .await;
        api_knows(&serve, &["a-old", "nord", "sud"]).await;
        let env = client_env(&broker, &db, Some(&serve.url()));
        SilentZoneChain {
            db,
            env,
            _serve: serve,
            _ingest: ingest,
            _broker: broker,
        }
    }
}

/// The environment of a check against `broker` as `user`, with nothing listening at
/// its API and InfluxDB URLs.
fn broker_only_env(broker: &Mosquitto, user: &str) -> Vec<(String, String)> {
    let (user, pass) = account(user);
    let dead = || format!("http://127.0.0.1:{}", common::free_port());
    vec![
        ("ARNG_MQTT_URL".to_owned(), broker.url()),
        ("ARNG_MQTT_USERNAME".to_owned(), user),
        ("ARNG_MQTT_PASSWORD".to_owned(), pass),
        ("ARNG_API_URL".to_owned(), dead()),
        ("INFLUX_URL".to_owned(), dead()),
    ]
}

fn hop<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["hops"]
        .as_array()
        .and_then(|h| h.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no hop {name:?} in {report:#}"))
}

const PROBE_HOPS: [&str; 6] = [
    "mqtt publish",
    "influxdb",
    "rest latest",
    "alert mqtt",
    "alert rest",
    "alert cleared",
];

#[tokio::test(flavor = "multi_thread")]
async fn check_e2e_passes_every_hop_then_names_influxdb_when_ingest_stops() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let mut ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);
    heartbeats(&broker, &["nord", "sud"]).await;
    // A real sensor next to the probe (the dashboard queries of the docs need one).
    publish_all(
        &broker,
        "simulator",
        &[reading_msg("sud", "s1", 0, now_ms(), 21.0)],
        QoS::AtLeastOnce,
    )
    .await;
    api_knows(&serve, &["nord", "sud"]).await;
    let env = client_env(&broker, &db, Some(&serve.url()));

    let (code, stdout, _, shown) = arng(&["check-e2e", "--json", "--timeout", "20s"], &env).await;
    assert_eq!(code, Some(0), "{shown}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    assert_eq!(report["ok"], true, "{shown}");
    let names: Vec<&str> = report["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "api",
            "mqtt publish",
            "influxdb",
            "rest latest",
            "alert mqtt",
            "alert rest",
            "alert cleared",
            "heartbeats",
            "broker $SYS"
        ],
        "{shown}"
    );
    for h in report["hops"].as_array().unwrap() {
        assert_eq!(h["ok"], true, "{h}{shown}");
        assert!(
            h["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "{h}{shown}"
        );
        assert!(!h["detail"].as_str().unwrap().is_empty(), "{h}");
    }
    // With no --zone and no zone in the thresholds, the first zone with a recent
    // heartbeat; both zones' heartbeats are checked.
    assert_eq!(report["zone"], "nord", "{shown}");
    assert_eq!(
        report["zones"],
        serde_json::json!(["nord", "sud"]),
        "{shown}"
    );
    assert_eq!(
        report["zone_choice"],
        "probes went to zone nord: the first zone with a heartbeat younger than 1m 30s; \
         heartbeats checked: nord, sud (seen with a heartbeat in 24 h)",
        "{shown}"
    );
    assert!(hop(&report, "heartbeats")["detail"]
        .as_str()
        .unwrap()
        .contains("sud"));
    // The probe left nothing raised: its alert was cleared, and the zone summary
    // ignores it.
    let zones: Value = reqwest::get(format!("{}/zones", serve.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(zones[0]["zone"], "nord");
    assert_eq!(zones[0]["sensors"], 0, "{zones}");
    assert_eq!(zones[0]["alert_level"], "normal", "{zones}");
    eventually(
        "no active alert in ingest",
        Duration::from_secs(5),
        || async {
            (ingest.metric(r#"arng_ingest_alerts_active{severity="critical"}"#) == 0.0)
                .then_some(())
        },
    )
    .await;

    // The indicators on GET /metrics turn green once ingest and the broker report
    // (every 10 s) and serve evaluates them (every 10 s).
    let metrics_url = format!("{}/metrics", serve.url());
    let text = eventually(
        "every indicator ok on /metrics",
        Duration::from_secs(45),
        || async {
            let t = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
            ["e2e_latency", "heartbeat_freshness", "loss_backlog"]
                .iter()
                .all(|i| t.contains(&format!("arng_indicator_ok{{indicator=\"{i}\"}} 1")))
                .then_some(t)
        },
    )
    .await;
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let p99 = gauge("arng_indicator_e2e_latency_p99_seconds");
    assert!(p99 > 0.0 && p99 <= 5.0, "{p99}");
    assert_eq!(gauge("arng_indicator_e2e_latency_p99_seconds_limit"), 5.0);
    assert!(gauge("arng_indicator_heartbeat_age_max_seconds") < 90.0);
    assert_eq!(gauge("arng_indicator_broker_dropped_messages"), 0.0);
    assert_eq!(gauge("arng_indicator_ingest_spool_bytes"), 0.0);

    // Every Flux query of docs/supervision.md runs and finds data.
    let docs = std::fs::read_to_string(common::repo_root().join("docs/supervision.md")).unwrap();
    let queries: Vec<&str> = docs
        .split("```flux\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(
        queries.len() >= 5,
        "flux blocks in docs/supervision.md: {}",
        queries.len()
    );
    let client = arng::store::InfluxClient::new(&db.args());
    for q in &queries {
        let rows = eventually(
            &format!("rows from\n{q}"),
            Duration::from_secs(20),
            || async {
                let rows = client.query(q).await.unwrap_or_else(|e| panic!("{e}\n{q}"));
                (!rows.is_empty()).then_some(rows)
            },
        )
        .await;
        assert!(!rows.is_empty());
    }

    // Ingest gone: the broker still accepts the probe, InfluxDB never gets it.
    ingest.kill9();
    let (code, stdout, stderr, shown) = arng(
        &["check-e2e", "--json", "--zone", "nord", "--timeout", "4s"],
        &env,
    )
    .await;
    assert_eq!(code, Some(1), "{shown}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    assert_eq!(report["ok"], false);
    assert_eq!(hop(&report, "mqtt publish")["ok"], true, "{shown}");
    let influx = hop(&report, "influxdb");
    assert_eq!(influx["ok"], false, "{shown}");
    assert_eq!(influx["cause"], "not_seen", "{shown}");
    assert!(
        influx["detail"]
            .as_str()
            .unwrap()
            .contains("not in InfluxDB"),
        "{shown}"
    );
    for name in &PROBE_HOPS[2..] {
        let h = hop(&report, name);
        assert_eq!(h["ok"], false, "{shown}");
        assert!(
            h["detail"].as_str().unwrap().starts_with("skipped"),
            "{shown}"
        );
        assert_eq!(h["cause"], "skipped", "{shown}");
    }
    assert_eq!(hop(&report, "heartbeats")["ok"], true, "{shown}");
    assert_eq!(hop(&report, "broker $SYS")["ok"], true, "{shown}");
    assert!(stderr.contains("failed: influxdb"), "{shown}");

    // The table says which hop failed and why, within 80 columns (a pipe), the
    // whole detail below it.
    let (code, stdout, _, shown) =
        arng(&["check-e2e", "--zone", "nord", "--timeout", "2s"], &env).await;
    assert_eq!(code, Some(1), "{shown}");
    let line = stdout
        .lines()
        .find(|l| l.contains(" influxdb "))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        line.contains("FAIL") && line.contains("not in InfluxDB"),
        "{shown}"
    );
    let table_end = stdout.find('╯').unwrap_or_else(|| panic!("{shown}"));
    for l in stdout[..table_end].lines() {
        assert!(l.chars().count() <= 80, "{l:?}{shown}");
    }
    assert!(
        stdout[table_end..]
            .lines()
            .any(|l| l.starts_with('[') && l.contains("] influxdb: probe not in InfluxDB")),
        "{shown}"
    );
    assert!(
        stdout.contains("probes went to zone nord: named with --zone"),
        "{shown}"
    );
}

/// Issue 16: a zone that fell silent is neither probed nor, once excluded, checked;
/// and a check whose own INFLUX_URL is wrong says so at once on the hops that use
/// it, while the hops that do not (REST, alerts) pass on their own.
#[tokio::test(flavor = "multi_thread")]
async fn check_e2e_names_each_hops_own_cause_and_probes_a_live_zone() {
    let chain = SilentZoneChain::start().await;
    let env = chain.env.clone();

    // Without --zone: the probe goes to nord, not to the silent zone; the heartbeat
    // hop names the silent zone and how to leave it out.
    let (code, stdout, _, shown) = arng(&["check-e2e", "--json", "--timeout", "20s"], &env).await;
    assert_eq!(code, Some(1), "{shown}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    assert_eq!(report["zone"], "nord", "{shown}");
    let beats = hop(&report, "heartbeats");
    assert_eq!(beats["cause"], "not_seen", "{shown}");
    let detail = beats["detail"].as_str().unwrap();
    assert!(
        detail.contains("a-old 36") && detail.contains("--exclude-zone"),
        "{shown}"
    );
    for h in report["hops"].as_array().unwrap() {
        if h["name"] != "heartbeats" {
            assert_eq!(h["ok"], true, "{h}{shown}");
            assert!(h["cause"].is_null(), "{h}{shown}");
        }
    }
    // Left out, it is no longer checked (environment variable and flag alike).
    let mut excluded = env.clone();
    excluded.push(("ARNG_EXCLUDE_ZONES".to_owned(), "a-old".to_owned()));
    let (code, stdout, _, shown) =
        arng(&["check-e2e", "--json", "--timeout", "20s"], &excluded).await;
    assert_eq!(code, Some(0), "{shown}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    assert_eq!(
        report["zones"],
        serde_json::json!(["nord", "sud"]),
        "{shown}"
    );
    assert!(
        hop(&report, "heartbeats")["detail"]
            .as_str()
            .unwrap()
            .contains("excluded: a-old"),
        "{shown}"
    );

    // Only this check's INFLUX_URL is wrong: nothing listens there.
    let nowhere = format!("http://127.0.0.1:{}", common::free_port());
    let mut wrong = excluded.clone();
    wrong.retain(|(k, _)| k != "INFLUX_URL");
    wrong.push(("INFLUX_URL".to_owned(), nowhere.clone()));
    let started = std::time::Instant::now();
    let (code, stdout, stderr, shown) =
        arng(&["check-e2e", "--json", "--timeout", "60s"], &wrong).await;
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{shown}");
    // Fails fast: nowhere near the 60 s a hop may take.
    assert!(took < Duration::from_secs(30), "took {took:?}{shown}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    // The zone still comes from the broker's retained heartbeats.
    assert_eq!(report["zone"], "nord", "{shown}");
    for name in ["influxdb", "heartbeats"] {
        let h = hop(&report, name);
        assert_eq!(h["ok"], false, "{shown}");
        assert_eq!(h["cause"], "connection_refused", "{shown}");
        let detail = h["detail"].as_str().unwrap();
        assert!(
            detail.to_lowercase().contains("connection refused") && detail.contains(&nowhere),
            "{shown}"
        );
        assert!(detail.contains("INFLUX_URL"), "{shown}");
        assert!(
            h["latency_ms"].as_f64().unwrap() < 10_000.0,
            "{name} waited{shown}"
        );
    }
    // The hops that do not query this InfluxDB do not share its failure.
    for name in [
        "api",
        "mqtt publish",
        "rest latest",
        "alert mqtt",
        "alert rest",
        "alert cleared",
        "broker $SYS",
    ] {
        assert_eq!(hop(&report, name)["ok"], true, "{name}{shown}");
    }
    assert!(
        stderr.contains("2 hop(s) failed: influxdb, heartbeats"),
        "{shown}"
    );
}

/// Issue 15: a probe account without the right to publish on the probed zone. The
/// broker (MQTT 5) refuses the probe at once with reason 0x87: the publish hop fails
/// with that reason, named topic and account, instead of waiting out the timeout or
/// passing (MQTT 3.1.1 acknowledges a refused publish). Only the broker is needed:
/// the hops after the publish are skipped, the API and InfluxDB are not running.
#[tokio::test(flavor = "multi_thread")]
async fn check_e2e_names_a_refused_probe_with_the_account() {
    let broker = Mosquitto::start();
    let env = broker_only_env(&broker, "sensor-nord");
    let (code, stdout, _, shown) = arng(
        &["check-e2e", "--json", "--zone", "sud", "--timeout", "8s"],
        &env,
    )
    .await;
    assert_eq!(code, Some(1), "{shown}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    let publish = hop(&report, "mqtt publish");
    assert_eq!(publish["ok"], false, "{shown}");
    assert_eq!(
        publish["detail"],
        "the broker refused the publish on entrepot/sud/e2e-probe/v1: not authorized \
         (account sensor-nord)",
        "{shown}"
    );
    // Answered, not timed out: well below the 8 s the hop may wait.
    let took = publish["latency_ms"].as_f64().unwrap_or(f64::MAX);
    assert!(took < 4_000.0, "{took} ms{shown}");
    // The broker grants the $SYS subscription and then delivers nothing this account
    // may not read: the hop says so after its 3 s, naming the account.
    let sys = hop(&report, "broker $SYS");
    assert_eq!(sys["cause"], "not_seen", "{shown}");
    assert!(
        sys["detail"]
            .as_str()
            .unwrap()
            .contains("account sensor-nord"),
        "{shown}"
    );
    for name in &PROBE_HOPS[1..] {
        let h = hop(&report, name);
        assert!(
            h["detail"].as_str().unwrap().starts_with("skipped"),
            "{name}{shown}"
        );
    }
}

/// A broker that publishes no statistics (`sys_interval 0`, the reference config
/// otherwise): the `broker $SYS` hop fails with `not_seen` after a bounded wait (the
/// uptime is retained when it exists), not after the whole --timeout, and says what
/// to look at. Only the broker runs: the API and InfluxDB hops fail on their own.
#[tokio::test(flavor = "multi_thread")]
async fn check_e2e_names_a_broker_without_sys_statistics_without_waiting_the_timeout() {
    let reference =
        std::fs::read_to_string(common::repo_root().join("mosquitto-conf/mosquitto.conf")).unwrap();
    assert!(reference.contains("\nsys_interval 10\n"), "{reference}");
    let dir = tempfile::tempdir().unwrap();
    let variant = dir.path().join("sys-off.conf");
    std::fs::write(
        &variant,
        reference.replace("\nsys_interval 10\n", "\nsys_interval 0\n"),
    )
    .unwrap();
    let broker = Mosquitto::start_with(variant.to_str().unwrap());
    assert!(broker.rendered_config().contains("\nsys_interval 0\n"));
    let env = broker_only_env(&broker, "operator");
    let started = std::time::Instant::now();
    let (code, stdout, _, shown) = arng(&["check-e2e", "--json", "--timeout", "60s"], &env).await;
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{shown}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    let sys = hop(&report, "broker $SYS");
    assert_eq!(sys["ok"], false, "{shown}");
    assert_eq!(sys["cause"], "not_seen", "{shown}");
    let detail = sys["detail"].as_str().unwrap();
    assert!(
        detail.contains("no $SYS/broker/uptime within 3s")
            && detail.contains("sys_interval 0")
            && detail.contains("account operator"),
        "{shown}"
    );
    // Bounded: nowhere near the 60 s a hop may take.
    assert!(sys["latency_ms"].as_f64().unwrap() < 10_000.0, "{shown}");
    assert!(took < Duration::from_secs(30), "took {took:?}{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_reports_ordered_percentiles_and_heartbeat_freshness() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let mut ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);
    heartbeats(&broker, &["nord", "sud"]).await;
    api_knows(&serve, &["nord", "sud"]).await;
    let env = client_env(&broker, &db, Some(&serve.url()));

    let (code, stdout, stderr, shown) = arng(
        &[
            "latency",
            "--json",
            "--samples",
            "5",
            "--zone",
            "sud",
            "--interval",
            "0s",
        ],
        &env,
    )
    .await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        !stderr.contains('\r'),
        "no progress bar outside a terminal{shown}"
    );
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    assert_eq!(r["zone"], "sud");
    assert_eq!(r["samples"], 5);
    assert_eq!(r["lost"], 0);
    let paths = [
        "broker_ack",
        "publish_to_influxdb",
        "publish_to_api_mqtt",
        "publish_to_rest",
        "influx_age_at_api",
    ];
    for name in paths {
        let p = &r["paths"][name];
        let n = p["samples"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}{shown}"));
        if name == "publish_to_api_mqtt" {
            assert!((1..=5).contains(&n), "{name}: {p}");
        } else {
            assert_eq!(n, 5, "{name}: {p}");
        }
        let v: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "max_ms"]
            .iter()
            .map(|k| p[k].as_f64().unwrap())
            .collect();
        assert!(v[0] > 0.0, "{name}: {p}");
        assert!(v.windows(2).all(|w| w[0] <= w[1]), "{name}: {p}");
    }
    // A point written by ingest is visible after its batch timeout (200 ms), never
    // before the broker acknowledged it.
    let p50 = |n: &str| r["paths"][n]["p50_ms"].as_f64().unwrap();
    assert!(p50("publish_to_influxdb") >= p50("broker_ack"), "{r:#}");
    assert!(
        p50("publish_to_rest") >= p50("publish_to_influxdb") * 0.5,
        "{r:#}"
    );
    // The heartbeats of the zone named, not of the others.
    let h = &r["heartbeats"]["sud"];
    assert_eq!(h["samples"], 5, "{r:#}");
    assert!(h["p50_ms"].as_f64().unwrap() > 0.0, "{h}");
    assert!(h["max_ms"].as_f64().unwrap() < 90_000.0, "{h}");
    assert!(h["latest_ms"].as_f64().is_some(), "{h}");
    assert!(r["heartbeats"]["nord"].is_null(), "{r:#}");

    // The table, for people.
    let (code, stdout, _, shown) =
        arng(&["latency", "--samples", "1", "--zone", "nord"], &env).await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        stdout.contains("publish_to_influxdb") && stdout.contains("heartbeat age"),
        "{shown}"
    );

    // A broken chain: lost probes are counted, and the run stops after 3 in a row.
    ingest.kill9();
    let (code, stdout, stderr, shown) = arng(
        &[
            "latency",
            "--json",
            "--samples",
            "10",
            "--zone",
            "nord",
            "--timeout",
            "2s",
        ],
        &env,
    )
    .await;
    assert_eq!(code, Some(1), "{shown}");
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    assert_eq!(
        (r["samples"].as_u64(), r["lost"].as_u64()),
        (Some(3), Some(3)),
        "{shown}"
    );
    assert!(r["paths"]["publish_to_influxdb"].is_null(), "{shown}");
    assert_eq!(r["paths"]["broker_ack"]["samples"], 3, "{shown}");
    assert!(stderr.contains("not in InfluxDB"), "{shown}");
}

/// `arng latency` chooses its zone by check-e2e's rule (docs/supervision.md, "Which
/// zones"), not the first zone `GET /zones` lists: a zone fallen silent is not
/// probed, `--exclude-zone` (a list, flag or `ARNG_EXCLUDE_ZONES`) leaves zones out
/// of the probes and of the heartbeats measured, `ARNG_PROBE_ZONE` is a list.
#[tokio::test(flavor = "multi_thread")]
async fn latency_probes_the_zone_check_e2e_would_and_leaves_excluded_zones_out() {
    let chain = SilentZoneChain::start().await;
    let (db, env) = (&chain.db, chain.env.clone());
    let with = |k: &str, v: &str| {
        let mut e = env.clone();
        e.push((k.to_owned(), v.to_owned()));
        e
    };
    let measured = |r: &Value| -> Vec<String> {
        r["heartbeats"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let one = ["latency", "--json", "--samples", "1", "--timeout", "20s"];

    // No option: the first zone with a recent heartbeat; every zone seen is measured,
    // the silent one included (its age says it is silent).
    let (code, stdout, _, shown) = arng(&one, &env).await;
    assert_eq!(code, Some(0), "{shown}");
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    assert_eq!(r["zone"], "nord", "{shown}");
    assert_eq!(measured(&r), ["a-old", "nord", "sud"], "{shown}");
    assert!(
        r["heartbeats"]["a-old"]["latest_ms"].as_f64().unwrap() > 3_500_000.0,
        "{shown}"
    );
    let choice = r["zone_choice"].as_str().unwrap();
    assert!(
        choice.starts_with("probes went to zone nord: ")
            && choice.contains("heartbeats measured: a-old, nord, sud"),
        "{shown}"
    );
    assert_eq!(count_probes(db, "nord").await, 1, "{shown}");

    // Excluded (a list, in the variable): neither probed nor measured.
    let (code, stdout, _, shown) = arng(&one, &with("ARNG_EXCLUDE_ZONES", "a-old,nord")).await;
    assert_eq!(code, Some(0), "{shown}");
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    assert_eq!(r["zone"], "sud", "{shown}");
    assert_eq!(measured(&r), ["sud"], "{shown}");
    assert_eq!(count_probes(db, "sud").await, 1, "{shown}");
    assert_eq!(count_probes(db, "nord").await, 1, "{shown}");

    // ARNG_PROBE_ZONE is a list: the probes go to the first, both are measured; the
    // table says why.
    let (code, stdout, _, shown) = arng(
        &["latency", "--samples", "1", "--timeout", "20s"],
        &with("ARNG_PROBE_ZONE", "sud,nord"),
    )
    .await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        stdout.contains("probes went to zone sud: ")
            && stdout.contains("heartbeats measured: sud, nord")
            && !stdout.contains("a-old"),
        "{shown}"
    );
    assert_eq!(count_probes(db, "sud").await, 2, "{shown}");

    // Nothing recent left: no probe, one line that says what to do.
    let (code, stdout, stderr, shown) =
        arng(&["latency", "--exclude-zone", "nord,sud"], &env).await;
    assert_eq!(code, Some(1), "{shown}");
    assert!(stdout.is_empty(), "{shown}");
    assert!(stderr.contains("--zone"), "{shown}");
    assert_eq!(count_probes(db, "a-old").await, 0, "{shown}");
}

/// Probe readings stored for `zone`.
async fn count_probes(db: &Influxd, zone: &str) -> i64 {
    let filter = format!(r#"r.zone == "{zone}" and r.sensor == "e2e-probe""#);
    count_points(db, "readings", "temp", &filter).await
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_stores_the_broker_sys_statistics_every_interval() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let ingest = IngestProc::start(&broker, &db, &[]);
    let client = arng::store::InfluxClient::new(&db.args());
    let uptimes = || async {
        client
            .query(
                r#"from(bucket: "entrepot") |> range(start: -1h, stop: 1h)
                   |> filter(fn: (r) => r._measurement == "broker" and r._field == "uptime_s")"#,
            )
            .await
            .unwrap()
            .iter()
            .filter_map(|r| r.f64("_value"))
            .collect::<Vec<f64>>()
    };
    // Retained values on subscribing, then a new uptime every sys_interval (10 s).
    let values = eventually(
        "two broker uptime points",
        Duration::from_secs(30),
        || async {
            let v = uptimes().await;
            (v.len() >= 2).then_some(v)
        },
    )
    .await;
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    let rows = client
        .query(
            r#"from(bucket: "entrepot") |> range(start: -1h, stop: 1h)
               |> filter(fn: (r) => r._measurement == "broker") |> last()
               |> keep(columns: ["_field", "_value"])"#,
        )
        .await
        .unwrap();
    let field = |f: &str| {
        rows.iter()
            .find(|r| r.str("_field") == Some(f))
            .and_then(|r| r.f64("_value"))
            .unwrap_or_else(|| panic!("no broker field {f}: {rows:?}"))
    };
    assert!(field("clients_connected") >= 1.0);
    assert!(field("heap_current_bytes") > 0.0);
    assert!(field("store_messages") >= 0.0);
    assert_eq!(field("publish_dropped"), 0.0);
    assert!(field("messages_received") >= 1.0);
    // $SYS messages are kept or skipped, never dead letters.
    assert_eq!(
        ingest.metric(r#"arng_ingest_rejected_total{reason="unknown_topic"}"#),
        0.0
    );
    // And ingest reports on itself every interval.
    eventually(
        "an ingest statistics point",
        Duration::from_secs(20),
        || async {
            let rows = client
                .query(
                    r#"from(bucket: "entrepot") |> range(start: -1h, stop: 1h)
                   |> filter(fn: (r) => r._measurement == "ingest" and r._field == "spool_bytes")"#,
                )
                .await
                .unwrap();
            rows.iter()
                .any(|r| r.str("instance") == Some("arng-ingest") && r.f64("_value") == Some(0.0))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_stats_can_be_turned_off() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let _ingest = IngestProc::start(&broker, &db, &["--broker-stats=false"]);
    // A reading flushed after the moment the retained $SYS values would have arrived.
    publish_all(
        &broker,
        "simulator",
        &[reading_msg("nord", "s1", 0, now_ms(), 20.0)],
        QoS::AtLeastOnce,
    )
    .await;
    eventually("the reading", Duration::from_secs(20), || async {
        (count_points(&db, "readings", "temp", "").await == 1).then_some(())
    })
    .await;
    assert_eq!(count_points(&db, "broker", "uptime_s", "").await, 0);
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    for args in [
        &["check-e2e", "--timeout", "0s"][..],
        &["check-e2e", "--zone", "Nord"],
        &["check-e2e", "--api-url", "ftp://x"],
        &["check-e2e", "--heartbeat-max-age", "soon"],
        &["check-e2e", "--zone", "nord,sud", "--exclude-zone", "sud"],
        &["check-e2e", "--exclude-zone", "Sud"],
        &["latency", "--samples", "0"],
        &["latency", "--samples", "3", "--duration", "5s"],
        &["latency", "--timeout", "0s"],
        &["latency", "--zone", "nord", "--exclude-zone", "nord"],
        &["latency", "--exclude-zone", "Sud"],
        &["ingest", "--broker-stats=maybe"],
    ] {
        let out = run_arng(args, &[]);
        let shown = describe(args, &out);
        assert_eq!(out.status.code(), Some(2), "{shown}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{shown}");
        assert!(out.stdout.is_empty(), "{shown}");
    }
}
