//! Uplinks in a cluster: copies of one uplink reaching different instances are processed
//! once with every gateway's metadata; a join heard through several instances is accepted
//! once; consecutive uplinks of one device processed by different instances (whose session
//! caches lag behind each other) are all accepted, and a replay still is not. Real loraflow
//! processes on one PostgreSQL database, the machine's Redis and a Mosquitto of the test's own.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::collections::HashMap;
use std::time::Duration;

use common::cluster::{TestCluster, REDIS_URL};
use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::{eventually, metric, Api};
use mqtt_support::{Mosquitto, Subscriber};
use serde_json::{json, Value};

const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";
const APP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const GATEWAYS: [&str; 3] = ["00000000000000c0", "00000000000000c1", "00000000000000c2"];

/// Three instances (or `n`), gateway `i` attached to instance `i`, one application and a
/// profile that asks nothing of the device (no downlinks but the answers under test).
struct World {
    // Dropped before the broker.
    cluster: TestCluster,
    _broker: Mosquitto,
    gws: Vec<FakeGateway>,
    sub: Subscriber,
    app_id: String,
    profile_id: String,
    tmst: u32,
}

async fn world(n: usize) -> World {
    world_on_redis(n, None).await
}

/// `redis_url`: instead of the machine's Redis (a relay to it, say).
async fn world_on_redis(n: usize, redis_url: Option<&str>) -> World {
    let broker = Mosquitto::start_new();
    let mut env = vec![("LORAFLOW_NETWORK__ALLOW_UNKNOWN_GATEWAYS", "true"), ("LORAFLOW_NETWORK__EXTRA_CHANNELS", "")];
    if let Some(url) = redis_url {
        env.push(("LORAFLOW_CLUSTER__REDIS_URL", url));
    }
    let cluster = TestCluster::start(n, &broker.url(), &env).await;
    let mut gws = Vec::new();
    for (i, id) in GATEWAYS.iter().enumerate().take(n) {
        let mut gw = FakeGateway::new(id, cluster.instances[i].gateway).await;
        let t = gw.pull_data().await;
        gw.expect_ack(PULL_ACK, t).await;
        gws.push(gw);
    }
    let api = cluster.api(0);
    let (s, app) = api.post("/api/applications", json!({"name": "cluster"})).await;
    assert_eq!(s, 201, "{app}");
    let (s, dp) = api
        .post(
            "/api/device-profiles",
            json!({"name": "quiet", "region": "EU868", "macVersion": "1.0.3", "regParamsRevision": "RP002-1.0.3",
                   "supportsOtaa": true, "supportsClassC": false, "adrEnabled": false, "payloadCodec": "NONE",
                   "payloadCodecScript": "", "devStatusReqFreq": 0}),
        )
        .await;
    assert_eq!(s, 201, "{dp}");
    let sub = Subscriber::connect(broker.addr(), "application/#", false).await;
    World {
        cluster,
        _broker: broker,
        gws,
        sub,
        app_id: app["id"].as_str().unwrap().into(),
        profile_id: dp["id"].as_str().unwrap().into(),
        tmst: 1_000_000,
    }
}

impl World {
    fn api(&self, i: usize) -> Api {
        self.cluster.api(i)
    }

