//! Persistence behind one repository trait per aggregate, with a PostgreSQL and a SQLite
//! implementation chosen from `database.url`. SQL lives in this module only: `sql.rs` for
//! what both backends share, `postgres.rs`/`sqlite.rs` for the rest.
//!
//! ```no_run
//! # async fn f() -> loraflow_network_server::storage::Result<()> {
//! use loraflow_network_server::storage::{DatabaseConfig, Storage};
//! let storage = Storage::connect(&DatabaseConfig::default()).await?;
//! let gateways = storage.gateways.list(100, 0).await?;
//! storage.close().await;
//! # Ok(()) }
//! ```

pub mod config;
pub mod model;
mod postgres;
mod sql;
mod sqlite;
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use config::DatabaseConfig;
pub use loraflow_packet_forwarder::AllowedNetworks;
pub use model::*;

use crate::types::{DevAddr, Eui64};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// A reference is broken or still in use, e.g. an unknown applicationId or deleting a
    /// device profile that devices use. The text names the field.
    #[error("{0}")]
    Conflict(String),
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A page of a list: the total count and the rows of this page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub total_count: u64,
    pub result: Vec<T>,
}

#[async_trait]
pub trait GatewayRepo: Send + Sync {
    async fn create(&self, gw: &Gateway) -> Result<()>;
    async fn get(&self, id: Eui64) -> Result<Gateway>;
    /// Oldest first.
    async fn list(&self, limit: u32, offset: u32) -> Result<Page<Gateway>>;
    /// Updates name, description, location, region configuration, allowed networks and
    /// updated_at.
    async fn update(&self, gw: &Gateway) -> Result<()>;
    async fn delete(&self, id: Eui64) -> Result<()>;
    async fn all_ids(&self) -> Result<Vec<Eui64>>;
    /// Every gateway with its allowed source networks: the UDP allow-list at start.
    async fn allowed_networks(&self) -> Result<Vec<(Eui64, AllowedNetworks)>>;
    /// The gateways that name a region configuration, with its id.
    async fn region_config_ids(&self) -> Result<Vec<(Eui64, String)>>;
    /// Batch update of last_seen_at (only moves forward). Unknown ids are ignored.
    async fn touch_last_seen(&self, seen: &[(Eui64, DateTime<Utc>)]) -> Result<()>;
}

#[async_trait]
pub trait ApplicationRepo: Send + Sync {
    async fn create(&self, app: &Application) -> Result<()>;
    async fn get(&self, id: Uuid) -> Result<Application>;
    async fn list(&self, limit: u32, offset: u32) -> Result<Page<Application>>;
    async fn update(&self, app: &Application) -> Result<()>;
    /// Deletes the application and its devices (with their sessions, keys and queues).
    async fn delete(&self, id: Uuid) -> Result<()>;
}

#[async_trait]
pub trait DeviceProfileRepo: Send + Sync {
    async fn create(&self, dp: &DeviceProfile) -> Result<()>;
    async fn get(&self, id: Uuid) -> Result<DeviceProfile>;
    async fn list(&self, limit: u32, offset: u32) -> Result<Page<DeviceProfile>>;
    async fn update(&self, dp: &DeviceProfile) -> Result<()>;
    /// `Conflict` while devices use the profile.
    async fn delete(&self, id: Uuid) -> Result<()>;
}

