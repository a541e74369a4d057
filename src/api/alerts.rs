//! The alert routes: `POST /alerts` records an alert raised by a person or an
//! external system (stored in InfluxDB, published on MQTT), `GET /alerts` lists them.

use std::time::Duration;

use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use rumqttc::QoS;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::input::{influx_can_store, json_body, parse_since, Params, INFLUX_TIME_RANGE};
use super::queries::{self, Since, StoredAlert};
use super::AppState;
use crate::domain::alert::{AlertKind, AlertSource, AlertState, MAX_MESSAGE_CHARS};
use crate::domain::payload::{AlertLevel, HUM_RANGE, TEMP_RANGE};
use crate::domain::{Alert, SensorId, Topic, Zone};
use crate::supervision::MAX_CLOCK_AHEAD;

/// An alert raised by a person or an external system.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"zone": "nord", "sensor": "s1", "metric": "temp", "severity": "critical",
    "message": "door left open", "value": 31.5, "threshold": 30.0}))]
pub(super) struct NewAlert {
    /// Zone name.
    #[schema(
        pattern = r"^(?!(heartbeat|alerts|status|config|deadletter)$)[a-z0-9][a-z0-9_-]{0,31}$"
    )]
    zone: String,
    /// Sensor name, if the alert is about one sensor.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,31}$")]
    sensor: Option<String>,
    /// `temp`, `hum`, `silence` or `manual` (default).
    metric: Option<AlertKind>,
    /// `warning` or `critical`.
    #[schema(value_type = AlertSeverity)]
    severity: AlertLevel,
    /// `raised` (default) or `cleared`.
    state: Option<AlertState>,
    /// Up to 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    message: String,
    /// The measured value: -60..=100 for `temp`, 0..=100 for `hum`, -1e9..=1e9 otherwise.
    value: Option<f64>,
    /// The bound crossed, in the same range as `value`.
    threshold: Option<f64>,
    /// RFC 3339, between 1677-09-22 and 2262-04-11; default: now.
    #[schema(format = DateTime)]
    timestamp: Option<String>,
}

/// Severity of an alert (a reading's level may also be `normal`, an alert's may not).
// Only describes the OpenAPI document: handlers parse `AlertLevel` and refuse `normal`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub(super) enum AlertSeverity {
    Warning,
    Critical,
}

