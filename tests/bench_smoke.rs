//! `loraflow bench` end to end: it starts its own server, sends uplinks through two virtual
//! gateways, matches the MQTT events and reports without loss.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::collections::BTreeMap;
use std::process::Command;

use common::{Backend, TestServer, TOKEN};
use loraflow::bench::DEVICE_EUI_PREFIX;

#[test]
fn a_short_bench_run_reports_every_event_with_latencies() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["bench", "--devices", "20", "--gateways", "2", "--rate", "50", "--seconds", "2", "--json"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run loraflow bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));

    assert_eq!(r["region"], "eu868", "{r}");
    assert_eq!(r["sent"], 100, "50/s for 2 s: {r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["received"], r["sent"], "{r}");
    assert_eq!((r["devices"].as_u64(), r["gateways"].as_u64(), r["activation"].as_str()), (Some(20), Some(2), Some("abp")));
    let lat = |k: &str| r["latencyMs"][k].as_f64().unwrap_or_else(|| panic!("latencyMs.{k} missing: {r}"));
    assert!(lat("p50") <= lat("p99") && lat("p99") <= lat("max"), "{r}");
    assert!(r["achievedEventsPerSec"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["serverCpuSecondsPer1000Uplinks"].as_f64().is_some(), "{r}");
    assert!(r["serverPeakRssMib"].as_f64().unwrap() > 1.0, "{r}");
    assert_eq!(r["steps"].as_array().map(Vec::len), Some(1), "{r}");
    // One warm-up uplink per device, measured apart from the step.
    assert_eq!((r["warmup"]["sent"].as_u64(), r["warmup"]["lost"].as_u64()), (Some(20), Some(0)), "{r}");
}

/// `--region us915_1`: the child server is configured for US915 sub-band 2, the devices join
/// over it (their join-accepts must come on the RX1 500 kHz channel or RX2 they listen to)
/// and send on its channels.
#[test]
fn a_bench_run_in_us915_sub_band_2_joins_every_device_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["bench", "--region", "us915_1", "--otaa", "--devices", "4", "--rate", "20", "--seconds", "1", "--json"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run loraflow bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!((r["region"].as_str(), r["activation"].as_str()), (Some("us915_1"), Some("otaa")), "{r}");
    assert_eq!(r["inactiveDevices"], 0, "every device joined: {r}");
    assert_eq!((r["sent"].as_u64(), r["lost"].as_u64()), (Some(20), Some(0)), "{r}");
}

/// `--payload lpp` against a running server: the devices get a CAYENNE_LPP profile, every
/// event carries both decoded values, and the server stores them as two series per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lpp_bench_run_checks_decoded_objects_and_leaves_two_series_per_device() {
    let server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "200")]).await;
    let mqtt = format!("mqtt://{}", server.mqtt.expect("embedded MQTT broker"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["bench", "--payload", "lpp", "--devices", "4", "--rate", "20", "--seconds", "1", "--json"])
        .args(["--target-api", &server.url(""), "--target-udp", &server.gateway.to_string(), "--token", TOKEN, "--mqtt", &mqtt])
        .current_dir(server.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run loraflow bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!((r["payload"].as_str(), r["server"].as_str()), (Some("lpp"), Some("target")), "{r}");
    assert_eq!((r["sent"].as_u64(), r["received"].as_u64(), r["lost"].as_u64()), (Some(20), Some(20), Some(0)), "{r}");
    assert_eq!(r["missingObject"], 0, "every event carried both decoded values: {r}");
    assert_eq!((r["warmup"]["sent"].as_u64(), r["warmup"]["missingObject"].as_u64()), (Some(4), Some(0)), "{r}");

    // One sender per device: each sent 1 warm-up + 5 measured uplinks, two values each.
    let api = server.client();
    for i in 0..4u64 {
        let dev_eui = format!("{:016x}", DEVICE_EUI_PREFIX + i);
        let (status, body) = api.get(&format!("/api/devices/{dev_eui}/measurements")).await;
        assert_eq!(status, 200, "{body}");
        let series: BTreeMap<&str, f64> =
            body["result"].as_array().unwrap().iter().map(|m| (m["name"].as_str().unwrap(), m["value"].as_f64().unwrap())).collect();
        assert_eq!(series.keys().copied().collect::<Vec<_>>(), ["humidity_sensor_2", "temperature_sensor_1"], "{body}");
        assert!((18.0..=28.0).contains(&series["temperature_sensor_1"]), "a room temperature: {body}");
        assert!((40.0..=70.0).contains(&series["humidity_sensor_2"]), "a relative humidity: {body}");
        let (_, counts) = api.get(&format!("/api/devices/{dev_eui}/measurements/temperature_sensor_1?bucket=1d&agg=count")).await;
        let count: f64 = counts["result"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).sum();
        assert_eq!(count, 6.0, "{counts}");
    }
}

/// `--instances 3`: three child instances on one PostgreSQL database, the local Redis and a
/// Mosquitto of the test's own, one gateway on each; every uplink reaches all three and is
/// published once, and the CPU time is read from each instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_run_over_three_instances_publishes_each_uplink_once() {
    let broker = mqtt_support::Mosquitto::start_new();
    let dir = tempfile::tempdir().unwrap();
    let pg = loraflow_network_server::storage::testing::test_postgres_server_url();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["bench", "--instances", "3", "--devices", "12", "--rate", "24", "--seconds", "2", "--json"])
        .args(["--database", &pg, "--mqtt", &broker.url(), "--redis", common::cluster::REDIS_URL])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run loraflow bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!((r["instances"].as_u64(), r["gateways"].as_u64(), r["server"].as_str()), (Some(3), Some(3), Some("child")), "{r}");
    assert!(r["clusterPrefix"].as_str().is_some_and(|p| p.starts_with("lfbench-")), "{r}");
    assert_eq!((r["sent"].as_u64(), r["received"].as_u64()), (Some(48), Some(48)), "{r}");
    assert_eq!((r["lost"].as_u64(), r["duplicates"].as_u64()), (Some(0), Some(0)), "{r}");
    assert_eq!((r["warmup"]["received"].as_u64(), r["warmup"]["duplicates"].as_u64()), (Some(12), Some(0)), "{r}");
    let per_instance = r["instanceCpuSecondsPer1000Uplinks"].as_array().unwrap_or_else(|| panic!("no per-instance CPU: {r}"));
    assert_eq!(per_instance.len(), 3, "{r}");
    let sum: f64 = per_instance.iter().map(|c| c.as_f64().unwrap()).sum();
    let total = r["serverCpuSecondsPer1000Uplinks"].as_f64().unwrap();
    assert!((sum - total).abs() < 1e-6 && total > 0.0, "the total is the instances' sum: {r}");
}
