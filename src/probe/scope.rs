//! Which zones `arng check-e2e` and `arng latency` are about: where their probes go,
//! whose heartbeats check-e2e's `heartbeats` hop checks and latency measures. Pure:
//! the options ([`ZoneOptions`], the same flags for both commands) and the facts
//! gathered (zones configured, seen with their last heartbeat) in, a [`Scope`] and
//! verdicts out.
//!
//! The rule, documented in docs/supervision.md ("Which zones"):
//! 1. the zones named with `--zone` (asked for: probed even without a heartbeat);
//! 2. else the zones the thresholds in force configure (their per-zone entries);
//! 3. else every zone seen with a heartbeat in the last 24 h (InfluxDB, or the
//!    retained heartbeat on the broker).
//!
//! `--exclude-zone` removes zones at every step. The probes go to the first named
//! zone; otherwise to the first zone of the scope (then any other zone seen, in
//! alphabetical order) whose last heartbeat is younger than the limit: never to a
//! zone without a recent heartbeat, such as a leftover test zone or one whose
//! sensors are gone. Heartbeats are checked for the zones of the scope only.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::parse_zone;
use crate::domain::{Thresholds, Zone};
use crate::report::Cause;
use crate::units::parse_positive_duration;

/// The options that choose the zones, the same for `check-e2e` and `latency` (and
/// the same variables: `ARNG_PROBE_ZONE` is a list for both).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ZoneOptions {
    /// Zones to probe and watch, comma-separated or repeated: the probes go to the
    /// first, and heartbeats are checked (check-e2e) or measured (latency) for exactly
    /// these [default: the zones configured in the thresholds, else every zone with a
    /// heartbeat in 24 h; the probes then go to the first of them with a recent
    /// heartbeat (docs/supervision.md)].
    #[arg(long, env = "ARNG_PROBE_ZONE", value_delimiter = ',', value_parser = parse_zone,
          value_name = "ZONE")]
    pub zone: Vec<Zone>,

    /// Zones to leave out, comma-separated or repeated (e.g. a leftover test zone):
    /// never probed, their heartbeats neither checked nor measured.
    #[arg(long, env = "ARNG_EXCLUDE_ZONES", value_delimiter = ',', value_parser = parse_zone,
          value_name = "ZONE")]
    pub exclude_zone: Vec<Zone>,

    /// Oldest zone heartbeat that counts as recent (a zone without one is not probed
    /// unless named; check-e2e's heartbeat hop fails for it) [default: silence_after_s
    /// of the thresholds in force, 90 s unless changed].
    #[arg(long, env = "ARNG_HEARTBEAT_MAX_AGE", value_parser = parse_positive_duration,
          value_name = "DURATION")]
    pub heartbeat_max_age: Option<Duration>,
}

/// A zone both named and excluded: a usage mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("zone {0} is both in --zone and in --exclude-zone")]
pub struct NamedAndExcluded(pub Zone);

impl ZoneOptions {
    /// Refuses a zone both named and excluded.
    pub fn check(&self) -> Result<(), NamedAndExcluded> {
        match self.zone.iter().find(|z| self.exclude_zone.contains(z)) {
            Some(z) => Err(NamedAndExcluded(z.clone())),
            None => Ok(()),
        }
    }

    /// The heartbeat age limit: `--heartbeat-max-age`, else the thresholds'
    /// `silence_after_s`.
    pub fn max_age(&self, thresholds: &Thresholds) -> Duration {
        self.heartbeat_max_age
            .unwrap_or_else(|| Duration::from_secs(thresholds.silence_after_s))
    }