/// Record an alert (bearer token): written to InfluxDB's `alerts` measurement and
/// published on `entrepot/alerts/<zone>`. Answers 201 with the stored alert, 404 for a
/// zone the API does not know (no reading or heartbeat seen, no thresholds of its own).
#[utoipa::path(post, path = "/alerts", request_body = NewAlert,
    responses((status = 201, body = Alert), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "write routes disabled: serve was started without --api-token", body = ErrorBody),
              (status = 404, description = "unknown zone: no reading or heartbeat seen, no thresholds of its own", body = ErrorBody),
              (status = 413, description = "body larger than 64 KiB", body = ErrorBody),
              (status = 415, description = "body not declared as application/json", body = ErrorBody),
              (status = 503, description = "InfluxDB unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn post_alert(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let n: NewAlert = json_body(req).await?;
    let zone = Zone::new(&n.zone).map_err(|e| ApiError::field("zone", e.to_string()))?;
    let sensor = n
        .sensor
        .as_deref()
        .map(SensorId::new)
        .transpose()
        .map_err(|e| ApiError::field("sensor", e.to_string()))?;
    if n.severity == AlertLevel::Normal {
        return Err(ApiError::field(
            "severity",
            "severity: must be warning or critical",
        ));
    }
    let chars = n.message.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(ApiError::field(
            "message",
            format!("message: {chars} characters, longer than the {MAX_MESSAGE_CHARS} an alert may carry"),
        ));
    }
    let metric = n.metric.unwrap_or(AlertKind::Manual);
    for (name, v) in [("value", n.value), ("threshold", n.threshold)] {
        if let Some(x) = v {
            let range = match metric {
                AlertKind::Temp => TEMP_RANGE,
                AlertKind::Hum => HUM_RANGE,
                _ => (-1e9, 1e9),
            };
            if !x.is_finite() || x < range.0 || x > range.1 {
                return Err(ApiError::field(
                    name,
                    format!("{name}: {x} is outside {}..={}", range.0, range.1),
                ));
            }
        }
    }
    let timestamp = match &n.timestamp {
        None => Utc::now(),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::field("timestamp", format!("timestamp: {e} (expected RFC 3339)"))
            })?,
    };
    // Found by schemathesis: a time InfluxDB cannot store made the write fail and the
    // client got a 503 "InfluxDB unavailable" for its own bad input.
    if !influx_can_store(timestamp) {
        return Err(ApiError::field(
            "timestamp",
            format!("timestamp: {INFLUX_TIME_RANGE}"),
        ));
    }
    // An alert dated in the future would sit above every list until then (issue 15);
    // the same clock-skew margin as readings (docs/reliability.md, "Bad inputs").
    let ahead = timestamp - Utc::now();
    if ahead > chrono::TimeDelta::from_std(MAX_CLOCK_AHEAD).unwrap_or(chrono::TimeDelta::MAX) {
        return Err(ApiError::field(
            "timestamp",
            format!(
                "timestamp: {} s ahead of the server's clock, more than the {} s allowed",
                ahead.num_seconds(),
                MAX_CLOCK_AHEAD.as_secs()
            ),
        ));
    }
    // Alerts are about the warehouse's zones, not any name (issue 15: a zone nobody
    // had seen appeared in GET /alerts). Known: a reading or heartbeat seen (MQTT or
    // InfluxDB within --lookback), or bands of its own in the thresholds.
    if !state.live().knows(&zone, true) && !state.thresholds().0.zones.contains_key(&zone) {
        return Err(ApiError::not_found(format!(
            "zone \"{zone}\" is unknown: no reading or heartbeat seen and no thresholds of its own"
        ))
        .with_field("zone"));
    }
    let alert = Alert {
        version: 1,
        id: Alert::make_id(AlertSource::Api, &zone, sensor.as_ref(), metric, timestamp),
        zone: zone.clone(),
        sensor,
        metric,
        severity: n.severity,
        state: n.state.unwrap_or(AlertState::Raised),
        value: n.value,
        threshold: n.threshold,
        source: AlertSource::Api,
        message: n.message,
        timestamp,
    };
    alert.validate().map_err(|e| ApiError::field("body", e))?;
    state.influx.write_points(&[alert.point()]).await?;
    if let Err(e) = state
        .mqtt
        .publish(
            Topic::Alert { zone }.to_string(),
            QoS::AtLeastOnce,
            false,
            alert.to_json(),
        )
        .await
    {
        tracing::warn!(error = %e, "alert stored but not published on MQTT");
    }
    Ok((StatusCode::CREATED, Json(alert)).into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct AlertList {
    alerts: Vec<StoredAlert>,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/alerts",
    params(("zone" = Option<String>, Query, pattern = r"^(?!(heartbeat|alerts|status|config|deadletter)$)[a-z0-9][a-z0-9_-]{0,31}$",
                description = "only this zone"),
           ("severity" = Option<AlertSeverity>, Query, description = "`warning` or `critical`"),
           ("since" = Option<String>, Query, min_length = 1, example = "24h",
                description = "a duration back from now from 1s to 31d (e.g. 24h, the default), or an RFC 3339 time with its UTC offset (2026-01-01T00:00:00Z), not in the future (and after 1677-09-22)"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, example = 100, description = "at most this many (default 100)"),
           ("include_probe" = Option<bool>, Query, description = "also list the alerts of the supervision probe (sensor `e2e-probe`), hidden by default")),
    responses((status = 200, body = AlertList), (status = 400, body = ErrorBody),
              (status = 503, description = "InfluxDB unavailable", body = ErrorBody)))]
pub(super) async fn list_alerts(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<AlertList>, ApiError> {
    let params = Params::parse(q, &["zone", "severity", "since", "limit", "include_probe"])?;
    let include_probe = params.flag("include_probe")?;
    let zone = params
        .get("zone")
        .map(Zone::new)
        .transpose()
        .map_err(|e| ApiError::field("zone", e.to_string()))?;
    let severity = match params.get("severity") {
        None => None,
        Some(s) => match AlertLevel::parse(s) {
            Some(l) if l != AlertLevel::Normal => Some(l),
            _ => {
                return Err(ApiError::field(
                    "severity",
                    "severity: must be warning or critical",
                ))
            }
        },
    };
    let since = match params.get("since") {
        None => Since::Ago(Duration::from_secs(24 * 3600)),
        Some(s) => parse_since("since", s, Utc::now())?,
    };
    let limit = match params.get("limit") {
        None => 100,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::field("limit", "limit: must be an integer from 1 to 1000"))?,
    };
    let rows = state
        .influx
        .query(&queries::alerts(
            state.influx.bucket(),
            zone.as_ref(),
            severity,
            since,
            limit,
            include_probe,
        ))
        .await?;
    Ok(Json(AlertList {
        alerts: queries::stored_alerts(&rows),
    }))
}
