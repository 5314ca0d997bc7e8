//! `[cluster]` section: several instances sharing PostgreSQL, Redis and an MQTT broker.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:6379/0`; empty = one instance alone (the default). When set, the
    /// database must be PostgreSQL and `mqtt.url` an external broker.
    pub redis_url: String,
    /// Prefix of every Redis key and channel, so that several clusters (or tests) can share
    /// one Redis.
    pub key_prefix: String,
    /// This instance's name among the others; empty = `hostname-pid-random`. Must be unique
    /// in the cluster.
    pub instance_id: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { redis_url: String::new(), key_prefix: "loraflow".into(), instance_id: String::new() }
    }
}

/// A `[cluster]` value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for `cluster.{key}`: {reason}")]
pub struct InvalidClusterConfig {
    pub key: &'static str,
    pub reason: String,
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    pub fn validate(&self) -> Result<(), InvalidClusterConfig> {
        if self.enabled() && !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://")) {
            return Err(InvalidClusterConfig { key: "redis_url", reason: format!("expected redis://…, got {:?}", self.redis_url) });
        }
        let bad = |s: &str| s.chars().any(|c| c.is_whitespace() || c == ':' || c.is_control());
        if self.key_prefix.is_empty() || bad(&self.key_prefix) {
            return Err(InvalidClusterConfig { key: "key_prefix", reason: "must be non-empty, without spaces or ':'".into() });
        }
        if bad(&self.instance_id) {
            return Err(InvalidClusterConfig { key: "instance_id", reason: "must not contain spaces or ':'".into() });
        }
        Ok(())
    }

    /// The configured instance id, or a generated one that is unique per process.
    pub fn instance_id(&self) -> String {
        if !self.instance_id.is_empty() {
            return self.instance_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let host = if host.is_empty() { "loraflow".to_string() } else { host.replace(':', "-") };
        format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_checked_when_on() {
        let c = ClusterConfig::default();
        assert!(!c.enabled());
        c.validate().unwrap();
        let bad_url = ClusterConfig { redis_url: "localhost:6379".into(), ..Default::default() };
        assert_eq!(bad_url.validate().unwrap_err().key, "redis_url");
        let bad_prefix = ClusterConfig { redis_url: "redis://127.0.0.1/".into(), key_prefix: "a:b".into(), ..Default::default() };
        assert_eq!(bad_prefix.validate().unwrap_err().key, "key_prefix");
        let generated = ClusterConfig::default().instance_id();
        assert!(generated.contains(&std::process::id().to_string()));
        assert_ne!(generated, ClusterConfig::default().instance_id());
    }
}