    /// The scope of a run with these options, from what it found: the thresholds in
    /// force (their zones), and each zone's last heartbeat in InfluxDB (`stored`) and
    /// on the broker (its retained one), whichever is newer.
    pub fn scope(
        &self,
        thresholds: &Thresholds,
        stored: &LastHeartbeats,
        broker: &LastHeartbeats,
        now: DateTime<Utc>,
    ) -> Scope {
        let mut heartbeats = stored.clone();
        for (zone, t) in broker {
            let newest = heartbeats.entry(zone.clone()).or_insert(*t);
            *newest = (*newest).max(*t);
        }
        choose(&Facts {
            named: &self.zone,
            excluded: &self.exclude_zone,
            configured: thresholds.zones.keys().cloned().collect(),
            heartbeats: &heartbeats,
            now,
            max_age: self.max_age(thresholds),
        })
    }
}

/// Each zone's newest heartbeat, whichever source saw it.
pub type LastHeartbeats = BTreeMap<Zone, DateTime<Utc>>;

/// Where the zones of a scope come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// `--zone`.
    Named,
    /// The per-zone entries of the thresholds in force.
    Configured,
    /// Zones seen with a heartbeat in 24 h.
    Seen,
}

/// What the check knows when it chooses.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// `--zone`, in the order given.
    pub named: &'a [Zone],
    /// `--exclude-zone`.
    pub excluded: &'a [Zone],
    /// Zones with an entry of their own in the thresholds in force.
    pub configured: Vec<Zone>,
    /// Each zone's last heartbeat (newest of InfluxDB and the broker's retained one).
    pub heartbeats: &'a LastHeartbeats,
    pub now: DateTime<Utc>,
    /// A heartbeat older than this is stale.
    pub max_age: Duration,
}

/// The zones a run is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub basis: Basis,
    /// Whose heartbeats check-e2e's `heartbeats` hop checks and latency measures, in
    /// order.
    pub zones: Vec<Zone>,
    /// Where the probes go, or why nowhere.
    pub probe: Result<Zone, String>,
    /// How the probe zone was chosen, in words (empty without a probe zone).
    pub why: String,
}

impl Scope {
    /// The probe zone and why, and the zones whose heartbeats were `watched`
    /// ("checked", "measured"), in one sentence.
    pub fn choice(&self, watched: &str) -> String {
        let probe = match &self.probe {
            Ok(z) => format!("probes went to zone {z}: {}", self.why),
            Err(why) => why.clone(),
        };
        let zones: Vec<&str> = self.zones.iter().map(Zone::as_str).collect();
        let zones = if zones.is_empty() {
            "none".to_owned()
        } else {
            zones.join(", ")
        };
        format!("{probe}; heartbeats {watched}: {zones} ({})", self.basis)
    }
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Basis::Named => "named with --zone",
            Basis::Configured => "configured in the thresholds",
            Basis::Seen => "seen with a heartbeat in 24 h",
        })
    }
}

impl Facts<'_> {
    fn fresh(&self, zone: &Zone) -> bool {
        self.heartbeats
            .get(zone)
            .is_some_and(|t| age(self.now, *t) <= self.max_age.as_secs_f64())
    }

    fn kept(&self, zones: impl IntoIterator<Item = Zone>) -> Vec<Zone> {
        zones
            .into_iter()
            .filter(|z| !self.excluded.contains(z))
            .collect()
    }
}

/// Seconds from `t` to `now` (negative for a clock ahead of ours).
fn age(now: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
    (now - t).num_milliseconds() as f64 / 1000.0
}

