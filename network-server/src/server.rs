//! The network server's run loop: deduplicated uplinks in, application events and gateway
//! downlinks out. Uplinks of one device are handled one at a time in arrival order, uplinks
//! of different devices in parallel (`serializer`), each as a list of named steps in
//! `uplink::data` and `uplink::join`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use loraflow_packet_forwarder::frame::UplinkFrame;
use loraflow_packet_forwarder::log_limit::LogLimiter;
use loraflow_packet_forwarder::Handle as GatewayHandle;

use crate::cache::SessionCache;
use crate::class_c::ClassC;
use crate::cluster::Cluster;
use crate::config::NetworkConfig;
use crate::dedup::{DedupedUplink, Deduplicator};
use crate::duty_cycle_ledger::SharedDutyCycleLedger;
use crate::events::AppEvent;
use crate::fcnt_writer::FCntWriter;
use crate::gateway_router::GatewayRouter;
use crate::handle::NetworkHandle;
use crate::lorawan::{self, Phy};
use crate::metrics::Metrics;
use crate::region_config::Regions;
use crate::serializer::KeyedSerializer;
use crate::storage::{Storage, StorageError};
use crate::types::{DevAddr, Eui64};
use crate::uplink;

/// How many uplinks may be in processing or waiting behind an earlier uplink of their
/// device at once.
const MAX_IN_FLIGHT: usize = 4096;

/// What orders uplinks: frames with the same key are handled one at a time, in arrival
/// order. A data frame is only known by its DevAddr before the session lookup, so devices
/// sharing a DevAddr share a queue; a join-request names its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum UplinkKey {
    DevAddr(DevAddr),
    Join { join_eui: Eui64, dev_eui: Eui64 },
}

fn uplink_key(phy: &Result<Phy, lorawan::PhyError>) -> Option<UplinkKey> {
    match phy {
        Ok(Phy::Data(frame)) if frame.is_uplink() => Some(UplinkKey::DevAddr(frame.dev_addr)),
        Ok(Phy::JoinRequest(jr)) => Some(UplinkKey::Join { join_eui: jr.join_eui, dev_eui: jr.dev_eui }),
        // Rejected without touching any state: no order to keep.
        _ => None,
    }
}

/// Everything the uplink steps need; shared by all uplink tasks.
pub struct Context {
    pub config: NetworkConfig,
    pub net_id: [u8; 3],
    /// The region configurations; each uplink is handled with the one of the gateways that
    /// heard it (`uplink::select_region`).
    pub regions: Regions,
    pub storage: Storage,
    pub gateways: GatewayHandle,
    /// Where downlinks go: the local UDP server, or in a cluster the instance holding the
    /// gateway.
    pub router: GatewayRouter,
    pub handle: NetworkHandle,
    /// The cluster's Redis; `None` when this instance works alone (`cluster.redis_url` empty).
    pub cluster: Option<Cluster>,
    pub cache: SessionCache,
    pub fcnt: FCntWriter,
    pub events: mpsc::Sender<AppEvent>,
    pub metrics: Metrics,
    pub device_seen: std::sync::Mutex<std::collections::HashMap<crate::types::Eui64, chrono::DateTime<chrono::Utc>>>,
    /// Each gateway's downlink airtime per sub-band over the last hour (in memory: a restart
    /// starts from zero).
    pub duty_cycle: SharedDutyCycleLedger,
    /// Class C devices heard since the start and the scheduler's timers (in memory).
    pub class_c: ClassC,
    /// Storage failures while handling uplinks are logged at most once per interval: in a
    /// database outage every frame would otherwise write its own ERROR line.
    storage_errors: LogLimiter,
    /// `network.join_requests_per_dev_eui_per_minute`.
    pub(crate) join_rate: crate::join_rate::JoinRateLimit,
    /// Rate-limited join-requests are logged at most once per interval: a flood would
    /// otherwise write one line each.
    pub(crate) join_rate_log: LogLimiter,
}

/// At most one storage-error line per this interval (the rest are counted in it).
const STORAGE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Context {
    /// Logs a storage failure met while handling an uplink or downlink, rate-limited.
    pub fn storage_error(&self, what: &'static str, error: &StorageError) {
        if let Some(suppressed) = self.storage_errors.allow() {
            tracing::error!(error = %error, suppressed_since_last_line = suppressed, "storage error: {what}");
        }
    }

    /// Emits a `log` event for a device.
    pub async fn log<const N: usize>(
        &self,
        device: &std::sync::Arc<crate::storage::DeviceContext>,
        level: crate::events::LogLevel,
        code: crate::events::LogCode,
        description: &str,
        context: [(&str, String); N],
    ) {
        self.emit(AppEvent::Log(crate::events::LogInfo {
            time: chrono::Utc::now(),
            device: device.clone(),
            level,
            code,
            description: description.to_string(),
            context: context.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }))
        .await;
    }

    /// Hands an event to the application side. The channel is bounded; waiting here is the
    /// back-pressure that keeps memory bounded when the application side is slow.
    pub async fn emit(&self, event: AppEvent) {
        if self.events.send(event).await.is_err() {
            tracing::warn!("application side stopped; event dropped");
        }
    }
}

pub struct NetworkServer {
    ctx: Arc<Context>,
    dedup: Deduplicator,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::InvalidConfig),
    #[error("loading device sessions: {0}")]
    Storage(#[from] StorageError),
}

