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
