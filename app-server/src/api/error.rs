//! The REST error model (DESIGN.md §3): `{"error": "..."}` with 400 naming the field,
//! 401, 403, 404, 405, 408, 409, 413, 415, 429; 5xx bodies stay generic while the cause is
//! logged once here. Answers made outside the handlers (axum's 405, tower-http's 408/413/503)
//! get the same body from [`json_error_bodies`].

use axum::http::{header, HeaderValue, StatusCode};
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
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("too many failed authentication attempts from this address; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// Every live stream slot (`api.max_streams`) is taken: 503, try again later.
    #[error("too many live streams open (api.max_streams); try again later")]
    TooManyStreams,
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
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Storage(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::TooManyStreams => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = if status.is_server_error() && !matches!(self, ApiError::TooManyStreams) {
            tracing::error!(error = %self, "request failed");
            "internal error".to_string()
        } else {
            self.to_string()
        };
        let mut resp = (status, Json(serde_json::json!({ "error": message }))).into_response();
        match self {
            ApiError::Unauthorized => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        resp
    }
}

/// Gives every error answer without a JSON body (axum's 405 with its `Allow` header,
/// tower-http's 408, 413 and 503, a 404 of the router) the error model's body, keeping the
/// status and headers. Answers that already are JSON pass unchanged.
pub async fn json_error_bodies(response: Response) -> Response {
    let status = response.status();
    let is_json = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed; see the Allow header",
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large",
        StatusCode::REQUEST_TIMEOUT => "request body not received in time",
        StatusCode::SERVICE_UNAVAILABLE => "the request took too long; try again",
        StatusCode::NOT_FOUND => "no such endpoint",
        other => other.canonical_reason().unwrap_or("error"),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = serde_json::json!({ "error": message }).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}
