//! The warehouse's data contract, with no I/O: what a zone or sensor name may be, the
//! MQTT topic scheme, the JSON reading and heartbeat payloads, the InfluxDB schema and
//! its line-protocol encoding, and safe Flux literals.
//!
//! Everything here is pure and unit-tested next to its code; the I/O edges (`mqtt`,
//! `store`) and the subcommands build on it. `docs/data-model.md` is the prose version.

pub mod alert;
pub mod clock;
pub mod deadletter;
pub mod flux;
pub mod json;
pub mod line_protocol;
pub mod names;
pub mod payload;
pub mod rules;
pub mod schema;
pub mod thresholds;
pub mod topic;

pub use alert::{Alert, AlertKind, AlertSource, AlertState};
pub use clock::SensorClock;
pub use names::{NameError, SensorId, Zone};
pub use payload::{AlertLevel, Heartbeat, PayloadError, Provenance, ReadPolicy, Reading};
pub use thresholds::{Metric, Thresholds};
pub use topic::{Topic, TopicError};