    async fn create_device(&self, dev_eui: &str) {
        let (s, b) = self
            .api(0)
            .post(
                "/api/devices",
                json!({"devEui": dev_eui, "name": dev_eui, "applicationId": self.app_id, "deviceProfileId": self.profile_id}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }

    /// An ABP device activated through instance 0 (the others have not cached it).
    async fn abp_device(&self, dev_eui: &str, dev_addr: &str) -> Device {
        self.create_device(dev_eui).await;
        let (s, b) = self
            .api(0)
            .post(&format!("/api/devices/{dev_eui}/activate"), json!({"devAddr": dev_addr, "nwkSKey": NWK_S_KEY, "appSKey": APP_S_KEY}))
            .await;
        assert_eq!(s, 200, "{b}");
        Device::abp(dev_eui, dev_addr, NWK_S_KEY, APP_S_KEY)
    }

    /// `phy` heard by gateway `gw` with `snr`, on the gateway's clock `tmst`.
    async fn hear(&mut self, gw: usize, phy: &[u8], tmst: u32, snr: f64) {
        let t = self.gws[gw].push_rxpk(vec![rxpk(phy, tmst, -70 - gw as i32, snr)]).await;
        self.gws[gw].expect_ack(PUSH_ACK, t).await;
    }

    fn next_tmst(&mut self) -> u32 {
        self.tmst = self.tmst.wrapping_add(3_000_000);
        self.tmst
    }

    /// Every event of `kind` published within `within`, by device.
    async fn events(&mut self, kind: &str, within: Duration) -> Vec<Value> {
        let suffix = format!("/event/{kind}");
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, self.sub.messages.recv()).await {
            if topic.starts_with(&format!("application/{}/device/", self.app_id)) && topic.ends_with(&suffix) {
                out.push(serde_json::from_slice(&payload).expect("event JSON"));
            }
        }
        out
    }

    /// The stored uplink frame counter (next expected), as REST reports it.
    async fn f_cnt_up(&self, dev_eui: &str) -> u64 {
        self.f_cnt_up_via(0, dev_eui).await
    }

    /// The same, asked of instance `i`.
    async fn f_cnt_up_via(&self, i: usize, dev_eui: &str) -> u64 {
        let (s, b) = self.api(i).get(&format!("/api/devices/{dev_eui}/activation")).await;
        assert_eq!(s, 200, "{b}");
        b["fCntUp"].as_u64().expect("fCntUp")
    }

    /// A metric summed over every instance.
    async fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut sum = 0.0;
        for i in 0..self.cluster.instances.len() {
            sum += metric(&self.api(i).metrics().await, name, labels);
        }
        sum
    }

    /// The PULL_RESPs each gateway gets within `within`, each acknowledged as sent (so that
    /// no instance retries in RX2).
    async fn downlinks(&self, within: Duration) -> Vec<(usize, Vec<u8>)> {
        let per_gateway = self.gws.iter().enumerate().map(|(i, gw)| async move {
            let deadline = tokio::time::Instant::now() + within;
            let mut got = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                let Some(resp) = gw.next_pull_resp(left).await else { break };
                gw.tx_ack(resp.token, "NONE").await;
                got.push((i, resp.phy_payload()));
            }
            got
        });
        futures_util::future::join_all(per_gateway).await.into_iter().flatten().collect()
    }
}

