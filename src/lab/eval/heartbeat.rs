//! The heartbeat items: retained (a new subscriber gets the latest), published at
//! QoS 0, and every period ± tolerance, per zone.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{s, Expect, MqttSeen, PerZone};
use crate::lab::ids::*;
use crate::lab::observed::{Sample, Seen};
use crate::lab::{Item, Judge, Lang, Status};
use crate::tr;

pub(crate) fn retained(seen: &MqttSeen, expect: &Expect, lang: Lang) -> Item {
    let judge = Judge::new(HEARTBEAT_RETAINED, lang);
    let (hash, snapshot) = match (&seen.hash, &seen.retained) {
        (Ok(h), Ok(r)) => (h, r),
        (Err(gap), _) | (_, Err(gap)) => return judge.gap(gap),
    };
    let mut per = PerZone::default();
    for zone in &expect.zones {
        let live: Vec<_> = hash
            .heartbeats
            .iter()
            .filter(|h| &h.zone == zone && !h.retain)
            .collect();
        let copy = snapshot
            .heartbeats
            .iter()
            .rev()
            .find(|h| &h.zone == zone && h.retain);
        let (status, line) = match copy {
            None => (
                Status::Fail,
                tr!(
                    lang,
                    "{zone} : aucun heartbeat retenu pour un nouvel abonné",
                    "{zone}: no retained heartbeat for a new subscriber"
                ),
            ),
            Some(c) => match live.iter().find(|h| h.excerpt == c.excerpt) {
                Some(h) => (
                    Status::Pass,
                    tr!(
                        lang,
                        "{zone} : copie retenue = heartbeat publié à +{} : {}",
                        "{zone}: retained copy = heartbeat published at +{}: {}",
                        s(h.at),
                        c.excerpt
                    ),
                ),
                None if live.is_empty() => (
                    Status::NotChecked,
                    tr!(
                        lang,
                        "{zone} : aucun heartbeat publié pendant la fenêtre pour comparer la copie retenue {}",
                        "{zone}: no heartbeat published in the window to compare the retained copy {} with",
                        c.excerpt
                    ),
                ),
                None => (
                    Status::Fail,
                    tr!(
                        lang,
                        "{zone} : la copie retenue n'est aucun des {} heartbeats publiés pendant la fenêtre \
                         (ancienne : publiés sans retain ?) : {}",
                        "{zone}: the retained copy is none of the {} heartbeats published in the window \
                         (stale: published without retain?): {}",
                        live.len(),
                        c.excerpt
                    ),
                ),
            },
        };
        per.push(zone, status, line);
    }
    per.item(judge, |status, zones| match status {
        Status::Pass => tr!(
            lang,
            "un nouvel abonné reçoit le dernier heartbeat de chaque zone",
            "a new subscriber gets each zone's latest heartbeat"
        ),
        Status::Fail => tr!(
            lang,
            "heartbeats non retenus (entrepot/heartbeat/<zone>) : {zones}",
            "heartbeats not retained (entrepot/heartbeat/<zone>): {zones}"
        ),
        Status::NotChecked => tr!(
            lang,
            "rien à comparer pour {zones}",
            "nothing to compare for {zones}"
        ),
    })
}

pub(crate) fn qos(hash: &Seen<Sample>, lang: Lang) -> Item {
    let judge = Judge::new(HEARTBEAT_QOS, lang);
    let sample = match hash {
        Ok(s) => s,
        Err(gap) => return judge.gap(gap),
    };
    let granted = sample.granted.first().and_then(|(_, q)| *q).unwrap_or(0);
    if granted == 0 {
        return judge.not_checked(tr!(
                lang,
                "le broker n'accorde que la QoS 0 à l'abonnement : impossible de voir celle de l'éditeur",
                "the broker grants the subscription QoS 0 only: the publisher's QoS cannot be seen"
            ),
        );
    }
    if sample.heartbeats.is_empty() {
        return judge.not_checked(tr!(lang, "aucun heartbeat reçu", "no heartbeat received"));
    }
    let mut per_zone: BTreeMap<&str, BTreeMap<u8, usize>> = BTreeMap::new();
    for h in &sample.heartbeats {
        *per_zone
            .entry(&h.zone)
            .or_default()
            .entry(h.qos)
            .or_default() += 1;
    }
    let mut evidence = Vec::new();
    let mut bad = Vec::new();
    for (zone, qos) in &per_zone {
        let q: Vec<String> = qos.iter().map(|(q, n)| format!("QoS {q} ×{n}")).collect();
        evidence.push(tr!(lang, "{zone} : {}", "{zone}: {}", q.join(", ")));
        if qos.keys().any(|q| *q != 0) {
            bad.push(*zone);
        }
    }
    if bad.is_empty() {
        judge.pass(tr!(
            lang,
            "heartbeats reçus en QoS 0 sur un abonnement QoS {granted}",
            "heartbeats received at QoS 0 on a QoS {granted} subscription"
        ))
    } else {
        judge.fail(tr!(
            lang,
            "heartbeats publiés au-dessus de la QoS 0 : {}",
            "heartbeats published above QoS 0: {}",
            bad.join(", ")
        ))
    }
    .with(evidence)
}

