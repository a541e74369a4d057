//! Retry delays: capped exponential backoff with jitter, what every retry loop uses:
//! the simulator's, ingest's and the API's broker reconnections ([`Backoff`]), and
//! ingest's InfluxDB write retries and spool drains ([`jitter`] on delays whose
//! growth depends on the error, e.g. a server's `Retry-After`).
//!
//! The first delay is given, each failed attempt doubles it up to a cap, and a
//! success resets it. Jitter scales each delay by a random factor in [0.5, 1.5), so
//! that many clients cut off by the same outage do not all come back at the same
//! instant; its numbers come from a small xorshift64* generator seeded from the
//! operating system's randomness (through std's `RandomState`), not from the clock.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Capped exponential backoff: `first`, `2 × first`, `4 × first`... up to `cap`,
/// each scaled by a jitter factor in [0.5, 1.5) unless built [`Backoff::exact`].
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    /// The base of the next delay (before jitter).
    next: Duration,
    attempts: u32,
    /// `None`: no jitter.
    rng: Option<Rng>,
}

impl Backoff {
    /// Delays from `first` doubling up to `cap`, with jitter.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff::with_rng(first, cap, Some(Rng::from_os()))
    }

    /// The same delays without jitter, for a client that is alone to retry.
    pub fn exact(first: Duration, cap: Duration) -> Backoff {
        Backoff::with_rng(first, cap, None)
    }

    /// With jitter from a fixed seed: the same seed gives the same delays (tests).
    pub fn seeded(first: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff::with_rng(first, cap, Some(Rng::new(seed)))
    }

    fn with_rng(first: Duration, cap: Duration, rng: Option<Rng>) -> Backoff {
        let first = first.min(cap);
        Backoff {
            first,
            cap,
            next: first,
            attempts: 0,
            rng,
        }
    }

    /// The delay to wait after one more failed attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.cap);
        self.attempts = self.attempts.saturating_add(1);
        match &mut self.rng {
            Some(rng) => base.mul_f64(0.5 + rng.unit()),
            None => base,
        }
    }

    /// After a success: the next delay is `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
        self.attempts = 0;
    }

    /// Failed attempts since the last success (or the start).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// `d` scaled by a random factor in [0.5, 1.5): one jittered delay, for a retry loop
/// that computes its own base delay.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + Rng::from_os().unit())
}

/// xorshift64* (Vigna): a tiny generator of good statistical quality, plenty for
/// spreading retries. Not for secrets.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // The state must never be zero.
        Rng(seed | 1)
    }

    /// Seeded from std's `RandomState`, whose keys come from the operating system.
    fn from_os() -> Rng {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        Rng::new(h.finish())
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::exact(100 * MS, 5000 * MS);
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.attempts(), 8);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), 5000 * MS);
        b.reset();
        assert_eq!((b.attempts(), b.next_delay()), (0, 100 * MS));
        // A first delay above the cap is the cap.
        assert_eq!(Backoff::exact(MS * 9, MS * 3).next_delay(), MS * 3);
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half_and_spreads() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut b = Backoff::seeded(100 * MS, 10_000 * MS, seed);
            let d = b.next_delay();
            assert!(d >= 50 * MS && d < 150 * MS, "{d:?}");
            let d2 = b.next_delay();
            assert!(d2 >= 100 * MS && d2 < 300 * MS, "{d2:?}");
            seen.insert(d.as_millis());
        }
        // 200 clients retrying after the same outage do not come back together.
        assert!(seen.len() > 50, "{} distinct delays", seen.len());
        // The same seed, the same delays.
        let (mut a, mut b) = (
            Backoff::seeded(MS, MS * 100, 7),
            Backoff::seeded(MS, MS * 100, 7),
        );
        assert_eq!(a.next_delay(), b.next_delay());
    }

    #[test]
    fn unseeded_generators_differ() {
        let draws: std::collections::BTreeSet<u64> =
            (0..20).map(|_| Rng::from_os().next_u64()).collect();
        assert!(draws.len() > 15);
        let mut r = Rng::new(0);
        assert!((0..1000).map(|_| r.unit()).all(|u| (0.0..1.0).contains(&u)));
    }
}
