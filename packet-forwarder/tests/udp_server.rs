//! The server over real UDP on 127.0.0.1, with virtual gateways built from this crate's
//! gateway-side encoders.

use std::net::SocketAddr;
use std::time::Duration;

use loraflow_packet_forwarder::frame::{DownlinkFrame, Eui64, GatewayEvent, GatewayId, Modulation, Timing, TxAckStatus, UplinkFrame};
use loraflow_packet_forwarder::semtech::{Datr, Packet, PullData, PushData, PushDataPayload, Rxpk, Stat, TxAck, PROTOCOL_VERSION};
use loraflow_packet_forwarder::{AllowedNetworks, GatewayConfig, Handle, KnownGateways, PacketForwarder};
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(3);

struct Server {
    addr: SocketAddr,
    handle: Handle,
    events: mpsc::Receiver<GatewayEvent>,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start(known: KnownGateways, tune: impl FnOnce(&mut GatewayConfig)) -> Server {
    let mut config = GatewayConfig { bind: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    tune(&mut config);
    let registry = prometheus::Registry::new();
    let (server, events) = PacketForwarder::bind(&config, &registry, known).await.expect("bind");
    let addr = server.local_addr();
    let handle = server.handle();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    Server { addr, handle, events, registry, shutdown, task }
}

impl Server {
    /// Next uplink, skipping Seen and Stats events.
    async fn next_uplink(&mut self) -> UplinkFrame {
        timeout(WAIT, async {
            loop {
                match self.events.recv().await.expect("event channel open") {
                    GatewayEvent::Uplink(f) => return f,
                    _ => continue,
                }
            }
        })
        .await
        .expect("an uplink within the wait")
    }

    /// All events that arrived so far.
    fn drain(&mut self) -> Vec<GatewayEvent> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }

    fn counter(&self, name: &str, label: &str, value: &str) -> u64 {
        metric_value(&self.registry, name, Some((label, value))) as u64
    }

    fn gauge(&self, name: &str) -> i64 {
        metric_value(&self.registry, name, None) as i64
    }
}

fn metric_value(registry: &prometheus::Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    let families = registry.gather();
    let family = families.iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("metric {name} registered"));
    for m in family.get_metric() {
        let matches = match label {
            None => true,
            Some((l, v)) => m.get_label().iter().any(|p| p.name() == l && p.value() == v),
        };
        if matches {
            return if family.get_field_type() == prometheus::proto::MetricType::GAUGE {
                m.get_gauge().get_value()
            } else {
                m.get_counter().get_value()
            };
        }
    }
    panic!("no sample of {name} with {label:?}")
}

/// A gateway with separate upstream and downstream sockets, as the Semtech forwarder has.
struct VirtualGateway {
    id: GatewayId,
    up: UdpSocket,
    down: UdpSocket,
    server: SocketAddr,
}

impl VirtualGateway {
    async fn new(id: u64, server: SocketAddr) -> Self {
        VirtualGateway {
            id: Eui64::from_u64(id),
            up: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            down: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
        }
    }

    async fn push(&self, token: u16, payload: PushDataPayload) {
        let bytes = PushData { token, gateway_id: self.id, payload }.encode();
        self.up.send_to(&bytes, self.server).await.unwrap();
    }

    /// PUSH_DATA with a raw JSON body.
    async fn push_json(&self, token: u16, json: &serde_json::Value) {
        self.push_raw(&push_bytes(token, self.id, json.to_string().as_bytes())).await;
    }

    async fn push_raw(&self, bytes: &[u8]) {
        self.up.send_to(bytes, self.server).await.unwrap();
    }

    async fn pull(&self, token: u16) {
        let bytes = PullData { token, gateway_id: self.id }.encode();
        self.down.send_to(&bytes, self.server).await.unwrap();
    }

    async fn recv_up(&self) -> Packet {
        recv(&self.up).await
    }

    async fn recv_down(&self) -> Packet {
        recv(&self.down).await
    }

    /// PULL_DATA and wait for its PULL_ACK: the server has handled everything sent before.
    async fn sync(&self, token: u16) {
        self.pull(token).await;
        loop {
            if let Packet::PullAck(a) = self.recv_down().await {
                if a.token == token {
                    return;
                }
            }
        }
    }

