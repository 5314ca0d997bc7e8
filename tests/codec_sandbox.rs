//! Hostile JavaScript codecs against the real binary: a 50,000-deep result, a
//! `JSON.stringify` bomb and a deep `encodeDownlink` result are codec errors (a `log`
//! event, a 400) and the server stays up; a catastrophic regular expression is cut off at
//! the deadline while another application's events keep flowing.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::time::{Duration, Instant};

use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::provision::{self, Provisioned};
use common::{Api, Backend, TestServer};
use mqtt_support::Subscriber;
use serde_json::{json, Value};

const GATEWAY: &str = "00000000000000c1";
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";
const DEDUP_WINDOW_MS: u64 = 50;
/// Long enough that building 50,000 levels in a debug build on a loaded machine stays
/// within it, so the deep-result tests hit the depth limit rather than the clock.
const TIME_LIMIT_MS: u64 = 1_000;

/// Builds an object `n` levels deep in a loop.
const DEEP: &str = "function deep(n) { var o = {}; for (var i = 0; i < n; i++) { o = { a: o }; } return o; }\n";

struct World {
    _server: TestServer,
    api: Api,
    gw: FakeGateway,
    events: Events,
    tmst: u32,
}

/// Every MQTT message received, kept so that a test can wait for one topic while others
/// arrive in between.
struct Events {
    sub: Subscriber,
    seen: Vec<(String, Value, Instant)>,
}

impl Events {
    /// The first not yet taken message on `topic`, and when it arrived.
    async fn next(&mut self, topic: &str, timeout: Duration) -> (Value, Instant) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.seen.iter().position(|(t, _, _)| t == topic) {
                let (_, v, at) = self.seen.remove(i);
                return (v, at);
            }
            let (t, payload) = tokio::time::timeout_at(deadline, self.sub.messages.recv())
                .await
                .unwrap_or_else(|_| panic!("no message on {topic} within {timeout:?}; others: {:?}", self.topics()))
                .expect("subscriber open");
            self.seen.push((t, serde_json::from_slice(&payload).expect("event JSON"), Instant::now()));
        }
    }

    fn topics(&self) -> Vec<&str> {
        self.seen.iter().map(|(t, _, _)| t.as_str()).collect()
    }
}

