//! The command line: global options and the list of subcommands. Each subcommand's
//! own options live next to its code in `cmd/`.

use clap::{ArgAction, Parser, Subcommand};

use crate::cmd;
use crate::help::{self, heading};

/// Run and check a warehouse IoT chain: MQTT sensors → rules and alerts → InfluxDB 2 →
/// REST API, with supervision.
///
/// Options that set up a service or a check can also be set with the environment
/// variable shown in their help ([env: …]; a flag wins over its variable): the
/// connections and credentials of every command, and the settings of simulate,
/// ingest, serve, check-e2e, latency and doctor. Output options (--json, --csv...)
/// and qos-bench's experiment parameters have none. docs/configuration.md lists
/// them all. Logs go to stderr (RUST_LOG or -v to see more); results go to stdout.
#[derive(Debug, Parser)]
#[command(name = "arng", version = help::VERSION, propagate_version = true, max_term_width = 100,
          disable_help_flag = true, disable_version_flag = true, after_help = EXAMPLES)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG takes precedence.
    #[arg(short, long, global = true, action = ArgAction::Count, help_heading = heading::GLOBAL)]
    pub verbose: u8,

    /// Only log errors.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = heading::GLOBAL)]
    pub quiet: bool,

    /// Print help (a summary with -h).
    #[arg(short, long, global = true, action = ArgAction::Help, help_heading = heading::GLOBAL)]
    help: Option<bool>,

    /// Print the version, git commit and build date.
    #[arg(short = 'V', long, global = true, action = ArgAction::Version, help_heading = heading::GLOBAL)]
    version: Option<bool>,

    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Examples:
  arng doctor                                  # can this configuration reach the broker and InfluxDB?
  arng simulate --zones nord,sud,est --count 10
  arng check-e2e --zone nord --json
  arng completions bash > ~/.local/share/bash-completion/completions/arng";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the whole chain with probe readings, hop by hop (broker, InfluxDB, REST,
    /// alerts on MQTT and REST, heartbeats, broker $SYS): exit 0 when every hop
    /// passes, 1 when one fails (the table says which and why).
    #[command(name = "check-e2e")]
    CheckE2e(cmd::check_e2e::Args),
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
    /// Print the shell completion script of arng (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
    /// Print arng's manual page (roff), or write every page into a directory.
    Man(cmd::man::Args),
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
