//! `/api/devices/{devEui}/keys`: the OTAA root keys, and `/dev-nonces`: forgetting the
//! DevNonces a device has used so that a reset device can join again.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use loraflow_network_server::storage::{DeviceKeys, StorageError};
use loraflow_network_server::types::{AesKey, Eui64};

use super::devices::{existing_device, parse_key};
use super::error::ApiError;
use super::extract::ApiJson;
use super::gateways::parse_eui;
use super::openapi::{ReadErrors, WriteErrors};
use super::ApiState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeysBody {
    /// 32 hex characters.
    #[schema(value_type = String, required = true, pattern = "^[0-9a-fA-F]{32}$")]
    app_key: Option<String>,
    /// LoRaWAN 1.1 only; `null` (as a GET of a 1.0.x device shows) means none.
    /// 32 hex characters.
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    nwk_key: Option<String>,
    // Read-only field a client may echo back from a GET.
    #[serde(default)]
    /// 16 hex characters.
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    dev_eui: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeysJson {
    #[schema(value_type = String)]
    dev_eui: Eui64,
    #[schema(value_type = String)]
    app_key: AesKey,
    #[schema(value_type = Option<String>)]
    nwk_key: Option<AesKey>,
}

impl From<DeviceKeys> for KeysJson {
    fn from(k: DeviceKeys) -> Self {
        KeysJson { dev_eui: k.dev_eui, app_key: k.app_key, nwk_key: k.nwk_key }
    }
}

fn validated(dev_eui: Eui64, body: KeysBody) -> Result<DeviceKeys, ApiError> {
    if let Some(b) = body.dev_eui.as_deref() {
        if parse_eui("devEui", b)? != dev_eui {
            return Err(ApiError::field("devEui", "does not match the path"));
        }
    }
    let app_key = parse_key("appKey", body.app_key.as_deref().ok_or_else(|| ApiError::field("appKey", "is required"))?)?;
    let nwk_key = body.nwk_key.as_deref().map(|k| parse_key("nwkKey", k)).transpose()?;
    Ok(DeviceKeys { dev_eui, app_key, nwk_key })
}

#[utoipa::path(
    operation_id = "device_keys_put",
    summary = "Set a device's OTAA root keys",
    put,
    path = "/devices/{dev_eui}/keys",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    request_body = KeysBody,
    responses((status = 200, body = KeysJson), WriteErrors)
)]
pub async fn put(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<KeysBody>,
) -> Result<Json<KeysJson>, ApiError> {
    let dev_eui = parse_eui("devEui", &id)?;
    let keys = validated(dev_eui, body)?;
    existing_device(&state, dev_eui).await?;
    state.network.set_device_keys(&keys).await?;
    Ok(Json(keys.into()))
}

#[utoipa::path(
    operation_id = "device_keys_get",
    summary = "Get a device's OTAA root keys",
    get,
    path = "/devices/{dev_eui}/keys",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, body = KeysJson), ReadErrors)
)]
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<KeysJson>, ApiError> {
    let dev_eui = parse_eui("devEui", &id)?;
    existing_device(&state, dev_eui).await?;
    match state.storage.devices.get_keys(dev_eui).await {
        Err(StorageError::NotFound) => Err(ApiError::NotFound(format!("device {dev_eui} has no keys"))),
        other => Ok(Json(other?.into())),
    }
}

#[utoipa::path(
    operation_id = "device_keys_delete_dev_nonces",
    summary = "Forget the DevNonces a device used, so that a reset device can join again",
    delete,
    path = "/devices/{dev_eui}/dev-nonces",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 204, description = "The used DevNonces are forgotten"), WriteErrors)
)]
pub async fn delete_dev_nonces(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let dev_eui = parse_eui("devEui", &id)?;
    existing_device(&state, dev_eui).await?;
    // The join path may remember the highest DevNonce (LoRaWAN 1.0.4 §6.2.5) with the device:
    // the network server re-reads it.
    state.network.clear_dev_nonces(dev_eui).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: Eui64 = Eui64([1, 2, 3, 4, 5, 6, 7, 8]);

    fn keys(json: &str) -> Result<DeviceKeys, ApiError> {
        validated(DEV, super::super::extract::parse_json(json.as_bytes())?)
    }

    #[test]
    fn an_app_key_alone_is_a_1_0_device() {
        let k = keys(r#"{"appKey":"000102030405060708090A0B0C0D0E0F"}"#).unwrap();
        assert_eq!(k.app_key.to_hex(), "000102030405060708090a0b0c0d0e0f");
        assert_eq!(k.nwk_key, None);
    }

    #[test]
    fn a_get_body_can_be_sent_back() {
        let k = keys(r#"{"devEui":"0102030405060708","appKey":"000102030405060708090a0b0c0d0e0f","nwkKey":null}"#).unwrap();
        assert_eq!(k.dev_eui, DEV);
    }

    #[test]
    fn bad_keys_name_their_field() {
        assert!(keys(r#"{}"#).unwrap_err().to_string().starts_with("appKey: "));
        assert!(keys(r#"{"appKey":"00"}"#).unwrap_err().to_string().starts_with("appKey: "));
        let e = keys(r#"{"appKey":"000102030405060708090a0b0c0d0e0f","nwkKey":"xyz"}"#).unwrap_err().to_string();
        assert!(e.starts_with("nwkKey: "), "{e}");
        let e = keys(r#"{"devEui":"0102030405060709","appKey":"000102030405060708090a0b0c0d0e0f"}"#).unwrap_err().to_string();
        assert!(e.starts_with("devEui: "), "{e}");
        assert!(keys(r#"{"appKey":"000102030405060708090a0b0c0d0e0f","genAppKey":"x"}"#).is_err());
    }
}
