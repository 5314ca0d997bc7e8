//! `/api/devices/{devEui}/activate` (ABP) and `/activation` (the current session, ABP or OTAA).

use axum::extract::{Path, State};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use loraflow_network_server::dev_addr;
use loraflow_network_server::mac::state::{MacState, RxParams};
use loraflow_network_server::region::{self, Region};
use loraflow_network_server::storage::{DeviceSession, StorageError};
use loraflow_network_server::types::{AesKey, DevAddr, Eui64};

use super::device_profiles::existing_profile;
use super::devices::{existing_device, parse_dev_addr, parse_key};
use super::error::ApiError;
use super::extract::ApiJson;
use super::gateways::parse_eui;
use super::openapi::{ReadErrors, WriteErrors};
use super::ApiState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivateBody {
    /// 8 hex characters.
    #[schema(value_type = String, required = true, pattern = "^[0-9a-fA-F]{8}$")]
    dev_addr: Option<String>,
    /// 32 hex characters.
    #[schema(value_type = String, required = true, pattern = "^[0-9a-fA-F]{32}$")]
    app_s_key: Option<String>,
    /// 32 hex characters; for LoRaWAN 1.0.x the one network session key.
    #[schema(value_type = String, required = true, pattern = "^[0-9a-fA-F]{32}$")]
    nwk_s_key: Option<String>,
    #[serde(default)]
    f_cnt_up: u32,
    #[serde(default)]
    f_cnt_down: u32,
    // LoRaWAN 1.1 session keys. A GET of a 1.0.x session shows them all equal to nwkSKey,
    // so an echoed GET body is accepted; anything else is a 1.1 activation.
    /// 32 hex characters.
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    f_nwk_s_int_key: Option<String>,
    /// 32 hex characters.
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    s_nwk_s_int_key: Option<String>,
    /// 32 hex characters.
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    nwk_s_enc_key: Option<String>,
    /// Shown by GET; ignored here so that an echoed GET body is accepted (an activation starts
    /// from the region's defaults).
    #[allow(dead_code)]
    #[schema(ignore)]
    radio: Option<serde::de::IgnoredAny>,
}

/// The session as `GET .../activation` shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivationJson {
    #[schema(value_type = String)]
    dev_addr: DevAddr,
    #[schema(value_type = String)]
    app_s_key: AesKey,
    /// For 1.0.x the one network session key; equal to the three 1.1 keys below.
    #[schema(value_type = String)]
    nwk_s_key: AesKey,
    #[schema(value_type = String)]
    f_nwk_s_int_key: AesKey,
    #[schema(value_type = String)]
    s_nwk_s_int_key: AesKey,
    #[schema(value_type = String)]
    nwk_s_enc_key: AesKey,
    /// Next expected uplink frame counter.
    f_cnt_up: u32,
    /// Next downlink frame counter.
    f_cnt_down: u32,
    radio: RadioJson,
}

/// The radio settings the network server believes the device uses: those of the last
/// LinkADRReq the device acknowledged (ADR, LoRaWAN 1.0.4 §5.3).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RadioJson {
    /// Data rate set by the last acknowledged LinkADRReq; null before any.
    dr: Option<u8>,
    /// TXPower index (0 = the region's maximum EIRP, each step 2 dB less).
    tx_power_index: u8,
    /// Transmissions of each uplink.
    nb_trans: u8,
}

impl From<&DeviceSession> for ActivationJson {
    fn from(s: &DeviceSession) -> Self {
        ActivationJson {
            dev_addr: s.dev_addr,
            app_s_key: s.app_s_key,
            nwk_s_key: s.f_nwk_s_int_key,
            f_nwk_s_int_key: s.f_nwk_s_int_key,
            s_nwk_s_int_key: s.s_nwk_s_int_key,
            nwk_s_enc_key: s.nwk_s_enc_key,
            f_cnt_up: s.f_cnt_up,
            f_cnt_down: s.n_f_cnt_down,
            radio: RadioJson { dr: s.mac_state.dr, tx_power_index: s.mac_state.tx_power_index, nb_trans: s.mac_state.nb_trans },
        }
    }
}

/// What an ABP activation of a LoRaWAN 1.0.x device consists of.
#[derive(Debug, Clone, PartialEq)]
struct Abp {
    dev_addr: DevAddr,
    app_s_key: AesKey,
    nwk_s_key: AesKey,
    f_cnt_up: u32,
    f_cnt_down: u32,
}

