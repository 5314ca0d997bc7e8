//! The device-profile ADR knobs over REST (`adrMinDr`, `adrMaxDr`, `adrInstallationMarginDb`,
//! `devStatusReqFreq`): defaults, round trips through POST/PUT/GET/list and a restart, and a
//! 400 naming the field for every out-of-range value, on both backends.

mod common;

use common::{Api, Backend, TestServer};
use serde_json::{json, Value};

const PROFILES: &str = "/api/device-profiles";

/// The four ADR fields of a profile as returned by the API.
fn adr_fields(p: &Value) -> (Value, Value, Value, Value) {
    (p["adrMinDr"].clone(), p["adrMaxDr"].clone(), p["adrInstallationMarginDb"].clone(), p["devStatusReqFreq"].clone())
}

fn expect(min: u8, max: u8, margin: f64, freq: u32) -> (Value, Value, Value, Value) {
    (json!(min), json!(max), json!(margin), json!(freq))
}

async fn created(api: &Api, body: Value) -> Value {
    let (s, v) = api.post(PROFILES, body).await;
    assert_eq!(s, 201, "POST {PROFILES}: {v}");
    v
}

/// Asserts a 400 whose message starts with `field`.
async fn refused(call: impl std::future::Future<Output = (u16, Value)>, field: &str) -> String {
    let (s, e) = call.await;
    let msg = e["error"].as_str().unwrap_or_default().to_string();
    assert!(s == 400 && msg.starts_with(field), "expected a 400 naming {field}, got {s}: {e}");
    msg
}

