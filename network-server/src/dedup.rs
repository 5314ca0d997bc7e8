//! Deduplication across gateways: copies of the same PHYPayload heard by several gateways
//! are collected for `network.dedup_window_ms`, then processed once with every gateway's
//! rx metadata. One task owns the table, so no lock sits on the hot path.
//!
//! Uplinks leave in the order their first copy arrived: every window has the same length,
//! so a FIFO of deadlines closes them in arrival order (a timer wheel may release windows
//! that end in the same millisecond in any order, and two frames of one device sent back to
//! back would then reach the frame-counter check out of order).
//!
//! In a cluster each instance still collects its own copies here, and Redis decides which
//! instance processes the uplink with every instance's copies (`cluster::dedup`). The Redis
//! round trips run on tasks of their own, never on this loop; a forwarder passes their
//! results on in the order the windows closed, so the arrival order above still holds.
//! The exception is an uplink taken over from a collector that died (`cluster::dedup`): it
//! leaves late by design, on its own, once the grace has passed.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use loraflow_packet_forwarder::frame::UplinkFrame;

use crate::cluster::dedup::{uplink_hash, ClusterDedup, Role, TAKEOVER_GRACE};
use crate::cluster::Cluster;

/// One uplink, once, with the copies of every gateway that heard it (best SNR first).
#[derive(Debug, Clone)]
pub struct DedupedUplink {
    pub deduplication_id: Uuid,
    pub phy_payload: Vec<u8>,
    pub frames: Vec<UplinkFrame>,
    /// When the first copy arrived.
    pub first_seen: DateTime<Utc>,
    pub first_seen_instant: Instant,
    /// Cluster mode, on the collector: to be marked done once the uplink is decided, so that
    /// no contributor takes it over.
    pub done: Option<DoneMarker>,
}

/// Marks an uplink done in Redis (`ClusterDedup::mark_done`).
#[derive(Clone)]
pub struct DoneMarker {
    cluster: ClusterDedup,
    hash: String,
}

impl DoneMarker {
    /// On a task of its own: the uplink's answer does not wait for Redis.
    pub fn mark(self) {
        tokio::spawn(async move { self.cluster.mark_done(&self.hash).await });
    }
}

impl std::fmt::Debug for DoneMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoneMarker").field("hash", &self.hash).finish()
    }
}

struct Collecting {
    id: Uuid,
    frames: Vec<UplinkFrame>,
    first_seen: DateTime<Utc>,
    first_seen_instant: Instant,
    /// Cluster mode: this instance's role for the uplink, asked of Redis once.
    claim: Option<Arc<Claim>>,
}

/// One uplink's role, decided by the first task that needs it; the others wait for it.
struct Claim {
    hash: String,
    role: OnceCell<Role>,
}

impl Claim {
    async fn role(&self, cluster: &ClusterDedup) -> Role {
        *self.role.get_or_init(|| cluster.claim(&self.hash)).await
    }
}

/// Where closed windows go.
enum Output {
    /// One instance alone: the uplink as its window closes.
    Direct(mpsc::Sender<DedupedUplink>),
    /// Cluster mode: a task per closed window (Redis round trips), passed on in order;
    /// uplinks taken over from a collector that did not finish them go out directly, late.
    Ordered { windows: mpsc::Sender<JoinHandle<Option<DedupedUplink>>>, taken_over: mpsc::Sender<DedupedUplink> },
}

/// Closed windows waiting for Redis at once, in cluster mode.
const ORDERED_QUEUE: usize = 4096;

pub struct Deduplicator {
    window: Duration,
    /// How long a processed payload is remembered so that a late copy is not processed again.
    remember: Duration,
    collecting: HashMap<Vec<u8>, Collecting>,
    /// Open windows in arrival order, with the time each closes.
    closing: VecDeque<(Instant, Vec<u8>)>,
    done: HashMap<Vec<u8>, Instant>,
    done_order: VecDeque<(Instant, Vec<u8>)>,
    late_copies: prometheus::IntCounter,
    cluster: Option<ClusterDedup>,
}

impl Deduplicator {
    pub fn new(window: Duration, registry: &prometheus::Registry) -> Self {
        let late_copies = prometheus::IntCounter::new(
            "loraflow_dedup_late_copies_total",
            "Copies of an uplink that arrived after its deduplication window closed (ignored)",
        )
        .expect("metric");
        let _ = registry.register(Box::new(late_copies.clone()));
        Deduplicator {
            window,
            // Long enough for late copies from slow backhauls, shorter than the ~3 s after which
            // a device retransmits a confirmed uplink (RX2 closes at +2 s, then ACK_TIMEOUT),
            // which must be answered again.
            remember: (window.max(Duration::from_millis(100)) * 10).min(Duration::from_millis(2500)).max(window),
            collecting: HashMap::new(),
            closing: VecDeque::new(),
            done: HashMap::new(),
            done_order: VecDeque::new(),
            late_copies,
            cluster: None,
        }
    }

