//! `arng simulate` against a real Mosquitto (the reference configuration): a
//! subscriber on `entrepot/#` records everything while the real binary runs, and the
//! tests check what arrived: one reading per sensor per interval with gap-free
//! sequence numbers, valid contract payloads, retained heartbeats on time, online and
//! offline status (clean stop and last will), faults and the heatwave scenario
//! producing the expected `alert_level` and alerts, reconnection after a broker
//! restart, bad usage (exit 2) and an unreachable broker (exit 1).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arng::domain::alert::{Alert, AlertSource, AlertState};
use arng::domain::payload::{AlertLevel, Heartbeat, Reading};
use arng::domain::{SensorId, Topic, Zone};
use chrono::{DateTime, Utc};
use common::mosquitto::{account, Mosquitto};
use common::{arng_bin, describe, eventually, free_port, run_arng};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Harness: a recording subscriber and the simulator as a child process
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: String,
    retain: bool,
}

/// A subscriber (account `operator`) that records every message it receives.
struct Recorder {
    messages: Arc<Mutex<Vec<Msg>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// Connects, subscribes to `filter` at QoS 1 and returns once the SUBACK is in.
    async fn start(broker: &Mosquitto, filter: &str) -> Recorder {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let (user, password) = account("operator");
        let id = format!("sim-test-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.port);
        options.set_credentials(user, password);
        options.set_keep_alive(Duration::from_secs(10));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let messages = messages.clone();
            async move {
                let _client = client; // keeps the request channel open
                let mut subscribed_tx = Some(subscribed_tx);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(tx) = subscribed_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            messages.lock().unwrap().push(Msg {
                                topic: p.topic.clone(),
                                payload: String::from_utf8_lossy(&p.payload).into_owned(),
                                retain: p.retain,
                            });
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        });
        tokio::time::timeout(PATIENCE, subscribed)
            .await
            .expect("no SUBACK for the recorder")
            .unwrap();
        Recorder { messages, task }
    }

    fn messages(&self) -> Vec<Msg> {
        self.messages.lock().unwrap().clone()
    }

    fn on(&self, topic: &str) -> Vec<Msg> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Waits until a message on `topic` with `payload` has arrived.
    async fn wait_for(&self, topic: &str, payload: &str) {
        eventually(&format!("{payload:?} on {topic}"), PATIENCE, || async {
            self.on(topic)
                .iter()
                .any(|m| m.payload == payload)
                .then_some(())
        })
        .await
    }

    /// Every reading received, parsed with the contract's parser (panics otherwise),
    /// per (zone, sensor), in arrival order.
    fn readings(&self) -> BTreeMap<(String, String), Vec<Reading>> {
        let mut out: BTreeMap<(String, String), Vec<Reading>> = BTreeMap::new();
        for m in self.messages() {
            if let Ok(Topic::Reading { zone, sensor }) = Topic::parse(&m.topic) {
                assert!(!m.retain, "reading delivered as retained: {m:?}");
                let r = Reading::parse(&zone, &sensor, m.payload.as_bytes()).unwrap_or_else(|e| {
                    panic!("invalid reading on {}: {e}: {}", m.topic, m.payload)
                });
                out.entry((zone.to_string(), sensor.to_string()))
                    .or_default()
                    .push(r);
            }
        }
        out
    }

    fn alerts(&self, zone: &str) -> Vec<Alert> {
        let z = Zone::new(zone).unwrap();
        self.on(&format!("entrepot/alerts/{zone}/sensor"))
            .iter()
            .map(|m| {
                Alert::parse(&z, m.payload.as_bytes())
                    .unwrap_or_else(|e| panic!("invalid alert: {e}: {}", m.payload))
            })
            .collect()
    }
}

/// The environment for the simulator: the broker and an account.
fn env(broker: &Mosquitto, user: &str) -> Vec<(String, String)> {
    let (user, password) = account(user);
    vec![
        ("ARNG_MQTT_URL".into(), broker.url()),
        ("ARNG_MQTT_USERNAME".into(), user),
        ("ARNG_MQTT_PASSWORD".into(), password),
    ]
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Runs `arng` to completion without blocking the test's runtime.
async fn run(args: &[&str], env: &[(String, String)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env = env.to_vec();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_arng(&args, &env_refs(&env))
    });
    tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("arng simulate did not finish within 60 s")
        .unwrap()
}

