//! A site broker bridged to a central broker (`mosquitto-conf/bridge.conf`), with two
//! real Mosquitto processes: `arng simulate` publishes to the site, `arng ingest`
//! reads the central broker and writes to a real InfluxDB. The link between the two
//! brokers runs through a relay the test can cut (tests/common/link.rs).
//!
//! - The link is cut for 20 s, then the central broker is restarted, while the
//!   simulator publishes: every reading is stored exactly once.
//! - The bridge over mutual TLS (the commented TLS lines of bridge.conf, enabled).
//! - bridge.conf stays a copy of mosquitto.conf except where it says why not.

mod common;

use std::time::{Duration, Instant};

use common::chain::{
    assert_each_reading_once, collect_topic, count_points, mqtt_args, now_ms, publish_all,
    reading_msg, spawn_simulate, wait_for_count, IngestProc,
};
use common::influxd::Influxd;
use common::link::Link;
use common::mosquitto::Mosquitto;
use common::repo_root;
use rumqttc::QoS;

const SITE_CLIENT_ID: &str = "bridge-site-1";
const ZONES: [&str; 3] = ["nord", "sud", "est"];
const SENSORS: usize = 2;
/// Readings per sensor, one every 200 ms: 48 s of publishing, long enough for the
/// 20-second cut, the bridge's reconnection (at most 10 s) and the central restart.
const PER_SENSOR: i64 = 240;

/// How many times the central broker logged the bridge's connection (Mosquitto
/// recognises a bridge by the `try_private` bit and says so).
fn bridge_connections(central: &Mosquitto) -> usize {
    central
        .log()
        .lines()
        .filter(|l| {
            l.contains("New bridge connected") && l.contains(&format!(" as {SITE_CLIENT_ID} "))
        })
        .count()
}

