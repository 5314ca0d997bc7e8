//! HTTP metrics of the REST API: requests by method, route template and status, and their
//! latency, as one axum middleware (`router` adds it with `Router::layer`, which axum runs
//! after routing, so the matched route template is known).
//!
//! Labels stay bounded whatever clients send: the route is the template (`/api/devices/{dev_eui}`,
//! never the DevEUI), paths that match no route are all `unmatched`, and methods outside the
//! standard set are `other`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The route label of requests that matched no route (404 from a fallback).
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    /// Registers the metrics; a registry that has them already (a second router on the same
    /// registry) keeps its own and these count beside them unexported.
    pub fn register(registry: &Registry) -> HttpMetrics {
        let requests = IntCounterVec::new(
            Opts::new("loraflow_http_requests_total", "REST requests answered, by method, route template and status code"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "loraflow_http_request_duration_seconds",
                "Time from a request reaching its route to its response head, by method and route template",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            &["method", "route"],
        )
        .expect("valid metric");
        for c in [Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>, Box::new(duration.clone())] {
            if let Err(e) = registry.register(c) {
                tracing::debug!(error = %e, "HTTP metrics registered twice");
            }
        }
        // The series scrapers look at first exist from the start, at 0.
        for (method, route) in [("GET", "/health"), ("GET", "/health/ready"), ("GET", "/metrics")] {
            duration.with_label_values(&[method, route]);
            requests.with_label_values(&[method, route, "200"]);
        }
        HttpMetrics { requests, duration }
    }

    fn observe(&self, method: &str, route: &str, status: StatusCode, secs: f64) {
        // The server chooses the status, so its values stay few.
        self.requests.with_label_values(&[method, route, status.as_str()]).inc();
        self.duration.with_label_values(&[method, route]).observe(secs);
    }
}

/// The middleware: `middleware::from_fn_with_state(HttpMetrics::register(&registry), track)`.
pub async fn track(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    let route = match route {
        // A nested router's fallback matches a wildcard; it is not a route of the API.
        Some(r) if !r.contains("{*") => r,
        _ => UNMATCHED_ROUTE.to_owned(),
    };
    metrics.observe(method, &route, status, started.elapsed().as_secs_f64());
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    fn app(registry: &Registry) -> Router {
        let api = Router::new()
            .route("/devices/{dev_eui}", get(|| async { "ok" }))
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "none") });
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .nest("/api", api)
            .layer(axum::middleware::from_fn_with_state(HttpMetrics::register(registry), track))
    }

    async fn call(app: &Router, method: &str, uri: &str) -> u16 {
        let req = axum::http::Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        app.clone().oneshot(req).await.unwrap().status().as_u16()
    }

    fn text(registry: &Registry) -> String {
        prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap()
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_not_by_path() {
        let registry = Registry::new();
        let app = app(&registry);
        assert_eq!(call(&app, "GET", "/api/devices/0102030405060708").await, 200);
        assert_eq!(call(&app, "GET", "/api/devices/a1a2a3a4a5a6a7a8").await, 200);
        assert_eq!(call(&app, "GET", "/api/no/such/thing").await, 404);
        assert_eq!(call(&app, "GET", "/nowhere").await, 404);
        assert_eq!(call(&app, "BREW", "/health").await, 405);
        let t = text(&registry);
        assert!(t.contains(r#"loraflow_http_requests_total{method="GET",route="/api/devices/{dev_eui}",status="200"} 2"#), "{t}");
        assert!(t.contains(r#"loraflow_http_requests_total{method="GET",route="unmatched",status="404"} 2"#), "{t}");
        assert!(t.contains(r#"loraflow_http_requests_total{method="other",route="/health",status="405"} 1"#), "{t}");
        assert!(t.contains(r#"loraflow_http_request_duration_seconds_count{method="GET",route="/api/devices/{dev_eui}"} 2"#), "{t}");
        assert!(!t.contains("0102030405060708"), "{t}");
    }

    #[test]
    fn the_probe_routes_are_present_at_zero() {
        let registry = Registry::new();
        HttpMetrics::register(&registry);
        let t = text(&registry);
        assert!(t.contains(r#"loraflow_http_requests_total{method="GET",route="/health/ready",status="200"} 0"#), "{t}");
        assert!(t.contains(r#"loraflow_http_request_duration_seconds_count{method="GET",route="/metrics"} 0"#), "{t}");
    }
}
