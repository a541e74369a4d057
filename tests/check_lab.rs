//! `arng check-lab` tested both ways (issue 18), against real Mosquitto and influxd:
//!
//! - against arng's own chain (ingest, serve, simulate with a heatwave, a bucket with
//!   a retention) every one of the lab's items passes;
//! - against a deliberately flawed team stack — the lab's Python sensor
//!   (examples/python, paho-mqtt) run with heartbeats every second instead of every
//!   3 s, without retain and without `alert_level`, a bucket kept forever, and a
//!   stand-in HTTP API that answers the three routes with wrong shapes — exactly the
//!   items those flaws break fail, each with the evidence that shows why, and the
//!   others still pass;
//! - bad options are refused before anything connects, and a chain that is not
//!   there fails item by item without a panic.
//!
//! Windows and heartbeat periods are short (flags) to keep CI time low.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use common::chain::{client_env, IngestProc, ServeProc};
use common::influxd::Influxd;
use common::mosquitto::{account, Mosquitto};
use common::{arng, eventually};
use serde_json::{json, Value};

/// A child process killed when the test ends, its output shown if the test failed.
struct Running {
    name: &'static str,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Running {
    fn spawn(name: &'static str, cmd: &mut Command) -> Running {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Running { name, child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- {} output -----\n{}", self.name, self.output());
        }
    }
}

/// The environment of check-lab: the operator account (the teacher's), the test
/// influxd, the API at `api` (with a bearer token).
fn lab_env(
    broker: &Mosquitto,
    db: &Influxd,
    api: &str,
    token: Option<&str>,
) -> Vec<(String, String)> {
    let mut env = client_env(broker, db, Some(api));
    env.extend(token.map(|t| ("ARNG_API_TOKEN".to_owned(), t.to_owned())));
    env
}

fn item<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == id))
        .unwrap_or_else(|| panic!("no item {id} in {report:#}"))
}

