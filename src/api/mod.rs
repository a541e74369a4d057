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
//! - [`error`]: the JSON error body; [`connection`]: the same body on the errors hyper
//!   answers by itself (a request target over 64 KiB...).
//!
//! [`router`] builds the whole application from an [`AppState`], so tests drive it
//! in-process (`router(state).oneshot(request)`) or over a socket with [`serve`].

mod alerts;
pub mod connection;
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
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
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
    /// About the supervision probe: sent only to `GET /events?include_probe=true`.
    pub probe: bool,
}

impl LiveEvent {
    pub fn new(kind: &'static str, data: String) -> LiveEvent {
        LiveEvent {
            kind,
            data,
            probe: false,
        }
    }

    pub fn probe(mut self, probe: bool) -> LiveEvent {
        self.probe = probe;
        self
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

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 7235 section 2.1: `bearer`, `BEARER` are the same scheme);
/// the token is what follows the blanks after it.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once([' ', '\t'])?;
    let token = rest.trim_matches([' ', '\t']);
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Errors made by the layers rather than the handlers (the body limit's 413, the
/// timeout's 503) come without a body, or with a plain-text one. Every error of the
/// API is a JSON object with an `error` message, so those get one here. An error
/// answer to a request with a body also closes the connection.
///
/// A plain function called by [`observe`] rather than a middleware of its own: each
/// `from_fn` layer clones the boxed service stack below it on every request, which
/// cost the cached `GET /zones/{zone}/latest` about 5 µs of CPU per request
/// (docs/performance.md).
fn json_errors(has_body: bool, resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let mut resp = if !(status.is_client_error() || status.is_server_error()) || is_json {
        resp
    } else {
        let error = match status {
            StatusCode::PAYLOAD_TOO_LARGE => input::body_too_large(),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::new(
                status,
                "no answer within the request timeout (arng serve --request-timeout)",
            ),
            _ => ApiError::new(
                status,
                status.canonical_reason().unwrap_or("request refused"),
            ),
        };
        let (parts, _) = resp.into_parts();
        let mut fresh = error.into_response();
        for (name, value) in &parts.headers {
            let keep = !matches!(
                *name,
                header::CONTENT_TYPE | header::CONTENT_LENGTH | header::CONTENT_ENCODING
            );
            if keep {
                fresh.headers_mut().append(name, value.clone());
            }
        }
        fresh
    };
    if has_body && (status.is_client_error() || status.is_server_error()) {
        // Refused before its body was read to the end (too large, no token...), the
        // connection cannot carry another request: a client that reused it would get
        // an incomplete message instead of its next answer. Error paths only.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
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
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
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

/// Counts requests by route and status, and times them; gives the errors of the
/// layers inside it (the timeout's 503, the body limit's 413) a JSON body
/// ([`json_errors`]).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let started = std::time::Instant::now();
    let resp = json_errors(has_body, next.run(req).await);
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
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.options.request_timeout,
        ))
        // Outside the timeout, so that its 503 is counted and gets a JSON body.
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(cors)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` completes. Errors hyper
/// answers by itself get a JSON body too ([`connection`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(connection::JsonErrorsListener::new(listener), router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for h in [
            "Bearer tok-123",
            "bearer tok-123",
            "BEARER tok-123",
            "bEaReR   tok-123 ",
            "Bearer\ttok-123",
        ] {
            assert_eq!(bearer_token(h), Some("tok-123"), "{h:?}");
        }
        for h in [
            "Basic dXNlcjpwdw==",
            "Bearer",
            "Bearer ",
            "Bearertok-123",
            "",
        ] {
            assert_eq!(bearer_token(h), None, "{h:?}");
        }
    }
}
