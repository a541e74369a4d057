//! The route table and the small routes: the dashboard page, liveness, readiness,
//! metrics and the live event stream. The data routes live in [`super::zones`],
//! [`super::alerts`] and [`super::thresholds`]; each handler is annotated for the
//! OpenAPI document ([`super::openapi`]).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use utoipa::ToSchema;

use axum::handler::Handler;
use tower_http::limit::RequestBodyLimitLayer;

use super::error::{ApiError, ErrorBody};
use super::input::Params;
use super::{alerts, openapi, thresholds, zones, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs_page))
        .route("/events", get(events))
        .route("/zones", get(zones::zones))
        .route("/zones/{zone}/latest", get(zones::zone_latest))
        .route("/zones/{zone}/history", get(zones::zone_history))
        // The body limit only where a body is read: a body announced larger than the
        // limit is refused before it is read; one that grows past it while streaming
        // fails when the handler reads it. GET routes skip the wrapping.
        .route(
            "/thresholds",
            get(thresholds::get_thresholds).put(thresholds::put_thresholds.layer(body_limit())),
        )
        .route(
            "/alerts",
            get(alerts::list_alerts).post(alerts::post_alert.layer(body_limit())),
        )
}

fn body_limit() -> RequestBodyLimitLayer {
    RequestBodyLimitLayer::new(super::input::MAX_BODY_BYTES)
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

/// The live dashboard page (embedded in the binary, no external assets).
#[utoipa::path(get, path = "/", responses((status = 200, description = "HTML dashboard", content_type = "text/html")))]
pub(super) async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    status: &'static str,
    version: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
pub(super) async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize, ToSchema)]
pub(super) struct Dependency {
    ok: bool,
    detail: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
    ready: bool,
    mqtt: Dependency,
    influxdb: Dependency,
}

/// Readiness: connected to the broker and InfluxDB reachable (503 otherwise).
#[utoipa::path(get, path = "/ready", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
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
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
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
#[utoipa::path(get, path = "/events",
    params(("include_probe" = Option<bool>, Query, description = "also stream the supervision probe's readings and alerts (sensor `e2e-probe`), hidden by default")),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream"), (status = 400, body = ErrorBody)))]
pub(super) async fn events(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let include_probe = Params::parse(q, &["include_probe"])?.flag("include_probe")?;
    let stream = BroadcastStream::new(state.subscribe_events())
        // A slow page that missed events just gets the next ones.
        .filter_map(|e| e.ok())
        .filter(move |e| include_probe || !e.probe)
        .map(|e| Ok(Event::default().event(e.kind).data(e.data)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
