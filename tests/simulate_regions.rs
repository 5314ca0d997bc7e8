//! `loraflow simulate --region us915_1` against a real server configured for US915 sub-band 2:
//! the simulated devices join (their join-accept must come on the RX1 500 kHz channel or RX2
//! they listen to, or the simulator refuses it), send on channels 8-15 at DR3, and hear a
//! queued downlink in one of their windows.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::collections::HashSet;
use std::time::Duration;

use common::{Backend, TestServer, TOKEN};
use mqtt_support::Subscriber;
use serde_json::{json, Value};

/// The simulator's first gateway ("LFSIMG" + 0).
const FIRST_GATEWAY: &str = "4c4653494d470000";
/// The simulator's first device ("LFSIMD" + 0).
const FIRST_DEVICE: &str = "4c4653494d440000";

/// US915 sub-band 2 (channels 8-15): 902.3 MHz + 200 kHz × channel (RP002-1.0.4 §2.5.2).
fn sub_band_2_frequencies() -> Vec<u64> {
    (8..16).map(|c| 902_300_000 + 200_000 * c).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn us915_sub_band_2_devices_join_send_on_their_channels_and_hear_their_downlinks() {
    let env = [
        ("LORAFLOW_NETWORK__REGION", "US915"),
        ("LORAFLOW_NETWORK__ENABLED_UPLINK_CHANNELS", "8,9,10,11,12,13,14,15,65"),
        ("LORAFLOW_NETWORK__EXTRA_CHANNELS", ""),
    ];
    let server = TestServer::start(Backend::Sqlite, &env).await;
    let mut events = Subscriber::connect(server.mqtt.expect("embedded MQTT broker"), "application/+/device/+/event/+", false).await;

    let sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["simulate", "--server", &server.gateway.to_string(), "--api", &server.url(""), "--token", TOKEN])
        .args(["--region", "us915_1", "--gateways", "2", "--devices", "2", "--interval", "1", "--seconds", "14", "--json"])
        .current_dir(server.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output();
    let sim = tokio::spawn(sim);

    // Once the first device has joined, queue a downlink for it: the server sends it after the
    // device's next uplink, in RX1 or RX2.
    let api = server.client();
    let mut queued = false;
    let mut ups: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while !sim.is_finished() {
        let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, events.messages.recv()).await else { break };
        let json: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
        if topic.ends_with("/event/join") && topic.contains(FIRST_DEVICE) && !queued {
            let (status, body) = api.post(&format!("/api/devices/{FIRST_DEVICE}/queue"), json!({"fPort": 7, "data": "AQID"})).await;
            assert!((200..300).contains(&status), "queue: {status} {body}");
            queued = true;
        }
        if topic.ends_with("/event/up") {
            ups.push(json);
        }
    }
    let out = sim.await.unwrap().expect("run loraflow simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "simulate failed: {stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    assert!(queued, "the first device joined: {stderr}");
    assert_eq!(report["region"], "us915_1");
    assert_eq!(report["joined"], 2, "{report}\n{stderr}");
    assert_eq!(report["errors"], 0, "no refused downlink, no bad frame: {report}\n{stderr}");
    for d in report["devices"].as_array().unwrap() {
        assert_eq!(d["refusedDownlinks"], 0, "every downlink came in an open window: {d}");
        assert_eq!(d["dr"], 3, "SF7BW125, the fastest 125 kHz data rate: {d}");
    }
    let first = report["devices"].as_array().unwrap().iter().find(|d| d["devEui"] == FIRST_DEVICE).unwrap();
    assert!(first["downlinks"].as_u64().unwrap() >= 1, "the queued downlink arrived: {first}\n{stderr}");

    assert!(ups.len() >= 4, "uplinks of both devices came out as events: {}", ups.len());
    let channels = sub_band_2_frequencies();
    for up in &ups {
        let f = up["txInfo"]["frequency"].as_u64().unwrap();
        assert!(channels.contains(&f), "uplink on {f} Hz, not a sub-band 2 channel: {up}");
        assert_eq!(up["txInfo"]["modulation"]["lora"]["spreadingFactor"], 7, "{up}");
        assert_eq!(up["txInfo"]["modulation"]["lora"]["bandwidth"], 125_000, "{up}");
        assert_eq!(up["dr"], 3, "{up}");
        assert_eq!(up["rxInfo"][0]["metadata"]["region_common_name"], "US915", "{up}");
        assert_eq!(up["regionConfigId"], "us915_1", "{up}");
    }
    let used: HashSet<u64> = ups.iter().map(|u| u["txInfo"]["frequency"].as_u64().unwrap()).collect();
    assert!(used.len() >= 2, "devices hop between the sub-band's channels: {used:?}");
}

const EU868_AND_US915: &str = r#"
[[regions]]
id = "eu868"
commonName = "EU868"

[[regions]]
id = "us915_1"
commonName = "US915"
enabled_uplink_channels = [8, 9, 10, 11, 12, 13, 14, 15, 65]
"#;

/// Runs `simulate` for `region` against `server`; returns the JSON report.
async fn simulate(server: &TestServer, region: &str) -> Value {
    simulate_with(server, region, &[]).await
}

async fn simulate_with(server: &TestServer, region: &str, extra: &[&str]) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["simulate", "--server", &server.gateway.to_string(), "--api", &server.url(""), "--token", TOKEN])
        .args(["--region", region, "--devices", "2", "--interval", "1", "--seconds", "4", "--json"])
        .args(extra)
        .current_dir(server.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run loraflow simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "simulate --region {region} failed: {stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// In a server with an EU868 and a US915 config, `--region` puts the simulated gateways in the
/// matching config (`--region US915` finds `us915_1` by its channels), and the devices join and
/// send in that region; a region the server has no config for is refused up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_gateways_join_the_region_config_of_their_plan() {
    let server = TestServer::start_with_config(Backend::Sqlite, &[], EU868_AND_US915).await;
    let mut events = Subscriber::connect(server.mqtt.expect("embedded MQTT broker"), "application/+/device/+/event/up", false).await;
    let api = server.client();
    for (region, config_id) in [("eu868", "eu868"), ("US915", "us915_1")] {
        let report = simulate(&server, region).await;
        assert_eq!((report["joined"].as_u64(), report["errors"].as_u64()), (Some(2), Some(0)), "{region}: {report}");
        let (status, gw) = api.get(&format!("/api/gateways/{FIRST_GATEWAY}")).await;
        assert_eq!((status, gw["regionConfigId"].as_str()), (200, Some(config_id)), "{region}: {gw}");
        // The last uplinks of this run, as the server saw them.
        let mut seen = HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Some((_, payload))) = tokio::time::timeout_at(deadline, events.messages.recv()).await {
            let up: Value = serde_json::from_slice(&payload).unwrap();
            seen.insert(up["regionConfigId"].as_str().unwrap_or_default().to_string());
        }
        assert!(seen.contains(config_id), "{region}: up events in {seen:?}");
    }
    let (_, profiles) = api.get("/api/device-profiles?limit=100").await;
    let profile = profiles["result"].as_array().unwrap().iter().find(|p| p["name"] == "loraflow-simulator").cloned().unwrap();
    assert_eq!(profile["region"], "US915", "the profile follows the last run's region: {profile}");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["simulate", "--server", &server.gateway.to_string(), "--api", &server.url(""), "--token", TOKEN])
        .args(["--region", "us915_0", "--seconds", "1"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--region us915_0: the server has no US915 region config"), "{stderr}");
}

/// AS923-1 (dwell time on for uplinks by default): devices join on the two default channels,
/// take the CFList channels and send on all of them at DR5; their downlinks come in their
/// windows, and TxParamSetupReq, if the server sends one, is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as923_devices_join_and_send_on_the_default_and_cf_list_channels() {
    let server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_NETWORK__REGION", "AS923")]).await;
    let mut events = Subscriber::connect(server.mqtt.expect("embedded MQTT broker"), "application/+/device/+/event/up", false).await;
    let report = simulate(&server, "as923").await;
    assert_eq!((report["joined"].as_u64(), report["errors"].as_u64()), (Some(2), Some(0)), "{report}");
    for d in report["devices"].as_array().unwrap() {
        assert_eq!((d["dr"].as_u64(), d["refusedDownlinks"].as_u64()), (Some(5), Some(0)), "{d}");
    }
    let (_, regions) = server.client().get("/api/regions").await;
    let channels: HashSet<u64> =
        regions["result"][0]["uplinkChannels"].as_array().unwrap().iter().map(|c| c["frequency"].as_u64().unwrap()).collect();
    assert!(channels.contains(&923_200_000) && channels.contains(&923_400_000), "{regions}");
    let mut used = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some((_, payload))) = tokio::time::timeout_at(deadline, events.messages.recv()).await {
        let up: Value = serde_json::from_slice(&payload).unwrap();
        let f = up["txInfo"]["frequency"].as_u64().unwrap();
        assert!(channels.contains(&f), "{f} Hz is not a channel of the server's AS923 plan: {up}");
        assert_eq!((up["regionConfigId"].as_str(), up["dr"].as_u64()), (Some("as923"), Some(5)), "{up}");
        used.insert(f);
    }
    assert!(used.len() >= 2, "devices hop over the channels: {used:?}");
}