    async fn tx_ack(&self, token: u16, status: TxAckStatus) {
        self.down.send_to(&TxAck::new(token, self.id, status).encode(), self.server).await.unwrap();
    }
}

async fn recv(socket: &UdpSocket) -> Packet {
    let mut buf = vec![0u8; 65536];
    let (n, _) = timeout(WAIT, socket.recv_from(&mut buf)).await.expect("a datagram within the wait").unwrap();
    Packet::decode(&buf[..n]).expect("a valid packet from the server")
}

fn push_bytes(token: u16, id: GatewayId, body: &[u8]) -> Vec<u8> {
    let mut b = vec![PROTOCOL_VERSION, (token >> 8) as u8, token as u8, 0x00];
    b.extend_from_slice(&id.0);
    b.extend_from_slice(body);
    b
}

fn lora_rxpk(tmst: u32, data: &str) -> serde_json::Value {
    json!({"tmst":tmst,"chan":1,"rfch":0,"freq":868.3,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5",
           "rssi":-60,"lsnr":8.5,"size":(data.len() / 4 * 3) - data.matches('=').count(),"data":data})
}

fn lora_downlink(gateway_id: GatewayId) -> DownlinkFrame {
    DownlinkFrame {
        gateway_id,
        downlink_id: 77,
        phy_payload: vec![0x60, 4, 3, 2, 1],
        timing: Timing::Tmst(5_000_000),
        frequency: 869_525_000,
        power: 27,
        modulation: Modulation::Lora { bandwidth: 125_000, spreading_factor: 12, code_rate: "4/5".into() },
        rf_chain: 0,
        polarization_inversion: true,
        antenna: 0,
    }
}

#[tokio::test]
async fn push_ack_and_pull_ack_echo_the_token() {
    let server = start(KnownGateways::new(true), |_| {}).await;
    let gw = VirtualGateway::new(1, server.addr).await;
    gw.push(0xa1b2, PushDataPayload::default()).await;
    assert_eq!(gw.recv_up().await, Packet::PushAck(loraflow_packet_forwarder::semtech::PushAck { token: 0xa1b2 }));
    gw.pull(0x0304).await;
    assert_eq!(gw.recv_down().await, Packet::PullAck(loraflow_packet_forwarder::semtech::PullAck { token: 0x0304 }));
    assert_eq!(server.counter("loraflow_gateway_udp_received_total", "packet_type", "push_data"), 1);
    assert_eq!(server.counter("loraflow_gateway_udp_received_total", "packet_type", "pull_data"), 1);
}

