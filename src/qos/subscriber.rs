//! The bench's subscribers: each subscribes to the level's topic tree at the level's
//! QoS and accounts, per publisher, for what arrives (latency of first deliveries,
//! losses, duplicates, reordering). With `--inject-redelivery`, the first QoS 1
//! subscriber withholds its acknowledgements, drops its connection and comes back,
//! so the broker redelivers exactly what it withheld.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, SubscribeReasonCode};
use tokio::task::JoinHandle;

use super::clock::Clock;
use super::payload;
use super::plan::{close, to_qos, Plan, CLOSE_TIMEOUT};
use crate::stats::{self, Arrival, Histogram, SequenceTracker};

#[derive(Default)]
pub(crate) struct SubShared {
    /// Distinct messages received so far (read by the level's stop logic).
    pub(crate) unique: AtomicU64,
    pub(crate) last_recv_ns: AtomicU64,
    /// 1 once the receive loop ended on its own (connection lost).
    pub(crate) finished: AtomicU64,
}

pub(crate) struct SubHandle {
    pub(crate) client: AsyncClient,
    pub(crate) shared: Arc<SubShared>,
    pub(crate) task: JoinHandle<SubOutcome>,
}

#[derive(Default)]
pub(crate) struct SubOutcome {
    pub(crate) id: u32,
    pub(crate) tracker: SequenceTracker,
    pub(crate) latency: Histogram,
    pub(crate) raw: Histogram,
    pub(crate) last_recv_ns: Option<u64>,
    pub(crate) malformed: u64,
    /// Messages left unacknowledged before the injected reconnect.
    pub(crate) injected: u64,
    pub(crate) error: Option<String>,
}

pub(crate) async fn start_subscriber(
    plan: &Arc<Plan>,
    qos: u8,
    j: u32,
    base: &str,
    clock: Clock,
    bar: ProgressBar,
) -> Result<SubHandle, String> {
    let id = plan.client_id(qos, 's', j);
    let inject = plan.inject.filter(|_| j == 0 && qos == 1);
    let mut opts = crate::mqtt::options(&plan.mqtt, &id);
    if inject.is_some() {
        // A persistent session, so the broker keeps (and redelivers) what it sent
        // but never got a PUBACK for; manual acks, so we choose what that is.
        opts.set_clean_session(false);
        opts.set_manual_acks(true);
    }
    let (client, mut eventloop) = plan.client(opts);
    crate::mqtt::wait_connected(&mut eventloop, &plan.mqtt, plan.timeout)
        .await
        .map_err(|e| format!("subscriber {j}: {e}"))?;
    let filter = format!("{base}/+");
    client
        .subscribe(&filter, to_qos(qos))
        .await
        .map_err(|e| format!("subscriber {j}: {e}"))?;
    let deadline = tokio::time::Instant::now() + plan.timeout;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => {
                return Err(format!(
                    "subscriber {j}: no SUBACK for {filter} within {:?}",
                    plan.timeout
                ))
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(granted)) if *granted as u8 >= qos => break,
                    Some(SubscribeReasonCode::Success(granted)) => {
                        return Err(format!(
                            "the broker granted only QoS {} to a QoS {qos} subscription: its max_qos is below {qos}, so this level cannot be measured on it",
                            *granted as u8
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "the broker refused the subscription to {filter} (may the account {:?} read it?)",
                            plan.mqtt.username.as_deref().unwrap_or("(anonymous)")
                        ))
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("subscriber {j}: connection lost: {e}")),
        }
    }
    let shared = Arc::new(SubShared::default());
    let task = tokio::spawn(receive(
        plan.clone(),
        id,
        j,
        eventloop,
        inject,
        shared.clone(),
        clock,
        bar,
    ));
    Ok(SubHandle {
        client,
        shared,
        task,
    })
}

/// Drives one subscriber's event loop until its DISCONNECT is sent (the level asks
/// for it) or the connection is lost.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn receive(
    plan: Arc<Plan>,
    client_id: String,
    j: u32,
    mut eventloop: EventLoop,
    inject: Option<u64>,
    shared: Arc<SubShared>,
    clock: Clock,
    bar: ProgressBar,
) -> SubOutcome {
    let with_schedule = plan.rate.is_some();
    let mut out = SubOutcome {
        id: j,
        ..SubOutcome::default()
    };
    let mut withholding = inject;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let now = clock.now_ns();
                let Some(h) = payload::decode(&p.payload) else {
                    out.malformed += 1;
                    continue;
                };
                if out.tracker.observe(h.publisher, h.seq) != Arrival::Duplicate {
                    // A message's latency is that of its first delivery; a redelivery
                    // is counted as a duplicate, not as a slow message.
                    out.raw.record(now.saturating_sub(h.sent_ns));
                    let intended = with_schedule.then_some(h.intended_ns);
                    out.latency
                        .record(stats::corrected_latency_ns(now, h.sent_ns, intended));
                    shared.unique.fetch_add(1, Ordering::Relaxed);
                    bar.inc(1);
                }
                out.last_recv_ns = Some(now);
                shared.last_recv_ns.store(now, Ordering::Relaxed);
                if let Some(n) = withholding {
                    out.injected += 1;
                    if out.injected >= n {
                        // Crash and come back: drop the connection without DISCONNECT
                        // and forget what was read but not handled, as a killed
                        // process would; acknowledge normally from now on.
                        withholding = None;
                        eventloop.clean();
                        eventloop.state.events.clear();
                        eventloop.state.manual_acks = false;
                        eventloop.mqtt_options.set_manual_acks(false);
                        tracing::debug!(subscriber = j, withheld = n, "reconnecting to redeliver");
                    }
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if !ack.session_present {
                    out.error = Some(format!(
                        "subscriber {j}: the broker did not keep its persistent session across the reconnect"
                    ));
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                out.error = Some(format!("subscriber {j}: connection lost: {e}"));
                break;
            }
        }
    }
    shared.finished.store(1, Ordering::Relaxed);
    drop(eventloop);
    if inject.is_some() {
        forget_session(&plan, &client_id).await;
    }
    out
}

/// Connects once with a clean session so the broker drops the persistent session of
/// `client_id` (it would otherwise keep it, and queue for it, for days).
pub(crate) async fn forget_session(plan: &Plan, client_id: &str) {
    if let Ok((client, eventloop)) = crate::mqtt::connect(&plan.mqtt, client_id, plan.timeout).await
    {
        close(client, eventloop).await;
    }
}

pub(crate) async fn stop_subscribers(subs: Vec<SubHandle>) {
    for s in &subs {
        let _ = s.client.try_disconnect();
    }
    join_subscribers(subs).await;
}

pub(crate) async fn join_subscribers(subs: Vec<SubHandle>) -> Vec<SubOutcome> {
    let mut out = Vec::new();
    for s in subs {
        let mut task = s.task;
        match tokio::time::timeout(CLOSE_TIMEOUT + Duration::from_secs(1), &mut task).await {
            Ok(Ok(o)) => out.push(o),
            Ok(Err(e)) => out.push(SubOutcome {
                error: Some(format!("subscriber task failed: {e}")),
                ..SubOutcome::default()
            }),
            Err(_) => {
                task.abort();
                out.push(SubOutcome {
                    error: Some("a subscriber did not close its connection".into()),
                    ..SubOutcome::default()
                });
            }
        }
    }
    out
}
