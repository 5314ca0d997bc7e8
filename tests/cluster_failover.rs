//! One of three instances killed with SIGKILL during a steady stream of uplinks (issue 14,
//! "Failure behaviour"). Three real loraflow processes share one PostgreSQL database, the local
//! Redis (a key prefix of the test's own) and a Mosquitto the test starts. Six gateways hear
//! every uplink, two attached to each instance. Instance 0 is killed mid-stream; a little
//! later its two gateways re-attach to the survivors by sending PULL_DATA there, as they would
//! behind a UDP load balancer whose health check noticed the dead instance.
//!
//! Every uplink of the stream was also heard by four gateways on instances that survive, so
//! every one must be published exactly once: none twice (cross-instance deduplication, the
//! frame-counter compare-and-set), none lost (not even one whose deduplication the killed
//! instance was leading when it died). After the move the re-attached gateways' copies are
//! used, and a downlink for a device best heard by a moved gateway leaves through the instance
//! that holds the gateway now, queued over REST on yet another instance.
//!
//! And with Redis gone (a private `redis-server` the test kills), copies of one uplink that
//! reach three instances are still published once: each instance deduplicates alone and the
//! PostgreSQL frame-counter compare-and-set lets only one of them process the frame.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{PrivateRedis, TestCluster};
use common::device::Device;
use common::gateway::{b64, rxpk, FakeGateway, PullResp, PULL_ACK, PULL_RESP};
use common::{eventually, provision};
use mqtt_support::{Mosquitto, Subscriber};
use serde_json::{json, Value};

const INSTANCES: usize = 3;
/// Gateway `g` starts on instance `g % INSTANCES`.
const GATEWAYS: usize = 6;
const DEVICES: usize = 8;
/// Devices sending in each round, in turn: each device sends every `DEVICES / PER_ROUND`
/// rounds (1 s), no faster than a class A device whose receive windows have closed.
const PER_ROUND: usize = 2;
const ROUNDS: usize = 40;
const ROUND: Duration = Duration::from_millis(250);
/// Instance 0 dies in this round, inside the deduplication window of its uplinks (some of
/// which it leads)…
const KILL_AT: usize = 14;
/// …this long after they were sent…
const KILL_AFTER: Duration = Duration::from_millis(60);
/// …and in that round its gateways' copies arrive this much before the others', so that it
/// leads the deduplication of those uplinks (their first copy elsewhere is a race otherwise).
const LEAD_BY: Duration = Duration::from_millis(15);
/// …and its gateways PULL from the survivors from this one on (2 s later: a load balancer's
/// health check).
const MOVE_AT: usize = 22;
const DEDUP_WINDOW_MS: &str = "200";
const NWK_S_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const APP_S_KEY: &str = "3c4fcf098815f7aba6d2ae2816157e2b";

fn gateway_eui(g: usize) -> String {
    format!("00000000000fa0{g:02x}")
}

fn dev_eui(d: usize) -> String {
    format!("00000000000fde{d:02x}")
}

/// Where gateway `g` sends after the move: gateways of instance 0 go to 1 and 2 in turn.
fn instance_after_move(g: usize) -> usize {
    match g % INSTANCES {
        0 => 1 + (g / INSTANCES) % (INSTANCES - 1),
        i => i,
    }
}

struct Net {
    cluster: TestCluster,
    _broker: Mosquitto,
    events: Subscriber,
    app_id: String,
    gateways: Vec<FakeGateway>,
    devices: Vec<Device>,
    /// Events read while waiting for another kind: (topic, JSON).
    unread: Vec<(String, Value)>,
}