async fn adr_knobs(backend: Backend) {
    let server = TestServer::start(backend, &[]).await;
    let api = server.client();

    // Without the fields: the whole EU868 ADR range, 10 dB, one DevStatusReq a day.
    let plain = created(&api, json!({"name": "plain"})).await;
    assert_eq!(adr_fields(&plain), expect(0, 5, 10.0, 1), "{plain}");
    assert_eq!(plain["adrEnabled"], true, "adrEnabled keeps its default");
    let plain_id = plain["id"].as_str().unwrap().to_string();

    // With the fields: stored as given, returned by GET and by the list.
    let tuned =
        created(&api, json!({"name": "tuned", "adrMinDr": 2, "adrMaxDr": 4, "adrInstallationMarginDb": 7.5, "devStatusReqFreq": 24})).await;
    assert_eq!(adr_fields(&tuned), expect(2, 4, 7.5, 24), "{tuned}");
    let tuned_id = tuned["id"].as_str().unwrap().to_string();
    let (s, got) = api.get(&format!("{PROFILES}/{tuned_id}")).await;
    assert_eq!(s, 200);
    assert_eq!(adr_fields(&got), expect(2, 4, 7.5, 24), "{got}");
    let (_, list) = api.get(PROFILES).await;
    assert_eq!(adr_fields(&list["result"][0]), expect(0, 5, 10.0, 1), "{list}");
    assert_eq!(adr_fields(&list["result"][1]), expect(2, 4, 7.5, 24), "{list}");

    // The edges of each range are accepted; 0 turns DevStatusReq off.
    let edges =
        created(&api, json!({"name": "edges", "adrMinDr": 5, "adrMaxDr": 5, "adrInstallationMarginDb": 30, "devStatusReqFreq": 288})).await;
    assert_eq!(adr_fields(&edges), expect(5, 5, 30.0, 288), "{edges}");
    let off =
        created(&api, json!({"name": "off", "adrMinDr": 0, "adrMaxDr": 0, "adrInstallationMarginDb": 0, "devStatusReqFreq": 0})).await;
    assert_eq!(adr_fields(&off), expect(0, 0, 0.0, 0), "{off}");

    // Out of range: 400 naming the field, nothing created.
    let bad = [
        (json!({"adrMinDr": 6}), "adrMinDr"),
        (json!({"adrMinDr": -1}), "adrMinDr"),
        (json!({"adrMaxDr": 6}), "adrMaxDr"),
        (json!({"adrMaxDr": 15}), "adrMaxDr"),
        (json!({"adrMinDr": 4, "adrMaxDr": 3}), "adrMinDr"),
        (json!({"adrInstallationMarginDb": -1}), "adrInstallationMarginDb"),
        (json!({"adrInstallationMarginDb": 31}), "adrInstallationMarginDb"),
        (json!({"adrInstallationMarginDb": "10"}), "adrInstallationMarginDb"),
        (json!({"devStatusReqFreq": 289}), "devStatusReqFreq"),
        (json!({"devStatusReqFreq": -1}), "devStatusReqFreq"),
        (json!({"devStatusReqFreq": 0.5}), "devStatusReqFreq"),
    ];
    for (fields, field) in &bad {
        let mut body = json!({"name": "bad"});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        refused(api.post(PROFILES, body.clone()), field).await;
        refused(api.put(&format!("{PROFILES}/{tuned_id}"), body), field).await;
    }
    let msg = refused(api.post(PROFILES, json!({"name": "bad", "adrMaxDr": 6})), "adrMaxDr").await;
    assert!(msg.contains("DR0-DR5"), "the message gives the range: {msg}");
    // Only a min: the max stays at the region's top.
    let fast = created(&api, json!({"name": "fast", "adrMinDr": 5})).await;
    assert_eq!(adr_fields(&fast), expect(5, 5, 10.0, 1), "{fast}");
    assert_eq!(api.get(PROFILES).await.1["totalCount"], 5, "no bad profile was stored");
    assert_eq!(adr_fields(&api.get(&format!("{PROFILES}/{tuned_id}")).await.1), expect(2, 4, 7.5, 24), "bad PUTs changed nothing");

    // PUT replaces the whole profile: given fields are stored, omitted ones go back to defaults.
    let (s, up) = api
        .put(
            &format!("{PROFILES}/{plain_id}"),
            json!({"name": "plain", "adrMaxDr": 3, "adrInstallationMarginDb": 15.5, "devStatusReqFreq": 0}),
        )
        .await;
    assert_eq!(s, 200, "{up}");
    assert_eq!(adr_fields(&up), expect(0, 3, 15.5, 0), "{up}");
    let (s, up) = api.put(&format!("{PROFILES}/{tuned_id}"), json!({"name": "tuned"})).await;
    assert_eq!(s, 200, "{up}");
    assert_eq!(adr_fields(&up), expect(0, 5, 10.0, 1), "{up}");
    // A GET echoed back is a valid PUT and changes nothing.
    let (_, got) = api.get(&format!("{PROFILES}/{plain_id}")).await;
    let (s, again) = api.put(&format!("{PROFILES}/{plain_id}"), got.clone()).await;
    assert_eq!((s, adr_fields(&again)), (200, adr_fields(&got)), "{again}");

    // The ADR decision counter is exported with every direction from the start.
    let (_, metrics) = api.with_token(None).get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    for direction in ["up", "down", "nb_trans", "same"] {
        assert!(
            metrics.contains(&format!("loraflow_adr_decisions_total{{direction=\"{direction}\"}} 0")),
            "direction {direction} missing from /metrics"
        );
    }

    // Everything survives a restart.
    let server = server.restart();
    let api = server.client();
    assert_eq!(adr_fields(&api.get(&format!("{PROFILES}/{plain_id}")).await.1), expect(0, 3, 15.5, 0));
    assert_eq!(adr_fields(&api.get(&format!("{PROFILES}/{}", edges["id"].as_str().unwrap())).await.1), expect(5, 5, 30.0, 288));
}

#[tokio::test]
async fn profile_adr_knobs_on_sqlite() {
    adr_knobs(Backend::Sqlite).await;
}

#[tokio::test]
async fn profile_adr_knobs_on_postgres() {
    adr_knobs(Backend::Postgres).await;
}
