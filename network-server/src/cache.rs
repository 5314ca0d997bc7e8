//! In-memory view of device sessions (by DevAddr) and device contexts, write-through:
//! every change goes to the database first, and other components mark devices stale through
//! `NetworkHandle` so the next lookup re-reads them. The database stays the truth; a restart
//! simply warms the cache again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::handle::NetworkHandle;
use crate::storage::{DeviceContext, DeviceSession, Storage, StorageError};
use crate::types::{DevAddr, Eui64};

#[derive(Default)]
struct Inner {
    sessions: HashMap<Eui64, DeviceSession>,
    by_addr: HashMap<DevAddr, Vec<Eui64>>,
    contexts: HashMap<Eui64, (u64, Arc<DeviceContext>)>,
}

pub struct SessionCache {
    storage: Storage,
    handle: NetworkHandle,
    inner: RwLock<Inner>,
    refresh: tokio::sync::Mutex<()>,
    /// Set while re-reading changed devices fails (database unreachable): lookups then leave
    /// the re-reading to the background refresher instead of each waiting for the database.
    refresh_failing: AtomicBool,
    /// The `resync_generation` the cache last re-read everything for.
    resynced: std::sync::atomic::AtomicU64,
}

/// How long a lookup waits for changed devices to be re-read before it goes on without.
const LOOKUP_REFRESH_WAIT: Duration = Duration::from_secs(3);

