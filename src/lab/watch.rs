//! The MQTT edge of `arng check-lab`: subscriptions that record what the team's
//! broker delivers into a bounded [`Sample`], an anonymous connection attempt, and
//! the probe reading's round trip (on [`crate::probe::Prober`]).
//!
//! Every client has a clean session and a name that says what it is
//! (`arng-check-lab-<pid>-<role>`), and disconnects at the end: nothing stays on the
//! broker but the probe reading itself.

use std::time::Duration;

use chrono::Utc;
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::observed::{Anonymous, Delivered, Gap, Markers, RoundTrip, Sample, Seen};
use crate::config::MqttArgs;
use crate::domain::topic::{Topic, THRESHOLDS_TOPIC};
use crate::domain::{AlertLevel, Zone};
use crate::mqtt::MqttError;
use crate::probe::prober::RETAINED_WAIT;
use crate::probe::{ms, Prober};
use crate::supervision;

/// A client id for `role`, unique to this process.
pub fn client_id(role: &str) -> String {
    format!("arng-check-lab-{}-{role}", std::process::id())
}

/// A connection failure in the words of the report: a refused account cannot be
/// checked further (our credentials), anything else is the broker failing.
fn gap(account: Option<&str>, e: MqttError) -> Gap {
    match e {
        MqttError::Refused { .. } => Gap::NotChecked(format!(
            "{e} (account {})",
            account.unwrap_or("none: --mqtt-username")
        )),
        other => Gap::Failed(other.to_string()),
    }
}

/// A running subscription.
pub struct Watch {
    client: AsyncClient,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Sample>,
}

impl Watch {
    /// Connects as `role`, subscribes to `filters` and records every delivery (times
    /// since `t0`) until [`Watch::finish`].
    pub async fn start(
        args: &MqttArgs,
        role: &str,
        filters: &[(&str, QoS)],
        marks: Markers,
        t0: Instant,
        timeout: Duration,
    ) -> Seen<Watch> {
        let account = args.username.as_deref();
        let (client, mut eventloop) = crate::mqtt::connect(args, &client_id(role), timeout)
            .await
            .map_err(|e| gap(account, e))?;
        let wanted = filters
            .iter()
            .map(|(f, q)| SubscribeFilter::new((*f).to_owned(), *q));
        client
            .subscribe_many(wanted)
            .await
            .map_err(|e| Gap::Failed(e.to_string()))?;
        let deadline = Instant::now() + timeout;
        let mut sample = Sample::default();
        // Retained messages may come right after the SUBACK: record everything.
        let codes = loop {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Err(_) => return Err(Gap::Failed(format!("no SUBACK within {timeout:?}"))),
                Ok(Err(e)) => return Err(Gap::Failed(format!("lost the broker: {e}"))),
                Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => break ack.return_codes,
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => record(&mut sample, &p, &marks, t0),
                Ok(Ok(_)) => {}
            }
        };
        sample.granted = filters
            .iter()
            .zip(codes.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|((f, _), code)| {
                let granted = match code {
                    Some(SubscribeReasonCode::Success(q)) => Some(*q as u8),
                    _ => None,
                };
                ((*f).to_owned(), granted)
            })
            .collect();
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    // Stop asked: what was recorded is the sample (checked first, so
                    // that the DISCONNECT that follows is not taken for a loss).
                    _ = &mut stopped => break,
                    ev = eventloop.poll() => match ev {
                        Ok(Event::Incoming(Packet::Publish(p))) => record(&mut sample, &p, &marks, t0),
                        Ok(_) => {}
                        // A reconnection would come back without the subscriptions
                        // (clean session): the sample ends here, and says so.
                        Err(e) => {
                            sample.lost = Some(e.to_string());
                            break;
                        }
                    },
                }
            }
            // Let the DISCONNECT go out.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Ok(ev) = eventloop.poll().await {
                    if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
            sample
        });
        Ok(Watch { client, stop, task })
    }

    /// Disconnects and returns what was recorded.
    pub async fn finish(self) -> Sample {
        let _ = self.stop.send(());
        let _ = self.client.try_disconnect();
        self.task.await.unwrap_or_default()
    }
}

