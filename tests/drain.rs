//! `arng ingest` after an outage, against a real Mosquitto and a real influxd: the
//! broker holds a persistent session's backlog, queued while ingest was down; ingest
//! starts, drains it, stores every reading exactly once, and its peak memory stays
//! under one fixed bound whatever the backlog's size (docs/ingest.md#flow-control).
//!
//! The same bound is asserted at 50,000 and 200,000 queued readings: memory that grew
//! with the backlog (as it did before the link stopped reading while the writer is
//! behind: 62 MiB for this 200,000 in a release build, 363 MiB for 1,800,000) would
//! exceed it at 200,000.

mod common;

use std::time::{Duration, Instant};

use common::chain::{flux_sum, now_ms, publish_fast, reading_msg, IngestProc};
use common::influxd::Influxd;
use common::mosquitto::Mosquitto;
use rumqttc::QoS;

/// Peak resident memory (VmHWM) `arng ingest` may reach while draining, whatever the
/// backlog. This debug build measured 33.5 MiB at 50,000 and 34.5 MiB at 200,000 (1,481
/// read pauses); before the bound existed, the release build of the same scenario
/// peaked at 62 MiB for 200,000 (22 MiB now), growing with the backlog.
const PEAK_RSS_BOUND_KIB: u64 = 44 * 1024;

const ZONES: usize = 4;
const SENSORS_PER_ZONE: usize = 500;

fn backlog(per_sensor: u64) -> Vec<(String, String)> {
    let base = now_ms() - 3_600_000;
    let mut out = Vec::with_capacity(ZONES * SENSORS_PER_ZONE * per_sensor as usize);
    for seq in 0..per_sensor {
        for z in 0..ZONES {
            for s in 0..SENSORS_PER_ZONE {
                out.push(reading_msg(
                    &format!("d{z}"),
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

/// Readings stored per sensor: (fewest, most, sum of `seq` over all).
async fn per_sensor(db: &Influxd) -> (i64, i64, i64) {
    let counts = |f: &str| {
        format!(
            r#"from(bucket: "entrepot") |> range(start: -2h, stop: 1h)
               |> filter(fn: (r) => r._measurement == "readings" and r._field == "seq")
               |> group(columns: ["zone", "sensor"]) |> count() |> group() |> {f}()"#
        )
    };
    let min = flux_sum(db, &counts("min")).await;
    let max = flux_sum(db, &counts("max")).await;
    let sum = flux_sum(
        db,
        r#"from(bucket: "entrepot") |> range(start: -2h, stop: 1h)
           |> filter(fn: (r) => r._measurement == "readings" and r._field == "seq")
           |> group() |> sum()"#,
    )
    .await;
    (min, max, sum)
}

async fn stored(db: &Influxd) -> i64 {
    flux_sum(
        db,
        r#"from(bucket: "entrepot") |> range(start: -2h, stop: 1h)
           |> filter(fn: (r) => r._measurement == "readings" and r._field == "temp")
           |> group() |> count()"#,
    )
    .await
}

/// Queues `per_sensor` readings of each of 2,000 sensors while ingest is down, starts
/// it, and checks the drain. Returns ingest's peak RSS in KiB.
async fn drain(per_sensor_n: u64) -> u64 {
    // The reference configuration, with the per-client queue limit lifted (the
    // reference 100,000 would drop part of a 200,000 backlog, by design).
    let broker = Mosquitto::start_with_settings(
        "mosquitto.conf",
        &[("max_queued_messages", "0"), ("max_queued_bytes", "0")],
    );
    let db = Influxd::start();
    // A first run creates the persistent session and its subscriptions. Small batches
    // written one at a time make the writer slower than the socket (in a debug build
    // parsing is slow too), so the bound must hold by back-pressure, with the default
    // --max-unacked, not because InfluxDB happened to keep up.
    let mut ingest = IngestProc::start(
        &broker,
        &db,
        &["--writes-in-flight", "1", "--batch-size", "100"],
    );
    assert_eq!(ingest.terminate(), Some(0), "{}", ingest.log());

    let messages = backlog(per_sensor_n);
    let n = messages.len() as i64;
    let published = Instant::now();
    publish_fast(&broker, "simulator", &messages, QoS::AtLeastOnce, 2000).await;
    drop(messages);
    eprintln!(
        "published {n} while ingest was down in {:?}",
        published.elapsed()
    );
    assert_eq!(stored(&db).await, 0, "ingest was down");

    let started = Instant::now();
    ingest.restart();
    let deadline = started + Duration::from_secs(120);
    let mut last = 0;
    while last < n {
        assert!(
            Instant::now() < deadline,
            "only {last} of {n} queued readings stored after 120 s\n{}",
            ingest.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = stored(&db).await;
    }
    let peak = ingest.peak_rss_kib();
    eprintln!(
        "drained {n} in {:?}: peak RSS {:.1} MiB, {} read pauses",
        started.elapsed(),
        peak as f64 / 1024.0,
        ingest.metric("arng_ingest_read_pauses_total")
    );
    // Every reading once: each sensor holds each of its sequence numbers, no more.
    let per = per_sensor_n as i64;
    let sensors = (ZONES * SENSORS_PER_ZONE) as i64;
    assert_eq!(stored(&db).await, n);
    assert_eq!(
        per_sensor(&db).await,
        (per, per, sensors * per * (per - 1) / 2),
        "(fewest, most, sum of seq) per sensor"
    );
    assert!(ingest.metric("arng_ingest_readings_written_total") >= n as f64);
    if n >= 200_000 {
        // The link had to stop reading: the bound held by back-pressure.
        assert!(
            ingest.metric("arng_ingest_read_pauses_total") >= 1.0,
            "reading never paused\n{}",
            ingest.metrics()
        );
    }
    assert!(
        peak < PEAK_RSS_BOUND_KIB,
        "ingest's peak RSS {peak} KiB for a backlog of {n} exceeds the bound of {PEAK_RSS_BOUND_KIB} KiB"
    );
    assert_eq!(ingest.terminate(), Some(0), "{}", ingest.log());
    peak
}

#[tokio::test(flavor = "multi_thread")]
async fn a_50_000_reading_backlog_drains_within_the_memory_bound() {
    drain(25).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_000_reading_backlog_drains_within_the_same_memory_bound() {
    drain(100).await;
}
