//! The `arng` binary as a user meets it: help, usage errors (exit 2, one line), and
//! `arng doctor` against a real Mosquitto and a real influxd.

mod common;

use common::influxd::Influxd;
use common::mosquitto::{account, Mosquitto};
use common::{describe, run_arng};

#[test]
fn help_explains_options_and_hides_secrets() {
    let args = ["doctor", "--help"];
    let out = run_arng(
        &args,
        &[
            ("INFLUX_TOKEN", "super-secret"),
            ("ARNG_MQTT_PASSWORD", "pw-secret"),
        ],
    );
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&args, &out));
    for needle in [
        "--mqtt-url",
        "ARNG_MQTT_URL",
        "--influx-token",
        "INFLUX_TOKEN",
        "mqtt://localhost:1883",
        "ares",
        "entrepot",
    ] {
        assert!(
            help.contains(needle),
            "help lacks {needle}: {}",
            describe(&args, &out)
        );
    }
    for secret in ["super-secret", "pw-secret", "dev-token"] {
        assert!(
            !help.contains(secret),
            "help shows {secret}: {}",
            describe(&args, &out)
        );
    }
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["doctor", "--mqtt-url", "localhost:1883"], "--mqtt-url"),
        (&["doctor", "--mqtt-url", "http://x"], "scheme"),
        (&["doctor", "--influx-url", "nope"], "--influx-url"),
        (&["doctor", "--influx-org", ""], "--influx-org"),
        (&["doctor", "--mqtt-password", "x"], "--mqtt-username"),
        (&["doctor", "--timeout", "soon"], "--timeout"),
        (&["doctor", "--timeout", "0s"], "--timeout"),
        (&["doctor", "--no-such-flag"], "--no-such-flag"),
        (&["no-such-command"], "no-such-command"),
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
    // Environment variables are validated the same way as flags.
    let out = run_arng(&["doctor"], &[("ARNG_MQTT_URL", "ftp://x")]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        describe(&["doctor"], &out)
    );
}

#[test]
fn doctor_passes_against_the_real_stack_and_names_what_fails() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let (user, pass) = account("operator");
    let url = broker.url();
    let influx_env = db.env();
    let mut env: Vec<(&str, &str)> = vec![
        ("ARNG_MQTT_URL", &url),
        ("ARNG_MQTT_USERNAME", &user),
        ("ARNG_MQTT_PASSWORD", &pass),
    ];
    env.extend(influx_env.iter().map(|(k, v)| (*k, v.as_str())));

    let args = ["doctor", "--json"];
    let out = run_arng(&args, &env);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3);
    assert!(
        checks[1]["detail"]
            .as_str()
            .unwrap()
            .contains("version 2.7"),
        "{report}"
    );
    assert!(
        checks[2]["detail"]
            .as_str()
            .unwrap()
            .contains("\"entrepot\""),
        "{report}"
    );
    assert!(checks
        .iter()
        .all(|c| c["latency_ms"].as_f64().unwrap() >= 0.0));

    // A wrong password: the broker check fails and says why; the others still pass.
    let mut bad = env.clone();
    bad[2] = ("ARNG_MQTT_PASSWORD", "wrong");
    let out = run_arng(&args, &bad);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checks"][0]["ok"], false);
    assert!(
        report["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not authorized (wrong or missing --mqtt-username"),
        "{report}"
    );
    assert_eq!(report["checks"][1]["ok"], true);

    // A wrong bucket, shown as a table for people.
    let mut bad = env.clone();
    bad.push(("INFLUX_BUCKET", "nope"));
    let out = run_arng(&["doctor"], &bad);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe(&["doctor"], &out)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("FAIL") && table.contains("\"nope\""),
        "{}",
        describe(&["doctor"], &out)
    );
}

/// Issue 16: without HOME (a service manager's bare environment), ingest's spool
/// used to land in ./arng/spool under whatever directory it was started from.
#[test]
fn ingest_never_puts_its_default_spool_in_the_working_directory() {
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let (user, pass) = account("ingest");
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("ingest.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = std::process::Command::new(common::arng_bin());
    cmd.args(["ingest", "--metrics-port", &common::free_port().to_string()])
        .current_dir(cwd.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", tmp.path())
        .env("USER", "tester")
        .env("ARNG_MQTT_URL", broker.url())
        .env("ARNG_MQTT_USERNAME", &user)
        .env("ARNG_MQTT_PASSWORD", &pass)
        .envs(db.env())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut child = cmd.spawn().expect("cannot start arng ingest");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !read_log().contains("subscribed: receiving readings") {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ingest exited ({status}):\n{}", read_log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ingest did not start:\n{}",
            read_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = read_log();

    let in_cwd: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        in_cwd.is_empty(),
        "created in the working directory: {in_cwd:?}\n{log}"
    );
    let spool = tmp.path().join("arng-tester/arng/spool/arng-ingest");
    assert!(spool.is_dir(), "no spool at {}:\n{log}", spool.display());
    let line = log
        .lines()
        .find(|l| l.contains("spool in "))
        .unwrap_or_else(|| panic!("no spool line in the log:\n{log}"));
    assert!(
        line.contains(&spool.display().to_string()) && line.contains("--spool-dir"),
        "{line}"
    );
    assert!(
        line.contains("WARN"),
        "a spool that a reboot may empty is a warning: {line}"
    );
}