#[async_trait]
pub trait DeviceRepo: Send + Sync {
    /// `Conflict("applicationId ...")` / `Conflict("deviceProfileId ...")` for unknown references.
    async fn create(&self, dev: &Device) -> Result<()>;
    async fn get(&self, dev_eui: Eui64) -> Result<Device>;
    async fn list(&self, application_id: Option<Uuid>, limit: u32, offset: u32) -> Result<Page<Device>>;
    /// Updates name, description, application, profile, join_eui, flags, tags, updated_at.
    async fn update(&self, dev: &Device) -> Result<()>;
    /// Deletes the device with its keys, session, nonces and queue.
    async fn delete(&self, dev_eui: Eui64) -> Result<()>;
    /// Device + profile + application name.
    async fn context(&self, dev_eui: Eui64) -> Result<DeviceContext>;
    async fn set_keys(&self, keys: &DeviceKeys) -> Result<()>;
    async fn get_keys(&self, dev_eui: Eui64) -> Result<DeviceKeys>;
    /// Increments and returns the device's JoinNonce (24 bits, wraps to 1). `NotFound`
    /// without keys. Changing the keys keeps the counter: the device remembers the last one.
    async fn next_join_nonce(&self, dev_eui: Eui64) -> Result<u32>;
    /// Records a DevNonce as used. Returns false (and changes nothing) if it was used before.
    async fn insert_dev_nonce(&self, dev_eui: Eui64, join_eui: Eui64, dev_nonce: u16) -> Result<bool>;
    /// Highest DevNonce used so far (for LoRaWAN 1.0.4's "must increase" rule).
    async fn max_dev_nonce(&self, dev_eui: Eui64) -> Result<Option<u16>>;
    /// When a DevNonce was recorded as used, if it was (cluster mode: was it this very
    /// join-request, processed by another instance?).
    async fn dev_nonce_used_at(&self, dev_eui: Eui64, join_eui: Eui64, dev_nonce: u16) -> Result<Option<DateTime<Utc>>>;
    async fn clear_dev_nonces(&self, dev_eui: Eui64) -> Result<()>;
    /// Batch update of last_seen_at (only moves forward).
    async fn touch_last_seen(&self, seen: &[(Eui64, DateTime<Utc>)]) -> Result<()>;
}

