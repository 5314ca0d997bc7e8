//! Region configurations end to end (issue 10): a US915 server set up with one key
//! (`network.region = "US915"`, sub-band 2), two region configurations in one server, and
//! AS923 downlink dwell time. Numbers from RP002-1.0.4: US915 uplink channel n (0-63) is
//! 902.3 + 0.2·n MHz, 64-71 are 903.0 + 1.6·(n-64) MHz; RX1 is on 923.3 + 0.6·(n mod 8) MHz
//! at DR10-DR13 for uplink DR0-DR3 (offset 0); the join-accept's RX1 opens 5 s after the
//! join-request, data RX1 1 s after the uplink.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::time::Duration;

use common::device::Device;
use common::gateway::{b64, FakeGateway, PullResp, PULL_ACK, PUSH_ACK};
use common::{metric, Api, Backend, TestServer};
use loraflow_network_server::mac::DownlinkMacCommand;
use mqtt_support::Subscriber;
use serde_json::{json, Value};

const APP_KEY: &str = "000102030405060708090a0b0c0d0e0f";

/// An rxpk on `freq_mhz` with a LoRa `datr` such as "SF10BW125".
fn rxpk_on(phy: &[u8], tmst: u32, freq_mhz: f64, datr: &str) -> Value {
    json!({
        "tmst": tmst, "chan": 0, "rfch": 0, "freq": freq_mhz, "stat": 1, "modu": "LORA",
        "datr": datr, "codr": "4/5", "rssi": -60, "lsnr": 7.5, "size": phy.len(), "data": b64(phy)
    })
}

