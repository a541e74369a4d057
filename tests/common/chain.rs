//! Pieces of the chain for integration tests: an `arng ingest` process, an MQTT
//! publisher that waits for the broker's acknowledgements, and Flux counts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arng::config::{MqttArgs, Secret};
use arng::store::InfluxClient;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::influxd::Influxd;
use super::mosquitto::{account, Mosquitto};

/// MQTT options for `user` (a dev account) on `broker`, as the CLI would build them.
pub fn mqtt_args(broker: &Mosquitto, user: &str) -> MqttArgs {
    let (u, p) = account(user);
    MqttArgs {
        url: arng::config::parse_mqtt_url(&broker.url()).unwrap(),
        username: Some(u),
        password: Some(Secret::new(p)),
        ..MqttArgs::default()
    }
}

/// An `arng ingest` child process with its own spool dir, log file and metrics port.
pub struct IngestProc {
    pub metrics_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    starts: usize,
}

impl IngestProc {
    /// Starts ingest (account `ingest`) against `broker` and `db` and waits until it is
    /// connected. `extra` are more command-line arguments.
    pub fn start(broker: &Mosquitto, db: &Influxd, extra: &[&str]) -> IngestProc {
        let (user, pass) = account("ingest");
        let mut env: Vec<(String, String)> = vec![
            ("ARNG_MQTT_URL".into(), broker.url()),
            ("ARNG_MQTT_USERNAME".into(), user),
            ("ARNG_MQTT_PASSWORD".into(), pass),
            ("RUST_LOG".into(), "arng=debug".into()),
        ];
        env.extend(db.env().into_iter().map(|(k, v)| (k.to_owned(), v)));
        let dir = tempfile::Builder::new()
            .prefix("arng-ingest-")
            .tempdir()
            .unwrap();
        let metrics_port = super::free_port();
        let mut args: Vec<String> = vec![
            "ingest".into(),
            "--metrics-port".into(),
            metrics_port.to_string(),
            "--spool-dir".into(),
            dir.path().join("spool").to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut me = IngestProc {
            metrics_port,
            dir,
            child: None,
            env,
            args,
            starts: 0,
        };
        me.spawn();
        me
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("ingest.log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(super::arng_bin())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start arng ingest");
        self.child = Some(child);
        self.starts += 1;
        self.wait_for_log(
            "subscribed: receiving readings",
            self.starts,
            Duration::from_secs(20),
        );
    }

    /// Waits until `needle` appears at least `times` times in the log.
    pub fn wait_for_log(&mut self, needle: &str, times: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().matches(needle).count() >= times {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "arng ingest exited ({status}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the ingest log after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The Prometheus text from GET /metrics.
    pub fn metrics(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).expect("metrics endpoint");
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The value of one series, e.g. `arng_ingest_rejected_total{reason="oversize"}`; 0
    /// when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// The process id of the running ingest.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("ingest is not running").id()
    }

    /// Peak resident memory of the running ingest (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("cannot read /proc/<ingest>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("no VmHWM in /proc/<ingest>/status")
    }

    /// SIGKILL: no flush, no acknowledgement, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        Command::new("kill")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "ingest did not stop within 30 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the process again with the same arguments, spool and client id.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for IngestProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- arng ingest log -----\n{}", self.log());
        }
    }
}

/// Publishes every (topic, payload) as `user` at `qos` and returns once the broker has
/// acknowledged them all (QoS 1/2) or they are written (QoS 0).
pub async fn publish_all(broker: &Mosquitto, user: &str, messages: &[(String, String)], qos: QoS) {
    publish_with(broker, user, messages, qos, false, 200).await
}

/// [`publish_all`] with `inflight` unacknowledged publishes at most (more is faster).
pub async fn publish_fast(
    broker: &Mosquitto,
    user: &str,
    messages: &[(String, String)],
    qos: QoS,
    inflight: u16,
) {
    publish_with(broker, user, messages, qos, false, inflight).await
}

/// [`publish_all`], the messages retained by the broker when `retain` (as the
/// simulator's heartbeats are).
pub async fn publish_all_with(
    broker: &Mosquitto,
    user: &str,
    messages: &[(String, String)],
    qos: QoS,
    retain: bool,
) {
    publish_with(broker, user, messages, qos, retain, 200).await
}

