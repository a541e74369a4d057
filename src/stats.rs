//! Statistics for load and delivery measurements (`arng qos-bench`): a latency
//! histogram with percentiles (over the `hdrhistogram` crate), the intended-send-time schedule that corrects for
//! coordinated omission, and loss/duplicate/reordering accounting from per-publisher
//! sequence numbers.
//!
//! Pure: plain containers with methods, no clock and no I/O, so every number a report
//! shows can be checked here with made-up samples. Times are nanoseconds (`u64`);
//! summaries convert to milliseconds for people and JSON.

use std::collections::BTreeMap;

use serde::Serialize;

/// A latency histogram of non-negative integer samples (nanoseconds here): the
/// counts live in an [HdrHistogram](hdrhistogram) at 2 significant digits (a bucket is
/// never wider than 1/128 of its values: < 0.8 % error on any percentile; values
/// below 256 exact), growing with the largest sample, never with the number of
/// samples. The exact minimum, maximum and sum are kept beside it, so the extremes
/// and the mean are not rounded.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: hdrhistogram::Histogram<u64>,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// HdrHistogram's precision: 2 significant digits is 256 sub-buckets per power of
/// two, half of them new at each: 1/128 relative width.
const SIGNIFICANT_DIGITS: u8 = 2;

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            // Auto-resizing, up to i64::MAX / 2 (146 years in nanoseconds).
            counts: hdrhistogram::Histogram::new(SIGNIFICANT_DIGITS)
                .expect("2 significant digits is a valid precision"),
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        if self.counts.record(v).is_err() {
            // Beyond what the histogram can grow to: counted at its highest value;
            // the exact maximum below still shows it.
            self.counts.saturating_record(v);
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every sample of `other` (e.g. one histogram per subscriber into a total).
    pub fn merge(&mut self, other: &Histogram) {
        // Cannot fail: an auto-resizing histogram grows to hold the other's range.
        let _ = self.counts.add(&other.counts);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn len(&self) -> u64 {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn min(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.min)
    }

    pub fn max(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (!self.is_empty()).then(|| self.sum as f64 / self.len() as f64)
    }

    /// The value at quantile `q` (0.0 ..= 1.0) by the nearest-rank rule: the
    /// smallest sample such that at least `q` of all samples are ≤ it (the top of its
    /// bucket, so a percentile is never under-reported). `q = 1` is the exact
    /// maximum, `q = 0` the exact minimum. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let v = if q == 0.0 {
            self.min
        } else if q == 1.0 {
            self.max
        } else {
            self.counts.value_at_quantile(q)
        };
        // Within [min, max]: the bucket's bound may lie beyond the real samples.
        Some(v.clamp(self.min, self.max))
    }
}

/// Nanoseconds to milliseconds.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// What a report shows of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// p99.9
    pub p999: f64,
    pub max: f64,
}

impl LatencySummary {
    /// `None` for an empty histogram: no sample, no percentile (not zero).
    pub fn of(h: &Histogram) -> Option<LatencySummary> {
        let q = |p: f64| h.quantile(p).map(ms);
        Some(LatencySummary {
            samples: h.len(),
            min: ms(h.min()?),
            mean: h.mean()? / 1e6,
            p50: q(0.50)?,
            p90: q(0.90)?,
            p99: q(0.99)?,
            p999: q(0.999)?,
            max: ms(h.max()?),
        })
    }
}

/// A constant-rate publishing schedule, used to correct for coordinated omission.
///
/// A publisher that falls behind (its client buffer is full, the broker is slow to
/// acknowledge) sends late, and measuring latency from the *actual* send time hides
/// exactly the stalls one wants to see: the messages that should have gone out
/// during the stall are never timed at all. Measuring from the *intended* send time,
/// the time the schedule said the message should leave, charges the stall to every
/// message it delayed, as a user waiting on that schedule would experience it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSchedule {
    interval_ns: f64,
    offset_ns: f64,
}

