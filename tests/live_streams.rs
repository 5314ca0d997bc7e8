//! The live streams (server-sent events) and traffic statistics of issue 13, end to end on
//! the real binary with PostgreSQL and the embedded MQTT broker: who may watch what, the
//! order of a device's events, the gateway frames with the server's verdicts, a client that
//! reads nothing while thousands of uplinks go through (the uplink path keeps its pace and
//! the client is told what it missed), and SIGTERM with streams open.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PULL_RESP, PUSH_ACK, PUSH_DATA};
use common::provision;
use common::{eventually, metric, Api, Backend, TestServer, TOKEN};

const APP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const GW: &str = "00000000000000b1";
const DEV: &str = "0102030405060708";
const OTHER_DEV: &str = "1112131415161718";
/// Cayenne LPP: channel 1 temperature 23.4 °C.
const LPP: [u8; 4] = [0x01, 0x67, 0x00, 0xea];

/// One server-sent event.
#[derive(Debug, Clone, Default)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// A raw HTTP/1.1 client for one stream, so that a test decides exactly when (and whether)
/// anything is read from the socket.
struct SseClient {
    sock: TcpStream,
    /// Bytes read and not yet decoded from the chunked body.
    raw: Vec<u8>,
    /// Decoded body not yet parsed into events.
    body: String,
    status: u16,
    ended: bool,
}

impl SseClient {
    /// Sends the request and reads the answer's head. `small_window`: a tiny receive buffer,
    /// so that a client that stops reading stalls the server's writes quickly.
    async fn open(server: &TestServer, path: &str, token: Option<&str>, small_window: bool) -> SseClient {
        let socket = TcpSocket::new_v4().unwrap();
        if small_window {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        let mut sock = socket.connect(server.api).await.unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: loraflow\r\nAccept: text/event-stream\r\n{auth}\r\n");
        sock.write_all(request.as_bytes()).await.unwrap();
        let mut client = SseClient { sock, raw: Vec::new(), body: String::new(), status: 0, ended: false };
        let head_end = loop {
            if let Some(i) = client.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(client.read_more(Duration::from_secs(10)).await, "no answer head for {path}");
        };
        let head = String::from_utf8_lossy(&client.raw[..head_end]).to_string();
        client.raw.drain(..head_end + 4);
        client.status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        if client.status == 200 {
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("content-type: text/event-stream"), "{head}");
            assert!(lower.contains("transfer-encoding: chunked"), "{head}");
        }
        client
    }

    /// Reads once; false on timeout or end of the connection.
    async fn read_more(&mut self, timeout: Duration) -> bool {
        let mut buf = [0u8; 16384];
        match tokio::time::timeout(timeout, self.sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
            Ok(_) => {
                self.ended = true;
                false
            }
            Err(_) => false,
        }
    }

    /// Moves complete chunks from `raw` to `body`; notes the last chunk.
    fn decode_chunks(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size = usize::from_str_radix(String::from_utf8_lossy(&self.raw[..line_end]).trim(), 16).expect("chunk size");
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            self.body.push_str(std::str::from_utf8(&self.raw[start..start + size]).expect("UTF-8 body"));
            self.raw.drain(..start + size + 2);
        }
    }

    /// The next event (comments skipped), or None after `timeout` or at the end of the stream.
    async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.decode_chunks();
            while let Some(end) = self.body.find("\n\n") {
                let block: String = self.body.drain(..end + 2).collect();
                let mut ev = SseEvent { event: "message".into(), ..SseEvent::default() };
                let mut fields = 0;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim_start().to_string();
                        fields += 1;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim_start().to_string());
                        fields += 1;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        assert!(ev.data.is_empty(), "data on one line: {block}");
                        ev.data = v.trim_start().to_string();
                        fields += 1;
                    }
                }
                if fields > 0 {
                    return Some(ev);
                }
            }
            if self.ended {
                return None;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.read_more(left).await && !self.ended {
                return None;
            }
        }
    }

    /// The next event named `kind`, skipping others.
    async fn next_of(&mut self, kind: &str, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next(left).await?;
            if ev.event == kind {
                return Some(ev);
            }
        }
    }

    /// Opens a stream and waits for its `ready` event.
    async fn ready(server: &TestServer, path: &str, token: &str, small_window: bool) -> SseClient {
        let mut c = SseClient::open(server, path, Some(token), small_window).await;
        assert_eq!(c.status, 200, "{path}");
        let ready = c.next(Duration::from_secs(5)).await.expect("ready event");
        assert_eq!(ready.event, "ready", "{ready:?}");
        c
    }
}