fn validated(body: ActivateBody) -> Result<Abp, ApiError> {
    let dev_addr = parse_dev_addr("devAddr", body.dev_addr.as_deref().ok_or_else(|| ApiError::field("devAddr", "is required"))?)?;
    let app_s_key = parse_key("appSKey", body.app_s_key.as_deref().ok_or_else(|| ApiError::field("appSKey", "is required"))?)?;
    let nwk_s_key = body.nwk_s_key.as_deref().map(|k| parse_key("nwkSKey", k)).transpose()?;
    for (field, value) in
        [("fNwkSIntKey", &body.f_nwk_s_int_key), ("sNwkSIntKey", &body.s_nwk_s_int_key), ("nwkSEncKey", &body.nwk_s_enc_key)]
    {
        let Some(v) = value.as_deref() else { continue };
        let same_as_nwk_s_key = matches!((parse_key(field, v), nwk_s_key), (Ok(k), Some(n)) if k == n);
        if !same_as_nwk_s_key {
            return Err(ApiError::field(field, "LoRaWAN 1.1 not supported yet (give nwkSKey for a 1.0.x device)"));
        }
    }
    let nwk_s_key = nwk_s_key.ok_or_else(|| ApiError::field("nwkSKey", "is required"))?;
    Ok(Abp { dev_addr, app_s_key, nwk_s_key, f_cnt_up: body.f_cnt_up, f_cnt_down: body.f_cnt_down })
}

/// An ABP device starts on the region's default RX settings (it was told nothing else); the
/// network server sends RXParamSetupReq / RXTimingSetupReq when `network.rx*` differ.
fn session(dev_eui: Eui64, abp: &Abp, mac_version: String, region: &dyn Region) -> DeviceSession {
    let now = Utc::now();
    // An ABP device was told nothing: it starts on the region's RX settings; the network's
    // own follow in RXParamSetupReq / RXTimingSetupReq.
    let rx = RxParams::region_defaults(region);
    DeviceSession {
        dev_eui,
        dev_addr: abp.dev_addr,
        mac_version,
        // LoRaWAN 1.0.x has one network session key; the 1.1 key slots all hold it.
        f_nwk_s_int_key: abp.nwk_s_key,
        s_nwk_s_int_key: abp.nwk_s_key,
        nwk_s_enc_key: abp.nwk_s_key,
        app_s_key: abp.app_s_key,
        f_cnt_up: abp.f_cnt_up,
        n_f_cnt_down: abp.f_cnt_down,
        rx1_delay: rx.rx1_delay,
        rx1_dr_offset: rx.rx1_dr_offset,
        rx2_dr: rx.rx2_dr,
        rx2_frequency: rx.rx2_frequency,
        pending_ack_f_cnt: None,
        is_otaa: false,
        mac_state: MacState::default(),
        created_at: now,
        updated_at: now,
    }
}

#[utoipa::path(
    operation_id = "device_activation_activate",
    summary = "Activate a device by personalization (ABP, LoRaWAN 1.0.x)",
    post,
    path = "/devices/{dev_eui}/activate",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    request_body = ActivateBody,
    responses((status = 200, description = "The new ABP session", body = ActivationJson), WriteErrors)
)]
pub async fn activate(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ActivateBody>,
) -> Result<Json<ActivationJson>, ApiError> {
    let dev_eui = parse_eui("devEui", &id)?;
    let abp = validated(body)?;
    let device = existing_device(&state, dev_eui).await?;
    let profile = existing_profile(&state, device.device_profile_id).await?;
    match state.network_config.net_id_bytes() {
        Ok(net_id) if !dev_addr::in_net_id(abp.dev_addr, net_id) => {
            tracing::warn!(%dev_eui, dev_addr = %abp.dev_addr, net_id = %state.network_config.net_id, "ABP DevAddr is outside network.net_id");
        }
        _ => {}
    }
    // The profile's region; a profile of a region no longer configured falls back to the
    // first configuration's (its uplinks are refused until the profile is fixed).
    let region = region::region_by_name(&profile.region);
    let region = region.as_deref().unwrap_or(state.regions.first().region.as_ref());
    let s = session(dev_eui, &abp, profile.mac_version, region);
    state.network.activate_device(&s).await?;
    tracing::info!(%dev_eui, dev_addr = %s.dev_addr, "device activated by personalization");
    Ok(Json((&s).into()))
}

