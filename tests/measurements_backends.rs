//! Bucketed series give the same answer on every backend and from either source: values with
//! known times (two days of two devices, and a counter that restarts) are stored through the
//! storage layer the history writer uses, and the real binary's REST answers are compared with
//! what this test computes, between the hourly rollup (whole-hour ranges) and the raw values
//! (any other range), and between SQLite and PostgreSQL.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::Value;
use uuid::Uuid;

use common::provision;
use common::{Backend, TestServer};
use loraflow_network_server::storage::{DatabaseConfig, Measurement, MeasurementKind, MeasurementValue, Storage, UplinkRecord};
use loraflow_network_server::types::{DevAddr, Eui64};

const DEVICES: [&str; 2] = ["70b3d57ed0000b01", "70b3d57ed0000b02"];
const AGGS: [&str; 6] = ["avg", "min", "max", "sum", "count", "last"];

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap()
}

/// Device `d`'s temperature readings: every 17 minutes from 00:05 for 40 hours, varying.
fn temperatures(d: usize) -> Vec<(DateTime<Utc>, f64)> {
    (0..140).map(|i| (start() + Duration::minutes(5 + 17 * i), ((i * 37 + d as i64 * 11) % 29) as f64 / 4.0 - 3.0)).collect()
}

/// Device 0's energy counter: every 20 minutes, +3 each time, restarting from 0 at reading 50.
fn energy() -> Vec<(DateTime<Utc>, f64)> {
    (0..100)
        .map(|i| (start() + Duration::minutes(7 + 20 * i), if i < 50 { 1000.0 + 3.0 * i as f64 } else { 3.0 * (i - 50) as f64 }))
        .collect()
}

fn record(dev_eui: Eui64, application_id: Uuid, f_cnt: u32, time: DateTime<Utc>, measurements: Vec<Measurement>) -> UplinkRecord {
    UplinkRecord {
        deduplication_id: Uuid::new_v4(),
        time,
        dev_eui,
        application_id,
        dev_addr: DevAddr([0x26, 0x01, 0x0b, f_cnt as u8]),
        f_cnt,
        f_port: Some(2),
        confirmed: false,
        dr: 5,
        frequency: 868_100_000,
        rssi: -60,
        snr: 7.5,
        gateway_count: 1,
        data: Vec::new(),
        object: None,
        rx_info: serde_json::json!([]),
        tx_info: serde_json::json!({}),
        adr_decision: None,
        measurements,
    }
}

fn number(name: &str, kind: MeasurementKind, v: f64) -> Measurement {
    Measurement { name: name.into(), kind, value: MeasurementValue::Number(v) }
}

/// Stores every reading, a few uplinks per batch as the history writer would.
async fn store_readings(database_url: &str, application_id: Uuid) {
    let storage = Storage::connect(&DatabaseConfig { url: database_url.into(), ..Default::default() }).await.unwrap();
    let mut records = Vec::new();
    for (d, eui) in DEVICES.iter().enumerate() {
        let eui: Eui64 = eui.parse().unwrap();
        for (i, (t, v)) in temperatures(d).into_iter().enumerate() {
            records.push(record(eui, application_id, i as u32, t, vec![number("temperature", MeasurementKind::Gauge, v)]));
        }
    }
    let eui: Eui64 = DEVICES[0].parse().unwrap();
    for (i, (t, v)) in energy().into_iter().enumerate() {
        records.push(record(eui, application_id, 1000 + i as u32, t, vec![number("energy", MeasurementKind::Counter, v)]));
    }
    records.sort_by_key(|r| r.time);
    for batch in records.chunks(7) {
        storage.history.insert_uplinks(batch).await.unwrap();
    }
    storage.close().await;
}

/// What a bucketed query must answer, computed here from the readings in `[from, to)`.
fn expected(points: &[(DateTime<Utc>, f64)], from: DateTime<Utc>, to: DateTime<Utc>, secs: i64, agg: &str) -> Vec<(i64, f64)> {
    let in_range: Vec<_> = points.iter().copied().filter(|(t, _)| *t >= from && *t < to).collect();
    common::expected_buckets(&in_range, secs, agg)
}