async fn wait_for_bridge(central: &Mosquitto, times: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while bridge_connections(central) < times {
        assert!(
            Instant::now() < deadline,
            "the bridge did not connect to the central broker ({times} times) within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readings_cross_a_cut_link_and_a_central_restart_exactly_once() {
    let mut central = Mosquitto::start();
    let link = Link::start(central.port);
    let site = Mosquitto::start_site("bridge.conf", &link.address(), None);
    let db = Influxd::start();
    let ingest = IngestProc::start(&central, &db, &[]);
    wait_for_bridge(&central, 1, Duration::from_secs(20)).await;

    // The simulator publishes to the site broker only.
    let simulate = spawn_simulate(
        &site,
        "--zones nord,sud,est --sensors-per-zone 2 --interval 200ms --count 240 --seed 17 --json",
    );

    // Readings flow site -> central -> ingest -> InfluxDB before the cut.
    let before_cut = wait_for_count(&db, 30, Duration::from_secs(20)).await;
    link.cut();
    let cut_at = Instant::now();
    // Whatever was in flight when the link dropped arrives within a moment; after
    // that nothing may reach the central broker until the link returns, which a
    // subscriber on the central broker sees directly (no ingest lag in between).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during_cut = collect_topic(
        mqtt_args(&central, "operator"),
        "entrepot/+/+/v1".into(),
        Duration::from_secs(20).saturating_sub(cut_at.elapsed()),
    )
    .await;
    let late_in_cut = count_points(&db, "readings", "temp", "").await;
    assert!(
        before_cut > 0,
        "no reading crossed the bridge before the cut"
    );
    assert!(
        during_cut.is_empty(),
        "{} readings reached the central broker while the link was cut: the cut did not cut",
        during_cut.len()
    );
    assert!(
        !simulate.is_finished(),
        "the simulator stopped during the cut: it must keep publishing to the site"
    );

    link.restore();
    let forwarded_before = link.forwarded();
    // restart_timeout 1 10: the bridge is back within ~10 s of the link.
    wait_for_bridge(&central, 2, Duration::from_secs(30)).await;
    let after_restore = wait_for_count(&db, late_in_cut + 1, Duration::from_secs(20)).await;
    assert!(link.forwarded() > forwarded_before);

    // Then the central broker restarts (clean stop: it saves ingest's session and
    // its queue) while the site keeps forwarding.
    assert!(
        !simulate.is_finished(),
        "the simulator finished before the central restart: lengthen the stream"
    );
    central.restart();
    wait_for_bridge(&central, 3, Duration::from_secs(30)).await;

    let (shown, out) = simulate.await.unwrap();
    assert!(out.status.success(), "simulate failed:{shown}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("simulate --json: {e}{shown}"));
    let published = ZONES.len() as i64 * SENSORS as i64 * PER_SENSOR;
    assert_eq!(summary["readings"], published, "{shown}");

    // The backlog crossed; wait, then make sure nothing more comes in.
    wait_for_count(&db, published, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count_points(&db, "readings", "temp", "").await,
        published,
        "readings in InfluxDB (before the cut {before_cut}, during it {late_in_cut}, after it {after_restore})"
    );
    assert_each_reading_once(&db, &ZONES, SENSORS, PER_SENSOR).await;
    // Ingest wrote at least every reading once (redeliveries rewrite the same point).
    let written = ingest.metric("arng_ingest_readings_written_total");
    assert!(written >= published as f64);
    eprintln!(
        "bridge: {published} published to the site; in InfluxDB {before_cut} before the cut, \
         {late_in_cut} at its end, {after_restore} after it, {published} at the end; \
         ingest wrote {written} (redeliveries included); link connections {}",
        link.forwarded()
    );
    drop(site);
}

/// What the site broker holds for the central broker while the link is down survives
/// a clean restart of the site (saved at stop) but not a crash before the next
/// autosave (60 s in bridge.conf): the limit docs/reliability.md states.
#[tokio::test(flavor = "multi_thread")]
async fn a_site_restart_keeps_the_backlog_and_a_site_crash_loses_it() {
    let central = Mosquitto::start();
    let link = Link::start(central.port);
    let mut site = Mosquitto::start_site("bridge.conf", &link.address(), None);
    let db = Influxd::start();
    let _ingest = IngestProc::start(&central, &db, &[]);
    wait_for_bridge(&central, 1, Duration::from_secs(20)).await;
    let batch = |first: u64| -> Vec<(String, String)> {
        (first..first + 50)
            .map(|seq| reading_msg("nord", "s1", seq, now_ms() - 60_000 + seq as i64, 20.0))
            .collect()
    };

    // Acknowledged by the site while the link is down, then a clean restart of the
    // site: the backlog was saved at stop and crosses once the link is back.
    link.cut();
    publish_all(&site, "simulator", &batch(0), QoS::AtLeastOnce).await;
    site.restart();
    link.restore();
    wait_for_bridge(&central, 2, Duration::from_secs(30)).await;
    wait_for_count(&db, 50, Duration::from_secs(20)).await;

    // The same with a crash (SIGKILL) less than a minute after the last save: the
    // 50 readings acknowledged to the publisher are gone.
    link.cut();
    publish_all(&site, "simulator", &batch(50), QoS::AtLeastOnce).await;
    site.kill9();
    site.start_again();
    link.restore();
    wait_for_bridge(&central, 3, Duration::from_secs(30)).await;
    // A reading published after the crash crosses: the bridge works again...
    publish_all(&site, "simulator", &batch(100)[..1], QoS::AtLeastOnce).await;
    wait_for_count(&db, 51, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // ...but the 50 of the crash never arrive.
    assert_eq!(
        count_points(&db, "readings", "temp", "").await,
        51,
        "the crash lost the site's backlog"
    );
}

/// The TLS lines of bridge.conf, uncommented, against the central broker's mutual-TLS
/// listener (tls.conf, port 8884): the site's readings arrive on the central broker.
#[tokio::test(flavor = "multi_thread")]
async fn bridge_over_mutual_tls_carries_readings() {
    let central = Mosquitto::start_tls();
    let conf = std::fs::read_to_string(repo_root().join("mosquitto-conf/bridge.conf")).unwrap();
    let tls_lines = [
        "#bridge_cafile ",
        "#bridge_certfile ",
        "#bridge_keyfile ",
        "#bridge_tls_version ",
    ];
    let mut enabled = String::new();
    for line in conf.lines() {
        if tls_lines.iter().any(|p| line.starts_with(p)) {
            enabled.push_str(&line[1..]);
        } else {
            enabled.push_str(line);
        }
        enabled.push('\n');
    }
    assert_eq!(
        enabled.lines().filter(|l| l.starts_with("bridge_")).count(),
        tls_lines.len(),
        "bridge.conf lost its commented TLS lines"
    );
    let dir = tempfile::Builder::new()
        .prefix("arng-bridge-tls-")
        .tempdir()
        .unwrap();
    let variant = dir.path().join("bridge-tls.conf");
    std::fs::write(&variant, enabled).unwrap();
    let certs = central.cert("ca.crt").parent().unwrap().to_path_buf();
    let mtls = central.mutual_tls_port.unwrap();
    let site = Mosquitto::start_site(
        variant.to_str().unwrap(),
        &format!("127.0.0.1:{mtls}"),
        Some(&certs),
    );
    assert!(site
        .rendered_config()
        .contains(&format!("bridge_cafile {}/ca.crt", certs.display())));
    wait_for_bridge(&central, 1, Duration::from_secs(20)).await;

    let watcher = tokio::spawn(collect_topic(
        mqtt_args(&central, "operator"),
        "entrepot/+/+/v1".into(),
        Duration::from_secs(4),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let readings: Vec<(String, String)> = (0..5)
        .map(|seq| reading_msg("nord", "s1", seq, now_ms(), 21.0))
        .collect();
    publish_all(&site, "simulator", &readings, QoS::AtLeastOnce).await;
    let seen = watcher.await.unwrap();
    assert_eq!(
        seen.len(),
        5,
        "readings seen on the central broker: {seen:?}\n--- site log:\n{}",
        site.log()
    );
    assert!(
        central.log().contains(&format!(" on port {mtls}.")),
        "the bridge did not come in through the mutual-TLS listener:\n{}",
        central.log()
    );
}

/// bridge.conf is mosquitto.conf plus the site's changes: every setting either equals
/// the reference one or has a `Bridge:` reason in the comment above it, and none of
/// the reference settings is missing. Fails when mosquitto.conf changes and the copy
/// was not brought along.
#[test]
fn bridge_conf_differs_from_mosquitto_conf_only_where_it_says_why() {
    let read = |name: &str| {
        std::fs::read_to_string(repo_root().join("mosquitto-conf").join(name)).unwrap()
    };
    let reference = read("mosquitto.conf");
    let site = read("bridge.conf");
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let reference_settings = settings(&reference);
    let (main, bridge_section) = site
        .split_once("# Bridge: to the central broker")
        .expect("bridge.conf has no bridge section");
    assert!(bridge_section.contains("\nconnection central\n"));

    let mut comment = String::new();
    let mut problems = Vec::new();
    let mut site_keys = Vec::new();
    for line in main.lines() {
        if line.starts_with('#') {
            comment.push_str(line);
            comment.push('\n');
            continue;
        }
        if line.trim().is_empty() {
            comment.clear();
            continue;
        }
        let key = line.split_whitespace().next().unwrap().to_owned();
        site_keys.push(key.clone());
        if !reference_settings.iter().any(|r| r == line) && !comment.contains("Bridge:") {
            let theirs: Vec<&String> = reference_settings
                .iter()
                .filter(|r| r.split_whitespace().next() == Some(key.as_str()))
                .collect();
            problems.push(format!(
                "`{line}` differs from mosquitto.conf ({theirs:?}) without a `# Bridge:` reason"
            ));
        }
        comment.clear();
    }
    for line in &reference_settings {
        let key = line.split_whitespace().next().unwrap();
        if !site_keys.iter().any(|k| k == key) {
            problems.push(format!(
                "mosquitto.conf's `{line}` is missing from bridge.conf"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "keep mosquitto-conf/bridge.conf in sync with mosquitto.conf:\n{}",
        problems.join("\n")
    );
}
