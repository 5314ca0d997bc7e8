//! REST provisioning of simulated gateways and devices (DESIGN.md §3). Idempotent, so that a
//! rerun reuses what an earlier run created: 409 on create means "already there".

use loraflow_network_server::types::{AesKey, DevAddr, Eui64};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use std::collections::BTreeSet;

use super::device::Session;
use super::plan::RadioPlan;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {path}: {source}")]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status { method: Method, path: String, status: StatusCode, body: String },
    #[error("{method} {path}: unexpected response {body}")]
    Shape { method: Method, path: String, body: String },
}

/// What the simulator's device profile says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileSpec<'a> {
    /// `NONE`, `CAYENNE_LPP`.
    pub codec: &'a str,
    pub adr: bool,
    pub class_c: bool,
    /// The region's common name, e.g. `US915`.
    pub region: &'a str,
}

impl Default for ProfileSpec<'_> {
    fn default() -> Self {
        ProfileSpec { codec: "NONE", adr: false, class_c: false, region: "EU868" }
    }
}

/// A REST client with the admin token.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// Page size for list calls (the API's maximum).
const PAGE: usize = 1000;

impl Api {
    /// `base` like `http://127.0.0.1:8080` (a trailing slash is ignored).
    pub fn new(base: &str, token: &str) -> Api {
        Api { base: base.trim_end_matches('/').to_string(), token: token.to_string(), http: reqwest::Client::new() }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value), ApiError> {
        let mut req = self.http.request(method.clone(), format!("{}{}", self.base, path)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let transport = |source| ApiError::Transport { method: method.clone(), path: path.to_string(), source };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Calls and requires one of `ok`.
    async fn expect(&self, method: Method, path: &str, body: Option<Value>, ok: &[StatusCode]) -> Result<(StatusCode, Value), ApiError> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        if ok.contains(&status) {
            Ok((status, value))
        } else {
            Err(ApiError::Status { method, path: path.to_string(), status, body: value.to_string() })
        }
    }

    /// Every item of a list endpoint, page by page.
    async fn list_all(&self, path: &str) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        loop {
            let page = format!("{path}?limit={PAGE}&offset={}", out.len());
            let (_, v) = self.expect(Method::GET, &page, None, &[StatusCode::OK]).await?;
            let Some(items) = v["result"].as_array() else {
                return Err(ApiError::Shape { method: Method::GET, path: page, body: v.to_string() });
            };
            let n = items.len();
            out.extend(items.iter().cloned());
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    fn id_of(method: Method, path: &str, v: &Value) -> Result<String, ApiError> {
        v["id"].as_str().map(str::to_string).ok_or_else(|| ApiError::Shape { method, path: path.to_string(), body: v.to_string() })
    }

    /// The id of the application called `name`, if there is one.
    pub async fn find_application(&self, name: &str) -> Result<Option<String>, ApiError> {
        let path = "/api/applications";
        match self.list_all(path).await?.into_iter().find(|a| a["name"] == name) {
            Some(app) => Self::id_of(Method::GET, path, &app).map(Some),
            None => Ok(None),
        }
    }

    /// The id of the application called `name`, created if there is none.
    pub async fn ensure_application(&self, name: &str) -> Result<String, ApiError> {
        let path = "/api/applications";
        if let Some(id) = self.find_application(name).await? {
            return Ok(id);
        }
        let body = json!({"name": name, "description": "created by loraflow simulate/bench"});
        let (_, v) = self.expect(Method::POST, path, Some(body), &[StatusCode::CREATED]).await?;
        Self::id_of(Method::POST, path, &v)
    }

    /// The id of the EU868 LoRaWAN 1.0.3 OTAA profile called `name`, created or updated to use
    /// `codec` (`NONE`, `CAYENNE_LPP`), without ADR.
    pub async fn ensure_device_profile(&self, name: &str, codec: &str) -> Result<String, ApiError> {
        self.ensure_device_profile_with(name, codec, false).await
    }

    /// [`Api::ensure_device_profile`] with ADR allowed (`adrEnabled`) or not.
    pub async fn ensure_device_profile_with(&self, name: &str, codec: &str, adr: bool) -> Result<String, ApiError> {
        self.ensure_device_profile_spec(name, &ProfileSpec { codec, adr, ..ProfileSpec::default() }).await
    }

    /// The id of the LoRaWAN 1.0.3 OTAA profile called `name`, created, or updated when it
    /// differs from `spec`.
    pub async fn ensure_device_profile_spec(&self, name: &str, spec: &ProfileSpec<'_>) -> Result<String, ApiError> {
        let path = "/api/device-profiles";
        let body = json!({"name": name, "region": spec.region, "macVersion": "1.0.3", "regParamsRevision": "RP002-1.0.3",
                          "supportsOtaa": true, "supportsClassC": spec.class_c, "adrEnabled": spec.adr,
                          "payloadCodec": spec.codec, "payloadCodecScript": ""});
        if let Some(p) = self.list_all(path).await?.into_iter().find(|p| p["name"] == name) {
            let id = Self::id_of(Method::GET, path, &p)?;
            let same = ["payloadCodec", "adrEnabled", "supportsOtaa", "supportsClassC", "region"].iter().all(|k| p[*k] == body[*k]);
            if !same {
                self.expect(Method::PUT, &format!("{path}/{id}"), Some(body), &[StatusCode::OK, StatusCode::NO_CONTENT]).await?;
            }
            return Ok(id);
        }
        let (_, v) = self.expect(Method::POST, path, Some(body), &[StatusCode::CREATED]).await?;
        Self::id_of(Method::POST, path, &v)
    }

    /// Registers a gateway; an existing one is fine.
    pub async fn ensure_gateway(&self, eui: Eui64, name: &str) -> Result<(), ApiError> {
        self.ensure_gateway_in(eui, name, None).await
    }

    /// Registers a gateway in region config `region_config_id` (`None`: the server's default),
    /// moving an existing one there.
    pub async fn ensure_gateway_in(&self, eui: Eui64, name: &str, region_config_id: Option<&str>) -> Result<(), ApiError> {
        let mut body = json!({"gatewayId": eui.to_string(), "name": name, "description": "virtual gateway (loraflow simulate/bench)"});
        if let Some(id) = region_config_id {
            body["regionConfigId"] = json!(id);
        }
        let (status, _) =
            self.expect(Method::POST, "/api/gateways", Some(body.clone()), &[StatusCode::CREATED, StatusCode::CONFLICT]).await?;
        if status == StatusCode::CONFLICT && region_config_id.is_some() {
            self.expect(Method::PUT, &format!("/api/gateways/{eui}"), Some(body), &[StatusCode::OK, StatusCode::NO_CONTENT]).await?;
        }
        Ok(())
    }

    /// The server's region configs (`GET /api/regions`), or `None` from a server without the
    /// endpoint (one region, before region configs existed).
    pub async fn region_configs(&self) -> Result<Option<Vec<Value>>, ApiError> {
        let path = "/api/regions";
        let (status, v) = self.call(Method::GET, path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != StatusCode::OK {
            return Err(ApiError::Status { method: Method::GET, path: path.into(), status, body: v.to_string() });
        }
        match v["result"].as_array() {
            Some(items) => Ok(Some(items.clone())),
            None => Err(ApiError::Shape { method: Method::GET, path: path.into(), body: v.to_string() }),
        }
    }

    /// Creates the device, or moves an existing one into `application_id` / `profile_id`.
    /// Returns whether it existed already.
    pub async fn ensure_device(&self, dev_eui: Eui64, name: &str, application_id: &str, profile_id: &str) -> Result<bool, ApiError> {
        let body = json!({"devEui": dev_eui.to_string(), "name": name, "applicationId": application_id, "deviceProfileId": profile_id,
                          "skipFcntCheck": false, "isDisabled": false});
        let (status, _) =
            self.expect(Method::POST, "/api/devices", Some(body.clone()), &[StatusCode::CREATED, StatusCode::CONFLICT]).await?;
        if status == StatusCode::CONFLICT {
            self.expect(Method::PUT, &format!("/api/devices/{dev_eui}"), Some(body), &[StatusCode::OK, StatusCode::NO_CONTENT]).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The device's JoinEUI, or `None` when the server has no such device.
    pub async fn device_join_eui(&self, dev_eui: Eui64) -> Result<Option<Eui64>, ApiError> {
        let path = format!("/api/devices/{dev_eui}");
        let (status, v) = self.expect(Method::GET, &path, None, &[StatusCode::OK, StatusCode::NOT_FOUND]).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let shape = || ApiError::Shape { method: Method::GET, path: path.clone(), body: v.to_string() };
        v["joinEui"].as_str().and_then(|s| s.parse::<Eui64>().ok()).map(Some).ok_or_else(shape)
    }

    pub async fn set_app_key(&self, dev_eui: Eui64, app_key: &AesKey) -> Result<(), ApiError> {
        let path = format!("/api/devices/{dev_eui}/keys");
        self.expect(Method::PUT, &path, Some(json!({"appKey": app_key.to_hex()})), &[StatusCode::OK, StatusCode::NO_CONTENT])
            .await
            .map(drop)
    }

    /// Forgets the DevNonces the device used, so that it can join again from nonce 1.
    pub async fn clear_dev_nonces(&self, dev_eui: Eui64) -> Result<(), ApiError> {
        let path = format!("/api/devices/{dev_eui}/dev-nonces");
        self.expect(Method::DELETE, &path, None, &[StatusCode::OK, StatusCode::NO_CONTENT]).await.map(drop)
    }

    /// ABP activation with `session`'s keys and both frame counters at 0.
    pub async fn activate_abp(&self, dev_eui: Eui64, session: &Session) -> Result<(), ApiError> {
        let path = format!("/api/devices/{dev_eui}/activate");
        let body = json!({"devAddr": session.dev_addr.to_string(), "nwkSKey": session.nwk_s_key.to_hex(),
                          "appSKey": session.app_s_key.to_hex(), "fCntUp": 0, "fCntDown": 0});
        self.expect(Method::POST, &path, Some(body), &[StatusCode::OK, StatusCode::NO_CONTENT]).await.map(drop)
    }
}

/// The server region config (from `GET /api/regions`) the simulated gateways belong to: the
/// one with the plan's id, else the one of the same region listening on the plan's channels.
/// An error names what the server has instead, since devices on channels no gateway config
/// enables are dropped by the server.
pub fn region_config_for(plan: &RadioPlan, configs: &[Value]) -> Result<String, String> {
    if configs.iter().any(|c| c["id"].as_str() == Some(plan.id.as_str())) {
        return Ok(plan.id.clone());
    }
    let wanted: BTreeSet<u64> = plan.enabled_frequencies().into_iter().map(|(_, f)| u64::from(f)).collect();
    let same_region = |c: &&Value| c["commonName"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(plan.common_name()));
    let channels = |c: &Value| -> BTreeSet<u64> {
        c["uplinkChannels"].as_array().into_iter().flatten().filter_map(|ch| ch["frequency"].as_u64()).collect()
    };
    if let Some(c) = configs.iter().filter(same_region).find(|c| channels(c) == wanted) {
        return c["id"].as_str().map(str::to_string).ok_or_else(|| format!("region config without an id: {c}"));
    }
    let have: Vec<String> =
        configs.iter().map(|c| format!("{} ({})", c["id"].as_str().unwrap_or("?"), c["commonName"].as_str().unwrap_or("?"))).collect();
    Err(format!("the server has no {} region config on the channels of {:?} (it has: {})", plan.common_name(), plan.id, have.join(", ")))
}

/// A DevAddr for ABP device `index`: NetID 000000 (type 0, NwkID 0, LoRaWAN Backend Interfaces
/// 1.0 §13) leaves 25 bits of NwkAddr; `offset` spreads runs apart.
pub fn abp_dev_addr(offset: u32, index: u32) -> DevAddr {
    DevAddr::from_u32(offset.wrapping_add(index) & 0x01ff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str, common_name: &str, frequencies: &[u32]) -> Value {
        let channels: Vec<Value> = frequencies.iter().map(|f| json!({"frequency": f})).collect();
        json!({"id": id, "commonName": common_name, "uplinkChannels": channels})
    }

    #[test]
    fn gateways_go_to_the_config_with_the_plans_id_or_channels() {
        let eu = RadioPlan::default();
        let eu_freqs: Vec<u32> = eu.enabled_frequencies().into_iter().map(|(_, f)| f).collect();
        let configs = [config("eu868", "EU868", &eu_freqs), config("us915_1", "US915", &[903_900_000])];
        assert_eq!(region_config_for(&eu, &configs), Ok("eu868".into()));
        // Another id for the same plan: found by its channels.
        let configs = [config("main", "EU868", &eu_freqs)];
        assert_eq!(region_config_for(&eu, &configs), Ok("main".into()));
        // Same region, other channels: an error naming what there is.
        let err = region_config_for(&eu, &[config("eu3", "EU868", &eu_freqs[..3])]).unwrap_err();
        assert!(err.contains("no EU868 region config") && err.contains("eu3 (EU868)"), "{err}");
        assert!(region_config_for(&eu, &[]).is_err());
    }

    #[test]
    fn abp_addresses_stay_inside_net_id_zero() {
        assert_eq!(abp_dev_addr(0x01ff_ffff, 1), DevAddr::from_u32(0));
        assert_eq!(abp_dev_addr(5, 2).as_u32() >> 25, 0);
    }
}
