//! REST set-up shared by the end-to-end tests.

use serde_json::json;

use super::Api;

pub struct Provisioned {
    pub application_id: String,
    pub device_profile_id: String,
}

/// One application and one EU868 LoRaWAN 1.0.3 OTAA profile with the given codec.
pub async fn application_and_profile(api: &Api, codec: &str, script: &str) -> Provisioned {
    let (s, app) = api.post("/api/applications", json!({"name": "test-app"})).await;
    assert_eq!(s, 201, "{app}");
    let (s, dp) = api
        .post(
            "/api/device-profiles",
            json!({"name": "eu868-1.0.3", "region": "EU868", "macVersion": "1.0.3", "regParamsRevision": "RP002-1.0.3",
                   "supportsOtaa": true, "supportsClassC": false, "adrEnabled": false,
                   "payloadCodec": codec, "payloadCodecScript": script}),
        )
        .await;
    assert_eq!(s, 201, "{dp}");
    Provisioned { application_id: app["id"].as_str().unwrap().into(), device_profile_id: dp["id"].as_str().unwrap().into() }
}

pub async fn gateway(api: &Api, gateway_id: &str) {
    let (s, b) = api.post("/api/gateways", json!({"gatewayId": gateway_id, "name": format!("gw-{gateway_id}")})).await;
    assert_eq!(s, 201, "{b}");
}

pub async fn otaa_device(api: &Api, p: &Provisioned, dev_eui: &str, app_key: &str) {
    let (s, b) = api
        .post("/api/devices", json!({"devEui": dev_eui, "name": format!("dev-{dev_eui}"), "applicationId": p.application_id, "deviceProfileId": p.device_profile_id}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api.put(&format!("/api/devices/{dev_eui}/keys"), json!({"appKey": app_key})).await;
    assert_eq!(s, 200, "{b}");
}

pub async fn abp_device(api: &Api, p: &Provisioned, dev_eui: &str, dev_addr: &str, nwk_s_key: &str, app_s_key: &str) {
    let (s, b) = api
        .post("/api/devices", json!({"devEui": dev_eui, "name": format!("dev-{dev_eui}"), "applicationId": p.application_id, "deviceProfileId": p.device_profile_id}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .post(&format!("/api/devices/{dev_eui}/activate"), json!({"devAddr": dev_addr, "nwkSKey": nwk_s_key, "appSKey": app_s_key}))
        .await;
    assert_eq!(s, 200, "{b}");
}
