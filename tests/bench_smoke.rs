//! `loraflow bench` end to end: it starts its own server, sends uplinks through two virtual
//! gateways, matches the MQTT events and reports without loss.

use std::process::Command;

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
