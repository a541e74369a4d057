//! Alert thresholds: per zone and per metric, warning and critical, low and high.
//!
//! ```json
//! {"default": {"temp": {"critical_low": 2, "warning_low": 5, "warning_high": 25, "critical_high": 30, "hysteresis": 0.5},
//!              "hum":  {"critical_low": 20, "warning_low": 30, "warning_high": 65, "critical_high": 75, "hysteresis": 2}},
//!  "zones": {"nord": {"temp": {...}, "hum": {...}}},
//!  "debounce": 3, "silence_after_s": 90}
//! ```
//!
//! The bands must nest: `critical_low < warning_low < warning_high < critical_high`
//! ("warning inside critical, low below high"), and the hysteresis must be smaller
//! than the gap between the warning bounds, or a value could never clear. Every bound
//! lies within the physical range readings may have ([`TEMP_RANGE`], [`HUM_RANGE`],
//! docs/data-model.md): a bound outside it can never be crossed, so a document with
//! `critical_high: 1e308` would switch alerting off for every ingest that applies it
//! (issue 15). The same
//! document is what `arng ingest` applies, what `GET /thresholds` shows, and what the
//! retained `entrepot/config/thresholds` message carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::names::Zone;
use super::payload::{AlertLevel, HUM_RANGE, TEMP_RANGE};

/// A measured quantity that thresholds apply to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Temp,
    Hum,
}

impl Metric {
    pub const ALL: [Metric; 2] = [Metric::Temp, Metric::Hum];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Temp => "temp",
            Metric::Hum => "hum",
        }
    }

    /// The values a reading of this metric may have (what ingest accepts).
    pub fn range(self) -> (f64, f64) {
        match self {
            Metric::Temp => TEMP_RANGE,
            Metric::Hum => HUM_RANGE,
        }
    }

    fn range_text(self) -> String {
        let (lo, hi) = self.range();
        match self {
            Metric::Temp => format!("{lo} to {hi} °C, the temperatures a reading may have"),
            Metric::Hum => format!("{lo} to {hi} %, the humidities a reading may have"),
        }
    }
}

/// A number as a message shows it: short (`1e308`, not its 309 digits).
fn short(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// The four bounds of one metric, and the hysteresis applied when clearing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub critical_low: f64,
    pub warning_low: f64,
    pub warning_high: f64,
    pub critical_high: f64,
    /// How far back inside a bound a value must come before its alert clears.
    #[serde(default)]
    pub hysteresis: f64,
}

impl Band {
    /// The level of `value` against this band, with no memory (what a sensor puts in
    /// its payload). The rule engine adds hysteresis and debounce on top.
    pub fn level(&self, value: f64) -> AlertLevel {
        if value >= self.critical_high || value <= self.critical_low {
            AlertLevel::Critical
        } else if value >= self.warning_high || value <= self.warning_low {
            AlertLevel::Warning
        } else {
            AlertLevel::Normal
        }
    }

    /// The bound `value` crossed at `level` (the one it is nearest to), for messages.
    pub fn bound_for(&self, level: AlertLevel, value: f64) -> Option<f64> {
        let mid = (self.warning_low + self.warning_high) / 2.0;
        match level {
            AlertLevel::Normal => None,
            AlertLevel::Warning => Some(if value >= mid {
                self.warning_high
            } else {
                self.warning_low
            }),
            AlertLevel::Critical => Some(if value >= mid {
                self.critical_high
            } else {
                self.critical_low
            }),
        }
    }

    /// Is `value` back inside the bounds of `level` by at least the hysteresis? Used
    /// to clear an alert of that level.
    pub fn clears(&self, level: AlertLevel, value: f64) -> bool {
        let h = self.hysteresis;
        match level {
            AlertLevel::Normal => true,
            AlertLevel::Warning => value < self.warning_high - h && value > self.warning_low + h,
            AlertLevel::Critical => value < self.critical_high - h && value > self.critical_low + h,
        }
    }

