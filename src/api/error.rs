//! API errors: a status and a JSON body `{"error": "...", "field": "..."}` that names
//! the offending field when there is one. Server-side causes are logged once, here,
//! and never leak into the body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// The request field at fault (path parameter, query parameter or JSON path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
            },
        }
    }

    /// 400 naming the field at fault.
    pub fn field(field: impl Into<String>, error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                error: error.into(),
                field: Some(field.into()),
            },
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.body.field = Some(field.into());
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, what)
    }

    /// 503 for a dependency that is down; the cause goes to the log.
    pub fn unavailable(what: &str, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(error = %cause, "{what} unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{what} is unavailable, try again later"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError::unavailable("InfluxDB", &e)
    }
}
