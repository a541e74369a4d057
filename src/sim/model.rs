//! The simulated sensors' signal model, pure: what temperature and humidity a sensor
//! of `arng simulate` reports for a given reading, and the faults and scenarios that
//! can be injected. No clock, no I/O, no global randomness: every value is a function
//! of the seed, the zone, the sensor, the reading's sequence number and its scheduled
//! time, so a run is reproducible and the model is unit-tested here.
//!
//! A natural reading is the sum of
//! - the zone's climate: a base temperature and humidity placed *inside the zone's
//!   normal band* (`nord` colder and more humid, `sud` warmer and drier, `est` in the
//!   middle, other zones at a position derived from a hash of their name), so natural
//!   readings never raise alerts whatever thresholds are configured;
//! - a daily cycle (warmest at 15:00 UTC, humidity the other way round);
//! - a slow per-sensor drift (a calibration offset that wanders over hours);
//! - noise, a sum of three uniforms (bell-shaped, bounded at three sigmas).
//!
//! Faults and the heatwave scenario then bend that signal (see [`FaultKind`] and
//! [`Scenario`]); the result is clamped to the contract's physical ranges and rounded
//! to the two decimals the payload carries, so the alert level computed from it is the
//! one a consumer recomputes from the payload.
//!
//! Random numbers come from SplitMix64's output function applied to counters (seed,
//! sensor, sequence number), not from a stateful generator: a value does not depend on
//! how many values were drawn before it, nor on the version of a random-number crate.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::domain::names::{SensorId, Zone};
use crate::domain::payload::{HUM_RANGE, TEMP_RANGE};
use crate::domain::thresholds::{Band, ZoneThresholds};

/// Heatwave: the zone reaches `critical` this many reading intervals after `warning`.
pub const HEATWAVE_RAMP_INTERVALS: u32 = 3;
/// Drift fault: how far (°C) the temperature moves away per reading interval.
pub const DRIFT_FAULT_STEP: f64 = 0.5;
/// Spike fault: how far (°C) above the zone's `critical_high` a spike lands.
pub const SPIKE_ABOVE_CRITICAL: f64 = 5.0;

/// Syntax of `--fault`, for help texts and error messages.
pub const FAULT_SYNTAX: &str = "KIND:ZONE[/SENSOR]@START[+DURATION] with KIND one of spike, stuck, dropout, drift (e.g. spike:nord/s1@30s or dropout:sud@1m+20s)";
/// Syntax of `--scenario`, for help texts and error messages.
pub const SCENARIO_SYNTAX: &str = "heatwave:ZONE@START[+DURATION] (e.g. heatwave:sud@2m)";

// ---------------------------------------------------------------------------
// Counter-based random numbers
// ---------------------------------------------------------------------------

/// SplitMix64's output function: a bijective mix of 64 bits with good avalanche.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` from the high 53 bits of `h`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a of a name: stable across Rust versions and platforms (std's hasher is not).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Bell-shaped noise with standard deviation 1, bounded to ±3: the sum of three
/// uniforms on [-1, 1] (variance 1/3 each), taken from 21-bit slices of one hash.
fn bell(h: u64) -> f64 {
    (0..3)
        .map(|i| {
            let slice = (h >> (21 * i)) & 0x1f_ffff;
            2.0 * (slice as f64 / (1u64 << 21) as f64) - 1.0
        })
        .sum()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------
// Zone climate
// ---------------------------------------------------------------------------

/// Where a zone's base temperature and humidity sit inside its normal bands, as a
/// fraction from `warning_low` (0) to `warning_high` (1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Climate {
    pub temp_position: f64,
    pub hum_position: f64,
}

/// The lab's zones have a character; any other zone gets a stable position derived
/// from its name, between 0.35 and 0.65 of the band.
pub fn climate(zone: &Zone) -> Climate {
    let (temp_position, hum_position) = match zone.as_str() {
        "nord" => (0.35, 0.60),
        "sud" => (0.65, 0.40),
        "est" => (0.50, 0.50),
        other => {
            let h = mix64(fnv1a(other));
            (0.35 + 0.3 * unit(h), 0.35 + 0.3 * unit(mix64(h)))
        }
    };
    Climate {
        temp_position,
        hum_position,
    }
}