    fn validate(&self, path: &str, metric: Metric) -> Result<(), ThresholdError> {
        let err = |field: &str, reason: String| ThresholdError {
            field: format!("{path}.{field}"),
            reason,
        };
        let (lo, hi) = metric.range();
        for (name, v) in [
            ("critical_low", self.critical_low),
            ("warning_low", self.warning_low),
            ("warning_high", self.warning_high),
            ("critical_high", self.critical_high),
            ("hysteresis", self.hysteresis),
        ] {
            if !v.is_finite() {
                return Err(err(name, "must be a finite number".into()));
            }
            if name != "hysteresis" && !(lo..=hi).contains(&v) {
                return Err(err(
                    name,
                    format!(
                        "{} is outside {}: a bound no reading can cross would switch this alert off",
                        short(v),
                        metric.range_text()
                    ),
                ));
            }
        }
        let ordered = [
            (
                "critical_low",
                self.critical_low,
                "warning_low",
                self.warning_low,
            ),
            (
                "warning_low",
                self.warning_low,
                "warning_high",
                self.warning_high,
            ),
            (
                "warning_high",
                self.warning_high,
                "critical_high",
                self.critical_high,
            ),
        ];
        for (below, b, above, a) in ordered {
            if b >= a {
                return Err(err(
                    above,
                    format!("must be above {below} ({} >= {})", short(b), short(a)),
                ));
            }
        }
        if self.hysteresis < 0.0 {
            return Err(err("hysteresis", "must not be negative".into()));
        }
        if 2.0 * self.hysteresis >= self.warning_high - self.warning_low {
            return Err(err(
                "hysteresis",
                format!(
                    "must be less than half the normal range ({} between warning_low and warning_high)",
                    short(self.warning_high - self.warning_low)
                ),
            ));
        }
        Ok(())
    }
}

/// The bands of one zone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneThresholds {
    pub temp: Band,
    pub hum: Band,
}

impl ZoneThresholds {
    pub fn band(&self, metric: Metric) -> &Band {
        match metric {
            Metric::Temp => &self.temp,
            Metric::Hum => &self.hum,
        }
    }
}

/// The whole threshold document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Bands for zones without their own entry.
    pub default: ZoneThresholds,
    /// Zone-specific bands (e.g. a cold room).
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, ZoneThresholds>)]
    pub zones: BTreeMap<Zone, ZoneThresholds>,
    /// Consecutive out-of-band readings needed to raise an alert (1 = immediately).
    #[serde(default = "default_debounce")]
    pub debounce: u32,
    /// Seconds without a reading (per sensor) or heartbeat (per zone) before a silence
    /// alert is raised.
    #[serde(default = "default_silence_after_s")]
    pub silence_after_s: u64,
}

/// Most zones with bands of their own: bounds the document every process holds (a
/// retained message is limited by the broker's packet size, a PUT body by the API's
/// body limit, a file by nothing else).
pub const MAX_ZONES: usize = 1000;

fn default_debounce() -> u32 {
    3
}

fn default_silence_after_s() -> u64 {
    90
}

/// Why a threshold document is refused; `field` is a path such as
/// `zones.nord.temp.warning_high`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ThresholdError {
    pub field: String,
    pub reason: String,
}

impl Default for Thresholds {
    /// Ambient warehouse storage: 5-25 °C and 30-65 % RH are normal; below 2 or above
    /// 30 °C, below 20 or above 75 % RH damage goods and are critical.
    fn default() -> Thresholds {
        Thresholds {
            default: ZoneThresholds {
                temp: Band {
                    critical_low: 2.0,
                    warning_low: 5.0,
                    warning_high: 25.0,
                    critical_high: 30.0,
                    hysteresis: 0.5,
                },
                hum: Band {
                    critical_low: 20.0,
                    warning_low: 30.0,
                    warning_high: 65.0,
                    critical_high: 75.0,
                    hysteresis: 2.0,
                },
            },
            zones: BTreeMap::new(),
            debounce: default_debounce(),
            silence_after_s: default_silence_after_s(),
        }
    }
}

impl Thresholds {
    pub fn for_zone(&self, zone: &Zone) -> &ZoneThresholds {
        self.zones.get(zone).unwrap_or(&self.default)
    }

