//! The one owner of network-server state that other components change (REST API, MQTT
//! commands): devices, their keys and ABP sessions, downlink queues, applications, device
//! profiles and gateways. Every change is written to storage first, then applied to the
//! running network server's caches and allow-lists, then announced to the other instances of
//! a cluster (`cluster::ChangeSink`) — in one call, so that no caller has to remember whom
//! to tell. The database stays the truth; the caches are re-read from it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use uuid::Uuid;

use loraflow_packet_forwarder::KnownGateways;

use crate::cluster::{Change, ChangeSink};
use crate::storage::{Application, Device, DeviceKeys, DeviceProfile, DeviceSession, Gateway, QueueItem, Result, Storage, StorageError};
use crate::types::Eui64;

/// What the running network server keeps in memory about other components' state.
#[derive(Default)]
pub(crate) struct Shared {
    /// Devices whose cached context/session must be re-read before the next use.
    /// The value counts changes, so that a refresh only clears a mark it has acted on.
    pub(crate) stale_devices: RwLock<HashMap<Eui64, u64>>,
    /// Bumped when a device profile or application changes: every cached context is re-read.
    pub(crate) context_generation: AtomicU64,
    /// Bumped when anything may have changed unannounced (`Change::All`): the session cache
    /// marks every device it holds stale.
    pub(crate) resync_generation: AtomicU64,
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
    /// Where changes are announced to the other instances (cluster mode only).
    sink: OnceLock<Arc<dyn ChangeSink>>,
}

#[derive(Clone)]
pub struct NetworkHandle {
    pub(crate) shared: Arc<Shared>,
    storage: Storage,
    /// The UDP allow-list (packet-forwarder) with each gateway's allowed source networks.
    known: KnownGateways,
}

impl NetworkHandle {
    pub fn new(storage: Storage, known: KnownGateways) -> NetworkHandle {
        NetworkHandle { shared: Arc::default(), storage, known }
    }

    /// Loads what the running components keep of the stored gateways: the UDP allow-list and
    /// each gateway's region configuration (at start, before the UDP server takes datagrams).
    pub async fn load_gateways(&self) -> Result<()> {
        self.known.replace_all(self.storage.gateways.allowed_networks().await?);
        self.shared.gateway_regions.replace_all(self.storage.gateways.region_config_ids().await?);
        Ok(())
    }

    /// From now on every change is also announced through `sink` (once, at start).
    pub fn set_change_sink(&self, sink: Arc<dyn ChangeSink>) {
        let _ = self.shared.sink.set(sink);
    }

    // ----- devices -----

    pub async fn create_device(&self, device: &Device) -> Result<()> {
        self.storage.devices.create(device).await?;
        self.changed(Change::Device { dev_eui: device.dev_eui });
        Ok(())
    }

    pub async fn update_device(&self, device: &Device) -> Result<()> {
        self.storage.devices.update(device).await?;
        self.changed(Change::Device { dev_eui: device.dev_eui });
        Ok(())
    }

    /// Deletes the device with its keys, session and queue.
    pub async fn delete_device(&self, dev_eui: Eui64) -> Result<()> {
        self.storage.devices.delete(dev_eui).await?;
        self.changed(Change::Device { dev_eui });
        self.changed(Change::Queue { dev_eui });
        Ok(())
    }

    pub async fn set_device_keys(&self, keys: &DeviceKeys) -> Result<()> {
        self.storage.devices.set_keys(keys).await?;
        self.changed(Change::Device { dev_eui: keys.dev_eui });
        Ok(())
    }

    /// Forgets the DevNonces a device used, so that a device that was reset can join again.
    pub async fn clear_dev_nonces(&self, dev_eui: Eui64) -> Result<()> {
        self.storage.devices.clear_dev_nonces(dev_eui).await?;
        self.changed(Change::Device { dev_eui });
        Ok(())
    }

    /// Activates a device by personalization (ABP) with `session`.
    pub async fn activate_device(&self, session: &DeviceSession) -> Result<()> {
        self.storage.sessions.save(session).await?;
        self.changed(Change::Device { dev_eui: session.dev_eui });
        Ok(())
    }

    // ----- downlink queues -----

    /// Queues an application downlink; a Class C device gets it at once.
    pub async fn enqueue(&self, item: &QueueItem) -> Result<()> {
        self.storage.queue.enqueue(item).await?;
        self.changed(Change::Queue { dev_eui: item.dev_eui });
        Ok(())
    }

    pub async fn flush_queue(&self, dev_eui: Eui64) -> Result<()> {
        self.storage.queue.flush(dev_eui).await?;
        self.changed(Change::Queue { dev_eui });
        Ok(())
    }

    // ----- applications and device profiles -----

    pub async fn create_application(&self, app: &Application) -> Result<()> {
        // Nothing cached can name an application that did not exist.
        self.storage.applications.create(app).await
    }

    pub async fn update_application(&self, app: &Application) -> Result<()> {
        self.storage.applications.update(app).await?;
        self.changed(Change::ProfilesOrApplications);
        Ok(())
    }

