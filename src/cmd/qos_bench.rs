//! `arng qos-bench`: what QoS 0, 1 and 2 cost and guarantee on the configured broker:
//! throughput, end-to-end latency percentiles, loss, duplicates, reordering and
//! acknowledgement times per level. The benchmark itself is [`crate::qos`]'s; this
//! command runs its levels one after the other with a progress bar on a terminal and
//! prints the results as a table, JSON or CSV (and an SVG chart with --chart).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::UsageError;
use crate::config::MqttArgs;
use crate::help::heading;
use crate::qos::plan::{
    parse_qos_levels, parse_rate, parse_size, parse_svg_path, QosLevels, MAX_CLIENTS, MAX_MESSAGES,
};
use crate::qos::{chart, render, Bench, LevelReport, Plan, Settings, Stop};
use crate::units::parse_positive_duration;

/// No environment variables here: these are the parameters of one experiment, given
/// on the command line each time (the broker connection reads them as everywhere).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = heading::QOS_BENCH, after_help = EXAMPLES)]
pub struct Args {
    /// QoS levels to measure, comma-separated, one after the other (e.g. 0,1,2 or 1).
    #[arg(long, default_value = "0,1,2", value_parser = parse_qos_levels, value_name = "LEVELS")]
    pub qos: QosLevels,

    /// Publishing clients, each with its own connection and topic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_CLIENTS),
          value_name = "N")]
    pub publishers: u32,

    /// Subscribing clients; each one receives every message of every publisher.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_CLIENTS),
          value_name = "M")]
    pub subscribers: u32,

    /// Messages per publisher and QoS level [default: 1000, unless --duration is given].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_MESSAGES), value_name = "K",
          conflicts_with = "duration")]
    pub messages: Option<u64>,

    /// Publish for this long per QoS level instead of a fixed number of messages (e.g. 10s).
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Payload size in bytes: a 32-byte header (publisher, sequence number, send times)
    /// padded to this size; at most 16000 (the broker's max_packet_size is 16384).
    #[arg(long, default_value_t = 200, value_parser = parse_size, value_name = "BYTES")]
    pub size: usize,

    /// Total publishing rate in messages/s, shared evenly by the publishers. Latency is
    /// then measured from each message's scheduled send time, which corrects for
    /// coordinated omission. Without it publishers send as fast as they can.
    #[arg(long, value_parser = parse_rate, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,

    /// QoS 1/2 messages a publisher may have unacknowledged at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000),
          value_name = "N")]
    pub inflight: u16,

    /// After the last publisher is done, how long a subscriber waits for stragglers
    /// once nothing arrives any more.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub grace: Duration,

    /// How long to wait for the broker to accept a connection or subscription, and for
    /// the last acknowledgements once everything is published.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Leave Nagle's algorithm on in the bench's clients (rumqttc's default) instead of
    /// setting TCP_NODELAY as the broker does: shows what it costs, up to a delayed-ACK
    /// timeout (40 ms on Linux) on small QoS 0 publishes.
    #[arg(long)]
    pub nagle: bool,

    /// Print the results as JSON: a list with one object per QoS level.
    #[arg(long, conflicts_with = "csv", help_heading = heading::OUTPUT)]
    pub json: bool,

    /// Print the results as CSV: a header row, then one row per QoS level.
    #[arg(long, help_heading = heading::OUTPUT)]
    pub csv: bool,

    /// Also write the latency distribution of each QoS level as an SVG chart.
    #[arg(long, help_heading = heading::OUTPUT, value_parser = parse_svg_path, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,

    /// Demonstrate QoS 1 redelivery: at QoS 1 the first subscriber uses a persistent
    /// session, leaves its first N messages unacknowledged, drops its connection and
    /// reconnects; the broker redelivers exactly those N, which must be reported as N
    /// duplicates and no loss.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=500), value_name = "N",
          conflicts_with = "duration")]
    pub inject_redelivery: Option<u64>,

    // Last: these groups set the heading of what follows them (crate::help).
    #[command(flatten)]
    pub mqtt: MqttArgs,
}

