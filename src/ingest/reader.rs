//! How ingest reads payloads (issue 14): the policy (`--strict-payload`,
//! `--future-margin`), the count and rate-limited log of every normalised form, so a
//! teacher sees whose sensor is sloppy, and the dead-letter copy of every refusal
//! ([`super::deadletter`]).
//!
//! Lives in the broker link, next to [`super::classify`]: it never waits on anything
//! (counters, a bounded log limiter, a dead-letter copy handed back to queue).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rumqttc::Publish;
use tracing::info;

use super::deadletter::DeadLetters;
use super::Inbound;
use crate::domain::payload::{Normalized, Read, ReadPolicy, DEFAULT_FUTURE_MARGIN};
use crate::domain::{Alert, Heartbeat, PayloadError, Reading, SensorId, Zone};
use crate::metrics::{Counter, Registry};

/// The payload options of `arng ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct PayloadArgs {
    /// Accept only arng's own payload forms (version 1 as an integer, lowercase
    /// alert_level, RFC 3339 or epoch-seconds timestamp, all present) and dead-letter
    /// the others. By default ingest also accepts the forms other producers write
    /// (docs/data-model.md, "Accepted forms") and counts each one in
    /// arng_ingest_normalized_total.
    #[arg(long, env = "ARNG_STRICT_PAYLOAD", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub strict_payload: bool,

    /// How far ahead of ingest's clock a reading, heartbeat or alert may be dated;
    /// later ones are dead-lettered as future_timestamp (a broken clock would
    /// otherwise pin a zone's last_seen in the future).
    #[arg(long, env = "ARNG_FUTURE_MARGIN", default_value = "5m",
          value_parser = parse_margin, value_name = "DURATION")]
    pub future_margin: Duration,
}

impl Default for PayloadArgs {
    fn default() -> PayloadArgs {
        PayloadArgs {
            strict_payload: false,
            future_margin: DEFAULT_FUTURE_MARGIN,
        }
    }
}

impl PayloadArgs {
    pub fn policy(&self) -> ReadPolicy {
        ReadPolicy {
            strict: self.strict_payload,
            future_margin: self.future_margin,
        }
    }
}

fn parse_margin(s: &str) -> Result<Duration, String> {
    let d = crate::units::parse_duration(s)?;
    if d > Duration::from_secs(366 * 86_400) {
        return Err("at most a year (366d)".into());
    }
    Ok(d)
}

/// At most one log line per key in this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Keys the limiter remembers: one per sensor topic, field and form. Past that, keys
/// older than the interval are forgotten; if none is, the line is not logged (and
/// still counted). Bounds memory whatever the number of topics.
const LOG_KEYS: usize = 4096;

/// Allows one event per key per interval, with a bounded memory.
#[derive(Debug)]
pub struct LogLimiter<K> {
    interval: Duration,
    max_keys: usize,
    /// Key → (last logged, events suppressed since).
    seen: HashMap<K, (Instant, u64)>,
}

impl<K: std::hash::Hash + Eq> LogLimiter<K> {
    pub fn new(interval: Duration, max_keys: usize) -> Self {
        LogLimiter {
            interval,
            max_keys,
            seen: HashMap::new(),
        }
    }