#[tokio::test]
async fn an_uplink_is_delivered_with_its_metadata_and_a_seen_event() {
    let mut server = start(KnownGateways::new(true), |_| {}).await;
    let gw = VirtualGateway::new(2, server.addr).await;
    gw.push_json(1, &json!({"rxpk":[lora_rxpk(1000, "QAECAwQ=")]})).await;
    gw.push_json(2, &json!({"rxpk":[lora_rxpk(2000, "QAECAwQ=")]})).await;
    gw.sync(3).await;
    let state = server.handle.gateway_state(gw.id).unwrap();
    assert!(state.last_seen_at.is_some());
    // One Seen for the first datagram; the second datagram and the PULL_DATA come within the
    // throttle interval and add none.
    let events = server.drain();
    let seen = events.iter().filter(|e| matches!(e, GatewayEvent::Seen { gateway_id, .. } if *gateway_id == gw.id)).count();
    let uplinks: Vec<&UplinkFrame> = events
        .iter()
        .filter_map(|e| match e {
            GatewayEvent::Uplink(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!((seen, uplinks.len()), (1, 2), "{events:?}");
    let f = uplinks[0];
    assert_eq!(f.phy_payload, [0x40, 1, 2, 3, 4]);
    assert_eq!(f.rx_info.gateway_id, gw.id);
    assert_eq!(f.rx_info.context, 1000u32.to_be_bytes());
    assert_eq!(f.tx_info.frequency, 868_300_000);
    assert_eq!(uplinks[1].rx_info.tmst, 2000);
    assert_eq!(server.counter("loraflow_gateway_uplinks_total", "modulation", "lora"), 2);
}

#[tokio::test]
async fn mixed_modulations_and_a_bad_rxpk_in_one_datagram_keep_the_good_frames() {
    let mut server = start(KnownGateways::new(true), |_| {}).await;
    let gw = VirtualGateway::new(3, server.addr).await;
    let body = json!({"rxpk":[
        {"tmst":1,"freq":868.8,"stat":1,"modu":"FSK","datr":50000,"rssi":-70,"size":2,"data":"AQI="},
        {"tmst":2,"freq":868.1,"stat":1,"modu":"LR-FHSS","datr":"M0CW137","codr":"2/3","rssi":-95,"size":2,"data":"AwQ="},
        {"tmst":3,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-60,"lsnr":7.0,"data":"not base64!"},
        {"tmst":4,"freq":868.1,"stat":-1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-60,"lsnr":7.0,"data":"AQI="},
        lora_rxpk(5, "BQY="),
    ]});
    gw.push_json(9, &body).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(server.next_uplink().await);
    }
    let kinds: Vec<_> = got.iter().map(|f| (f.rx_info.tmst, f.tx_info.modulation.clone())).collect();
    assert_eq!(kinds[0], (1, Modulation::Fsk { datarate: 50000 }));
    assert_eq!(kinds[1], (2, Modulation::LrFhss { datr: "M0CW137".into(), code_rate: "2/3".into() }));
    assert_eq!(kinds[2].0, 5);
    assert_eq!(got[2].phy_payload, [5, 6]);
    assert_eq!(server.counter("loraflow_gateway_udp_dropped_total", "reason", "bad_base64"), 1);
    assert_eq!(server.counter("loraflow_gateway_udp_dropped_total", "reason", "crc_error"), 1);
    for m in ["lora", "fsk", "lr_fhss"] {
        assert_eq!(server.counter("loraflow_gateway_uplinks_total", "modulation", m), 1, "{m}");
    }
}

#[tokio::test]
async fn rsig_uplinks_give_one_frame_per_antenna_over_udp() {
    let mut server = start(KnownGateways::new(true), |_| {}).await;
    let gw = VirtualGateway::new(4, server.addr).await;
    gw.push_json(
        1,
        &json!({"rxpk":[{"tmst":10,"freq":868.5,"stat":1,"modu":"LORA","datr":"SF8BW125","codr":"4/5","data":"AQI=",
        "rsig":[{"ant":0,"chan":2,"rssic":-70,"lsnr":5.5},{"ant":1,"chan":2,"rssic":-80,"lsnr":1.0}]}]}),
    )
    .await;
    let a = server.next_uplink().await;
    let b = server.next_uplink().await;
    assert_eq!((a.rx_info.antenna, a.rx_info.rssi), (0, -70));
    assert_eq!((b.rx_info.antenna, b.rx_info.rssi), (1, -80));
}

#[tokio::test]
async fn stats_are_forwarded_and_summed_in_metrics() {
    let mut server = start(KnownGateways::new(true), |_| {}).await;
    let a = VirtualGateway::new(5, server.addr).await;
    let b = VirtualGateway::new(6, server.addr).await;
    let stat =
        |n| PushDataPayload { rxpk: vec![], stat: Some(Stat { rxnb: Some(n), rxok: Some(n - 1), txnb: Some(1), ..Stat::default() }) };
    a.push(1, stat(10)).await;
    b.push(1, stat(5)).await;
    a.recv_up().await;
    b.recv_up().await;
    a.sync(2).await;
    let stats: Vec<_> = server
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::Stats { gateway_id, stats, .. } => Some((gateway_id, stats.rx_received)),
            _ => None,
        })
        .collect();
    assert_eq!(stats, vec![(a.id, 10), (b.id, 5)]);
    assert_eq!(metric_value(&server.registry, "loraflow_gateway_stat_rx_received_total", None), 15.0);
    assert_eq!(metric_value(&server.registry, "loraflow_gateway_stat_rx_ok_total", None), 13.0);
    assert_eq!(metric_value(&server.registry, "loraflow_gateway_stat_tx_emitted_total", None), 2.0);
}

