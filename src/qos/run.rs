//! One QoS level, end to end: subscribers first (each confirmed by its SUBACK), then
//! the publishers on a shared start time, then the wait for stragglers, and the
//! histograms merged.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::task::JoinHandle;

use super::clock::Clock;
use super::plan::{close, Plan, LINGER, TOPIC_ROOT};
use super::publisher::{run_publisher, PubOutcome};
use super::subscriber::{join_subscribers, start_subscriber, stop_subscribers, SubOutcome};
use crate::stats::Histogram;

/// Everything measured at one QoS level.
pub struct LevelRun {
    pub(crate) qos: u8,
    pub(crate) error: Option<String>,
    pub(crate) publishers: Vec<PubOutcome>,
    pub(crate) subscribers: Vec<SubOutcome>,
    /// End-to-end latency: from the scheduled send time with --rate, else the send time.
    pub(crate) latency: Histogram,
    /// From the actual send time (only differs from `latency` with --rate).
    pub(crate) raw: Histogram,
    pub(crate) ack: Histogram,
}

impl LevelRun {
    fn failed(qos: u8, error: String) -> LevelRun {
        LevelRun {
            qos,
            error: Some(error),
            publishers: Vec::new(),
            subscribers: Vec::new(),
            latency: Histogram::new(),
            raw: Histogram::new(),
            ack: Histogram::new(),
        }
    }
}

/// A benchmark run: its plan and the clock every level's tasks share.
pub struct Bench {
    plan: Arc<Plan>,
    clock: Clock,
}

impl Bench {
    pub fn new(plan: Plan) -> Bench {
        Bench {
            plan: Arc::new(plan),
            clock: Clock::start(),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Measures QoS level `qos`; `bar` counts first deliveries.
    pub async fn level(&self, qos: u8, bar: ProgressBar) -> LevelRun {
        run_level(self.plan.clone(), qos, self.clock, bar).await
    }
}

async fn run_level(plan: Arc<Plan>, qos: u8, clock: Clock, bar: ProgressBar) -> LevelRun {
    let base = plan.base_topic(qos);

    // Subscribers first, each confirmed by its SUBACK, so no message is published
    // before every subscriber can receive it.
    let mut subs = Vec::new();
    for j in 0..plan.subscribers {
        match start_subscriber(&plan, qos, j, &base, clock, bar.clone()).await {
            Ok(s) => subs.push(s),
            Err(e) => {
                stop_subscribers(subs).await;
                return LevelRun::failed(qos, e);
            }
        }
    }
    tracing::debug!(qos, subscribers = subs.len(), topic = %base, "subscribed");

    // Connect every publisher before any publishes, so connection set-up is not
    // counted in the throughput, and they all start on the same schedule.
    let mut connected = Vec::new();
    for i in 0..plan.publishers {
        let id = plan.client_id(qos, 'p', i);
        let mut opts = crate::mqtt::options(&plan.mqtt, &id);
        opts.set_inflight(plan.inflight);
        let (client, mut eventloop) = plan.client(opts);
        if let Err(e) = crate::mqtt::wait_connected(&mut eventloop, &plan.mqtt, plan.timeout).await
        {
            for (client, eventloop) in connected {
                close(client, eventloop).await;
            }
            stop_subscribers(subs).await;
            return LevelRun::failed(qos, format!("publisher {i}: {e}"));
        }
        connected.push((client, eventloop));
    }

    let start_ns = clock.now_ns() + 20_000_000;
    let tasks: Vec<JoinHandle<PubOutcome>> = connected
        .into_iter()
        .enumerate()
        .map(|(i, (client, eventloop))| {
            let plan = plan.clone();
            let topic = format!("{base}/p{i}");
            tokio::spawn(run_publisher(
                plan, qos, i as u32, topic, client, eventloop, clock, start_ns,
            ))
        })
        .collect();
    let mut publishers = Vec::new();
    for t in tasks {
        match t.await {
            Ok(p) => publishers.push(p),
            Err(e) => publishers.push(PubOutcome::crashed(e.to_string())),
        }
    }
    let publish_end_ns = clock.now_ns();
    let sent: BTreeMap<u32, u64> = publishers.iter().map(|p| (p.id, p.sent)).collect();
    let expected: u64 = sent.values().sum();
    tracing::debug!(qos, sent = expected, "publishers done");

    // Subscribers stop once they have everything (and a short linger for late
    // duplicates), or after `grace` without traffic, whichever comes first.
    let hard_stop = publish_end_ns + (plan.grace + plan.timeout).as_nanos() as u64;
    let mut active: Vec<bool> = vec![true; subs.len()];
    while active.iter().any(|a| *a) {
        let now = clock.now_ns();
        for (s, a) in subs.iter().zip(active.iter_mut()) {
            if !*a {
                continue;
            }
            let quiet_since = s
                .shared
                .last_recv_ns
                .load(Ordering::Relaxed)
                .max(publish_end_ns);
            let quiet = Duration::from_nanos(now.saturating_sub(quiet_since));
            let complete = s.shared.unique.load(Ordering::Relaxed) >= expected;
            let finished = s.shared.finished.load(Ordering::Relaxed) == 1;
            if finished || (complete && quiet >= LINGER) || quiet >= plan.grace || now >= hard_stop
            {
                let _ = s.client.try_disconnect();
                *a = false;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let subscribers = join_subscribers(subs).await;

    let mut latency = Histogram::new();
    let mut raw = Histogram::new();
    for s in &subscribers {
        latency.merge(&s.latency);
        raw.merge(&s.raw);
    }
    let mut ack = Histogram::new();
    for p in &publishers {
        ack.merge(&p.ack);
    }
    let received: u64 = subscribers.iter().map(|s| s.tracker.unique()).sum();
    let error = publishers
        .iter()
        .find_map(|p| p.error.clone())
        .or_else(|| subscribers.iter().find_map(|s| s.error.clone()))
        .or_else(|| {
            (expected > 0 && received == 0).then(|| {
                let who = plan.mqtt.username.as_deref().unwrap_or("(anonymous)");
                format!(
                    "nothing was delivered: may the account {who:?} publish and subscribe under {TOPIC_ROOT}/#? (the operator account may)"
                )
            })
        });
    LevelRun {
        qos,
        error,
        publishers,
        subscribers,
        latency,
        raw,
        ack,
    }
}
