//! Issue 15, "bad input changes nothing", on the API and supervision side, against
//! real Mosquitto, influxd, `arng ingest` and `arng serve`: thresholds no reading can
//! cross, readings and heartbeats dated far ahead or long ago, the supervision probe
//! in the lab's views, alerts forged by sensor accounts, and errors that say what
//! happened in a JSON body (hyper's own 414/431/400 included). docs/reliability.md,
//! "Bad inputs", lists each case with the test that holds it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use arng::domain::{Alert, AlertKind, AlertLevel, AlertSource, AlertState, SensorId, Zone};
use common::api::Api;
use common::chain::{
    collect_topic, count_points, mqtt_args, now_ms, publish_all, reading_msg, IngestProc, ServeProc,
};
use common::eventually;
use common::influxd::Influxd;
use common::mosquitto::Mosquitto;
use rumqttc::QoS;
use serde_json::{json, Value};

fn ts(ms: i64) -> String {
    arng::domain::payload::format_timestamp(chrono::DateTime::from_timestamp_millis(ms).unwrap())
}

/// The value of a series on a Prometheus page (`None` when absent).
fn gauge(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One raw HTTP/1.1 exchange on its own connection: (status, headers, body).
fn raw_http(port: u16, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = s.write_all(request);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// The JSON error body of a raw answer, checked to be one.
fn json_error(head: &str, body: &str) -> Value {
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}\n\n{body}"
    );
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not JSON: {head}\n\n{body}"));
    assert!(v["error"].is_string(), "{v}");
    v
}