    pub fn band(&self, zone: &Zone, metric: Metric) -> &Band {
        self.for_zone(zone).band(metric)
    }

    /// The memoryless level of a reading: the worse of its temperature and humidity.
    pub fn level(&self, zone: &Zone, temp: f64, hum: f64) -> AlertLevel {
        let z = self.for_zone(zone);
        z.temp.level(temp).max(z.hum.level(hum))
    }

    pub fn validate(&self) -> Result<(), ThresholdError> {
        let check_zone = |path: &str, z: &ZoneThresholds| {
            z.temp.validate(&format!("{path}.temp"), Metric::Temp)?;
            z.hum.validate(&format!("{path}.hum"), Metric::Hum)
        };
        if self.zones.len() > MAX_ZONES {
            return Err(ThresholdError {
                field: "zones".into(),
                reason: format!(
                    "{} zones, more than the {MAX_ZONES} a document may configure",
                    self.zones.len()
                ),
            });
        }
        check_zone("default", &self.default)?;
        for (zone, z) in &self.zones {
            check_zone(&format!("zones.{zone}"), z)?;
        }
        if self.debounce == 0 || self.debounce > 1000 {
            return Err(ThresholdError {
                field: "debounce".into(),
                reason: "must be between 1 and 1000 readings".into(),
            });
        }
        if self.silence_after_s == 0 || self.silence_after_s > 7 * 24 * 3600 {
            return Err(ThresholdError {
                field: "silence_after_s".into(),
                reason: "must be between 1 second and 7 days".into(),
            });
        }
        Ok(())
    }