/// Applies the rule of this module's header.
pub fn choose(f: &Facts) -> Scope {
    let limit = humantime::format_duration(f.max_age);
    if let Some(first) = f.named.first() {
        return Scope {
            basis: Basis::Named,
            zones: f.kept(f.named.iter().cloned()),
            probe: Ok(first.clone()),
            why: "named with --zone".into(),
        };
    }
    let configured = f.kept(f.configured.iter().cloned());
    let seen = f.kept(f.heartbeats.keys().cloned());
    let (basis, zones) = if configured.is_empty() {
        (Basis::Seen, seen.clone())
    } else {
        (Basis::Configured, configured)
    };
    let in_scope = zones.iter().find(|z| f.fresh(z));
    let elsewhere = || seen.iter().find(|z| f.fresh(z));
    let (probe, why) = match (in_scope, basis) {
        (Some(z), Basis::Configured) => (
            Ok(z.clone()),
            format!(
                "the first zone configured in the thresholds with a heartbeat younger than {limit}"
            ),
        ),
        (Some(z), _) => (
            Ok(z.clone()),
            format!("the first zone with a heartbeat younger than {limit}"),
        ),
        (None, Basis::Configured) => match elsewhere() {
            Some(z) => (
                Ok(z.clone()),
                format!(
                    "no configured zone has a heartbeat younger than {limit}; \
                     the first other zone with one"
                ),
            ),
            None => (Err(no_zone(&limit)), String::new()),
        },
        (None, _) => (Err(no_zone(&limit)), String::new()),
    };
    Scope {
        basis,
        zones,
        probe,
        why,
    }
}

fn no_zone(limit: &humantime::FormattedDuration) -> String {
    format!(
        "no zone to probe: none has a heartbeat younger than {limit} \
         (name one with --zone to probe it anyway)"
    )
}

