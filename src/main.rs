//! The `arng` binary: parse, dispatch, map errors to exit codes (0 ok, 1 failure,
//! 2 bad usage). Everything else lives in the library.

use std::process::ExitCode;

use arng::cli::{Cli, Command};
use arng::cmd;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    arng::cli::init_tracing(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        match cli.command {
            Command::CheckE2e(args) => cmd::check_e2e::run(args).await,
            Command::CheckLab(args) => cmd::check_lab::run(args).await,
            Command::Doctor(args) => cmd::doctor::run(args).await,
            Command::Ingest(args) => cmd::ingest::run(args).await,
            Command::Latency(args) => cmd::latency::run(args).await,
            Command::QosBench(args) => cmd::qos_bench::run(args).await,
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Simulate(args) => cmd::simulate::run(args).await,
            Command::Completions(args) => cmd::completions::run(args, Cli::command()),
            Command::Man(args) => cmd::man::run(args, Cli::command()),
        }
    };
    match runtime.block_on(run) {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<cmd::UsageError>().is_some() => {
            eprintln!("error: {e} (see --help)");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go out whole; a usage mistake is one line on stderr and exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            // clap's message may continue on indented lines (the missing arguments);
            // keep everything up to the usage block, on one line.
            let rendered = e.render().to_string();
            let reason: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{} (see --help)", reason.join(" "));
            ExitCode::from(2)
        }
    }
}
