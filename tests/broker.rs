//! The broker configuration as shipped (mosquitto-conf/), exercised with a real
//! Mosquitto: every profile starts and carries an authenticated round trip, logins
//! and the ACL refuse what they should, wildcards deliver exactly the expected
//! topics, and retained heartbeats reach late subscribers, even after a restart.
//!
//! Every wait is bounded (`STEP`), so a broken broker fails a test instead of
//! hanging it; a failing test prints the broker's log (see common::mosquitto).

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::mosquitto::{account, Mosquitto};
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions,
    Packet, Publish, QoS, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Longest wait for any single answer from the broker.
const STEP: Duration = Duration::from_secs(5);
/// Silence that ends a collection of deliveries: long enough for a loopback broker
/// to deliver anything still in flight.
const QUIET: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------
// Every profile starts and carries an authenticated round trip.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reference_config_round_trip() {
    round_trip("mosquitto.conf", QoS::AtLeastOnce, QoS::ExactlyOnce).await;
}

#[tokio::test]
async fn qos0_profile_round_trip() {
    round_trip("qos0.conf", QoS::AtMostOnce, QoS::AtMostOnce).await;
}

#[tokio::test]
async fn qos1_profile_round_trip() {
    round_trip("qos1.conf", QoS::AtLeastOnce, QoS::AtLeastOnce).await;
}

#[tokio::test]
async fn qos2_profile_round_trip() {
    round_trip("qos2.conf", QoS::ExactlyOnce, QoS::ExactlyOnce).await;
}

/// A sensor publishes a reading at `qos`; an operator subscribed with QoS 2 gets it.
/// The QoS the broker grants to that subscription shows the profile's `max_qos`.
async fn round_trip(conf: &str, qos: QoS, max_qos: QoS) {
    let broker = Mosquitto::start_with(conf);
    let mut operator = connect(&broker, "operator").await;
    let granted = operator
        .subscribe("entrepot/nord/+/v1", QoS::ExactlyOnce)
        .await;
    assert_eq!(
        granted,
        SubscribeReasonCode::Success(max_qos),
        "{conf}: granted QoS"
    );

    let mut sensor = connect(&broker, "sensor-nord").await;
    let reading = r#"{"timestamp":"2026-01-01T00:00:00Z","temp":21.5,"hum":40.0,"alert_level":"ok","version":1}"#;
    sensor
        .publish("entrepot/nord/s1/v1", qos, false, reading)
        .await;

    let got = operator.next_publish(STEP).await;
    let got = got.unwrap_or_else(|| panic!("{conf}: the reading never reached the operator"));
    assert_eq!(got.topic, "entrepot/nord/s1/v1");
    assert_eq!(got.payload.as_ref(), reading.as_bytes());
    assert_eq!(got.qos, qos, "{conf}: delivered QoS");
}

