//! Gateway duty cycle and gateway fallback as gateways and applications see them (issue 9
//! part 7): a device heard by two gateways gets its downlinks through the best one until
//! that gateway's hourly airtime in a sub-band is used, then in RX2, then through the second
//! gateway; when both are used up the queue item stays queued, nothing is consumed and a
//! `log` event says why; a gateway that refuses RX1 and RX2 hands the same frame (data
//! downlink or join-accept) to the next-best gateway. Real binary, two virtual gateways over UDP, SQLite and PostgreSQL.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::collections::HashMap;
use std::time::Duration;

use common::device::Device;
use common::gateway::{b64, GatewayPair, PullResp};
use common::{eventually, metric, Api, Backend, TestServer};
use loraflow_network_server::mac::DownlinkMacCommand;
use mqtt_support::Subscriber;
use serde_json::{json, Value};

const BEST: &str = "00000000000000d1";
const SECOND: &str = "00000000000000d2";
const DEV_EUI: &str = "70b3d57ed00000d1";
const DEV_ADDR: &str = "26011d01";
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";

/// The second gateway hears the uplink this many µs later on its own concentrator clock, so
/// a frame built from the wrong gateway's tmst shows.
const SECOND_TMST_OFFSET: u32 = 123_457;

struct Net {
    server: TestServer,
    api: Api,
    gateways: GatewayPair,
    app_id: String,
    dev: Device,
}

