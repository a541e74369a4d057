//! arng runs and checks a warehouse IoT chain: simulated temperature/humidity sensors
//! publish JSON over MQTT, a middleware applies threshold rules and writes to
//! InfluxDB 2, a REST API and a live page show it, and supervision tools measure it.
//!
//! Layout of the crate, from the command line down to the pure domain. Every module
//! opens with a comment saying what it owns.
//!
//! Commands (thin: flags, one library call, the output):
//! - `src/main.rs`: parses the command line, dispatches, maps errors to exit codes.
//! - [`cli`]: the top-level command line; [`cmd`]: one module per subcommand
//!   (`check_e2e`, `check_lab`, `completions`, `doctor`, `ingest`, `latency`, `man`,
//!   `qos_bench`, `serve`, `simulate`); [`help`]: the headings of `--help` (how a new flag
//!   picks its heading) and the version line (git commit and build date, from build.rs).
//!
//! What the commands run:
//! - [`ingest`]: the MQTT → rules → InfluxDB middleware (`arng ingest`): [`ingest::link`]
//!   (the broker connection, driven packet by packet: back-pressure, the memory bound,
//!   acknowledgements in bulk), [`ingest::classify`] (what a message is),
//!   [`ingest::reader`] (the payload policy, counted and logged normalisations),
//!   [`ingest::deadletter`] (the rate-limited copies on `entrepot/deadletter/<reason>`),
//!   [`ingest::outbox`] (what passes between link and writer), [`ingest::writer`]
//!   (rules, batches, settling in order with [`ingest::pipeline`]),
//!   [`ingest::storage`] (InfluxDB with retries and splitting, else the disk
//!   [`ingest::spool`]), [`ingest::rule_state`] (alerts kept across restarts),
//!   [`ingest::metrics`].
//! - [`api`]: the REST API and live dashboard of `arng serve` (axum): [`api::routes`],
//!   [`api::live`] (the live view), [`api::feed`] (its MQTT and InfluxDB feeds),
//!   [`api::queries`] (Flux), [`api::supervise`] (indicators), `api::input` (query
//!   and body parsing, the body limit), [`api::openapi`] (`/openapi.json`, `/docs`),
//!   [`api::connection`] (JSON bodies for hyper's own errors), [`api::error`].
//! - [`sim`]: the simulator (`arng simulate`): [`sim::model`] (the signal model, pure and
//!   seeded), [`sim::plan`] (options checked together), [`sim::link`] (a reconnecting
//!   MQTT connection), [`sim::fleet`] (generators, alerts, heartbeats),
//!   [`sim::refusals`] (messages the broker refused, per topic, bounded),
//!   [`sim::reporter`] (log lines, progress bar, summary), [`sim::run`](mod@sim::run) (a whole run).
//! - [`probe`]: probing the chain from outside: [`probe::reach`] (`arng doctor`),
//!   [`probe::check`] (`arng check-e2e`'s hops, each with its own cause) with
//!   [`probe::alerts`] (its alert hops) and [`probe::scope`] (which zones it probes
//!   and checks), [`probe::latency`] (`arng latency`),
//!   with [`probe::prober`] (the MQTT probe client), [`probe::api`] (a REST client) and
//!   [`probe::influx`] (probe and heartbeat queries).
//! - [`lab`]: `arng check-lab`, the lab's checklist against any team's chain:
//!   [`lab::observed`] (what was seen, bounded), [`lab::eval`] (the checks, pure),
//!   [`lab::watch`] (MQTT), [`lab::backend`] (REST, InfluxDB), [`lab::run`](mod@lab::run)
//!   (the sequence), [`lab::render`] (table, JSON, Markdown), [`lab::lang`] (fr/en).
//! - [`qos`]: the QoS benchmark (`arng qos-bench`): [`qos::plan`], [`qos::run`] (one
//!   level), [`qos::clock`], [`qos::publisher`], [`qos::subscriber`], [`qos::payload`], [`qos::report`],
//!   [`qos::render`] (table, CSV), [`qos::chart`] (SVG).
//!
//! Edges (I/O) and what they share:
//! - [`config`]: the options every subcommand shares (flags + environment variables),
//!   validated while parsing; [`units`]: durations and byte sizes as people type them.
//! - [`mqtt`]: the broker edge (rumqttc options, connecting, failures in words), with
//!   [`mqtt::v5`] (MQTT 5 options and reason codes) and [`mqtt::dual`] (a connection
//!   in MQTT 5 where the broker offers it, else 3.1.1, whose events name the topic of
//!   a refused publish);
//!   [`tls`]: the PEM files and rustls configuration of `mqtts://`.
//! - [`store`]: the InfluxDB edge (writes, Flux queries, [`store::csv`] annotated CSV,
//!   setup); [`net`]: why an HTTP request got no answer (refused, DNS, TLS), shared
//!   by the InfluxDB and API clients.
//! - [`metrics`]: a small Prometheus registry.
//! - [`backoff`]: capped exponential backoff with jitter, for retry loops.
//! - [`shutdown`]: the Ctrl-C/SIGTERM future of long-running commands.
//!
//! Pure (no I/O, unit-tested next to the code):
//! - [`domain`]: the data contract: [`domain::names`], [`domain::topic`],
//!   [`domain::payload`], [`domain::alert`], [`domain::thresholds`], [`domain::rules`],
//!   [`domain::schema`] (InfluxDB schema), [`domain::line_protocol`], [`domain::flux`]
//!   (Flux literals), [`domain::json`] (untrusted JSON objects, values shown short),
//!   [`domain::deadletter`] (the published dead-letter record), [`domain::clock`] (each
//!   sensor's strictly increasing timestamps).
//! - [`supervision`]: the probe convention, broker `$SYS` statistics and the three key
//!   indicators with their thresholds.
//! - [`stats`]: latency histograms (HdrHistogram), coordinated-omission correction,
//!   loss/duplicate/reordering accounting.
//! - [`report`]: check results (doctor, check-e2e) with their causes, as a table that
//!   fits the terminal or JSON.

pub mod api;
pub mod backoff;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod domain;
pub mod help;
pub mod ingest;
pub mod lab;
pub mod metrics;
pub mod mqtt;
pub mod net;
pub mod probe;
pub mod qos;
pub mod report;
pub mod shutdown;
pub mod sim;
pub mod stats;
pub mod store;
pub mod supervision;
pub mod tls;
pub mod units;
