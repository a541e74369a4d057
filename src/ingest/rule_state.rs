//! The rules' alert state across restarts: `rules.json` in the spool directory.
//!
//! The engine's [`AlertMemory`] (alerts raised and not cleared, sensors and zones
//! seen) is taken when a batch closes, if it changed, and saved when that batch is
//! settled, *before* its messages are acknowledged. So the file always matches the
//! messages the broker will not send again: after a crash the redelivered messages
//! are exactly those processed after the saved state, and processing them again
//! gives the same alerts (same ids). A restart then neither raises an alert that is
//! still raised nor forgets one that must be cleared.
//!
//! Written like the spool (temp file, fsync, rename, directory fsync); it changes
//! only when an alert is raised or cleared or a new sensor appears, so this costs
//! nothing at a steady rate. A missing file is a first start; an unreadable one is
//! reported and ignored (the alerts then start from nothing, as before this file
//! existed).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use crate::domain::rules::{AlertMemory, RuleEngine};

/// The file's name in the spool directory.
pub const FILE_NAME: &str = "rules.json";

/// A taken [`AlertMemory`], cheap to carry in a batch.
pub type RuleSnapshot = Arc<AlertMemory>;

/// Where the alert state is saved, and what was last taken and saved.
#[derive(Debug)]
pub struct RuleState {
    path: Option<PathBuf>,
    loaded: Option<AlertMemory>,
    /// Engine generation of the last snapshot taken.
    taken: Option<u64>,
    saved: Option<RuleSnapshot>,
}

impl RuleState {
    /// Reads `dir/rules.json` if there is one.
    pub fn open(dir: &Path) -> RuleState {
        let path = dir.join(FILE_NAME);
        let loaded = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<AlertMemory>(&bytes) {
                Ok(m) => Some(m),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "cannot read the saved alert state; alerts start from nothing");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot read the saved alert state; alerts start from nothing");
                None
            }
        };
        RuleState {
            path: Some(path),
            loaded,
            taken: None,
            saved: None,
        }
    }

    /// A state that is never saved (unit tests).
    #[cfg(test)]
    pub fn in_memory() -> RuleState {
        RuleState {
            path: None,
            loaded: None,
            taken: None,
            saved: None,
        }
    }

    /// Gives the saved state to a fresh engine.
    pub fn restore_into(&self, engine: &mut RuleEngine, now: DateTime<Utc>) {
        let Some(m) = &self.loaded else { return };
        let skipped = engine.restore(m, now);
        info!(
            raised = m.raised.len(),
            sensors = m.sensors.len(),
            zones = m.zones.len(),
            skipped,
            "alert state restored from the previous run"
        );
    }

    /// The engine's memory if it changed since the last snapshot.
    pub fn snapshot_if_changed(&mut self, engine: &RuleEngine) -> Option<RuleSnapshot> {
        if self.taken == Some(engine.generation()) {
            return None;
        }
        self.taken = Some(engine.generation());
        Some(Arc::new(engine.memory()))
    }

    /// Saves a snapshot durably (unless it equals the last one saved). A failure is
    /// logged: the messages are still acknowledged, and a restart may then repeat
    /// an alert transition.
    pub fn save(&mut self, snapshot: &RuleSnapshot) {
        if self.saved.as_deref() == Some(snapshot.as_ref()) {
            return;
        }
        if let Some(path) = &self.path {
            if let Err(e) = write_durably(path, snapshot) {
                error!(file = %path.display(), error = %e, "cannot save the alert state");
                return;
            }
        }
        self.saved = Some(snapshot.clone());
    }

    /// The last snapshot saved (tests).
    #[cfg(test)]
    pub fn last_saved(&self) -> Option<&AlertMemory> {
        self.saved.as_deref()
    }
}

fn write_durably(path: &Path, memory: &AlertMemory) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(memory).map_err(std::io::Error::other)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AlertLevel, Reading, SensorId, Thresholds, Zone};

    fn reading(temp: f64) -> Reading {
        Reading {
            zone: Zone::new("nord").unwrap(),
            sensor: SensorId::new("s1").unwrap(),
            seq: Some(1),
            timestamp: Utc::now(),
            temp,
            hum: 50.0,
            alert_level: AlertLevel::Normal,
            provenance: Default::default(),
        }
    }

    #[test]
    fn saved_state_comes_back_and_unchanged_state_is_not_taken_twice() {
        let dir = tempfile::tempdir().unwrap();
        let t = Thresholds {
            debounce: 1,
            ..Thresholds::default()
        };
        let mut engine = RuleEngine::new();
        let mut state = RuleState::open(dir.path());
        assert!(
            state.snapshot_if_changed(&engine).is_some(),
            "first snapshot"
        );
        assert!(state.snapshot_if_changed(&engine).is_none());
        engine.on_reading(&t, &reading(31.0), Utc::now());
        let snap = state.snapshot_if_changed(&engine).expect("alerts raised");
        state.save(&snap);
        assert!(dir.path().join(FILE_NAME).is_file());
        assert!(!dir.path().join("rules.json.tmp").exists());

        let restarted = RuleState::open(dir.path());
        let mut fresh = RuleEngine::new();
        restarted.restore_into(&mut fresh, Utc::now());
        assert_eq!(fresh.memory(), *snap);
        assert_eq!(fresh.active().critical, 1);
    }

    #[test]
    fn a_corrupt_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let state = RuleState::open(dir.path());
        let mut engine = RuleEngine::new();
        state.restore_into(&mut engine, Utc::now());
        assert_eq!(engine.memory(), AlertMemory::default());
    }
}
