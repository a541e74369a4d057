//! The REST API and live dashboard of `arng serve` (axum).
//!
//! - [`live`]: the in-memory view (last reading per sensor from MQTT and InfluxDB).
//! - [`feed`]: what keeps it live (MQTT subscription, InfluxDB refresh).
//! - [`queries`]: the Flux queries and their row mapping (pure).
//! - [`routes`]: the route table and the small routes (page, health, metrics, events);
//!   [`zones`], [`alerts`] and [`thresholds`]: the data routes; [`input`]: how they
//!   read requests; [`openapi`]: the OpenAPI document and `/docs`.
//! - [`supervise`]: the supervision indicators (`arng_indicator_*` on `/metrics`, and
//!   the `supervision` measurement), evaluated every 10 s.
//! - [`error`]: the JSON error body.
//!
//! [`router`] builds the whole application from an [`AppState`], so tests drive it
//! in-process (`router(state).oneshot(request)`) or over a socket with [`serve`].

mod alerts;
pub mod error;
pub mod feed;
mod input;
pub mod live;
pub mod openapi;
pub mod queries;
pub mod routes;
pub mod supervise;
mod thresholds;
mod zones;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use chrono::{DateTime, Utc};
use rumqttc::AsyncClient;
use tokio::sync::broadcast;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

use crate::config::Secret;
use crate::domain::Thresholds;
use crate::metrics::{Registry, LATENCY_BUCKETS};
use crate::store::InfluxClient;

pub use error::{ApiError, ErrorBody};

/// Where the thresholds in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdSource {
    /// Nothing published yet: the built-in defaults (what ingest applies then too).
    Default,
    /// The retained `entrepot/config/thresholds` message.
    Retained,
    /// Changed through `PUT /thresholds` by this process.
    Api,
}

impl ThresholdSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdSource::Default => "default",
            ThresholdSource::Retained => "retained",
            ThresholdSource::Api => "api",
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub kind: &'static str,
    pub data: String,
}

impl LiveEvent {
    pub fn new(kind: &'static str, data: String) -> LiveEvent {
        LiveEvent { kind, data }
    }
}

/// How the API is configured (from `arng serve`'s options).
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Bearer token for write routes (and reads when `protect_reads`). Without one,
    /// write routes answer 403.
    pub token: Option<Secret>,
    pub protect_reads: bool,
    /// Origins allowed by CORS; empty: same-origin only.
    pub cors_origins: Vec<HeaderValue>,
    pub request_timeout: Duration,
    /// How far back the InfluxDB view looks for last points.
    pub lookback: Duration,
}

struct Inner {
    live: RwLock<live::LiveState>,
    thresholds: RwLock<(Thresholds, ThresholdSource, DateTime<Utc>)>,
    events: broadcast::Sender<LiveEvent>,
    registry: Registry,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    pub influx: InfluxClient,
    pub mqtt: AsyncClient,
    pub mqtt_connected: Arc<AtomicBool>,
    pub influx_reachable: Arc<AtomicBool>,
    pub options: Arc<ApiOptions>,
}

impl AppState {
    pub fn new(
        influx: InfluxClient,
        mqtt: AsyncClient,
        options: ApiOptions,
        registry: Registry,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                live: RwLock::new(live::LiveState::default()),
                thresholds: RwLock::new((
                    Thresholds::default(),
                    ThresholdSource::Default,
                    Utc::now(),
                )),
                events: broadcast::channel(1024).0,
                registry,
            }),
            influx,
            mqtt,
            mqtt_connected: Arc::new(AtomicBool::new(false)),
            influx_reachable: Arc::new(AtomicBool::new(false)),
            options: Arc::new(options),
        }
    }

    pub fn live(&self) -> RwLockReadGuard<'_, live::LiveState> {
        self.inner.live.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn live_write(&self) -> RwLockWriteGuard<'_, live::LiveState> {
        self.inner.live.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn thresholds(&self) -> (Thresholds, ThresholdSource, DateTime<Utc>) {
        self.inner
            .thresholds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_thresholds(&self, t: Thresholds, source: ThresholdSource) {
        let json = t.to_json();
        *self
            .inner
            .thresholds
            .write()
            .unwrap_or_else(|e| e.into_inner()) = (t, source, Utc::now());
        self.publish_event(LiveEvent::new("thresholds", json));
    }

    pub fn publish_event(&self, e: LiveEvent) {
        // No subscriber is fine: nobody has the page open.
        let _ = self.inner.events.send(e);
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<LiveEvent> {
        self.inner.events.subscribe()
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timing.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Write routes need the bearer token; reads too when `protect_reads`. `/health` and
/// `/ready` always answer (liveness and readiness probes carry no token).
async fn authorize(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let is_write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let needs_token = is_write
        || (state.options.protect_reads && !matches!(req.uri().path(), "/health" | "/ready"));
    if needs_token {
        let Some(expected) = &state.options.token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "write routes are disabled: start arng serve with --api-token (ARNG_API_TOKEN)",
            ));
        };
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing bearer token (Authorization: Bearer <token>)",
                )
                .with_field("authorization"))
            }
            Some(t) if !same_secret(t, expected.expose()) => {
                return Err(
                    ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token")
                        .with_field("authorization"),
                )
            }
            Some(_) => {}
        }
    }
    Ok(next.run(req).await)
}

/// Counts requests by route and status, and times them.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let r = state.registry();
    r.counter(
        "arng_api_requests_total",
        "HTTP requests, by route, method and status.",
        &[("route", &route), ("method", &method), ("status", &status)],
    )
    .inc();
    r.histogram(
        "arng_api_request_duration_seconds",
        "HTTP request duration, by route.",
        &[("route", &route)],
        LATENCY_BUCKETS,
    )
    .observe(started.elapsed().as_secs_f64());
    resp
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let cors = if state.options.cors_origins.is_empty() {
        CorsLayer::new()
    } else {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(state.options.cors_origins.clone()))
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
            ])
    };
    routes::routes()
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.options.request_timeout,
        ))
        .layer(cors)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