fn gateways_of(up: &Value) -> Vec<String> {
    up["rxInfo"].as_array().expect("rxInfo").iter().map(|r| r["gatewayId"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn one_uplink_heard_through_three_instances_is_processed_once_with_every_gateway() {
    let mut w = world(3).await;
    let dev_eui = "00000000000c1001";
    let mut dev = w.abp_device(dev_eui, "01c10001").await;
    const UPLINKS: u32 = 20;
    for i in 0..UPLINKS {
        let phy = dev.uplink(false, 1, &[i as u8]);
        let tmst = w.next_tmst();
        // Which instance hears it first, and how long before the others, varies; the copy
        // heard last is the best one, so a collector must wait for the others' copies.
        let order: [usize; 3] = match i % 3 {
            0 => [0, 1, 2],
            1 => [2, 0, 1],
            _ => [1, 2, 0],
        };
        let gap = Duration::from_millis([0, 5, 20, 60][i as usize % 4]);
        for (k, gw) in order.into_iter().enumerate() {
            w.hear(gw, &phy, tmst + k as u32 * 7, k as f64 * 3.0).await;
            tokio::time::sleep(gap).await;
        }
        // Uplinks of a device are seconds apart in the field; across instances their order
        // is only kept when the previous one has been processed.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ups = w.events("up", Duration::from_secs(2)).await;
    let mut by_f_cnt: HashMap<u64, Vec<&Value>> = HashMap::new();
    for up in &ups {
        by_f_cnt.entry(up["fCnt"].as_u64().unwrap()).or_default().push(up);
    }
    for f_cnt in 0..UPLINKS as u64 {
        let got = by_f_cnt.get(&f_cnt).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), 1, "uplink {f_cnt} published once, got {}", got.len());
        let mut gws = gateways_of(got[0]);
        assert_eq!(gws.len(), 3, "uplink {f_cnt}: every gateway's copy: {gws:?}");
        // Best SNR first: the copy heard last.
        let order: [usize; 3] = match f_cnt % 3 {
            0 => [0, 1, 2],
            1 => [2, 0, 1],
            _ => [1, 2, 0],
        };
        assert_eq!(gws[0], GATEWAYS[order[2]], "uplink {f_cnt}: best copy first");
        gws.sort();
        assert_eq!(gws, GATEWAYS, "uplink {f_cnt}");
    }
    assert_eq!(ups.len(), UPLINKS as usize, "nothing else published");
    assert_eq!(w.f_cnt_up(dev_eui).await, UPLINKS as u64, "the frame counter advanced once per uplink");
    assert_eq!(w.metric_sum("loraflow_cluster_dedup_total", &[("role", "collector")]).await, UPLINKS as f64);
    assert_eq!(w.metric_sum("loraflow_cluster_dedup_total", &[("role", "contributor")]).await, 2.0 * UPLINKS as f64);
    assert_eq!(w.metric_sum("loraflow_cluster_dedup_total", &[("role", "local")]).await, 0.0);
    assert_eq!(w.metric_sum("loraflow_cluster_dedup_total", &[("role", "takeover")]).await, 0.0, "no collector died");
    assert_eq!(w.metric_sum("loraflow_uplinks_accepted_total", &[]).await, UPLINKS as f64);
}

/// A metric summed over the instances `alive`.
async fn metric_of(w: &World, alive: &[usize], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for &i in alive {
        sum += metric(&w.api(i).metrics().await, name, labels);
    }
    sum
}

/// The first copy of each uplink reaches instance 0, which becomes its collector; the copies
/// of gateways 1 and 2 reach instances 1 and 2 20 ms later, and are acknowledged. Instance 0
/// is killed inside its window: one of the others takes the uplink over, with the copies of
/// the gateways that survived, and publishes it once.
#[tokio::test]
async fn an_uplink_whose_collector_is_killed_inside_its_window_is_published_once_by_a_contributor() {
    let mut w = world(3).await;
    let dev_eui = "00000000000c5001";
    let mut dev = w.abp_device(dev_eui, "01c50001").await;
    const UPLINKS: u64 = 3;
    let mut takeovers = 0.0;
    for f_cnt in 0..UPLINKS {
        let phy = dev.uplink(false, 1, &[f_cnt as u8]);
        let tmst = w.next_tmst();
        w.hear(0, &phy, tmst, 1.0).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.hear(1, &phy, tmst + 3, 4.0).await;
        w.hear(2, &phy, tmst + 5, 7.0).await;
        // Well inside instance 0's 200 ms window.
        w.cluster.instances[0].sigkill();

        let ups = w.events("up", Duration::from_secs(2)).await;
        assert_eq!(ups.len(), 1, "uplink {f_cnt} published once: {ups:?}");
        assert_eq!(ups[0]["fCnt"], f_cnt);
        assert_eq!(gateways_of(&ups[0]), [GATEWAYS[2], GATEWAYS[1]], "uplink {f_cnt}: the surviving gateways, best first");
        assert_eq!(w.f_cnt_up_via(1, dev_eui).await, f_cnt + 1, "the frame counter advanced once");
        takeovers += 1.0;
        assert_eq!(metric_of(&w, &[1, 2], "loraflow_cluster_dedup_total", &[("role", "takeover")]).await, takeovers);

        // Instance 0 comes back for the next uplink; its gateway reconnects to it.
        w.cluster.restart(0);
        w.gws[0].server = w.cluster.instances[0].gateway;
        let t = w.gws[0].pull_data().await;
        w.gws[0].expect_ack(PULL_ACK, t).await;
    }
    assert_eq!(metric_of(&w, &[1, 2], "loraflow_uplinks_accepted_total", &[]).await, UPLINKS as f64);

    // And with every instance alive, nothing is taken over.
    let phy = dev.uplink(false, 1, b"calm");
    let tmst = w.next_tmst();
    w.hear(0, &phy, tmst, 1.0).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    w.hear(1, &phy, tmst + 3, 4.0).await;
    w.hear(2, &phy, tmst + 5, 7.0).await;
    let ups = w.events("up", Duration::from_secs(2)).await;
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(gateways_of(&ups[0]).len(), 3);
    assert_eq!(w.metric_sum("loraflow_cluster_dedup_total", &[("role", "takeover")]).await, takeovers);
    assert_eq!(w.f_cnt_up(dev_eui).await, UPLINKS + 1);
}

/// A collector that is only slow (stopped with SIGSTOP inside its window, continued after a
/// contributor took the uplink over): the uplink is still published once, and its frame
/// counter advanced once.
#[tokio::test]
async fn an_uplink_whose_collector_is_only_slow_is_published_once() {
    let mut w = world(3).await;
    let dev_eui = "00000000000c6001";
    let mut dev = w.abp_device(dev_eui, "01c60001").await;
    let pid = w.cluster.instances[0].pid().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill").args([sig, &pid]).status().expect("kill");
        assert!(status.success());
    };
    let phy = dev.uplink(false, 1, b"slow");
    let tmst = w.next_tmst();
    w.hear(0, &phy, tmst, 1.0).await;
    // Once it holds the lock (its first copy's claim is on its way to Redis).
    tokio::time::sleep(Duration::from_millis(10)).await;
    signal("-STOP");
    tokio::time::sleep(Duration::from_millis(20)).await;
    w.hear(1, &phy, tmst + 3, 4.0).await;
    w.hear(2, &phy, tmst + 5, 7.0).await;
    let mut ups = w.events("up", Duration::from_millis(1500)).await;
    assert_eq!(metric_of(&w, &[1, 2], "loraflow_cluster_dedup_total", &[("role", "takeover")]).await, 1.0, "taken over");
    signal("-CONT");
    ups.extend(w.events("up", Duration::from_secs(2)).await);
    assert_eq!(ups.len(), 1, "published once: {ups:?}");
    assert_eq!(w.f_cnt_up(dev_eui).await, 1);
    assert_eq!(w.metric_sum("loraflow_cluster_dedup_total", &[("role", "collector")]).await, 1.0, "instance 0 went on");
    assert_eq!(w.metric_sum("loraflow_uplinks_accepted_total", &[]).await, 1.0);
    assert_eq!(w.metric_sum("loraflow_uplinks_rejected_total", &[("reason", "retransmission")]).await, 0.0);
    // The taker went first; instance 0, continued, found the counter moved after the uplink
    // was heard and dropped it silently.
    assert_eq!(metric_of(&w, &[1, 2], "loraflow_uplinks_accepted_total", &[]).await, 1.0);
    assert_eq!(metric(&w.api(0).metrics().await, "loraflow_uplinks_rejected_total", &[("reason", "fcnt_race")]), 1.0);
}

/// A join-request heard by three gateways on three instances, best by the gateway of the
/// instance that hears it last. `Some(best)`: also the gateway the join-accept must leave by.
async fn join_through_three_instances(expect_gateway: Option<usize>) {
    let mut w = world(3).await;
    let dev_eui = "00000000000c2001";
    w.create_device(dev_eui).await;
    let (s, b) = w.api(1).put(&format!("/api/devices/{dev_eui}/keys"), json!({"appKey": APP_KEY})).await;
    assert_eq!(s, 200, "{b}");
    let mut dev = Device::otaa(dev_eui, APP_KEY);
    let jr = dev.join_request();
    let tmst = w.next_tmst();
    w.hear(0, &jr, tmst, -5.0).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    w.hear(1, &jr, tmst + 11, 2.0).await;
    w.hear(2, &jr, tmst + 23, 8.0).await;

    let accepts = w.downlinks(Duration::from_secs(3)).await;
    let joins = w.events("join", Duration::from_millis(500)).await;
    assert_eq!(joins.len(), 1, "one join event: {joins:?}");
    assert_eq!(w.metric_sum("loraflow_joins_accepted_total", &[]).await, 1.0);
    assert!(accepts.len() <= 1, "at most one join-accept: {accepts:?}");
    if let Some(best) = expect_gateway {
        assert_eq!(accepts.len(), 1, "exactly one join-accept");
        assert_eq!(accepts[0].0, best, "through the best gateway, held by another instance");
    }
    let Some((_, phy)) = accepts.first() else { return };
    dev.accept(phy, [0, 0, 0]);
    assert_eq!(joins[0]["devAddr"], dev.dev_addr.to_string());

    // The device's first uplinks reach the instances that did not process the join, right
    // away: they find the new session in the database.
    for gw in [1, 2, 0] {
        let phy = dev.uplink(false, 1, b"hi");
        let tmst = w.next_tmst();
        w.hear(gw, &phy, tmst, 5.0).await;
        let ups = w.events("up", Duration::from_millis(800)).await;
        assert_eq!(ups.len(), 1, "uplink through instance {gw}: {ups:?}");
        assert_eq!(gateways_of(&ups[0]), [GATEWAYS[gw]]);
    }
    assert_eq!(w.metric_sum("loraflow_uplinks_rejected_total", &[("reason", "unknown_dev_addr")]).await, 0.0);
}

#[tokio::test]
async fn otaa_join_heard_through_three_instances_is_accepted_once() {
    join_through_three_instances(None).await;
}

/// Downlinks handed between instances: the instance that processes the join (the first to
/// hear it) sends the join-accept through the best gateway, which another instance holds.
#[tokio::test]
async fn otaa_join_heard_through_three_instances_gets_exactly_one_join_accept_through_the_best_gateway() {
    join_through_three_instances(Some(2)).await;
}

#[tokio::test]
async fn uplinks_of_one_device_alternately_processed_by_two_instances_are_all_accepted() {
    let mut w = world(2).await;
    let dev_eui = "00000000000c3001";
    let mut dev = w.abp_device(dev_eui, "01c30001").await;
    let mut sent = Vec::new();
    // Even frame counters through instance 0, odd through instance 1: each instance's cached
    // counter is one behind the database at every uplink (announcements or not).
    for f_cnt in 0..10u32 {
        let phy = dev.uplink(false, 1, &[f_cnt as u8]);
        let tmst = w.next_tmst();
        w.hear((f_cnt % 2) as usize, &phy, tmst, 5.0).await;
        let ups = w.events("up", Duration::from_millis(600)).await;
        assert_eq!(ups.len(), 1, "uplink {f_cnt} published once: {ups:?}");
        assert_eq!(ups[0]["fCnt"], f_cnt);
        sent.push(phy);
    }
    // Three more through instance 1 only: instance 0's cache is now three behind.
    for f_cnt in 10..13u32 {
        let phy = dev.uplink(false, 1, &[f_cnt as u8]);
        let tmst = w.next_tmst();
        w.hear(1, &phy, tmst, 5.0).await;
        assert_eq!(w.events("up", Duration::from_millis(600)).await.len(), 1, "uplink {f_cnt}");
        sent.push(phy);
    }
    assert_eq!(w.f_cnt_up(dev_eui).await, 13);

    // A replay of frame 10 through instance 0 (after the deduplication lock has expired): its
    // cache would take it; the database's counter does not.
    let replays_before = metric(&w.api(0).metrics().await, "loraflow_uplinks_rejected_total", &[("reason", "replay")]);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let tmst = w.next_tmst();
    let replay = sent[10].clone();
    w.hear(0, &replay, tmst, 5.0).await;
    let replayed = eventually(Duration::from_secs(3), || async {
        let v = metric(&w.api(0).metrics().await, "loraflow_uplinks_rejected_total", &[("reason", "replay")]);
        (v > replays_before).then_some(v)
    })
    .await;
    assert_eq!(replayed, Some(replays_before + 1.0), "rejected as a replay");
    assert!(w.events("up", Duration::from_millis(300)).await.is_empty(), "a replay is not published");
    assert_eq!(w.f_cnt_up(dev_eui).await, 13);

    // And the device goes on through instance 0.
    let phy = dev.uplink(false, 1, b"on");
    let tmst = w.next_tmst();
    w.hear(0, &phy, tmst, 5.0).await;
    let ups = w.events("up", Duration::from_millis(600)).await;
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(ups[0]["fCnt"], 13);
    assert_eq!(w.metric_sum("loraflow_uplinks_rejected_total", &[("reason", "fcnt_race")]).await, 0.0);
}

/// A TCP relay to the machine's Redis that the test can cut, as a network failure would.
async fn redis_relay() -> (String, tokio_util::sync::CancellationToken) {
    let target = REDIS_URL.trim_start_matches("redis://").split('/').next().unwrap().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = tokio_util::sync::CancellationToken::new();
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
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    });
    (format!("redis://{addr}/0"), cut)
}