async fn setup(backend: Backend, env: &[(&str, &str)]) -> Net {
    let mut env = env.to_vec();
    env.push(("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50"));
    // No NewChannelReq: every downlink has the same MAC commands and so the same length.
    env.push(("LORAFLOW_NETWORK__EXTRA_CHANNELS", ""));
    let server = TestServer::start(backend, &env).await;
    let api = server.client();
    let (s, app) = api.post("/api/applications", json!({"name": "duty"})).await;
    assert_eq!(s, 201, "{app}");
    let (s, dp) = api
        .post(
            "/api/device-profiles",
            json!({"name": "no-adr", "region": "EU868", "macVersion": "1.0.3", "regParamsRevision": "RP002-1.0.3",
                   "supportsOtaa": false, "supportsClassC": false, "adrEnabled": false, "payloadCodec": "NONE", "payloadCodecScript": ""}),
        )
        .await;
    assert_eq!(s, 201, "{dp}");
    let app_id = app["id"].as_str().unwrap().to_string();
    let (s, b) = api
        .post("/api/devices", json!({"devEui": DEV_EUI, "name": "duty-dev", "applicationId": app_id, "deviceProfileId": dp["id"]}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .post(&format!("/api/devices/{DEV_EUI}/activate"), json!({"devAddr": DEV_ADDR, "nwkSKey": NWK_S_KEY, "appSKey": APP_S_KEY}))
        .await;
    assert_eq!(s, 200, "{b}");
    for gw in [BEST, SECOND] {
        let (s, b) = api.post("/api/gateways", json!({"gatewayId": gw, "name": gw})).await;
        assert_eq!(s, 201, "{b}");
    }
    let gateways = GatewayPair::new(BEST, SECOND, server.gateway).await;
    let mut net = Net { server, api, gateways, app_id, dev: Device::abp(DEV_EUI, DEV_ADDR, NWK_S_KEY, APP_S_KEY) };
    connect(&mut net).await;
    net
}

/// PULL_DATA from both gateways, to the server's current address.
async fn connect(net: &mut Net) {
    net.gateways.connect(net.server.gateway).await;
}

/// One uplink (SF7, 868.1 MHz) heard well by BEST and poorly by SECOND.
async fn uplink(net: &mut Net, tmst: u32) {
    let phy = net.dev.uplink(false, 1, b"d");
    net.gateways.hear(&phy, tmst, SECOND_TMST_OFFSET).await;
}

async fn next_downlink(net: &Net, timeout: Duration) -> Option<(&'static str, PullResp)> {
    net.gateways.next_downlink(timeout).await
}

async fn tx_ack(net: &Net, gw: &str, resp: &PullResp, error: &str) {
    net.gateways.tx_ack(gw, resp, error).await;
}

async fn enqueue(api: &Api, data: &[u8]) -> String {
    let (s, body) = api.post(&format!("/api/devices/{DEV_EUI}/queue"), json!({"fPort": 2, "data": b64(data)})).await;
    assert_eq!(s, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn queue(api: &Api) -> Vec<Value> {
    let (s, q) = api.get(&format!("/api/devices/{DEV_EUI}/queue")).await;
    assert_eq!(s, 200, "{q}");
    q["result"].as_array().unwrap().clone()
}

async fn queue_is_empty(api: &Api) {
    let emptied = eventually(Duration::from_secs(5), || async { queue(api).await.is_empty().then_some(()) }).await;
    assert!(emptied.is_some(), "the sent item left the queue: {:?}", queue(api).await);
}

async fn event(sub: &mut Subscriber, app_id: &str, kind: &str) -> Value {
    sub.next_json(&format!("application/{app_id}/device/{DEV_EUI}/event/{kind}")).await
}

/// LoRa time on air in µs of a downlink of `size` bytes at `datr` (e.g. "SF7BW125"): Semtech
/// SX1276 datasheet §4.1.1.7 with an 8-symbol preamble, explicit header, CR 4/5, no payload
/// CRC (downlinks), low-data-rate optimisation at SF11/SF12 on 125 kHz.
fn airtime_us(datr: &str, size: u64) -> u64 {
    let sf: u64 = datr.trim_start_matches("SF").split("BW").next().unwrap().parse().unwrap();
    assert!(datr.ends_with("BW125"), "{datr}");
    let symbol_us = (1u64 << sf) * 8; // 2^SF / 125 kHz
    let de = u64::from(sf >= 11);
    let bits = (8 * size + 28) as i64 - 4 * sf as i64;
    let per_block = (4 * (sf - 2 * de)) as i64;
    let blocks = if bits > 0 { (bits + per_block - 1) / per_block } else { 0 } as u64;
    let symbols_x4 = (8 * 4 + 17) + 4 * (8 + blocks * 5); // (preamble + 4.25 + payload) x 4
    symbols_x4 * symbol_us / 4
}

/// ETSI sub-band of a downlink frequency and its duty cycle in permille (EN 300 220-2).
fn band(freq_mhz: f64) -> (&'static str, u64) {
    if (868.0..=868.6).contains(&freq_mhz) {
        ("M", 10)
    } else if (869.4..=869.65).contains(&freq_mhz) {
        ("P", 100)
    } else {
        panic!("unexpected downlink frequency {freq_mhz}")
    }
}

/// What the test expects the server to allow: airtime per (gateway, sub-band) over the hour,
/// at `budget_percent` of the legal duty cycle.
struct Allowance {
    budget_percent: u64,
    used_us: HashMap<(&'static str, &'static str), u64>,
}

/// The windows a downlink answering an SF7 uplink on 868.1 MHz may use, in the order the
/// server must try them: RX1 (868.1 MHz, SF7), RX2 (869.525 MHz, SF12), best gateway first.
const ORDER: [(&str, f64, &str, u32); 4] = [
    (BEST, 868.1, "SF7BW125", 1_000_000),
    (BEST, 869.525, "SF12BW125", 2_000_000),
    (SECOND, 868.1, "SF7BW125", 1_000_000),
    (SECOND, 869.525, "SF12BW125", 2_000_000),
];

impl Allowance {
    fn fits(&self, gw: &'static str, freq: f64, datr: &str, size: u64) -> bool {
        let (b, permille) = band(freq);
        let limit_us = 3_600_000_000 * permille / 1000 * self.budget_percent / 100;
        self.used_us.get(&(gw, b)).copied().unwrap_or(0) + airtime_us(datr, size) <= limit_us
    }

    /// The first window in [`ORDER`] with airtime left for a frame of `size` bytes.
    fn expected(&self, size: u64) -> Option<(&'static str, f64, &'static str, u32)> {
        ORDER.into_iter().find(|&(gw, freq, datr, _)| self.fits(gw, freq, datr, size))
    }

    fn record(&mut self, gw: &'static str, freq: f64, datr: &str, size: u64) {
        *self.used_us.entry((gw, band(freq).0)).or_default() += airtime_us(datr, size);
    }
}

async fn best_then_rx2_then_second_gateway_then_kept_queued(backend: Backend) {
    let env = [
        // 1 % of the legal airtime: 360 ms per hour in band M (RX1), 3.6 s in band P (RX2).
        ("LORAFLOW_NETWORK__DUTY_CYCLE_BUDGET_PERCENT", "1"),
        // DevStatusReq rides in every downlink until answered: a refused downlink must not
        // count it as sent.
        ("LORAFLOW_NETWORK__MAC_COMMAND_MAX_ATTEMPTS", "100"),
    ];
    let mut net = setup(backend, &env).await;
    let mut sub = Subscriber::connect(net.server.mqtt.expect("embedded broker"), "application/#", false).await;
    let mut allowance = Allowance { budget_percent: 1, used_us: HashMap::new() };
    let mut used_windows = Vec::new();
    let mut f_cnt_down = 0;
    let mut tmst = 1_000_000u32;
    let refused_item = loop {
        assert!(f_cnt_down < 100, "the allowance never ran out");
        let item = enqueue(&net.api, &[f_cnt_down as u8; 4]).await;
        uplink(&mut net, tmst).await;
        let Some((gw, resp)) = next_downlink(&net, Duration::from_secs(3)).await else {
            break item;
        };
        let size = resp.txpk["size"].as_u64().unwrap();
        let freq = resp.txpk["freq"].as_f64().unwrap();
        let datr = resp.txpk["datr"].as_str().unwrap().to_string();
        let Some((want_gw, want_freq, want_datr, delay)) = allowance.expected(size) else {
            panic!("downlink {f_cnt_down} went out on {gw} at {freq} MHz although no window had airtime left")
        };
        assert_eq!((gw, freq, datr.as_str()), (want_gw, want_freq, want_datr), "downlink {f_cnt_down}");
        let gw_tmst = if gw == BEST { tmst } else { tmst.wrapping_add(SECOND_TMST_OFFSET) };
        assert_eq!(resp.txpk["tmst"], json!(gw_tmst.wrapping_add(delay)), "timed on {gw}'s own uplink tmst");
        tx_ack(&net, gw, &resp, "NONE").await;
        let dl = net.dev.read_downlink(&resp.phy_payload(), f_cnt_down);
        assert_eq!((dl.f_port, dl.payload.clone()), (Some(2), vec![f_cnt_down as u8; 4]));
        assert_eq!(dl.mac_commands(), vec![DownlinkMacCommand::DevStatusReq]);
        allowance.record(gw, freq, &datr, size);
        if used_windows.last() != Some(&(gw, freq)) {
            used_windows.push((gw, freq));
        }
        queue_is_empty(&net.api).await;
        f_cnt_down += 1;
        tmst = tmst.wrapping_add(10_000_000);
    };
    assert_eq!(
        used_windows,
        vec![(BEST, 868.1), (BEST, 869.525), (SECOND, 868.1), (SECOND, 869.525)],
        "RX1 then RX2 on the best gateway, then the second gateway's RX1 and RX2"
    );

    // Every window on both gateways is used up: the item stays queued, unsent, and the
    // application hears why.
    let log = event(&mut sub, &net.app_id, "log").await;
    assert_eq!((log["code"].as_str(), log["level"].as_str()), (Some("DOWNLINK_GATEWAY"), Some("WARNING")), "{log}");
    assert!(log["description"].as_str().unwrap().starts_with("duty cycle:"), "{log}");
    let c = &log["context"];
    assert_eq!(
        (c["reason"].as_str(), c["gateway_id"].as_str(), c["window"].as_str(), c["sub_band"].as_str()),
        (Some("DUTY_CYCLE"), Some(BEST), Some("rx1"), Some("M")),
        "{log}"
    );
    assert_eq!(c["limit_ms"], "360", "{log}");
    assert_eq!(c["used_ms"].as_str().unwrap().parse::<u64>().unwrap(), allowance.used_us[&(BEST, "M")] / 1000, "{log}");
    let q = queue(&net.api).await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!((q[0]["id"].as_str(), q[0]["isPending"].as_bool()), (Some(refused_item.as_str()), Some(false)), "{q:?}");
    let m = net.api.metrics().await;
    assert_eq!(metric(&m, "loraflow_downlinks_duty_cycle_refused_total", &[("sub_band", "M")]), 1.0);
    let sent = metric(&m, "loraflow_mac_commands_total", &[("command", "DevStatusReq"), ("outcome", "sent")]);
    assert_eq!(sent, f64::from(f_cnt_down), "the refused downlink's DevStatusReq is not counted as sent");
    let (s, act) = net.api.get(&format!("/api/devices/{DEV_EUI}/activation")).await;
    assert_eq!(s, 200, "{act}");
    assert_eq!(act["fCntDown"], json!(f_cnt_down), "no FCntDown consumed by the refused downlink");

    // The ledger lives in memory: after a restart the kept item goes out with the next
    // FCntDown, still with the DevStatusReq that was never sent.
    net.server = net.server.restart();
    net.api = net.server.client();
    connect(&mut net).await;
    uplink(&mut net, tmst).await;
    let (gw, resp) = next_downlink(&net, Duration::from_secs(5)).await.expect("the kept item after a restart");
    assert_eq!((gw, resp.txpk["freq"].as_f64().unwrap()), (BEST, 868.1));
    tx_ack(&net, gw, &resp, "NONE").await;
    let dl = net.dev.read_downlink(&resp.phy_payload(), f_cnt_down);
    assert_eq!((dl.f_port, dl.payload.clone()), (Some(2), vec![f_cnt_down as u8; 4]));
    assert_eq!(dl.mac_commands(), vec![DownlinkMacCommand::DevStatusReq]);
    queue_is_empty(&net.api).await;
}

#[tokio::test]
async fn downlinks_move_to_rx2_then_the_second_gateway_and_stay_queued_when_all_are_used_up_on_sqlite() {
    best_then_rx2_then_second_gateway_then_kept_queued(Backend::Sqlite).await;
}

#[tokio::test]
async fn downlinks_move_to_rx2_then_the_second_gateway_and_stay_queued_when_all_are_used_up_on_postgres() {
    best_then_rx2_then_second_gateway_then_kept_queued(Backend::Postgres).await;
}

async fn refused_rx1_and_rx2_fall_back_to_the_second_gateway(backend: Backend) {
    let mut net = setup(backend, &[]).await;
    let mut sub = Subscriber::connect(net.server.mqtt.expect("embedded broker"), "application/#", false).await;
    let item = enqueue(&net.api, b"fallback").await;
    let tmst = 5_000_000u32;
    uplink(&mut net, tmst).await;

    let (gw, rx1) = next_downlink(&net, Duration::from_secs(5)).await.expect("RX1 on the best gateway");
    assert_eq!((gw, rx1.txpk["freq"].as_f64().unwrap()), (BEST, 868.1));
    tx_ack(&net, gw, &rx1, "TOO_LATE").await;
    let (gw, rx2) = next_downlink(&net, Duration::from_secs(5)).await.expect("RX2 on the best gateway");
    assert_eq!((gw, rx2.txpk["freq"].as_f64().unwrap()), (BEST, 869.525));
    tx_ack(&net, gw, &rx2, "TX_FREQ").await;
    let (gw, second) = next_downlink(&net, Duration::from_secs(5)).await.expect("RX1 on the second gateway");
    assert_eq!((gw, second.txpk["freq"].as_f64().unwrap()), (SECOND, 868.1));
    assert_eq!(second.txpk["tmst"], json!(tmst + SECOND_TMST_OFFSET + 1_000_000), "timed on the second gateway's tmst");
    assert_eq!(second.phy_payload(), rx1.phy_payload(), "the same frame, same FCntDown");
    assert_eq!(rx2.phy_payload(), rx1.phy_payload());
    tx_ack(&net, gw, &second, "NONE").await;
    let dl = net.dev.read_downlink(&second.phy_payload(), 0);
    assert_eq!(dl.payload, b"fallback");

    // Settled once: one txack through the second gateway, the item gone, nothing more sent.
    let txack = event(&mut sub, &net.app_id, "txack").await;
    assert_eq!((txack["gatewayId"].as_str(), txack["queueItemId"].as_str()), (Some(SECOND), Some(item.as_str())), "{txack}");
    assert_eq!(txack["fCntDown"], json!(0));
    queue_is_empty(&net.api).await;
    assert!(next_downlink(&net, Duration::from_millis(1500)).await.is_none(), "accepted once, not sent again");
    let (_, act) = net.api.get(&format!("/api/devices/{DEV_EUI}/activation")).await;
    assert_eq!(act["fCntDown"], json!(1), "one FCntDown for the three attempts");
    while let Ok(Some((topic, payload))) = tokio::time::timeout(Duration::from_millis(500), sub.messages.recv()).await {
        assert!(!topic.ends_with("/event/txack"), "a second txack: {}", String::from_utf8_lossy(&payload));
        if topic.ends_with("/event/log") {
            panic!("no log event for a downlink the second gateway sent: {}", String::from_utf8_lossy(&payload));
        }
    }
}

#[tokio::test]
async fn a_downlink_refused_in_rx1_and_rx2_goes_out_through_the_second_gateway_on_sqlite() {
    refused_rx1_and_rx2_fall_back_to_the_second_gateway(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_downlink_refused_in_rx1_and_rx2_goes_out_through_the_second_gateway_on_postgres() {
    refused_rx1_and_rx2_fall_back_to_the_second_gateway(Backend::Postgres).await;
}

async fn join_accept_refused_by_the_best_gateway(backend: Backend) {
    let mut net = setup(backend, &[]).await;
    const OTAA_EUI: &str = "70b3d57ed00000d2";
    const APP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
    let (s, dp) = net
        .api
        .post(
            "/api/device-profiles",
            json!({"name": "otaa", "region": "EU868", "macVersion": "1.0.3", "regParamsRevision": "RP002-1.0.3",
                   "supportsOtaa": true, "supportsClassC": false, "adrEnabled": false, "payloadCodec": "NONE", "payloadCodecScript": ""}),
        )
        .await;
    assert_eq!(s, 201, "{dp}");
    let (s, b) = net
        .api
        .post("/api/devices", json!({"devEui": OTAA_EUI, "name": "otaa", "applicationId": net.app_id, "deviceProfileId": dp["id"]}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = net.api.put(&format!("/api/devices/{OTAA_EUI}/keys"), json!({"appKey": APP_KEY})).await;
    assert_eq!(s, 200, "{b}");
    let mut dev = Device::otaa(OTAA_EUI, APP_KEY);
    let jr = dev.join_request();
    let tmst = 20_000_000u32;
    net.gateways.hear(&jr, tmst, SECOND_TMST_OFFSET).await;

    // JOIN_ACCEPT_DELAY1 = 5 s, RX2 one second later.
    let (gw, rx1) = next_downlink(&net, Duration::from_secs(5)).await.expect("RX1 on the best gateway");
    assert_eq!((gw, rx1.txpk["tmst"].clone()), (BEST, json!(tmst + 5_000_000)));
    tx_ack(&net, gw, &rx1, "COLLISION_PACKET").await;
    let (gw, rx2) = next_downlink(&net, Duration::from_secs(5)).await.expect("RX2 on the best gateway");
    assert_eq!((gw, rx2.txpk["tmst"].clone(), rx2.txpk["freq"].as_f64()), (BEST, json!(tmst + 6_000_000), Some(869.525)));
    tx_ack(&net, gw, &rx2, "TOO_LATE").await;
    let (gw, second) = next_downlink(&net, Duration::from_secs(5)).await.expect("RX1 on the second gateway");
    assert_eq!((gw, second.txpk["tmst"].clone()), (SECOND, json!(tmst + SECOND_TMST_OFFSET + 5_000_000)));
    assert_eq!(second.phy_payload(), rx1.phy_payload(), "the same join-accept");
    tx_ack(&net, gw, &second, "NONE").await;
    dev.accept(&second.phy_payload(), [0, 0, 0]);
    assert!(next_downlink(&net, Duration::from_millis(1000)).await.is_none(), "accepted once, not sent again");
}

#[tokio::test]
async fn a_join_accept_refused_in_rx1_and_rx2_goes_out_through_the_second_gateway_on_sqlite() {
    join_accept_refused_by_the_best_gateway(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_join_accept_refused_in_rx1_and_rx2_goes_out_through_the_second_gateway_on_postgres() {
    join_accept_refused_by_the_best_gateway(Backend::Postgres).await;
}
