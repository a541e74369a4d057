//! `arng check-lab`: the lab's checklist (TP ARNG), automated, against any team's
//! broker, REST API and InfluxDB. The checks and what makes each pass are
//! [`crate::lab`]'s; this command reads the options, shows the window going by on a
//! terminal, prints the table or JSON, writes the Markdown report, and exits 1 when a
//! checked item failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;

use super::UsageError;
use crate::config::{parse_zone, Backends, Chain, TeamApiArgs};
use crate::domain::Zone;
use crate::help::heading;
use crate::lab::render;
use crate::lab::run::alert_body;
use crate::lab::{LabCheck, Lang, Status};
use crate::units::parse_positive_duration;

/// Examples shown at the end of `arng check-lab --help`.
const EXAMPLES: &str = "\
Examples:
  # A team's chain, the French report to hand in (ARNG_MQTT_PASSWORD in the environment)
  arng check-lab --mqtt-url mqtt://10.0.0.12:1883 --mqtt-username prof \\
      --api-url http://10.0.0.12:8000 --influx-url http://10.0.0.12:8086 \\
      --influx-token \"$TEAM_TOKEN\" --report rapport.md
  # arng's own chain (after eval \"$(scripts/services.sh env)\"), English, JSON for a script
  arng check-lab --lang en --json > check.json
  # Read only: no probe reading, no probe alert (those items are then not checked)
  arng check-lab --no-probe --window 2m";

fn parse_lang(s: &str) -> Result<Lang, String> {
    s.parse()
}

fn parse_alert_body(s: &str) -> Result<String, String> {
    alert_body(s, "nord", "check-lab-0-0").map(|_| s.to_owned())
}

fn parse_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected a path such as /alerts".into());
    }
    Ok(s.to_owned())
}