pub(crate) fn period(hash: &Seen<Sample>, expect: &Expect, lang: Lang) -> Item {
    let judge = Judge::new(HEARTBEAT_PERIOD, lang);
    let sample = match hash {
        Ok(s) => s,
        Err(gap) => return judge.gap(gap),
    };
    let (p, tol, w) = (
        expect.heartbeat_period,
        expect.heartbeat_tolerance,
        expect.window,
    );
    let (lo, hi) = (p.saturating_sub(tol), p + tol);
    let expected = format!("{} ± {}", s(p), s(tol));
    let mut per = PerZone::default();
    for zone in &expect.zones {
        let times: Vec<Duration> = sample
            .heartbeats
            .iter()
            .filter(|h| &h.zone == zone && !h.retain)
            .map(|h| h.at)
            .collect();
        let gaps: Vec<Duration> = times
            .windows(2)
            .map(|t| t[1].saturating_sub(t[0]))
            .collect();
        let shown: Vec<String> = gaps.iter().take(8).map(|g| s(*g)).collect();
        let shown = shown.join(", ");
        let n = times.len();
        let (status, line) = if n >= 2 {
            if gaps.iter().all(|g| (lo..=hi).contains(g)) {
                (
                    Status::Pass,
                    tr!(
                        lang,
                        "{zone} : {n} heartbeats, intervalles {shown}",
                        "{zone}: {n} heartbeats, intervals {shown}"
                    ),
                )
            } else {
                (
                    Status::Fail,
                    tr!(
                        lang,
                        "{zone} : intervalles {shown} (attendu {expected})",
                        "{zone}: intervals {shown} (expected {expected})"
                    ),
                )
            }
        } else if w >= hi * 2 || (n == 0 && w >= hi) {
            let seen_n = tr!(
                lang,
                "{n} heartbeat(s) en {}",
                "{n} heartbeat(s) in {}",
                s(w)
            );
            (
                Status::Fail,
                tr!(
                    lang,
                    "{zone} : {seen_n} (attendu un toutes les {expected})",
                    "{zone}: {seen_n} (expected one every {expected})"
                ),
            )
        } else {
            (
                Status::NotChecked,
                tr!(
                    lang,
                    "{zone} : {n} heartbeat(s) : fenêtre de {} trop courte pour mesurer une période de {expected}",
                    "{zone}: {n} heartbeat(s): a {} window is too short to measure a {expected} period",
                    s(w)
                ),
            )
        };
        per.push(zone, status, line);
    }
    per.item(judge, |status, zones| match status {
        Status::Pass => tr!(
            lang,
            "un heartbeat toutes les {expected} par zone",
            "one heartbeat every {expected} per zone"
        ),
        Status::Fail => tr!(
            lang,
            "période hors de {expected} : {zones}",
            "period outside {expected}: {zones}"
        ),
        Status::NotChecked => tr!(
            lang,
            "période non mesurable pour {zones} (--window plus long)",
            "period not measurable for {zones} (longer --window)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::eval::fixtures::*;
    use crate::lab::observed::{Anonymous, Gap, SeenHeartbeat};

    fn expect(window: f64, period: f64) -> Expect {
        Expect {
            zones: vec!["nord".into(), "sud".into(), "est".into()],
            window: secs(window),
            heartbeat_period: secs(period),
            heartbeat_tolerance: secs(5.0),
        }
    }

    fn seen(heartbeats: Vec<SeenHeartbeat>, snapshot: Vec<SeenHeartbeat>) -> MqttSeen {
        MqttSeen {
            anonymous: Ok(Anonymous::Accepted),
            hash: Ok(sample(good_readings(), heartbeats)),
            plus: Err(Gap::NotChecked(String::new())),
            round_trip: Err(Gap::NotChecked(String::new())),
            retained: Ok(sample(vec![], snapshot)),
        }
    }

    /// What a new subscriber gets at the end: a copy of heartbeat `n` of each zone.
    fn copies(n: u32) -> Vec<SeenHeartbeat> {
        ["nord", "sud", "est"]
            .iter()
            .map(|z| heartbeat(70.5, z, 0, true, n))
            .collect()
    }

    #[test]
    fn retained_means_a_new_subscriber_gets_the_latest() {
        let e = expect(70.0, 30.0);
        let i = retained(&seen(good_heartbeats(), copies(3)), &e, Lang::En);
        assert_eq!(i.status, Status::Pass, "{i:?}");
        assert!(
            i.evidence[0].starts_with("nord: retained copy = heartbeat published at +65 s"),
            "{i:?}"
        );

        // No retained copy at all, or an old one (published before, without retain now).
        let i = retained(&seen(good_heartbeats(), vec![]), &e, Lang::Fr);
        assert_eq!(i.status, Status::Fail);
        assert!(i.summary.contains("nord, sud, est"), "{i:?}");
        let i = retained(&seen(good_heartbeats(), copies(0)), &e, Lang::En);
        assert_eq!(i.status, Status::Fail);
        assert!(i.evidence[0].contains("stale"), "{i:?}");

        // Nothing published in the window: nothing to compare with.
        let only_old: Vec<_> = good_heartbeats().into_iter().filter(|h| h.retain).collect();
        let i = retained(&seen(only_old, copies(0)), &e, Lang::En);
        assert_eq!(i.status, Status::NotChecked, "{i:?}");
    }

    #[test]
    fn qos_zero() {
        let s = seen(good_heartbeats(), vec![]);
        let i = qos(&s.hash, Lang::En);
        assert_eq!(i.status, Status::Pass, "{i:?}");
        let mut hb = good_heartbeats();
        hb.push(heartbeat(40.0, "sud", 1, false, 9));
        let i = qos(&seen(hb, vec![]).hash, Lang::En);
        assert_eq!(i.status, Status::Fail);
        assert!(i.summary.ends_with("sud"), "{i:?}");
        let mut s = seen(good_heartbeats(), vec![]);
        if let Ok(h) = s.hash.as_mut() {
            h.granted = vec![("entrepot/#".into(), Some(0))];
        }
        assert_eq!(qos(&s.hash, Lang::En).status, Status::NotChecked);
        assert_eq!(
            qos(&seen(vec![], vec![]).hash, Lang::En).status,
            Status::NotChecked
        );
    }

    #[test]
    fn period_per_zone() {
        let s = seen(good_heartbeats(), vec![]);
        let i = period(&s.hash, &expect(70.0, 30.0), Lang::En);
        assert_eq!(i.status, Status::Pass, "{i:?}");
        assert_eq!(i.evidence[0], "nord: 3 heartbeats, intervals 30 s, 30 s");

        // Every 10 s instead of 30 s.
        let fast: Vec<_> = (0..7)
            .map(|k| heartbeat(10.0 * k as f64, "sud", 0, false, k))
            .collect();
        let mut hb = good_heartbeats();
        hb.retain(|h| h.zone != "sud");
        hb.extend(fast);
        let i = period(&seen(hb, vec![]).hash, &expect(70.0, 30.0), Lang::En);
        assert_eq!(i.status, Status::Fail);
        assert!(
            i.evidence[1].starts_with("sud: intervals 10 s, 10 s"),
            "{i:?}"
        );
        assert!(i.evidence[1].ends_with("(expected 30 s ± 5 s)"), "{i:?}");

        // One heartbeat in 70 s: the period is longer than 35 s.
        let one: Vec<_> = ["nord", "sud", "est"]
            .iter()
            .map(|z| heartbeat(3.0, z, 0, false, 1))
            .collect();
        assert_eq!(
            period(
                &seen(one.clone(), vec![]).hash,
                &expect(70.0, 30.0),
                Lang::En
            )
            .status,
            Status::Fail
        );
        // ...but a 20 s window cannot tell.
        let i = period(&seen(one, vec![]).hash, &expect(20.0, 30.0), Lang::En);
        assert_eq!(i.status, Status::NotChecked, "{i:?}");
    }
}
