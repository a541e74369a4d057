//! The zone routes: `GET /zones`, `GET /zones/{zone}/latest` (answered from the live
//! view, or with `source=influx` by a direct Flux query) and `GET /zones/{zone}/history`.

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::input::{zone_param, Params};
use super::live::{self, ZoneLatest, ZoneSummary};
use super::queries::{self, HistorySeries};
use super::AppState;
use crate::domain::{SensorId, Zone};

/// Most points per series a history answer may hold.
const MAX_HISTORY_POINTS: u128 = 5000;

/// What the lab's views leave out unless asked: the supervision probe (sensor
/// `e2e-probe` of `arng check-e2e` and `arng latency`) is no sensor of the warehouse.
const INCLUDE_PROBE_DOC: &str =
    "also show the supervision probe (sensor `e2e-probe`), hidden by default";

/// Zones with their last-seen time and heartbeat freshness.
#[utoipa::path(get, path = "/zones",
    params(("include_probe" = Option<bool>, Query, description = INCLUDE_PROBE_DOC)),
    responses((status = 200, body = Vec<ZoneSummary>), (status = 400, body = ErrorBody)))]
pub(super) async fn zones(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<ZoneSummary>>, ApiError> {
    let include_probe = Params::parse(q, &["include_probe"])?.flag("include_probe")?;
    Ok(Json(state.live().zones(Utc::now(), include_probe)))
}

/// Latest reading of each sensor in a zone: as seen on MQTT by this process, as
/// stored in InfluxDB, and the lag between them. `source=influx` reads the InfluxDB
/// side with a direct Flux query instead of the view refreshed every second.
#[utoipa::path(get, path = "/zones/{zone}/latest",
    params(("zone" = String, Path, pattern = r"^(?!(heartbeat|alerts|status|config|deadletter)$)[a-z0-9][a-z0-9_-]{0,31}$",
                description = "zone name: 1-32 of a-z 0-9 _ -, starting with a letter or digit; not heartbeat, alerts, status, config or deadletter"),
           ("source" = Option<LatestSource>, Query, description = "`cache` (default) or `influx`"),
           ("include_probe" = Option<bool>, Query, description = INCLUDE_PROBE_DOC)),
    responses((status = 200, body = ZoneLatest), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, description = "InfluxDB unavailable (`source=influx`)", body = ErrorBody)))]
pub(super) async fn zone_latest(
    State(state): State<AppState>,
    zone: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Json<ZoneLatest>, ApiError> {
    let zone = zone_param(zone)?;
    let params = Params::parse(q, &["source", "include_probe"])?;
    let include_probe = params.flag("include_probe")?;
    let direct = match params.get("source") {
        None | Some("cache") => false,
        Some("influx") => true,
        Some(other) => {
            return Err(ApiError::field(
                "source",
                format!(
                    "source: {:?} is not cache or influx",
                    other.chars().take(20).collect::<String>()
                ),
            ))
        }
    };
    let now = Utc::now();
    let answer = if direct {
        let rows = state
            .influx
            .query(&queries::latest_readings(
                state.influx.bucket(),
                Some(&zone),
                state.options.lookback,
            ))
            .await?;
        let hb = state
            .influx
            .query(&queries::latest_heartbeats(
                state.influx.bucket(),
                state.options.lookback,
            ))
            .await?;
        // A private copy of the MQTT side with this query's InfluxDB side.
        let mut view = live::LiveState::default();
        for s in state
            .live()
            .zone_latest(&zone, now, true)
            .map(|z| z.sensors)
            .unwrap_or_default()
        {
            if let (Some(m), Ok(sensor)) = (s.mqtt, SensorId::new(&s.sensor)) {
                view.on_reading(
                    &mqtt_to_reading(&zone, &sensor, &m),
                    DateTime::parse_from_rfc3339(&m.received_at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or(now),
                );
            }
        }
        view.set_influx(
            queries::stored_points(&rows),
            queries::heartbeat_times(&hb),
            now,
        );
        view.zone_latest(&zone, now, include_probe)
    } else {
        state.live().zone_latest(&zone, now, include_probe)
    };
    answer.map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "zone \"{zone}\" is unknown: no reading or heartbeat seen"
        ))
        .with_field("zone")
    })
}

fn mqtt_to_reading(
    zone: &Zone,
    sensor: &SensorId,
    m: &live::MqttReading,
) -> crate::domain::Reading {
    crate::domain::Reading {
        zone: zone.clone(),
        sensor: sensor.clone(),
        seq: m.seq,
        timestamp: DateTime::from_timestamp_millis(m.timestamp_ms).unwrap_or_default(),
        temp: m.temp,
        hum: m.hum,
        alert_level: m.alert_level,
        provenance: crate::domain::Provenance {
            stamped_on_receipt: m.stamped_by.is_some(),
            level_derived: false,
        },
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct History {
    zone: String,
    range: String,
    every: String,
    series: Vec<HistorySeries>,
}

/// Mean temperature and humidity per sensor, in windows of `every` over the last
/// `range` (for charts).
#[utoipa::path(get, path = "/zones/{zone}/history",
    params(("zone" = String, Path, pattern = r"^(?!(heartbeat|alerts|status|config|deadletter)$)[a-z0-9][a-z0-9_-]{0,31}$",
                description = "zone name (see `/zones/{zone}/latest`)"),
           ("range" = Option<String>, Query, min_length = 1, example = "6h",
                description = "how far back, a duration (e.g. 1h, the default; 90m; 1h 30m) from 1s to 31d"),
           ("every" = Option<String>, Query, min_length = 1, example = "5m",
                description = "window, a duration (e.g. 1m, the default), at most `range` and at least `range`/5000"),
           ("include_probe" = Option<bool>, Query, description = INCLUDE_PROBE_DOC)),
    responses((status = 200, body = History), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, description = "InfluxDB unavailable", body = ErrorBody)))]
pub(super) async fn zone_history(
    State(state): State<AppState>,
    zone: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Json<History>, ApiError> {
    let zone = zone_param(zone)?;
    let params = Params::parse(q, &["range", "every", "include_probe"])?;
    let include_probe = params.flag("include_probe")?;
    let range = params.duration("range", Duration::from_secs(3600))?;
    let every = params.duration("every", Duration::from_secs(60))?;
    if every > range {
        return Err(ApiError::field(
            "every",
            "every: must not be longer than range",
        ));
    }
    if range.as_millis() / every.as_millis() > MAX_HISTORY_POINTS {
        return Err(ApiError::field(
            "every",
            format!("every: too small for this range (at most {MAX_HISTORY_POINTS} windows)"),
        ));
    }
    if !state.live().knows(&zone, include_probe) {
        return Err(ApiError::not_found(format!(
            "zone \"{zone}\" is unknown: no reading or heartbeat seen"
        ))
        .with_field("zone"));
    }
    let rows = state
        .influx
        .query(&queries::history(
            state.influx.bucket(),
            &zone,
            range,
            every,
            include_probe,
        ))
        .await?;
    Ok(Json(History {
        zone: zone.to_string(),
        range: humantime::format_duration(range).to_string(),
        every: humantime::format_duration(every).to_string(),
        series: queries::history_series(&rows),
    }))
}

/// Where `GET /zones/{zone}/latest` reads the InfluxDB side: the view refreshed every
/// second (`cache`) or a direct Flux query (`influx`).
// Only describes the OpenAPI document: the handler matches the strings.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub(super) enum LatestSource {
    Cache,
    Influx,
}
