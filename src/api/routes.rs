//! The handlers. Each is annotated for the OpenAPI document (`GET /openapi.json`),
//! which is generated from this code. Every path or query value that reaches a Flux
//! query is validated first; a bad one gets a 400 naming the field.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rumqttc::QoS;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use utoipa::{OpenApi, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::live::{self, ZoneLatest, ZoneSummary};
use super::queries::{self, HistorySeries, Since, StoredAlert};
use super::{AppState, ThresholdSource};
use crate::domain::alert::{AlertKind, AlertSource, AlertState, MAX_MESSAGE_CHARS};
use crate::domain::payload::{AlertLevel, HUM_RANGE, TEMP_RANGE};
use crate::domain::{Alert, SensorId, Thresholds, Topic, Zone};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest range `GET /zones/{zone}/history` and `GET /alerts` accept.
const MAX_RANGE: Duration = Duration::from_secs(31 * 24 * 3600);
/// Most points per series a history answer may hold.
const MAX_HISTORY_POINTS: u128 = 5000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page))
        .route("/events", get(events))
        .route("/zones", get(zones))
        .route("/zones/{zone}/latest", get(zone_latest))
        .route("/zones/{zone}/history", get(zone_history))
        .route("/thresholds", get(get_thresholds).put(put_thresholds))
        .route("/alerts", get(list_alerts).post(post_alert))
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {}: see /docs for the routes",
        uri.path().chars().take(200).collect::<String>()
    ))
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route: see /docs",
    )
}

// ----- input helpers ------------------------------------------------------------

/// Query parameters, strictly: each known at most once, unknown ones refused.
#[derive(Debug)]
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(raw: Option<String>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let k = k.into_owned();
            if !allowed.contains(&k.as_str()) {
                let shown: String = k.chars().take(40).collect();
                return Err(ApiError::field(
                    shown.clone(),
                    format!(
                        "unknown query parameter {shown:?} (allowed: {})",
                        allowed.join(", ")
                    ),
                ));
            }
            if map.insert(k.clone(), v.into_owned()).is_some() {
                return Err(ApiError::field(
                    k.clone(),
                    format!("query parameter {k:?} is given twice"),
                ));
            }
        }
        Ok(Params(map))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn duration(&self, k: &str, default: Duration) -> Result<Duration, ApiError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => parse_duration(k, v),
        }
    }
}

fn parse_duration(field: &str, v: &str) -> Result<Duration, ApiError> {
    let d = humantime::parse_duration(v).map_err(|e| {
        ApiError::field(
            field,
            format!("{field}: {e} (expected a duration such as 30s, 15m, 1h, 7d)"),
        )
    })?;
    if d < Duration::from_secs(1) {
        return Err(ApiError::field(
            field,
            format!("{field}: must be at least 1s"),
        ));
    }
    if d > MAX_RANGE {
        return Err(ApiError::field(
            field,
            format!("{field}: must be at most 31d"),
        ));
    }
    Ok(d)
}

/// What [`influx_can_store`] refuses, for error messages.
const INFLUX_TIME_RANGE: &str =
    "must be between 1677-09-22 and 2262-04-11 (the times InfluxDB can store)";

/// Whether InfluxDB can store or query a point at `t`. Points are written with
/// millisecond precision and kept as i64 nanoseconds, whose ends InfluxDB reserves.
fn influx_can_store(t: DateTime<Utc>) -> bool {
    const LIMIT_NS: i64 = i64::MAX - 1;
    t.timestamp_millis()
        .checked_mul(1_000_000)
        .is_some_and(|ns| (-LIMIT_NS..=LIMIT_NS).contains(&ns))
}

fn zone_param(p: Result<Path<String>, PathRejection>) -> Result<Zone, ApiError> {
    let Path(raw) = p.map_err(|e| ApiError::field("zone", e.body_text()))?;
    Zone::new(&raw).map_err(|e| ApiError::field("zone", e.to_string()))
}

/// Reads a JSON body: size-limited, `application/json`, and deserialized with the path
/// of the offending field in the error.
async fn json_body<T: DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        return Err(ApiError::field(
            "content-type",
            "the body must be JSON (Content-Type: application/json)",
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::field("body", format!("body larger than {MAX_BODY_BYTES} bytes"))
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::field("body", format!("body: not valid JSON: {e}")))?;
    if !doc.is_object() {
        return Err(ApiError::field("body", "body: must be a JSON object"));
    }
    let value = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        ApiError::field(field.clone(), format!("{field}: {}", e.inner()))
    })?;
    Ok(value)
}

