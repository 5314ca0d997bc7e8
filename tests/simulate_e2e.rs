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

/// `loraflow simulate` with `args` against `server`; its output.
async fn simulate(server: &TestServer, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["simulate", "--server", &server.gateway.to_string(), "--api", &server.url(""), "--token", TOKEN])
        .args(args)
        .current_dir(server.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run loraflow simulate")
}

/// What a console user does: register a device through the REST forms, then let the
/// simulator play it. Its application and profile are not touched, and it joins again on a
/// second run (its DevNonces are cleared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_device_is_simulated_as_registered() {
    use serde_json::json;
    const DEV_EUI: &str = "0102030405060708";
    const APP_KEY: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let api = server.client();
    let (s, app) = api.post("/api/applications", json!({"name": "my sensors"})).await;
    assert_eq!(s, 201, "{app}");
    let profile = json!({"name": "my profile", "region": "EU868", "macVersion": "1.0.3", "adrEnabled": false,
                         "payloadCodec": "CAYENNE_LPP", "devStatusReqFreq": 0});
    let (s, dp) = api.post("/api/device-profiles", profile).await;
    assert_eq!(s, 201, "{dp}");
    let (s, d) = api
        .post(
            "/api/devices",
            json!({"devEui": DEV_EUI, "name": "kitchen", "applicationId": app["id"], "deviceProfileId": dp["id"],
                   "joinEui": "70B3D57ED0000000"}),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    let (s, b) = api.put(&format!("/api/devices/{DEV_EUI}/keys"), json!({"appKey": APP_KEY})).await;
    assert_eq!(s, 200, "{b}");
    let mut events = Subscriber::connect(server.mqtt.expect("embedded MQTT broker"), "application/+/device/+/event/+", false).await;

    let existing = format!("{DEV_EUI}:{APP_KEY}");
    for run in 0..2 {
        let out = simulate(&server, &["--existing-device", &existing, "--interval", "0.5", "--uplinks", "2", "--lpp"]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: simulate failed: {stdout}\n{stderr}");
        assert!(!stdout.contains(&APP_KEY.to_lowercase()) && !stderr.contains(&APP_KEY.to_lowercase()), "the key is never printed");
        let s = summary(&stdout);
        assert_eq!((s["joined"], s["errors"]), (1, 0), "run {run}: {stdout}");
        assert_eq!(s["sent"], 2, "run {run}: {stdout}");

        let (mut joined, mut ups) = (false, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !(joined && ups == 2) {
            let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, events.messages.recv()).await else { break };
            let parts: Vec<&str> = topic.split('/').collect();
            assert_eq!((parts[1], parts[3]), (app["id"].as_str().unwrap(), DEV_EUI), "only the registered device: {topic}");
            let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            match parts[5] {
                "join" => joined = true,
                "up" => {
                    assert!(json["object"]["temperatureSensor"].is_object(), "--lpp payload, decoded by the profile's codec: {json}");
                    ups += 1;
                }
                _ => {}
            }
        }
        assert!(joined && ups == 2, "run {run}: join {joined}, {ups} up events");
    }

    // Nothing of the simulator's own was created or changed.
    let (_, apps) = api.get("/api/applications").await;
    assert_eq!(apps["totalCount"], 1, "{apps}");
    let (_, profiles) = api.get("/api/device-profiles").await;
    assert_eq!(profiles["totalCount"], 1, "{profiles}");
    let (_, p) = api.get(&format!("/api/device-profiles/{}", dp["id"].as_str().unwrap())).await;
    assert_eq!((p["name"].as_str(), p["updatedAt"].as_str()), (Some("my profile"), dp["updatedAt"].as_str()), "{p}");
    let (_, devices) = api.get("/api/devices").await;
    assert_eq!(devices["totalCount"], 1, "{devices}");
    let (_, d) = api.get(&format!("/api/devices/{DEV_EUI}")).await;
    assert_eq!(d["state"]["joined"], true, "{d}");

    // A device the server does not have, and more than one device: refused up front.
    let out = simulate(&server, &["--existing-device", &format!("0102030405060709:{APP_KEY}"), "--seconds", "1"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no device 0102030405060709"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = simulate(&server, &["--existing-device", &existing, "--devices", "2", "--seconds", "1"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--devices must be 1"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = simulate(&server, &["--existing-device", &format!("{DEV_EUI}:00"), "--seconds", "1"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AppKey"), "{}", String::from_utf8_lossy(&out.stderr));
}
