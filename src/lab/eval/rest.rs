//! The REST items: `GET /zones/{zone}/latest` shows what MQTT carried (and how long
//! after), `GET /thresholds` answers thresholds, `POST /alerts` accepts the probe
//! alert and the alert then shows somewhere. A team's API has its own shapes: the
//! checks look for the values, not for field names.

use std::time::Duration;

use super::s;
use super::PerZone;
use crate::lab::ids::*;
use crate::lab::observed::{
    numbers, AlertProbe, Gap, HttpSeen, LatestAnswer, Sample, Seen, SeenReading,
};
use crate::lab::{Item, Judge, Lang, Status};
use crate::tr;

/// What the team's API showed.
#[derive(Debug, Clone, PartialEq)]
pub struct RestSeen {
    pub api_url: String,
    /// `GET /zones/{zone}/latest`, polled through the window.
    pub latest: Vec<LatestAnswer>,
    pub poll_every: Duration,
    pub thresholds: Seen<HttpSeen>,
    /// The probe alert (not checked with `--no-probe`).
    pub alert: Seen<AlertProbe>,
}

/// A status that says the API wants credentials we were not given.
fn forbidden(status: u16) -> bool {
    matches!(status, 401 | 403)
}

fn ok(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The REST items, in report order.
pub fn evaluate(seen: &RestSeen, hash: &Seen<Sample>, zones: &[String], lang: Lang) -> Vec<Item> {
    vec![
        latest(seen, hash, zones, lang),
        thresholds(&seen.thresholds, lang),
        alert_post(&seen.alert, lang),
        alert_visible(&seen.alert, lang),
    ]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn latest(seen: &RestSeen, hash: &Seen<Sample>, zones: &[String], lang: Lang) -> Item {
    let readings: &[SeenReading] = hash.as_ref().map_or(&[], |h| &h.readings);
    let mut per = PerZone::default();
    let mut all_lags = Vec::new();
    for zone in zones {
        let answers: Vec<&LatestAnswer> = seen.latest.iter().filter(|a| &a.zone == zone).collect();
        let mine: Vec<&SeenReading> = readings
            .iter()
            .filter(|r| &r.zone == zone && r.temp.is_some())
            .collect();
        let (status, line, lags) = latest_zone(zone, &answers, &mine, seen.poll_every, lang);
        all_lags.extend(lags);
        per.push(zone, status, line);
    }
    let max = all_lags.iter().copied().fold(0.0, f64::max);
    let med = median(&mut all_lags);
    per.item(Judge::new(REST_LATEST, lang), |status, zones| match status {
        Status::Pass => tr!(
            lang,
            "chaque zone montre ce que MQTT a transporté, décalage médian {med:.1} s, max {max:.1} s",
            "every zone shows what MQTT carried, lag median {med:.1} s, max {max:.1} s"
        ),
        Status::Fail => tr!(
            lang,
            "ne montre pas ce que MQTT a transporté : {zones}",
            "does not show what MQTT carried: {zones}"
        ),
        Status::NotChecked => tr!(lang, "rien à comparer pour {zones}", "nothing to compare for {zones}"),
    })
}

/// One zone's verdict: which of its MQTT readings its answers showed, and after how
/// long (seconds, one per reading shown).
fn latest_zone(
    zone: &str,
    answers: &[&LatestAnswer],
    mine: &[&SeenReading],
    poll_every: Duration,
    lang: Lang,
) -> (Status, String, Vec<f64>) {
    let path = format!("GET /zones/{zone}/latest");
    let Some(last) = answers.last() else {
        let line = tr!(lang, "{path} : jamais interrogé", "{path}: never asked");
        return (Status::NotChecked, line, Vec::new());
    };
    let code = match &last.status {
        Err(Gap::Failed(why)) => {
            return (
                Status::Fail,
                tr!(lang, "{path} : {why}", "{path}: {why}"),
                Vec::new(),
            )
        }
        Err(Gap::NotChecked(why)) => {
            return (
                Status::NotChecked,
                tr!(lang, "{path} : {why}", "{path}: {why}"),
                Vec::new(),
            )
        }
        Ok(code) => *code,
    };
    let last_seen = tr!(
        lang,
        "dernière réponse HTTP {code} : {}",
        "last answer HTTP {code}: {}",
        last.excerpt
    );
    if forbidden(code) {
        let line = tr!(
            lang,
            "{path} : demande un jeton (--api-token) ; {last_seen}",
            "{path}: wants a token (--api-token); {last_seen}"
        );
        return (Status::NotChecked, line, Vec::new());
    }
    let mut lags: Vec<f64> = mine
        .iter()
        .filter_map(|r| {
            let a = answers.iter().find(|a| a.at >= r.at && a.shows(r))?;
            Some((a.at - r.at).as_secs_f64())
        })
        .collect();
    let (n, k, every) = (mine.len(), lags.len(), s(poll_every));
    if mine.is_empty() {
        let line = tr!(
            lang,
            "{zone} : aucune mesure MQTT à comparer ; {last_seen}",
            "{zone}: no MQTT reading to compare; {last_seen}"
        );
        return (Status::NotChecked, line, lags);
    }
    if k == 0 {
        let t = mine.last().and_then(|r| r.temp).unwrap_or_default();
        let line = tr!(
            lang,
            "{zone} : aucune des {n} mesures MQTT (dernière temp {t}) n'apparaît dans {path} ; {last_seen}",
            "{zone}: none of the {n} MQTT readings (last temp {t}) shows in {path}; {last_seen}"
        );
        return (Status::Fail, line, lags);
    }
    let max = lags.iter().copied().fold(0.0, f64::max);
    let med = median(&mut lags);
    let line = tr!(
        lang,
        "{zone} : {k}/{n} mesures MQTT montrées, décalage médian {med:.1} s, max {max:.1} s (interrogé toutes les {every})",
        "{zone}: {k}/{n} MQTT readings shown, lag median {med:.1} s, max {max:.1} s (asked every {every})"
    );
    (Status::Pass, line, lags)
}

fn thresholds(seen: &Seen<HttpSeen>, lang: Lang) -> Item {
    let judge = Judge::new(REST_THRESHOLDS, lang);
    let h = match seen {
        Ok(h) => h,
        Err(gap) => return judge.gap(gap),
    };
    let (code, took, body) = (h.status, h.took_ms, h.excerpt());
    let evidence = vec![tr!(
        lang,
        "GET /thresholds → HTTP {code} : {body}",
        "GET /thresholds → HTTP {code}: {body}"
    )];
    let (status, summary) = if forbidden(code) {
        (
            Status::NotChecked,
            tr!(
                lang,
                "demande un jeton (--api-token)",
                "wants a token (--api-token)"
            ),
        )
    } else if !ok(code) {
        (Status::Fail, tr!(lang, "HTTP {code}", "HTTP {code}"))
    } else {
        match h.json() {
            None => (
                Status::Fail,
                tr!(
                    lang,
                    "HTTP {code} mais pas du JSON",
                    "HTTP {code} but not JSON"
                ),
            ),
            Some(v) => {
                let mut nums = Vec::new();
                numbers(&v, 1000, &mut nums);
                let n = nums.len();
                if (v.is_object() || v.is_array()) && n > 0 {
                    (
                        Status::Pass,
                        tr!(
                            lang,
                            "HTTP {code} en {took:.0} ms : JSON avec {n} valeurs de seuil",
                            "HTTP {code} in {took:.0} ms: JSON with {n} threshold values"
                        ),
                    )
                } else {
                    (
                        Status::Fail,
                        tr!(
                            lang,
                            "HTTP {code} : JSON sans aucune valeur de seuil",
                            "HTTP {code}: JSON without any threshold value"
                        ),
                    )
                }
            }
        }
    };
    judge.verdict(status, summary).with(evidence)
}

fn alert_post(seen: &Seen<AlertProbe>, lang: Lang) -> Item {
    let judge = Judge::new(REST_ALERT_POST, lang);
    let a = match seen {
        Ok(a) => a,
        Err(gap) => return judge.gap(gap),
    };
    let sent = tr!(lang, "corps envoyé : {}", "body sent: {}", a.body);
    let h = match &a.post {
        Ok(h) => h,
        Err(gap) => return judge.gap(gap).with(vec![sent]),
    };
    let (code, took, body) = (h.status, h.took_ms, h.excerpt());
    let answer = tr!(
        lang,
        "réponse HTTP {code} : {body}",
        "answer HTTP {code}: {body}"
    );
    let (status, summary) = if forbidden(code) {
        (
            Status::NotChecked,
            tr!(
                lang,
                "HTTP {code} : demande un jeton (--api-token)",
                "HTTP {code}: wants a token (--api-token)"
            ),
        )
    } else if ok(code) {
        (
            Status::Pass,
            tr!(
                lang,
                "HTTP {code} en {took:.0} ms",
                "HTTP {code} in {took:.0} ms"
            ),
        )
    } else {
        (
            Status::Fail,
            tr!(
                lang,
                "HTTP {code} : refusée (--alert-body pour envoyer la forme attendue par l'API)",
                "HTTP {code}: refused (--alert-body sends the shape the API expects)"
            ),
        )
    };
    judge.verdict(status, summary).with(vec![sent, answer])
}

fn alert_visible(seen: &Seen<AlertProbe>, lang: Lang) -> Item {
    let judge = Judge::new(REST_ALERT_VISIBLE, lang);
    let a = match seen {
        Ok(a) => a,
        Err(gap) => return judge.gap(gap),
    };
    if !a.post.as_ref().is_ok_and(|h| ok(h.status)) {
        return judge.not_checked(tr!(
            lang,
            "l'alerte n'a pas été acceptée",
            "the alert was not accepted"
        ));
    }
    let marker = &a.marker;
    let mut evidence: Vec<String> = a
        .found
        .iter()
        .map(|(place, ms)| {
            tr!(
                lang,
                "trouvée : {place}, {:.1} s après le POST",
                "found: {place}, {:.1} s after the POST",
                ms / 1000.0
            )
        })
        .collect();
    evidence.extend(a.looked.iter().cloned());
    if a.found.is_empty() {
        judge.fail(tr!(
            lang,
            "acceptée mais introuvable (marqueur {marker})",
            "accepted but found nowhere (marker {marker})"
        ))
    } else {
        let places: Vec<&str> = a.found.iter().map(|(p, _)| p.as_str()).collect();
        judge.pass(tr!(lang, "visible : {}", "visible: {}", places.join(" ; ")))
    }
    .with(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::eval::fixtures::*;
    use crate::lab::observed::Gap;

    fn http(status: u16, body: &str) -> Seen<HttpSeen> {
        Ok(HttpSeen {
            status,
            body: body.into(),
            took_ms: 4.0,
        })
    }

    fn zones() -> Vec<String> {
        vec!["nord".into(), "sud".into(), "est".into()]
    }

    /// An API that shows each reading `lag` seconds after MQTT, asked every second.
    fn answers(lag: f64, shape: impl Fn(f64, f64) -> String) -> Vec<LatestAnswer> {
        let readings = good_readings();
        let mut out = Vec::new();
        for t in 0..70 {
            for zone in zones() {
                let shown = readings
                    .iter()
                    .rfind(|r| r.zone == zone && r.at.as_secs_f64() + lag <= t as f64);
                let body = shown.map_or("{}".into(), |r| shape(r.temp.unwrap(), r.hum.unwrap()));
                out.push(LatestAnswer::new(secs(t as f64), &zone, http(200, &body)));
            }
        }
        out
    }

    fn seen(latest: Vec<LatestAnswer>) -> RestSeen {
        RestSeen {
            api_url: "http://localhost:8000/".into(),
            latest,
            poll_every: secs(1.0),
            thresholds: http(
                200,
                r#"{"default": {"temp": {"warning_high": 25, "critical_high": 30}}}"#,
            ),
            alert: Ok(AlertProbe {
                zone: "nord".into(),
                marker: "check-lab-1".into(),
                body: "{}".into(),
                posted_at: secs(1.0),
                post: http(201, r#"{"id": "a1"}"#),
                found: vec![("GET /alerts".into(), 300.0)],
                looked: vec!["GET /alerts → HTTP 200".into()],
            }),
        }
    }

    #[test]
    fn latest_shows_what_mqtt_carried_with_the_lag() {
        let hash = Ok(sample(good_readings(), vec![]));
        let lab =
            |t: f64, h: f64| format!(r#"{{"zone": "x", "temp": {t}, "hum": {h}, "ts": "2026"}}"#);
        let items = evaluate(&seen(answers(0.5, lab)), &hash, &zones(), Lang::En);
        assert!(items.iter().all(|i| i.status == Status::Pass), "{items:#?}");
        assert!(
            items[0].evidence[0].starts_with("nord: 12/12 MQTT readings shown, lag median 1.0 s"),
            "{:?}",
            items[0]
        );
        assert_eq!(items[3].summary, "visible: GET /alerts");

        // Another shape (strings, nested) still shows the values.
        let nested =
            |t: f64, h: f64| format!(r#"{{"sensors": [{{"m": {{"temp": "{t}", "hum": {h}}}}}]}}"#);
        let items = evaluate(&seen(answers(0.0, nested)), &hash, &zones(), Lang::En);
        assert_eq!(items[0].status, Status::Pass, "{:?}", items[0]);

        // A wrong shape shows nothing MQTT carried.
        let wrong = |_: f64, _: f64| r#"{"status": "ok", "temperature": "n/a"}"#.to_owned();
        let items = evaluate(&seen(answers(0.0, wrong)), &hash, &zones(), Lang::En);
        assert_eq!(items[0].status, Status::Fail);
        assert!(
            items[0].evidence[0].contains("none of the 12 MQTT readings"),
            "{:?}",
            items[0]
        );
        assert!(
            items[0].evidence[0].contains(r#"{"status": "ok""#),
            "{:?}",
            items[0]
        );

        // A token wanted: not checked; never reached: failed.
        let locked: Vec<_> = zones()
            .iter()
            .map(|z| LatestAnswer::new(secs(1.0), z, http(401, "")))
            .collect();
        assert_eq!(
            evaluate(&seen(locked), &hash, &zones(), Lang::En)[0].status,
            Status::NotChecked
        );
        let down: Vec<_> = zones()
            .iter()
            .map(|z| LatestAnswer::new(secs(1.0), z, Err(Gap::Failed("connection refused".into()))))
            .collect();
        let i = &evaluate(&seen(down), &hash, &zones(), Lang::En)[0];
        assert_eq!(i.status, Status::Fail);
        assert!(i.evidence[0].ends_with("connection refused"), "{i:?}");
    }

    #[test]
    fn thresholds_and_alerts() {
        let hash = Ok(sample(vec![], vec![]));
        let mut s = seen(vec![]);
        for (body, status, want) in [
            ("[]", 200, Status::Fail),
            ("ok", 200, Status::Fail),
            (r#"{"error": "no"}"#, 404, Status::Fail),
            ("", 403, Status::NotChecked),
            (r#"[{"zone": "nord", "max": 30}]"#, 200, Status::Pass),
        ] {
            s.thresholds = http(status, body);
            let i = &evaluate(&s, &hash, &zones(), Lang::En)[1];
            assert_eq!(i.status, want, "{body}: {i:?}");
        }
        let post = |status, body: &str, found: Vec<(String, f64)>| {
            let mut s = seen(vec![]);
            if let Ok(a) = s.alert.as_mut() {
                a.post = http(status, body);
                a.found = found;
            }
            evaluate(&s, &hash, &zones(), Lang::En)
        };
        let items = post(422, r#"{"detail": "field required: level"}"#, vec![]);
        assert_eq!(
            (items[2].status, items[3].status),
            (Status::Fail, Status::NotChecked)
        );
        assert!(
            items[2].evidence[1].contains("field required: level"),
            "{:?}",
            items[2]
        );
        let items = post(401, "", vec![]);
        assert_eq!(items[2].status, Status::NotChecked);
        let items = post(200, "\"ok\"", vec![]);
        assert_eq!(
            (items[2].status, items[3].status),
            (Status::Pass, Status::Fail)
        );
        assert!(items[3].summary.contains("check-lab-1"), "{:?}", items[3]);
    }
}
