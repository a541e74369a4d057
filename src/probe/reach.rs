//! Can this configuration reach the broker and InfluxDB? The checks of `arng doctor`,
//! in order: the broker accepts our account; InfluxDB is healthy (and which version it
//! runs); the token is accepted and the bucket exists.

use std::time::Duration;

use tokio::time::Instant;

use super::ms;
use crate::config::{Backends, MqttArgs};
use crate::report::{Check, Report};
use crate::store::InfluxClient;

/// Runs the three checks, each within `timeout`.
pub async fn check(backends: &Backends, timeout: Duration) -> Report {
    let mut checks = vec![check_broker(&backends.mqtt, timeout).await];
    let influx = InfluxClient::with_timeout(&backends.influx, timeout);
    checks.push(check_influx_health(&influx).await);
    checks.push(check_bucket(&influx).await);
    Report::new(checks)
}

async fn check_broker(mqtt: &MqttArgs, timeout: Duration) -> Check {
    const NAME: &str = "mqtt broker";
    let start = Instant::now();
    let client_id = format!("arng-doctor-{}", std::process::id());
    match crate::mqtt::connect(mqtt, &client_id, timeout).await {
        Ok((client, mut eventloop)) => {
            let _ = client.disconnect().await;
            // Drive the loop once so the DISCONNECT is actually sent.
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
            let who = mqtt.username.as_deref().unwrap_or("(anonymous)");
            Check::pass(
                NAME,
                Some(ms(start.elapsed())),
                format!("{} accepted {who}", mqtt.url),
            )
        }
        Err(e) => Check::fail(NAME, Some(ms(start.elapsed())), e.to_string()),
    }
}

async fn check_influx_health(influx: &InfluxClient) -> Check {
    const NAME: &str = "influxdb health";
    let start = Instant::now();
    match influx.health().await {
        Ok(h) if h.status == "pass" => Check::pass(
            NAME,
            Some(ms(start.elapsed())),
            format!(
                "pass, version {}",
                h.version.as_deref().unwrap_or("unknown")
            ),
        ),
        Ok(h) => Check::fail(
            NAME,
            Some(ms(start.elapsed())),
            format!("status {}: {}", h.status, h.message.unwrap_or_default()),
        ),
        Err(e) => Check::fail(NAME, Some(ms(start.elapsed())), e.to_string()),
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
    let ms = Some(ms(start.elapsed()));
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
