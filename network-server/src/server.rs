//! The network server's run loop: deduplicated uplinks in, application events and gateway
//! downlinks out. Each uplink is handled in its own task (bounded), as a list of named steps
//! in `uplink::data` and `uplink::join`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use loraflow_packet_forwarder::frame::UplinkFrame;
use loraflow_packet_forwarder::Handle as GatewayHandle;

use crate::cache::SessionCache;
use crate::config::NetworkConfig;
use crate::dedup::{DedupedUplink, Deduplicator};
use crate::events::AppEvent;
use crate::fcnt_writer::FCntWriter;
use crate::handle::NetworkHandle;
use crate::metrics::Metrics;
use crate::region::{self, Region};
use crate::storage::{Storage, StorageError};
use crate::uplink;

/// How many uplinks may be in processing at once.
const MAX_IN_FLIGHT: usize = 4096;

/// Everything the uplink steps need; shared by all uplink tasks.
pub struct Context {
    pub config: NetworkConfig,
    pub net_id: [u8; 3],
    pub region: Box<dyn Region>,
    pub storage: Storage,
    pub gateways: GatewayHandle,
    pub handle: NetworkHandle,
    pub cache: SessionCache,
    pub fcnt: FCntWriter,
    pub events: mpsc::Sender<AppEvent>,
    pub metrics: Metrics,
    pub device_seen: std::sync::Mutex<std::collections::HashMap<crate::types::Eui64, chrono::DateTime<chrono::Utc>>>,
}

impl Context {
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
    pub async fn new(
        config: NetworkConfig,
        storage: Storage,
        gateways: GatewayHandle,
        handle: NetworkHandle,
        events: mpsc::Sender<AppEvent>,
        registry: &prometheus::Registry,
    ) -> Result<NetworkServer, StartError> {
        config.validate()?;
        let net_id = config.net_id_bytes()?;
        let region = region::region_by_name(&config.region).ok_or_else(|| crate::config::InvalidConfig {
            key: "network.region",
            reason: format!("unsupported region {:?}", config.region),
        })?;
        let metrics = Metrics::new(registry);
        let cache = SessionCache::load(storage.clone(), handle.clone()).await?;
        tracing::info!(sessions = cache.len(), "device sessions loaded");
        let fcnt = FCntWriter::start(storage.clone(), metrics.fcnt_batch_size.clone(), metrics.fcnt_unpersisted.clone());
        let dedup = Deduplicator::new(Duration::from_millis(config.dedup_window_ms), registry);
        let ctx =
            Context { config, net_id, region, storage, gateways, handle, cache, fcnt, events, metrics, device_seen: Default::default() };
        Ok(NetworkServer { ctx: Arc::new(ctx), dedup })
    }

    /// Runs until `shutdown`; then finishes every uplink already collected or in progress.
    pub async fn run(self, frames: mpsc::Receiver<UplinkFrame>, shutdown: CancellationToken) {
        let (deduped_tx, mut deduped) = mpsc::channel::<DedupedUplink>(MAX_IN_FLIGHT);
        let dedup_task = tokio::spawn(self.dedup.run(frames, deduped_tx, shutdown.clone()));
        let ctx = self.ctx;
        let tasks = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut flush_seen = tokio::time::interval(Duration::from_secs(2));
        // Devices changed over REST are re-read in the background, so that the first uplink
        // after a bulk activation does not wait for it.
        let refresher = {
            let ctx = ctx.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                while !shutdown.is_cancelled() {
                    tick.tick().await;
                    if let Err(e) = ctx.cache.refresh_stale().await {
                        tracing::warn!(error = %e, "could not re-read changed devices");
                    }
                }
            })
        };
        loop {
            tokio::select! {
                up = deduped.recv() => {
                    // The deduplicator flushes its open windows at shutdown and then closes
                    // the channel, so this loop drains everything before it ends.
                    let Some(up) = up else { break };
                    let permit = permits.clone().acquire_owned().await.expect("semaphore open");
                    let ctx = ctx.clone();
                    tasks.spawn(async move {
                        uplink::handle(&ctx, up).await;
                        drop(permit);
                    });
                }
                _ = flush_seen.tick() => flush_device_seen(&ctx).await,
            }
        }
        let _ = dedup_task.await;
        refresher.abort();
        tasks.close();
        tasks.wait().await;
        flush_device_seen(&ctx).await;
    }
}

async fn flush_device_seen(ctx: &Context) {
    let batch: Vec<_> = ctx.device_seen.lock().expect("lock").drain().collect();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = ctx.storage.devices.touch_last_seen(&batch).await {
        tracing::warn!(error = %e, "could not store device lastSeenAt");
    }
}
