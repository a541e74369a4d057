//! MQTT over TLS, end to end, with a real Mosquitto running the shipped TLS profile
//! (`mosquitto-conf/tls.conf`) and certificates made by `scripts/gen-certs.sh`
//! (openssl): readings cross the TLS and mutual-TLS listeners with the broker's
//! accounts and ACL still enforced, reach InfluxDB through `arng ingest`, and
//! clients that cannot verify the broker, or that the broker cannot verify, are
//! refused with a one-line reason. Bad TLS options are usage errors (exit 2) on
//! every subcommand.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use arng::config::MqttArgs;
use clap::Parser;
use common::chain::{count_points, IngestProc};
use common::influxd::Influxd;
use common::mosquitto::{account, generate_certs, Mosquitto};
use common::{describe, run_arng};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};

/// Longest wait for the broker to answer or deliver.
const STEP: Duration = Duration::from_secs(20);
/// Longest wait for readings to cross the whole chain into InfluxDB (a bound for a
/// loaded machine, not a speed requirement).
const CHAIN: Duration = Duration::from_secs(60);

/// The MQTT options parsed exactly as every subcommand parses them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    mqtt: MqttArgs,
}

fn mqtt_args(args: &[&str]) -> MqttArgs {
    let argv = std::iter::once("t").chain(args.iter().copied());
    match Flags::try_parse_from(argv) {
        Ok(flags) => flags.mqtt,
        Err(e) => panic!("{args:?} rejected: {e}"),
    }
}

/// The operator account's options at `url`, plus `extra` (e.g. `--mqtt-ca`).
fn operator(url: &str, extra: &[&str]) -> MqttArgs {
    let (user, password) = account("operator");
    let mut args = vec![
        "--mqtt-url",
        url,
        "--mqtt-username",
        &user,
        "--mqtt-password",
        &password,
    ];
    args.extend_from_slice(extra);
    mqtt_args(&args)
}

/// The options of a mutual-TLS client: broker URL, CA, client certificate and key.
fn mutual_tls<'a>(url: &'a str, ca: &'a Path, cert: &'a Path, key: &'a Path) -> [&'a str; 8] {
    [
        "--mqtt-url",
        url,
        "--mqtt-ca",
        path(ca),
        "--mqtt-cert",
        path(cert),
        "--mqtt-key",
        path(key),
    ]
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// The simulator account's environment, as the tests of simulate use it.
fn simulator_env() -> Vec<(&'static str, String)> {
    let (user, password) = account("simulator");
    vec![
        ("ARNG_MQTT_USERNAME", user),
        ("ARNG_MQTT_PASSWORD", password),
    ]
}

/// `arng -q simulate` for one sensor of zone `zone`, `count` readings, with `mqtt`
/// options. Quiet, so that stderr holds only what the user is told (errors).
fn simulate(zone: &str, count: u32, mqtt: &[&str]) -> (Vec<String>, Output) {
    let mut args: Vec<String> = [
        "-q",
        "simulate",
        "--zones",
        zone,
        "--sensors-per-zone",
        "1",
        "--interval",
        "50ms",
        "--connect-timeout",
        "5s",
        "--count",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(count.to_string());
    args.extend(mqtt.iter().map(|s| s.to_string()));
    let env = simulator_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_arng(&argv, &env);
    (args, out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A subscriber to the readings of `zone`, connected through `args` (so over TLS
/// when they say so) and subscribed before it is returned.
async fn subscriber(args: &MqttArgs, zone: &str) -> (AsyncClient, EventLoop) {
    subscribe(args, &format!("entrepot/{zone}/+/v1")).await
}

async fn subscribe(args: &MqttArgs, filter: &str) -> (AsyncClient, EventLoop) {
    let id = format!("tls-sub-{}", common::free_port());
    let (client, mut eventloop) = arng::mqtt::connect(args, &id, STEP)
        .await
        .unwrap_or_else(|e| panic!("subscriber cannot connect to {}: {e}", args.url));
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    loop {
        match tokio::time::timeout(STEP, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => return (client, eventloop),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber lost its connection: {e}"),
            Err(_) => panic!("no SUBACK within {STEP:?}"),
        }
    }
}

/// Sequence numbers of the readings the subscriber receives, until it has `n` of them.
async fn readings(eventloop: &mut EventLoop, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match tokio::time::timeout(STEP, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                seqs.push(v["seq"].as_u64().expect("a reading with seq"));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber lost its connection: {e}"),
            Err(_) => panic!(
                "only {} of {n} readings within {STEP:?}: {seqs:?}",
                seqs.len()
            ),
        }
    }
    seqs.sort_unstable();
    seqs
}

/// Runs `arng simulate` on a blocking thread while the caller's subscriber reads.
fn simulate_in_background(
    zone: &'static str,
    count: u32,
    mqtt: &[&str],
) -> tokio::task::JoinHandle<(Vec<String>, Output)> {
    let mqtt: Vec<String> = mqtt.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mqtt: Vec<&str> = mqtt.iter().map(String::as_str).collect();
        simulate(zone, count, &mqtt)
    })
}

fn assert_ok(args: &[String], out: &Output) {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&argv, out));
}

