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

use crate::storage::{FCntUpdate, Storage, StorageError};
use crate::types::Eui64;

const MAX_BATCH: usize = 1024;
/// How often to try the database again while counters wait in memory.
const RETRY_EVERY: Duration = Duration::from_millis(500);

type Request = (FCntUpdate, oneshot::Sender<Result<bool, String>>);

#[derive(Clone)]
pub struct FCntWriter {
    tx: mpsc::Sender<Request>,
}

impl FCntWriter {
    /// Starts the writer task; it ends when every `FCntWriter` clone is dropped, after writing
    /// any counters still held in memory (if the database answers by then).
    pub fn start(storage: Storage, batch_size: prometheus::Histogram, unpersisted: prometheus::IntGauge) -> FCntWriter {
        let (tx, rx) = mpsc::channel::<Request>(MAX_BATCH * 8);
        tokio::spawn(Writer { storage, batch_size, unpersisted, held: HashMap::new(), next_try: tokio::time::Instant::now() }.run(rx));
        FCntWriter { tx }
    }

    /// True when the stored counter was still `expected` and is now `next`.
    pub async fn compare_and_set(&self, update: FCntUpdate) -> Result<bool, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((update, reply)).await.map_err(|_| StorageError::Conflict("frame-counter writer stopped".into()))?;
        match rx.await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(e)) => Err(StorageError::Conflict(format!("frame-counter write failed: {e}"))),
            Err(_) => Err(StorageError::Conflict("frame-counter writer stopped".into())),
        }
    }
}

struct Writer {
    storage: Storage,
    batch_size: prometheus::Histogram,
    unpersisted: prometheus::IntGauge,
    /// Counters accepted while the database was unreachable, not yet written.
    held: HashMap<Eui64, u32>,
    /// While counters are held, the database is tried again only from this time on, so
    /// that uplinks are not held up by a connection attempt per batch.
    next_try: tokio::time::Instant,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
        loop {
            let got = if self.held.is_empty() {
                rx.recv_many(&mut batch, MAX_BATCH).await
            } else {
                match tokio::time::timeout(RETRY_EVERY, rx.recv_many(&mut batch, MAX_BATCH)).await {
                    Ok(n) => n,
                    Err(_) => {
                        self.write_held().await;
                        continue;
                    }
                }
            };
            if got == 0 {
                break;
            }
            self.process(&mut batch).await;
        }
        self.next_try = tokio::time::Instant::now();
        self.write_held().await;
    }

    /// Writes the held counters forward; true when nothing is held any more.
    async fn write_held(&mut self) -> bool {
        if self.held.is_empty() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now < self.next_try {
            return false;
        }
        self.next_try = now + RETRY_EVERY;
        let updates: Vec<(Eui64, u32)> = self.held.iter().map(|(e, n)| (*e, *n)).collect();
        let attempt = tokio::time::timeout(RETRY_EVERY * 2, self.storage.sessions.advance_f_cnt_up(&updates)).await;
        match attempt.unwrap_or_else(|_| Err(StorageError::Conflict("timed out".into()))) {
            Ok(()) => {
                tracing::info!(devices = updates.len(), "frame counters kept during the database outage are stored");
                self.held.clear();
                self.unpersisted.set(0);
                true
            }
            Err(_) => false,
        }
    }

    async fn process(&mut self, batch: &mut Vec<Request>) {
        self.batch_size.observe(batch.len() as f64);
        if self.write_held().await {
            let updates: Vec<FCntUpdate> = batch.iter().map(|(u, _)| *u).collect();
            match self.storage.sessions.cas_f_cnt_up(&updates).await {
                Ok(applied) => {
                    for ((_, reply), ok) in batch.drain(..).zip(applied) {
                        let _ = reply.send(Ok(ok));
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "database unreachable: frame counters are kept in memory until it returns");
                }
            }
        }
        // Degraded: the same compare-and-set, against the last known value of each device
        // (held here, else the caller's, which came from the database through the cache).
        for (u, reply) in batch.drain(..) {
            let current = self.held.get(&u.dev_eui).copied().unwrap_or(u.expected);
            let ok = current == u.expected;
            if ok {
                self.held.insert(u.dev_eui, u.next);
            }
            let _ = reply.send(Ok(ok));
        }
        self.unpersisted.set(self.held.len() as i64);
    }
}
