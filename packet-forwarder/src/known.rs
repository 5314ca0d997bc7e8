//! Which gateways may forward frames: the registered ones, or all when
//! `network.allow_unknown_gateways` is set.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::frame::GatewayId;

/// Shared allow-list of gateways. Cheap to clone; all clones see the same set, so the REST API
/// can add or remove a gateway while the UDP server runs.
#[derive(Clone)]
pub struct KnownGateways {
    inner: Arc<Inner>,
}

struct Inner {
    allow_unknown: bool,
    ids: RwLock<HashSet<GatewayId>>,
}

impl KnownGateways {
    /// An empty set; with `allow_unknown` every gateway is allowed whatever the set holds.
    pub fn new(allow_unknown: bool) -> Self {
        KnownGateways { inner: Arc::new(Inner { allow_unknown, ids: RwLock::new(HashSet::new()) }) }
    }

    /// Replaces the whole set, e.g. with the gateways in the database at start-up.
    pub fn replace_all(&self, ids: impl IntoIterator<Item = GatewayId>) {
        let fresh: HashSet<GatewayId> = ids.into_iter().collect();
        *self.write() = fresh;
    }

    pub fn insert(&self, id: GatewayId) {
        self.write().insert(id);
    }

    pub fn remove(&self, id: GatewayId) {
        self.write().remove(&id);
    }

    /// Whether frames and stats from this gateway are forwarded.
    pub fn is_allowed(&self, id: GatewayId) -> bool {
        self.inner.allow_unknown || self.read().contains(&id)
    }

    /// Whether every gateway is allowed regardless of the set.
    pub fn allows_unknown(&self) -> bool {
        self.inner.allow_unknown
    }

    /// Number of registered gateways in the set.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    // A panic while holding the lock cannot leave a HashSet half-updated in a way that matters
    // here, so a poisoned lock is used as is rather than spreading the panic to the UDP loop.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<GatewayId>> {
        self.inner.ids.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<GatewayId>> {
        self.inner.ids.write().unwrap_or_else(|e| e.into_inner())
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

    #[test]
    fn only_registered_gateways_are_allowed_by_default() {
        let known = KnownGateways::new(false);
        let a = Eui64::from_u64(1);
        let b = Eui64::from_u64(2);
        assert!(!known.is_allowed(a));
        known.insert(a);
        assert!(known.is_allowed(a));
        assert!(!known.is_allowed(b));
        known.remove(a);
        assert!(!known.is_allowed(a));
    }

    #[test]
    fn replace_all_drops_the_previous_set_and_clones_share_it() {
        let known = KnownGateways::new(false);
        let clone = known.clone();
        known.insert(Eui64::from_u64(1));
        clone.replace_all([Eui64::from_u64(2), Eui64::from_u64(3)]);
        assert!(!known.is_allowed(Eui64::from_u64(1)));
        assert!(known.is_allowed(Eui64::from_u64(3)));
        assert_eq!(known.len(), 2);
    }

    #[test]
    fn allow_unknown_allows_any_gateway() {
        let known = KnownGateways::new(true);
        assert!(known.is_allowed(Eui64::from_u64(42)));
        assert!(known.allows_unknown());
    }
}
