//! Class C downlinks as gateways, devices and applications see them (issue 10 part 4): a
//! device whose profile has `supportsClassC` gets a queued item at once (`imme`) on its RX2
//! frequency and data rate (EU868: 869.525 MHz, DR0 = SF12BW125) through the gateway that
//! heard its last uplink best, whether the item came over REST or MQTT `command/down`; never
//! before its first uplink, never inside the receive windows of its last uplink, one frame on
//! air at a time, falling back to the second gateway on a TX_ACK error; a confirmed
//! item holds the queue until the device acknowledges it or `classCTimeout` passes (then it
//! is sent again, three transmissions in all, then dropped with `acknowledged: false`); a
//! Class A device gets nothing until its uplink. `classCTimeout` over REST. Real binary,
//! virtual gateways over UDP, SQLite and PostgreSQL.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::time::{Duration, Instant};

use common::device::Device;
use common::gateway::{b64, GatewayPair, PullResp};
use common::{eventually, metric, Api, Backend, TestServer};
use mqtt_support::Subscriber;
use serde_json::{json, Value};

const BEST: &str = "00000000000000c1";
const SECOND: &str = "00000000000000c2";
const CLASS_C: (&str, &str) = ("70b3d57ed00000c1", "26011c01");
const CLASS_A: (&str, &str) = ("70b3d57ed00000a1", "26011a01");
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";
/// `classCTimeout` of the Class C profile, in seconds.
const CLASS_C_TIMEOUT: u64 = 2;
/// RX2 opens 2 s after the uplink (RX1 delay 1 s) and an empty frame at SF12 takes 991 ms:
/// the windows are over 3 s after the uplink; this leaves room for scheduling.
const WINDOWS_OVER: Duration = Duration::from_millis(3_300);
/// A frame of up to 22 bytes at SF12BW125 is on air for at most 1,319 ms; the next Class C
/// frame waits for it.
const ON_AIR: Duration = Duration::from_millis(1_500);

struct Net {
    server: TestServer,
    api: Api,
    gateways: GatewayPair,
    app_id: String,
    class_c: Device,
    class_a: Device,
    events: Subscriber,
}

async fn profile(api: &Api, name: &str, class_c: bool) -> String {
    let (s, dp) = api
        .post(
            "/api/device-profiles",
            json!({"name": name, "supportsOtaa": false, "supportsClassC": class_c, "classCTimeout": CLASS_C_TIMEOUT,
                   "adrEnabled": false, "devStatusReqFreq": 0}),
        )
        .await;
    assert_eq!(s, 201, "{dp}");
    assert_eq!(dp["classCTimeout"], CLASS_C_TIMEOUT, "{dp}");
    dp["id"].as_str().unwrap().to_string()
}

