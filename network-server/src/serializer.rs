//! Runs jobs one at a time per key, in the order they were submitted, and jobs of different
//! keys in parallel.
//!
//! The network server keys uplinks by device (DevAddr for data frames, JoinEUI/DevEUI for
//! join-requests), so that two frames of one device never race on its frame counter: the
//! second sees what the first stored. A key with work has exactly one task, which runs the
//! key's queue until it is empty and then forgets the key, so idle devices cost nothing.
//!
//! Every job holds one permit from the moment it is queued until it has run, so `max_pending`
//! bounds running *and* queued jobs together; `submit` waits for room. `drain` waits until
//! every queue is empty.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

type Job = (BoxFuture<'static, ()>, OwnedSemaphorePermit);

/// Keys with work, each with the jobs queued behind the one running.
type Queues<K> = Arc<Mutex<HashMap<K, VecDeque<Job>>>>;

pub struct KeyedSerializer<K> {
    queues: Queues<K>,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
}

impl<K: Eq + Hash + Clone + Send + 'static> KeyedSerializer<K> {
    pub fn new(max_pending: usize) -> Self {
        KeyedSerializer { queues: Arc::default(), permits: Arc::new(Semaphore::new(max_pending)), tasks: TaskTracker::new() }
    }

    /// Waits until fewer than `max_pending` jobs are queued or running, then queues `job`
    /// behind the earlier jobs of `key`. Without a key the job runs at once, unordered.
    pub async fn submit(&self, key: Option<K>, job: impl Future<Output = ()> + Send + 'static) {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let job: Job = (job.boxed(), permit);
        let Some(key) = key else {
            self.tasks.spawn(run_one(job));
            return;
        };
        {
            let mut queues = self.queues.lock().expect("queue lock");
            if let Some(waiting) = queues.get_mut(&key) {
                waiting.push_back(job);
                return;
            }
            queues.insert(key.clone(), VecDeque::new());
        }
        self.tasks.spawn(run_key(self.queues.clone(), key, job));
    }

    /// Keys that have a job running (with or without jobs queued behind it).
    pub fn active_keys(&self) -> usize {
        self.queues.lock().expect("queue lock").len()
    }

    /// Waits for every queued and running job. Call after the last `submit`.
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn run_key<K: Eq + Hash>(queues: Queues<K>, key: K, first: Job) {
    let mut job = first;
    loop {
        run_one(job).await;
        // Taking the next job and forgetting an empty key happen under one lock, so a job
        // submitted meanwhile either lands in this queue or finds the key gone and starts a
        // new task: never both, never neither.
        let next = {
            let mut queues = queues.lock().expect("queue lock");
            match queues.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(next) => next,
                None => {
                    queues.remove(&key);
                    return;
                }
            }
        };
        job = next;
    }
}

async fn run_one((job, permit): Job) {
    // A panicking job must not take the jobs queued behind it down with it.
    if AssertUnwindSafe(job).catch_unwind().await.is_err() {
        tracing::error!("an uplink task panicked; the next frames of its device are still handled");
    }
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    #[tokio::test(start_paused = true)]
    async fn jobs_of_one_key_run_one_at_a_time_in_submission_order() {
        let s = KeyedSerializer::new(64);
        let log = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..12u64 {
            let (log, running) = (log.clone(), running.clone());
            s.submit(Some("dev"), async move {
                assert_eq!(running.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0, "two jobs of one key at once");
                // Later jobs finish faster: only ordering can keep them in sequence.
                tokio::time::sleep(Duration::from_millis(100 - i * 5)).await;
                log.lock().unwrap().push(i);
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            })
            .await;
        }
        s.drain().await;
        assert_eq!(*log.lock().unwrap(), (0..12).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn different_keys_run_in_parallel() {
        let s = KeyedSerializer::new(64);
        let (tx, rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        // The job of key "a" can only finish once the job of key "b" has run.
        s.submit(Some("a"), async move {
            rx.await.unwrap();
            done_tx.send(()).unwrap();
        })
        .await;
        s.submit(Some("b"), async move { tx.send(()).unwrap() }).await;
        tokio::time::timeout(Duration::from_secs(5), done_rx).await.expect("keys ran one after the other").unwrap();
        s.drain().await;
    }

    #[tokio::test]
    async fn a_key_waits_behind_its_own_slow_job_only() {
        let s = KeyedSerializer::new(64);
        let (release, hold) = oneshot::channel::<()>();
        let (second_tx, mut second_rx) = oneshot::channel::<()>();
        s.submit(Some(1), async move { hold.await.unwrap() }).await;
        s.submit(Some(1), async move { second_tx.send(()).unwrap() }).await;
        let (other_tx, other_rx) = oneshot::channel::<()>();
        s.submit(Some(2), async move { other_tx.send(()).unwrap() }).await;
        tokio::time::timeout(Duration::from_secs(5), other_rx).await.unwrap().unwrap();
        assert!(second_rx.try_recv().is_err(), "the second job of key 1 overtook the first");
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), second_rx).await.unwrap().unwrap();
        s.drain().await;
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_every_queued_job_and_forgets_the_keys() {
        let s = KeyedSerializer::new(1000);
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..300u32 {
            let count = count.clone();
            s.submit(Some(i % 7), async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .await;
        }
        s.submit(None, {
            let count = count.clone();
            async move {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .await;
        let queues = s.queues.clone();
        s.drain().await;
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 301);
        assert!(queues.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn queued_jobs_count_against_the_bound() {
        let s = Arc::new(KeyedSerializer::new(2));
        let (release, hold) = oneshot::channel::<()>();
        s.submit(Some(1), async move { hold.await.unwrap() }).await;
        // Queued behind the running job: it holds the second permit.
        s.submit(Some(1), async {}).await;
        let third = {
            let s = s.clone();
            tokio::spawn(async move { s.submit(Some(2), async {}).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!third.is_finished(), "a third job was accepted with two pending and a bound of two");
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), third).await.unwrap().unwrap();
        Arc::try_unwrap(s).ok().expect("one owner").drain().await;
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_block_its_key() {
        let s = KeyedSerializer::new(8);
        let (tx, rx) = oneshot::channel::<()>();
        s.submit(Some(1), async { panic!("boom") }).await;
        s.submit(Some(1), async move { tx.send(()).unwrap() }).await;
        tokio::time::timeout(Duration::from_secs(5), rx).await.expect("the job after the panic never ran").unwrap();
        s.drain().await;
    }
}