/// Three instances, six gateways (two per instance, connected), four ABP devices, all
/// provisioned through instance 0; `redis_url`: a Redis other than the machine's.
async fn setup(redis_url: Option<&str>) -> Net {
    let broker = Mosquitto::start_new();
    let mut env = vec![("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", DEDUP_WINDOW_MS)];
    if let Some(url) = redis_url {
        env.push(("LORAFLOW_CLUSTER__REDIS_URL", url));
    }
    let cluster = TestCluster::start(INSTANCES, &broker.url(), &env).await;
    let events = Subscriber::connect(broker.addr(), "application/+/device/+/event/+", false).await;
    // Provisioned through instance 0 only: the others learn of it as in production.
    let api = cluster.api(0);
    let p = provision::application_and_profile(&api, "NONE", "").await;
    let mut gateways = Vec::new();
    for g in 0..GATEWAYS {
        provision::gateway(&api, &gateway_eui(g)).await;
        gateways.push(FakeGateway::new(&gateway_eui(g), cluster.instances[g % INSTANCES].gateway).await);
    }
    let mut devices = Vec::new();
    for d in 0..DEVICES {
        let dev_addr = format!("0f0000{d:02x}");
        provision::abp_device(&api, &p, &dev_eui(d), &dev_addr, NWK_S_KEY, APP_S_KEY).await;
        devices.push(Device::abp(&dev_eui(d), &dev_addr, NWK_S_KEY, APP_S_KEY));
    }
    // Changes reach the other instances within 1 s (issue 14); a little more for a busy machine.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for gw in &mut gateways {
        connect(gw).await;
    }
    Net { cluster, _broker: broker, events, app_id: p.application_id, gateways, devices, unread: Vec::new() }
}

/// Two PULL_DATA, each answered: a server that knew the gateway at another address moves its
/// downlink path after two in a row from the new one (docs/operations.md, "Gateway security").
/// Receive errors (an ICMP port unreachable from the dead instance) are skipped.
async fn connect(gw: &mut FakeGateway) {
    for _ in 0..2 {
        let token = gw.pull_data().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65_536];
        loop {
            let r = tokio::time::timeout_at(deadline, gw.socket.recv_from(&mut buf)).await;
            let Ok(r) = r else { panic!("no PULL_ACK for gateway {} from {}", hex::encode(gw.eui), gw.server) };
            if let Ok((n, _)) = r {
                let d = &buf[..n];
                if d.len() >= 4 && d[0] == 2 && d[3] == PULL_ACK && u16::from_be_bytes([d[1], d[2]]) == token {
                    break;
                }
            }
        }
    }
}

/// The devices that send in round `r`.
fn senders(r: usize) -> impl Iterator<Item = usize> {
    (0..PER_ROUND).map(move |j| (r * PER_ROUND + j) % DEVICES)
}

/// The concentrator timestamp of gateway `g` for round `r`: each gateway has its own clock.
fn tmst(g: usize, r: usize) -> u32 {
    (g as u32 * 7_777_777).wrapping_add(r as u32 * 150_000)
}

/// The `up` events per (devEui, fCnt), with each event's gateways, until `expected` distinct
/// uplinks arrived and nothing more came for 2 s, or 30 s passed.
async fn collect_up_events(net: &mut Net, expected: usize) -> BTreeMap<(String, u64), Vec<BTreeSet<String>>> {
    let mut got: BTreeMap<(String, u64), Vec<BTreeSet<String>>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let quiet = if got.len() >= expected { Duration::from_secs(2) } else { Duration::from_secs(5) };
        let left = deadline.saturating_duration_since(Instant::now()).min(quiet);
        let Ok(Some((topic, payload))) = tokio::time::timeout(left, net.events.messages.recv()).await else { break };
        if !topic.ends_with("/event/up") {
            continue;
        }
        let ev: Value = serde_json::from_slice(&payload).expect("up event JSON");
        let dev = ev["deviceInfo"]["devEui"].as_str().expect("devEui").to_ascii_lowercase();
        let f_cnt = ev["fCnt"].as_u64().expect("fCnt");
        let gws =
            ev["rxInfo"].as_array().expect("rxInfo").iter().filter_map(|r| r["gatewayId"].as_str().map(str::to_ascii_lowercase)).collect();
        got.entry((dev, f_cnt)).or_default().push(gws);
    }
    got
}

/// Where in its round instance 0 is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// Before the round's uplinks are sent: no deduplication of instance 0 is open.
    BetweenWindows,
    /// Inside the window of the round's uplinks, all of which instance 0 leads.
    InsideItsWindow,
}

/// SIGKILL of instance 0 between deduplication windows: the survivors publish every uplink
/// once, the moved gateways' copies are used, and a downlink leaves through the instance that
/// holds the moved gateway now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_instance_under_load_loses_and_duplicates_no_uplink_and_its_gateways_move() {
    let mut net = setup(None).await;
    stream_through_a_kill(&mut net, Kill::BetweenWindows).await;
    downlink_leaves_through_the_instance_now_holding_the_gateway(&mut net).await;
}

