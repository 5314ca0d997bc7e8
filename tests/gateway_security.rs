//! Gateway security over Semtech UDP (issue 12, "Gateways"), on the real binary: allowed
//! source networks, the downlink path against forged PULL_DATA, TX_ACKs only from the
//! address of their PULL_RESP, `stat` sanity checks, PUSH_DATA and join-request flood limits.
//! "Another address" is another loopback address (127.0.0.2), which Linux routes as is.

mod common;

use std::time::Duration;

use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::provision::{self, Provisioned};
use common::{eventually, metric, Api, Backend, TestServer};
use serde_json::json;

const GW: &str = "0102030405060708";
const APP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";

async fn metrics(api: &Api) -> String {
    api.metrics().await
}

/// Waits until `name{labels}` reaches `want` and checks that it does not go beyond it.
async fn expect_metric(api: &Api, name: &str, labels: &[(&str, &str)], want: f64) {
    let got = eventually(Duration::from_secs(5), || async {
        let v = metric(&metrics(api).await, name, labels);
        (v >= want).then_some(v)
    })
    .await;
    let now = metric(&metrics(api).await, name, labels);
    assert_eq!((got, now), (Some(want), want), "{name}{labels:?}");
}

fn dropped(reason: &str) -> [(&str, &str); 1] {
    [("reason", reason)]
}

/// A data uplink of an unknown DevAddr: enough to be forwarded by the UDP server.
const FRAME: &[u8] = b"\x40\x01\x02\x03\x04\x00\x00\x00\x01\x02\x03\x04";

async fn push_frame(gw: &mut FakeGateway) {
    let t = gw.push_rxpk(vec![rxpk(FRAME, 1, -50, 5.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
}

async fn pull(gw: &mut FakeGateway) {
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
}

#[tokio::test]
async fn allowed_networks_are_validated_stored_applied_at_once_and_after_a_restart() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let api = server.client();

    // 400 naming the entry; nothing is created.
    let (s, e) =
        api.post("/api/gateways", json!({"gatewayId": GW, "name": "roof", "allowedNetworks": ["10.0.0.0/8", "10.0.0.0/33"]})).await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("allowedNetworks[1]"), "{e}");
    let (s, e) = api.post("/api/gateways", json!({"gatewayId": GW, "name": "roof", "allowedNetworks": "10.0.0.0/8"})).await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("allowedNetworks"), "{e}");
    assert_eq!(api.get(&format!("/api/gateways/{GW}")).await.0, 404);

    // IPv4 and IPv6, host bits cleared, a bare address is one host.
    let (s, gw) =
        api.post("/api/gateways", json!({"gatewayId": GW, "name": "roof", "allowedNetworks": ["127.0.0.2", "2001:db8::1/32"]})).await;
    assert_eq!(s, 201, "{gw}");
    assert_eq!(gw["allowedNetworks"], json!(["127.0.0.2/32", "2001:db8::/32"]));
    let (s, other) = api.post("/api/gateways", json!({"gatewayId": "0102030405060709", "name": "open"})).await;
    assert_eq!((s, &other["allowedNetworks"]), (201, &json!([])), "{other}");

    let mut outside = FakeGateway::new(GW, server.gateway).await;
    let mut inside = FakeGateway::bound_to(GW, "127.0.0.2", server.gateway).await;
    // Outside: still acknowledged (the header is valid), but dropped and counted.
    push_frame(&mut outside).await;
    pull(&mut outside).await;
    expect_metric(&api, "loraflow_gateway_udp_dropped_total", &dropped("source_not_allowed"), 2.0).await;
    assert_eq!(metric(&metrics(&api).await, "loraflow_gateway_uplinks_total", &[]), 0.0);
    // Inside: forwarded, and the gateway is online.
    push_frame(&mut inside).await;
    pull(&mut inside).await;
    expect_metric(&api, "loraflow_gateway_uplinks_total", &[], 1.0).await;
    assert_eq!(api.get(&format!("/api/gateways/{GW}")).await.1["state"], "ONLINE");

    // An update without the field keeps the networks; a new list applies at once.
    let (s, up) = api.put(&format!("/api/gateways/{GW}"), json!({"name": "roof-2"})).await;
    assert_eq!((s, &up["allowedNetworks"]), (200, &json!(["127.0.0.2/32", "2001:db8::/32"])), "{up}");
    let (s, e) = api.put(&format!("/api/gateways/{GW}"), json!({"name": "roof-2", "allowedNetworks": ["127.0.0.1/32", "x"]})).await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("allowedNetworks[1]"), "{e}");
    let (s, up) = api.put(&format!("/api/gateways/{GW}"), json!({"name": "roof-2", "allowedNetworks": ["127.0.0.1/32"]})).await;
    assert_eq!(s, 200, "{up}");
    push_frame(&mut inside).await;
    expect_metric(&api, "loraflow_gateway_udp_dropped_total", &dropped("source_not_allowed"), 3.0).await;
    push_frame(&mut outside).await;
    expect_metric(&api, "loraflow_gateway_uplinks_total", &[], 2.0).await;

    // Loaded from the database at start.
    let server = server.restart();
    let api = server.client();
    assert_eq!(api.get(&format!("/api/gateways/{GW}")).await.1["allowedNetworks"], json!(["127.0.0.1/32"]));
    inside.server = server.gateway;
    outside.server = server.gateway;
    push_frame(&mut inside).await;
    expect_metric(&api, "loraflow_gateway_udp_dropped_total", &dropped("source_not_allowed"), 1.0).await;
    push_frame(&mut outside).await;
    expect_metric(&api, "loraflow_gateway_uplinks_total", &[], 1.0).await;
    // `[]` opens it to anywhere again.
    let (s, up) = api.put(&format!("/api/gateways/{GW}"), json!({"name": "roof-2", "allowedNetworks": []})).await;
    assert_eq!((s, &up["allowedNetworks"]), (200, &json!([])), "{up}");
    push_frame(&mut inside).await;
    expect_metric(&api, "loraflow_gateway_uplinks_total", &[], 2.0).await;
}

