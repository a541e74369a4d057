//! Ingest's Prometheus metrics (`GET /metrics` of `arng ingest`), registered once and
//! shared by the link and the writer. docs/ingest.md#metrics lists them.

use std::sync::Arc;

use crate::metrics::{Counter, Gauge, Histogram, Registry, LATENCY_BUCKETS};

/// Ingest's Prometheus metrics.
#[derive(Clone)]
pub struct IngestMetrics {
    pub registry: Registry,
    pub received: Arc<Counter>,
    pub readings_written: Arc<Counter>,
    pub points_written: Arc<Counter>,
    pub write_retries: Arc<Counter>,
    pub spooled_batches: Arc<Counter>,
    pub spool_full: Arc<Counter>,
    pub spool_bytes: Arc<Gauge>,
    pub buffered_points: Arc<Gauge>,
    pub batch_points: Arc<Histogram>,
    pub write_seconds: Arc<Histogram>,
    pub lag_seconds: Arc<Histogram>,
    pub mqtt_connected: Arc<Gauge>,
    pub influx_healthy: Arc<Gauge>,
    pub held_messages: Arc<Gauge>,
    pub read_pauses: Arc<Counter>,
}

impl IngestMetrics {
    pub fn new(registry: &Registry) -> IngestMetrics {
        let r = registry;
        IngestMetrics {
            registry: r.clone(),
            received: r.counter(
                "arng_ingest_messages_received_total",
                "MQTT messages received.",
                &[],
            ),
            readings_written: r.counter(
                "arng_ingest_readings_written_total",
                "Readings written to InfluxDB.",
                &[],
            ),
            points_written: r.counter(
                "arng_ingest_points_written_total",
                "Points written to InfluxDB (readings, heartbeats, alerts, dead letters).",
                &[],
            ),
            write_retries: r.counter(
                "arng_ingest_write_retries_total",
                "InfluxDB write attempts that were retried.",
                &[],
            ),
            spooled_batches: r.counter(
                "arng_ingest_spooled_batches_total",
                "Batches spooled to disk while InfluxDB was unavailable.",
                &[],
            ),
            spool_full: r.counter(
                "arng_ingest_spool_full_total",
                "Times the disk spool was full (ingest then stops acknowledging).",
                &[],
            ),
            spool_bytes: r.gauge(
                "arng_ingest_spool_bytes",
                "Bytes waiting in the disk spool.",
                &[],
            ),
            buffered_points: r.gauge(
                "arng_ingest_buffered_points",
                "Points in the batch being built.",
                &[],
            ),
            batch_points: r.histogram(
                "arng_ingest_batch_points",
                "Points per InfluxDB write.",
                &[],
                &[1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0],
            ),
            write_seconds: r.histogram(
                "arng_ingest_write_duration_seconds",
                "Duration of successful InfluxDB writes.",
                &[],
                LATENCY_BUCKETS,
            ),
            lag_seconds: r.histogram(
                "arng_ingest_lag_seconds",
                "From a reading's timestamp to its write in InfluxDB (MQTT to InfluxDB lag).",
                &[],
                LATENCY_BUCKETS,
            ),
            mqtt_connected: r.gauge(
                "arng_ingest_mqtt_connected",
                "1 when connected to the broker.",
                &[],
            ),
            influx_healthy: r.gauge(
                "arng_ingest_influx_healthy",
                "1 when the last InfluxDB write of points succeeded (0 before the first one).",
                &[],
            ),
            held_messages: r.gauge(
                "arng_ingest_held_messages",
                "Messages received and not yet settled (bounded by --max-unacked).",
                &[],
            ),
            read_pauses: r.counter(
                "arng_ingest_read_pauses_total",
                "Times ingest stopped reading from the broker because it held --max-unacked messages.",
                &[],
            ),
        }
    }

    pub fn rejected(&self, reason: &str) -> Arc<Counter> {
        self.registry.counter(
            "arng_ingest_rejected_total",
            "Messages or points rejected, by reason (all are dead-lettered).",
            &[("reason", reason)],
        )
    }

    pub fn alert(&self, severity: &str, state: &str) -> Arc<Counter> {
        self.registry.counter(
            "arng_ingest_alerts_total",
            "Alerts raised and cleared by the rules, by severity.",
            &[("severity", severity), ("state", state)],
        )
    }

    pub fn alerts_active(&self, severity: &str) -> Arc<Gauge> {
        self.registry.gauge(
            "arng_ingest_alerts_active",
            "Alerts currently raised, by severity.",
            &[("severity", severity)],
        )
    }

    pub fn write_error(&self, kind: &str) -> Arc<Counter> {
        self.registry.counter(
            "arng_ingest_write_errors_total",
            "Failed InfluxDB writes, by kind.",
            &[("kind", kind)],
        )
    }
}
