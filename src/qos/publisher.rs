//! The bench's publishers: each sends its messages on its own connection, on the
//! rate schedule when there is one, and pairs every PUBLISH with its PUBACK (QoS 1)
//! or PUBCOMP (QoS 2) by packet id to time acknowledgements. A publisher disconnects
//! only once everything it sent is acknowledged, so nothing in flight is lost at the
//! end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet};
use tokio::sync::Notify;

use super::clock::Clock;
use super::payload;
use super::plan::{to_qos, Plan, Stop, CLOSE_TIMEOUT};
use crate::stats::{Histogram, RateSchedule};

#[derive(Default)]
pub(crate) struct PubShared {
    /// Messages done: written (QoS 0), PUBACK received (QoS 1), PUBCOMP received (QoS 2).
    pub(crate) completed: AtomicU64,
    pub(crate) last_done_ns: AtomicU64,
    pub(crate) notify: Notify,
    pub(crate) error: Mutex<Option<String>>,
}

impl PubShared {
    fn error(&self) -> Option<String> {
        self.error.lock().map(|e| e.clone()).unwrap_or(None)
    }
}

pub(crate) struct PubOutcome {
    pub(crate) id: u32,
    pub(crate) sent: u64,
    pub(crate) completed: u64,
    pub(crate) first_send_ns: Option<u64>,
    pub(crate) last_done_ns: Option<u64>,
    pub(crate) ack: Histogram,
    pub(crate) unpaired_acks: u64,
    pub(crate) error: Option<String>,
}

