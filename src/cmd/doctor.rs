//! `arng doctor`: can this configuration reach the broker and InfluxDB?
//!
//! The first thing to run after changing credentials, and what `scripts/services.sh`
//! users run to see that the local stack is up. The checks are
//! [`crate::probe::reach`]'s.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::Backends;
use crate::help::heading;
use crate::units::parse_positive_duration;

#[derive(Debug, clap::Args)]
#[command(next_help_heading = heading::DOCTOR, after_help = EXAMPLES)]
pub struct Args {
    /// How long to wait for each service.
    #[arg(long, env = "ARNG_DOCTOR_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration,
          value_name = "DURATION")]
    pub timeout: Duration,

    /// Print the result as JSON: {"ok": bool, "checks": [{"name", "ok", "latency_ms", "detail"}]}.
    #[arg(long, help_heading = heading::OUTPUT)]
    pub json: bool,

    // Last: these groups set the heading of what follows them (crate::help).
    #[command(flatten)]
    pub backends: Backends,
}

const EXAMPLES: &str = "\
Examples:
  # The local stack of scripts/services.sh (eval \"$(scripts/services.sh env)\" first)
  arng doctor
  # Another account, as a script would check it
  ARNG_MQTT_USERNAME=ingest ARNG_MQTT_PASSWORD=ingest-dev arng doctor --timeout 2s --json
  # A remote InfluxDB
  arng doctor --influx-url https://influx.example.com:8086 --influx-org ares";

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = crate::probe::reach::check(&args.backends, args.timeout).await;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_table_as("check", super::table_width()));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