// ----- routes ----------------------------------------------------------------------

/// The live dashboard page (embedded in the binary, no external assets).
#[utoipa::path(get, path = "/", responses((status = 200, description = "HTML dashboard", content_type = "text/html")))]
async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
    version: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize, ToSchema)]
struct Dependency {
    ok: bool,
    detail: String,
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    ready: bool,
    mqtt: Dependency,
    influxdb: Dependency,
}

/// Readiness: connected to the broker and InfluxDB reachable (503 otherwise).
#[utoipa::path(get, path = "/ready", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn ready(State(state): State<AppState>) -> Response {
    let mqtt_ok = state.mqtt_connected.load(Ordering::Relaxed);
    let influx = tokio::time::timeout(Duration::from_secs(2), state.influx.ready()).await;
    let (influx_ok, influx_detail) = match influx {
        Ok(Ok(true)) => (true, "ready".to_owned()),
        Ok(Ok(false)) => (false, "not ready".to_owned()),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, "no answer within 2s".to_owned()),
    };
    let body = Readiness {
        ready: mqtt_ok && influx_ok,
        mqtt: Dependency {
            ok: mqtt_ok,
            detail: if mqtt_ok {
                "connected".into()
            } else {
                "not connected".into()
            },
        },
        influxdb: Dependency {
            ok: influx_ok,
            detail: influx_detail,
        },
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics of the API process.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    let r = state.registry();
    r.gauge(
        "arng_api_mqtt_connected",
        "1 when the API is connected to the broker.",
        &[],
    )
    .set(if state.mqtt_connected.load(Ordering::Relaxed) {
        1.0
    } else {
        0.0
    });
    r.gauge(
        "arng_api_influx_reachable",
        "1 when the last InfluxDB refresh succeeded.",
        &[],
    )
    .set(if state.influx_reachable.load(Ordering::Relaxed) {
        1.0
    } else {
        0.0
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        r.render(),
    )
        .into_response()
}

/// Live stream of readings, heartbeats, alerts and threshold changes (server-sent
/// events named `reading`, `heartbeat`, `alert`, `thresholds`; data is JSON).
#[utoipa::path(get, path = "/events", responses((status = 200, description = "text/event-stream", content_type = "text/event-stream")))]
async fn events(
    State(state): State<AppState>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(state.subscribe_events())
        // A slow page that missed events just gets the next ones.
        .filter_map(|e| e.ok())
        .map(|e| Ok(Event::default().event(e.kind).data(e.data)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Zones with their last-seen time and heartbeat freshness.
#[utoipa::path(get, path = "/zones", responses((status = 200, body = Vec<ZoneSummary>)))]
async fn zones(State(state): State<AppState>) -> Json<Vec<ZoneSummary>> {
    Json(state.live().zones(Utc::now()))
}

/// Latest reading of each sensor in a zone: as seen on MQTT by this process, as
/// stored in InfluxDB, and the lag between them. `source=influx` reads the InfluxDB
/// side with a direct Flux query instead of the view refreshed every second.
#[utoipa::path(get, path = "/zones/{zone}/latest",
    params(("zone" = String, Path, pattern = r"^(?!(heartbeat|alerts|status|config|deadletter)$)[a-z0-9][a-z0-9_-]{0,31}$",
                description = "zone name: 1-32 of a-z 0-9 _ -, starting with a letter or digit; not heartbeat, alerts, status, config or deadletter"),
           ("source" = Option<LatestSource>, Query, description = "`cache` (default) or `influx`")),
    responses((status = 200, body = ZoneLatest), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, description = "InfluxDB unavailable (`source=influx`)", body = ErrorBody)))]
async fn zone_latest(
    State(state): State<AppState>,
    zone: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Json<ZoneLatest>, ApiError> {
    let zone = zone_param(zone)?;
    let params = Params::parse(q, &["source"])?;
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
            .zone_latest(&zone, now)
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
        view.zone_latest(&zone, now)
    } else {
        state.live().zone_latest(&zone, now)
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
struct History {
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
                description = "window, a duration (e.g. 1m, the default), at most `range` and at least `range`/5000")),
    responses((status = 200, body = History), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, description = "InfluxDB unavailable", body = ErrorBody)))]