/// US915 DR4 (SF8BW500) runs only on the sub-band's 500 kHz channel 65, 904.6 MHz; its
/// join-accept comes on RX1 923.9 MHz (923.3 + 0.6 × (65 mod 8)) at DR13 (SF7BW500), which the
/// simulator checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn us915_dr4_devices_use_the_500khz_channel() {
    let env = [("LORAFLOW_NETWORK__REGION", "US915"), ("LORAFLOW_NETWORK__EXTRA_CHANNELS", "")];
    let server = TestServer::start(Backend::Sqlite, &env).await;
    let mut events = Subscriber::connect(server.mqtt.expect("embedded MQTT broker"), "application/+/device/+/event/up", false).await;
    let report = simulate_with(&server, "us915_1", &["--dr", "4", "--max-dr", "4"]).await;
    assert_eq!((report["joined"].as_u64(), report["errors"].as_u64()), (Some(2), Some(0)), "{report}");
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some((_, payload))) = tokio::time::timeout_at(deadline, events.messages.recv()).await {
        let up: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(up["txInfo"]["frequency"], 904_600_000, "{up}");
        assert_eq!(up["txInfo"]["modulation"]["lora"]["bandwidth"], 500_000, "{up}");
        assert_eq!(up["txInfo"]["modulation"]["lora"]["spreadingFactor"], 8, "{up}");
        assert_eq!(up["dr"], 4, "{up}");
        n += 1;
    }
    assert!(n >= 2, "uplinks of both devices: {n}");
}