/// Starts `arng` in the background (same clean environment as `run_arng`).
fn spawn(args: &[&str], env: &[(String, String)]) -> Child {
    let mut cmd = Command::new(arng_bin());
    for var in [
        "ARNG_MQTT_URL",
        "ARNG_MQTT_USERNAME",
        "ARNG_MQTT_PASSWORD",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start arng")
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} failed");
}

/// Waits for a background `arng` to exit (killing it after `within`).
async fn finish(child: Child, within: Duration) -> Output {
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(within, waited).await {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("arng (pid {pid}) did not exit within {within:?}");
        }
    }
}

/// With `child` publishing: waits for `before` readings, restarts the broker, waits
/// for `after` readings on the new one, then stops `child` with SIGTERM. Returns its
/// output and the recorder of the readings after the restart.
async fn restart_mid_run(
    broker: &mut Mosquitto,
    child: Child,
    before: usize,
    after: usize,
) -> (Output, Recorder) {
    {
        let early = Recorder::start(broker, "entrepot/#").await;
        eventually("readings before the restart", PATIENCE, || async {
            (early.readings().values().map(Vec::len).sum::<usize>() >= before).then_some(())
        })
        .await;
    }
    broker.restart();
    let late = Recorder::start(broker, "entrepot/+/+/v1").await;
    eventually("readings after the restart", PATIENCE, || async {
        (late.readings().values().map(Vec::len).sum::<usize>() >= after).then_some(())
    })
    .await;
    signal(&child, "-TERM");
    (finish(child, PATIENCE).await, late)
}

fn summary(args: &[&str], out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON summary ({e}): {}",
            describe(args, out)
        )
    })
}

fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    (b - a).num_milliseconds()
}

