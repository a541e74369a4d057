//! The broker items: anonymous clients refused, the probe's round trip, the `+` and
//! `#` wildcards, and the zones that publish.

use std::collections::{BTreeMap, BTreeSet};

use super::{s, Expect, MqttSeen};
use crate::domain::topic::{filter_matches, READINGS_FILTER};
use crate::lab::ids::*;
use crate::lab::observed::{Anonymous, RoundTrip, Sample, Seen};
use crate::lab::{Item, Judge, Lang, Status};
use crate::tr;

pub(crate) fn auth(anonymous: &Seen<Anonymous>, lang: Lang) -> Item {
    let judge = Judge::new(BROKER_AUTH, lang);
    match anonymous {
        Ok(Anonymous::Refused(why)) => judge.pass(tr!(
            lang,
            "connexion anonyme refusée : {why}",
            "anonymous connection refused: {why}"
        )),
        Ok(Anonymous::Accepted) => judge.fail(tr!(
            lang,
            "le broker accepte un client anonyme (allow_anonymous true ?)",
            "the broker accepts an anonymous client (allow_anonymous true?)"
        )),
        Err(gap) => judge.gap(gap),
    }
}

pub(crate) fn round_trip(rt: &Seen<RoundTrip>, lang: Lang) -> Item {
    let judge = Judge::new(BROKER_ROUND_TRIP, lang);
    let rt = match rt {
        Ok(rt) => rt,
        Err(gap) => return judge.gap(gap),
    };
    let (topic, acked) = (&rt.topic, rt.acked_ms);
    let evidence = vec![tr!(
        lang,
        "payload publié : {}",
        "published payload: {}",
        rt.payload
    )];
    match rt.back_ms {
        Some(back) => judge.pass(tr!(
            lang,
            "sonde publiée sur {topic} (PUBACK en {acked:.0} ms), reçue en retour en {back:.0} ms",
            "probe published on {topic} (PUBACK in {acked:.0} ms), received back in {back:.0} ms"
        )),
        None => judge.fail(tr!(
            lang,
            "sonde acquittée (PUBACK en {acked:.0} ms) mais jamais reçue en retour sur {topic} : \
                 ce compte peut-il y publier et s'y abonner ? (Mosquitto ignore sans erreur une \
                 publication interdite par l'ACL)",
            "probe acknowledged (PUBACK in {acked:.0} ms) but never received back on {topic}: \
                 may this account publish and subscribe there? (Mosquitto silently drops a \
                 publish its ACL denies)"
        )),
    }
    .with(evidence)
}

/// Topics a sample delivered, a few named.
fn some(topics: &BTreeSet<String>, n: usize) -> String {
    let mut v: Vec<&str> = topics.iter().map(String::as_str).take(n).collect();
    if topics.len() > n {
        v.push("…");
    }
    v.join(", ")
}

/// The topics a subscription delivered, and whether it lasted the whole window.
fn sample_evidence(sample: &Sample, topics: &BTreeSet<String>, lang: Lang) -> Vec<String> {
    let mut evidence = vec![tr!(lang, "topics : {}", "topics: {}", some(topics, 12))];
    if let Some(why) = &sample.lost {
        evidence.push(tr!(
            lang,
            "connexion perdue avant la fin de la fenêtre : {why} (l'échantillon s'arrête là)",
            "connection lost before the end of the window: {why} (the sample stops there)"
        ));
    }
    evidence
}

/// The sample of `seen`, or the item that says why there is none: no connection,
/// or a subscription the broker refused this account (not the team's failure).
fn granted(seen: &Seen<Sample>, judge: Judge, lang: Lang) -> Result<&Sample, Item> {
    let sample = seen.as_ref().map_err(|gap| judge.gap(gap))?;
    match sample.granted.iter().find(|(_, q)| q.is_none()) {
        None => Ok(sample),
        Some((f, _)) => Err(judge.not_checked(tr!(
            lang,
            "le broker refuse l'abonnement à {f} pour ce compte",
            "the broker refuses this account's subscription to {f}"
        ))),
    }
}

