//! Uplinks of one device are handled one at a time, in arrival order: a burst of distinct
//! frames is never lost to a frame-counter race, after a stalled server or during a database
//! outage, and a replayed frame is still refused.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PUSH_ACK};
use common::provision::{self, Provisioned};
use common::{eventually, metric, Api, Backend, TestServer};
use mqtt_support::Subscriber;
use serde_json::Value;
use tokio::time::Instant;

const GATEWAY: &str = "00000000000000c1";
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";

fn dev_eui(i: usize) -> String {
    format!("70b3d57ed00{i:05x}")
}

fn dev_addr(i: usize) -> String {
    format!("010{i:05x}")
}

async fn metrics(api: &Api) -> String {
    reqwest::get(format!("{}/metrics", api.base)).await.unwrap().text().await.unwrap()
}

/// Provisions `n` ABP devices, a few REST calls at a time.
async fn abp_devices(api: &Api, p: &Provisioned, n: usize) -> Vec<Device> {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .map(|i| async move {
            provision::abp_device(api, p, &dev_eui(i), &dev_addr(i), NWK_S_KEY, APP_S_KEY).await;
            Device::abp(&dev_eui(i), &dev_addr(i), NWK_S_KEY, APP_S_KEY)
        })
        .buffered(8)
        .collect()
        .await
}

/// An `up` event as the test needs it.
#[derive(Debug, Clone)]
struct Up {
    dev_eui: String,
    f_cnt: u64,
    dedup_id: String,
    at: Instant,
}

/// Collects every `up` event in the background.
fn collect_ups(mut sub: Subscriber) -> Arc<Mutex<Vec<Up>>> {
    let ups = Arc::new(Mutex::new(Vec::new()));
    let sink = ups.clone();
    tokio::spawn(async move {
        while let Some((topic, payload)) = sub.messages.recv().await {
            if !topic.ends_with("/event/up") {
                continue;
            }
            let ev: Value = serde_json::from_slice(&payload).expect("event JSON");
            sink.lock().unwrap().push(Up {
                dev_eui: ev["deviceInfo"]["devEui"].as_str().unwrap().to_string(),
                f_cnt: ev["fCnt"].as_u64().unwrap(),
                dedup_id: ev["deduplicationId"].as_str().unwrap().to_string(),
                at: Instant::now(),
            });
        }
    });
    ups
}

/// Waits until `want` distinct (device, FCnt) pairs have an event.
async fn wait_for_ups(ups: &Arc<Mutex<Vec<Up>>>, want: usize, within: Duration) -> Vec<Up> {
    let got = eventually(within, || async {
        let ups = ups.lock().unwrap().clone();
        let distinct: BTreeSet<(String, u64)> = ups.iter().map(|u| (u.dev_eui.clone(), u.f_cnt)).collect();
        (distinct.len() >= want).then_some(ups)
    })
    .await;
    got.unwrap_or_else(|| {
        let ups = ups.lock().unwrap();
        let distinct: BTreeSet<(String, u64)> = ups.iter().map(|u| (u.dev_eui.clone(), u.f_cnt)).collect();
        panic!("{} of {want} uplinks arrived as up events", distinct.len())
    })
}