    /// Parses and validates a JSON document (a file, a PUT body, a retained message).
    pub fn from_json(bytes: &[u8]) -> Result<Thresholds, ThresholdError> {
        let t: Thresholds = serde_json::from_slice(bytes).map_err(|e| ThresholdError {
            field: "body".into(),
            reason: e.to_string(),
        })?;
        t.validate()?;
        Ok(t)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("thresholds serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nord() -> Zone {
        Zone::new("nord").unwrap()
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let t = Thresholds::default();
        t.validate().unwrap();
        assert_eq!(Thresholds::from_json(t.to_json().as_bytes()).unwrap(), t);
    }

    #[test]
    fn levels() {
        let t = Thresholds::default();
        assert_eq!(t.level(&nord(), 20.0, 50.0), AlertLevel::Normal);
        assert_eq!(t.level(&nord(), 26.0, 50.0), AlertLevel::Warning);
        assert_eq!(t.level(&nord(), 30.0, 50.0), AlertLevel::Critical);
        assert_eq!(t.level(&nord(), 1.0, 50.0), AlertLevel::Critical);
        assert_eq!(t.level(&nord(), 20.0, 70.0), AlertLevel::Warning);
        assert_eq!(t.level(&nord(), 26.0, 80.0), AlertLevel::Critical);
        let band = t.band(&nord(), Metric::Temp);
        assert_eq!(band.bound_for(AlertLevel::Critical, 31.0), Some(30.0));
        assert_eq!(band.bound_for(AlertLevel::Warning, 4.0), Some(5.0));
        // Clearing a warning needs the value back below 25 - 0.5.
        assert!(!band.clears(AlertLevel::Warning, 24.8));
        assert!(band.clears(AlertLevel::Warning, 24.4));
    }

    #[test]
    fn zone_overrides() {
        let mut t = Thresholds::default();
        let mut cold = t.default;
        cold.temp = Band {
            critical_low: -30.0,
            warning_low: -25.0,
            warning_high: -15.0,
            critical_high: -10.0,
            hysteresis: 0.5,
        };
        t.zones.insert(Zone::new("froid").unwrap(), cold);
        t.validate().unwrap();
        assert_eq!(
            t.level(&Zone::new("froid").unwrap(), -20.0, 50.0),
            AlertLevel::Normal
        );
        assert_eq!(t.level(&nord(), -20.0, 50.0), AlertLevel::Critical);
    }

    #[test]
    fn bounds_stay_within_what_readings_may_have() {
        let mut t = Thresholds::default();
        // The ends of the physical ranges are valid bounds.
        t.default.temp = Band {
            critical_low: TEMP_RANGE.0,
            warning_low: 0.0,
            warning_high: 50.0,
            critical_high: TEMP_RANGE.1,
            hysteresis: 1.0,
        };
        t.default.hum.critical_low = HUM_RANGE.0;
        t.default.hum.critical_high = HUM_RANGE.1;
        t.validate().unwrap();
        t.default.temp.critical_high = 1e308;
        let e = t.validate().unwrap_err();
        assert_eq!(e.field, "default.temp.critical_high");
        // Printed short, with the range it must stay in.
        assert!(
            e.reason.starts_with("1e308 is outside -60 to 100 °C"),
            "{e}"
        );
        assert!(e.to_string().len() < 200, "{e}");
        let mut t = Thresholds::default();
        let z = t.default;
        for i in 0..=MAX_ZONES {
            t.zones.insert(Zone::new(&format!("z{i}")).unwrap(), z);
        }
        assert_eq!(t.validate().unwrap_err().field, "zones");
        assert_eq!(short(1e308), "1e308");
        assert_eq!(short(-1000.0), "-1000");
        assert_eq!(short(25.5), "25.5");
        assert_eq!(short(0.0), "0");
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                r#"{"default":{"temp":{"critical_low":2,"warning_low":5,"warning_high":25,"critical_high":24},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}}}"#,
                "default.temp.critical_high",
            ),
            (
                r#"{"default":{"temp":{"critical_low":6,"warning_low":5,"warning_high":25,"critical_high":30},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}}}"#,
                "default.temp.warning_low",
            ),
            (
                r#"{"default":{"temp":{"critical_low":2,"warning_low":5,"warning_high":4,"critical_high":30},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}}}"#,
                "default.temp.warning_high",
            ),
            (
                r#"{"default":{"temp":{"critical_low":2,"warning_low":5,"warning_high":25,"critical_high":30,"hysteresis":20},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}}}"#,
                "default.temp.hysteresis",
            ),
            (
                r#"{"default":{"temp":{"critical_low":2,"warning_low":5,"warning_high":25,"critical_high":30},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}},"debounce":0}"#,
                "debounce",
            ),
            (
                r#"{"default":{"temp":{"critical_low":2,"warning_low":5,"warning_high":25,"critical_high":30},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}},"zones":{"Nord!":{}}}"#,
                "body",
            ),
            (
                r#"{"default":{"temp":{"critical_low":2,"warning_low":5,"warning_high":25,"critical_high":30,"extra":1},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}}}"#,
                "body",
            ),
            ("{", "body"),
            // Issue 15: limits no reading can cross switch alerting off.
            (
                r#"{"default":{"temp":{"critical_low":2,"warning_low":5,"warning_high":25,"critical_high":1e308},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}}}"#,
                "default.temp.critical_high",
            ),
            (
                r#"{"default":{"temp":{"critical_low":-1000,"warning_low":5,"warning_high":25,"critical_high":30},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}}}"#,
                "default.temp.critical_low",
            ),
            (
                r#"{"default":{"temp":{"critical_low":2,"warning_low":5,"warning_high":25,"critical_high":30},"hum":{"critical_low":-5,"warning_low":30,"warning_high":65,"critical_high":75}}}"#,
                "default.hum.critical_low",
            ),
            (
                r#"{"default":{"temp":{"critical_low":2,"warning_low":5,"warning_high":25,"critical_high":30},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":100.5}}}"#,
                "default.hum.critical_high",
            ),
            (
                r#"{"default":{"temp":{"critical_low":2,"warning_low":5,"warning_high":25,"critical_high":30},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}},"zones":{"froid":{"temp":{"critical_low":-80,"warning_low":-25,"warning_high":-15,"critical_high":-10},"hum":{"critical_low":20,"warning_low":30,"warning_high":65,"critical_high":75}}}}"#,
                "zones.froid.temp.critical_low",
            ),
        ];
        for (json, field) in cases {
            let e = Thresholds::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }
}