/// Amplitudes as fractions of a band's normal width (`warning_high - warning_low`).
/// With a base between 0.35 and 0.65, the worst case (daily + drift + 3 sigmas of
/// noise = 0.08 + 0.05 + 0.0225 = 0.1525) stays inside the band: natural readings are
/// always `normal`.
const DAILY_FRACTION: f64 = 0.08;
const DRIFT_FRACTION: f64 = 0.05;
const NOISE_FRACTION: f64 = 0.0075;

/// One metric's natural signal parameters, in the metric's unit.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Signal {
    base: f64,
    daily: f64,
    sigma: f64,
    drift_max: f64,
}

impl Signal {
    fn new(band: &Band, position: f64) -> Signal {
        let width = band.warning_high - band.warning_low;
        Signal {
            base: band.warning_low + position * width,
            daily: DAILY_FRACTION * width,
            sigma: NOISE_FRACTION * width,
            drift_max: DRIFT_FRACTION * width,
        }
    }
}

// ---------------------------------------------------------------------------
// Faults and scenarios
// ---------------------------------------------------------------------------

/// A fault injected into one sensor or into every sensor of a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The temperature jumps to [`SPIKE_ABOVE_CRITICAL`] °C above the zone's
    /// `critical_high`. Without a duration, only the first reading at or after START
    /// carries it (a glitch); with one, every reading in the window.
    Spike,
    /// The sensor repeats the last values it reported before START.
    Stuck,
    /// The sensor's readings are lost: nothing is published, but its sequence number
    /// still advances, so consumers see the gap (a radio dropout, not a power-off).
    Dropout,
    /// A growing offset: the temperature moves [`DRIFT_FAULT_STEP`] °C further up per
    /// reading interval since START (a failing sensor drifting out of calibration).
    Drift,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Spike,
        FaultKind::Stuck,
        FaultKind::Dropout,
        FaultKind::Drift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Spike => "spike",
            FaultKind::Stuck => "stuck",
            FaultKind::Dropout => "dropout",
            FaultKind::Drift => "drift",
        }
    }
}

/// A time window relative to the simulator's start: `[start, start + duration)`, or
/// open-ended without a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Duration,
    pub duration: Option<Duration>,
}

impl Window {
    pub fn contains(&self, at: Duration) -> bool {
        at >= self.start && self.duration.is_none_or(|d| at - self.start < d)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", humantime::format_duration(self.start))?;
        if let Some(d) = self.duration {
            write!(f, "+{}", humantime::format_duration(d))?;
        }
        Ok(())
    }
}

/// `--fault KIND:ZONE[/SENSOR]@START[+DURATION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub zone: Zone,
    /// `None`: every sensor of the zone.
    pub sensor: Option<SensorId>,
    pub window: Window,
}

impl Fault {
    pub fn applies_to(&self, zone: &Zone, sensor: &SensorId) -> bool {
        &self.zone == zone && self.sensor.as_ref().is_none_or(|s| s == sensor)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.zone)?;
        if let Some(s) = &self.sensor {
            write!(f, "/{s}")?;
        }
        write!(f, "{}", self.window)
    }
}

/// Parses `START[+DURATION]` (humantime: `30s`, `1m30s`, `500ms`).
fn parse_window(s: &str) -> Result<Window, String> {
    let (start, duration) = match s.split_once('+') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let start = humantime::parse_duration(start.trim())
        .map_err(|e| format!("START {:?}: {e} (use e.g. 30s, 2m, 500ms)", start.trim()))?;
    let duration = match duration {
        None => None,
        Some(d) => {
            let d = humantime::parse_duration(d.trim())
                .map_err(|e| format!("DURATION {:?}: {e} (use e.g. 30s, 2m)", d.trim()))?;
            if d.is_zero() {
                return Err("DURATION must be greater than zero".into());
            }
            Some(d)
        }
    };
    Ok(Window { start, duration })
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        let syntax = || format!("expected {FAULT_SYNTAX}");
        let (target, when) = s
            .split_once('@')
            .ok_or_else(|| format!("no @START; {}", syntax()))?;
        let (kind, place) = target
            .split_once(':')
            .ok_or_else(|| format!("no KIND: prefix; {}", syntax()))?;
        let kind = FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind.trim())
            .ok_or_else(|| {
                format!(
                    "unknown fault kind {:?} (expected spike, stuck, dropout or drift; syntax {FAULT_SYNTAX})",
                    kind.trim()
                )
            })?;
        let (zone, sensor) = match place.split_once('/') {
            Some((z, s)) => (z, Some(s)),
            None => (place, None),
        };
        let zone = Zone::new(zone.trim()).map_err(|e| e.to_string())?;
        let sensor = sensor
            .map(|s| SensorId::new(s.trim()))
            .transpose()
            .map_err(|e| e.to_string())?;
        let window = parse_window(when)?;
        Ok(Fault {
            kind,
            zone,
            sensor,
            window,
        })
    }
}