    /// `Some(suppressed since the last line)` when `key` may be logged at `now`.
    pub fn allow(&mut self, key: K, now: Instant) -> Option<u64> {
        if let Some((last, suppressed)) = self.seen.get_mut(&key) {
            if now.duration_since(*last) < self.interval {
                *suppressed += 1;
                return None;
            }
            let n = *suppressed;
            *last = now;
            *suppressed = 0;
            return Some(n);
        }
        if self.seen.len() >= self.max_keys {
            let interval = self.interval;
            self.seen
                .retain(|_, (last, _)| now.duration_since(*last) < interval);
            if self.seen.len() >= self.max_keys {
                return None;
            }
        }
        self.seen.insert(key, (now, 0));
        Some(0)
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Reads payloads for ingest's MQTT task.
pub struct Reader {
    policy: ReadPolicy,
    registry: Registry,
    /// Counters by (field, how), so the registry's lock is taken once per series.
    counters: HashMap<(&'static str, &'static str), Arc<Counter>>,
    logs: LogLimiter<(String, &'static str, &'static str)>,
    dead_letters: DeadLetters,
}

impl Reader {
    pub fn new(policy: ReadPolicy, registry: &Registry, instance: &str) -> Reader {
        Reader {
            policy,
            registry: registry.clone(),
            counters: HashMap::new(),
            logs: LogLimiter::new(LOG_INTERVAL, LOG_KEYS),
            dead_letters: DeadLetters::new(instance, registry),
        }
    }

    pub fn reading(
        &mut self,
        topic: &str,
        zone: &Zone,
        sensor: &SensorId,
        bytes: &[u8],
    ) -> Result<Reading, PayloadError> {
        let read = Reading::read(zone, sensor, bytes, &self.policy, Utc::now())?;
        Ok(self.note(topic, read))
    }

    pub fn heartbeat(
        &mut self,
        topic: &str,
        zone: &Zone,
        bytes: &[u8],
    ) -> Result<Heartbeat, PayloadError> {
        let read = Heartbeat::read(zone, bytes, &self.policy, Utc::now())?;
        Ok(self.note(topic, read))
    }

    pub fn alert(&mut self, zone: &Zone, bytes: &[u8]) -> Result<Alert, PayloadError> {
        Alert::read(zone, bytes, &self.policy, Utc::now())
    }

    /// The dead-letter copy of a refused message to publish (None for the others, or
    /// over the rate).
    pub fn dead_letter(&mut self, inbound: &Inbound) -> Option<Publish> {
        if let Inbound::Invalid {
            topic,
            payload,
            reason,
            field,
            error,
            ..
        } = inbound
        {
            return self
                .dead_letters
                .copy(topic, payload, reason, field.as_deref(), error);
        }
        None
    }

    /// Counts the fate of a copy [`Reader::dead_letter`] gave: queued, or dropped.
    pub fn dead_letter_queued(&self, queued: bool) {
        if queued {
            self.dead_letters.queued();
        } else {
            self.dead_letters.dropped();
        }
    }

    fn note<T>(&mut self, topic: &str, read: Read<T>) -> T {
        for n in &read.normalized {
            self.count(n);
            let key = (topic.to_owned(), n.field, n.how);
            if let Some(suppressed) = self.logs.allow(key, Instant::now()) {
                info!(
                    topic,
                    field = n.field,
                    how = n.how,
                    given = %n.given,
                    suppressed_since_last = suppressed,
                    "payload field in a non-standard form, normalised (--strict-payload would refuse it)"
                );
            }
        }
        read.value
    }

    fn count(&mut self, n: &Normalized) {
        let registry = &self.registry;
        self.counters
            .entry((n.field, n.how))
            .or_insert_with(|| {
                registry.counter(
                    "arng_ingest_normalized_total",
                    "Payload fields read in a form outside arng's own contract, by field and form (docs/data-model.md).",
                    &[("field", n.field), ("how", n.how)],
                )
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = LogLimiter::new(Duration::from_secs(10), 2);
        assert_eq!(l.allow("a", t0), Some(0));
        assert_eq!(l.allow("a", t0 + s), None);
        assert_eq!(l.allow("a", t0 + 2 * s), None);
        assert_eq!(l.allow("b", t0 + 2 * s), Some(0));
        assert_eq!(
            l.allow("a", t0 + 10 * s),
            Some(2),
            "says what it suppressed"
        );
        // Full, and nobody is old enough to forget: not logged.
        assert_eq!(l.allow("c", t0 + 11 * s), None);
        assert_eq!(l.len(), 2);
        // Later, the old keys make room.
        assert_eq!(l.allow("c", t0 + 30 * s), Some(0));
        assert!(l.len() <= 2);
    }

    #[test]
    fn memory_stays_bounded_at_two_sizes() {
        for max in [10, 1000] {
            let mut l = LogLimiter::new(Duration::from_secs(10), max);
            let t0 = Instant::now();
            for i in 0..(max * 20) {
                l.allow(i, t0 + Duration::from_millis(i as u64));
            }
            assert!(l.len() <= max, "{} keys for a bound of {max}", l.len());
        }
    }

    #[test]
    fn payload_args() {
        let d = PayloadArgs::default();
        assert_eq!(d.policy(), ReadPolicy::default());
        assert_eq!(parse_margin("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_margin("0s"), Ok(Duration::ZERO));
        assert!(parse_margin("soon").unwrap_err().contains("expected"));
        assert!(parse_margin("400d").is_err());
    }
}
