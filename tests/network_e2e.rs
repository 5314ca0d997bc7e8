//! The network server end to end: virtual gateways over Semtech UDP, a virtual device,
//! the real binary, on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::device::Device;
use common::gateway::{b64, rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::provision::{self, Provisioned};
use common::{eventually, metric, Api, Backend, TestServer};
use serde_json::json;

const APP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const GATEWAYS: [&str; 3] = ["00000000000000a1", "00000000000000a2", "00000000000000a3"];
/// SNR per gateway: the second hears best.
const SNR: [f64; 3] = [2.0, 9.5, -3.0];

struct Net {
    server: TestServer,
    api: Api,
    gws: Vec<FakeGateway>,
    p: Provisioned,
}

async fn setup(backend: Backend) -> Net {
    let server = TestServer::start(backend, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "100")]).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    let mut gws = Vec::new();
    for id in GATEWAYS {
        provision::gateway(&api, id).await;
        gws.push(FakeGateway::new(id, server.gateway).await);
    }
    let mut net = Net { server, api, gws, p };
    connect_gateways(&mut net).await;
    net
}

/// PULL_DATA from every gateway so that the server knows where to send downlinks.
async fn connect_gateways(net: &mut Net) {
    for gw in net.gws.iter_mut() {
        gw.server = net.server.gateway;
        let t = gw.pull_data().await;
        gw.expect_ack(PULL_ACK, t).await;
    }
}

/// The same PHYPayload heard by every gateway, with the given concentrator time.
async fn broadcast(net: &mut Net, phy: &[u8], tmst: u32) {
    for (i, gw) in net.gws.iter_mut().enumerate() {
        let mut pk = rxpk(phy, tmst.wrapping_add(i as u32 * 7), -60 - 10 * i as i32, SNR[i]);
        pk["freq"] = json!(868.3);
        let t = gw.push_rxpk(vec![pk]).await;
        gw.expect_ack(PUSH_ACK, t).await;
    }
}

async fn metrics_text(api: &Api) -> String {
    let resp = reqwest::get(format!("{}/metrics", api.base)).await.unwrap();
    resp.text().await.unwrap()
}

/// Waits until the metric reaches `want`, and checks it does not go past it.
async fn expect_metric(api: &Api, name: &str, labels: &[(&str, &str)], want: f64) {
    let got = eventually(Duration::from_secs(5), || async {
        let v = metric(&metrics_text(api).await, name, labels);
        (v >= want).then_some(v)
    })
    .await;
    assert_eq!(got, Some(want), "{name}{labels:?}");
}

async fn no_pull_resp(gw: &FakeGateway, within: Duration) {
    if let Some(r) = gw.next_pull_resp(within).await {
        panic!("unexpected PULL_RESP on {}: {:?}", hex::encode(gw.eui), r.txpk);
    }
}

async fn otaa_join(net: &mut Net, dev: &mut Device) {
    let jr = dev.join_request();
    broadcast(net, &jr, 10_000_000).await;
    // One join-accept, on the best gateway, in RX1 = tmst + 5 s on the uplink channel.
    let resp = net.gws[1].next_pull_resp(Duration::from_secs(5)).await.expect("join-accept");
    let tx = &resp.txpk;
    assert_eq!(tx["tmst"], json!(10_000_000u32 + 7 + 5_000_000), "{tx}");
    assert_eq!(tx["freq"].as_f64().unwrap(), 868.3);
    assert_eq!(tx["datr"], "SF7BW125");
    assert_eq!(tx["ipol"], true);
    assert_eq!(tx["modu"], "LORA");
    dev.accept(&resp.phy_payload(), [0, 0, 0]);
    net.gws[1].tx_ack(resp.token, "NONE").await;
    no_pull_resp(&net.gws[0], Duration::from_millis(300)).await;
    no_pull_resp(&net.gws[2], Duration::from_millis(10)).await;
    // NetID 000000 is type 0: the 7 most significant DevAddr bits are 0 + NwkID 000000.
    assert_eq!(dev.dev_addr.0[0] & 0xfe, 0);
    assert_eq!(dev.rx1_delay, 1);
    assert!(dev.cf_list.is_some(), "EU868 join-accepts carry the extra channels");
}