#[async_trait]
pub trait SessionRepo: Send + Sync {
    /// Creates or replaces the device's session and sets `device.dev_addr`.
    async fn save(&self, s: &DeviceSession) -> Result<()>;
    async fn get(&self, dev_eui: Eui64) -> Result<DeviceSession>;
    /// The sessions of these devices (those without one are simply absent).
    async fn get_many(&self, dev_euis: &[Eui64]) -> Result<Vec<DeviceSession>>;
    /// The sessions of these devices, each with whether its device profile enables ADR, in
    /// one query per 500 devices (those without a session are absent): a page of devices
    /// with their state.
    async fn get_many_with_adr(&self, dev_euis: &[Eui64]) -> Result<Vec<(DeviceSession, bool)>>;
    /// Every session using this DevAddr (several devices may share one).
    async fn get_by_dev_addr(&self, dev_addr: DevAddr) -> Result<Vec<DeviceSession>>;
    async fn delete(&self, dev_eui: Eui64) -> Result<()>;
    /// Compare-and-set of the uplink counter, one row per entry, in one transaction:
    /// sets `f_cnt_up = next` where the stored value is still `expected`. Returns, per
    /// entry in order, whether it was applied. Two racing copies can never both pass.
    async fn cas_f_cnt_up(&self, updates: &[FCntUpdate]) -> Result<Vec<bool>>;
    /// Moves `f_cnt_up` forward to `next` where it is lower (never back), in one
    /// transaction: persists counters accepted while the database was unreachable.
    async fn advance_f_cnt_up(&self, updates: &[(Eui64, u32)]) -> Result<()>;
    /// Atomically returns the current `n_f_cnt_down` and increments it.
    async fn next_f_cnt_down(&self, dev_eui: Eui64) -> Result<u32>;
    /// Stores the MAC state and the RX settings the device uses (`NotFound` without a session).
    async fn save_mac_state(&self, dev_eui: Eui64, state: &crate::mac::state::MacState, rx: crate::mac::state::RxParams) -> Result<()>;
    /// All sessions, for warming the in-memory cache at start.
    async fn all(&self) -> Result<Vec<DeviceSession>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FCntUpdate {
    pub dev_eui: Eui64,
    pub expected: u32,
    pub next: u32,
}

#[async_trait]
pub trait QueueRepo: Send + Sync {
    async fn enqueue(&self, item: &QueueItem) -> Result<()>;
    async fn get(&self, id: Uuid) -> Result<QueueItem>;
    /// Oldest first.
    async fn list(&self, dev_eui: Eui64) -> Result<Vec<QueueItem>>;
    async fn flush(&self, dev_eui: Eui64) -> Result<()>;
    /// Every device with at least one queue item (read once at start).
    async fn devices_with_items(&self) -> Result<Vec<Eui64>>;
    async fn update(&self, item: &QueueItem) -> Result<()>;
    async fn delete(&self, id: Uuid) -> Result<()>;
}

#[async_trait]
pub trait HistoryRepo: Send + Sync {
    /// Stores a batch of uplink rows and event rows in ONE transaction: all of them or none,
    /// so a caller that publishes after this returns knows every row is stored (see the
    /// app-server's history writer). PostgreSQL: one statement, one round trip; SQLite: the
    /// whole transaction in one call to the connection's thread, so the single writer lock
    /// is held only while SQLite itself works.
    async fn insert_history(&self, uplinks: &[UplinkRecord], events: &[EventRecord]) -> Result<()>;
    /// How many history transactions are worth running at the same time: 1 on SQLite (one
    /// writer; a second would only wait in the busy handler), 2 on PostgreSQL (the next
    /// batch is written while the previous one commits).
    fn concurrent_writes(&self) -> usize {
        1
    }
    async fn insert_uplinks(&self, rows: &[UplinkRecord]) -> Result<()> {
        self.insert_history(rows, &[]).await
    }
    async fn insert_events(&self, rows: &[EventRecord]) -> Result<()> {
        self.insert_history(&[], rows).await
    }
    /// One page of a device's uplinks, newest first by (time, deduplication_id).
    async fn uplinks_page(&self, q: &HistoryQuery) -> Result<Vec<UplinkRecord>>;
    /// How many uplinks of the device have `time >= since`, whatever the page.
    async fn count_uplinks(&self, dev_eui: Eui64, since: Option<DateTime<Utc>>) -> Result<u64>;
    /// One page of a device's events, newest first by (time, id), optionally of one kind.
    async fn events_page(&self, q: &HistoryQuery, kind: Option<EventKind>) -> Result<Vec<EventRecord>>;
    /// How many events of the device (of `kind`, if given) have `time >= since`.
    async fn count_events(&self, dev_eui: Eui64, since: Option<DateTime<Utc>>, kind: Option<EventKind>) -> Result<u64>;
    /// The newest `limit` events across devices (of one application, kind or log level if
    /// the filter says so), newest first by (time, id).
    async fn recent_events(&self, filter: &EventFilter, limit: u32) -> Result<Vec<EventRecord>>;
    /// How many events [`HistoryRepo::recent_events`] could list with this filter.
    async fn count_recent_events(&self, filter: &EventFilter) -> Result<u64>;
    /// The newest `limit` uplinks, optionally only rows with `time >= since`.
    async fn list_uplinks(&self, dev_eui: Eui64, since: Option<DateTime<Utc>>, limit: u32) -> Result<Vec<UplinkRecord>> {
        self.uplinks_page(&HistoryQuery { dev_eui, since, after: None, limit }).await
    }
    async fn list_events(&self, dev_eui: Eui64, since: Option<DateTime<Utc>>, limit: u32) -> Result<Vec<EventRecord>> {
        self.events_page(&HistoryQuery { dev_eui, since, after: None, limit }, None).await
    }
}

/// The stored series of the measurements table (rows are written with their uplink by
/// [`HistoryRepo::insert_history`]).
#[async_trait]
pub trait MeasurementRepo: Send + Sync {
    /// Every series of the device with its newest value, ordered by name.
    async fn latest_measurements(&self, dev_eui: Eui64) -> Result<Vec<StoredMeasurement>>;
    /// The values of one series with `from <= time < to`, oldest first, skipping `offset`,
    /// at most `limit`.
    async fn series(
        &self,
        dev_eui: Eui64,
        name: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<StoredMeasurement>>;
    /// The values of one series of every device of an application with `from <= time < to`,
    /// by device EUI then oldest first, with the device's name (`None` once it is deleted).
    async fn application_series(
        &self,
        application_id: Uuid,
        name: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<(Eui64, Option<String>, StoredMeasurement)>>;
    /// The hourly rollup of one series over whole hours `from <= bucket < to`, by device EUI
    /// then hour, with the device's name (`None` once it is deleted); at most `limit` rows.
    async fn hourly_series(
        &self,
        scope: SeriesScope,
        name: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(Eui64, Option<String>, HourlyMeasurement)>>;
    /// The kind of the newest value of the series in the scope (`None`: no values).
    async fn series_kind(&self, scope: SeriesScope, name: &str) -> Result<Option<MeasurementKind>>;
    /// Per device of the scope, the newest numeric value of the series before `before`: where
    /// a COUNTER's increase over a range starts from.
    async fn last_values_before(&self, scope: SeriesScope, name: &str, before: DateTime<Utc>) -> Result<Vec<(Eui64, f64)>>;
}

#[async_trait]
pub trait ApiKeyRepo: Send + Sync {
    /// Stores a key by the SHA-256 of its token (the token itself is never stored).
    /// `Conflict("applicationId…")` when its application does not exist.
    async fn insert(&self, key: &ApiKey, token_sha256: &[u8]) -> Result<()>;
    /// The key whose token has this SHA-256.
    async fn find(&self, token_sha256: &[u8]) -> Result<Option<ApiKey>>;
    /// Every key, oldest first.
    async fn list(&self) -> Result<Vec<ApiKey>>;
    async fn delete(&self, id: Uuid) -> Result<()>;
    /// Replaces the generated admin key(s) by `key` in one transaction.
    async fn replace_generated(&self, key: &ApiKey, token_sha256: &[u8]) -> Result<()>;
    async fn count(&self) -> Result<u64>;
}

/// Handles to every repository of one database. Cloning is cheap (the pool is shared).
#[derive(Clone)]
pub struct Storage {
    pub gateways: Arc<dyn GatewayRepo>,
    pub applications: Arc<dyn ApplicationRepo>,
    pub device_profiles: Arc<dyn DeviceProfileRepo>,
    pub devices: Arc<dyn DeviceRepo>,
    pub sessions: Arc<dyn SessionRepo>,
    pub queue: Arc<dyn QueueRepo>,
    pub history: Arc<dyn HistoryRepo>,
    pub measurements: Arc<dyn MeasurementRepo>,
    pub api_keys: Arc<dyn ApiKeyRepo>,
    pool: Pool,
    timescale: bool,
}

#[derive(Clone)]
enum Pool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("backend", &self.backend_name()).field("timescale", &self.timescale).finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens the database named by `cfg.url` (`postgres://`/`postgresql://` or `sqlite:`),
    /// applies pending migrations and, on PostgreSQL, sets up TimescaleDB when available.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Storage> {
        let url = cfg.url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (store, timescale) = postgres::connect(cfg).await?;
            let pool = Pool::Postgres(store.pool.clone());
            Ok(Storage::from_store(Arc::new(store), pool, timescale))
        } else if url.starts_with("sqlite:") {
            let store = sqlite::connect(cfg).await?;
            let pool = Pool::Sqlite(store.pool.clone());
            Ok(Storage::from_store(Arc::new(store), pool, false))
        } else {
            // Only the scheme: the rest of a URL may hold a password.
            let scheme = url.split_once(':').map_or(url, |(s, _)| s);
            Err(StorageError::UnsupportedUrl(format!("scheme {scheme:?} (expected postgres://, postgresql:// or sqlite:)")))
        }
    }