fn points(v: &Value) -> Vec<(i64, f64)> {
    v.as_array()
        .unwrap_or_else(|| panic!("no points: {v}"))
        .iter()
        .map(|p| (p["time"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap().timestamp(), p["value"].as_f64().unwrap()))
        .collect()
}

fn assert_same(got: &[(i64, f64)], want: &[(i64, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(g.0 == w.0 && (g.1 - w.1).abs() < 1e-9, "{what}: got {got:?}, want {want:?}");
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Every answer of one backend, by query, after checking each against the computed one.
async fn answers(backend: Backend) -> BTreeMap<String, Vec<(i64, f64)>> {
    let server = TestServer::start(backend, &[]).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    for (i, eui) in DEVICES.iter().enumerate() {
        provision::abp_device(
            &api,
            &p,
            eui,
            &format!("26010b0{i}"),
            "2b7e151628aed2a6abf7158809cf4f3c",
            "000102030405060708090a0b0c0d0e0f",
        )
        .await;
    }
    store_readings(&server.database_url, p.application_id.parse().unwrap()).await;

    let mut all = BTreeMap::new();
    // Whole hours (the rollup) and the same hours widened by a second (raw values: no
    // reading falls in the extra seconds, so the buckets are the same).
    let (from, to) = (start() + Duration::hours(3), start() + Duration::hours(39));
    let ranges = [("rollup", from, to), ("raw", from - Duration::seconds(1), to + Duration::seconds(1))];
    for (bucket, secs) in [("1h", 3600), ("6h", 6 * 3600), ("1d", 86_400)] {
        for agg in AGGS {
            for (source, f, t) in ranges {
                let q = format!("bucket={bucket}&agg={agg}&from={}&to={}", rfc3339(f), rfc3339(t));
                for (d, eui) in DEVICES.iter().enumerate() {
                    let (s, body) = api.get(&format!("/api/devices/{eui}/measurements/temperature?{q}")).await;
                    assert_eq!(s, 200, "{body}");
                    let got = points(&body["result"]);
                    assert_same(&got, &expected(&temperatures(d), f, t, secs, agg), &format!("{backend:?} {source} {eui} {q}"));
                    all.insert(format!("{eui} temperature {bucket} {agg} {source}"), got);
                }
                let (s, body) = api.get(&format!("/api/applications/{}/measurements/temperature?{q}", p.application_id)).await;
                assert_eq!(s, 200, "{body}");
                let per_device = body["result"].as_array().unwrap();
                assert_eq!(per_device.len(), DEVICES.len(), "one series per device: {body}");
                for (d, entry) in per_device.iter().enumerate() {
                    assert_eq!(entry["devEui"], DEVICES[d]);
                    assert_eq!(entry["deviceName"], format!("dev-{}", DEVICES[d]));
                    let got = points(&entry["points"]);
                    assert_eq!(got, all[&format!("{} temperature {bucket} {agg} {source}", DEVICES[d])], "application {q}");
                }
            }
        }
        // A COUNTER's sum is its increase per bucket: from the newest reading before the range,
        // +3 per reading, and a restart counts its new value.
        for (source, f, t) in ranges {
            let q = format!("bucket={bucket}&agg=sum&from={}&to={}", rfc3339(f), rfc3339(t));
            let (s, body) = api.get(&format!("/api/devices/{}/measurements/energy?{q}", DEVICES[0])).await;
            assert_eq!(s, 200, "{body}");
            let got = points(&body["result"]);
            let lasts = expected(&energy(), f, t, secs, "last");
            let mut previous = energy().iter().rfind(|(t, _)| *t < f).map(|(_, v)| *v);
            let want: Vec<(i64, f64)> = lasts
                .iter()
                .map(|&(b, v)| {
                    let inc = match previous {
                        Some(p) if v >= p => v - p,
                        Some(_) => v,
                        None => 0.0,
                    };
                    previous = Some(v);
                    (b, inc)
                })
                .collect();
            assert_same(&got, &want, &format!("{backend:?} {source} energy {q}"));
            assert!(got.iter().map(|p| p.1).sum::<f64>() > 0.0);
            all.insert(format!("energy {bucket} {source}"), got);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucketed_series_are_the_same_on_sqlite_and_postgres_from_rollup_or_raw_values() {
    let sqlite = answers(Backend::Sqlite).await;
    let postgres = answers(Backend::Postgres).await;
    assert_eq!(sqlite.keys().collect::<Vec<_>>(), postgres.keys().collect::<Vec<_>>());
    for (k, a) in &sqlite {
        assert_same(&postgres[k], a, &format!("sqlite vs postgres: {k}"));
    }
}
