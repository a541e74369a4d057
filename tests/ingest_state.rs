//! What `arng ingest` remembers and reports across restarts and outages, against a
//! real Mosquitto and a real influxd: the alert state survives a restart (a condition
//! still holding is not raised twice, one that ended while ingest was down is
//! cleared), and InfluxDB's health gauge reflects real writes only.

mod common;

use std::time::Duration;

use common::chain::{
    collect_topic, count_points, mqtt_args, now_ms, publish_all, reading_msg, IngestProc,
};
use common::eventually;
use common::influxd::Influxd;
use common::mosquitto::Mosquitto;
use rumqttc::QoS;

/// A thresholds file with debounce 1 (the default bands: warning above 25 °C,
/// critical above 30 °C), in `dir`.
fn thresholds_file(dir: &std::path::Path) -> String {
    let t = arng::domain::Thresholds {
        debounce: 1,
        ..Default::default()
    };
    t.validate().unwrap();
    let file = dir.join("thresholds.json");
    std::fs::write(&file, t.to_json()).unwrap();
    file.to_string_lossy().into_owned()
}

/// Temperatures of `nord/s1`, one second apart from `first` seconds after `base`.
fn temps(base: i64, first: u64, values: &[f64]) -> Vec<(String, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let seq = first + i as u64;
            reading_msg("nord", "s1", seq, base + seq as i64 * 1000, *t)
        })
        .collect()
}

