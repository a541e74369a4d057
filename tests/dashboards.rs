//! The dashboards and the downsampling task, against a real influxd.
//!
//! - Every Flux query of the Grafana dashboard (`deploy/grafana/dashboards/`) and of
//!   the InfluxDB template (`deploy/influxdb/template.json`), the variable queries
//!   included, runs against data that went through the real chain (readings crossing
//!   the thresholds and heartbeats published on Mosquitto, stored by `arng ingest`,
//!   alerts raised by its rules, a dead letter) plus supervision points written with
//!   the schema's own functions, and returns rows with the columns its panel needs.
//! - The template applies to influxd (`POST /api/v2/templates/apply`, what
//!   `influx apply` sends) and InfluxDB stores exactly the queries of the file.
//! - The threshold lines are arng's default thresholds.
//! - `scripts/influx-setup.sh` (and the container's init script that calls it) creates
//!   the downsampled bucket and the task idempotently; the task, run by influxd's own
//!   scheduler and run directly, writes the exact 1-minute mean/min/max of known
//!   readings.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use arng::domain::schema::{
    broker_point, ingest_point, reading_point, supervision_point, IngestStats,
};
use arng::domain::{AlertLevel, Reading, SensorId, Thresholds, Zone};
use arng::store::{InfluxClient, Record};
use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use common::chain::{count_points, now_ms, publish_all, reading_msg, IngestProc};
use common::influxd::{http, Influxd};
use common::mosquitto::Mosquitto;
use common::repo_root;
use rumqttc::QoS;
use serde_json::Value;

fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: invalid JSON: {e}"))
}

fn grafana() -> Value {
    read_json("deploy/grafana/dashboards/arng-warehouse.json")
}

fn template() -> Value {
    read_json("deploy/influxdb/template.json")
}

