//! `loraflow simulate --lpp` against a real server, SQLite and PostgreSQL: the simulator's
//! Cayenne LPP uplinks become `temperature_sensor_1` and `humidity_sensor_2` series of every
//! device with no set-up beyond the profile's codec (which the simulator sets), readable raw,
//! bucketed and application-wide over REST.
//!
//! The simulator activates its devices by OTAA only; ABP devices on an LPP profile are covered
//! by `loraflow bench --payload lpp` in tests/bench_smoke.rs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Api, Backend, TestServer, TOKEN};
use serde_json::Value;

const DEVICES: usize = 3;
const UPLINKS: u64 = 4;

async fn get_ok(api: &Api, path: &str) -> Value {
    let (status, body) = api.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn values(points: &Value) -> Vec<f64> {
    points.as_array().unwrap_or_else(|| panic!("no points: {points}")).iter().map(|p| p["value"].as_f64().unwrap()).collect()
}

async fn simulated_lpp_uplinks_become_series(backend: Backend) {
    let server = TestServer::start(backend, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "100")]).await;
    let api = server.client();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["simulate", "--server", &server.gateway.to_string(), "--api", &server.url(""), "--token", TOKEN])
        .args(["--gateways", "2", "--devices", &DEVICES.to_string(), "--interval", "0.5", "--uplinks", &UPLINKS.to_string()])
        .args(["--seconds", "60", "--lpp", "--json"])
        .current_dir(server.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run loraflow simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "simulate failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!((report["joined"].as_u64(), report["errors"].as_u64()), (Some(DEVICES as u64), Some(0)), "{report}");
    let devices: Vec<(String, u64)> = report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["devEui"].as_str().unwrap().to_ascii_lowercase(), d["uplinks"].as_u64().unwrap()))
        .collect();
    assert_eq!(devices.len(), DEVICES, "{report}");

    for (dev_eui, uplinks) in &devices {
        assert_eq!(*uplinks, UPLINKS, "{report}");
        // The last uplinks wait out the dedup window and the history writer.
        let mut latest = Value::Null;
        for _ in 0..100 {
            latest = get_ok(&api, &format!("/api/devices/{dev_eui}/measurements")).await;
            if latest["totalCount"] == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let by_name: BTreeMap<&str, &Value> =
            latest["result"].as_array().unwrap().iter().map(|m| (m["name"].as_str().unwrap(), m)).collect();
        assert_eq!(by_name.keys().copied().collect::<Vec<_>>(), ["humidity_sensor_2", "temperature_sensor_1"], "{latest}");
        assert!(by_name.values().all(|m| m["kind"] == "GAUGE"), "auto-detected series are gauges: {latest}");

        for (name, plausible) in [("temperature_sensor_1", 18.0..=28.0), ("humidity_sensor_2", 40.0..=70.0)] {
            let path = format!("/api/devices/{dev_eui}/measurements/{name}");
            let mut raw = Vec::new();
            for _ in 0..100 {
                raw = values(&get_ok(&api, &path).await["result"]);
                if raw.len() as u64 == UPLINKS {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(raw.len() as u64, UPLINKS, "{name} of {dev_eui}: one value per uplink: {raw:?}");
            assert!(raw.iter().all(|v| plausible.contains(v)), "{name} of {dev_eui}: {raw:?}");
            assert_eq!(by_name[name]["value"].as_f64(), raw.last().copied(), "the latest value is the last one stored");

            // The bucketed query over the same values: counts add up and the daily average
            // (every uplink is within one UTC day unless the test straddles midnight) is theirs.
            let counts = get_ok(&api, &format!("{path}?bucket=1h&agg=count")).await;
            assert_eq!(values(&counts["result"]).iter().sum::<f64>(), UPLINKS as f64, "{counts}");
            let daily = get_ok(&api, &format!("{path}?bucket=1d&agg=avg")).await;
            let daily = values(&daily["result"]);
            if daily.len() == 1 {
                let want = raw.iter().sum::<f64>() / raw.len() as f64;
                assert!((daily[0] - want).abs() < 1e-9, "{name} of {dev_eui}: daily avg {daily:?}, values {raw:?}");
            }
        }
    }

    // The application-wide query: one temperature series per simulated device.
    let apps = get_ok(&api, "/api/applications?limit=100").await;
    let app_id =
        apps["result"].as_array().unwrap().iter().find(|a| a["name"] == "loraflow-simulator").expect("the simulator's application")["id"]
            .as_str()
            .unwrap()
            .to_string();
    let all = get_ok(&api, &format!("/api/applications/{app_id}/measurements/temperature_sensor_1?bucket=1h&agg=max")).await;
    let mut euis: Vec<String> = all["result"].as_array().unwrap().iter().map(|d| d["devEui"].as_str().unwrap().to_string()).collect();
    euis.sort();
    let mut want: Vec<String> = devices.iter().map(|(e, _)| e.clone()).collect();
    want.sort();
    assert_eq!(euis, want, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_lpp_uplinks_become_series_on_sqlite() {
    simulated_lpp_uplinks_become_series(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_lpp_uplinks_become_series_on_postgres() {
    simulated_lpp_uplinks_become_series(Backend::Postgres).await;
}
