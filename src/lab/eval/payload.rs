//! The payload items: each of the five fields present and typed in every reading,
//! and `alert_level` telling a critical reading apart.

use std::collections::BTreeMap;

use crate::lab::ids::*;
use crate::lab::observed::{FieldState, Sample, Seen, FIELDS};
use crate::lab::{Item, Judge, Lang};
use crate::tr;

fn no_reading(id: &'static str, lang: Lang) -> Item {
    let judge = Judge::new(id, lang);
    judge.not_checked(tr!(
        lang,
        "aucune mesure à examiner",
        "no reading to examine"
    ))
}

pub(crate) fn field(hash: &Seen<Sample>, i: usize, id: &'static str, lang: Lang) -> Item {
    let judge = Judge::new(id, lang);
    let sample = match hash {
        Ok(s) => s,
        Err(gap) => return judge.gap(gap),
    };
    let name = FIELDS[i];
    let total = sample.readings.len();
    if total == 0 {
        return no_reading(id, lang);
    }
    let missing: Vec<_> = sample
        .readings
        .iter()
        .filter(|r| r.fields[i] == FieldState::Missing)
        .collect();
    let wrong: Vec<_> = sample
        .readings
        .iter()
        .filter_map(|r| match &r.fields[i] {
            FieldState::Wrong(why) => Some((r, why)),
            _ => None,
        })
        .collect();
    let ok = total - missing.len() - wrong.len();
    let mut evidence = Vec::new();
    for r in missing.iter().take(2) {
        evidence.push(tr!(lang, "{} : {}", "{}: {}", r.topic, r.excerpt));
    }
    for (r, why) in wrong.iter().take(2) {
        evidence.push(tr!(
            lang,
            "{} : {why} — {}",
            "{}: {why} — {}",
            r.topic,
            r.excerpt
        ));
    }
    if missing.is_empty() && wrong.is_empty() {
        let example = &sample.readings[0];
        evidence.push(tr!(
            lang,
            "{} : {}",
            "{}: {}",
            example.topic,
            example.excerpt
        ));
        return judge
            .pass(tr!(
                lang,
                "présent et typé dans {ok}/{total} mesures",
                "present and typed in {ok}/{total} readings"
            ))
            .with(evidence);
    }
    let (m, w) = (missing.len(), wrong.len());
    let summary = match (m, w) {
        (m, 0) => tr!(
            lang,
            "{name} absent de {m}/{total} mesures",
            "{name} missing from {m}/{total} readings"
        ),
        (0, w) => tr!(
            lang,
            "{name} mal typé dans {w}/{total} mesures",
            "{name} mistyped in {w}/{total} readings"
        ),
        (m, w) => tr!(
            lang,
            "{name} absent de {m} et mal typé dans {w} des {total} mesures",
            "{name} missing from {m} and mistyped in {w} of {total} readings"
        ),
    };
    judge.fail(summary).with(evidence)
}

