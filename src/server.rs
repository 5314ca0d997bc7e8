//! Start-up and wiring: storage, packet-forwarder, network server, application server, REST.
//! One `CancellationToken` stops everything; `serve` returns once in-flight work is flushed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use loraflow_app_server::api::{self, ApiState, Auth};
use loraflow_app_server::codec::Codecs;
use loraflow_app_server::integration::{Integration, IntegrationDeps};
use loraflow_app_server::live::{Live, LivePublisher};
use loraflow_app_server::mqtt::MqttIntegration;
use loraflow_network_server::cluster::{ChangeBus, Cluster};
use loraflow_network_server::handle::NetworkHandle;
use loraflow_network_server::server::NetworkServer;
use loraflow_network_server::storage::Storage;
use loraflow_network_server::types::Eui64;
use loraflow_packet_forwarder::frame::{GatewayEvent, UplinkFrame};
use loraflow_packet_forwarder::{KnownGateways, PacketForwarder};

use crate::config::{Config, LogConfig};

/// How long shutdown may take before tasks are abandoned (SIGTERM contract: 5 s).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(4500);
/// How often gateway `lastSeenAt` is written (one batch per interval, not one per packet).
const LAST_SEEN_FLUSH: Duration = Duration::from_secs(2);
/// Gateway frames waiting for the deduplicator.
const UPLINK_QUEUE: usize = 65_536;
/// Pending REST connections the kernel holds for us (capped by `net.core.somaxconn`): a burst
/// of connections, hostile or not, must not overflow it while the accept loop is busy, or
/// clients wait for a SYN retransmit (1 s) before they are even seen.
const API_LISTEN_BACKLOG: u32 = 4096;
/// Network-server events waiting for the application side.
const APP_EVENT_QUEUE: usize = 65_536;

pub fn init_tracing(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // The embedded broker logs every connection (and every disconnect as an error).
    for directive in loraflow_app_server::mqtt::QUIET_LOG_DIRECTIVES {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    // Colours only for a terminal: escape codes in a log file or journal are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let _ = if log.format == "json" {
        // Flat: `{"timestamp","level","message","dev_eui",…,"target"}` rather than the event's
        // fields nested under `fields`, which is what log shippers index without a pipeline.
        builder.json().flatten_event(true).try_init()
    } else {
        // Values from the network must never start a line of their own.
        builder.fmt_fields(crate::log_format::escaped_fields()).try_init()
    };
}

/// The addresses the server actually listens on (ports may have been 0 in the config).
#[derive(Debug, Clone)]
pub struct Listening {
    pub api: SocketAddr,
    /// The API speaks HTTPS.
    pub api_tls: bool,
    pub gateway: SocketAddr,
    pub mqtt: Option<SocketAddr>,
}

impl Listening {
    /// Where a browser on this machine opens the console: a wildcard bind address is reached
    /// through loopback.
    pub fn console_url(&self) -> String {
        let scheme = if self.api_tls { "https" } else { "http" };
        let mut addr = self.api;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        format!("{scheme}://{addr}/")
    }
}

impl std::fmt::Display for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.api_tls { "https" } else { "http" };
        write!(f, "api={scheme}://{} gateway_udp={}", self.api, self.gateway)?;
        if let Some(m) = self.mqtt {
            write!(f, " mqtt_embedded={m}")?;
        }
        Ok(())
    }
}