impl SessionCache {
    pub async fn load(storage: Storage, handle: NetworkHandle) -> Result<SessionCache, StorageError> {
        let mut inner = Inner::default();
        for s in storage.sessions.all().await? {
            inner.by_addr.entry(s.dev_addr).or_default().push(s.dev_eui);
            inner.sessions.insert(s.dev_eui, s);
        }
        let queued = storage.queue.devices_with_items().await?;
        handle.shared.queued.write().expect("lock").extend(queued.into_iter().map(|e| (e, 0)));
        Ok(SessionCache {
            storage,
            handle,
            inner: RwLock::new(inner),
            refresh: tokio::sync::Mutex::new(()),
            refresh_failing: AtomicBool::new(false),
            resynced: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("cache lock").sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-reads every device marked stale by the REST API or MQTT commands. One task
    /// re-reads while concurrent lookups wait for it; a mark is cleared only after the cache
    /// holds the new state, so no lookup can slip past a half-done refresh.
    pub(crate) async fn refresh_stale(&self) -> Result<(), StorageError> {
        self.resync_if_asked().await?;
        if self.handle.shared.stale_devices.read().expect("lock").is_empty() {
            return Ok(());
        }
        let result = self.reread_stale().await;
        self.refresh_failing.store(result.is_err(), Ordering::Release);
        result
    }

    /// Before a lookup: re-reads the changed devices. When the database cannot be reached
    /// (or does not answer within `LOOKUP_REFRESH_WAIT`), the lookup goes on from the cache —
    /// a database outage must not stop every device — and only devices still marked stale
    /// are refused: their cached state may be wrong.
    async fn refresh_before_lookup(&self, involved: impl FnOnce(&Inner) -> Vec<Eui64>) -> Result<(), StorageError> {
        if self.handle.shared.stale_devices.read().expect("lock").is_empty() {
            return Ok(());
        }
        let error = if self.refresh_failing.load(Ordering::Acquire) {
            StorageError::Conflict("changed devices cannot be re-read: the database is unreachable".into())
        } else {
            match tokio::time::timeout(LOOKUP_REFRESH_WAIT, self.refresh_stale()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => StorageError::Conflict("changed devices could not be re-read in time".into()),
            }
        };
        let involved = involved(&self.inner.read().expect("cache lock"));
        let stale = self.handle.shared.stale_devices.read().expect("lock");
        if involved.iter().any(|e| stale.contains_key(e)) {
            return Err(error);
        }
        Ok(())
    }

    /// After changes may have gone unannounced (`Change::All`: another instance's
    /// announcements were missed while Redis was away): every session is read again.
    async fn resync_if_asked(&self) -> Result<(), StorageError> {
        let wanted = self.handle.shared.resync_generation.load(Ordering::Acquire);
        if self.resynced.load(Ordering::Acquire) == wanted {
            return Ok(());
        }
        let _refreshing = self.refresh.lock().await;
        let mut fresh = Inner::default();
        for s in self.storage.sessions.all().await? {
            fresh.by_addr.entry(s.dev_addr).or_default().push(s.dev_eui);
            fresh.sessions.insert(s.dev_eui, s);
        }
        let queued = self.storage.queue.devices_with_items().await?;
        *self.inner.write().expect("cache lock") = fresh;
        let mut marks = self.handle.shared.queued.write().expect("lock");
        for dev_eui in queued {
            marks.entry(dev_eui).or_insert(0);
        }
        drop(marks);
        self.resynced.store(wanted, Ordering::Release);
        Ok(())
    }

    async fn reread_stale(&self) -> Result<(), StorageError> {
        let _refreshing = self.refresh.lock().await;
        let stale: Vec<(Eui64, u64)> = self.handle.shared.stale_devices.read().expect("lock").iter().map(|(e, v)| (*e, *v)).collect();
        // One query per few hundred devices: after a bulk activation thousands are stale.
        let euis: Vec<Eui64> = stale.iter().map(|(e, _)| *e).collect();
        let mut fresh: HashMap<Eui64, DeviceSession> =
            self.storage.sessions.get_many(&euis).await?.into_iter().map(|s| (s.dev_eui, s)).collect();
        {
            let mut inner = self.inner.write().expect("cache lock");
            for dev_eui in &euis {
                inner.contexts.remove(dev_eui);
                remove_session(&mut inner, *dev_eui);
                if let Some(s) = fresh.remove(dev_eui) {
                    inner.by_addr.entry(s.dev_addr).or_default().push(*dev_eui);
                    inner.sessions.insert(*dev_eui, s);
                }
            }
        }
        let mut marks = self.handle.shared.stale_devices.write().expect("lock");
        for (dev_eui, version) in stale {
            if marks.get(&dev_eui) == Some(&version) {
                marks.remove(&dev_eui);
            }
        }
        Ok(())
    }

    /// Sessions of every device using `dev_addr`.
    pub async fn by_dev_addr(&self, dev_addr: DevAddr) -> Result<Vec<DeviceSession>, StorageError> {
        self.refresh_before_lookup(|inner| inner.by_addr.get(&dev_addr).cloned().unwrap_or_default()).await?;
        let inner = self.inner.read().expect("cache lock");
        Ok(inner
            .by_addr
            .get(&dev_addr)
            .map(|euis| euis.iter().filter_map(|e| inner.sessions.get(e).cloned()).collect())
            .unwrap_or_default())
    }

    /// Reads the sessions of `dev_addr` from the database into the cache (cluster mode, for a
    /// DevAddr the cache does not know: another instance may have just activated a device).
    pub async fn load_dev_addr(&self, dev_addr: DevAddr) -> Result<Vec<DeviceSession>, StorageError> {
        let _refreshing = self.refresh.lock().await;
        let found = self.storage.sessions.get_by_dev_addr(dev_addr).await?;
        let mut inner = self.inner.write().expect("cache lock");
        for s in &found {
            inner.contexts.remove(&s.dev_eui);
            remove_session(&mut inner, s.dev_eui);
            inner.by_addr.entry(s.dev_addr).or_default().push(s.dev_eui);
            inner.sessions.insert(s.dev_eui, s.clone());
        }
        Ok(found)
    }

    pub async fn get(&self, dev_eui: Eui64) -> Result<Option<DeviceSession>, StorageError> {
        self.refresh_before_lookup(|_| vec![dev_eui]).await?;
        Ok(self.inner.read().expect("cache lock").sessions.get(&dev_eui).cloned())
    }

    /// Device, profile and application name, cached until something changes them.
    pub async fn context(&self, dev_eui: Eui64) -> Result<Arc<DeviceContext>, StorageError> {
        self.refresh_before_lookup(|_| vec![dev_eui]).await?;
        let generation = self.handle.shared.context_generation.load(Ordering::Acquire);
        if let Some((g, ctx)) = self.inner.read().expect("cache lock").contexts.get(&dev_eui) {
            if *g == generation {
                return Ok(ctx.clone());
            }
        }
        let ctx = Arc::new(self.storage.devices.context(dev_eui).await?);
        self.inner.write().expect("cache lock").contexts.insert(dev_eui, (generation, ctx.clone()));
        Ok(ctx)
    }

    /// Stores a new session (join) in the database, then in the cache.
    pub async fn save(&self, session: DeviceSession) -> Result<(), StorageError> {
        self.storage.sessions.save(&session).await?;
        // The other instances of a cluster re-read it (the new DevAddr in particular).
        self.handle.announce(&crate::cluster::Change::Device { dev_eui: session.dev_eui });
        let mut inner = self.inner.write().expect("cache lock");
        remove_session(&mut inner, session.dev_eui);
        inner.contexts.remove(&session.dev_eui);
        inner.by_addr.entry(session.dev_addr).or_default().push(session.dev_eui);
        inner.sessions.insert(session.dev_eui, session);
        Ok(())
    }

    /// Records a frame counter the database already accepted.
    pub fn set_f_cnt_up(&self, dev_eui: Eui64, next: u32) {
        if let Some(s) = self.inner.write().expect("cache lock").sessions.get_mut(&dev_eui) {
            s.f_cnt_up = next;
        }
    }

    /// Records the downlink counter after the database handed out `used`.
    pub fn set_n_f_cnt_down(&self, dev_eui: Eui64, next: u32) {
        if let Some(s) = self.inner.write().expect("cache lock").sessions.get_mut(&dev_eui) {
            s.n_f_cnt_down = s.n_f_cnt_down.max(next);
        }
    }

    /// Records a MAC state and RX settings the database already stored, or that differ from
    /// the stored ones only by ADR history not yet written (`MacState::needs_saving`).
    pub fn set_mac_state(&self, dev_eui: Eui64, state: crate::mac::state::MacState, rx: crate::mac::state::RxParams) {
        if let Some(s) = self.inner.write().expect("cache lock").sessions.get_mut(&dev_eui) {
            s.mac_state = state;
            s.rx1_delay = rx.rx1_delay;
            s.rx1_dr_offset = rx.rx1_dr_offset;
            s.rx2_dr = rx.rx2_dr;
            s.rx2_frequency = rx.rx2_frequency;
        }
    }

    /// Forget a device so the next lookup reads the database (after a lost compare-and-set).
    pub fn invalidate(&self, dev_eui: Eui64) {
        self.handle.apply(&crate::cluster::Change::Device { dev_eui });
    }
}

fn remove_session(inner: &mut Inner, dev_eui: Eui64) {
    if let Some(old) = inner.sessions.remove(&dev_eui) {
        if let Some(v) = inner.by_addr.get_mut(&old.dev_addr) {
            v.retain(|e| *e != dev_eui);
            if v.is_empty() {
                inner.by_addr.remove(&old.dev_addr);
            }
        }
    }
}
