//! The MQTT QoS benchmark of `arng qos-bench`: what QoS 0, 1 and 2 cost and guarantee
//! on the configured broker.
//!
//! For each QoS level in turn: M subscribers subscribe at that level to a topic tree of
//! their own (`entrepot/qosbench/<run>-q<qos>/+`, never read by ingest), then N
//! publishers each send K messages (or publish for a duration), optionally on a rate
//! schedule. Every payload starts with a header (publisher, sequence number, send and
//! scheduled times, see [`payload`]), so subscribers measure end-to-end latency and
//! account for losses, duplicates and reordering per publisher ([`crate::stats`]).
//! Publishers pair each outgoing PUBLISH with its PUBACK (QoS 1) or PUBCOMP (QoS 2) by
//! packet id to time acknowledgements, and disconnect only once every message is
//! acknowledged, so nothing in flight is lost at the end. docs/qos.md explains the
//! figures and the pairing.
//!
//! - [`plan`]: the options checked together, the flags' value parsers, run names;
//! - [`run`]: one level end to end; [`clock`]: the clock its tasks share;
//! - [`subscriber`], [`publisher`]: the tasks;
//! - [`payload`]: the bench's binary header;
//! - [`report`]: a level's figures (the JSON object);
//! - [`render`]: table and CSV; [`chart`]: the SVG latency chart.

pub mod chart;
pub mod clock;
pub mod payload;
pub mod plan;
pub mod publisher;
pub mod render;
pub mod report;
pub mod run;
pub mod subscriber;

pub use plan::{Plan, PlanError, Settings, Stop};
pub use report::LevelReport;
pub use run::{Bench, LevelRun};
