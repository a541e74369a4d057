//! The clock every task of a benchmark run shares, so that a send time written into a
//! payload by a publisher and the receive time read by a subscriber can be compared.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds derived from a monotonic clock: comparable between the
/// tasks of this process (publishers and subscribers share it) and immune to clock
/// steps during a run, while still meaning "Unix time" in the payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) origin: Instant,
    pub(crate) origin_unix_ns: u64,
}

impl Clock {
    pub(crate) fn start() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Clock {
            origin: Instant::now(),
            origin_unix_ns: unix,
        }
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.origin_unix_ns + self.origin.elapsed().as_nanos() as u64
    }

    pub(crate) fn instant_at(&self, unix_ns: u64) -> tokio::time::Instant {
        let after = Duration::from_nanos(unix_ns.saturating_sub(self.origin_unix_ns));
        tokio::time::Instant::from_std(self.origin + after)
    }
}
