//! `arng ingest`: the MQTT → rules and alerts → InfluxDB middleware. Runs until
//! SIGTERM or Ctrl-C, then flushes what it holds, acknowledges what was written and
//! disconnects. Prometheus metrics on `--metrics-port`.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use crate::config::Backends;
use crate::domain::names::validate_name;
use crate::domain::Thresholds;
use crate::help::heading;
use crate::ingest::{IngestConfig, IngestMetrics};
use crate::metrics::Registry;
use crate::units::{parse_positive_duration, parse_size};

#[derive(Debug, clap::Args)]
#[command(next_help_heading = heading::INGEST, after_help = EXAMPLES)]
pub struct Args {
    // The payload options are ingest's own: first, so they take its heading.
    #[command(flatten)]
    pub payload: crate::ingest::reader::PayloadArgs,

    /// MQTT client id. Keep it stable: the broker holds this session's messages while
    /// ingest is down and delivers them when it returns. Each process of a shared
    /// group needs its own.
    #[arg(long, env = "ARNG_INGEST_CLIENT_ID", default_value = "arng-ingest", value_parser = parse_client_id)]
    pub client_id: String,

    /// Join an MQTT shared-subscription group: several ingest processes with the
    /// same group split the stream, each message going to one of them.
    #[arg(long, env = "ARNG_SHARE_GROUP", value_name = "NAME", value_parser = parse_group)]
    pub share_group: Option<String>,

    /// Port of the Prometheus endpoint (GET /metrics).
    #[arg(
        long,
        env = "ARNG_METRICS_PORT",
        default_value_t = 9100,
        value_name = "PORT"
    )]
    pub metrics_port: u16,

    /// Address the metrics endpoint listens on (0.0.0.0 to let another host scrape it).
    #[arg(
        long,
        env = "ARNG_METRICS_BIND",
        default_value = "127.0.0.1",
        value_name = "IP"
    )]
    pub metrics_bind: IpAddr,

    /// Points per InfluxDB write (a batch is also written when --batch-timeout passes).
    #[arg(long, env = "ARNG_BATCH_SIZE", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(1..=100_000), value_name = "POINTS")]
    pub batch_size: u32,

    /// Write a batch as soon as this many messages await acknowledgement. Keep it at
    /// most half the broker's `max_inflight_messages` (20000 in mosquitto-conf/): a
    /// broker that honours that window never sends more unacknowledged messages, so
    /// a larger value makes batches wait for --batch-timeout.
    #[arg(long, env = "ARNG_ACK_WINDOW", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(1..=65_535), value_name = "MESSAGES")]
    pub ack_window: u32,

    /// Most messages held in memory, received but not yet written and acknowledged.
    /// When reached, ingest stops reading from the broker until the writer catches up,
    /// so memory stays bounded whatever the backlog (docs/ingest.md#flow-control).
    #[arg(long, env = "ARNG_MAX_UNACKED", default_value_t = 40_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "MESSAGES")]
    pub max_unacked: u32,

    /// Batches being written to InfluxDB at once while it is healthy. Acknowledgements
    /// still leave in arrival order; during an outage writes go one at a time.
    #[arg(long, env = "ARNG_WRITES_IN_FLIGHT", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64), value_name = "N")]
    pub writes_in_flight: u32,

    /// Longest time a reading waits in a partly filled batch.
    #[arg(long, env = "ARNG_BATCH_TIMEOUT", default_value = "100ms", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub batch_timeout: Duration,

    /// Where batches wait on disk while InfluxDB is unavailable [default:
    /// $XDG_STATE_HOME/arng/spool/CLIENT_ID, else ~/.local/state/arng/spool/CLIENT_ID,
    /// else under the system's temporary directory; never the working directory].
    /// The log says which at start.
    #[arg(long, env = "ARNG_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Disk spool limit, e.g. 256MiB, 2GiB or a number of bytes. When it is reached,
    /// ingest stops acknowledging and the broker's queue holds the stream.
    #[arg(long, env = "ARNG_SPOOL_MAX", default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    pub spool_max: u64,

    /// Thresholds file (JSON, see docs/ingest.md). Published as the retained
    /// configuration at start; without it, the retained configuration (or the
    /// defaults) applies.
    #[arg(long, env = "ARNG_THRESHOLDS_FILE", value_name = "FILE", value_parser = parse_thresholds_file)]
    pub thresholds: Option<Thresholds>,

    /// Timeout of one InfluxDB write.
    #[arg(long, env = "ARNG_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub write_timeout: Duration,

    /// Store the broker's $SYS statistics (clients, messages, dropped, stored, heap)
    /// in the `broker` measurement for supervision (docs/supervision.md). On by
    /// default; --broker-stats=false for an account that may not read $SYS/#.
    #[arg(long, env = "ARNG_BROKER_STATS", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub broker_stats: bool,

    // Last: these groups set the heading of what follows them (crate::help). A new
    // option of ingest goes above.
    #[command(flatten)]
    pub backends: Backends,
}

