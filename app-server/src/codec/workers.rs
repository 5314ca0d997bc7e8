//! The threads JavaScript codecs run on, and the watchdog that gives up on them.
//!
//! QuickJS checks its deadline only where it polls its interrupt handler; inside its
//! regular-expression engine (and a few other native loops) it never does, so a hostile
//! pattern can keep a thread busy for minutes. The deadline is therefore also enforced
//! from outside: each call phase arms a wall-clock deadline (time limit + [`GRACE`]) in the
//! worker's slot, and a watchdog thread answers the caller with
//! [`CodecError::Unresponsive`] once it passes. The worker is *abandoned*: it is never
//! joined, its runtime is dropped when (if) it comes back, and another thread takes its
//! place. At most `js_max_stuck_workers` abandoned threads may be alive at once; beyond
//! that, a script that already has one stuck is refused at once
//! ([`CodecError::TooManyStuck`]) and no more replacement threads are started until
//! stuck ones end, so the codec threads never exceed `js_workers + js_max_stuck_workers`.
//!
//! Threads are dedicated `std` threads with `js_thread_stack_bytes` of stack (not tokio's
//! blocking pool with its 2 MiB), started on demand up to `js_workers`.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge, Registry};
use tracing::{error, warn};

use super::{CodecError, Decoded};

/// How long past its time limit a call may take before its worker is abandoned. The
/// interrupt handler normally stops a script at the limit; this covers scheduling delay
/// on a loaded machine.
pub(crate) const GRACE: Duration = Duration::from_millis(100);

/// How long a call may wait for a free worker. Workers come free within their time limit
/// unless more than `js_max_stuck_workers` are stuck; then this bounds the wait.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a codec call produces.
pub(crate) enum Response {
    Decoded(Decoded),
    Encoded(Vec<u8>),
}

/// Receives the outcome of a call, exactly once: from the worker or from the watchdog.
pub(crate) type Reply = Box<dyn FnOnce(Result<Response, CodecError>) + Send>;

/// Runs on the worker; returns the outcome and, when the runtime may be reused, what
/// puts it back in the cache (not called when the worker was abandoned meanwhile).
pub(crate) type Work = Box<dyn FnOnce(&Watch) -> (Result<Response, CodecError>, Option<Box<dyn FnOnce() + Send>>) + Send>;

/// One codec call waiting for or running on a worker.
pub(crate) struct Job {
    /// Identifies the script for the stuck-worker accounting.
    pub(crate) script: super::js::ScriptKey,
    pub(crate) work: Work,
    pub(crate) reply: Reply,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolConfig {
    pub(crate) workers: usize,
    pub(crate) max_stuck: usize,
    pub(crate) stack_bytes: usize,
}

/// Metrics of the worker pool; registered by [`super::Codecs::register_metrics`].
#[derive(Clone)]
pub(crate) struct PoolMetrics {
    pub(crate) abandoned: IntCounter,
    pub(crate) stuck: IntGauge,
    pub(crate) refused: IntCounter,
    pub(crate) threads: IntGauge,
}

impl PoolMetrics {
    fn new() -> Self {
        PoolMetrics {
            abandoned: IntCounter::new(
                "loraflow_codec_workers_abandoned_total",
                "JavaScript codec calls that did not stop at their time limit; their worker thread was abandoned",
            )
            .expect("valid metric"),
            stuck: IntGauge::new("loraflow_codec_workers_stuck", "Abandoned codec worker threads still running").expect("valid metric"),
            refused: IntCounter::new(
                "loraflow_codec_calls_refused_total",
                "Codec calls refused at once because their script already has workers stuck and the stuck limit is reached",
            )
            .expect("valid metric"),
            threads: IntGauge::new("loraflow_codec_worker_threads", "Codec worker threads alive, stuck ones included")
                .expect("valid metric"),
        }
    }

    pub(crate) fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.abandoned.clone()))?;
        registry.register(Box::new(self.stuck.clone()))?;
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.threads.clone()))?;
        Ok(())
    }
}