async fn created(api: &Api, path: &str, body: Value) -> Value {
    let (s, b) = api.post(path, body).await;
    assert_eq!(s, 201, "{path}: {b}");
    b
}

async fn metric_value(api: &Api, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&api.metrics().await, name, labels)
}

/// Sends one PUSH_DATA with `frames` and waits for its PUSH_ACK, answering any PULL_RESP
/// (a downlink) with an OK TX_ACK on the way.
async fn hear(gw: &mut FakeGateway, frames: &[Vec<u8>], tmst: u32) {
    let t = gw.push_rxpk(frames.iter().enumerate().map(|(i, f)| rxpk(f, tmst + i as u32, -70, 7.5)).collect()).await;
    gw.expect_ack(PUSH_ACK, t).await;
}

/// Answers the downlinks that come within `quiet` of each other with OK.
async fn ack_downlinks(gw: &FakeGateway, quiet: Duration) -> usize {
    let mut n = 0;
    while let Some(resp) = gw.next_pull_resp(quiet).await {
        gw.tx_ack(resp.token, "NONE").await;
        n += 1;
    }
    n
}

#[tokio::test]
async fn streams_are_authorised_ordered_and_show_the_servers_verdicts() {
    let server = TestServer::start(Backend::Postgres, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "100")]).await;
    let admin = server.client();
    let p = provision::application_and_profile(&admin, "CAYENNE_LPP", "").await;
    let other = provision::application_and_profile(&admin, "NONE", "").await;
    provision::gateway(&admin, GW).await;
    provision::otaa_device(&admin, &p, DEV, APP_KEY).await;
    provision::abp_device(&admin, &other, OTHER_DEV, "26011234", "44024241ed4ce9a68c6a8bc055233fd3", "ec925802ae430ca77fd3dd73cb2cc588")
        .await;
    let key_a = created(&admin, "/api/api-keys", json!({"name": "a", "applicationId": p.application_id, "readOnly": true})).await;
    let key_b = created(&admin, "/api/api-keys", json!({"name": "b", "applicationId": other.application_id})).await;
    let (key_a, key_b) = (key_a["token"].as_str().unwrap(), key_b["token"].as_str().unwrap());
    let device_path = format!("/api/devices/{DEV}/events/stream");
    let gateway_path = format!("/api/gateways/{GW}/frames/stream");

    // Who may watch what, decided before any streaming starts.
    assert_eq!(SseClient::open(&server, &device_path, None, false).await.status, 401);
    assert_eq!(SseClient::open(&server, &device_path, Some("wrong-token"), false).await.status, 401);
    assert_eq!(SseClient::open(&server, &device_path, Some(key_b), false).await.status, 404, "another application's device");
    assert_eq!(SseClient::open(&server, &gateway_path, Some(key_a), false).await.status, 403, "gateways are for admin keys");
    assert_eq!(SseClient::open(&server, "/api/devices/00000000000000ff/events/stream", Some(TOKEN), false).await.status, 404);
    assert_eq!(SseClient::open(&server, "/api/gateways/00000000000000ff/frames/stream", Some(TOKEN), false).await.status, 404);
    assert_eq!(SseClient::open(&server, "/api/devices/xyz/events/stream", Some(TOKEN), false).await.status, 400);
    let (s, _) = admin.with_token(Some(key_a)).get("/api/stats").await;
    assert_eq!(s, 403, "statistics are for admin keys");
    let (s, _) = admin.with_token(Some(key_a)).get(&format!("/api/gateways/{GW}/stats")).await;
    assert_eq!(s, 403);

    // The application's own (read-only) key watches its device; the admin its gateway.
    let mut device_stream = SseClient::ready(&server, &device_path, key_a, false).await;
    let mut frames = SseClient::ready(&server, &gateway_path, TOKEN, false).await;

    let mut gw = FakeGateway::new(GW, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    let mut dev = Device::otaa(DEV, APP_KEY);
    hear(&mut gw, &[dev.join_request()], 10_000_000).await;
    let accept = gw.next_pull_resp(Duration::from_secs(5)).await.expect("join-accept");
    dev.accept(&accept.phy_payload(), [0, 0, 0]);
    gw.tx_ack(accept.token, "NONE").await;

    // Five uplinks sent back to back, each in its own datagram.
    for i in 0..5u32 {
        hear(&mut gw, &[dev.uplink(false, 1, &LPP)], 20_000_000 + i * 1_000_000).await;
    }
    // A frame of this device with a wrong key (bad MIC) and one of an unknown DevAddr.
    let mut forged = Device::abp("00000000000000aa", &dev.dev_addr.to_string(), "000102030405060708090a0b0c0d0e0f", APP_KEY);
    forged.f_cnt_up = 10;
    let mut stranger = Device::abp("00000000000000bb", "26999999", APP_KEY, APP_KEY);
    hear(&mut gw, &[forged.uplink(false, 1, b"x")], 40_000_000).await;
    hear(&mut gw, &[stranger.uplink(false, 1, b"y")], 41_000_000).await;
    ack_downlinks(&gw, Duration::from_millis(1500)).await;

    // The device's events: the join, then the uplinks in order with their decoded object.
    let join = device_stream.next_of("join", Duration::from_secs(5)).await.expect("join event");
    assert_eq!(join.json()["devAddr"], dev.dev_addr.to_string(), "{}", join.data);
    for f_cnt in 0..5 {
        let up = device_stream.next_of("up", Duration::from_secs(5)).await.unwrap_or_else(|| panic!("up event {f_cnt}"));
        let body = up.json();
        assert_eq!(body["fCnt"], f_cnt, "uplinks in order: {}", up.data);
        assert!(body["object"].is_object(), "decoded object: {}", up.data);
        assert_eq!(up.id.as_deref(), body["deduplicationId"].as_str(), "id: is the deduplication id");
        assert_eq!(body["deviceInfo"]["devEui"], DEV);
    }

    // The gateway's frames: every copy with the verdict, and the join-accept with its TX_ACK.
    let mut seen: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.iter().any(|f| f["reason"] == "mic") && seen.iter().any(|f| f["reason"] == "unknown_dev_addr")) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = frames.next(left).await.unwrap_or_else(|| panic!("frames so far: {seen:#?}"));
        let mut f = ev.json();
        f["event"] = json!(ev.event);
        seen.push(f);
    }
    let ups: Vec<&Value> = seen.iter().filter(|f| f["event"] == "up").collect();
    assert_eq!(ups[0]["mType"], "JoinRequest");
    assert_eq!((ups[0]["accepted"].clone(), ups[0]["reason"].clone()), (json!(true), Value::Null));
    assert_eq!(ups[0]["devEui"], DEV);
    let data: Vec<&&Value> = ups.iter().filter(|f| f["mType"] == "UnconfirmedDataUp" && f["accepted"] == true).collect();
    assert_eq!(data.len(), 5, "{ups:#?}");
    for (i, f) in data.iter().enumerate() {
        assert_eq!(f["fCnt"], i as u64);
        assert_eq!(f["devEui"], DEV);
        assert_eq!(f["devAddr"], dev.dev_addr.to_string());
        assert_eq!(f["gatewayId"], GW);
        assert_eq!(f["fPort"], 1);
        assert_eq!(f["dr"], 5);
        assert_eq!(f["modulation"], json!({"spreadingFactor": 7, "bandwidth": 125000}));
        assert_eq!(f["frequency"], 868_100_000);
        assert_eq!(f["rssi"], -70);
        assert!(f["deduplicationId"].is_string() && f["phyPayload"].is_string());
    }
    let mic = ups.iter().find(|f| f["reason"] == "mic").unwrap();
    assert_eq!((mic["accepted"].clone(), mic["devAddr"].clone()), (json!(false), json!(dev.dev_addr.to_string())));
    let unknown = ups.iter().find(|f| f["reason"] == "unknown_dev_addr").unwrap();
    assert_eq!(
        (unknown["accepted"].clone(), unknown["devAddr"].clone(), unknown["devEui"].clone()),
        (json!(false), json!("26999999"), Value::Null)
    );
    let accept_frame = seen.iter().find(|f| f["event"] == "down" && f["mType"] == "JoinAccept").expect("join-accept frame");
    assert_eq!(accept_frame["txAck"], "OK");
    assert_eq!(accept_frame["devEui"], DEV);
    assert_eq!(accept_frame["devAddr"], dev.dev_addr.to_string());

    // The statistics count what was sent.
    let (s, stats) = admin.get("/api/stats").await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["bucketSeconds"], 60);
    let sum = |v: &Value| v.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum::<u64>();
    assert_eq!(stats["uplinks"].as_array().unwrap().len(), 60);
    assert_eq!((sum(&stats["uplinks"]), sum(&stats["joins"])), (5, 1), "{stats}");
    assert_eq!(stats["gateways"], json!({"online": 1, "offline": 0, "neverSeen": 0}));
    let (s, g) = admin.get(&format!("/api/gateways/{GW}/stats")).await;
    assert_eq!(s, 200, "{g}");
    assert_eq!((g["totals"]["uplinks"].clone(), g["totals"]["rejected"].clone()), (json!(8), json!(2)), "{g}");
    assert_eq!(sum(&g["uplinks"]), 8);
    let downs = g["totals"]["downlinks"].as_u64().unwrap();
    assert!(downs >= 1, "{g}");
    assert_eq!(admin.get("/api/gateways/00000000000000ff/stats").await.0, 404);
}