/// Every sent (device, FCnt) has exactly one uplink behind its events (an MQTT redelivery
/// repeats the deduplication id; a second processing would bring a new one), and nothing
/// else was published.
fn assert_each_once(ups: &[Up], sent: &BTreeSet<(String, u64)>) {
    let mut by_frame: BTreeMap<(String, u64), BTreeSet<&str>> = BTreeMap::new();
    for u in ups {
        by_frame.entry((u.dev_eui.clone(), u.f_cnt)).or_default().insert(&u.dedup_id);
    }
    let unexpected: Vec<_> = by_frame.keys().filter(|k| !sent.contains(*k)).collect();
    assert!(unexpected.is_empty(), "events for frames never sent: {unexpected:?}");
    let missing: Vec<_> = sent.iter().filter(|k| !by_frame.contains_key(*k)).collect();
    assert!(missing.is_empty(), "{} frames without an event, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    let twice: Vec<_> = by_frame.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "{} frames processed more than once, e.g. {:?}", twice.len(), twice.first());
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

struct Setup {
    server: TestServer,
    api: Api,
    p: Provisioned,
    gw: FakeGateway,
    ups: Arc<Mutex<Vec<Up>>>,
}

async fn setup(server: TestServer) -> Setup {
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    provision::gateway(&api, GATEWAY).await;
    let gw = FakeGateway::new(GATEWAY, server.gateway).await;
    let sub = Subscriber::connect(server.mqtt.expect("embedded broker"), "application/+/device/+/event/up", false).await;
    Setup { server, api, p, gw, ups: collect_ups(sub) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_back_to_back_uplinks_of_one_device_are_all_accepted_in_order_and_a_replay_is_not() {
    let server = TestServer::start(Backend::Postgres, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "100")]).await;
    let mut s = setup(server).await;
    let mut dev = abp_devices(&s.api, &s.p, 1).await.remove(0);
    let frames: Vec<Vec<u8>> = (0..12u8).map(|i| dev.uplink(false, 2, &[i; 4])).collect();
    let mut tokens = Vec::new();
    for (i, phy) in frames.iter().enumerate() {
        tokens.push(s.gw.push_rxpk(vec![rxpk(phy, 1_000_000 + i as u32 * 1000, -60, 7.0)]).await);
    }
    for t in tokens {
        s.gw.expect_ack(PUSH_ACK, t).await;
    }
    let ups = wait_for_ups(&s.ups, 12, Duration::from_secs(15)).await;
    let order: Vec<u64> = ups.iter().map(|u| u.f_cnt).collect();
    assert_eq!(order, (0..12).collect::<Vec<u64>>(), "published in FCnt order, each once");
    let text = metrics(&s.api).await;
    assert_eq!(metric(&text, "loraflow_uplinks_accepted_total", &[]), 12.0);
    assert_eq!(metric(&text, "loraflow_uplinks_rejected_total", &[]), 0.0);

    // FCnt 5 again, once the deduplicator has forgotten it (10 windows): a replay.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let t = s.gw.push_rxpk(vec![rxpk(&frames[5], 2_000_000, -60, 7.0)]).await;
    s.gw.expect_ack(PUSH_ACK, t).await;
    let replays = eventually(Duration::from_secs(5), || async {
        let n = metric(&metrics(&s.api).await, "loraflow_uplinks_rejected_total", &[("reason", "replay")]);
        (n >= 1.0).then_some(n)
    })
    .await;
    assert_eq!(replays, Some(1.0), "the replayed frame is rejected as a replay");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.ups.lock().unwrap().len(), 12, "no event for the replay");
    assert_eq!(metric(&metrics(&s.api).await, "loraflow_uplinks_accepted_total", &[]), 12.0);
    drop(s.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_devices_sending_ten_frames_each_while_the_server_is_stopped_lose_nothing() {
    const DEVICES: usize = 100;
    const FRAMES: u32 = 10;
    let server = TestServer::start(Backend::Postgres, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "200")]).await;
    let mut s = setup(server).await;
    let mut devs = abp_devices(&s.api, &s.p, DEVICES).await;

    signal(s.server.pid(), "STOP");
    let mut sent = BTreeSet::new();
    let mut tokens = Vec::new();
    // Like a busy gateway: each PUSH_DATA carries frames of ten devices; every device's
    // frames follow each other back to back.
    for round in 0..FRAMES {
        for group in devs.chunks_mut(10) {
            let mut rxpks = Vec::new();
            for dev in group.iter_mut() {
                sent.insert((dev.dev_eui.to_string(), u64::from(dev.f_cnt_up)));
                let phy = dev.uplink(false, 2, &round.to_be_bytes());
                rxpks.push(rxpk(&phy, round * 1_000_000, -70, 5.0));
            }
            tokens.push(s.gw.push_rxpk(rxpks).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(s.server.pid(), "CONT");
    for t in tokens {
        s.gw.expect_ack(PUSH_ACK, t).await;
    }

    let ups = wait_for_ups(&s.ups, DEVICES * FRAMES as usize, Duration::from_secs(40)).await;
    assert_each_once(&ups, &sent);
    // Each device's events come in FCnt order.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for u in &ups {
        if let Some(prev) = last.insert(&u.dev_eui, u.f_cnt) {
            assert!(u.f_cnt > prev, "{}: FCnt {} published after {prev}", u.dev_eui, u.f_cnt);
        }
    }
    let text = metrics(&s.api).await;
    assert_eq!(metric(&text, "loraflow_uplinks_accepted_total", &[]), (DEVICES * FRAMES as usize) as f64);
    assert_eq!(metric(&text, "loraflow_uplinks_rejected_total", &[]), 0.0);
}

/// A TCP proxy in front of PostgreSQL that can play an outage: every open connection is
/// cut, and new ones are accepted but never answered (a blackhole, like a host that is down)
/// until the outage ends. The shared PostgreSQL server itself is never touched.
struct DbProxy {
    port: u16,
    down: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    async fn start(target: String) -> DbProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (down, conns) = (down.clone(), conns.clone());
            async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else { continue };
                    let target = target.clone();
                    let down = down.clone();
                    let task = tokio::spawn(async move {
                        if down.load(std::sync::atomic::Ordering::SeqCst) {
                            // Blackholed: held open, never answered, closed when the outage ends.
                            std::future::pending::<()>().await;
                        }
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    let mut conns = conns.lock().unwrap();
                    conns.retain(|t| !t.is_finished());
                    conns.push(task);
                }
            }
        });
        DbProxy { port, down, conns, accept }
    }

    /// Starts or ends the outage; either way every connection open now is cut.
    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set_down(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_database_outage_under_a_steady_stream_loses_and_duplicates_nothing() {
    const DEVICES: usize = 300;
    const OUTAGE: Duration = Duration::from_secs(10);
    let real = loraflow_network_server::storage::testing::fresh_postgres_url().await;
    let mut url = reqwest::Url::parse(&real).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = DbProxy::start(target).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.port)).unwrap();
    // SQLite only names the backend for the helper; the URL below replaces its database.
    let server =
        TestServer::start(Backend::Sqlite, &[("LORAFLOW_DATABASE__URL", url.as_str()), ("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "200")]).await;
    let mut s = setup(server).await;
    let mut devs = abp_devices(&s.api, &s.p, DEVICES).await;

    // Each device sends every 1.5 to 3 s, first frames spread over the first 2 s: about
    // 130 uplinks/s in all. 5 s before the outage, 10 s of outage, 4 s after.
    let start = Instant::now();
    let outage_at = start + Duration::from_secs(5);
    let stop_at = outage_at + OUTAGE + Duration::from_secs(4);
    let period = |i: usize| Duration::from_millis(1500 + (i as u64 * 7919) % 1500);
    let mut next: Vec<Instant> = (0..DEVICES).map(|i| start + Duration::from_millis((i as u64 * 104_729) % 2000)).collect();
    let mut sent = BTreeSet::new();
    let mut during = (0usize, 0usize); // (frames sent during the outage, events seen then)
    let mut unpersisted_seen = 0.0f64;
    let mut outage_state = 0; // 0 before, 1 during, 2 after
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut tmst: u32 = 0;
    while Instant::now() < stop_at {
        tick.tick().await;
        let now = Instant::now();
        if outage_state == 0 && now >= outage_at {
            proxy.set_down(true);
            outage_state = 1;
        } else if outage_state == 1 && now >= outage_at + OUTAGE {
            unpersisted_seen = metric(&metrics(&s.api).await, "loraflow_fcnt_unpersisted_devices", &[]);
            proxy.set_down(false);
            outage_state = 2;
        }
        let mut rxpks = Vec::new();
        for (i, dev) in devs.iter_mut().enumerate() {
            if next[i] <= now {
                next[i] += period(i);
                sent.insert((dev.dev_eui.to_string(), u64::from(dev.f_cnt_up)));
                tmst = tmst.wrapping_add(1000);
                rxpks.push(rxpk(&dev.uplink(false, 2, &[i as u8, dev.f_cnt_up as u8]), tmst, -70, 5.0));
                if outage_state == 1 {
                    during.0 += 1;
                }
            }
        }
        for chunk in rxpks.chunks(8) {
            s.gw.push_rxpk(chunk.to_vec()).await;
        }
    }
    s.gw.drain().await;

    let ups = wait_for_ups(&s.ups, sent.len(), Duration::from_secs(30)).await;
    assert_each_once(&ups, &sent);
    let text = metrics(&s.api).await;
    assert_eq!(metric(&text, "loraflow_uplinks_rejected_total", &[]), 0.0, "{text}");
    assert!(unpersisted_seen > 0.0, "the outage was real: counters were kept in memory (saw {unpersisted_seen})");

    // Events kept flowing during the outage: after the frame-counter writer noticed it
    // (at most a few seconds), no second without up events.
    let (from, to) = (outage_at + Duration::from_secs(4), outage_at + OUTAGE);
    let mut per_second = vec![0usize; (to - from).as_secs() as usize];
    for u in &ups {
        if u.at >= from && u.at < to {
            per_second[(u.at - from).as_secs() as usize] += 1;
            during.1 += 1;
        }
    }
    eprintln!("{} frames sent, {} during the outage; up events per second from 4 s into it: {per_second:?}", sent.len(), during.0);
    assert!(per_second.iter().all(|n| *n > 0), "up events per second late in the outage: {per_second:?}");
    assert!(during.1 * 4 >= during.0, "{} events in the last 6 s of the outage for {} frames sent during it", during.1, during.0);

    // The counters reach the database once it is back.
    let persisted = eventually(Duration::from_secs(10), || async {
        (metric(&metrics(&s.api).await, "loraflow_fcnt_unpersisted_devices", &[]) == 0.0).then_some(())
    })
    .await;
    assert!(persisted.is_some(), "counters kept in memory were written when the database returned");
    drop(s.server);
    drop(proxy);
    loraflow_network_server::storage::testing::drop_postgres_database(&real).await;
}