impl NetworkServer {
    // The parts start-up wires together; a struct of them would only move the list.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        config: NetworkConfig,
        regions: Regions,
        storage: Storage,
        gateways: GatewayHandle,
        handle: NetworkHandle,
        events: mpsc::Sender<AppEvent>,
        registry: &prometheus::Registry,
        cluster: Option<Cluster>,
    ) -> Result<NetworkServer, StartError> {
        config.validate()?;
        let net_id = config.net_id_bytes()?;
        handle.load_gateways().await?;
        let metrics = Metrics::new(registry);
        let cache = SessionCache::load(storage.clone(), handle.clone()).await?;
        tracing::info!(sessions = cache.len(), "device sessions loaded");
        let fcnt = FCntWriter::start(storage.clone(), metrics.fcnt_batch_size.clone(), metrics.fcnt_unpersisted.clone());
        let mut dedup = Deduplicator::new(Duration::from_millis(config.dedup_window_ms), registry);
        if let Some(cluster) = &cluster {
            dedup = dedup.with_cluster(cluster.clone(), registry);
        }
        let duty_cycle = SharedDutyCycleLedger::with_budget_percent(config.duty_cycle_budget_percent);
        let join_rate = crate::join_rate::JoinRateLimit::new(config.join_requests_per_dev_eui_per_minute);
        let router = GatewayRouter::new(gateways.clone(), cluster.clone(), registry);
        let ctx = Context {
            config,
            net_id,
            regions,
            storage,
            gateways,
            router,
            handle,
            cluster,
            cache,
            fcnt,
            events,
            metrics,
            device_seen: Default::default(),
            duty_cycle,
            class_c: ClassC::default(),
            storage_errors: LogLimiter::new(STORAGE_ERROR_LOG_INTERVAL),
            join_rate,
            join_rate_log: LogLimiter::new(STORAGE_ERROR_LOG_INTERVAL),
        };
        Ok(NetworkServer { ctx: Arc::new(ctx), dedup })
    }

    /// Runs until `shutdown`; then finishes every uplink already collected or in progress.
    pub async fn run(self, frames: mpsc::Receiver<UplinkFrame>, shutdown: CancellationToken) {
        let (deduped_tx, mut deduped) = mpsc::channel::<DedupedUplink>(MAX_IN_FLIGHT);
        let dedup_task = tokio::spawn(self.dedup.run(frames, deduped_tx, shutdown.clone()));
        let ctx = self.ctx;
        let uplinks = Arc::new(KeyedSerializer::<UplinkKey>::new(MAX_IN_FLIGHT));
        let background = TaskTracker::new();
        // Class C sends run as jobs of the uplink serializer, in each device's uplink order.
        let class_c_stop = CancellationToken::new();
        let class_c = tokio::spawn(crate::class_c::run(ctx.clone(), uplinks.clone(), class_c_stop.clone()));
        // Cluster mode: this instance's gateway routes, and the downlink hand-over, which
        // serves until every uplink in progress is done (they may wait for verdicts).
        let cluster_stop = CancellationToken::new();
        if let Some(cluster) = &ctx.cluster {
            background.spawn(crate::cluster::routes::run_recorder(cluster.clone(), ctx.gateways.clone(), cluster_stop.clone()));
            background.spawn(ctx.router.clone().serve(ctx.handle.clone(), cluster_stop.clone()));
        }
        // lastSeenAt is written on its own task: a slow or unreachable database must never
        // hold up the dispatch of uplinks.
        let seen_stop = CancellationToken::new();
        background.spawn({
            let ctx = ctx.clone();
            let stop = seen_stop.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(2));
                loop {
                    tokio::select! {
                        _ = tick.tick() => flush_device_seen(&ctx).await,
                        _ = stop.cancelled() => break,
                    }
                }
            }
        });
        // Devices changed over REST are re-read in the background, so that the first uplink
        // after a bulk activation does not wait for it.
        let refresher = {
            let ctx = ctx.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut failing = false;
                while !shutdown.is_cancelled() {
                    tick.tick().await;
                    // Logged when it starts and stops failing, not every 100 ms of an outage.
                    match ctx.cache.refresh_stale().await {
                        Err(e) if !failing => {
                            tracing::warn!(error = %e, "could not re-read changed devices; retrying");
                            failing = true;
                        }
                        Ok(()) if failing => {
                            tracing::info!("changed devices re-read again");
                            failing = false;
                        }
                        _ => {}
                    }
                }
            })
        };
        // The deduplicator flushes its open windows at shutdown and then closes the channel,
        // so this loop sees every uplink before it ends.
        while let Some(up) = deduped.recv().await {
            let phy = lorawan::parse(&up.phy_payload);
            let key = uplink_key(&phy);
            let ctx = ctx.clone();
            uplinks.submit(key, async move { uplink::handle(&ctx, up, phy).await }).await;
        }
        let _ = dedup_task.await;
        class_c_stop.cancel();
        let _ = class_c.await;
        uplinks.drain().await;
        cluster_stop.cancel();
        refresher.abort();
        seen_stop.cancel();
        background.close();
        background.wait().await;
        flush_device_seen(&ctx).await;
    }
}

async fn flush_device_seen(ctx: &Context) {
    let batch: Vec<_> = ctx.device_seen.lock().expect("lock").drain().collect();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = ctx.storage.devices.touch_last_seen(&batch).await {
        tracing::warn!(error = %e, devices = batch.len(), "could not store device lastSeenAt; trying again later");
        // Kept for the next round, unless the device was seen again meanwhile.
        let mut seen = ctx.device_seen.lock().expect("lock");
        for (dev_eui, at) in batch {
            seen.entry(dev_eui).or_insert(at);
        }
    }
}
