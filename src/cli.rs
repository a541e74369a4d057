//! The command line: global options and the list of subcommands. Each subcommand's
//! own options live next to its code in `cmd/`.

use clap::{ArgAction, Parser, Subcommand};

use crate::cmd;

/// Run and check a warehouse IoT chain: MQTT sensors → rules and alerts → InfluxDB 2 →
/// REST API, with supervision.
///
/// Every option can also be set with the environment variable shown in its help.
/// Logs go to stderr (RUST_LOG or -v to see more); results go to stdout.
#[derive(Debug, Parser)]
#[command(name = "arng", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG takes precedence.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Only log errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the whole chain with probe readings, hop by hop (broker, InfluxDB, REST,
    /// alerts on MQTT and REST, heartbeats, broker $SYS): exit 0 when every hop
    /// passes, 1 when one fails (the table says which and why).
    #[command(name = "check-e2e")]
    CheckE2e(cmd::check_e2e::Args),
    /// Check a team's chain against the lab's checklist (TP ARNG): broker (accounts,
    /// topics, wildcards, zones), payloads, heartbeats, InfluxDB and the REST routes,
    /// each item pass / fail / not checked with its evidence; a Markdown report to
    /// hand in (--report). Exit 0 when every checked item passes, 1 otherwise.
    #[command(name = "check-lab", after_help = cmd::check_lab::EXAMPLES,
              mut_arg("api_url", |a| a.help("Base URL of the REST API to check (the team's)")
                  .help_heading("REST API")),
              mut_arg("api_token", |a| a.help("Bearer token sent with every request to the API \
                  (arng serve wants one for POST /alerts)").help_heading("REST API")))]
    CheckLab(cmd::check_lab::Args),
    /// Check that the broker and InfluxDB are reachable with the configured
    /// credentials (exit 0 when every check passes, 1 otherwise).
    Doctor(cmd::doctor::Args),
    /// Run the middleware: MQTT readings → threshold rules and alerts → InfluxDB, at
    /// least once and without duplicates. Runs until SIGTERM or Ctrl-C.
    Ingest(cmd::ingest::Args),
    /// Measure latency percentiles with probe readings: publish → InfluxDB, publish →
    /// REST, the age of the InfluxDB point at the API, and heartbeat freshness per zone.
    Latency(cmd::latency::Args),
    /// Measure what MQTT QoS 0, 1 and 2 cost and guarantee on the broker: throughput,
    /// end-to-end latency percentiles, loss, duplicates, reordering and acknowledgement
    /// times per QoS level (exit 1 if a level cannot be measured, e.g. refused by max_qos).
    QosBench(cmd::qos_bench::Args),
    /// Serve the REST API and the live dashboard page (GET / ; routes at /docs).
    /// Runs until SIGTERM or Ctrl-C.
    Serve(cmd::serve::Args),
    /// Simulate a fleet of temperature/humidity sensors: readings, heartbeats, alerts
    /// and injected faults published to the broker. With --count or --duration it
    /// exits 0 once everything is acknowledged; otherwise it runs until SIGTERM/Ctrl-C.
    Simulate(cmd::simulate::Args),
}

/// Starts the log subscriber: stderr, level from RUST_LOG or the -v/-q flags.
pub fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Our own crate at the chosen level; dependencies one notch quieter.
        EnvFilter::new(format!("warn,arng={default}"))
    });
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
