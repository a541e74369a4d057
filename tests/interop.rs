//! Interoperability with a producer we did not write in Rust (issue 14): the lab's
//! Activity 2 sensor in Python with paho-mqtt (`examples/python/`), publishing every
//! payload form students commonly write and the lab's heartbeat
//! `{"zone": ..., "timestamp": time.time()}`, against real Mosquitto + `arng ingest` +
//! `arng serve` + influxd. What the REST API shows is asserted against what the
//! Python sensor printed it published.
//!
//! The interpreter is [`common::python_with_paho`]'s.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::chain::{count_points, get_json, latest_sensor, IngestProc, ServeProc};
use common::eventually;
use common::influxd::Influxd;
use common::mosquitto::{account, Mosquitto};
use serde_json::Value;

const ZONES: [&str; 3] = ["nord", "sud", "est"];
/// Cycles of the sensor: one per payload form of `tp_mqtt.FORMS`.
const CYCLES: usize = 6;

#[tokio::test(flavor = "multi_thread")]
async fn a_paho_mqtt_sensor_written_the_labs_way_shows_in_the_rest_api() {
    let py = common::python_with_paho();
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);

    let (user, pass) = account("simulator");
    let script = common::repo_root().join("examples/python/sensor.py");
    let args = [
        script.to_string_lossy().into_owned(),
        "--host=127.0.0.1".into(),
        format!("--port={}", broker.port),
        format!("--username={user}"),
        format!("--password={pass}"),
        format!("--zones={}", ZONES.join(",")),
        "--sensor=th1".into(),
        "--period=0.2".into(),
        "--heartbeat-period=0.5".into(),
        format!("--count={CYCLES}"),
        "--form=all".into(),
    ];
    let out = tokio::task::block_in_place(|| Command::new(&py).args(&args).output())
        .expect("cannot run the Python sensor");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let shown = format!(
        "{py} {}\nexit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown}");

    // What the sensor says it published: the last reading of each zone.
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    let mut readings = 0;
    let mut heartbeats = 0;
    for line in stdout.lines() {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("PUBLISH"), Some(topic), Some(json)) => {
                readings += 1;
                let zone = topic.split('/').nth(1).unwrap().to_owned();
                last.insert(zone, serde_json::from_str(json).unwrap());
            }
            (Some("HEARTBEAT"), Some(_), Some(json)) => {
                heartbeats += 1;
                let v: Value = serde_json::from_str(json).unwrap();
                // The lab's heartbeat, as the lab writes it.
                assert!(v["timestamp"].is_f64() && v["zone"].is_string(), "{line}");
            }
            _ => {}
        }
    }
    assert_eq!(readings, ZONES.len() * CYCLES, "{shown}");
    assert!(heartbeats >= ZONES.len(), "{shown}");

    // Every reading stored, none refused, whatever its form.
    let expected = (ZONES.len() * CYCLES) as i64;
    eventually(
        "every reading in InfluxDB",
        Duration::from_secs(30),
        || async { (count_points(&db, "readings", "temp", "").await == expected).then_some(()) },
    )
    .await;
    assert!(
        !ingest.metrics().contains("arng_ingest_rejected_total{"),
        "{}",
        ingest.metrics()
    );
    // Each form counted once per zone (tp_mqtt.FORMS, in order).
    let n = ZONES.len() as f64;
    for (field, how, times) in [
        ("version", "string", 2.0),
        ("alert_level", "case", 1.0),
        ("timestamp", "no_offset", 1.0),
        ("alert_level", "code", 1.0),
        ("timestamp", "epoch_ms", 1.0),
        ("alert_level", "absent", 1.0),
        ("timestamp", "absent", 1.0),
        ("version", "absent", 1.0),
    ] {
        let series = format!(r#"arng_ingest_normalized_total{{field="{field}",how="{how}"}}"#);
        assert_eq!(ingest.metric(&series), times * n, "{series}");
    }
    // Heartbeats are stored.
    assert!(count_points(&db, "heartbeats", "sensors", "").await >= ZONES.len() as i64);

    // The REST API shows each zone, its heartbeat, and the last reading as published
    // (the last form has no timestamp: ingest dated it and says so).
    let zones: Value = eventually(
        "the three zones at GET /zones",
        Duration::from_secs(20),
        || async {
            let v = get_json(&format!("{}/zones", serve.url())).await?;
            let all = v
                .as_array()?
                .iter()
                .filter(|z| z["heartbeat"]["age_s"].is_number())
                .count();
            (all == ZONES.len()).then_some(v)
        },
    )
    .await;
    assert_eq!(zones.as_array().unwrap().len(), ZONES.len(), "{zones:#}");
    for zone in ZONES {
        let sent = &last[zone];
        let url = format!("{}/zones/{zone}/latest", serve.url());
        let sensor = eventually(
            &format!("the last reading of {zone} on both sides of /zones/{zone}/latest"),
            Duration::from_secs(20),
            || async {
                let s = latest_sensor(&url, "th1").await?;
                (s["influx"]["temp"] == sent["temp"] && s["mqtt"]["temp"] == sent["temp"])
                    .then_some(s)
            },
        )
        .await;
        let got = format!("{zone}: sent {sent}, API {sensor:#}");
        assert!(sent.get("timestamp").is_none(), "{got}");
        assert_eq!(sensor["influx"]["hum"], sent["hum"], "{got}");
        assert_eq!(
            sensor["influx"]["alert_level"], sent["alert_level"],
            "{got}"
        );
        assert_eq!(sensor["influx"]["stamped_by"], "ingest", "{got}");
        assert_eq!(sensor["mqtt"]["stamped_by"], "api", "{got}");
    }
}