#[derive(Debug, clap::Args)]
#[command(next_help_heading = heading::CHECK_LAB, after_help = EXAMPLES)]
pub struct Args {
    /// Zones that must publish, comma-separated; the first carries the probe reading
    /// and the probe alert.
    #[arg(long, env = "ARNG_LAB_ZONES", default_value = "nord,sud,est", value_delimiter = ',',
          value_parser = parse_zone, value_name = "ZONES")]
    pub zones: Vec<Zone>,

    /// How long to watch the broker and poll the API. Two heartbeat periods at least,
    /// or the period cannot be measured (70 s for the lab's 30 s).
    #[arg(long, env = "ARNG_LAB_WINDOW", default_value = "70s", value_parser = parse_positive_duration,
          value_name = "DURATION")]
    pub window: Duration,

    /// How long a write may take to show: the probe's round trip, the posted alert,
    /// the window's last readings in InfluxDB.
    #[arg(long, env = "ARNG_LAB_TIMEOUT", default_value = "20s", value_parser = parse_positive_duration,
          value_name = "DURATION")]
    pub timeout: Duration,

    /// How long one HTTP request or one Flux query may take.
    #[arg(long, env = "ARNG_LAB_REQUEST_TIMEOUT", default_value = "5s",
          value_parser = parse_positive_duration, value_name = "DURATION")]
    pub request_timeout: Duration,

    /// Expected time between two heartbeats of a zone.
    #[arg(long, env = "ARNG_LAB_HEARTBEAT_PERIOD", default_value = "30s",
          value_parser = parse_positive_duration, value_name = "DURATION")]
    pub heartbeat_period: Duration,

    /// How far a heartbeat interval may be from --heartbeat-period.
    #[arg(long, env = "ARNG_LAB_HEARTBEAT_TOLERANCE", default_value = "5s",
          value_parser = parse_positive_duration, value_name = "DURATION")]
    pub heartbeat_tolerance: Duration,

    /// Time between two GET /zones/{zone}/latest of each zone during the window.
    #[arg(long, env = "ARNG_LAB_POLL_EVERY", default_value = "1s", value_parser = parse_positive_duration,
          value_name = "DURATION")]
    pub poll_every: Duration,

    /// Read only: publish no probe reading and post no probe alert (the round trip
    /// and the alert items are then not checked).
    #[arg(long, env = "ARNG_LAB_NO_PROBE")]
    pub no_probe: bool,

    /// Where the team's API lists alerts (GET), to find the probe alert again.
    #[arg(long, env = "ARNG_LAB_ALERTS_PATH", default_value = "/alerts", value_parser = parse_path,
          value_name = "PATH")]
    pub alerts_path: String,

    /// JSON body of the probe alert POSTed to /alerts, for an API that wants another
    /// shape; `{zone}` and `{marker}` are filled in, `{marker}` is required [default:
    /// {"zone": "{zone}", "sensor": "e2e-probe", "metric": "manual", "severity":
    /// "warning", "message": "arng check-lab probe {marker} (test alert, ignore)"}].
    #[arg(long, env = "ARNG_LAB_ALERT_BODY", value_parser = parse_alert_body, value_name = "JSON")]
    pub alert_body: Option<String>,

    /// Language of the table, the JSON texts and the report: fr or en.
    #[arg(long, default_value = "fr", value_parser = parse_lang, value_name = "LANG",
          help_heading = heading::OUTPUT)]
    pub lang: Lang,

    /// Print the result as JSON: {"ok", "lang", "target", "started_at", "finished_at",
    /// "window_s", "counts": {"pass", "fail", "not_checked"}, "items": [{"id", "title",
    /// "status", "summary", "evidence"}], "left_behind"} (docs/check-lab.md).
    #[arg(long, help_heading = heading::OUTPUT)]
    pub json: bool,

    /// Also write the report as Markdown to FILE (to hand in).
    #[arg(long, value_name = "FILE", help_heading = heading::OUTPUT)]
    pub report: Option<PathBuf>,

    // Last: these groups set the heading of what follows them (crate::help).
    #[command(flatten)]
    pub backends: Backends,

    #[command(flatten)]
    pub api: TeamApiArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // A report that cannot be written is known now, not after the window.
    let report_file = match &args.report {
        Some(path) => Some((
            path,
            std::fs::File::create(path)
                .map_err(|e| UsageError(format!("--report {}: {e}", path.display())))?,
        )),
        None => None,
    };
    let check = LabCheck {
        chain: Chain {
            mqtt: args.backends.mqtt,
            influx: args.backends.influx,
            api: args.api.0,
        },
        zones: args.zones,
        window: args.window,
        timeout: args.timeout,
        request_timeout: args.request_timeout,
        heartbeat_period: args.heartbeat_period,
        heartbeat_tolerance: args.heartbeat_tolerance,
        poll_every: args.poll_every,
        probe: !args.no_probe,
        alerts_path: args.alerts_path,
        alert_body: args.alert_body,
        lang: args.lang,
    };
    let bar = progress();
    let report = check.run(&bar).await;
    if let Some((path, mut file)) = report_file {
        use std::io::Write as _;
        file.write_all(render::markdown(&report).as_bytes())
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    let out = if args.json {
        render::json(&report)
    } else {
        render::table(&report, super::table_width())
    };
    super::print_stdout(format!("{out}\n").as_bytes())?;
    if report.ok() {
        return Ok(ExitCode::SUCCESS);
    }
    let failed: Vec<&str> = report
        .items
        .iter()
        .filter(|i| i.status == Status::Fail)
        .map(|i| i.id)
        .collect();
    eprintln!(
        "check-lab: {} item(s) failed: {}",
        failed.len(),
        failed.join(", ")
    );
    Ok(ExitCode::FAILURE)
}

fn progress() -> ProgressBar {
    super::progress_bar(1, "{spinner} {pos}/{len} s {wide_bar} {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::parse_args;

    #[test]
    fn defaults_are_the_labs() {
        let a: Args = parse_args(&[]).unwrap();
        let zones: Vec<&str> = a.zones.iter().map(Zone::as_str).collect();
        assert_eq!(zones, ["nord", "sud", "est"]);
        assert_eq!(
            (a.window, a.heartbeat_period, a.heartbeat_tolerance),
            (
                Duration::from_secs(70),
                Duration::from_secs(30),
                Duration::from_secs(5)
            )
        );
        assert_eq!((a.lang, a.alerts_path.as_str()), (Lang::Fr, "/alerts"));
        assert!(!a.no_probe && a.alert_body.is_none());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for argv in [
            &["--zones", "nord,Sud"][..],
            &["--window", "0s"],
            &["--lang", "de"],
            &["--alerts-path", "alerts"],
            &["--alert-body", r#"{"zone": "{zone}"}"#],
            &["--alert-body", "not json {marker}"],
            &["--heartbeat-period", "soon"],
        ] {
            let err = parse_args::<Args>(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}: {err}");
        }
        let a: Args = parse_args(&[
            "--alert-body",
            r#"{"level": "critical", "msg": "{marker}"}"#,
            "--lang",
            "en",
        ])
        .unwrap();
        assert_eq!(a.lang, Lang::En);
        assert!(a.alert_body.unwrap().contains("{marker}"));
    }
}