    /// Deletes an application with its devices.
    pub async fn delete_application(&self, id: Uuid) -> Result<()> {
        let devices = self.application_devices(id).await?;
        self.storage.applications.delete(id).await?;
        for dev_eui in devices {
            self.changed(Change::Device { dev_eui });
        }
        self.changed(Change::ProfilesOrApplications);
        Ok(())
    }

    async fn application_devices(&self, id: Uuid) -> Result<Vec<Eui64>> {
        const PAGE: u32 = 1000;
        let mut devices = Vec::new();
        loop {
            let page = self.storage.devices.list(Some(id), PAGE, devices.len() as u32).await?;
            let got = page.result.len();
            devices.extend(page.result.into_iter().map(|d| d.dev_eui));
            if got < PAGE as usize {
                return Ok(devices);
            }
        }
    }

    pub async fn create_device_profile(&self, profile: &DeviceProfile) -> Result<()> {
        self.storage.device_profiles.create(profile).await
    }

    pub async fn update_device_profile(&self, profile: &DeviceProfile) -> Result<()> {
        self.storage.device_profiles.update(profile).await?;
        self.changed(Change::ProfilesOrApplications);
        Ok(())
    }

    pub async fn delete_device_profile(&self, id: Uuid) -> Result<()> {
        self.storage.device_profiles.delete(id).await?;
        self.changed(Change::ProfilesOrApplications);
        Ok(())
    }

    // ----- gateways -----

    pub async fn create_gateway(&self, gateway: &Gateway) -> Result<()> {
        self.storage.gateways.create(gateway).await?;
        self.apply_gateway(gateway);
        self.announce(&Change::Gateway { gateway_id: gateway.gateway_id });
        Ok(())
    }

    pub async fn update_gateway(&self, gateway: &Gateway) -> Result<()> {
        self.storage.gateways.update(gateway).await?;
        self.apply_gateway(gateway);
        self.announce(&Change::Gateway { gateway_id: gateway.gateway_id });
        Ok(())
    }

    pub async fn delete_gateway(&self, id: Eui64) -> Result<()> {
        self.storage.gateways.delete(id).await?;
        self.forget_gateway(id);
        self.announce(&Change::Gateway { gateway_id: id });
        Ok(())
    }

    fn apply_gateway(&self, gateway: &Gateway) {
        match gateway.region_config_id.as_deref() {
            Some(id) => self.shared.gateway_regions.set(gateway.gateway_id, id),
            None => self.shared.gateway_regions.remove(gateway.gateway_id),
        }
        self.known.insert(gateway.gateway_id, gateway.allowed_networks.clone());
    }

    fn forget_gateway(&self, id: Eui64) {
        self.known.remove(id);
        self.shared.gateway_regions.remove(id);
    }

    // ----- changes -----

    /// Applies a change another instance announced: re-reads what it names. Not announced
    /// again.
    pub async fn apply_remote(&self, change: Change) -> Result<()> {
        match change {
            Change::Gateway { gateway_id } => match self.storage.gateways.get(gateway_id).await {
                Ok(gateway) => self.apply_gateway(&gateway),
                Err(StorageError::NotFound) => self.forget_gateway(gateway_id),
                Err(e) => return Err(e),
            },
            Change::All => {
                self.apply(&Change::All);
                self.load_gateways().await?;
            }
            other => self.apply(&other),
        }
        Ok(())
    }

    /// A change made on this instance (by this owner or by the network server itself, e.g. a
    /// join): applied here, then announced to the other instances.
    pub(crate) fn changed(&self, change: Change) {
        self.apply(&change);
        self.announce(&change);
    }

    /// Tells the other instances about a change already applied here.
    pub(crate) fn announce(&self, change: &Change) {
        if let Some(sink) = self.shared.sink.get() {
            sink.announce(change);
        }
    }

