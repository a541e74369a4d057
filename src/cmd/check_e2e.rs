//! `arng check-e2e`: does the whole chain work, right now? Publishes uniquely
//! identified probe readings and follows them hop by hop (broker, InfluxDB, REST,
//! alerts on MQTT and REST, heartbeats, broker `$SYS`), each within `--timeout`. The
//! hops, their causes and the choice of zones are [`crate::probe::check`]'s and
//! [`crate::probe::scope`]'s; this command shows a spinner on a terminal while it
//! waits, prints the hops as a table that fits the terminal (or JSON) and exits 1
//! when one failed.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::UsageError;
use crate::config::Chain;
use crate::help::heading;
use crate::probe::check::E2eCheck;
use crate::probe::scope::ZoneOptions;
use crate::units::parse_positive_duration;

#[derive(Debug, clap::Args)]
#[command(next_help_heading = heading::CHECK, after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub zones: ZoneOptions,

    /// How long each hop may take. A hop that cannot reach its own server (connection
    /// refused, unknown host, refused credentials) fails at once instead.
    #[arg(long, env = "ARNG_CHECK_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration,
          value_name = "DURATION")]
    pub timeout: Duration,

    /// Print the result as JSON: {"ok": bool, "hops": [{"name", "ok", "latency_ms",
    /// "detail", "cause"}], "zone", "zones", "zone_choice"}.
    #[arg(long, help_heading = heading::OUTPUT)]
    pub json: bool,

    // Last: these groups set the heading of what follows them (crate::help).
    #[command(flatten)]
    pub chain: Chain,
}

const EXAMPLES: &str = "\
Examples:
  # The local stack (eval \"$(scripts/services.sh env)\" first), as a table
  arng check-e2e
  # Zone nord only, and a short verdict for a script or a cron job
  arng check-e2e --zone nord --timeout 10s --json
  # Every zone seen but a leftover test zone
  arng check-e2e --exclude-zone test-zone";

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.zones.check().map_err(|e| UsageError(e.to_string()))?;
    let check = E2eCheck {
        chain: args.chain,
        zones: args.zones,
        timeout: args.timeout,
    };
    let spinner = spinner(args.json);
    let result = check.run(&spinner).await;
    spinner.finish_and_clear();
    if args.json {
        super::print_stdout(format!("{:#}\n", result.to_json()).as_bytes())?;
    } else {
        let table = result.report.to_table_as("hop", super::table_width());
        super::print_stdout(format!("{table}\n{}\n", result.zone_choice()).as_bytes())?;
    }
    if result.report.ok {
        return Ok(ExitCode::SUCCESS);
    }
    let failed: Vec<&str> = result.report.failures().map(|c| c.name.as_str()).collect();
    eprintln!(
        "check-e2e: {} hop(s) failed: {}",
        failed.len(),
        failed.join(", ")
    );
    Ok(ExitCode::FAILURE)
}

/// What the check waits for, next to a spinner on stderr: only for a person
/// watching a terminal, never with --json, in a pipe, a log or CI.
fn spinner(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} check-e2e: {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_spinner_with_json_or_without_a_terminal() {
        assert!(spinner(true).is_hidden());
        if !std::io::stderr().is_terminal() {
            assert!(spinner(false).is_hidden());
        }
    }

    #[test]
    fn the_zone_options_are_flattened() {
        let args: Args =
            crate::cmd::parse_args(&["--zone", "nord,sud", "--exclude-zone", "a"]).unwrap();
        assert_eq!(args.zones.zone.len(), 2);
        assert_eq!(args.zones.exclude_zone.len(), 1);
    }
}
