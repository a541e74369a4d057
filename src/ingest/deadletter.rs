//! The dead-letter topic: a copy of every refused message on
//! `entrepot/deadletter/<reason>` (QoS 1, not retained), built by
//! [`crate::domain::deadletter`].
//!
//! Bounded: a token bucket allows [`RATE_PER_S`] copies a second with bursts of
//! [`BURST`], and each copy is at most 2 KiB, so a flood of bad messages costs the
//! broker and the MQTT client a bounded rate whatever its size. The copy is queued on
//! the link's own publishes ([`super::link`]), which never wait: a copy that finds
//! that queue full is dropped, never waited for. Both kinds of drop are counted in
//! `arng_ingest_deadletters_unpublished_total{why}`; the `deadletters` measurement
//! keeps every refusal regardless.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use rumqttc::{Publish, QoS};

use crate::domain::deadletter::DeadLetter;
use crate::domain::Topic;
use crate::metrics::{Counter, Registry};

/// Dead-letter copies published per second, sustained.
pub const RATE_PER_S: f64 = 20.0;
/// Dead-letter copies that may be published at once after a quiet period.
pub const BURST: f64 = 100.0;

/// A token bucket: `capacity` tokens, refilled at `per_s`. Pure: time is an argument.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_s: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub fn new(capacity: f64, per_s: f64) -> TokenBucket {
        TokenBucket {
            capacity,
            per_s,
            tokens: capacity,
            last: None,
        }
    }

    /// Takes a token if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.per_s;
            self.tokens = (self.tokens + refill).min(self.capacity);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Builds ingest's dead-letter copies, at a bounded rate.
pub struct DeadLetters {
    instance: String,
    bucket: TokenBucket,
    published: Arc<Counter>,
    over_rate: Arc<Counter>,
    queue_full: Arc<Counter>,
}

impl DeadLetters {
    pub fn new(instance: &str, registry: &Registry) -> DeadLetters {
        let unpublished = |why| {
            registry.counter(
                "arng_ingest_deadletters_unpublished_total",
                "Refused messages whose copy was not published on entrepot/deadletter/<reason>, by why (rate, queue_full); they are still in the deadletters measurement.",
                &[("why", why)],
            )
        };
        DeadLetters {
            instance: instance.to_owned(),
            bucket: TokenBucket::new(BURST, RATE_PER_S),
            published: registry.counter(
                "arng_ingest_deadletters_published_total",
                "Refused messages published on entrepot/deadletter/<reason>.",
                &[],
            ),
            over_rate: unpublished("rate"),
            queue_full: unpublished("queue_full"),
        }
    }

    /// The copy of one refused message to publish, if the rate allows it.
    pub fn copy(
        &mut self,
        topic: &str,
        payload: &[u8],
        reason: &str,
        field: Option<&str>,
        error: &str,
    ) -> Option<Publish> {
        if !self.bucket.take(Instant::now()) {
            self.over_rate.inc();
            return None;
        }
        let record = DeadLetter {
            reason,
            field,
            error,
            topic,
            payload,
            instance: &self.instance,
            received_at: Utc::now(),
        }
        .to_json();
        let to = Topic::DeadLetter {
            reason: reason.to_owned(),
        }
        .to_string();
        Some(Publish::new(to, QoS::AtLeastOnce, record))
    }

    /// The copy was queued for the broker.
    pub fn queued(&self) {
        self.published.inc();
    }

    /// The copy found the link's queue full and was dropped.
    pub fn dropped(&self) {
        self.queue_full.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_a_steady_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 20.0);
        let burst = (0..500).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 100);
        // One second later, 20 more; over 10 s of a flood, 200 more, never more.
        assert_eq!(
            (0..500)
                .filter(|_| b.take(t0 + Duration::from_secs(1)))
                .count(),
            20
        );
        let mut allowed = 0;
        for ms in (1_000..11_000).step_by(10) {
            allowed += usize::from(b.take(t0 + Duration::from_millis(ms)));
        }
        assert!((199..=201).contains(&allowed), "{allowed}");
        // A long quiet period refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..500).filter(|_| b.take(later)).count(), 100);
    }
}