#[tokio::test]
async fn qos0_profile_disconnects_a_qos1_publisher() {
    let broker = Mosquitto::start_with("qos0.conf");
    let mut operator = connect(&broker, "operator").await;
    operator.subscribe("entrepot/#", QoS::AtMostOnce).await;
    let mut sensor = connect(&broker, "sensor-nord").await;

    sensor
        .send("entrepot/nord/s1/v1", QoS::AtLeastOnce, false, "q1")
        .await;

    assert!(
        sensor.closed_within(STEP).await,
        "max_qos 0 should close the connection"
    );
    assert_eq!(operator.topics_until_quiet().await, Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

#[tokio::test]
async fn wrong_password_and_unknown_user_are_refused() {
    let broker = Mosquitto::start();
    // Mosquitto answers 5 "not authorised" to bad credentials with MQTT 3.1.1,
    // not 4 "bad user name or password" (observed with 2.0.11).
    let code = refusal(&broker, Some(("operator", "not-the-password"))).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    let code = refusal(&broker, Some(("intruder", "operator-dev"))).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
}

#[tokio::test]
async fn anonymous_client_is_refused() {
    let broker = Mosquitto::start();
    assert_eq!(
        refusal(&broker, None).await,
        ConnectReturnCode::NotAuthorized
    );
}

// ---------------------------------------------------------------------------
// ACL
// ---------------------------------------------------------------------------

/// The Mosquitto subtlety the ACL documents: with MQTT 3.1.1 a publish the account
/// may not write is acknowledged (PUBACK) and then silently dropped.
#[tokio::test]
async fn sensor_cannot_publish_into_another_zone() {
    let broker = Mosquitto::start();
    let mut operator = connect(&broker, "operator").await;
    operator.subscribe("entrepot/#", QoS::AtLeastOnce).await;
    let mut sensor = connect(&broker, "sensor-nord").await;

    // `publish` waits for the PUBACK: both are acknowledged.
    sensor
        .publish("entrepot/sud/s1/v1", QoS::AtLeastOnce, false, "{}")
        .await;
    sensor
        .publish("entrepot/nord/s1/v1", QoS::AtLeastOnce, false, "{}")
        .await;

    assert_eq!(operator.topics_until_quiet().await, ["entrepot/nord/s1/v1"]);
}

/// Who may write what, one publish per line, all watched by an operator on
/// `entrepot/#`. Mirrors the table in docs/broker.md.
#[tokio::test]
async fn accounts_write_only_their_topics() {
    const CASES: &[(&str, &str, bool)] = &[
        ("sensor-nord", "entrepot/nord/s1/v1", true),
        ("sensor-nord", "entrepot/sud/s1/v1", false),
        ("sensor-nord", "entrepot/heartbeat/nord", true),
        ("sensor-nord", "entrepot/status/sensor-nord", true),
        ("sensor-nord", "entrepot/heartbeat/sud", false),
        ("sensor-nord", "entrepot/status/sensor-sud", false),
        ("sensor-nord", "entrepot/alerts/nord", false),
        ("sensor-nord", "entrepot/alerts/nord/sensor", false),
        ("sensor-nord", "entrepot/config/thresholds", false),
        ("sensor-nord", "entrepot/nord/s1/v2", false),
        ("sensor-sud", "entrepot/sud/s1/v1", true),
        ("sensor-sud", "entrepot/est/s1/v1", false),
        ("sensor-est", "entrepot/est/s1/v1", true),
        ("sensor-est", "entrepot/heartbeat/est", true),
        ("simulator", "entrepot/est/s7/v1", true),
        ("simulator", "entrepot/heartbeat/sud", true),
        ("simulator", "entrepot/status/sensor-sud", true),
        // Only the services write the alerts branch; the simulator's sensors raise
        // theirs on the sensors' topic (docs/decisions.md, 12).
        ("simulator", "entrepot/alerts/est", false),
        ("simulator", "entrepot/alerts/est/sensor", true),
        ("simulator", "entrepot/alerts/est/ingest", false),
        ("simulator", "entrepot/config/thresholds", false),
        ("simulator", "entrepot/deadletter/bad-json", false),
        ("ingest", "entrepot/alerts/sud", true),
        ("ingest", "entrepot/deadletter/bad-json", true),
        ("ingest", "entrepot/status/ingest", true),
        ("ingest", "entrepot/config/thresholds", true),
        ("ingest", "entrepot/nord/s1/v1", false),
        ("ingest", "entrepot/status/api", false),
        ("api", "entrepot/alerts/nord", true),
        ("api", "entrepot/alerts/nord/sensor", false),
        ("api", "entrepot/config/thresholds", true),
        ("api", "entrepot/status/api", true),
        ("api", "entrepot/nord/s1/v1", false),
        ("api", "entrepot/deadletter/bad-json", false),
        ("operator", "entrepot/nord/s9/v1", true),
    ];
    let broker = Mosquitto::start();
    let mut watcher = connect(&broker, "operator").await;
    watcher.subscribe("entrepot/#", QoS::AtLeastOnce).await;

    for (user, topic, _) in CASES {
        let mut client = connect(&broker, user).await;
        client.publish(topic, QoS::AtLeastOnce, false, user).await;
    }

    let mut delivered = BTreeSet::new();
    while let Some(publish) = watcher.next_publish(QUIET).await {
        let from = String::from_utf8_lossy(&publish.payload).into_owned();
        delivered.insert((from, publish.topic));
    }
    let expected: BTreeSet<_> = CASES
        .iter()
        .filter(|(_, _, allowed)| *allowed)
        .map(|(user, topic, _)| (user.to_string(), topic.to_string()))
        .collect();
    let leaked: Vec<_> = delivered.difference(&expected).collect();
    let blocked: Vec<_> = expected.difference(&delivered).collect();
    assert!(
        leaked.is_empty() && blocked.is_empty(),
        "(account, topic) delivered although denied: {leaked:?}; \
         allowed but never delivered: {blocked:?}"
    );
}

/// Reading is checked per delivered message: a sensor may subscribe to
/// `entrepot/#` but only ever receives the thresholds and the dead letters (so a
/// student with a sensor's account sees why a message was refused).
#[tokio::test]
async fn sensor_reads_only_the_thresholds_and_dead_letters() {
    let broker = Mosquitto::start();
    let mut sensor = connect(&broker, "sensor-nord").await;
    let granted = sensor.subscribe("entrepot/#", QoS::AtLeastOnce).await;
    assert_eq!(granted, SubscribeReasonCode::Success(QoS::AtLeastOnce));

    let mut operator = connect(&broker, "operator").await;
    for topic in [
        "entrepot/nord/s1/v1",
        "entrepot/alerts/nord",
        "entrepot/config/thresholds",
        "entrepot/heartbeat/sud",
        "entrepot/deadletter/missing_field",
    ] {
        operator.publish(topic, QoS::AtLeastOnce, false, "{}").await;
    }

    assert_eq!(
        sensor.topics_until_quiet().await,
        [
            "entrepot/config/thresholds",
            "entrepot/deadletter/missing_field"
        ]
    );
}

// ---------------------------------------------------------------------------
// Wildcards and retained messages
// ---------------------------------------------------------------------------

#[tokio::test]
async fn plus_and_hash_subscriptions_receive_the_expected_topics() {
    const PUBLISHED: &[&str] = &[
        "entrepot/nord/s1/v1",
        "entrepot/nord/s2/v1",
        "entrepot/sud/s1/v1",
        "entrepot/est/s1/v1",
        "entrepot/nord/s1/v2",     // another payload version
        "entrepot/nord/s1/v1/raw", // one level too deep for `+/+/v1`
        "entrepot/heartbeat/nord",
        "entrepot/alerts/nord",
        "entrepot/config/thresholds",
        "entrepot", // `entrepot/#` also matches its parent
    ];
    let broker = Mosquitto::start();
    let mut all_readings = connect(&broker, "operator").await;
    all_readings
        .subscribe("entrepot/+/+/v1", QoS::AtLeastOnce)
        .await;
    let mut nord_readings = connect(&broker, "operator").await;
    nord_readings
        .subscribe("entrepot/nord/+/v1", QoS::AtLeastOnce)
        .await;
    let mut everything = connect(&broker, "operator").await;
    everything.subscribe("entrepot/#", QoS::AtLeastOnce).await;

    let mut publisher = connect(&broker, "operator").await;
    for topic in PUBLISHED {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, "{}")
            .await;
    }

    assert_eq!(
        sorted(all_readings.topics_until_quiet().await),
        [
            "entrepot/est/s1/v1",
            "entrepot/nord/s1/v1",
            "entrepot/nord/s2/v1",
            "entrepot/sud/s1/v1"
        ]
    );
    assert_eq!(
        sorted(nord_readings.topics_until_quiet().await),
        ["entrepot/nord/s1/v1", "entrepot/nord/s2/v1"]
    );
    assert_eq!(
        sorted(everything.topics_until_quiet().await),
        sorted(PUBLISHED.iter().map(|t| t.to_string()).collect())
    );
}

#[tokio::test]
async fn retained_heartbeat_reaches_late_subscribers_and_survives_a_restart() {
    let heartbeat = r#"{"zone":"nord","timestamp":1767225600}"#;
    let mut broker = Mosquitto::start();
    {
        let mut sensor = connect(&broker, "sensor-nord").await;
        // QoS 1 (sensors may use 0) so the PUBACK proves the broker has it before
        // anyone subscribes.
        sensor
            .publish("entrepot/heartbeat/nord", QoS::AtLeastOnce, true, heartbeat)
            .await;
    }

    assert_retained_heartbeat(&broker, heartbeat, "late subscriber").await;
    broker.restart(); // a clean stop saves the persistence database
    assert_retained_heartbeat(&broker, heartbeat, "after a restart").await;
}

async fn assert_retained_heartbeat(broker: &Mosquitto, heartbeat: &str, moment: &str) {
    let mut late = connect(broker, "operator").await;
    late.subscribe("entrepot/heartbeat/+", QoS::AtLeastOnce)
        .await;
    let got = late.next_publish(STEP).await;
    let got = got.unwrap_or_else(|| panic!("{moment}: no retained heartbeat"));
    assert_eq!(got.topic, "entrepot/heartbeat/nord", "{moment}");
    assert_eq!(got.payload.as_ref(), heartbeat.as_bytes(), "{moment}");
    assert!(got.retain, "{moment}: delivered without the retain flag");
}

// ---------------------------------------------------------------------------
// A small MQTT client for the tests
// ---------------------------------------------------------------------------

/// A connected client whose event loop runs in its own task and forwards every
/// incoming packet; the channel closes when the connection ends.
struct Client {
    mqtt: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Packet>,
    /// Packets read while waiting for something else (e.g. before a SUBACK).
    pending: VecDeque<Packet>,
}

fn options(broker: &Mosquitto, credentials: Option<(&str, &str)>) -> MqttOptions {
    static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
    let id = format!("broker-test-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let mut options = MqttOptions::new(id, "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(10));
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password);
    }
    options
}

