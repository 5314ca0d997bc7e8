//! The network server's handle for other components (REST API, MQTT commands): they change
//! rows in storage, then tell the network server here so that its in-memory caches stay
//! coherent with the database (write-through; the database stays the truth).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::types::Eui64;

/// Which devices have (or may have) downlink queue items, and cache invalidation.
#[derive(Default)]
pub(crate) struct Shared {
    /// Devices whose cached context/session must be re-read before the next use.
    pub(crate) stale_devices: RwLock<HashSet<Eui64>>,
    /// Bumped when a device profile or application changes: every cached context is re-read.
    pub(crate) context_generation: std::sync::atomic::AtomicU64,
    /// Devices known to have queue items; `None` until the first check for that device.
    pub(crate) queued: RwLock<HashSet<Eui64>>,
    pub(crate) queue_checked: RwLock<HashSet<Eui64>>,
}

#[derive(Clone, Default)]
pub struct NetworkHandle {
    pub(crate) shared: Arc<Shared>,
}

impl NetworkHandle {
    /// A device row, its keys or its session changed (or it was deleted).
    pub fn device_changed(&self, dev_eui: Eui64) {
        self.shared.stale_devices.write().expect("lock").insert(dev_eui);
    }

    /// A device profile or application changed: cached device contexts are re-read.
    pub fn profiles_or_applications_changed(&self) {
        self.shared.context_generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The device's downlink queue changed (enqueue or flush).
    pub fn queue_changed(&self, dev_eui: Eui64) {
        self.shared.queued.write().expect("lock").insert(dev_eui);
        self.shared.queue_checked.write().expect("lock").remove(&dev_eui);
    }
}
