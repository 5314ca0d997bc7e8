//! The HTTP layers every REST request passes, outermost first: a request id (`x-request-id`,
//! kept when the client sent one, echoed in the answer), one trace span and one log line per
//! request, the error model's JSON body for answers made outside the handlers, CORS, the
//! handler timeout, the body timeout and the body size limit.
//!
//! Timeouts follow what went wrong: a body that stalls for `api.body_timeout_secs` between
//! two chunks is the client's fault and answers 408; a handler that has not answered within
//! `api.handler_timeout_secs` is the server's and answers 503. Both stay below the
//! connection's `api.request_timeout_secs`, which closes the connection without an answer.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::{middleware, Router};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::error::json_error_bodies;
use super::ApiConfig;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// How long browsers may cache a preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// What the layers need from `[api]`.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub handler_timeout: Duration,
    /// Empty: no CORS headers at all (browsers then refuse cross-origin calls).
    pub cors_allowed_origins: Vec<HeaderValue>,
}

impl HttpPolicy {
    /// From a validated `[api]`.
    pub fn from_config(config: &ApiConfig) -> HttpPolicy {
        HttpPolicy {
            max_body_bytes: config.max_body_bytes,
            body_timeout: Duration::from_secs(config.body_timeout_secs),
            handler_timeout: Duration::from_secs(config.handler_timeout_secs),
            cors_allowed_origins: config.cors_allowed_origins.iter().filter_map(|o| parse_origin(o).ok()).collect(),
        }
    }
}

/// An origin as browsers send it: `http://` or `https://`, a host, maybe a port, no path.
pub fn parse_origin(origin: &str) -> Result<HeaderValue, String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("{origin:?} must start with https:// or http://"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '*']) {
        return Err(format!("{origin:?} must be scheme://host[:port] without a path or wildcard"));
    }
    HeaderValue::from_str(origin).map_err(|_| format!("{origin:?} is not a valid origin"))
}

/// `router` with the layers of this module around every route.
pub fn apply(router: Router, policy: &HttpPolicy) -> Router {
    let mut router = router
        .layer(RequestBodyLimitLayer::new(policy.max_body_bytes))
        // The limit above is the one that counts; axum's own 2 MB default would shadow it.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyTimeoutLayer::new(policy.body_timeout))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, policy.handler_timeout));
    if !policy.cors_allowed_origins.is_empty() {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(policy.cors_allowed_origins.clone()))
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
                .expose_headers([REQUEST_ID, header::RETRY_AFTER])
                .max_age(CORS_MAX_AGE),
        );
    }
    router
        .layer(middleware::map_response(json_error_bodies))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(|response: &Response, latency: Duration, _: &Span| {
                    tracing::info!(status = response.status().as_u16(), latency_ms = latency.as_secs_f64() * 1000.0, "answered");
                })
                // Server errors are logged with their cause by the error model; a dropped
                // connection is not the server's failure.
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Method, path and request id; never the query string (a client may put a token there) nor
/// any header but the request id.
fn request_span(request: &Request<Body>) -> Span {
    let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %request_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    fn policy() -> HttpPolicy {
        HttpPolicy {
            max_body_bytes: 16,
            body_timeout: Duration::from_secs(5),
            handler_timeout: Duration::from_millis(50),
            cors_allowed_origins: Vec::new(),
        }
    }

    async fn answer(router: Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = router.oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn a_slow_handler_answers_503_in_the_error_model() {
        let slow = Router::new().route("/slow", get(|| tokio::time::sleep(Duration::from_secs(5))));
        let (status, headers, body) = answer(apply(slow, &policy()), Request::get("/slow").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(body["error"].is_string(), "{body}");
        assert!(headers.contains_key("x-request-id"));
    }

    #[tokio::test]
    async fn a_declared_large_body_answers_413_before_the_handler() {
        let echo = Router::new().route("/echo", post(|body: axum::body::Bytes| async move { body }));
        let request = Request::post("/echo").header(header::CONTENT_LENGTH, "17").body(Body::from("x".repeat(17))).unwrap();
        let (status, headers, body) = answer(apply(echo, &policy()), request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(body["error"].is_string(), "{body}");
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert!(parse_origin("https://app.example.com").is_ok());
        assert!(parse_origin("http://localhost:3000").is_ok());
        for bad in ["app.example.com", "https://", "https://a.example/", "https://*.example", "*", "ftp://x"] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