#[tokio::test]
async fn pull_resp_goes_to_the_pull_address_and_tx_ack_ok_completes_send() {
    let server = start(KnownGateways::new(true), |_| {}).await;
    let gw = VirtualGateway::new(7, server.addr).await;
    gw.sync(1).await;
    let state = server.handle.gateway_state(gw.id).unwrap();
    assert_eq!(state.pull_addr, Some(gw.down.local_addr().unwrap()));
    assert!(state.online && state.last_pull_at.is_some());

    let handle = server.handle.clone();
    let id = gw.id;
    let send = tokio::spawn(async move { handle.send(lora_downlink(id)).await });
    let Packet::PullResp(resp) = gw.recv_down().await else { panic!("expected PULL_RESP") };
    assert_eq!(resp.txpk.tmst, Some(5_000_000));
    assert_eq!(resp.txpk.freq, 869_525_000);
    assert_eq!(resp.txpk.datr, Datr::Name("SF12BW125".into()));
    assert_eq!(resp.txpk.ipol, Some(true));
    assert_eq!(resp.txpk.payload().unwrap(), [0x60, 4, 3, 2, 1]);
    gw.tx_ack(resp.token, TxAckStatus::Ok).await;
    assert_eq!(send.await.unwrap(), TxAckStatus::Ok);
    assert_eq!(server.handle.pending_tx_acks(), 0);
    assert_eq!(server.counter("loraflow_gateway_tx_ack_total", "status", "OK"), 1);
}

#[tokio::test]
async fn tx_ack_error_names_surface_from_send() {
    let server = start(KnownGateways::new(true), |_| {}).await;
    let gw = VirtualGateway::new(8, server.addr).await;
    gw.sync(1).await;
    for status in [
        TxAckStatus::TooLate,
        TxAckStatus::TooEarly,
        TxAckStatus::CollisionPacket,
        TxAckStatus::CollisionBeacon,
        TxAckStatus::TxFreq,
        TxAckStatus::TxPower,
        TxAckStatus::GpsUnlocked,
    ] {
        let handle = server.handle.clone();
        let id = gw.id;
        let send = tokio::spawn(async move { handle.send(lora_downlink(id)).await });
        let Packet::PullResp(resp) = gw.recv_down().await else { panic!("expected PULL_RESP") };
        // A TX_ACK with the wrong token or from another gateway must not complete it.
        gw.tx_ack(resp.token.wrapping_add(1), TxAckStatus::Ok).await;
        let other = TxAck::new(resp.token, Eui64::from_u64(999), TxAckStatus::Ok).encode();
        gw.down.send_to(&other, server.addr).await.unwrap();
        gw.tx_ack(resp.token, status).await;
        assert_eq!(send.await.unwrap(), status);
    }
    assert_eq!(server.handle.pending_tx_acks(), 0);
    assert_eq!(server.counter("loraflow_gateway_tx_ack_total", "status", "TOO_LATE"), 1);
}