/// Runs the server until `shutdown` is cancelled.
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let api_limits = api_limits(&config);
    // Read before anything is stored (the generated admin token): a bad certificate stops the
    // start early.
    let api_tls = match (&config.api.tls_cert, &config.api.tls_key) {
        (Some(cert), Some(key)) => Some(api::tls::acceptor(cert, key)?),
        _ => None,
    };
    let api_policy = api::layers::HttpPolicy::from_config(&config.api);
    let storage = Storage::connect(&config.database)
        .await
        .with_context(|| format!("opening the database (database.url = {})", redact_url(&config.database.url)))?;
    tracing::info!(backend = storage.backend_name(), "storage ready");

    let registry = prometheus::Registry::new();
    crate::process_metrics::register(&registry)?;
    let known = KnownGateways::new(config.network.allow_unknown_gateways);
    let network = NetworkHandle::new(storage.clone(), known.clone());
    network.load_gateways().await?;
    // Stopped after the network server and the integration drained, so that their last
    // changes still reach the other instances.
    let cluster_stop = CancellationToken::new();
    let cluster = start_cluster(&config, &registry, &network, cluster_stop.clone()).await?;

    let (forwarder, gateway_events) =
        PacketForwarder::bind(&config.gateway, &registry, known.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway_addr = forwarder.local_addr();

    let api_listener = bind_api(config.api.bind)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} ({e}); set api.bind (LORAFLOW_API__BIND) to another address", config.api.bind))?;
    let api_addr = api_listener.local_addr()?;

    let regions = config.regions()?;
    // Front components stop on `shutdown`; the back (MQTT, history writer) only after the
    // network server and integration have drained, so that nothing in flight is lost.
    let integration_shutdown = CancellationToken::new();
    let mqtt_shutdown = CancellationToken::new();
    let mut mqtt_config = config.mqtt.clone();
    // Every instance subscribes to downlink commands; each command must be queued once.
    mqtt_config.command_share_group = cluster.as_ref().map(|c| c.prefix().to_string());
    let (mqtt, commands, mqtt_addr) =
        MqttIntegration::start(&mqtt_config, &registry, mqtt_shutdown.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let (app_events_tx, app_events_rx) = mpsc::channel(APP_EVENT_QUEUE);
    let network_server = NetworkServer::new(
        config.network.clone(),
        regions.clone(),
        storage.clone(),
        forwarder.handle(),
        network.clone(),
        app_events_tx,
        &registry,
        cluster.clone(),
    )
    .await?;
    let codecs = Codecs::new(config.codec.clone());
    codecs.register_metrics(&registry)?;
    // Every event published on MQTT also reaches the device's live watchers (REST streams).
    let live_devices = loraflow_app_server::live::device_feed::device_feed();
    let publisher = Arc::new(LivePublisher::new(Arc::new(mqtt.clone()), live_devices.clone()));
    let integration = Integration::new(
        &config.integration,
        IntegrationDeps { storage: storage.clone(), publisher, codecs: codecs.clone(), network: network.clone() },
        &registry,
    )?;

    // Last of what can fail at start, so that a generated token is not lost to a start that
    // fails after printing it.
    let mut auth = bootstrap_auth(&config, &storage).await?;
    if cluster.is_some() {
        // Keys revoked through another instance must stop working here within a second.
        auth = auth.with_cache_ttl(api::auth::CLUSTER_CACHE_TTL);
    }
    let auth = Arc::new(auth);
    mqtt.set_authenticator(auth.clone());

    let tracker = TaskTracker::new();
    let api_state = ApiState {
        storage: storage.clone(),
        gateway_status: Some(forwarder.handle()),
        registry: registry.clone(),
        auth,
        auth_failures: Arc::new(api::auth_limit::FailedAuthLimiter::new(config.api.auth_failures_per_minute)),
        network: network.clone(),
        network_config: Arc::new(config.network.clone()),
        regions,
        codec_tests: Arc::new(tokio::sync::Semaphore::new(api::codec_test::concurrent_tests(&config.codec))),
        codecs: codecs.clone(),
        mqtt: Some(mqtt.clone()),
        live: Live::new(live_devices, api::max_streams_for(&config.api, &api_limits), shutdown.clone()),
        cluster,
    };
    let (uplinks_tx, uplinks_rx) = mpsc::channel(UPLINK_QUEUE);
    tracker.spawn(forwarder.run(shutdown.clone()));
    tracker.spawn(consume_gateway_events(gateway_events, uplinks_tx, storage.clone()));
    let ns_done = tokio::spawn(network_server.run(uplinks_rx, shutdown.clone()));
    let integration_done = tokio::spawn(integration.run(app_events_rx, commands, integration_shutdown.clone()));
    {
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = api::serve(api_listener, api_state, &api_policy, api_limits, api_tls, shutdown).await {
                tracing::error!(error = %e, "REST API stopped");
            }
        });
    }
    tracker.close();

    let listening = Listening { api: api_addr, api_tls: config.api.tls_cert.is_some(), gateway: gateway_addr, mqtt: mqtt_addr };
    tracing::info!(%listening, "loraflow started");
    // Before the ready line, which tools wait for: by then everything is printed.
    let console = listening.console_url();
    tracing::info!(%console, "web console");
    println!("loraflow console: {console} (open it and sign in with the admin API token)");
    println!("loraflow ready: {listening}");

    shutdown.cancelled().await;
    let drained = async {
        tracker.wait().await;
        // The gateway side has stopped: finish every uplink already received, then let the
        // integration publish and store what they produced, then flush MQTT and storage.
        let _ = ns_done.await;
        integration_shutdown.cancel();
        let _ = integration_done.await;
        cluster_stop.cancel();
        if !mqtt.flush(Duration::from_secs(2)).await {
            tracing::warn!(queued = mqtt.queue_depth(), "MQTT events not delivered before shutdown");
        }
        mqtt_shutdown.cancel();
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!("some tasks did not stop within the shutdown grace period");
    }
    storage.close().await;
    tracing::info!("loraflow stopped");
    Ok(())
}

/// Cluster mode (`cluster.redis_url`): connects to Redis and starts announcing this
/// instance's changes and applying the others'. `None` when the instance works alone.
async fn start_cluster(
    config: &Config,
    registry: &prometheus::Registry,
    network: &NetworkHandle,
    stop: CancellationToken,
) -> anyhow::Result<Option<Cluster>> {
    let no_redis = || format!("connecting to Redis (cluster.redis_url = {})", redact_url(&config.cluster.redis_url));
    let Some(cluster) = Cluster::connect(&config.cluster, registry).await.with_context(no_redis)? else {
        return Ok(None);
    };
    let bus = ChangeBus::start(&cluster, network, stop).await.with_context(no_redis)?;
    network.set_change_sink(bus);
    tracing::info!(instance_id = cluster.instance_id(), key_prefix = cluster.prefix(), "cluster mode on");
    Ok(Some(cluster))
}

