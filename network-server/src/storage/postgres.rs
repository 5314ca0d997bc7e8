//! PostgreSQL backend (TimescaleDB when the extension is available). The repository SQL
//! shared with SQLite is in `sql.rs`; this file holds what only PostgreSQL does.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use tracing::{info, warn};

use super::sql::{self as s, SeenTable, Store};
use super::{DatabaseConfig, EventRecord, Result, UplinkRecord};
use crate::types::Eui64;

super::sql::impl_repos!(sqlx::Postgres);

/// The tables that become hypertables, partitioned on `time`, with the columns their
/// compressed segments are keyed by: measurements per device AND series, so a chart of one
/// series reads one segment per chunk.
const HYPERTABLES: [(&str, &str); 3] = [("uplinks", "dev_eui"), ("events", "dev_eui"), ("measurements", "dev_eui, name")];

/// The hourly continuous aggregate of `measurements`, with the columns of the plain
/// `measurements_hourly` table it replaces (migration 20261130000008), so one query reads
/// either. Numeric values only. `last(value, time)` is TimescaleDB's. Real-time
/// (`materialized_only = false`): hours not yet materialized are computed from the raw rows,
/// so a query sees every value stored, as with the plain table.
const MEASUREMENTS_HOURLY: &str = "CREATE MATERIALIZED VIEW IF NOT EXISTS measurements_hourly \
     WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS \
     SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, dev_eui, application_id, name, \
       sum(value) AS sum, count(value) AS count, min(value) AS min, max(value) AS max, \
       last(value, time) AS last, max(time) AS last_time \
     FROM measurements WHERE value IS NOT NULL GROUP BY bucket, dev_eui, application_id, name \
     WITH NO DATA";

/// Refreshed every 30 minutes over the last 3 days up to an hour ago (the open hour is still
/// filling; uplinks arrive in time order, so older hours do not change after 3 days). No
/// retention on the aggregate itself: hourly rows are small and outlive the raw rows on
/// purpose, as ChirpStack's device metrics do.
const MEASUREMENTS_HOURLY_POLICY: &str = "SELECT add_continuous_aggregate_policy('measurements_hourly', \
     start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour', \
     schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE)";

