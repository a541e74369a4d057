//! The InfluxDB edge against a real influxd: writes (plain and gzip), Flux queries
//! through the annotated-CSV reader, idempotent overwrites, error classification and
//! first-time setup.

mod common;

use std::time::Duration;

use arng::config::Secret;
use arng::domain::line_protocol::Point;
use arng::domain::schema::reading_point;
use arng::domain::{AlertLevel, Reading, SensorId, Zone};
use arng::store::{InfluxClient, Setup, SetupOutcome, StoreError};
use chrono::{DurationRound, TimeZone, Utc};
use common::influxd::Influxd;

fn reading(zone: &str, sensor: &str, seq: u64, ms: i64) -> Reading {
    Reading {
        zone: Zone::new(zone).unwrap(),
        sensor: SensorId::new(sensor).unwrap(),
        seq: Some(seq),
        timestamp: Utc.timestamp_millis_opt(ms).unwrap(),
        temp: 20.0 + seq as f64 / 100.0,
        hum: 45.5,
        alert_level: AlertLevel::Normal,
        provenance: Default::default(),
    }
}

fn now_ms() -> i64 {
    Utc::now()
        .duration_trunc(chrono::Duration::milliseconds(1))
        .unwrap()
        .timestamp_millis()
}

async fn count_readings(client: &InfluxClient, extra: &str) -> i64 {
    let flux = format!(
        r#"{} |> range(start: -1h, stop: 1h) |> filter(fn: (r) => r._measurement == "readings" and r._field == "temp"{extra}) |> group() |> count()"#,
        client.from_bucket()
    );
    let rows = client.query(&flux).await.unwrap();
    rows.first().and_then(|r| r.i64("_value")).unwrap_or(0)
}

#[tokio::test]
async fn writes_are_read_back_exactly_plain_and_gzip() {
    let db = Influxd::start();
    let client = InfluxClient::new(&db.args());
    let base = now_ms() - 60_000;
    // 3 points: a body under the gzip threshold.
    let small: Vec<Point> = (0..3)
        .map(|i| reading_point(&reading("nord", "s1", i, base + i as i64)))
        .collect();
    client.write_points(&small).await.unwrap();
    // 600 points across 3 zones: a gzip-compressed body.
    let big: Vec<Point> = (0..600)
        .map(|i| {
            let zone = ["nord", "sud", "est"][i % 3];
            reading_point(&reading(zone, "s2", i as u64, base + i as i64))
        })
        .collect();
    client.write_points(&big).await.unwrap();

    assert_eq!(count_readings(&client, "").await, 603);
    assert_eq!(
        count_readings(&client, r#" and r.zone == "sud""#).await,
        200
    );

    // Values, tags and timestamps come back as written.
    let flux = format!(
        r#"{} |> range(start: -1h, stop: 1h) |> filter(fn: (r) => r._measurement == "readings" and r.sensor == "s1")
           |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") |> sort(columns: ["_time"])"#,
        client.from_bucket()
    );
    let rows = client.query(&flux).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].f64("temp"), Some(20.02));
    assert_eq!(rows[2].f64("hum"), Some(45.5));
    assert_eq!(rows[2].i64("seq"), Some(2));
    assert_eq!(rows[2].i64("alert_level"), Some(0));
    assert_eq!(rows[2].str("zone"), Some("nord"));
    assert_eq!(rows[2].time("_time").unwrap().timestamp_millis(), base + 2);
}

#[tokio::test]
async fn a_redelivered_reading_overwrites_instead_of_duplicating() {
    let db = Influxd::start();
    let client = InfluxClient::new(&db.args());
    let r = reading("est", "s9", 7, now_ms() - 1000);
    let p = reading_point(&r);
    for _ in 0..3 {
        client.write_points(std::slice::from_ref(&p)).await.unwrap();
    }
    assert_eq!(count_readings(&client, "").await, 1);
}

