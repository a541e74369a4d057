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
  # Can this configuration reach the broker and InfluxDB?
  arng doctor
  # Three zones of sensors, 10 readings each, then the whole chain hop by hop
  arng simulate --zones nord,sud,est --count 10 && arng check-e2e --zone nord
  # Completion for bash (also zsh, fish...), and the manual
  arng completions bash > ~/.local/share/bash-completion/completions/arng
  arng man | man -l -";

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
    #[command(name = "check-lab")]
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
        // Our own crate at the chosen level; dependencies one notch quieter. rumqttc's
        // MQTT 5 state warns once per publish the broker refuses, without bound; arng
        // counts those and says each refused topic once (src/sim/link.rs).
        EnvFilter::new(format!("warn,rumqttc::v5::state=error,arng={default}"))
    });
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn built() -> clap::Command {
        let mut cli = Cli::command();
        cli.build();
        cli
    }

    /// The headings of options every command shares (`crate::help`).
    const SHARED: [&str; 5] = [
        heading::GLOBAL,
        heading::BROKER,
        heading::INFLUX,
        heading::API,
        heading::TEAM_API,
    ];

    fn expected_shared(long: &str) -> Option<&'static str> {
        match long {
            "verbose" | "quiet" | "help" | "version" => Some(heading::GLOBAL),
            l if l.starts_with("mqtt-") => Some(heading::BROKER),
            l if l.starts_with("influx-") && l != "influx-refresh" => Some(heading::INFLUX),
            "api-url" => Some(heading::API),
            _ => None,
        }
    }

    /// A flag added below a command's `#[command(flatten)]` groups would be listed
    /// under their heading (e.g. "InfluxDB"): crate::help says how to avoid it.
    #[test]
    fn every_option_is_under_its_heading() {
        let cli = built();
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = sub.get_name();
            let mut own = std::collections::BTreeSet::new();
            for arg in sub.get_arguments().filter(|a| !a.is_positional()) {
                let long = arg
                    .get_long()
                    .unwrap_or_else(|| panic!("{name}: no long name"));
                let got = arg.get_help_heading();
                // serve's --api-token is the server's own token, not a client's.
                let shared = match (name, long) {
                    ("serve", "api-token") => None,
                    // check-lab's API is the team's it checks.
                    ("check-lab", "api-url" | "api-token") => Some(heading::TEAM_API),
                    (_, "api-token") => Some(heading::API),
                    _ => expected_shared(long),
                };
                match shared {
                    Some(h) => assert_eq!(got, Some(h), "{name} --{long}"),
                    None if ["json", "csv", "chart", "out", "report", "lang"].contains(&long) => {
                        assert_eq!(got, Some(heading::OUTPUT), "{name} --{long}")
                    }
                    None => {
                        let h = got.unwrap_or_else(|| panic!("{name} --{long}: no heading"));
                        assert!(!SHARED.contains(&h), "{name} --{long} is under {h:?}");
                        own.insert(h);
                    }
                }
            }
            assert!(own.len() <= 1, "{name}: its own options under {own:?}");
        }
    }

    /// The example lines of a help text, as argv: continuation lines joined, what a
    /// shell would do after `|`, `>` or `&&` left out, `VAR=value` prefixes and
    /// quotes removed.
    fn example_commands(help: &str) -> Vec<Vec<String>> {
        let mut lines = Vec::new();
        let mut pending = String::new();
        for line in help.lines().skip_while(|l| l.trim() != "Examples:").skip(1) {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            pending.push_str(line.trim_end_matches('\\'));
            pending.push(' ');
            if !line.ends_with('\\') {
                lines.push(std::mem::take(&mut pending));
            }
        }
        lines
            .iter()
            .flat_map(|l| l.split("&&"))
            .map(|cmd| {
                let cmd = cmd
                    .split(" | ")
                    .next()
                    .unwrap()
                    .split(" > ")
                    .next()
                    .unwrap();
                cmd.split_whitespace()
                    .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                    .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_subcommand_has_examples_that_parse() {
        let cli = built();
        let mut helps = vec![("arng".to_owned(), cli.get_after_help().unwrap().to_string())];
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            let help = sub
                .get_after_help()
                .unwrap_or_else(|| panic!("{}: no examples", sub.get_name()));
            helps.push((sub.get_name().to_owned(), help.to_string()));
        }
        for (name, help) in helps {
            let commands = example_commands(&help);
            assert!(commands.len() >= 2, "{name}: {commands:?}");
            for argv in commands {
                assert_eq!(argv[0], "arng", "{name}: {argv:?}");
                if name != "arng" {
                    assert_eq!(argv[1], name, "{name}: {argv:?}");
                }
                if let Err(e) = Cli::try_parse_from(&argv) {
                    panic!("{name}: example {argv:?} does not parse: {e}");
                }
            }
        }
        assert_eq!(
            example_commands("Examples:\n  # c\n  X=1 arng a --b 'c d' \\\n    --e | f\n"),
            [["arng", "a", "--b", "c", "d", "--e"]]
        );
    }
}
