//! `arng qos-bench` against real Mosquitto brokers started from the shipped configs:
//! delivery guarantees per QoS level, the JSON/CSV contract, coordinated-omission
//! correction, duplicates from a real QoS 1 redelivery, a QoS level refused by a
//! broker profile, and usage errors.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::mosquitto::{account, Mosquitto};
use common::{describe, run_arng};
use serde_json::Value;

/// Runs `arng qos-bench ARGS` as the operator account against `broker`.
fn bench(broker: &Mosquitto, args: &[&str]) -> (Vec<String>, Output) {
    let (user, pass) = account("operator");
    let url = broker.url();
    let mut full = vec!["qos-bench"];
    full.extend_from_slice(args);
    let out = run_arng(
        &full,
        &[
            ("ARNG_MQTT_URL", url.as_str()),
            ("ARNG_MQTT_USERNAME", user.as_str()),
            ("ARNG_MQTT_PASSWORD", pass.as_str()),
        ],
    );
    (full.iter().map(|s| s.to_string()).collect(), out)
}

fn shown(args: &[String], out: &Output) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    describe(&args, out)
}

/// The JSON list printed by a successful `--json` run.
fn levels(args: &[String], out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", shown(args, out));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", shown(args, out)));
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {}", shown(args, out)))
        .clone()
}