#[tokio::test]
async fn send_times_out_without_tx_ack_and_leaves_nothing_pending() {
    let server = start(KnownGateways::new(true), |c| c.tx_ack_timeout_ms = 200).await;
    let gw = VirtualGateway::new(9, server.addr).await;
    assert_eq!(server.handle.send(lora_downlink(gw.id)).await, TxAckStatus::GatewayNotConnected);
    gw.sync(1).await;
    let started = std::time::Instant::now();
    assert_eq!(server.handle.send(lora_downlink(gw.id)).await, TxAckStatus::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert_eq!(server.handle.pending_tx_acks(), 0);
    // The PULL_RESP did go out; a late TX_ACK is ignored.
    let Packet::PullResp(resp) = gw.recv_down().await else { panic!("expected PULL_RESP") };
    gw.tx_ack(resp.token, TxAckStatus::Ok).await;
    gw.sync(2).await;
    assert_eq!(server.counter("loraflow_gateway_tx_ack_total", "status", "TIMEOUT"), 1);
    assert_eq!(server.counter("loraflow_gateway_tx_ack_total", "status", "GATEWAY_NOT_CONNECTED"), 1);
}

#[tokio::test]
async fn a_cancelled_send_does_not_leak_its_pending_entry() {
    let server = start(KnownGateways::new(true), |c| c.tx_ack_timeout_ms = 10_000).await;
    let gw = VirtualGateway::new(10, server.addr).await;
    gw.sync(1).await;
    let handle = server.handle.clone();
    let id = gw.id;
    let send = tokio::spawn(async move { handle.send(lora_downlink(id)).await });
    let Packet::PullResp(_) = gw.recv_down().await else { panic!("expected PULL_RESP") };
    assert_eq!(server.handle.pending_tx_acks(), 1);
    send.abort();
    let _ = send.await;
    assert_eq!(server.handle.pending_tx_acks(), 0);
}

#[tokio::test]
async fn unknown_gateways_are_acked_but_not_forwarded() {
    let known = KnownGateways::new(false);
    known.insert(Eui64::from_u64(11), AllowedNetworks::anywhere());
    let mut server = start(known.clone(), |_| {}).await;
    let registered = VirtualGateway::new(11, server.addr).await;
    let stranger = VirtualGateway::new(12, server.addr).await;

    stranger.push_json(5, &json!({"rxpk":[lora_rxpk(1, "AQI=")],"stat":{"rxnb":1}})).await;
    assert!(matches!(stranger.recv_up().await, Packet::PushAck(a) if a.token == 5));
    stranger.sync(6).await;
    assert!(server.handle.gateway_state(stranger.id).is_none());
    assert_eq!(server.handle.send(lora_downlink(stranger.id)).await, TxAckStatus::GatewayNotConnected);

    registered.push_json(7, &json!({"rxpk":[lora_rxpk(2, "AwQ=")]})).await;
    let f = server.next_uplink().await;
    assert_eq!(f.rx_info.gateway_id, registered.id);
    registered.sync(8).await;
    assert!(server.drain().iter().all(|e| match e {
        GatewayEvent::Uplink(f) => f.rx_info.gateway_id != stranger.id,
        GatewayEvent::Stats { gateway_id, .. } | GatewayEvent::Seen { gateway_id, .. } => *gateway_id != stranger.id,
    }));
    assert_eq!(server.counter("loraflow_gateway_udp_dropped_total", "reason", "unknown_gateway"), 1);

    // Registering it at run time takes effect at once.
    known.insert(stranger.id, AllowedNetworks::anywhere());
    stranger.push_json(9, &json!({"rxpk":[lora_rxpk(3, "BQY=")]})).await;
    assert_eq!(server.next_uplink().await.rx_info.gateway_id, stranger.id);
}

#[tokio::test]
async fn a_thousand_malformed_datagrams_are_counted_by_reason_and_a_valid_one_still_gets_through() {
    let mut server = start(KnownGateways::new(true), |c| c.max_datagram_bytes = 1024).await;
    let gw = VirtualGateway::new(13, server.addr).await;
    let id = gw.id;
    let rxpk_body = |rxpk: serde_json::Value| json!({ "rxpk": [rxpk] }).to_string().into_bytes();
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("too_short", vec![2, 0]),
        ("too_short", vec![2, 0, 1, 0, 1, 2]),
        ("wrong_version", {
            let mut b = push_bytes(1, id, b"{}");
            b[0] = 1;
            b
        }),
        ("unknown_type", vec![2, 0, 1, 0x42, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("unknown_type", vec![2, 0, 1, 0x01]), // a PUSH_ACK sent to the server
        ("bad_json", push_bytes(1, id, b"{\"rxpk\":[")),
        ("bad_json", push_bytes(1, id, b"")),
        ("bad_json", push_bytes(1, id, &[0xff, 0xfe, 0x00])),
        ("bad_base64", push_bytes(1, id, &rxpk_body(lora_rxpk(1, "@@@@")))),
        ("bad_rxpk", push_bytes(1, id, &rxpk_body(json!({"tmst":"x"})))),
        (
            "crc_error",
            push_bytes(
                1,
                id,
                &rxpk_body(json!({"tmst":1,"freq":868.1,"stat":-1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","data":"AA=="})),
            ),
        ),
        ("oversized", push_bytes(1, id, &vec![b' '; 1100])),
    ];
    let mut expected = std::collections::HashMap::<&str, u64>::new();
    for batch in 0..50 {
        for i in 0..20 {
            let (reason, bytes) = &kinds[(batch * 20 + i) % kinds.len()];
            gw.push_raw(bytes).await;
            *expected.entry(reason).or_default() += 1;
        }
        // Keeps the loopback socket buffers from overflowing, which would lose datagrams.
        gw.sync(batch as u16).await;
    }
    assert_eq!(expected.values().sum::<u64>(), 1000);

    gw.push_json(0xffff, &json!({"rxpk":[lora_rxpk(4242, "QAECAwQ=")]})).await;
    let f = server.next_uplink().await;
    assert_eq!((f.rx_info.tmst, f.phy_payload.as_slice()), (4242, &[0x40, 1, 2, 3, 4][..]));

    for (reason, n) in &expected {
        assert_eq!(server.counter("loraflow_gateway_udp_dropped_total", "reason", reason), *n, "{reason}");
    }
    assert!(!server.task.is_finished(), "the receive loop is still running");
}

#[tokio::test]
async fn headers_that_parse_are_acked_even_when_their_json_is_bad() {
    let server = start(KnownGateways::new(true), |c| c.max_datagram_bytes = 1024).await;
    let gw = VirtualGateway::new(14, server.addr).await;
    gw.push_raw(&push_bytes(0x1111, gw.id, b"{broken")).await;
    assert!(matches!(gw.recv_up().await, Packet::PushAck(a) if a.token == 0x1111));
    gw.push_raw(&push_bytes(0x2222, gw.id, &vec![b'x'; 2000])).await;
    assert!(matches!(gw.recv_up().await, Packet::PushAck(a) if a.token == 0x2222));
}

#[tokio::test]
async fn a_gateway_goes_offline_after_the_configured_time() {
    let server = start(KnownGateways::new(true), |c| c.offline_after_secs = 1).await;
    let gw = VirtualGateway::new(15, server.addr).await;
    assert_eq!(server.handle.online_count(), 0);
    gw.sync(1).await;
    assert!(server.handle.gateway_state(gw.id).unwrap().online);
    assert_eq!(server.handle.online_count(), 1);
    wait_for(|| server.gauge("loraflow_gateway_online") == 1).await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let state = server.handle.gateway_state(gw.id).unwrap();
    assert!(!state.online);
    assert!(state.pull_addr.is_some() && state.last_seen_at.is_some());
    assert_eq!(server.handle.online_count(), 0);
    wait_for(|| server.gauge("loraflow_gateway_online") == 0).await;

    gw.sync(2).await;
    assert!(server.handle.gateway_state(gw.id).unwrap().online);
}

async fn wait_for(mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn binding_a_busy_address_names_it_and_the_config_key() {
    let busy = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = busy.local_addr().unwrap();
    let config = GatewayConfig { bind: addr, ..Default::default() };
    let err = match PacketForwarder::bind(&config, &prometheus::Registry::new(), KnownGateways::new(true)).await {
        Ok(_) => panic!("binding a busy port must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(err.contains("gateway.bind"), "{err}");
}

#[tokio::test]
async fn an_invalid_config_is_refused_at_bind() {
    let config = GatewayConfig { bind: "127.0.0.1:0".parse().unwrap(), uplink_queue: 0, ..Default::default() };
    let err = PacketForwarder::bind(&config, &prometheus::Registry::new(), KnownGateways::new(true)).await.err().unwrap();
    assert!(err.to_string().contains("gateway.uplink_queue"), "{err}");
}

#[tokio::test]
async fn run_returns_promptly_after_cancel_and_closes_the_event_channel() {
    let mut server = start(KnownGateways::new(true), |_| {}).await;
    server.shutdown.cancel();
    timeout(Duration::from_millis(500), &mut server.task).await.expect("run returned").unwrap();
    assert!(timeout(Duration::from_millis(500), server.events.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_full_event_channel_drops_and_counts_instead_of_blocking() {
    let mut server = start(KnownGateways::new(true), |c| c.uplink_queue = 2).await;
    let gw = VirtualGateway::new(16, server.addr).await;
    // Capacity 2: the Seen event and the first uplink fit, the other four uplinks are dropped.
    let rxpk: Vec<Rxpk> = (0..5).map(|i| serde_json::from_value(lora_rxpk(i, "AQI=")).unwrap()).collect();
    gw.push(1, PushDataPayload { rxpk, stat: None }).await;
    assert!(matches!(gw.recv_up().await, Packet::PushAck(_)));
    gw.sync(2).await;
    assert_eq!(server.counter("loraflow_gateway_udp_dropped_total", "reason", "channel_full"), 4);
    assert_eq!(server.drain().len(), 2);
    // Once drained, frames flow again.
    gw.push_json(3, &json!({"rxpk":[lora_rxpk(99, "AQI=")]})).await;
    assert_eq!(server.next_uplink().await.rx_info.tmst, 99);
}