// Several threads: starting the instances blocks the test's thread while they connect to
// the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_an_uplink_heard_through_two_instances_is_still_published_once() {
    let (url, cut) = redis_relay().await;
    let mut w = world_on_redis(2, Some(&url)).await;
    let dev_eui = "00000000000c4001";
    let mut dev = w.abp_device(dev_eui, "01c40001").await;
    let phy = dev.uplink(false, 1, b"before");
    let tmst = w.next_tmst();
    w.hear(0, &phy, tmst, 1.0).await;
    w.hear(1, &phy, tmst + 5, 2.0).await;
    assert_eq!(w.events("up", Duration::from_millis(800)).await.len(), 1);

    cut.cancel();
    for f_cnt in 1..6u32 {
        let phy = dev.uplink(false, 1, &[f_cnt as u8]);
        let tmst = w.next_tmst();
        w.hear(0, &phy, tmst, 1.0).await;
        w.hear(1, &phy, tmst + 5, 2.0).await;
        // Each instance processes its own copy; the frame-counter compare-and-set lets one
        // through, and the other publishes nothing (no `up`, no retransmission `log`).
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1000);
        while let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, w.sub.messages.recv()).await {
            events.push((topic, String::from_utf8_lossy(&payload).into_owned()));
        }
        let ups: Vec<_> = events.iter().filter(|(t, _)| t.ends_with("/event/up")).collect();
        assert_eq!(ups.len(), 1, "uplink {f_cnt}: {events:?}");
        assert!(ups[0].1.contains(&format!("\"fCnt\":{f_cnt}")), "{ups:?}");
        assert_eq!(events.len(), 1, "nothing but the uplink: {events:?}");
    }
    assert_eq!(w.f_cnt_up(dev_eui).await, 6);
    assert_eq!(w.metric_sum("loraflow_cluster_dedup_total", &[("role", "local")]).await, 10.0, "both instances, alone");
    assert_eq!(w.metric_sum("loraflow_uplinks_accepted_total", &[]).await, 6.0);
    assert_eq!(w.metric_sum("loraflow_uplinks_rejected_total", &[("reason", "fcnt_race")]).await, 5.0);
    for i in 0..2 {
        assert_eq!(metric(&w.api(i).metrics().await, "loraflow_cluster_redis_up", &[]), 0.0, "instance {i} reports Redis down");
    }

    // A join-request heard through both: the DevNonce lets one instance answer; the other
    // refuses it without telling the application (no `OTAA` log event).
    let otaa = "00000000000c4002";
    w.create_device(otaa).await;
    let (s, b) = w.api(1).put(&format!("/api/devices/{otaa}/keys"), json!({"appKey": APP_KEY})).await;
    assert_eq!(s, 200, "{b}");
    let mut dev = Device::otaa(otaa, APP_KEY);
    let jr = dev.join_request();
    let tmst = w.next_tmst();
    w.hear(0, &jr, tmst, 1.0).await;
    w.hear(1, &jr, tmst + 5, 2.0).await;
    let accepts = w.downlinks(Duration::from_secs(2)).await;
    assert_eq!(accepts.len(), 1, "one join-accept: {accepts:?}");
    let mut events = Vec::new();
    while let Ok(Some((topic, _))) = tokio::time::timeout(Duration::from_millis(500), w.sub.messages.recv()).await {
        events.push(topic);
    }
    assert_eq!(events.len(), 1, "only the join event: {events:?}");
    assert!(events[0].ends_with(&format!("/device/{otaa}/event/join")), "{events:?}");
    assert_eq!(w.metric_sum("loraflow_joins_accepted_total", &[]).await, 1.0);
    assert_eq!(w.metric_sum("loraflow_joins_rejected_total", &[("reason", "dev_nonce")]).await, 1.0);
}
