//! The InfluxDB items: which measurement holds the readings (discovered, not
//! assumed: a team names it as it likes), whether it holds the very values MQTT
//! carried, and the bucket's retention.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::s;
use crate::lab::ids::*;
use crate::lab::observed::{same_value, Gap, Sample, Seen, SeenReading};
use crate::lab::{Item, Judge, Lang, Status};
use crate::tr;

/// A numeric point of the window: its measurement, field, value and tags.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub measurement: String,
    pub field: String,
    pub value: f64,
    pub tags: BTreeMap<String, String>,
}

/// What InfluxDB showed.
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxSeen {
    pub bucket: String,
    /// `schema.measurements()` of the bucket.
    pub measurements: Seen<Vec<String>>,
    /// The numeric points of the window, of every measurement examined.
    pub points: Seen<Vec<StoredPoint>>,
    /// Some measurement had more points than were read.
    pub truncated: bool,
    /// The bucket's retention (None: forever).
    pub retention: Seen<Option<Duration>>,
}

/// Where the readings are in InfluxDB, as discovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub measurement: String,
    /// The tag whose values are zone names.
    pub zone_tag: Option<String>,
    /// The tag whose values are the sensors seen on MQTT.
    pub sensor_tag: Option<String>,
    pub tags: BTreeSet<String>,
    pub fields: BTreeSet<String>,
    /// The fields that carry the MQTT temperatures and humidities.
    pub temp_field: Option<String>,
    pub hum_field: Option<String>,
    /// Readings of the window found there with the same values.
    pub matched: usize,
}

type Index<'a> = HashMap<(&'a str, &'a str, &'a str), Vec<f64>>;

/// Values by (zone, sensor, field); sensor "" when there is no sensor tag.
fn index<'a>(points: &[&'a StoredPoint], zone_tag: &str, sensor_tag: Option<&str>) -> Index<'a> {
    let mut ix: Index<'a> = HashMap::new();
    for p in points {
        let Some(zone) = p.tags.get(zone_tag) else {
            continue;
        };
        let sensor = sensor_tag
            .and_then(|t| p.tags.get(t))
            .map_or("", String::as_str);
        ix.entry((zone.as_str(), sensor, p.field.as_str()))
            .or_default()
            .push(p.value);
    }
    ix
}

fn holds(
    ix: &Index<'_>,
    r: &SeenReading,
    sensor: bool,
    field: Option<&str>,
    v: Option<f64>,
) -> bool {
    let (Some(field), Some(v)) = (field, v) else {
        return false;
    };
    let s = if sensor { r.sensor.as_str() } else { "" };
    ix.get(&(r.zone.as_str(), s, field))
        .is_some_and(|vals| vals.iter().any(|x| same_value(*x, v)))
}

/// The tag of `points` whose values are most often in `names`.
fn tag_holding(
    points: &[&StoredPoint],
    names: &BTreeSet<&str>,
    except: Option<&str>,
) -> Option<String> {
    let mut hits: BTreeMap<&str, usize> = BTreeMap::new();
    for p in points {
        for (k, v) in &p.tags {
            if Some(k.as_str()) != except && names.contains(v.as_str()) {
                *hits.entry(k).or_default() += 1;
            }
        }
    }
    hits.into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(k, _)| k.to_owned())
}

/// The field of `points` that carries most of the values `value` gives the readings.
fn field_carrying(
    ix: &Index<'_>,
    fields: &BTreeSet<String>,
    readings: &[SeenReading],
    sensor: bool,
    value: impl Fn(&SeenReading) -> Option<f64>,
) -> Option<String> {
    fields
        .iter()
        .map(|f| {
            (
                readings
                    .iter()
                    .filter(|r| holds(ix, r, sensor, Some(f), value(r)))
                    .count(),
                f,
            )
        })
        .filter(|(n, _)| *n > 0)
        .max_by_key(|(n, _)| *n)
        .map(|(_, f)| f.clone())
}