    /// Cluster mode: copies heard by other instances count, and only one instance processes
    /// each uplink. Its lock lives as long as a processed payload is remembered here.
    pub fn with_cluster(mut self, cluster: Cluster, registry: &prometheus::Registry) -> Self {
        // The keys must outlive a contributor's takeover check, even for windows above 1 s.
        let ttl = self.remember.max(self.window * 2 + TAKEOVER_GRACE + Duration::from_secs(1));
        self.cluster = Some(ClusterDedup::new(cluster, ttl, registry));
        self
    }

    /// Adds one copy. Returns nothing: the uplink comes out of `expired` when its window ends.
    pub fn add(&mut self, frame: UplinkFrame, now: Instant) {
        self.forget_old(now);
        if self.done.contains_key(&frame.phy_payload) {
            self.late_copies.inc();
            return;
        }
        match self.collecting.entry(frame.phy_payload.clone()) {
            Entry::Occupied(mut e) => {
                let c = e.get_mut();
                if let (Some(cluster), Some(claim)) = (&self.cluster, &c.claim) {
                    share(cluster, claim, &frame);
                }
                keep_best(&mut c.frames, frame);
            }
            Entry::Vacant(e) => {
                self.closing.push_back((now + self.window, e.key().clone()));
                let claim = self.cluster.as_ref().map(|_| Arc::new(Claim { hash: uplink_hash(e.key()), role: OnceCell::new() }));
                if let (Some(cluster), Some(claim)) = (&self.cluster, &claim) {
                    share(cluster, claim, &frame);
                }
                e.insert(Collecting { id: Uuid::new_v4(), frames: vec![frame], first_seen: Utc::now(), first_seen_instant: now, claim });
            }
        }
    }

    fn finish(&mut self, key: Vec<u8>, now: Instant) -> Option<(DedupedUplink, Option<Arc<Claim>>)> {
        let c = self.collecting.remove(&key)?;
        self.done.insert(key.clone(), now + self.remember);
        self.done_order.push_back((now + self.remember, key.clone()));
        let mut frames = c.frames;
        best_first(&mut frames);
        let up = DedupedUplink {
            deduplication_id: c.id,
            phy_payload: key,
            frames,
            first_seen: c.first_seen,
            first_seen_instant: c.first_seen_instant,
            done: None,
        };
        Some((up, c.claim))
    }