fn levels(readings: &[Reading]) -> Vec<AlertLevel> {
    readings.iter().map(|r| r.alert_level).collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_heartbeats_and_status_follow_the_contract() {
    let broker = Mosquitto::start();
    let live = Recorder::start(&broker, "entrepot/#").await;
    let args = [
        "simulate",
        "--zones",
        "nord,sud,est",
        "--sensors-per-zone",
        "2",
        "--interval",
        "200ms",
        "--count",
        "5",
        "--heartbeat-interval",
        "500ms",
        "--seed",
        "7",
        "--json",
    ];
    let out = run(&args, &env(&broker, "simulator")).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
    let ctx = describe(&args, &out);
    live.wait_for("entrepot/status/simulator", "offline").await;

    // Exactly one reading per sensor per interval: 3 zones x 2 sensors x 5.
    let readings = live.readings();
    assert_eq!(readings.len(), 6, "{readings:?}{ctx}");
    for ((zone, sensor), rs) in &readings {
        let seqs: Vec<u64> = rs.iter().map(|r| r.seq.unwrap()).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4], "{zone}/{sensor}{ctx}");
        // On schedule: reading m goes out m x 200 ms after the sensor's first one
        // (generous tolerance: a loaded machine delays a reading, the next catches up).
        for (m, r) in rs.iter().enumerate() {
            let late = ms_between(rs[0].timestamp, r.timestamp) - 200 * m as i64;
            assert!(
                late.abs() <= 150,
                "{zone}/{sensor} seq {m}: {late} ms off{ctx}"
            );
        }
        // Natural readings stay normal and inside the physical ranges.
        assert!(
            rs.iter().all(|r| r.alert_level == AlertLevel::Normal),
            "{rs:?}"
        );
        assert!(rs
            .iter()
            .all(|r| (-60.0..=100.0).contains(&r.temp) && (0.0..=100.0).contains(&r.hum)));
    }
    // The zones have their climate: nord colder than sud.
    let mean = |zone: &str| {
        let all: Vec<f64> = readings
            .iter()
            .filter(|((z, _), _)| z == zone)
            .flat_map(|(_, rs)| rs.iter().map(|r| r.temp))
            .collect();
        all.iter().sum::<f64>() / all.len() as f64
    };
    assert!(mean("nord") < mean("sud"), "{ctx}");
    assert!(live.alerts("nord").is_empty() && live.alerts("sud").is_empty());

    // Heartbeats: at start, then every 500 ms while the readings go out (~1 s).
    for zone in ["nord", "sud", "est"] {
        let z = Zone::new(zone).unwrap();
        let beats: Vec<Heartbeat> = live
            .on(&format!("entrepot/heartbeat/{zone}"))
            .iter()
            .map(|m| Heartbeat::parse(&z, m.payload.as_bytes()).unwrap())
            .collect();
        assert!(beats.len() >= 2, "{zone}: {beats:?}{ctx}");
        assert!(beats.iter().all(|b| b.sensors == Some(2)));
        for pair in beats.windows(2) {
            let gap = ms_between(pair[0].timestamp, pair[1].timestamp);
            assert!(
                (350..=900).contains(&gap),
                "{zone}: heartbeats {gap} ms apart{ctx}"
            );
        }
        // The first beat goes out at start, with the first readings.
        let first_reading = readings[&(zone.to_string(), "s1".to_string())][0].timestamp;
        assert!(
            ms_between(beats[0].timestamp, first_reading).abs() < 300,
            "{ctx}"
        );
    }

    // Status: online then offline (a clean stop publishes it; the will is not used).
    let status: Vec<String> = live
        .on("entrepot/status/simulator")
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(status, vec!["online", "offline"], "{ctx}");

    // A late subscriber gets the retained heartbeats and status.
    let late = Recorder::start(&broker, "entrepot/#").await;
    eventually("retained heartbeats and status", PATIENCE, || async {
        let got = late.messages();
        (got.len() >= 4).then_some(())
    })
    .await;
    let got = late.messages();
    let topics: BTreeSet<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        BTreeSet::from([
            "entrepot/heartbeat/est",
            "entrepot/heartbeat/nord",
            "entrepot/heartbeat/sud",
            "entrepot/status/simulator"
        ]),
        "{got:?}"
    );
    assert!(got.iter().all(|m| m.retain), "{got:?}");
    let last_live = live.on("entrepot/heartbeat/nord").pop().unwrap();
    let retained = late.on("entrepot/heartbeat/nord").pop().unwrap();
    assert_eq!(retained.payload, last_live.payload);
    assert_eq!(late.on("entrepot/status/simulator")[0].payload, "offline");

    // The summary matches what arrived.
    let s = summary(&args, &out);
    assert_eq!(s["readings"], 30, "{s}");
    assert_eq!(s["unacked"], 0, "{s}");
    assert_eq!(s["messages_sent"], s["messages_acked"], "{s}");
    assert_eq!(s["zones"]["sud"]["readings"], 10, "{s}");
    let beats: usize = ["nord", "sud", "est"]
        .iter()
        .map(|z| live.on(&format!("entrepot/heartbeat/{z}")).len())
        .sum();
    assert_eq!(s["heartbeats"], beats, "{s}");
    assert_eq!(s["seed"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_heatwave_produce_the_expected_levels_and_alerts() {
    let broker = Mosquitto::start();
    let live = Recorder::start(&broker, "entrepot/#").await;
    // 6 sensors spread over 200 ms in zone order: nord/s1 +0, nord/s2 +33, sud/s1
    // +67, sud/s2 +100, est/s1 +133, est/s2 +167 ms. Readings of cycle m are
    // scheduled at m*200 ms + offset, so:
    // - heatwave on sud from 400 ms: seq 2 is the first warning, critical 3
    //   intervals later (seq 5), until the end;
    // - spike on nord/s1 at 600 ms: seq 3 alone;
    // - dropout of est/s2 over [400, 800) ms: seqs 2 and 3 are never published.
    let args = [
        "simulate",
        "--zones",
        "nord,sud,est",
        "--sensors-per-zone",
        "2",
        "--interval",
        "200ms",
        "--count",
        "10",
        "--qos",
        "0",
        "--seed",
        "3",
        "--scenario",
        "heatwave:sud@400ms",
        "--fault",
        "spike:nord/s1@600ms",
        "--fault",
        "dropout:est/s2@400ms+400ms",
        "--json",
    ];
    let out = run(&args, &env(&broker, "simulator")).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
    let ctx = describe(&args, &out);
    live.wait_for("entrepot/status/simulator", "offline").await;
    let readings = live.readings();
    let of = |zone: &str, sensor: &str| readings[&(zone.to_string(), sensor.to_string())].clone();
    use AlertLevel::{Critical as C, Normal as N, Warning as W};

    // Heatwave: warning reached at START, critical at START + 3 intervals.
    for sensor in ["s1", "s2"] {
        let rs = of("sud", sensor);
        assert_eq!(
            levels(&rs),
            vec![N, N, W, W, W, C, C, C, C, C],
            "sud/{sensor}{ctx}"
        );
        assert!(rs[2].temp > 25.0 && rs[5].temp >= 30.0, "{rs:?}");
        // Topic side: raised warning at seq 2; at seq 5 the warning is cleared and a
        // critical raised, with the reading's value and time.
        let alerts: Vec<Alert> = live
            .alerts("sud")
            .into_iter()
            .filter(|a| a.sensor.as_ref().map(SensorId::as_str) == Some(sensor))
            .collect();
        let shape: Vec<(AlertState, AlertLevel, Option<f64>)> = alerts
            .iter()
            .map(|a| (a.state, a.severity, a.threshold))
            .collect();
        assert_eq!(
            shape,
            vec![
                (AlertState::Raised, W, Some(25.0)),
                (AlertState::Cleared, W, Some(25.0)),
                (AlertState::Raised, C, Some(30.0)),
            ],
            "sud/{sensor}: {alerts:?}"
        );
        assert!(alerts.iter().all(|a| a.source == AlertSource::Sensor));
        assert_eq!(alerts[0].timestamp, rs[2].timestamp);
        assert_eq!(alerts[0].value, Some(rs[2].temp));
        assert_eq!(alerts[2].timestamp, rs[5].timestamp);
        assert_eq!(alerts[1].id, alerts[0].id, "a clear carries its raise's id");
    }

    // Spike: one critical reading on nord/s1, raised then cleared; nord/s2 untouched.
    let s1 = of("nord", "s1");
    assert_eq!(levels(&s1), vec![N, N, N, C, N, N, N, N, N, N], "{ctx}");
    assert_eq!(s1[3].temp, 35.0);
    assert!(levels(&of("nord", "s2")).iter().all(|l| *l == N));
    let nord: Vec<(AlertState, AlertLevel)> = live
        .alerts("nord")
        .iter()
        .map(|a| (a.state, a.severity))
        .collect();
    assert_eq!(
        nord,
        vec![(AlertState::Raised, C), (AlertState::Cleared, C)]
    );

    // Dropout: est/s2's readings 2 and 3 are lost, its sequence shows the gap.
    let seqs: Vec<u64> = of("est", "s2").iter().map(|r| r.seq.unwrap()).collect();
    assert_eq!(seqs, vec![0, 1, 4, 5, 6, 7, 8, 9], "{ctx}");
    assert_eq!(of("est", "s1").len(), 10);
    assert!(live.alerts("est").is_empty());

    let s = summary(&args, &out);
    assert_eq!(s["readings"], 58, "{s}");
    assert_eq!(s["dropped"], 2, "{s}");
    assert_eq!(s["zones"]["sud"]["alerts"], 6, "{s}");
    assert_eq!(s["zones"]["nord"]["alerts"], 2, "{s}");
    assert_eq!(s["unacked"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_the_last_will_marks_a_crash() {
    let broker = Mosquitto::start();
    let live = Recorder::start(&broker, "entrepot/#").await;
    let env = env(&broker, "simulator");

    // No --count: runs until SIGTERM, then everything published is acknowledged.
    let args = [
        "simulate",
        "--zones",
        "nord,sud",
        "--sensors-per-zone",
        "3",
        "--interval",
        "100ms",
        "--json",
    ];
    let child = spawn(&args, &env);
    eventually("readings", PATIENCE, || async {
        (live.readings().values().map(Vec::len).sum::<usize>() >= 30).then_some(())
    })
    .await;
    signal(&child, "-TERM");
    let out = finish(child, PATIENCE).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
    live.wait_for("entrepot/status/simulator", "offline").await;
    let s = summary(&args, &out);
    assert_eq!(s["interrupted"], true, "{s}");
    assert_eq!(s["unacked"], 0, "{s}");
    // QoS 1: every reading the simulator counted reached the subscriber, in order.
    let readings = live.readings();
    let received: usize = readings.values().map(Vec::len).sum();
    assert_eq!(s["readings"], received, "{s}");
    for (key, rs) in &readings {
        let seqs: Vec<u64> = rs.iter().map(|r| r.seq.unwrap()).collect();
        let expected: Vec<u64> = (0..rs.len() as u64).collect();
        assert_eq!(seqs, expected, "{key:?}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signal received"), "{stderr}");

    // A crash (SIGKILL, no DISCONNECT): the broker publishes the last will.
    let crash = [
        "simulate",
        "--zones",
        "nord",
        "--interval",
        "100ms",
        "--client-id",
        "sim-crash",
    ];
    let child = spawn(&crash, &env);
    live.wait_for("entrepot/status/sim-crash", "online").await;
    signal(&child, "-KILL");
    let _ = finish(child, PATIENCE).await;
    live.wait_for("entrepot/status/sim-crash", "offline").await;
    let late = Recorder::start(&broker, "entrepot/status/sim-crash").await;
    late.wait_for("entrepot/status/sim-crash", "offline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_broker_restart_without_losing_readings() {
    let mut broker = Mosquitto::start();
    let env = env(&broker, "simulator");
    let args = [
        "simulate",
        "--zones",
        "nord",
        "--sensors-per-zone",
        "2",
        "--interval",
        "100ms",
        "--json",
    ];
    let (out, after) = restart_mid_run(&mut broker, spawn(&args, &env), 6, 10).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
    let s = summary(&args, &out);
    assert!(s["connections"][0]["reconnects"].as_u64() >= Some(1), "{s}");
    assert_eq!(s["unacked"], 0, "{s}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("retrying in"), "{stderr}");
    assert!(stderr.contains("reconnected"), "{stderr}");
    // Sequence numbers go on where they were (nothing restarted at 0; the first
    // may be a re-sent reading that was in flight during the restart).
    let readings = after.readings();
    for rs in readings.values() {
        assert!(rs[0].seq.unwrap() >= 1, "{rs:?}");
        for pair in rs.windows(2) {
            assert!(pair[1].seq > pair[0].seq, "{rs:?}");
        }
    }
    // The retained status says online again, then offline after the stop.
    let status = Recorder::start(&broker, "entrepot/status/simulator").await;
    status
        .wait_for("entrepot/status/simulator", "offline")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_zone_accounts_publish_under_their_own_names() {
    let broker = Mosquitto::start();
    let live = Recorder::start(&broker, "entrepot/#").await;
    let args = [
        "simulate",
        "--zones",
        "nord,sud",
        "--sensors-per-zone",
        "2",
        "--interval",
        "100ms",
        "--count",
        "3",
        "--mqtt-username",
        "sensor-{zone}",
        "--mqtt-password",
        "sensor-{zone}-dev",
        "--json",
    ];
    let env = vec![("ARNG_MQTT_URL".to_string(), broker.url())];
    let out = run(&args, &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
    for zone in ["nord", "sud"] {
        let topic = format!("entrepot/status/sensor-{zone}");
        live.wait_for(&topic, "offline").await;
        assert_eq!(live.on(&topic)[0].payload, "online");
    }
    // The ACL let each zone account publish its readings and heartbeat.
    let readings = live.readings();
    assert_eq!(readings.len(), 4, "{readings:?}");
    assert!(readings.values().all(|rs| rs.len() == 3));
    assert!(!live.on("entrepot/heartbeat/sud").is_empty());
    let s = summary(&args, &out);
    assert_eq!(s["connections"].as_array().unwrap().len(), 2, "{s}");
}

/// Issue 15: a zone account publishing another zone's readings. Mosquitto drops them
/// (ACL) and, to an MQTT 5 client, says so in the PUBACK (0x87 not authorized): the
/// run counts them per topic and ends with one line naming a topic, the count and the
/// account, instead of "all acknowledged".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_account_publishing_another_zone_is_refused_and_named() {
    let broker = Mosquitto::start();
    let live = Recorder::start(&broker, "entrepot/#").await;
    let args = [
        "simulate",
        "--zones",
        "nord,sud",
        "--sensors-per-zone",
        "2",
        "--interval",
        "100ms",
        "--count",
        "3",
        "--client-id",
        "sensor-nord",
        "--no-alerts",
        "--json",
    ];
    let out = run(&args, &env(&broker, "sensor-nord")).await;
    let ctx = describe(&args, &out);
    assert_eq!(out.status.code(), Some(1), "{ctx}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{ctx}");
    for needle in [
        "refused 6 message(s)",
        "3 on entrepot/sud/s",
        "for account sensor-nord",
        "not authorized",
    ] {
        assert!(errors[0].contains(needle), "{needle:?} missing{ctx}");
    }
    // Each refused topic is also said once as it happens.
    for sensor in ["s1", "s2"] {
        let topic = format!("entrepot/sud/{sensor}/v1");
        let said = stderr
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&topic))
            .count();
        assert_eq!(said, 1, "{topic}{ctx}");
    }

    let s = summary(&args, &out);
    assert_eq!(s["ok"], false, "{s}");
    assert_eq!(s["readings"], 12, "{s}");
    assert_eq!(s["messages_refused"], 6, "{s}");
    assert_eq!(s["unacked"], 0, "{s}");
    assert_eq!(
        s["messages_acked"].as_u64().unwrap() + 6,
        s["messages_sent"].as_u64().unwrap(),
        "{s}"
    );
    assert_eq!(s["refusals_detectable"], true, "{s}");
    assert_eq!(s["connections"][0]["mqtt_version"], "5", "{s}");
    assert_eq!(s["connections"][0]["refused"], 6, "{s}");
    let mut refused: Vec<(String, u64, String)> = s["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["account"], "sensor-nord", "{s}");
            assert!(t["reason"].as_str().unwrap().contains("0x87"), "{s}");
            (
                t["topic"].as_str().unwrap().to_owned(),
                t["count"].as_u64().unwrap(),
                t["client_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        vec![
            ("entrepot/sud/s1/v1".into(), 3, "sensor-nord".into()),
            ("entrepot/sud/s2/v1".into(), 3, "sensor-nord".into()),
        ],
        "{s}"
    );

    // What the broker let through is what was acknowledged: nord's readings only.
    live.wait_for("entrepot/status/sensor-nord", "offline")
        .await;
    let readings = live.readings();
    let zones: BTreeSet<&str> = readings.keys().map(|(z, _)| z.as_str()).collect();
    assert_eq!(zones, BTreeSet::from(["nord"]), "{readings:?}");
    assert!(readings.values().all(|rs| rs.len() == 3), "{readings:?}");
}

/// The same account on its own zone: nothing refused, exit 0, the readings arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_account_publishing_its_own_zone_is_acknowledged() {
    let broker = Mosquitto::start();
    let live = Recorder::start(&broker, "entrepot/#").await;
    let args = [
        "simulate",
        "--zones",
        "nord",
        "--sensors-per-zone",
        "2",
        "--interval",
        "100ms",
        "--count",
        "3",
        "--client-id",
        "sensor-nord",
        "--no-alerts",
    ];
    let out = run(&args, &env(&broker, "sensor-nord")).await;
    let ctx = describe(&args, &out);
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("acknowledged, 0 refused by the broker"),
        "{ctx}"
    );
    live.wait_for("entrepot/status/sensor-nord", "offline")
        .await;
    let readings = live.readings();
    assert_eq!(readings.len(), 2, "{readings:?}");
    assert!(readings.values().all(|rs| rs.len() == 3), "{readings:?}");
}

/// Refusals are paired with their topic by the order rumqttc writes publishes; a
/// broker restart moves what was queued or in flight back into the pending queue.
/// Readings go three nord, three sud, so a pairing shifted by a few messages would
/// name a nord topic as refused. `--rate max` (here up to 6,000 readings/s: one a
/// millisecond per sensor) fills the queue while the broker is down, so the restart
/// catches thousands of requests queued and in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_topics_stay_right_across_a_broker_restart() {
    let mut broker = Mosquitto::start();
    let env = env(&broker, "sensor-nord");
    let args = [
        "simulate",
        "--zones",
        "nord,sud",
        "--sensors-per-zone",
        "3",
        "--rate",
        "max",
        "--connections",
        "1",
        "--client-id",
        "sensor-nord",
        "--no-alerts",
        "--json",
    ];
    let (out, after) = restart_mid_run(&mut broker, spawn(&args, &env), 10, 10).await;
    let ctx = describe(&args, &out);
    assert_eq!(out.status.code(), Some(1), "{ctx}");
    let s = summary(&args, &out);
    assert!(s["connections"][0]["reconnects"].as_u64() >= Some(1), "{s}");
    assert_eq!(s["unacked"], 0, "{s}");
    let refused = s["messages_refused"].as_u64().unwrap();
    assert!(refused >= 10, "{s}");
    assert_eq!(
        s["messages_acked"].as_u64().unwrap() + refused,
        s["messages_sent"].as_u64().unwrap(),
        "{s}"
    );
    let mut counted = 0;
    for t in s["refused"].as_array().unwrap() {
        let topic = t["topic"].as_str().unwrap();
        assert!(
            topic.starts_with("entrepot/sud/"),
            "{topic} named as refused: {s}"
        );
        counted += t["count"].as_u64().unwrap();
    }
    assert_eq!(counted, refused, "every refusal paired with a topic: {s}");
    // Nothing nord was refused, so every nord reading got through.
    assert!(after.readings().keys().all(|(z, _)| z == "nord"));
}

/// QoS 2 refusals past the broker's Receive Maximum (`max_inflight_messages 1000`):
/// rumqttc 0.25 never frees the in-flight slot of a refused QoS 2 publish, so without
/// the repair in `mqtt::v5` the connection would stall after 1000 refusals and the
/// run would end with thousands of messages unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_refusals_beyond_the_inflight_window_do_not_stall_the_run() {
    let broker = Mosquitto::start();
    let live = Recorder::start(&broker, "entrepot/nord/#").await;
    let args = [
        "simulate",
        "--zones",
        "nord,sud",
        "--sensors-per-zone",
        "50",
        "--interval",
        "20ms",
        "--count",
        "30",
        "--qos",
        "2",
        "--client-id",
        "sensor-nord",
        "--no-alerts",
        "--ack-timeout",
        "20s",
        "--json",
    ];
    let out = run(&args, &env(&broker, "sensor-nord")).await;
    let ctx = describe(&args, &out);
    assert_eq!(out.status.code(), Some(1), "{ctx}");
    let s = summary(&args, &out);
    assert_eq!(s["messages_refused"], 1500, "{s}");
    assert_eq!(s["unacked"], 0, "{s}");
    // Refused topics are kept by name up to a bound; the rest is counted.
    assert_eq!(s["refused"].as_array().unwrap().len(), 16, "{s}");
    eventually("every nord reading", PATIENCE, || async {
        let n: usize = live.readings().values().map(Vec::len).sum();
        (n == 1500).then_some(())
    })
    .await;
}

/// `--rate max` publishes as fast as the broker takes it, yet a sensor's readings
/// stay one per millisecond: InfluxDB keys a point by its timestamp (ms), so two
/// readings of a sensor in one millisecond used to be one point. Counted in a real
/// InfluxDB after a real ingest: every reading published is a point of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_max_keeps_every_reading_a_point_of_its_own_in_influxdb() {
    use common::chain::{count_points, IngestProc};
    use common::influxd::Influxd;

    let broker = Mosquitto::start();
    let db = Influxd::start();
    let _ingest = IngestProc::start(&broker, &db, &[]);
    let live = Recorder::start(&broker, "entrepot/+/+/v1").await;
    let args: Vec<&str> =
        "simulate --zones nord --sensors-per-zone 2 --rate max --count 400 --no-alerts --json"
            .split(' ')
            .collect();
    let out = run(&args, &env(&broker, "simulator")).await;
    let ctx = describe(&args, &out);
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    assert_eq!(summary(&args, &out)["readings"], 800, "{ctx}");
    // On the wire: each sensor's timestamps strictly increasing.
    eventually("the 800 readings on the broker", PATIENCE, || async {
        (live.readings().values().map(Vec::len).sum::<usize>() == 800).then_some(())
    })
    .await;
    for (sensor, rs) in live.readings() {
        assert_eq!(rs.len(), 400, "{sensor:?}");
        let ms: Vec<i64> = rs.iter().map(|r| r.timestamp.timestamp_millis()).collect();
        assert!(ms.windows(2).all(|w| w[0] < w[1]), "{sensor:?}: {ms:?}");
    }
    // In InfluxDB: 800 points, 400 a sensor.
    eventually("800 points in InfluxDB", PATIENCE, || async {
        (count_points(&db, "readings", "temp", "").await >= 800).then_some(())
    })
    .await;
    assert_eq!(count_points(&db, "readings", "temp", "").await, 800);
    for s in ["s1", "s2"] {
        let filter = format!(r#"r.sensor == "{s}""#);
        assert_eq!(
            count_points(&db, "readings", "temp", &filter).await,
            400,
            "{s}"
        );
    }
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["simulate"], "--zones"),
        (&["simulate", "--zones", ""], "--zones"),
        (&["simulate", "--zones", "nord,,sud"], "empty"),
        (&["simulate", "--zones", "Nord"], "'N'"),
        (&["simulate", "--zones", "nord,nord"], "twice"),
        (&["simulate", "--zones", "heartbeat"], "reserved"),
        (
            &["simulate", "--zones", "nord", "--interval", "0s"],
            "--interval",
        ),
        (
            &["simulate", "--zones", "nord", "--interval", "soon"],
            "--interval",
        ),
        (&["simulate", "--zones", "nord", "--count", "0"], "--count"),
        (
            &[
                "simulate",
                "--zones",
                "nord",
                "--count",
                "3",
                "--duration",
                "1m",
            ],
            "cannot be used with",
        ),
        (&["simulate", "--zones", "nord", "--qos", "3"], "--qos"),
        (&["simulate", "--zones", "nord", "--rate", "0"], "--rate"),
        (
            &["simulate", "--zones", "nord", "--no-such-flag"],
            "--no-such-flag",
        ),
        (
            &["simulate", "--zones", "nord", "--fault", "spike:nord"],
            "KIND:ZONE[/SENSOR]@START[+DURATION]",
        ),
        (
            &["simulate", "--zones", "nord", "--fault", "melt:nord@1s"],
            "spike, stuck, dropout or drift",
        ),
        (
            &["simulate", "--zones", "nord", "--fault", "spike:sud@1s"],
            "zone sud is not simulated",
        ),
        (
            &["simulate", "--zones", "nord", "--fault", "stuck:nord/s9@1s"],
            "no sensor s9",
        ),
        (
            &["simulate", "--zones", "nord", "--scenario", "heatwave:nord"],
            "heatwave:ZONE@START[+DURATION]",
        ),
        (
            &["simulate", "--zones", "nord", "--scenario", "flood:nord@1s"],
            "unknown scenario",
        ),
        (
            &["simulate", "--zones", "nord", "--client-id", "My Sim"],
            "--client-id",
        ),
    ];
    for (args, needle) in cases {
        let out = run_arng(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", describe(args, &out));
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{}",
            describe(args, &out)
        );
        assert!(stderr.contains(needle), "{}", describe(args, &out));
        assert!(out.stdout.is_empty(), "{}", describe(args, &out));
    }
}

#[test]
fn unreachable_broker_fails_after_the_connect_timeout() {
    // A port nobody listens on (taken then released).
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let args = [
        "simulate",
        "--zones",
        "nord",
        "--count",
        "1",
        "--connect-timeout",
        "1500ms",
    ];
    let start = Instant::now();
    let out = run_arng(
        &args,
        &[
            ("ARNG_MQTT_URL", &url),
            ("ARNG_MQTT_USERNAME", "simulator"),
            ("ARNG_MQTT_PASSWORD", "simulator-dev"),
        ],
    );
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Each attempt is logged, then one clear reason.
    let retries = stderr.lines().filter(|l| l.contains("retrying in")).count();
    assert!(retries >= 3, "{}", describe(&args, &out));
    assert!(
        stderr.contains(&format!("cannot connect to broker {url} within 1s 500ms")),
        "{}",
        describe(&args, &out)
    );
}

#[test]
fn wrong_password_is_refused_at_once() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let args = ["simulate", "--zones", "nord", "--count", "1"];
    let start = Instant::now();
    let out = run_arng(
        &args,
        &[
            ("ARNG_MQTT_URL", &url),
            ("ARNG_MQTT_USERNAME", "simulator"),
            ("ARNG_MQTT_PASSWORD", "wrong"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    assert!(start.elapsed() < Duration::from_secs(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not authorized"),
        "{}",
        describe(&args, &out)
    );
}