async fn otaa_uplinks_downlinks_and_restart(backend: Backend) {
    let mut net = setup(backend).await;
    let mut dev = Device::otaa("0102030405060708", APP_KEY);
    provision::otaa_device(&net.api, &net.p, "0102030405060708", APP_KEY).await;
    otaa_join(&mut net, &mut dev).await;
    expect_metric(&net.api, "loraflow_joins_accepted_total", &[], 1.0).await;
    let (s, act) = net.api.get("/api/devices/0102030405060708/activation").await;
    assert_eq!(s, 200, "{act}");
    assert_eq!(act["devAddr"], dev.dev_addr.to_string());

    // A reused DevNonce is rejected. The identical frame is sent once the deduplicator has
    // forgotten it (10 windows), so it is a replay, not a late copy.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    dev.dev_nonce -= 1;
    let jr = dev.join_request();
    broadcast(&mut net, &jr, 11_000_000).await;
    expect_metric(&net.api, "loraflow_joins_rejected_total", &[("reason", "dev_nonce")], 1.0).await;
    no_pull_resp(&net.gws[1], Duration::from_millis(300)).await;

    // Unconfirmed uplink heard by three gateways: processed once. Its only downlink asks for
    // the device status (DevStatusReq, once a day).
    let up = dev.uplink(false, 1, b"hello");
    broadcast(&mut net, &up, 20_000_000).await;
    expect_metric(&net.api, "loraflow_uplinks_accepted_total", &[], 1.0).await;
    let resp = net.gws[1].next_pull_resp(Duration::from_secs(3)).await.expect("DevStatusReq");
    assert_eq!(dev.read_downlink(&resp.phy_payload(), 0).f_opts, vec![0x06]);
    net.gws[1].tx_ack(resp.token, "NONE").await;
    no_pull_resp(&net.gws[1], Duration::from_millis(300)).await;
    let (_, d) = net.api.get("/api/devices/0102030405060708").await;
    assert_eq!(d["devAddr"], dev.dev_addr.to_string());

    // The same frame again, once the deduplicator has forgotten it, is a retransmission
    // (not processed again); a corrupted MIC is rejected.
    let first = up.clone();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    broadcast(&mut net, &up, 21_000_000).await;
    expect_metric(&net.api, "loraflow_uplinks_rejected_total", &[("reason", "retransmission")], 1.0).await;
    let mut bad = dev.uplink(false, 1, b"x");
    *bad.last_mut().unwrap() ^= 0xff;
    broadcast(&mut net, &bad, 22_000_000).await;
    expect_metric(&net.api, "loraflow_uplinks_rejected_total", &[("reason", "mic")], 1.0).await;

    // A confirmed uplink is ACKed in RX1: uplink tmst + 1 s, same frequency, same DR.
    let up = dev.uplink(true, 2, b"confirm me");
    broadcast(&mut net, &up, 30_000_000).await;
    let resp = net.gws[1].next_pull_resp(Duration::from_secs(3)).await.expect("ACK downlink");
    assert_eq!(resp.txpk["tmst"], json!(30_000_000u32 + 7 + 1_000_000));
    assert_eq!(resp.txpk["freq"].as_f64().unwrap(), 868.3);
    assert_eq!(resp.txpk["datr"], "SF7BW125");
    let dl = dev.read_downlink(&resp.phy_payload(), 1);
    assert!(dl.ack && dl.f_port.is_none());
    net.gws[1].tx_ack(resp.token, "NONE").await;

    // A queued item goes out in the next uplink's RX1 and leaves the queue after TX_ACK.
    let (s, q) = net.api.post("/api/devices/0102030405060708/queue", json!({"fPort": 10, "data": b64(b"hi there")})).await;
    assert_eq!(s, 201, "{q}");
    let up = dev.uplink(false, 1, b"x");
    broadcast(&mut net, &up, 40_000_000).await;
    let resp = net.gws[1].next_pull_resp(Duration::from_secs(3)).await.expect("queued downlink");
    let dl = dev.read_downlink(&resp.phy_payload(), 2);
    assert_eq!((dl.f_port, dl.payload.as_slice(), dl.ack), (Some(10), &b"hi there"[..], false));
    net.gws[1].tx_ack(resp.token, "NONE").await;
    let empty = eventually(Duration::from_secs(3), || async {
        let (_, q) = net.api.get("/api/devices/0102030405060708/queue").await;
        (q["totalCount"] == 0).then_some(())
    })
    .await;
    assert!(empty.is_some(), "queue item removed after TX_ACK");

    // TOO_LATE in RX1: the same frame is retried in RX2 (+1 s, 869.525 MHz, DR0).
    net.api.post("/api/devices/0102030405060708/queue", json!({"fPort": 11, "data": b64(b"late")})).await;
    let up = dev.uplink(false, 1, b"x");
    broadcast(&mut net, &up, 50_000_000).await;
    let rx1 = net.gws[1].next_pull_resp(Duration::from_secs(3)).await.expect("RX1 attempt");
    net.gws[1].tx_ack(rx1.token, "TOO_LATE").await;
    let rx2 = net.gws[1].next_pull_resp(Duration::from_secs(3)).await.expect("RX2 retry");
    assert_eq!(rx2.txpk["tmst"], json!(50_000_000u32 + 7 + 2_000_000));
    assert_eq!(rx2.txpk["freq"].as_f64().unwrap(), 869.525);
    assert_eq!(rx2.txpk["datr"], "SF12BW125");
    assert_eq!(rx2.phy_payload(), rx1.phy_payload());
    let dl = dev.read_downlink(&rx2.phy_payload(), 3);
    assert_eq!(dl.payload, b"late");
    net.gws[1].tx_ack(rx2.token, "NONE").await;
    expect_metric(&net.api, "loraflow_downlinks_total", &[("window", "rx2"), ("status", "OK")], 1.0).await;

    // An old frame (once the deduplicator has forgotten it) is a replay.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    broadcast(&mut net, &first, 55_000_000).await;
    expect_metric(&net.api, "loraflow_uplinks_rejected_total", &[("reason", "replay")], 1.0).await;

    // Restart: session and counters survive; a replay is still rejected.
    net.server = net.server.restart();
    net.api = net.server.client();
    connect_gateways(&mut net).await;
    broadcast(&mut net, &first, 60_000_000).await;
    expect_metric(&net.api, "loraflow_uplinks_rejected_total", &[("reason", "replay")], 1.0).await;
    let up = dev.uplink(true, 1, b"after restart");
    broadcast(&mut net, &up, 70_000_000).await;
    expect_metric(&net.api, "loraflow_uplinks_accepted_total", &[], 1.0).await;
    let resp = net.gws[1].next_pull_resp(Duration::from_secs(3)).await.expect("ACK after restart");
    let dl = dev.read_downlink(&resp.phy_payload(), 4);
    assert!(dl.ack);
}

