//! REST API (DESIGN.md §3) on axum: `/health`, `/metrics`, the bearer-protected `/api/*`, and
//! the web console at `/` (public: it asks for a token and calls `/api/*` with it).

pub mod access;
pub mod api_keys;
pub mod applications;
pub mod auth;
pub mod auth_limit;
pub mod codec_test;
pub mod connections;
pub mod console;
pub mod device_activation;
pub mod device_events;
pub mod device_keys;
pub mod device_measurements;
pub mod device_profiles;
pub mod device_queue;
pub mod device_uplinks;
pub mod devices;
pub mod error;
pub mod events;
pub mod extract;
pub mod gateways;
pub mod health;
pub mod history;
pub mod http_metrics;
pub mod layers;
pub mod live_streams;
pub mod openapi;
pub mod query_params;
pub mod regions;
pub mod stats;
pub mod text;
pub mod time_format;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{middleware, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use loraflow_network_server::config::NetworkConfig;
use loraflow_network_server::handle::NetworkHandle;
use loraflow_network_server::storage::Storage;
use loraflow_packet_forwarder::Handle as GatewayHandle;

pub use auth::{Auth, Principal};
pub use error::ApiError;

/// `[api]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub bind: SocketAddr,
    /// Bearer token for `/api/*`. Empty: a token is generated on first start, printed once
    /// and stored hashed.
    pub admin_token: String,
    /// Open connections at most; at the limit the one idle the longest is closed.
    pub max_connections: usize,
    /// Seconds a new connection has to send its first request head.
    pub header_read_timeout_secs: u64,
    /// Seconds a keep-alive connection may wait for its next request head.
    pub idle_timeout_secs: u64,
    /// Seconds from a request head until its response is written (covers slow bodies too).
    pub request_timeout_secs: u64,
    /// Seconds a request body may stall between two chunks: 408 (the client is too slow).
    pub body_timeout_secs: u64,
    /// Seconds a handler may take to produce its answer: 503 (the server is too slow).
    pub handler_timeout_secs: u64,
    /// Largest request body in bytes; a larger one answers 413.
    pub max_body_bytes: usize,
    /// Live event streams (server-sent events) open at once at most. Each holds a
    /// connection, so at most half of the connections (`max_streams_for`) are used for them.
    pub max_streams: usize,
    /// PEM certificate chain and private key: both set serves HTTPS only, neither plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Browser origins (`https://host[:port]`) allowed to call the API; empty: no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// Wrong bearer tokens one client address (an IPv6 /64) may send per minute before it
    /// gets 429 until the minute is over; 0 disables the limit.
    pub auth_failures_per_minute: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: String::new(),
            max_connections: 1024,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            request_timeout_secs: 60,
            body_timeout_secs: 10,
            handler_timeout_secs: 30,
            max_body_bytes: 2 * 1024 * 1024,
            max_streams: 256,
            tls_cert: None,
            tls_key: None,
            cors_allowed_origins: Vec::new(),
            auth_failures_per_minute: 10,
        }
    }
}

/// An `[api]` value that cannot be used: the key (without the section) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfigError {
    pub key: &'static str,
    pub reason: String,
}

/// Timeouts above an hour would let idle connections pile up again.
const MAX_TIMEOUT_SECS: u64 = 3600;

impl ApiConfig {
    pub fn validate(&self) -> Result<(), ApiConfigError> {
        if self.max_connections < 2 {
            // One connection could be taken by any client and leave none for /health.
            return Err(ApiConfigError { key: "max_connections", reason: "must be at least 2".into() });
        }
        for (key, secs) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
        ] {
            if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
                return Err(ApiConfigError { key, reason: format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {secs}") });
            }
        }
        // Beyond the connection's request deadline the connection is closed before the
        // 408 or 503 could be written.
        for (key, secs) in [("body_timeout_secs", self.body_timeout_secs), ("handler_timeout_secs", self.handler_timeout_secs)] {
            if secs == 0 || secs >= self.request_timeout_secs {
                let reason = format!("must be at least 1 and below request_timeout_secs ({}), got {secs}", self.request_timeout_secs);
                return Err(ApiConfigError { key, reason });
            }
        }
        if self.max_streams == 0 {
            return Err(ApiConfigError { key: "max_streams", reason: "must be at least 1".into() });
        }
        if self.max_body_bytes < 1024 {
            return Err(ApiConfigError { key: "max_body_bytes", reason: format!("must be at least 1024, got {}", self.max_body_bytes) });
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(ApiConfigError { key: "tls_key", reason: "must be set together with api.tls_cert".into() }),
            (None, Some(_)) => return Err(ApiConfigError { key: "tls_cert", reason: "must be set together with api.tls_key".into() }),
            _ => {}
        }
        for origin in &self.cors_allowed_origins {
            layers::parse_origin(origin).map_err(|reason| ApiConfigError { key: "cors_allowed_origins", reason })?;
        }
        Ok(())
    }

    /// The server's limits; `max_connections` may still be lowered by the caller to fit the
    /// process's file-descriptor limit.
    pub fn limits(&self) -> connections::ConnectionLimits {
        use std::time::Duration;
        connections::ConnectionLimits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
        }
    }
}

