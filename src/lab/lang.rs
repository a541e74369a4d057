//! The two languages of `arng check-lab`'s output: French, the lab's language and the
//! default (a team hands the report in), and English. Item titles live here; the
//! evaluators write their evidence with [`tr!`](crate::tr), which picks one of two
//! format strings.

use std::fmt;
use std::str::FromStr;

/// The language of the table, the JSON texts and the Markdown report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Fr,
    En,
}

impl FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Lang, String> {
        match s.to_ascii_lowercase().as_str() {
            "fr" | "french" | "français" | "francais" => Ok(Lang::Fr),
            "en" | "english" | "anglais" => Ok(Lang::En),
            other => Err(format!("unknown language {other:?} (expected fr or en)")),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        })
    }
}

impl Lang {
    /// One of two texts.
    pub fn pick<'a>(self, fr: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }
}

/// `tr!(lang, "texte {x}", "text {x}")`: the French or the English `format!`.
#[macro_export]
#[doc(hidden)]
macro_rules! tr {
    ($lang:expr, $fr:literal, $en:literal $(, $arg:expr)* $(,)?) => {
        match $lang {
            $crate::lab::Lang::Fr => format!($fr $(, $arg)*),
            $crate::lab::Lang::En => format!($en $(, $arg)*),
        }
    };
}

/// The title of item `id` (see [`super::ids`]).
pub fn title(id: &str, lang: Lang) -> &'static str {
    use super::ids::*;
    let (fr, en) = match id {
        BROKER_AUTH => (
            "Broker : authentification exigée",
            "Broker: authentication required",
        ),
        BROKER_ROUND_TRIP => (
            "Broker : aller-retour publish/subscribe",
            "Broker: publish/subscribe round trip",
        ),
        BROKER_PLUS => (
            "Broker : joker + (un niveau)",
            "Broker: + wildcard (one level)",
        ),
        BROKER_HASH => (
            "Broker : joker # (tous les niveaux)",
            "Broker: # wildcard (every level)",
        ),
        BROKER_ZONES => ("Les zones publient", "The zones publish"),
        PAYLOAD_TIMESTAMP => ("Payload : timestamp", "Payload: timestamp"),
        PAYLOAD_TEMP => ("Payload : temp", "Payload: temp"),
        PAYLOAD_HUM => ("Payload : hum", "Payload: hum"),
        PAYLOAD_ALERT_LEVEL => ("Payload : alert_level", "Payload: alert_level"),
        PAYLOAD_VERSION => ("Payload : version", "Payload: version"),
        PAYLOAD_CRITICAL => (
            "alert_level distingue une mesure critique",
            "alert_level tells a critical reading apart",
        ),
        HEARTBEAT_RETAINED => ("Heartbeat retenu", "Heartbeat retained"),
        HEARTBEAT_QOS => ("Heartbeat en QoS 0", "Heartbeat at QoS 0"),
        HEARTBEAT_PERIOD => ("Période du heartbeat", "Heartbeat period"),
        INFLUX_MEASUREMENT => (
            "InfluxDB : measurement, tags zone/capteur, fields numériques",
            "InfluxDB: measurement, zone/sensor tags, numeric fields",
        ),
        INFLUX_VALUES => (
            "InfluxDB : mêmes valeurs que sur MQTT",
            "InfluxDB: same values as on MQTT",
        ),
        INFLUX_RETENTION => (
            "InfluxDB : rétention du bucket",
            "InfluxDB: bucket retention",
        ),
        REST_LATEST => (
            "REST : GET /zones/{zone}/latest",
            "REST: GET /zones/{zone}/latest",
        ),
        REST_THRESHOLDS => ("REST : GET /thresholds", "REST: GET /thresholds"),
        REST_ALERT_POST => ("REST : POST /alerts accepté", "REST: POST /alerts accepted"),
        REST_ALERT_VISIBLE => (
            "REST : l'alerte postée est visible",
            "REST: the posted alert is visible",
        ),
        _ => ("?", "?"),
    };
    lang.pick(fr, en)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::ids::ALL;

    #[test]
    fn every_item_has_a_title_in_both_languages() {
        for id in ALL {
            for lang in [Lang::Fr, Lang::En] {
                assert_ne!(title(id, lang), "?", "{id} {lang}");
            }
            assert_ne!(title(id, Lang::Fr), title(id, Lang::En), "{id}");
        }
        assert_eq!("EN".parse::<Lang>(), Ok(Lang::En));
        assert!("de".parse::<Lang>().unwrap_err().contains("fr or en"));
        let x = 3;
        assert_eq!(tr!(Lang::Fr, "{x} zones", "{x} zone(s)"), "3 zones");
        assert_eq!(tr!(Lang::En, "{x} zones", "{x} zone(s)"), "3 zone(s)");
    }
}
