//! Cluster mode (issue 14): what one instance changes, the others use within a second, and a
//! downlink command published once is queued once. Real loraflow processes on one
//! PostgreSQL database, Redis and a Mosquitto of the test's own; a fake gateway attached to
//! one instance only, so that the instance that made a change is never the one that uses it.
//! And an instance whose Redis goes away keeps working alone, says so, and catches up when
//! Redis is back.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::time::{Duration, Instant};

use base64::Engine;
use common::cluster::{PrivateRedis, TestCluster};
use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::provision;
use common::{eventually, metric, Api};
use mqtt_support::{Mosquitto, Subscriber};
use serde_json::{json, Value};

const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";
const NEW_NWK_S_KEY: &str = "0f0e0d0c0b0a09080706050403020100";
const NEW_APP_S_KEY: &str = "00112233445566778899aabbccddeeff";
/// What the issue promises: a change is used by every other instance within a second.
const WITHIN: Duration = Duration::from_secs(1);
const ENV: [(&str, &str); 1] = [("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")];

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

async fn attach(gateway_id: &str, server: std::net::SocketAddr) -> FakeGateway {
    let mut gw = FakeGateway::new(gateway_id, server).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    gw
}

async fn hear(gw: &mut FakeGateway, phy: &[u8], tmst: u32) {
    let t = gw.push_rxpk(vec![rxpk(phy, tmst, -50, 8.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
}

/// The next `up` event of `dev` carrying `data` within `within`. Other events are skipped:
/// late ones of an earlier step carry other data.
async fn up_event(sub: &mut Subscriber, dev: &Device, data: &[u8], within: Duration) -> Option<Value> {
    let topic_end = format!("/device/{}/event/up", dev.dev_eui);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (topic, payload) = tokio::time::timeout_at(deadline, sub.messages.recv()).await.ok()??;
        if !topic.ends_with(&topic_end) {
            continue;
        }
        let ev: Value = serde_json::from_slice(&payload).expect("JSON event");
        if ev["data"] == b64(data) {
            return Some(ev);
        }
    }
}

/// Sends uplinks of `dev` carrying `payload` (a new frame counter each, every 100 ms)
/// through `gw` until one comes out as an `up` event satisfying `accepted`; returns it and
/// how long that took since `since`. The first uplinks may go out before the instance
/// learnt the change.
async fn first_accepted_uplink(
    gw: &mut FakeGateway,
    sub: &mut Subscriber,
    dev: &mut Device,
    payload: &[u8],
    since: Instant,
    give_up: Duration,
    accepted: impl Fn(&Value) -> bool,
) -> Option<(Value, Duration)> {
    let mut tmst = 1_000_000;
    while since.elapsed() < give_up {
        let up = dev.uplink(false, 2, payload);
        hear(gw, &up, tmst).await;
        tmst += 1_000_000;
        if let Some(ev) = up_event(sub, dev, payload, Duration::from_millis(100)).await {
            if accepted(&ev) {
                return Some((ev, since.elapsed()));
            }
        }
    }
    None
}

async fn activate(api: &Api, dev_eui: &str, dev_addr: &str, nwk_s_key: &str, app_s_key: &str) {
    let (s, b) = api
        .post(&format!("/api/devices/{dev_eui}/activate"), json!({"devAddr": dev_addr, "nwkSKey": nwk_s_key, "appSKey": app_s_key}))
        .await;
    assert_eq!(s, 200, "{b}");
}

/// Waits until every instance is subscribed to downlink commands (`/health/ready` says the
/// broker is up only once the subscription is acknowledged).
async fn wait_ready(cluster: &TestCluster) {
    for i in 0..cluster.instances.len() {
        let api = cluster.api(i);
        eventually(Duration::from_secs(10), || async {
            let (s, b) = api.get("/health/ready").await;
            (s == 200 && b["checks"]["mqtt"]["status"] == "up").then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("instance {i} never ready"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_instance_changes_the_others_use_within_a_second() {
    let broker = Mosquitto::start_new();
    let cluster = TestCluster::start(3, &broker.url(), &ENV).await;
    wait_ready(&cluster).await;
    let (a0, a1) = (cluster.api(0), cluster.api(1));
    let mut sub = Subscriber::connect(broker.addr(), "application/+/device/+/event/up", false).await;
    let p = provision::application_and_profile(&a0, "NONE", "").await;

    // A gateway registered through instance 0, attached to instance 2 only.
    provision::gateway(&a0, "00000000000000c2").await;
    tokio::time::sleep(WITHIN).await;
    let mut gw2 = attach("00000000000000c2", cluster.instances[2].gateway).await;

    // A device created and ABP-activated through instance 0 is used by instance 2.
    let dev_eui = "70b3d57ed00000c1";
    let created = Instant::now();
    provision::abp_device(&a0, &p, dev_eui, "26011fc1", NWK_S_KEY, APP_S_KEY).await;
    let mut dev = Device::abp(dev_eui, "26011fc1", NWK_S_KEY, APP_S_KEY);
    let (ev, took) = first_accepted_uplink(&mut gw2, &mut sub, &mut dev, b"new", created, Duration::from_secs(5), |_| true)
        .await
        .expect("instance 2 never accepted the device created through instance 0");
    eprintln!("device created on 0, used by 2 after {took:?}");
    assert!(took < WITHIN, "took {took:?}");
    assert_eq!(ev["deviceInfo"]["devEui"], dev_eui, "{ev}");
    assert_eq!(ev["devAddr"], "26011fc1", "{ev}");
    assert_eq!(ev["data"], b64(b"new"), "{ev}");

    // Re-activated through instance 0 with a new DevAddr and new keys: instance 2 takes the
    // new session and refuses the old one.
    let mut old = dev;
    let rekeyed = Instant::now();
    activate(&a0, dev_eui, "26011fd1", NEW_NWK_S_KEY, NEW_APP_S_KEY).await;
    let mut dev = Device::abp(dev_eui, "26011fd1", NEW_NWK_S_KEY, NEW_APP_S_KEY);
    let (ev, took) = first_accepted_uplink(&mut gw2, &mut sub, &mut dev, b"rekeyed", rekeyed, Duration::from_secs(5), |_| true)
        .await
        .expect("instance 2 never accepted the new session");
    eprintln!("device re-activated on 0, new session used by 2 after {took:?}");
    assert!(took < WITHIN, "took {took:?}");
    assert_eq!((ev["devAddr"].as_str(), ev["data"].as_str()), (Some("26011fd1"), Some(b64(b"rekeyed").as_str())), "{ev}");
    let stale = old.uplink(false, 2, b"old");
    hear(&mut gw2, &stale, 90_000_000).await;
    assert_eq!(up_event(&mut sub, &old, b"old", Duration::from_millis(1500)).await, None, "the old session was accepted");

    // A gateway registered through instance 0 is accepted by instance 1's UDP server.
    let mut gw1 = attach("00000000000000c1", cluster.instances[1].gateway).await;
    let before = dev.uplink(false, 2, b"unregistered");
    hear(&mut gw1, &before, 1_000).await;
    assert_eq!(up_event(&mut sub, &dev, b"unregistered", Duration::from_millis(500)).await, None, "an unregistered gateway was accepted");
    let registered = Instant::now();
    provision::gateway(&a0, "00000000000000c1").await;
    let (_, took) = first_accepted_uplink(&mut gw1, &mut sub, &mut dev, b"via c1", registered, Duration::from_secs(5), |_| true)
        .await
        .expect("instance 1 never accepted the gateway registered through instance 0");
    eprintln!("gateway registered on 0, accepted by 1 after {took:?}");
    assert!(took < WITHIN, "took {took:?}");

    // The profile's codec changed through instance 1 is used by instance 2.
    let path = format!("/api/device-profiles/{}", p.device_profile_id);
    let (_, mut profile) = a1.get(&path).await;
    profile["payloadCodec"] = json!("JS");
    profile["payloadCodecScript"] = json!("function decodeUplink(input) { return { data: { first: input.bytes[0] } }; }");
    let changed = Instant::now();
    let (s, b) = a1.put(&path, profile).await;
    assert_eq!(s, 200, "{b}");
    let (ev, took) =
        first_accepted_uplink(&mut gw2, &mut sub, &mut dev, &[42], changed, Duration::from_secs(5), |ev| ev["object"]["first"] == 42)
            .await
            .expect("instance 2 never decoded with the new codec");
    eprintln!("codec changed on 1, used by 2 after {took:?}");
    assert!(took < WITHIN, "took {took:?}: {ev}");

    // An API key revoked through instance 0 is refused by instance 1.
    let (s, key) = a0.post("/api/api-keys", json!({"name": "short-lived"})).await;
    assert_eq!(s, 201, "{key}");
    let holder = a1.with_token(key["token"].as_str());
    assert_eq!(holder.get("/api/applications").await.0, 200, "the new key works on instance 1");
    let revoked = Instant::now();
    let (s, b) = a0.delete(&format!("/api/api-keys/{}", key["id"].as_str().unwrap())).await;
    assert_eq!(s, 204, "{b}");
    let took = eventually(Duration::from_secs(5), || async { (holder.get("/api/applications").await.0 == 401).then(|| revoked.elapsed()) })
        .await
        .expect("instance 1 kept accepting the revoked key");
    eprintln!("key revoked on 0, refused by 1 after {took:?}");
    assert!(took < WITHIN, "took {took:?}");

    // The key of an application deleted through instance 0 is refused by instance 1.
    let (s, app) = a0.post("/api/applications", json!({"name": "doomed"})).await;
    assert_eq!(s, 201, "{app}");
    let (s, key) = a0.post("/api/api-keys", json!({"name": "doomed-key", "applicationId": app["id"]})).await;
    assert_eq!(s, 201, "{key}");
    let holder = a1.with_token(key["token"].as_str());
    let own = format!("/api/applications/{}", app["id"].as_str().unwrap());
    assert_eq!(holder.get(&own).await.0, 200, "the application's key works on instance 1");
    let deleted = Instant::now();
    assert_eq!(a0.delete(&own).await.0, 204);
    let took = eventually(Duration::from_secs(5), || async { (holder.get(&own).await.0 == 401).then(|| deleted.elapsed()) })
        .await
        .expect("instance 1 kept accepting the key of a deleted application");
    eprintln!("application deleted on 0, its key refused by 1 after {took:?}");
    assert!(took < WITHIN, "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downlink_command_is_queued_once_by_one_of_the_instances() {
    let broker = Mosquitto::start_new();
    let cluster = TestCluster::start(3, &broker.url(), &ENV).await;
    let a0 = cluster.api(0);
    let p = provision::application_and_profile(&a0, "NONE", "").await;
    // Never heard: nothing takes its queue items away.
    let dev_eui = "70b3d57ed00000e1";
    provision::abp_device(&a0, &p, dev_eui, "26011fe1", NWK_S_KEY, APP_S_KEY).await;
    wait_ready(&cluster).await;

    let publisher = Subscriber::connect(broker.addr(), "nothing/here", false).await;
    let topic = format!("application/{}/device/{dev_eui}/command/down", p.application_id);
    const COMMANDS: usize = 6;
    for i in 0..COMMANDS {
        let cmd = json!({"devEui": dev_eui, "confirmed": false, "fPort": 3, "data": b64(&[i as u8])});
        publisher.client.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, cmd.to_string()).await.unwrap();
    }
    let queued = eventually(Duration::from_secs(5), || async {
        let (_, q) = a0.get(&format!("/api/devices/{dev_eui}/queue")).await;
        (q["totalCount"].as_u64() >= Some(COMMANDS as u64)).then_some(q)
    })
    .await
    .expect("the commands were not queued");
    // Duplicates would arrive together with the originals; give them time anyway.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        let (_, q) = cluster.api(i).get(&format!("/api/devices/{dev_eui}/queue")).await;
        assert_eq!(q["totalCount"], COMMANDS, "instance {i}: {q}");
        let mut data: Vec<String> = q["result"].as_array().unwrap().iter().map(|it| it["data"].as_str().unwrap().to_string()).collect();
        data.sort();
        let mut want: Vec<String> = (0..COMMANDS).map(|i| b64(&[i as u8])).collect();
        want.sort();
        assert_eq!(data, want, "{queued}");
    }
}

async fn redis_state(api: &Api) -> (u16, Value, f64) {
    let (s, ready) = api.get("/health/ready").await;
    let up = metric(&api.metrics().await, "loraflow_cluster_redis_up", &[]);
    (s, ready, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_an_instance_works_alone_says_so_and_catches_up_when_it_is_back() {
    let broker = Mosquitto::start_new();
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let env = [ENV[0], ("LORAFLOW_CLUSTER__REDIS_URL", url.as_str())];
    let cluster = TestCluster::start(2, &broker.url(), &env).await;
    wait_ready(&cluster).await;
    let (a0, a1) = (cluster.api(0), cluster.api(1));
    let mut sub = Subscriber::connect(broker.addr(), "application/+/device/+/event/up", false).await;
    let p = provision::application_and_profile(&a0, "NONE", "").await;
    provision::gateway(&a0, "00000000000000f1").await;
    let dev_eui = "70b3d57ed00000f1";
    provision::abp_device(&a0, &p, dev_eui, "26011ff1", NWK_S_KEY, APP_S_KEY).await;
    let mut gw = attach("00000000000000f1", cluster.instances[1].gateway).await;
    let mut dev = Device::abp(dev_eui, "26011ff1", NWK_S_KEY, APP_S_KEY);
    first_accepted_uplink(&mut gw, &mut sub, &mut dev, b"before", Instant::now(), Duration::from_secs(5), |_| true)
        .await
        .expect("instance 1 uses the device");
    let (s, ready, up) = redis_state(&a1).await;
    assert_eq!(
        (s, ready["status"].as_str(), ready["checks"]["redis"]["status"].as_str(), up),
        (200, Some("ready"), Some("up"), 1.0),
        "{ready}"
    );
    assert_eq!(ready["checks"]["redis"]["instanceId"], "node1", "{ready}");

    redis.kill();
    let (s, ready, _) = eventually(Duration::from_secs(10), || async {
        let state = redis_state(&a1).await;
        (state.1["checks"]["redis"]["status"] == "down" && state.2 == 0.0).then_some(state)
    })
    .await
    .expect("instance 1 never reported Redis down");
    // Degraded, not unready: every instance shares the one Redis.
    assert_eq!((s, ready["status"].as_str()), (200, Some("degraded")), "{ready}");
    assert!(ready["checks"]["redis"]["reason"].is_string(), "{ready}");

    // Still working alone: uplinks are accepted.
    let (ev, _) = first_accepted_uplink(&mut gw, &mut sub, &mut dev, b"alone", Instant::now(), Duration::from_secs(5), |_| true)
        .await
        .expect("instance 1 stopped accepting uplinks without Redis");
    assert_eq!(ev["data"], b64(b"alone"));
    // A change made meanwhile cannot be announced: a device created through instance 0 is
    // unknown to instance 1 (one it never heard, so that only the resync can tell it)...
    let late_eui = "70b3d57ed00000f2";
    provision::abp_device(&a0, &p, late_eui, "26011ff3", NEW_NWK_S_KEY, NEW_APP_S_KEY).await;
    let mut late = Device::abp(late_eui, "26011ff3", NEW_NWK_S_KEY, NEW_APP_S_KEY);
    let unknown = late.uplink(false, 2, b"unknown");
    hear(&mut gw, &unknown, 50_000_000).await;
    assert_eq!(up_event(&mut sub, &late, b"unknown", Duration::from_millis(1500)).await, None, "learnt without Redis?");

    redis.restart();
    let (s, ready, _) = eventually(Duration::from_secs(15), || async {
        let state = redis_state(&a1).await;
        (state.1["checks"]["redis"]["status"] == "up" && state.2 == 1.0).then_some(state)
    })
    .await
    .expect("instance 1 never reported Redis back");
    assert_eq!((s, ready["status"].as_str()), (200, Some("ready")), "{ready}");
    // ... and is made up by the resync after the subscription came back.
    let back = Instant::now();
    let (_, took) = first_accepted_uplink(&mut gw, &mut sub, &mut late, b"after", back, Duration::from_secs(10), |_| true)
        .await
        .expect("instance 1 never learnt the device created while Redis was away");
    eprintln!("device created during the outage, used by 1 {took:?} after Redis answered again");
}