async fn zone_history(
    State(state): State<AppState>,
    zone: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Json<History>, ApiError> {
    let zone = zone_param(zone)?;
    let params = Params::parse(q, &["range", "every"])?;
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
    if !state.live().knows(&zone) {
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
        ))
        .await?;
    Ok(Json(History {
        zone: zone.to_string(),
        range: humantime::format_duration(range).to_string(),
        every: humantime::format_duration(every).to_string(),
        series: queries::history_series(&rows),
    }))
}

/// The thresholds in force: the same document `arng ingest` applies (shared through
/// the retained `entrepot/config/thresholds` message; the defaults until one exists).
/// The `x-arng-thresholds-source` header says which: `default`, `retained` or `api`.
#[utoipa::path(get, path = "/thresholds", responses((status = 200, body = Thresholds)))]
async fn get_thresholds(State(state): State<AppState>) -> Response {
    let (t, source, _) = state.thresholds();
    ([("x-arng-thresholds-source", source.as_str())], Json(t)).into_response()
}

/// Replace the thresholds (bearer token). Validated (warning inside critical, low
/// below high, hysteresis smaller than half the normal band), then published as the
/// retained configuration that ingest follows.
#[utoipa::path(put, path = "/thresholds", request_body = Thresholds,
    responses((status = 200, body = Thresholds), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "write routes disabled: serve was started without --api-token", body = ErrorBody),
              (status = 413, description = "body larger than 64 KiB", body = ErrorBody),
              (status = 415, description = "body not declared as application/json", body = ErrorBody),
              (status = 503, description = "broker unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_thresholds(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<Thresholds>, ApiError> {
    let t: Thresholds = json_body(req).await?;
    t.validate()
        .map_err(|e| ApiError::field(e.field.clone(), e.to_string()))?;
    if !state.mqtt_connected.load(Ordering::Relaxed) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is unavailable: thresholds not changed",
        ));
    }
    state
        .mqtt
        .publish(
            Topic::Thresholds.to_string(),
            QoS::AtLeastOnce,
            true,
            t.to_json(),
        )
        .await
        .map_err(|e| ApiError::unavailable("the broker", &e))?;
    state.set_thresholds(t.clone(), ThresholdSource::Api);
    Ok(Json(t))
}

/// An alert raised by a person or an external system.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"zone": "nord", "sensor": "s1", "metric": "temp", "severity": "critical",
    "message": "door left open", "value": 31.5, "threshold": 30.0}))]
struct NewAlert {
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
enum AlertSeverity {
    Warning,
    Critical,
}

/// Where `GET /zones/{zone}/latest` reads the InfluxDB side: the view refreshed every
/// second (`cache`) or a direct Flux query (`influx`).
// Only describes the OpenAPI document: the handler matches the strings.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum LatestSource {
    Cache,
    Influx,
}

