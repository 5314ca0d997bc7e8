//! SQLite backend. The repository SQL shared with PostgreSQL is in `sql.rs`; this file
//! holds what only SQLite does.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

use super::sql::{self as s, SeenTable, Store};
use super::{DatabaseConfig, Result};
use crate::types::Eui64;

super::sql::impl_repos!(sqlx::Sqlite);

impl Store<Sqlite> {
    /// `BEGIN IMMEDIATE` takes the write lock at the start. A deferred transaction that
    /// upgrades from reading to writing fails with SQLITE_BUSY at once instead of waiting
    /// out busy_timeout, so every writing transaction starts this way.
    pub(crate) async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// History batches are ordinary write transactions: in WAL mode with
    /// `synchronous = NORMAL` a commit does not wait for the disk, and survives a crash of
    /// the process (not of the machine).
    pub(crate) async fn begin_history_write(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.begin_write().await
    }

    /// One transaction for the batch; per-row statements cost no round trip in SQLite.
    pub(crate) async fn touch_last_seen_in(&self, table: SeenTable, seen: &[(Eui64, DateTime<Utc>)]) -> Result<()> {
        let latest = s::latest_per_id(seen);
        if latest.is_empty() {
            return Ok(());
        }
        // One statement and one short transaction per chunk: the single SQLite writer is
        // shared with the frame-counter compare-and-sets, which must not wait behind
        // thousands of row updates.
        for chunk in latest.chunks(s::INSERT_CHUNK) {
            let mut qb = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, t) AS (");
            qb.push_values(chunk, |mut b, (id, t)| {
                b.push_bind(id.0.to_vec()).push_bind(*t);
            });
            qb.push(format!(
                ") UPDATE {t} SET last_seen_at = v.t FROM v WHERE {t}.{k} = v.id \
                 AND ({t}.last_seen_at IS NULL OR {t}.last_seen_at < v.t)",
                t = table.table(),
                k = table.key(),
            ));
            let mut tx = self.begin_write().await.map_err(s::db_err)?;
            qb.build().execute(&mut *tx).await.map_err(s::db_err)?;
            tx.commit().await.map_err(s::db_err)?;
        }
        Ok(())
    }
}

fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

pub(crate) async fn connect(cfg: &DatabaseConfig) -> Result<Store<Sqlite>> {
    let memory = is_memory(&cfg.url);
    let mut opts =
        SqliteConnectOptions::from_str(&cfg.url)?.create_if_missing(true).foreign_keys(true).busy_timeout(Duration::from_secs(10));
    if !memory {
        opts = opts.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal);
    }
    let pool = if memory {
        // The database lives as long as a connection to it: keep exactly one, forever.
        SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None).connect_with(opts).await?
    } else {
        SqlitePoolOptions::new().max_connections(cfg.max_connections.max(1)).connect_with(opts).await?
    };
    sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
    Ok(Store { pool })
}