async fn setup(backend: Backend) -> Net {
    // No NewChannelReq: the Class A answers carry only what the tests put in the queue.
    let env = [("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50"), ("LORAFLOW_NETWORK__EXTRA_CHANNELS", "")];
    let server = TestServer::start(backend, &env).await;
    let api = server.client();
    let (s, app) = api.post("/api/applications", json!({"name": "class-c"})).await;
    assert_eq!(s, 201, "{app}");
    let app_id = app["id"].as_str().unwrap().to_string();
    for ((dev_eui, dev_addr), class_c) in [(CLASS_C, true), (CLASS_A, false)] {
        let dp = profile(&api, dev_eui, class_c).await;
        let (s, b) =
            api.post("/api/devices", json!({"devEui": dev_eui, "name": dev_eui, "applicationId": app_id, "deviceProfileId": dp})).await;
        assert_eq!(s, 201, "{b}");
        let (s, b) = api
            .post(&format!("/api/devices/{dev_eui}/activate"), json!({"devAddr": dev_addr, "nwkSKey": NWK_S_KEY, "appSKey": APP_S_KEY}))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    for gw in [BEST, SECOND] {
        let (s, b) = api.post("/api/gateways", json!({"gatewayId": gw, "name": gw})).await;
        assert_eq!(s, 201, "{b}");
    }
    let mut gateways = GatewayPair::new(BEST, SECOND, server.gateway).await;
    gateways.connect(server.gateway).await;
    let events = Subscriber::connect(server.mqtt.expect("embedded broker"), &format!("application/{app_id}/#"), false).await;
    Net {
        server,
        api,
        gateways,
        app_id,
        class_c: Device::abp(CLASS_C.0, CLASS_C.1, NWK_S_KEY, APP_S_KEY),
        class_a: Device::abp(CLASS_A.0, CLASS_A.1, NWK_S_KEY, APP_S_KEY),
        events,
    }
}

/// An uplink (SF7, 868.1 MHz) heard well by BEST and poorly by SECOND.
async fn heard(net: &mut Net, phy: &[u8], tmst: u32) {
    net.gateways.hear(phy, tmst, 1_000).await;
}

/// An uplink of the Class C device; returns once the server handles it (its `up` event), with
/// the time it was sent. Queue changes from then on are ordered after it.
async fn class_c_uplink(net: &mut Net, ack: bool, tmst: u32) -> Instant {
    let f_cnt = net.class_c.f_cnt_up;
    let phy = net.class_c.uplink_with(false, ack, Some(1), b"c", &[]);
    let at = Instant::now();
    heard(net, &phy, tmst).await;
    let up = event(net, CLASS_C.0, "up").await;
    assert_eq!(up["fCnt"], f_cnt, "{up}");
    at
}

async fn enqueue(api: &Api, dev_eui: &str, f_port: u8, confirmed: bool, data: &[u8]) -> String {
    let (s, body) =
        api.post(&format!("/api/devices/{dev_eui}/queue"), json!({"fPort": f_port, "confirmed": confirmed, "data": b64(data)})).await;
    assert_eq!(s, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn queue(api: &Api, dev_eui: &str) -> Vec<Value> {
    let (s, q) = api.get(&format!("/api/devices/{dev_eui}/queue")).await;
    assert_eq!(s, 200, "{q}");
    q["result"].as_array().unwrap().clone()
}

async fn next_downlink(net: &Net, timeout: Duration) -> Option<(&'static str, PullResp)> {
    net.gateways.next_downlink(timeout).await
}

async fn tx_ack(net: &Net, gw: &str, resp: &PullResp, error: &str) {
    net.gateways.tx_ack(gw, resp, error).await;
}

async fn event(net: &mut Net, dev_eui: &str, kind: &str) -> Value {
    net.events.next_json(&format!("application/{}/device/{dev_eui}/event/{kind}", net.app_id)).await
}

/// A Class C frame: sent at once on RX2 (869.525 MHz, SF12BW125), no concentrator timestamp.
fn assert_class_c(resp: &PullResp) {
    let t = &resp.txpk;
    assert_eq!(t["imme"], true, "{t}");
    assert!(t.get("tmst").is_none() && t.get("tmms").is_none(), "{t}");
    assert_eq!(t["freq"].as_f64(), Some(869.525), "{t}");
    assert_eq!(t["datr"], "SF12BW125", "{t}");
    assert_eq!(t["ipol"], true, "{t}");
}

/// A Class A frame: in a receive window after the uplink with concentrator timestamp `tmst`.
fn assert_class_a(resp: &PullResp, tmst: u32) {
    let t = &resp.txpk;
    assert_ne!(t["imme"], true, "{t}");
    assert_eq!(t["tmst"].as_u64(), Some(u64::from(tmst) + 1_000_000), "RX1 of the uplink: {t}");
}

async fn nothing_sent(net: &Net, within: Duration, why: &str) {
    if let Some((gw, r)) = next_downlink(net, within).await {
        panic!("{why}: {gw} got {}", r.txpk);
    }
}

async fn rest_and_mqtt_downlinks_go_out_at_once(backend: Backend) {
    let mut net = setup(backend).await;
    let (c, a) = (CLASS_C.0, CLASS_A.0);

    // Before its first uplink the server knows no gateway for the device: nothing is sent.
    let first = enqueue(&net.api, c, 2, false, b"early").await;
    nothing_sent(&net, Duration::from_millis(1_500), "Class C item before the device's first uplink").await;
    assert_eq!(queue(&net.api, c).await.len(), 1);

    // The first uplink's RX1 carries it, as for Class A.
    class_c_uplink(&mut net, false, 1_000_000).await;
    let (gw, resp) = next_downlink(&net, Duration::from_secs(3)).await.expect("the queued item in RX1");
    assert_eq!(gw, BEST);
    assert_class_a(&resp, 1_000_000);
    let dl = net.class_c.read_downlink(&resp.phy_payload(), 0);
    assert_eq!((dl.f_port, dl.payload.as_slice()), (Some(2), &b"early"[..]));
    tx_ack(&net, gw, &resp, "NONE").await;
    assert_eq!(event(&mut net, c, "txack").await["queueItemId"], first);

    // Queued while the uplink's receive windows are open: sent right after they close.
    let up_at = class_c_uplink(&mut net, false, 5_000_000).await;
    let inside = enqueue(&net.api, c, 3, false, b"after-rx2").await;
    let (gw, resp) = next_downlink(&net, Duration::from_secs(6)).await.expect("Class C downlink after the windows");
    let waited = up_at.elapsed();
    assert!(waited >= Duration::from_millis(2_900), "sent {waited:?} after the uplink, inside its receive windows");
    assert!(waited < Duration::from_millis(4_500), "sent {waited:?} after the uplink, long after its windows");
    assert_eq!(gw, BEST, "the gateway that heard the uplink best");
    assert_class_c(&resp);
    let dl = net.class_c.read_downlink(&resp.phy_payload(), 1);
    assert_eq!((dl.f_port, dl.confirmed, dl.payload.as_slice()), (Some(3), false, &b"after-rx2"[..]));
    tx_ack(&net, gw, &resp, "NONE").await;
    let txack = event(&mut net, c, "txack").await;
    assert_eq!((txack["queueItemId"].as_str(), txack["fCntDown"].as_u64()), (Some(inside.as_str()), Some(1)));
    assert_eq!(txack["txInfo"]["timing"], json!({"immediately": {}}), "{txack}");

    // Queued over REST once the previous frame is off the air: on air within 100 ms of the
    // REST answer.
    tokio::time::sleep(ON_AIR).await;
    let (s, body) = net.api.post(&format!("/api/devices/{c}/queue"), json!({"fPort": 4, "data": b64(b"rest")})).await;
    let answered = Instant::now();
    assert_eq!(s, 201, "{body}");
    let (gw, resp) = next_downlink(&net, Duration::from_secs(2)).await.expect("REST-queued Class C downlink");
    let latency = answered.elapsed();
    assert!(latency <= Duration::from_millis(100), "PULL_RESP {latency:?} after the REST answer");
    assert_class_c(&resp);
    let dl = net.class_c.read_downlink(&resp.phy_payload(), 2);
    assert_eq!((dl.f_port, dl.payload.as_slice()), (Some(4), &b"rest"[..]));
    // The best gateway refuses it: the same frame goes out through the second one.
    tx_ack(&net, gw, &resp, "COLLISION_PACKET").await;
    let (gw2, again) = next_downlink(&net, Duration::from_secs(2)).await.expect("fallback to the second gateway");
    assert_eq!((gw, gw2), (BEST, SECOND));
    assert_class_c(&again);
    assert_eq!(again.phy_payload(), resp.phy_payload());
    tx_ack(&net, gw2, &again, "NONE").await;
    assert_eq!(event(&mut net, c, "txack").await["gatewayId"], SECOND);

    // Queued over MQTT command/down: on air as soon as it is queued.
    tokio::time::sleep(ON_AIR).await;
    let mut publisher = Subscriber::connect(net.server.mqtt.unwrap(), "nothing/#", false).await;
    let topic = format!("application/{}/device/{c}/command/down", net.app_id);
    let cmd = json!({"devEui": c, "confirmed": false, "fPort": 5, "data": b64(b"mqtt")});
    let published = Instant::now();
    publisher.client.publish(topic, rumqttc::QoS::AtLeastOnce, false, cmd.to_string()).await.unwrap();
    let (gw, resp) = next_downlink(&net, Duration::from_secs(2)).await.expect("MQTT-queued Class C downlink");
    // Measured from the publish call, so the client's own send is included.
    let latency = published.elapsed();
    assert!(latency <= Duration::from_millis(100), "PULL_RESP {latency:?} after the MQTT command");
    assert_eq!(gw, BEST);
    assert_class_c(&resp);
    let dl = net.class_c.read_downlink(&resp.phy_payload(), 3);
    assert_eq!((dl.f_port, dl.payload.as_slice()), (Some(5), &b"mqtt"[..]));
    tx_ack(&net, gw, &resp, "NONE").await;

    // Two items at once: one frame on air at a time; the second follows when the first is
    // over (16 bytes at SF12BW125: 1,155 ms).
    tokio::time::sleep(ON_AIR).await;
    enqueue(&net.api, c, 8, false, b"one").await;
    enqueue(&net.api, c, 8, false, b"two").await;
    let mut got = Vec::new();
    for f_cnt in [4, 5] {
        let (gw, resp) = next_downlink(&net, Duration::from_secs(3)).await.expect("both items");
        got.push((Instant::now(), net.class_c.read_downlink(&resp.phy_payload(), f_cnt).payload));
        assert_class_c(&resp);
        tx_ack(&net, gw, &resp, "NONE").await;
    }
    assert_eq!((got[0].1.as_slice(), got[1].1.as_slice()), (&b"one"[..], &b"two"[..]));
    let gap = got[1].0 - got[0].0;
    assert!(gap >= Duration::from_millis(1_100) && gap < Duration::from_millis(1_700), "second frame {gap:?} after the first");
    let emptied = eventually(Duration::from_secs(3), || async { queue(&net.api, c).await.is_empty().then_some(()) }).await;
    assert!(emptied.is_some(), "sent items left the queue");
    let _ = &mut publisher;

    // A Class A device with an item and a recent uplink still waits for its next uplink.
    let phy = net.class_a.uplink(false, 1, b"a");
    heard(&mut net, &phy, 20_000_000).await;
    tokio::time::sleep(WINDOWS_OVER).await;
    enqueue(&net.api, a, 6, false, b"class-a").await;
    nothing_sent(&net, Duration::from_millis(1_500), "Class A item without an uplink").await;
    let phy = net.class_a.uplink(false, 1, b"a");
    heard(&mut net, &phy, 30_000_000).await;
    let (gw, resp) = next_downlink(&net, Duration::from_secs(3)).await.expect("the Class A item in RX1");
    assert_class_a(&resp, 30_000_000);
    assert_eq!(net.class_a.read_downlink(&resp.phy_payload(), 0).payload, b"class-a");
    tx_ack(&net, gw, &resp, "NONE").await;

    let m = net.api.metrics().await;
    assert_eq!(metric(&m, "loraflow_class_c_downlinks_total", &[("result", "sent")]), 5.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_mqtt_downlinks_reach_a_class_c_device_at_once_on_sqlite() {
    rest_and_mqtt_downlinks_go_out_at_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_mqtt_downlinks_reach_a_class_c_device_at_once_on_postgres() {
    rest_and_mqtt_downlinks_go_out_at_once(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_class_c_downlink_holds_the_queue_until_acked_or_timed_out() {
    let mut net = setup(Backend::Sqlite).await;
    let c = CLASS_C.0;
    class_c_uplink(&mut net, false, 1_000_000).await;
    tokio::time::sleep(WINDOWS_OVER).await;

    // A confirmed item, then an unconfirmed one: the second waits for the ACK.
    let confirmed = enqueue(&net.api, c, 2, true, b"confirm-me").await;
    enqueue(&net.api, c, 3, false, b"next").await;
    let (gw, resp) = next_downlink(&net, Duration::from_secs(2)).await.expect("the confirmed item");
    assert_class_c(&resp);
    let dl = net.class_c.read_downlink(&resp.phy_payload(), 0);
    assert_eq!((dl.confirmed, dl.payload.as_slice()), (true, &b"confirm-me"[..]));
    tx_ack(&net, gw, &resp, "NONE").await;
    nothing_sent(&net, Duration::from_millis(1_500), "the next item while the confirmed one waits for its ACK").await;

    // The device acknowledges: `ack` event, and the next item goes out at once (in the
    // acknowledging uplink's RX1).
    class_c_uplink(&mut net, true, 10_000_000).await;
    let ack = event(&mut net, c, "ack").await;
    assert_eq!((ack["queueItemId"].as_str(), ack["acknowledged"].as_bool()), (Some(confirmed.as_str()), Some(true)));
    let (gw, resp) = next_downlink(&net, Duration::from_secs(2)).await.expect("the next item after the ACK");
    assert_eq!(net.class_c.read_downlink(&resp.phy_payload(), 1).payload, b"next");
    tx_ack(&net, gw, &resp, "NONE").await;
    tokio::time::sleep(WINDOWS_OVER).await;

    // Never acknowledged: sent again every classCTimeout, three transmissions in all, then
    // dropped with `acknowledged: false`.
    let lost = enqueue(&net.api, c, 7, true, b"lost").await;
    let mut sent_at = Vec::new();
    for (n, f_cnt) in [(1, 2), (2, 3), (3, 4)] {
        let (gw, resp) = next_downlink(&net, Duration::from_secs(CLASS_C_TIMEOUT + 2)).await.unwrap_or_else(|| panic!("transmission {n}"));
        sent_at.push(Instant::now());
        assert_class_c(&resp);
        let dl = net.class_c.read_downlink(&resp.phy_payload(), f_cnt);
        assert_eq!((dl.confirmed, dl.f_port, dl.payload.as_slice()), (true, Some(7), &b"lost"[..]), "transmission {n}");
        tx_ack(&net, gw, &resp, "NONE").await;
    }
    for w in sent_at.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(CLASS_C_TIMEOUT * 1000 - 200), "resent after {gap:?}, before classCTimeout");
        assert!(gap <= Duration::from_millis(CLASS_C_TIMEOUT * 1000 + 800), "resent after {gap:?}");
    }
    let ack = event(&mut net, c, "ack").await;
    assert_eq!((ack["queueItemId"].as_str(), ack["acknowledged"].as_bool()), (Some(lost.as_str()), Some(false)));
    assert!(sent_at[2].elapsed() >= Duration::from_millis(CLASS_C_TIMEOUT * 1000 - 200), "dropped before its last ACK wait ended");
    assert!(queue(&net.api, c).await.is_empty());
    nothing_sent(&net, Duration::from_millis(500), "nothing after the drop").await;
    let m = net.api.metrics().await;
    assert_eq!(metric(&m, "loraflow_class_c_downlinks_total", &[("result", "expired")]), 1.0, "{m}");
}

async fn class_c_timeout_over_rest(backend: Backend) {
    let server = TestServer::start(backend, &[]).await;
    let api = server.client();
    const PROFILES: &str = "/api/device-profiles";
    // Omitted: 5 s, ChirpStack's default.
    let (s, plain) = api.post(PROFILES, json!({"name": "plain", "supportsClassC": true})).await;
    assert_eq!((s, &plain["classCTimeout"]), (201, &json!(5)), "{plain}");
    let id = plain["id"].as_str().unwrap().to_string();
    // The edges are stored, returned by GET and the list, and changed by PUT.
    for timeout in [1, 3600, 30] {
        let (s, up) =
            api.put(&format!("{PROFILES}/{id}"), json!({"name": "plain", "supportsClassC": true, "classCTimeout": timeout})).await;
        assert_eq!((s, &up["classCTimeout"]), (200, &json!(timeout)), "{up}");
        let (_, got) = api.get(&format!("{PROFILES}/{id}")).await;
        assert_eq!(got["classCTimeout"], timeout, "{got}");
    }
    assert_eq!(api.get(PROFILES).await.1["result"][0]["classCTimeout"], 30);
    // Out of range or not a number: 400 naming the field, nothing changed.
    for bad in [json!(0), json!(3601), json!(-5), json!("5"), json!(2.5)] {
        let body = json!({"name": "bad", "classCTimeout": bad});
        for (s, e) in [api.post(PROFILES, body.clone()).await, api.put(&format!("{PROFILES}/{id}"), body).await] {
            let msg = e["error"].as_str().unwrap_or_default();
            assert!(s == 400 && msg.starts_with("classCTimeout"), "{bad}: {s} {e}");
        }
    }
    assert_eq!(api.get(PROFILES).await.1["totalCount"], 1);
    // Stored: it survives a restart.
    let server = server.restart();
    let (_, got) = server.client().get(&format!("{PROFILES}/{id}")).await;
    assert_eq!(got["classCTimeout"], 30, "{got}");
}

#[tokio::test]
async fn class_c_timeout_is_validated_stored_and_returned_on_sqlite() {
    class_c_timeout_over_rest(Backend::Sqlite).await;
}

#[tokio::test]
async fn class_c_timeout_is_validated_stored_and_returned_on_postgres() {
    class_c_timeout_over_rest(Backend::Postgres).await;
}