async fn world() -> World {
    let env = [
        ("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", DEDUP_WINDOW_MS.to_string()),
        ("LORAFLOW_CODEC__JS_TIME_LIMIT_MS", TIME_LIMIT_MS.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = TestServer::start(Backend::Sqlite, &env).await;
    let api = server.client();
    provision::gateway(&api, GATEWAY).await;
    let mut gw = FakeGateway::new(GATEWAY, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    let sub = Subscriber::connect(server.mqtt.expect("embedded broker"), "application/#", false).await;
    World { _server: server, api, gw, events: Events { sub, seen: Vec::new() }, tmst: 1_000_000 }
}

/// An application with a JS profile and one ABP device in it.
struct App {
    p: Provisioned,
    dev: Device,
    dev_eui: String,
}

impl App {
    fn topic(&self, kind: &str) -> String {
        format!("application/{}/device/{}/event/{kind}", self.p.application_id, self.dev_eui)
    }
}

async fn app(w: &World, n: u8, script: &str) -> App {
    let p = provision::application_and_profile(&w.api, "JS", script).await;
    let dev_eui = format!("70b3d57ed00000{n:02x}");
    let dev_addr = format!("260112{n:02x}");
    provision::abp_device(&w.api, &p, &dev_eui, &dev_addr, NWK_S_KEY, APP_S_KEY).await;
    App { p, dev: Device::abp(&dev_eui, &dev_addr, NWK_S_KEY, APP_S_KEY), dev_eui }
}

/// Sends one uplink of `a` through the gateway; returns when the gateway got its PUSH_ACK.
async fn send_uplink(w: &mut World, a: &mut App, payload: &[u8]) -> Instant {
    let up = a.dev.uplink(false, 1, payload);
    w.tmst += 1_000_000;
    let sent = Instant::now();
    let t = w.gw.push_rxpk(vec![rxpk(&up, w.tmst, -50, 8.0)]).await;
    w.gw.expect_ack(PUSH_ACK, t).await;
    sent
}

/// An uplink of `a` gives an `UPLINK_CODEC` error log whose description contains
/// `expected`, then the `up` event without object; returns that `up` event.
async fn uplink_with_codec_error(w: &mut World, a: &mut App, expected: &str) -> Value {
    send_uplink(w, a, &[1, 2, 3]).await;
    let (log, _) = w.events.next(&a.topic("log"), Duration::from_secs(10)).await;
    assert_eq!((log["level"].as_str(), log["code"].as_str()), (Some("ERROR"), Some("UPLINK_CODEC")), "{log}");
    let description = log["description"].as_str().unwrap();
    assert!(description.contains(expected), "{description}");
    let (up, _) = w.events.next(&a.topic("up"), Duration::from_secs(10)).await;
    assert!(up.get("object").is_none(), "{up}");
    assert_eq!(up["data"], "AQID");
    up
}

async fn healthy(w: &World) {
    let (s, b) = w.api.get("/health").await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_results_and_stringify_bombs_are_codec_errors_and_the_server_stays_up() {
    let mut w = world().await;
    let deep_script = format!(
        "{DEEP} function decodeUplink(input) {{ return {{ data: deep(50000) }}; }}\n\
         function encodeDownlink(input) {{ return {{ bytes: [1], extra: deep(50000) }}; }}"
    );
    let mut deep = app(&w, 1, &deep_script).await;
    let bomb_script = format!("{DEEP} function decodeUplink(input) {{ return {{ data: {{ s: JSON.stringify(deep(50000)) }} }}; }}");
    let mut bomb = app(&w, 2, &bomb_script).await;
    let mut plain = app(&w, 3, "function decodeUplink(input) { return { data: { first: input.bytes[0] } }; }").await;

    // Twice each: the second uplink shows that the process (and its codec threads)
    // survived the first.
    for f_cnt in 0..2 {
        let up = uplink_with_codec_error(&mut w, &mut deep, "nesting deeper than 32 levels").await;
        assert_eq!(up["fCnt"], f_cnt);
        let up = uplink_with_codec_error(&mut w, &mut bomb, "JSON.stringify: nesting deeper than").await;
        assert_eq!(up["fCnt"], f_cnt);
        healthy(&w).await;
    }

    // A deep encodeDownlink result is the client's error, named as such.
    let (s, b) = w.api.post(&format!("/api/devices/{}/queue", deep.dev_eui), json!({"fPort": 3, "object": {"level": 1}})).await;
    assert_eq!(s, 400, "{b}");
    let error = b["error"].as_str().unwrap();
    assert!(error.starts_with("object: ") && error.contains("nesting deeper than 32 levels"), "{error}");
    let (_, q) = w.api.get(&format!("/api/devices/{}/queue", deep.dev_eui)).await;
    assert_eq!(q["totalCount"], 0, "nothing was queued");
    healthy(&w).await;

    // A well-behaved codec next to them still decodes.
    send_uplink(&mut w, &mut plain, &[42]).await;
    let (up, _) = w.events.next(&plain.topic("up"), Duration::from_secs(10)).await;
    assert_eq!(up["object"], json!({"first": 42}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catastrophic_regex_is_cut_off_and_other_applications_events_keep_flowing() {
    let mut w = world().await;
    let regex_script = "function decodeUplink(input) { return { data: { m: /^(a+)+$/.test('a'.repeat(30) + 'b') } }; }";
    let mut hostile = app(&w, 1, regex_script).await;
    let mut other = app(&w, 2, "function decodeUplink(input) { return { data: { first: input.bytes[0] } }; }").await;
    // Warm the other application's codec (its first call compiles the script).
    send_uplink(&mut w, &mut other, &[1]).await;
    w.events.next(&other.topic("up"), Duration::from_secs(10)).await;

    let hostile_sent = send_uplink(&mut w, &mut hostile, &[1]).await;
    // Let the regex start (after the dedup window), then send the other device's uplink.
    tokio::time::sleep(Duration::from_millis(DEDUP_WINDOW_MS + 250)).await;
    let other_sent = send_uplink(&mut w, &mut other, &[7]).await;
    let (up, arrived) = w.events.next(&other.topic("up"), Duration::from_secs(10)).await;
    assert_eq!(up["object"], json!({"first": 7}));
    let waited = arrived - other_sent;
    assert!(waited < Duration::from_millis(1_000 + DEDUP_WINDOW_MS), "the other application's uplink took {waited:?} while the regex ran");
    assert!(!w.events.topics().contains(&hostile.topic("up").as_str()), "the regex was still running: this proves no head-of-line wait");

    // The hostile codec is cut off at its deadline (1 s + 100 ms grace), not after the
    // regex's minutes; its uplink is still published, without object.
    let (log, logged) = w.events.next(&hostile.topic("log"), Duration::from_secs(10)).await;
    assert_eq!((log["level"].as_str(), log["code"].as_str()), (Some("ERROR"), Some("UPLINK_CODEC")), "{log}");
    assert!(log["description"].as_str().unwrap().contains("did not stop at its time limit of 1000 ms"), "{log}");
    let cut_off = logged - hostile_sent;
    assert!(cut_off >= Duration::from_millis(TIME_LIMIT_MS), "cut off after {cut_off:?}");
    assert!(cut_off < Duration::from_millis(TIME_LIMIT_MS + 2_000), "cut off after {cut_off:?}");
    let (up, _) = w.events.next(&hostile.topic("up"), Duration::from_secs(10)).await;
    assert!(up.get("object").is_none(), "{up}");

    let (_, text) = w.api.get("/metrics").await;
    let text = text.as_str().unwrap_or_default().to_string();
    assert_eq!(common::metric(&text, "loraflow_codec_workers_abandoned_total", &[]), 1.0, "{text}");
    assert_eq!(common::metric(&text, "loraflow_codec_workers_stuck", &[]), 1.0);
    healthy(&w).await;
    send_uplink(&mut w, &mut other, &[8]).await;
    let (up, _) = w.events.next(&other.topic("up"), Duration::from_secs(10)).await;
    assert_eq!(up["object"], json!({"first": 8}));
}