    /// Passes a closed window on; in cluster mode once Redis said whether it is processed
    /// here and with which other copies.
    async fn deliver(&self, output: &Output, up: DedupedUplink, claim: Option<Arc<Claim>>) -> Result<(), ()> {
        match output {
            Output::Direct(tx) => tx.send(up).await.map_err(|_| ()),
            Output::Ordered { windows, taken_over } => {
                let cluster = self.cluster.clone();
                let check_at = up.first_seen_instant + self.window + TAKEOVER_GRACE;
                let taken_over = taken_over.clone();
                let task = tokio::spawn(async move {
                    match (cluster, claim) {
                        (Some(cluster), Some(claim)) => resolve(cluster, claim, up, check_at, taken_over).await,
                        _ => Some(up),
                    }
                });
                windows.send(task).await.map_err(|_| ())
            }
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((at, _)) = self.done_order.front() {
            if *at > now {
                break;
            }
            let (_, key) = self.done_order.pop_front().expect("front exists");
            if self.done.get(&key).is_some_and(|t| *t <= now) {
                self.done.remove(&key);
            }
        }
    }

    /// Runs until the input closes. After `shutdown` every open window is closed at once and
    /// later copies are passed on without waiting, so nothing a gateway sent is lost on a
    /// clean stop; the input closes when the packet-forwarder has stopped.
    pub async fn run(mut self, mut input: mpsc::Receiver<UplinkFrame>, output: mpsc::Sender<DedupedUplink>, shutdown: CancellationToken) {
        let output = match self.cluster {
            None => Output::Direct(output),
            Some(_) => {
                let (tx, rx) = mpsc::channel(ORDERED_QUEUE);
                let taken_over = output.clone();
                tokio::spawn(forward_in_order(rx, output));
                Output::Ordered { windows: tx, taken_over }
            }
        };
        let mut stopping = false;
        loop {
            let next_close = self.closing.front().map(|(at, _)| *at);
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    if self.flush_all(&output).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(next_close.unwrap_or_else(Instant::now)), if next_close.is_some() => {
                    let now = Instant::now();
                    while self.closing.front().is_some_and(|(at, _)| *at <= now) {
                        let (_, key) = self.closing.pop_front().expect("front exists");
                        if let Some((up, claim)) = self.finish(key, now) {
                            if self.deliver(&output, up, claim).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                frame = input.recv() => match frame {
                    Some(f) => {
                        self.add(f, Instant::now());
                        if stopping && self.flush_all(&output).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
            }
        }
        let _ = self.flush_all(&output).await;
    }

    async fn flush_all(&mut self, output: &Output) -> Result<(), ()> {
        while let Some((_, key)) = self.closing.pop_front() {
            if let Some((up, claim)) = self.finish(key, Instant::now()) {
                self.deliver(output, up, claim).await?;
            }
        }
        Ok(())
    }
}

/// Cluster mode: hands the copy to the collector if another instance is it. The first copy's
/// task asks Redis for the role; later copies' tasks wait for that answer.
fn share(cluster: &ClusterDedup, claim: &Arc<Claim>, frame: &UplinkFrame) {
    let (cluster, claim, frame) = (cluster.clone(), claim.clone(), frame.clone());
    tokio::spawn(async move {
        if claim.role(&cluster).await == Role::Contributor {
            cluster.contribute(&claim.hash, &frame).await;
        }
    });
}

/// Cluster mode, at the end of this instance's window: the uplink with every instance's
/// copies if this instance processes it, nothing if another one does. A contributor keeps
/// its copies and, at `check_at`, takes the uplink over if the collector did not finish it.
async fn resolve(
    cluster: ClusterDedup,
    claim: Arc<Claim>,
    mut up: DedupedUplink,
    check_at: Instant,
    taken_over: mpsc::Sender<DedupedUplink>,
) -> Option<DedupedUplink> {
    let role = claim.role(&cluster).await;
    cluster.count(role);
    match role {
        Role::Contributor => {
            // Off the ordered path: the uplinks behind this one do not wait for the grace.
            tokio::spawn(async move {
                tokio::time::sleep_until(check_at).await;
                if cluster.take_over(&claim.hash).await {
                    cluster.count(Role::Takeover);
                    tracing::info!(dedup_id = %up.deduplication_id, "collector did not finish the uplink; processing it here");
                    with_copies_of_others(&cluster, &claim, &mut up).await;
                    let _ = taken_over.send(up).await;
                }
            });
            None
        }
        Role::Local | Role::Takeover => Some(up),
        Role::Collector => {
            with_copies_of_others(&cluster, &claim, &mut up).await;
            up.done = Some(DoneMarker { cluster, hash: claim.hash.clone() });
            Some(up)
        }
    }
}

async fn with_copies_of_others(cluster: &ClusterDedup, claim: &Claim, up: &mut DedupedUplink) {
    let others = cluster.collect(&claim.hash, &up.phy_payload).await;
    if !others.is_empty() {
        for f in others {
            keep_best(&mut up.frames, f);
        }
        best_first(&mut up.frames);
    }
}

/// Passes closed windows on in the order they closed, each once its Redis round trips are
/// done (they run side by side; only their results wait for each other).
async fn forward_in_order(mut windows: mpsc::Receiver<JoinHandle<Option<DedupedUplink>>>, output: mpsc::Sender<DedupedUplink>) {
    while let Some(window) = windows.recv().await {
        match window.await {
            Ok(Some(up)) => {
                if output.send(up).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "deduplication task failed; uplink dropped"),
        }
    }
}

/// Adds a copy; a gateway may report the same frame twice (e.g. two antennas, or while it
/// moves between instances): its best copy is kept.
fn keep_best(frames: &mut Vec<UplinkFrame>, frame: UplinkFrame) {
    match frames.iter_mut().find(|f| f.rx_info.gateway_id == frame.rx_info.gateway_id) {
        Some(existing) if better(&frame, existing) => *existing = frame,
        Some(_) => {}
        None => frames.push(frame),
    }
}

fn best_first(frames: &mut [UplinkFrame]) {
    frames.sort_by(|a, b| b.rx_info.snr.total_cmp(&a.rx_info.snr).then(b.rx_info.rssi.cmp(&a.rx_info.rssi)));
}

/// Best copy first: higher SNR, then higher RSSI.
fn better(a: &UplinkFrame, b: &UplinkFrame) -> bool {
    (a.rx_info.snr, a.rx_info.rssi) > (b.rx_info.snr, b.rx_info.rssi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loraflow_packet_forwarder::frame::{Eui64, Modulation, RxInfo, UplinkTxInfo};

    fn frame(gw: u64, phy: &[u8], snr: f32, rssi: i32) -> UplinkFrame {
        UplinkFrame {
            phy_payload: phy.to_vec(),
            tx_info: UplinkTxInfo {
                frequency: 868_100_000,
                modulation: Modulation::Lora { bandwidth: 125_000, spreading_factor: 7, code_rate: "4/5".into() },
            },
            rx_info: RxInfo {
                gateway_id: Eui64::from_u64(gw),
                uplink_id: 1,
                tmst: 1000,
                time: None,
                received_at: Utc::now(),
                channel: 0,
                rf_chain: 0,
                antenna: 0,
                rssi,
                snr,
                crc_status: 1,
                context: vec![],
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn copies_from_three_gateways_come_out_once_best_first() {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out) = mpsc::channel(16);
        let d = Deduplicator::new(Duration::from_millis(200), &prometheus::Registry::new());
        let shutdown = CancellationToken::new();
        tokio::spawn(d.run(rx, out_tx, shutdown.clone()));
        tx.send(frame(1, b"abc", 1.0, -100)).await.unwrap();
        tx.send(frame(2, b"abc", 9.5, -60)).await.unwrap();
        tx.send(frame(3, b"abc", 9.5, -80)).await.unwrap();
        tx.send(frame(2, b"other", 0.0, -90)).await.unwrap();
        let first = out.recv().await.unwrap();
        let second = out.recv().await.unwrap();
        let abc = if first.phy_payload == b"abc" { first } else { second };
        let gws: Vec<u64> = abc.frames.iter().map(|f| f.rx_info.gateway_id.as_u64()).collect();
        assert_eq!(gws, vec![2, 3, 1]);
        // A late copy after the window is ignored.
        tx.send(frame(4, b"abc", 5.0, -50)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(out.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_holds_the_uplink_until_it_ends() {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out) = mpsc::channel(16);
        let d = Deduplicator::new(Duration::from_millis(200), &prometheus::Registry::new());
        tokio::spawn(d.run(rx, out_tx, CancellationToken::new()));
        let start = Instant::now();
        tx.send(frame(1, b"x", 1.0, -100)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        tx.send(frame(2, b"x", 2.0, -100)).await.unwrap();
        let up = out.recv().await.unwrap();
        assert_eq!(up.frames.len(), 2);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_millis(260), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn uplinks_leave_in_the_order_they_arrived() {
        let (tx, rx) = mpsc::channel(256);
        let (out_tx, mut out) = mpsc::channel(256);
        let d = Deduplicator::new(Duration::from_millis(200), &prometheus::Registry::new());
        tokio::spawn(d.run(rx, out_tx, CancellationToken::new()));
        // Many windows closing in the same millisecond, some a little later.
        for i in 0..100u8 {
            tx.send(frame(1, &[i], 1.0, -100)).await.unwrap();
            if i % 40 == 39 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let mut order = Vec::new();
        for _ in 0..100 {
            order.push(out.recv().await.unwrap().phy_payload[0]);
        }
        assert_eq!(order, (0..100).collect::<Vec<u8>>());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_open_windows_in_arrival_order() {
        let (tx, rx) = mpsc::channel(64);
        let (out_tx, mut out) = mpsc::channel(64);
        let d = Deduplicator::new(Duration::from_secs(5), &prometheus::Registry::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(d.run(rx, out_tx, shutdown.clone()));
        for i in 0..30u8 {
            tx.send(frame(1, &[i], 1.0, -100)).await.unwrap();
        }
        tokio::task::yield_now().await;
        shutdown.cancel();
        for i in 0..30u8 {
            assert_eq!(out.recv().await.unwrap().phy_payload, [i]);
        }
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_open_windows() {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out) = mpsc::channel(16);
        let d = Deduplicator::new(Duration::from_secs(5), &prometheus::Registry::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(d.run(rx, out_tx, shutdown.clone()));
        tx.send(frame(1, b"keep", 1.0, -100)).await.unwrap();
        tokio::task::yield_now().await;
        shutdown.cancel();
        assert_eq!(out.recv().await.unwrap().phy_payload, b"keep");
        // Copies still arriving while the gateway side stops are passed on at once.
        tx.send(frame(1, b"late", 1.0, -100)).await.unwrap();
        assert_eq!(out.recv().await.unwrap().phy_payload, b"late");
        drop(tx);
        task.await.unwrap();
    }
}