/// A server with one registered gateway and one OTAA device, the gateway connected from
/// 127.0.0.1, and the same EUI ready to send from 127.0.0.2.
struct Setup {
    server: TestServer,
    api: Api,
    real: FakeGateway,
    other: FakeGateway,
    dev: Device,
    _p: Provisioned,
}

async fn setup(env: &[(&str, &str)]) -> Setup {
    let mut env = env.to_vec();
    env.push(("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50"));
    let server = TestServer::start(Backend::Sqlite, &env).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    provision::gateway(&api, GW).await;
    provision::otaa_device(&api, &p, "0807060504030201", APP_KEY).await;
    let mut real = FakeGateway::new(GW, server.gateway).await;
    pull(&mut real).await;
    let other = FakeGateway::bound_to(GW, "127.0.0.2", server.gateway).await;
    Setup { server, api, real, other, dev: Device::otaa("0807060504030201", APP_KEY), _p: p }
}

/// A join-request heard by the real gateway; the join-accept is the next downlink.
async fn join_request(s: &mut Setup) {
    let jr = s.dev.join_request();
    let t = s.real.push_rxpk(vec![rxpk(&jr, 10_000_000, -60, 9.0)]).await;
    s.real.expect_ack(PUSH_ACK, t).await;
}

#[tokio::test]
async fn one_forged_pull_data_does_not_move_the_downlink_path_and_two_in_a_row_do() {
    let mut s = setup(&[]).await;
    let changes = |result| [("result", result)];

    // One PULL_DATA from another address: counted, but the join-accept goes to the gateway.
    pull(&mut s.other).await;
    expect_metric(&s.api, "loraflow_gateway_address_changes_total", &changes("pending"), 1.0).await;
    join_request(&mut s).await;
    let resp = s.real.next_pull_resp(Duration::from_secs(5)).await.expect("join-accept to the real gateway");
    s.real.tx_ack(resp.token, "NONE").await;
    assert!(s.other.next_pull_resp(Duration::from_millis(300)).await.is_none(), "a single PULL_DATA stole a downlink");

    // The gateway's keepalive breaks the row; then the other address sends two in a row
    // (a rebound NAT mapping, or a forger who keeps at it) and the path moves.
    pull(&mut s.real).await;
    pull(&mut s.other).await;
    pull(&mut s.other).await;
    expect_metric(&s.api, "loraflow_gateway_address_changes_total", &changes("pending"), 2.0).await;
    expect_metric(&s.api, "loraflow_gateway_address_changes_total", &changes("moved"), 1.0).await;
    join_request(&mut s).await;
    let resp = s.other.next_pull_resp(Duration::from_secs(5)).await.expect("join-accept to the new address");
    s.other.tx_ack(resp.token, "NONE").await;
    assert!(s.real.next_pull_resp(Duration::from_millis(300)).await.is_none());
    expect_metric(&s.api, "loraflow_gateway_tx_ack_total", &[("status", "OK")], 2.0).await;
}