    fn from_store<S>(store: Arc<S>, pool: Pool, timescale: bool) -> Storage
    where
        S: GatewayRepo
            + ApplicationRepo
            + DeviceProfileRepo
            + DeviceRepo
            + SessionRepo
            + QueueRepo
            + HistoryRepo
            + MeasurementRepo
            + ApiKeyRepo
            + 'static,
    {
        Storage {
            gateways: store.clone(),
            applications: store.clone(),
            device_profiles: store.clone(),
            devices: store.clone(),
            sessions: store.clone(),
            queue: store.clone(),
            history: store.clone(),
            measurements: store.clone(),
            api_keys: store,
            pool,
            timescale,
        }
    }

    /// Waits for checked-out connections to be returned and closes them all; for SQLite
    /// this also checkpoints the WAL. Every clone of this `Storage` is closed with it.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend_name(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    /// Whether uplinks and events are TimescaleDB hypertables.
    pub fn timescale_enabled(&self) -> bool {
        self.timescale
    }

    /// A round trip to the database, for health checks.
    pub async fn ping(&self) -> Result<()> {
        match &self.pool {
            Pool::Postgres(p) => {
                sqlx::query("SELECT 1").execute(p).await?;
            }
            Pool::Sqlite(p) => {
                sqlx::query("SELECT 1").execute(p).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
