//! The network server's handle for other components (REST API, MQTT commands): they change
//! rows in storage, then tell the network server here so that its in-memory caches stay
//! coherent with the database (write-through; the database stays the truth).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::{Arc, RwLock};

use crate::types::Eui64;

/// Which devices have (or may have) downlink queue items, and cache invalidation.
#[derive(Default)]
pub(crate) struct Shared {
    /// Devices whose cached context/session must be re-read before the next use.
    /// The value counts changes, so that a refresh only clears a mark it has acted on.
    pub(crate) stale_devices: RwLock<HashMap<Eui64, u64>>,
    /// Bumped when a device profile or application changes: every cached context is re-read.
    pub(crate) context_generation: std::sync::atomic::AtomicU64,
    /// Devices that have (or may have) queue items. Loaded whole at start, then kept by
    /// `queue_changed` and the network server, so a device without items costs no query.
    /// The value counts changes, so that a device is only forgotten when no enqueue
    /// happened while its (empty) queue was read.
    pub(crate) queued: RwLock<HashMap<Eui64, u64>>,
    /// Devices whose queue changed since the Class C scheduler last looked, and its wake-up
    /// (`class_c::run`). Only Class C devices heard since the start are then looked at.
    pub(crate) class_c_woken: Mutex<HashSet<Eui64>>,
    pub(crate) class_c_wake: tokio::sync::Notify,
    /// The region configuration of each gateway that names one.
    pub(crate) gateway_regions: crate::region_config::GatewayRegions,
    /// Each watched gateway's raw frames with the server's verdicts.
    pub(crate) frames: crate::frame_feed::FrameFeed,
    /// Per-minute traffic counts of the last hour.
    pub(crate) traffic: crate::traffic::TrafficStats,
}

#[derive(Clone, Default)]
pub struct NetworkHandle {
    pub(crate) shared: Arc<Shared>,
}

impl NetworkHandle {
    /// A device row, its keys or its session changed (or it was deleted).
    pub fn device_changed(&self, dev_eui: Eui64) {
        *self.shared.stale_devices.write().expect("lock").entry(dev_eui).or_default() += 1;
    }

    /// A device profile or application changed: cached device contexts are re-read.
    pub fn profiles_or_applications_changed(&self) {
        self.shared.context_generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// A gateway was registered, changed or deleted: `region_config_id` is the configuration
    /// it belongs to now (`None`: the first, or the gateway is gone).
    pub fn gateway_region_changed(&self, gateway: Eui64, region_config_id: Option<&str>) {
        match region_config_id {
            Some(id) => self.shared.gateway_regions.set(gateway, id),
            None => self.shared.gateway_regions.remove(gateway),
        }
    }

    /// Which region configuration each gateway belongs to.
    pub fn gateway_regions(&self) -> &crate::region_config::GatewayRegions {
        &self.shared.gateway_regions
    }

    /// The live feed of each gateway's frames (uplink copies with their verdict, downlinks
    /// with their TX_ACK).
    pub fn frames(&self) -> &crate::frame_feed::FrameFeed {
        &self.shared.frames
    }

    /// Per-minute counts of accepted uplinks and joins, and of each gateway's traffic.
    pub fn traffic(&self) -> &crate::traffic::TrafficStats {
        &self.shared.traffic
    }

    /// The device's downlink queue changed (enqueue or flush). A Class C device gets its new
    /// item at once.
    pub fn queue_changed(&self, dev_eui: Eui64) {
        *self.shared.queued.write().expect("lock").entry(dev_eui).or_default() += 1;
        self.shared.class_c_woken.lock().expect("lock").insert(dev_eui);
        self.shared.class_c_wake.notify_one();
    }
}
