//! Batched writer of uplink and event rows (DESIGN.md §6: never one commit per uplink).
//!
//! Producers hand rows to a [`HistoryHandle`], which never waits: rows go into a bounded
//! buffer (`history_buffer` rows) and are dropped, counted and warned about only when it is
//! full. One task takes them out in batches (up to `history_batch_size` rows, or whatever
//! arrived within `history_batch_interval_ms` of the first) and writes each batch with one
//! `insert_uplinks` and/or one `insert_events` call. When the database is down the batch is
//! kept and retried with backoff while new rows wait in the buffer, so MQTT delivery never
//! waits for the database. A row the database refuses by itself (a constraint, bad data) is
//! found by writing the failed batch row by row, and only that row is dropped.
//! At shutdown the writer keeps writing until its producers are gone, for at most
//! `history_flush_timeout_ms`.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use loraflow_network_server::storage::{EventRecord, HistoryRepo, StorageError, UplinkRecord};

use super::config::IntegrationConfig;
use super::metrics::IntegrationMetrics;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A write that takes longer is treated as failed (and retried): a half-open connection
/// must not stall the writer for the pool's own (longer) timeouts.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const DROP_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// One row for the history tables.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryRow {
    Uplink(UplinkRecord),
    Event(EventRecord),
}

/// Hands rows to the writer. Cheap to clone; the writer stops once every clone is dropped
/// (or shutdown's flush timeout runs out).
#[derive(Clone)]
pub struct HistoryHandle {
    tx: mpsc::Sender<HistoryRow>,
    metrics: IntegrationMetrics,
    drop_warning: Arc<DropWarning>,
}

impl HistoryHandle {
    /// Queues a row; never waits. Returns false when the buffer is full and the row was
    /// dropped (counted in `loraflow_history_dropped_total{reason="buffer_full"}`).
    pub fn push(&self, row: HistoryRow) -> bool {
        // Counted before the writer can see it, so the gauge never goes below zero.
        self.metrics.history_buffer_depth.inc();
        match self.tx.try_send(row) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The writer gave up at shutdown; it has reported that already.
                self.metrics.history_buffer_depth.dec();
                self.metrics.history_dropped.with_label_values(&["shutdown"]).inc();
                false
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.history_buffer_depth.dec();
                self.metrics.history_dropped.with_label_values(&["buffer_full"]).inc();
                if let Some(suppressed) = self.drop_warning.allow() {
                    warn!(
                        buffer = self.tx.max_capacity(),
                        dropped_since_last_warning = suppressed,
                        "history buffer full (database down or too slow? see integration.history_buffer), \
                         dropping uplink/event rows"
                    );
                }
                false
            }
        }
    }
}

