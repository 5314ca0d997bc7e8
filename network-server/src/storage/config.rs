//! `[database]` section.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` (created if missing), `sqlite::memory:`, or `postgres://…`.
    pub url: String,
    /// Pool size. In-memory SQLite always uses one connection (each connection would
    /// otherwise see its own empty database once the shared one is dropped).
    pub max_connections: u32,
    /// TimescaleDB only: compress uplink/event chunks older than this; 0 = no compression.
    pub compress_after_days: u32,
    /// TimescaleDB only: drop uplink/event chunks older than this; 0 = keep forever.
    pub retention_days: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: "sqlite://loraflow.db".into(), max_connections: 8, compress_after_days: 7, retention_days: 0 }
    }
}

/// A database URL with its path (the database name) replaced, query string kept, e.g. to
/// create and use a fresh database on the same PostgreSQL server.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_take_their_defaults() {
        let c: DatabaseConfig = serde_json::from_str(r#"{"url":"postgres://x/y"}"#).unwrap();
        assert_eq!(c.url, "postgres://x/y");
        assert_eq!(c.max_connections, 8);
        assert_eq!(c.compress_after_days, 7);
        assert_eq!(c.retention_days, 0);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(serde_json::from_str::<DatabaseConfig>(r#"{"uri":"x"}"#).is_err());
    }
}