/// Every item, as `id: status — summary` lines, for failure messages.
fn summary(report: &Value) -> String {
    report["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    format!(
                        "{}: {} — {}\n    {}",
                        i["id"], i["status"], i["summary"], i["evidence"]
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Waits until `zone`'s latest reading is visible at `api`.
async fn flowing(api: &str, zone: &str) {
    let url = format!("{api}/zones/{zone}/latest");
    eventually(
        &format!("readings of {zone} at {url}"),
        Duration::from_secs(30),
        || async {
            let v: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            v["sensors"].as_array().filter(|s| !s.is_empty()).map(drop)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_item_passes_against_arngs_own_chain() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    db.set_retention(30 * 86_400);
    let _ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);
    let (user, pass) = account("simulator");
    // One sensor per zone every 500 ms, heartbeats every 2 s, and est critical from
    // about 1.5 s on (a heatwave is critical 3 intervals after it starts).
    let sim = Running::spawn(
        "arng simulate",
        Command::new(common::arng_bin())
            .args([
                "simulate",
                "--zones",
                "nord,sud,est",
                "--sensors-per-zone",
                "1",
            ])
            .args([
                "--interval",
                "500ms",
                "--heartbeat-interval",
                "2s",
                "--scenario",
                "heatwave:est@0s",
            ])
            .env("ARNG_MQTT_URL", broker.url())
            .env("ARNG_MQTT_USERNAME", user)
            .env("ARNG_MQTT_PASSWORD", pass)
            .env("RUST_LOG", "warn"),
    );
    for zone in ["nord", "sud", "est"] {
        flowing(&serve.url(), zone).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("rapport.md");
    let report_arg = report_path.to_string_lossy().into_owned();
    let env = lab_env(&broker, &db, &serve.url(), Some(&serve.token));
    let args = [
        "check-lab",
        "--window",
        "10s",
        "--heartbeat-period",
        "2s",
        "--heartbeat-tolerance",
        "1s",
        "--timeout",
        "15s",
        "--json",
        "--report",
        &report_arg,
    ];
    let (code, stdout, _, shown) = arng(&args, &env).await;
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    let all = summary(&report);
    assert_eq!(code, Some(0), "{all}{shown}\n{}", sim.output());
    assert_eq!(report["ok"], true, "{all}");
    assert_eq!(report["items"].as_array().unwrap().len(), 21, "{all}");
    assert_eq!(
        report["counts"],
        json!({"pass": 21, "fail": 0, "not_checked": 0}),
        "{all}"
    );
    assert_eq!(report["lang"], "fr");

    // The evidence says what was seen, where.
    let zones = item(&report, "broker.zones");
    assert!(
        zones["evidence"][0]
            .as_str()
            .unwrap()
            .starts_with("nord : "),
        "{zones}"
    );
    let m = item(&report, "influx.measurement")["summary"]
        .as_str()
        .unwrap();
    assert!(
        m.contains("readings") && m.contains("tags zone (zone) et sensor (capteur)"),
        "{m}"
    );
    let visible = item(&report, "rest.alert_visible")["summary"]
        .as_str()
        .unwrap();
    for place in [
        "GET /alerts?include_probe=true",
        "MQTT entrepot/alerts/nord",
        "InfluxDB alerts.message (bucket entrepot)",
    ] {
        assert!(visible.contains(place), "{place} not in {visible}");
    }
    let latest = item(&report, "rest.latest")["evidence"][0]
        .as_str()
        .unwrap();
    assert!(
        latest.contains("mesures MQTT montrées, décalage médian"),
        "{latest}"
    );
    let critical = item(&report, "payload.critical")["evidence"][0]
        .as_str()
        .unwrap();
    assert!(
        critical.starts_with("entrepot/est/s1/v1")
            && critical.contains(r#""alert_level":"critical""#),
        "{critical}"
    );
    let left = report["left_behind"].as_array().unwrap();
    assert!(left[0].as_str().unwrap().contains("e2e-probe"), "{left:?}");

    // The report to hand in, in French.
    let md = std::fs::read_to_string(&report_path).unwrap();
    assert!(
        md.starts_with("# TP ARNG — rapport de vérification"),
        "{md}"
    );
    assert!(
        md.contains("21 exigences : 21 OK, 0 en échec, 0 non vérifiées"),
        "{md}"
    );
    assert!(
        md.contains("| 2 | Broker : aller-retour publish/subscribe | ✅ OK |"),
        "{md}"
    );
    if let Ok(out) = std::env::var("ARNG_CHECK_LAB_REPORT_OUT") {
        // docs/check-lab.md shows the real output of this run (see the doc).
        std::fs::write(format!("{out}.md"), &md).unwrap();
        let (_, table, _, _) =
            arng(&[&args[..args.len() - 3], &["--lang", "en"]].concat(), &env).await;
        std::fs::write(format!("{out}.table.txt"), table).unwrap();
    }
}

/// A team's API that answers the lab's three routes with the wrong shapes: no values
/// at /zones/{zone}/latest, no thresholds at /thresholds, and an alert "accepted"
/// but kept nowhere (GET /alerts answers 405).
async fn wrong_shapes_api() -> String {
    let app = Router::new()
        .route(
            "/zones/{zone}/latest",
            get(
                |axum::extract::Path(zone): axum::extract::Path<String>| async move {
                    Json(json!({"zone": zone, "status": "ok", "temperature": "n/a"}))
                },
            ),
        )
        .route(
            "/thresholds",
            get(|| async { Json(json!({"thresholds": "TODO"})) }),
        )
        .route(
            "/alerts",
            post(|| async { Json(json!({"received": true})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flawed_team_stack_fails_the_right_items_with_their_evidence() {
    let py = common::python_with_paho();
    let broker = Mosquitto::start();
    let db = Influxd::start(); // retention left at forever: a flaw too
    let _ingest = IngestProc::start(&broker, &db, &[]);
    let api = wrong_shapes_api().await;
    let (user, pass) = account("simulator");
    let script = common::repo_root().join("examples/python/sensor.py");
    // Heartbeats every second (the check expects 3 s ± 1 s), not retained, and
    // readings without alert_level.
    let sensor = Running::spawn(
        "the Python sensor",
        Command::new(&py)
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", &broker.port.to_string()])
            .args([
                "--username",
                &user,
                "--password",
                &pass,
                "--zones",
                "nord,sud,est",
            ])
            .args([
                "--period",
                "0.5",
                "--heartbeat-period",
                "1",
                "--no-retain",
                "--form",
                "no_level",
            ]),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let env = lab_env(&broker, &db, &api, None);
    let args = [
        "check-lab",
        "--window",
        "8s",
        "--heartbeat-period",
        "3s",
        "--heartbeat-tolerance",
        "1s",
        "--timeout",
        "4s",
        "--lang",
        "en",
        "--json",
    ];
    let (code, stdout, stderr, shown) = arng(&args, &env).await;
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
    let all = format!("{}\n{shown}\n{}", summary(&report), sensor.output());
    assert_eq!(code, Some(1), "{all}");
    let failed = [
        "payload.alert_level",
        "payload.critical",
        "heartbeat.retained",
        "heartbeat.period",
        "influx.retention",
        "rest.latest",
        "rest.thresholds",
        "rest.alert_visible",
    ];
    for i in report["items"].as_array().unwrap() {
        let id = i["id"].as_str().unwrap();
        let want = if failed.contains(&id) { "fail" } else { "pass" };
        assert_eq!(i["status"], want, "{id}\n{all}");
    }
    assert!(
        stderr.contains(&format!(
            "check-lab: 8 item(s) failed: {}",
            failed.join(", ")
        )),
        "{stderr}"
    );

    // Each failure says why, with what was seen.
    let text = |id: &str, key: &str| item(&report, id)[key].to_string();
    assert!(
        text("payload.alert_level", "summary").contains("alert_level missing from"),
        "{all}"
    );
    assert!(
        text("payload.alert_level", "evidence").contains(r#"\"temp\""#),
        "{all}"
    );
    assert!(
        text("payload.critical", "summary").contains("no reading carries alert_level"),
        "{all}"
    );
    assert!(
        text("heartbeat.retained", "evidence")
            .contains("nord: no retained heartbeat for a new subscriber"),
        "{all}"
    );
    let period = text("heartbeat.period", "evidence");
    assert!(
        period.contains("nord: intervals 1.0 s") && period.contains("(expected 3 s ± 1 s)"),
        "{all}"
    );
    assert!(
        text("influx.retention", "summary").contains("no retention (data kept forever)"),
        "{all}"
    );
    assert!(
        text("rest.latest", "evidence").contains(r#"\"temperature\":\"n/a\""#),
        "{all}"
    );
    assert!(
        text("rest.thresholds", "summary").contains("JSON without any threshold value"),
        "{all}"
    );
    assert!(
        text("rest.alert_post", "summary").contains("HTTP 200"),
        "{all}"
    );
    let visible = text("rest.alert_visible", "evidence");
    assert!(
        visible.contains("GET /alerts → HTTP 405: (empty body)")
            && visible.contains("InfluxDB: no value holds the marker"),
        "{all}"
    );
    if let Ok(out) = std::env::var("ARNG_CHECK_LAB_REPORT_OUT") {
        // docs/check-lab.md shows the real output of this run too.
        let (_, table, _, _) = arng(&args[..args.len() - 1], &env).await;
        std::fs::write(format!("{out}.flawed.txt"), table).unwrap();
    }
    // What passes still says what it saw: the Python sensor's payloads and QoS.
    assert!(text("broker.zones", "evidence").contains("nord: "), "{all}");
    assert!(text("heartbeat.qos", "summary").contains("QoS 0"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_options_are_refused_and_a_missing_chain_fails_item_by_item() {
    // The help says where each option comes from, ends with examples, hides secrets.
    let secrets = [("INFLUX_TOKEN".to_owned(), "super-secret".to_owned())];
    let (code, help, _, shown) = arng(&["check-lab", "--help"], &secrets).await;
    assert_eq!(code, Some(0), "{shown}");
    for needle in [
        "ARNG_LAB_WINDOW",
        "[default: 70s]",
        "--heartbeat-tolerance",
        "Lab checklist:",
        "Output:",
        "MQTT broker:",
        "Team's REST API:",
        "Base URL of the team's REST API, the one checked",
        "Examples:\n  # A team's chain",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}{shown}");
    }
    assert!(!help.contains("super-secret"), "{shown}");
    for args in [
        &["check-lab", "--window", "0s"][..],
        &["check-lab", "--zones", "Nord"],
        &["check-lab", "--lang", "de"],
        &["check-lab", "--alert-body", "{}"],
        &["check-lab", "--report", "/nonexistent-dir/rapport.md"],
    ] {
        let (code, stdout, stderr, shown) = arng(args, &[]).await;
        assert_eq!(code, Some(2), "{shown}");
        assert!(stdout.is_empty() && stderr.lines().count() == 1, "{shown}");
    }
    // Nothing listens on these ports: every item fails or is not checked, at once.
    let closed = |p: u16| format!("127.0.0.1:{p}");
    let env: Vec<(String, String)> = vec![
        (
            "ARNG_MQTT_URL".into(),
            format!("mqtt://{}", closed(common::free_port())),
        ),
        (
            "ARNG_API_URL".into(),
            format!("http://{}", closed(common::free_port())),
        ),
        (
            "INFLUX_URL".into(),
            format!("http://{}", closed(common::free_port())),
        ),
    ];
    let args = [
        "check-lab",
        "--window",
        "1s",
        "--timeout",
        "1s",
        "--lang",
        "en",
    ];
    let (code, stdout, stderr, shown) = arng(&args, &env).await;
    assert_eq!(code, Some(1), "{shown}");
    assert!(!stderr.contains("panicked"), "{shown}");
    assert!(stdout.contains("cannot reach broker"), "{shown}");
    assert!(stdout.contains("cannot reach InfluxDB"), "{shown}");
    assert!(stdout.contains("0 pass"), "{shown}");
}
