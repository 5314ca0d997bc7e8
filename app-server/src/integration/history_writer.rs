//! The gate between the integration and MQTT: rows for the history tables and the events
//! they belong to go in together, and an event is published only once its row is stored,
//! so an event a subscriber has seen is in the stored history after a crash.
//!
//! Group commit (DESIGN.md §6: never one commit per uplink): one task gathers what arrives
//! into batches (up to `history_batch_size` rows) and writes each batch, uplink and event
//! rows together, in ONE transaction (`HistoryRepo::insert_history`), then publishes that
//! batch's messages in the order they were handed over. A batch starts at most
//! `integration.history_gather_ms` after the previous write started (default 0: at once):
//! after a fast commit the next batch gathers for the rest of that period, after a slow one
//! it starts at once, and an isolated row (or the first one) never waits. Up to `HistoryRepo::concurrent_writes()` batches are
//! written at once (the next one while the previous commits); their messages still leave
//! strictly in batch order, so events leave in arrival order, per device too.
//!
//! The database never holds MQTT up for long: when a write fails, or has not committed
//! after `history_batch_interval_ms`, its messages are published anyway, and until a write
//! succeeds again new messages are published as they arrive while their rows wait in
//! memory (`pending`) and are retried with backoff. Only a crash during such an outage can
//! lose those rows (`loraflow_history_buffer_depth` shows how many). Rows waiting in total
//! are bounded by `history_buffer`: beyond it a row is dropped and counted (its event is
//! still published). A row the database refuses by itself (a constraint, bad data) is found
//! by writing the failed batch row by row, and only that row is dropped.
//! At shutdown the writer keeps writing until its producers are gone, for at most
//! `history_flush_timeout_ms`; what it gives up on is still published.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use loraflow_network_server::storage::{EventRecord, HistoryRepo, StorageError, UplinkRecord};
use loraflow_network_server::types::Eui64;
use loraflow_packet_forwarder::log_limit::LogLimiter;

use super::config::IntegrationConfig;
use super::metrics::IntegrationMetrics;
use super::EventPublisher;

/// A row the database refuses (e.g. a value it cannot store) is refused again for every
/// similar event: one line per interval, each row counted in `loraflow_history_dropped_total`.
static REFUSED_ROW_WARNING: std::sync::LazyLock<LogLimiter> = std::sync::LazyLock::new(|| LogLimiter::new(Duration::from_secs(10)));

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

/// An MQTT message to publish once the rows handed over with it (and before it) are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Event kind (up, join, log…), for `loraflow_events_published_total` and the live feeds.
    pub kind: &'static str,
    /// The device the event is about (the live feed of its watchers).
    pub dev_eui: Eui64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What producers hand over, in order.
struct Entry {
    row: Option<HistoryRow>,
    message: Option<Message>,
}

/// Hands rows and messages to the writer. Cheap to clone; the writer stops once every
/// clone is dropped (or shutdown's flush timeout runs out).
#[derive(Clone)]
pub struct HistoryHandle {
    // Unbounded on purpose: messages must never be refused here (that would either drop an
    // event or let it overtake older ones). Rows are bounded by `limit`; messages are drained
    // at once whenever the database is slow or down, so they cannot pile up.
    tx: mpsc::UnboundedSender<Entry>,
    publisher: Arc<dyn EventPublisher>,
    limit: usize,
    metrics: IntegrationMetrics,
    drop_warning: Arc<DropWarning>,
}

impl HistoryHandle {
    /// Queues a row with no message; never waits. Returns false when the row was dropped
    /// (counted in `loraflow_history_dropped_total`).
    pub fn push(&self, row: HistoryRow) -> bool {
        self.submit(Some(row), None)
    }

    /// Queues `row` and then `message`, which is published once the row is stored (or the
    /// database is found slow or down). Never waits. Returns false when the row was dropped:
    /// the buffer holds `history_buffer` rows (`reason="buffer_full"`) or the writer has
    /// stopped (`reason="shutdown"`, and the message is published at once).
    pub fn submit(&self, row: Option<HistoryRow>, message: Option<Message>) -> bool {
        let had_row = row.is_some();
        let row = row.filter(|_| {
            if self.metrics.history_buffer_depth.get() >= self.limit as i64 {
                self.buffer_full();
                return false;
            }
            // Counted before the writer can see it, so the gauge never goes below zero.
            self.metrics.history_buffer_depth.inc();
            true
        });
        let row_kept = row.is_some();
        if let Err(mpsc::error::SendError(entry)) = self.tx.send(Entry { row, message }) {
            // The writer gave up at shutdown; it has reported that already.
            if row_kept {
                self.metrics.history_buffer_depth.dec();
                self.metrics.history_dropped.with_label_values(&["shutdown"]).inc();
            }
            if let Some(m) = entry.message {
                publish(&*self.publisher, &self.metrics, m);
            }
            return false;
        }
        !had_row || row_kept
    }

    fn buffer_full(&self) {
        self.metrics.history_dropped.with_label_values(&["buffer_full"]).inc();
        if let Some(suppressed) = self.drop_warning.allow() {
            warn!(
                buffer = self.limit,
                dropped_since_last_warning = suppressed,
                "history buffer full (database down or too slow? see integration.history_buffer), \
                 dropping uplink/event rows (their events are still published)"
            );
        }
    }
}

