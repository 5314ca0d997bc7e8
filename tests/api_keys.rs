//! API keys over REST on the real binary: an application-scoped key sees and changes only its
//! application (another application's device is 404, admin-only resources 403), a read-only
//! key cannot write, keys are listed without tokens and a revoked key is refused at once.

mod common;

use serde_json::{json, Value};

use common::{Api, Backend, TestServer};

const DEV_A: &str = "70b3d57ed000a001";
const DEV_B: &str = "70b3d57ed000b001";

async fn created(api: &Api, path: &str, body: Value) -> Value {
    let (s, b) = api.post(path, body).await;
    assert_eq!(s, 201, "{path}: {b}");
    b
}

fn status_is(got: (u16, Value), want: u16, what: &str) {
    assert_eq!(got.0, want, "{what}: {}", got.1);
}

async fn scoped_keys(backend: Backend) {
    let server = TestServer::start(backend, &[]).await;
    let admin = server.client();
    let app_a = created(&admin, "/api/applications", json!({"name": "a"})).await["id"].as_str().unwrap().to_string();
    let app_b = created(&admin, "/api/applications", json!({"name": "b"})).await["id"].as_str().unwrap().to_string();
    let profile = created(
        &admin,
        "/api/device-profiles",
        json!({"name": "p", "region": "EU868", "macVersion": "1.0.3", "regParamsRevision": "RP002-1.0.3", "supportsOtaa": true}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let device = |eui: &str, app: &str| json!({"devEui": eui, "name": eui, "applicationId": app, "deviceProfileId": profile});
    created(&admin, "/api/devices", device(DEV_A, &app_a)).await;
    created(&admin, "/api/devices", device(DEV_B, &app_b)).await;

    // Keys: bad input names the field; the token is answered once.
    for (body, field) in [
        (json!({"applicationId": app_a}), "name"),
        (json!({"name": "x", "applicationId": "nope"}), "applicationId"),
        (json!({"name": "x", "applicationId": uuid::Uuid::new_v4()}), "applicationId"),
    ] {
        let (s, e) = admin.post("/api/api-keys", body.clone()).await;
        assert!(s == 400 && e["error"].as_str().unwrap().starts_with(field), "{body}: {s} {e}");
    }
    let key_a = created(&admin, "/api/api-keys", json!({"name": "app a", "applicationId": app_a})).await;
    let reader_a = created(&admin, "/api/api-keys", json!({"name": "reader a", "applicationId": app_a, "readOnly": true})).await;
    let admin_reader = created(&admin, "/api/api-keys", json!({"name": "dashboards", "readOnly": true})).await;
    assert_eq!(key_a["applicationId"], app_a.as_str());
    let (s, list) = admin.get("/api/api-keys").await;
    assert_eq!(s, 200);
    assert_eq!(list["totalCount"], 3, "{list}");
    assert!(list["result"].as_array().unwrap().iter().all(|k| k.get("token").is_none() && k["id"].is_string()), "{list}");
    let with = |k: &Value| server.client().with_token(Some(k["token"].as_str().unwrap()));
    let (a, ra, ar) = (with(&key_a), with(&reader_a), with(&admin_reader));

    // Its own application, with everything under it.
    status_is(a.get(&format!("/api/devices/{DEV_A}")).await, 200, "own device");
    status_is(a.get(&format!("/api/devices/{DEV_A}/uplinks")).await, 200, "own history");
    status_is(a.get(&format!("/api/devices/{DEV_A}/measurements")).await, 200, "own measurements");
    status_is(a.post(&format!("/api/devices/{DEV_A}/queue"), json!({"fPort": 1, "data": "AQI="})).await, 201, "own queue");
    status_is(a.get(&format!("/api/applications/{app_a}")).await, 200, "own application");
    status_is(a.put(&format!("/api/applications/{app_a}"), json!({"name": "a2"})).await, 200, "rename own application");
    status_is(a.get(&format!("/api/applications/{app_a}/measurements/temperature")).await, 200, "own series");
    let (_, apps) = a.get("/api/applications").await;
    assert_eq!(apps["result"].as_array().unwrap().iter().map(|x| x["id"].clone()).collect::<Vec<_>>(), [json!(app_a)], "{apps}");
    let (_, devs) = a.get("/api/devices").await;
    assert_eq!(devs["result"].as_array().unwrap().iter().map(|x| x["devEui"].clone()).collect::<Vec<_>>(), [json!(DEV_A)], "{devs}");
    status_is(a.post("/api/devices", device("70b3d57ed000a002", &app_a)).await, 201, "device in own application");
    status_is(a.get("/api/device-profiles").await, 200, "shared profiles are readable");

    // Another application's device does not exist for it; other applications and admin-only
    // resources are forbidden.
    for path in [
        format!("/api/devices/{DEV_B}"),
        format!("/api/devices/{DEV_B}/uplinks"),
        format!("/api/devices/{DEV_B}/events"),
        format!("/api/devices/{DEV_B}/keys"),
        format!("/api/devices/{DEV_B}/measurements"),
    ] {
        status_is(a.get(&path).await, 404, &path);
    }
    status_is(a.post(&format!("/api/devices/{DEV_B}/queue"), json!({"fPort": 1, "data": "AQI="})).await, 404, "other queue");
    status_is(a.delete(&format!("/api/devices/{DEV_B}")).await, 404, "delete other device");
    status_is(a.get(&format!("/api/applications/{app_b}")).await, 403, "other application");
    status_is(a.get(&format!("/api/applications/{app_b}/measurements/temperature")).await, 403, "other series");
    status_is(a.get(&format!("/api/devices?applicationId={app_b}")).await, 403, "other devices");
    status_is(a.post("/api/devices", device("70b3d57ed000a003", &app_b)).await, 403, "device in other application");
    status_is(a.put(&format!("/api/devices/{DEV_A}"), device(DEV_A, &app_b)).await, 403, "move to other application");
    status_is(a.post("/api/applications", json!({"name": "c"})).await, 403, "create application");
    status_is(a.get("/api/gateways").await, 403, "gateways");
    status_is(a.post("/api/gateways", json!({"gatewayId": "0102030405060708", "name": "g"})).await, 403, "create gateway");
    status_is(a.get("/api/api-keys").await, 403, "api keys");
    status_is(a.post("/api/device-profiles", json!({"name": "q"})).await, 403, "create profile");
    // Nothing of application b changed.
    status_is(admin.get(&format!("/api/devices/{DEV_B}")).await, 200, "b's device still there");

    // Read-only keys read and never write.
    status_is(ra.get(&format!("/api/devices/{DEV_A}")).await, 200, "read-only reads");
    status_is(ra.delete(&format!("/api/devices/{DEV_A}")).await, 403, "read-only delete");
    status_is(ra.post(&format!("/api/devices/{DEV_A}/queue"), json!({"fPort": 1, "data": "AQI="})).await, 403, "read-only enqueue");
    status_is(ra.get(&format!("/api/devices/{DEV_B}")).await, 404, "read-only, other application");
    status_is(ar.get("/api/gateways").await, 200, "admin reader reads gateways");
    status_is(ar.get(&format!("/api/devices/{DEV_B}")).await, 200, "admin reader reads every application");
    status_is(ar.post("/api/gateways", json!({"gatewayId": "0102030405060708", "name": "g"})).await, 403, "admin reader writes");
    status_is(ar.delete(&format!("/api/api-keys/{}", key_a["id"].as_str().unwrap())).await, 403, "admin reader revokes");

    // Revoked: refused at the next request.
    status_is(admin.delete(&format!("/api/api-keys/{}", key_a["id"].as_str().unwrap())).await, 204, "revoke");
    status_is(a.get(&format!("/api/devices/{DEV_A}")).await, 401, "revoked key");
    status_is(admin.delete(&format!("/api/api-keys/{}", key_a["id"].as_str().unwrap())).await, 404, "revoke twice");
    status_is(ra.get(&format!("/api/devices/{DEV_A}")).await, 200, "other keys unaffected");

    // Keys of a deleted application go with it.
    status_is(admin.delete(&format!("/api/devices/{DEV_A}")).await, 204, "delete device");
    status_is(admin.delete("/api/devices/70b3d57ed000a002").await, 204, "delete device");
    status_is(admin.delete(&format!("/api/applications/{app_a}")).await, 204, "delete application");
    status_is(ra.get("/api/applications").await, 401, "key of a deleted application");
}

#[tokio::test]
async fn scoped_api_keys_on_sqlite() {
    scoped_keys(Backend::Sqlite).await;
}

#[tokio::test]
async fn scoped_api_keys_on_postgres() {
    scoped_keys(Backend::Postgres).await;
}