/// SIGKILL of instance 0 while it leads the deduplication of uplinks that the survivors
/// heard too (they handed their copies to it): those must not be lost either (issue 14:
/// nothing another instance acknowledged is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_instance_leading_an_uplinks_dedup_does_not_lose_that_uplink() {
    let mut net = setup(None).await;
    stream_through_a_kill(&mut net, Kill::InsideItsWindow).await;
}

/// The stream of [`ROUNDS`], instance 0 killed in round [`KILL_AT`] and its gateways moved in
/// [`MOVE_AT`]; asserts that every uplink was published exactly once.
async fn stream_through_a_kill(net: &mut Net, kill: Kill) {
    let inside = kill == Kill::InsideItsWindow;

    // The stream: every uplink heard by all six gateways, each copy sent to the instance the
    // gateway is attached to at that moment (the dead one's address until the move).
    let mut sent: Vec<(String, u64, usize)> = Vec::new();
    let started = Instant::now();
    for r in 0..ROUNDS {
        if r == KILL_AT && !inside {
            net.cluster.instances[0].sigkill();
        }
        if r == MOVE_AT {
            for g in (0..GATEWAYS).filter(|g| g % INSTANCES == 0) {
                let gw = &mut net.gateways[g];
                gw.server = net.cluster.instances[instance_after_move(g)].gateway;
                connect(gw).await;
            }
        }
        for d in senders(r) {
            let f_cnt = u64::from(net.devices[d].f_cnt_up);
            let phy = net.devices[d].uplink(false, 1, &[r as u8, d as u8]);
            // The first copy to arrive (whose instance leads the deduplication) and the best
            // one (whose gateway a downlink would take) move round the instances. In the
            // round of the kill, instance 0 hears every uplink first and leads it.
            let order: Vec<usize> = if r == KILL_AT && inside {
                let (first, rest): (Vec<usize>, Vec<usize>) = (0..GATEWAYS).partition(|g| g % INSTANCES == 0);
                first.into_iter().chain(rest).collect()
            } else {
                (0..GATEWAYS).map(|k| (k + r + d) % GATEWAYS).collect()
            };
            for (k, g) in order.into_iter().enumerate() {
                if r == KILL_AT && inside && k == GATEWAYS / INSTANCES {
                    tokio::time::sleep(LEAD_BY).await;
                }
                let rssi = -60 - 5 * ((g + d) % GATEWAYS) as i32;
                net.gateways[g].push_rxpk(vec![rxpk(&phy, tmst(g, r), rssi, 8.0 - ((g + d) % GATEWAYS) as f64)]).await;
            }
            sent.push((dev_eui(d), f_cnt, r));
        }
        if r == KILL_AT && inside {
            tokio::time::sleep(KILL_AFTER).await;
            net.cluster.instances[0].sigkill();
        }
        let next = started + ROUND * (r as u32 + 1);
        tokio::time::sleep_until(next.into()).await;
    }

    let got = collect_up_events(net, sent.len()).await;
    let expected: BTreeSet<(String, u64)> = sent.iter().map(|(d, f, _)| (d.clone(), *f)).collect();
    let round_of = |d: &str, f: u64| sent.iter().find(|(sd, sf, _)| sd == d && *sf == f).map(|s| s.2);
    let lost: Vec<String> =
        expected.iter().filter(|k| !got.contains_key(*k)).map(|(d, f)| format!("{d}/{f} (round {:?})", round_of(d, *f))).collect();
    let duplicated: Vec<String> = got
        .iter()
        .filter(|(_, evs)| evs.len() > 1)
        .map(|((d, f), evs)| format!("{d}/{f} x{} (round {:?})", evs.len(), round_of(d, *f)))
        .collect();
    let foreign: Vec<&(String, u64)> = got.keys().filter(|k| !expected.contains(*k)).collect();
    assert!(
        lost.is_empty() && duplicated.is_empty() && foreign.is_empty(),
        "{} uplinks sent (kill {kill:?} at round {KILL_AT}, move at {MOVE_AT}): lost {lost:?}; published more than once {duplicated:?}; unknown {foreign:?}\n{}",
        sent.len(),
        verdicts(net, 1..INSTANCES).await
    );

    // After the move (and a round for the new routes), the moved gateways' copies are used
    // again: the instances they re-attached to accept them.
    let moved: BTreeSet<String> = (0..GATEWAYS).filter(|g| g % INSTANCES == 0).map(gateway_eui).collect();
    for (d, f, r) in sent.iter().filter(|s| s.2 > MOVE_AT) {
        let gws = &got[&(d.clone(), *f)][0];
        assert!(moved.is_subset(gws), "uplink {d}/{f} of round {r}: rxInfo {gws:?} lacks the moved gateways {moved:?}");
    }
    // Before the kill, every instance took part.
    for (d, f, _) in sent.iter().filter(|s| s.2 + 2 < KILL_AT) {
        let gws = &got[&(d.clone(), *f)][0];
        assert_eq!(gws.len(), GATEWAYS, "uplink {d}/{f} before the kill: rxInfo {gws:?} should list every gateway");
    }
}

