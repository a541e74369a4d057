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
    /// Check that the broker and InfluxDB are reachable with the configured
    /// credentials (exit 0 when every check passes, 1 otherwise).
    Doctor(cmd::doctor::Args),
    /// Run the middleware: MQTT readings → threshold rules and alerts → InfluxDB, at
    /// least once and without duplicates. Runs until SIGTERM or Ctrl-C.
    Ingest(cmd::ingest::Args),
    /// Serve the REST API and the live dashboard page (GET / ; routes at /docs).
    /// Runs until SIGTERM or Ctrl-C.
    Serve(cmd::serve::Args),
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