impl Store<Postgres> {
    /// READ COMMITTED: an `UPDATE … WHERE f_cnt_up = $expected` that waited for a
    /// concurrent writer re-checks its condition on the committed row, which is what makes
    /// the frame-counter compare-and-set safe across transactions and instances.
    pub(crate) async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.pool.begin().await
    }

    /// The next batch is written while the previous one commits (the history writer keeps
    /// publishing in batch order); more would only add connections and smaller batches.
    pub(crate) const HISTORY_CONCURRENT_WRITES: usize = 2;

    /// The `level` of an event's JSONB body, as text.
    pub(crate) const LEVEL_OF_BODY: &'static str = "body->>'level'";

    /// One statement, so one round trip and one implicit transaction, for the uplink and
    /// the event rows of a batch together. The text is fixed (one array per column,
    /// `UNNEST`ed; an empty array inserts nothing), so it is parsed and planned once per
    /// connection whatever the batch's size and mix.
    ///
    /// The transaction commits without waiting for its WAL flush: `set_config(…, true)` is
    /// `SET LOCAL`, which lasts until this statement's own commit, and PostgreSQL reads
    /// `synchronous_commit` when it records that commit. The rows are then safe from a crash
    /// of loraflow (an event is published only after this returns) but not from a crash of
    /// PostgreSQL itself within `wal_writer_delay` × 3, the same exposure as an MQTT
    /// broker's in-memory queue. Waiting for every history flush instead queued the
    /// frame-counter commits, which must stay synchronous, behind history fsyncs: at
    /// 2,500 uplinks/s that tripled the latency of every uplink.
    pub(crate) async fn insert_history_batch(&self, uplinks: &[UplinkRecord], events: &[EventRecord]) -> Result<()> {
        const SQL: &str = "WITH no_flush_wait AS (SELECT set_config('synchronous_commit', 'off', true)), \
             u AS (INSERT INTO uplinks (time, deduplication_id, dev_eui, application_id, dev_addr, f_cnt, f_port, \
                   confirmed, dr, frequency, rssi, snr, gateway_count, data, object, rx_info, tx_info, \
                   adr_dr, adr_tx_power_index, adr_nb_trans) \
                 SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::bytea[], $4::uuid[], $5::bytea[], $6::int8[], \
                   $7::int2[], $8::bool[], $9::int2[], $10::int8[], $11::int4[], $12::float4[], $13::int8[], $14::bytea[], \
                   $15::jsonb[], $16::jsonb[], $17::jsonb[], $18::int2[], $19::int2[], $20::int2[])), \
             e AS (INSERT INTO events (time, id, dev_eui, application_id, kind, body) \
                 SELECT * FROM UNNEST($21::timestamptz[], $22::uuid[], $23::bytea[], $24::uuid[], $25::text[], $26::jsonb[])), \
             m AS (INSERT INTO measurements (time, dev_eui, application_id, name, kind, value, text_value) \
                 SELECT * FROM UNNEST($27::timestamptz[], $28::bytea[], $29::uuid[], $30::text[], $31::text[], \
                   $32::float8[], $33::text[])) \
             SELECT count(*) FROM no_flush_wait";
        // The same, and the hourly rollup (not where TimescaleDB's continuous aggregate
        // takes its place).
        static WITH_ROLLUP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            SQL.replace(
                " SELECT count(*) FROM no_flush_wait",
                &format!(
                    ", h AS (INSERT INTO measurements_hourly (bucket, dev_eui, application_id, name, sum, count, min, max, last, last_time) \
                     SELECT * FROM UNNEST($34::timestamptz[], $35::bytea[], $36::uuid[], $37::text[], $38::float8[], $39::int8[], \
                       $40::float8[], $41::float8[], $42::float8[], $43::timestamptz[]) {}) \
                     SELECT count(*) FROM no_flush_wait",
                    s::hourly_upsert("least", "greatest")
                ),
            )
        });
        let u = uplinks;
        let m = s::measurement_rows(uplinks);
        let query = sqlx::query(if self.hourly_rollup { WITH_ROLLUP.as_str() } else { SQL })
            .bind(u.iter().map(|r| s::ts(r.time)).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.deduplication_id).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.dev_eui.0.to_vec()).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.application_id).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.dev_addr.0.to_vec()).collect::<Vec<_>>())
            .bind(u.iter().map(|r| i64::from(r.f_cnt)).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.f_port.map(i16::from)).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.confirmed).collect::<Vec<_>>())
            .bind(u.iter().map(|r| i16::from(r.dr)).collect::<Vec<_>>())
            .bind(u.iter().map(|r| i64::from(r.frequency)).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.rssi).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.snr).collect::<Vec<_>>())
            .bind(u.iter().map(|r| i64::from(r.gateway_count)).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.data.as_slice()).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.object.as_ref().map(Json)).collect::<Vec<_>>())
            .bind(u.iter().map(|r| Json(&r.rx_info)).collect::<Vec<_>>())
            .bind(u.iter().map(|r| Json(&r.tx_info)).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.adr_decision.map(|d| i16::from(d.dr))).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.adr_decision.map(|d| i16::from(d.tx_power_index))).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.adr_decision.map(|d| i16::from(d.nb_trans))).collect::<Vec<_>>())
            .bind(events.iter().map(|e| s::ts(e.time)).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.dev_eui.0.to_vec()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.application_id).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| Json(&e.body)).collect::<Vec<_>>())
            .bind(m.iter().map(|(u, _)| s::ts(u.time)).collect::<Vec<_>>())
            .bind(m.iter().map(|(u, _)| u.dev_eui.0.to_vec()).collect::<Vec<_>>())
            .bind(m.iter().map(|(u, _)| u.application_id).collect::<Vec<_>>())
            .bind(m.iter().map(|(_, x)| x.name.as_str()).collect::<Vec<_>>())
            .bind(m.iter().map(|(_, x)| x.kind.as_str()).collect::<Vec<_>>())
            .bind(m.iter().map(|(_, x)| s::measurement_number(x)).collect::<Vec<_>>())
            .bind(m.iter().map(|(_, x)| s::measurement_text(x)).collect::<Vec<_>>());
        let query = if self.hourly_rollup {
            let h = s::hourly_rows(uplinks);
            query
                .bind(h.iter().map(|r| r.hour.bucket).collect::<Vec<_>>())
                .bind(h.iter().map(|r| r.dev_eui.0.to_vec()).collect::<Vec<_>>())
                .bind(h.iter().map(|r| r.application_id).collect::<Vec<_>>())
                .bind(h.iter().map(|r| r.name).collect::<Vec<_>>())
                .bind(h.iter().map(|r| r.hour.sum).collect::<Vec<_>>())
                .bind(h.iter().map(|r| r.hour.count as i64).collect::<Vec<_>>())
                .bind(h.iter().map(|r| r.hour.min).collect::<Vec<_>>())
                .bind(h.iter().map(|r| r.hour.max).collect::<Vec<_>>())
                .bind(h.iter().map(|r| r.hour.last).collect::<Vec<_>>())
                .bind(h.iter().map(|r| r.hour.last_time).collect::<Vec<_>>())
        } else {
            query
        };
        query.execute(&self.pool).await.map_err(s::db_err)?;
        Ok(())
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
    Ok((Store { pool, hourly_rollup: !timescale }, timescale))
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
    for (table, segment_by) in HYPERTABLES {
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
                     timescaledb.compress_segmentby = '{segment_by}', timescaledb.compress_orderby = 'time DESC')"
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
    // The plain rollup table of the migrations gives way to the continuous aggregate, which
    // is then filled once from every stored value (its policy only refreshes recent hours).
    // An aggregate made before it had `last_time` is made again the same way.
    let plain_rollup: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'measurements_hourly'")
            .fetch_optional(pool)
            .await?;
    let current: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() \
         AND table_name = 'measurements_hourly' AND column_name = 'last_time'",
    )
    .fetch_optional(pool)
    .await?;
    if plain_rollup.is_some() || current.is_none() {
        let drop =
            if plain_rollup.is_some() { "DROP TABLE measurements_hourly" } else { "DROP MATERIALIZED VIEW IF EXISTS measurements_hourly" };
        sqlx::query(drop).execute(pool).await?;
        sqlx::query(MEASUREMENTS_HOURLY).execute(pool).await?;
        sqlx::query("CALL refresh_continuous_aggregate('measurements_hourly', NULL, NULL)").execute(pool).await?;
    }
    sqlx::query(MEASUREMENTS_HOURLY_POLICY).execute(pool).await?;
    info!(
        compress_after_days = cfg.compress_after_days,
        retention_days = cfg.retention_days,
        "TimescaleDB enabled for uplinks, events and measurements (hourly continuous aggregate measurements_hourly)"
    );
    Ok(true)
}
