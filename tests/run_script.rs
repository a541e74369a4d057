//! `scripts/run.sh`, the whole chain in one command, run for real: it provisions and
//! starts Mosquitto and influxd, runs ingest, serve and the 3-zone simulator, prints
//! the lines to try; readings reach `GET /zones/nord/latest` through MQTT and
//! InfluxDB; the printed curl lines work; SIGINT (what Ctrl-C sends) stops everything,
//! leaving no listener and no process behind.
//!
//! Every process the script starts inherits a marker variable naming this test's temp
//! dir, daemons included (Mosquitto forks away, influxd runs in its own session), so
//! "nothing left" is checked by scanning /proc for that marker, not by trusting the
//! script's own bookkeeping.

mod common;

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::chain::http_get;
use common::{arng_bin, free_port, repo_root};

const MARKER: &str = "ARNG_RUN_TEST_MARKER";

/// Four distinct free ports (MQTT, InfluxDB, API, ingest metrics).
fn four_ports() -> [u16; 4] {
    loop {
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() == 4 {
            return ports;
        }
    }
}

struct RunScript {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RunScript {
    fn out(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// What a person debugging a failure wants: the script's output and every log.
    fn describe(&self) -> String {
        let mut text = format!(
            "--- scripts/run.sh stdout:\n{}\n--- stderr:\n{}",
            self.out(),
            fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
        );
        let run = self.dir.path().join("state/run");
        for log in [
            "logs/ingest.log",
            "logs/serve.log",
            "logs/simulate.log",
            "mosquitto/mosquitto.log",
            "influxd.log",
        ] {
            let body = fs::read_to_string(run.join(log)).unwrap_or_default();
            let tail: Vec<&str> = body.lines().rev().take(25).collect();
            text.push_str(&format!("\n--- tail of {log}:\n"));
            for line in tail.iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for RunScript {
    fn drop(&mut self) {
        // A failed test still stops the chain: SIGTERM lets the script clean up.
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_marked(self.dir.path());
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
    }
}

/// Pids of the processes whose environment holds our marker.
fn marked_processes(dir: &Path) -> Vec<(u32, String)> {
    let needle = format!("{MARKER}={}", dir.display());
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("cannot read /proc") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            let cmdline = fs::read(entry.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            found.push((pid, cmdline));
        }
    }
    found
}

/// Last resort after a failure, so a broken script does not leave servers running.
fn kill_marked(dir: &Path) {
    for (pid, _) in marked_processes(dir) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

fn wait_for<T>(
    run: &mut RunScript,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if let Some(Ok(Some(status))) = run.child.as_mut().map(|c| c.try_wait()) {
            panic!("scripts/run.sh exited ({status}) while waiting for {what}");
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn run_sh_starts_the_whole_chain_and_ctrl_c_leaves_nothing_running() {
    let dir = tempfile::Builder::new()
        .prefix("arng-run-")
        .tempdir()
        .unwrap();
    let [mqtt, influx, api, metrics] = four_ports();
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/run.sh"))
        .current_dir(dir.path())
        .env(MARKER, dir.path())
        .env("ARNG_STATE_DIR", dir.path().join("state"))
        .env("ARNG_MQTT_PORT", mqtt.to_string())
        .env("ARNG_INFLUX_PORT", influx.to_string())
        .env("ARNG_API_PORT", api.to_string())
        .env("ARNG_METRICS_PORT", metrics.to_string())
        .env("ARNG_RUN_INTERVAL", "1s")
        // The test's own build: `cargo build --release` would add minutes to CI.
        .env("ARNG_BIN", arng_bin())
        .env_remove("ARNG_API_TOKEN")
        .env_remove("ARNG_MQTT_URL")
        .env_remove("INFLUX_URL")
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(fs::File::create(dir.path().join("stderr")).unwrap());
    let child = cmd.spawn().expect("cannot run bash scripts/run.sh");
    let mut run = RunScript {
        child: Some(child),
        dir,
    };

    // influxd's first start and setup take a few seconds; a cold machine more.
    let stdout = run.dir.path().join("stdout");
    wait_for(&mut run, "the banner", Duration::from_secs(180), || {
        let out = fs::read_to_string(&stdout).unwrap_or_default();
        out.contains("Ctrl-C stops everything").then_some(())
    });
    let out = run.out();
    for expected in [
        format!("http://127.0.0.1:{api}/"),
        format!("curl -s http://127.0.0.1:{api}/zones/nord/latest"),
        format!(
            "mosquitto_sub -h 127.0.0.1 -p {mqtt} -u operator -P operator-dev -t 'entrepot/#' -v"
        ),
    ] {
        assert!(out.contains(&expected), "banner lacks {expected:?}");
    }

    // A reading of nord, seen on MQTT by serve and read back from InfluxDB.
    let latest = wait_for(
        &mut run,
        "readings of nord at GET /zones/nord/latest (MQTT and InfluxDB sides)",
        Duration::from_secs(60),
        || {
            let (status, body) = http_get(api, "/zones/nord/latest").ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let sensors = v["sensors"].as_array()?;
            let complete = status == 200
                && sensors.len() == 3
                && sensors
                    .iter()
                    .all(|s| s["mqtt"]["temp"].is_f64() && s["influx"]["temp"].is_f64());
            complete.then_some(v)
        },
    );
    assert_eq!(latest["zone"], "nord");

    // Every curl line of the banner answers 2xx as printed.
    let curls: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert!(curls.len() >= 5, "too few curl lines: {curls:?}");
    for line in curls {
        let result = Command::new("bash")
            .arg("-c")
            .arg(format!("{line} -o /dev/null -w '%{{http_code}}'"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&result.stdout).into_owned();
        assert!(
            result.status.success() && code.starts_with('2'),
            "{line}\n answered {code} ({})",
            result.status
        );
    }

    // Ctrl-C: the terminal sends SIGINT; here to the script alone, which must stop
    // the rest itself.
    let mut child = run.child.take().unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("scripts/run.sh still running 90 s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130), "exit status after SIGINT");
    for (what, port) in [
        ("mosquitto", mqtt),
        ("influxd", influx),
        ("arng serve", api),
        ("arng ingest metrics", metrics),
    ] {
        assert!(
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
                .is_err(),
            "{what} still listening on {port} after the script stopped"
        );
    }
    let left = marked_processes(run.dir.path());
    assert!(left.is_empty(), "processes left running: {left:?}");
    let err = fs::read_to_string(run.dir.path().join("stderr")).unwrap();
    assert!(
        err.contains("run: stopped"),
        "no closing line on stderr:\n{err}"
    );
}