#[tokio::test]
async fn escaped_names_and_strings_survive_the_round_trip() {
    let db = Influxd::start();
    let client = InfluxClient::new(&db.args());
    // InfluxDB keeps backslashes verbatim in tags; commas, equals signs and spaces
    // must come back unescaped.
    let tricky = r#"a b,c=d\e"f"#;
    let p = Point::new("odd measurement,x")
        .tag("tag key", tricky)
        .string("note", r#"say "hi" \ bye"#)
        .float("v", 1.5)
        .timestamp(Utc::now());
    client.write_points(&[p]).await.unwrap();
    let flux = format!(
        r#"{} |> range(start: -1h) |> filter(fn: (r) => r._measurement == "odd measurement,x" and r._field == "note")"#,
        client.from_bucket()
    );
    let rows = client.query(&flux).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].str("tag key"), Some(tricky));
    assert_eq!(rows[0].str("_value"), Some(r#"say "hi" \ bye"#));
}

#[tokio::test]
async fn null_cells_are_read_as_null() {
    let db = Influxd::start();
    let client = InfluxClient::new(&db.args());
    let t = now_ms() - 5000;
    // Two sensors, one without `hum`: pivoting leaves an empty numeric cell, the case
    // that makes influxdb2 0.5.2 panic.
    client
        .write_lines(&format!(
            "readings,zone=nord,sensor=a temp=20.5,hum=40.0 {t}\nreadings,zone=nord,sensor=b temp=21.5 {t}\n"
        ))
        .await
        .unwrap();
    let flux = format!(
        r#"{} |> range(start: -1h) |> filter(fn: (r) => r._measurement == "readings")
           |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
           |> group() |> sort(columns: ["sensor"])"#,
        client.from_bucket()
    );
    let rows = client.query(&flux).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].f64("hum"), Some(40.0));
    assert_eq!(rows[1].f64("temp"), Some(21.5));
    assert_eq!(rows[1].f64("hum"), None);
    assert!(rows[1].values["hum"].is_null());
}

#[tokio::test]
async fn errors_are_classified() {
    let db = Influxd::start();
    let client = InfluxClient::new(&db.args());

    // Bad line protocol: a data error, not worth retrying.
    let err = client
        .write_lines("readings,zone=nord temp=\n")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Rejected { status: 400, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());

    // A query on a bucket that does not exist names it.
    let err = client
        .query(r#"from(bucket: "nope") |> range(start: -1h)"#)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    // A Flux runtime error.
    let err = client.query(r#"import "array" array.from(rows: [{v: 1}]) |> map(fn: (r) => ({r with x: int(v: "x")}))"#).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("int"), "{err}");

    // A wrong token.
    let mut args = db.args();
    args.token = Secret::new("wrong-token");
    let err = InfluxClient::new(&args)
        .write_lines("m v=1\n")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unauthorized { status: 401, .. }),
        "{err}"
    );

    // Nobody listening: retryable.
    let mut args = db.args();
    args.url = format!("http://127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let err = InfluxClient::with_timeout(&args, Duration::from_secs(2))
        .write_lines("m v=1\n")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn health_and_setup() {
    let db = Influxd::start_without_setup();
    let client = InfluxClient::new(&db.args());
    let health = client.health().await.unwrap();
    assert_eq!(health.status, "pass");
    assert!(
        health.version.as_deref().unwrap_or("").starts_with("2."),
        "{health:?}"
    );
    assert!(client.ready().await.unwrap());

    let setup = Setup {
        username: "admin".into(),
        password: Secret::new("admin-dev-password"),
        org: "ares".into(),
        bucket: "entrepot".into(),
        token: Secret::new("dev-token"),
        retention: Duration::from_secs(30 * 24 * 3600),
    };
    assert_eq!(client.setup(&setup).await.unwrap(), SetupOutcome::Created);
    assert_eq!(
        client.setup(&setup).await.unwrap(),
        SetupOutcome::AlreadySetUp
    );
    client
        .write_points(&[reading_point(&reading("nord", "s1", 1, now_ms()))])
        .await
        .unwrap();
    assert_eq!(count_readings(&client, "").await, 1);
}