/// The verdict of the `heartbeats` hop on the zones of `scope`: each must have a
/// heartbeat in InfluxDB younger than `max_age`. `broker` (the retained
/// heartbeats) only helps to say why one is missing.
pub fn heartbeat_verdict(
    scope: &Scope,
    stored: &LastHeartbeats,
    broker: &LastHeartbeats,
    excluded: &[Zone],
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<String, (Cause, String)> {
    let limit_s = max_age.as_secs_f64();
    let mut fresh = Vec::new();
    let mut stale = Vec::new();
    for z in &scope.zones {
        match stored.get(z).map(|t| age(now, *t)) {
            Some(a) if a <= limit_s => fresh.push(format!("{z} {a:.1} s")),
            Some(a) => stale.push(format!("{z} {a:.1} s old")),
            None => {
                let on_broker = broker
                    .get(z)
                    .map(|t| age(now, *t))
                    .map_or_else(String::new, |a| {
                        format!(
                            " (the broker's retained one is {a:.1} s old: is ingest storing them?)"
                        )
                    });
                stale.push(format!("{z}: none in InfluxDB in 24 h{on_broker}"));
            }
        }
    }
    let mut notes = format!("limit {limit_s} s");
    if !excluded.is_empty() {
        let names: Vec<&str> = excluded.iter().map(Zone::as_str).collect();
        notes.push_str(&format!("; excluded: {}", names.join(", ")));
    }
    if scope.zones.is_empty() {
        return Err((
            Cause::NotSeen,
            format!("no zone has a heartbeat in the last 24 h ({notes})"),
        ));
    }
    if stale.is_empty() {
        Ok(format!("{} ({notes})", fresh.join(", ")))
    } else {
        Err((
            Cause::NotSeen,
            format!(
                "stale: {} ({notes}; --exclude-zone leaves a zone out)",
                stale.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(s: &str) -> Zone {
        Zone::new(s).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    /// Heartbeats `secs` seconds old.
    fn beats(list: &[(&str, i64)]) -> LastHeartbeats {
        list.iter()
            .map(|(name, secs)| (z(name), now() - chrono::Duration::seconds(*secs)))
            .collect()
    }

    fn facts<'a>(
        named: &'a [Zone],
        excluded: &'a [Zone],
        configured: &[&str],
        heartbeats: &'a LastHeartbeats,
    ) -> Facts<'a> {
        Facts {
            named,
            excluded,
            configured: configured.iter().map(|c| z(c)).collect(),
            heartbeats,
            now: now(),
            max_age: Duration::from_secs(90),
        }
    }

    #[test]
    fn a_leftover_zone_is_never_probed_on_its_own() {
        // "a-test" sorts first but fell silent an hour ago.
        let hb = beats(&[("a-test", 3600), ("nord", 5), ("sud", 10)]);
        let s = choose(&facts(&[], &[], &[], &hb));
        assert_eq!(s.basis, Basis::Seen);
        assert_eq!(s.probe, Ok(z("nord")));
        assert!(s.why.contains("younger than 1m 30s"), "{}", s.why);
        // Its stale heartbeat still fails the hop until it is excluded...
        let v = heartbeat_verdict(&s, &hb, &hb, &[], now(), Duration::from_secs(90));
        let (cause, why) = v.unwrap_err();
        assert_eq!(cause, Cause::NotSeen);
        assert!(
            why.contains("a-test 3600.0 s old") && why.contains("--exclude-zone"),
            "{why}"
        );
        // ...and excluded, it is neither probed nor checked.
        let excluded = [z("a-test")];
        let s = choose(&facts(&[], &excluded, &[], &hb));
        assert_eq!(s.zones, [z("nord"), z("sud")]);
        let ok = heartbeat_verdict(&s, &hb, &hb, &excluded, now(), Duration::from_secs(90));
        let ok = ok.unwrap();
        assert!(
            ok.starts_with("nord 5.0 s, sud 10.0 s") && ok.contains("excluded: a-test"),
            "{ok}"
        );
    }

    #[test]
    fn configured_zones_come_first_and_bound_the_heartbeat_check() {
        let hb = beats(&[("a-test", 3600), ("est", 4), ("sud", 20)]);
        let s = choose(&facts(&[], &[], &["sud", "est"], &hb));
        assert_eq!(s.basis, Basis::Configured);
        assert_eq!(s.probe, Ok(z("sud")), "configured order, not alphabetical");
        // The stale leftover is not configured, hence not checked.
        assert!(heartbeat_verdict(&s, &hb, &hb, &[], now(), Duration::from_secs(90)).is_ok());
        // No configured zone alive: another live zone, said so.
        let hb = beats(&[("est", 4), ("sud", 200)]);
        let s = choose(&facts(&[], &[], &["sud"], &hb));
        assert_eq!(s.probe, Ok(z("est")));
        assert!(s.why.starts_with("no configured zone"), "{}", s.why);
    }

    #[test]
    fn named_zones_are_probed_even_without_a_heartbeat() {
        let hb = beats(&[("nord", 5)]);
        let named = [z("quai"), z("nord")];
        let s = choose(&facts(&named, &[], &["sud"], &hb));
        assert_eq!((s.basis, s.probe.clone()), (Basis::Named, Ok(z("quai"))));
        assert_eq!(s.zones, named);
        let (_, why) = heartbeat_verdict(
            &s,
            &hb,
            &LastHeartbeats::new(),
            &[],
            now(),
            Duration::from_secs(90),
        )
        .unwrap_err();
        assert!(why.contains("quai: none in InfluxDB in 24 h"), "{why}");
        assert!(!why.contains("nord"), "{why}");
    }

    #[test]
    fn no_recent_heartbeat_means_no_probe() {
        let hb = beats(&[("nord", 600)]);
        let s = choose(&facts(&[], &[], &[], &hb));
        assert!(s.probe.as_ref().unwrap_err().contains("--zone"), "{s:?}");
        let empty = LastHeartbeats::new();
        let s = choose(&facts(&[], &[], &[], &empty));
        assert!(s.zones.is_empty() && s.probe.is_err());
        let (cause, why) =
            heartbeat_verdict(&s, &empty, &empty, &[], now(), Duration::from_secs(90)).unwrap_err();
        assert_eq!(cause, Cause::NotSeen);
        assert!(why.contains("no zone has a heartbeat"), "{why}");
        // In InfluxDB it is missing, on the broker it is there: ingest is the suspect.
        let broker = beats(&[("nord", 3)]);
        let s = choose(&facts(&[], &[], &[], &broker));
        let (_, why) = heartbeat_verdict(&s, &empty, &broker, &[], now(), Duration::from_secs(90))
            .unwrap_err();
        assert!(why.contains("retained one is 3.0 s old"), "{why}");
    }

    #[test]
    fn zone_options_refuse_a_zone_both_named_and_excluded() {
        let opts = ZoneOptions {
            zone: vec![z("nord"), z("sud")],
            exclude_zone: vec![z("sud")],
            heartbeat_max_age: None,
        };
        assert_eq!(opts.check(), Err(NamedAndExcluded(z("sud"))));
        assert_eq!(
            opts.check().unwrap_err().to_string(),
            "zone sud is both in --zone and in --exclude-zone"
        );
        let opts = ZoneOptions {
            exclude_zone: vec![z("est")],
            ..opts
        };
        assert_eq!(opts.check(), Ok(()));
    }

    #[test]
    fn zone_options_take_the_newest_heartbeat_of_either_source() {
        let thresholds = Thresholds {
            silence_after_s: 60,
            ..Thresholds::default()
        };
        let mut opts = ZoneOptions::default();
        assert_eq!(opts.max_age(&thresholds), Duration::from_secs(60));
        // nord: stale in InfluxDB but fresh on the broker (ingest lags); sud: stale
        // everywhere. The probes go to nord.
        let stored = beats(&[("nord", 600), ("sud", 600)]);
        let broker = beats(&[("nord", 5), ("sud", 300)]);
        let s = opts.scope(&thresholds, &stored, &broker, now());
        assert_eq!((s.basis, s.probe.clone()), (Basis::Seen, Ok(z("nord"))));
        assert!(s.why.contains("younger than 1m"), "{}", s.why);
        // A wider limit makes sud recent too; excluding nord sends the probes there.
        opts.heartbeat_max_age = Some(Duration::from_secs(400));
        opts.exclude_zone = vec![z("nord")];
        let s = opts.scope(&thresholds, &stored, &broker, now());
        assert_eq!(
            (s.zones.clone(), s.probe.clone()),
            (vec![z("sud")], Ok(z("sud")))
        );
        // Zones of the thresholds come before the zones seen.
        let configured = Thresholds {
            zones: [(z("est"), thresholds.default)].into(),
            ..thresholds
        };
        let s = ZoneOptions::default().scope(&configured, &stored, &beats(&[("est", 1)]), now());
        assert_eq!((s.basis, s.probe), (Basis::Configured, Ok(z("est"))));
    }

    #[test]
    fn the_choice_names_the_zone_why_and_the_zones_watched() {
        let s = Scope {
            basis: Basis::Named,
            zones: vec![z("sud"), z("nord")],
            probe: Ok(z("sud")),
            why: "named with --zone".into(),
        };
        assert_eq!(
            s.choice("measured"),
            format!(
                "probes went to zone sud: named with --zone; heartbeats measured: sud, nord ({})",
                Basis::Named
            )
        );
        let none = Scope {
            basis: Basis::Seen,
            zones: vec![],
            probe: Err("no zone has a recent heartbeat: pass --zone".into()),
            why: String::new(),
        };
        assert_eq!(
            none.choice("checked"),
            format!(
                "no zone has a recent heartbeat: pass --zone; heartbeats checked: none ({})",
                Basis::Seen
            )
        );
    }

    #[test]
    fn zone_lists_are_comma_separated_or_repeated() {
        let opts: ZoneOptions = crate::cmd::parse_args(&[
            "--zone",
            "nord,sud",
            "--exclude-zone",
            "a",
            "--exclude-zone",
            "b",
        ])
        .unwrap();
        assert_eq!(opts.zone, [z("nord"), z("sud")]);
        assert_eq!(opts.exclude_zone, [z("a"), z("b")]);
        for bad in [
            &["--exclude-zone", "A"][..],
            &["--zone", "nord,"],
            &["--heartbeat-max-age", "0s"],
        ] {
            assert!(
                crate::cmd::parse_args::<ZoneOptions>(bad).is_err(),
                "{bad:?}"
            );
        }
    }
}
