//! `arng check-e2e`: does the whole chain work, right now? Publishes uniquely
//! identified probe readings and follows them hop by hop (broker, InfluxDB, REST,
//! alerts on MQTT and REST, heartbeats, broker `$SYS`), each within `--timeout`. The
//! hops and what makes each pass are [`crate::probe::check`]'s; this command prints
//! them as a table or JSON and exits 1 when one failed.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::{parse_zone, Chain};
use crate::domain::Zone;
use crate::probe::check::E2eCheck;
use crate::units::parse_positive_duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Zone the probes are published in (sensor e2e-probe) [default: the first zone
    /// that GET /zones lists].
    #[arg(long, env = "ARNG_PROBE_ZONE", value_parser = parse_zone, value_name = "ZONE")]
    pub zone: Option<Zone>,

    /// How long each hop may take.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Oldest zone heartbeat accepted [default: silence_after_s of the thresholds in
    /// force, 90 s unless changed].
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    pub heartbeat_max_age: Option<Duration>,

    /// Print the result as JSON: {"ok": bool, "hops": [{"name", "ok", "latency_ms", "detail"}]}.
    #[arg(long)]
    pub json: bool,

    // Last: clap's help headings of these groups carry over to later options.
    #[command(flatten)]
    pub chain: Chain,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let check = E2eCheck {
        chain: args.chain,
        zone: args.zone,
        timeout: args.timeout,
        heartbeat_max_age: args.heartbeat_max_age,
    };
    let report = check.run().await;
    if args.json {
        println!("{}", report.to_json_as("hops"));
    } else {
        println!("{}", report.to_table_as("hop"));
    }
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        let failed: Vec<&str> = report.failures().map(|c| c.name.as_str()).collect();
        eprintln!(
            "check-e2e: {} hop(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}
