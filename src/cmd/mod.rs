//! One module per subcommand. Each has its `Args` (the doc comments are the help
//! text) and an async `run` that returns the process exit code.

pub mod check_e2e;
pub mod doctor;
pub mod ingest;
pub mod latency;
pub mod qos_bench;
pub mod serve;
pub mod simulate;

use std::process::ExitCode;

use crate::cli::Command;

/// A usage mistake found after parsing (e.g. two options that contradict each other).
/// `main` prints it on one line and exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckE2e(args) => check_e2e::run(args).await,
        Command::Doctor(args) => doctor::run(args).await,
        Command::Ingest(args) => ingest::run(args).await,
        Command::Latency(args) => latency::run(args).await,
        Command::QosBench(args) => qos_bench::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
    }
}

/// Milliseconds elapsed since `start`, for reports.
pub(crate) fn elapsed_ms(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` and systemd send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
