//! Batches uplink frame-counter compare-and-sets: whatever accumulates while one transaction
//! runs goes into the next, so the database sees one commit per few milliseconds of uplinks
//! instead of one per uplink, and every row keeps its own compare-and-set.

use tokio::sync::{mpsc, oneshot};

use crate::storage::{FCntUpdate, Storage, StorageError};

const MAX_BATCH: usize = 1024;

type Request = (FCntUpdate, oneshot::Sender<Result<bool, String>>);

#[derive(Clone)]
pub struct FCntWriter {
    tx: mpsc::Sender<Request>,
}

impl FCntWriter {
    /// Starts the writer task; it ends when every `FCntWriter` clone is dropped.
    pub fn start(storage: Storage, batch_size: prometheus::Histogram) -> FCntWriter {
        let (tx, rx) = mpsc::channel::<Request>(MAX_BATCH * 8);
        tokio::spawn(run(storage, rx, batch_size));
        FCntWriter { tx }
    }

    /// True when the stored counter was still `expected` and is now `next`.
    pub async fn compare_and_set(&self, update: FCntUpdate) -> Result<bool, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((update, reply))
            .await
            .map_err(|_| StorageError::Conflict("frame-counter writer stopped".into()))?;
        match rx.await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(e)) => Err(StorageError::Conflict(format!("frame-counter write failed: {e}"))),
            Err(_) => Err(StorageError::Conflict("frame-counter writer stopped".into())),
        }
    }
}

async fn run(storage: Storage, mut rx: mpsc::Receiver<Request>, batch_size: prometheus::Histogram) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let updates: Vec<FCntUpdate> = batch.iter().map(|(u, _)| *u).collect();
        batch_size.observe(updates.len() as f64);
        match storage.sessions.cas_f_cnt_up(&updates).await {
            Ok(applied) => {
                for ((_, reply), ok) in batch.drain(..).zip(applied) {
                    let _ = reply.send(Ok(ok));
                }
            }
            Err(e) => {
                let text = e.to_string();
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(text.clone()));
                }
            }
        }
    }
}