pub(crate) fn plus(seen: &MqttSeen, expect: &Expect, lang: Lang) -> Item {
    let judge = Judge::new(BROKER_PLUS, lang);
    let sample = match granted(&seen.plus, judge, lang) {
        Ok(s) => s,
        Err(item) => return item,
    };
    let topics = sample.topics();
    let outside: BTreeSet<String> = topics
        .iter()
        .filter(|t| !filter_matches(READINGS_FILTER, t))
        .cloned()
        .collect();
    let n = sample.messages;
    let w = s(expect.window);
    if !outside.is_empty() {
        return judge.fail(tr!(
            lang,
            "{READINGS_FILTER} a livré des topics qu'il ne couvre pas : {}",
            "{READINGS_FILTER} delivered topics it does not match: {}",
            some(&outside, 5)
        ));
    }
    if n == 0 {
        let any = seen
            .hash
            .as_ref()
            .is_ok_and(|h| h.readings_total > 0 || h.probe.is_some());
        let (status, why) = if any {
            (
                Status::Fail,
                tr!(
                    lang,
                    "{READINGS_FILTER} n'a rien livré en {w} alors que entrepot/# a vu des mesures",
                    "{READINGS_FILTER} delivered nothing in {w} while entrepot/# saw readings"
                ),
            )
        } else {
            (
                Status::NotChecked,
                tr!(
                    lang,
                    "aucune mesure publiée en {w}",
                    "no reading published in {w}"
                ),
            )
        };
        return judge.verdict(status, why);
    }
    let k = topics.len();
    let mut evidence = sample_evidence(sample, &topics, lang);
    if let Ok(h) = &seen.hash {
        let missed: BTreeSet<String> = h
            .readings
            .iter()
            .map(|r| r.topic.clone())
            .filter(|t| !topics.contains(t))
            .collect();
        if !missed.is_empty() {
            evidence.push(tr!(
                lang,
                "vus sur entrepot/# mais pas ici (début ou fin de fenêtre ?) : {}",
                "seen on entrepot/# but not here (start or end of the window?): {}",
                some(&missed, 5)
            ));
        }
    }
    judge
        .pass(tr!(
            lang,
            "{READINGS_FILTER} : {n} messages sur {k} topics, un niveau par +",
            "{READINGS_FILTER}: {n} messages on {k} topics, one level per +"
        ))
        .with(evidence)
}

pub(crate) fn hash(seen: &MqttSeen, expect: &Expect, lang: Lang) -> Item {
    let judge = Judge::new(BROKER_HASH, lang);
    let sample = match granted(&seen.hash, judge, lang) {
        Ok(s) => s,
        Err(item) => return item,
    };
    let n = sample.messages;
    let topics = sample.topics();
    let depths: Vec<String> = sample
        .depths
        .iter()
        .map(|(d, n)| tr!(lang, "{n} à {d} niveaux", "{n} at {d} levels"))
        .collect();
    let depths = depths.join(", ");
    let k = topics.len();
    let evidence = sample_evidence(sample, &topics, lang);
    let deep = sample.depths.keys().any(|d| *d >= 3);
    if n == 0 || !deep {
        let w = s(expect.window);
        // Nothing seen is the team's failure only if the probe's own reading came back.
        let status = if seen.round_trip.is_ok() {
            Status::Fail
        } else {
            Status::NotChecked
        };
        let why = tr!(
            lang,
            "entrepot/# n'a rien livré sous entrepot/x/ en {w} ({n} messages)",
            "entrepot/# delivered nothing under entrepot/x/ in {w} ({n} messages)"
        );
        return judge.verdict(status, why).with(evidence);
    }
    judge
        .pass(tr!(
            lang,
            "entrepot/# : {n} messages sur {k} topics ({depths})",
            "entrepot/#: {n} messages on {k} topics ({depths})"
        ))
        .with(evidence)
}