const EXAMPLES: &str = "\
Examples:
  # The reference stack's ingest account, metrics on http://127.0.0.1:9100/metrics
  ARNG_MQTT_USERNAME=ingest ARNG_MQTT_PASSWORD=ingest-dev arng ingest
  # Two processes sharing the stream (each its own client id and metrics port)
  arng ingest --share-group ingest --client-id arng-ingest-2 --metrics-port 9101
  # Batches wait in this directory (up to 2 GiB) while InfluxDB is down
  arng ingest --spool-dir /var/lib/arng/spool --spool-max 2GiB";

fn parse_client_id(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("1 to 64 characters from a-z, A-Z, 0-9, '-', '_', '.'".into());
    }
    Ok(s.to_owned())
}

fn parse_group(s: &str) -> Result<String, String> {
    validate_name("group", s).map_err(|e| e.reason)?;
    Ok(s.to_owned())
}

fn parse_thresholds_file(path: &str) -> Result<Thresholds, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Thresholds::from_json(&bytes).map_err(|e| format!("{path}: {e}"))
}

/// Where the spool goes without --spool-dir, and why there: never under the working
/// directory (issue 16: without HOME it used to land in ./arng/spool). XDG's state
/// directory, else ~/.local/state, else the system's temporary directory (said as a
/// warning: a reboot may empty it). Relative or empty variables are ignored, as the
/// XDG specification asks.
fn default_spool_dir(
    xdg_state_home: Option<OsString>,
    home: Option<OsString>,
    user: Option<OsString>,
    temp: PathBuf,
    client_id: &str,
) -> (PathBuf, SpoolBase) {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let (base, why) = if let Some(state) = absolute(xdg_state_home) {
        (state, SpoolBase::XdgStateHome)
    } else if let Some(home) = absolute(home) {
        (home.join(".local").join("state"), SpoolBase::Home)
    } else {
        // One directory per user in a directory every user shares.
        let user = user
            .and_then(|u| u.into_string().ok())
            .filter(|u| parse_client_id(u).is_ok())
            .unwrap_or_else(|| "user".into());
        (temp.join(format!("arng-{user}")), SpoolBase::Temp)
    };
    (base.join("arng").join("spool").join(client_id), why)
}

/// Which rule of [`default_spool_dir`] chose the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpoolBase {
    Flag,
    XdgStateHome,
    Home,
    Temp,
}

impl SpoolBase {
    fn describe(self) -> &'static str {
        match self {
            SpoolBase::Flag => "--spool-dir / ARNG_SPOOL_DIR",
            SpoolBase::XdgStateHome => "default: $XDG_STATE_HOME/arng/spool/<client-id>",
            SpoolBase::Home => "default: $HOME/.local/state/arng/spool/<client-id>",
            SpoolBase::Temp => {
                "default without $XDG_STATE_HOME or $HOME: the system's temporary directory, \
                 which a reboot may empty; choose a lasting place with --spool-dir"
            }
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let registry = Registry::new();
    let metrics = IngestMetrics::new(&registry);
    let addr = SocketAddr::new(args.metrics_bind, args.metrics_port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for metrics (choose another --metrics-port)")
    })?;
    // With --metrics-port 0 the system picks the port: say the one it picked.
    let addr = listener.local_addr().unwrap_or(addr);
    info!(%addr, "metrics on http://{addr}/metrics");
    let metrics_server = tokio::spawn(crate::metrics::serve(listener, registry.clone()));

