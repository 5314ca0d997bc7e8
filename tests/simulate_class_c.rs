//! `loraflow simulate --class-c` against a real server: the device profile says Class C, and a
//! downlink queued between two uplinks reaches the device at once on RX2 (an immediate
//! PULL_RESP on 869.525 MHz at DR0), which only a Class C device hears.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::time::Duration;

use common::{Backend, TestServer, TOKEN};
use mqtt_support::Subscriber;
use serde_json::{json, Value};

/// The simulator's first device ("LFSIMD" + 0).
const DEVICE: &str = "4c4653494d440000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_c_device_hears_a_queued_downlink_between_its_uplinks() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let mut events = Subscriber::connect(server.mqtt.expect("embedded MQTT broker"), "application/+/device/+/event/+", false).await;

    // One uplink every 6 s: a downlink sent in a Class A window would wait for the next one.
    let sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["simulate", "--server", &server.gateway.to_string(), "--api", &server.url(""), "--token", TOKEN])
        .args(["--class-c", "--devices", "1", "--interval", "6", "--seconds", "11", "--json"])
        .current_dir(server.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output();
    let sim = tokio::spawn(sim);

    // After the first uplink the server knows a gateway that hears the device; queue then.
    let api = server.client();
    let mut queued_at = None;
    let mut acked_at = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked_at.is_none() {
        let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, events.messages.recv()).await else { break };
        let ev: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
        if topic.ends_with("/event/up") && queued_at.is_none() {
            let (status, body) = api.post(&format!("/api/devices/{DEVICE}/queue"), json!({"fPort": 9, "data": "AQID"})).await;
            assert!((200..300).contains(&status), "queue: {status} {body}");
            queued_at = Some(tokio::time::Instant::now());
        }
        if topic.ends_with("/event/txack") && queued_at.is_some() {
            acked_at = Some(tokio::time::Instant::now());
            assert_eq!(ev["txInfo"]["frequency"], 869_525_000, "RX2: {ev}");
        }
    }
    let (queued_at, acked_at) = (queued_at.expect("the device sent an uplink"), acked_at.expect("the gateway sent the downlink"));
    assert!(acked_at - queued_at < Duration::from_secs(3), "sent at once, not after the next uplink: {:?}", acked_at - queued_at);

    let out = sim.await.unwrap().expect("run loraflow simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "simulate failed: {stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let d = &report["devices"][0];
    assert_eq!((d["classCDownlinks"].as_u64(), d["refusedDownlinks"].as_u64()), (Some(1), Some(0)), "{d}\n{stderr}");
    assert!(d["downlinks"].as_u64() >= Some(1), "Class C and the Class A ones (DevStatusReq): {d}");
    assert_eq!(report["errors"], 0, "{report}\n{stderr}");

    let (_, profiles) = api.get("/api/device-profiles?limit=100").await;
    let profile = profiles["result"].as_array().unwrap().iter().find(|p| p["name"] == "loraflow-simulator").cloned().unwrap();
    assert_eq!(profile["supportsClassC"], true, "{profile}");
}
