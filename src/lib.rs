//! arng runs and checks a warehouse IoT chain: simulated temperature/humidity sensors
//! publish JSON over MQTT, a middleware applies threshold rules and writes to
//! InfluxDB 2, a REST API and a live page show it, and supervision tools measure it.
//!
//! Layout of the crate:
//! - [`domain`]: the data contract, pure: names, topics, payloads, InfluxDB schema,
//!   line protocol, Flux literals. No I/O.
//! - [`config`]: the options every subcommand shares (flags + environment variables),
//!   validated while parsing.
//! - [`mqtt`]: the broker edge (rumqttc options, connecting).
//! - [`store`]: the InfluxDB edge (writes, Flux queries, annotated CSV, setup).
//! - [`metrics`]: a small Prometheus registry.
//! - [`report`]: rendering of check results as a table or JSON.
//! - [`sim`]: the simulated sensors' signal model (climate, daily cycle, drift, noise,
//!   faults, heatwave scenario), pure and seeded; `arng simulate` publishes it.
//! - [`stats`]: latency percentiles, loss/duplicate/reordering accounting; pure.
//! - [`ingest`]: the MQTT → rules → InfluxDB middleware (broker link with back-pressure,
//!   batching, storage, spool, alert state).
//! - [`supervision`]: the probe convention, broker `$SYS` statistics and the three key
//!   indicators with their thresholds; pure.
//! - [`api`]: the REST API and live dashboard of `arng serve` (axum).
//! - [`cli`]: the command line; [`cmd`]: one module per subcommand.
//!
//! `src/main.rs` only parses the command line and maps errors to exit codes.

pub mod api;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod domain;
pub mod ingest;
pub mod metrics;
pub mod mqtt;
pub mod report;
pub mod sim;
pub mod stats;
pub mod store;
pub mod supervision;