/// `--scenario`: a scripted situation across a whole zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// `heatwave:ZONE@START[+DURATION]`: from START the zone's temperature sits just
    /// above `warning_high` and climbs, reaching `critical_high` exactly
    /// [`HEATWAVE_RAMP_INTERVALS`] reading intervals later; it keeps rising slowly
    /// (to about 1.5 °C above critical) until START+DURATION, when the zone is back to
    /// its natural temperature at once (alerts clear). Humidity is not affected.
    Heatwave { zone: Zone, window: Window },
}

impl Scenario {
    pub fn zone(&self) -> &Zone {
        match self {
            Scenario::Heatwave { zone, .. } => zone,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scenario::Heatwave { zone, window } => write!(f, "heatwave:{zone}{window}"),
        }
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Scenario, String> {
        let (target, when) = s
            .split_once('@')
            .ok_or_else(|| format!("no @START; expected {SCENARIO_SYNTAX}"))?;
        let (name, zone) = target
            .split_once(':')
            .ok_or_else(|| format!("no NAME: prefix; expected {SCENARIO_SYNTAX}"))?;
        if name.trim() != "heatwave" {
            return Err(format!(
                "unknown scenario {:?} (the only one is heatwave; expected {SCENARIO_SYNTAX})",
                name.trim()
            ));
        }
        let zone = Zone::new(zone.trim()).map_err(|e| e.to_string())?;
        Ok(Scenario::Heatwave {
            zone,
            window: parse_window(when)?,
        })
    }
}

// ---------------------------------------------------------------------------
// One sensor
// ---------------------------------------------------------------------------

/// What a sensor produces for one reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// Values to publish (°C, % RH), clamped and rounded to two decimals.
    Value { temp: f64, hum: f64 },
    /// A dropout fault: nothing is published for this reading.
    Dropped,
}

/// What a [`SensorModel`] needs to know about its place in the run.
#[derive(Debug, Clone)]
pub struct SensorSetup<'a> {
    pub seed: u64,
    pub zone: &'a Zone,
    pub sensor: &'a SensorId,
    /// Position of the sensor in its zone (0 for `s1`); with the zone and the seed it
    /// keys the sensor's noise and drift.
    pub index: u32,
    pub bands: &'a ZoneThresholds,
    /// Time between two readings of this sensor: the unit of the heatwave ramp and of
    /// the drift fault.
    pub interval: Duration,
    /// All faults of the run; the model keeps those that apply to it.
    pub faults: &'a [Fault],
    /// All scenarios of the run; the model keeps those of its zone.
    pub scenarios: &'a [Scenario],
}

/// The state of one simulated sensor.
#[derive(Debug, Clone)]
pub struct SensorModel {
    key: u64,
    temp: Signal,
    hum: Signal,
    temp_band: Band,
    interval: Duration,
    drift_temp: (f64, f64, f64),
    drift_hum: (f64, f64, f64),
    faults: Vec<(FaultKind, Window)>,
    heatwaves: Vec<Window>,
    /// Last values reported (what a stuck sensor repeats).
    last: Option<(f64, f64)>,
    /// Values frozen by an active stuck fault.
    frozen: Option<(f64, f64)>,
    /// Open-ended spikes already fired (one reading each), by fault index.
    spikes_done: Vec<bool>,
}

