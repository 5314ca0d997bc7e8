//! The one owner of gateway registrations. Every change is written to storage first, then
//! handed to the running components that keep a copy: the UDP allow-list with each gateway's
//! allowed source networks (packet-forwarder) and the region configuration of each gateway
//! (network server). Handlers call this instead of remembering whom to tell.

use std::sync::Arc;

use loraflow_network_server::handle::NetworkHandle;
use loraflow_network_server::storage::{Gateway, GatewayRepo, Result};
use loraflow_network_server::types::Eui64;
use loraflow_packet_forwarder::KnownGateways;

#[derive(Clone)]
pub struct GatewayRegistry {
    storage: Arc<dyn GatewayRepo>,
    known: KnownGateways,
    network: NetworkHandle,
}

impl GatewayRegistry {
    pub fn new(storage: Arc<dyn GatewayRepo>, known: KnownGateways, network: NetworkHandle) -> Self {
        GatewayRegistry { storage, known, network }
    }

    /// Loads every stored gateway into the UDP allow-list (at start, before the UDP server
    /// takes datagrams). The network server reads the region of each gateway itself.
    pub async fn load(&self) -> Result<()> {
        self.known.replace_all(self.storage.allowed_networks().await?);
        Ok(())
    }

    /// The stored gateways, for reads; changes go through this registry.
    pub fn storage(&self) -> &dyn GatewayRepo {
        self.storage.as_ref()
    }

    pub async fn create(&self, gw: &Gateway) -> Result<()> {
        self.storage.create(gw).await?;
        self.applied(gw);
        Ok(())
    }

    pub async fn update(&self, gw: &Gateway) -> Result<()> {
        self.storage.update(gw).await?;
        self.applied(gw);
        Ok(())
    }

    pub async fn delete(&self, id: Eui64) -> Result<()> {
        self.storage.delete(id).await?;
        self.known.remove(id);
        self.network.gateway_region_changed(id, None);
        Ok(())
    }

    fn applied(&self, gw: &Gateway) {
        self.network.gateway_region_changed(gw.gateway_id, gw.region_config_id.as_deref());
        self.known.insert(gw.gateway_id, gw.allowed_networks.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use loraflow_network_server::storage::{AllowedNetworks, DatabaseConfig, Storage};
    use loraflow_packet_forwarder::Admission;

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

    #[tokio::test]
    async fn every_change_reaches_the_allow_list_and_the_network_server() {
        let storage = Storage::connect(&DatabaseConfig { url: "sqlite::memory:".into(), ..Default::default() }).await.unwrap();
        let known = KnownGateways::new(false);
        let network = NetworkHandle::default();
        let registry = GatewayRegistry::new(storage.gateways.clone(), known.clone(), network.clone());
        let ip = |s: &str| s.parse().unwrap();

        let mut gw = gateway(AllowedNetworks::parse(&["192.0.2.0/24"]).unwrap());
        registry.create(&gw).await.unwrap();
        assert_eq!(known.admission(gw.gateway_id, ip("192.0.2.1")), Admission::Allowed);
        assert_eq!(known.admission(gw.gateway_id, ip("198.51.100.1")), Admission::SourceNotAllowed);
        assert_eq!(network.gateway_regions().get(gw.gateway_id).as_deref(), Some("eu868"));

        gw.allowed_networks = AllowedNetworks::anywhere();
        registry.update(&gw).await.unwrap();
        assert_eq!(known.admission(gw.gateway_id, ip("198.51.100.1")), Admission::Allowed);

        // A fresh allow-list (a restart) gets the stored networks.
        let restarted = KnownGateways::new(false);
        GatewayRegistry::new(storage.gateways.clone(), restarted.clone(), NetworkHandle::default()).load().await.unwrap();
        assert_eq!(restarted.admission(gw.gateway_id, ip("198.51.100.1")), Admission::Allowed);

        registry.delete(gw.gateway_id).await.unwrap();
        assert_eq!(known.admission(gw.gateway_id, ip("192.0.2.1")), Admission::UnknownGateway);
        assert_eq!(network.gateway_regions().get(gw.gateway_id), None);
    }
}