/// Streams allowed with these connection limits: `api.max_streams`, but never more than half
/// of the connections, so that streams cannot lock out other requests (or `/health`).
pub fn max_streams_for(config: &ApiConfig, limits: &connections::ConnectionLimits) -> usize {
    config.max_streams.min(limits.max_connections / 2).max(1)
}

/// Everything a handler may use; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub storage: Storage,
    /// Live gateway state (pull address, online) from the packet-forwarder.
    pub gateway_status: Option<GatewayHandle>,
    pub registry: prometheus::Registry,
    pub auth: Arc<Auth>,
    /// Wrong tokens per client address (`api.auth_failures_per_minute`).
    pub auth_failures: Arc<auth_limit::FailedAuthLimiter>,
    /// The one owner of network-server state: device, key, activation, queue, application,
    /// profile and gateway changes go through it (storage, caches, other instances).
    pub network: NetworkHandle,
    pub network_config: Arc<NetworkConfig>,
    /// The region configurations (`[[regions]]`, or the one of `network.region`).
    pub regions: loraflow_network_server::region_config::Regions,
    /// Encodes `object` downlinks with the device profile's codec.
    pub codecs: crate::codec::Codecs,
    /// Codec tests running at once (`codec_test::concurrent_tests`), so that they never
    /// take every codec worker from the uplink path.
    pub codec_tests: codec_test::TestPermits,
    /// The MQTT transport, for `/health/ready`; `None` when there is none.
    pub mqtt: Option<crate::mqtt::MqttHandle>,
    /// Devices' live event feed, the stream limit and the shutdown that ends streams.
    pub live: crate::live::Live,
    /// The cluster's Redis, for `/health/ready`; `None` when this instance works alone.
    pub cluster: Option<loraflow_network_server::cluster::Cluster>,
}

impl ApiState {
    /// The region configuration a gateway with this stored id is served by.
    pub fn region_config_of(&self, stored: Option<&str>) -> String {
        stored.and_then(|id| self.regions.get(id)).unwrap_or_else(|| self.regions.first()).id.to_string()
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    pub total_count: u64,
    pub result: Vec<T>,
}

/// The router and the OpenAPI document, both built from the handlers' annotations.
fn documented_router(state: ApiState) -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let api = OpenApiRouter::new()
        .routes(routes!(gateways::list, gateways::create))
        .routes(routes!(gateways::get, gateways::update, gateways::delete))
        .routes(routes!(regions::list))
        .routes(routes!(regions::get))
        .routes(routes!(api_keys::list, api_keys::create))
        .routes(routes!(api_keys::delete))
        .routes(routes!(applications::list, applications::create))
        .routes(routes!(applications::get, applications::update, applications::delete))
        .routes(routes!(device_profiles::list, device_profiles::create))
        .routes(routes!(device_profiles::get, device_profiles::update, device_profiles::delete))
        .routes(routes!(codec_test::test))
        .routes(routes!(codec_test::test_profile))
        .routes(routes!(devices::list, devices::create))
        .routes(routes!(devices::get, devices::update, devices::delete))
        .routes(routes!(device_keys::get, device_keys::put))
        .routes(routes!(device_keys::delete_dev_nonces))
        .routes(routes!(device_activation::activate))
        .routes(routes!(device_activation::get))
        .routes(routes!(device_queue::list, device_queue::enqueue, device_queue::flush))
        .routes(routes!(device_uplinks::list))
        .routes(routes!(device_events::list))
        .routes(routes!(events::list))
        .routes(routes!(device_measurements::latest))
        .routes(routes!(device_measurements::series))
        .routes(routes!(device_measurements::application_series))
        .routes(routes!(live_streams::device_events))
        .routes(routes!(live_streams::gateway_frames))
        .routes(routes!(stats::network))
        .routes(routes!(stats::gateway))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .route_layer(middleware::from_fn(query_params::reject_unknown))
        // `layer`, not `route_layer`: unknown paths under /api answer 401 without a valid
        // token too, so that the API's shape is not visible to anyone.
        .layer(middleware::from_fn_with_state(state, auth::require_bearer))
        // After the bearer layer: the document is public.
        .routes(routes!(openapi::document));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(metrics))
        .nest("/api", api)
        .split_for_parts()
}

pub fn router(state: ApiState, policy: &layers::HttpPolicy) -> Router {
    let (router, doc) = documented_router(state.clone());
    let document = openapi::to_json(&doc);
    query_params::set_operations(&document);
    let json = document.to_string();
    let router = router
        // Outside the bearer layer and the OpenAPI document: the console is a page, not an
        // operation, and asks for the token itself.
        .merge(console::router())
        .layer(axum::Extension(openapi::OpenApiJson(json.into())))
        .layer(middleware::from_fn_with_state(http_metrics::HttpMetrics::register(&state.registry), http_metrics::track))
        .with_state(state);
    layers::apply(router, policy)
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    operation_id = "metrics",
    get,
    path = "/metrics",
    tag = "meta",
    security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String))
)]
async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut buf) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, encoder.format_type().to_string())], buf).into_response(),
        Err(e) => ApiError::Internal(format!("metrics: {e}")).into_response(),
    }
}

/// Serves the API within `limits` (over TLS when `tls` is set) until `shutdown` is
/// cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    policy: &layers::HttpPolicy,
    limits: connections::ConnectionLimits,
    tls: Option<tls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let registry = state.registry.clone();
    connections::serve(listener, router(state, policy), limits, tls, &registry, shutdown).await
}