/// Publishes one message and counts it when the transport took it (a refusal is counted
/// and reported by the transport).
fn publish(publisher: &dyn EventPublisher, metrics: &IntegrationMetrics, m: Message) {
    let kind = m.kind;
    if publisher.publish(m).is_ok() {
        metrics.events_published.with_label_values(&[kind]).inc();
        if kind == "up" {
            metrics.uplinks_published.inc();
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

/// A database outage as the writer sees it: since when, and when to try again.
struct Outage {
    since: Instant,
    backoff: Duration,
    next_try: Instant,
}

/// When the gathered batch may start its write (pure).
/// `last_start` is when the previous write started (`None`: none yet); a full batch
/// starts at once.
fn write_start(now: Instant, last_start: Option<Instant>, gathered_rows: usize, batch_size: usize, period: Duration) -> Instant {
    match last_start {
        Some(s) if gathered_rows < batch_size => now.max(s + period),
        _ => now,
    }
}

/// A batch handed to the database, in the order batches were started.
struct Flight {
    id: u64,
    /// Messages not yet published (empty once released).
    messages: Vec<Message>,
    rows: usize,
    /// Rows of this write stored or dropped so far.
    settled: Arc<AtomicUsize>,
    /// When its messages are published even though the write has not finished.
    publish_at: Instant,
    done: bool,
}

/// Batches in flight, oldest first. Their messages leave strictly in this order: a batch
/// that commits before an older one waits for it (pure bookkeeping, no I/O).
#[derive(Default)]
struct Flights {
    queue: VecDeque<Flight>,
    next_id: u64,
}

impl Flights {
    fn start(&mut self, messages: Vec<Message>, rows: usize, publish_at: Instant) -> (u64, Arc<AtomicUsize>) {
        let id = self.next_id;
        self.next_id += 1;
        let settled = Arc::new(AtomicUsize::new(0));
        self.queue.push_back(Flight { id, messages, rows, settled: settled.clone(), publish_at, done: rows == 0 });
        (id, settled)
    }

    /// Marks a write finished and returns the messages now free to leave, in order.
    fn finish(&mut self, id: u64) -> Vec<Message> {
        if let Some(f) = self.queue.iter_mut().find(|f| f.id == id) {
            f.done = true;
        }
        self.ready()
    }

    /// The messages of the finished batches at the front.
    fn ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|f| f.done) {
            out.extend(self.queue.pop_front().expect("front exists").messages);
        }
        out
    }

    /// Every held message, oldest first; the writes go on.
    fn release_all(&mut self) -> Vec<Message> {
        self.queue.iter_mut().flat_map(|f| std::mem::take(&mut f.messages)).collect()
    }

    /// The deadline of the oldest batch still holding messages.
    fn publish_deadline(&self) -> Option<Instant> {
        self.queue.iter().find(|f| !f.messages.is_empty()).map(|f| f.publish_at)
    }

    /// Rows handed to the database and not yet stored or dropped.
    fn unsettled(&self) -> usize {
        self.queue.iter().filter(|f| !f.done).map(|f| f.rows - f.settled.load(Ordering::SeqCst).min(f.rows)).sum()
    }

    fn len(&self) -> usize {
        self.queue.iter().filter(|f| !f.done).count()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The batch being gathered: rows and messages in arrival order.
#[derive(Default)]
struct Gathered {
    rows: Vec<HistoryRow>,
    messages: Vec<Message>,
    entries: usize,
}

impl Gathered {
    fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

type WriteResult = Result<(), (WriteError, Vec<HistoryRow>)>;

/// The task that writes the rows and publishes the messages; run it with
/// [`HistoryWriter::run`].
pub struct HistoryWriter {
    rx: mpsc::UnboundedReceiver<Entry>,
    /// False once every handle is dropped and the queue is empty.
    open: bool,
    repo: Arc<dyn HistoryRepo>,
    publisher: Arc<dyn EventPublisher>,
    batch_size: usize,
    /// Writes in flight at once (the repository says how many are worth it).
    depth: usize,
    gather_period: Duration,
    /// How long a batch's messages wait for its commit before they are published anyway.
    commit_wait: Duration,
    flush_timeout: Duration,
    metrics: IntegrationMetrics,
    /// Rows whose messages were published before they could be stored, oldest first.
    pending: VecDeque<HistoryRow>,
    outage: Option<Outage>,
    /// A write outlived `commit_wait`: until the writes in flight finish, messages are
    /// published as they arrive.
    late: bool,
    gathered: Gathered,
    flights: Flights,
    last_start: Option<Instant>,
}

/// What woke the writer up.
enum Step {
    Written(u64, WriteResult),
    CommitLate,
    Arrived(usize),
    Due,
}

impl HistoryWriter {
    pub fn new(
        repo: Arc<dyn HistoryRepo>,
        publisher: Arc<dyn EventPublisher>,
        config: &IntegrationConfig,
        metrics: IntegrationMetrics,
    ) -> (HistoryHandle, HistoryWriter) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = HistoryHandle {
            tx,
            publisher: publisher.clone(),
            limit: config.history_buffer.max(1),
            metrics: metrics.clone(),
            drop_warning: Arc::new(DropWarning::new()),
        };
        let depth = repo.concurrent_writes().max(1);
        let writer = HistoryWriter {
            rx,
            open: true,
            repo,
            publisher,
            batch_size: config.history_batch_size.max(1),
            depth,
            gather_period: Duration::from_millis(config.history_gather_ms),
            commit_wait: Duration::from_millis(config.history_batch_interval_ms.max(1)),
            flush_timeout: Duration::from_millis(config.history_flush_timeout_ms),
            metrics,
            pending: VecDeque::new(),
            outage: None,
            late: false,
            gathered: Gathered::default(),
            flights: Flights::default(),
            last_start: None,
        };
        (handle, writer)
    }

    /// Messages go out without waiting for their rows (database down or slow).
    fn degraded(&self) -> bool {
        self.outage.is_some() || self.late
    }

    /// Writes and publishes until every [`HistoryHandle`] is dropped and everything is
    /// written. Once `shutdown` is cancelled, gives up writing after the flush timeout,
    /// counting the rows left as dropped and publishing their messages.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut stop = Stop { token: shutdown, flush_timeout: self.flush_timeout, deadline: None };
        let mut writes = FuturesUnordered::new();
        let mut arrivals = Vec::new();
        while self.open || !self.pending.is_empty() || !self.gathered.is_empty() || !self.flights.is_empty() {
            if let Some(write) = self.start_due_write(Instant::now()) {
                writes.push(write);
                continue;
            }
            let wake = self.next_wake(Instant::now());
            let commit_deadline = self.flights.publish_deadline();
            let room = if self.degraded() { self.batch_size } else { self.batch_size.saturating_sub(self.gathered.entries) };
            let (rx, open) = (&mut self.rx, self.open);
            let step = stop
                .guard(async {
                    tokio::select! {
                        biased;
                        Some((id, r)) = writes.next() => Step::Written(id, r),
                        _ = sleep_until(commit_deadline.unwrap_or_else(Instant::now)), if commit_deadline.is_some() => Step::CommitLate,
                        n = rx.recv_many(&mut arrivals, room), if open && room > 0 => Step::Arrived(n),
                        _ = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => Step::Due,
                    }
                })
                .await;
            match step {
                None => break,
                Some(Step::Written(id, r)) => self.written(id, r),
                Some(Step::CommitLate) => {
                    if !self.degraded() {
                        warn!(
                            wait_ms = self.commit_wait.as_millis() as u64,
                            "history write slower than integration.history_batch_interval_ms; \
                             publishing events before their rows are stored"
                        );
                    }
                    self.late = true;
                    self.release_everything();
                }
                Some(Step::Arrived(0)) => self.open = false,
                Some(Step::Arrived(_)) => self.arrived(&mut arrivals),
                Some(Step::Due) => {}
            }
        }
        self.give_up();
    }

    /// When the writer must wake up without anything arriving: the gathered batch's start,
    /// or the retry of pending rows during an outage. `None` when nothing is waiting.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        if let Some(o) = &self.outage {
            return (!self.pending.is_empty() && self.flights.is_empty()).then_some(o.next_try);
        }
        if self.late || self.flights.len() >= self.depth || (self.gathered.is_empty() && self.pending.is_empty()) {
            return None;
        }
        Some(write_start(now, self.last_start, self.gathered.rows.len() + self.pending.len(), self.batch_size, self.gather_period))
    }

    /// Starts the next write when one is due: the gathered batch (with pending rows first)
    /// once its gathering time is up, or a retry of the pending rows during an outage.
    fn start_due_write(&mut self, now: Instant) -> Option<impl Future<Output = (u64, WriteResult)>> {
        let due = self.next_wake(now).is_some_and(|at| at <= now);
        if !due {
            return None;
        }
        let take = self.pending.len().min(self.batch_size);
        let mut rows: Vec<HistoryRow> = self.pending.drain(..take).collect();
        let messages = if self.outage.is_some() {
            Vec::new()
        } else {
            let g = std::mem::take(&mut self.gathered);
            rows.extend(g.rows);
            g.messages
        };
        self.last_start = Some(now);
        let (id, settled) = self.flights.start(messages, rows.len(), now + self.commit_wait);
        let write = write_rows(self.repo.clone(), rows, self.metrics.clone(), settled);
        Some(async move { (id, write.await) })
    }

    fn arrived(&mut self, arrivals: &mut Vec<Entry>) {
        if self.degraded() {
            // Nothing is held (entering this mode released it all): publish at once, keep
            // the rows for later.
            let (rows, messages) = split(arrivals.drain(..));
            self.publish_all(messages);
            self.pending.extend(rows);
            return;
        }
        for e in arrivals.drain(..) {
            self.gathered.entries += 1;
            self.gathered.rows.extend(e.row);
            self.gathered.messages.extend(e.message);
        }
    }

    fn written(&mut self, id: u64, result: WriteResult) {
        match result {
            Ok(()) => {
                if let Some(outage) = self.outage.take() {
                    info!(
                        outage_secs = outage.since.elapsed().as_secs_f64(),
                        pending = self.pending.len(),
                        "history writes to the database resumed"
                    );
                }
            }
            Err((e, left)) => {
                let now = Instant::now();
                let outage = match self.outage.take() {
                    None => {
                        warn!(
                            error = %e,
                            rows = left.len() + self.pending.len(),
                            "history write failed; publishing events anyway and keeping their rows for retry"
                        );
                        Outage { since: now, backoff: BACKOFF_MIN, next_try: now + BACKOFF_MIN }
                    }
                    Some(o) => {
                        let backoff = (o.backoff * 2).min(BACKOFF_MAX);
                        Outage { since: o.since, backoff, next_try: now + backoff }
                    }
                };
                self.outage = Some(outage);
                for row in left.into_iter().rev() {
                    self.pending.push_front(row);
                }
                self.release_everything();
            }
        }
        let ready = self.flights.finish(id);
        self.publish_all(ready);
        if self.flights.is_empty() {
            self.late = false;
        }
    }

    /// Publishes every held message in order (the batches in flight, then the gathered
    /// one, whose rows join the pending ones).
    fn release_everything(&mut self) {
        let held = self.flights.release_all();
        self.publish_all(held);
        let g = std::mem::take(&mut self.gathered);
        self.publish_all(g.messages);
        self.pending.extend(g.rows);
    }

    fn publish_all(&self, messages: Vec<Message>) {
        for m in messages {
            publish(&*self.publisher, &self.metrics, m);
        }
    }

    /// Publishes what is still held or queued and counts every row not written as dropped.
    fn give_up(&mut self) {
        self.rx.close();
        let lost_in_flight = self.flights.unsettled();
        let held = self.flights.release_all();
        self.publish_all(held);
        let g = std::mem::take(&mut self.gathered);
        self.publish_all(g.messages);
        let mut rows = lost_in_flight + g.rows.len() + self.pending.len();
        self.pending.clear();
        while let Ok(entry) = self.rx.try_recv() {
            rows += usize::from(entry.row.is_some());
            if let Some(m) = entry.message {
                publish(&*self.publisher, &self.metrics, m);
            }
        }
        if rows == 0 {
            return;
        }
        error!(rows, "history flush timed out at shutdown; rows not written");
        self.metrics.history_buffer_depth.sub(rows as i64);
        self.metrics.history_dropped.with_label_values(&["shutdown"]).inc_by(rows as u64);
    }

    /// Test support: takes the queued messages without writing (the writer is not running).
    #[cfg(test)]
    pub(crate) fn take_messages(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(entry) = self.rx.try_recv() {
            out.extend(entry.message);
        }
        out
    }
}