impl PubOutcome {
    pub(crate) fn crashed(e: String) -> PubOutcome {
        PubOutcome {
            id: u32::MAX,
            sent: 0,
            completed: 0,
            first_send_ns: None,
            last_done_ns: None,
            ack: Histogram::new(),
            unpaired_acks: 0,
            error: Some(format!("publisher task failed: {e}")),
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_publisher(
    plan: Arc<Plan>,
    qos: u8,
    i: u32,
    topic: String,
    client: AsyncClient,
    eventloop: EventLoop,
    clock: Clock,
    start_ns: u64,
) -> PubOutcome {
    let shared = Arc::new(PubShared::default());
    let mut driver = tokio::spawn(drive_publisher(
        eventloop,
        qos,
        i,
        plan.inflight,
        shared.clone(),
        clock,
    ));

    // Publishers share the total rate evenly and are staggered within one interval.
    let schedule = plan.rate.map(|r| {
        RateSchedule::new(
            r / f64::from(plan.publishers),
            f64::from(i) / f64::from(plan.publishers),
        )
    });
    let end_ns = match plan.stop {
        Stop::After(d) => Some(start_ns + d.as_nanos() as u64),
        Stop::Messages(_) => None,
    };
    tokio::time::sleep_until(clock.instant_at(start_ns)).await;
    let mut sent = 0u64;
    let mut first_send_ns = None;
    let mut error = None;
    loop {
        if let Stop::Messages(k) = plan.stop {
            if sent >= k {
                break;
            }
        }
        let intended = match schedule {
            Some(s) => {
                let t = start_ns + s.intended_offset_ns(sent);
                if end_ns.is_some_and(|end| t >= end) {
                    break;
                }
                tokio::time::sleep_until(clock.instant_at(t)).await;
                Some(t)
            }
            None => None,
        };
        let now = clock.now_ns();
        if intended.is_none() && end_ns.is_some_and(|end| now >= end) {
            break;
        }
        let header = payload::Header {
            publisher: i,
            seq: sent,
            sent_ns: now,
            intended_ns: intended.unwrap_or(now),
        };
        let body = payload::encode(&header, plan.size);
        // Resolves once the event loop has room for the request: a publisher that is
        // out of in-flight slots waits here, and with --rate that delay shows in the
        // latency measured from the scheduled time.
        if let Err(e) = client
            .publish(topic.as_str(), to_qos(qos), false, body)
            .await
        {
            error = Some(
                shared
                    .error()
                    .unwrap_or_else(|| format!("publisher {i}: {e}")),
            );
            break;
        }
        first_send_ns.get_or_insert(now);
        sent += 1;
        if let Some(e) = shared.error() {
            error = Some(e);
            break;
        }
    }

    // Every message acknowledged (or written, at QoS 0) before DISCONNECT: a QoS 2
    // message whose PUBCOMP has not come back is still in flight, and closing now
    // could lose it.
    if error.is_none() {
        let deadline = tokio::time::Instant::now() + plan.timeout;
        while shared.completed.load(Ordering::Acquire) < sent {
            if let Some(e) = shared.error() {
                error = Some(e);
                break;
            }
            if tokio::time::timeout_at(deadline, shared.notify.notified())
                .await
                .is_err()
            {
                let done = shared.completed.load(Ordering::Acquire);
                error = Some(format!(
                    "publisher {i}: {} of {sent} messages not acknowledged within {:?}",
                    sent - done,
                    plan.timeout
                ));
                break;
            }
        }
    }
    let _ = client.try_disconnect();
    let out = match tokio::time::timeout(CLOSE_TIMEOUT, &mut driver).await {
        Ok(Ok(d)) => Some(d),
        Ok(Err(_)) => None,
        Err(_) => {
            driver.abort();
            None
        }
    };
    let (ack, unpaired_acks) = out.map_or((Histogram::new(), 0), |d| (d.ack, d.unpaired));
    let last = shared.last_done_ns.load(Ordering::Acquire);
    PubOutcome {
        id: i,
        sent,
        completed: shared.completed.load(Ordering::Acquire),
        first_send_ns,
        last_done_ns: (last > 0).then_some(last),
        ack,
        unpaired_acks,
        error: error.or_else(|| shared.error()),
    }
}

pub(crate) struct DriverOut {
    pub(crate) ack: Histogram,
    pub(crate) unpaired: u64,
}

/// Drives a publisher's event loop and times acknowledgements.
///
/// rumqttc's `publish` returns no packet id. The event loop assigns it when it takes
/// the request from its channel, writes and flushes the PUBLISH, and only then yields
/// `Outgoing::Publish(pkid)`: that instant is the send time. A packet id is not reused
/// before its acknowledgement arrives (rumqttc holds the next publish back on a
/// collision), so one slot per id pairs each PUBACK (QoS 1) or PUBCOMP (QoS 2) with
/// the PUBLISH it acknowledges, whatever order the broker acknowledges in.
pub(crate) async fn drive_publisher(
    mut eventloop: EventLoop,
    qos: u8,
    i: u32,
    inflight: u16,
    shared: Arc<PubShared>,
    clock: Clock,
) -> DriverOut {
    // rumqttc numbers packets 1..=inflight; slot 0 is QoS 0's "no id".
    let mut sent_at = vec![0u64; usize::from(inflight) + 1];
    let mut out = DriverOut {
        ack: Histogram::new(),
        unpaired: 0,
    };
    let complete = |shared: &PubShared, now: u64| {
        shared.last_done_ns.store(now, Ordering::Release);
        shared.completed.fetch_add(1, Ordering::AcqRel);
        shared.notify.notify_one();
    };
    loop {
        let ev = eventloop.poll().await;
        let now = clock.now_ns();
        let acked = match ev {
            Ok(Event::Outgoing(Outgoing::Publish(0))) => {
                complete(&shared, now);
                None
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(slot) = sent_at.get_mut(usize::from(pkid)) {
                    *slot = now;
                }
                None
            }
            Ok(Event::Incoming(Packet::PubAck(a))) if qos == 1 => Some(a.pkid),
            Ok(Event::Incoming(Packet::PubComp(c))) if qos == 2 => Some(c.pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => None,
            Err(e) => {
                let hint = if qos > 0 {
                    format!(
                        " (a broker whose max_qos is below {qos} disconnects QoS {qos} publishers)"
                    )
                } else {
                    String::new()
                };
                if let Ok(mut slot) = shared.error.lock() {
                    slot.get_or_insert(format!(
                        "publisher {i}: the broker closed the connection: {e}{hint}"
                    ));
                }
                shared.notify.notify_one();
                break;
            }
        };
        if let Some(pkid) = acked {
            let t = sent_at.get_mut(usize::from(pkid)).map_or(0, std::mem::take);
            if t == 0 {
                out.unpaired += 1;
            } else {
                out.ack.record(now.saturating_sub(t));
            }
            complete(&shared, now);
        }
    }
    out
}
