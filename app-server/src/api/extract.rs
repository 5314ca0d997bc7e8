//! Request extractors whose rejections follow the error model: a JSON body error names the
//! field (via `serde_path_to_error`), list paging is checked here once. Which query
//! parameters a route accepts is declared in [`super::query_params`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

use super::error::ApiError;

/// `Json<T>` whose errors say which field is wrong, e.g. `name: invalid type: integer`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// `application/json` or a `+json` type, with any parameters (`; charset=utf-8`).
fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A body that could not be read: too large (413; the limit layer's error), stalled (408;
/// the body timeout's error) or broken off (400).
fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::RequestTimeout;
        }
        source = e.source();
    }
    ApiError::BadRequest(format!("body: {rejection}"))
}

/// Parses a body: JSON syntax first, then the text rules of [`super::text`] on every string
/// (so a NUL is refused the same way on every backend and for every endpoint), then `T`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    super::text::check_json_text(&value)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            // serde's own text already names a missing or unknown field.
            ApiError::BadRequest(format!("body: {inner}"))
        } else {
            ApiError::BadRequest(format!("{path}: {inner}"))
        }
    })
}

/// Raw query parameters, parsed by the handler with field-naming errors.
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        Ok(QueryMap(url_pairs(q).collect()))
    }
}

/// axum's Query rejection text does not name the field, so values are parsed by the handler.
fn url_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// The query parameters of [`QueryMap::paging`].
pub const PAGING_QUERY: &[&str] = &["limit", "offset"];

/// `limit` (default 100, at most 1000) and `offset` of a list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: u32,
    pub offset: u32,
}

impl QueryMap {
    pub fn paging(&self) -> Result<Paging, ApiError> {
        let limit = self.number("limit")?.unwrap_or(100);
        if limit > 1000 {
            return Err(ApiError::field("limit", "must be at most 1000"));
        }
        let offset = self.number("offset")?.unwrap_or(0);
        Ok(Paging { limit, offset })
    }

    pub fn number(&self, key: &str) -> Result<Option<u32>, ApiError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v.parse::<u32>().map(Some).map_err(|_| ApiError::field(key, format!("expected a non-negative integer, got {v:?}"))),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        gateway_id: String,
        location: Option<Loc>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Loc {
        latitude: f64,
    }

    #[test]
    fn json_errors_name_the_nested_field() {
        let e = parse_json::<Body>(br#"{"gatewayId":"x","location":{"latitude":"north"}}"#).unwrap_err();
        assert!(e.to_string().starts_with("location.latitude: "), "{e}");
    }

    #[test]
    fn json_errors_name_a_missing_field() {
        let e = parse_json::<Body>(br#"{}"#).unwrap_err();
        assert!(e.to_string().contains("gatewayId"), "{e}");
    }

    #[test]
    fn paging_rejects_limit_over_1000() {
        let q = QueryMap([("limit".to_string(), "1001".to_string())].into());
        assert!(q.paging().unwrap_err().to_string().starts_with("limit:"));
        let q = QueryMap([("offset".to_string(), "x".to_string())].into());
        assert!(q.paging().unwrap_err().to_string().starts_with("offset:"));
    }

    #[test]
    fn json_content_types_are_recognised() {
        let headers = |v: &'static str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static(v));
            h
        };
        assert!(is_json_content_type(&headers("application/json")));
        assert!(is_json_content_type(&headers("Application/JSON; charset=utf-8")));
        assert!(is_json_content_type(&headers("application/merge-patch+json")));
        assert!(!is_json_content_type(&headers("text/plain")));
        assert!(!is_json_content_type(&headers("application/jsonx")));
        assert!(!is_json_content_type(&axum::http::HeaderMap::new()));
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let m: HashMap<_, _> = url_pairs("since=2026-01-01T00%3A00%3A00Z&a=b+c").collect();
        assert_eq!(m["since"], "2026-01-01T00:00:00Z");
        assert_eq!(m["a"], "b c");
    }
}