#[tokio::test]
async fn otaa_join_uplinks_downlinks_and_restart_on_sqlite() {
    otaa_uplinks_downlinks_and_restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn otaa_join_uplinks_downlinks_and_restart_on_postgres() {
    otaa_uplinks_downlinks_and_restart(Backend::Postgres).await;
}

async fn abp_and_mac_commands(backend: Backend) {
    let mut net = setup(backend).await;
    let mut dev = Device::abp("1112131415161718", "26011234", "44024241ed4ce9a68c6a8bc055233fd3", "ec925802ae430ca77fd3dd73cb2cc588");
    provision::abp_device(
        &net.api,
        &net.p,
        "1112131415161718",
        "26011234",
        "44024241ed4ce9a68c6a8bc055233fd3",
        "ec925802ae430ca77fd3dd73cb2cc588",
    )
    .await;

    // LinkCheckReq (0x02) and DeviceTimeReq (0x0D) in FOpts are answered in RX1.
    let up = dev.uplink_with(false, false, Some(1), b"abp", &[0x02, 0x0d]);
    broadcast(&mut net, &up, 5_000_000).await;
    let resp = net.gws[1].next_pull_resp(Duration::from_secs(3)).await.expect("MAC answers");
    // The answers come first, then the server's own requests (NewChannelReq for the five
    // extra channels, DevStatusReq): more than FOpts holds, so all on FPort 0.
    let dl = dev.read_downlink(&resp.phy_payload(), 0);
    assert_eq!(dl.f_port, Some(0));
    let mac = &dl.payload;
    assert_eq!(mac[0], 0x02, "LinkCheckAns first: {mac:?}");
    // Margin: SNR 9.5 dB above SF7's -7.5 dB floor = 17 dB; heard by 3 gateways.
    assert_eq!(&mac[1..3], &[17, 3]);
    assert_eq!(mac[3], 0x0d);
    assert_eq!(mac.len(), 3 + 6 + 5 * 6 + 1);
    net.gws[1].tx_ack(resp.token, "NONE").await;
    expect_metric(&net.api, "loraflow_uplinks_accepted_total", &[], 1.0).await;

    // Unknown MAC commands do not break the uplink; the unanswered requests are sent again.
    let up = dev.uplink_with(false, false, Some(1), b"abp", &[0x80, 0x01]);
    broadcast(&mut net, &up, 6_000_000).await;
    expect_metric(&net.api, "loraflow_uplinks_accepted_total", &[], 2.0).await;
    let resp = net.gws[1].next_pull_resp(Duration::from_secs(3)).await.expect("requests sent again");
    assert_eq!(dev.read_downlink(&resp.phy_payload(), 1).payload.len(), 5 * 6 + 1);
    net.gws[1].tx_ack(resp.token, "NONE").await;

    // A confirmed uplink repeated because our ACK was lost is ACKed again, not processed.
    let up = dev.uplink(true, 1, b"conf");
    broadcast(&mut net, &up, 6_500_000).await;
    let resp = net.gws[1].next_pull_resp(Duration::from_secs(3)).await.expect("ACK");
    assert!(dev.read_downlink(&resp.phy_payload(), 2).ack);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    broadcast(&mut net, &up, 9_500_000).await;
    let resp = net.gws[1].next_pull_resp(Duration::from_secs(3)).await.expect("ACK of the retransmission");
    assert!(dev.read_downlink(&resp.phy_payload(), 3).ack);
    expect_metric(&net.api, "loraflow_uplinks_rejected_total", &[("reason", "retransmission")], 1.0).await;
    expect_metric(&net.api, "loraflow_uplinks_accepted_total", &[], 3.0).await;

    // A device reset (FCnt back to 0) is rejected and reported.
    dev.f_cnt_up = 0;
    let up = dev.uplink(false, 1, b"again");
    broadcast(&mut net, &up, 7_000_000).await;
    expect_metric(&net.api, "loraflow_uplinks_rejected_total", &[("reason", "replay")], 1.0).await;

    // A disabled device is ignored.
    let (_, mut d) = net.api.get("/api/devices/1112131415161718").await;
    d["isDisabled"] = json!(true);
    let (s, b) = net.api.put("/api/devices/1112131415161718", d).await;
    assert_eq!(s, 200, "{b}");
    dev.f_cnt_up = 10;
    let up = dev.uplink(false, 1, b"disabled");
    broadcast(&mut net, &up, 8_000_000).await;
    expect_metric(&net.api, "loraflow_uplinks_rejected_total", &[("reason", "device_disabled")], 1.0).await;
}

#[tokio::test]
async fn abp_uplinks_and_mac_commands_on_sqlite() {
    abp_and_mac_commands(Backend::Sqlite).await;
}

#[tokio::test]
async fn abp_uplinks_and_mac_commands_on_postgres() {
    abp_and_mac_commands(Backend::Postgres).await;
}