/// A downlink queued over REST on instance 2 for device 0, whose next uplink gateway 0 (moved
/// from the dead instance 0 to instance 1) hears best and gateway 2 (on instance 2) hears
/// first and poorly: instance 2 processes the uplink, the PULL_RESP reaches gateway 0 from
/// instance 1's address, and gateway 0's TX_ACK to instance 1 settles the queue item.
async fn downlink_leaves_through_the_instance_now_holding_the_gateway(net: &mut Net) {
    let holder = net.cluster.instances[instance_after_move(0)].gateway;
    assert_eq!(net.gateways[0].server, holder);
    // Keep-alives, as a real forwarder sends every few seconds (routes expire without them).
    for g in [0, 2] {
        connect(&mut net.gateways[g]).await;
    }
    let api = net.cluster.api(2);
    let (s, item) = api.post(&format!("/api/devices/{}/queue", dev_eui(0)), json!({"fPort": 5, "data": b64(b"moved")})).await;
    assert_eq!(s, 201, "{item}");
    let item_id = item["id"].as_str().expect("queue item id").to_string();
    for gw in &net.gateways {
        gw.drain().await;
    }
    while net.events.messages.try_recv().is_ok() {}
    net.unread.clear();

    let (s, act) = api.get(&format!("/api/devices/{}/activation", dev_eui(0))).await;
    assert_eq!(s, 200, "{act}");
    let f_cnt_down = act["fCntDown"].as_u64().expect("fCntDown") as u32;
    let f_cnt_up = net.devices[0].f_cnt_up;
    let phy = net.devices[0].uplink(false, 1, b"after-move");
    // Gateway 2's weak copy first: instance 2 leads the uplink and decides the downlink, which
    // must then be handed to instance 1 for gateway 0.
    let t = 500_000_000;
    net.gateways[2].push_rxpk(vec![rxpk(&phy, t + 31, -115, -6.0)]).await;
    tokio::time::sleep(LEAD_BY).await;
    net.gateways[0].push_rxpk(vec![rxpk(&phy, t, -50, 10.0)]).await;

    let (resp, from) = next_pull_resp_from(&net.gateways[0], Duration::from_secs(5)).await.expect("the downlink through gateway 0");
    assert_eq!(from, holder, "gateway 0 is held by instance 1 now: the PULL_RESP must come from there");
    let dl = net.devices[0].read_downlink(&resp.phy_payload(), f_cnt_down);
    assert_eq!((dl.f_port, dl.payload.as_slice()), (Some(5), &b"moved"[..]));
    net.gateways[0].tx_ack(resp.token, "NONE").await;

    let txack = wait_event(net, "txack", Duration::from_secs(5)).await;
    assert_eq!(
        (txack["gatewayId"].as_str(), txack["queueItemId"].as_str()),
        (Some(gateway_eui(0).as_str()), Some(item_id.as_str())),
        "{txack}"
    );
    let up = wait_event(net, "up", Duration::from_secs(1)).await;
    assert_eq!(up["fCnt"], json!(f_cnt_up), "{up}");
    let (s, q) = api.get(&format!("/api/devices/{}/queue", dev_eui(0))).await;
    assert_eq!(s, 200, "{q}");
    assert_eq!(q["result"], json!([]), "the TX_ACK on instance 1 settled the item queued on instance 2");
    assert!(next_pull_resp_from(&net.gateways[2], Duration::from_millis(500)).await.is_none(), "one downlink, through gateway 0 only");
}