/// Temperature alerts of ingest's rules stored in InfluxDB, with extra Flux conditions.
async fn temp_alerts(db: &Influxd, extra: &str) -> i64 {
    count_points(
        db,
        "alerts",
        "id",
        &format!(r#"r.source == "ingest" and r.metric == "temp"{extra}"#),
    )
    .await
}

async fn wait_readings(db: &Influxd, n: i64) {
    eventually(
        &format!("{n} readings stored"),
        Duration::from_secs(30),
        || async { (count_points(db, "readings", "temp", "").await >= n).then_some(()) },
    )
    .await;
}

/// A chain whose ingest (thresholds with debounce 1) has raised the warning and the
/// critical alert of `nord/s1` from two readings starting at `base`.
struct Raised {
    broker: Mosquitto,
    db: Influxd,
    ingest: IngestProc,
    base: i64,
    /// Holds the thresholds file.
    _dir: tempfile::TempDir,
}

async fn raised() -> Raised {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let dir = tempfile::tempdir().unwrap();
    let file = thresholds_file(dir.path());
    let ingest = IngestProc::start(&broker, &db, &["--thresholds", &file]);
    let base = now_ms() - 60_000;
    publish_all(
        &broker,
        "simulator",
        &temps(base, 0, &[20.0, 35.0]),
        QoS::AtLeastOnce,
    )
    .await;
    eventually(
        "warning and critical raised",
        Duration::from_secs(20),
        || async { (temp_alerts(&db, r#" and r.state == "raised""#).await == 2).then_some(()) },
    )
    .await;
    Raised {
        broker,
        db,
        ingest,
        base,
        _dir: dir,
    }
}

/// Raised before a crash (SIGKILL, after the batch was acknowledged), still above the
/// critical bound after the restart: no second warning or critical alert, on MQTT or
/// in InfluxDB; the restored alerts count as active at once.
#[tokio::test(flavor = "multi_thread")]
async fn an_alert_still_raised_after_a_crash_is_not_raised_again() {
    let Raised {
        broker,
        db,
        mut ingest,
        base,
        _dir,
    } = raised().await;
    // Acknowledged (so not redelivered): the state was saved before the PUBACKs left.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ingest.kill9();

    ingest.restart();
    assert_eq!(
        ingest.metric(r#"arng_ingest_alerts_active{severity="critical"}"#),
        1.0,
        "{}",
        ingest.log()
    );
    assert!(ingest
        .log()
        .contains("alert state restored from the previous run"));
    let watcher = tokio::spawn(collect_topic(
        mqtt_args(&broker, "operator"),
        "entrepot/alerts/+".to_owned(),
        Duration::from_secs(4),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_all(
        &broker,
        "simulator",
        &temps(base, 2, &[36.0, 37.0, 36.5]),
        QoS::AtLeastOnce,
    )
    .await;
    wait_readings(&db, 5).await;
    let seen = watcher.await.unwrap();
    assert!(
        seen.iter().all(|(_, p)| !p.contains(r#""metric":"temp""#)),
        "a temperature alert was published again after the restart: {seen:?}"
    );
    for severity in ["warning", "critical"] {
        let extra = format!(r#" and r.severity == "{severity}" and r.state == "raised""#);
        assert_eq!(temp_alerts(&db, &extra).await, 1, "{severity} raised once");
    }
    assert_eq!(temp_alerts(&db, "").await, 2);
}

/// Raised, then ingest stopped; the temperature falls back while it is down (the
/// readings wait in its persistent session): after the restart both alerts are
/// cleared, once each, and none is active.
#[tokio::test(flavor = "multi_thread")]
async fn an_alert_whose_condition_ended_while_ingest_was_down_is_cleared() {
    let Raised {
        broker,
        db,
        mut ingest,
        base,
        _dir,
    } = raised().await;
    assert_eq!(ingest.terminate(), Some(0), "{}", ingest.log());

    publish_all(
        &broker,
        "simulator",
        &temps(base, 2, &[22.0, 21.0]),
        QoS::AtLeastOnce,
    )
    .await;
    ingest.restart();
    wait_readings(&db, 4).await;
    eventually("both alerts cleared", Duration::from_secs(20), || async {
        (temp_alerts(&db, r#" and r.state == "cleared""#).await == 2).then_some(())
    })
    .await;
    for severity in ["warning", "critical"] {
        for state in ["raised", "cleared"] {
            let extra = format!(r#" and r.severity == "{severity}" and r.state == "{state}""#);
            assert_eq!(temp_alerts(&db, &extra).await, 1, "{severity} {state}");
        }
    }
    eventually("no alert active", Duration::from_secs(5), || async {
        (ingest.metric(r#"arng_ingest_alerts_active{severity="critical"}"#) == 0.0
            && ingest.metric(r#"arng_ingest_alerts_active{severity="warning"}"#) == 0.0)
            .then_some(())
    })
    .await;
}

/// InfluxDB down from the start: an alert forged with `"source":"ingest"` (stored by
/// nobody, so its batch has no point) must not make InfluxDB look healthy, nor may a
/// shutdown during the outage claim that writes succeed again (issue 15).
#[tokio::test(flavor = "multi_thread")]
async fn influxdb_health_reflects_real_writes_only() {
    let broker = Mosquitto::start();
    let mut db = Influxd::start();
    db.stop();
    let mut ingest = IngestProc::start(&broker, &db, &["--write-timeout", "1s"]);
    let forged = format!(
        r#"{{"version":1,"id":"forged-1","zone":"nord","sensor":"s1","metric":"temp","severity":"critical","state":"raised","source":"ingest","message":"forged","timestamp":"{}"}}"#,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let alert = vec![("entrepot/alerts/nord".to_owned(), forged)];
    publish_all(&broker, "simulator", &alert, QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ingest.metric("arng_ingest_influx_healthy"),
        0.0,
        "{}",
        ingest.log()
    );

    // A real write fails, the batch is spooled; another forged alert changes nothing.
    let base = now_ms() - 60_000;
    publish_all(
        &broker,
        "simulator",
        &temps(base, 0, &[20.0]),
        QoS::AtLeastOnce,
    )
    .await;
    eventually("the reading spooled", Duration::from_secs(30), || async {
        (ingest.metric("arng_ingest_spooled_batches_total") >= 1.0).then_some(())
    })
    .await;
    publish_all(&broker, "simulator", &alert, QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ingest.metric("arng_ingest_influx_healthy"),
        0.0,
        "{}",
        ingest.log()
    );

    assert_eq!(ingest.terminate(), Some(0), "{}", ingest.log());
    assert!(
        !ingest.log().contains("InfluxDB writes succeed again"),
        "a write that never happened was reported:\n{}",
        ingest.log()
    );
}