const EXAMPLES: &str = "\
Examples:
  # QoS 0, 1 and 2 with 1000 messages each, one publisher and one subscriber
  arng qos-bench
  # Four publishers at 2000 messages/s in all for 10 s per level, as CSV and a chart
  arng qos-bench --publishers 4 --rate 2000 --duration 10s --csv --chart qos.svg
  # See QoS 1 redeliver the 5 messages a subscriber left unacknowledged
  arng qos-bench --qos 1 --messages 100 --inject-redelivery 5 --json";

fn settings(args: &Args) -> Settings {
    Settings {
        mqtt: args.mqtt.clone(),
        levels: args.qos.0.clone(),
        publishers: args.publishers,
        subscribers: args.subscribers,
        messages: args.messages,
        duration: args.duration,
        size: args.size,
        rate: args.rate,
        inflight: args.inflight,
        grace: args.grace,
        timeout: args.timeout,
        inject_redelivery: args.inject_redelivery,
        nagle: args.nagle,
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(settings(&args)).map_err(|e| UsageError(e.to_string()))?;
    let bench = Bench::new(plan);
    let plan = bench.plan();
    tracing::debug!(run = %plan.run_id(), levels = ?plan.levels(), "qos-bench starting");

    let mut levels = Vec::new();
    for &qos in plan.levels() {
        let bar = progress_bar(plan, qos);
        levels.push(bench.level(qos, bar.clone()).await);
        bar.finish_and_clear();
    }

    let reports: Vec<LevelReport> = levels.iter().map(|l| l.report(plan)).collect();
    if let Some(path) = &args.chart {
        std::fs::write(path, chart::levels_chart_svg(plan, &levels))
            .with_context(|| format!("cannot write the chart to {}", path.display()))?;
    }
    let out = if args.json {
        serde_json::to_string_pretty(&reports)? + "\n"
    } else if args.csv {
        render::to_csv(&reports)?
    } else {
        render::to_table(&reports, plan.corrected()) + "\n"
    };
    super::print_stdout(out.as_bytes()).context("cannot write the results")?;
    let failed: Vec<&LevelReport> = reports.iter().filter(|r| !r.ok).collect();
    for r in &failed {
        eprintln!(
            "error: QoS {}: {}",
            r.qos,
            r.error.as_deref().unwrap_or("failed")
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A progress bar on stderr, counting first deliveries; hidden when stderr is not a
/// terminal (CI logs, pipes), so scripted runs print nothing but their result.
fn progress_bar(plan: &Plan, qos: u8) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match plan.stop() {
        Stop::Messages(k) => {
            let total = k * u64::from(plan.publishers()) * u64::from(plan.subscribers());
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} deliveries, {per_sec}, {elapsed}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        Stop::After(_) => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} {spinner} {pos} deliveries, {per_sec}, {elapsed}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        }
    };
    bar.set_prefix(format!("QoS {qos}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        crate::cmd::parse_args(argv)
    }

    #[test]
    fn defaults_and_limits() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            (a.qos.0.clone(), a.publishers, a.subscribers, a.size),
            (vec![0, 1, 2], 1, 1, 200)
        );
        let p = Plan::new(settings(&a)).unwrap();
        assert!(matches!(p.stop(), Stop::Messages(1000)));
        for bad in [
            &["--qos", "3"][..],
            &["--publishers", "0"],
            &["--subscribers", "0"],
            &["--messages", "0"],
            &["--size", "31"],
            &["--size", "16001"],
            &["--messages", "5", "--duration", "1s"],
            &["--json", "--csv"],
            &["--rate", "0"],
            &["--duration", "0s"],
            &["--chart", "x.png"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        assert_eq!(parse(&["--size", "32"]).unwrap().size, 32);
        assert_eq!(parse(&["--size", "16000"]).unwrap().size, 16000);
    }

    #[test]
    fn cross_field_checks() {
        let a = parse(&["--qos", "0", "--inject-redelivery", "5"]).unwrap();
        assert!(Plan::new(settings(&a))
            .unwrap_err()
            .to_string()
            .contains("QoS 1"));
        let a = parse(&["--qos", "1", "--messages", "6", "--inject-redelivery", "5"]).unwrap();
        assert!(Plan::new(settings(&a)).is_ok());
    }
}
