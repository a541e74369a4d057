//! `arng doctor`: can this configuration reach the broker and InfluxDB?
//!
//! The first thing to run after changing credentials, and what `scripts/services.sh`
//! users run to see that the local stack is up. The checks are
//! [`crate::probe::reach`]'s.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::Backends;
use crate::units::parse_positive_duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub backends: Backends,

    /// How long to wait for each service.
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Print the result as JSON: {"ok": bool, "checks": [{"name", "ok", "latency_ms", "detail"}]}.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = crate::probe::reach::check(&args.backends, args.timeout).await;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_table());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
