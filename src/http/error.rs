//! Errors of the HTTP API in Prometheus's JSON shape, and the one place where module
//! errors become status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::decide::DecideError;
use crate::ingest::IngestError;

/// An API error: `{"status":"error","errorType":"bad_data","error":"..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error_type: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn bad_data(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error_type: "bad_data",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error_type: "not_found",
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error_type: "unavailable",
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "internal",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "status": "error",
            "errorType": self.error_type,
            "error": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        let (status, error_type) = match &e {
            DecideError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            DecideError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            DecideError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            DecideError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            DecideError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        ApiError {
            status,
            error_type,
            message: e.to_string(),
        }
    }
}

/// The status a remote-write sender should see for a refused request: 415 means "try
/// another content type", 413 "smaller batches", 400 "never retry this".
pub(crate) fn ingest_status(e: &IngestError) -> StatusCode {
    match e {
        IngestError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        IngestError::Snappy(_) | IngestError::Protobuf(_) | IngestError::Invalid(_) => {
            StatusCode::BAD_REQUEST
        }
        IngestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
