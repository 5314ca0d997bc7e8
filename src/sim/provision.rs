//! REST provisioning of simulated gateways and devices (DESIGN.md §3). Idempotent, so that a
//! rerun reuses what an earlier run created: 409 on create means "already there".

use loraflow_network_server::types::{AesKey, DevAddr, Eui64};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::device::Session;

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

    /// The id of the application called `name`, created if there is none.
    pub async fn ensure_application(&self, name: &str) -> Result<String, ApiError> {
        let path = "/api/applications";
        if let Some(app) = self.list_all(path).await?.into_iter().find(|a| a["name"] == name) {
            return Self::id_of(Method::GET, path, &app);
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
        let body = json!({"gatewayId": eui.to_string(), "name": name, "description": "virtual gateway (loraflow simulate/bench)"});
        self.expect(Method::POST, "/api/gateways", Some(body), &[StatusCode::CREATED, StatusCode::CONFLICT]).await.map(drop)
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

/// A DevAddr for ABP device `index`: NetID 000000 (type 0, NwkID 0, LoRaWAN Backend Interfaces
/// 1.0 §13) leaves 25 bits of NwkAddr; `offset` spreads runs apart.
pub fn abp_dev_addr(offset: u32, index: u32) -> DevAddr {
    DevAddr::from_u32(offset.wrapping_add(index) & 0x01ff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abp_addresses_stay_inside_net_id_zero() {
        assert_eq!(abp_dev_addr(0x01ff_ffff, 1), DevAddr::from_u32(0));
        assert_eq!(abp_dev_addr(5, 2).as_u32() >> 25, 0);
    }
}
