//! The thresholds routes: `GET /thresholds` shows the document in force, `PUT
//! /thresholds` validates a new one and publishes it as the retained configuration
//! every ingest follows.

use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rumqttc::QoS;

use super::error::{ApiError, ErrorBody};
use super::input::json_body;
use super::{AppState, ThresholdSource};
use crate::domain::{Thresholds, Topic};

/// The thresholds in force: the same document `arng ingest` applies (shared through
/// the retained `entrepot/config/thresholds` message; the defaults until one exists).
/// The `x-arng-thresholds-source` header says which: `default`, `retained` or `api`.
#[utoipa::path(get, path = "/thresholds", responses((status = 200, body = Thresholds)))]
pub(super) async fn get_thresholds(State(state): State<AppState>) -> Response {
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
pub(super) async fn put_thresholds(
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
