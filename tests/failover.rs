//! Ingest workers sharing the stream (`--share-group`, MQTT shared subscriptions) on a
//! real Mosquitto 2.0, writing to a real InfluxDB, when one of them goes away.
//!
//! What Mosquitto 2.0 does (src/subs.c, `subs__shared_process`, read for 2.0.11): each
//! message of a shared subscription goes to the next member in a fixed rotation,
//! connected or not. arng's workers have persistent sessions (clean session off), so a
//! member that is gone stays in the rotation: its unacknowledged messages stay in its
//! session, and its share of what arrives afterwards is queued there too, up to
//! `max_queued_messages`. Nothing is handed to the other members; everything comes
//! back when the same client id reconnects. The tests below show exactly that: after a
//! SIGKILL mid-stream, and after a clean stop.

mod common;

use std::time::Duration;

use common::chain::{
    assert_each_reading_once, count_points, spawn_simulate, wait_for_count, IngestProc,
};
use common::influxd::Influxd;
use common::mosquitto::Mosquitto;

const WRITTEN: &str = "arng_ingest_readings_written_total";

fn worker(broker: &Mosquitto, db: &Influxd, name: &str) -> IngestProc {
    IngestProc::start(
        broker,
        db,
        &[
            "--share-group",
            "fleet",
            "--client-id",
            &format!("ingest-{name}"),
        ],
    )
}

/// Waits until the number of readings in InfluxDB has not moved for `quiet`; returns it.
async fn settled(db: &Influxd, quiet: Duration) -> i64 {
    let mut last = count_points(db, "readings", "temp", "").await;
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = count_points(db, "readings", "temp", "").await;
        if now != last {
            last = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= quiet {
            return now;
        }
    }
}

/// Three workers; one is killed (SIGKILL) while 4,800 readings stream in. Its
/// unacknowledged readings and its third of the rest wait in its session, not in the
/// other workers; when it restarts with the same client id they all arrive, and every
/// reading is stored exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_s_share_waits_for_it_and_arrives_when_it_restarts() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let a = worker(&broker, &db, "a");
    let mut b = worker(&broker, &db, "b");
    let c = worker(&broker, &db, "c");

    // 3 zones x 20 sensors, 600 readings/s for 8 s.
    let simulate = spawn_simulate(
        &broker,
        "--zones nord,sud,est --sensors-per-zone 20 --rate 600 --duration 8s --seed 3 --json",
    );
    // Mid-stream: readings are flowing through all three workers.
    wait_for_count(&db, 1200, Duration::from_secs(20)).await;
    let b_before = b.metric(WRITTEN);
    assert!(b_before > 0.0, "b wrote nothing before it was killed");
    assert!(
        !simulate.is_finished(),
        "the stream ended before the kill: the kill would not be mid-stream"
    );
    b.kill9();

    let (shown, out) = simulate.await.unwrap();
    assert!(out.status.success(), "simulate failed:{shown}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let published = summary["readings"].as_i64().unwrap();
    assert_eq!(published, 4800, "{shown}");

    // a and c drain what they were given; b's share is not theirs.
    let while_b_down = settled(&db, Duration::from_secs(3)).await;
    let held = published - while_b_down;
    assert!(
        held > 0,
        "all {published} readings stored with b down: the broker redistributed its share"
    );
    assert!(
        ((a.metric(WRITTEN) + c.metric(WRITTEN)) as i64) < while_b_down,
        "b's writes before the kill are part of what is stored"
    );

    // b comes back with the same client id: its session hands it everything it held.
    b.restart();
    wait_for_count(&db, published, Duration::from_secs(30)).await;
    assert_eq!(settled(&db, Duration::from_secs(2)).await, published);
    assert!(
        b.metric(WRITTEN) >= held as f64,
        "the restarted b wrote {} readings, fewer than the {held} it held",
        b.metric(WRITTEN)
    );
    assert_each_reading_once(&db, &["nord", "sud", "est"], 20, 80).await;
    eprintln!(
        "failover: {published} published; with b killed mid-stream {while_b_down} stored, \
         {held} held in b's session; after b's restart {published}, b wrote {} of them",
        b.metric(WRITTEN)
    );
}

/// A worker stopped cleanly (SIGTERM) acknowledges what it wrote, but stays a member
/// of the group: the broker keeps queuing its share until it returns. So a group is
/// scaled down by restarting a worker's client id elsewhere, never by just stopping
/// it (docs/scaling.md).
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_worker_keeps_its_share_until_it_returns() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let a = worker(&broker, &db, "a");
    let mut b = worker(&broker, &db, "b");
    assert_eq!(b.terminate(), Some(0), "ingest exits 0 on SIGTERM");

    let (shown, out) = spawn_simulate(
        &broker,
        "--zones nord --sensors-per-zone 10 --interval 100ms --count 20 --seed 5",
    )
    .await
    .unwrap();
    assert!(out.status.success(), "simulate failed:{shown}");
    let while_b_down = settled(&db, Duration::from_secs(3)).await;
    assert_eq!(a.metric(WRITTEN) as i64, while_b_down);
    assert!(
        while_b_down < 200 && while_b_down > 0,
        "{while_b_down} of 200 stored with b stopped: expected a's half only"
    );

    b.restart();
    wait_for_count(&db, 200, Duration::from_secs(30)).await;
    assert_eq!(settled(&db, Duration::from_secs(2)).await, 200);
    assert_each_reading_once(&db, &["nord"], 10, 20).await;
}