/// Record an alert (bearer token): written to InfluxDB's `alerts` measurement and
/// published on `entrepot/alerts/<zone>`. Answers 201 with the stored alert.
#[utoipa::path(post, path = "/alerts", request_body = NewAlert,
    responses((status = 201, body = Alert), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "write routes disabled: serve was started without --api-token", body = ErrorBody),
              (status = 413, description = "body larger than 64 KiB", body = ErrorBody),
              (status = 415, description = "body not declared as application/json", body = ErrorBody),
              (status = 503, description = "InfluxDB unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
async fn post_alert(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
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
    if n.message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::field(
            "message",
            format!("message: longer than {MAX_MESSAGE_CHARS} characters"),
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
struct AlertList {
    alerts: Vec<StoredAlert>,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/alerts",
    params(("zone" = Option<String>, Query, pattern = r"^(?!(heartbeat|alerts|status|config|deadletter)$)[a-z0-9][a-z0-9_-]{0,31}$",
                description = "only this zone"),
           ("severity" = Option<AlertSeverity>, Query, description = "`warning` or `critical`"),
           ("since" = Option<String>, Query, min_length = 1, example = "24h",
                description = "a duration back from now from 1s to 31d (e.g. 24h, the default), or an RFC 3339 time not in the future (and after 1677-09-22)"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, example = 100, description = "at most this many (default 100)")),
    responses((status = 200, body = AlertList), (status = 400, body = ErrorBody),
              (status = 503, description = "InfluxDB unavailable", body = ErrorBody)))]
async fn list_alerts(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<AlertList>, ApiError> {
    let params = Params::parse(q, &["zone", "severity", "since", "limit"])?;
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
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            // Found by schemathesis: a future time made an empty Flux range, and one
            // InfluxDB cannot represent a query error, both answered 503.
            Ok(t) if !influx_can_store(t.with_timezone(&Utc)) => {
                return Err(ApiError::field(
                    "since",
                    format!("since: {INFLUX_TIME_RANGE}"),
                ))
            }
            Ok(t) if t > Utc::now() => {
                return Err(ApiError::field("since", "since: must not be in the future"))
            }
            Ok(t) => Since::At(t.with_timezone(&Utc)),
            Err(_) => Since::Ago(parse_duration("since", s)?),
        },
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
        ))
        .await?;
    Ok(Json(AlertList {
        alerts: queries::stored_alerts(&rows),
    }))
}

// ----- OpenAPI ---------------------------------------------------------------------------

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "arng API", description = "Warehouse readings, thresholds and alerts (entrepot)."),
    paths(dashboard, health, ready, metrics, events, zones, zone_latest, zone_history, get_thresholds, put_thresholds, post_alert, list_alerts),
    components(schemas(LatestSource, AlertSeverity)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Zone names as [`Zone::new`] accepts them, for the OpenAPI document. utoipa wants a
/// literal in its attributes, so the same text is written there too; a unit test
/// checks that every zone parameter of the document carries exactly this one.
const ZONE_PATTERN: &str =
    r"^(?!(heartbeat|alerts|status|config|deadletter)$)[a-z0-9][a-z0-9_-]{0,31}$";

/// The OpenAPI 3.1 document: [`ApiDoc`], plus the bounds that `Thresholds::validate`
/// enforces on the shared domain types (whose derives describe only their shape), so
/// that a client generating documents from the schema is told what is accepted.
/// The nesting of a band's bounds (`critical_low < warning_low < warning_high <
/// critical_high`, hysteresis under half the normal band) cannot be said in JSON
/// Schema; the descriptions say it and the API answers 400 naming the field.
pub fn openapi_document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let mut refine = |pointer: &str, extra: serde_json::Value| {
        if let (Some(serde_json::Value::Object(target)), serde_json::Value::Object(extra)) =
            (doc.pointer_mut(pointer), extra)
        {
            target.extend(extra);
        }
    };
    let thresholds = "/components/schemas/Thresholds/properties";
    refine(
        &format!("{thresholds}/debounce"),
        serde_json::json!({"minimum": 1, "maximum": 1000}),
    );
    refine(
        &format!("{thresholds}/silence_after_s"),
        serde_json::json!({"minimum": 1, "maximum": 7 * 24 * 3600}),
    );
    refine(
        &format!("{thresholds}/zones/propertyNames"),
        serde_json::json!({"pattern": ZONE_PATTERN}),
    );
    // A valid document to start from (the built-in defaults).
    refine(
        "/components/schemas/Thresholds",
        serde_json::json!({"examples": [Thresholds::default()]}),
    );
    refine(
        "/components/schemas/Band",
        serde_json::json!({"description": "The four bounds of one metric, finite and strictly increasing \
            (critical_low < warning_low < warning_high < critical_high), and the hysteresis \
            applied when clearing (0 <= hysteresis < (warning_high - warning_low) / 2)."}),
    );
    doc
}

/// The OpenAPI 3.1 document of this API, generated from the code.
async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&openapi_document()).unwrap_or_default(),
    )
        .into_response()
}