fn u(level: &Value, key: &str) -> u64 {
    level[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {level:#}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v:#}"))
}

/// Percentiles present, positive and ordered.
fn assert_sane_latency(what: &str, l: &Value) {
    let (p50, p90, p99, p999, max) = (
        f(l, "p50"),
        f(l, "p90"),
        f(l, "p99"),
        f(l, "p999"),
        f(l, "max"),
    );
    assert!(p50 > 0.0, "{what}: p50 {p50} in {l:#}");
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{what}: percentiles out of order in {l:#}"
    );
    assert!(max < 30_000.0, "{what}: a 30 s latency on loopback: {l:#}");
}

#[test]
fn every_message_arrives_exactly_once_at_qos_1_and_2() {
    let broker = Mosquitto::start();
    let (args, out) = bench(
        &broker,
        &[
            "--qos",
            "0,1,2",
            "--publishers",
            "2",
            "--subscribers",
            "1",
            "--messages",
            "300",
            "--size",
            "64",
            "--json",
        ],
    );
    let levels = levels(&args, &out);
    assert_eq!(levels.len(), 3, "{}", shown(&args, &out));
    for (level, qos) in levels.iter().zip([0, 1, 2]) {
        let ctx = || format!("QoS {qos}: {level:#}");
        assert_eq!(u(level, "qos"), qos);
        assert_eq!(level["ok"], true, "{}", ctx());
        assert_eq!(u(level, "sent"), 600, "{}", ctx());
        // Whatever happened, the accounting adds up.
        assert_eq!(
            u(level, "received") + u(level, "lost"),
            u(level, "expected"),
            "{}",
            ctx()
        );
        assert!(f(level, "throughput_msgs_per_s") > 0.0, "{}", ctx());
        assert!(f(level, "publish_throughput_msgs_per_s") > 0.0, "{}", ctx());
        assert_eq!(u(level, "malformed"), 0, "{}", ctx());
        assert_eq!(u(level, "unpaired_acks"), 0, "{}", ctx());
        assert_sane_latency(&ctx(), &level["latency_ms"]);
        if qos == 0 {
            assert!(level["ack_ms"].is_null(), "{}", ctx());
            continue;
        }
        // At least once / exactly once, with a clean session and no failure: no
        // loss, and one subscriber receives each message once.
        assert_eq!(u(level, "lost"), 0, "{}", ctx());
        assert_eq!(u(level, "received"), u(level, "sent"), "{}", ctx());
        assert_eq!(u(level, "duplicates"), 0, "{}", ctx());
        assert_eq!(
            level["ack_packet"],
            if qos == 1 { "PUBACK" } else { "PUBCOMP" }
        );
        let ack = &level["ack_ms"];
        assert_eq!(
            u(ack, "samples"),
            600,
            "every publish paired with its ack: {}",
            ctx()
        );
        assert_sane_latency(&ctx(), ack);
        // Per client: each publisher sent and completed its 300.
        let pubs = level["per_publisher"].as_array().unwrap();
        assert_eq!(pubs.len(), 2, "{}", ctx());
        for p in pubs {
            assert_eq!((u(p, "sent"), u(p, "completed")), (300, 300), "{}", ctx());
            assert!(f(p, "throughput_msgs_per_s") > 0.0, "{}", ctx());
        }
    }
}

#[test]
fn each_subscriber_gets_every_message_of_every_publisher() {
    let broker = Mosquitto::start_with("qos2.conf");
    let (args, out) = bench(
        &broker,
        &[
            "--qos",
            "2,1",
            "--publishers",
            "2",
            "--subscribers",
            "3",
            "--messages",
            "150",
            "--json",
        ],
    );
    let levels = levels(&args, &out);
    assert_eq!(
        levels.iter().map(|l| u(l, "qos")).collect::<Vec<_>>(),
        [2, 1],
        "levels run in the order given"
    );
    for level in &levels {
        assert_eq!(u(level, "sent"), 300, "{level:#}");
        assert_eq!(u(level, "expected"), 900, "{level:#}");
        assert_eq!(u(level, "received"), 900, "{level:#}");
        assert_eq!(
            (u(level, "lost"), u(level, "duplicates")),
            (0, 0),
            "{level:#}"
        );
        let subs = level["per_subscriber"].as_array().unwrap();
        assert_eq!(subs.len(), 3);
        for s in subs {
            assert_eq!((u(s, "received"), u(s, "lost")), (300, 0), "{level:#}");
        }
    }
}

#[test]
fn csv_has_a_header_and_one_row_per_qos_level() {
    let broker = Mosquitto::start();
    let (args, out) = bench(&broker, &["--qos", "1,0", "--messages", "100", "--csv"]);
    assert!(out.status.success(), "{}", shown(&args, &out));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    for column in [
        "qos",
        "sent",
        "received",
        "lost",
        "duplicates",
        "throughput_msgs_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "latency_max_ms",
        "reordered",
        "ack_p99_ms",
    ] {
        assert!(
            header.iter().any(|h| h == column),
            "no {column} column: {}",
            shown(&args, &out)
        );
    }
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "{}", shown(&args, &out));
    let col = |row: &csv::StringRecord, name: &str| -> String {
        let i = header.iter().position(|h| h == name).unwrap();
        row[i].to_owned()
    };
    assert_eq!(
        (col(&rows[0], "qos"), col(&rows[1], "qos")),
        ("1".into(), "0".into())
    );
    for row in &rows {
        assert_eq!(col(row, "sent"), "100");
        let p50: f64 = col(row, "latency_p50_ms").parse().unwrap();
        let p99: f64 = col(row, "latency_p99_ms").parse().unwrap();
        let max: f64 = col(row, "latency_max_ms").parse().unwrap();
        assert!(
            0.0 < p50 && p50 <= p99 && p99 <= max,
            "{}",
            shown(&args, &out)
        );
    }
    assert_eq!(col(&rows[0], "lost"), "0");
    assert_eq!(col(&rows[0], "received"), "100");
    // QoS 0 has no acknowledgement: empty cell, not 0.
    assert_eq!(col(&rows[1], "ack_p99_ms"), "");
}

#[test]
fn table_by_default_and_a_chart_on_request() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("latency.svg");
    let chart_arg = chart.to_string_lossy().into_owned();
    let (args, out) = bench(
        &broker,
        &["--qos", "0,2", "--messages", "50", "--chart", &chart_arg],
    );
    assert!(out.status.success(), "{}", shown(&args, &out));
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "QoS",
        "p99 ms",
        "p99.9 ms",
        "delivered msg/s",
        "publisher 0",
        "subscriber 0",
    ] {
        assert!(
            table.contains(needle),
            "no {needle:?} in the table: {}",
            shown(&args, &out)
        );
    }
    let svg = std::fs::read_to_string(&chart).expect("the chart file");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert_eq!(
        svg.matches("<polyline").count(),
        2,
        "one line per level: {svg}"
    );
}

#[test]
fn with_a_rate_latency_is_measured_from_the_schedule() {
    let broker = Mosquitto::start();
    let started = Instant::now();
    let (args, out) = bench(
        &broker,
        &[
            "--qos",
            "1",
            "--publishers",
            "2",
            "--messages",
            "100",
            "--rate",
            "400",
            "--json",
        ],
    );
    let levels = levels(&args, &out);
    let level = &levels[0];
    // 200 messages at 400/s take about half a second, not less.
    assert!(started.elapsed() >= Duration::from_millis(450), "{level:#}");
    assert_eq!(level["latency_from"], "scheduled_send_time");
    assert_eq!(u(level, "lost"), 0, "{level:#}");
    let corrected = &level["latency_ms"];
    let raw = &level["latency_uncorrected_ms"];
    assert_sane_latency("corrected", corrected);
    assert_sane_latency("uncorrected", raw);
    // Measured from a time never later than the actual send, every percentile is
    // at least the uncorrected one.
    for p in ["p50", "p90", "p99", "max"] {
        assert!(f(corrected, p) + 0.01 >= f(raw, p), "{p}: {level:#}");
    }
    // The delivered rate follows the schedule (within slack for a busy machine).
    let rate = f(level, "throughput_msgs_per_s");
    assert!((250.0..=450.0).contains(&rate), "{level:#}");
}

