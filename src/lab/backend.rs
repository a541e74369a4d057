//! The REST and InfluxDB edges of `arng check-lab`: requests to the team's API (on
//! [`ApiClient::send_raw`], each under the request timeout), and the Flux queries
//! that discover the team's schema, read the window's points and look for the probe
//! alert. Every value put into Flux is validated and quoted with
//! [`flux::string`]; times are ours, formatted as RFC 3339.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::eval::influx::StoredPoint;
use super::observed::{Gap, HttpSeen, Seen, MAX_BODY_CHARS};
use crate::domain::flux;
use crate::probe::{ms, ApiClient};
use crate::store::{InfluxClient, StoreError};

/// Measurements examined at most.
pub const MAX_MEASUREMENTS: usize = 50;
/// Points read at most per measurement (memory bound for a busy bucket).
pub const MAX_POINTS: usize = 20_000;

/// One request to the team's API: its answer, or why none came.
pub async fn http(
    api: &ApiClient,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Seen<HttpSeen> {
    let started = Instant::now();
    match api.send_raw(method, path, body, MAX_BODY_CHARS).await {
        Ok(a) => Ok(HttpSeen {
            status: a.status,
            body: a.body,
            took_ms: ms(started.elapsed()),
        }),
        Err(e) => Err(Gap::Failed(e.to_string())),
    }
}

/// An InfluxDB failure in the words of the report: a token that may not do this is
/// not the team's failure to judge (not checked); anything else is.
pub fn store_gap(e: StoreError) -> Gap {
    match e {
        StoreError::Unauthorized { .. } => Gap::NotChecked(format!("{e} (the token's rights)")),
        other => Gap::Failed(other.to_string()),
    }
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A name read back from InfluxDB, before it goes into a query.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)
}

/// The measurements of the bucket with data since `start`.
pub fn measurements_query(bucket: &str, start: DateTime<Utc>) -> String {
    format!(
        "import \"influxdata/influxdb/schema\"\nschema.measurements(bucket: {}, start: {})",
        flux::string(bucket),
        rfc(start)
    )
}

/// The numeric points of `measurement` between `start` and `stop`, as floats, in one
/// table, at most [`MAX_POINTS`].
pub fn points_query(
    bucket: &str,
    measurement: &str,
    start: DateTime<Utc>,
    stop: DateTime<Utc>,
) -> String {
    format!(
        "import \"types\"\nfrom(bucket: {}) |> range(start: {}, stop: {}) \
         |> filter(fn: (r) => r._measurement == {}) \
         |> filter(fn: (r) => types.isType(v: r._value, type: \"float\") or types.isType(v: r._value, type: \"int\") or types.isType(v: r._value, type: \"uint\")) \
         |> toFloat() |> group() |> limit(n: {MAX_POINTS})",
        flux::string(bucket),
        rfc(start),
        rfc(stop),
        flux::string(measurement),
    )
}

/// Where a value holding `marker` was written since `start` (any measurement,
/// field, type).
pub fn marker_query(bucket: &str, marker: &str, start: DateTime<Utc>) -> String {
    format!(
        "import \"strings\"\nfrom(bucket: {}) |> range(start: {}) \
         |> filter(fn: (r) => strings.containsStr(v: string(v: r._value), substr: {})) \
         |> keep(columns: [\"_measurement\", \"_field\"]) |> group() |> limit(n: 1)",
        flux::string(bucket),
        rfc(start),
        flux::string(marker),
    )
}

/// The measurements with data since `start` (valid names only, at most
/// [`MAX_MEASUREMENTS`]).
pub async fn measurements(
    influx: &InfluxClient,
    start: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let rows = influx
        .query(&measurements_query(influx.bucket(), start))
        .await?;
    let mut names: Vec<String> = rows
        .iter()
        .filter_map(|r| r.str("_value"))
        .filter(|s| valid_name(s))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names.truncate(MAX_MEASUREMENTS);
    Ok(names)
}

/// Columns of a Flux row that are not tags.
fn is_tag(column: &str) -> bool {
    !column.starts_with('_') && column != "result" && column != "table"
}

/// The numeric points of `measurement` in the range; true when cut at the limit.
pub async fn points(
    influx: &InfluxClient,
    measurement: &str,
    start: DateTime<Utc>,
    stop: DateTime<Utc>,
) -> Result<(Vec<StoredPoint>, bool), StoreError> {
    let rows = influx
        .query(&points_query(influx.bucket(), measurement, start, stop))
        .await?;
    let cut = rows.len() >= MAX_POINTS;
    let points = rows
        .iter()
        .filter_map(|r| {
            Some(StoredPoint {
                measurement: r.str("_measurement")?.to_owned(),
                field: r.str("_field")?.to_owned(),
                value: r.f64("_value")?,
                tags: r
                    .values
                    .iter()
                    .filter(|(k, _)| is_tag(k))
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect::<BTreeMap<_, _>>(),
            })
        })
        .collect();
    Ok((points, cut))
}

/// `measurement.field` holding `marker` since `start`, if any.
pub async fn find_marker(
    influx: &InfluxClient,
    marker: &str,
    start: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let rows = influx
        .query(&marker_query(influx.bucket(), marker, start))
        .await?;
    Ok(rows.first().map(|r| {
        format!(
            "{}.{}",
            r.str("_measurement").unwrap_or("?"),
            r.str("_field").unwrap_or("?")
        )
    }))
}

/// How long to wait between two looks at something that is expected to appear.
pub const LOOK_EVERY: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_quote_every_value() {
        let t = DateTime::from_timestamp_millis(1_795_850_102_125).unwrap();
        let q = points_query("entre\"pot", "mesures\") |> drop(", t, t);
        assert!(q.contains(r#"from(bucket: "entre\"pot")"#), "{q}");
        assert!(
            q.contains(r#"r._measurement == "mesures\") |> drop(")"#),
            "{q}"
        );
        assert!(q.contains("range(start: 2026-11-28T"), "{q}");
        let q = marker_query("entrepot", "${x}", t);
        assert!(q.contains(r#"substr: "\${x}""#), "{q}");
        assert!(
            measurements_query("entrepot", t).starts_with("import \"influxdata/influxdb/schema\"")
        );
        assert!(valid_name("readings") && !valid_name("") && !valid_name("a\nb"));
        assert!(is_tag("zone") && !is_tag("_field") && !is_tag("table"));
    }
}
