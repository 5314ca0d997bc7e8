//! The Semtech UDP bridge of the real binary: ACKs, malformed input, unknown gateways,
//! gateway state, and no uplink lost on SIGTERM.

mod common;

use std::time::Duration;

use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK, PUSH_DATA};
use common::{eventually, metric, provision, Backend, TestServer};
use serde_json::json;

async fn metrics(server: &TestServer) -> String {
    reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn acks_carry_the_gateways_token_and_unknown_gateways_are_acked_but_ignored() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let mut stranger = FakeGateway::new("ffffffffffffff01", server.gateway).await;
    let t = stranger.pull_data().await;
    stranger.expect_ack(PULL_ACK, t).await;
    let t = stranger.push_rxpk(vec![rxpk(b"\x40\x01\x02\x03\x04\x00\x00\x00\x01\x02\x03\x04", 1, -50, 5.0)]).await;
    stranger.expect_ack(PUSH_ACK, t).await;
    let got = eventually(Duration::from_secs(3), || async {
        let v = metric(&metrics(&server).await, "loraflow_gateway_udp_dropped_total", &[("reason", "unknown_gateway")]);
        (v >= 1.0).then_some(v)
    })
    .await;
    assert_eq!(got, Some(1.0));
    assert_eq!(metric(&metrics(&server).await, "loraflow_uplinks_rejected_total", &[]), 0.0);
}

#[tokio::test]
async fn a_thousand_malformed_datagrams_of_every_kind_then_a_valid_push_data_still_works() {
    let server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_GATEWAY__MAX_DATAGRAM_BYTES", "4096")]).await;
    let api = server.client();
    provision::gateway(&api, "0102030405060708").await;
    let mut gw = FakeGateway::new("0102030405060708", server.gateway).await;
    let eui = gw.eui;
    let header = |version: u8, kind: u8| {
        let mut b = vec![version, 0x12, 0x34, kind];
        b.extend_from_slice(&eui);
        b
    };
    let with = |mut h: Vec<u8>, body: &[u8]| {
        h.extend_from_slice(body);
        h
    };
    let bad_b64 = json!({"rxpk": [{"tmst": 1, "freq": 868.1, "stat": 1, "modu": "LORA", "datr": "SF7BW125", "codr": "4/5",
                                    "rssi": -50, "lsnr": 5.0, "size": 4, "data": "!!!!"}]});
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("too_short", vec![2, 0x12]),
        ("wrong_version", with(header(1, PUSH_DATA), b"{}")),
        ("unknown_type", with(header(2, 0x09), b"{}")),
        ("bad_json", with(header(2, PUSH_DATA), b"{\"rxpk\": [")),
        ("bad_base64", with(header(2, PUSH_DATA), bad_b64.to_string().as_bytes())),
        ("oversized", with(header(2, PUSH_DATA), &vec![b' '; 5_000])),
    ];
    for (_, datagram) in &kinds {
        for i in 0..1000 {
            gw.send_raw(datagram).await;
            if i % 50 == 49 || datagram.len() > 1000 && i % 10 == 9 {
                // Paced so that the kernel's socket buffer never overflows: every datagram
                // must reach the server to be counted exactly.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    // A valid PUSH_DATA is still acknowledged and its frame handed on.
    gw.drain().await;
    let t = gw.push_rxpk(vec![rxpk(b"\x40\x01\x02\x03\x04\x00\x00\x00\x01\x02\x03\x04", 1, -50, 5.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
    let text = eventually(Duration::from_secs(5), || async {
        let text = metrics(&server).await;
        (metric(&text, "loraflow_gateway_uplinks_total", &[("modulation", "lora")]) >= 1.0).then_some(text)
    })
    .await
    .expect("valid uplink forwarded");
    for (reason, _) in &kinds {
        let n = metric(&text, "loraflow_gateway_udp_dropped_total", &[("reason", reason)]);
        assert_eq!(n, 1000.0, "{reason}");
    }
    // The frame reached the network server (unknown DevAddr there: no device has it).
    let got = eventually(Duration::from_secs(3), || async {
        let v = metric(&metrics(&server).await, "loraflow_uplinks_rejected_total", &[("reason", "unknown_dev_addr")]);
        (v >= 1.0).then_some(v)
    })
    .await;
    assert_eq!(got, Some(1.0));
    // lastSeenAt is stored and the gateway is online once it sends PULL_DATA.
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    let (_, g) = api.get("/api/gateways/0102030405060708").await;
    assert_eq!(g["state"], "ONLINE");
    assert!(g["lastSeenAt"].is_string());
}

#[tokio::test]
async fn a_gateway_without_pull_data_goes_offline_and_stats_update_last_seen() {
    let server = TestServer::start(Backend::Postgres, &[("LORAFLOW_GATEWAY__OFFLINE_AFTER_SECS", "1")]).await;
    let api = server.client();
    provision::gateway(&api, "0a0b0c0d0e0f0102").await;
    let (_, g) = api.get("/api/gateways/0a0b0c0d0e0f0102").await;
    assert_eq!((g["state"].as_str(), g["lastSeenAt"].is_null()), (Some("NEVER_SEEN"), true));
    let mut gw = FakeGateway::new("0a0b0c0d0e0f0102", server.gateway).await;
    let t = gw
        .push_json(
            &json!({"stat": {"time": "2026-11-25 10:00:00 GMT", "rxnb": 3, "rxok": 2, "rxfw": 2, "ackr": 100.0, "dwnb": 1, "txnb": 1}}),
        )
        .await;
    gw.expect_ack(PUSH_ACK, t).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    let (_, g) = api.get("/api/gateways/0a0b0c0d0e0f0102").await;
    assert_eq!(g["state"], "ONLINE");
    let seen = g["lastSeenAt"].as_str().expect("lastSeenAt").to_string();
    assert_eq!(metric(&metrics(&server).await, "loraflow_gateway_stat_rx_received_total", &[]), 3.0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, g) = api.get("/api/gateways/0a0b0c0d0e0f0102").await;
    assert_eq!(g["state"], "OFFLINE");
    // Persisted: a clean stop writes each gateway's latest time, so it survives exactly.
    let server = server.restart();
    let (_, g) = server.client().get("/api/gateways/0a0b0c0d0e0f0102").await;
    assert_eq!(g["lastSeenAt"].as_str(), Some(seen.as_str()));
}

#[tokio::test]
async fn an_uplink_received_just_before_sigterm_is_stored() {
    let mut server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "1000")]).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    provision::gateway(&api, "0102030405060709").await;
    let (nwk, app) = ("44024241ed4ce9a68c6a8bc055233fd3", "ec925802ae430ca77fd3dd73cb2cc588");
    provision::abp_device(&api, &p, "0807060504030201", "26011234", nwk, app).await;
    let mut dev = Device::abp("0807060504030201", "26011234", nwk, app);
    let mut gw = FakeGateway::new("0102030405060709", server.gateway).await;
    let t = gw.push_rxpk(vec![rxpk(&dev.uplink(false, 1, b"last words"), 1, -50, 5.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
    // Still inside its 1 s deduplication window when the stop comes.
    let (code, took) = server.stop();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "{took:?}");
    let server = server.restart();
    let (_, h) = server.client().get("/api/devices/0807060504030201/uplinks").await;
    let rows = h["result"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{h}");
    assert_eq!(rows[0]["data"], common::gateway::b64(b"last words"));
}
