//! Gateways and applications over REST, with auth and the error model, on both backends.

mod common;

use common::{Backend, TestServer};
use serde_json::json;

async fn gateways_crud_and_errors(backend: Backend) {
    let server = TestServer::start(backend, &[]).await;
    let api = server.client();

    // Auth: missing and wrong token are 401, health and metrics are open.
    assert_eq!(api.with_token(None).get("/api/gateways").await.0, 401);
    assert_eq!(api.with_token(Some("wrong")).get("/api/gateways").await.0, 401);
    assert_eq!(api.with_token(None).get("/health").await, (200, json!({"status": "ok", "mqtt": "connected"})));
    assert_eq!(api.with_token(None).get("/metrics").await.0, 200);

    // Create.
    let (s, gw) = api
        .post(
            "/api/gateways",
            json!({"gatewayId": "0102030405060708", "name": "roof", "location": {"latitude": 52.1, "longitude": 5.2, "altitude": 10.0}}),
        )
        .await;
    assert_eq!(s, 201, "{gw}");
    assert_eq!(gw["gatewayId"], "0102030405060708");
    assert_eq!(gw["lastSeenAt"], serde_json::Value::Null);
    assert_eq!(gw["location"]["latitude"], 52.1);

    // Upper case in, lower case out; duplicates are 409 whatever the case.
    let (s, e) = api.post("/api/gateways", json!({"gatewayId": "0102030405060708", "name": "again"})).await;
    assert_eq!(s, 409, "{e}");
    let (s, gw2) = api.post("/api/gateways", json!({"gatewayId": "AABBCCDDEEFF0011", "name": "tower"})).await;
    assert_eq!(s, 201);
    assert_eq!(gw2["gatewayId"], "aabbccddeeff0011");

    // 400 naming the field.
    let (s, e) = api.post("/api/gateways", json!({"gatewayId": "010203040506070", "name": "short"})).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("gatewayId"), "{e}");
    let (s, e) = api.post("/api/gateways", json!({"gatewayId": "0102030405060709"})).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("name"), "{e}");
    let (s, e) = api
        .post("/api/gateways", json!({"gatewayId": "0102030405060709", "name": "x", "location": {"latitude": 91, "longitude": 0}}))
        .await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("location.latitude"), "{e}");
    let (s, e) = api.post("/api/gateways", json!({"gatewayId": "0102030405060709", "name": 5})).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("name"), "{e}");
    let (s, e) = api.get("/api/gateways?limit=5000").await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("limit"), "{e}");

    // Read, list (oldest first), update, delete, 404.
    let (s, got) = api.get("/api/gateways/0102030405060708").await;
    assert_eq!(s, 200);
    assert_eq!(got["name"], "roof");
    let (s, list) = api.get("/api/gateways").await;
    assert_eq!(s, 200);
    assert_eq!(list["totalCount"], 2);
    assert_eq!(list["result"][0]["gatewayId"], "0102030405060708");
    let (s, page) = api.get("/api/gateways?limit=1&offset=1").await;
    assert_eq!(s, 200);
    assert_eq!(page["totalCount"], 2);
    assert_eq!(page["result"].as_array().unwrap().len(), 1);
    assert_eq!(page["result"][0]["gatewayId"], "aabbccddeeff0011");

    let (s, up) = api.put("/api/gateways/0102030405060708", json!({"name": "roof-2", "description": "moved"})).await;
    assert_eq!(s, 200, "{up}");
    assert_eq!(up["name"], "roof-2");
    assert_eq!(up["location"], serde_json::Value::Null);
    // A GET body can be sent back as is.
    let (_, got) = api.get("/api/gateways/0102030405060708").await;
    assert_eq!(api.put("/api/gateways/0102030405060708", got.clone()).await.0, 200);

    assert_eq!(api.get("/api/gateways/0000000000000001").await.0, 404);
    assert_eq!(api.put("/api/gateways/0000000000000001", json!({"name": "x"})).await.0, 404);
    assert_eq!(api.delete("/api/gateways/0000000000000001").await.0, 404);
    assert_eq!(api.get("/api/gateways/xyz").await.0, 400);
    assert_eq!(api.delete("/api/gateways/aabbccddeeff0011").await.0, 204);
    assert_eq!(api.get("/api/gateways/aabbccddeeff0011").await.0, 404);

    // Applications.
    let (s, app) = api.post("/api/applications", json!({"name": "sensors", "description": "d"})).await;
    assert_eq!(s, 201, "{app}");
    let id = app["id"].as_str().unwrap().to_string();
    let (s, e) = api.post("/api/applications", json!({"name": ""})).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("name"), "{e}");
    assert_eq!(api.get(&format!("/api/applications/{id}")).await.1["name"], "sensors");
    let (s, up) = api.put(&format!("/api/applications/{id}"), json!({"name": "meters"})).await;
    assert_eq!((s, up["name"].as_str()), (200, Some("meters")));
    assert_eq!(api.get("/api/applications").await.1["totalCount"], 1);
    assert_eq!(api.get("/api/applications/not-a-uuid").await.0, 400);
    assert_eq!(api.get("/api/applications/00000000-0000-0000-0000-000000000000").await.0, 404);

    // Restart keeps the data.
    let server = server.restart();
    let api = server.client();
    let (s, got) = api.get("/api/gateways/0102030405060708").await;
    assert_eq!(s, 200);
    assert_eq!(got["name"], "roof-2");
    assert_eq!(api.get(&format!("/api/applications/{id}")).await.0, 200);
    assert_eq!(api.delete(&format!("/api/applications/{id}")).await.0, 204);
    assert_eq!(api.get(&format!("/api/applications/{id}")).await.0, 404);
}

#[tokio::test]
async fn gateways_crud_auth_and_errors_on_sqlite() {
    gateways_crud_and_errors(Backend::Sqlite).await;
}

#[tokio::test]
async fn gateways_crud_auth_and_errors_on_postgres() {
    gateways_crud_and_errors(Backend::Postgres).await;
}
