//! One module per subcommand. Each has its `Args` (the doc comments are the help
//! text) and an async `run` that builds the library object doing the work, awaits it
//! and renders its result, returning the process exit code. No command imports
//! another: what two commands share lives in the library.

pub mod check_e2e;
pub mod doctor;
pub mod ingest;
pub mod latency;
pub mod qos_bench;
pub mod serve;
pub mod simulate;

/// A usage mistake found after parsing (e.g. two options that contradict each other).
/// `main` prints it on one line and exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
