//! Cluster mode: several loraflow instances on one PostgreSQL database, one Redis and one
//! MQTT broker. Redis holds what must be shared fast (deduplication of uplink copies heard
//! through different instances, which instance holds each gateway, cache invalidations);
//! PostgreSQL stays the truth and its frame-counter compare-and-set the final guard.
//!
//! Chosen by `cluster.redis_url`; without it nothing here runs and one process works alone.
//! When Redis cannot be reached an instance keeps working on its own (local deduplication,
//! local gateways) and says so in `/health/ready` and `loraflow_cluster_redis_up`.

pub mod changes;
pub mod claims;
pub mod config;
pub mod dedup;
pub mod handover;
pub mod routes;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use changes::ChangeBus;
pub use config::ClusterConfig;

use crate::types::Eui64;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.redis_url: {0}")]
    Url(redis::RedisError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A change to network-server state, as every instance must learn it: the owner on the
/// instance that made it applies it and announces it; the others re-read what it names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A device row, its keys or its session changed (or it was deleted).
    Device { dev_eui: Eui64 },
    /// A device's downlink queue changed.
    Queue { dev_eui: Eui64 },
    /// A device profile or an application changed: every cached device context is re-read.
    ProfilesOrApplications,
    /// A gateway was registered, changed or deleted.
    Gateway { gateway_id: Eui64 },
    /// Anything may have changed (announcements were missed while Redis was unreachable):
    /// every cached device, profile, application and gateway is re-read.
    All,
}

/// Where an instance announces its changes to the others (Redis pub/sub in cluster mode).
/// Must not block: called on the path that made the change.
pub trait ChangeSink: Send + Sync {
    fn announce(&self, change: &Change);
}

/// A connection to the cluster's Redis, shared by everything cluster mode does on this
/// instance. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    instance_id: String,
    prefix: String,
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    up: AtomicBool,
    up_gauge: prometheus::IntGauge,
}

impl Cluster {
    /// Connects to `cluster.redis_url`. `None` when cluster mode is off. A Redis that does not
    /// answer at start is an error: an operator who asked for a cluster gets one or a clear
    /// failure, not a silent single instance.
    pub async fn connect(config: &ClusterConfig, registry: &prometheus::Registry) -> Result<Option<Cluster>, ClusterError> {
        if !config.enabled() {
            return Ok(None);
        }
        let client = redis::Client::open(config.redis_url.as_str()).map_err(ClusterError::Url)?;
        let conn = redis::aio::ConnectionManager::new(client.clone()).await?;
        let up_gauge = prometheus::IntGauge::new(
            "loraflow_cluster_redis_up",
            "1 while the cluster's Redis answers, 0 while this instance works alone",
        )
        .expect("metric");
        let _ = registry.register(Box::new(up_gauge.clone()));
        up_gauge.set(1);
        Ok(Some(Cluster {
            inner: Arc::new(Inner {
                instance_id: config.instance_id(),
                prefix: config.key_prefix.clone(),
                client,
                conn,
                up: AtomicBool::new(true),
                up_gauge,
            }),
        }))
    }

    /// This instance's name in Redis (gateway routes, downlink hand-over).
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// A key or channel name under the cluster's prefix: `key(&["gw", "0102…"])` →
    /// `loraflow:gw:0102…`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.inner.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// A multiplexed connection that reconnects by itself; clone it per use.
    pub fn conn(&self) -> redis::aio::ConnectionManager {
        self.inner.conn.clone()
    }

    /// The client, for connections of their own (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    /// Whether the last Redis operation succeeded.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// PINGs Redis (the readiness check) and records the outcome; the error says why Redis
    /// counts as unavailable.
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<(), String> {
        let mut conn = self.conn();
        let result = match tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut conn)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to PING"))),
        };
        self.report(&result);
        result.map_err(|e| e.to_string())
    }

    /// The key prefix every key and channel of this cluster starts with.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Records the outcome of a Redis operation: the readiness check and the metric follow
    /// it, and the change between up and down is logged once.
    pub fn report<T>(&self, result: &Result<T, redis::RedisError>) {
        let up = result.is_ok();
        if self.inner.up.swap(up, Ordering::Relaxed) != up {
            self.inner.up_gauge.set(up as i64);
            match result {
                Ok(_) => tracing::info!("cluster Redis answers again; sharing state with the other instances"),
                Err(e) => tracing::warn!(error = %e, "cluster Redis unavailable; this instance works alone until it answers"),
            }
        }
    }
}

/// Runs a Redis operation for at most `limit`: while Redis is unreachable the connection
/// manager keeps reconnecting and a command can wait for seconds, longer than a receive
/// window lasts. No answer in time is an error like any other.
pub async fn bounded<T>(limit: std::time::Duration, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err((redis::ErrorKind::Io, "no answer from Redis in time").into()),
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("instance_id", &self.inner.instance_id).field("prefix", &self.inner.prefix).finish()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::{Cluster, ClusterConfig};

    /// The machine's Redis.
    pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

    /// A cluster member named `instance_id` on the local Redis under `prefix` (unique per test).
    pub async fn test_cluster(prefix: &str, instance_id: &str) -> Cluster {
        let config = ClusterConfig { redis_url: REDIS_URL.into(), key_prefix: prefix.into(), instance_id: instance_id.into() };
        Cluster::connect(&config, &prometheus::Registry::new()).await.expect("local Redis").expect("cluster mode on")
    }
}
