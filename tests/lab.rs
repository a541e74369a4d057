//! The lab as its students live it (issue 14), against real Mosquitto, influxd,
//! `arng ingest` and `arng serve`, driven with the real `mosquitto_pub` and
//! `mosquitto_sub` binaries:
//!
//! - the lab's literal test message, published exactly as the lab writes it (plus the
//!   account our broker requires), shows at `GET /zones/nord/latest`, flagged as
//!   stamped by ingest, and its normalisations are counted and logged;
//! - every refused message reaches a `mosquitto_sub -t 'entrepot/deadletter/#' -v`
//!   with its reason, field and error; the copies are bounded (truncated payload,
//!   rate limit) while the `deadletters` measurement keeps every one;
//! - `--strict-payload` restores the version-1 contract;
//! - the new flags and their environment variables are validated.

mod common;

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::chain::{
    count_points, latest_sensor, now_ms, publish_all, reading_msg, IngestProc, ServeProc,
};
use common::influxd::Influxd;
use common::mosquitto::{account, Mosquitto};
use common::{describe, eventually, run_arng};
use rumqttc::QoS;
use serde_json::Value;

/// The lab's literal command (Activity 1, "Procédure guidée", terminal 3, without
/// its `docker compose exec broker` prefix and its typographic quotes).
const LAB_PUB: &str =
    r#"mosquitto_pub -t entrepot/nord/temp/v1 -m '{"temp":23.1,"hum":44.0}' -q 1"#;

/// What our broker requires on top of a lab command: where it is and an account.
fn broker_flags(broker: &Mosquitto, user: &str) -> String {
    let (u, p) = account(user);
    format!("-h 127.0.0.1 -p {} -u {u} -P {p}", broker.port)
}

