//! The REST error model (DESIGN.md §3): `{"error": "..."}` with 400 naming the field,
//! 401, 403, 404, 409; 5xx bodies stay generic while the cause is logged once here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use loraflow_network_server::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Invalid input; the message starts with the camelCase field name.
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The key may not do this (admin-only resource, another application, read-only key).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("storage: {0}")]
    Storage(#[source] StorageError),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, reason: impl std::fmt::Display) -> Self {
        ApiError::BadRequest(format!("{field}: {reason}"))
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => ApiError::NotFound("not found".into()),
            StorageError::AlreadyExists => ApiError::Conflict("already exists".into()),
            StorageError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::Storage(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Storage(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            "internal error".to_string()
        } else {
            self.to_string()
        };
        let mut resp = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