fn split(entries: impl Iterator<Item = Entry>) -> (Vec<HistoryRow>, Vec<Message>) {
    let mut rows = Vec::new();
    let mut messages = Vec::new();
    for e in entries {
        rows.extend(e.row);
        messages.extend(e.message);
    }
    (rows, messages)
}

/// One try at writing `rows`: uplinks and events together in one transaction. A batch the
/// database refuses for its content is written row by row to drop only the bad row. On a
/// failure that retrying may fix, returns the rows not yet written.
/// `settled` counts the rows written or dropped so far.
async fn write_rows(
    repo: Arc<dyn HistoryRepo>,
    rows: Vec<HistoryRow>,
    metrics: IntegrationMetrics,
    settled: Arc<AtomicUsize>,
) -> WriteResult {
    let mut parts = VecDeque::from([Batch::of(rows)]);
    while let Some(part) = parts.front() {
        if part.len() == 0 {
            parts.pop_front();
            continue;
        }
        let started = Instant::now();
        let result = match timeout(WRITE_TIMEOUT, repo.insert_history(&part.uplinks, &part.events)).await {
            Ok(r) => r.map_err(WriteError::Storage),
            Err(_) => Err(WriteError::TimedOut),
        };
        match result {
            Ok(()) => {
                let n = part.len();
                metrics.history_write_seconds.observe(started.elapsed().as_secs_f64());
                metrics.history_batch_size.observe(n as f64);
                metrics.history_buffer_depth.sub(n as i64);
                settled.fetch_add(n, Ordering::SeqCst);
                parts.pop_front();
            }
            Err(WriteError::Storage(e)) if is_permanent(&e) => {
                let part = parts.pop_front().expect("front exists");
                if part.len() > 1 {
                    for single in part.into_singles().into_iter().rev() {
                        parts.push_front(single);
                    }
                } else {
                    if let Some(suppressed) = REFUSED_ROW_WARNING.allow() {
                        error!(kind = part.kind(), error = %e, suppressed_since_last_line = suppressed, "database refused a history row; row dropped");
                    }
                    metrics.history_buffer_depth.dec();
                    metrics.history_dropped.with_label_values(&["rejected"]).inc();
                    settled.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(e) => return Err((e, parts.into_iter().flat_map(Batch::into_rows).collect())),
        }
    }
    Ok(())
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

/// Rows for one transaction, split by table.
struct Batch {
    uplinks: Vec<UplinkRecord>,
    events: Vec<EventRecord>,
}

impl Batch {
    fn of(rows: Vec<HistoryRow>) -> Batch {
        let mut b = Batch { uplinks: Vec::new(), events: Vec::new() };
        for row in rows {
            match row {
                HistoryRow::Uplink(u) => b.uplinks.push(u),
                HistoryRow::Event(e) => b.events.push(e),
            }
        }
        b
    }

    fn len(&self) -> usize {
        self.uplinks.len() + self.events.len()
    }

    fn kind(&self) -> &'static str {
        if self.uplinks.is_empty() {
            "event"
        } else {
            "uplink"
        }
    }

    fn into_rows(self) -> Vec<HistoryRow> {
        self.uplinks.into_iter().map(HistoryRow::Uplink).chain(self.events.into_iter().map(HistoryRow::Event)).collect()
    }

    fn into_singles(self) -> Vec<Batch> {
        self.into_rows().into_iter().map(|r| Batch::of(vec![r])).collect()
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
    use loraflow_network_server::storage::{self, DatabaseConfig, EventKind, HistoryQuery, Storage};
    use loraflow_network_server::types::Eui64;
    use tokio::time::sleep;
    use uuid::Uuid;

    use super::*;

    /// A publisher for tests that only look at the rows.
    struct Discard;

    impl EventPublisher for Discard {
        fn publish(&self, _: Message) -> Result<(), crate::mqtt::MqttQueueFull> {
            Ok(())
        }
    }

    fn metrics() -> IntegrationMetrics {
        IntegrationMetrics::register(&prometheus::Registry::new()).unwrap()
    }

    fn config() -> IntegrationConfig {
        IntegrationConfig { history_batch_interval_ms: 5_000, ..IntegrationConfig::default() }
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
        async fn insert_history(&self, uplinks: &[UplinkRecord], events: &[EventRecord]) -> storage::Result<()> {
            if let Some(bad) = self.refuse {
                if events.iter().any(|r| r.body["n"] == bad) {
                    return Err(StorageError::Conflict("refused".into()));
                }
            }
            self.record(uplinks.len() + events.len())
        }
        async fn uplinks_page(&self, _: &HistoryQuery) -> storage::Result<Vec<UplinkRecord>> {
            Ok(vec![])
        }
        async fn count_uplinks(&self, _: Eui64, _: Option<DateTime<Utc>>) -> storage::Result<u64> {
            Ok(0)
        }
        async fn events_page(&self, _: &HistoryQuery, _: Option<EventKind>) -> storage::Result<Vec<EventRecord>> {
            Ok(vec![])
        }
        async fn count_events(&self, _: Eui64, _: Option<DateTime<Utc>>, _: Option<EventKind>) -> storage::Result<u64> {
            Ok(0)
        }
        async fn recent_events(&self, _: &storage::EventFilter, _: u32) -> storage::Result<Vec<EventRecord>> {
            Ok(vec![])
        }
        async fn count_recent_events(&self, _: &storage::EventFilter) -> storage::Result<u64> {
            Ok(0)
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
        let (handle, writer) = HistoryWriter::new(repo.clone(), Arc::new(Discard), &config(), m.clone());
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
        let (handle, writer) = HistoryWriter::new(repo.clone(), Arc::new(Discard), &cfg, metrics());
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
        let (handle, writer) = HistoryWriter::new(repo.clone(), Arc::new(Discard), &cfg, m.clone());
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
        let (handle, writer) = HistoryWriter::new(repo.clone(), Arc::new(Discard), &config(), m.clone());
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
        let (handle, writer) = HistoryWriter::new(repo.clone(), Arc::new(Discard), &cfg, m.clone());
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

    // ---- batching and order (pure parts) ----

    #[test]
    fn a_batch_starts_one_gathering_period_after_the_previous_write_started_unless_full() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let p = ms(5);
        // (now, previous start, rows gathered, batch size) -> start
        let table = [
            (t0, None, 1, 500, t0),                       // first write ever: at once
            (t0 + ms(1), Some(t0), 1, 500, t0 + ms(5)),   // previous commit was fast: gather
            (t0 + ms(3), Some(t0), 40, 500, t0 + ms(5)),  // still gathering
            (t0 + ms(9), Some(t0), 1, 500, t0 + ms(9)),   // an isolated row: no wait
            (t0 + ms(1), Some(t0), 500, 500, t0 + ms(1)), // a full batch: no wait
            (t0 + ms(1), Some(t0), 700, 500, t0 + ms(1)), // more than full (pending rows)
        ];
        for (now, last, rows, size, want) in table {
            assert_eq!(write_start(now, last, rows, size, p), want, "now {:?} rows {rows}", now - t0);
        }
    }

    fn msg(n: u32) -> Message {
        Message { kind: "log", dev_eui: Eui64::from_u64(n.into()), topic: format!("t/{n}"), payload: n.to_string().into_bytes() }
    }

    fn numbers(messages: Vec<Message>) -> Vec<u32> {
        messages.iter().map(|m| String::from_utf8_lossy(&m.payload).parse().unwrap()).collect()
    }

    #[test]
    fn a_batch_that_commits_first_waits_for_the_older_one() {
        let t0 = Instant::now();
        let mut f = Flights::default();
        let (a, _) = f.start(vec![msg(0), msg(1)], 2, t0);
        let (b, _) = f.start(vec![msg(2)], 1, t0);
        let (c, _) = f.start(vec![msg(3)], 1, t0);
        assert!(f.finish(b).is_empty(), "b committed before a: nothing may leave yet");
        assert_eq!(f.len(), 2);
        assert_eq!(numbers(f.finish(a)), vec![0, 1, 2], "a, then the already committed b");
        assert_eq!(numbers(f.finish(c)), vec![3]);
        assert!(f.is_empty());
    }

    #[test]
    fn releasing_publishes_held_messages_in_batch_order_and_keeps_the_writes() {
        let t0 = Instant::now();
        let mut f = Flights::default();
        let (a, settled_a) = f.start(vec![msg(0)], 3, t0 + Duration::from_millis(10));
        let (b, _) = f.start(vec![msg(1), msg(2)], 2, t0 + Duration::from_millis(20));
        assert_eq!(f.publish_deadline(), Some(t0 + Duration::from_millis(10)));
        settled_a.fetch_add(1, Ordering::SeqCst);
        assert_eq!(f.unsettled(), 4);
        assert_eq!(numbers(f.release_all()), vec![0, 1, 2]);
        assert_eq!(f.publish_deadline(), None, "nothing held any more");
        assert_eq!(f.len(), 2, "the writes go on");
        assert!(f.finish(b).is_empty() && f.finish(a).is_empty(), "released messages leave once");
        assert!(f.is_empty());
    }

    #[test]
    fn an_idle_writer_has_no_timer() {
        let (_handle, writer) = HistoryWriter::new(Arc::new(FakeRepo::default()), Arc::new(Discard), &config(), metrics());
        assert_eq!(writer.next_wake(Instant::now()), None);
    }

    /// Two writes at once; a write holding the event `slow` takes 300 ms.
    #[derive(Default)]
    struct TwoLanes {
        log: Mutex<Vec<String>>,
        slow: u32,
    }

    #[async_trait]
    impl HistoryRepo for TwoLanes {
        async fn insert_history(&self, _: &[UplinkRecord], rows: &[EventRecord]) -> storage::Result<()> {
            if rows.iter().any(|r| r.body["n"] == self.slow) {
                sleep(Duration::from_millis(300)).await;
            }
            self.log.lock().unwrap().extend(rows.iter().map(|r| format!("stored {}", r.body["n"])));
            Ok(())
        }
        fn concurrent_writes(&self) -> usize {
            2
        }
        async fn uplinks_page(&self, _: &HistoryQuery) -> storage::Result<Vec<UplinkRecord>> {
            Ok(vec![])
        }
        async fn count_uplinks(&self, _: Eui64, _: Option<DateTime<Utc>>) -> storage::Result<u64> {
            Ok(0)
        }
        async fn events_page(&self, _: &HistoryQuery, _: Option<EventKind>) -> storage::Result<Vec<EventRecord>> {
            Ok(vec![])
        }
        async fn count_events(&self, _: Eui64, _: Option<DateTime<Utc>>, _: Option<EventKind>) -> storage::Result<u64> {
            Ok(0)
        }
        async fn recent_events(&self, _: &storage::EventFilter, _: u32) -> storage::Result<Vec<EventRecord>> {
            Ok(vec![])
        }
        async fn count_recent_events(&self, _: &storage::EventFilter) -> storage::Result<u64> {
            Ok(0)
        }
    }

    impl EventPublisher for TwoLanes {
        fn publish(&self, m: Message) -> Result<(), crate::mqtt::MqttQueueFull> {
            self.log.lock().unwrap().push(format!("published {}", String::from_utf8(m.payload).unwrap()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_next_batch_is_written_while_the_previous_commits_and_still_published_after_it() {
        let repo = Arc::new(TwoLanes { slow: 0, ..TwoLanes::default() });
        let (handle, writer) = HistoryWriter::new(repo.clone(), repo.clone(), &config(), metrics());
        let task = tokio::spawn(writer.run(CancellationToken::new()));
        assert!(submit(&handle, 0));
        sleep(Duration::from_millis(20)).await;
        assert!(submit(&handle, 1));
        sleep(Duration::from_millis(100)).await;
        assert_eq!(*repo.log.lock().unwrap(), vec!["stored 1"], "batch 1 committed while batch 0 was still being written");
        drop(handle);
        task.await.unwrap();
        assert_eq!(*repo.log.lock().unwrap(), vec!["stored 1", "stored 0", "published 0", "published 1"], "published in batch order");
    }

    #[tokio::test(start_paused = true)]
    async fn rows_arriving_soon_after_a_fast_write_go_together_and_a_lone_row_waits_for_nothing() {
        let repo = Arc::new(FakeRepo::default());
        let cfg = IntegrationConfig { history_gather_ms: 5, ..config() };
        let (handle, writer) = HistoryWriter::new(repo.clone(), Arc::new(Discard), &cfg, metrics());
        let task = tokio::spawn(writer.run(CancellationToken::new()));
        let started = Instant::now();
        handle.push(event(Eui64::default(), Uuid::nil(), 0));
        sleep(Duration::from_millis(1)).await;
        assert_eq!(*repo.calls.lock().unwrap(), vec![1], "the first row is written at once");
        handle.push(event(Eui64::default(), Uuid::nil(), 1));
        sleep(Duration::from_millis(2)).await;
        handle.push(event(Eui64::default(), Uuid::nil(), 2));
        sleep(Duration::from_millis(1)).await;
        assert_eq!(*repo.calls.lock().unwrap(), vec![1], "still gathering");
        sleep(Duration::from_millis(2)).await;
        assert_eq!(*repo.calls.lock().unwrap(), vec![1, 2], "gathered for at most 5 ms after the previous start");
        // Long after: a lone row is written at once.
        sleep(Duration::from_millis(100)).await;
        handle.push(event(Eui64::default(), Uuid::nil(), 3));
        // (the shortest sleep of the paused clock, 1 ms, is shorter than the period)
        sleep(Duration::from_micros(10)).await;
        assert_eq!(*repo.calls.lock().unwrap(), vec![1, 2, 1]);
        drop(handle);
        task.await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    // ---- real databases ----

    async fn device_in(storage: &Storage) -> (Eui64, Uuid) {
        let ctx = super::super::testing::insert_device(storage).await;
        (ctx.device.dev_eui, ctx.device.application_id)
    }

    async fn rows_arrive_in(storage: Storage) {
        let (dev_eui, app) = device_in(&storage).await;
        let m = metrics();
        let (handle, writer) = HistoryWriter::new(storage.history.clone(), Arc::new(Discard), &config(), m.clone());
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
        let (handle, writer) = HistoryWriter::new(storage.history.clone(), Arc::new(Discard), &config(), m.clone());
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
        let (handle, writer) = HistoryWriter::new(repo.clone(), Arc::new(Discard), &config(), m.clone());
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

    // ---- the publishing gate ----

    /// Database and broker in one: records, in one journal, when each event row is stored
    /// and when each message is published. `gate` holds writes while locked; `down` fails them.
    #[derive(Default)]
    struct Journal {
        log: Mutex<Vec<String>>,
        down: std::sync::atomic::AtomicBool,
        gate: tokio::sync::Mutex<()>,
    }

    #[async_trait]
    impl HistoryRepo for Journal {
        async fn insert_history(&self, uplinks: &[UplinkRecord], rows: &[EventRecord]) -> storage::Result<()> {
            assert!(uplinks.is_empty(), "these tests store events only");
            let _open = self.gate.lock().await;
            if self.down.load(Ordering::SeqCst) {
                return Err(StorageError::Db(sqlx::Error::PoolTimedOut));
            }
            let mut log = self.log.lock().unwrap();
            log.extend(rows.iter().map(|r| format!("stored {}", r.body["n"])));
            Ok(())
        }
        async fn uplinks_page(&self, _: &HistoryQuery) -> storage::Result<Vec<UplinkRecord>> {
            Ok(vec![])
        }
        async fn count_uplinks(&self, _: Eui64, _: Option<DateTime<Utc>>) -> storage::Result<u64> {
            Ok(0)
        }
        async fn events_page(&self, _: &HistoryQuery, _: Option<EventKind>) -> storage::Result<Vec<EventRecord>> {
            Ok(vec![])
        }
        async fn count_events(&self, _: Eui64, _: Option<DateTime<Utc>>, _: Option<EventKind>) -> storage::Result<u64> {
            Ok(0)
        }
        async fn recent_events(&self, _: &storage::EventFilter, _: u32) -> storage::Result<Vec<EventRecord>> {
            Ok(vec![])
        }
        async fn count_recent_events(&self, _: &storage::EventFilter) -> storage::Result<u64> {
            Ok(0)
        }
    }

    impl EventPublisher for Journal {
        fn publish(&self, m: Message) -> Result<(), crate::mqtt::MqttQueueFull> {
            self.log.lock().unwrap().push(format!("published {}", String::from_utf8(m.payload).unwrap()));
            Ok(())
        }
    }

    impl Journal {
        fn entries(&self, prefix: &str) -> Vec<u32> {
            let log = self.log.lock().unwrap();
            log.iter().filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok()).collect()
        }

        fn position(&self, line: &str) -> Option<usize> {
            self.log.lock().unwrap().iter().position(|l| l == line)
        }
    }

    fn submit(handle: &HistoryHandle, n: u32) -> bool {
        let message =
            Message { kind: "log", dev_eui: Eui64::from_u64(n.into()), topic: format!("t/{n}"), payload: n.to_string().into_bytes() };
        handle.submit(Some(event(Eui64::default(), Uuid::nil(), n)), Some(message))
    }

    fn start_journal(
        cfg: &IntegrationConfig,
    ) -> (Arc<Journal>, HistoryHandle, IntegrationMetrics, tokio::task::JoinHandle<()>, CancellationToken) {
        let journal = Arc::new(Journal::default());
        let m = metrics();
        let (handle, writer) = HistoryWriter::new(journal.clone(), journal.clone(), cfg, m.clone());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(writer.run(shutdown.clone()));
        (journal, handle, m, task, shutdown)
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn an_event_is_published_only_after_its_row_is_stored() {
        let (journal, handle, m, task, _shutdown) = start_journal(&config());
        let held = journal.gate.lock().await;
        for n in 0..50 {
            assert!(submit(&handle, n));
        }
        sleep(Duration::from_millis(200)).await;
        assert!(journal.entries("published").is_empty(), "nothing may leave before its commit");
        drop(held);
        for n in 50..100 {
            submit(&handle, n);
        }
        drop(handle);
        task.await.unwrap();
        assert_eq!(journal.entries("published"), (0..100).collect::<Vec<_>>(), "all published, in order");
        for n in 0..100 {
            let stored = journal.position(&format!("stored {n}")).expect("stored");
            let published = journal.position(&format!("published {n}")).unwrap();
            assert!(stored < published, "event {n} published before its row was stored");
        }
        assert_eq!(m.events_published.with_label_values(&["log"]).get(), 100);
        assert_eq!(m.history_buffer_depth.get(), 0);
        // Group commit: the rows that arrived while the first write waited went together.
        assert!(m.history_batch_size.get_sample_count() <= 3, "{}", m.history_batch_size.get_sample_count());
    }

    #[tokio::test]
    async fn during_an_outage_events_keep_flowing_and_rows_are_written_afterwards() {
        let (journal, handle, m, task, _shutdown) = start_journal(&config());
        journal.down.store(true, Ordering::SeqCst);
        for n in 0..5 {
            submit(&handle, n);
        }
        until("the first events", || journal.entries("published").len() == 5).await;
        // Later events go out as they arrive, without waiting for a write.
        for n in 5..20 {
            submit(&handle, n);
            let want = n as usize + 1;
            until("an event during the outage", || journal.entries("published").len() == want).await;
        }
        assert!(journal.entries("stored").is_empty());
        assert_eq!(m.history_buffer_depth.get(), 20, "rows are kept for retry");

        journal.down.store(false, Ordering::SeqCst);
        until("the rows of the outage", || journal.entries("stored").len() == 20).await;
        assert_eq!(m.history_buffer_depth.get(), 0);
        // Back to normal: publish after commit again.
        let held = journal.gate.lock().await;
        submit(&handle, 20);
        sleep(Duration::from_millis(100)).await;
        assert_eq!(journal.entries("published").len(), 20);
        drop(held);
        drop(handle);
        task.await.unwrap();
        assert_eq!(journal.entries("published"), (0..21).collect::<Vec<_>>(), "order kept across the outage");
        let mut stored = journal.entries("stored");
        stored.sort();
        assert_eq!(stored, (0..21).collect::<Vec<_>>(), "every row stored once");
        assert_eq!(m.history_dropped.with_label_values(&["shutdown"]).get(), 0);
    }

    #[tokio::test]
    async fn a_write_that_hangs_holds_events_only_for_the_commit_wait() {
        let cfg = IntegrationConfig { history_batch_interval_ms: 100, ..IntegrationConfig::default() };
        let (journal, handle, m, task, _shutdown) = start_journal(&cfg);
        let held = journal.gate.lock().await;
        let started = Instant::now();
        submit(&handle, 0);
        until("the held event", || journal.entries("published") == [0]).await;
        assert!(started.elapsed() >= Duration::from_millis(100), "published before the commit wait");
        // While the write still hangs, new events are not held up.
        for n in 1..10 {
            submit(&handle, n);
        }
        until("events during the hang", || journal.entries("published").len() == 10).await;
        assert!(journal.entries("stored").is_empty());
        drop(held);
        until("every row", || journal.entries("stored").len() == 10).await;
        drop(handle);
        task.await.unwrap();
        assert_eq!(journal.entries("published"), (0..10).collect::<Vec<_>>());
        assert_eq!(m.history_buffer_depth.get(), 0);
    }

    #[tokio::test]
    async fn a_full_buffer_drops_rows_but_still_publishes_their_events_in_order() {
        let cfg = IntegrationConfig { history_buffer: 3, ..config() };
        let (journal, handle, m, task, _shutdown) = start_journal(&cfg);
        let held = journal.gate.lock().await;
        let kept: Vec<bool> = (0..5).map(|n| submit(&handle, n)).collect();
        assert_eq!(kept, vec![true, true, true, false, false]);
        drop(held);
        drop(handle);
        task.await.unwrap();
        assert_eq!(journal.entries("published"), vec![0, 1, 2, 3, 4]);
        assert_eq!(journal.entries("stored").len(), 3);
        assert_eq!(m.history_dropped.with_label_values(&["buffer_full"]).get(), 2);
    }

    #[tokio::test]
    async fn shutdown_with_the_database_down_still_publishes_everything() {
        let cfg = IntegrationConfig { history_flush_timeout_ms: 300, history_batch_interval_ms: 60_000, ..IntegrationConfig::default() };
        let (journal, handle, m, task, shutdown) = start_journal(&cfg);
        let held = journal.gate.lock().await; // the write hangs and never commits
        for n in 0..4 {
            submit(&handle, n);
        }
        sleep(Duration::from_millis(50)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(3), task).await.expect("writer stopped").unwrap();
        assert_eq!(journal.entries("published"), vec![0, 1, 2, 3]);
        assert_eq!(m.history_dropped.with_label_values(&["shutdown"]).get(), 4);
        assert_eq!(m.history_buffer_depth.get(), 0);
        // The writer is gone: an event handed over now is published directly.
        assert!(!submit(&handle, 4));
        assert_eq!(journal.entries("published"), vec![0, 1, 2, 3, 4]);
        drop(held);
    }
}
