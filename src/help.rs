//! What `--help` shows around the options themselves: the headings every option is
//! listed under, and the version line. Pure constants; no other module of the crate
//! is imported, so `config`, `cli` and every `cmd` module can use it.
//!
//! ## Headings (issue 16)
//! `arng <command> --help` lists each option under the heading that says what it is
//! about, in this order: the command's own options ([`heading::CHECK`],
//! [`heading::INGEST`]...), [`heading::OUTPUT`] (how results are printed), then the
//! shared connection groups [`heading::BROKER`], [`heading::INFLUX`] and
//! [`heading::API`] (set by [`crate::config`]'s groups; `check-lab` lists the same two
//! flags under [`heading::TEAM_API`], the API it checks), and [`heading::GLOBAL`]
//! (`-v`, `-q`, `-h`, `-V`, from [`crate::cli`]).
//!
//! How a command's `Args` adopt them, a flag added later included:
//! - the struct carries `#[command(next_help_heading = heading::<COMMAND>)]`: its
//!   own options are listed under that heading without saying anything more;
//! - an option about the output (`--json`, `--csv`, `--chart`...) says
//!   `help_heading = heading::OUTPUT` in its `#[arg(...)]`;
//! - the `#[command(flatten)]` groups of `config` come **last** in the struct: each
//!   sets the heading of what follows it, so an option written after them would be
//!   listed under "InfluxDB". `cli::tests::every_option_is_under_its_heading` fails
//!   when that happens.
//!
//! The examples at the end of each subcommand's help are `EXAMPLES` constants next
//! to each command (`#[command(after_help = EXAMPLES)]`); `cli`'s tests parse every
//! example line with the real command line, so an example cannot drift from the
//! flags.

/// The headings of `--help`. A new command adds its own constant here.
pub mod heading {
    /// `-v`, `-q`, `-h`, `-V`: accepted by every command, before or after its name.
    pub const GLOBAL: &str = "Global options";
    /// `--mqtt-*`: where the broker is and which account to use.
    pub const BROKER: &str = "MQTT broker";
    /// `--influx-*`: where InfluxDB is, its org, bucket and token.
    pub const INFLUX: &str = "InfluxDB";
    /// `--api-url`, `--api-token` of the commands that are clients of `arng serve`.
    pub const API: &str = "arng API";
    /// `--api-url`, `--api-token` of `arng check-lab`: the team's REST API it checks,
    /// which need not be arng's.
    pub const TEAM_API: &str = "Team's REST API";
    /// How a command prints its results (`--json`, `--csv`, `--chart`, `--out`).
    pub const OUTPUT: &str = "Output";

    /// `arng check-e2e`'s own options.
    pub const CHECK: &str = "Check";
    /// `arng check-lab`'s own options.
    pub const CHECK_LAB: &str = "Lab checklist";
    /// `arng doctor`'s own options.
    pub const DOCTOR: &str = "Doctor";
    /// `arng ingest`'s own options.
    pub const INGEST: &str = "Ingest";
    /// `arng latency`'s own options.
    pub const LATENCY: &str = "Measurement";
    /// `arng qos-bench`'s own options.
    pub const QOS_BENCH: &str = "Benchmark";
    /// `arng serve`'s own options.
    pub const SERVE: &str = "Server";
    /// `arng simulate`'s own options.
    pub const SIMULATE: &str = "Simulation";
}

/// The git commit arng was built from (12 hex digits), or `unknown` when built
/// without git (a source tarball, a Docker context without `.git/`) and without
/// `ARNG_GIT_COMMIT`. Set by build.rs.
pub const GIT_COMMIT: &str = env!("ARNG_GIT_COMMIT");

/// The day arng was built (UTC, `YYYY-MM-DD`; `SOURCE_DATE_EPOCH` when set, for
/// reproducible builds). Set by build.rs.
pub const BUILD_DATE: &str = env!("ARNG_BUILD_DATE");

/// What `arng --version` prints after the name: `0.1.0 (commit 1a2b3c4d5e6f, built
/// 2026-05-01)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ARNG_GIT_COMMIT"),
    ", built ",
    env!("ARNG_BUILD_DATE"),
    ")"
);