/// (panel title, query) of every Flux query in the Grafana dashboard, variables
/// included.
fn grafana_queries(g: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in g["templating"]["list"].as_array().unwrap() {
        out.push((
            format!("variable {}", v["name"].as_str().unwrap()),
            v["query"].as_str().unwrap().to_owned(),
        ));
    }
    let mut panels: Vec<&Value> = g["panels"].as_array().unwrap().iter().collect();
    // Panels of collapsed rows live inside the row.
    let nested: Vec<&Value> = panels
        .iter()
        .filter_map(|p| p["panels"].as_array())
        .flatten()
        .collect();
    panels.extend(nested);
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"], "arng-influxdb",
                "{}: every target uses the provisioned datasource",
                p["title"]
            );
            out.push((
                p["title"].as_str().unwrap().to_owned(),
                t["query"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// (chart name, query) of every query in the InfluxDB template.
fn template_queries(t: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for resource in t.as_array().unwrap() {
        match resource["kind"].as_str().unwrap() {
            "Dashboard" => {
                for c in resource["spec"]["charts"].as_array().unwrap() {
                    for q in c["queries"].as_array().into_iter().flatten() {
                        out.push((
                            c["name"].as_str().unwrap().to_owned(),
                            q["query"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
            "Variable" => out.push((
                format!("variable {}", resource["metadata"]["name"]),
                resource["spec"]["query"].as_str().unwrap().to_owned(),
            )),
            other => panic!("unexpected resource kind {other} in the template"),
        }
    }
    out
}

/// The dashboard variables replaced with what Grafana and the InfluxDB UI send: the
/// time range as RFC 3339 times, a window period, every zone selected.
fn concrete(flux: &str, start: DateTime<Utc>, stop: DateTime<Utc>) -> String {
    let q = flux
        .replace(
            "v.timeRangeStart",
            &start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
        .replace(
            "v.timeRangeStop",
            &stop.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
        .replace("v.windowPeriod", "10s")
        .replace("${zone:json}", r#"["nord","sud","est"]"#);
    assert!(
        !q.contains("v.")
            || !q
                .split("v.")
                .skip(1)
                .any(|s| s.starts_with(char::is_alphabetic)),
        "a dashboard variable is left in:\n{q}"
    );
    assert!(!q.contains("${"), "a Grafana variable is left in:\n{q}");
    q
}

/// What each panel must return: the columns every row carries, and which of them are
/// numbers. Keyed by title; every panel of both dashboards must be listed.
fn expectations() -> BTreeMap<&'static str, (&'static [&'static str], &'static [&'static str])> {
    const T: &[&str] = &["_time", "_value"];
    [
        ("variable zone", (&["_value"][..], &[][..])),
        (
            "Temperature per zone: mean, 15-minute rolling mean, thresholds",
            (T, T),
        ),
        (
            "Humidity per zone: mean, 15-minute rolling mean, thresholds",
            (T, T),
        ),
        (
            "Temperature: each sensor minus its zone's mean (sensor drift)",
            (&["_time", "_value", "zone", "sensor"][..], T),
        ),
        (
            "Humidity: each sensor minus its zone's mean (sensor drift)",
            (&["_time", "_value", "zone", "sensor"][..], T),
        ),
        (
            "Alerts raised per severity",
            (&["_time", "_value", "severity"][..], T),
        ),
        (
            "Readings per alert_level",
            (&["_time", "_value", "level"][..], T),
        ),
        (
            "Recent alerts",
            (
                &[
                    "_time", "zone", "sensor", "metric", "severity", "state", "source", "message",
                ][..],
                &[][..],
            ),
        ),
        (
            "Heartbeat age per zone",
            (&["_time", "_value", "zone"][..], T),
        ),
        (
            "Latest reading age per zone (end-to-end latency bound)",
            (&["_time", "_value", "zone"][..], T),
        ),
        (
            "End-to-end latency (reading timestamp to InfluxDB write)",
            (&["_time", "_value", "_field"][..], T),
        ),
        (
            "Longest gap between heartbeats",
            (&["_time", "_value", "zone"][..], T),
        ),
        (
            "Readings stored per minute",
            (&["_time", "_value", "zone"][..], T),
        ),
        (
            "Dead letters per reason",
            (&["_time", "_value", "reason"][..], T),
        ),
        ("Clients connected", (T, T)),
        (
            "Messages per second",
            (&["_time", "_value", "_field"][..], T),
        ),
        ("Messages dropped", (T, T)),
        ("Broker backlog (stored messages)", (T, T)),
        (
            "Key indicators (arng serve)",
            (&["_time", "_value", "indicator"][..], T),
        ),
        (
            "Temperature per zone, 1-minute aggregates (kept 2 years)",
            (&["_time", "_value", "_field", "zone"][..], T),
        ),
    ]
    .into_iter()
    .collect()
}

fn check_rows(title: &str, flux: &str, rows: &[Record]) {
    let (columns, numbers) = expectations()
        .get(title)
        .copied()
        .unwrap_or_else(|| panic!("no expectation for panel {title:?}: add one"));
    assert!(!rows.is_empty(), "{title}: no rows\n{flux}");
    for r in rows {
        for c in columns {
            assert!(
                r.values.contains_key(*c),
                "{title}: column {c} missing in {r:?}\n{flux}"
            );
        }
        for c in numbers {
            if *c == "_time" {
                assert!(
                    r.time("_time").is_some(),
                    "{title}: _time not a time in {r:?}"
                );
            } else {
                let v = r
                    .f64(c)
                    .unwrap_or_else(|| panic!("{title}: {c} is not a number in {r:?}"));
                assert!(v.is_finite(), "{title}: {c} = {v}");
            }
        }
    }
}

fn default_bands() -> [(&'static str, [(&'static str, f64); 4]); 2] {
    let t = Thresholds::default();
    let band = |b: arng::domain::thresholds::Band| {
        [
            ("critical_low", b.critical_low),
            ("warning_low", b.warning_low),
            ("warning_high", b.warning_high),
            ("critical_high", b.critical_high),
        ]
    };
    [("temp", band(t.default.temp)), ("hum", band(t.default.hum))]
}

#[test]
fn threshold_lines_are_arng_default_thresholds() {
    let g = grafana();
    for (field, band) in default_bands() {
        let title = if field == "temp" {
            "Temperature"
        } else {
            "Humidity"
        };
        let panel = g["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| {
                p["title"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{title} per zone: mean"))
            })
            .unwrap();
        let steps: Vec<f64> = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["value"].as_f64())
            .collect();
        let expected: Vec<f64> = band.iter().map(|(_, v)| *v).collect();
        assert_eq!(steps, expected, "Grafana threshold lines of {field}");
        assert_eq!(
            panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"],
            "dashed"
        );
        // The template draws them with a query: line(name: "...", value: ...).
        let q = template_queries(&template())
            .into_iter()
            .find(|(n, q)| n.starts_with(&format!("{title} per zone")) && q.contains("line(name:"))
            .map(|(_, q)| q)
            .expect("a threshold query in the template");
        for (name, v) in band {
            assert!(
                q.contains(&format!(r#"line(name: "{name}", value: {v:?})"#)),
                "template {field} line {name} = {v}:\n{q}"
            );
        }
    }
}

#[test]
fn readings_queries_leave_supervision_probes_out() {
    for (title, q) in grafana_queries(&grafana())
        .into_iter()
        .chain(template_queries(&template()))
    {
        let on_readings =
            q.contains(r#"r._measurement == "readings""#) && !q.contains("entrepot_1m");
        if on_readings {
            assert!(
                q.contains(arng::supervision::EXCLUDE_PROBES),
                "{title}: readings query without {}:\n{q}",
                arng::supervision::EXCLUDE_PROBES
            );
        }
        if q.contains(r#"r._measurement == "alerts""#) {
            assert!(
                q.contains(r#"r.sensor != "e2e-probe""#),
                "{title}: alerts with probes"
            );
        }
    }
}

#[test]
fn grafana_and_the_template_have_the_same_panels() {
    let g: BTreeSet<String> = grafana_queries(&grafana())
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| !t.starts_with("variable "))
        .collect();
    let t: BTreeSet<String> = template_queries(&template())
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(g, t);
    let provider: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(
            repo_root().join("deploy/grafana/provisioning/dashboards/arng.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some("/etc/grafana/dashboards/arng"),
        "the provider reads where docker-compose.yml mounts deploy/grafana/dashboards"
    );
    let compose = std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap();
    assert!(compose.contains("./deploy/grafana/dashboards:/etc/grafana/dashboards/arng:ro"));
    assert!(compose.contains("/etc/grafana/dashboards/arng/arng-warehouse.json"));
}

// ----- against a real chain -----------------------------------------------------------

/// Runs the setup script against `db`; returns the task id it prints.
fn influx_setup(db: &Influxd, extra_env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/influx-setup.sh"))
        .env("INFLUX_URL", db.url())
        .env("INFLUX_ORG", common::influxd::ORG)
        .env("INFLUX_TOKEN", common::influxd::TOKEN)
        .envs(extra_env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/influx-setup.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The task's Flux as a plain query: the same text without its `option task` line.
fn downsample_body() -> String {
    std::fs::read_to_string(repo_root().join("deploy/influxdb/downsample-1m.flux"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("option task"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_runs_on_data_from_the_real_chain() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    influx_setup(&db, &[]);
    let ingest = IngestProc::start(&broker, &db, &[]);

    // Six sensors over the last ten minutes, one reading every 20 s. nord/s1 climbs
    // through the warning and critical thresholds, so ingest's rules raise alerts.
    let now = now_ms();
    let mut readings = Vec::new();
    for i in 0..30i64 {
        let t = now - (600 - i * 20) * 1000;
        for zone in ["nord", "sud", "est"] {
            for sensor in ["s1", "s2"] {
                let hot = zone == "nord" && sensor == "s1";
                let temp = match (hot, i) {
                    (true, 10..=19) => 27.0,
                    (true, 20..) => 32.0,
                    _ => 20.0 + (i % 3) as f64 * 0.1,
                };
                readings.push(reading_msg(zone, sensor, i as u64, t, temp));
            }
        }
    }
    let mut heartbeats = Vec::new();
    for i in 0..5i64 {
        let t = chrono::DateTime::from_timestamp_millis(now - (150 - i * 30) * 1000).unwrap();
        for zone in ["nord", "sud", "est"] {
            heartbeats.push((
                format!("entrepot/heartbeat/{zone}"),
                format!(
                    r#"{{"version":1,"zone":"{zone}","timestamp":"{}","sensors":2}}"#,
                    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ),
            ));
        }
    }
    publish_all(&broker, "simulator", &readings, QoS::AtLeastOnce).await;
    publish_all(&broker, "simulator", &heartbeats, QoS::AtMostOnce).await;
    publish_all(
        &broker,
        "simulator",
        &[("entrepot/sud/s9/v1".into(), "not json".into())],
        QoS::AtLeastOnce,
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = count_points(&db, "readings", "temp", "").await;
        let h = count_points(&db, "heartbeats", "sensors", "").await;
        let a = count_points(&db, "alerts", "id", r#"r.severity == "critical""#).await;
        let d = count_points(&db, "deadletters", "size", "").await;
        if r == readings.len() as i64 && h == heartbeats.len() as i64 && a > 0 && d > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chain incomplete after 30 s: readings {r}/{}, heartbeats {h}/{}, critical alerts {a}, dead letters {d}\n{}",
            readings.len(),
            heartbeats.len(),
            ingest.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Supervision points, with the schema's own functions (what ingest and serve write
    // every 10 s), so the broker and indicator panels have data whatever the timing.
    let client = InfluxClient::new(&db.args());
    let mut points = Vec::new();
    for i in 0..30i64 {
        let t = DateTime::from_timestamp_millis(now - (300 - i * 10) * 1000).unwrap();
        for (field, v) in [
            ("clients_connected", 3.0 + (i % 2) as f64),
            ("messages_received", 100.0 * i as f64),
            ("messages_sent", 90.0 * i as f64),
            ("publish_dropped", (i / 10) as f64),
            ("store_messages", (i % 5) as f64),
        ] {
            points.push(broker_point(field, v, t));
        }
        let stats = IngestStats {
            readings: 6,
            lag_p50_s: Some(0.2),
            lag_p99_s: Some(0.4),
            lag_max_s: Some(0.5),
            lag_samples: Some(6),
            spool_bytes: 0,
            received: 6 * i as u64,
        };
        points.push(ingest_point("arng-ingest-test", &stats, t));
        points.push(supervision_point(
            "e2e_latency",
            true,
            &[("e2e_latency_p99_seconds", Some(0.4), 5.0)],
            t,
        ));
    }
    client
        .write_points(&points)
        .await
        .expect("write supervision points");
    // The downsampled bucket, as the task fills it.
    client
        .query(&downsample_body())
        .await
        .expect("downsampling body");

    let start = Utc::now() - ChronoDuration::hours(1);
    let stop = Utc::now() + ChronoDuration::minutes(1);
    let mut seen = BTreeSet::new();
    let all: Vec<(String, String)> = grafana_queries(&grafana())
        .into_iter()
        .chain(template_queries(&template()))
        .collect();
    for (title, flux) in &all {
        let q = concrete(flux, start, stop);
        let rows = client
            .query(&q)
            .await
            .unwrap_or_else(|e| panic!("{title}: query failed: {e}\n{q}"));
        check_rows(title, &q, &rows);
        seen.insert(title.clone());
    }
    let expected: BTreeSet<String> = expectations().keys().map(|k| k.to_string()).collect();
    assert_eq!(seen, expected, "panels tested vs panels expected");

    // A few values that must be right, not just present.
    let run = |title: &str, pick: &dyn Fn(&str) -> bool| {
        all.iter()
            .find(|(t, q)| t == title && pick(q))
            .map(|(_, q)| concrete(q, start, stop))
            .unwrap()
    };
    let ages = client
        .query(&run("Heartbeat age per zone", &|_| true))
        .await
        .unwrap();
    let zones: BTreeSet<&str> = ages.iter().filter_map(|r| r.str("zone")).collect();
    assert_eq!(zones, ["est", "nord", "sud"].into_iter().collect());
    for r in &ages {
        let age = r.f64("_value").unwrap();
        assert!((0.0..60.0).contains(&age), "heartbeat age {age} s");
    }
    let thresholds = client
        .query(&run(
            "Temperature per zone: mean, 15-minute rolling mean, thresholds",
            &|q| q.contains("line(name:"),
        ))
        .await
        .unwrap();
    let lines: BTreeMap<String, f64> = thresholds
        .iter()
        .map(|r| {
            (
                r.str("_field").unwrap().to_owned(),
                r.f64("_value").unwrap(),
            )
        })
        .collect();
    let expected: BTreeMap<String, f64> = default_bands()[0]
        .1
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(lines, expected, "temperature threshold lines");
    let drift = client
        .query(&run(
            "Temperature: each sensor minus its zone's mean (sensor drift)",
            &|_| true,
        ))
        .await
        .unwrap();
    let worst = drift
        .iter()
        .max_by(|a, b| {
            a.f64("_value")
                .unwrap()
                .total_cmp(&b.f64("_value").unwrap())
        })
        .unwrap();
    assert_eq!(
        (worst.str("zone"), worst.str("sensor")),
        (Some("nord"), Some("s1")),
        "the sensor that heats up stands out"
    );
    let severities: BTreeSet<String> = client
        .query(&run("Alerts raised per severity", &|_| true))
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.str("severity").map(str::to_owned))
        .collect();
    assert!(severities.contains("critical"), "{severities:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_influxdb_template_applies_and_stores_the_file_s_queries() {
    let db = Influxd::start();
    let (status, body) = http(db.port, "GET", "/api/v2/orgs?org=ares", "").unwrap();
    assert_eq!(status, 200, "{body}");
    let org_id = json(&body)["orgs"][0]["id"].as_str().unwrap().to_owned();
    let request = serde_json::json!({
        "orgID": org_id,
        "dryRun": false,
        "template": {"contentType": "json", "contents": template()},
    });
    let (status, body) = http(
        db.port,
        "POST",
        "/api/v2/templates/apply",
        &request.to_string(),
    )
    .unwrap();
    assert!(
        status == 200 || status == 201,
        "template refused ({status}): {body}"
    );
    let summary = json(&body);
    assert!(
        summary["errors"].is_null() || summary["errors"].as_array().is_some_and(|e| e.is_empty()),
        "{body}"
    );

    let (status, body) = http(db.port, "GET", "/api/v2/dashboards?org=ares", "").unwrap();
    assert_eq!(status, 200, "{body}");
    let dashboards = json(&body);
    let d = &dashboards["dashboards"][0];
    assert_eq!(d["name"], "arng — warehouse");
    let id = d["id"].as_str().unwrap();
    let (_, body) = http(
        db.port,
        "GET",
        &format!("/api/v2/dashboards/{id}?include=properties"),
        "",
    )
    .unwrap();
    let stored: BTreeSet<(String, String)> = json(&body)["cells"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            c["properties"]["queries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |q| (name.clone(), q["text"].as_str().unwrap().to_owned()))
        })
        .collect();
    let file: BTreeSet<(String, String)> = template_queries(&template()).into_iter().collect();
    assert_eq!(
        stored, file,
        "InfluxDB stores the template's queries as written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn downsampling_task_writes_exact_minute_aggregates() {
    let db = Influxd::start();
    // The container's init script first (as on a fresh compose volume), then the
    // setup script again (as scripts/services.sh does on every `up`): one bucket, one
    // task, the same id.
    let out = Command::new("bash")
        .arg(repo_root().join("deploy/influxdb/initdb/10-arng-setup.sh"))
        .env("INFLUX_HOST", db.url())
        .env("DOCKER_INFLUXDB_INIT_ORG", common::influxd::ORG)
        .env("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN", common::influxd::TOKEN)
        .env(
            "ARNG_SETUP_SCRIPT",
            repo_root().join("scripts/influx-setup.sh"),
        )
        .env(
            "ARNG_DOWNSAMPLE_FLUX",
            repo_root().join("deploy/influxdb/downsample-1m.flux"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task_id = influx_setup(&db, &[]);
    assert_eq!(
        influx_setup(&db, &[]),
        task_id,
        "re-running keeps the same task"
    );
    let (_, body) = http(db.port, "GET", "/api/v2/tasks?org=ares", "").unwrap();
    let tasks = json(&body)["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 1, "one task after three setups: {body}");
    assert_eq!(tasks[0]["name"], "arng-downsample-1m");
    assert_eq!(tasks[0]["every"], "1m");
    assert_eq!(tasks[0]["status"], "active");
    let (_, body) = http(
        db.port,
        "GET",
        "/api/v2/buckets?org=ares&name=entrepot_1m",
        "",
    )
    .unwrap();
    let bucket = &json(&body)["buckets"][0];
    assert_eq!(
        bucket["retentionRules"][0]["everySeconds"],
        730 * 86_400,
        "{body}"
    );

    // Known readings in two complete minutes, and one too old for the task's window.
    let minute = Utc::now()
        .duration_trunc(ChronoDuration::minutes(1))
        .unwrap()
        - ChronoDuration::minutes(3);
    let at = |m: i64, s: i64| minute + ChronoDuration::minutes(m) + ChronoDuration::seconds(s);
    let reading =
        |zone: &str, sensor: &str, t: DateTime<Utc>, temp: f64, hum: f64, level: AlertLevel| {
            reading_point(&Reading {
                zone: Zone::new(zone).unwrap(),
                sensor: SensorId::new(sensor).unwrap(),
                seq: None,
                timestamp: t,
                temp,
                hum,
                alert_level: level,
                provenance: Default::default(),
            })
        };
    use AlertLevel::{Critical, Normal, Warning};
    let points = vec![
        reading("nord", "s1", at(0, 5), 10.0, 40.0, Normal),
        reading("nord", "s1", at(0, 25), 20.0, 50.0, Warning),
        reading("nord", "s1", at(0, 45), 30.0, 60.0, Critical),
        reading("nord", "s1", at(1, 10), 1.5, 35.0, Critical),
        reading("nord", "s1", at(1, 50), 2.5, 45.0, Warning),
        reading("sud", "s2", at(0, 30), 4.0, 80.0, Normal),
        reading("sud", "s2", at(-12, 0), 99.0, 99.0, Critical),
    ];
    let client = InfluxClient::new(&db.args());
    client.write_points(&points).await.unwrap();

    let expected: BTreeMap<(String, String, DateTime<Utc>, String), f64> = [
        (
            ("nord", "s1", at(0, 0)),
            [
                ("temp_mean", 20.0),
                ("temp_min", 10.0),
                ("temp_max", 30.0),
                ("hum_mean", 50.0),
                ("hum_min", 40.0),
                ("hum_max", 60.0),
                ("alert_level_max", 2.0),
                ("count", 3.0),
            ],
        ),
        (
            ("nord", "s1", at(1, 0)),
            [
                ("temp_mean", 2.0),
                ("temp_min", 1.5),
                ("temp_max", 2.5),
                ("hum_mean", 40.0),
                ("hum_min", 35.0),
                ("hum_max", 45.0),
                ("alert_level_max", 2.0),
                ("count", 2.0),
            ],
        ),
        (
            ("sud", "s2", at(0, 0)),
            [
                ("temp_mean", 4.0),
                ("temp_min", 4.0),
                ("temp_max", 4.0),
                ("hum_mean", 80.0),
                ("hum_min", 80.0),
                ("hum_max", 80.0),
                ("alert_level_max", 0.0),
                ("count", 1.0),
            ],
        ),
    ]
    .into_iter()
    .flat_map(|((z, s, t), fields)| {
        fields
            .into_iter()
            .map(move |(f, v)| ((z.to_owned(), s.to_owned(), t, f.to_owned()), v))
    })
    .collect();
    let downsampled = || async {
        let rows = client
            .query(
                r#"from(bucket: "entrepot_1m") |> range(start: -1h, stop: 1m)
                   |> filter(fn: (r) => r._measurement == "readings")"#,
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (
                    (
                        r.str("zone").unwrap().to_owned(),
                        r.str("sensor").unwrap().to_owned(),
                        r.time("_time").unwrap(),
                        r.str("_field").unwrap().to_owned(),
                    ),
                    r.f64("_value").unwrap(),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };

    // 1. influxd's scheduler runs the task (a manual run, now).
    let (status, body) = http(
        db.port,
        "POST",
        &format!("/api/v2/tasks/{task_id}/runs"),
        "{}",
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let run_id = json(&body)["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http(
            db.port,
            "GET",
            &format!("/api/v2/tasks/{task_id}/runs/{run_id}"),
            "",
        )
        .unwrap();
        match json(&body)["status"].as_str() {
            Some("success") => break,
            Some("failed") | Some("canceled") => {
                let (_, logs) = http(
                    db.port,
                    "GET",
                    &format!("/api/v2/tasks/{task_id}/runs/{run_id}/logs"),
                    "",
                )
                .unwrap();
                panic!("task run failed: {body}\n{logs}");
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "task run not finished after 30 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        downsampled().await,
        expected,
        "what the scheduled task wrote"
    );

    // 2. The same Flux run directly, again: the minutes are recomputed and
    //    overwritten, not duplicated.
    client.query(&downsample_body()).await.unwrap();
    assert_eq!(downsampled().await, expected, "after a second run");
}