#[tokio::test]
async fn a_tx_ack_from_another_address_is_dropped_and_the_real_one_counts() {
    let mut s = setup(&[]).await;
    join_request(&mut s).await;
    let resp = s.real.next_pull_resp(Duration::from_secs(5)).await.expect("join-accept");
    // Had it counted, the error would send the join-accept again in RX2.
    s.other.tx_ack(resp.token, "TOO_LATE").await;
    expect_metric(&s.api, "loraflow_gateway_udp_dropped_total", &dropped("tx_ack_wrong_address"), 1.0).await;
    s.real.tx_ack(resp.token, "NONE").await;
    expect_metric(&s.api, "loraflow_gateway_tx_ack_total", &[("status", "OK")], 1.0).await;
    assert!(s.real.next_pull_resp(Duration::from_millis(1500)).await.is_none(), "no RX2 retry");
    let text = metrics(&s.api).await;
    assert_eq!(metric(&text, "loraflow_gateway_tx_ack_total", &[("status", "TOO_LATE")]), 0.0);
}

#[tokio::test]
async fn a_pull_data_from_another_address_does_not_keep_a_dead_gateway_online() {
    let mut s = setup(&[("LORAFLOW_GATEWAY__OFFLINE_AFTER_SECS", "1")]).await;
    let state = |api: Api| async move { api.get(&format!("/api/gateways/{GW}")).await.1["state"].as_str().unwrap().to_string() };
    assert_eq!(state(s.server.client()).await, "ONLINE");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    pull(&mut s.other).await;
    // A stat from the other host is not believed either.
    let t = s.other.push_json(&json!({"stat": {"rxnb": 5, "rxok": 5, "rxfw": 5, "ackr": 100.0, "dwnb": 0, "txnb": 0}})).await;
    s.other.expect_ack(PUSH_ACK, t).await;
    expect_metric(&s.api, "loraflow_gateway_udp_dropped_total", &dropped("stat_source_mismatch"), 1.0).await;
    assert_eq!(state(s.server.client()).await, "OFFLINE");
    assert_eq!(metric(&metrics(&s.api).await, "loraflow_gateway_stat_rx_received_total", &[]), 0.0);
    // The gateway itself brings it back.
    pull(&mut s.real).await;
    assert_eq!(state(s.server.client()).await, "ONLINE");
}

#[tokio::test]
async fn absurd_stat_values_are_rejected_and_counted_and_plausible_ones_are_kept() {
    let mut s = setup(&[]).await;
    let absurd = [
        json!({"lati": 123.0, "long": 5.0}),
        json!({"alti": 1_000_000}),
        json!({"rxnb": 4_000_000_000u32}),
        json!({"rxnb": 1, "rxok": 50}),
        json!({"ackr": 400.0}),
        json!({"rxnb": -1}),
    ];
    for stat in &absurd {
        let t = s.real.push_json(&json!({ "stat": stat })).await;
        s.real.expect_ack(PUSH_ACK, t).await;
    }
    expect_metric(&s.api, "loraflow_gateway_udp_dropped_total", &dropped("bad_stat"), absurd.len() as f64).await;
    let t =
        s.real.push_json(&json!({"stat": {"lati": 52.1, "long": 5.2, "alti": 12, "rxnb": 7, "rxok": 6, "rxfw": 6, "ackr": 100.0}})).await;
    s.real.expect_ack(PUSH_ACK, t).await;
    expect_metric(&s.api, "loraflow_gateway_stat_rx_received_total", &[], 7.0).await;
}