pub(crate) fn zones(hash: &Seen<Sample>, expect: &Expect, lang: Lang) -> Item {
    let judge = Judge::new(BROKER_ZONES, lang);
    let sample = match hash {
        Ok(s) => s,
        Err(gap) => return judge.gap(gap),
    };
    let mut per_zone: BTreeMap<&str, (usize, BTreeSet<&str>, BTreeSet<u8>)> = BTreeMap::new();
    for r in &sample.readings {
        let e = per_zone.entry(r.zone.as_str()).or_default();
        e.0 += 1;
        e.1.insert(r.sensor.as_str());
        e.2.insert(r.qos);
    }
    let mut evidence = Vec::new();
    let mut silent = Vec::new();
    for zone in &expect.zones {
        match per_zone.get(zone.as_str()) {
            Some((n, sensors, qos)) => {
                let sensors: Vec<&str> = sensors.iter().copied().collect();
                let sensors = sensors.join(", ");
                let qos: Vec<String> = qos.iter().map(u8::to_string).collect();
                let qos = qos.join("/");
                evidence.push(tr!(
                    lang,
                    "{zone} : {n} mesures, capteurs {sensors}, QoS {qos}",
                    "{zone}: {n} readings, sensors {sensors}, QoS {qos}"
                ));
            }
            None => {
                evidence.push(tr!(lang, "{zone} : aucune mesure", "{zone}: no reading"));
                silent.push(zone.as_str());
            }
        }
    }
    let others: Vec<&str> = per_zone
        .keys()
        .copied()
        .filter(|z| !expect.zones.iter().any(|e| e == z))
        .collect();
    if !others.is_empty() {
        evidence.push(tr!(
            lang,
            "autres zones vues : {}",
            "other zones seen: {}",
            others.join(", ")
        ));
    }
    let w = s(expect.window);
    let all = expect.zones.join(", ");
    if silent.is_empty() {
        judge.pass(tr!(
            lang,
            "{all} publient (en {w})",
            "{all} publish (in {w})"
        ))
    } else {
        judge.fail(tr!(
            lang,
            "aucune mesure de {} en {w} sur entrepot/<zone>/<capteur>/v1",
            "no reading from {} in {w} on entrepot/<zone>/<capteur>/v1",
            silent.join(", ")
        ))
    }
    .with(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::eval::fixtures::*;
    use crate::lab::observed::Gap;

    fn expect() -> Expect {
        Expect {
            zones: vec!["nord".into(), "sud".into(), "est".into()],
            window: secs(70.0),
            heartbeat_period: secs(30.0),
            heartbeat_tolerance: secs(5.0),
        }
    }

    fn seen() -> MqttSeen {
        let mut plus = sample(good_readings(), vec![]);
        plus.granted = vec![(READINGS_FILTER.into(), Some(0))];
        MqttSeen {
            anonymous: Ok(Anonymous::Refused("not authorized".into())),
            hash: Ok(sample(good_readings(), good_heartbeats())),
            plus: Ok(plus),
            round_trip: Ok(RoundTrip {
                topic: "entrepot/nord/e2e-probe/v1".into(),
                payload: "{}".into(),
                acked_ms: 2.0,
                back_ms: Some(3.0),
            }),
            retained: Ok(sample(vec![], vec![])),
        }
    }

    #[test]
    fn authentication() {
        let en = Lang::En;
        let i = auth(&Ok(Anonymous::Refused("not authorized".into())), en);
        assert_eq!(i.status, Status::Pass);
        assert!(i.summary.contains("not authorized"), "{i:?}");
        assert_eq!(auth(&Ok(Anonymous::Accepted), en).status, Status::Fail);
        let i = auth(&Err(Gap::Failed("cannot reach broker".into())), Lang::Fr);
        assert_eq!(
            (i.status, i.summary.as_str()),
            (Status::Fail, "cannot reach broker")
        );
    }

    #[test]
    fn round_trip_needs_the_probe_back() {
        let s = seen();
        let i = round_trip(&s.round_trip, Lang::En);
        assert_eq!(i.status, Status::Pass, "{i:?}");
        assert!(i.summary.contains("entrepot/nord/e2e-probe/v1") && i.summary.contains("3 ms"));
        let mut rt = s.round_trip.unwrap();
        rt.back_ms = None;
        let i = round_trip(&Ok(rt), Lang::Fr);
        assert_eq!(i.status, Status::Fail);
        assert!(i.summary.contains("jamais reçue en retour"), "{i:?}");
    }

    #[test]
    fn wildcards() {
        let (s, e) = (seen(), expect());
        let i = plus(&s, &e, Lang::En);
        assert_eq!(i.status, Status::Pass, "{i:?}");
        assert!(i.summary.contains("on 3 topics"), "{i:?}");
        assert_eq!(hash(&s, &e, Lang::En).status, Status::Pass);
        let mut cut = s.clone();
        if let Ok(h) = cut.hash.as_mut() {
            h.lost = Some("payload size limit exceeded".into());
        }
        let i = hash(&cut, &e, Lang::En);
        assert!(
            i.evidence[1].contains("payload size limit exceeded"),
            "{i:?}"
        );
        assert!(hash(&s, &e, Lang::En).summary.contains("at 4 levels"));

        // A topic outside the filter is the broker's failure.
        let mut bad = s.clone();
        if let Ok(p) = bad.plus.as_mut() {
            p.other_topics.insert("entrepot/heartbeat/nord".into(), 1);
        }
        let i = plus(&bad, &e, Lang::En);
        assert_eq!(i.status, Status::Fail);
        assert!(i.summary.contains("entrepot/heartbeat/nord"), "{i:?}");

        // Nothing on + while # saw readings: fail; nothing anywhere: not checked.
        let mut empty = s.clone();
        empty.plus = Ok(sample(vec![], vec![]));
        assert_eq!(plus(&empty, &e, Lang::En).status, Status::Fail);
        empty.hash = Ok(sample(vec![], vec![]));
        assert_eq!(plus(&empty, &e, Lang::En).status, Status::NotChecked);
        assert_eq!(hash(&empty, &e, Lang::En).status, Status::Fail);
        empty.round_trip = Err(Gap::NotChecked("--no-probe".into()));
        assert_eq!(hash(&empty, &e, Lang::En).status, Status::NotChecked);

        // A refused subscription is not the team's failure.
        let mut refused = s.clone();
        if let Ok(p) = refused.plus.as_mut() {
            p.granted = vec![(READINGS_FILTER.into(), None)];
        }
        assert_eq!(plus(&refused, &e, Lang::En).status, Status::NotChecked);
    }

    #[test]
    fn every_zone_must_publish() {
        let (s, mut e) = (seen(), expect());
        let i = zones(&s.hash, &e, Lang::En);
        assert_eq!(i.status, Status::Pass, "{i:?}");
        assert!(
            i.evidence[0].starts_with("nord: 12 readings, sensors th1, QoS 1"),
            "{i:?}"
        );
        e.zones.push("ouest".into());
        let i = zones(&s.hash, &e, Lang::Fr);
        assert_eq!(i.status, Status::Fail);
        assert!(
            i.summary.contains("aucune mesure de ouest en 70 s"),
            "{i:?}"
        );
        assert!(
            i.evidence.contains(&"ouest : aucune mesure".to_owned()),
            "{i:?}"
        );
    }
}