/// The pool. Dropping it stops the idle workers and the watchdog; calls still queued are
/// answered with an engine error, stuck threads end on their own.
pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
}

struct Shared {
    config: PoolConfig,
    state: Mutex<State>,
    /// Workers wait here for jobs.
    work: Condvar,
    /// The watchdog waits here for the next deadline.
    watch: Condvar,
    metrics: PoolMetrics,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(Job, Instant)>,
    /// Running calls by worker id.
    running: HashMap<u64, Slot>,
    /// Worker threads that are not abandoned (idle or running).
    regular: usize,
    idle: usize,
    stuck: usize,
    stuck_by_script: HashMap<super::js::ScriptKey, usize>,
    next_id: u64,
    watchdog: bool,
    closed: bool,
}

struct Slot {
    script: super::js::ScriptKey,
    reply: Option<Reply>,
    /// When the current phase must have ended, and its time limit (for the error).
    deadline: Option<(Instant, Duration)>,
    abandoned: bool,
}

/// A running call's link to the watchdog.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    id: u64,
}

impl Watch {
    /// Starts a phase that must end within `limit` (+ [`GRACE`]).
    pub(crate) fn arm(&self, limit: Duration) {
        let shared = &self.shared;
        let mut state = shared.lock();
        if let Some(slot) = state.running.get_mut(&self.id) {
            slot.deadline = Some((Instant::now() + limit + GRACE, limit));
        }
        drop(state);
        shared.watch.notify_one();
    }

    /// Ends the phase.
    pub(crate) fn disarm(&self) {
        if let Some(slot) = self.shared.lock().running.get_mut(&self.id) {
            slot.deadline = None;
        }
    }
}