impl SensorModel {
    pub fn new(setup: &SensorSetup<'_>) -> SensorModel {
        let key = mix64(
            setup.seed ^ mix64(fnv1a(setup.zone.as_str())) ^ mix64(u64::from(setup.index) << 1),
        );
        let c = climate(setup.zone);
        // Per-sensor drift: amplitude (20-100% of the maximum), period (4-12 h), phase.
        let drift = |salt: u64, max: f64| {
            let h = mix64(key ^ salt);
            let amplitude = max * (0.2 + 0.8 * unit(h));
            let period = 4.0 * 3600.0 + 8.0 * 3600.0 * unit(mix64(h));
            let phase = std::f64::consts::TAU * unit(mix64(mix64(h)));
            (amplitude, period, phase)
        };
        let temp = Signal::new(&setup.bands.temp, c.temp_position);
        let hum = Signal::new(&setup.bands.hum, c.hum_position);
        let faults: Vec<(FaultKind, Window)> = setup
            .faults
            .iter()
            .filter(|f| f.applies_to(setup.zone, setup.sensor))
            .map(|f| (f.kind, f.window))
            .collect();
        let heatwaves = setup
            .scenarios
            .iter()
            .filter(|s| s.zone() == setup.zone)
            .map(|s| match s {
                Scenario::Heatwave { window, .. } => *window,
            })
            .collect();
        SensorModel {
            key,
            drift_temp: drift(0x7e37, temp.drift_max),
            drift_hum: drift(0x4a3b, hum.drift_max),
            temp,
            hum,
            temp_band: setup.bands.temp,
            interval: setup.interval,
            spikes_done: vec![false; faults.len()],
            faults,
            heatwaves,
            last: None,
            frozen: None,
        }
    }

    /// The natural (fault-free) values of reading `seq`, scheduled `at` after the
    /// start, at `day_secs` seconds past midnight UTC. Not rounded or clamped.
    pub fn natural(&self, seq: u64, at: Duration, day_secs: f64) -> (f64, f64) {
        let day = (std::f64::consts::TAU * (day_secs - 9.0 * 3600.0) / 86_400.0).sin();
        let t = at.as_secs_f64();
        let wander = |(amplitude, period, phase): (f64, f64, f64)| {
            amplitude * (std::f64::consts::TAU * t / period + phase).sin()
        };
        let n = mix64(self.key ^ mix64(seq));
        let temp = self.temp.base
            + self.temp.daily * day
            + wander(self.drift_temp)
            + self.temp.sigma * bell(n);
        let hum = self.hum.base - self.hum.daily * day
            + wander(self.drift_hum)
            + self.hum.sigma * bell(mix64(n));
        (temp, hum)
    }

    /// The heatwave temperature at `at`, if a heatwave is on. Noise is kept below the
    /// margin to the bounds, so the level is exactly `warning` during the ramp and
    /// `critical` from its end.
    fn heatwave(&self, seq: u64, at: Duration) -> Option<f64> {
        let window = self.heatwaves.iter().find(|w| w.contains(at))?;
        let b = &self.temp_band;
        let margin = (0.5f64).min((b.critical_high - b.warning_high) / 4.0);
        let noise = margin / 4.0 * bell(mix64(self.key ^ mix64(seq) ^ 0x4ea7));
        let ramp = self.interval * HEATWAVE_RAMP_INTERVALS;
        let since = at - window.start;
        let target = if since < ramp {
            let p = since.as_secs_f64() / ramp.as_secs_f64();
            let low = b.warning_high + margin;
            let high = b.critical_high - margin;
            low + p * (high - low)
        } else {
            let extra = ((since - ramp).as_secs_f64() / self.interval.as_secs_f64()).min(4.0);
            b.critical_high + margin + 0.25 * extra
        };
        Some(target + noise)
    }