/// Runs a shell command line (a lab command) and fails the test with its output if
/// it fails.
fn sh(line: &str) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(line)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{line}\nexit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_labs_literal_test_message_shows_at_zones_nord_latest() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);

    let sent = Instant::now();
    sh(&format!(
        "{LAB_PUB} {}",
        broker_flags(&broker, "sensor-nord")
    ));
    let latest = format!("{}/zones/nord/latest", serve.url());
    let sensor = eventually(
        "the lab's reading at GET /zones/nord/latest, InfluxDB side",
        Duration::from_secs(20),
        || async {
            let s = latest_sensor(&latest, "temp").await?;
            s["influx"].is_object().then_some(s)
        },
    )
    .await;
    // The 2 s of the issue is a target measured here, not asserted: machines are
    // shared and a timed assertion would flake (benchmarks check speed).
    println!(
        "lab message visible at /zones/nord/latest (InfluxDB side) after {} ms",
        sent.elapsed().as_millis()
    );
    let shown = format!("{sensor:#}");
    let influx = &sensor["influx"];
    assert_eq!(influx["temp"], 23.1, "{shown}");
    assert_eq!(influx["hum"], 44.0, "{shown}");
    assert_eq!(influx["alert_level"], "normal", "{shown}");
    assert_eq!(influx["stamped_by"], "ingest", "{shown}");
    let mqtt = &sensor["mqtt"];
    assert_eq!(mqtt["temp"], 23.1, "{shown}");
    assert_eq!(mqtt["stamped_by"], "api", "{shown}");
    // Dated at receipt: within the last minute by ingest's clock.
    let stamped = chrono::DateTime::parse_from_rfc3339(influx["timestamp"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!((now_ms() - stamped).abs() < 60_000, "{shown}");

    // One point, flagged in InfluxDB too.
    assert_eq!(
        count_points(&db, "readings", "temp", r#"r.sensor == "temp""#).await,
        1
    );
    assert_eq!(
        count_points(&db, "readings", "stamped_by", r#"r.sensor == "temp""#).await,
        1
    );
    // Each normalisation counted, and logged for the teacher.
    for (field, how) in [
        ("version", "absent"),
        ("timestamp", "absent"),
        ("alert_level", "absent"),
    ] {
        let series = format!(r#"arng_ingest_normalized_total{{field="{field}",how="{how}"}}"#);
        assert_eq!(ingest.metric(&series), 1.0, "{series}");
    }
    let log = ingest.log();
    assert!(
        log.contains("normalised") && log.contains("entrepot/nord/temp/v1"),
        "{log}"
    );
    assert_eq!(
        ingest.metric(r#"arng_ingest_rejected_total{reason="missing_field"}"#),
        0.0
    );

    // The next reading carries its own timestamp: the InfluxDB side shows it, not
    // the older stamped point (per-field last() then pivot gives both rows).
    publish_all(
        &broker,
        "sensor-nord",
        &[reading_msg("nord", "temp", 1, now_ms(), 31.5)],
        QoS::AtLeastOnce,
    )
    .await;
    for source in ["", "?source=influx"] {
        let url = format!("{latest}{source}");
        let s = eventually(
            "the timestamped reading on the InfluxDB side",
            Duration::from_secs(20),
            || async {
                let s = latest_sensor(&url, "temp").await?;
                (s["influx"]["temp"] == 31.5).then_some(s)
            },
        )
        .await;
        assert!(s["influx"].get("stamped_by").is_none(), "{url}: {s:#}");
        assert_eq!(s["influx"]["seq"], 1, "{url}: {s:#}");
        assert_eq!(s["in_sync"], true, "{url}: {s:#}");
    }
}

/// A `mosquitto_sub` child printing `topic payload` lines (`-v`) into a file.
struct Subscriber {
    child: Child,
    out: tempfile::NamedTempFile,
}

impl Subscriber {
    /// Subscribes as `user` to `filter` and waits for the broker's SUBACK.
    fn start(broker: &Mosquitto, user: &str, filter: &str) -> Subscriber {
        let out = tempfile::NamedTempFile::new().unwrap();
        let (u, p) = account(user);
        // stdbuf: mosquitto_sub's stdout is block-buffered into a file otherwise.
        let child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-u", &u, "-P", &p, "-t", filter, "-v", "-d", "-q", "1"])
            .stdout(out.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run mosquitto_sub (scripts/test.sh installs mosquitto-clients)");
        let me = Subscriber { child, out };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !me.text().contains("SUBACK") {
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub got no SUBACK: {}",
                me.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    fn text(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.out.path()).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// (topic, JSON) of every message received so far (the `-d` lines left out).
    fn messages(&self) -> Vec<(String, Value)> {
        self.text()
            .lines()
            .filter_map(|l| {
                let (topic, payload) = l.split_once(' ')?;
                if !topic.starts_with("entrepot/") {
                    return None;
                }
                Some((topic.to_owned(), serde_json::from_str(payload).ok()?))
            })
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- mosquitto_sub output -----\n{}", self.text());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_messages_reach_mosquitto_sub_on_the_dead_letter_topic() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let ingest = IngestProc::start(&broker, &db, &[]);
    // A student holding a sensor account watches the dead letters.
    let sub = Subscriber::start(&broker, "sensor-nord", "entrepot/deadletter/#");

    let flags = broker_flags(&broker, "sensor-nord");
    sh(&format!(
        r#"mosquitto_pub -t entrepot/nord/temp/v1 -m '{{"hum":44.0}}' -q 1 {flags}"#
    ));
    sh(&format!(
        r#"mosquitto_pub -t entrepot/nord/temp/v1 -m '{{"temp":21,"temp":99,"hum":44.0}}' -q 1 {flags}"#
    ));
    sh(&format!(
        r#"mosquitto_pub -t entrepot/nord/temp/v1 -m '{{"temp":21,"hum":44.0,"seq":18446744073709551615}}' -q 1 {flags}"#
    ));
    sh(&format!(
        r#"mosquitto_pub -t entrepot/nord/temp/v1 -m '{{"temp":1e308,"hum":44.0}}' -q 1 {flags}"#
    ));
    sh(&format!(
        r#"mosquitto_pub -t entrepot/heartbeat/nord -m '{{"zone":"nord","timestamp":4102444799}}' -q 1 {flags}"#
    ));
    // An oversize payload: refused, and its copy cut to 512 bytes.
    let big = format!(r#"{{"temp":21,"hum":44,"pad":"{}"}}"#, "é".repeat(3000));
    // An alert whose message is too long, from the account that may write the
    // services' alerts with `source: api` (docs/decisions.md, 12).
    let mut alert: Value = serde_json::json!({
        "version": 1, "id": "api-nord---manual-1", "zone": "nord", "metric": "manual",
        "severity": "warning", "state": "raised", "source": "api",
        "message": "x".repeat(612), "timestamp": chrono::Utc::now().to_rfc3339(),
    });
    alert["sensor"] = Value::Null;
    publish_all(
        &broker,
        "simulator",
        &[("entrepot/nord/s1/v1".into(), big.clone())],
        QoS::AtLeastOnce,
    )
    .await;
    publish_all(
        &broker,
        "api",
        &[("entrepot/alerts/nord".into(), alert.to_string())],
        QoS::AtLeastOnce,
    )
    .await;

    let expect: &[(&str, Option<&str>, &str)] = &[
        ("missing_field", Some("temp"), "field \"temp\" is missing"),
        ("duplicate_key", None, "key \"temp\" appears twice"),
        (
            "out_of_range",
            Some("seq"),
            "18446744073709551615, larger than 9223372036854775807",
        ),
        (
            "out_of_range",
            Some("temp"),
            "field \"temp\" is 1e308, outside the accepted range -60..=100",
        ),
        (
            "future_timestamp",
            Some("timestamp"),
            "ahead of the receiver's clock",
        ),
        ("oversize", None, "more than the 4096-byte limit"),
        (
            "invalid_alert",
            None,
            "message: 612 characters, longer than the 500 allowed",
        ),
    ];
    let got = eventually(
        "every dead letter on mosquitto_sub",
        Duration::from_secs(20),
        || async {
            let m = sub.messages();
            (m.len() >= expect.len()).then_some(m)
        },
    )
    .await;
    let shown = format!("{got:#?}");
    assert_eq!(got.len(), expect.len(), "{shown}");
    for (reason, field, needle) in expect {
        let (topic, v) = got
            .iter()
            .find(|(_, v)| {
                v["reason"] == *reason && v["error"].as_str().unwrap_or("").contains(needle)
            })
            .unwrap_or_else(|| panic!("no {reason} dead letter saying {needle:?}: {shown}"));
        assert_eq!(topic, &format!("entrepot/deadletter/{reason}"));
        assert_eq!(v["field"].as_str(), *field, "{v}");
        assert!(v["topic"].as_str().unwrap().starts_with("entrepot/"), "{v}");
        assert_eq!(v["instance"], "arng-ingest", "{v}");
    }
    let (_, oversize) = got.iter().find(|(_, v)| v["reason"] == "oversize").unwrap();
    assert_eq!(oversize["payload_truncated"], true);
    assert_eq!(oversize["payload_bytes"], big.len());
    let copy = oversize["payload"].as_str().unwrap();
    assert!(
        copy.len() <= 512 && copy.starts_with(r#"{"temp":21"#),
        "{copy}"
    );
    let (_, missing) = got
        .iter()
        .find(|(_, v)| v["reason"] == "missing_field")
        .unwrap();
    assert_eq!(missing["payload"], r#"{"hum":44.0}"#);
    assert_eq!(missing["topic"], "entrepot/nord/temp/v1");
    // The 1e308 value is logged short, never with its 309 digits.
    let log = ingest.log();
    assert!(!log.contains(&"0".repeat(100)), "a long number in the log");

    // Bounded: a flood of 400 bad messages publishes at most the burst plus the rate,
    // and the measurement still holds every refusal.
    let flood: Vec<(String, String)> = (0..400)
        .map(|i| ("entrepot/nord/s1/v1".to_owned(), format!("not json {i}")))
        .collect();
    let began = Instant::now();
    publish_all(&broker, "simulator", &flood, QoS::AtLeastOnce).await;
    let total = expect.len() as i64 + 400;
    eventually(
        "every dead letter in InfluxDB",
        Duration::from_secs(30),
        || async { (count_points(&db, "deadletters", "payload", "").await == total).then_some(()) },
    )
    .await;
    let elapsed = began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let published = ingest.metric("arng_ingest_deadletters_published_total");
    let over_rate = ingest.metric(r#"arng_ingest_deadletters_unpublished_total{why="rate"}"#);
    let seen = sub.messages().len() as f64;
    let bound = 100.0 + 20.0 * (elapsed + 1.0);
    assert!(
        published <= bound && over_rate > 0.0 && published + over_rate >= total as f64,
        "published {published}, over rate {over_rate}, bound {bound:.0} after {elapsed:.1} s"
    );
    assert_eq!(
        seen, published,
        "mosquitto_sub saw {seen}, ingest published {published}"
    );
    assert_eq!(
        ingest.metric(r#"arng_ingest_rejected_total{reason="malformed_json"}"#),
        400.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_payload_restores_the_version_1_contract() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let ingest = IngestProc::start(&broker, &db, &["--strict-payload"]);
    let sub = Subscriber::start(&broker, "operator", "entrepot/deadletter/#");
    sh(&format!(
        "{LAB_PUB} {}",
        broker_flags(&broker, "sensor-nord")
    ));
    // arng's own form is still accepted.
    publish_all(
        &broker,
        "simulator",
        &[reading_msg("nord", "s1", 0, now_ms() - 1000, 21.0)],
        QoS::AtLeastOnce,
    )
    .await;
    let got = eventually(
        "the lab message dead-lettered",
        Duration::from_secs(20),
        || async {
            let m = sub.messages();
            (!m.is_empty()).then_some(m)
        },
    )
    .await;
    assert_eq!(got[0].0, "entrepot/deadletter/missing_field");
    assert_eq!(got[0].1["field"], "version", "{:#}", got[0].1);
    eventually(
        "arng's own reading stored",
        Duration::from_secs(20),
        || async { (count_points(&db, "readings", "temp", "").await == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        count_points(&db, "readings", "temp", r#"r.sensor == "temp""#).await,
        0
    );
    assert!(!ingest.metrics().contains("arng_ingest_normalized_total{"));
}

#[test]
fn payload_flags_and_their_variables_are_validated() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["ingest", "--future-margin", "soon"],
            &[],
            "--future-margin",
        ),
        (
            &["ingest"],
            &[("ARNG_FUTURE_MARGIN", "soon")],
            "--future-margin",
        ),
        (
            &["ingest", "--future-margin", "400d"],
            &[],
            "at most a year",
        ),
        (
            &["ingest"],
            &[("ARNG_STRICT_PAYLOAD", "perhaps")],
            "--strict-payload",
        ),
    ];
    for (args, env, needle) in cases {
        let out = run_arng(args, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{env:?}{}",
            describe(args, &out)
        );
        assert!(stderr.contains(needle), "{env:?}{}", describe(args, &out));
    }
    let help = run_arng(&["ingest", "--help"], &[]);
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--strict-payload",
        "ARNG_STRICT_PAYLOAD",
        "--future-margin",
        "ARNG_FUTURE_MARGIN",
    ] {
        assert!(
            text.contains(needle),
            "{needle} not in ingest --help:\n{text}"
        );
    }
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/data-model.md")
        .exists());
}
