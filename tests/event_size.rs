//! Events above the MQTT packet limit (1 MiB) are never dropped silently: a codec result
//! of about 3 MB gives an `up` event without `object` next to a `log` event, and the
//! uplink is stored as published.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::time::Duration;

use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::{provision, Backend, TestServer};
use mqtt_support::Subscriber;
use serde_json::Value;

const DEV_EUI: &str = "70b3d57ed0003001";
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";

async fn next(sub: &mut Subscriber) -> (String, Value) {
    let (topic, payload) =
        tokio::time::timeout(Duration::from_secs(15), sub.messages.recv()).await.expect("an event").expect("subscriber open");
    (topic, serde_json::from_slice(&payload).expect("event JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_mb_codec_result_is_published_without_object_next_to_a_log_event() {
    let server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")]).await;
    let api = server.client();
    let script = "function decodeUplink(input) { return { data: { blob: 'x'.repeat(3000000), n: input.bytes[0] } }; }";
    let p = provision::application_and_profile(&api, "JS", script).await;
    provision::gateway(&api, "00000000000000d1").await;
    provision::abp_device(&api, &p, DEV_EUI, "26013001", NWK_S_KEY, APP_S_KEY).await;
    let mut sub = Subscriber::connect(server.mqtt.expect("embedded broker"), "application/#", false).await;
    let mut gw = FakeGateway::new("00000000000000d1", server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;

    let mut dev = Device::abp(DEV_EUI, "26013001", NWK_S_KEY, APP_S_KEY);
    let up = dev.uplink(false, 3, &[42]);
    let t = gw.push_rxpk(vec![rxpk(&up, 1_000_000, -60, 7.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;

    let (topic, log) = next(&mut sub).await;
    assert!(topic.ends_with(&format!("/device/{DEV_EUI}/event/log")), "{topic}");
    assert_eq!(log["level"], "ERROR", "{log}");
    assert_eq!(log["code"], "UPLINK_CODEC", "{log}");
    assert_eq!(log["context"]["f_cnt"], "0");
    let (topic, ev) = next(&mut sub).await;
    assert!(topic.ends_with(&format!("/device/{DEV_EUI}/event/up")), "{topic}");
    assert_eq!(ev["fCnt"], 0);
    assert_eq!(ev["data"], "Kg==");
    assert!(ev.get("object").is_none(), "published without object");

    let (s, h) = api.get(&format!("/api/devices/{DEV_EUI}/uplinks")).await;
    assert_eq!(s, 200, "{h}");
    let rows = h["result"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "stored before it was published");
    assert!(rows[0].get("object").is_none(), "stored as published: {}", rows[0].to_string().len());
}