/// Replaces the generated admin key (`loraflow admin-token rotate`) and returns the new token.
pub async fn rotate_admin_token(database: &loraflow_network_server::storage::DatabaseConfig) -> anyhow::Result<String> {
    let storage =
        Storage::connect(database).await.with_context(|| format!("opening the database (database.url = {})", redact_url(&database.url)))?;
    let token = loraflow_app_server::api::auth::rotate_generated(&storage).await?;
    storage.close().await;
    Ok(token)
}

async fn bootstrap_auth(config: &Config, storage: &Storage) -> anyhow::Result<Auth> {
    let admin_token = Some(config.api.admin_token.as_str()).filter(|t| !t.is_empty());
    let (auth, generated) = Auth::bootstrap(admin_token, storage.clone()).await?;
    match generated {
        // Printed once, on purpose not through tracing: logs are often shipped elsewhere.
        Some(token) => println!("loraflow: generated admin API token (shown only once, stored hashed): {token}"),
        None if admin_token.is_none() && storage.api_keys.list().await?.iter().any(|k| k.generated) => tracing::info!(
            "the admin API token was generated and printed on the first start; \
             `loraflow admin-token rotate` prints a new one (and revokes the old) if it is lost"
        ),
        None => {}
    }
    Ok(auth)
}

fn bind_api(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std's and tokio's `bind`: a restart must not wait for TIME_WAIT sockets to expire.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(API_LISTEN_BACKLOG)
}

/// The REST limits from `[api]`, with `max_connections` lowered when the descriptor limit
/// (raised to the hard limit first) cannot hold that many beside the database pool and MQTT.
fn api_limits(config: &Config) -> api::connections::ConnectionLimits {
    let mut limits = config.api.limits();
    match crate::fd_limit::raise_nofile_limit() {
        Ok(nofile) => {
            let budget = crate::fd_limit::rest_connection_budget(nofile, config.database.max_connections);
            if limits.max_connections > budget {
                tracing::warn!(
                    configured = limits.max_connections,
                    used = budget,
                    nofile,
                    "api.max_connections lowered to fit the file-descriptor limit (raise `ulimit -n` to allow more)"
                );
                limits.max_connections = budget;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the file-descriptor limit; api.max_connections used as configured"),
    }
    limits
}

/// Hands uplinks to the network server and persists gateway `lastSeenAt` in batches.
/// Ends when the packet-forwarder stops (its channel closes), which closes the uplink channel.
async fn consume_gateway_events(mut events: mpsc::Receiver<GatewayEvent>, uplinks: mpsc::Sender<UplinkFrame>, storage: Storage) {
    let seen: Arc<Mutex<HashMap<Eui64, DateTime<Utc>>>> = Arc::default();
    // lastSeenAt is written on its own task: a slow or unreachable database must never hold
    // up the hand-over of uplinks.
    let stop = CancellationToken::new();
    let flusher = tokio::spawn({
        let (seen, storage, stop) = (seen.clone(), storage.clone(), stop.clone());
        async move {
            let mut tick = tokio::time::interval(LAST_SEEN_FLUSH);
            loop {
                tokio::select! {
                    _ = tick.tick() => flush_last_seen(&storage, &seen).await,
                    _ = stop.cancelled() => break,
                }
            }
        }
    });
    while let Some(ev) = events.recv().await {
        match ev {
            GatewayEvent::Seen { gateway_id, at } | GatewayEvent::Stats { gateway_id, at, .. } => {
                seen.lock().expect("lock").insert(gateway_id, at);
            }
            GatewayEvent::Uplink(frame) => {
                if uplinks.send(frame).await.is_err() {
                    break;
                }
            }
        }
    }
    stop.cancel();
    let _ = flusher.await;
    flush_last_seen(&storage, &seen).await;
}

async fn flush_last_seen(storage: &Storage, seen: &Mutex<HashMap<Eui64, DateTime<Utc>>>) {
    let batch: Vec<_> = seen.lock().expect("lock").drain().collect();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = storage.gateways.touch_last_seen(&batch).await {
        tracing::warn!(error = %e, "could not store gateway lastSeenAt; trying again later");
        // Kept for the next round, unless the gateway was seen again meanwhile.
        let mut seen = seen.lock().expect("lock");
        for (gateway_id, at) in batch {
            seen.entry(gateway_id).or_insert(at);
        }
    }
}

/// The database URL without its password, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_url_of_a_wildcard_bind_is_on_loopback() {
        let listening =
            |api: &str, api_tls| Listening { api: api.parse().unwrap(), api_tls, gateway: "127.0.0.1:1700".parse().unwrap(), mqtt: None };
        assert_eq!(listening("0.0.0.0:8080", false).console_url(), "http://127.0.0.1:8080/");
        assert_eq!(listening("[::]:8443", true).console_url(), "https://[::1]:8443/");
        assert_eq!(listening("192.0.2.7:80", false).console_url(), "http://192.0.2.7:80/");
    }

    #[test]
    fn redacts_database_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite://loraflow.db"), "sqlite://loraflow.db");
    }
}