impl WorkerPool {
    pub(crate) fn new(config: PoolConfig) -> Self {
        WorkerPool {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                watch: Condvar::new(),
                metrics: PoolMetrics::new(),
            }),
        }
    }

    pub(crate) fn metrics(&self) -> &PoolMetrics {
        &self.shared.metrics
    }

    /// Queues `job`; its reply is called exactly once, possibly before this returns.
    pub(crate) fn submit(&self, job: Job) {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.closed {
            drop(state);
            (job.reply)(Err(CodecError::Engine("codec engine stopped".into())));
            return;
        }
        let stuck_here = state.stuck_by_script.get(&job.script).copied().unwrap_or(0);
        if stuck_here > 0 && state.stuck >= shared.config.max_stuck {
            let error = CodecError::TooManyStuck { script: stuck_here, total: state.stuck };
            drop(state);
            shared.metrics.refused.inc();
            (job.reply)(Err(error));
            return;
        }
        state.queue.push_back((job, Instant::now()));
        if state.queue.len() > state.idle {
            Shared::spawn_worker(shared, &mut state);
        }
        if !state.watchdog {
            state.watchdog = true;
            let watchdog = shared.clone();
            if let Err(e) = std::thread::Builder::new().name("loraflow-codec-watchdog".into()).spawn(move || watchdog.watchdog()) {
                error!(error = %e, "cannot start the codec watchdog thread");
                state.watchdog = false;
            }
        }
        drop(state);
        shared.work.notify_one();
        shared.watch.notify_one();
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        let queued: Vec<_> = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.queue.drain(..).collect()
        };
        self.shared.work.notify_all();
        self.shared.watch.notify_all();
        for (job, _) in queued {
            (job.reply)(Err(CodecError::Engine("codec engine stopped".into())));
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Replies and work run outside the lock, so a panic cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a regular worker if the pool and the thread ceiling allow it.
    fn spawn_worker(shared: &Arc<Shared>, state: &mut State) {
        let PoolConfig { workers, max_stuck, stack_bytes } = shared.config;
        if state.regular >= workers || state.regular + state.stuck >= workers + max_stuck {
            return;
        }
        state.next_id += 1;
        let id = state.next_id;
        let worker = shared.clone();
        let spawned = std::thread::Builder::new().name("loraflow-codec".into()).stack_size(stack_bytes).spawn(move || worker.worker(id));
        match spawned {
            Ok(_) => {
                // Detached: an abandoned worker is never joined.
                state.regular += 1;
                shared.metrics.threads.inc();
            }
            Err(e) => error!(error = %e, "cannot start a codec worker thread"),
        }
    }

    fn worker(self: Arc<Self>, id: u64) {
        let mut state = self.lock();
        loop {
            state.idle += 1;
            while state.queue.is_empty() && !state.closed {
                state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.idle -= 1;
            if state.closed {
                state.regular -= 1;
                self.metrics.threads.dec();
                return;
            }
            let (job, _) = state.queue.pop_front().expect("queue is not empty");
            state.running.insert(id, Slot { script: job.script, reply: Some(job.reply), deadline: None, abandoned: false });
            drop(state);

            let watch = Watch { shared: self.clone(), id };
            let work = job.work;
            let (result, keep) = std::panic::catch_unwind(AssertUnwindSafe(|| work(&watch)))
                .unwrap_or_else(|_| (Err(CodecError::Engine("codec panicked".into())), None));

            state = self.lock();
            let slot = state.running.remove(&id).expect("a running worker has its slot");
            if slot.abandoned {
                // The caller has had its answer; whatever the runtime holds now is suspect.
                drop(keep);
                state.stuck -= 1;
                self.metrics.stuck.dec();
                if let Some(n) = state.stuck_by_script.get_mut(&slot.script) {
                    *n -= 1;
                    if *n == 0 {
                        state.stuck_by_script.remove(&slot.script);
                    }
                }
                warn!(outcome = ?result.as_ref().map(|_| ()).map_err(|e| e.kind()), "abandoned codec worker came back");
                if state.closed || state.regular >= self.config.workers {
                    self.metrics.threads.dec();
                    return;
                }
                // The pool is short of a worker (the stuck limit stopped a replacement).
                state.regular += 1;
                continue;
            }
            drop(state);
            if let Some(keep) = keep {
                keep();
            }
            if let Some(reply) = slot.reply {
                reply(result);
            }
            state = self.lock();
        }
    }

    fn watchdog(self: Arc<Self>) {
        let mut state = self.lock();
        loop {
            if state.closed {
                return;
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut answers: Vec<(Reply, CodecError)> = Vec::new();
            let mut expired = Vec::new();
            for (id, slot) in &state.running {
                match slot.deadline {
                    Some((at, _)) if at <= now && !slot.abandoned => expired.push(*id),
                    Some((at, _)) if !slot.abandoned => next = Some(next.map_or(at, |n| n.min(at))),
                    _ => {}
                }
            }
            for id in expired {
                let slot = state.running.get_mut(&id).expect("expired slot is present");
                slot.abandoned = true;
                let limit = slot.deadline.map_or(Duration::ZERO, |(_, l)| l);
                let script = slot.script.clone();
                if let Some(reply) = slot.reply.take() {
                    answers.push((reply, CodecError::Unresponsive(limit)));
                }
                state.regular -= 1;
                state.stuck += 1;
                *state.stuck_by_script.entry(script).or_default() += 1;
                self.metrics.abandoned.inc();
                self.metrics.stuck.inc();
                warn!(stuck = state.stuck, "codec call did not stop at its time limit; worker thread abandoned");
                Shared::spawn_worker(&self, &mut state);
            }
            while let Some((_, queued_at)) = state.queue.front() {
                let at = *queued_at + QUEUE_TIMEOUT;
                if at > now {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    break;
                }
                let (job, _) = state.queue.pop_front().expect("front exists");
                answers.push((job.reply, CodecError::NoWorker(QUEUE_TIMEOUT)));
            }
            if !answers.is_empty() {
                drop(state);
                for (reply, error) in answers {
                    reply(Err(error));
                }
                state = self.lock();
                continue;
            }
            state = match next {
                Some(at) => self.watch.wait_timeout(state, at.saturating_duration_since(now)).unwrap_or_else(|e| e.into_inner()).0,
                None => self.watch.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}