/// Polls a fresh event loop until the broker answers the CONNECT.
async fn connack(eventloop: &mut EventLoop) -> Result<ConnAck, ConnectionError> {
    let answer = timeout(STEP, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(ack)) = eventloop.poll().await? {
                return Ok(ack);
            }
        }
    });
    answer.await.expect("no CONNACK from the broker")
}

/// Connects with the development account `user`; panics unless accepted.
async fn connect(broker: &Mosquitto, user: &str) -> Client {
    let (user, password) = account(user);
    let credentials = Some((user.as_str(), password.as_str()));
    let (mqtt, mut eventloop) = AsyncClient::new(options(broker, credentials), 64);
    match connack(&mut eventloop).await {
        Ok(ack) if ack.code == ConnectReturnCode::Success => {}
        other => panic!("{user} could not connect: {other:?}"),
    }
    let (tx, incoming) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(packet) = event {
                if tx.send(packet).is_err() {
                    break;
                }
            }
        }
    });
    Client {
        mqtt,
        incoming,
        pending: VecDeque::new(),
    }
}

/// The return code of a CONNECT the broker must refuse.
async fn refusal(broker: &Mosquitto, credentials: Option<(&str, &str)>) -> ConnectReturnCode {
    let (_client, mut eventloop) = AsyncClient::new(options(broker, credentials), 8);
    match connack(&mut eventloop).await {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

impl Client {
    async fn next(&mut self, within: Duration) -> Option<Packet> {
        if let Some(packet) = self.pending.pop_front() {
            return Some(packet);
        }
        timeout(within, self.incoming.recv()).await.ok().flatten()
    }

    /// Waits for a packet `pick` accepts, keeping the others for later reads.
    async fn wait_for<T>(&mut self, what: &str, pick: impl Fn(&Packet) -> Option<T>) -> T {
        if let Some(i) = self.pending.iter().position(|p| pick(p).is_some()) {
            let packet = self.pending.remove(i).expect("index found above");
            return pick(&packet).expect("matched above");
        }
        let mut skipped = Vec::new();
        let found = timeout(STEP, async {
            while let Some(packet) = self.incoming.recv().await {
                match pick(&packet) {
                    Some(found) => return Some(found),
                    None => skipped.push(packet),
                }
            }
            None
        })
        .await;
        self.pending.extend(skipped);
        match found {
            Ok(Some(found)) => found,
            Ok(None) => panic!("connection closed while waiting for {what}"),
            Err(_) => panic!("no {what} within {STEP:?}"),
        }
    }

    /// Subscribes and returns what the SUBACK granted.
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        self.mqtt
            .subscribe(filter, qos)
            .await
            .expect("subscribe request");
        let codes = self
            .wait_for("SUBACK", |p| match p {
                Packet::SubAck(ack) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .await;
        codes[0]
    }

    /// Publishes without waiting for the broker.
    async fn send(&self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.mqtt
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await
            .expect("publish request");
    }

    /// Publishes and, for QoS 1/2, waits until the broker acknowledged it (PUBACK,
    /// or PUBCOMP). The acknowledgement says nothing about delivery: see the ACL.
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.send(topic, qos, retain, payload).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
                    .await
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |p| matches!(p, Packet::PubComp(_)).then_some(()))
                    .await
            }
        }
    }

    async fn next_publish(&mut self, within: Duration) -> Option<Publish> {
        loop {
            match self.next(within).await? {
                Packet::Publish(publish) => return Some(publish),
                _ => continue,
            }
        }
    }

    /// Topics of the messages delivered until the broker stays quiet for `QUIET`.
    async fn topics_until_quiet(&mut self) -> Vec<String> {
        let mut topics = Vec::new();
        while let Some(publish) = self.next_publish(QUIET).await {
            topics.push(publish.topic);
        }
        topics
    }

    /// Whether the broker closes this connection within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let closed = async { while self.incoming.recv().await.is_some() {} };
        timeout(within, closed).await.is_ok()
    }
}

fn sorted(mut topics: Vec<String>) -> Vec<String> {
    topics.sort();
    topics
}
