//! Which gateways may forward frames, and from where: the registered ones with their allowed
//! source networks, or any gateway from anywhere when `network.allow_unknown_gateways` is set
//! (a registered gateway keeps its networks even then).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::allowed_networks::AllowedNetworks;
use crate::frame::GatewayId;

/// What the allow-list says about a datagram from a gateway id and source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// The gateway is not registered (and unknown gateways are not allowed).
    UnknownGateway,
    /// The gateway is registered, but not from this source network.
    SourceNotAllowed,
}

/// Shared allow-list of gateways. Cheap to clone; all clones see the same table, so that the
/// owner of the gateway registrations (app-server's `GatewayRegistry`) changes it while the UDP
/// server runs.
#[derive(Clone)]
pub struct KnownGateways {
    inner: Arc<Inner>,
}

struct Inner {
    allow_unknown: bool,
    gateways: RwLock<HashMap<GatewayId, AllowedNetworks>>,
}

impl KnownGateways {
    /// An empty table; with `allow_unknown` every unregistered gateway is allowed from anywhere.
    pub fn new(allow_unknown: bool) -> Self {
        KnownGateways { inner: Arc::new(Inner { allow_unknown, gateways: RwLock::new(HashMap::new()) }) }
    }

    /// Replaces the whole table, e.g. with the gateways in the database at start-up.
    pub fn replace_all(&self, gateways: impl IntoIterator<Item = (GatewayId, AllowedNetworks)>) {
        let fresh: HashMap<GatewayId, AllowedNetworks> = gateways.into_iter().collect();
        *self.write() = fresh;
    }

    /// Registers a gateway or replaces its allowed networks.
    pub fn insert(&self, id: GatewayId, networks: AllowedNetworks) {
        self.write().insert(id, networks);
    }

    pub fn remove(&self, id: GatewayId) {
        self.write().remove(&id);
    }

    /// Whether a datagram from gateway `id` sent from `source` is accepted.
    pub fn admission(&self, id: GatewayId, source: IpAddr) -> Admission {
        match self.read().get(&id) {
            Some(networks) if networks.admits(source) => Admission::Allowed,
            Some(_) => Admission::SourceNotAllowed,
            None if self.inner.allow_unknown => Admission::Allowed,
            None => Admission::UnknownGateway,
        }
    }

    /// Whether frames and stats from this gateway are forwarded from some address.
    pub fn is_allowed(&self, id: GatewayId) -> bool {
        self.inner.allow_unknown || self.read().contains_key(&id)
    }

    /// Whether every gateway is allowed regardless of the table.
    pub fn allows_unknown(&self) -> bool {
        self.inner.allow_unknown
    }

    /// Number of registered gateways in the table.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    // A panic while holding the lock cannot leave a HashMap half-updated in a way that matters
    // here, so a poisoned lock is used as is rather than spreading the panic to the UDP loop.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<GatewayId, AllowedNetworks>> {
        self.inner.gateways.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<GatewayId, AllowedNetworks>> {
        self.inner.gateways.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for KnownGateways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownGateways").field("allow_unknown", &self.inner.allow_unknown).field("registered", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Eui64;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_registered_gateways_are_allowed_by_default() {
        let known = KnownGateways::new(false);
        let a = Eui64::from_u64(1);
        let b = Eui64::from_u64(2);
        assert!(!known.is_allowed(a));
        known.insert(a, AllowedNetworks::anywhere());
        assert!(known.is_allowed(a));
        assert_eq!(known.admission(a, ip("198.51.100.1")), Admission::Allowed);
        assert!(!known.is_allowed(b));
        assert_eq!(known.admission(b, ip("198.51.100.1")), Admission::UnknownGateway);
        known.remove(a);
        assert!(!known.is_allowed(a));
    }

    #[test]
    fn a_registered_gateway_is_admitted_only_from_its_networks_and_changes_apply_at_once() {
        let known = KnownGateways::new(false);
        let a = Eui64::from_u64(1);
        known.insert(a, AllowedNetworks::parse(&["192.0.2.0/24"]).unwrap());
        assert_eq!(known.admission(a, ip("192.0.2.7")), Admission::Allowed);
        assert_eq!(known.admission(a, ip("198.51.100.1")), Admission::SourceNotAllowed);
        known.clone().insert(a, AllowedNetworks::parse(&["198.51.100.0/24"]).unwrap());
        assert_eq!(known.admission(a, ip("192.0.2.7")), Admission::SourceNotAllowed);
        assert_eq!(known.admission(a, ip("198.51.100.1")), Admission::Allowed);
    }

    #[test]
    fn replace_all_drops_the_previous_table_and_clones_share_it() {
        let known = KnownGateways::new(false);
        let clone = known.clone();
        known.insert(Eui64::from_u64(1), AllowedNetworks::anywhere());
        clone.replace_all([(Eui64::from_u64(2), AllowedNetworks::anywhere()), (Eui64::from_u64(3), AllowedNetworks::anywhere())]);
        assert!(!known.is_allowed(Eui64::from_u64(1)));
        assert!(known.is_allowed(Eui64::from_u64(3)));
        assert_eq!(known.len(), 2);
    }

    #[test]
    fn allow_unknown_allows_any_unregistered_gateway_but_registered_ones_keep_their_networks() {
        let known = KnownGateways::new(true);
        assert!(known.is_allowed(Eui64::from_u64(42)));
        assert_eq!(known.admission(Eui64::from_u64(42), ip("203.0.113.1")), Admission::Allowed);
        assert!(known.allows_unknown());
        known.insert(Eui64::from_u64(7), AllowedNetworks::parse(&["10.0.0.0/8"]).unwrap());
        assert_eq!(known.admission(Eui64::from_u64(7), ip("203.0.113.1")), Admission::SourceNotAllowed);
    }
}