/// The next PULL_RESP and the address it came from, skipping ACKs.
async fn next_pull_resp_from(gw: &FakeGateway, timeout: Duration) -> Option<(PullResp, SocketAddr)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, gw.socket.recv_from(&mut buf)).await.ok()?.ok()?;
        let d = &buf[..n];
        if d.len() > 4 && d[0] == 2 && d[3] == PULL_RESP {
            let v: Value = serde_json::from_slice(&d[4..]).expect("PULL_RESP JSON");
            return Some((PullResp { token: u16::from_be_bytes([d[1], d[2]]), txpk: v["txpk"].clone() }, from));
        }
    }
}

/// The next `kind` event of the test's application; events of other kinds are kept for later.
async fn wait_event(net: &mut Net, kind: &str, within: Duration) -> Value {
    let suffix = format!("/event/{kind}");
    let prefix = format!("application/{}/", net.app_id);
    let wanted = |topic: &str| topic.starts_with(&prefix) && topic.ends_with(&suffix);
    if let Some(i) = net.unread.iter().position(|(t, _)| wanted(t)) {
        return net.unread.remove(i).1;
    }
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (topic, payload) = tokio::time::timeout_at(deadline, net.events.messages.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event within {within:?}; other events: {:?}", net.unread))
            .expect("subscriber open");
        let ev: Value = serde_json::from_slice(&payload).expect("event JSON");
        if wanted(&topic) {
            return ev;
        }
        net.unread.push((topic, ev));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_copies_reaching_three_instances_are_still_published_once() {
    let mut redis = PrivateRedis::start();
    let mut net = setup(Some(&redis.url())).await;
    redis.kill();
    for i in 0..INSTANCES {
        let api = net.cluster.api(i);
        eventually(Duration::from_secs(10), || async {
            let (_, ready) = api.get("/health/ready").await;
            (ready["checks"]["redis"]["status"] == "down").then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("instance {i} never noticed that Redis is gone"));
    }

    // Every uplink heard by all six gateways, i.e. by every instance; the first copy at a
    // different instance each time.
    let mut sent = Vec::new();
    for r in 0..16 {
        for d in senders(r) {
            let f_cnt = u64::from(net.devices[d].f_cnt_up);
            let phy = net.devices[d].uplink(false, 1, &[r as u8, d as u8]);
            for k in 0..GATEWAYS {
                let g = (k + r + d) % GATEWAYS;
                net.gateways[g].push_rxpk(vec![rxpk(&phy, tmst(g, r), -60 - g as i32, 5.0)]).await;
            }
            sent.push((dev_eui(d), f_cnt, r));
        }
        tokio::time::sleep(ROUND).await;
    }
    let got = collect_up_events(&mut net, sent.len()).await;
    let expected: BTreeSet<(String, u64)> = sent.iter().map(|(d, f, _)| (d.clone(), *f)).collect();
    let lost: Vec<_> = expected.iter().filter(|k| !got.contains_key(*k)).collect();
    let duplicated: Vec<_> = got.iter().filter(|(_, evs)| evs.len() > 1).map(|(k, evs)| (k, evs.len())).collect();
    assert!(
        lost.is_empty() && duplicated.is_empty(),
        "without Redis: lost {lost:?}, published more than once {duplicated:?}\n{}",
        verdicts(&net, 0..INSTANCES).await
    );
    assert_eq!(got.len(), expected.len(), "{got:?}");
    // Each frame counted once in the database.
    for d in 0..DEVICES {
        let (s, act) = net.cluster.api(1).get(&format!("/api/devices/{}/activation", dev_eui(d))).await;
        assert_eq!((s, act["fCntUp"].as_u64()), (200, Some(u64::from(net.devices[d].f_cnt_up))), "{act}");
    }
}

/// The instances' counts of rejected uplinks and deduplication roles, for a failure message.
async fn verdicts(net: &Net, instances: std::ops::Range<usize>) -> String {
    let mut out = String::new();
    for i in instances {
        let text = net.cluster.api(i).metrics().await;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && (l.contains("rejected_total") || l.contains("cluster_dedup")) && !l.ends_with(" 0"))
            .collect();
        out.push_str(&format!("instance {i}: {lines:?}\n"));
    }
    out
}