#[tokio::test]
async fn a_push_data_flood_is_limited_while_another_gateway_keeps_working() {
    let server = TestServer::start(
        Backend::Sqlite,
        &[
            ("LORAFLOW_GATEWAY__PUSH_DATA_RATE_PER_GATEWAY", "5"),
            ("LORAFLOW_GATEWAY__PUSH_DATA_BURST_PER_GATEWAY", "20"),
            ("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50"),
        ],
    )
    .await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    provision::gateway(&api, "0a0a0a0a0a0a0a0a").await;
    provision::gateway(&api, GW).await;
    let (nwk, app) = ("44024241ed4ce9a68c6a8bc055233fd3", "ec925802ae430ca77fd3dd73cb2cc588");
    provision::abp_device(&api, &p, "0807060504030201", "26011234", nwk, app).await;
    let mut dev = Device::abp("0807060504030201", "26011234", nwk, app);
    let flooder = FakeGateway::new("0a0a0a0a0a0a0a0a", server.gateway).await;
    let mut good = FakeGateway::new(GW, server.gateway).await;

    // 500 PUSH_DATA at once from one gateway (paced only so the kernel buffer never overflows).
    let mut datagram = vec![2, 0, 1, 0];
    datagram.extend_from_slice(&flooder.eui);
    datagram.extend_from_slice(json!({"rxpk": [rxpk(FRAME, 1, -50, 5.0)]}).to_string().as_bytes());
    let flood = 500;
    for i in 0..flood {
        flooder.send_raw(&datagram).await;
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The other gateway's uplinks arrive in the middle of the flood.
        if i % 50 == 0 {
            let t = good.push_rxpk(vec![rxpk(&dev.uplink(false, 1, b"still here"), 1, -60, 9.0)]).await;
            good.expect_ack(PUSH_ACK, t).await;
        }
    }
    expect_metric(&api, "loraflow_uplinks_accepted_total", &[], 10.0).await;
    let text = eventually(Duration::from_secs(5), || async {
        let text = metrics(&api).await;
        let limited = metric(&text, "loraflow_gateway_udp_dropped_total", &dropped("rate_limited_gateway"));
        let forwarded = metric(&text, "loraflow_gateway_uplinks_total", &[]);
        (limited + forwarded >= flood as f64 + 10.0).then_some(text)
    })
    .await
    .expect("every flood datagram accounted for");
    let limited = metric(&text, "loraflow_gateway_udp_dropped_total", &dropped("rate_limited_gateway"));
    // The burst of 20, and at 5/s at most a few more during the flood.
    assert!((flood as f64 - 30.0..=flood as f64 - 20.0).contains(&limited), "{limited}");
    assert_eq!(metric(&text, "loraflow_gateway_udp_dropped_total", &dropped("rate_limited_global")), 0.0);
}

#[tokio::test]
async fn a_join_request_flood_for_one_dev_eui_is_limited() {
    // Join-accepts are not TX_ACKed here: a short timeout keeps each one from holding up the next.
    let mut s =
        setup(&[("LORAFLOW_NETWORK__JOIN_REQUESTS_PER_DEV_EUI_PER_MINUTE", "3"), ("LORAFLOW_GATEWAY__TX_ACK_TIMEOUT_MS", "100")]).await;
    for i in 0..8u32 {
        let jr = s.dev.join_request();
        let t = s.real.push_rxpk(vec![rxpk(&jr, 10_000_000 + i, -60, 9.0)]).await;
        s.real.expect_ack(PUSH_ACK, t).await;
    }
    expect_metric(&s.api, "loraflow_joins_rejected_total", &[("reason", "rate_limited")], 5.0).await;
    expect_metric(&s.api, "loraflow_joins_accepted_total", &[], 3.0).await;
}