    let (spool_dir, base) = match args.spool_dir.clone() {
        Some(dir) => (dir, SpoolBase::Flag),
        None => default_spool_dir(
            std::env::var_os("XDG_STATE_HOME"),
            std::env::var_os("HOME"),
            std::env::var_os("USER").or_else(|| std::env::var_os("LOGNAME")),
            std::env::temp_dir(),
            &args.client_id,
        ),
    };
    if base == SpoolBase::Temp {
        warn!(spool = %spool_dir.display(), "spool in {} ({})", spool_dir.display(), base.describe());
    } else {
        info!(spool = %spool_dir.display(), "spool in {} ({})", spool_dir.display(), base.describe());
    }
    let cfg = IngestConfig {
        mqtt: args.backends.mqtt,
        influx: args.backends.influx,
        client_id: args.client_id,
        share_group: args.share_group,
        batch_size: args.batch_size as usize,
        batch_timeout: args.batch_timeout,
        ack_window: args.ack_window as usize,
        max_unacked: args.max_unacked as usize,
        writes_in_flight: args.writes_in_flight as usize,
        spool_dir,
        spool_max_bytes: args.spool_max,
        thresholds_file: args.thresholds,
        write_timeout: args.write_timeout,
        tick: Duration::from_secs(1),
        broker_stats: args.broker_stats,
        read_policy: args.payload.policy(),
    };
    info!(broker = %cfg.mqtt.url, influx = %cfg.influx.url, bucket = %cfg.influx.bucket,
          client_id = %cfg.client_id, share_group = ?cfg.share_group, spool = %cfg.spool_dir.display(), "ingest starting");
    let result = crate::ingest::run(cfg, metrics, crate::shutdown::signal()).await;
    metrics_server.abort();
    result.context("ingest stopped on an error")?;
    info!("ingest stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_never_defaults_to_the_working_directory() {
        let os = |s: &str| Some(OsString::from(s));
        let tmp = PathBuf::from("/tmp");
        let spool = |xdg, home, user| default_spool_dir(xdg, home, user, tmp.clone(), "ing-1");
        assert_eq!(
            spool(os("/state"), os("/home/a"), None),
            (
                PathBuf::from("/state/arng/spool/ing-1"),
                SpoolBase::XdgStateHome
            )
        );
        assert_eq!(
            spool(None, os("/home/a"), None),
            (
                PathBuf::from("/home/a/.local/state/arng/spool/ing-1"),
                SpoolBase::Home
            )
        );
        // Relative or empty values are ignored (XDG Base Directory specification).
        assert_eq!(
            spool(os("state"), os(""), os("ana")).0,
            PathBuf::from("/tmp/arng-ana/arng/spool/ing-1")
        );
        let (dir, base) = spool(None, None, None);
        assert_eq!(
            (dir.as_path(), base),
            (
                std::path::Path::new("/tmp/arng-user/arng/spool/ing-1"),
                SpoolBase::Temp
            )
        );
        assert!(base.describe().contains("--spool-dir"));
        // A user name that is no safe path component is not used as one.
        assert_eq!(
            spool(None, None, os("../x")).0,
            PathBuf::from("/tmp/arng-user/arng/spool/ing-1")
        );
    }

    #[test]
    fn client_ids_and_groups() {
        assert!(parse_client_id("arng-ingest-1").is_ok());
        assert!(parse_client_id("a/b").is_err());
        assert!(parse_client_id("").is_err());
        assert!(parse_group("g1").is_ok());
        assert!(parse_group("a/b").is_err());
    }
}
