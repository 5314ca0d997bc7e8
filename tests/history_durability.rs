//! History as durable as the event: SIGKILL the server under a steady stream of uplinks,
//! restart it on the same database, and every `up` event a subscriber received is in the
//! stored history, once, and the devices carry on. The broker is an external Mosquitto
//! so that the subscriber and what was published survive the kill.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PULL_RESP};
use common::provision;
use common::{Backend, TestServer};
use mqtt_support::{Mosquitto, Subscriber};
use serde_json::Value;

const GATEWAY: &str = "00000000000000c1";
const DEVICES: usize = 30;
/// Total uplink rate over all devices.
const RATE_PER_SEC: u64 = 100;
const STREAM_BEFORE_KILL: Duration = Duration::from_secs(3);
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";

fn dev_eui(i: usize) -> String {
    format!("70b3d57ed00020{i:02x}")
}

/// What the subscriber has seen: DevEUI → (deduplicationId → fCnt).
type Seen = BTreeMap<String, BTreeMap<String, u64>>;

fn take_up_events(sub: &mut Subscriber, seen: &mut Seen) {
    while let Ok((topic, payload)) = sub.messages.try_recv() {
        if !topic.ends_with("/event/up") {
            continue;
        }
        let ev: Value = serde_json::from_slice(&payload).expect("event JSON");
        let eui = ev["deviceInfo"]["devEui"].as_str().unwrap().to_string();
        let dedup = ev["deduplicationId"].as_str().unwrap().to_string();
        seen.entry(eui).or_default().insert(dedup, ev["fCnt"].as_u64().unwrap());
    }
}

async fn new_gateway(server: &TestServer) -> FakeGateway {
    let mut gw = FakeGateway::new(GATEWAY, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    gw
}

/// Takes what the server sent: ACKs are dropped, downlinks (the server's MAC requests) are
/// acknowledged as a gateway would, so that no device waits for a TX_ACK timeout.
async fn answer_server(gw: &FakeGateway) {
    while let Some(d) = gw.recv(Duration::ZERO).await {
        if d.len() > 4 && d[0] == 2 && d[3] == PULL_RESP {
            gw.tx_ack(u16::from_be_bytes([d[1], d[2]]), "NONE").await;
        }
    }
}

async fn killed_under_load_keeps_every_published_uplink_in_history(backend: Backend) {
    let broker = Mosquitto::start_new();
    let url = broker.url();
    let env = [("LORAFLOW_MQTT__URL", url.as_str()), ("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")];
    let mut server = TestServer::start(backend, &env).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    provision::gateway(&api, GATEWAY).await;
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let addr = format!("260120{i:02x}");
        provision::abp_device(&api, &p, &dev_eui(i), &addr, NWK_S_KEY, APP_S_KEY).await;
        devices.push(Device::abp(&dev_eui(i), &addr, NWK_S_KEY, APP_S_KEY));
    }
    let mut sub = Subscriber::connect(broker.addr(), "application/+/device/+/event/up", true).await;
    let mut gw = new_gateway(&server).await;

    // A steady stream, round robin over the devices, until the kill.
    let mut seen = Seen::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
    let stream_until = tokio::time::Instant::now() + STREAM_BEFORE_KILL;
    let mut sent = 0usize;
    while tokio::time::Instant::now() < stream_until {
        tick.tick().await;
        let dev = &mut devices[sent % DEVICES];
        let up = dev.uplink(false, 1, &(sent as u32).to_be_bytes());
        gw.push_rxpk(vec![rxpk(&up, sent as u32 * 1000, -60, 7.0)]).await;
        sent += 1;
        answer_server(&gw).await;
    }
    server.sigkill();
    // Let the subscriber take everything the broker got from the dead process.
    tokio::time::sleep(Duration::from_secs(1)).await;
    take_up_events(&mut sub, &mut seen);
    let published_before: usize = seen.values().map(BTreeMap::len).sum();
    assert!(published_before >= sent / 2, "the stream was flowing: {published_before} of {sent} uplinks published");

    // Restart on the same database; every device carries on with a higher FCnt.
    let server = server.restart();
    let api = server.client();
    let mut gw = new_gateway(&server).await;
    let mut expected_after = BTreeMap::new();
    for (i, dev) in devices.iter_mut().enumerate() {
        dev.f_cnt_up += 1;
        expected_after.insert(dev_eui(i), u64::from(dev.f_cnt_up));
        let up = dev.uplink(false, 1, b"after");
        gw.push_rxpk(vec![rxpk(&up, 900_000_000 + i as u32 * 1000, -60, 7.0)]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_continued = common::eventually(Duration::from_secs(20), || {
        take_up_events(&mut sub, &mut seen);
        let done = expected_after.iter().all(|(eui, f_cnt)| seen.get(eui).is_some_and(|m| m.values().any(|f| f == f_cnt)));
        async move { done.then_some(()) }
    })
    .await;
    let missing: Vec<_> =
        expected_after.iter().filter(|(eui, f_cnt)| !seen.get(*eui).is_some_and(|m| m.values().any(|f| f == *f_cnt))).collect();
    assert!(all_continued.is_some(), "devices whose frame after the restart was not accepted: {missing:?}");

    // Every `up` event received is in the stored history, and nothing is stored twice.
    for (eui, events) in &seen {
        let (s, h) = api.get(&format!("/api/devices/{eui}/uplinks?limit=1000")).await;
        assert_eq!(s, 200, "{h}");
        let rows = h["result"].as_array().unwrap();
        let stored: BTreeSet<&str> = rows.iter().map(|r| r["deduplicationId"].as_str().unwrap()).collect();
        let f_cnts: BTreeSet<u64> = rows.iter().map(|r| r["fCnt"].as_u64().unwrap()).collect();
        assert_eq!(f_cnts.len(), rows.len(), "{eui}: an uplink stored twice: {rows:?}");
        assert_eq!(stored.len(), rows.len(), "{eui}: a deduplication id stored twice");
        let lost: Vec<_> = events.iter().filter(|(dedup, _)| !stored.contains(dedup.as_str())).map(|(_, f)| f).collect();
        assert!(lost.is_empty(), "{eui}: published but not in the stored history, FCnt {lost:?}");
        let published_f_cnts: BTreeSet<u64> = events.values().copied().collect();
        assert_eq!(published_f_cnts.len(), events.len(), "{eui}: one FCnt published as two uplinks");
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_history_survives_a_sigkill_under_load() {
    killed_under_load_keeps_every_published_uplink_in_history(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_history_survives_a_sigkill_under_load() {
    killed_under_load_keeps_every_published_uplink_in_history(Backend::Postgres).await;
}