/// Finds the measurement that holds the readings: the one with a tag of zone names
/// whose fields carry the most MQTT values.
pub fn discover(
    points: &[StoredPoint],
    readings: &[SeenReading],
    zones: &[String],
) -> Option<Schema> {
    let mut by_m: BTreeMap<&str, Vec<&StoredPoint>> = BTreeMap::new();
    for p in points {
        by_m.entry(&p.measurement).or_default().push(p);
    }
    let zone_names: BTreeSet<&str> = zones
        .iter()
        .map(String::as_str)
        .chain(readings.iter().map(|r| r.zone.as_str()))
        .collect();
    let sensors: BTreeSet<&str> = readings.iter().map(|r| r.sensor.as_str()).collect();
    let mut best: Option<(Schema, usize)> = None;
    for (m, pts) in by_m {
        let zone_tag = tag_holding(&pts, &zone_names, None);
        let sensor_tag = tag_holding(&pts, &sensors, zone_tag.as_deref());
        let fields: BTreeSet<String> = pts.iter().map(|p| p.field.clone()).collect();
        let tags: BTreeSet<String> = pts.iter().flat_map(|p| p.tags.keys().cloned()).collect();
        let (mut temp_field, mut hum_field, mut matched) = (None, None, 0);
        if let Some(zt) = &zone_tag {
            let ix = index(&pts, zt, sensor_tag.as_deref());
            let sensor = sensor_tag.is_some();
            temp_field = field_carrying(&ix, &fields, readings, sensor, |r| r.temp);
            hum_field = field_carrying(&ix, &fields, readings, sensor, |r| r.hum);
            matched = matching(
                &ix,
                sensor,
                temp_field.as_deref(),
                hum_field.as_deref(),
                readings,
            )
            .0;
        }
        let score =
            matched * 4 + usize::from(zone_tag.is_some()) * 2 + usize::from(sensor_tag.is_some());
        let schema = Schema {
            measurement: m.to_owned(),
            zone_tag,
            sensor_tag,
            tags,
            fields,
            temp_field,
            hum_field,
            matched,
        };
        if best.as_ref().is_none_or(|(_, b)| score > *b) {
            best = Some((schema, score));
        }
    }
    best.map(|(s, _)| s)
}

/// (readings found with the same temp and hum, those not found).
fn matching<'r>(
    ix: &Index<'_>,
    sensor: bool,
    temp_field: Option<&str>,
    hum_field: Option<&str>,
    readings: &'r [SeenReading],
) -> (usize, Vec<&'r SeenReading>) {
    let mut found = 0;
    let mut missing = Vec::new();
    for r in readings.iter().filter(|r| r.temp.is_some()) {
        let temp = holds(ix, r, sensor, temp_field, r.temp);
        let hum = r.hum.is_none() || holds(ix, r, sensor, hum_field, r.hum);
        if temp && hum {
            found += 1;
        } else {
            missing.push(r);
        }
    }
    (found, missing)
}

/// The readings of `schema`'s measurement not (yet) in `points`: what the poll after
/// the window waits for.
pub fn missing<'r>(
    schema: &Schema,
    points: &[StoredPoint],
    readings: &'r [SeenReading],
) -> Vec<&'r SeenReading> {
    let Some(zt) = &schema.zone_tag else {
        return readings.iter().collect();
    };
    let pts: Vec<&StoredPoint> = points
        .iter()
        .filter(|p| p.measurement == schema.measurement)
        .collect();
    let ix = index(&pts, zt, schema.sensor_tag.as_deref());
    let sensor = schema.sensor_tag.is_some();
    matching(
        &ix,
        sensor,
        schema.temp_field.as_deref(),
        schema.hum_field.as_deref(),
        readings,
    )
    .1
}

