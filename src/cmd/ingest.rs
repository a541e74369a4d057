//! `arng ingest`: the MQTT → rules and alerts → InfluxDB middleware. Runs until
//! SIGTERM or Ctrl-C, then flushes what it holds, acknowledges what was written and
//! disconnects. Prometheus metrics on `--metrics-port`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

use crate::config::{InfluxArgs, MqttArgs};
use crate::domain::names::validate_name;
use crate::domain::Thresholds;
use crate::ingest::{IngestConfig, IngestMetrics};
use crate::metrics::Registry;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub mqtt: MqttArgs,

    #[command(flatten)]
    pub influx: InfluxArgs,

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

    /// Where batches wait on disk while InfluxDB is unavailable
    /// [default: $XDG_STATE_HOME/arng/spool/<client-id>, i.e. ~/.local/state/arng/spool/<client-id>].
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
}

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

pub(crate) fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 200ms, 5s, 1m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// `123`, `64KiB`, `256MiB`, `2GiB` (also KB/MB/GB as powers of 1000).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (expected e.g. 256MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown unit {u:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    let v = n.checked_mul(mult).ok_or("size too large")?;
    if v == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(v)
}

fn parse_thresholds_file(path: &str) -> Result<Thresholds, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Thresholds::from_json(&bytes).map_err(|e| format!("{path}: {e}"))
}

fn default_spool_dir(client_id: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("arng").join("spool").join(client_id)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let registry = Registry::new();
    let metrics = IngestMetrics::new(&registry);
    let addr = SocketAddr::new(args.metrics_bind, args.metrics_port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for metrics (choose another --metrics-port)")
    })?;
    info!(%addr, "metrics on http://{addr}/metrics");
    let metrics_server = tokio::spawn(crate::metrics::serve(listener, registry.clone()));

    let spool_dir = args
        .spool_dir
        .clone()
        .unwrap_or_else(|| default_spool_dir(&args.client_id));
    let cfg = IngestConfig {
        mqtt: args.mqtt,
        influx: args.influx,
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
    };
    info!(broker = %cfg.mqtt.url, influx = %cfg.influx.url, bucket = %cfg.influx.bucket,
          client_id = %cfg.client_id, share_group = ?cfg.share_group, spool = %cfg.spool_dir.display(), "ingest starting");
    let result = crate::ingest::run(cfg, metrics, super::shutdown_signal()).await;
    metrics_server.abort();
    result.context("ingest stopped on an error")?;
    info!("ingest stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn client_ids_and_groups() {
        assert!(parse_client_id("arng-ingest-1").is_ok());
        assert!(parse_client_id("a/b").is_err());
        assert!(parse_client_id("").is_err());
        assert!(parse_group("g1").is_ok());
        assert!(parse_group("a/b").is_err());
        assert!(parse_positive_duration("0s").is_err());
    }
}