/// ABP devices for the load test, each with its own DevAddr.
fn abp_devices(first: u32, n: u32) -> Vec<(String, Device)> {
    (first..first + n)
        .map(|i| {
            let eui = format!("{:016x}", 0x7000 + i);
            let addr = format!("{:08x}", 0x2601_7000 + i);
            let dev = Device::abp(&eui, &addr, "44024241ed4ce9a68c6a8bc055233fd3", "ec925802ae430ca77fd3dd73cb2cc588");
            (eui, dev)
        })
        .collect()
}

/// Sends `rounds` uplinks of every device, one datagram per round (each device once), with
/// at most 16 datagrams unacknowledged; PULL_RESPs are answered with OK at once by a task
/// that reads the socket. Returns when every PUSH_ACK arrived.
async fn push_rounds(gw: &Arc<FakeGateway>, devices: &mut [(String, Device)], rounds: u32) {
    let window = Arc::new(tokio::sync::Semaphore::new(16));
    let acks = {
        let (gw, window) = (gw.clone(), window.clone());
        tokio::spawn(async move {
            let mut acked = 0;
            while acked < rounds {
                let d = gw.recv(Duration::from_secs(20)).await.expect("the server keeps answering");
                match d.get(3) {
                    Some(&PUSH_ACK) => {
                        acked += 1;
                        window.add_permits(1);
                    }
                    Some(&PULL_RESP) => gw.tx_ack(u16::from_be_bytes([d[1], d[2]]), "NONE").await,
                    _ => {}
                }
            }
        })
    };
    for round in 0..rounds {
        window.acquire().await.unwrap().forget();
        let pks: Vec<Value> =
            devices.iter_mut().map(|(_, d)| rxpk(&d.uplink(false, 2, &round.to_be_bytes()), round * 1000, -80, 5.0)).collect();
        let token = round as u16;
        let mut b = vec![2, (token >> 8) as u8, token as u8, PUSH_DATA];
        b.extend_from_slice(&gw.eui);
        b.extend_from_slice(json!({ "rxpk": pks }).to_string().as_bytes());
        gw.send_raw(&b).await;
    }
    acks.await.unwrap();
}