/// A bad document over REST is a 400 naming the field; the same document as the
/// retained MQTT configuration is refused by ingest (counted, logged, dead-lettered)
/// and by serve, and alerting goes on with the thresholds in force.
#[tokio::test(flavor = "multi_thread")]
async fn thresholds_no_reading_can_cross_are_refused_over_rest_and_mqtt() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let mut ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);
    let api = Api::new(&serve);
    let defaults = serde_json::to_value(arng::domain::Thresholds::default()).unwrap();

    for (band, bound, value, field) in [
        (
            "temp",
            "critical_high",
            json!(1e308),
            "default.temp.critical_high",
        ),
        (
            "temp",
            "critical_low",
            json!(-1000),
            "default.temp.critical_low",
        ),
        (
            "hum",
            "critical_high",
            json!(100.5),
            "default.hum.critical_high",
        ),
    ] {
        let mut bad = defaults.clone();
        bad["default"][band][bound] = value.clone();
        let (status, v) = api
            .send(reqwest::Method::PUT, "/thresholds", &bad, Some(&api.token))
            .await;
        assert_eq!((status, v["field"].as_str()), (400, Some(field)), "{v}");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains("is outside") && error.len() < 200, "{error}");
    }
    assert_eq!(api.thresholds().await.1, defaults);

    // The same kind of document published by an account that may (operator).
    let mut bad = defaults.clone();
    bad["default"]["temp"]["critical_high"] = json!(1e308);
    bad["debounce"] = json!(1);
    publish_all(
        &broker,
        "operator",
        &[("entrepot/config/thresholds".into(), bad.to_string())],
        QoS::AtLeastOnce,
    )
    .await;
    eventually(
        "ingest to refuse the retained thresholds",
        Duration::from_secs(10),
        || async {
            (ingest.metric(r#"arng_ingest_rejected_total{reason="invalid_thresholds"}"#) >= 1.0)
                .then_some(())
        },
    )
    .await;
    ingest.wait_for_log("default.temp.critical_high", 1, Duration::from_secs(5));
    assert!(!ingest.log().contains("applying new thresholds"));
    eventually(
        "the dead letter in InfluxDB",
        Duration::from_secs(15),
        || async {
            (count_points(
                &db,
                "deadletters",
                "size",
                r#"r.reason == "invalid_thresholds""#,
            )
            .await
                >= 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(api.thresholds().await, ("default".to_owned(), defaults));

    // Alerting is still on, with the defaults (debounce 3, critical above 30 °C).
    let t0 = now_ms() - 3_000;
    let hot: Vec<_> = (0..3)
        .map(|i| reading_msg("nord", "s1", i, t0 + i as i64 * 1000, 31.0))
        .collect();
    publish_all(&broker, "simulator", &hot, QoS::AtLeastOnce).await;
    api.wait_for_alerts("zone=nord&severity=critical", 1).await;
}

/// A reading and a heartbeat dated 2099, and a valid reading dated 29 minutes back,
/// among a steady flow of normal readings: `last_seen` stays today, `age_s` is never
/// negative, and the e2e latency indicator stays green although ingest counted a lag
/// of 29 minutes (issue 15: it turned red with "p99 1,722 s").
#[tokio::test(flavor = "multi_thread")]
async fn odd_timestamps_do_not_move_freshness_or_the_latency_indicator() {
    let broker = std::sync::Arc::new(Mosquitto::start());
    let db = Influxd::start();
    let _ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);
    let api = Api::new(&serve);

    // A steady sensor: one reading a second, a heartbeat every 5 s.
    let flow = tokio::spawn({
        let broker = broker.clone();
        async move {
            for seq in 0.. {
                let now = now_ms();
                let mut msgs = vec![reading_msg("nord", "s1", seq, now, 21.0)];
                if seq % 5 == 0 {
                    msgs.push((
                        "entrepot/heartbeat/nord".into(),
                        format!(r#"{{"zone":"nord","timestamp":"{}","sensors":1}}"#, ts(now)),
                    ));
                }
                publish_all(&broker, "simulator", &msgs, QoS::AtLeastOnce).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let indicator_ok = |text: &str, name: &str| {
        gauge(text, &format!(r#"arng_indicator_ok{{indicator="{name}"}}"#)) == Some(1.0)
    };
    eventually(
        "the latency and heartbeat indicators green",
        Duration::from_secs(60),
        || async {
            let t = api.metrics().await;
            (indicator_ok(&t, "e2e_latency") && indicator_ok(&t, "heartbeat_freshness"))
                .then_some(())
        },
    )
    .await;

    let far = chrono::DateTime::parse_from_rfc3339("2099-12-31T23:59:59Z")
        .unwrap()
        .timestamp_millis();
    let odd = vec![
        reading_msg("nord", "s2", 0, now_ms() - 29 * 60_000, 20.0),
        reading_msg("nord", "s3", 0, far, 20.0),
        (
            "entrepot/heartbeat/nord".into(),
            format!(r#"{{"zone":"nord","timestamp":"{}","sensors":1}}"#, ts(far)),
        ),
    ];
    publish_all(&broker, "simulator", &odd, QoS::AtLeastOnce).await;
    // Ingest counted the late reading's lag (it is in its report)...
    eventually(
        "ingest's report with the 29-minute lag",
        Duration::from_secs(30),
        || async {
            let n = count_points(&db, "ingest", "lag_max_s", "r._value > 1700.0").await;
            (n >= 1).then_some(())
        },
    )
    .await;
    // ...and for the next two evaluations (every 10 s) every indicator stays green.
    let until = Instant::now() + Duration::from_secs(22);
    while Instant::now() < until {
        let t = api.metrics().await;
        assert!(indicator_ok(&t, "e2e_latency"), "{t}");
        let p99 = gauge(&t, "arng_indicator_e2e_latency_p99_seconds").unwrap();
        assert!(p99 < 5.0, "p99 {p99}\n{t}");
        assert!(indicator_ok(&t, "heartbeat_freshness"), "{t}");
        let (_, zones) = api.get("/zones").await;
        let nord = &zones[0];
        assert_eq!(nord["zone"], "nord", "{zones}");
        let last_seen = nord["last_seen"].as_str().unwrap();
        assert!(last_seen < ts(now_ms() + 60_000).as_str(), "{zones}");
        let age = nord["heartbeat"]["age_s"].as_f64().unwrap();
        assert!((0.0..30.0).contains(&age), "{zones}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The 2099 reading is in neither side of the zone's view.
    let (_, latest) = api.get("/zones/nord/latest").await;
    let sensors: Vec<&str> = latest["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sensor"].as_str().unwrap())
        .collect();
    assert!(!sensors.contains(&"s3"), "{latest}");
    assert!(
        latest["heartbeat"]["age_s"].as_f64().unwrap() >= 0.0,
        "{latest}"
    );
    flow.abort();
}

/// The e2e probe of `arng check-e2e` is no sensor of the warehouse: hidden from the
/// lab's routes and the live stream, shown with `include_probe=true`.
#[tokio::test(flavor = "multi_thread")]
async fn the_probe_is_hidden_from_the_lab_views_unless_asked() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let _ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);
    let api = Api::new(&serve);
    let now = now_ms();
    publish_all(
        &broker,
        "simulator",
        &[
            reading_msg("nord", "s1", 0, now - 1000, 21.0),
            reading_msg("nord", "e2e-probe", 7, now - 1000, 15.0),
            reading_msg("sud", "e2e-probe", 8, now - 1000, 15.0),
        ],
        QoS::AtLeastOnce,
    )
    .await;
    let sensors = |v: &Value| -> Vec<String> {
        v["sensors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["sensor"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let with_probe = eventually(
        "both sensors of nord stored",
        Duration::from_secs(20),
        || async {
            let (_, v) = api.get("/zones/nord/latest?include_probe=true").await;
            v["sensors"]
                .as_array()
                .is_some_and(|a| a.len() == 2 && a.iter().all(|s| !s["influx"].is_null()))
                .then_some(v)
        },
    )
    .await;
    assert_eq!(sensors(&with_probe), ["e2e-probe", "s1"]);
    let (status, v) = api.get("/zones/nord/latest").await;
    assert_eq!((status, sensors(&v)), (200, vec!["s1".to_owned()]), "{v}");
    let (_, v) = api.get("/zones/nord/latest?source=influx").await;
    assert_eq!(sensors(&v), ["s1"], "{v}");
    let (_, v) = api
        .get("/zones/nord/latest?source=influx&include_probe=1")
        .await;
    assert_eq!(sensors(&v), ["e2e-probe", "s1"], "{v}");
    // A zone only the probe has spoken in is not a zone of the warehouse.
    assert_eq!(api.get("/zones/sud/latest").await.0, 404);
    assert_eq!(api.get("/zones/sud/latest?include_probe=true").await.0, 200);
    let (_, zones) = api.get("/zones").await;
    assert_eq!(
        zones,
        json!([{"zone": "nord", "sensors": 1, "last_seen": ts(now - 1000), "alert_level": "normal",
                "heartbeat": {"last_mqtt": null, "last_influx": null, "age_s": null}}])
    );
    let (_, zones) = api.get("/zones?include_probe=true").await;
    assert_eq!(zones.as_array().unwrap().len(), 2, "{zones}");
    assert_eq!(zones[0]["sensors"], 2, "{zones}");
    let series = |v: &Value| -> Vec<String> {
        v["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sensor"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, h) = api.get("/zones/nord/history?range=1h").await;
    assert_eq!(series(&h), ["s1"], "{h}");
    let (_, h) = api
        .get("/zones/nord/history?range=1h&include_probe=true")
        .await;
    assert_eq!(series(&h), ["e2e-probe", "s1"], "{h}");
    let (status, v) = api.get("/zones?include_probe=maybe").await;
    assert_eq!((status, v["field"].as_str()), (400, Some("include_probe")));

    // Alerts about the probe (check-e2e raises one on purpose).
    let (status, v) = api
        .send(
            reqwest::Method::POST,
            "/alerts",
            &json!({"zone": "nord", "sensor": "e2e-probe", "severity": "critical", "message": "probe"}),
            Some(&api.token),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = api
        .send(
            reqwest::Method::POST,
            "/alerts",
            &json!({"zone": "nord", "severity": "warning", "message": "door"}),
            Some(&api.token),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let messages = |v: &Value| -> Vec<String> {
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["message"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(messages(&api.get("/alerts?zone=nord").await.1), ["door"]);
    let mut all = messages(&api.get("/alerts?zone=nord&include_probe=true").await.1);
    all.sort();
    assert_eq!(all, ["door", "probe"]);

    // The live stream: the probe's readings only for whoever asks.
    let plain = api.events("", Duration::from_secs(4));
    let asked = api.events("?include_probe=true", Duration::from_secs(4));
    tokio::time::sleep(Duration::from_secs(1)).await;
    publish_all(
        &broker,
        "simulator",
        &[
            reading_msg("nord", "e2e-probe", 9, now_ms(), 15.0),
            reading_msg("nord", "s1", 1, now_ms(), 21.5),
        ],
        QoS::AtLeastOnce,
    )
    .await;
    let (plain, asked) = (plain.await.unwrap(), asked.await.unwrap());
    assert!(
        plain.contains(r#""sensor":"s1""#) && !plain.contains("e2e-probe"),
        "{plain}"
    );
    assert!(
        asked.contains(r#""sensor":"s1""#) && asked.contains(r#""sensor":"e2e-probe""#),
        "{asked}"
    );
}

fn alert(source: AlertSource, message: &str) -> Alert {
    let t = chrono::DateTime::from_timestamp_millis(now_ms()).unwrap();
    let zone = Zone::new("nord").unwrap();
    let sensor = SensorId::new("s1").unwrap();
    Alert {
        version: 1,
        id: Alert::make_id(source, &zone, Some(&sensor), AlertKind::Temp, t),
        zone,
        sensor: Some(sensor),
        metric: AlertKind::Temp,
        severity: AlertLevel::Critical,
        state: AlertState::Raised,
        value: Some(31.0),
        threshold: Some(30.0),
        source,
        message: message.into(),
        timestamp: t,
    }
}

/// Only the services may publish on `entrepot/alerts/<zone>` (ACL), and readers refuse
/// an alert whose source its topic does not allow: a sensor or simulator account
/// cannot make an alert look like one of ingest's rules.
#[tokio::test(flavor = "multi_thread")]
async fn sensor_accounts_cannot_forge_an_ingest_alert() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);
    let api = Api::new(&serve);
    api.make_zone_known(&broker, "nord").await;
    let watcher = tokio::spawn(collect_topic(
        mqtt_args(&broker, "operator"),
        "entrepot/alerts/#".into(),
        Duration::from_secs(5),
    ));
    let events = api.events("", Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(700)).await;

    let forged = alert(AlertSource::Ingest, "forged").to_json();
    let by_sensor = alert(AlertSource::Sensor, "from the sensor").to_json();
    let by_ingest = alert(AlertSource::Ingest, "from ingest").to_json();
    for (account, topic, payload) in [
        ("simulator", "entrepot/alerts/nord", &forged),
        ("sensor-nord", "entrepot/alerts/nord", &forged),
        ("sensor-nord", "entrepot/alerts/nord/sensor", &by_sensor),
        ("simulator", "entrepot/alerts/nord/sensor", &forged),
        ("simulator", "entrepot/alerts/nord/sensor", &by_sensor),
        ("ingest", "entrepot/alerts/nord", &by_ingest),
    ] {
        publish_all(
            &broker,
            account,
            &[(topic.to_owned(), payload.clone())],
            QoS::AtLeastOnce,
        )
        .await;
    }
    let seen: Vec<(String, String)> = watcher
        .await
        .unwrap()
        .into_iter()
        .map(|(t, p)| {
            let a: Value = serde_json::from_str(&p).unwrap();
            (t, a["message"].as_str().unwrap().to_owned())
        })
        .collect();
    // The broker dropped the writes outside each account's rights.
    assert_eq!(
        seen,
        [
            (
                "entrepot/alerts/nord/sensor".to_owned(),
                "forged".to_owned()
            ),
            (
                "entrepot/alerts/nord/sensor".to_owned(),
                "from the sensor".to_owned()
            ),
            ("entrepot/alerts/nord".to_owned(), "from ingest".to_owned()),
        ]
    );
    // The forgery that got through is refused by ingest and by serve.
    eventually(
        "ingest to refuse the forged alert",
        Duration::from_secs(10),
        || async {
            (ingest.metric(r#"arng_ingest_rejected_total{reason="source_mismatch"}"#) == 1.0)
                .then_some(())
        },
    )
    .await;
    let stream = events.await.unwrap();
    assert!(
        stream.contains("from the sensor") && stream.contains("from ingest"),
        "{stream}"
    );
    assert!(!stream.contains("forged"), "{stream}");
    // The sensor's own alert is stored with its source; the forged one is not.
    // (Ingest handles messages in order: the forgery was refused before this one.)
    let stored = api.wait_for_alerts("zone=nord", 1).await;
    let shown: Vec<(&str, &str)> = stored
        .iter()
        .map(|a| {
            (
                a["source"].as_str().unwrap(),
                a["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, [("sensor", "from the sensor")]);
}

/// Every error is a JSON object with an `error` message that says what happened,
/// including those hyper answers by itself; the bearer scheme is case-insensitive;
/// alerts for zones nobody knows, or dated ahead of the clock, are refused.
#[tokio::test(flavor = "multi_thread")]
async fn errors_say_what_happened_in_json() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let serve = ServeProc::start(&broker, &db, &[]);
    let api = Api::new(&serve);
    api.make_zone_known(&broker, "nord").await;

    // Answered by hyper before any route: a 100 KB path, 1 MB of headers, garbage.
    let long = format!(
        "GET /zones/{}/latest HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(100_000)
    );
    let (status, head, body) = raw_http(serve.port, long.as_bytes());
    assert_eq!(status, 414, "{head}");
    let v = json_error(&head, &body);
    assert!(v["error"].as_str().unwrap().contains("too long"), "{v}");
    // Over twice hyper's read buffer (~408 KiB): one read may take the buffer from
    // just under its limit to twice it, and a header that is complete by then is
    // parsed (500 KB got a 200 on a loaded machine).
    let big = format!(
        "GET /zones HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(1_000_000)
    );
    let (status, head, body) = raw_http(serve.port, big.as_bytes());
    assert_eq!(status, 431, "{head}");
    json_error(&head, &body);
    let (status, head, body) = raw_http(serve.port, b"GET /zones HTTP/1.1\r\nHost\r\n\r\n");
    assert_eq!(status, 400, "{head}");
    json_error(&head, &body);
    // A keep-alive connection still answers normally (the rewrite touches nothing else).
    let (status, head, body) = raw_http(
        serve.port,
        b"GET /zones/Nord/latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400, "{head}");
    assert_eq!(json_error(&head, &body)["field"], "zone");

    // A body over 64 KiB sent without a length: refused while it streams.
    let mut chunked = format!(
        "POST /alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        api.token
    )
    .into_bytes();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 8192, " ".repeat(8192)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, head, body) = raw_http(serve.port, &chunked);
    assert_eq!(status, 413, "{head}");
    let v = json_error(&head, &body);
    assert_eq!(v["field"], "body", "{v}");
    assert!(v["error"].as_str().unwrap().contains("64 KiB"), "{v}");
    // The same with a Content-Length: refused before it is read, same body.
    let r = api
        .http
        .post(format!("{}/alerts", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body(vec![b' '; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.json::<Value>().await.unwrap(), v);
    // Refused before its body is read (no token): answered, and the client's next
    // request on its pool works (the refused connection was closed, not reused).
    let r = api
        .http
        .post(format!("{}/alerts", api.base))
        .header("content-type", "application/json")
        .body(vec![b' '; 60_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(api.get("/zones").await.0, 200);

    // The bearer scheme in any case (RFC 7235).
    let ok_alert = json!({"zone": "nord", "severity": "warning", "message": "m"});
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let (status, v) = api
            .send_authorized(
                reqwest::Method::POST,
                "/alerts",
                &ok_alert,
                Some(&format!("{scheme} {}", api.token)),
            )
            .await;
        assert_eq!(status, 201, "{scheme}: {v}");
    }
    let (status, v) = api
        .send_authorized(
            reqwest::Method::POST,
            "/alerts",
            &ok_alert,
            Some(&format!("Basic {}", api.token)),
        )
        .await;
    assert_eq!((status, v["field"].as_str()), (401, Some("authorization")));

    // Alerts: an unknown zone, a message too long, a time ahead of the clock.
    let (status, v) = api
        .send(
            reqwest::Method::POST,
            "/alerts",
            &json!({"zone": "ouest", "severity": "critical"}),
            Some(&api.token),
        )
        .await;
    assert_eq!((status, v["field"].as_str()), (404, Some("zone")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("unknown"), "{v}");
    assert_eq!(
        api.get("/alerts?zone=ouest").await,
        (200, json!({"alerts": []}))
    );
    let (status, v) = api
        .send(
            reqwest::Method::POST,
            "/alerts",
            &json!({"zone": "nord", "severity": "critical", "message": "x".repeat(501)}),
            Some(&api.token),
        )
        .await;
    assert_eq!((status, v["field"].as_str()), (400, Some("message")), "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("501 characters, longer than the 500"),
        "{v}"
    );
    for (ahead_ms, expected) in [(60_000, 201), (3_600_000, 400)] {
        let body =
            json!({"zone": "nord", "severity": "warning", "timestamp": ts(now_ms() + ahead_ms)});
        let (status, v) = api
            .send(reqwest::Method::POST, "/alerts", &body, Some(&api.token))
            .await;
        assert_eq!(status, expected, "{ahead_ms}: {v}");
    }
    // A zone known only by its thresholds.
    let mut t = serde_json::to_value(arng::domain::Thresholds::default()).unwrap();
    t["zones"]["froid"] = t["default"].clone();
    let (status, v) = api
        .send(reqwest::Method::PUT, "/thresholds", &t, Some(&api.token))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api
        .send(
            reqwest::Method::POST,
            "/alerts",
            &json!({"zone": "froid", "severity": "warning"}),
            Some(&api.token),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    // `since` says which forms it accepts.
    let (status, v) = api.get("/alerts?since=2026-01-01T00:00:00").await;
    assert_eq!((status, v["field"].as_str()), (400, Some("since")), "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("no UTC offset") && e.contains("2026-01-01T00:00:00Z"),
        "{e}"
    );
    let (_, v) = api.get("/alerts?since=yesterday").await;
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("RFC 3339") && e.contains("duration"), "{e}");
}
