//! Deduplication across instances. Copies of one uplink reach every instance that holds a
//! gateway which heard it; each instance collects its own copies for the window (`dedup`),
//! and Redis decides which instance processes the uplink:
//!
//! - On its first copy an instance tries `SET {p}:dedup:{hash}:lock <instance> NX PX <ttl>`.
//!   The one that sets it is the collector: when its window closes it reads the copies the
//!   others handed over (`{p}:dedup:{hash}:copies`) and processes the uplink with all of them.
//! - The others are contributors: they push every copy they hear to that list and do not
//!   process the uplink.
//! - When Redis does not answer in time an instance processes the uplink with its own copies
//!   (as one instance alone would); the frame-counter compare-and-set in the database then
//!   still lets only one instance accept it.
//!
//! - A collector can die (SIGKILL, crash) after taking the lock, while the contributors have
//!   already acknowledged their copies to their gateways. So the collector marks the uplink
//!   done (`{p}:dedup:{hash}:done`) once its frame-counter compare-and-set (or DevNonce check)
//!   is decided and the uplink published; every contributor keeps its own copies and checks
//!   the marker 500 ms after its window closed (`TAKEOVER_GRACE`). Without it, the one
//!   contributor that sets `{p}:dedup:{hash}:takeover` NX processes the uplink with the
//!   handed-over copies and its own. A collector that was only slow loses the frame-counter
//!   compare-and-set to it, or wins it and the taker drops the uplink as processed elsewhere.
//!
//! The lock lives as long as a processed payload is remembered locally: long enough for late
//! copies, shorter than the wait before a device repeats a confirmed uplink, which must be
//! processed (answered) again.

use std::time::Duration;

use loraflow_packet_forwarder::frame::{RxInfo, UplinkFrame, UplinkTxInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Cluster;

/// How long after its own window closed a contributor waits for the collector's done marker.
/// The collector's window closes no later than the contributor's (plus one Redis round trip:
/// the contributor's claim went out with its first copy), and its processing up to the
/// frame-counter compare-and-set takes milliseconds (`loraflow_uplink_processing_seconds`);
/// 500 ms leaves room for a slow database, while a taken-over uplink (at about the window +
/// 500 ms) is still processed before RX2 (2 s), so a confirmed uplink is still answered.
pub const TAKEOVER_GRACE: Duration = Duration::from_millis(500);

/// How long one Redis round trip may take before the instance decides alone. Redis answers
/// in well under a millisecond on a LAN; waiting longer would eat into the receive windows.
const REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// What this instance does with an uplink it heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the uplink's lock: processes it with its own copies and those handed over.
    Collector,
    /// Another instance holds the lock: hands its copies over and does not process it.
    Contributor,
    /// Redis did not answer: processes it with its own copies.
    Local,
    /// A contributor whose collector did not mark the uplink done in time: processes it.
    Takeover,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Collector, Role::Contributor, Role::Local, Role::Takeover];

    /// The `role` label of `loraflow_cluster_dedup_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::Contributor => "contributor",
            Role::Local => "local",
            Role::Takeover => "takeover",
        }
    }
}

/// One copy as handed between instances. The PHYPayload is left out: it is what the key
/// names, and the collector has it.
#[derive(Serialize)]
struct CopyOut<'a> {
    tx: &'a UplinkTxInfo,
    rx: &'a RxInfo,
}

#[derive(Deserialize)]
struct CopyIn {
    tx: UplinkTxInfo,
    rx: RxInfo,
}

fn encode(frame: &UplinkFrame) -> Vec<u8> {
    serde_json::to_vec(&CopyOut { tx: &frame.tx_info, rx: &frame.rx_info }).expect("uplink copy serializes")
}

fn decode(bytes: &[u8], phy_payload: &[u8]) -> Result<UplinkFrame, serde_json::Error> {
    let c: CopyIn = serde_json::from_slice(bytes)?;
    Ok(UplinkFrame { phy_payload: phy_payload.to_vec(), tx_info: c.tx, rx_info: c.rx })
}

/// The uplink's name in Redis: SHA-256 of the PHYPayload, in hex.
pub fn uplink_hash(phy_payload: &[u8]) -> String {
    hex::encode(Sha256::digest(phy_payload))
}

