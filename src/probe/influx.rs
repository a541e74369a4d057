//! What InfluxDB holds of the probes and the zones' heartbeats: narrow Flux queries
//! (every value quoted with [`flux::string`]) and their answers.

use chrono::{DateTime, Utc};

use super::scope::LastHeartbeats;
use crate::domain::flux;
use crate::domain::schema::{HEARTBEATS, READINGS};
use crate::domain::Zone;
use crate::store::{InfluxClient, StoreError};
use crate::supervision::PROBE_SENSOR;

/// The Flux query that finds one probe by its `seq`, in a narrow range around its
/// timestamp.
pub fn probe_query(bucket: &str, zone: &Zone, seq: u64, at: DateTime<Utc>) -> String {
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        r#"from(bucket: {}) |> range(start: {}, stop: {}) |> filter(fn: (r) => r._measurement == {} and r.zone == {} and r.sensor == {} and r._field == "seq" and r._value == {seq}) |> keep(columns: ["_time", "_value"])"#,
        flux::string(bucket),
        rfc(at - chrono::Duration::minutes(1)),
        rfc(at + chrono::Duration::minutes(1)),
        flux::string(READINGS),
        flux::string(zone.as_str()),
        flux::string(PROBE_SENSOR),
    )
}

/// Whether InfluxDB holds probe `seq` of `zone` (`Some(())`: found).
pub async fn probe_in_influx(
    influx: &InfluxClient,
    zone: &Zone,
    seq: u64,
    at: DateTime<Utc>,
) -> Result<Option<()>, StoreError> {
    let rows = influx
        .query(&probe_query(influx.bucket(), zone, seq, at))
        .await?;
    Ok((!rows.is_empty()).then_some(()))
}

/// The newest heartbeat `_time` of every zone within 24 h.
pub fn last_heartbeats_query(bucket: &str) -> String {
    format!(
        r#"from(bucket: {}) |> range(start: -24h, stop: 1h) |> filter(fn: (r) => r._measurement == {} and r._field == "sensors") |> group(columns: ["zone"]) |> last() |> keep(columns: ["zone", "_time"])"#,
        flux::string(bucket),
        flux::string(HEARTBEATS),
    )
}

/// Every zone's newest heartbeat `_time` within 24 h (a zone name the contract
/// does not allow is left out).
pub async fn last_heartbeats(influx: &InfluxClient) -> Result<LastHeartbeats, StoreError> {
    let rows = influx
        .query(&last_heartbeats_query(influx.bucket()))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((Zone::new(r.str("zone")?).ok()?, r.time("_time")?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_query_is_narrow_and_quoted() {
        let z = Zone::new("nord").unwrap();
        let at = DateTime::from_timestamp_millis(1_795_850_102_125).unwrap();
        let q = probe_query("entrepot", &z, 42, at);
        assert!(
            q.starts_with(r#"from(bucket: "entrepot") |> range(start: 2026-11-28T"#),
            "{q}"
        );
        assert!(
            q.contains(r#"r.sensor == "e2e-probe""#) && q.contains("r._value == 42)"),
            "{q}"
        );
        assert!(last_heartbeats_query("entrepot").contains(r#"r._measurement == "heartbeats""#));
    }
}
