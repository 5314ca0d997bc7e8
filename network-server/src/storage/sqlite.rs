//! SQLite backend. The repository SQL shared with PostgreSQL is in `sql.rs`; this file
//! holds what only SQLite does.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, Sqlite, Transaction};

use super::sql::{self as s, SeenTable, Store};
use super::{DatabaseConfig, EventRecord, Result, StorageError, UplinkRecord};
use crate::types::Eui64;

super::sql::impl_repos!(sqlx::Sqlite);

impl Store<Sqlite> {
    /// `BEGIN IMMEDIATE` takes the write lock at the start. A deferred transaction that
    /// upgrades from reading to writing fails with SQLITE_BUSY at once instead of waiting
    /// out busy_timeout, so every writing transaction starts this way.
    pub(crate) async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// One writer: a second history transaction would only wait in SQLite's busy handler.
    pub(crate) const HISTORY_CONCURRENT_WRITES: usize = 1;

    /// The `level` of an event's JSON text body.
    pub(crate) const LEVEL_OF_BODY: &'static str = "json_extract(body, '$.level')";

    /// The single writer lock is shared with the frame-counter compare-and-sets, so the
    /// whole transaction (`BEGIN IMMEDIATE`, one multi-row INSERT per table and 500 rows,
    /// `COMMIT`) is ONE call to the connection's thread: the arguments (JSON included) are
    /// encoded before it and the statements prepared before it, so the lock is held only
    /// while SQLite runs the inserts, never across a wake-up of an async task.
    ///
    /// The call runs in a task of its own: a caller that gives up waiting (write timeout,
    /// shutdown) must not stop it between BEGIN and COMMIT, which would return a connection
    /// holding the write lock to the pool. A failed statement is rolled back before the
    /// connection goes back. In WAL mode with `synchronous = NORMAL` the commit does not wait
    /// for the disk and survives a crash of the process (not of the machine).
    pub(crate) async fn insert_history_batch(&self, uplinks: &[UplinkRecord], events: &[EventRecord]) -> Result<()> {
        // Every value is bound owned (JSON as the text sqlx would store for it), so the
        // query can move into the task; `?` placeholders are numbered per statement, so no
        // statement of the text exceeds SQLite's variable limit.
        let mut qb = sqlx::QueryBuilder::<'static, Sqlite>::new("BEGIN IMMEDIATE; ");
        for chunk in uplinks.chunks(s::INSERT_CHUNK) {
            qb.push(
                "INSERT INTO uplinks (time, deduplication_id, dev_eui, application_id, dev_addr, f_cnt, \
                 f_port, confirmed, dr, frequency, rssi, snr, gateway_count, data, object, rx_info, tx_info, \
                 adr_dr, adr_tx_power_index, adr_nb_trans) ",
            );
            qb.push_values(chunk, |mut b, u| {
                b.push_bind(s::ts(u.time))
                    .push_bind(u.deduplication_id)
                    .push_bind(u.dev_eui.0.to_vec())
                    .push_bind(u.application_id)
                    .push_bind(u.dev_addr.0.to_vec())
                    .push_bind(i64::from(u.f_cnt))
                    .push_bind(u.f_port.map(i16::from))
                    .push_bind(u.confirmed)
                    .push_bind(i16::from(u.dr))
                    .push_bind(i64::from(u.frequency))
                    .push_bind(u.rssi)
                    .push_bind(u.snr)
                    .push_bind(i64::from(u.gateway_count))
                    .push_bind(u.data.clone())
                    .push_bind(u.object.as_ref().map(|o| o.to_string()))
                    .push_bind(u.rx_info.to_string())
                    .push_bind(u.tx_info.to_string())
                    .push_bind(u.adr_decision.map(|d| i16::from(d.dr)))
                    .push_bind(u.adr_decision.map(|d| i16::from(d.tx_power_index)))
                    .push_bind(u.adr_decision.map(|d| i16::from(d.nb_trans)));
            });
            qb.push("; ");
        }
        for chunk in events.chunks(s::INSERT_CHUNK) {
            qb.push("INSERT INTO events (time, id, dev_eui, application_id, kind, body) ");
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(s::ts(e.time))
                    .push_bind(e.id)
                    .push_bind(e.dev_eui.0.to_vec())
                    .push_bind(e.application_id)
                    .push_bind(e.kind.clone())
                    .push_bind(e.body.to_string());
            });
            qb.push("; ");
        }
        for chunk in s::measurement_rows(uplinks).chunks(s::INSERT_CHUNK) {
            qb.push("INSERT INTO measurements (time, dev_eui, application_id, name, kind, value, text_value) ");
            qb.push_values(chunk, |mut b, (u, m)| {
                b.push_bind(s::ts(u.time))
                    .push_bind(u.dev_eui.0.to_vec())
                    .push_bind(u.application_id)
                    .push_bind(m.name.clone())
                    .push_bind(m.kind.as_str())
                    .push_bind(s::measurement_number(m))
                    .push_bind(s::measurement_text(m).map(str::to_string));
            });
            qb.push("; ");
        }
        if self.hourly_rollup {
            let hours = s::hourly_rows(uplinks);
            for chunk in hours.chunks(s::INSERT_CHUNK) {
                qb.push("INSERT INTO measurements_hourly (bucket, dev_eui, application_id, name, sum, count, min, max, last, last_time) ");
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.hour.bucket)
                        .push_bind(r.dev_eui.0.to_vec())
                        .push_bind(r.application_id)
                        .push_bind(r.name.to_string())
                        .push_bind(r.hour.sum)
                        .push_bind(r.hour.count as i64)
                        .push_bind(r.hour.min)
                        .push_bind(r.hour.max)
                        .push_bind(r.hour.last)
                        .push_bind(r.hour.last_time);
                });
                qb.push(" ");
                qb.push(s::hourly_upsert("min", "max"));
                qb.push("; ");
            }
        }
        qb.push("COMMIT");
        let pool = self.pool.clone();
        let write = tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            // Parsed outside the lock (a cached statement is found at once).
            conn.prepare(qb.sql()).await?;
            let result = qb.build().execute(&mut *conn).await.map(|_| ());
            if result.is_err() {
                // Before BEGIN (busy) or after COMMIT there is no transaction and the
                // ROLLBACK fails harmlessly; if it fails otherwise the connection may still
                // hold the lock: close it rather than return it.
                if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                    if !e.to_string().contains("no transaction is active") {
                        conn.close_on_drop();
                    }
                }
            }
            result
        });
        match write.await {
            Ok(r) => r.map_err(s::db_err),
            Err(e) => {
                Err(StorageError::Db(sqlx::Error::WorkerCrashed)).inspect_err(|_| tracing::error!(error = %e, "history write task failed"))
            }
        }
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
    Ok(Store { pool, hourly_rollup: true })
}
