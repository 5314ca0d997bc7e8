//! The network server's own MAC commands end to end: ADRACKReq answered, DevStatusReq and
//! the `status` event, RXParamSetupReq repeated until answered (across a restart) with
//! downlinks kept on the old RX2 until then, refused requests reported as `log` events.
//! Real binary, virtual gateway over UDP, SQLite and PostgreSQL.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::time::Duration;

use common::device::{Device, UplinkFlags};
use common::gateway::{rxpk, FakeGateway, PullResp, PULL_ACK, PUSH_ACK};
use common::{eventually, metric, Api, Backend, TestServer};
use loraflow_network_server::mac::{
    DevStatusAns, DownlinkMacCommand, NewChannelAns, NewChannelReq, RxParamSetupAns, RxParamSetupReq, UplinkMacCommand,
};
use mqtt_support::Subscriber;
use serde_json::{json, Value};

const GATEWAY: &str = "00000000000000c1";
const DEV_EUI: &str = "70b3d57ed00000e1";
const DEV_ADDR: &str = "26011f01";
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";

struct Net {
    server: TestServer,
    api: Api,
    gw: FakeGateway,
    app_id: String,
    dev: Device,
    /// FCntDown of the next downlink.
    f_cnt_down: u32,
}

async fn setup(backend: Backend, env: &[(&str, &str)]) -> Net {
    let mut env = env.to_vec();
    env.push(("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50"));
    let server = TestServer::start(backend, &env).await;
    let api = server.client();
    let (s, app) = api.post("/api/applications", json!({"name": "mac"})).await;
    assert_eq!(s, 201, "{app}");
    // Uplinks here are SF7 at 8 dB: with a 15 dB installation margin ADR has nothing to change
    // (8 - (-7.5) - 15 = 0.5 dB), so the downlinks carry only the commands under test
    // (tests/adr.rs covers LinkADRReq).
    let (s, dp) = api
        .post(
            "/api/device-profiles",
            json!({"name": "adr", "region": "EU868", "macVersion": "1.0.3", "regParamsRevision": "RP002-1.0.3",
                   "supportsOtaa": false, "supportsClassC": false, "adrEnabled": true, "payloadCodec": "NONE", "payloadCodecScript": "",
                   "adrInstallationMarginDb": 15}),
        )
        .await;
    assert_eq!(s, 201, "{dp}");
    let app_id = app["id"].as_str().unwrap().to_string();
    let (s, b) =
        api.post("/api/devices", json!({"devEui": DEV_EUI, "name": "mac-dev", "applicationId": app_id, "deviceProfileId": dp["id"]})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .post(&format!("/api/devices/{DEV_EUI}/activate"), json!({"devAddr": DEV_ADDR, "nwkSKey": NWK_S_KEY, "appSKey": APP_S_KEY}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = api.post("/api/gateways", json!({"gatewayId": GATEWAY, "name": "gw"})).await;
    assert_eq!(s, 201, "{b}");
    let gw = FakeGateway::new(GATEWAY, server.gateway).await;
    let mut net = Net { server, api, gw, app_id, dev: Device::abp(DEV_EUI, DEV_ADDR, NWK_S_KEY, APP_S_KEY), f_cnt_down: 0 };
    connect(&mut net).await;
    net
}

async fn connect(net: &mut Net) {
    net.gw.server = net.server.gateway;
    let t = net.gw.pull_data().await;
    net.gw.expect_ack(PULL_ACK, t).await;
}

fn encode(cmds: &[UplinkMacCommand]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cmds {
        c.encode(&mut out);
    }
    out
}

/// Sends an uplink (SF7, 868.1 MHz) with these flags and MAC answers in FOpts.
async fn uplink(net: &mut Net, flags: UplinkFlags, answers: &[UplinkMacCommand], tmst: u32) {
    let phy = net.dev.uplink_flags(flags, Some(1), b"m", &encode(answers));
    let t = net.gw.push_rxpk(vec![rxpk(&phy, tmst, -60, 8.0)]).await;
    net.gw.expect_ack(PUSH_ACK, t).await;
}

/// The next PULL_RESP, acknowledged with `tx_ack`.
async fn downlink(net: &mut Net, tx_ack: &str) -> PullResp {
    let resp = net.gw.next_pull_resp(Duration::from_secs(5)).await.expect("a downlink");
    net.gw.tx_ack(resp.token, tx_ack).await;
    resp
}

/// A downlink refused in RX1 and sent in RX2: returns both attempts.
async fn downlink_in_rx2(net: &mut Net) -> (PullResp, PullResp) {
    let rx1 = downlink(net, "TOO_LATE").await;
    let rx2 = downlink(net, "NONE").await;
    assert_eq!(rx1.phy_payload(), rx2.phy_payload(), "RX2 carries the same frame");
    (rx1, rx2)
}

fn read(net: &mut Net, resp: &PullResp) -> common::device::ReceivedDownlink {
    let dl = net.dev.read_downlink(&resp.phy_payload(), net.f_cnt_down);
    net.f_cnt_down += 1;
    dl
}

async fn expect_metric(api: &Api, labels: &[(&str, &str)], want: f64) {
    let got = eventually(Duration::from_secs(5), || async {
        let v = metric(&api.metrics().await, "loraflow_mac_commands_total", labels);
        (v >= want).then_some(v)
    })
    .await;
    assert_eq!(got, Some(want), "loraflow_mac_commands_total{labels:?}");
}

async fn event(sub: &mut Subscriber, app_id: &str, kind: &str) -> Value {
    sub.next_json(&format!("application/{app_id}/device/{DEV_EUI}/event/{kind}")).await
}

const ADR: UplinkFlags = UplinkFlags { confirmed: false, ack: false, adr: true, adr_ack_req: false };

async fn adr_ack_req_and_device_status(backend: Backend) {
    let mut net = setup(backend, &[("LORAFLOW_NETWORK__EXTRA_CHANNELS", "")]).await;
    let mut sub = Subscriber::connect(net.server.mqtt.expect("embedded broker"), "application/#", false).await;

    // First uplink: the server asks for the device status (once a day by default).
    uplink(&mut net, ADR, &[], 1_000_000).await;
    let resp = downlink(&mut net, "NONE").await;
    assert_eq!(resp.txpk["tmst"], json!(2_000_000u32), "RX1");
    let dl = read(&mut net, &resp);
    assert_eq!(dl.mac_commands(), vec![DownlinkMacCommand::DevStatusReq]);
    assert!(dl.adr, "ADR bit echoed: the uplink had ADR and the profile allows it");
    expect_metric(&net.api, &[("command", "DevStatusReq"), ("outcome", "sent")], 1.0).await;

    // ADRACKReq with nothing else due still gets a downlink: an empty one. The DevStatusAns
    // in it becomes a `status` event with ChirpStack's battery value.
    let status = UplinkMacCommand::DevStatusAns(DevStatusAns { battery: 200, margin: 7 });
    uplink(&mut net, UplinkFlags { adr_ack_req: true, ..ADR }, &[status], 3_000_000).await;
    let resp = downlink(&mut net, "NONE").await;
    let dl = read(&mut net, &resp);
    assert!(dl.f_opts.is_empty() && dl.f_port.is_none() && !dl.ack, "{dl:?}");
    let ev = event(&mut sub, &net.app_id, "status").await;
    assert_eq!(ev["batteryLevel"].as_f64().unwrap(), 78.74, "{ev}");
    assert_eq!(
        (ev["margin"].clone(), ev["externalPowerSource"].clone(), ev["batteryLevelUnavailable"].clone()),
        (json!(7), json!(false), json!(false))
    );
    expect_metric(&net.api, &[("command", "DevStatusReq"), ("outcome", "answered")], 1.0).await;

    // Without ADRACKReq and with nothing due, no downlink.
    uplink(&mut net, ADR, &[], 5_000_000).await;
    assert!(net.gw.next_pull_resp(Duration::from_millis(1500)).await.is_none(), "no downlink when nothing is due");
}

#[tokio::test]
async fn adr_ack_req_gets_a_downlink_and_dev_status_gives_a_status_event_on_sqlite() {
    adr_ack_req_and_device_status(Backend::Sqlite).await;
}

#[tokio::test]
async fn adr_ack_req_gets_a_downlink_and_dev_status_gives_a_status_event_on_postgres() {
    adr_ack_req_and_device_status(Backend::Postgres).await;
}

fn rx_param_req(cmds: &[DownlinkMacCommand]) -> Option<RxParamSetupReq> {
    cmds.iter().find_map(|c| match c {
        DownlinkMacCommand::RxParamSetupReq(r) => Some(*r),
        _ => None,
    })
}

async fn rx_params_wait_for_the_answer(backend: Backend) {
    let env = [
        ("LORAFLOW_NETWORK__EXTRA_CHANNELS", ""),
        ("LORAFLOW_NETWORK__RX2_DR", "3"),
        ("LORAFLOW_NETWORK__RX2_FREQUENCY", "869100000"),
        ("LORAFLOW_NETWORK__MAC_COMMAND_MAX_ATTEMPTS", "5"),
    ];
    let mut net = setup(backend, &env).await;
    let want = RxParamSetupReq { rx1_dr_offset: 0, rx2_dr: 3, frequency: 869_100_000 };

    // An ABP device starts on the region's RX2 (869.525 MHz, DR0); the server asks it to move
    // and, until it answers, keeps sending there.
    uplink(&mut net, UplinkFlags::default(), &[], 1_000_000).await;
    let (_, rx2) = downlink_in_rx2(&mut net).await;
    assert_eq!((rx2.txpk["freq"].as_f64().unwrap(), rx2.txpk["datr"].as_str().unwrap()), (869.525, "SF12BW125"));
    assert_eq!(rx_param_req(&read(&mut net, &rx2).mac_commands()), Some(want));

    uplink(&mut net, UplinkFlags::default(), &[], 4_000_000).await;
    let resp = downlink(&mut net, "NONE").await;
    assert_eq!(rx_param_req(&read(&mut net, &resp).mac_commands()), Some(want), "sent again while unanswered");

    // The pending request survives a restart: still sent, still on the old RX2.
    net.server = net.server.restart();
    net.api = net.server.client();
    connect(&mut net).await;
    uplink(&mut net, UplinkFlags::default(), &[], 7_000_000).await;
    let (_, rx2) = downlink_in_rx2(&mut net).await;
    assert_eq!(rx2.txpk["freq"].as_f64().unwrap(), 869.525);
    assert_eq!(rx_param_req(&read(&mut net, &rx2).mac_commands()), Some(want), "sent again after the restart");
    expect_metric(&net.api, &[("command", "RXParamSetupReq"), ("outcome", "sent")], 1.0).await;

    // The device accepts: from this uplink's answer on, RX2 is 869.1 MHz at DR3 (SF9).
    let ans = UplinkMacCommand::RxParamSetupAns(RxParamSetupAns { rx1_dr_offset_ack: true, rx2_dr_ack: true, channel_ack: true });
    let status = UplinkMacCommand::DevStatusAns(DevStatusAns { battery: 0, margin: 3 });
    uplink(&mut net, UplinkFlags { confirmed: true, ..UplinkFlags::default() }, &[ans, status], 10_000_000).await;
    let (_, rx2) = downlink_in_rx2(&mut net).await;
    assert_eq!((rx2.txpk["freq"].as_f64().unwrap(), rx2.txpk["datr"].as_str().unwrap()), (869.1, "SF9BW125"));
    let dl = read(&mut net, &rx2);
    assert!(dl.ack);
    assert_eq!(rx_param_req(&dl.mac_commands()), None, "answered: not sent again");
    expect_metric(&net.api, &[("command", "RXParamSetupReq"), ("outcome", "answered")], 1.0).await;

    // And it stays there, across another restart.
    net.server = net.server.restart();
    net.api = net.server.client();
    connect(&mut net).await;
    uplink(&mut net, UplinkFlags { confirmed: true, ..UplinkFlags::default() }, &[], 13_000_000).await;
    let (_, rx2) = downlink_in_rx2(&mut net).await;
    assert_eq!((rx2.txpk["freq"].as_f64().unwrap(), rx2.txpk["datr"].as_str().unwrap()), (869.1, "SF9BW125"));
    assert_eq!(rx2.txpk["tmst"], json!(13_000_000u32 + 2_000_000));
}

#[tokio::test]
async fn rx_param_setup_is_repeated_until_answered_across_a_restart_on_sqlite() {
    rx_params_wait_for_the_answer(Backend::Sqlite).await;
}

#[tokio::test]
async fn rx_param_setup_is_repeated_until_answered_across_a_restart_on_postgres() {
    rx_params_wait_for_the_answer(Backend::Postgres).await;
}

async fn refused_requests_are_logged(backend: Backend) {
    let mut net = setup(backend, &[("LORAFLOW_NETWORK__RX2_DR", "3")]).await;
    let mut sub = Subscriber::connect(net.server.mqtt.expect("embedded broker"), "application/#", false).await;

    // An ABP device learns the extra channels by NewChannelReq; with RXParamSetupReq and
    // DevStatusReq that is more than FOpts holds, so the commands go on FPort 0.
    uplink(&mut net, UplinkFlags::default(), &[], 1_000_000).await;
    let resp = downlink(&mut net, "NONE").await;
    let dl = read(&mut net, &resp);
    assert_eq!(dl.f_port, Some(0));
    let cmds = dl.mac_commands();
    let channels: Vec<NewChannelReq> = cmds
        .iter()
        .filter_map(|c| match c {
            DownlinkMacCommand::NewChannelReq(r) => Some(*r),
            _ => None,
        })
        .collect();
    let want: Vec<NewChannelReq> =
        (0..5).map(|i| NewChannelReq { ch_index: 3 + i as u8, frequency: 867_100_000 + i * 200_000, min_dr: 0, max_dr: 5 }).collect();
    assert_eq!(channels, want);
    assert_eq!(rx_param_req(&cmds), Some(RxParamSetupReq { rx1_dr_offset: 0, rx2_dr: 3, frequency: 869_525_000 }));

    // The device refuses the RX2 data rate and channel 4's frequency.
    let ok = UplinkMacCommand::NewChannelAns(NewChannelAns { dr_range_ok: true, channel_freq_ok: true });
    let nak = UplinkMacCommand::NewChannelAns(NewChannelAns { dr_range_ok: true, channel_freq_ok: false });
    let rx_nak = UplinkMacCommand::RxParamSetupAns(RxParamSetupAns { rx1_dr_offset_ack: true, rx2_dr_ack: false, channel_ack: true });
    let status = UplinkMacCommand::DevStatusAns(DevStatusAns { battery: 255, margin: -2 });
    uplink(&mut net, UplinkFlags::default(), &[rx_nak, ok, nak, ok, ok, ok, status], 3_000_000).await;
    // The device repeats RXParamSetupAns until it hears a downlink: it gets an empty one.
    let resp = downlink(&mut net, "NONE").await;
    let dl = read(&mut net, &resp);
    assert!(dl.f_opts.is_empty() && dl.f_port.is_none(), "{dl:?}");

    let mut logs = vec![event(&mut sub, &net.app_id, "log").await, event(&mut sub, &net.app_id, "log").await];
    logs.sort_by_key(|l| l["context"]["command"].as_str().unwrap_or_default().to_string());
    for l in &logs {
        assert_eq!((l["code"].as_str(), l["level"].as_str()), (Some("UNKNOWN"), Some("WARNING")), "{l}");
    }
    assert_eq!(logs[0]["context"]["command"], "NewChannelReq", "{logs:?}");
    assert!(logs[0]["description"].as_str().unwrap().contains("channel 4"), "{}", logs[0]);
    assert_eq!(logs[1]["context"]["command"], "RXParamSetupReq", "{logs:?}");
    assert!(logs[1]["description"].as_str().unwrap().contains("RX2 data rate NAK"), "{}", logs[1]);
    let ev = event(&mut sub, &net.app_id, "status").await;
    assert_eq!((ev["batteryLevelUnavailable"].clone(), ev["margin"].clone()), (json!(true), json!(-2)), "{ev}");
    expect_metric(&net.api, &[("command", "NewChannelReq"), ("outcome", "answered")], 4.0).await;
    expect_metric(&net.api, &[("command", "NewChannelReq"), ("outcome", "nak")], 1.0).await;
    expect_metric(&net.api, &[("command", "RXParamSetupReq"), ("outcome", "nak")], 1.0).await;

    // Refused requests are not sent again at once: nothing is due.
    uplink(&mut net, UplinkFlags::default(), &[], 5_000_000).await;
    assert!(net.gw.next_pull_resp(Duration::from_millis(1500)).await.is_none(), "refused requests are held back");
}

#[tokio::test]
async fn refused_new_channel_and_rx_param_requests_are_logged_on_sqlite() {
    refused_requests_are_logged(Backend::Sqlite).await;
}

#[tokio::test]
async fn refused_new_channel_and_rx_param_requests_are_logged_on_postgres() {
    refused_requests_are_logged(Backend::Postgres).await;
}