/// Publishes `messages` retained when `retain`, with `inflight` unacknowledged
/// publishes at most, and 60 s plus 1 s per 5,000 messages to finish.
async fn publish_with(
    broker: &Mosquitto,
    user: &str,
    messages: &[(String, String)],
    qos: QoS,
    retain: bool,
    inflight: u16,
) {
    let (u, p) = account(user);
    let mut opts = MqttOptions::new(
        format!("test-pub-{}", super::free_port()),
        "127.0.0.1",
        broker.port,
    );
    opts.set_credentials(u, p);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(inflight);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let total = messages.len();
    let msgs = messages.to_vec();
    let publisher = tokio::spawn(async move {
        for (t, m) in msgs {
            client.publish(t, qos, retain, m).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    let budget = Duration::from_secs(60 + total as u64 / 5_000);
    let deadline = tokio::time::Instant::now() + budget;
    while acked < total || (qos == QoS::AtMostOnce && !publisher.is_finished()) {
        let ev = match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => panic!("publisher: only {acked}/{total} acknowledged after {budget:?}"),
            Ok(polled) => polled.expect("publisher connection failed"),
        };
        match ev {
            Event::Incoming(Packet::PubAck(_)) | Event::Incoming(Packet::PubComp(_)) => acked += 1,
            Event::Outgoing(rumqttc::Outgoing::Publish(_)) if qos == QoS::AtMostOnce => acked += 1,
            _ => {}
        }
    }
    let client = publisher.await.unwrap();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
}

/// A reading payload for sensor `sensor` of `zone`, sequence `seq`, at `ms`.
pub fn reading_msg(zone: &str, sensor: &str, seq: u64, ms: i64, temp: f64) -> (String, String) {
    let r = arng::domain::Reading {
        zone: arng::domain::Zone::new(zone).unwrap(),
        sensor: arng::domain::SensorId::new(sensor).unwrap(),
        seq: Some(seq),
        timestamp: chrono::DateTime::from_timestamp_millis(ms).unwrap(),
        temp,
        hum: 50.0,
        alert_level: arng::domain::AlertLevel::Normal,
        provenance: Default::default(),
    };
    (format!("entrepot/{zone}/{sensor}/v1"), r.to_json())
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs a Flux query ending in a single number (`|> count()` etc.), summing over tables.
pub async fn flux_sum(db: &Influxd, flux: &str) -> i64 {
    let client = InfluxClient::new(&db.args());
    client
        .query(flux)
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}\n{flux}"))
        .iter()
        .filter_map(|r| r.i64("_value"))
        .sum()
}

/// Points of measurement `m` and field `f` in the last hour (plus `filter`, a Flux
/// predicate on `r`, e.g. `r.zone == "nord"`).
pub async fn count_points(db: &Influxd, m: &str, f: &str, filter: &str) -> i64 {
    let extra = if filter.is_empty() {
        String::new()
    } else {
        format!(" and ({filter})")
    };
    flux_sum(
        db,
        &format!(
            r#"from(bucket: "entrepot") |> range(start: -2h, stop: 1h)
               |> filter(fn: (r) => r._measurement == "{m}" and r._field == "{f}"{extra})
               |> group() |> count()"#
        ),
    )
    .await
}

/// Subscribes to `filter` and collects (topic, payload) for `during`.
pub async fn collect_topic(
    args: MqttArgs,
    filter: String,
    during: Duration,
) -> Vec<(String, String)> {
    let mut opts = arng::mqtt::options(&args, &format!("test-sub-{}", super::free_port()));
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + during;
    while let Ok(ev) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
        match ev {
            Ok(Event::Incoming(Packet::Publish(p))) => seen.push((
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            )),
            Ok(_) => {}
            Err(e) => panic!("subscriber connection failed: {e}"),
        }
    }
    seen
}

/// An `arng serve` child process on a free port (account `api`).
pub struct ServeProc {
    pub port: u16,
    pub token: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ServeProc {
    /// Starts `arng serve` with token `test-token-123` and waits until `/ready` says
    /// ready (broker connected, InfluxDB reachable).
    pub fn start(broker: &Mosquitto, db: &Influxd, extra: &[&str]) -> ServeProc {
        let (user, pass) = account("api");
        let dir = tempfile::Builder::new()
            .prefix("arng-serve-")
            .tempdir()
            .unwrap();
        let token = "test-token-123".to_owned();
        for _ in 0..5 {
            let port = super::free_port();
            let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
            let mut child = Command::new(super::arng_bin())
                .args(["serve", "--port", &port.to_string()])
                .args(extra)
                .env("ARNG_MQTT_URL", broker.url())
                .env("ARNG_MQTT_USERNAME", &user)
                .env("ARNG_MQTT_PASSWORD", &pass)
                .env("ARNG_API_TOKEN", &token)
                .env("RUST_LOG", "arng=debug")
                .envs(db.env())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("cannot start arng serve");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken: try another
                }
                if let Ok((200, body)) = http_get(port, "/ready") {
                    if body.contains("\"ready\":true") {
                        return ServeProc {
                            port,
                            token,
                            dir,
                            child: Some(child),
                        };
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "arng serve did not become ready:\n{}",
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- arng serve log -----\n{}", self.log());
        }
    }
}

/// GET `url` and its JSON body; `None` on any failure (for polling with `eventually`).
pub async fn get_json(url: &str) -> Option<serde_json::Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// The entry of `sensor` in a `GET /zones/{zone}/latest` answer at `url`.
pub async fn latest_sensor(url: &str, sensor: &str) -> Option<serde_json::Value> {
    let v = get_json(url).await?;
    v["sensors"]
        .as_array()?
        .iter()
        .find(|s| s["sensor"] == sensor)
        .cloned()
}

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    super::influxd::http(port, "GET", path, "")
}

/// The environment of a client command (check-e2e, latency, check-lab): the
/// operator account on the broker, the test influxd, and the API at `api`.
pub fn client_env(broker: &Mosquitto, db: &Influxd, api: Option<&str>) -> Vec<(String, String)> {
    let (user, pass) = account("operator");
    let mut env = vec![
        ("ARNG_MQTT_URL".to_owned(), broker.url()),
        ("ARNG_MQTT_USERNAME".to_owned(), user),
        ("ARNG_MQTT_PASSWORD".to_owned(), pass),
    ];
    env.extend(db.env().into_iter().map(|(k, v)| (k.to_owned(), v)));
    if let Some(url) = api {
        env.push(("ARNG_API_URL".to_owned(), url.to_owned()));
    }
    env
}

/// Per `(zone, sensor)` of the `readings` measurement in the last 2 hours, on the
/// `seq` field: how many points, how many distinct sequence numbers, the largest.
/// A sensor whose readings `0..n` are each stored exactly once shows `(n, n, n - 1)`:
/// a lost reading lowers the first two, a second point for one reading (another
/// timestamp) raises the first only.
pub async fn sequences(db: &Influxd) -> std::collections::BTreeMap<(String, String), [i64; 3]> {
    let client = InfluxClient::new(&db.args());
    let base = r#"from(bucket: "entrepot") |> range(start: -2h, stop: 1h)
        |> filter(fn: (r) => r._measurement == "readings" and r._field == "seq")
        |> group(columns: ["zone", "sensor"])"#;
    let mut out = std::collections::BTreeMap::new();
    for (i, tail) in ["count()", "distinct() |> count()", "max()"]
        .iter()
        .enumerate()
    {
        let flux = format!("{base} |> {tail}");
        let rows = client
            .query(&flux)
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}\n{flux}"));
        for row in rows {
            let (Some(zone), Some(sensor), Some(v)) =
                (row.str("zone"), row.str("sensor"), row.i64("_value"))
            else {
                continue;
            };
            out.entry((zone.to_owned(), sensor.to_owned()))
                .or_insert([0; 3])[i] = v;
        }
    }
    out
}

/// Polls the number of readings (field `temp`) until it reaches `n`; panics with the
/// last count after `timeout`.
pub async fn wait_for_count(db: &Influxd, n: i64, timeout: Duration) -> i64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let stored = count_points(db, "readings", "temp", "").await;
        if stored >= n {
            return stored;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {stored} of {n} readings in InfluxDB after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `arng simulate ARGS` (account `simulator`, against `broker`) on a blocking
/// thread; the handle gives its output and [`super::describe`]'s account of it.
pub fn spawn_simulate(
    broker: &Mosquitto,
    args: &str,
) -> tokio::task::JoinHandle<(String, std::process::Output)> {
    let url = broker.url();
    let args: Vec<String> = std::iter::once("simulate")
        .chain(args.split_whitespace())
        .map(str::to_owned)
        .collect();
    tokio::task::spawn_blocking(move || {
        let (user, pass) = account("simulator");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = super::run_arng(
            &args,
            &[
                ("ARNG_MQTT_URL", url.as_str()),
                ("ARNG_MQTT_USERNAME", user.as_str()),
                ("ARNG_MQTT_PASSWORD", pass.as_str()),
            ],
        );
        (super::describe(&args, &out), out)
    })
}

/// Each of `zones` x `sensors` (named s1, s2... as `arng simulate` names them) holds
/// readings `0..per_sensor`, each exactly once ([`sequences`]).
pub async fn assert_each_reading_once(
    db: &Influxd,
    zones: &[&str],
    sensors: usize,
    per_sensor: i64,
) {
    let expected: std::collections::BTreeMap<(String, String), [i64; 3]> = zones
        .iter()
        .flat_map(|z| {
            (1..=sensors).map(move |s| {
                (
                    (z.to_string(), format!("s{s}")),
                    [per_sensor, per_sensor, per_sensor - 1],
                )
            })
        })
        .collect();
    assert_eq!(
        sequences(db).await,
        expected,
        "[points, distinct seq, max seq] per sensor"
    );
}
