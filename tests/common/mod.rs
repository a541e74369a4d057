//! Test harness: real servers on free loopback ports in temp dirs, and helpers to run
//! the `arng` binary.
//!
//! Every server a test needs is started by the test itself (never a shared or
//! developer instance), so tests run in parallel and leave nothing behind. A missing
//! server binary fails the test with a message that says how to get it: there are no
//! silent skips. When a test panics, the servers print their logs as they are dropped.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod api;
pub mod chain;
pub mod influxd;
pub mod link;
pub mod mosquitto;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A port that was free a moment ago on 127.0.0.1. Servers that fail to bind it
/// (another test took it in between) are restarted on a new one by their harness.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `arng` binary built for this test run.
pub fn arng_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_arng"))
}

/// Runs `arng` with `args` and `env`, from a clean environment for the variables arng
/// reads, so a developer's exported settings cannot change a test's outcome.
pub fn run_arng(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(arng_bin());
    for var in [
        "ARNG_MQTT_URL",
        "ARNG_MQTT_USERNAME",
        "ARNG_MQTT_PASSWORD",
        "ARNG_MQTT_CA",
        "ARNG_MQTT_CERT",
        "ARNG_MQTT_KEY",
        "INFLUX_URL",
        "INFLUX_ORG",
        "INFLUX_BUCKET",
        "INFLUX_TOKEN",
        "ARNG_API_URL",
        "ARNG_API_TOKEN",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("cannot run the arng binary")
}

/// Shows a finished command the way a person would want to read it when a test fails.
pub fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "\n--- arng {}\n--- exit: {:?}\n--- stdout:\n{}\n--- stderr:\n{}\n",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// (expected status, command) for every `curl` line in the ```sh blocks of a
/// Markdown document. A line `# expect NNN` before a command gives the status it must
/// answer; otherwise any 2xx.
pub fn curl_examples(doc: &str) -> Vec<(Option<u16>, String)> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut expect = None;
    for line in doc.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = t == "```sh";
            expect = None;
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(rest) = t.strip_prefix("# expect ") {
            expect = rest.split_whitespace().next().and_then(|s| s.parse().ok());
        } else if t.starts_with("curl ") {
            out.push((expect.take(), t.to_owned()));
        }
    }
    out
}

/// Runs one documented curl command with `env` and checks its exit code and HTTP
/// status (`expect`, or any 2xx). A `--max-time` stream that curl cut is a success.
pub fn check_curl(expect: Option<u16>, cmd: &str, env: &[(&str, String)]) {
    // Print the status code after the body; keep curl's exit code.
    let probe = cmd.replacen("curl ", "curl -w '\\n%{http_code}' ", 1);
    let out = Command::new("bash")
        .arg("-c")
        .arg(&probe)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let status: u16 = stdout
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or(0);
    let streamed = cmd.contains("--max-time") && out.status.code() == Some(28);
    assert!(
        out.status.success() || streamed,
        "{cmd}\nexit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    match expect {
        Some(code) => assert_eq!(status, code, "{cmd}\n{stdout}"),
        None => assert!(
            (200..300).contains(&status),
            "{cmd} answered {status}\n{stdout}"
        ),
    }
}

/// A Python that imports paho-mqtt, for the lab's Python sensor (examples/python/):
/// `$ARNG_PYTHON`, else the first of `python3`, `/usr/bin/python3` that imports it;
/// scripts/test.sh installs Debian's python3-paho-mqtt (or a venv from PyPI). None:
/// the test fails and says how to get one.
pub fn python_with_paho() -> String {
    let imports_paho = |py: &str| {
        Command::new(py)
            .args(["-c", "import paho.mqtt.client"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Ok(py) = std::env::var("ARNG_PYTHON") {
        assert!(
            imports_paho(&py),
            "$ARNG_PYTHON={py} cannot import paho.mqtt"
        );
        return py;
    }
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| imports_paho(py))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "no Python with paho-mqtt: run scripts/test.sh, or apt-get install \
                 python3-paho-mqtt, or set ARNG_PYTHON to a venv's python with paho-mqtt"
            )
        })
}

/// Runs `arng args` off the async runtime; (exit code, stdout, stderr, description).
pub async fn arng(
    args: &[&str],
    env: &[(String, String)],
) -> (Option<i32>, String, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env = env.to_vec();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = run_arng(&a, &e);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            describe(&a, &out),
        )
    })
    .await
    .unwrap()
}
