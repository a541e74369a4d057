//! The simulator (`arng simulate`): a fleet of temperature/humidity sensors that
//! publish the contract's readings, zone heartbeats, status and alerts to the broker,
//! with faults and a heatwave scenario on demand. docs/simulate.md is the user's
//! guide.
//!
//! - [`model`]: the signal model, pure and seeded (climate, daily cycle, drift,
//!   noise, faults, heatwave);
//! - [`plan`]: the options of a run checked together, and the fleet cut into
//!   connections;
//! - [`link`]: one MQTT connection (MQTT 5 where the broker offers it) that
//!   reconnects with backoff, re-sends what a dropped connection held and counts
//!   what the broker acknowledged or refused;
//! - [`fleet`]: the generators that pace readings and alerts, and the heartbeats;
//! - [`refusals`]: messages the broker refused (MQTT 5), per topic, bounded;
//! - [`reporter`]: the per-cycle log line, the progress bar, the summary;
//! - [`run`](mod@run): a whole run, from connecting to the last acknowledgement.
//!
//! One task per connection driver, per generator, for the heartbeats and for the
//! reporter, so that a slow part never stalls another.

pub mod fleet;
pub mod link;
pub mod model;
pub mod plan;
pub mod refusals;
pub mod reporter;
pub mod run;

pub use model::{
    climate, Climate, Fault, FaultKind, Sample, Scenario, SensorModel, SensorSetup, Window,
    DRIFT_FAULT_STEP, FAULT_SYNTAX, HEATWAVE_RAMP_INTERVALS, SCENARIO_SYNTAX, SPIKE_ABOVE_CRITICAL,
};
pub use plan::{Options, Plan, PlanError, Rate};
pub use run::{run, Outcome};

/// Why a run could not start: the broker was not reached, or refused us.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("interrupted before the broker {endpoint} was reached")]
    Interrupted { endpoint: String },
    #[error("broker {endpoint} refused client {client_id:?}: {reason}")]
    Refused {
        endpoint: String,
        client_id: String,
        reason: String,
    },
    #[error("TLS handshake with {endpoint} failed: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("connection task for {client_id:?} ended")]
    TaskEnded { client_id: String },
    /// `detail` names the attempts and the last error, when there was one.
    #[error("cannot connect to broker {endpoint} within {within}{detail}")]
    Unreachable {
        endpoint: String,
        within: String,
        detail: String,
    },
}