/// The Redis side of deduplication for one instance. Cheap to clone.
#[derive(Clone)]
pub struct ClusterDedup {
    cluster: Cluster,
    ttl_ms: u64,
    total: prometheus::IntCounterVec,
}

impl ClusterDedup {
    /// `ttl`: how long an uplink's lock and handed-over copies live.
    pub fn new(cluster: Cluster, ttl: Duration, registry: &prometheus::Registry) -> ClusterDedup {
        let total = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "loraflow_cluster_dedup_total",
                "Uplinks by this instance's role: collector (processed here with every instance's copies), \
                 contributor (copies handed to the instance that processed it), local (Redis did not answer), \
                 takeover (a contributor processed it because its collector did not finish it)",
            ),
            &["role"],
        )
        .expect("metric");
        for r in Role::ALL {
            total.with_label_values(&[r.as_str()]);
        }
        let _ = registry.register(Box::new(total.clone()));
        ClusterDedup { cluster, ttl_ms: ttl.as_millis().max(1) as u64, total }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn key(&self, hash: &str, what: &str) -> String {
        self.cluster.key(&["dedup", hash, what])
    }

    /// Tries to become the uplink's collector.
    pub async fn claim(&self, hash: &str) -> Role {
        let mut conn = self.cluster.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(hash, "lock")).arg(self.cluster.instance_id()).arg("NX").arg("PX").arg(self.ttl_ms);
        let result: redis::RedisResult<Option<String>> = super::bounded(REDIS_TIMEOUT, cmd.query_async(&mut conn)).await;
        self.cluster.report(&result);
        match result {
            Ok(Some(_)) => Role::Collector,
            Ok(None) => Role::Contributor,
            Err(e) => {
                tracing::debug!(error = %e, "no deduplication lock from Redis; processing the uplink here");
                Role::Local
            }
        }
    }

    /// Hands one copy to the collector.
    pub async fn contribute(&self, hash: &str, frame: &UplinkFrame) {
        let copies = self.key(hash, "copies");
        let mut conn = self.cluster.conn();
        let mut pipe = redis::pipe();
        pipe.atomic().rpush(&copies, encode(frame)).ignore().pexpire(&copies, self.ttl_ms as i64).ignore();
        let result: redis::RedisResult<()> = super::bounded(REDIS_TIMEOUT, pipe.query_async(&mut conn)).await;
        self.cluster.report(&result);
        if let Err(e) = result {
            tracing::debug!(error = %e, gateway_id = %frame.rx_info.gateway_id, "uplink copy not handed over; the collector goes without it");
        }
    }

    /// The copies the other instances handed over so far.
    pub async fn collect(&self, hash: &str, phy_payload: &[u8]) -> Vec<UplinkFrame> {
        let mut conn = self.cluster.conn();
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.key(hash, "copies")).arg(0).arg(-1);
        let result: redis::RedisResult<Vec<Vec<u8>>> = super::bounded(REDIS_TIMEOUT, cmd.query_async(&mut conn)).await;
        self.cluster.report(&result);
        match result {
            Ok(raw) => raw
                .iter()
                .filter_map(|b| match decode(b, phy_payload) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable uplink copy from another instance; ignored");
                        None
                    }
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "copies of other instances not read; processing with this instance's own");
                Vec::new()
            }
        }
    }

    /// The collector has decided the uplink (its frame counter or DevNonce is settled in the
    /// database): no contributor needs to take it over.
    pub async fn mark_done(&self, hash: &str) {
        let mut conn = self.cluster.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(hash, "done")).arg(self.cluster.instance_id()).arg("PX").arg(self.ttl_ms);
        let result: redis::RedisResult<()> = super::bounded(REDIS_TIMEOUT, cmd.query_async(&mut conn)).await;
        self.cluster.report(&result);
        if let Err(e) = result {
            // The contributors take the uplink over; the frame-counter compare-and-set (or the
            // DevNonce check) drops it there as processed elsewhere.
            tracing::debug!(error = %e, "uplink not marked done in Redis");
        }
    }

    /// A contributor, after the grace: whether it processes the uplink because the collector
    /// did not mark it done. Of several contributors only one does. When Redis does not answer
    /// nothing is taken over: the collector most likely lives (it is Redis that is away), and
    /// every contributor would process the uplink.
    pub async fn take_over(&self, hash: &str) -> bool {
        let mut conn = self.cluster.conn();
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.key(hash, "done"));
        let done: redis::RedisResult<bool> = super::bounded(REDIS_TIMEOUT, exists.query_async(&mut conn)).await;
        self.cluster.report(&done);
        match done {
            Ok(true) => return false,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(error = %e, "collector's done marker not read; uplink left to it");
                return false;
            }
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(hash, "takeover")).arg(self.cluster.instance_id()).arg("NX").arg("PX").arg(self.ttl_ms);
        let won: redis::RedisResult<Option<String>> = super::bounded(REDIS_TIMEOUT, cmd.query_async(&mut conn)).await;
        self.cluster.report(&won);
        match won {
            Ok(w) => w.is_some(),
            Err(e) => {
                tracing::debug!(error = %e, "no takeover key from Redis; uplink left to the collector");
                false
            }
        }
    }

    pub fn count(&self, role: Role) {
        self.total.with_label_values(&[role.as_str()]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use loraflow_packet_forwarder::frame::{Eui64, Modulation};

    #[test]
    fn a_copy_survives_the_trip_between_instances() {
        let frame = UplinkFrame {
            phy_payload: vec![0x40, 1, 2, 3],
            tx_info: UplinkTxInfo {
                frequency: 868_300_000,
                modulation: Modulation::Lora { bandwidth: 125_000, spreading_factor: 9, code_rate: "4/5".into() },
            },
            rx_info: RxInfo {
                gateway_id: Eui64::from_u64(0xa1),
                uplink_id: 77,
                tmst: 4_000_000_123,
                time: Some(Utc::now()),
                received_at: Utc::now(),
                channel: 2,
                rf_chain: 1,
                antenna: 0,
                rssi: -117,
                snr: -12.25,
                crc_status: 1,
                context: vec![0xee, 0x6b, 0x28, 0x7b],
            },
        };
        let bytes = encode(&frame);
        assert!(bytes.len() < 400, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes, &frame.phy_payload).unwrap(), frame);
    }

    #[test]
    fn the_hash_names_the_payload() {
        assert_eq!(uplink_hash(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_ne!(uplink_hash(b"abd"), uplink_hash(b"abc"));
    }
}

/// The protocol on the machine's Redis (two or three `Cluster`s under a prefix of the test's
/// own), through the real deduplicator.
#[cfg(test)]
mod on_redis {
    use std::collections::HashMap;
    use std::time::Duration;

    use chrono::Utc;
    use loraflow_packet_forwarder::frame::{Eui64, Modulation, RxInfo, UplinkFrame, UplinkTxInfo};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use crate::cluster::{Cluster, ClusterConfig};
    use crate::dedup::{DedupedUplink, Deduplicator};

    const WINDOW: Duration = Duration::from_millis(200);

    fn redis_url() -> String {
        std::env::var("LORAFLOW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
    }

    fn frame(gw: u64, phy: &[u8], snr: f32) -> UplinkFrame {
        UplinkFrame {
            phy_payload: phy.to_vec(),
            tx_info: UplinkTxInfo {
                frequency: 868_100_000,
                modulation: Modulation::Lora { bandwidth: 125_000, spreading_factor: 7, code_rate: "4/5".into() },
            },
            rx_info: RxInfo {
                gateway_id: Eui64::from_u64(gw),
                uplink_id: gw as u32,
                tmst: 1000 + gw as u32,
                time: None,
                received_at: Utc::now(),
                channel: 0,
                rf_chain: 0,
                antenna: 0,
                rssi: -80,
                snr,
                crc_status: 1,
                context: vec![1, 2, 3, 4],
            },
        }
    }

    /// One instance's deduplicator on `redis_url`: its input, its output, its metrics.
    struct Instance {
        input: mpsc::Sender<UplinkFrame>,
        output: mpsc::Receiver<DedupedUplink>,
        registry: prometheus::Registry,
        cluster: Cluster,
    }

    async fn instance(url: &str, prefix: &str, id: &str) -> Instance {
        let registry = prometheus::Registry::new();
        let config = ClusterConfig { redis_url: url.into(), key_prefix: prefix.into(), instance_id: id.into() };
        let cluster = Cluster::connect(&config, &registry).await.expect("redis").expect("cluster mode");
        let (input, rx) = mpsc::channel(1024);
        let (tx, output) = mpsc::channel(1024);
        let d = Deduplicator::new(WINDOW, &registry).with_cluster(cluster.clone(), &registry);
        tokio::spawn(d.run(rx, tx, CancellationToken::new()));
        Instance { input, output, registry, cluster }
    }

    fn prefix() -> String {
        format!("lftest-dedup-{}", uuid::Uuid::new_v4().simple())
    }

    fn role_count(registry: &prometheus::Registry, role: &str) -> u64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "loraflow_cluster_dedup_total")
            .flat_map(|f| f.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.name() == "role" && l.value() == role))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Everything that comes out within `within`, processed (marked done) as the uplink
    /// steps do.
    async fn drain(out: &mut mpsc::Receiver<DedupedUplink>, within: Duration) -> Vec<DedupedUplink> {
        let deadline = tokio::time::Instant::now() + within;
        let mut got = Vec::new();
        while let Ok(Some(up)) = tokio::time::timeout_at(deadline, out.recv()).await {
            got.push(processed(up));
        }
        got
    }

    fn processed(mut up: DedupedUplink) -> DedupedUplink {
        if let Some(done) = up.done.take() {
            done.mark();
        }
        up
    }

    /// Everything that comes out within `within`, left unprocessed, as by an instance that
    /// dies before deciding it.
    async fn drain_and_die(out: &mut mpsc::Receiver<DedupedUplink>, within: Duration) -> Vec<DedupedUplink> {
        let deadline = tokio::time::Instant::now() + within;
        let mut got = Vec::new();
        while let Ok(Some(up)) = tokio::time::timeout_at(deadline, out.recv()).await {
            got.push(up);
        }
        got
    }

    /// One uplink: its first copy (gateway 1) on `a`, 30 ms later gateway 2's on `b` and
    /// gateway 3's on `c`.
    async fn heard_by_three(a: &Instance, b: &Instance, c: &Instance, phy: &[u8]) {
        a.input.send(frame(1, phy, 1.0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        b.input.send(frame(2, phy, 9.0)).await.unwrap();
        c.input.send(frame(3, phy, 5.0)).await.unwrap();
    }

    #[tokio::test]
    async fn a_collector_that_never_finishes_is_taken_over_by_exactly_one_contributor_with_every_copy_it_handed_over() {
        let p = prefix();
        let url = redis_url();
        let mut a = instance(&url, &p, "a").await;
        let mut b = instance(&url, &p, "b").await;
        let mut c = instance(&url, &p, "c").await;
        heard_by_three(&a, &b, &c, b"dies with its collector").await;
        // `a` collects the uplink and dies before deciding it: never marked done.
        let from_a = drain_and_die(&mut a.output, WINDOW + Duration::from_millis(150)).await;
        assert_eq!(from_a.len(), 1);
        assert!(from_a[0].done.is_some(), "the collector's uplink is to be marked done");

        let (from_b, from_c) = tokio::join!(
            drain(&mut b.output, WINDOW + crate::cluster::dedup::TAKEOVER_GRACE + Duration::from_millis(400)),
            drain(&mut c.output, WINDOW + crate::cluster::dedup::TAKEOVER_GRACE + Duration::from_millis(400))
        );
        let taken: Vec<_> = from_b.iter().chain(&from_c).collect();
        assert_eq!(taken.len(), 1, "exactly one contributor takes over: b {} c {}", from_b.len(), from_c.len());
        let up = taken[0];
        assert_eq!(gateways(up), [2, 3], "the contributors' copies, best first");
        assert_eq!(up.phy_payload, b"dies with its collector");
        assert!(up.done.is_none(), "nobody waits for a taker");
        assert_eq!(role_count(&b.registry, "takeover") + role_count(&c.registry, "takeover"), 1);
        assert_eq!(role_count(&b.registry, "contributor") + role_count(&c.registry, "contributor"), 2);
        assert!(drain(&mut b.output, Duration::from_millis(300)).await.is_empty());
        assert!(drain(&mut c.output, Duration::from_millis(10)).await.is_empty());
    }

    #[tokio::test]
    async fn the_taker_waits_for_the_grace_after_its_window() {
        let p = prefix();
        let url = redis_url();
        let a = instance(&url, &p, "a").await;
        let mut b = instance(&url, &p, "b").await;
        // `a` takes the lock and dies at once (its deduplicator never even closes the window).
        a.input.send(frame(1, b"lock only", 1.0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        let started = tokio::time::Instant::now();
        b.input.send(frame(2, b"lock only", 3.0)).await.unwrap();
        let up = tokio::time::timeout(Duration::from_secs(2), b.output.recv()).await.expect("taken over").unwrap();
        let waited = started.elapsed();
        let due = WINDOW + crate::cluster::dedup::TAKEOVER_GRACE;
        eprintln!("takeover: uplink out {waited:?} after the taker's first copy (due {due:?})");
        assert!(waited >= due && waited < due + Duration::from_millis(100), "{waited:?}");
        assert_eq!(gateways(&up), [2]);
        assert_eq!(role_count(&b.registry, "takeover"), 1);
    }

    #[tokio::test]
    async fn a_collector_that_marks_the_uplink_done_is_not_taken_over() {
        let p = prefix();
        let url = redis_url();
        let mut a = instance(&url, &p, "a").await;
        let mut b = instance(&url, &p, "b").await;
        let mut c = instance(&url, &p, "c").await;
        for i in 0..5u8 {
            heard_by_three(&a, &b, &c, &[0x40, i, 0xdd]).await;
        }
        let from_a = drain(&mut a.output, WINDOW + Duration::from_millis(300)).await;
        assert_eq!(from_a.len(), 5);
        let (from_b, from_c) = tokio::join!(
            drain(&mut b.output, WINDOW + crate::cluster::dedup::TAKEOVER_GRACE + Duration::from_millis(400)),
            drain(&mut c.output, WINDOW + crate::cluster::dedup::TAKEOVER_GRACE + Duration::from_millis(400))
        );
        assert!(from_b.is_empty() && from_c.is_empty(), "no takeover: b {} c {}", from_b.len(), from_c.len());
        assert_eq!(role_count(&b.registry, "takeover") + role_count(&c.registry, "takeover"), 0);
        assert_eq!(role_count(&a.registry, "collector"), 5);
    }

    fn gateways(up: &DedupedUplink) -> Vec<u64> {
        up.frames.iter().map(|f| f.rx_info.gateway_id.as_u64()).collect()
    }

    #[tokio::test]
    async fn the_first_instance_collects_every_copy_and_the_others_process_nothing() {
        let p = prefix();
        let url = redis_url();
        let mut a = instance(&url, &p, "a").await;
        let mut b = instance(&url, &p, "b").await;
        let mut c = instance(&url, &p, "c").await;
        let started = tokio::time::Instant::now();
        a.input.send(frame(1, b"one uplink", 1.0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        b.input.send(frame(2, b"one uplink", 9.0)).await.unwrap();
        c.input.send(frame(3, b"one uplink", 5.0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A second copy on a contributor, later in the window, is handed over as well.
        c.input.send(frame(4, b"one uplink", -3.0)).await.unwrap();

        let first = processed(tokio::time::timeout(Duration::from_secs(1), a.output.recv()).await.expect("processed by a").unwrap());
        let waited = started.elapsed();
        eprintln!("collector: uplink out {waited:?} after its first copy (window {WINDOW:?})");
        assert!(waited >= WINDOW && waited < WINDOW + Duration::from_millis(100), "{waited:?}");
        let mut from_a = vec![first];
        from_a.extend(drain(&mut a.output, Duration::from_millis(300)).await);
        assert_eq!(from_a.len(), 1);
        assert_eq!(gateways(&from_a[0]), [2, 3, 1, 4], "every instance's copies, best SNR first");
        assert_eq!(from_a[0].frames[0].rx_info.context, [1, 2, 3, 4]);
        assert_eq!(from_a[0].phy_payload, b"one uplink");
        assert!(drain(&mut b.output, Duration::from_millis(100)).await.is_empty());
        assert!(drain(&mut c.output, Duration::from_millis(100)).await.is_empty());
        assert_eq!(role_count(&a.registry, "collector"), 1);
        assert_eq!(role_count(&b.registry, "contributor"), 1);
        assert_eq!(role_count(&c.registry, "contributor"), 1);
        assert_eq!(role_count(&a.registry, "local") + role_count(&b.registry, "local") + role_count(&c.registry, "local"), 0);
    }

    #[tokio::test]
    async fn many_uplinks_heard_by_two_instances_come_out_once_each_in_arrival_order() {
        let p = prefix();
        let url = redis_url();
        let mut a = instance(&url, &p, "a").await;
        let mut b = instance(&url, &p, "b").await;
        // Which instance hears each uplink first varies; the other hears it up to 40 ms later.
        let n = 60u8;
        for i in 0..n {
            let phy = [0x40, i, 0xaa];
            let (first, second) = if i % 3 == 0 { (&b, &a) } else { (&a, &b) };
            first.input.send(frame(10, &phy, 2.0)).await.unwrap();
            if i % 4 == 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            second.input.send(frame(20, &phy, 4.0)).await.unwrap();
        }
        // Both at once: each processes (marks done) what it collects as it comes out.
        let (from_a, from_b) =
            tokio::join!(drain(&mut a.output, Duration::from_millis(1500)), drain(&mut b.output, Duration::from_millis(1500)));
        let mut seen: HashMap<u8, usize> = HashMap::new();
        for up in from_a.iter().chain(&from_b) {
            *seen.entry(up.phy_payload[1]).or_default() += 1;
            assert_eq!(gateways(up), [20, 10], "both copies of uplink {}", up.phy_payload[1]);
        }
        assert_eq!(seen.len(), n as usize, "every uplink processed");
        assert!(seen.values().all(|c| *c == 1), "none twice: {seen:?}");
        for out in [&from_a, &from_b] {
            let order: Vec<u8> = out.iter().map(|u| u.phy_payload[1]).collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "arrival order: {order:?}");
        }
        assert_eq!(role_count(&a.registry, "collector") + role_count(&b.registry, "collector"), n as u64);
        assert_eq!(role_count(&a.registry, "contributor") + role_count(&b.registry, "contributor"), n as u64);
        assert_eq!(role_count(&a.registry, "takeover") + role_count(&b.registry, "takeover"), 0);
    }

    /// A TCP relay to the real Redis that can be cut, as a network failure would.
    async fn relay(to: &str) -> (String, CancellationToken) {
        let target = to.trim_start_matches("redis://").split('/').next().unwrap().to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = CancellationToken::new();
        let stop = cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((mut inbound, _)) = accepted else { break };
                let (stop, target) = (stop.clone(), target.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        (format!("redis://{addr}/0"), cut)
    }

    #[tokio::test]
    async fn without_redis_each_instance_processes_its_own_copies() {
        let p = prefix();
        let (url, cut) = relay(&redis_url()).await;
        let mut a = instance(&url, &p, "a").await;
        a.input.send(frame(1, b"before the cut", 1.0)).await.unwrap();
        let got = drain(&mut a.output, Duration::from_millis(500)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(role_count(&a.registry, "collector"), 1);
        assert!(a.cluster.is_up());

        cut.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = tokio::time::Instant::now();
        a.input.send(frame(1, b"after the cut", 1.0)).await.unwrap();
        a.input.send(frame(2, b"after the cut", 3.0)).await.unwrap();
        let up = tokio::time::timeout(Duration::from_secs(1), a.output.recv()).await.expect("processed here, alone").unwrap();
        let waited = started.elapsed();
        assert_eq!(gateways(&up), [2, 1]);
        assert!(waited < WINDOW + Duration::from_millis(250), "Redis did not hold the uplink up: {waited:?}");
        assert!(drain(&mut a.output, Duration::from_millis(200)).await.is_empty());
        assert_eq!(role_count(&a.registry, "local"), 1);
        assert!(!a.cluster.is_up(), "reported down");
        let up_gauge: f64 = a
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == "loraflow_cluster_redis_up")
            .map(|f| f.get_metric()[0].get_gauge().get_value())
            .sum();
        assert_eq!(up_gauge, 0.0);
    }
}