fn record(sample: &mut Sample, p: &rumqttc::Publish, marks: &Markers, t0: Instant) {
    let m = Delivered {
        at: t0.elapsed(),
        topic: &p.topic,
        payload: &p.payload,
        qos: p.qos as u8,
        retain: p.retain,
    };
    sample.record(m, marks, Utc::now());
}

/// Tries to connect without an account.
pub async fn anonymous(args: &MqttArgs, timeout: Duration) -> Seen<Anonymous> {
    let mut anon = args.clone();
    anon.username = None;
    anon.password = None;
    match crate::mqtt::connect(&anon, &client_id("anonymous"), timeout).await {
        Ok((client, mut eventloop)) => {
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
            Ok(Anonymous::Accepted)
        }
        // The reason without arng's hint about its own options.
        Err(MqttError::Refused { reason, .. }) => Ok(Anonymous::Refused(
            reason.split(" (").next().unwrap_or_default().to_owned(),
        )),
        Err(e) => Err(Gap::Failed(e.to_string())),
    }
}

/// Publishes one probe reading (sensor `e2e-probe`, values in the middle of the
/// zone's normal range, so it raises no alert) on `entrepot/<zone>/e2e-probe/v1` and
/// waits for it on a subscription to that very topic.
pub async fn round_trip(args: &MqttArgs, zone: &Zone, timeout: Duration) -> Seen<RoundTrip> {
    let account = args.username.as_deref();
    let mut p = Prober::connect(args, &client_id("probe"), timeout)
        .await
        .map_err(|e| gap(account, e))?;
    let result = async {
        let sensor = crate::domain::SensorId::new(supervision::PROBE_SENSOR).expect("valid name");
        let topic = Topic::reading(zone, &sensor).to_string();
        let filters = vec![
            (topic.clone(), QoS::AtLeastOnce),
            (THRESHOLDS_TOPIC.to_owned(), QoS::AtLeastOnce),
        ];
        let granted = p
            .subscribe(filters, Instant::now() + timeout)
            .await
            .map_err(|e| Gap::Failed(e.to_string()))?;
        if !granted[0] {
            return Err(Gap::NotChecked(format!(
                "the broker refuses this account's subscription to {topic}"
            )));
        }
        // arng's own chain says its thresholds on MQTT; other chains get the defaults.
        let thresholds = p.retained_thresholds(RETAINED_WAIT).await;
        let (temp, hum) = supervision::normal_probe_values(thresholds.for_zone(zone));
        let reading = p.reading(zone, temp, hum, AlertLevel::Normal);
        let payload = reading.to_json();
        let sent = Instant::now();
        let acked = p
            .publish(&reading, sent + timeout)
            .await
            .map_err(|e| Gap::Failed(e.to_string()))?;
        let back = p
            .wait_message(sent, sent + timeout, |t, body| {
                t == topic && body == payload.as_bytes()
            })
            .await;
        Ok(RoundTrip {
            topic,
            payload,
            acked_ms: ms(acked),
            back_ms: back.map(|m| ms(m.at - sent)),
        })
    }
    .await;
    p.disconnect().await;
    result
}

/// A fresh subscription to the heartbeats, for `wait`: what a new subscriber gets
/// (the retained copies).
pub async fn retained(
    args: &MqttArgs,
    marks: Markers,
    timeout: Duration,
    wait: Duration,
) -> Seen<Sample> {
    let filters = [(crate::domain::topic::HEARTBEATS_FILTER, QoS::ExactlyOnce)];
    let w = Watch::start(args, "retained", &filters, marks, Instant::now(), timeout).await?;
    tokio::time::sleep(wait).await;
    Ok(w.finish().await)
}
