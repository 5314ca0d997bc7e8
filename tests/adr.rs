//! ADR end to end (LoRaWAN 1.0.4 §4.3.1.1, §5.3): a device heard well at SF12 is told to go
//! faster, the server believes what the device acknowledges and nothing it refuses, devices
//! without the ADR bit or with ADR off in their profile are left alone, the ADR history
//! written lazily still survives a restart, and NbTrans repeats are dropped quietly. Real
//! binary, virtual gateway over UDP, SQLite and PostgreSQL.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::time::Duration;

use common::device::{Device, UplinkFlags};
use common::gateway::{rxpk, FakeGateway, PullResp, PULL_ACK, PUSH_ACK};
use common::{eventually, metric, Api, Backend, TestServer};
use loraflow_network_server::mac::{DownlinkMacCommand, LinkAdrAns, LinkAdrReq, UplinkMacCommand};
use mqtt_support::Subscriber;
use serde_json::{json, Value};

const GATEWAY: &str = "00000000000000a1";
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";

const ADR: UplinkFlags = UplinkFlags { confirmed: false, ack: false, adr: true, adr_ack_req: false };
const NO_ADR: UplinkFlags = UplinkFlags { confirmed: false, ack: false, adr: false, adr_ack_req: false };

struct Net {
    server: TestServer,
    api: Api,
    gw: FakeGateway,
    app_id: String,
    tmst: u32,
}

