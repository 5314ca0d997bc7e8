//! Measurements end to end: Cayenne LPP uplinks become named series with no set-up, a
//! profile definition renames a path and changes its kind, and the latest value of every
//! series is read over REST, on both backends.

mod common;

use std::time::Duration;

use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PUSH_ACK};
use common::provision::{self, Provisioned};
use common::{Api, Backend, TestServer};
use serde_json::{json, Value};

const GATEWAY: &str = "00000000000000c1";
const DEV_EUI: &str = "70b3d57ed0000a01";
const DEV_ADDR: &str = "26011a01";
const NWK_S_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const APP_S_KEY: &str = "000102030405060708090a0b0c0d0e0f";

/// Cayenne LPP: temperature (`tenths` / 10 °C) on channel 3, humidity 48.5 % on channel 5.
fn lpp(tenths: i16) -> Vec<u8> {
    let t = tenths.to_be_bytes();
    vec![0x03, 0x67, t[0], t[1], 0x05, 0x68, 0x61]
}

struct World {
    _server: TestServer,
    api: Api,
    gw: FakeGateway,
    p: Provisioned,
    dev: Device,
    tmst: u32,
}

async fn world(backend: Backend) -> World {
    let server = TestServer::start(backend, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")]).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "CAYENNE_LPP", "").await;
    provision::gateway(&api, GATEWAY).await;
    provision::abp_device(&api, &p, DEV_EUI, DEV_ADDR, NWK_S_KEY, APP_S_KEY).await;
    let gw = FakeGateway::new(GATEWAY, server.gateway).await;
    World { _server: server, api, gw, p, dev: Device::abp(DEV_EUI, DEV_ADDR, NWK_S_KEY, APP_S_KEY), tmst: 1_000_000 }
}

async fn send(w: &mut World, payload: &[u8]) {
    let phy = w.dev.uplink(false, 2, payload);
    w.tmst += 5_000_000;
    let t = w.gw.push_rxpk(vec![rxpk(&phy, w.tmst, -60, 7.5)]).await;
    w.gw.expect_ack(PUSH_ACK, t).await;
}

/// The device's series by name, once `done` holds for them.
async fn series_when(api: &Api, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/devices/{DEV_EUI}/measurements");
    let mut last = Value::Null;
    for _ in 0..100 {
        let (s, body) = api.get(&path).await;
        assert_eq!(s, 200, "{body}");
        let by_name: serde_json::Map<String, Value> =
            body["result"].as_array().unwrap().iter().map(|m| (m["name"].as_str().unwrap().to_string(), m.clone())).collect();
        assert_eq!(body["totalCount"], by_name.len(), "{body}");
        let by_name = Value::Object(by_name);
        if done(&by_name) {
            return by_name;
        }
        last = by_name;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("series never reached the expected state; last: {last}");
}

async fn measurements(backend: Backend) {
    let mut w = world(backend).await;

    // No set-up: the LPP channels become GAUGE series named after their paths.
    send(&mut w, &lpp(272)).await;
    let s = series_when(&w.api, |s| s.as_object().unwrap().len() == 2).await;
    assert_eq!(s["temperature_sensor_3"]["value"], 27.2, "{s}");
    assert_eq!(s["temperature_sensor_3"]["kind"], "GAUGE", "{s}");
    assert_eq!(s["humidity_sensor_5"]["value"], 48.5, "{s}");
    assert_eq!(s["humidity_sensor_5"]["kind"], "GAUGE", "{s}");
    let first_humidity_time = s["humidity_sensor_5"]["time"].clone();
    let mut temperatures = vec![(s["temperature_sensor_3"]["time"].clone(), 27.2)];

    // The next uplink's value is the latest.
    send(&mut w, &lpp(-15)).await;
    let s = series_when(&w.api, |s| s["temperature_sensor_3"]["value"] == -1.5).await;
    assert_ne!(s["humidity_sensor_5"]["time"], first_humidity_time, "humidity stored again: {s}");
    temperatures.push((s["temperature_sensor_3"]["time"].clone(), -1.5));
    if backend == Backend::Postgres {
        docs_hourly_average_query(&w._server.database_url, &temperatures).await;
    }
    series_queries(&mut w).await;
    application_series(&mut w).await;

    // A definition renames the temperature path and makes it ABSOLUTE; with auto-detection
    // off the humidity is no longer stored.
    let profile_path = format!("/api/device-profiles/{}", w.p.device_profile_id);
    let (_, mut profile) = w.api.get(&profile_path).await;
    assert_eq!((profile["measurements"].clone(), profile["autoDetectMeasurements"].clone()), (json!({}), json!(true)), "{profile}");
    profile["measurements"] = json!({"temperatureSensor.3": {"name": "room_temperature", "kind": "ABSOLUTE"}});
    profile["autoDetectMeasurements"] = json!(false);
    let (st, updated) = w.api.put(&profile_path, profile.clone()).await;
    assert_eq!(st, 200, "{updated}");
    let (_, got) = w.api.get(&profile_path).await;
    assert_eq!(got["measurements"], json!({"temperatureSensor.3": {"name": "room_temperature", "kind": "ABSOLUTE"}}), "{got}");
    assert_eq!(got["autoDetectMeasurements"], false);
    let humidity_before = series_when(&w.api, |_| true).await["humidity_sensor_5"].clone();

    send(&mut w, &lpp(195)).await;
    let s = series_when(&w.api, |s| s.get("room_temperature").is_some()).await;
    assert_eq!(s["room_temperature"]["value"], 19.5, "{s}");
    assert_eq!(s["room_temperature"]["kind"], "ABSOLUTE", "{s}");
    assert_eq!(s["temperature_sensor_3"]["value"], 30.1, "the old series keeps its values: {s}");
    assert_eq!(s["humidity_sensor_5"], humidity_before, "no auto-detected value was stored: {s}");

    // Bad definitions: 400 naming the path and member; the profile is unchanged.
    for (defs, field) in [
        (json!({"temperatureSensor.3": {"name": "t", "kind": "RATE"}}), "measurements.temperatureSensor.3.kind"),
        (json!({"temperatureSensor.3": {"name": "a/b", "kind": "GAUGE"}}), "measurements.temperatureSensor.3.name"),
        (json!({"temperatureSensor.3": {"kind": "GAUGE"}}), "measurements.temperatureSensor.3.name"),
        (json!(["x"]), "measurements"),
    ] {
        let mut body = profile.clone();
        body["measurements"] = defs;
        let (st, e) = w.api.put(&profile_path, body).await;
        assert!(st == 400 && e["error"].as_str().unwrap_or_default().starts_with(&format!("{field}:")), "{field}: {st} {e}");
    }
    assert_eq!(w.api.get(&profile_path).await.1["measurements"], got["measurements"]);

    // Unknown and malformed devices.
    let (st, _) = w.api.get("/api/devices/0102030405060708/measurements").await;
    assert_eq!(st, 404);
    let (st, e) = w.api.get("/api/devices/xyz/measurements").await;
    assert!(st == 400 && e["error"].as_str().unwrap_or_default().starts_with("devEui"), "{st} {e}");
}

/// Raw points and buckets of one series, checked against values the test computes itself
/// from what it sent; bad parameters get a 400 naming them.
async fn series_queries(w: &mut World) {
    for tenths in [100, 125, 301] {
        send(w, &lpp(tenths)).await;
    }
    let path = format!("/api/devices/{DEV_EUI}/measurements/temperature_sensor_3");
    let mut raw = Value::Null;
    for _ in 0..100 {
        let (s, body) = w.api.get(&path).await;
        assert_eq!(s, 200, "{body}");
        if body["result"].as_array().unwrap().len() == 5 {
            raw = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let points: Vec<(chrono::DateTime<chrono::Utc>, f64)> = raw["result"]
        .as_array()
        .unwrap_or_else(|| panic!("five points never stored: {raw}"))
        .iter()
        .map(|p| (p["time"].as_str().unwrap().parse().unwrap(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(points.iter().map(|p| p.1).collect::<Vec<_>>(), [27.2, -1.5, 10.0, 12.5, 30.1], "oldest first: {raw}");

    // Paging of raw points.
    let (_, page) = w.api.get(&format!("{path}?limit=2&offset=3")).await;
    let page: Vec<f64> = page["result"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(page, [12.5, 30.1]);

    // Buckets, computed here as floor(unix seconds / bucket) in UTC.
    for (bucket, secs) in [("1m", 60i64), ("1d", 86_400)] {
        for agg in ["avg", "min", "max", "sum", "count", "last"] {
            let (s, body) = w.api.get(&format!("{path}?bucket={bucket}&agg={agg}")).await;
            assert_eq!(s, 200, "{body}");
            let want = common::expected_buckets(&points, secs, agg);
            let got: Vec<(i64, f64)> = body["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["time"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap().timestamp(),
                        p["value"].as_f64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(got.len(), want.len(), "{bucket} {agg}: {body}");
            for (g, wv) in got.iter().zip(&want) {
                assert!(g.0 == wv.0 && (g.1 - wv.1).abs() < 1e-9, "{bucket} {agg}: got {got:?}, want {want:?}");
            }
        }
    }

    // Bad parameters name themselves.
    for (params, field) in [
        ("bucket=30s", "bucket"),
        ("bucket=2d", "bucket"),
        ("bucket=1h&agg=median", "agg"),
        ("agg=avg", "agg"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-11-30T10:00:00Z&to=2026-11-30T09:00:00Z", "from"),
        ("limit=10001", "limit"),
        ("bucket=1m&from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z", "bucket"),
    ] {
        let (st, e) = w.api.get(&format!("{path}?{params}")).await;
        assert!(st == 400 && e["error"].as_str().unwrap_or_default().starts_with(&format!("{field}:")), "{params}: {st} {e}");
    }
    let (st, e) = w.api.get(&format!("/api/devices/{DEV_EUI}/measurements/a%20b")).await;
    assert!(st == 400 && e["error"].as_str().unwrap_or_default().starts_with("name:"), "{st} {e}");
}

/// The application-wide query returns one series per device, with its EUI and name.
async fn application_series(w: &mut World) {
    const OTHER: (&str, &str) = ("70b3d57ed0000a02", "26011a02");
    provision::abp_device(&w.api, &w.p, OTHER.0, OTHER.1, NWK_S_KEY, APP_S_KEY).await;
    let mut other = Device::abp(OTHER.0, OTHER.1, NWK_S_KEY, APP_S_KEY);
    let phy = other.uplink(false, 2, &lpp(50));
    w.tmst += 5_000_000;
    let t = w.gw.push_rxpk(vec![rxpk(&phy, w.tmst, -60, 7.5)]).await;
    w.gw.expect_ack(PUSH_ACK, t).await;

    let path = format!("/api/applications/{}/measurements/temperature_sensor_3", w.p.application_id);
    let mut body = Value::Null;
    for _ in 0..100 {
        body = w.api.get(&format!("{path}?bucket=1d&agg=count")).await.1;
        if body["result"].as_array().is_some_and(|r| r.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = body["result"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(result.len(), 2, "{body}");
    let by_eui: std::collections::BTreeMap<&str, &Value> = result.iter().map(|d| (d["devEui"].as_str().unwrap(), d)).collect();
    let count = |d: &Value| d["points"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).sum::<f64>();
    assert_eq!(count(by_eui[DEV_EUI]), 5.0, "{body}");
    assert_eq!(count(by_eui[OTHER.0]), 1.0, "{body}");
    assert_eq!(by_eui[DEV_EUI]["deviceName"], format!("dev-{DEV_EUI}"));
    assert_eq!(by_eui[OTHER.0]["deviceName"], format!("dev-{}", OTHER.0));
    let (_, raw) = w.api.get(&path).await;
    let values: Vec<f64> = raw["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["devEui"] == OTHER.0)
        .map(|d| d["points"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect())
        .unwrap();
    assert_eq!(values, [5.0], "{raw}");

    let (st, _) = w.api.get("/api/applications/00000000-0000-0000-0000-000000000000/measurements/temperature_sensor_3").await;
    assert_eq!(st, 404);
    let (st, e) = w.api.get("/api/applications/nope/measurements/temperature_sensor_3").await;
    assert!(st == 400 && e["error"].as_str().unwrap_or_default().starts_with("applicationId:"), "{st} {e}");
    let (st, e) = w.api.get(&format!("{path}?bucket=7m&agg=avg&from=2026-01-01T00:00:00Z&to=2026-12-31T00:00:00Z")).await;
    assert!(st == 400 && e["error"].as_str().unwrap_or_default().starts_with("bucket:"), "{st} {e}");
}

/// The "average temperature per hour" SQL of docs/data.md, as written there, returns the
/// hourly averages of the values the test sent (with their stored times).
async fn docs_hourly_average_query(database_url: &str, temperatures: &[(Value, f64)]) {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/data.md")).unwrap();
    let sql = docs.split("```sql\n").nth(1).and_then(|rest| rest.split("```").next()).expect("an SQL block in docs/data.md");
    let sql = sql.trim().trim_end_matches(';').replace("70b3d57ed0000a01", DEV_EUI);
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    let rows: Vec<(chrono::DateTime<chrono::Utc>, f64)> = sqlx::query_as(&sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    let mut want: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for (time, v) in temperatures {
        let t: chrono::DateTime<chrono::Utc> = time.as_str().unwrap().parse().unwrap();
        want.entry(t.format("%Y-%m-%dT%H").to_string()).or_default().push(*v);
    }
    let got: Vec<(String, f64)> = rows.into_iter().map(|(h, avg)| (h.format("%Y-%m-%dT%H").to_string(), avg)).collect();
    let want: Vec<(String, f64)> = want.into_iter().map(|(h, vs)| (h, vs.iter().sum::<f64>() / vs.len() as f64)).collect();
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for ((gh, g), (wh, w)) in got.iter().zip(&want) {
        assert!(gh == wh && (g - w).abs() < 1e-9, "{got:?} vs {want:?}");
    }
}

#[tokio::test]
async fn lpp_uplinks_become_series_and_definitions_rename_them_on_sqlite() {
    measurements(Backend::Sqlite).await;
}

#[tokio::test]
async fn lpp_uplinks_become_series_and_definitions_rename_them_on_postgres() {
    measurements(Backend::Postgres).await;
}
