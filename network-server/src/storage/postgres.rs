//! PostgreSQL backend (TimescaleDB when the extension is available). The repository SQL
//! shared with SQLite is in `sql.rs`; this file holds what only PostgreSQL does.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use tracing::{info, warn};

use super::sql::{self as s, SeenTable, Store};
use super::{DatabaseConfig, Result};
use crate::types::Eui64;

super::sql::impl_repos!(sqlx::Postgres);

/// The tables that become hypertables, partitioned on `time`.
const HYPERTABLES: [&str; 2] = ["uplinks", "events"];

impl Store<Postgres> {
    /// READ COMMITTED: an `UPDATE … WHERE f_cnt_up = $expected` that waited for a
    /// concurrent writer re-checks its condition on the committed row, which is what makes
    /// the frame-counter compare-and-set safe across transactions and instances.
    pub(crate) async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.pool.begin().await
    }

    /// A history transaction commits without waiting for its WAL flush
    /// (`synchronous_commit = off` for this transaction only). Its rows are then safe from a
    /// crash of loraflow (the event is published only after the commit) but not from a crash
    /// of PostgreSQL itself within `wal_writer_delay` × 3, the same exposure as an MQTT
    /// broker's in-memory queue. Waiting for every history flush instead queued the
    /// frame-counter commits, which must stay synchronous, behind history fsyncs: at
    /// 2,500 uplinks/s that tripled the latency of every uplink.
    pub(crate) async fn begin_history_write(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        Ok(tx)
    }

    /// One statement for the whole batch.
    pub(crate) async fn touch_last_seen_in(&self, table: SeenTable, seen: &[(Eui64, DateTime<Utc>)]) -> Result<()> {
        let latest = s::latest_per_id(seen);
        if latest.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<Vec<u8>>, Vec<DateTime<Utc>>) = latest.into_iter().map(|(id, t)| (id.0.to_vec(), t)).unzip();
        let sql = format!(
            "UPDATE {t} AS r SET last_seen_at = v.seen \
             FROM UNNEST($1::bytea[], $2::timestamptz[]) AS v(id, seen) \
             WHERE r.{k} = v.id AND (r.last_seen_at IS NULL OR r.last_seen_at < v.seen)",
            t = table.table(),
            k = table.key(),
        );
        sqlx::query(&sql).bind(ids).bind(times).execute(&self.pool).await.map_err(s::db_err)?;
        Ok(())
    }
}

/// Connects, migrates and sets up TimescaleDB if available. Returns the store and whether
/// TimescaleDB is in use.
pub(crate) async fn connect(cfg: &DatabaseConfig) -> Result<(Store<Postgres>, bool)> {
    let opts = PgConnectOptions::from_str(&cfg.url)?;
    let pool =
        PgPoolOptions::new().max_connections(cfg.max_connections.max(1)).acquire_timeout(Duration::from_secs(5)).connect_with(opts).await?;
    sqlx::migrate!("../migrations/postgres").run(&pool).await?;
    let timescale = setup_timescale(&pool, cfg).await?;
    Ok((Store { pool }, timescale))
}

/// Turns the history tables into hypertables and (re)applies the compression and retention
/// policies from the config, so that a changed config takes effect on the next start.
/// Untested here: the test machine has no TimescaleDB.
async fn setup_timescale(pool: &PgPool, cfg: &DatabaseConfig) -> Result<bool> {
    let available: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetch_optional(pool).await?;
    if available.is_none() {
        info!("TimescaleDB is not available; uplinks and events are plain PostgreSQL tables");
        return Ok(false);
    }
    // Installed but not in shared_preload_libraries makes CREATE EXTENSION fail; the server
    // still works on plain tables, so say so instead of refusing to start.
    if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS timescaledb").execute(pool).await {
        warn!(error = %e, "TimescaleDB is installed but could not be enabled; uplinks and events stay plain tables");
        return Ok(false);
    }
    // Table names are the constants above and the intervals are integers from the config,
    // so formatting them into the statements cannot inject anything.
    for table in HYPERTABLES {
        sqlx::query(&format!("SELECT create_hypertable('{table}', 'time', if_not_exists => TRUE, migrate_data => TRUE)"))
            .execute(pool)
            .await?;

        sqlx::query(&format!("SELECT remove_compression_policy('{table}', if_exists => TRUE)")).execute(pool).await?;
        if cfg.compress_after_days > 0 {
            let enabled: Option<bool> = sqlx::query_scalar(
                "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_schema = current_schema() AND hypertable_name = $1",
            )
            .bind(table)
            .fetch_optional(pool)
            .await?;
            // Changing these settings fails once chunks are compressed: set them only once.
            if enabled != Some(true) {
                sqlx::query(&format!(
                    "ALTER TABLE {table} SET (timescaledb.compress, \
                     timescaledb.compress_segmentby = 'dev_eui', timescaledb.compress_orderby = 'time DESC')"
                ))
                .execute(pool)
                .await?;
            }
            sqlx::query(&format!(
                "SELECT add_compression_policy('{table}', INTERVAL '{} days', if_not_exists => TRUE)",
                cfg.compress_after_days
            ))
            .execute(pool)
            .await?;
        }

        sqlx::query(&format!("SELECT remove_retention_policy('{table}', if_exists => TRUE)")).execute(pool).await?;
        if cfg.retention_days > 0 {
            sqlx::query(&format!("SELECT add_retention_policy('{table}', INTERVAL '{} days', if_not_exists => TRUE)", cfg.retention_days))
                .execute(pool)
                .await?;
        }
    }
    info!(compress_after_days = cfg.compress_after_days, retention_days = cfg.retention_days, "TimescaleDB enabled for uplinks and events");
    Ok(true)
}