    /// The values of reading `seq` (0, 1, 2... per sensor), scheduled `at` after the
    /// simulator's start, at `day_secs` seconds past midnight UTC.
    pub fn sample(&mut self, seq: u64, at: Duration, day_secs: f64) -> Sample {
        let active = |kind: FaultKind| {
            self.faults
                .iter()
                .any(|(k, w)| *k == kind && w.contains(at))
        };
        if active(FaultKind::Dropout) {
            return Sample::Dropped;
        }
        if active(FaultKind::Stuck) {
            let (temp, hum) = match (self.frozen, self.last) {
                (Some(v), _) | (None, Some(v)) => v,
                // Stuck from the first reading: it freezes on what it measures now.
                (None, None) => self.finish(self.natural(seq, at, day_secs)),
            };
            self.frozen = Some((temp, hum));
            self.last = Some((temp, hum));
            return Sample::Value { temp, hum };
        }
        self.frozen = None;

        let (mut temp, hum) = self.natural(seq, at, day_secs);
        if let Some(hot) = self.heatwave(seq, at) {
            temp = hot;
        }
        for (i, (kind, window)) in self.faults.iter().enumerate() {
            match kind {
                FaultKind::Drift if window.contains(at) => {
                    let steps = (at - window.start).as_secs_f64() / self.interval.as_secs_f64();
                    temp += DRIFT_FAULT_STEP * steps;
                }
                FaultKind::Spike if window.contains(at) && !self.spikes_done[i] => {
                    temp = self.temp_band.critical_high + SPIKE_ABOVE_CRITICAL;
                    if window.duration.is_none() {
                        self.spikes_done[i] = true;
                    }
                }
                _ => {}
            }
        }
        let (temp, hum) = self.finish((temp, hum));
        self.last = Some((temp, hum));
        Sample::Value { temp, hum }
    }

