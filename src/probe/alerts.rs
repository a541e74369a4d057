//! The alert hops of `arng check-e2e`: `debounce` critical probes must raise the
//! probe's critical alert, seen on MQTT (`alert mqtt`) and over REST (`alert rest`),
//! and `debounce` normal probes must clear it (`alert cleared`), so that a check
//! leaves nothing raised behind.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::check::{HOP_ALERT_CLEARED, HOP_ALERT_MQTT, HOP_ALERT_REST};
use super::{ms, poll, ApiClient, Cause, Failure, ProbeError, Prober};
use crate::domain::topic::Topic;
use crate::domain::{Alert, AlertKind, AlertLevel, AlertState, Thresholds, Zone};
use crate::report::Check;
use crate::supervision::{self, PROBE_SENSOR};

/// The hops of the probe's alert, in report order.
pub const ALERT_HOPS: [&str; 3] = [HOP_ALERT_MQTT, HOP_ALERT_REST, HOP_ALERT_CLEARED];

/// Raises a critical alert with `debounce` critical probes, checks it comes back on
/// MQTT and over REST, then clears it with `debounce` normal probes.
pub async fn alert_hops(
    p: &mut Prober,
    zone: &Zone,
    thresholds: &Thresholds,
    api: &ApiClient,
    timeout: Duration,
    hops: &mut Vec<Check>,
) {
    let zt = thresholds.for_zone(zone);
    let (temp, hum) = supervision::normal_probe_values(zt);
    let debounce = thresholds.debounce.max(1);
    let Some(hot) = supervision::critical_probe_temp(&zt.temp) else {
        let why = "skipped: no valid temperature is critical for this zone's thresholds";
        hops.extend(ALERT_HOPS.map(|hop| Check::failed(hop, Cause::Skipped, None, why)));
        return;
    };
    let probes = |temp: f64, level: AlertLevel| Probes {
        zone,
        n: debounce,
        temp,
        hum,
        level,
        timeout,
    };
    // Normal probes first: a check interrupted earlier may have left the probe's
    // alert raised, and the raise below must be a new one.
    if let Err(e) = probes(temp, AlertLevel::Normal).send(p).await {
        let why = format!("publishing the normal probes: {e}");
        hops.extend(ALERT_HOPS.map(|hop| Check::failed(hop, e.cause(), None, why.clone())));
        return;
    }
    let since = Instant::now();
    let raised = match probes(hot, AlertLevel::Critical).send(p).await {
        Ok(Some(last)) => last,
        Ok(None) => {
            hops.extend(ALERT_HOPS.map(|hop| Check::fail(hop, None, "no critical probe was sent")));
            return;
        }
        Err(e) => {
            let why = format!("publishing the critical probes: {e}");
            hops.extend(ALERT_HOPS.map(|hop| Check::failed(hop, e.cause(), None, why.clone())));
            return;
        }
    };
    let (sent_at, raise_ts) = raised;
    let deadline = sent_at + timeout;
    let alert_topic = Topic::Alert { zone: zone.clone() }.to_string();
    let is_probe_alert = |state: AlertState, ts: DateTime<Utc>| {
        let (zone, alert_topic) = (zone.clone(), alert_topic.clone());
        move |topic: &str, payload: &[u8]| {
            topic == alert_topic
                && Alert::parse(&zone, payload).is_ok_and(|a| {
                    a.sensor
                        .as_ref()
                        .is_some_and(|s| s.as_str() == PROBE_SENSOR)
                        && a.metric == AlertKind::Temp
                        && a.severity == AlertLevel::Critical
                        && a.state == state
                        && a.timestamp == ts
                })
        }
    };
    let what =
        format!("critical temp alert of {zone}/{PROBE_SENSOR} ({debounce} readings at {hot} °C)");
    let (on_mqtt, on_rest) = tokio::join!(
        p.wait_message(
            since,
            deadline,
            is_probe_alert(AlertState::Raised, raise_ts)
        ),
        poll(deadline, || api.probe_alert(zone, raise_ts))
    );
    hops.push(match on_mqtt {
        Some(m) => Check::pass(
            HOP_ALERT_MQTT,
            Some(ms(m.at - sent_at)),
            format!("raised on {alert_topic} ({debounce} readings at {hot} °C)"),
        ),
        None => Check::failed(
            HOP_ALERT_MQTT,
            Cause::NotSeen,
            Some(ms(sent_at.elapsed())),
            format!(
                "no {what} on {alert_topic} within {}",
                humantime::format_duration(timeout)
            ),
        ),
    });
    hops.push(match on_rest {
        Ok(((), at)) => Check::pass(
            HOP_ALERT_REST,
            Some(ms(at - sent_at)),
            format!("GET /alerts?zone={zone} lists it"),
        ),
        Err(Some(e)) => Check::failed(
            HOP_ALERT_REST,
            e.cause(),
            Some(ms(sent_at.elapsed())),
            e.to_string(),
        ),
        Err(None) => Check::failed(
            HOP_ALERT_REST,
            Cause::NotSeen,
            Some(ms(sent_at.elapsed())),
            format!(
                "GET /alerts?zone={zone} did not list the {what} within {}",
                humantime::format_duration(timeout)
            ),
        ),
    });

    // Leave nothing raised behind.
    let since = Instant::now();
    hops.push(match probes(temp, AlertLevel::Normal).send(p).await {
        Ok(Some((sent_at, clear_ts))) => {
            let seen = p
                .wait_message(
                    since,
                    sent_at + timeout,
                    is_probe_alert(AlertState::Cleared, clear_ts),
                )
                .await;
            match seen {
                Some(m) => Check::pass(
                    HOP_ALERT_CLEARED,
                    Some(ms(m.at - sent_at)),
                    format!("cleared after {debounce} normal probe(s)"),
                ),
                None => Check::failed(
                    HOP_ALERT_CLEARED,
                    Cause::NotSeen,
                    Some(ms(sent_at.elapsed())),
                    format!(
                        "no clearing alert on {alert_topic} within {}",
                        humantime::format_duration(timeout)
                    ),
                ),
            }
        }
        Ok(None) => Check::fail(HOP_ALERT_CLEARED, None, "no clearing probe was sent"),
        Err(e) => Check::failed(
            HOP_ALERT_CLEARED,
            e.cause(),
            None,
            format!("publishing the clearing probes: {e}"),
        ),
    });
}

/// `n` probe readings of the same values, published one after the other.
struct Probes<'a> {
    zone: &'a Zone,
    n: u32,
    temp: f64,
    hum: f64,
    level: AlertLevel,
    timeout: Duration,
}

impl Probes<'_> {
    /// Publishes them; when and with which timestamp the last one was sent.
    async fn send(&self, p: &mut Prober) -> Result<Option<(Instant, DateTime<Utc>)>, ProbeError> {
        let mut last = None;
        for _ in 0..self.n {
            let r = p.reading(self.zone, self.temp, self.hum, self.level);
            let sent = Instant::now();
            p.publish(&r, sent + self.timeout).await?;
            last = Some((sent, r.timestamp));
        }
        Ok(last)
    }
}
