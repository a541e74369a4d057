//! One module per subcommand. Each has its `Args` (the doc comments are the help
//! text) and an async `run` that returns the process exit code.

pub mod doctor;

use std::process::ExitCode;

use crate::cli::Command;

/// A usage mistake found after parsing (e.g. two options that contradict each other).
/// `main` prints it on one line and exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Doctor(args) => doctor::run(args).await,
    }
}

/// Milliseconds elapsed since `start`, for reports.
pub(crate) fn elapsed_ms(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}
