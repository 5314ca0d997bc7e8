//! Downlinks in a cluster (issue 14): a downlink decided on one instance goes out through a
//! gateway held by another (the instance its PULL_DATA goes to), the gateway's TX_ACK verdict
//! comes back to the deciding instance (RX1 refused → RX2, `txack` event, queue item settled),
//! a gateway that moves to another instance is followed on its next PULL_DATA, and a Class C
//! item queued over REST is sent once whichever instances hear about it.
//!
//! Real processes (`common::cluster`): one PostgreSQL database, the local Redis under a prefix
//! of the test's own, a Mosquitto of the test's own. A fake gateway can push its uplinks to one
//! instance and pull (receive downlinks) from another, as a gateway behind a UDP load balancer
//! may: that makes the instance deciding the downlink differ from the one holding the gateway.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::time::Duration;

use common::cluster::{TestCluster, REDIS_URL};
use common::device::Device;
use common::gateway::{b64, rxpk, FakeGateway, PullResp, PULL_ACK, PUSH_ACK};
use common::{eventually, metric, Api};
use loraflow_network_server::lorawan::{self, Phy};
use mqtt_support::{Mosquitto, Subscriber};
use serde_json::{json, Value};

const GW: &str = "00000000000000d1";
const DEV: (&str, &str) = ("70b3d57ed00000d1", "26011d01");
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";
/// Gateways of other instances are accepted without waiting for the registration to reach
/// every instance (that is the cache-coherence tests' subject); no NewChannelReq in answers.
const ENV: [(&str, &str); 3] = [
    ("LORAFLOW_NETWORK__ALLOW_UNKNOWN_GATEWAYS", "true"),
    ("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50"),
    ("LORAFLOW_NETWORK__EXTRA_CHANNELS", ""),
];

struct Net {
    cluster: TestCluster,
    _broker: Mosquitto,
    app_id: String,
    device: Device,
    events: Subscriber,
}