/// A server without extra channels (an ABP device then has the three default ones and gets
/// no NewChannelReq) and one gateway.
async fn setup(backend: Backend) -> Net {
    let env = [("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50"), ("LORAFLOW_NETWORK__EXTRA_CHANNELS", "")];
    let server = TestServer::start(backend, &env).await;
    let api = server.client();
    let (s, app) = api.post("/api/applications", json!({"name": "adr"})).await;
    assert_eq!(s, 201, "{app}");
    let (s, b) = api.post("/api/gateways", json!({"gatewayId": GATEWAY, "name": "gw"})).await;
    assert_eq!(s, 201, "{b}");
    let mut gw = FakeGateway::new(GATEWAY, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    Net { server, api, gw, app_id: app["id"].as_str().unwrap().to_string(), tmst: 1_000_000 }
}

/// An ABP device on a profile with ADR `adr_enabled` (margin 10 dB, DR0-5) that is never
/// asked for its status, so that every downlink in these tests is ADR's.
async fn device(net: &Net, dev_eui: &str, dev_addr: &str, adr_enabled: bool) -> Device {
    let (s, dp) = net
        .api
        .post(
            "/api/device-profiles",
            json!({"name": format!("adr-{dev_eui}"), "region": "EU868", "macVersion": "1.0.3", "regParamsRevision": "RP002-1.0.3",
                   "supportsOtaa": false, "supportsClassC": false, "adrEnabled": adr_enabled, "payloadCodec": "NONE",
                   "payloadCodecScript": "", "adrMinDr": 0, "adrMaxDr": 5, "adrInstallationMarginDb": 10, "devStatusReqFreq": 0}),
        )
        .await;
    assert_eq!(s, 201, "{dp}");
    let (s, b) = net
        .api
        .post("/api/devices", json!({"devEui": dev_eui, "name": dev_eui, "applicationId": net.app_id, "deviceProfileId": dp["id"]}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = net
        .api
        .post(&format!("/api/devices/{dev_eui}/activate"), json!({"devAddr": dev_addr, "nwkSKey": NWK_S_KEY, "appSKey": APP_S_KEY}))
        .await;
    assert_eq!(s, 200, "{b}");
    Device::abp(dev_eui, dev_addr, NWK_S_KEY, APP_S_KEY)
}

fn encode(cmds: &[UplinkMacCommand]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cmds {
        c.encode(&mut out);
    }
    out
}

/// Pushes `phy` as heard at `datr` (e.g. "SF12BW125") with `snr` dB on 868.1 MHz.
async fn push(net: &mut Net, phy: &[u8], datr: &str, snr: f64) {
    let mut rx = rxpk(phy, net.tmst, -60, snr);
    rx["datr"] = json!(datr);
    net.tmst += 3_000_000;
    let t = net.gw.push_rxpk(vec![rx]).await;
    net.gw.expect_ack(PUSH_ACK, t).await;
}

/// Sends an uplink on FPort 1 with MAC answers in FOpts.
async fn uplink(net: &mut Net, dev: &mut Device, flags: UplinkFlags, answers: &[UplinkMacCommand], datr: &str, snr: f64) {
    let phy = dev.uplink_flags(flags, Some(1), b"a", &encode(answers));
    push(net, &phy, datr, snr).await;
}

async fn downlink(net: &mut Net) -> PullResp {
    let resp = net.gw.next_pull_resp(Duration::from_secs(5)).await.expect("a downlink");
    net.gw.tx_ack(resp.token, "NONE").await;
    resp
}

async fn no_downlink(net: &mut Net, why: &str) {
    assert!(net.gw.next_pull_resp(Duration::from_millis(1500)).await.is_none(), "no downlink: {why}");
}

fn link_adr_reqs(cmds: &[DownlinkMacCommand]) -> Vec<LinkAdrReq> {
    cmds.iter()
        .filter_map(|c| match c {
            DownlinkMacCommand::LinkAdrReq(r) => Some(*r),
            _ => None,
        })
        .collect()
}

/// Waits until the counter reaches `want` and checks it does not exceed it.
async fn expect_metric(api: &Api, name: &str, labels: &[(&str, &str)], want: f64) {
    let got = eventually(Duration::from_secs(5), || async {
        let v = metric(&api.metrics().await, name, labels);
        (v >= want).then_some(v)
    })
    .await;
    assert_eq!(got, Some(want), "{name}{labels:?}");
}

/// What the server believes the device uses (GET .../activation `radio`).
async fn radio(net: &Net, dev_eui: &str) -> Value {
    let (s, b) = net.api.get(&format!("/api/devices/{dev_eui}/activation")).await;
    assert_eq!(s, 200, "{b}");
    b["radio"].clone()
}

/// The next event of `kind` for `dev_eui`.
async fn event(sub: &mut Subscriber, app_id: &str, dev_eui: &str, kind: &str) -> Value {
    sub.next_json(&format!("application/{app_id}/device/{dev_eui}/event/{kind}")).await
}

const REPEAT_AFTER: Duration = Duration::from_millis(1300);

const ALL_ACK: LinkAdrAns = LinkAdrAns { power_ack: true, dr_ack: true, ch_mask_ack: true };

async fn sf12_device_is_raised_and_believed_only_when_it_acknowledges(backend: Backend) {
    let mut net = setup(backend).await;
    let dev_eui = "70b3d57ed00000a1";
    let mut dev = device(&net, dev_eui, "26011fa1", true).await;
    let mut sub = Subscriber::connect(net.server.mqtt.expect("embedded broker"), "application/#", false).await;
    assert_eq!(radio(&net, dev_eui).await, json!({"dr": null, "txPowerIndex": 0, "nbTrans": 1}), "nothing known yet");

    // SF12 (DR0) at +10 dB: 10 - (-20) - 10 dB margin = 20 dB, six 3-dB steps: five raise the
    // data rate to DR5, the sixth lowers the power one index.
    uplink(&mut net, &mut dev, ADR, &[], "SF12BW125", 10.0).await;
    let resp = downlink(&mut net).await;
    assert_eq!(resp.txpk["datr"], "SF12BW125", "RX1 at the uplink's data rate");
    let dl = dev.read_downlink(&resp.phy_payload(), 0);
    assert!(dl.adr, "the downlink's ADR bit is set");
    let req = LinkAdrReq { dr: 5, tx_power: 1, ch_mask: 0b111, ch_mask_cntl: 0, nb_trans: 1 };
    assert_eq!(link_adr_reqs(&dl.mac_commands()), vec![req], "{dl:?}");
    let up = event(&mut sub, &net.app_id, dev_eui, "up").await;
    assert_eq!(up["dr"], 0, "{up}");
    expect_metric(&net.api, "loraflow_adr_decisions_total", &[("direction", "up")], 1.0).await;
    expect_metric(&net.api, "loraflow_mac_commands_total", &[("command", "LinkADRReq"), ("outcome", "sent")], 1.0).await;

    // The device applies it and answers at DR5, 2 dB quieter. Now the server believes it.
    uplink(&mut net, &mut dev, ADR, &[UplinkMacCommand::LinkAdrAns(ALL_ACK)], "SF7BW125", 8.0).await;
    no_downlink(&mut net, "the answer needs no reply").await;
    expect_metric(&net.api, "loraflow_mac_commands_total", &[("command", "LinkADRReq"), ("outcome", "answered")], 1.0).await;
    assert_eq!(radio(&net, dev_eui).await, json!({"dr": 5, "txPowerIndex": 1, "nbTrans": 1}));

    // The next decision starts from DR5 at index 1: the best SNR, counted at index 1, is 8 dB:
    // 8 - (-7.5) - 10 = 5.5 dB, one step, on the power (DR5 is the top).
    uplink(&mut net, &mut dev, ADR, &[], "SF7BW125", 8.0).await;
    let resp = downlink(&mut net).await;
    let dl = dev.read_downlink(&resp.phy_payload(), 1);
    let req = LinkAdrReq { dr: 5, tx_power: 2, ch_mask: 0b111, ch_mask_cntl: 0, nb_trans: 1 };
    assert_eq!(link_adr_reqs(&dl.mac_commands()), vec![req], "{dl:?}");
    expect_metric(&net.api, "loraflow_adr_decisions_total", &[("direction", "up")], 2.0).await;

    // This time the device refuses the power: nothing changes, a `log` event says why.
    let nak = LinkAdrAns { power_ack: false, ..ALL_ACK };
    uplink(&mut net, &mut dev, ADR, &[UplinkMacCommand::LinkAdrAns(nak)], "SF7BW125", 8.0).await;
    let log = event(&mut sub, &net.app_id, dev_eui, "log").await;
    assert_eq!((log["level"].as_str(), log["code"].as_str()), (Some("WARNING"), Some("UNKNOWN")), "{log}");
    assert_eq!(log["context"]["command"], "LinkADRReq", "{log}");
    assert!(log["description"].as_str().unwrap().contains("power NAK"), "{log}");
    expect_metric(&net.api, "loraflow_mac_commands_total", &[("command", "LinkADRReq"), ("outcome", "nak")], 1.0).await;
    assert_eq!(radio(&net, dev_eui).await, json!({"dr": 5, "txPowerIndex": 1, "nbTrans": 1}), "a NAK is not believed");
    no_downlink(&mut net, "nothing else is due").await;

    // The refused request is not sent again right away.
    uplink(&mut net, &mut dev, ADR, &[], "SF7BW125", 8.0).await;
    no_downlink(&mut net, "the refused LinkADRReq is held back").await;

    // The stored history keeps what ADR decided on each uplink, oldest first: the first
    // uplink's decision is the LinkADRReq it triggered.
    let stored = eventually(Duration::from_secs(5), || async {
        let (s, h) = net.api.get(&format!("/api/devices/{dev_eui}/uplinks?limit=10")).await;
        assert_eq!(s, 200, "{h}");
        let rows = h["result"].as_array().cloned().unwrap_or_default();
        (rows.len() == 5).then_some(rows)
    })
    .await
    .expect("five stored uplinks");
    let oldest = &stored[4];
    assert_eq!(oldest["fCnt"], 0, "{oldest}");
    assert_eq!(oldest["adrDecision"], json!({"dr": 5, "txPowerIndex": 1, "nbTrans": 1}), "{oldest}");
    assert_eq!(stored[2]["adrDecision"], json!({"dr": 5, "txPowerIndex": 2, "nbTrans": 1}), "{}", stored[2]);

    // What the server believes survives a restart.
    net.server = net.server.restart();
    net.api = net.server.client();
    assert_eq!(radio(&net, dev_eui).await, json!({"dr": 5, "txPowerIndex": 1, "nbTrans": 1}));
}

#[tokio::test]
async fn an_sf12_device_heard_well_is_raised_to_dr5_and_believed_only_when_it_acknowledges_on_sqlite() {
    sf12_device_is_raised_and_believed_only_when_it_acknowledges(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_sf12_device_heard_well_is_raised_to_dr5_and_believed_only_when_it_acknowledges_on_postgres() {
    sf12_device_is_raised_and_believed_only_when_it_acknowledges(Backend::Postgres).await;
}

async fn devices_without_adr_are_left_alone(backend: Backend) {
    let mut net = setup(backend).await;
    let mut off = device(&net, "70b3d57ed00000b1", "26011fb1", false).await;
    let mut no_bit = device(&net, "70b3d57ed00000b2", "26011fb2", true).await;
    let mut on = device(&net, "70b3d57ed00000b3", "26011fb3", true).await;

    // The same great link for all three: only the device with the ADR bit and ADR on in its
    // profile is told to go faster.
    uplink(&mut net, &mut off, ADR, &[], "SF12BW125", 10.0).await;
    no_downlink(&mut net, "the profile has ADR off").await;
    uplink(&mut net, &mut no_bit, NO_ADR, &[], "SF12BW125", 10.0).await;
    no_downlink(&mut net, "the uplink has no ADR bit").await;
    uplink(&mut net, &mut on, ADR, &[], "SF12BW125", 10.0).await;
    let resp = downlink(&mut net).await;
    let dl = on.read_downlink(&resp.phy_payload(), 0);
    assert_eq!(link_adr_reqs(&dl.mac_commands()).len(), 1, "{dl:?}");
    expect_metric(&net.api, "loraflow_adr_decisions_total", &[("direction", "up")], 1.0).await;
}

#[tokio::test]
async fn no_link_adr_req_without_the_adr_bit_or_with_adr_off_in_the_profile_on_sqlite() {
    devices_without_adr_are_left_alone(Backend::Sqlite).await;
}

#[tokio::test]
async fn no_link_adr_req_without_the_adr_bit_or_with_adr_off_in_the_profile_on_postgres() {
    devices_without_adr_are_left_alone(Backend::Postgres).await;
}

async fn lossy_device_gets_nb_trans_and_its_repeats_are_dropped_quietly(backend: Backend) {
    let mut net = setup(backend).await;
    let dev_eui = "70b3d57ed00000c1";
    let mut dev = device(&net, dev_eui, "26011fc1", true).await;
    let mut sub = Subscriber::connect(net.server.mqtt.expect("embedded broker"), "application/#", false).await;

    // DR5 at 3.5 dB: 1 dB above what DR5 needs with the margin, no step either way. Three of
    // the first 23 frames never arrive: 13 % loss over a full history of 20 uplinks, which
    // ChirpStack's table answers with NbTrans 2 (from 1). Half way the server restarts: the
    // history of the first ten uplinks was written (every tenth uplink writes it), so the
    // decision still comes at the twentieth.
    for i in 0..20 {
        if i == 10 {
            net.server = net.server.restart();
            net.api = net.server.client();
            net.gw.server = net.server.gateway;
            let t = net.gw.pull_data().await;
            net.gw.expect_ack(PULL_ACK, t).await;
            sub = Subscriber::connect(net.server.mqtt.expect("embedded broker"), "application/#", false).await;
        }
        if [4, 9, 14].contains(&i) {
            dev.f_cnt_up += 1;
        }
        uplink(&mut net, &mut dev, ADR, &[], "SF7BW125", 3.5).await;
        if i < 19 {
            // Waits for the uplink to be handled, so that the history is in order.
            event(&mut sub, &net.app_id, dev_eui, "up").await;
        }
    }
    let resp = downlink(&mut net).await;
    let dl = dev.read_downlink(&resp.phy_payload(), 0);
    let req = LinkAdrReq { dr: 5, tx_power: 0, ch_mask: 0b111, ch_mask_cntl: 0, nb_trans: 2 };
    assert_eq!(link_adr_reqs(&dl.mac_commands()), vec![req], "{dl:?}");
    expect_metric(&net.api, "loraflow_adr_decisions_total", &[("direction", "nb_trans")], 1.0).await;
    expect_metric(&net.api, "loraflow_adr_decisions_total", &[("direction", "same")], 9.0).await;

    // Acknowledged: from now on every frame comes twice, each repeat after the receive
    // windows of the first transmission (LoRaWAN 1.0.4 §5.3), so after the deduplicator stops
    // remembering the frame (ten 50 ms windows here).
    let phy = dev.uplink_flags(ADR, Some(1), b"a", &encode(&[UplinkMacCommand::LinkAdrAns(ALL_ACK)]));
    push(&mut net, &phy, "SF7BW125", 3.5).await;
    tokio::time::sleep(REPEAT_AFTER).await;
    push(&mut net, &phy, "SF7BW125", 3.5).await;
    no_downlink(&mut net, "nothing is due").await;
    assert_eq!(radio(&net, dev_eui).await, json!({"dr": 5, "txPowerIndex": 0, "nbTrans": 2}));
    let phy = dev.uplink_flags(ADR, Some(1), b"b", &[]);
    push(&mut net, &phy, "SF7BW125", 3.5).await;
    tokio::time::sleep(REPEAT_AFTER).await;
    push(&mut net, &phy, "SF7BW125", 3.5).await;
    expect_metric(&net.api, "loraflow_uplink_repeats_total", &[], 2.0).await;

    // One `up` event per frame, and no frame-counter `log` event for the repeats.
    let mut f_cnts = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, sub.messages.recv()).await {
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert!(!topic.ends_with("/event/log"), "repeats are not logged: {v}");
        if topic.ends_with("/event/up") {
            f_cnts.push(v["fCnt"].as_u64().unwrap());
        }
    }
    assert_eq!(f_cnts, vec![22, 23, 24], "the last ADR uplink, then each repeated frame once");
    expect_metric(&net.api, "loraflow_uplinks_rejected_total", &[("reason", "retransmission")], 0.0).await;
}

#[tokio::test]
async fn a_lossy_device_gets_nb_trans_2_and_its_repeats_are_dropped_quietly_on_sqlite() {
    lossy_device_gets_nb_trans_and_its_repeats_are_dropped_quietly(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_lossy_device_gets_nb_trans_2_and_its_repeats_are_dropped_quietly_on_postgres() {
    lossy_device_gets_nb_trans_and_its_repeats_are_dropped_quietly(Backend::Postgres).await;
}
