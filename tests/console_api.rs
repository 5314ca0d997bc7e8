//! The REST endpoints the web console needs beyond the CRUD ones: the codec tester (which
//! runs user scripts in the uplink path's sandbox), the latest events across devices, and a
//! device's link state. Against the real server, on SQLite and PostgreSQL where storage is
//! involved.

mod common;

use std::time::{Duration, Instant};

use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::provision::{self, Provisioned};
use common::{eventually, Api, Backend, TestServer};
use serde_json::{json, Value};

/// Cayenne LPP: temperature 27.2 °C on channel 3, humidity 48.5 % on channel 5.
const LPP_HEX: &str = "03670110056861";
const LPP_OBJECT: &str = r#"{"temperatureSensor":{"3":27.2},"humiditySensor":{"5":48.5}}"#;

async fn test_codec(api: &Api, body: Value) -> (u16, Value) {
    api.post("/api/device-profiles/test-codec", body).await
}

fn starts_with_field(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.starts_with(&format!("{field}: ")), "the error names {field}: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codec_tester_decodes_reports_script_errors_and_outlives_hostile_scripts() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let api = server.client();

    // Cayenne LPP, from hex and from base64.
    let (s, b) = test_codec(&api, json!({"payloadCodec": "CAYENNE_LPP", "fPort": 2, "hex": LPP_HEX})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"object": serde_json::from_str::<Value>(LPP_OBJECT).unwrap(), "error": null}));
    let (s, b) = test_codec(&api, json!({"payloadCodec": "cayenne_lpp", "fPort": 2, "data": "A2cBEAVoYQ=="})).await;
    assert_eq!((s, &b["object"]), (200, &serde_json::from_str::<Value>(LPP_OBJECT).unwrap()), "{b}");
    // Bytes that are not LPP: the codec's error, not a failed request.
    let (s, b) = test_codec(&api, json!({"payloadCodec": "CAYENNE_LPP", "fPort": 2, "hex": "0367"})).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["object"].is_null() && b["error"].as_str().is_some_and(|e| e.contains("Cayenne")), "{b}");
    // NONE decodes nothing.
    let (s, b) = test_codec(&api, json!({"payloadCodec": "NONE", "fPort": 2, "hex": "01"})).await;
    assert_eq!((s, b), (200, json!({"object": null, "error": null})));

    // JavaScript, TTN v3 style.
    let script = "function decodeUplink(input) { return { data: { port: input.fPort, first: input.bytes[0], n: input.bytes.length } }; }";
    let (s, b) = test_codec(&api, json!({"payloadCodec": "JS", "payloadCodecScript": script, "fPort": 7, "hex": "2a00ff"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"object": {"port": 7, "first": 42, "n": 3}, "error": null}));

    // A script that throws: its own message.
    let throwing = "function decodeUplink(input) {\n  return { data: { t: foo.bar } };\n}";
    let (s, b) = test_codec(&api, json!({"payloadCodec": "JS", "payloadCodecScript": throwing, "fPort": 1, "hex": "01"})).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["object"].is_null(), "{b}");
    let error = b["error"].as_str().unwrap_or_default();
    assert_eq!(error, "ReferenceError: foo is not defined (in decodeUplink)", "the script's exception and where");
    // A script that does not compile, and one returning no object.
    let (s, b) = test_codec(&api, json!({"payloadCodec": "JS", "payloadCodecScript": "function (", "fPort": 1, "hex": ""})).await;
    assert!(s == 200 && b["error"].as_str().is_some_and(|e| e.contains("SyntaxError")), "{s} {b}");
    let bad_return = "function decodeUplink(input) { return { data: 5 }; }";
    let (s, b) = test_codec(&api, json!({"payloadCodec": "JS", "payloadCodecScript": bad_return, "fPort": 1, "hex": ""})).await;
    assert!(s == 200 && b["object"].is_null() && b["error"].is_string(), "{s} {b}");

    // Endless loops, several at once: each answers with the time limit, and the server stays
    // responsive meanwhile and after.
    let looping = "function decodeUplink(input) { while (true) {} }";
    let started = Instant::now();
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                test_codec(&api, json!({"payloadCodec": "JS", "payloadCodecScript": looping, "fPort": 1, "hex": "00"})).await
            })
        })
        .collect();
    let (s, _) = api.get("/api/devices").await;
    assert_eq!(s, 200, "other requests are answered while scripts loop");
    for l in loops {
        let (s, b) = l.await.unwrap();
        assert_eq!(s, 200, "{b}");
        assert!(b["object"].is_null(), "{b}");
        assert!(b["error"].as_str().is_some_and(|e| e.contains("time limit")), "{b}");
    }
    // 100 ms each, at most a few at a time.
    assert!(started.elapsed() < Duration::from_secs(5), "loops took {:?}", started.elapsed());
    let started = Instant::now();
    let (s, b) = test_codec(&api, json!({"payloadCodec": "CAYENNE_LPP", "fPort": 2, "hex": LPP_HEX})).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["object"].is_object(), "{b}");
    assert!(started.elapsed() < Duration::from_secs(1), "answered in {:?} after the loops", started.elapsed());

    // Input errors name the field.
    let (s, b) = test_codec(&api, json!({"payloadCodec": "CAYENNE_LPP", "fPort": 2, "hex": "zz"})).await;
    starts_with_field(s, &b, "hex");
    let (s, b) = test_codec(&api, json!({"payloadCodec": "CAYENNE_LPP", "fPort": 2, "hex": "123"})).await;
    starts_with_field(s, &b, "hex");
    let (s, b) = test_codec(&api, json!({"payloadCodec": "CAYENNE_LPP", "fPort": 2, "data": "!!"})).await;
    starts_with_field(s, &b, "data");
    let (s, b) = test_codec(&api, json!({"payloadCodec": "CAYENNE_LPP", "fPort": 0, "hex": "01"})).await;
    starts_with_field(s, &b, "fPort");
    let (s, b) = test_codec(&api, json!({"payloadCodec": "CAYENNE_LPP", "fPort": 300, "hex": "01"})).await;
    starts_with_field(s, &b, "fPort");
    let (s, b) = test_codec(&api, json!({"payloadCodec": "LUA", "fPort": 2, "hex": "01"})).await;
    starts_with_field(s, &b, "payloadCodec");
    let (s, b) = test_codec(&api, json!({"fPort": 2, "hex": "01"})).await;
    starts_with_field(s, &b, "payloadCodec");
    let (s, b) = test_codec(&api, json!({"payloadCodec": "JS", "payloadCodecScript": "", "fPort": 2, "hex": "01"})).await;
    starts_with_field(s, &b, "payloadCodecScript");
    let (s, b) = test_codec(&api, json!({"payloadCodec": "NONE", "fPort": 2, "hex": "01", "object": {}})).await;
    starts_with_field(s, &b, "object");

    // With a stored profile: its codec unless the body names one.
    let p = provision::application_and_profile(&api, "JS", script).await;
    let path = format!("/api/device-profiles/{}/test-codec", p.device_profile_id);
    let (s, b) = api.post(&path, json!({"fPort": 3, "hex": "05"})).await;
    assert_eq!((s, b), (200, json!({"object": {"port": 3, "first": 5, "n": 1}, "error": null})));
    let (s, b) = api.post(&path, json!({"payloadCodec": "CAYENNE_LPP", "fPort": 2, "hex": LPP_HEX})).await;
    assert_eq!((s, &b["object"]), (200, &serde_json::from_str::<Value>(LPP_OBJECT).unwrap()), "{b}");
    let (s, b) = api.post(&path, json!({"payloadCodecScript": throwing, "fPort": 2, "hex": "01"})).await;
    starts_with_field(s, &b, "payloadCodecScript");
    let (s, b) = api.post("/api/device-profiles/00000000-0000-4000-8000-000000000001/test-codec", json!({"fPort": 1, "hex": "01"})).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = api.post("/api/device-profiles/nope/test-codec", json!({"fPort": 1, "hex": "01"})).await;
    starts_with_field(s, &b, "id");

    // A read-only key limited to an application may test codecs (nothing is stored), and still
    // not change a profile.
    let (s, key) = api.post("/api/api-keys", json!({"name": "console reader", "applicationId": p.application_id, "readOnly": true})).await;
    assert_eq!(s, 201, "{key}");
    let reader = api.with_token(key["token"].as_str());
    let (s, b) = test_codec(&reader, json!({"payloadCodec": "CAYENNE_LPP", "fPort": 2, "hex": LPP_HEX})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = reader.post(&path, json!({"fPort": 3, "hex": "05"})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = reader.put(&format!("/api/device-profiles/{}", p.device_profile_id), json!({"name": "x"})).await;
    assert_eq!(s, 403, "{b}");
}

const APP_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const OTAA_EUI: &str = "70b3d57ed0000101";
const ABP_EUI: &str = "70b3d57ed0000202";
const ABP_ADDR: &str = "00000202";
const NWK_S_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const APP_S_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const GATEWAY: &str = "00000000000000c1";

async fn send(gw: &mut FakeGateway, phy: &[u8], tmst: u32) {
    let t = gw.push_rxpk(vec![rxpk(phy, tmst, -60, 7.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
}

/// The events `GET /api/events?{query}` lists, once there are at least `n` (counted too).
async fn events_once(api: &Api, query: &str, n: usize) -> Value {
    eventually(Duration::from_secs(10), || async {
        let (s, b) = api.get(&format!("/api/events?{query}")).await;
        assert_eq!(s, 200, "{b}");
        // The count runs beside the page: a row stored in between shows in one of them only.
        (b["result"].as_array().map_or(0, Vec::len) >= n && b["totalCount"].as_u64() >= Some(n as u64)).then_some(b)
    })
    .await
    .unwrap_or_else(|| panic!("fewer than {n} events for ?{query}"))
}

fn kinds_and_devices(page: &Value) -> Vec<(String, String)> {
    page["result"].as_array().unwrap().iter().map(|e| (e["kind"].as_str().unwrap().into(), e["devEui"].as_str().unwrap().into())).collect()
}

async fn events_and_device_state(backend: Backend) {
    let server = TestServer::start(backend, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")]).await;
    let api = server.client();
    let (s, app) = api.post("/api/applications", json!({"name": "console"})).await;
    assert_eq!(s, 201, "{app}");
    // No DevStatusReq: the server sends the device nothing after the join-accept.
    let (s, dp) = api
        .post(
            "/api/device-profiles",
            json!({"name": "lpp", "region": "EU868", "macVersion": "1.0.3", "adrEnabled": false, "devStatusReqFreq": 0,
                   "payloadCodec": "CAYENNE_LPP"}),
        )
        .await;
    assert_eq!(s, 201, "{dp}");
    let p = Provisioned { application_id: app["id"].as_str().unwrap().into(), device_profile_id: dp["id"].as_str().unwrap().into() };
    let (s, other_app) = api.post("/api/applications", json!({"name": "other"})).await;
    assert_eq!(s, 201, "{other_app}");
    let other = Provisioned { application_id: other_app["id"].as_str().unwrap().into(), device_profile_id: p.device_profile_id.clone() };
    provision::gateway(&api, GATEWAY).await;
    let mut gw = FakeGateway::new(GATEWAY, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    provision::otaa_device(&api, &p, OTAA_EUI, APP_KEY).await;

    // Not activated: a state with nothing known, in the GET and in the list.
    let (s, d) = api.get(&format!("/api/devices/{OTAA_EUI}")).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        d["state"],
        json!({"joined": false, "devAddr": null, "fCntUp": null, "fCntDown": null, "dr": null, "txPowerIndex": null,
               "nbTrans": null, "adr": null, "lastSeenAt": null})
    );
    let (_, list) = api.get("/api/devices").await;
    assert_eq!(list["result"][0]["state"]["joined"], false, "{list}");
    // A GET's answer may be sent back in a PUT, state included.
    let mut echo = d.clone();
    echo["name"] = json!("renamed");
    let (s, b) = api.put(&format!("/api/devices/{OTAA_EUI}"), echo).await;
    assert_eq!((s, &b["state"]["joined"]), (200, &json!(false)), "{b}");

    // Join, one good uplink and one that the codec cannot decode (a log event).
    let mut dev = Device::otaa(OTAA_EUI, APP_KEY);
    let jr = dev.join_request();
    send(&mut gw, &jr, 1_000_000).await;
    let resp = gw.next_pull_resp(Duration::from_secs(5)).await.expect("join-accept");
    dev.accept(&resp.phy_payload(), [0, 0, 0]);
    gw.tx_ack(resp.token, "NONE").await;
    let up = dev.uplink(false, 2, &hex::decode(LPP_HEX).unwrap());
    send(&mut gw, &up, 2_000_000).await;
    let up = dev.uplink(false, 2, &[0x03, 0x67]);
    send(&mut gw, &up, 3_000_000).await;

    events_once(&api, "kind=log", 1).await;
    // Another application's ABP device with a payload the codec refuses too.
    provision::abp_device(&api, &other, ABP_EUI, ABP_ADDR, NWK_S_KEY, APP_S_KEY).await;
    let mut abp = Device::abp(ABP_EUI, ABP_ADDR, NWK_S_KEY, APP_S_KEY);
    let up = abp.uplink(false, 2, &[0xff]);
    send(&mut gw, &up, 4_000_000).await;

    // Newest first across devices and applications: join (A), log (A), log (B).
    let all = events_once(&api, "", 3).await;
    assert_eq!(all["totalCount"], 3, "{all}");
    assert_eq!(
        kinds_and_devices(&all),
        [("log".into(), ABP_EUI.into()), ("log".into(), OTAA_EUI.into()), ("join".into(), OTAA_EUI.into())],
        "{all}"
    );
    let times: Vec<&str> = all["result"].as_array().unwrap().iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    let log = &all["result"][1];
    assert_eq!(log["applicationId"], json!(p.application_id));
    assert_eq!(log["level"], "ERROR", "{log}");
    assert_eq!(log["body"]["code"], "UPLINK_CODEC", "the stored MQTT event: {log}");
    assert!(log["id"].is_string() && log["body"]["deviceInfo"]["devEui"] == OTAA_EUI, "{log}");
    assert!(all["result"][2].get("level").is_none(), "only log events have a level: {all}");

    // Filters.
    let logs = events_once(&api, "kind=log", 2).await;
    assert_eq!((logs["totalCount"].as_u64(), logs["result"].as_array().unwrap().len()), (Some(2), 2), "{logs}");
    let errors = events_once(&api, "level=ERROR", 2).await;
    assert_eq!(errors["totalCount"], 2, "{errors}");
    let (_, info) = api.get("/api/events?level=INFO").await;
    assert_eq!(info, json!({"totalCount": 0, "result": []}));
    let (_, joins) = api.get("/api/events?kind=join&level=ERROR").await;
    assert_eq!(joins["totalCount"], 0, "a level means log events: {joins}");
    let one = events_once(&api, "limit=1", 1).await;
    assert_eq!((one["totalCount"].as_u64(), one["result"].as_array().unwrap().len()), (Some(3), 1), "{one}");
    assert_eq!(one["result"][0]["devEui"], ABP_EUI);
    for (query, field) in
        [("limit=0", "limit"), ("limit=101", "limit"), ("kind=up", "kind"), ("level=error", "level"), ("offset=1", "offset")]
    {
        let (s, b) = api.get(&format!("/api/events?{query}")).await;
        starts_with_field(s, &b, field);
    }

    // A key of one application sees its application's events only.
    let (s, key) = api.post("/api/api-keys", json!({"name": "other only", "applicationId": other.application_id, "readOnly": true})).await;
    assert_eq!(s, 201, "{key}");
    let scoped = api.with_token(key["token"].as_str());
    let (s, mine) = scoped.get("/api/events").await;
    assert_eq!(s, 200, "{mine}");
    assert_eq!(mine["totalCount"], 1, "{mine}");
    assert_eq!(kinds_and_devices(&mine), [("log".to_string(), ABP_EUI.to_string())]);

    // Activated: the session's state. Two uplinks were accepted, FCnt 0 and 1.
    let d = eventually(Duration::from_secs(10), || async {
        let (_, d) = api.get(&format!("/api/devices/{OTAA_EUI}")).await;
        (d["state"]["fCntUp"] == 2 && d["state"]["lastSeenAt"].is_string()).then_some(d)
    })
    .await
    .expect("the frame counter and lastSeenAt are stored");
    let state = &d["state"];
    assert_eq!(state["joined"], true, "{d}");
    assert_eq!(state["devAddr"], json!(dev.dev_addr.to_string()));
    assert_eq!((state["fCntDown"].as_u64(), state["txPowerIndex"].as_u64(), state["nbTrans"].as_u64()), (Some(0), Some(0), Some(1)), "{d}");
    assert_eq!(state["adr"], false, "the profile has ADR off: {d}");
    assert!(state["dr"].is_null(), "no LinkADRReq yet: {d}");
    assert_eq!(state["lastSeenAt"], d["lastSeenAt"]);
    let (_, list) = api.get("/api/devices?limit=10").await;
    let rows = list["result"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    for row in rows {
        assert_eq!(row["state"]["joined"], true, "{row}");
        assert_eq!(row["state"]["devAddr"], row["devAddr"], "{row}");
    }
    let abp_row = rows.iter().find(|r| r["devEui"] == ABP_EUI).unwrap();
    assert_eq!(abp_row["state"]["devAddr"], ABP_ADDR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_device_state_on_sqlite() {
    events_and_device_state(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_device_state_on_postgres() {
    events_and_device_state(Backend::Postgres).await;
}
