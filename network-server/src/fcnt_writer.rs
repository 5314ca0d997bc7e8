//! Batches uplink frame-counter compare-and-sets: whatever accumulates while one transaction
//! runs goes into the next, so the database sees one commit per few milliseconds of uplinks
//! instead of one per uplink, and every row keeps its own compare-and-set.
//!
//! When the database cannot be reached, the writer keeps the counters itself (one task, so
//! the compare-and-set stays exact: two racing copies still cannot both pass) and writes them
//! forward once the database answers again. Uplinks keep flowing to the application side
//! meanwhile; only a crash during the outage could lose those counter advances.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::storage::{FCntUpdate, Storage, StorageError};
use crate::types::Eui64;

const MAX_BATCH: usize = 1024;
/// How often to probe the database while counters wait in memory.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// A compare-and-set batch that takes longer than this is taken as an outage. Without it
/// the first batch of an outage would wait for the pool's acquire timeout while every
/// device's next uplink queues behind it.
const CAS_TIMEOUT: Duration = Duration::from_secs(3);
/// The database answers again when a probe (`SELECT 1`) answers within this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer to one compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The counter was `expected` and is now `next`.
    Applied,
    /// The counter was not `expected`. `current` is the value it holds, when the writer knows
    /// it (counters kept in memory during an outage); otherwise it must be read again.
    Conflict { current: Option<u32> },
}

type Request = (FCntUpdate, oneshot::Sender<Result<CasOutcome, String>>);

#[derive(Clone)]
pub struct FCntWriter {
    tx: mpsc::Sender<Request>,
}

impl FCntWriter {
    /// Starts the writer task; it ends when every `FCntWriter` clone is dropped, after writing
    /// any counters still held in memory (if the database answers by then).
    pub fn start(storage: Storage, batch_size: prometheus::Histogram, unpersisted: prometheus::IntGauge) -> FCntWriter {
        let (tx, rx) = mpsc::channel::<Request>(MAX_BATCH * 8);
        let writer =
            Writer { storage, batch_size, unpersisted, held: HashMap::new(), probe: None, next_probe: tokio::time::Instant::now() };
        tokio::spawn(writer.run(rx));
        FCntWriter { tx }
    }

    /// Compare-and-set of one device's uplink counter from `expected` to `next`.
    pub async fn compare_and_set(&self, update: FCntUpdate) -> Result<CasOutcome, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((update, reply)).await.map_err(|_| StorageError::Conflict("frame-counter writer stopped".into()))?;
        match rx.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(StorageError::Conflict(format!("frame-counter write failed: {e}"))),
            Err(_) => Err(StorageError::Conflict("frame-counter writer stopped".into())),
        }
    }
}

struct Writer {
    storage: Storage,
    batch_size: prometheus::Histogram,
    unpersisted: prometheus::IntGauge,
    /// Counters accepted while the database was unreachable, not yet written. While any are
    /// held the writer answers from memory (it is the only writer, so this stays exact) and
    /// only a successful probe sends it back to the database.
    held: HashMap<Eui64, u32>,
    /// A running check whether the database answers again. It runs beside the writer, so
    /// uplinks are never held up by connection attempts during an outage.
    probe: Option<JoinHandle<bool>>,
    next_probe: tokio::time::Instant,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
        loop {
            if !self.held.is_empty() && self.probe.is_none() {
                let at = self.next_probe;
                tokio::select! {
                    n = rx.recv_many(&mut batch, MAX_BATCH) => {
                        if n == 0 { break; }
                        self.process(&mut batch).await;
                    }
                    _ = tokio::time::sleep_until(at) => self.start_probe(),
                }
            } else if let Some(probe) = self.probe.as_mut() {
                tokio::select! {
                    n = rx.recv_many(&mut batch, MAX_BATCH) => {
                        if n == 0 { break; }
                        self.process(&mut batch).await;
                    }
                    answered = probe => {
                        self.probe = None;
                        if answered.unwrap_or(false) {
                            self.write_held().await;
                        } else {
                            self.next_probe = tokio::time::Instant::now() + RETRY_EVERY;
                        }
                    }
                }
            } else {
                if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                    break;
                }
                self.process(&mut batch).await;
            }
        }
        if let Some(probe) = self.probe.take() {
            probe.abort();
        }
        self.write_held().await;
    }

    fn start_probe(&mut self) {
        let storage = self.storage.clone();
        self.probe = Some(tokio::spawn(async move { matches!(tokio::time::timeout(PROBE_TIMEOUT, storage.ping()).await, Ok(Ok(()))) }));
    }

    /// Writes the held counters forward (the database answered a probe).
    async fn write_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let updates: Vec<(Eui64, u32)> = self.held.iter().map(|(e, n)| (*e, *n)).collect();
        let attempt = tokio::time::timeout(CAS_TIMEOUT, self.storage.sessions.advance_f_cnt_up(&updates)).await;
        match attempt.unwrap_or_else(|_| Err(StorageError::Conflict("timed out".into()))) {
            Ok(()) => {
                tracing::info!(devices = updates.len(), "frame counters kept during the database outage are stored");
                self.held.clear();
                self.unpersisted.set(0);
            }
            Err(e) => {
                tracing::debug!(error = %e, "frame counters kept in memory could not be stored yet");
                self.next_probe = tokio::time::Instant::now() + RETRY_EVERY;
            }
        }
    }

    async fn process(&mut self, batch: &mut Vec<Request>) {
        self.batch_size.observe(batch.len() as f64);
        if self.held.is_empty() {
            let updates: Vec<FCntUpdate> = batch.iter().map(|(u, _)| *u).collect();
            let attempt = tokio::time::timeout(CAS_TIMEOUT, self.storage.sessions.cas_f_cnt_up(&updates)).await;
            match attempt.unwrap_or_else(|_| Err(StorageError::Conflict("no answer in time".into()))) {
                Ok(applied) => {
                    for ((_, reply), ok) in batch.drain(..).zip(applied) {
                        let outcome = if ok { CasOutcome::Applied } else { CasOutcome::Conflict { current: None } };
                        let _ = reply.send(Ok(outcome));
                    }
                    return;
                }
                Err(e) => {
                    // A batch that failed or timed out may still have been committed: the
                    // counters held from here on are the same values, written forward with
                    // "only ever increase", so either way the database ends up right.
                    tracing::warn!(error = %e, "database unreachable: frame counters are kept in memory until it returns");
                    self.next_probe = tokio::time::Instant::now() + RETRY_EVERY;
                }
            }
        }
        // Degraded: the same compare-and-set, against the last known value of each device
        // (held here, else the caller's, which came from the database through the cache).
        for (u, reply) in batch.drain(..) {
            let current = self.held.get(&u.dev_eui).copied().unwrap_or(u.expected);
            let outcome = if current == u.expected {
                self.held.insert(u.dev_eui, u.next);
                CasOutcome::Applied
            } else {
                CasOutcome::Conflict { current: Some(current) }
            };
            let _ = reply.send(Ok(outcome));
        }
        self.unpersisted.set(self.held.len() as i64);
    }
}