pub(crate) fn critical(hash: &Seen<Sample>, lang: Lang) -> Item {
    let judge = Judge::new(PAYLOAD_CRITICAL, lang);
    let sample = match hash {
        Ok(s) => s,
        Err(gap) => return judge.gap(gap),
    };
    if sample.readings.is_empty() {
        return no_reading(PAYLOAD_CRITICAL, lang);
    }
    let with_level: Vec<_> = sample
        .readings
        .iter()
        .filter(|r| r.level.is_some())
        .collect();
    if with_level.is_empty() {
        return judge.fail(tr!(
            lang,
            "aucune mesure ne porte alert_level : rien ne distingue une mesure critique",
            "no reading carries alert_level: nothing tells a critical reading apart"
        ));
    }
    let mut levels: BTreeMap<String, usize> = BTreeMap::new();
    for r in &with_level {
        *levels
            .entry(r.level.as_ref().map(|l| l.label()).unwrap_or_default())
            .or_default() += 1;
    }
    let counts: Vec<String> = levels.iter().map(|(l, n)| format!("{l} ×{n}")).collect();
    let counts = counts.join(", ");
    let critical: Vec<_> = with_level
        .iter()
        .filter(|r| r.level.as_ref().is_some_and(|l| l.is_critical()))
        .collect();
    let Some(first) = critical.first() else {
        return judge.not_checked(tr!(
                lang,
                "aucune mesure critique dans la fenêtre (niveaux vus : {counts}) : rendre une zone critique et relancer",
                "no critical reading in the window (levels seen: {counts}): make a zone critical and run again"
            ),
        );
    };
    let n = critical.len();
    let mut evidence = vec![tr!(lang, "{} : {}", "{}: {}", first.topic, first.excerpt)];
    let alerts = sample
        .other_topics
        .iter()
        .filter(|(t, _)| t.starts_with("entrepot/alerts/"))
        .map(|(_, n)| n)
        .sum::<u64>();
    if alerts > 0 {
        evidence.push(tr!(
            lang,
            "et {alerts} messages sur entrepot/alerts/<zone>",
            "and {alerts} messages on entrepot/alerts/<zone>"
        ));
    }
    judge
        .pass(tr!(
            lang,
            "{n} mesures critiques ({counts})",
            "{n} critical readings ({counts})"
        ))
        .with(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::eval::fixtures::*;
    use crate::lab::observed::Gap;
    use crate::lab::Status;

    #[test]
    fn every_field_present_and_typed() {
        let s: Seen<Sample> = Ok(sample(good_readings(), vec![]));
        for (i, id) in PAYLOAD_FIELDS.iter().enumerate() {
            let item = field(&s, i, id, Lang::En);
            assert_eq!(item.status, Status::Pass, "{item:?}");
            assert_eq!(item.summary, "present and typed in 37/37 readings");
        }
    }

    #[test]
    fn a_missing_field_fails_with_its_evidence() {
        let mut readings = good_readings();
        readings.push(reading_json(
            2.0,
            "sud",
            "th2",
            r#"{"timestamp": 1795850102.5, "temp": 21.0, "hum": "44", "version": 1}"#,
        ));
        let s: Seen<Sample> = Ok(sample(readings, vec![]));
        let i = field(&s, 3, PAYLOAD_ALERT_LEVEL, Lang::En);
        assert_eq!(i.status, Status::Fail);
        assert_eq!(i.summary, "alert_level missing from 1/38 readings");
        assert!(i.evidence[0].starts_with("entrepot/sud/th2/v1: {"), "{i:?}");
        let i = field(&s, 2, PAYLOAD_HUM, Lang::Fr);
        assert_eq!(i.status, Status::Fail);
        assert!(i.evidence[0].contains("must be a number"), "{i:?}");
        assert_eq!(
            field(&s, 0, PAYLOAD_TIMESTAMP, Lang::En).status,
            Status::Pass
        );
        let none: Seen<Sample> = Ok(sample(vec![], vec![]));
        assert_eq!(
            field(&none, 0, PAYLOAD_TIMESTAMP, Lang::En).status,
            Status::NotChecked
        );
        let gap: Seen<Sample> = Err(Gap::NotChecked("refused".into()));
        assert_eq!(
            field(&gap, 0, PAYLOAD_TIMESTAMP, Lang::En).status,
            Status::NotChecked
        );
    }

    #[test]
    fn critical_readings() {
        let s: Seen<Sample> = Ok(sample(good_readings(), vec![]));
        let i = critical(&s, Lang::En);
        assert_eq!(i.status, Status::Pass, "{i:?}");
        assert_eq!(i.summary, "1 critical readings (critical ×1, normal ×36)");
        assert!(
            i.evidence[0].contains(r#""alert_level": "critical""#),
            "{i:?}"
        );

        let calm: Vec<_> = good_readings()
            .into_iter()
            .filter(|r| r.zone != "est")
            .collect();
        let i = critical(&Ok(sample(calm, vec![])), Lang::Fr);
        assert_eq!(i.status, Status::NotChecked);
        assert!(
            i.summary.contains("aucune mesure critique") && i.summary.contains("normal ×24"),
            "{i:?}"
        );

        let bare = vec![reading_json(
            1.0,
            "nord",
            "th1",
            r#"{"temp": 20, "hum": 40}"#,
        )];
        let i = critical(&Ok(sample(bare, vec![])), Lang::En);
        assert_eq!(i.status, Status::Fail);
        assert!(
            i.summary.contains("no reading carries alert_level"),
            "{i:?}"
        );
    }
}