    /// Applies a change here only (a device found stale after a lost compare-and-set).
    pub(crate) fn apply(&self, change: &Change) {
        match *change {
            Change::Device { dev_eui } => {
                *self.shared.stale_devices.write().expect("lock").entry(dev_eui).or_default() += 1;
            }
            Change::Queue { dev_eui } => {
                *self.shared.queued.write().expect("lock").entry(dev_eui).or_default() += 1;
                self.shared.class_c_woken.lock().expect("lock").insert(dev_eui);
                self.shared.class_c_wake.notify_one();
            }
            Change::ProfilesOrApplications => {
                self.shared.context_generation.fetch_add(1, Ordering::AcqRel);
            }
            Change::Gateway { .. } => {}
            Change::All => {
                self.shared.context_generation.fetch_add(1, Ordering::AcqRel);
                self.shared.resync_generation.fetch_add(1, Ordering::AcqRel);
                // Any device may have queue items now.
                self.shared.class_c_wake.notify_one();
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{AllowedNetworks, DatabaseConfig};
    use chrono::Utc;
    use loraflow_packet_forwarder::Admission;

    /// Records what the owner announces.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Change>>);

    impl ChangeSink for Recorder {
        fn announce(&self, change: &Change) {
            self.0.lock().unwrap().push(change.clone());
        }
    }

    fn gateway(networks: AllowedNetworks) -> Gateway {
        Gateway {
            gateway_id: Eui64::from_u64(0x0102),
            name: "roof".into(),
            description: String::new(),
            location: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            last_seen_at: None,
            region_config_id: Some("eu868".into()),
            allowed_networks: networks,
        }
    }

    async fn memory() -> Storage {
        Storage::connect(&DatabaseConfig { url: "sqlite::memory:".into(), ..Default::default() }).await.unwrap()
    }

    #[tokio::test]
    async fn every_gateway_change_reaches_the_allow_list_the_regions_and_the_other_instances() {
        let storage = memory().await;
        let known = KnownGateways::new(false);
        let network = NetworkHandle::new(storage.clone(), known.clone());
        let announced = Arc::new(Recorder::default());
        network.set_change_sink(announced.clone());
        let ip = |s: &str| s.parse().unwrap();

        let mut gw = gateway(AllowedNetworks::parse(&["192.0.2.0/24"]).unwrap());
        network.create_gateway(&gw).await.unwrap();
        assert_eq!(known.admission(gw.gateway_id, ip("192.0.2.1")), Admission::Allowed);
        assert_eq!(known.admission(gw.gateway_id, ip("198.51.100.1")), Admission::SourceNotAllowed);
        assert_eq!(network.gateway_regions().get(gw.gateway_id).as_deref(), Some("eu868"));

        gw.allowed_networks = AllowedNetworks::anywhere();
        network.update_gateway(&gw).await.unwrap();
        assert_eq!(known.admission(gw.gateway_id, ip("198.51.100.1")), Admission::Allowed);

        // Another instance (or a restart) learns the stored state.
        let other_known = KnownGateways::new(false);
        let other = NetworkHandle::new(storage.clone(), other_known.clone());
        other.apply_remote(Change::Gateway { gateway_id: gw.gateway_id }).await.unwrap();
        assert_eq!(other_known.admission(gw.gateway_id, ip("198.51.100.1")), Admission::Allowed);
        assert_eq!(other.gateway_regions().get(gw.gateway_id).as_deref(), Some("eu868"));

        network.delete_gateway(gw.gateway_id).await.unwrap();
        assert_eq!(known.admission(gw.gateway_id, ip("192.0.2.1")), Admission::UnknownGateway);
        assert_eq!(network.gateway_regions().get(gw.gateway_id), None);
        other.apply_remote(Change::Gateway { gateway_id: gw.gateway_id }).await.unwrap();
        assert_eq!(other_known.admission(gw.gateway_id, ip("192.0.2.1")), Admission::UnknownGateway);

        let g = Change::Gateway { gateway_id: gw.gateway_id };
        assert_eq!(*announced.0.lock().unwrap(), vec![g.clone(), g.clone(), g]);
        // A failed write changes nothing and announces nothing.
        assert!(network.delete_gateway(gw.gateway_id).await.is_err());
        assert_eq!(announced.0.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn remote_changes_mark_what_they_name_and_are_not_announced_again() {
        let network = NetworkHandle::new(memory().await, KnownGateways::new(false));
        let announced = Arc::new(Recorder::default());
        network.set_change_sink(announced.clone());
        let dev_eui = Eui64::from_u64(7);

        network.apply_remote(Change::Device { dev_eui }).await.unwrap();
        assert!(network.shared.stale_devices.read().unwrap().contains_key(&dev_eui));
        network.apply_remote(Change::Queue { dev_eui }).await.unwrap();
        assert!(network.shared.queued.read().unwrap().contains_key(&dev_eui));
        assert!(network.shared.class_c_woken.lock().unwrap().contains(&dev_eui));
        let generation = network.shared.context_generation.load(Ordering::Acquire);
        network.apply_remote(Change::ProfilesOrApplications).await.unwrap();
        assert_eq!(network.shared.context_generation.load(Ordering::Acquire), generation + 1);
        network.apply_remote(Change::All).await.unwrap();
        assert_eq!(network.shared.resync_generation.load(Ordering::Acquire), 1);
        assert!(announced.0.lock().unwrap().is_empty());

        // Changes made here are applied and announced.
        network.changed(Change::Device { dev_eui: Eui64::from_u64(8) });
        assert!(network.shared.stale_devices.read().unwrap().contains_key(&Eui64::from_u64(8)));
        assert_eq!(*announced.0.lock().unwrap(), vec![Change::Device { dev_eui: Eui64::from_u64(8) }]);
    }

    #[test]
    fn changes_travel_as_small_tagged_json() {
        let c = Change::Device { dev_eui: Eui64::from_u64(0x0102030405060708) };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"kind":"device","dev_eui":"0102030405060708"}"#);
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), c);
        assert_eq!(serde_json::to_string(&Change::All).unwrap(), r#"{"kind":"all"}"#);
    }
}