/// A refused client: exit 1, one line on stderr naming the TLS handshake and `reason`,
/// and the broker never accepted the simulator's login.
fn assert_tls_refused(broker: &Mosquitto, args: &[String], out: &Output, url: &str, reason: &str) {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&argv, out));
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected{}", describe(&argv, out));
    assert!(
        lines[0].starts_with(&format!("error: TLS handshake with {url} failed: ")),
        "{}",
        describe(&argv, out)
    );
    assert!(
        lines[0].contains(reason),
        "{reason:?} expected{}",
        describe(&argv, out)
    );
    assert!(
        !broker.log().contains("u'simulator'"),
        "the broker accepted the simulator anyway:\n{}",
        broker.log()
    );
}

// ---------------------------------------------------------------------------
// Readings over TLS, authenticated, with the broker verified by its CA.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn readings_published_over_tls_reach_a_tls_subscriber() {
    let broker = Mosquitto::start_tls();
    let ca = broker.cert("ca.crt");
    let url = broker.tls_url();
    let sub_args = operator(&url, &["--mqtt-ca", path(&ca)]);
    let (_client, mut eventloop) = subscriber(&sub_args, "nord").await;

    let run = simulate_in_background("nord", 5, &["--mqtt-url", &url, "--mqtt-ca", path(&ca)]);
    let seqs = readings(&mut eventloop, 5).await;
    let (args, out) = run.await.unwrap();
    assert_ok(&args, &out);
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);

    // Both clients came in through the TLS listener, logged in with their accounts.
    let port = broker.tls_port.unwrap();
    let log = broker.log();
    assert!(
        log.contains(&format!("on port {port}")) && log.contains("u'simulator'"),
        "{log}"
    );
}

#[tokio::test]
async fn the_tls_listener_still_requires_the_account_password() {
    let broker = Mosquitto::start_tls();
    let ca = broker.cert("ca.crt");
    let detail = failed_doctor_mqtt_check(&broker.tls_url(), &ca, "simulator", "not-the-password");
    assert!(detail.contains("refused the connection"), "{detail}");
}