impl RateSchedule {
    /// `rate` messages per second for one sender (must be > 0), the first one
    /// `phase` (0.0 ..1.0) of an interval after the start, so that several senders
    /// sharing a total rate do not all fire at the same instant.
    pub fn new(rate: f64, phase: f64) -> RateSchedule {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        let interval_ns = 1e9 / rate;
        RateSchedule {
            interval_ns,
            offset_ns: phase.clamp(0.0, 1.0) * interval_ns,
        }
    }

    /// When message `seq` (0, 1, ...) should be sent, in nanoseconds after the start.
    pub fn intended_offset_ns(&self, seq: u64) -> u64 {
        (self.offset_ns + seq as f64 * self.interval_ns).round() as u64
    }
}

/// Latency corrected for coordinated omission: from the intended send time, or from
/// the actual one when there is no schedule (or the sender was early, which a sender
/// that waits for its slot never is).
pub fn corrected_latency_ns(received_ns: u64, sent_ns: u64, intended_ns: Option<u64>) -> u64 {
    let from = intended_ns.map_or(sent_ns, |i| i.min(sent_ns));
    received_ns.saturating_sub(from)
}

/// Messages per second; 0 for an empty or zero-length window.
pub fn throughput(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 && seconds.is_finite() {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// What one received message was, relative to what came before from its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First time this sequence number is seen, and none higher was seen before.
    InOrder,
    /// First time seen, but a higher sequence number arrived earlier.
    Reordered,
    /// Seen before: a redelivery.
    Duplicate,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct PublisherSeqs {
    /// Bit `seq` set once `seq` was received.
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    highest: Option<u64>,
}

/// Loss, duplicate and reordering accounting for one subscriber, from the
/// `(publisher, seq)` pairs it received. Each publisher numbers its messages 0, 1, 2...
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SequenceTracker {
    publishers: BTreeMap<u32, PublisherSeqs>,
}

/// Delivery figures of one subscriber (or a sum of subscribers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Messages that should have arrived (what the publishers sent).
    pub expected: u64,
    /// Distinct messages that arrived (duplicates not counted).
    pub received: u64,
    /// `expected - received`.
    pub lost: u64,
    /// Extra copies of messages already received.
    pub duplicates: u64,
    /// Messages that arrived after a later one of the same publisher.
    pub reordered: u64,
}

impl Delivery {
    pub fn add(&mut self, other: &Delivery) {
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
    }
}

impl SequenceTracker {
    pub fn new() -> SequenceTracker {
        SequenceTracker::default()
    }

    /// Records message `seq` of `publisher` and says how it arrived.
    pub fn observe(&mut self, publisher: u32, seq: u64) -> Arrival {
        let p = self.publishers.entry(publisher).or_default();
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if p.seen.len() <= word {
            p.seen.resize(word + 1, 0);
        }
        if p.seen[word] & (1 << bit) != 0 {
            p.duplicates += 1;
            return Arrival::Duplicate;
        }
        p.seen[word] |= 1 << bit;
        p.unique += 1;
        match p.highest {
            Some(h) if seq < h => {
                p.reordered += 1;
                Arrival::Reordered
            }
            _ => {
                p.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }

    /// Distinct messages received so far, all publishers together.
    pub fn unique(&self) -> u64 {
        self.publishers.values().map(|p| p.unique).sum()
    }

    /// Figures against what each publisher says it sent (`sent[publisher]`, messages
    /// numbered `0..sent`). A sequence number at or beyond what its publisher sent, or
    /// from a publisher not in `sent`, counts as received but cannot hide a loss.
    pub fn delivery(&self, sent: &BTreeMap<u32, u64>) -> Delivery {
        let mut d = Delivery {
            expected: sent.values().sum(),
            ..Delivery::default()
        };
        let mut within = 0u64;
        for (id, p) in &self.publishers {
            d.received += p.unique;
            d.duplicates += p.duplicates;
            d.reordered += p.reordered;
            let n = sent.get(id).copied().unwrap_or(0);
            within += count_below(&p.seen, n);
        }
        d.lost = d.expected - within.min(d.expected);
        d
    }
}

/// How many bits are set among the first `n` of `bits`.
fn count_below(bits: &[u64], n: u64) -> u64 {
    let full = (n / 64) as usize;
    let mut c: u64 = bits
        .iter()
        .take(full)
        .map(|w| u64::from(w.count_ones()))
        .sum();
    let rest = n % 64;
    if rest > 0 {
        if let Some(w) = bits.get(full) {
            c += u64::from((w & ((1u64 << rest) - 1)).count_ones());
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: impl IntoIterator<Item = u64>) -> Histogram {
        let mut h = Histogram::new();
        for v in values {
            h.record(v);
        }
        h
    }

    #[test]
    fn every_value_is_reported_within_its_bucket_width() {
        let far = 1u64 << 61;
        for v in [0, 1, 255, 256, 257, 1_000, 123_456, 10_000_000_000, 1 << 60] {
            // The median of [v, far] is v's bucket: its top, never below v.
            let got = hist([v, far]).quantile(0.5).unwrap();
            assert!(
                got >= v && (got - v) as f64 <= v as f64 / 128.0 + 1.0,
                "{v} -> {got}"
            );
        }
        // Below 256, exact; the extremes are the samples themselves, even huge ones.
        let h = hist(0..256);
        assert!((0..256u64).all(|v| h.quantile((v + 1) as f64 / 256.0) == Some(v)));
        let h = hist([3, u64::MAX]);
        assert_eq!(
            (h.min(), h.max(), h.quantile(1.0)),
            (Some(3), Some(u64::MAX), Some(u64::MAX))
        );
    }

    #[test]
    fn percentiles_follow_the_nearest_rank_rule() {
        // 1..=100 ms: p50 = 50 ms, p90 = 90 ms, p99 = 99 ms, max = 100 ms (±0.8 %).
        let h = hist((1..=100).map(|i| i * 1_000_000));
        let s = LatencySummary::of(&h).unwrap();
        assert_eq!(s.samples, 100);
        for (got, want) in [(s.p50, 50.0), (s.p90, 90.0), (s.p99, 99.0), (s.p999, 100.0)] {
            assert!((got - want).abs() <= want * 0.008, "{got} vs {want}");
        }
        assert_eq!((s.min, s.max), (1.0, 100.0));
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.max);
        // Small exact values stay exact; q=0 and q=1 are min and max.
        let h = hist([3, 1, 2]);
        assert_eq!(
            (h.quantile(0.0), h.quantile(0.5), h.quantile(1.0)),
            (Some(1), Some(2), Some(3))
        );
    }

    #[test]
    fn a_tail_shows_in_the_high_percentiles_only() {
        let h = hist((0..10_000).map(|i| if i < 9_980 { 1_000_000 } else { 500_000_000 }));
        let s = LatencySummary::of(&h).unwrap();
        assert!(s.p99 < 1.01, "{s:?}");
        assert!(s.p999 > 490.0 && s.max == 500.0, "{s:?}");
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        assert!(LatencySummary::of(&h).is_none());
    }

    #[test]
    fn merged_histograms_equal_one_with_all_samples() {
        let (a, b) = (hist([5, 700, 90_000]), hist([1, 3_000_000]));
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m, hist([5, 700, 90_000, 1, 3_000_000]));
        let mut e = Histogram::new();
        e.merge(&a);
        assert_eq!(e, a);
    }

    #[test]
    fn schedule_spaces_messages_and_staggers_senders() {
        let s = RateSchedule::new(1000.0, 0.0);
        assert_eq!(
            (0..3).map(|i| s.intended_offset_ns(i)).collect::<Vec<_>>(),
            [0, 1_000_000, 2_000_000]
        );
        let s = RateSchedule::new(1000.0, 0.5);
        assert_eq!(s.intended_offset_ns(0), 500_000);
        assert_eq!(s.intended_offset_ns(10), 10_500_000);
    }

    #[test]
    fn coordinated_omission_charges_a_stall_to_every_delayed_message() {
        // 100 msg/s; the sender stalls for 1 s at message 10, then catches up by
        // sending messages 10..110 back to back; each takes 1 ms to arrive.
        let s = RateSchedule::new(100.0, 0.0);
        let (mut raw, mut corrected) = (Histogram::new(), Histogram::new());
        let mut clock = 0u64;
        for seq in 0..200u64 {
            let intended = s.intended_offset_ns(seq);
            if seq == 10 {
                clock = intended + 1_000_000_000;
            }
            let sent = clock.max(intended);
            clock = sent;
            let received = sent + 1_000_000;
            raw.record(received - sent);
            corrected.record(corrected_latency_ns(received, sent, Some(intended)));
        }
        let (r, c) = (
            LatencySummary::of(&raw).unwrap(),
            LatencySummary::of(&corrected).unwrap(),
        );
        // Measured from the actual send time, the stall is invisible.
        assert!((r.max - 1.0).abs() < 0.01, "{r:?}");
        // From the intended time, message 10 waited a whole second, and the 100
        // messages queued behind it waited less and less: half of all messages.
        assert!(c.max > 1000.0 && c.max < 1002.0, "{c:?}");
        assert!(c.p50 < 1.01 && c.p90 > 500.0 && c.p99 > 900.0, "{c:?}");
        // No schedule: plain latency. An early sender is measured from its send time.
        assert_eq!(corrected_latency_ns(10, 4, None), 6);
        assert_eq!(corrected_latency_ns(10, 4, Some(6)), 6);
        assert_eq!(corrected_latency_ns(3, 4, None), 0);
    }

    #[test]
    fn loss_duplicates_and_reordering_per_publisher() {
        let mut t = SequenceTracker::new();
        let arrivals: Vec<_> = [
            (0, 0),
            (0, 1),
            (0, 3),
            (0, 2),
            (0, 3),
            (1, 0),
            (1, 0),
            (1, 2),
        ]
        .into_iter()
        .map(|(p, s)| t.observe(p, s))
        .collect();
        use Arrival::*;
        assert_eq!(
            arrivals,
            [InOrder, InOrder, InOrder, Reordered, Duplicate, InOrder, Duplicate, InOrder]
        );
        assert_eq!(t.unique(), 6);
        // Publisher 0 sent 5 (0..5: 4 is lost), publisher 1 sent 3 (1 is lost).
        let sent = BTreeMap::from([(0, 5), (1, 3)]);
        assert_eq!(
            t.delivery(&sent),
            Delivery {
                expected: 8,
                received: 6,
                lost: 2,
                duplicates: 2,
                reordered: 1
            }
        );
    }

    #[test]
    fn the_same_seq_twice_is_one_duplicate_and_no_loss() {
        let mut t = SequenceTracker::new();
        for s in 0..100 {
            t.observe(7, s);
        }
        assert_eq!(t.observe(7, 42), Arrival::Duplicate);
        let d = t.delivery(&BTreeMap::from([(7, 100)]));
        assert_eq!(
            (d.received, d.lost, d.duplicates, d.reordered),
            (100, 0, 1, 0)
        );
    }

    #[test]
    fn strays_do_not_hide_losses() {
        let mut t = SequenceTracker::new();
        t.observe(0, 0);
        t.observe(0, 500); // beyond what publisher 0 sent
        t.observe(9, 0); // a publisher that sent nothing we know of
        let d = t.delivery(&BTreeMap::from([(0, 2)]));
        assert_eq!((d.expected, d.received, d.lost), (2, 3, 1));
        // Nothing received: everything lost.
        let d = SequenceTracker::new().delivery(&BTreeMap::from([(0, 64), (1, 65)]));
        assert_eq!((d.expected, d.received, d.lost), (129, 0, 129));
    }

    #[test]
    fn bit_counting_at_word_edges() {
        let mut t = SequenceTracker::new();
        for s in [0, 63, 64, 127, 128] {
            t.observe(0, s);
        }
        for (n, want) in [
            (0, 0),
            (1, 1),
            (63, 1),
            (64, 2),
            (65, 3),
            (128, 4),
            (129, 5),
            (1000, 5),
        ] {
            let d = t.delivery(&BTreeMap::from([(0, n)]));
            assert_eq!(d.expected - d.lost, want, "n = {n}");
        }
    }

    #[test]
    fn throughput_of_an_empty_window_is_zero() {
        assert_eq!(throughput(10, 2.0), 5.0);
        assert_eq!(throughput(10, 0.0), 0.0);
        assert_eq!(throughput(0, 1.0), 0.0);
    }
}
