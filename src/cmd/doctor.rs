//! `arng doctor`: can this configuration reach the broker and InfluxDB?
//!
//! Checks, in order: the broker accepts our account; InfluxDB is healthy (and which
//! version it runs); the token is accepted and the bucket exists. It is the first thing
//! to run after changing credentials, and what `scripts/services.sh` users run to see
//! that the local stack is up.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::{InfluxArgs, MqttArgs};
use crate::report::{Check, Report};
use crate::store::InfluxClient;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub mqtt: MqttArgs,

    #[command(flatten)]
    pub influx: InfluxArgs,

    /// How long to wait for each service.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Print the result as JSON: {"ok": bool, "checks": [{"name", "ok", "latency_ms", "detail"}]}.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.timeout.is_zero() {
        return Err(super::UsageError("--timeout must be greater than zero".into()).into());
    }
    let mut checks = vec![check_broker(&args).await];
    let influx = InfluxClient::with_timeout(&args.influx, args.timeout);
    checks.push(check_influx_health(&influx).await);
    checks.push(check_bucket(&influx).await);
    let report = Report::new(checks);
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_table());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn check_broker(args: &Args) -> Check {
    const NAME: &str = "mqtt broker";
    let start = Instant::now();
    let client_id = format!("arng-doctor-{}", std::process::id());
    match crate::mqtt::connect(&args.mqtt, &client_id, args.timeout).await {
        Ok((client, mut eventloop)) => {
            let _ = client.disconnect().await;
            // Drive the loop once so the DISCONNECT is actually sent.
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
            let who = args.mqtt.username.as_deref().unwrap_or("(anonymous)");
            Check::pass(
                NAME,
                Some(super::elapsed_ms(start)),
                format!("{} accepted {who}", args.mqtt.url),
            )
        }
        Err(e) => Check::fail(NAME, Some(super::elapsed_ms(start)), e.to_string()),
    }
}

async fn check_influx_health(influx: &InfluxClient) -> Check {
    const NAME: &str = "influxdb health";
    let start = Instant::now();
    match influx.health().await {
        Ok(h) if h.status == "pass" => Check::pass(
            NAME,
            Some(super::elapsed_ms(start)),
            format!(
                "pass, version {}",
                h.version.as_deref().unwrap_or("unknown")
            ),
        ),
        Ok(h) => Check::fail(
            NAME,
            Some(super::elapsed_ms(start)),
            format!("status {}: {}", h.status, h.message.unwrap_or_default()),
        ),
        Err(e) => Check::fail(NAME, Some(super::elapsed_ms(start)), e.to_string()),
    }
}

async fn check_bucket(influx: &InfluxClient) -> Check {
    const NAME: &str = "influxdb bucket";
    let start = Instant::now();
    let flux = format!(
        "buckets() |> filter(fn: (r) => r.name == {}) |> keep(columns: [\"name\", \"retentionPeriod\"])",
        crate::domain::flux::string(influx.bucket())
    );
    let result = influx.query(&flux).await;
    let ms = Some(super::elapsed_ms(start));
    match result {
        Ok(rows) if !rows.is_empty() => {
            let retention = match rows[0].i64("retentionPeriod") {
                Some(0) | None => "kept forever".to_owned(),
                Some(ns) => format!(
                    "retention {}",
                    humantime::format_duration(Duration::from_secs((ns / 1_000_000_000) as u64))
                ),
            };
            Check::pass(
                NAME,
                ms,
                format!(
                    "org {:?}, bucket {:?} readable ({retention})",
                    influx.org(),
                    influx.bucket()
                ),
            )
        }
        Ok(_) => Check::fail(
            NAME,
            ms,
            format!(
                "bucket {:?} not found in org {:?}",
                influx.bucket(),
                influx.org()
            ),
        ),
        Err(e) => Check::fail(NAME, ms, e.to_string()),
    }
}