/// Runs `arng doctor --json` against `url` (no InfluxDB there, so it exits 1 anyway),
/// checks that its "mqtt broker" check failed and returns that check's detail.
fn failed_doctor_mqtt_check(url: &str, ca: &Path, user: &str, password: &str) -> String {
    let args = [
        "doctor",
        "--json",
        "--timeout",
        "5s",
        "--mqtt-url",
        url,
        "--mqtt-ca",
        path(ca),
        "--mqtt-username",
        user,
        "--mqtt-password",
        password,
        "--influx-url",
        "http://127.0.0.1:9",
    ];
    let out = run_arng(&args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}){}",
            describe(&args, &out)
        )
    });
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mqtt broker")
        .cloned()
        .unwrap_or_else(|| panic!("no mqtt broker check in {report}"));
    assert_eq!(check["ok"], false, "{}", describe(&args, &out));
    check["detail"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------
// Clients that cannot verify the broker are refused.
// ---------------------------------------------------------------------------

#[test]
fn a_client_without_the_ca_is_refused() {
    let broker = Mosquitto::start_tls();
    let url = broker.tls_url();
    // No --mqtt-ca: the system's CAs, which never signed the test broker's certificate.
    let (args, out) = simulate("nord", 1, &["--mqtt-url", &url]);
    assert_tls_refused(&broker, &args, &out, &url, "unknown CA");
}

#[test]
fn a_client_trusting_another_ca_is_refused() {
    let broker = Mosquitto::start_tls();
    let other = tempfile::tempdir().unwrap();
    generate_certs(other.path());
    let other_ca = other.path().join("ca.crt");
    let url = broker.tls_url();

    let (args, out) = simulate(
        "nord",
        1,
        &["--mqtt-url", &url, "--mqtt-ca", path(&other_ca)],
    );
    assert_tls_refused(&broker, &args, &out, &url, "unknown CA");

    // The one-shot check says the same, through the shared connect path.
    let (user, password) = account("operator");
    let detail = failed_doctor_mqtt_check(&url, &other_ca, &user, &password);
    assert_eq!(
        detail,
        format!(
            "TLS handshake with {url} failed: unknown CA: the broker's certificate is not \
             signed by a CA this client trusts (give the CA that signed it with --mqtt-ca)"
        )
    );
}

#[test]
fn tls_to_the_plain_listener_fails_with_a_hint() {
    let broker = Mosquitto::start_tls();
    let ca = broker.cert("ca.crt");
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let (args, out) = simulate("nord", 1, &["--mqtt-url", &url, "--mqtt-ca", path(&ca)]);
    assert_tls_refused(&broker, &args, &out, &url, "is that port a TLS listener?");
}

// ---------------------------------------------------------------------------
// Mutual TLS: the broker verifies the client's certificate too.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_signed_by_the_ca() {
    let broker = Mosquitto::start_tls();
    let ca = broker.cert("ca.crt");
    let url = broker.mutual_tls_url();

    // No client certificate.
    let (args, out) = simulate("sud", 1, &["--mqtt-url", &url, "--mqtt-ca", path(&ca)]);
    assert_tls_refused(
        &broker,
        &args,
        &out,
        &url,
        "the broker requires a client certificate",
    );

    // A client certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    generate_certs(other.path());
    let (other_cert, other_key) = (
        other.path().join("client.crt"),
        other.path().join("client.key"),
    );
    let (args, out) = simulate("sud", 1, &mutual_tls(&url, &ca, &other_cert, &other_key));
    assert_tls_refused(
        &broker,
        &args,
        &out,
        &url,
        "the broker rejected this client's certificate",
    );

    // The CA's client certificate: accepted, and the readings arrive.
    let (_client, mut eventloop) = subscriber(&operator(&broker.url(), &[]), "sud").await;
    let (cert, key) = (broker.cert("client.crt"), broker.cert("client.key"));
    let run = simulate_in_background("sud", 3, &mutual_tls(&url, &ca, &cert, &key));
    let seqs = readings(&mut eventloop, 3).await;
    let (args, out) = run.await.unwrap();
    assert_ok(&args, &out);
    assert_eq!(seqs, vec![0, 1, 2]);
}

