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

const SUBCOMMANDS: [&str; 10] = [
    "check-e2e",
    "check-lab",
    "completions",
    "doctor",
    "ingest",
    "latency",
    "man",
    "qos-bench",
    "serve",
    "simulate",
];

/// The lines under `heading:` up to the next heading, in a help text.
fn section<'a>(help: &'a str, heading: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| *l != format!("{heading}:"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn help_groups_options_under_headings_and_ends_with_examples() {
    let own = [
        ("check-e2e", "Check", "--exclude-zone"),
        ("check-lab", "Lab checklist", "--heartbeat-period"),
        ("doctor", "Doctor", "--timeout"),
        ("ingest", "Ingest", "--metrics-port"),
        ("latency", "Measurement", "--samples"),
        ("qos-bench", "Benchmark", "--publishers"),
        ("serve", "Server", "--api-token"),
        ("simulate", "Simulation", "--zones"),
    ];
    for (command, heading, flag) in own {
        let args = [command, "--help"];
        let out = run_arng(&args, &[]);
        assert!(out.status.success(), "{}", describe(&args, &out));
        let help = String::from_utf8_lossy(&out.stdout);
        let shown = describe(&args, &out);
        // The command's own options under its own heading, not "Options:" and
        // not "InfluxDB:" (issue 16: --port and --metrics-port were).
        assert!(!help.contains("\nOptions:"), "{shown}");
        assert!(
            section(&help, heading).iter().any(|l| l.contains(flag)),
            "{flag} not under {heading}:{shown}"
        );
        let influx = section(&help, "InfluxDB");
        if !influx.is_empty() {
            assert!(
                influx
                    .iter()
                    .all(|l| !l.trim_start().starts_with("--") || l.contains("--influx-")),
                "{shown}"
            );
        }
        // -v/-q under their own heading, nowhere else.
        let global = section(&help, "Global options");
        for g in ["--verbose", "--quiet", "--help", "--version"] {
            assert!(global.iter().any(|l| l.contains(g)), "{g}:{shown}");
            assert_eq!(help.matches(g).count(), 1, "{g} twice:{shown}");
        }
        if command != "ingest" && command != "serve" {
            assert!(
                section(&help, "Output")
                    .iter()
                    .any(|l| l.contains("--json")),
                "{shown}"
            );
        }
        // Two or three examples at the end.
        let examples: Vec<&str> = section(&help, "Examples")
            .into_iter()
            .filter(|l| l.contains("arng ") && !l.trim_start().starts_with('#'))
            .collect();
        assert!((2..=3).contains(&examples.len()), "{examples:?}{shown}");
        let last = section(&help, "Examples")
            .last()
            .copied()
            .unwrap_or_default();
        assert_eq!(help.trim_end().lines().last(), Some(last), "{shown}");
    }
    // check-lab's API is the team's it checks, not arng serve: its own heading and words.
    for (command, heading, serve_words) in [
        ("check-lab", "Team's REST API", false),
        ("check-e2e", "arng API", true),
        ("latency", "arng API", true),
    ] {
        let args = [command, "--help"];
        let out = run_arng(&args, &[]);
        let help = String::from_utf8_lossy(&out.stdout);
        let shown = describe(&args, &out);
        let api = section(&help, heading).join("\n");
        assert!(
            api.contains("--api-url") && api.contains("--api-token"),
            "{heading}:{shown}"
        );
        assert_eq!(api.contains("(`arng serve`)"), serve_words, "{shown}");
        let other = if serve_words {
            "Team's REST API"
        } else {
            "arng API"
        };
        assert!(section(&help, other).is_empty(), "{other}:{shown}");
    }
    // Settings that belong in a compose file have their variable.
    for (command, env) in [
        ("simulate", "ARNG_SIM_ZONES"),
        ("simulate", "ARNG_SIM_INTERVAL"),
        ("check-e2e", "ARNG_CHECK_TIMEOUT"),
        ("check-e2e", "ARNG_HEARTBEAT_MAX_AGE"),
        ("check-e2e", "ARNG_EXCLUDE_ZONES"),
        ("check-lab", "ARNG_LAB_WINDOW"),
        ("check-lab", "ARNG_LAB_ZONES"),
        ("serve", "ARNG_API_REQUEST_TIMEOUT"),
        ("serve", "ARNG_API_LOOKBACK"),
        ("latency", "ARNG_LATENCY_SAMPLES"),
        ("latency", "ARNG_EXCLUDE_ZONES"),
        ("latency", "ARNG_HEARTBEAT_MAX_AGE"),
        ("doctor", "ARNG_DOCTOR_TIMEOUT"),
    ] {
        let out = run_arng(&[command, "--help"], &[]);
        // Words as they read, whatever the wrapping.
        let words: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let help = words.join(" ");
        assert!(
            help.contains(&format!("[env: {env}=")),
            "{command} lacks {env}"
        );
    }
    // And a variable works like its flag.
    let out = run_arng(&["simulate"], &[("ARNG_SIM_ZONES", "Nord")]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        describe(&["simulate"], &out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--zones"));
    let top = run_arng(&["--help"], &[]);
    let help = String::from_utf8_lossy(&top.stdout);
    assert!(!help.contains("Every option can"), "{help}");
    for command in SUBCOMMANDS {
        assert!(
            help.contains(&format!("\n  {command} ")),
            "{command}: {help}"
        );
    }
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = run_arng(&["--version"], &[]);
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let shown = describe(&["--version"], &out);
    let rest = line
        .strip_prefix(concat!("arng ", env!("CARGO_PKG_VERSION"), " (commit "))
        .unwrap_or_else(|| panic!("{shown}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{shown}"
    );
    let d: Vec<&str> = date.split('-').collect();
    assert!(
        d.len() == 3 && d.iter().all(|p| p.parse::<u32>().is_ok()) && d[0].len() == 4,
        "{shown}"
    );
    // Built from this checkout: the commit is its HEAD.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(common::repo_root())
        .output();
    if let Some(h) = head.ok().filter(|h| h.status.success()) {
        assert_eq!(commit, String::from_utf8_lossy(&h.stdout).trim(), "{shown}");
    }
    // Every subcommand answers -V too.
    let out = run_arng(&["doctor", "-V"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(commit));
}

#[test]
fn bash_completion_knows_every_subcommand_and_is_valid_bash() {
    let args = ["completions", "bash"];
    let out = run_arng(&args, &[]);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    for command in SUBCOMMANDS {
        assert!(
            script.contains(command),
            "no {command} in the bash completion"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arng.bash");
    std::fs::write(&path, &script).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash is needed to check the completion script");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Loaded into bash, it completes subcommands and their flags.
    let complete = |words: &str| {
        let program = format!(
            r#"source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); COMP_LINE="{words}"; COMP_POINT=${{#COMP_LINE}}; _arng arng "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"; printf '%s\n' "${{COMPREPLY[@]}}""#,
            path.display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &program])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let got = complete("arng che");
    assert_eq!(got.trim(), "check-e2e\ncheck-lab", "{got}");
    let got = complete("arng check-l");
    assert_eq!(got.trim(), "check-lab", "{got}");
    let got = complete("arng check-e2e --excl");
    assert_eq!(got.trim(), "--exclude-zone", "{got}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run_arng(&["completions", shell], &[]);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("check-e2e"));
    }
    let out = run_arng(&["completions", "tcsh"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        describe(&["completions", "tcsh"], &out)
    );
}

#[test]
fn man_pages_render_with_every_subcommand() {
    let render = |path: &std::path::Path| {
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(path)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("man (man-db) is needed to render the pages; scripts/test.sh installs it");
        assert!(
            out.status.success(),
            "man -l {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let args = ["man", "--out", dir.path().to_str().unwrap()];
    let out = run_arng(&args, &[]);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let top = render(&dir.path().join("arng.1"));
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "GLOBAL OPTIONS",
        "SUBCOMMANDS",
        "EXAMPLES",
    ] {
        assert!(
            top.contains(&format!("\n{section}\n")),
            "no {section} in\n{top}"
        );
    }
    for command in SUBCOMMANDS {
        assert!(
            top.contains(&format!("arng-{command}(1)")),
            "{command} in\n{top}"
        );
        let page = render(&dir.path().join(format!("arng-{command}.1")));
        for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "EXAMPLES", "VERSION"] {
            assert!(
                page.contains(&format!("\n{section}\n")),
                "{command}: no {section}\n{page}"
            );
        }
        assert!(page.contains(&format!("arng {command}")), "{page}");
        // The examples are commands one can paste: plain ASCII hyphens.
        let examples = page.split("\nEXAMPLES\n").nth(1).unwrap();
        assert!(
            examples.contains(&format!("arng {command} "))
                || command == "completions"
                || command == "man"
                || examples.contains(&format!("arng {command}\n")),
            "{command}: {examples}"
        );
        assert!(!examples.contains('\u{2010}'), "{command}: {examples}");
    }
    let check = render(&dir.path().join("arng-check-e2e.1"));
    assert!(
        check.contains("--exclude-zone") && check.contains("\nCHECK\n"),
        "{check}"
    );
    // One page on stdout.
    let out = run_arng(&["man", "check-e2e"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\n.TH arng-check-e2e 1 "));
    let out = run_arng(&["man", "nope"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        describe(&["man", "nope"], &out)
    );
}