    /// Clamps to the contract's physical ranges and rounds to the payload's precision.
    fn finish(&self, (temp, hum): (f64, f64)) -> (f64, f64) {
        (
            round2(temp.clamp(TEMP_RANGE.0, TEMP_RANGE.1)),
            round2(hum.clamp(HUM_RANGE.0, HUM_RANGE.1)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::payload::AlertLevel;
    use crate::domain::Thresholds;

    const INTERVAL: Duration = Duration::from_millis(200);

    fn zone(s: &str) -> Zone {
        Zone::new(s).unwrap()
    }

    fn sensor(i: u32) -> SensorId {
        SensorId::new(&format!("s{}", i + 1)).unwrap()
    }

    fn model(
        seed: u64,
        z: &str,
        index: u32,
        faults: &[Fault],
        scenarios: &[Scenario],
    ) -> SensorModel {
        let t = Thresholds::default();
        let z = zone(z);
        let s = sensor(index);
        SensorModel::new(&SensorSetup {
            seed,
            zone: &z,
            sensor: &s,
            index,
            bands: t.for_zone(&z),
            interval: INTERVAL,
            faults,
            scenarios,
        })
    }

    fn at(seq: u64) -> Duration {
        INTERVAL * seq as u32
    }

    fn values(m: &mut SensorModel, n: u64) -> Vec<Sample> {
        (0..n).map(|seq| m.sample(seq, at(seq), 43_200.0)).collect()
    }

    fn temp(s: Sample) -> f64 {
        match s {
            Sample::Value { temp, .. } => temp,
            Sample::Dropped => panic!("dropped"),
        }
    }

    fn level(z: &str, s: Sample) -> AlertLevel {
        match s {
            Sample::Value { temp, hum } => Thresholds::default().level(&zone(z), temp, hum),
            Sample::Dropped => panic!("dropped"),
        }
    }

    #[test]
    fn same_seed_same_values_other_seed_other_values() {
        let a = values(&mut model(42, "nord", 0, &[], &[]), 50);
        let b = values(&mut model(42, "nord", 0, &[], &[]), 50);
        let c = values(&mut model(43, "nord", 0, &[], &[]), 50);
        let d = values(&mut model(42, "nord", 1, &[], &[]), 50);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        // Values are a function of (seq, time), not of how many were drawn before.
        let mut m = model(42, "nord", 0, &[], &[]);
        assert_eq!(m.sample(17, at(17), 43_200.0), a[17]);
    }

    #[test]
    fn noise_is_bell_shaped_and_bounded() {
        let xs: Vec<f64> = (0..20_000u64).map(|i| bell(mix64(i))).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        assert!(xs.iter().all(|x| x.abs() <= 3.0));
        // More values near 0 than near the tails.
        let near = xs.iter().filter(|x| x.abs() < 1.0).count();
        assert!(near as f64 / xs.len() as f64 > 0.6, "{near}");
    }

    #[test]
    fn zones_have_their_climate_and_natural_readings_stay_normal() {
        let mean = |z: &str| {
            let mut m = model(7, z, 0, &[], &[]);
            let v = values(&mut m, 200);
            v.iter().map(|s| temp(*s)).sum::<f64>() / v.len() as f64
        };
        assert!(mean("nord") < mean("est") && mean("est") < mean("sud"));
        // Unknown zones get a stable climate from their name.
        assert_eq!(climate(&zone("quai-2")), climate(&zone("quai-2")));
        assert_ne!(climate(&zone("quai-2")), climate(&zone("quai-3")));
        // Every hour of the day, over two days, many sensors: always normal.
        for z in ["nord", "sud", "est", "quai-2", "zz"] {
            for index in 0..20 {
                let mut m = model(u64::from(index) * 31, z, index, &[], &[]);
                for hour in 0..48u64 {
                    let t = Duration::from_secs(hour * 3600);
                    let s = m.sample(hour, t, (hour % 24) as f64 * 3600.0);
                    assert_eq!(
                        level(z, s),
                        AlertLevel::Normal,
                        "{z} s{index} hour {hour}: {s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn daily_cycle_warmest_in_the_afternoon() {
        let m = model(1, "est", 0, &[], &[]);
        let (afternoon, hum_afternoon) = m.natural(0, Duration::ZERO, 15.0 * 3600.0);
        let (night, hum_night) = m.natural(0, Duration::ZERO, 3.0 * 3600.0);
        assert!(afternoon > night + 2.0, "{afternoon} vs {night}");
        assert!(hum_afternoon < hum_night);
    }

    #[test]
    fn drift_is_slow() {
        let m = model(9, "nord", 0, &[], &[]);
        // Same noise (same seq), one minute apart: the drift moved by little.
        let (a, _) = m.natural(5, Duration::ZERO, 0.0);
        let (b, _) = m.natural(5, Duration::from_secs(60), 0.0);
        assert!((a - b).abs() < 0.05, "{a} {b}");
        // Over hours it moves the value (a sensor's calibration wanders).
        let spread = (0..12)
            .map(|h| m.natural(5, Duration::from_secs(h * 3600), 0.0).0)
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        assert!(spread.1 - spread.0 > 0.1, "{spread:?}");
    }

    #[test]
    fn values_are_clamped_to_physical_ranges() {
        // A spike far above the range: a band whose critical_high + 5 exceeds 100 °C.
        let mut t = Thresholds::default();
        t.default.temp = Band {
            critical_low: 80.0,
            warning_low: 85.0,
            warning_high: 95.0,
            critical_high: 98.0,
            hysteresis: 0.5,
        };
        let z = zone("nord");
        let s = sensor(0);
        let faults = [
            "spike:nord@0s+10s".parse::<Fault>().unwrap(),
            "drift:nord@0s".parse().unwrap(),
        ];
        let mut m = SensorModel::new(&SensorSetup {
            seed: 1,
            zone: &z,
            sensor: &s,
            index: 0,
            bands: t.for_zone(&z),
            interval: INTERVAL,
            faults: &faults,
            scenarios: &[],
        });
        for seq in 0..100 {
            match m.sample(seq, at(seq), 0.0) {
                Sample::Value { temp, hum } => {
                    assert!((TEMP_RANGE.0..=TEMP_RANGE.1).contains(&temp), "{temp}");
                    assert!((HUM_RANGE.0..=HUM_RANGE.1).contains(&hum), "{hum}");
                    assert_eq!(temp, round2(temp));
                }
                Sample::Dropped => unreachable!(),
            }
        }
    }

    #[test]
    fn spike_is_one_reading_or_a_window() {
        let glitch: Fault = "spike:nord/s1@1s".parse().unwrap();
        let mut m = model(3, "nord", 0, &[glitch], &[]);
        let v = values(&mut m, 12);
        let critical: Vec<usize> = (0..12)
            .filter(|&i| level("nord", v[i]) == AlertLevel::Critical)
            .collect();
        assert_eq!(critical, vec![5], "{v:?}");
        assert_eq!(temp(v[5]), 35.0);
        // Another sensor of the zone is untouched.
        let mut other = model(3, "nord", 1, &[glitch_for("s1")], &[]);
        assert!(values(&mut other, 12)
            .into_iter()
            .all(|s| level("nord", s) == AlertLevel::Normal));

        let window: Fault = "spike:nord@1s+600ms".parse().unwrap();
        let mut m = model(3, "nord", 0, &[window], &[]);
        let v = values(&mut m, 12);
        let critical: Vec<usize> = (0..12)
            .filter(|&i| level("nord", v[i]) == AlertLevel::Critical)
            .collect();
        assert_eq!(critical, vec![5, 6, 7]);
    }

    fn glitch_for(s: &str) -> Fault {
        format!("spike:nord/{s}@1s").parse().unwrap()
    }

    #[test]
    fn stuck_repeats_the_last_value() {
        let f: Fault = "stuck:sud/s1@1s+1s".parse().unwrap();
        let mut m = model(5, "sud", 0, &[f], &[]);
        let v = values(&mut m, 15);
        // Readings 5..10 (1 s to 2 s) repeat reading 4; reading 10 moves again.
        for (i, s) in v.iter().enumerate().take(10).skip(5) {
            assert_eq!(*s, v[4], "reading {i}");
        }
        assert_ne!(v[10], v[4]);
        assert_ne!(v[3], v[4]);
        // Stuck from the very first reading: frozen on the first value.
        let f: Fault = "stuck:sud@0s".parse().unwrap();
        let mut m = model(5, "sud", 0, &[f], &[]);
        let v = values(&mut m, 5);
        assert!(v.iter().all(|s| *s == v[0]));
    }

    #[test]
    fn dropout_publishes_nothing_in_its_window() {
        let f: Fault = "dropout:est/s2@400ms+400ms".parse().unwrap();
        let mut m = model(5, "est", 1, &[f], &[]);
        let v = values(&mut m, 8);
        let dropped: Vec<usize> = (0..8).filter(|&i| v[i] == Sample::Dropped).collect();
        assert_eq!(dropped, vec![2, 3]);
        // Open-ended: until the end.
        let f: Fault = "dropout:est@1s".parse().unwrap();
        let mut m = model(5, "est", 1, &[f], &[]);
        let v = values(&mut m, 8);
        assert!(v[..5].iter().all(|s| *s != Sample::Dropped));
        assert!(v[5..].iter().all(|s| *s == Sample::Dropped));
    }

    #[test]
    fn drift_fault_grows_until_critical() {
        let f: Fault = "drift:nord/s1@0s".parse().unwrap();
        let mut plain = model(11, "nord", 0, &[], &[]);
        let mut drifting = model(11, "nord", 0, &[f], &[]);
        let a = values(&mut plain, 60);
        let b = values(&mut drifting, 60);
        for seq in [0usize, 10, 40] {
            let offset = temp(b[seq]) - temp(a[seq]);
            assert!(
                (offset - DRIFT_FAULT_STEP * seq as f64).abs() < 0.011,
                "seq {seq}: {offset}"
            );
        }
        assert_eq!(level("nord", b[0]), AlertLevel::Normal);
        assert_eq!(level("nord", b[59]), AlertLevel::Critical);
        // Levels only get worse along the way (it is a growing offset).
        let levels: Vec<AlertLevel> = b.iter().map(|s| level("nord", *s)).collect();
        let first_warning = levels
            .iter()
            .position(|l| *l != AlertLevel::Normal)
            .unwrap();
        assert!(first_warning > 10, "{levels:?}");
    }

    #[test]
    fn heatwave_hits_warning_at_start_and_critical_at_known_time() {
        let hw: Scenario = "heatwave:sud@1s+2s".parse().unwrap();
        for index in 0..5 {
            // The sensor's slot inside the interval shifts its schedule (0..200 ms).
            let offset = Duration::from_millis(40 * u64::from(index));
            let mut m = model(index.into(), "sud", index, &[], std::slice::from_ref(&hw));
            let levels: Vec<AlertLevel> = (0..20u64)
                .map(|seq| level("sud", m.sample(seq, at(seq) + offset, 50_000.0)))
                .collect();
            let expected: Vec<AlertLevel> = (0..20u64)
                .map(|seq| {
                    let t = at(seq) + offset;
                    if t < Duration::from_secs(1) || t >= Duration::from_secs(3) {
                        AlertLevel::Normal
                    } else if t < Duration::from_secs(1) + INTERVAL * HEATWAVE_RAMP_INTERVALS {
                        AlertLevel::Warning
                    } else {
                        AlertLevel::Critical
                    }
                })
                .collect();
            assert_eq!(levels, expected, "sensor {index}");
        }
        // Another zone is not affected.
        let mut m = model(1, "nord", 0, &[], &[hw]);
        assert!(values(&mut m, 20)
            .into_iter()
            .all(|s| level("nord", s) == AlertLevel::Normal));
    }

    #[test]
    fn heatwave_climbs() {
        let hw: Scenario = "heatwave:est@0s".parse().unwrap();
        let mut m = model(2, "est", 0, &[], &[hw]);
        let v: Vec<f64> = values(&mut m, 12).into_iter().map(temp).collect();
        assert!(v[0] > 25.0 && v[0] < 26.0, "{v:?}");
        assert!(v[3] >= 30.0, "{v:?}");
        assert!(v[11] > v[3] && v[11] <= 31.7, "{v:?}");
    }

    #[test]
    fn fault_syntax() {
        let f: Fault = "spike:nord/s1@30s+10s".parse().unwrap();
        assert_eq!(f.kind, FaultKind::Spike);
        assert_eq!(f.zone.as_str(), "nord");
        assert_eq!(f.sensor.as_ref().unwrap().as_str(), "s1");
        assert_eq!(f.window.start, Duration::from_secs(30));
        assert_eq!(f.window.duration, Some(Duration::from_secs(10)));
        assert_eq!(f.to_string(), "spike:nord/s1@30s+10s");
        let f: Fault = "dropout:sud@1m".parse().unwrap();
        assert_eq!((f.sensor, f.window.duration), (None, None));
        for kind in FaultKind::ALL {
            let s = format!("{}:est@500ms", kind.as_str());
            assert_eq!(s.parse::<Fault>().unwrap().kind, kind);
        }
        let bad = [
            ("spike:nord", "no @START"),
            ("nord@1s", "no KIND"),
            ("melt:nord@1s", "unknown fault kind \"melt\""),
            ("spike:Nord@1s", "invalid zone name"),
            ("spike:nord/S 1@1s", "invalid sensor name"),
            ("spike:nord@soon", "START \"soon\""),
            ("spike:nord@1s+0s", "greater than zero"),
            ("spike:nord@1s+x", "DURATION \"x\""),
        ];
        for (input, needle) in bad {
            let e = input.parse::<Fault>().unwrap_err();
            assert!(e.contains(needle), "{input}: {e}");
            assert!(!e.contains('\n'), "{input}: {e}");
        }
        assert!("melt:nord@1s"
            .parse::<Fault>()
            .unwrap_err()
            .contains("spike, stuck, dropout or drift"));
    }

    #[test]
    fn scenario_syntax() {
        let s: Scenario = "heatwave:sud@2m".parse().unwrap();
        assert_eq!(s.zone().as_str(), "sud");
        assert_eq!(s.to_string(), "heatwave:sud@2m");
        let s: Scenario = "heatwave:sud@2m+30s".parse().unwrap();
        assert_eq!(s.to_string(), "heatwave:sud@2m+30s");
        for (input, needle) in [
            ("coldsnap:sud@1s", "unknown scenario"),
            ("heatwave:sud", "no @START"),
            ("heatwave@1s", "no NAME"),
            ("heatwave:heartbeat@1s", "reserved"),
        ] {
            let e = input.parse::<Scenario>().unwrap_err();
            assert!(e.contains(needle), "{input}: {e}");
        }
    }
}