#[utoipa::path(
    operation_id = "device_activation_get",
    summary = "Get a device's current session (OTAA or ABP)",
    get,
    path = "/devices/{dev_eui}/activation",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, body = ActivationJson), ReadErrors)
)]
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<ActivationJson>, ApiError> {
    let dev_eui = parse_eui("devEui", &id)?;
    existing_device(&state, dev_eui).await?;
    match state.storage.sessions.get(dev_eui).await {
        Err(StorageError::NotFound) => Err(ApiError::NotFound(format!("device {dev_eui} is not activated"))),
        other => Ok(Json((&other?).into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090A0B0C0D0E0F";
    const K2: &str = "101112131415161718191a1b1c1d1e1f";

    fn abp(json: &str) -> Result<Abp, ApiError> {
        validated(super::super::extract::parse_json(json.as_bytes())?)
    }

    #[test]
    fn counters_default_to_zero_and_keys_are_lower_cased() {
        let a = abp(&format!(r#"{{"devAddr":"2601ABCD","appSKey":"{K1}","nwkSKey":"{K2}"}}"#)).unwrap();
        assert_eq!((a.f_cnt_up, a.f_cnt_down), (0, 0));
        assert_eq!(a.dev_addr.to_string(), "2601abcd");
        assert_eq!(a.app_s_key.to_hex(), K1.to_ascii_lowercase());
    }

    #[test]
    fn each_missing_or_bad_field_is_named() {
        assert!(abp(&format!(r#"{{"appSKey":"{K1}","nwkSKey":"{K2}"}}"#)).unwrap_err().to_string().starts_with("devAddr: "));
        assert!(abp(&format!(r#"{{"devAddr":"26","appSKey":"{K1}","nwkSKey":"{K2}"}}"#)).unwrap_err().to_string().starts_with("devAddr: "));
        assert!(abp(&format!(r#"{{"devAddr":"26011234","nwkSKey":"{K2}"}}"#)).unwrap_err().to_string().starts_with("appSKey: "));
        assert!(abp(&format!(r#"{{"devAddr":"26011234","appSKey":"{K1}"}}"#)).unwrap_err().to_string().starts_with("nwkSKey: "));
        assert!(abp(&format!(r#"{{"devAddr":"26011234","appSKey":"{K1}","nwkSKey":"x"}}"#))
            .unwrap_err()
            .to_string()
            .starts_with("nwkSKey: "));
        let e = abp(&format!(r#"{{"devAddr":"26011234","appSKey":"{K1}","nwkSKey":"{K2}","fCntUp":-1}}"#)).unwrap_err().to_string();
        assert!(e.starts_with("fCntUp: "), "{e}");
    }

    #[test]
    fn lorawan_1_1_keys_are_not_supported_yet() {
        let e = abp(&format!(r#"{{"devAddr":"26011234","appSKey":"{K1}","fNwkSIntKey":"{K2}","sNwkSIntKey":"{K2}","nwkSEncKey":"{K2}"}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("fNwkSIntKey: ") && e.contains("LoRaWAN 1.1 not supported yet"), "{e}");
        let e = abp(&format!(r#"{{"devAddr":"26011234","appSKey":"{K1}","nwkSKey":"{K2}","nwkSEncKey":"{K1}"}}"#)).unwrap_err().to_string();
        assert!(e.starts_with("nwkSEncKey: "), "{e}");
    }

    #[test]
    fn a_get_body_of_a_1_0_session_can_be_sent_back() {
        let a = abp(&format!(
            r#"{{"devAddr":"26011234","appSKey":"{K1}","nwkSKey":"{K2}","fNwkSIntKey":"{K2}","sNwkSIntKey":"{K2}","nwkSEncKey":"{K2}","fCntUp":7,"fCntDown":3}}"#
        ))
        .unwrap();
        assert_eq!((a.f_cnt_up, a.f_cnt_down), (7, 3));
    }

    #[test]
    fn an_abp_session_uses_nwk_s_key_for_every_network_key_and_the_region_default_windows() {
        let a = abp(&format!(r#"{{"devAddr":"26011234","appSKey":"{K1}","nwkSKey":"{K2}","fCntUp":10,"fCntDown":4}}"#)).unwrap();
        let dev = Eui64([1; 8]);
        let s = session(dev, &a, "1.0.2".into(), &region::Eu868);
        assert_eq!((s.f_nwk_s_int_key, s.s_nwk_s_int_key, s.nwk_s_enc_key), (a.nwk_s_key, a.nwk_s_key, a.nwk_s_key));
        assert_eq!((s.f_cnt_up, s.n_f_cnt_down, s.is_otaa, s.mac_version.as_str()), (10, 4, false, "1.0.2"));
        assert_eq!((s.rx1_delay, s.rx1_dr_offset, s.rx2_dr, s.rx2_frequency), (1, 0, 0, 869_525_000));
        // The device was told nothing else: other `network.rx*` values reach it later by
        // RXParamSetupReq / RXTimingSetupReq.
        assert_eq!(s.mac_state, MacState::default());
    }

    #[test]
    fn the_activation_shows_nwk_s_key_in_every_network_key_field() {
        let a = abp(&format!(r#"{{"devAddr":"26011234","appSKey":"{K1}","nwkSKey":"{K2}"}}"#)).unwrap();
        let json = serde_json::to_value(ActivationJson::from(&session(Eui64([1; 8]), &a, "1.0.3".into(), &region::Eu868))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"devAddr": "26011234", "appSKey": K1.to_ascii_lowercase(), "nwkSKey": K2, "fNwkSIntKey": K2,
                "sNwkSIntKey": K2, "nwkSEncKey": K2, "fCntUp": 0, "fCntDown": 0,
                "radio": {"dr": null, "txPowerIndex": 0, "nbTrans": 1}})
        );
        // The GET body can be sent back as an activation: `radio` is read and ignored.
        let again = abp(&json.to_string()).unwrap();
        assert_eq!(again, a);
    }
}