/// `n` instances; on instance 0 an application, a device (Class C or A, ABP) and the gateway.
async fn setup(n: usize, class_c: bool) -> Net {
    let broker = Mosquitto::start_new();
    let cluster = TestCluster::start(n, &broker.url(), &ENV).await;
    let api = cluster.api(0);
    let (s, app) = api.post("/api/applications", json!({"name": "cluster-downlinks"})).await;
    assert_eq!(s, 201, "{app}");
    let app_id = app["id"].as_str().unwrap().to_string();
    let (s, dp) = api
        .post(
            "/api/device-profiles",
            json!({"name": "p", "supportsOtaa": false, "supportsClassC": class_c, "classCTimeout": 2,
                   "adrEnabled": false, "devStatusReqFreq": 0}),
        )
        .await;
    assert_eq!(s, 201, "{dp}");
    let (s, b) =
        api.post("/api/devices", json!({"devEui": DEV.0, "name": "d", "applicationId": app_id, "deviceProfileId": dp["id"]})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) =
        api.post(&format!("/api/devices/{}/activate", DEV.0), json!({"devAddr": DEV.1, "nwkSKey": NWK_S_KEY, "appSKey": APP_S_KEY})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = api.post("/api/gateways", json!({"gatewayId": GW, "name": "gw"})).await;
    assert_eq!(s, 201, "{b}");
    let events = Subscriber::connect(broker.addr(), &format!("application/{app_id}/#"), false).await;
    Net { cluster, _broker: broker, app_id, device: Device::abp(DEV.0, DEV.1, NWK_S_KEY, APP_S_KEY), events }
}

/// The gateway's downlink side: PULL_DATA to instance `i`; returns once instance `i` has
/// recorded in Redis that it holds the gateway.
async fn pull_from(net: &Net, gw: &str, i: usize) -> FakeGateway {
    let mut g = FakeGateway::new(gw, net.cluster.instances[i].gateway).await;
    let t = g.pull_data().await;
    g.expect_ack(PULL_ACK, t).await;
    let node = format!("node{i}");
    let held =
        eventually(Duration::from_secs(5), || async { (route(net, gw).await.as_deref() == Some(node.as_str())).then_some(()) }).await;
    assert!(held.is_some(), "route of {gw} never became {node} (now {:?})", route(net, gw).await);
    g
}

/// Which instance Redis says holds gateway `gw`.
async fn route(net: &Net, gw: &str) -> Option<String> {
    redis_get(&format!("{}:gw:{gw}", net.cluster.prefix)).await
}

async fn redis_get(key: &str) -> Option<String> {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap()
}

/// An uplink of the device pushed by `gw` (its uplink side); returns once the server took it.
async fn uplink(net: &mut Net, gw: &mut FakeGateway, confirmed: bool, tmst: u32) {
    let phy = net.device.uplink(confirmed, 1, b"u");
    let t = gw.push_rxpk(vec![rxpk(&phy, tmst, -60, 9.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
}

async fn enqueue(api: &Api, f_port: u8, data: &[u8]) -> String {
    let (s, body) =
        api.post(&format!("/api/devices/{}/queue", DEV.0), json!({"fPort": f_port, "confirmed": false, "data": b64(data)})).await;
    assert_eq!(s, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn queue_len(api: &Api) -> usize {
    let (s, q) = api.get(&format!("/api/devices/{}/queue", DEV.0)).await;
    assert_eq!(s, 200, "{q}");
    q["result"].as_array().unwrap().len()
}

async fn event(net: &mut Net, kind: &str) -> Value {
    net.events.next_json(&format!("application/{}/device/{}/event/{kind}", net.app_id, DEV.0)).await
}

/// The application payload and FPort of a downlink, read as the device reads it.
fn read(device: &Device, resp: &PullResp) -> (Option<u8>, Vec<u8>) {
    let phy = resp.phy_payload();
    let Ok(Phy::Data(d)) = lorawan::parse(&phy) else { panic!("not a data downlink") };
    let got = device.read_downlink(&phy, u32::from(d.f_cnt16));
    (got.f_port, got.payload)
}

async fn metrics(net: &Net, i: usize) -> String {
    net.cluster.api(i).metrics().await
}

#[tokio::test]
async fn a_downlink_decided_on_one_instance_goes_out_through_the_gateway_another_holds_and_its_tx_ack_comes_back() {
    let mut net = setup(2, false).await;
    // Uplinks reach instance 0, which decides the downlink; the gateway pulls from instance 1.
    let mut push = FakeGateway::new(GW, net.cluster.instances[0].gateway).await;
    let pull = pull_from(&net, GW, 1).await;
    let item = enqueue(&net.cluster.api(0), 2, b"over there").await;

    uplink(&mut net, &mut push, false, 5_000_000).await;
    let resp = pull.next_pull_resp(Duration::from_secs(3)).await.expect("the queue item through instance 1");
    // RX1 of the uplink, on the gateway's own concentrator clock.
    assert_eq!(resp.txpk["tmst"], 6_000_000, "{}", resp.txpk);
    assert_eq!(resp.txpk["freq"], 868.1, "{}", resp.txpk);
    assert_eq!(read(&net.device, &resp), (Some(2), b"over there".to_vec()));
    pull.tx_ack(resp.token, "NONE").await;

    let txack = event(&mut net, "txack").await;
    assert_eq!((txack["gatewayId"].as_str(), txack["queueItemId"].as_str()), (Some(GW), Some(item.as_str())), "{txack}");
    assert!(eventually(Duration::from_secs(3), || async { (queue_len(&net.cluster.api(0)).await == 0).then_some(()) }).await.is_some());
    // Instance 0 never had a downlink address for the gateway: nothing went its way.
    assert!(push.next_pull_resp(Duration::from_millis(300)).await.is_none());
    let (m0, m1) = (metrics(&net, 0).await, metrics(&net, 1).await);
    assert_eq!(metric(&m0, "loraflow_cluster_downlinks_forwarded_total", &[("result", "OK")]), 1.0, "{m0}");
    assert_eq!(metric(&m1, "loraflow_cluster_downlinks_served_total", &[("result", "OK")]), 1.0, "{m1}");
    assert_eq!(metric(&m1, "loraflow_cluster_downlinks_forwarded_total", &[("result", "OK")]), 0.0, "{m1}");
    // The gateway's per-minute downlink count shows the frame on both: the instance that
    // decided it and the one the gateway is attached to.
    for i in [0, 1] {
        let (s, stats) = net.cluster.api(i).get(&format!("/api/gateways/{GW}/stats")).await;
        assert_eq!(s, 200, "{stats}");
        assert_eq!(stats["totals"]["downlinks"], 1, "instance {i}: {stats}");
    }
}

#[tokio::test]
async fn a_tx_ack_error_from_the_remote_gateway_in_rx1_leads_to_rx2_through_it() {
    let mut net = setup(2, false).await;
    let mut push = FakeGateway::new(GW, net.cluster.instances[0].gateway).await;
    let pull = pull_from(&net, GW, 1).await;
    let item = enqueue(&net.cluster.api(0), 3, b"second window").await;

    uplink(&mut net, &mut push, false, 7_000_000).await;
    let rx1 = pull.next_pull_resp(Duration::from_secs(3)).await.expect("RX1 attempt through instance 1");
    assert_eq!(rx1.txpk["tmst"], 8_000_000, "{}", rx1.txpk);
    pull.tx_ack(rx1.token, "TOO_LATE").await;
    let rx2 = pull.next_pull_resp(Duration::from_secs(3)).await.expect("RX2 attempt after the remote refusal");
    assert_eq!(rx2.txpk["tmst"], 9_000_000, "{}", rx2.txpk);
    assert_eq!(rx2.txpk["freq"], 869.525, "{}", rx2.txpk);
    assert_eq!(read(&net.device, &rx2), (Some(3), b"second window".to_vec()));
    pull.tx_ack(rx2.token, "NONE").await;

    let txack = event(&mut net, "txack").await;
    assert_eq!(txack["queueItemId"].as_str(), Some(item.as_str()), "{txack}");
    let m0 = metrics(&net, 0).await;
    assert_eq!(metric(&m0, "loraflow_cluster_downlinks_forwarded_total", &[("result", "TOO_LATE")]), 1.0, "{m0}");
    assert_eq!(metric(&m0, "loraflow_cluster_downlinks_forwarded_total", &[("result", "OK")]), 1.0, "{m0}");
    assert_eq!(metric(&m0, "loraflow_downlinks_total", &[("window", "rx1"), ("status", "TOO_LATE")]), 1.0, "{m0}");
    assert_eq!(metric(&m0, "loraflow_downlinks_total", &[("window", "rx2"), ("status", "OK")]), 1.0, "{m0}");
}

#[tokio::test]
async fn a_gateway_that_moves_to_another_instance_gets_its_next_downlink_there() {
    let mut net = setup(2, false).await;
    let mut push = FakeGateway::new(GW, net.cluster.instances[0].gateway).await;
    let on0 = pull_from(&net, GW, 0).await;

    // Held by the instance deciding: a local send.
    uplink(&mut net, &mut push, true, 1_000_000).await;
    let first = on0.next_pull_resp(Duration::from_secs(3)).await.expect("ACK through instance 0");
    on0.tx_ack(first.token, "NONE").await;

    // The gateway now pulls from instance 1 (a failover): instance 0 still has its old address,
    // but the route in Redis wins.
    let on1 = pull_from(&net, GW, 1).await;
    uplink(&mut net, &mut push, true, 2_000_000).await;
    let second = on1.next_pull_resp(Duration::from_secs(3)).await.expect("ACK through instance 1 after the move");
    assert_eq!(second.txpk["tmst"], 3_000_000, "{}", second.txpk);
    on1.tx_ack(second.token, "NONE").await;
    assert!(on0.next_pull_resp(Duration::from_millis(500)).await.is_none(), "nothing to the old address");
    let m0 = metrics(&net, 0).await;
    assert_eq!(metric(&m0, "loraflow_cluster_downlinks_forwarded_total", &[("result", "OK")]), 1.0, "{m0}");
}

#[tokio::test]
async fn a_class_c_downlink_goes_out_at_once_through_a_gateway_another_instance_holds() {
    let mut net = setup(2, true).await;
    let mut push = FakeGateway::new(GW, net.cluster.instances[0].gateway).await;
    let pull = pull_from(&net, GW, 1).await;
    uplink(&mut net, &mut push, false, 4_000_000).await;
    event(&mut net, "up").await;
    // After the uplink's receive windows (RX2 at 2 s plus an empty SF12 frame).
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let item = enqueue(&net.cluster.api(0), 5, b"class c").await;

    let resp = pull.next_pull_resp(Duration::from_secs(3)).await.expect("the Class C item through instance 1");
    assert_eq!((resp.txpk["imme"].as_bool(), resp.txpk["freq"].as_f64()), (Some(true), Some(869.525)), "{}", resp.txpk);
    assert_eq!(read(&net.device, &resp), (Some(5), b"class c".to_vec()));
    pull.tx_ack(resp.token, "NONE").await;
    let txack = event(&mut net, "txack").await;
    assert_eq!((txack["gatewayId"].as_str(), txack["queueItemId"].as_str()), (Some(GW), Some(item.as_str())), "{txack}");
    assert!(pull.next_pull_resp(Duration::from_millis(500)).await.is_none(), "sent once");
    let m0 = metrics(&net, 0).await;
    assert_eq!(metric(&m0, "loraflow_class_c_downlinks_total", &[("result", "sent")]), 1.0, "{m0}");
    assert_eq!(metric(&m0, "loraflow_cluster_downlinks_forwarded_total", &[("result", "OK")]), 1.0, "{m0}");
}

/// Every instance heard the device at some point, the last uplink through instance 2's
/// gateway; the item is queued on instance 0 and the queue change reaches every instance (cache
/// coherence over Redis), so all three look at the device: exactly one PULL_RESP in all,
/// through the gateway of the last uplink, one `txack`, queue empty.
#[tokio::test]
async fn a_rest_queued_class_c_downlink_is_sent_once_with_three_instances() {
    let mut net = setup(3, true).await;
    // Each instance holds a gateway of its own, and each gateway pushes to its instance.
    let ids = ["00000000000000e0", "00000000000000e1", "00000000000000e2"];
    let mut pulls = Vec::new();
    let mut pushes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        pulls.push(pull_from(&net, id, i).await);
        pushes.push(FakeGateway::new(id, net.cluster.instances[i].gateway).await);
    }
    // Uplinks heard by gateway 0, then 1, then 2: each instance handles one and remembers the
    // device for Class C; the last one makes instance 2 the device's Class C owner.
    for (i, push) in pushes.iter_mut().enumerate() {
        let f_cnt = net.device.f_cnt_up;
        let phy = net.device.uplink(false, 1, b"c");
        let t = push.push_rxpk(vec![rxpk(&phy, 10_000_000 * (i as u32 + 1), -60, 9.0)]).await;
        push.expect_ack(PUSH_ACK, t).await;
        let up = event(&mut net, "up").await;
        assert_eq!((up["fCnt"].as_u64(), up["rxInfo"][0]["gatewayId"].as_str()), (Some(u64::from(f_cnt)), Some(ids[i])), "{up}");
    }
    let owner_key = format!("{}:classc:{}", net.cluster.prefix, DEV.0);
    let owned =
        eventually(Duration::from_secs(3), || async { (redis_get(&owner_key).await.as_deref() == Some("node2")).then_some(()) }).await;
    assert!(owned.is_some(), "owner {:?}", redis_get(&owner_key).await);
    // Queued after the last uplink's receive windows, on instance 0.
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let item = enqueue(&net.cluster.api(0), 4, b"once").await;

    let mut sent = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < deadline {
        let got = tokio::select! {
            r = pulls[0].next_pull_resp(Duration::from_millis(200)) => r.map(|r| (0, r)),
            r = pulls[1].next_pull_resp(Duration::from_millis(200)) => r.map(|r| (1, r)),
            r = pulls[2].next_pull_resp(Duration::from_millis(200)) => r.map(|r| (2, r)),
        };
        if let Some((i, resp)) = got {
            assert_eq!(resp.txpk["imme"], true, "{}", resp.txpk);
            assert_eq!(read(&net.device, &resp), (Some(4), b"once".to_vec()));
            pulls[i].tx_ack(resp.token, "NONE").await;
            sent.push(i);
        }
    }
    assert_eq!(sent, vec![2], "sent through gateways {sent:?}");
    let txack = event(&mut net, "txack").await;
    assert_eq!(txack["queueItemId"].as_str(), Some(item.as_str()), "{txack}");
    assert_eq!(queue_len(&net.cluster.api(0)).await, 0);
}
