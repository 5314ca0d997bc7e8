//! `loraflow simulate` against a real server: every simulated device joins, and every uplink
//! the simulator says it sent comes out of the server as an MQTT `up` event.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Backend, TestServer, TOKEN};
use mqtt_support::Subscriber;

/// `simulate done: sent=N joined=M downlinks=K errors=E …` as a map.
fn summary(stdout: &str) -> HashMap<String, u64> {
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("simulate done: ")).unwrap_or_else(|| panic!("no summary in {stdout:?}"));
    line.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.parse().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_devices_join_and_every_uplink_becomes_an_up_event() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let mut events = Subscriber::connect(server.mqtt.expect("embedded MQTT broker"), "application/+/device/+/event/+", false).await;

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["simulate", "--server", &server.gateway.to_string(), "--api", &server.url(""), "--token", TOKEN])
        .args(["--gateways", "2", "--devices", "3", "--interval", "1", "--seconds", "6", "--lpp"])
        .current_dir(server.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run loraflow simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "simulate failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&stdout);
    assert_eq!(s["joined"], 3, "{stdout}");
    assert_eq!(s["errors"], 0, "{stdout}");
    assert!(s["downlinks"] >= 3, "one join-accept per device: {stdout}");
    assert!(s["sent"] >= 3 * 3, "about 5 uplinks per device in 6 s: {stdout}");
    assert!(stdout.lines().filter(|l| l.contains(" sent=")).count() >= 5, "a status line per second: {stdout}");

    // The last uplinks wait out the dedup window in the server.
    let mut joins = HashSet::new();
    let mut ups: HashSet<(String, u64)> = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ups.len() < s["sent"] as usize || joins.len() < 3 {
        let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, events.messages.recv()).await else { break };
        // application/{id}/device/{devEui}/event/{kind}
        let parts: Vec<&str> = topic.split('/').collect();
        let (kind, dev_eui) = (parts[5].to_string(), parts[3].to_string());
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
        match kind.as_str() {
            "join" => {
                joins.insert(dev_eui);
            }
            "up" => {
                assert!(json["object"].is_object(), "the CAYENNE_LPP codec decoded the payload: {json}");
                assert_eq!(json["rxInfo"].as_array().map(Vec::len), Some(2), "both gateways heard it: {json}");
                assert!(ups.insert((dev_eui, json["fCnt"].as_u64().unwrap())), "one event per uplink: {json}");
            }
            _ => {}
        }
    }
    assert_eq!(joins.len(), 3, "a join event per device: {joins:?}");
    assert_eq!(ups.len() as u64, s["sent"], "an up event for every uplink sent");
    let devices: HashSet<&String> = ups.iter().map(|(d, _)| d).collect();
    assert_eq!(devices.len(), 3, "every device sent uplinks");
}