/// Waits until `loraflow_uplinks_accepted_total` and `loraflow_uplinks_published_total` reach
/// `want`; returns how long that took from `since`.
async fn all_processed(api: &Api, want: f64, since: Instant) -> Duration {
    let done = eventually(Duration::from_secs(60), || async {
        let text = api.metrics().await;
        let accepted = metric(&text, "loraflow_uplinks_accepted_total", &[]);
        let published = metric(&text, "loraflow_uplinks_published_total", &[]);
        (accepted >= want && published >= want).then_some(())
    })
    .await;
    assert!(done.is_some(), "uplinks not all processed: accepted {}", metric_value(api, "loraflow_uplinks_accepted_total", &[]).await);
    since.elapsed()
}

#[tokio::test]
async fn a_client_that_reads_nothing_never_slows_the_uplinks_and_is_told_what_it_missed() {
    // The watched device alone sends more than its stream keeps (256) plus what the socket
    // buffers hold; the gateway stream sees all of them.
    const DEVICES: u32 = 4;
    const ROUNDS: u32 = 600;
    let server = TestServer::start(Backend::Postgres, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")]).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    provision::gateway(&api, GW).await;
    let mut baseline = abp_devices(0, DEVICES);
    let mut watched = abp_devices(100, DEVICES);
    for (eui, d) in baseline.iter().chain(watched.iter()) {
        let (addr, nwk, app) = (d.dev_addr.to_string(), hex::encode(d.nwk_s_key.0), hex::encode(d.app_s_key.0));
        provision::abp_device(&api, &p, eui, &addr, &nwk, &app).await;
    }
    let mut gw = FakeGateway::new(GW, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    let gw = Arc::new(gw);
    let per_phase = f64::from(DEVICES * ROUNDS);

    // Without watchers.
    let started = Instant::now();
    push_rounds(&gw, &mut baseline, ROUNDS).await;
    let unwatched = all_processed(&api, per_phase, started).await;

    // A device stream and a gateway stream whose clients read nothing after `ready`.
    let mut stalled_device = SseClient::ready(&server, &format!("/api/devices/{}/events/stream", watched[0].0), TOKEN, true).await;
    let mut stalled_frames = SseClient::ready(&server, &format!("/api/gateways/{GW}/frames/stream"), TOKEN, true).await;
    let started = Instant::now();
    push_rounds(&gw, &mut watched, ROUNDS).await;
    let with_stalled = all_processed(&api, 2.0 * per_phase, started).await;
    eprintln!("{per_phase} uplinks: {unwatched:?} unwatched, {with_stalled:?} with two stalled streams");
    assert!(
        with_stalled <= unwatched * 2 + Duration::from_secs(3),
        "stalled clients slowed the uplinks: {with_stalled:?} against {unwatched:?}"
    );

    // When they read at last, they are told how many they missed, and the stream goes on.
    let lagged = stalled_device.next_of("lagged", Duration::from_secs(10)).await.expect("device stream: lagged");
    assert!(lagged.json()["missed"].as_u64().unwrap() > 0, "{}", lagged.data);
    let lagged = stalled_frames.next_of("lagged", Duration::from_secs(10)).await.expect("frame stream: lagged");
    assert!(lagged.json()["missed"].as_u64().unwrap() > 0, "{}", lagged.data);
    assert!(stalled_frames.next_of("up", Duration::from_secs(5)).await.is_some(), "frames after lagged");

    // SIGTERM with streams open (one of them stalled again: its server side cannot write)
    // still exits at once, cleanly.
    let mut stalled_again = SseClient::ready(&server, &format!("/api/gateways/{GW}/frames/stream"), TOKEN, true).await;
    let started = Instant::now();
    push_rounds(&gw, &mut watched, 100).await;
    all_processed(&api, 2.0 * per_phase + f64::from(DEVICES * 100), started).await;
    let mut server = server;
    let (code, took) = server.stop();
    assert_eq!(code, Some(0), "clean exit");
    assert!(took < Duration::from_secs(4), "SIGTERM with open streams took {took:?}");
    // Every stream ended with the server.
    for client in [&mut stalled_device, &mut stalled_frames, &mut stalled_again] {
        while client.next(Duration::from_secs(5)).await.is_some() {}
        assert!(client.ended, "the stream ended");
    }
}
