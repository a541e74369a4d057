//! The figures of one QoS level ([`LevelReport`]): the `--json` object, and the source
//! of the table and the CSV row. Built from what the tasks measured, pure.

use std::collections::BTreeMap;

use serde::Serialize;

use super::plan::Plan;
use super::run::LevelRun;
use crate::stats::{self, Delivery, Histogram, LatencySummary};

/// Latency figures in milliseconds; `null` percentiles when nothing was measured.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencyMs {
    pub samples: u64,
    pub min: Option<f64>,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

impl LatencyMs {
    fn of(h: &Histogram) -> LatencyMs {
        match LatencySummary::of(h) {
            None => LatencyMs::default(),
            Some(s) => LatencyMs {
                samples: s.samples,
                min: Some(round3(s.min)),
                mean: Some(round3(s.mean)),
                p50: Some(round3(s.p50)),
                p90: Some(round3(s.p90)),
                p99: Some(round3(s.p99)),
                p999: Some(round3(s.p999)),
                max: Some(round3(s.max)),
            },
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[derive(Debug, Clone, Serialize)]
pub struct PublisherFigures {
    pub id: u32,
    pub sent: u64,
    /// Written (QoS 0) or acknowledged (QoS 1, 2).
    pub completed: u64,
    pub throughput_msgs_per_s: f64,
    pub ack_ms: Option<LatencyMs>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriberFigures {
    pub id: u32,
    #[serde(flatten)]
    pub delivery: Delivery,
    pub throughput_msgs_per_s: f64,
    pub latency_ms: LatencyMs,
}

/// One QoS level's results: the JSON object, and the source of the table and CSV row.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    pub qos: u8,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Messages published (all publishers).
    pub sent: u64,
    /// Deliveries that should have happened: `sent` x subscribers.
    pub expected: u64,
    /// Distinct messages delivered, summed over subscribers (duplicates excluded).
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub loss_percent: f64,
    /// Delivered throughput: `received` over the time from the first send to the last
    /// delivery, all subscribers together.
    pub throughput_msgs_per_s: f64,
    /// `sent` over the time from the first send to the last write (QoS 0) or
    /// acknowledgement (QoS 1, 2).
    pub publish_throughput_msgs_per_s: f64,
    /// End-to-end latency, first deliveries only.
    pub latency_ms: LatencyMs,
    /// `"scheduled_send_time"` with --rate (coordinated-omission corrected), else
    /// `"send_time"`.
    pub latency_from: &'static str,
    /// With --rate: the same latency measured from the actual send time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_uncorrected_ms: Option<LatencyMs>,
    /// Publish-to-acknowledgement time (PUBACK at QoS 1, PUBCOMP at QoS 2); null at QoS 0.
    pub ack_ms: Option<LatencyMs>,
    pub ack_packet: Option<&'static str>,
    pub publishers: u32,
    pub subscribers: u32,
    pub size_bytes: usize,
    pub rate_msgs_per_s: Option<f64>,
    pub inflight: u16,
    /// TCP_NODELAY on the bench's client sockets (false with --nagle).
    pub tcp_nodelay: bool,
    /// Seconds from the first send to the last delivery.
    pub duration_s: f64,
    /// Messages left unacknowledged before the reconnect of --inject-redelivery.
    pub injected_redeliveries: u64,
    /// Payloads without a bench header (should be 0: nothing else publishes there).
    pub malformed: u64,
    /// Acknowledgements whose PUBLISH was not seen (should be 0).
    pub unpaired_acks: u64,
    pub per_publisher: Vec<PublisherFigures>,
    pub per_subscriber: Vec<SubscriberFigures>,
}

impl LevelRun {
    /// The figures of this level, against what `plan` asked for.
    pub fn report(&self, plan: &Plan) -> LevelReport {
        let sent_map: BTreeMap<u32, u64> = self.publishers.iter().map(|p| (p.id, p.sent)).collect();
        let sent: u64 = sent_map.values().sum();
        let first_send = self.publishers.iter().filter_map(|p| p.first_send_ns).min();
        let secs = |from: Option<u64>, to: Option<u64>| match (from, to) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => 0.0,
        };
        let mut total = Delivery::default();
        let mut per_subscriber = Vec::new();
        for s in &self.subscribers {
            let mut d = s.tracker.delivery(&sent_map);
            if sent_map.is_empty() {
                d.expected = 0;
            }
            total.add(&d);
            per_subscriber.push(SubscriberFigures {
                id: s.id,
                delivery: d,
                throughput_msgs_per_s: round1(stats::throughput(
                    d.received,
                    secs(first_send, s.last_recv_ns),
                )),
                latency_ms: LatencyMs::of(&s.latency),
            });
        }
        // A subscriber that never reported still owed every message.
        let missing = u64::from(plan.subscribers).saturating_sub(self.subscribers.len() as u64);
        total.expected += missing * sent;
        total.lost += missing * sent;

        let last_recv = self.subscribers.iter().filter_map(|s| s.last_recv_ns).max();
        let last_done = self.publishers.iter().filter_map(|p| p.last_done_ns).max();
        let per_publisher = self
            .publishers
            .iter()
            .map(|p| PublisherFigures {
                id: p.id,
                sent: p.sent,
                completed: p.completed,
                throughput_msgs_per_s: round1(stats::throughput(
                    p.sent,
                    secs(p.first_send_ns, p.last_done_ns),
                )),
                ack_ms: (self.qos > 0).then(|| LatencyMs::of(&p.ack)),
            })
            .collect();
        let with_schedule = plan.rate.is_some();
        LevelReport {
            qos: self.qos,
            ok: self.error.is_none(),
            error: self.error.clone(),
            sent,
            expected: total.expected,
            received: total.received,
            lost: total.lost,
            duplicates: total.duplicates,
            reordered: total.reordered,
            loss_percent: if total.expected == 0 {
                0.0
            } else {
                round3(100.0 * total.lost as f64 / total.expected as f64)
            },
            throughput_msgs_per_s: round1(stats::throughput(
                total.received,
                secs(first_send, last_recv),
            )),
            publish_throughput_msgs_per_s: round1(stats::throughput(
                sent,
                secs(first_send, last_done),
            )),
            latency_ms: LatencyMs::of(&self.latency),
            latency_from: if with_schedule {
                "scheduled_send_time"
            } else {
                "send_time"
            },
            latency_uncorrected_ms: with_schedule.then(|| LatencyMs::of(&self.raw)),
            ack_ms: (self.qos > 0).then(|| LatencyMs::of(&self.ack)),
            ack_packet: match self.qos {
                1 => Some("PUBACK"),
                2 => Some("PUBCOMP"),
                _ => None,
            },
            publishers: plan.publishers,
            subscribers: plan.subscribers,
            size_bytes: plan.size,
            rate_msgs_per_s: plan.rate,
            inflight: plan.inflight,
            tcp_nodelay: !plan.nagle,
            duration_s: round3(secs(first_send, last_recv.max(last_done))),
            injected_redeliveries: self.subscribers.iter().map(|s| s.injected).sum(),
            malformed: self.subscribers.iter().map(|s| s.malformed).sum(),
            unpaired_acks: self.publishers.iter().map(|p| p.unpaired_acks).sum(),
            per_publisher,
            per_subscriber,
        }
    }
}
