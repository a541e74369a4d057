//! One module per subcommand. Each has its `Args` (the doc comments are the help
//! text) and an async `run` that builds the library object doing the work, awaits it
//! and renders its result, returning the process exit code. No command imports
//! another: what two commands share lives in the library.

pub mod check_e2e;
pub mod check_lab;
pub mod completions;
pub mod doctor;
pub mod ingest;
pub mod latency;
pub mod man;
pub mod qos_bench;
pub mod serve;
pub mod simulate;

/// A usage mistake found after parsing (e.g. two options that contradict each other).
/// `main` prints it on one line and exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Writes a command's result to stdout; a closed pipe (`arng ... | head`) is not an
/// error.
pub(crate) fn print_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// How wide a check table printed on stdout may be ([`crate::report::table_width`]):
/// `COLUMNS`, else the terminal's width when stdout is one, else 80.
pub(crate) fn table_width() -> usize {
    let terminal = terminal_size::terminal_size_of(std::io::stdout())
        .map(|(terminal_size::Width(w), _)| usize::from(w));
    crate::report::table_width(std::env::var("COLUMNS").ok().as_deref(), terminal)
}

/// A progress bar of `len` steps drawn on stderr with `template`, only for a person
/// watching: hidden when stderr is not a terminal (a pipe, a log, CI), so scripted
/// runs print nothing but their result.
pub(crate) fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// A command's `Args` parsed from `argv` (without the program name), as clap would
/// parse them on the command line: for the commands' unit tests.
#[cfg(test)]
pub(crate) fn parse_args<A: clap::Args>(argv: &[&str]) -> Result<A, clap::Error> {
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Command<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    let argv = std::iter::once("arng").chain(argv.iter().copied());
    Command::<A>::try_parse_from(argv).map(|c| c.args)
}
