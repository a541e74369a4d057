//! `arng latency`: how long does a reading take to become visible, measured with real
//! probe readings published one at a time, and how fresh is each zone's heartbeat.
//! The paths measured and how are [`crate::probe::latency`]'s; this command shows a
//! progress bar on a terminal, then prints the percentiles as tables or JSON.

use std::process::ExitCode;
use std::time::Duration;

use indicatif::ProgressBar;

use super::UsageError;
use crate::config::Chain;
use crate::help::heading;
use crate::probe::latency::{render_table, LatencyRun};
use crate::probe::scope::ZoneOptions;
use crate::units::parse_positive_duration;

#[derive(Debug, clap::Args)]
#[command(next_help_heading = heading::LATENCY, after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub zones: ZoneOptions,

    /// Number of probe readings to measure (one at a time).
    #[arg(long, env = "ARNG_LATENCY_SAMPLES", default_value_t = 20, conflicts_with = "duration",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "N")]
    pub samples: u32,

    /// Measure for this long instead of a number of samples (e.g. 1m).
    #[arg(long, env = "ARNG_LATENCY_DURATION", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Pause between two probes.
    #[arg(long, env = "ARNG_LATENCY_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration,
          value_name = "DURATION")]
    pub interval: Duration,

    /// How long one probe may take to be visible everywhere before it counts as lost.
    #[arg(long, env = "ARNG_LATENCY_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration,
          value_name = "DURATION")]
    pub timeout: Duration,

    /// Print the result as JSON: {"zone", "zone_choice", "samples", "lost", "paths":
    /// {<path>: {"p50_ms", "p90_ms", "p99_ms", "max_ms", "samples"}}, "heartbeats":
    /// {<zone>: {..., "latest_ms"}}}.
    #[arg(long, help_heading = heading::OUTPUT)]
    pub json: bool,

    // Last: these groups set the heading of what follows them (crate::help).
    #[command(flatten)]
    pub chain: Chain,
}

const EXAMPLES: &str = "\
Examples:
  # 20 probes in the zone check-e2e would choose, as tables
  arng latency
  # One minute of probes in zone nord, one every 500 ms, for a script
  arng latency --zone nord --duration 1m --interval 500ms --json
  # The API of another host
  arng latency --samples 100 --api-url http://arng.example.com:8000";

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.zones.check().map_err(|e| UsageError(e.to_string()))?;
    let bar = progress(&args);
    let measurement = LatencyRun {
        chain: args.chain,
        zones: args.zones,
        samples: args.samples,
        duration: args.duration,
        interval: args.interval,
        timeout: args.timeout,
    };
    let report = measurement.run(&bar).await;
    bar.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", render_table(&report));
    }
    if report.lost > 0 {
        eprintln!(
            "latency: {} of {} probe(s) lost: {}",
            report.lost,
            report.samples,
            report.errors.join("; ")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(args: &Args) -> ProgressBar {
    let (len, template) = match args.duration {
        Some(d) => (
            d.as_secs().max(1),
            "{spinner} {pos}/{len} s {wide_bar} {msg}",
        ),
        None => (
            u64::from(args.samples),
            "{spinner} {pos}/{len} probes {wide_bar} {msg}",
        ),
    };
    super::progress_bar(len, template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_chosen_by_check_e2e_s_options() {
        let args: Args = crate::cmd::parse_args(&[
            "--zone",
            "sud,nord",
            "--heartbeat-max-age",
            "2m",
            "--samples",
            "3",
        ])
        .unwrap();
        let names: Vec<&str> = args.zones.zone.iter().map(|z| z.as_str()).collect();
        assert_eq!(names, ["sud", "nord"]);
        assert_eq!(args.zones.heartbeat_max_age, Some(Duration::from_secs(120)));
        assert_eq!(args.samples, 3);
    }
}