/// At most one warning per interval, counting what it kept quiet about.
struct DropWarning {
    start: std::time::Instant,
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl DropWarning {
    fn new() -> Self {
        DropWarning { start: std::time::Instant::now(), last_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    fn allow(&self) -> Option<u64> {
        // +1 so that 0 keeps meaning "never warned".
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        if (last == 0 || now >= last + DROP_WARN_INTERVAL.as_millis() as u64)
            && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The task that writes the rows; run it with [`HistoryWriter::run`].
pub struct HistoryWriter {
    rx: mpsc::Receiver<HistoryRow>,
    repo: Arc<dyn HistoryRepo>,
    batch_size: usize,
    batch_interval: Duration,
    flush_timeout: Duration,
    metrics: IntegrationMetrics,
}

impl HistoryWriter {
    pub fn new(repo: Arc<dyn HistoryRepo>, config: &IntegrationConfig, metrics: IntegrationMetrics) -> (HistoryHandle, HistoryWriter) {
        let (tx, rx) = mpsc::channel(config.history_buffer.max(1));
        let handle = HistoryHandle { tx, metrics: metrics.clone(), drop_warning: Arc::new(DropWarning::new()) };
        let writer = HistoryWriter {
            rx,
            repo,
            batch_size: config.history_batch_size.max(1),
            batch_interval: Duration::from_millis(config.history_batch_interval_ms),
            flush_timeout: Duration::from_millis(config.history_flush_timeout_ms),
            metrics,
        };
        (handle, writer)
    }

    /// Writes until every [`HistoryHandle`] is dropped and the buffer is empty. Once
    /// `shutdown` is cancelled, gives up after the flush timeout, counting what is left
    /// as dropped.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut stop = Stop { token: shutdown, flush_timeout: self.flush_timeout, deadline: None };
        while let Some(batch) = self.next_batch(&mut stop).await {
            self.write_batch(batch, &mut stop).await;
        }
        let left = self.rx.len();
        if left > 0 {
            self.rx.close();
            self.give_up(left, "shutdown");
        }
    }

    /// The next batch, or `None` when the producers are gone and the buffer is empty, or
    /// the shutdown deadline has passed.
    async fn next_batch(&mut self, stop: &mut Stop) -> Option<Vec<HistoryRow>> {
        let first = stop.guard(self.rx.recv()).await??;
        let mut batch = Vec::with_capacity(self.batch_size.min(1024));
        batch.push(first);
        let fill_until = Instant::now() + self.batch_interval;
        while batch.len() < self.batch_size {
            match self.rx.try_recv() {
                Ok(row) => {
                    batch.push(row);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            // Shutting down: write what is there instead of waiting for more.
            if stop.deadline.is_some() {
                break;
            }
            match stop.guard(tokio::time::timeout_at(fill_until, self.rx.recv())).await {
                Some(Ok(Some(row))) => batch.push(row),
                _ => break,
            }
        }
        Some(batch)
    }

    async fn write_batch(&mut self, batch: Vec<HistoryRow>, stop: &mut Stop) {
        let mut uplinks = Vec::new();
        let mut events = Vec::new();
        for row in batch {
            match row {
                HistoryRow::Uplink(u) => uplinks.push(u),
                HistoryRow::Event(e) => events.push(e),
            }
        }
        let mut parts = VecDeque::new();
        if !uplinks.is_empty() {
            parts.push_back(Part::Uplinks(uplinks));
        }
        if !events.is_empty() {
            parts.push_back(Part::Events(events));
        }
        self.write_parts(parts, stop).await;
    }

    /// Writes each part in order, retrying transient failures with backoff. A part the
    /// database refuses for its content is split into single rows to find the bad one.
    async fn write_parts(&mut self, mut parts: VecDeque<Part>, stop: &mut Stop) {
        let mut backoff = BACKOFF_MIN;
        let mut failing_since: Option<Instant> = None;
        while let Some(part) = parts.front() {
            let started = Instant::now();
            let result = stop.guard(async {
                match timeout(WRITE_TIMEOUT, part.insert(&*self.repo)).await {
                    Ok(r) => r.map_err(WriteError::Storage),
                    Err(_) => Err(WriteError::TimedOut),
                }
            });
            let Some(result) = result.await else {
                let left = parts.iter().map(Part::len).sum();
                self.give_up(left, "shutdown");
                return;
            };
            match result {
                Ok(()) => {
                    let n = part.len();
                    self.metrics.history_write_seconds.observe(started.elapsed().as_secs_f64());
                    self.metrics.history_batch_size.observe(n as f64);
                    self.metrics.history_buffer_depth.sub(n as i64);
                    parts.pop_front();
                    backoff = BACKOFF_MIN;
                    if let Some(since) = failing_since.take() {
                        info!(
                            outage_secs = since.elapsed().as_secs_f64(),
                            buffered = self.rx.len(),
                            "history writes to the database resumed"
                        );
                    }
                }
                Err(WriteError::Storage(e)) if is_permanent(&e) => {
                    let part = parts.pop_front().expect("front exists");
                    if part.len() > 1 {
                        for single in part.into_singles().into_iter().rev() {
                            parts.push_front(single);
                        }
                    } else {
                        error!(kind = part.kind(), error = %e, "database refused a history row; row dropped");
                        self.metrics.history_buffer_depth.dec();
                        self.metrics.history_dropped.with_label_values(&["rejected"]).inc();
                    }
                }
                Err(e) => {
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        warn!(
                            error = %e,
                            rows = part.len(),
                            buffered = self.rx.len(),
                            "history write failed; keeping the rows and retrying"
                        );
                    }
                    if stop.guard(sleep(backoff)).await.is_none() {
                        let left = parts.iter().map(Part::len).sum();
                        self.give_up(left, "shutdown");
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn give_up(&self, rows: usize, reason: &'static str) {
        if rows == 0 {
            return;
        }
        error!(rows, "history flush timed out at shutdown; rows not written");
        self.metrics.history_buffer_depth.sub(rows as i64);
        self.metrics.history_dropped.with_label_values(&[reason]).inc_by(rows as u64);
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Storage(StorageError),
    #[error("database write took longer than {} s", WRITE_TIMEOUT.as_secs())]
    TimedOut,
}

/// Errors that retrying cannot fix because they are about the rows themselves; everything
/// else (connection refused or lost, pool timeout, database not accepting connections,
/// disk full…) is treated as an outage and retried.
fn is_permanent(e: &StorageError) -> bool {
    match e {
        StorageError::AlreadyExists | StorageError::Conflict(_) | StorageError::NotFound => true,
        StorageError::Db(sqlx::Error::Database(db)) => {
            use sqlx::error::ErrorKind;
            match db.kind() {
                ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation | ErrorKind::NotNullViolation | ErrorKind::CheckViolation => {
                    true
                }
                // PostgreSQL class 22: data exception (value out of range, bad encoding…).
                _ => db.code().is_some_and(|c| c.starts_with("22")),
            }
        }
        StorageError::Db(sqlx::Error::Encode(_)) => true,
        _ => false,
    }
}

enum Part {
    Uplinks(Vec<UplinkRecord>),
    Events(Vec<EventRecord>),
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Uplinks(r) => r.len(),
            Part::Events(r) => r.len(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Part::Uplinks(_) => "uplink",
            Part::Events(_) => "event",
        }
    }

    async fn insert(&self, repo: &dyn HistoryRepo) -> Result<(), StorageError> {
        match self {
            Part::Uplinks(r) => repo.insert_uplinks(r).await,
            Part::Events(r) => repo.insert_events(r).await,
        }
    }

    fn into_singles(self) -> Vec<Part> {
        match self {
            Part::Uplinks(r) => r.into_iter().map(|x| Part::Uplinks(vec![x])).collect(),
            Part::Events(r) => r.into_iter().map(|x| Part::Events(vec![x])).collect(),
        }
    }
}

/// Shutdown as seen by the writer: cancellation starts the flush deadline; only the
/// deadline interrupts work.
struct Stop {
    token: CancellationToken,
    flush_timeout: Duration,
    deadline: Option<Instant>,
}

impl Stop {
    /// `None` when the shutdown deadline passed before `f` completed.
    async fn guard<F: Future>(&mut self, f: F) -> Option<F::Output> {
        tokio::pin!(f);
        loop {
            match self.deadline {
                None => tokio::select! {
                    biased;
                    out = &mut f => return Some(out),
                    _ = self.token.cancelled() => {
                        self.deadline = Some(Instant::now() + self.flush_timeout);
                    }
                },
                Some(deadline) => tokio::select! {
                    biased;
                    out = &mut f => return Some(out),
                    _ = sleep_until(deadline) => return None,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use loraflow_network_server::storage::{self, DatabaseConfig, Storage};
    use loraflow_network_server::types::Eui64;
    use uuid::Uuid;

    use super::*;

    fn metrics() -> IntegrationMetrics {
        IntegrationMetrics::register(&prometheus::Registry::new()).unwrap()
    }

    fn config() -> IntegrationConfig {
        IntegrationConfig { history_batch_interval_ms: 20, ..IntegrationConfig::default() }
    }

    fn event(dev_eui: Eui64, app: Uuid, n: u32) -> HistoryRow {
        HistoryRow::Event(EventRecord {
            id: Uuid::new_v4(),
            time: Utc::now(),
            dev_eui,
            application_id: app,
            kind: "log".into(),
            body: serde_json::json!({"n": n}),
        })
    }

    /// Records every call; fails the first `fail_first` calls with a connection error.
    #[derive(Default)]
    struct FakeRepo {
        calls: Mutex<Vec<usize>>,
        fail_first: Mutex<usize>,
        /// Refuses (as a content error) every batch holding the event with this `n`.
        refuse: Option<u32>,
    }

    #[async_trait]
    impl HistoryRepo for FakeRepo {
        async fn insert_uplinks(&self, rows: &[UplinkRecord]) -> storage::Result<()> {
            self.record(rows.len())
        }
        async fn insert_events(&self, rows: &[EventRecord]) -> storage::Result<()> {
            if let Some(bad) = self.refuse {
                if rows.iter().any(|r| r.body["n"] == bad) {
                    return Err(StorageError::Conflict("refused".into()));
                }
            }
            self.record(rows.len())
        }
        async fn list_uplinks(&self, _: Eui64, _: Option<DateTime<Utc>>, _: u32) -> storage::Result<Vec<UplinkRecord>> {
            Ok(vec![])
        }
        async fn list_events(&self, _: Eui64, _: Option<DateTime<Utc>>, _: u32) -> storage::Result<Vec<EventRecord>> {
            Ok(vec![])
        }
    }

    impl FakeRepo {
        fn record(&self, n: usize) -> storage::Result<()> {
            let mut fail = self.fail_first.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(StorageError::Db(sqlx::Error::PoolTimedOut));
            }
            self.calls.lock().unwrap().push(n);
            Ok(())
        }
    }

    #[tokio::test]
    async fn rows_pushed_together_are_written_in_one_batch() {
        let repo = Arc::new(FakeRepo::default());
        let m = metrics();
        let (handle, writer) = HistoryWriter::new(repo.clone(), &config(), m.clone());
        for n in 0..120 {
            assert!(handle.push(event(Eui64::default(), Uuid::nil(), n)));
        }
        drop(handle);
        writer.run(CancellationToken::new()).await;
        assert_eq!(*repo.calls.lock().unwrap(), vec![120]);
        assert_eq!(m.history_buffer_depth.get(), 0);
        assert_eq!(m.history_batch_size.get_sample_count(), 1);
    }

    #[tokio::test]
    async fn batches_are_capped_at_the_batch_size() {
        let repo = Arc::new(FakeRepo::default());
        let cfg = IntegrationConfig { history_batch_size: 50, ..config() };
        let (handle, writer) = HistoryWriter::new(repo.clone(), &cfg, metrics());
        for n in 0..120 {
            handle.push(event(Eui64::default(), Uuid::nil(), n));
        }
        drop(handle);
        writer.run(CancellationToken::new()).await;
        assert_eq!(*repo.calls.lock().unwrap(), vec![50, 50, 20]);
    }

    #[tokio::test]
    async fn a_full_buffer_drops_new_rows_and_counts_them() {
        let repo = Arc::new(FakeRepo::default());
        let m = metrics();
        let cfg = IntegrationConfig { history_buffer: 3, ..config() };
        let (handle, writer) = HistoryWriter::new(repo.clone(), &cfg, m.clone());
        let accepted: Vec<bool> = (0..5).map(|n| handle.push(event(Eui64::default(), Uuid::nil(), n))).collect();
        assert_eq!(accepted, vec![true, true, true, false, false]);
        assert_eq!(m.history_dropped.with_label_values(&["buffer_full"]).get(), 2);
        assert_eq!(m.history_buffer_depth.get(), 3);
        drop(handle);
        writer.run(CancellationToken::new()).await;
        assert_eq!(*repo.calls.lock().unwrap(), vec![3]);
    }

    #[tokio::test]
    async fn failed_writes_are_retried_until_the_database_answers() {
        let repo = Arc::new(FakeRepo { fail_first: Mutex::new(3), ..FakeRepo::default() });
        let m = metrics();
        let (handle, writer) = HistoryWriter::new(repo.clone(), &config(), m.clone());
        for n in 0..10 {
            handle.push(event(Eui64::default(), Uuid::nil(), n));
        }
        drop(handle);
        writer.run(CancellationToken::new()).await;
        assert_eq!(*repo.calls.lock().unwrap(), vec![10]);
        assert_eq!(m.history_dropped.with_label_values(&["shutdown"]).get(), 0);
        assert_eq!(m.history_buffer_depth.get(), 0);
    }

    #[tokio::test]
    async fn shutdown_gives_up_after_the_flush_timeout_when_the_database_stays_down() {
        let repo = Arc::new(FakeRepo { fail_first: Mutex::new(usize::MAX), ..FakeRepo::default() });
        let m = metrics();
        let cfg = IntegrationConfig { history_flush_timeout_ms: 300, ..config() };
        let (handle, writer) = HistoryWriter::new(repo.clone(), &cfg, m.clone());
        for n in 0..4 {
            handle.push(event(Eui64::default(), Uuid::nil(), n));
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(writer.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        shutdown.cancel();
        // The handle is still alive: the deadline alone must end the writer.
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("writer stopped").unwrap();
        assert!(started.elapsed() < Duration::from_millis(1500));
        assert_eq!(m.history_dropped.with_label_values(&["shutdown"]).get(), 4);
        assert_eq!(m.history_buffer_depth.get(), 0);
        drop(handle);
    }

    // ---- real databases ----

    async fn device_in(storage: &Storage) -> (Eui64, Uuid) {
        let ctx = super::super::testing::insert_device(storage).await;
        (ctx.device.dev_eui, ctx.device.application_id)
    }

    async fn rows_arrive_in(storage: Storage) {
        let (dev_eui, app) = device_in(&storage).await;
        let m = metrics();
        let (handle, writer) = HistoryWriter::new(storage.history.clone(), &config(), m.clone());
        let task = tokio::spawn(writer.run(CancellationToken::new()));
        for n in 0..30 {
            handle.push(event(dev_eui, app, n));
            handle.push(HistoryRow::Uplink(super::super::testing::uplink_record(dev_eui, app, n)));
        }
        drop(handle);
        task.await.unwrap();
        let events = storage.history.list_events(dev_eui, None, 100).await.unwrap();
        let uplinks = storage.history.list_uplinks(dev_eui, None, 100).await.unwrap();
        assert_eq!(events.len(), 30);
        assert_eq!(uplinks.len(), 30);
        // 60 rows, written in far fewer calls than rows.
        assert!(m.history_batch_size.get_sample_count() <= 4, "{}", m.history_batch_size.get_sample_count());
        assert_eq!(m.history_buffer_depth.get(), 0);
    }

    #[tokio::test]
    async fn rows_arrive_in_sqlite_in_batches() {
        let dir = super::super::testing::TempDir::new();
        let storage = Storage::connect(&DatabaseConfig { url: storage::testing::temp_sqlite_url(dir.path()), ..DatabaseConfig::default() })
            .await
            .unwrap();
        rows_arrive_in(storage.clone()).await;
        storage.close().await;
    }

    #[tokio::test]
    async fn rows_arrive_in_postgres_in_batches() {
        let url = storage::testing::fresh_postgres_url().await;
        let storage = Storage::connect(&DatabaseConfig { url: url.clone(), ..DatabaseConfig::default() }).await.unwrap();
        rows_arrive_in(storage.clone()).await;
        storage.close().await;
        storage::testing::drop_postgres_database(&url).await;
    }

    async fn admin(sql: &str) {
        use sqlx::{Connection, Executor};
        let mut c = sqlx::PgConnection::connect(&storage::testing::test_postgres_server_url()).await.unwrap();
        c.execute(sql).await.unwrap();
        let _ = c.close().await;
    }

    #[tokio::test]
    async fn rows_written_during_a_postgres_outage_arrive_after_it() {
        let url = storage::testing::fresh_postgres_url().await;
        let name = url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
        let storage = Storage::connect(&DatabaseConfig { url: url.clone(), ..DatabaseConfig::default() }).await.unwrap();
        let (dev_eui, app) = device_in(&storage).await;
        let m = metrics();
        let (handle, writer) = HistoryWriter::new(storage.history.clone(), &config(), m.clone());
        let task = tokio::spawn(writer.run(CancellationToken::new()));

        admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
        admin(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"))
            .await;
        for n in 0..20 {
            assert!(handle.push(event(dev_eui, app, n)));
        }
        // Long enough for several failed attempts.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(m.history_buffer_depth.get(), 20, "rows must be kept during the outage");
        assert_eq!(m.history_batch_size.get_sample_count(), 0);

        admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
        drop(handle);
        tokio::time::timeout(Duration::from_secs(20), task).await.expect("writer finished").unwrap();
        let events = storage.history.list_events(dev_eui, None, 100).await.unwrap();
        assert_eq!(events.len(), 20);
        assert_eq!(m.history_buffer_depth.get(), 0);
        assert_eq!(m.history_dropped.with_label_values(&["rejected"]).get(), 0);
        storage.close().await;
        storage::testing::drop_postgres_database(&url).await;
    }

    #[tokio::test]
    async fn a_row_the_database_refuses_is_dropped_alone() {
        let repo = Arc::new(FakeRepo { refuse: Some(2), ..FakeRepo::default() });
        let m = metrics();
        let (handle, writer) = HistoryWriter::new(repo.clone(), &config(), m.clone());
        for n in 0..5 {
            handle.push(event(Eui64::default(), Uuid::nil(), n));
        }
        drop(handle);
        tokio::time::timeout(Duration::from_secs(5), writer.run(CancellationToken::new())).await.unwrap();
        // The batch of 5 is refused, then written row by row: 4 single rows get through.
        assert_eq!(*repo.calls.lock().unwrap(), vec![1, 1, 1, 1]);
        assert_eq!(m.history_dropped.with_label_values(&["rejected"]).get(), 1);
        assert_eq!(m.history_buffer_depth.get(), 0);
    }
}