/// A readable page listing the routes, built from the OpenAPI document.
async fn docs_page(headers: HeaderMap) -> Html<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:8000");
    Html(render_docs(&ApiDoc::openapi(), host))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render_docs(doc: &utoipa::openapi::OpenApi, host: &str) -> String {
    let mut rows = String::new();
    for (path, item) in &doc.paths.paths {
        let ops = [("GET", &item.get), ("PUT", &item.put), ("POST", &item.post)];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let params: Vec<String> = op
                .parameters
                .iter()
                .flatten()
                .map(|p| {
                    format!(
                        "<code>{}</code> {}",
                        esc(&p.name),
                        esc(p.description.as_deref().unwrap_or(""))
                    )
                })
                .collect();
            let secured = op.security.is_some();
            rows += &format!(
                "<tr><td><b>{method}</b></td><td><code>{}</code></td><td>{}{}</td><td>{}</td></tr>\n",
                esc(path),
                esc(op.description.as_deref().or(op.summary.as_deref()).unwrap_or("")),
                if secured { " <em>(bearer token)</em>" } else { "" },
                params.join("<br>")
            );
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>arng API</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}td{{vertical-align:top;padding:.4em;border-bottom:1px solid #ddd}}code{{background:#f4f4f4}}</style>\
         </head><body><h1>arng API</h1><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>. \
         Base URL: <code>http://{}</code>. Errors are JSON: <code>{{\"error\": \"...\", \"field\": \"...\"}}</code>.</p>\
         <table><tr><th>method</th><th>path</th><th>description</th><th>parameters</th></tr>{rows}</table></body></html>",
        esc(host)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_every_contract_route() {
        let doc = ApiDoc::openapi();
        for p in [
            "/zones/{zone}/latest",
            "/alerts",
            "/thresholds",
            "/zones",
            "/zones/{zone}/history",
            "/health",
            "/ready",
            "/metrics",
            "/events",
            "/",
        ] {
            assert!(doc.paths.paths.contains_key(p), "{p} missing");
        }
        let html = render_docs(&doc, "localhost:8000");
        assert!(html.contains("/zones/{zone}/latest") && html.contains("bearer token"));
    }

    /// utoipa takes the zone pattern as a literal in each attribute: every copy must be
    /// [`ZONE_PATTERN`], whose reserved words and length must be the domain's.
    #[test]
    fn every_zone_in_the_document_has_the_zone_pattern() {
        let doc = openapi_document();
        let mut zone_params = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for op in item.as_object().unwrap().values() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["name"] == "zone" {
                        assert_eq!(p["schema"]["pattern"], ZONE_PATTERN, "{path}");
                        zone_params += 1;
                    }
                }
            }
        }
        assert_eq!(zone_params, 3, "latest, history and GET /alerts");
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["NewAlert"]["properties"]["zone"]["pattern"],
            ZONE_PATTERN
        );
        assert_eq!(
            schemas["Thresholds"]["properties"]["zones"]["propertyNames"]["pattern"],
            ZONE_PATTERN
        );
        let reserved = ZONE_PATTERN
            .split_once("(?!(")
            .and_then(|(_, rest)| rest.split_once(")$)"))
            .unwrap()
            .0;
        assert_eq!(
            reserved.split('|').collect::<Vec<_>>(),
            crate::domain::names::RESERVED_ZONES
        );
        let max = format!("{{0,{}}}$", crate::domain::names::MAX_NAME_LEN - 1);
        assert!(ZONE_PATTERN.ends_with(&max), "{ZONE_PATTERN} vs {max}");
    }

    #[test]
    fn influx_time_range_ends() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert!(influx_can_store(t("1677-09-22T00:00:00Z")));
        assert!(influx_can_store(t("2262-04-11T00:00:00Z")));
        assert!(influx_can_store(t("1970-01-01T00:00:00Z")));
        assert!(!influx_can_store(t("1677-09-21T00:00:00Z")));
        assert!(!influx_can_store(t("2262-04-12T00:00:00Z")));
        assert!(!influx_can_store(t("0001-01-01T00:00:00Z")));
    }

    #[test]
    fn params_are_strict() {
        assert!(Params::parse(Some("range=1h&every=1m".into()), &["range", "every"]).is_ok());
        let e = Params::parse(Some("rnge=1h".into()), &["range"]).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("rnge"));
        let e = Params::parse(Some("range=1h&range=2h".into()), &["range"]).unwrap_err();
        assert!(e.body.error.contains("twice"));
        assert!(parse_duration("range", "soon").is_err());
        assert!(parse_duration("range", "0s").is_err());
        assert!(parse_duration("range", "400d").is_err());
    }
}