async fn online_gateway(server: &TestServer, api: &Api, id: &str, region_config_id: Option<&str>) -> FakeGateway {
    let mut body = json!({"gatewayId": id, "name": format!("gw-{id}")});
    if let Some(r) = region_config_id {
        body["regionConfigId"] = json!(r);
    }
    let (s, b) = api.post("/api/gateways", body).await;
    assert_eq!(s, 201, "{b}");
    let mut gw = FakeGateway::new(id, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    gw
}

async fn send(gw: &mut FakeGateway, rxpk: Value) {
    let t = gw.push_rxpk(vec![rxpk]).await;
    gw.expect_ack(PUSH_ACK, t).await;
}

/// Application and device profile; `region` omitted = the server's first region config.
async fn application_and_profile(api: &Api, region: Option<&str>, mac_version: &str) -> (String, String) {
    let (s, app) = api.post("/api/applications", json!({"name": "regions"})).await;
    assert_eq!(s, 201, "{app}");
    let mut body = json!({"name": format!("p-{region:?}-{mac_version}"), "macVersion": mac_version, "adrEnabled": false});
    if let Some(r) = region {
        body["region"] = json!(r);
    }
    let (s, dp) = api.post("/api/device-profiles", body).await;
    assert_eq!(s, 201, "{dp}");
    (app["id"].as_str().unwrap().into(), dp["id"].as_str().unwrap().into())
}

async fn otaa_device(api: &Api, (app, profile): &(String, String), dev_eui: &str) -> Device {
    let (s, b) =
        api.post("/api/devices", json!({"devEui": dev_eui, "name": dev_eui, "applicationId": app, "deviceProfileId": profile})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api.put(&format!("/api/devices/{dev_eui}/keys"), json!({"appKey": APP_KEY})).await;
    assert_eq!(s, 200, "{b}");
    Device::otaa(dev_eui, APP_KEY)
}

async fn abp_device(api: &Api, (app, profile): &(String, String), dev_eui: &str, dev_addr: &str) -> Device {
    let (nwk, appk) = ("2b7e151628aed2a6abf7158809cf4f3c", "3c4fcf098815f7aba6d2ae2816157e2b");
    let (s, b) =
        api.post("/api/devices", json!({"devEui": dev_eui, "name": dev_eui, "applicationId": app, "deviceProfileId": profile})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api.post(&format!("/api/devices/{dev_eui}/activate"), json!({"devAddr": dev_addr, "nwkSKey": nwk, "appSKey": appk})).await;
    assert_eq!(s, 200, "{b}");
    Device::abp(dev_eui, dev_addr, nwk, appk)
}

fn assert_txpk(resp: &PullResp, freq_mhz: f64, datr: &str, tmst: u64) {
    let t = &resp.txpk;
    assert!((t["freq"].as_f64().unwrap() - freq_mhz).abs() < 1e-6, "frequency {} MHz, want {freq_mhz}: {t}", t["freq"]);
    assert_eq!(t["datr"], datr, "{t}");
    assert_eq!(t["tmst"].as_u64(), Some(tmst), "{t}");
}

async fn enqueue(api: &Api, dev_eui: &str, data: &[u8]) {
    let (s, b) = api.post(&format!("/api/devices/{dev_eui}/queue"), json!({"fPort": 10, "data": b64(data)})).await;
    assert!(s == 200 || s == 201, "{s} {b}");
}

/// Sub-band 2 (channels 8-15 and 65) as a type-1 CFList: ChMask0 = 0xff00, ChMask4 = 0x0002.
const SUB_BAND_2_CF_LIST: [u8; 16] = [0x00, 0xff, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0, 0, 0, 0, 0, 1];

#[tokio::test]
async fn a_us915_server_is_one_config_key_and_serves_sub_band_2() {
    let server =
        TestServer::start(Backend::Sqlite, &[("LORAFLOW_NETWORK__REGION", "US915"), ("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")]).await;
    let api = server.client();

    // The plan, as tools learn it.
    let (s, regions) = api.get("/api/regions").await;
    assert_eq!(s, 200, "{regions}");
    assert_eq!(regions["totalCount"], 1);
    let r = &regions["result"][0];
    assert_eq!(
        (r["id"].as_str(), r["commonName"].as_str(), r["cfListType"].as_str()),
        (Some("us915_1"), Some("US915"), Some("CHANNEL_MASK"))
    );
    let channels: Vec<(u64, u64)> =
        r["uplinkChannels"].as_array().unwrap().iter().map(|c| (c["index"].as_u64().unwrap(), c["frequency"].as_u64().unwrap())).collect();
    let mut want: Vec<(u64, u64)> = (8..16).map(|n| (n, 902_300_000 + 200_000 * n)).collect();
    want.push((65, 904_600_000));
    assert_eq!(channels, want);
    assert_eq!(r["rx2"], json!({"frequency": 923_300_000, "dr": 8}));
    let (s, one) = api.get("/api/regions/us915_1").await;
    assert_eq!((s, &one["id"]), (200, &json!("us915_1")));
    assert_eq!(api.get("/api/regions/eu868").await.0, 404);

    // The set-up commands of README: no region named anywhere.
    let p = application_and_profile(&api, None, "1.0.3").await;
    let (_, profile) = api.get(&format!("/api/device-profiles/{}", p.1)).await;
    assert_eq!(profile["region"], "US915", "a profile defaults to the server's region");
    let mut gw = online_gateway(&server, &api, "00000000000000c1", None).await;
    let (_, g) = api.get("/api/gateways/00000000000000c1").await;
    assert_eq!(g["regionConfigId"], "us915_1");
    let (s, b) = api.post("/api/gateways", json!({"gatewayId": "00000000000000c2", "name": "x", "regionConfigId": "eu868"})).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("regionConfigId"), "{b}");

    // OTAA join on channel 10 (904.3 MHz) at DR0 (SF10BW125): RX1 on 923.3 + 0.6·2 MHz at
    // DR10 (SF10BW500), 5 s after the join-request; the CFList is the sub-band-2 mask.
    let mut dev = otaa_device(&api, &p, "70b3d57ed0000101").await;
    let jr = dev.join_request();
    send(&mut gw, rxpk_on(&jr, 1_000_000, 904.3, "SF10BW125")).await;
    let ja = gw.next_pull_resp(Duration::from_secs(5)).await.expect("join-accept");
    assert_txpk(&ja, 924.5, "SF10BW500", 6_000_000);
    dev.accept(&ja.phy_payload(), [0, 0, 0]);
    gw.tx_ack(ja.token, "NONE").await;
    assert_eq!(dev.cf_list, Some(SUB_BAND_2_CF_LIST));

    // A queued downlink after a confirmed uplink on channel 13 (904.9 MHz) at DR3
    // (SF7BW125): RX1 on 923.3 + 0.6·5 MHz at DR13 (SF7BW500), 1 s later.
    enqueue(&api, "70b3d57ed0000101", b"us915").await;
    let up = dev.uplink(true, 2, b"hello");
    send(&mut gw, rxpk_on(&up, 10_000_000, 904.9, "SF7BW125")).await;
    let dl = gw.next_pull_resp(Duration::from_secs(5)).await.expect("data downlink");
    assert_txpk(&dl, 926.3, "SF7BW500", 11_000_000);
    let got = dev.read_downlink(&dl.phy_payload(), 0);
    assert!(got.ack, "the confirmed uplink is acknowledged");
    assert_eq!((got.f_port, got.payload.as_slice()), (Some(10), &b"us915"[..]));
    // The device has exactly the enabled channels: nothing to confine.
    assert!(!got.mac_commands().iter().any(|c| matches!(c, DownlinkMacCommand::LinkAdrReq(_))), "{:?}", got.mac_commands());
    gw.tx_ack(dl.token, "NONE").await;

    // Channel 0 (902.3 MHz) is not enabled: dropped and counted, never answered.
    let before = metric(&api.metrics().await, "loraflow_uplinks_rejected_total", &[("reason", "channel_not_enabled")]);
    let up = dev.uplink(true, 2, b"elsewhere");
    send(&mut gw, rxpk_on(&up, 20_000_000, 902.3, "SF7BW125")).await;
    assert!(gw.next_pull_resp(Duration::from_millis(1500)).await.is_none(), "no answer on a channel that is not enabled");
    let after = metric(&api.metrics().await, "loraflow_uplinks_rejected_total", &[("reason", "channel_not_enabled")]);
    assert_eq!(after, before + 1.0);
}

#[tokio::test]
async fn a_us915_device_without_a_channel_mask_cf_list_is_confined_by_link_adr_req() {
    let server =
        TestServer::start(Backend::Sqlite, &[("LORAFLOW_NETWORK__REGION", "US915"), ("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")]).await;
    let api = server.client();
    let p = application_and_profile(&api, Some("US915"), "1.0.2").await;
    let mut gw = online_gateway(&server, &api, "00000000000000c3", None).await;

    // LoRaWAN 1.0.2 reads no type-1 CFList: the join-accept carries none.
    let mut dev = otaa_device(&api, &p, "70b3d57ed0000102").await;
    let jr = dev.join_request();
    send(&mut gw, rxpk_on(&jr, 1_000_000, 903.9, "SF10BW125")).await;
    let ja = gw.next_pull_resp(Duration::from_secs(5)).await.expect("join-accept");
    assert_txpk(&ja, 923.3, "SF10BW500", 6_000_000);
    dev.accept(&ja.phy_payload(), [0, 0, 0]);
    gw.tx_ack(ja.token, "NONE").await;
    assert_eq!(dev.cf_list, None);

    // Its first uplink (ADR off) is answered with the sub-band-2 LinkADRReq blocks: all
    // 125 kHz channels off with 65 on (ChMaskCntl 7), then 8-15 on (ChMaskCntl 0), at the
    // device's current data rate.
    let up = dev.uplink(false, 2, b"1.0.2");
    send(&mut gw, rxpk_on(&up, 10_000_000, 904.1, "SF8BW125")).await;
    let dl = gw.next_pull_resp(Duration::from_secs(5)).await.expect("downlink with LinkADRReq");
    assert_txpk(&dl, 923.9, "SF8BW500", 11_000_000);
    let masks: Vec<(u8, u16, u8)> = dev
        .read_downlink(&dl.phy_payload(), 0)
        .mac_commands()
        .iter()
        .filter_map(|c| match c {
            DownlinkMacCommand::LinkAdrReq(r) => Some((r.ch_mask_cntl, r.ch_mask, r.dr)),
            _ => None,
        })
        .collect();
    assert_eq!(masks, vec![(7, 0x0002, 2), (0, 0xff00, 2)]);
}

const TWO_REGIONS: &str = r#"
[[regions]]
id = "eu868"
commonName = "EU868"

[[regions]]
id = "us915_1"
commonName = "US915"
enabled_uplink_channels = [8, 9, 10, 11, 12, 13, 14, 15, 65]
"#;

async fn join_event(sub: &mut Subscriber, app: &str, dev_eui: &str) -> Value {
    sub.next_json(&format!("application/{app}/device/{dev_eui}/event/join")).await
}

#[tokio::test]
async fn two_region_configs_in_one_server_each_serve_their_own_gateways() {
    let server = TestServer::start_with_config(Backend::Sqlite, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")], TWO_REGIONS).await;
    let api = server.client();
    let (_, regions) = api.get("/api/regions").await;
    let ids: Vec<&str> = regions["result"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["eu868", "us915_1"]);
    let mut sub = Subscriber::connect(server.mqtt.expect("embedded broker"), "application/#", true).await;

    let eu = application_and_profile(&api, Some("EU868"), "1.0.3").await;
    let us = application_and_profile(&api, Some("US915"), "1.0.3").await;
    let mut eu_gw = online_gateway(&server, &api, "00000000000000e1", None).await;
    let mut us_gw = online_gateway(&server, &api, "00000000000000e2", Some("us915_1")).await;
    let (_, g) = api.get("/api/gateways/00000000000000e1").await;
    assert_eq!(g["regionConfigId"], "eu868", "the first config by default");

    // EU868: join on 868.3 MHz at DR5 → RX1 on the same frequency and data rate, with the
    // EU868 extra channels in a type-0 CFList.
    let mut eu_dev = otaa_device(&api, &eu, "70b3d57ed0000201").await;
    let jr = eu_dev.join_request();
    send(&mut eu_gw, rxpk_on(&jr, 1_000_000, 868.3, "SF7BW125")).await;
    let ja = eu_gw.next_pull_resp(Duration::from_secs(5)).await.expect("EU868 join-accept");
    assert_txpk(&ja, 868.3, "SF7BW125", 6_000_000);
    eu_dev.accept(&ja.phy_payload(), [0, 0, 0]);
    eu_gw.tx_ack(ja.token, "NONE").await;
    assert_eq!(eu_dev.cf_list.map(|c| c[15]), Some(0), "type-0 CFList");
    assert_eq!(join_event(&mut sub, &eu.0, "70b3d57ed0000201").await["regionConfigId"], "eu868");

    // US915 through its own gateway.
    let mut us_dev = otaa_device(&api, &us, "70b3d57ed0000202").await;
    let jr = us_dev.join_request();
    send(&mut us_gw, rxpk_on(&jr, 2_000_000, 904.3, "SF10BW125")).await;
    let ja = us_gw.next_pull_resp(Duration::from_secs(5)).await.expect("US915 join-accept");
    assert_txpk(&ja, 924.5, "SF10BW500", 7_000_000);
    us_dev.accept(&ja.phy_payload(), [0, 0, 0]);
    us_gw.tx_ack(ja.token, "NONE").await;
    assert_eq!(us_dev.cf_list, Some(SUB_BAND_2_CF_LIST));
    assert_eq!(join_event(&mut sub, &us.0, "70b3d57ed0000202").await["regionConfigId"], "us915_1");

    // Data uplinks carry their region config in the event and its rxInfo metadata.
    let up = us_dev.uplink(false, 2, b"us");
    send(&mut us_gw, rxpk_on(&up, 9_000_000, 905.3, "SF7BW125")).await;
    let ev = sub.next_json(&format!("application/{}/device/70b3d57ed0000202/event/up", us.0)).await;
    assert_eq!(ev["regionConfigId"], "us915_1");
    assert_eq!(ev["rxInfo"][0]["metadata"]["region_common_name"], "US915");
    assert_eq!(ev["dr"], 3);
    let up = eu_dev.uplink(false, 2, b"eu");
    send(&mut eu_gw, rxpk_on(&up, 9_000_000, 867.5, "SF9BW125")).await;
    let ev = sub.next_json(&format!("application/{}/device/70b3d57ed0000201/event/up", eu.0)).await;
    assert_eq!(ev["regionConfigId"], "eu868");
    assert_eq!(ev["dr"], 3);

    // The US915 device heard by the EU868 gateway (on an EU868 channel, a misconfigured
    // gateway): its profile's region does not match, so it is dropped and counted.
    let before = metric(&api.metrics().await, "loraflow_uplinks_rejected_total", &[("reason", "region_mismatch")]);
    let up = us_dev.uplink(true, 2, b"lost");
    send(&mut eu_gw, rxpk_on(&up, 12_000_000, 868.1, "SF7BW125")).await;
    assert!(eu_gw.next_pull_resp(Duration::from_millis(1500)).await.is_none());
    let after = metric(&api.metrics().await, "loraflow_uplinks_rejected_total", &[("reason", "region_mismatch")]);
    assert_eq!(after, before + 1.0);

    // Moving the gateway to the US915 config over REST takes effect for the next uplink.
    let (s, b) = api.put("/api/gateways/00000000000000e1", json!({"name": "moved", "regionConfigId": "us915_1"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["regionConfigId"], "us915_1");
    let up = us_dev.uplink(true, 2, b"moved");
    send(&mut eu_gw, rxpk_on(&up, 20_000_000, 905.3, "SF7BW125")).await;
    let dl = eu_gw.next_pull_resp(Duration::from_secs(5)).await.expect("answered as US915");
    assert_txpk(&dl, 927.5, "SF7BW500", 21_000_000);
}

const AS923_TWO_DWELL_SETTINGS: &str = r#"
[[regions]]
id = "as923_dwell"
commonName = "AS923"
downlink_dwell_time = true

[[regions]]
id = "as923_free"
commonName = "AS923"
downlink_dwell_time = false
"#;

#[tokio::test]
async fn as923_downlink_dwell_time_limits_the_queued_payload() {
    let server =
        TestServer::start_with_config(Backend::Sqlite, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")], AS923_TWO_DWELL_SETTINGS).await;
    let api = server.client();
    let p = application_and_profile(&api, Some("AS923"), "1.0.3").await;
    let mut limited_gw = online_gateway(&server, &api, "00000000000000a1", Some("as923_dwell")).await;
    let mut free_gw = online_gateway(&server, &api, "00000000000000a2", Some("as923_free")).await;
    let mut limited = abp_device(&api, &p, "70b3d57ed0000301", "26000301").await;
    let mut free = abp_device(&api, &p, "70b3d57ed0000302", "26000302").await;

    // 20 bytes at DR2 (SF10BW125): RP002-1.0.4 §2.10.6 allows N = 11 bytes with the
    // downlink dwell time, 115 without.
    let payload = [0x5a; 20];
    enqueue(&api, "70b3d57ed0000302", &payload).await;
    let up = free.uplink(false, 2, b"x");
    send(&mut free_gw, rxpk_on(&up, 1_000_000, 923.2, "SF10BW125")).await;
    let dl = free_gw.next_pull_resp(Duration::from_secs(5)).await.expect("queued downlink");
    assert_txpk(&dl, 923.2, "SF10BW125", 2_000_000);
    let got = free.read_downlink(&dl.phy_payload(), 0);
    assert_eq!((got.f_port, got.payload.as_slice()), (Some(10), &payload[..]));

    enqueue(&api, "70b3d57ed0000301", &payload).await;
    let up = limited.uplink(false, 2, b"x");
    send(&mut limited_gw, rxpk_on(&up, 1_000_000, 923.2, "SF10BW125")).await;
    // Too large under the dwell time: removed from the queue (DOWNLINK_PAYLOAD_SIZE log),
    // never sent; whatever goes out carries no application payload.
    if let Some(dl) = limited_gw.next_pull_resp(Duration::from_secs(3)).await {
        let got = limited.read_downlink(&dl.phy_payload(), 0);
        assert_ne!(got.f_port, Some(10), "the oversized item must not be sent");
    }
    let emptied = common::eventually(Duration::from_secs(5), || async {
        let (_, q) = api.get("/api/devices/70b3d57ed0000301/queue").await;
        (q["totalCount"] == 0).then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the oversized item is removed from the queue");
}

#[tokio::test]
async fn a_gateways_region_config_is_read_back_after_a_restart() {
    let server = TestServer::start_with_config(Backend::Sqlite, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")], TWO_REGIONS).await;
    let api = server.client();
    let us = application_and_profile(&api, Some("US915"), "1.0.3").await;
    let (s, b) = api.post("/api/gateways", json!({"gatewayId": "00000000000000f1", "name": "us", "regionConfigId": "us915_1"})).await;
    assert_eq!(s, 201, "{b}");
    let mut dev = otaa_device(&api, &us, "70b3d57ed0000401").await;

    let server = server.restart();
    let api = server.client();
    let (_, g) = api.get("/api/gateways/00000000000000f1").await;
    assert_eq!(g["regionConfigId"], "us915_1");
    let mut gw = FakeGateway::new("00000000000000f1", server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    let jr = dev.join_request();
    send(&mut gw, rxpk_on(&jr, 1_000_000, 904.3, "SF10BW125")).await;
    let ja = gw.next_pull_resp(Duration::from_secs(5)).await.expect("US915 join-accept after the restart");
    assert_txpk(&ja, 924.5, "SF10BW500", 6_000_000);
}
