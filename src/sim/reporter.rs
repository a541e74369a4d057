//! What a run tells its user while it runs and when it ends: one log line per cycle
//! across the zones (at most one per second for fast cycles), an indicatif progress
//! bar on a terminal, and the summary (`--json`'s object), refusals by the broker
//! included.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use rumqttc::QoS;

use super::fleet::Shared;
use super::link::Link;
use super::plan::Plan;
use crate::mqtt::dual::Protocol;

/// The per-cycle log line and the progress bar (readings produced of the run's
/// total, with what awaits acknowledgement as its message).
pub(crate) struct Reporter {
    pub(crate) shared: Arc<Shared>,
    pub(crate) links: Vec<Arc<Link>>,
    pub(crate) per_sensor: Option<u64>,
    /// Hidden unless someone watches a bounded run on a terminal.
    pub(crate) bar: ProgressBar,
    pub(crate) logged_cycles: u64,
    pub(crate) last_sent: u64,
    pub(crate) last_at: Instant,
}

impl Reporter {
    fn cycles(&self) -> u64 {
        self.links
            .iter()
            .map(|l| l.produced.load(Relaxed) / l.sensors as u64)
            .min()
            .unwrap_or(0)
    }

    fn produced(&self) -> u64 {
        self.links.iter().map(|l| l.produced.load(Relaxed)).sum()
    }

    fn sent(&self) -> u64 {
        self.links.iter().map(|l| l.sent.load(Relaxed)).sum()
    }

    fn unacked(&self) -> u64 {
        self.links.iter().map(|l| l.unacked()).sum()
    }

    fn refused(&self) -> u64 {
        self.links.iter().map(|l| l.refused.load(Relaxed)).sum()
    }

    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Slow cycles get a line each; fast ones one line per second.
        let period = if self.shared.interval >= Duration::from_millis(100) {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(1)
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut redraw = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                _ = tick.tick() => self.log_cycles(),
                _ = redraw.tick(), if !self.bar.is_hidden() => self.draw(),
            }
        }
        self.log_cycles();
        self.bar.finish_and_clear();
    }

    fn log_cycles(&mut self) {
        let cycles = self.cycles();
        if cycles <= self.logged_cycles {
            return;
        }
        let now = Instant::now();
        let secs = (now - self.last_at).as_secs_f64().max(1e-3);
        let sent = self.sent();
        let rate = (sent - self.last_sent.min(sent)) as f64 / secs;
        // Totals so far (not deltas): generators run on other threads, so a delta
        // could straddle a cycle boundary by one reading and look wrong.
        let mut zones = String::new();
        let (mut warning, mut critical, mut readings, mut dropped, mut alerts) =
            (0i64, 0i64, 0u64, 0u64, 0u64);
        for (i, (zone, stats)) in self.shared.zones.iter().zip(&self.shared.stats).enumerate() {
            let r = stats.readings.load(Relaxed);
            readings += r;
            dropped += stats.dropped.load(Relaxed);
            alerts += stats.alerts.load(Relaxed);
            warning += stats.warning.load(Relaxed);
            critical += stats.critical.load(Relaxed);
            if i < 8 {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(zones, "{sep}{zone} {r}");
            } else if i == 8 {
                let _ = write!(zones, ", +{} zones", self.shared.zones.len() - 8);
            }
        }
        let cycle = match (self.logged_cycles + 1 == cycles, self.per_sensor) {
            (true, Some(n)) => format!("cycle {cycles}/{n}"),
            (true, None) => format!("cycle {cycles}"),
            (false, Some(n)) => format!("cycles {}-{cycles}/{n}", self.logged_cycles + 1),
            (false, None) => format!("cycles {}-{cycles}", self.logged_cycles + 1),
        };
        let unacked = self.unacked();
        let refused = self.refused();
        // The bar steps aside while the line is written, then comes back under it.
        self.bar.suspend(|| {
            info!(
                dropped,
                warning,
                critical,
                alerts,
                msg_per_s = rate.round() as u64,
                unacked,
                refused,
                "{cycle} done: {readings} readings so far ({zones})"
            )
        });
        self.logged_cycles = cycles;
        self.last_sent = sent;
        self.last_at = now;
    }

    fn draw(&self) {
        self.bar.set_position(self.produced());
        let message = match self.refused() {
            0 => format!("{} unacked", self.unacked()),
            refused => format!("{} unacked, {refused} refused", self.unacked()),
        };
        self.bar.set_message(message);
    }
}

pub(crate) fn summary(
    plan: &Plan,
    shared: &Shared,
    links: &[Arc<Link>],
    elapsed: Duration,
    unacked: u64,
    interrupted: bool,
) -> serde_json::Value {
    let mut zones = serde_json::Map::new();
    let (mut readings, mut dropped, mut alerts, mut heartbeats) = (0u64, 0u64, 0u64, 0u64);
    for (zone, s) in shared.zones.iter().zip(&shared.stats) {
        let z = (
            s.readings.load(Relaxed),
            s.dropped.load(Relaxed),
            s.alerts.load(Relaxed),
            s.heartbeats.load(Relaxed),
        );
        readings += z.0;
        dropped += z.1;
        alerts += z.2;
        heartbeats += z.3;
        zones.insert(
            zone.to_string(),
            json!({"sensors": plan.per_zone, "readings": z.0, "dropped": z.1, "alerts": z.2, "heartbeats": z.3}),
        );
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let sent: u64 = links.iter().map(|l| l.sent.load(Relaxed)).sum();
    let acked: u64 = links.iter().map(|l| l.acked.load(Relaxed)).sum();
    let refused: u64 = links.iter().map(|l| l.refused.load(Relaxed)).sum();
    let protocols: Vec<Option<Protocol>> = links.iter().map(|l| l.client.protocol()).collect();
    // Readings at QoS 0 get no answer: their refusals cannot be seen even with MQTT 5.
    let detectable = plan.qos != QoS::AtMostOnce
        && protocols
            .iter()
            .all(|p| p.is_some_and(Protocol::sees_refusals));
    let mut refused_topics = Vec::new();
    for l in links {
        for t in l.refusals().topics() {
            refused_topics.push(json!({
                "topic": t.topic,
                "count": t.count,
                "reason": t.reason,
                "account": l.account,
                "client_id": l.client_id,
            }));
        }
    }
    json!({
        "seed": plan.seed,
        "qos": plan.qos as u8,
        "sensors": plan.total_sensors(),
        "interval_ms": if plan.paced { Some(plan.interval.as_secs_f64() * 1000.0) } else { None },
        "duration_s": secs,
        "readings": readings,
        "dropped": dropped,
        "alerts": alerts,
        "heartbeats": heartbeats,
        "messages_sent": sent,
        "messages_acked": acked.min(sent),
        "unacked": unacked,
        "messages_refused": refused,
        "refused": refused_topics,
        "refusals_detectable": detectable,
        "readings_per_s": readings as f64 / secs,
        "messages_per_s": sent as f64 / secs,
        "schedule_slip_ms": shared.slipped_ns.load(Relaxed) as f64 / 1e6,
        "interrupted": interrupted,
        "zones": zones,
        "connections": links.iter().map(|l| json!({
            "client_id": l.client_id,
            "sensors": l.sensors,
            "sent": l.sent.load(Relaxed),
            "acked": l.acked.load(Relaxed),
            "refused": l.refused.load(Relaxed),
            "mqtt_version": l.client.protocol().map(Protocol::as_str),
            "reconnects": l.reconnects.load(Relaxed),
        })).collect::<Vec<_>>(),
    })
}
