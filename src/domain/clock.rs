//! One sensor's timestamps, strictly increasing at the precision InfluxDB stores
//! them (milliseconds, [`crate::domain::schema::WRITE_PRECISION`]): a point is keyed
//! by its measurement, tags and timestamp, so two readings of one sensor in the same
//! millisecond would be one point, the second overwriting the first.
//!
//! Pure: the caller passes the clock's `now` and decides what to do when the
//! millisecond is taken ([`SensorClock::stamp`]: wait for the next one, as the
//! simulator does) or takes the next free one ([`SensorClock::stamp_ahead`], for
//! probes published one at a time).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The last millisecond one sensor used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SensorClock {
    /// Milliseconds since the epoch of the last timestamp given; `None` before the
    /// first.
    last_ms: Option<i64>,
}

impl SensorClock {
    /// `now`, truncated to the millisecond, if that millisecond is after the last one
    /// given (it becomes the last); else how long until the next millisecond begins.
    pub fn stamp(&mut self, now: DateTime<Utc>) -> Result<DateTime<Utc>, Duration> {
        let ms = now.timestamp_millis();
        match self.last_ms {
            Some(last) if ms <= last => {
                let into_ms = now.timestamp_subsec_nanos() % 1_000_000;
                // A clock stepped back: wait until it passes `last` again.
                let behind = u64::try_from(last - ms).unwrap_or(0) * 1_000_000;
                Err(Duration::from_nanos(
                    behind + 1_000_000 - u64::from(into_ms),
                ))
            }
            _ => {
                self.last_ms = Some(ms);
                Ok(at_ms(ms))
            }
        }
    }

    /// `now` truncated to the millisecond, or the millisecond after the last one
    /// given when that is later (ahead of the clock by as many milliseconds as it
    /// had to skip).
    pub fn stamp_ahead(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let ms = match self.last_ms {
            Some(last) => now.timestamp_millis().max(last + 1),
            None => now.timestamp_millis(),
        };
        self.last_ms = Some(ms);
        at_ms(ms)
    }
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_us(us: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(us).unwrap()
    }

    #[test]
    fn a_millisecond_is_given_once() {
        let mut c = SensorClock::default();
        let t = c.stamp(at_us(1_800_000_000_000_250)).unwrap();
        assert_eq!(t.timestamp_millis(), 1_800_000_000_000);
        assert_eq!(t.timestamp_subsec_micros() % 1000, 0, "truncated");
        // 500 µs later: same millisecond, wait the 750 µs left of it.
        assert_eq!(
            c.stamp(at_us(1_800_000_000_000_250 + 500)),
            Err(Duration::from_micros(250))
        );
        let t = c.stamp(at_us(1_800_000_000_001_000)).unwrap();
        assert_eq!(t.timestamp_millis(), 1_800_000_000_001);
        // A clock stepped back 2 ms: wait until it is past the last one again.
        assert_eq!(
            c.stamp(at_us(1_799_999_999_999_000)),
            Err(Duration::from_millis(3))
        );
    }

    #[test]
    fn stamps_ahead_never_repeat() {
        let mut c = SensorClock::default();
        let now = at_us(1_800_000_000_000_000);
        let ms: Vec<i64> = (0..5)
            .map(|_| c.stamp_ahead(now).timestamp_millis())
            .collect();
        assert_eq!(
            ms,
            (0..5).map(|i| 1_800_000_000_000 + i).collect::<Vec<_>>()
        );
        // The clock catches up: its own millisecond again.
        let later = at_us(1_800_000_000_010_400);
        assert_eq!(c.stamp_ahead(later).timestamp_millis(), 1_800_000_000_010);
    }
}