/// Duplicates come from a real broker redelivery, deterministically: the first
/// subscriber (persistent session, manual acknowledgements) leaves its first N
/// messages unacknowledged, drops its connection without DISCONNECT and reconnects.
/// Mosquitto then resends exactly those N (DUP flag set), which the subscriber has
/// already counted: N duplicates, and still nothing lost.
#[test]
fn a_reconnecting_qos1_subscriber_counts_redeliveries_as_duplicates() {
    let broker = Mosquitto::start_with("qos1.conf");
    let (args, out) = bench(
        &broker,
        &[
            "--qos",
            "1",
            "--publishers",
            "2",
            "--subscribers",
            "2",
            "--messages",
            "200",
            "--inject-redelivery",
            "25",
            "--json",
        ],
    );
    let levels = levels(&args, &out);
    let level = &levels[0];
    assert_eq!(u(level, "injected_redeliveries"), 25, "{level:#}");
    assert_eq!(u(level, "duplicates"), 25, "{level:#}");
    assert_eq!(u(level, "lost"), 0, "{level:#}");
    assert_eq!(u(level, "received"), 800, "{level:#}");
    let subs = level["per_subscriber"].as_array().unwrap();
    assert_eq!(
        u(&subs[0], "duplicates"),
        25,
        "the reconnecting one: {level:#}"
    );
    assert_eq!(u(&subs[1], "duplicates"), 0, "the other one: {level:#}");
    // The broker saw the first subscriber's connection drop and come back.
    let log = broker.log();
    let connects = log
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains("-q1-s0 "))
        .count();
    assert!(connects >= 2, "{log}");
}

#[test]
fn a_qos_level_refused_by_the_broker_profile_fails_clearly() {
    let broker = Mosquitto::start_with("qos0.conf");
    let started = Instant::now();
    let (args, out) = bench(&broker, &["--qos", "0,1", "--messages", "100", "--json"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}: {}",
        started.elapsed(),
        shown(&args, &out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", shown(&args, &out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON even when a level fails");
    let levels = v.as_array().unwrap();
    assert_eq!(levels[0]["ok"], true, "QoS 0 still measured: {v:#}");
    assert_eq!(u(&levels[0], "sent"), 100);
    assert_eq!(levels[1]["ok"], false, "{v:#}");
    let error = levels[1]["error"].as_str().unwrap();
    assert!(error.contains("max_qos"), "{error}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("QoS 1") && stderr.contains("max_qos"),
        "{}",
        shown(&args, &out)
    );

    // Same on the QoS 1 profile for QoS 2.
    let broker = Mosquitto::start_with("qos1.conf");
    let (args, out) = bench(&broker, &["--qos", "2", "--messages", "10"]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&args, &out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("QoS 2"),
        "{}",
        shown(&args, &out)
    );
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    // No broker: every one of these must be refused before connecting.
    for bad in [
        &["--qos", "3"][..],
        &["--qos", ""],
        &["--qos", "0,1,1"],
        &["--publishers", "0"],
        &["--subscribers", "0"],
        &["--messages", "0"],
        &["--size", "8"],
        &["--size", "20000"],
        &["--messages", "10", "--duration", "1s"],
        &["--json", "--csv"],
        &["--rate", "0"],
        &["--rate", "fast"],
        &["--duration", "0s"],
        &["--chart", "latency.png"],
        &["--qos", "0,2", "--inject-redelivery", "5"],
        &["--qos", "1", "--messages", "3", "--inject-redelivery", "5"],
        &["--inject-redelivery", "5", "--duration", "1s"],
    ] {
        let mut args = vec!["qos-bench", "--mqtt-url", "mqtt://127.0.0.1:9"];
        args.extend_from_slice(bad);
        let out = run_arng(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&args, &out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{}",
            describe(&args, &out)
        );
        assert!(out.stdout.is_empty(), "{}", describe(&args, &out));
    }
}
