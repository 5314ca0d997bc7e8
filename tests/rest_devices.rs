//! Device profiles, devices, keys, ABP activation, DevNonces and the downlink queue over REST,
//! with the error model (400 naming the field, 404, 409), on both backends and across a restart.

mod common;

use base64::Engine;
use common::{Api, Backend, TestServer};
use serde_json::{json, Value};

const APP_KEY: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
const APP_S_KEY: &str = "000102030405060708090A0B0C0D0E0F";
const NWK_S_KEY: &str = "101112131415161718191A1B1C1D1E1F";
const OTHER_KEY: &str = "202122232425262728292a2b2c2d2e2f";

/// Asserts a 400 whose message starts with `field`, and returns the message.
async fn bad_request(call: impl std::future::Future<Output = (u16, Value)>, field: &str) -> String {
    let (s, e) = call.await;
    assert_eq!(s, 400, "expected 400 naming {field}, got {s}: {e}");
    let msg = e["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.starts_with(field), "expected the error to name {field}: {e}");
    msg
}

/// `base` with the fields of `patch` set, or removed where `patch` has null.
fn patched(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().expect("patch is an object") {
        if v.is_null() {
            base.as_object_mut().expect("base is an object").remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

async fn created(api: &Api, path: &str, body: Value) -> Value {
    let (s, v) = api.post(path, body).await;
    assert_eq!(s, 201, "POST {path}: {v}");
    v
}

async fn device_profiles(api: &Api) -> (String, String, String) {
    // Omitted optional fields take the DESIGN.md §3 defaults.
    let dp = created(api, "/api/device-profiles", json!({"name": "plain"})).await;
    for (k, v) in [
        ("region", json!("EU868")),
        ("macVersion", json!("1.0.3")),
        ("regParamsRevision", json!("RP002-1.0.3")),
        ("supportsOtaa", json!(true)),
        ("supportsClassC", json!(false)),
        ("adrEnabled", json!(true)),
        ("payloadCodec", json!("NONE")),
        ("payloadCodecScript", json!("")),
    ] {
        assert_eq!(dp[k], v, "{k} in {dp}");
    }
    assert!(dp["createdAt"].is_string() && dp["updatedAt"].is_string(), "{dp}");
    let plain = dp["id"].as_str().unwrap().to_string();

    let lpp = created(api, "/api/device-profiles", json!({"name": "lpp", "macVersion": "1.0.2", "payloadCodec": "CAYENNE_LPP"})).await;
    let lpp = lpp["id"].as_str().unwrap().to_string();
    let script =
        "function encodeDownlink(input) { if (input.data.fail) { throw new Error('no'); } return { bytes: [input.data.led ? 1 : 0] }; }";
    let js = created(api, "/api/device-profiles", json!({"name": "js", "payloadCodec": "JS", "payloadCodecScript": script})).await;
    let js = js["id"].as_str().unwrap().to_string();

    // 400 naming the field.
    let msg = bad_request(api.post("/api/device-profiles", json!({"name": "x", "region": "US915"})), "region").await;
    assert!(msg.contains("US915"), "{msg}");
    let msg = bad_request(api.post("/api/device-profiles", json!({"name": "x", "macVersion": "1.1.0"})), "macVersion").await;
    assert!(msg.contains("not supported yet"), "{msg}");
    bad_request(api.post("/api/device-profiles", json!({"name": "x", "macVersion": "9.9"})), "macVersion").await;
    bad_request(api.post("/api/device-profiles", json!({"name": "x", "regParamsRevision": "Z"})), "regParamsRevision").await;
    bad_request(api.post("/api/device-profiles", json!({"name": "x", "payloadCodec": "XML"})), "payloadCodec").await;
    bad_request(api.post("/api/device-profiles", json!({"name": "x", "payloadCodec": "JS"})), "payloadCodecScript").await;
    bad_request(api.post("/api/device-profiles", json!({"region": "EU868"})), "name").await;
    bad_request(api.post("/api/device-profiles", json!({"name": "x", "adrEnabled": "yes"})), "adrEnabled").await;
    let (s, e) = api.post("/api/device-profiles", json!({"name": "x", "classB": true})).await;
    assert_eq!(s, 400, "unknown fields are refused: {e}");

    // Read, list (oldest first, paged), update, echo a GET back, 404, bad id.
    let (s, got) = api.get(&format!("/api/device-profiles/{plain}")).await;
    assert_eq!((s, got["name"].as_str()), (200, Some("plain")));
    let (s, list) = api.get("/api/device-profiles").await;
    assert_eq!(s, 200);
    assert_eq!(list["totalCount"], 3);
    assert_eq!(list["result"][0]["id"], plain.as_str());
    let (_, page) = api.get("/api/device-profiles?limit=1&offset=1").await;
    assert_eq!(page["result"].as_array().unwrap().len(), 1);
    assert_eq!(page["result"][0]["id"], lpp.as_str());
    let (s, up) =
        api.put(&format!("/api/device-profiles/{plain}"), json!({"name": "plain-2", "adrEnabled": false, "region": "eu868"})).await;
    assert_eq!(s, 200, "{up}");
    assert_eq!((up["name"].as_str(), up["adrEnabled"].as_bool(), up["region"].as_str()), (Some("plain-2"), Some(false), Some("EU868")));
    let (_, got) = api.get(&format!("/api/device-profiles/{plain}")).await;
    assert_eq!(got["adrEnabled"], false);
    assert_eq!(api.put(&format!("/api/device-profiles/{plain}"), got).await.0, 200);
    bad_request(api.put(&format!("/api/device-profiles/{plain}"), json!({"name": "p", "payloadCodec": "JS"})), "payloadCodecScript").await;
    let missing = "00000000-0000-0000-0000-000000000000";
    assert_eq!(api.get(&format!("/api/device-profiles/{missing}")).await.0, 404);
    assert_eq!(api.put(&format!("/api/device-profiles/{missing}"), json!({"name": "x"})).await.0, 404);
    assert_eq!(api.delete(&format!("/api/device-profiles/{missing}")).await.0, 404);
    bad_request(api.get("/api/device-profiles/not-a-uuid"), "id").await;
    (plain, lpp, js)
}

async fn devices_crud_and_errors(backend: Backend) {
    let server = TestServer::start(backend, &[]).await;
    let api = server.client();
    let (plain, lpp, js) = device_profiles(&api).await;

    let app = created(&api, "/api/applications", json!({"name": "sensors"})).await["id"].as_str().unwrap().to_string();
    let app2 = created(&api, "/api/applications", json!({"name": "meters"})).await["id"].as_str().unwrap().to_string();

    // Create: any case in, lower case out; devAddr and lastSeenAt null until active and heard.
    let dev = created(
        &api,
        "/api/devices",
        json!({"devEui": "0004A30B001C0530", "name": "door", "applicationId": app, "deviceProfileId": plain,
               "joinEui": "70B3D57ED0000000", "description": "front door", "tags": {"floor": "3"}}),
    )
    .await;
    assert_eq!(dev["devEui"], "0004a30b001c0530");
    assert_eq!(dev["joinEui"], "70b3d57ed0000000");
    assert_eq!(dev["applicationId"], app.as_str());
    assert_eq!(dev["deviceProfileId"], plain.as_str());
    assert_eq!(dev["tags"], json!({"floor": "3"}));
    assert_eq!((dev["skipFcntCheck"].as_bool(), dev["isDisabled"].as_bool()), (Some(false), Some(false)));
    assert_eq!(dev["devAddr"], Value::Null);
    assert_eq!(dev["lastSeenAt"], Value::Null);
    assert!(dev["createdAt"].is_string() && dev["updatedAt"].is_string(), "{dev}");
    let d1 = "/api/devices/0004a30b001c0530";

    let lpp_dev = created(
        &api,
        "/api/devices",
        json!({"devEui": "0102030405060708", "name": "valve", "applicationId": app2, "deviceProfileId": lpp, "skipFcntCheck": true}),
    )
    .await;
    assert_eq!(lpp_dev["joinEui"], "0000000000000000");
    assert_eq!(lpp_dev["skipFcntCheck"], true);
    let d2 = "/api/devices/0102030405060708";
    created(&api, "/api/devices", json!({"devEui": "0102030405060709", "name": "lamp", "applicationId": app2, "deviceProfileId": js}))
        .await;
    let d3 = "/api/devices/0102030405060709";

    // Duplicates are 409 whatever the case.
    let (s, e) = api
        .post("/api/devices", json!({"devEui": "0004a30b001c0530", "name": "again", "applicationId": app, "deviceProfileId": plain}))
        .await;
    assert_eq!(s, 409, "{e}");

    // 400 naming each invalid field; unknown references are the client's error.
    let body =
        |patch: Value| patched(json!({"devEui": "1111111111111111", "name": "n", "applicationId": app, "deviceProfileId": plain}), patch);
    let msg =
        bad_request(api.post("/api/devices", body(json!({"applicationId": "00000000-0000-0000-0000-000000000001"}))), "applicationId")
            .await;
    assert!(msg.contains("00000000-0000-0000-0000-000000000001"), "{msg}");
    bad_request(api.post("/api/devices", body(json!({"deviceProfileId": "00000000-0000-0000-0000-000000000001"}))), "deviceProfileId")
        .await;
    bad_request(api.post("/api/devices", body(json!({"applicationId": "nope"}))), "applicationId").await;
    bad_request(api.post("/api/devices", body(json!({"applicationId": null}))), "applicationId").await;
    bad_request(api.post("/api/devices", body(json!({"deviceProfileId": null}))), "deviceProfileId").await;
    bad_request(api.post("/api/devices", body(json!({"devEui": "11111111111111"}))), "devEui").await;
    bad_request(api.post("/api/devices", body(json!({"devEui": null}))), "devEui").await;
    bad_request(api.post("/api/devices", body(json!({"name": ""}))), "name").await;
    bad_request(api.post("/api/devices", body(json!({"joinEui": "xyz"}))), "joinEui").await;
    bad_request(api.post("/api/devices", body(json!({"isDisabled": "no"}))), "isDisabled").await;
    bad_request(api.post("/api/devices", body(json!({"skipFcntCheck": 1}))), "skipFcntCheck").await;
    bad_request(api.post("/api/devices", body(json!({"tags": {"floor": 3}}))), "tags.floor").await;
    assert_eq!(api.post("/api/devices", body(json!({"devNonce": 1}))).await.0, 400);
    assert_eq!(api.get("/api/devices/1111111111111111").await.0, 404, "a refused device is not stored");

    // List: all, by application, paged; a bad applicationId is 400.
    let (s, all) = api.get("/api/devices").await;
    assert_eq!((s, all["totalCount"].as_u64()), (200, Some(3)));
    let (_, by_app) = api.get(&format!("/api/devices?applicationId={app2}")).await;
    assert_eq!(by_app["totalCount"], 2);
    assert_eq!(by_app["result"][0]["devEui"], "0102030405060708");
    let (_, page) = api.get(&format!("/api/devices?applicationId={app2}&limit=1&offset=1")).await;
    assert_eq!((page["totalCount"].as_u64(), page["result"][0]["devEui"].as_str()), (Some(2), Some("0102030405060709")));
    bad_request(api.get("/api/devices?applicationId=xyz"), "applicationId").await;
    bad_request(api.get("/api/devices?limit=1001"), "limit").await;

    // Read, update, echo a GET back, 404s.
    let (s, got) = api.get("/api/devices/0004A30B001C0530").await;
    assert_eq!((s, got["name"].as_str()), (200, Some("door")));
    let (s, up) = api
        .put(d1, json!({"name": "back door", "applicationId": app, "deviceProfileId": plain, "isDisabled": true, "tags": {"floor": "4"}}))
        .await;
    assert_eq!(s, 200, "{up}");
    assert_eq!(
        (up["name"].as_str(), up["isDisabled"].as_bool(), up["joinEui"].as_str()),
        (Some("back door"), Some(true), Some("0000000000000000"))
    );
    let (_, got) = api.get(d1).await;
    assert_eq!(got["tags"], json!({"floor": "4"}));
    let (s, echoed) = api.put(d1, got.clone()).await;
    assert_eq!(s, 200, "{echoed}");
    bad_request(api.put(d1, json!({"devEui": "0000000000000001", "name": "x", "applicationId": app, "deviceProfileId": plain})), "devEui")
        .await;
    bad_request(
        api.put(d1, json!({"name": "x", "applicationId": app, "deviceProfileId": "00000000-0000-0000-0000-000000000002"})),
        "deviceProfileId",
    )
    .await;
    assert_eq!(api.get("/api/devices/0000000000000001").await.0, 404);
    assert_eq!(api.put("/api/devices/0000000000000001", json!({"name": "x", "applicationId": app, "deviceProfileId": plain})).await.0, 404);
    assert_eq!(api.delete("/api/devices/0000000000000001").await.0, 404);
    bad_request(api.get("/api/devices/xyz"), "devEui").await;
    // Re-enable for the rest of the test (and the JoinEUI it had).
    let (s, _) = api.put(d1, json!({"name": "door", "applicationId": app, "deviceProfileId": plain, "joinEui": "70b3d57ed0000000"})).await;
    assert_eq!(s, 200);

    // A device profile in use cannot be deleted.
    let (s, e) = api.delete(&format!("/api/device-profiles/{lpp}")).await;
    assert_eq!(s, 409, "{e}");

    // Keys.
    let keys = format!("{d1}/keys");
    assert_eq!(api.get(&keys).await.0, 404, "no keys yet");
    let (s, k) = api.put(&keys, json!({"appKey": APP_KEY})).await;
    assert_eq!(s, 200, "{k}");
    assert_eq!(k, json!({"devEui": "0004a30b001c0530", "appKey": APP_KEY.to_ascii_lowercase(), "nwkKey": null}));
    assert_eq!(api.get(&keys).await, (200, k.clone()));
    assert_eq!(api.put(&keys, k.clone()).await.0, 200, "a GET body can be sent back");
    bad_request(api.put(&keys, json!({"appKey": "0011"})), "appKey").await;
    bad_request(api.put(&keys, json!({})), "appKey").await;
    bad_request(api.put(&keys, json!({"appKey": APP_KEY, "nwkKey": "zz"})), "nwkKey").await;
    assert_eq!(api.put("/api/devices/0000000000000001/keys", json!({"appKey": APP_KEY})).await.0, 404);
    assert_eq!(api.get("/api/devices/0000000000000001/keys").await.0, 404);

    // DevNonces.
    assert_eq!(api.delete(&format!("{d1}/dev-nonces")).await.0, 204);
    assert_eq!(api.delete("/api/devices/0000000000000001/dev-nonces").await.0, 404);

    // ABP activation.
    let activation = format!("{d1}/activation");
    let activate = format!("{d1}/activate");
    assert_eq!(api.get(&activation).await.0, 404, "not active yet");
    let abp = |patch: Value| {
        patched(json!({"devAddr": "2601ABCD", "appSKey": APP_S_KEY, "nwkSKey": NWK_S_KEY, "fCntUp": 10, "fCntDown": 5}), patch)
    };
    bad_request(api.post(&activate, abp(json!({"devAddr": "2601ABC"}))), "devAddr").await;
    bad_request(api.post(&activate, abp(json!({"devAddr": null}))), "devAddr").await;
    bad_request(api.post(&activate, abp(json!({"appSKey": "00"}))), "appSKey").await;
    bad_request(api.post(&activate, abp(json!({"appSKey": null}))), "appSKey").await;
    bad_request(api.post(&activate, abp(json!({"nwkSKey": "00"}))), "nwkSKey").await;
    bad_request(api.post(&activate, abp(json!({"nwkSKey": null}))), "nwkSKey").await;
    bad_request(api.post(&activate, abp(json!({"fCntUp": -1}))), "fCntUp").await;
    bad_request(api.post(&activate, abp(json!({"fCntDown": "x"}))), "fCntDown").await;
    for field in ["fNwkSIntKey", "sNwkSIntKey", "nwkSEncKey"] {
        let msg = bad_request(api.post(&activate, abp(json!({"nwkSKey": null, field: OTHER_KEY}))), field).await;
        assert!(msg.contains("LoRaWAN 1.1 not supported yet"), "{msg}");
    }
    assert_eq!(api.get(&activation).await.0, 404, "a refused activation stores nothing");
    assert_eq!(api.post("/api/devices/0000000000000001/activate", abp(json!({}))).await.0, 404);
    assert_eq!(api.get("/api/devices/0000000000000001/activation").await.0, 404);

    // 2601abcd is outside the default NetID 000000: accepted with a warning.
    let (s, act) = api.post(&activate, abp(json!({}))).await;
    assert_eq!(s, 200, "{act}");
    let n = NWK_S_KEY.to_ascii_lowercase();
    let expected = json!({"devAddr": "2601abcd", "appSKey": APP_S_KEY.to_ascii_lowercase(), "nwkSKey": n, "fNwkSIntKey": n,
        "sNwkSIntKey": n, "nwkSEncKey": n, "fCntUp": 10, "fCntDown": 5,
        "radio": {"dr": null, "txPowerIndex": 0, "nbTrans": 1}});
    assert_eq!(act, expected);
    assert_eq!(api.get(&activation).await, (200, expected.clone()));
    assert_eq!(api.get(d1).await.1["devAddr"], "2601abcd");
    assert_eq!(api.post(&activate, expected.clone()).await.0, 200, "a GET body can be sent back");
    // Re-activation replaces the session; counters default to 0.
    let (s, again) = api.post(&format!("{d2}/activate"), json!({"devAddr": "01020304", "appSKey": APP_S_KEY, "nwkSKey": NWK_S_KEY})).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!((again["fCntUp"].as_u64(), again["fCntDown"].as_u64()), (Some(0), Some(0)));
    let (s, again) = api.post(&format!("{d2}/activate"), json!({"devAddr": "01020305", "appSKey": APP_S_KEY, "nwkSKey": OTHER_KEY})).await;
    assert_eq!(s, 200);
    assert_eq!((again["devAddr"].as_str(), again["nwkSKey"].as_str()), (Some("01020305"), Some(OTHER_KEY)));
    assert_eq!(api.get(d2).await.1["devAddr"], "01020305");

    // Queue.
    let queue = format!("{d1}/queue");
    let (s, list) = api.get(&queue).await;
    assert_eq!((s, list), (200, json!({"totalCount": 0, "result": []})));
    let (s, q1) = api.post(&queue, json!({"fPort": 10, "data": "AQID", "confirmed": true})).await;
    assert_eq!(s, 201, "{q1}");
    let q1 = q1["id"].as_str().expect("queue item id").to_string();
    let (s, q2) = api.post(&queue, json!({"fPort": 223, "data": ""})).await;
    assert_eq!(s, 201, "{q2}");
    for port in [0, 224, 256, -1] {
        bad_request(api.post(&queue, json!({"fPort": port, "data": "AQID"})), "fPort").await;
    }
    bad_request(api.post(&queue, json!({"data": "AQID"})), "fPort").await;
    bad_request(api.post(&queue, json!({"fPort": 1, "data": "***"})), "data").await;
    bad_request(api.post(&queue, json!({"fPort": 1})), "data").await;
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
    bad_request(api.post(&queue, json!({"fPort": 1, "data": b64(243)})), "data").await;
    bad_request(api.post(&queue, json!({"fPort": 1, "confirmed": "yes", "data": "AQ=="})), "confirmed").await;
    // The device's profile has no codec: an object cannot be encoded.
    bad_request(api.post(&queue, json!({"fPort": 1, "object": {"led": true}})), "object").await;
    bad_request(api.post(&queue, json!({"fPort": 1, "data": "AQ==", "object": {}})), "object").await;
    let (s, list) = api.get(&queue).await;
    assert_eq!(s, 200);
    assert_eq!(list["totalCount"], 2, "{list}");
    let item = &list["result"][0];
    assert_eq!(item["id"], q1.as_str());
    assert_eq!((item["fPort"].as_u64(), item["confirmed"].as_bool(), item["data"].as_str()), (Some(10), Some(true), Some("AQID")));
    assert_eq!((&item["fCntDown"], item["isPending"].as_bool()), (&Value::Null, Some(false)));
    assert!(item["createdAt"].is_string(), "{item}");
    assert_eq!(list["result"][1]["data"], "");
    // A listed item can be posted again (a copy).
    assert_eq!(api.post(&queue, item.clone()).await.0, 201);
    assert_eq!(api.delete(&queue).await.0, 204);
    assert_eq!(api.get(&queue).await.1["totalCount"], 0);
    let (s, _) = api.post(&queue, json!({"fPort": 2, "data": "BQY="})).await;
    assert_eq!(s, 201);

    // Codecs encode `object`: Cayenne LPP and a JS encodeDownlink; their errors name `object`.
    let (s, r) = api.post(&format!("{d2}/queue"), json!({"fPort": 3, "object": {"temperatureSensor": {"3": 27.2}}})).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(api.get(&format!("{d2}/queue")).await.1["result"][0]["data"], "A2cBEA==");
    bad_request(api.post(&format!("{d2}/queue"), json!({"fPort": 3, "object": {"noSuchSensor": {"1": 1}}})), "object").await;
    let (s, r) = api.post(&format!("{d3}/queue"), json!({"fPort": 4, "object": {"led": true}})).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(api.get(&format!("{d3}/queue")).await.1["result"][0]["data"], "AQ==");
    bad_request(api.post(&format!("{d3}/queue"), json!({"fPort": 4, "object": {"fail": true}})), "object").await;

    let nq = "/api/devices/0000000000000001/queue";
    assert_eq!(api.get(nq).await.0, 404);
    assert_eq!(api.post(nq, json!({"fPort": 1, "data": "AQ=="})).await.0, 404);
    assert_eq!(api.delete(nq).await.0, 404);

    // A restart keeps profiles, devices, keys, sessions and queues.
    let server = server.restart();
    let api = server.client();
    let (s, got) = api.get(d1).await;
    assert_eq!((s, got["name"].as_str(), got["devAddr"].as_str()), (200, Some("door"), Some("2601abcd")));
    assert_eq!(got["tags"], json!({}), "the last update sent no tags");
    assert_eq!(api.get(&keys).await, (200, k));
    assert_eq!(api.get(&activation).await, (200, expected));
    let (_, list) = api.get(&queue).await;
    assert_eq!((list["totalCount"].as_u64(), list["result"][0]["data"].as_str()), (Some(1), Some("BQY=")));
    assert_eq!(api.get(&format!("/api/device-profiles/{js}")).await.1["payloadCodec"], "JS");
    assert_eq!(api.get("/api/devices").await.1["totalCount"], 3);

    // Deleting a device takes its keys, session and queue with it.
    assert_eq!(api.delete(d1).await.0, 204);
    assert_eq!(api.get(d1).await.0, 404);
    assert_eq!(api.get(&keys).await.0, 404);
    assert_eq!(api.get(&activation).await.0, 404);
    assert_eq!(api.get(&queue).await.0, 404);
    assert_eq!(api.delete(&format!("/api/device-profiles/{plain}")).await.0, 204, "no device uses it any more");
    assert_eq!(api.get(&format!("/api/device-profiles/{plain}")).await.0, 404);
    // Deleting an application deletes its devices; then their profile is free.
    assert_eq!(api.delete(&format!("/api/applications/{app2}")).await.0, 204);
    assert_eq!(api.get(d2).await.0, 404);
    assert_eq!(api.delete(&format!("/api/device-profiles/{lpp}")).await.0, 204);
}

#[tokio::test]
async fn devices_keys_activation_and_queue_on_sqlite() {
    devices_crud_and_errors(Backend::Sqlite).await;
}

#[tokio::test]
async fn devices_keys_activation_and_queue_on_postgres() {
    devices_crud_and_errors(Backend::Postgres).await;
}
