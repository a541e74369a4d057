//! `arng ingest` against a real Mosquitto and a real influxd: exactly-once results
//! from at-least-once delivery, through database outages, crashes, broker restarts,
//! bad input and shared subscriptions; rules raising and clearing alerts.

mod common;

use std::time::Duration;

use common::chain::{count_points, flux_sum, now_ms, publish_all, reading_msg, IngestProc};
use common::eventually;
use common::influxd::Influxd;
use common::mosquitto::Mosquitto;
use rumqttc::QoS;

const ZONES: [&str; 3] = ["nord", "sud", "est"];

/// `per_sensor` readings for each of `sensors` sensors in each zone, sequence numbers
/// `first..first+per_sensor`, timestamps one second apart (from one hour ago).
fn stream(sensors: usize, first: u64, per_sensor: u64) -> Vec<(String, String)> {
    let base = now_ms() - 3_600_000;
    let mut out = Vec::new();
    for seq in first..first + per_sensor {
        for zone in ZONES {
            for s in 0..sensors {
                out.push(reading_msg(
                    zone,
                    &format!("s{s}"),
                    seq,
                    base + seq as i64 * 1000,
                    20.0,
                ));
            }
        }
    }
    out
}

async fn wait_for_readings(db: &Influxd, n: i64, timeout: Duration) {
    let mut last = 0;
    let result = tokio::time::timeout(timeout, async {
        loop {
            last = count_points(db, "readings", "temp", "").await;
            if last >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "only {last} of {n} readings in InfluxDB after {timeout:?}"
    );
}

/// Every sensor has each sequence number `0..per_sensor` exactly once: the number of
/// points and the sum of `seq` both match (a gap lowers the count, a duplicate point
/// raises it).
async fn assert_complete(db: &Influxd, sensors: usize, per_sensor: i64) {
    let expected_sum = per_sensor * (per_sensor - 1) / 2;
    for zone in ZONES {
        for s in 0..sensors {
            let filter = format!(r#"r.zone == "{zone}" and r.sensor == "s{s}""#);
            assert_eq!(
                count_points(db, "readings", "seq", &filter).await,
                per_sensor,
                "{zone}/s{s} count"
            );
            let sum = flux_sum(
                db,
                &format!(
                    r#"from(bucket: "entrepot") |> range(start: -2h, stop: 1h)
                       |> filter(fn: (r) => r._measurement == "readings" and r._field == "seq" and {filter}) |> sum()"#
                ),
            )
            .await;
            assert_eq!(sum, expected_sum, "{zone}/s{s} sequence sum");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_n_readings_with_complete_sequences() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let ingest = IngestProc::start(&broker, &db, &[]);
    publish_all(&broker, "simulator", &stream(4, 0, 50), QoS::AtLeastOnce).await;
    wait_for_readings(&db, 600, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_points(&db, "readings", "temp", "").await, 600);
    assert_complete(&db, 4, 50).await;
    assert_eq!(ingest.metric("arng_ingest_readings_written_total"), 600.0);
    assert!(ingest.metric("arng_ingest_lag_seconds_count") >= 600.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn influxdb_down_for_30s_loses_nothing_and_duplicates_nothing() {
    let broker = Mosquitto::start();
    let mut db = Influxd::start();
    let ingest = IngestProc::start(
        &broker,
        &db,
        &["--batch-size", "100", "--write-timeout", "2s"],
    );
    publish_all(&broker, "simulator", &stream(2, 0, 40), QoS::AtLeastOnce).await;
    wait_for_readings(&db, 240, Duration::from_secs(30)).await;

    db.stop();
    let outage = std::time::Instant::now();
    // Readings keep coming during the outage: they are spooled and acknowledged.
    for chunk in 0..3 {
        publish_all(
            &broker,
            "simulator",
            &stream(2, 40 + chunk * 20, 20),
            QoS::AtLeastOnce,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    eventually(
        "batches spooled to disk",
        Duration::from_secs(20),
        || async { (ingest.metric("arng_ingest_spooled_batches_total") >= 1.0).then_some(()) },
    )
    .await;
    assert_eq!(ingest.metric("arng_ingest_influx_healthy"), 0.0);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    db.restart();

    publish_all(&broker, "simulator", &stream(2, 100, 20), QoS::AtLeastOnce).await;
    wait_for_readings(&db, 720, Duration::from_secs(60)).await;
    eventually("the spool to drain", Duration::from_secs(30), || async {
        (ingest.metric("arng_ingest_spool_bytes") == 0.0).then_some(())
    })
    .await;
    assert_eq!(count_points(&db, "readings", "temp", "").await, 720);
    assert_complete(&db, 2, 120).await;
    // Readings written from the spool are counted too (they once were not).
    assert!(
        ingest.metric("arng_ingest_readings_written_total") >= 720.0,
        "{}",
        ingest.metrics()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_then_restart_loses_and_duplicates_nothing() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    // Long batch timeout: at the kill, received readings are still unacknowledged.
    let mut ingest = IngestProc::start(
        &broker,
        &db,
        &["--batch-size", "200", "--batch-timeout", "10s"],
    );
    publish_all(&broker, "simulator", &stream(3, 0, 50), QoS::AtLeastOnce).await;
    eventually("a first batch written", Duration::from_secs(20), || async {
        (ingest.metric("arng_ingest_readings_written_total") >= 200.0).then_some(())
    })
    .await;
    ingest.kill9();
    // Published while ingest is dead: the broker keeps them in its persistent session.
    publish_all(&broker, "simulator", &stream(3, 50, 50), QoS::AtLeastOnce).await;
    assert!(count_points(&db, "readings", "temp", "").await < 900);
    ingest.restart();
    wait_for_readings(&db, 900, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_points(&db, "readings", "temp", "").await, 900);
    assert_complete(&db, 3, 100).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_then_ingest_reconnects_and_resumes() {
    let mut broker = Mosquitto::start();
    let db = Influxd::start();
    let mut ingest = IngestProc::start(&broker, &db, &[]);
    publish_all(&broker, "simulator", &stream(1, 0, 20), QoS::AtLeastOnce).await;
    wait_for_readings(&db, 60, Duration::from_secs(20)).await;
    broker.restart();
    ingest.wait_for_log("subscribed: receiving readings", 2, Duration::from_secs(30));
    assert!(
        ingest
            .log()
            .contains("broker connection lost; reconnecting"),
        "{}",
        ingest.log()
    );
    publish_all(&broker, "simulator", &stream(1, 20, 20), QoS::AtLeastOnce).await;
    wait_for_readings(&db, 120, Duration::from_secs(20)).await;
    assert_complete(&db, 1, 40).await;
    assert_eq!(ingest.terminate(), Some(0), "{}", ingest.log());
}

/// SIGTERM while the broker is gone: ingest writes what it holds, cannot acknowledge
/// it, and still exits promptly (an earlier version waited forever for room to queue
/// acknowledgements). The broker then redelivers those messages to the next run,
/// which overwrites the points instead of duplicating them.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_the_broker_gone_writes_what_it_holds_and_exits() {
    let mut broker = Mosquitto::start();
    let db = Influxd::start();
    // The batch never fills on its own: it is written only by the shutdown flush.
    let mut ingest = IngestProc::start(
        &broker,
        &db,
        &[
            "--batch-timeout",
            "10m",
            "--ack-window",
            "10000",
            "--batch-size",
            "100000",
        ],
    );
    publish_all(&broker, "simulator", &stream(2, 0, 50), QoS::AtLeastOnce).await;
    eventually(
        "ingest holds the 300 readings",
        Duration::from_secs(20),
        || async { (ingest.metric("arng_ingest_messages_received_total") >= 300.0).then_some(()) },
    )
    .await;
    assert_eq!(count_points(&db, "readings", "temp", "").await, 0);

    broker.stop();
    assert_eq!(ingest.terminate(), Some(0), "{}", ingest.log());
    assert_eq!(count_points(&db, "readings", "temp", "").await, 300);

    // Unacknowledged, so redelivered to the next run: still 300 points, complete.
    broker.restart();
    let mut again = IngestProc::start(&broker, &db, &[]);
    eventually(
        "the redelivered readings are received",
        Duration::from_secs(30),
        || async { (again.metric("arng_ingest_readings_written_total") >= 300.0).then_some(()) },
    )
    .await;
    assert_complete(&db, 2, 50).await;
    assert_eq!(again.terminate(), Some(0), "{}", again.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_threshold_scenario_raises_and_clears_each_alert_once() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let dir = tempfile::tempdir().unwrap();
    let mut thresholds = arng::domain::Thresholds {
        debounce: 2,
        silence_after_s: 3,
        ..Default::default()
    };
    thresholds.validate().unwrap();
    let file = dir.path().join("thresholds.json");
    std::fs::write(&file, thresholds.to_json()).unwrap();
    thresholds.debounce = 2;
    let ingest = IngestProc::start(&broker, &db, &["--thresholds", file.to_str().unwrap()]);

    // Watch the alert topic like an operator would.
    let watcher = tokio::spawn(common::chain::collect_topic(
        common::chain::mqtt_args(&broker, "operator"),
        "entrepot/alerts/+".to_owned(),
        Duration::from_secs(8),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Warning above 25, critical above 30, hysteresis 0.5, debounce 2. The 24.8/25.3
    // and the first 29/24.8 readings test hysteresis: they must not clear anything.
    let temps = [
        20.0, 26.0, 26.0, 24.8, 25.3, 31.0, 31.0, 29.0, 29.0, 24.8, 24.0, 24.0, 20.0,
    ];
    let base = now_ms() - 60_000;
    let mut msgs: Vec<(String, String)> = temps
        .iter()
        .enumerate()
        .map(|(i, t)| reading_msg("nord", "s1", i as u64, base + i as i64 * 1000, *t))
        .collect();
    // A second sensor that speaks once and then falls silent.
    msgs.push(reading_msg("sud", "quiet", 0, base, 20.0));
    publish_all(&broker, "simulator", &msgs, QoS::AtLeastOnce).await;

    let ingest_alerts = |extra: &'static str| {
        let db = &db;
        async move {
            count_points(
                db,
                "alerts",
                "id",
                &format!(r#"r.source == "ingest" and r.metric == "temp"{extra}"#),
            )
            .await
        }
    };
    eventually("4 temperature alerts", Duration::from_secs(20), || async {
        (ingest_alerts("").await >= 4).then_some(())
    })
    .await;
    for (severity, state) in [
        ("warning", "raised"),
        ("critical", "raised"),
        ("critical", "cleared"),
        ("warning", "cleared"),
    ] {
        let extra: &'static str = Box::leak(
            format!(r#" and r.severity == "{severity}" and r.state == "{state}""#).into_boxed_str(),
        );
        assert_eq!(ingest_alerts(extra).await, 1, "{severity} {state}");
    }
    assert_eq!(ingest_alerts("").await, 4);

    // The silent sensor raises a silence alert (no reading for 3 s).
    eventually(
        "a silence alert for sud/quiet",
        Duration::from_secs(20),
        || async {
            (count_points(
                &db,
                "alerts",
                "id",
                r#"r.metric == "silence" and r.sensor == "quiet" and r.state == "raised""#,
            )
            .await
                == 1)
                .then_some(())
        },
    )
    .await;

    let seen = watcher.await.unwrap();
    let temp_alerts: Vec<serde_json::Value> = seen
        .iter()
        .map(|(_, p)| serde_json::from_str::<serde_json::Value>(p).unwrap())
        .filter(|a| a["metric"] == "temp")
        .collect();
    let sequence: Vec<(String, String)> = temp_alerts
        .iter()
        .map(|a| {
            (
                a["severity"].as_str().unwrap().to_owned(),
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        sequence,
        [
            ("warning", "raised"),
            ("critical", "raised"),
            ("critical", "cleared"),
            ("warning", "cleared")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .to_vec(),
        "alerts on MQTT: {seen:?}"
    );
    assert_eq!(
        ingest.metric(r#"arng_ingest_alerts_total{severity="critical",state="raised"}"#),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_payloads_and_topics_are_counted_and_dead_lettered() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let ingest = IngestProc::start(&broker, &db, &[]);
    let ts = chrono::Utc::now().to_rfc3339();
    let ok_rest = format!(r#""timestamp":"{ts}","temp":20,"hum":40,"alert_level":"normal""#);
    let r = "entrepot/nord/s1/v1";
    let corpus: Vec<(&str, String, &str)> = vec![
        (r, "{".into(), "malformed_json"),
        (r, "garbage".into(), "malformed_json"),
        (
            r,
            format!(
                r#"{{"version":1,"timestamp":"{ts}","temp":NaN,"hum":40,"alert_level":"normal"}}"#
            ),
            "malformed_json",
        ),
        (r, "[1,2]".into(), "not_an_object"),
        (
            r,
            format!(r#"{{"version":1,"timestamp":"{ts}","hum":40,"alert_level":"normal"}}"#),
            "missing_field",
        ),
        (
            r,
            format!(r#"{{"version":1,"timestamp":"{ts}","temp":20,"temp":99,"hum":40}}"#),
            "duplicate_key",
        ),
        (
            r,
            format!(r#"{{"seq":18446744073709551615,{ok_rest}}}"#),
            "out_of_range",
        ),
        (
            r,
            r#"{"timestamp":"2099-12-31T23:59:59Z","temp":20,"hum":40}"#.to_owned(),
            "future_timestamp",
        ),
        (
            r,
            format!(
                r#"{{"version":1,"timestamp":"{ts}","temp":"20","hum":40,"alert_level":"normal"}}"#
            ),
            "wrong_type",
        ),
        (
            r,
            format!(
                r#"{{"version":1,"timestamp":"{ts}","temp":1e38,"hum":40,"alert_level":"normal"}}"#
            ),
            "out_of_range",
        ),
        (
            r,
            format!(r#"{{"version":2,{ok_rest}}}"#),
            "unsupported_version",
        ),
        (
            r,
            format!(r#"{{"version":1,"pad":"{}",{ok_rest}}}"#, "x".repeat(5000)),
            "oversize",
        ),
        (
            r,
            r#"{"version":1,"timestamp":"yesterday","temp":20,"hum":40,"alert_level":"normal"}"#
                .to_owned(),
            "bad_timestamp",
        ),
        (
            r,
            format!(
                r#"{{"version":1,"timestamp":"{ts}","temp":20,"hum":40,"alert_level":"panic"}}"#
            ),
            "bad_alert_level",
        ),
        (
            r,
            format!(r#"{{"version":1,"zone":"nord\") |> drop(","sensor":"s1",{ok_rest}}}"#),
            "topic_mismatch",
        ),
        (
            "entrepot/Nord/s1/v1",
            format!(r#"{{"version":1,{ok_rest}}}"#),
            "invalid_name",
        ),
        (
            "entrepot/nörd/s1/v1",
            format!(r#"{{"version":1,{ok_rest}}}"#),
            "invalid_name",
        ),
        (
            "entrepot/heartbeat/nord",
            r#"{"timestamp":4102444799}"#.into(),
            "future_timestamp",
        ),
        ("entrepot/alerts/nord", "{}".into(), "invalid_alert"),
        (
            "entrepot/config/thresholds",
            r#"{"default":{}}"#.into(),
            "invalid_thresholds",
        ),
    ];
    let msgs: Vec<(String, String)> = corpus
        .iter()
        .map(|(t, p, _)| (t.to_string(), p.clone()))
        .collect();
    publish_all(&broker, "operator", &msgs, QoS::AtLeastOnce).await;
    // Valid traffic afterwards is unaffected.
    publish_all(&broker, "simulator", &stream(1, 0, 5), QoS::AtLeastOnce).await;
    wait_for_readings(&db, 15, Duration::from_secs(20)).await;

    let mut expected: std::collections::BTreeMap<&str, i64> = Default::default();
    for (_, _, reason) in &corpus {
        *expected.entry(reason).or_default() += 1;
    }
    eventually(
        "every dead letter in InfluxDB",
        Duration::from_secs(20),
        || async {
            (count_points(&db, "deadletters", "payload", "").await == corpus.len() as i64)
                .then_some(())
        },
    )
    .await;
    for (reason, n) in &expected {
        let series = format!(r#"arng_ingest_rejected_total{{reason="{reason}"}}"#);
        assert_eq!(ingest.metric(&series), *n as f64, "{series}");
        assert_eq!(
            count_points(
                &db,
                "deadletters",
                "payload",
                &format!(r#"r.reason == "{reason}""#)
            )
            .await,
            *n,
            "{reason}"
        );
    }
    // The raw payload is kept for inspection.
    let rows = arng::store::InfluxClient::new(&db.args())
        .query(r#"from(bucket: "entrepot") |> range(start: -1h) |> filter(fn: (r) => r._measurement == "deadletters" and r._field == "payload" and r._value == "garbage")"#)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(count_points(&db, "readings", "temp", "").await, 15);
    assert!(ingest.log().contains("rejected message (dead-lettered)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_ingest_processes_in_a_shared_group_write_each_reading_once() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let a = IngestProc::start(
        &broker,
        &db,
        &["--share-group", "g1", "--client-id", "ingest-a"],
    );
    let b = IngestProc::start(
        &broker,
        &db,
        &["--share-group", "g1", "--client-id", "ingest-b"],
    );
    publish_all(&broker, "simulator", &stream(4, 0, 50), QoS::AtLeastOnce).await;
    wait_for_readings(&db, 600, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_points(&db, "readings", "temp", "").await, 600);
    assert_complete(&db, 4, 50).await;
    let (wa, wb) = (
        a.metric("arng_ingest_readings_written_total"),
        b.metric("arng_ingest_readings_written_total"),
    );
    assert_eq!(
        wa + wb,
        600.0,
        "each reading written by exactly one process"
    );
    assert!(
        wa > 0.0 && wb > 0.0,
        "the group splits the stream: a wrote {wa}, b wrote {wb}"
    );
}

/// Runs `arng <args>` against `broker` as `user`/`password` until it exits (at most
/// 20 s): exit code, seconds taken, stderr.
fn run_until_exit(
    broker: &Mosquitto,
    args: &[&str],
    user: &str,
    password: &str,
) -> (Option<i32>, f64, String) {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(common::arng_bin())
        .args(args)
        .env("ARNG_MQTT_URL", broker.url())
        .env("ARNG_MQTT_USERNAME", user)
        .env("ARNG_MQTT_PASSWORD", password)
        // Nothing listens there: neither command needs InfluxDB to refuse to start.
        .env("INFLUX_URL", "http://127.0.0.1:9")
        .env("ARNG_SPOOL_DIR", dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), started.elapsed().as_secs_f64(), err);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("arng {args:?} still running after 20 s with a refused login");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A broker that refuses the login (wrong password, unknown account) ends ingest and
/// serve with exit 1 and one line naming the options to fix, instead of a retry loop
/// (issue 13). A broker that is merely down is still retried (the broker-restart test
/// above).
#[test]
fn a_refused_login_ends_ingest_and_serve_with_one_line_naming_the_options() {
    let broker = Mosquitto::start();
    let (user, _) = common::mosquitto::account("ingest");
    for (who, password) in [(user.as_str(), "wrong-password"), ("nobody", "whatever")] {
        for cmd in [
            vec!["ingest", "--metrics-port", "0"],
            vec!["serve", "--port", "0"],
        ] {
            let (code, secs, stderr) = run_until_exit(&broker, &cmd, who, password);
            let context =
                format!("arng {cmd:?} as {who}: exit {code:?} after {secs:.1} s\n{stderr}");
            assert_eq!(code, Some(1), "{context}");
            assert!(secs < 10.0, "{context}");
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(errors.len(), 1, "{context}");
            assert!(
                errors[0].contains("refused the connection")
                    && errors[0].contains("--mqtt-username / --mqtt-password"),
                "{context}"
            );
            assert!(!stderr.contains("reconnecting"), "retried: {context}");
        }
    }
}