// ---------------------------------------------------------------------------
// The whole chain over TLS: simulate → broker (TLS) → ingest (mutual TLS) → InfluxDB.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn readings_cross_tls_and_ingest_into_influxdb() {
    let broker = Mosquitto::start_tls();
    let db = Influxd::start();
    let ca = broker.cert("ca.crt");
    let (cert, key) = (broker.cert("client.crt"), broker.cert("client.key"));
    let mutual_url = broker.mutual_tls_url();
    let ingest = IngestProc::start(&broker, &db, &mutual_tls(&mutual_url, &ca, &cert, &key));
    // ingest logs "connected" at the CONNACK, then subscribes, then publishes its
    // retained "online" status: once that status is on the broker, so is ingest's
    // subscription, and no reading can be published before it.
    let (_status, mut status_loop) =
        subscribe(&operator(&broker.url(), &[]), "entrepot/status/ingest").await;
    loop {
        match tokio::time::timeout(STEP, status_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if &p.payload[..] == b"online" => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("status subscriber lost its connection: {e}"),
            Err(_) => panic!(
                "ingest never published its online status:\n{}",
                ingest.log()
            ),
        }
    }

    let (args, out) = tokio::task::spawn_blocking({
        let url = broker.tls_url();
        let ca = ca.clone();
        move || simulate("est", 8, &["--mqtt-url", &url, "--mqtt-ca", path(&ca)])
    })
    .await
    .unwrap();
    assert_ok(&args, &out);

    common::eventually("8 readings of zone est in InfluxDB", CHAIN, || async {
        let n = count_points(&db, "readings", "temp", r#"r.zone == "est""#).await;
        (n == 8).then_some(())
    })
    .await;
    // Exactly 8, not more: nothing was written twice.
    assert_eq!(
        count_points(&db, "readings", "temp", r#"r.zone == "est""#).await,
        8
    );
    let port = broker.mutual_tls_port.unwrap();
    assert!(
        broker.log().contains(&format!("on port {port}")) && broker.log().contains("u'ingest'"),
        "ingest did not come in through the mutual-TLS listener:\n{}",
        broker.log()
    );
    drop(ingest);
}

// ---------------------------------------------------------------------------
// Bad TLS options: exit 2 and one line, before anything connects.
// ---------------------------------------------------------------------------

/// Every subcommand that talks to the broker, with the options it requires.
const SUBCOMMANDS: [&[&str]; 7] = [
    &["check-e2e"],
    &["doctor"],
    &["ingest"],
    &["latency"],
    &["qos-bench"],
    &["serve"],
    &["simulate", "--zones", "nord"],
];

fn assert_usage_error(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let out = run_arng(args, env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}", describe(args, &out));
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{}",
        describe(args, &out)
    );
    assert!(
        err.contains(needle),
        "{needle:?} expected{}",
        describe(args, &out)
    );
    assert!(out.stdout.is_empty(), "{}", describe(args, &out));
}

#[test]
fn bad_tls_options_are_usage_errors_on_every_subcommand() {
    let certs = tempfile::tempdir().unwrap();
    generate_certs(certs.path());
    let file = |name: &str| certs.path().join(name).to_str().unwrap().to_owned();
    let (ca, cert, key, ca_key) = (
        file("ca.crt"),
        file("client.crt"),
        file("client.key"),
        file("ca.key"),
    );
    let missing = certs.path().join("nope.crt").to_str().unwrap().to_owned();
    let tls = "mqtts://127.0.0.1:9";

    for cmd in SUBCOMMANDS {
        let with = |extra: &[&str]| -> Vec<String> {
            cmd.iter().chain(extra).map(|s| s.to_string()).collect()
        };
        let check = |extra: &[&str], needle: &str| {
            let args = with(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert_usage_error(&args, &[], needle);
        };
        // A file that does not exist.
        check(
            &["--mqtt-url", tls, "--mqtt-ca", &missing],
            "cannot read the file: No such file or directory",
        );
        // A certificate without its key, and the other way round.
        check(&["--mqtt-url", tls, "--mqtt-cert", &cert], "--mqtt-key");
        check(&["--mqtt-url", tls, "--mqtt-key", &key], "--mqtt-cert");
        // TLS files with a plain URL: refused, not silently ignored.
        check(
            &["--mqtt-ca", &ca],
            "need a TLS broker URL (mqtts://host:port), not mqtt://localhost:1883",
        );
    }

    // The environment variables go through the same checks.
    assert_usage_error(
        &["doctor"],
        &[("ARNG_MQTT_URL", tls), ("ARNG_MQTT_CA", &missing)],
        "cannot read the file",
    );
    assert_usage_error(
        &["doctor"],
        &[("ARNG_MQTT_URL", tls), ("ARNG_MQTT_CERT", &cert)],
        "--mqtt-key",
    );
    // Wrong kind of PEM, and a key that is not the certificate's.
    for (files, needle) in [
        (
            ["--mqtt-ca", &ca_key, "", ""],
            "no PEM certificate in the file",
        ),
        (
            ["--mqtt-cert", &cert, "--mqtt-key", &cert],
            "no PEM private key in the file",
        ),
        (
            ["--mqtt-cert", &cert, "--mqtt-key", &ca_key],
            "the key does not belong to the certificate",
        ),
    ] {
        let mut args = vec!["doctor", "--mqtt-url", tls];
        args.extend(files.into_iter().filter(|a| !a.is_empty()));
        assert_usage_error(&args, &[], needle);
    }
}