fn list<T: AsRef<str>>(v: impl IntoIterator<Item = T>) -> String {
    v.into_iter()
        .map(|s| s.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The three InfluxDB items.
pub fn evaluate(seen: &InfluxSeen, hash: &Seen<Sample>, zones: &[String], lang: Lang) -> Vec<Item> {
    let readings: &[SeenReading] = hash.as_ref().map_or(&[], |h| &h.readings);
    let schema = match &seen.points {
        Ok(points) => discover(points, readings, zones),
        Err(_) => None,
    };
    vec![
        measurement(seen, schema.as_ref(), readings, lang),
        values(seen, schema.as_ref(), hash, lang),
        retention(seen, lang),
    ]
}

fn measurement(
    seen: &InfluxSeen,
    schema: Option<&Schema>,
    readings: &[SeenReading],
    lang: Lang,
) -> Item {
    let judge = Judge::new(INFLUX_MEASUREMENT, lang);
    let all = match (&seen.measurements, &seen.points) {
        (Err(gap), _) | (_, Err(gap)) => return judge.gap(gap),
        (Ok(m), Ok(_)) => m,
    };
    let bucket = &seen.bucket;
    let mut evidence = vec![tr!(
        lang,
        "measurements du bucket {bucket} : {}",
        "measurements of bucket {bucket}: {}",
        list(all)
    )];
    let Some(sc) = schema else {
        return judge
            .fail(tr!(
                lang,
                "aucun point numérique dans le bucket {bucket} pendant la fenêtre",
                "no numeric point in bucket {bucket} during the window"
            ))
            .with(evidence);
    };
    let m = &sc.measurement;
    evidence.push(tr!(
        lang,
        "{m} : tags {}, fields numériques {}",
        "{m}: tags {}, numeric fields {}",
        list(&sc.tags),
        list(&sc.fields)
    ));
    let Some(zt) = &sc.zone_tag else {
        return judge
            .fail(tr!(
                lang,
                "aucun measurement n'a de tag portant les noms de zone (le plus proche : {m})",
                "no measurement has a tag holding the zone names (closest: {m})"
            ))
            .with(evidence);
    };
    let Some(st) = &sc.sensor_tag else {
        let sensors = list(
            readings
                .iter()
                .map(|r| r.sensor.as_str())
                .collect::<BTreeSet<_>>(),
        );
        let status = if readings.is_empty() {
            Status::NotChecked
        } else {
            Status::Fail
        };
        let why = tr!(
            lang,
            "{m} a le tag {zt} mais aucun tag portant les capteurs vus sur MQTT ({sensors})",
            "{m} has tag {zt} but no tag holding the sensors seen on MQTT ({sensors})"
        );
        return judge.verdict(status, why).with(evidence);
    };
    let fields = list(sc.temp_field.iter().chain(&sc.hum_field));
    let fields = if fields.is_empty() {
        list(&sc.fields)
    } else {
        fields
    };
    judge
        .pass(tr!(
            lang,
            "measurement {m} : tags {zt} (zone) et {st} (capteur), fields numériques {fields}",
            "measurement {m}: tags {zt} (zone) and {st} (sensor), numeric fields {fields}"
        ))
        .with(evidence)
}

fn values(seen: &InfluxSeen, schema: Option<&Schema>, hash: &Seen<Sample>, lang: Lang) -> Item {
    let judge = Judge::new(INFLUX_VALUES, lang);
    let (points, sample) = match (&seen.points, hash) {
        (Err(gap), _) => return judge.gap(gap),
        (_, Err(_)) => {
            return judge.gap(&Gap::NotChecked(tr!(
                lang,
                "aucune mesure MQTT à comparer",
                "no MQTT reading to compare"
            )))
        }
        (Ok(p), Ok(s)) => (p, s),
    };
    let comparable: Vec<SeenReading> = sample
        .readings
        .iter()
        .filter(|r| r.temp.is_some())
        .cloned()
        .collect();
    if comparable.is_empty() {
        return judge.not_checked(tr!(
            lang,
            "aucune mesure MQTT avec une temp numérique à comparer",
            "no MQTT reading with a numeric temp to compare"
        ));
    }
    let Some(sc) = schema.filter(|s| s.zone_tag.is_some()) else {
        return judge.fail(tr!(
            lang,
            "aucun measurement où chercher les valeurs (voir {INFLUX_MEASUREMENT})",
            "no measurement to look for the values in (see {INFLUX_MEASUREMENT})"
        ));
    };
    let missing = missing(sc, points, &comparable);
    let (n, k) = (comparable.len(), comparable.len() - missing.len());
    let m = &sc.measurement;
    let mut evidence = vec![tr!(
        lang,
        "temp → field {}, hum → field {}",
        "temp → field {}, hum → field {}",
        sc.temp_field.as_deref().unwrap_or("?"),
        sc.hum_field.as_deref().unwrap_or("?")
    )];
    if seen.truncated {
        evidence.push(tr!(
            lang,
            "(points lus tronqués : bucket très actif)",
            "(points read were cut: a very busy bucket)"
        ));
    }
    for r in missing.iter().take(4) {
        let (at, t, h) = (
            s(r.at),
            r.temp.unwrap_or_default(),
            r.hum.map_or("-".into(), |h| h.to_string()),
        );
        evidence.push(tr!(
            lang,
            "absent : {} à +{at} temp {t} hum {h}",
            "missing: {} at +{at} temp {t} hum {h}",
            r.topic
        ));
    }
    if missing.is_empty() {
        judge.pass(tr!(
            lang,
            "{k}/{n} mesures de la fenêtre dans {m} avec les mêmes temp et hum",
            "{k}/{n} readings of the window in {m} with the same temp and hum"
        ))
    } else {
        judge.fail(tr!(
            lang,
            "{k}/{n} mesures seulement retrouvées dans {m} avec les mêmes valeurs",
            "only {k}/{n} readings found in {m} with the same values"
        ))
    }
    .with(evidence)
}

fn retention(seen: &InfluxSeen, lang: Lang) -> Item {
    let judge = Judge::new(INFLUX_RETENTION, lang);
    let bucket = &seen.bucket;
    match &seen.retention {
        Ok(Some(d)) => {
            let days = d.as_secs_f64() / 86_400.0;
            let human = if d.as_secs() % 86_400 == 0 {
                tr!(lang, "{days} jours", "{days} days")
            } else {
                tr!(
                    lang,
                    "{} ({days:.1} jours)",
                    "{} ({days:.1} days)",
                    humantime::format_duration(*d)
                )
            };
            judge.pass(tr!(
                lang,
                "bucket {bucket} : rétention de {human}",
                "bucket {bucket}: retention {human}"
            ))
        }
        Ok(None) => judge.fail(tr!(
            lang,
            "bucket {bucket} : aucune rétention (données gardées pour toujours)",
            "bucket {bucket}: no retention (data kept forever)"
        )),
        Err(gap) => judge.gap(gap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::eval::fixtures::*;

    fn point(m: &str, field: &str, value: f64, tags: &[(&str, &str)]) -> StoredPoint {
        StoredPoint {
            measurement: m.into(),
            field: field.into(),
            value,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// What a team's InfluxDB holds: `readings` as the lab asks, next to other series.
    fn stored(readings: &[SeenReading]) -> Vec<StoredPoint> {
        let mut v = Vec::new();
        for r in readings {
            let tags = [("zone", r.zone.as_str()), ("capteur", r.sensor.as_str())];
            v.push(point("mesures", "temperature", r.temp.unwrap(), &tags));
            v.push(point("mesures", "humidite", r.hum.unwrap(), &tags));
            v.push(point(
                "heartbeats",
                "sensors",
                1.0,
                &[("zone", r.zone.as_str())],
            ));
            v.push(point("broker", "clients_connected", r.temp.unwrap(), &[]));
        }
        v
    }

    fn seen(points: Vec<StoredPoint>) -> InfluxSeen {
        InfluxSeen {
            bucket: "entrepot".into(),
            measurements: Ok(vec!["broker".into(), "heartbeats".into(), "mesures".into()]),
            points: Ok(points),
            truncated: false,
            retention: Ok(Some(Duration::from_secs(30 * 86_400))),
        }
    }

    fn zones() -> Vec<String> {
        vec!["nord".into(), "sud".into(), "est".into()]
    }

    #[test]
    fn the_measurement_is_discovered_by_its_values() {
        let readings = good_readings();
        let sc = discover(&stored(&readings), &readings, &zones()).unwrap();
        assert_eq!(sc.measurement, "mesures");
        assert_eq!(sc.zone_tag.as_deref(), Some("zone"));
        assert_eq!(sc.sensor_tag.as_deref(), Some("capteur"));
        assert_eq!(sc.temp_field.as_deref(), Some("temperature"));
        assert_eq!(sc.hum_field.as_deref(), Some("humidite"));
        assert_eq!(sc.matched, readings.len());
    }

    #[test]
    fn all_pass_then_each_failure_says_why() {
        let readings = good_readings();
        let hash = Ok(sample(readings.clone(), vec![]));
        let items = evaluate(&seen(stored(&readings)), &hash, &zones(), Lang::En);
        assert!(items.iter().all(|i| i.status == Status::Pass), "{items:#?}");
        assert_eq!(
            items[0].summary,
            "measurement mesures: tags zone (zone) and capteur (sensor), numeric fields temperature, humidite"
        );
        assert_eq!(
            items[1].summary,
            "37/37 readings of the window in mesures with the same temp and hum"
        );
        assert_eq!(items[2].summary, "bucket entrepot: retention 30 days");

        // Two readings never written; the sensor as a field, not a tag.
        let mut points = stored(&readings);
        points.retain(|p| {
            !(p.measurement == "mesures"
                && p.tags["zone"] == "sud"
                && p.field == "temperature"
                && p.value > 21.95)
        });
        let items = evaluate(&seen(points), &hash, &zones(), Lang::En);
        assert_eq!(items[1].status, Status::Fail);
        assert_eq!(
            items[1].summary,
            "only 35/37 readings found in mesures with the same values"
        );
        assert!(
            items[1].evidence[1].starts_with("missing: entrepot/sud/th1/v1 at +"),
            "{:?}",
            items[1]
        );
        let untagged: Vec<_> = stored(&readings)
            .into_iter()
            .map(|mut p| {
                p.tags.remove("capteur");
                p
            })
            .collect();
        let items = evaluate(&seen(untagged), &hash, &zones(), Lang::Fr);
        assert_eq!(items[0].status, Status::Fail);
        assert!(
            items[0].summary.contains("aucun tag portant les capteurs"),
            "{:?}",
            items[0]
        );

        // Zones as measurement names: no tag holds them.
        let flat: Vec<_> = readings
            .iter()
            .map(|r| point(&r.zone, "temp", r.temp.unwrap(), &[("sensor", "th1")]))
            .collect();
        let items = evaluate(&seen(flat), &hash, &zones(), Lang::En);
        assert_eq!(
            (items[0].status, items[1].status),
            (Status::Fail, Status::Fail)
        );
        assert!(items[0]
            .summary
            .starts_with("no measurement has a tag holding the zone names"));
    }

    #[test]
    fn retention_and_gaps() {
        let mut s = seen(vec![]);
        s.retention = Ok(None);
        let hash = Ok(sample(vec![], vec![]));
        let items = evaluate(&s, &hash, &zones(), Lang::Fr);
        assert_eq!(items[2].status, Status::Fail);
        assert_eq!(
            items[2].summary,
            "bucket entrepot : aucune rétention (données gardées pour toujours)"
        );
        assert_eq!(items[0].status, Status::Fail, "{:?}", items[0]);
        assert_eq!(items[1].status, Status::NotChecked, "{:?}", items[1]);
        s.points = Err(Gap::NotChecked("InfluxDB refused the token".into()));
        s.retention = Err(Gap::NotChecked("InfluxDB refused the token".into()));
        let items = evaluate(&s, &hash, &zones(), Lang::En);
        assert!(
            items.iter().all(|i| i.status == Status::NotChecked),
            "{items:#?}"
        );
    }
}
