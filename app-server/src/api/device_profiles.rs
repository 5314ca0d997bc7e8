//! `/api/device-profiles`: what a kind of device speaks (region, LoRaWAN version, class,
//! ADR and its limits, how often its status is asked) and how its payloads are decoded.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use loraflow_network_server::region::region_by_name;
use loraflow_network_server::region_config::Regions;
use loraflow_network_server::storage::{DeviceProfile, MeasurementDefinition, MeasurementKind};

use super::applications::{parse_uuid, required_name};
use super::error::ApiError;
use super::extract::{ApiJson, QueryMap};
use super::openapi::{ReadErrors, WriteErrors};
use super::text;
use super::{ApiState, ListResponse};

/// MAC versions whose device behaviour the network server implements.
const MAC_VERSIONS: [&str; 5] = ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"];
/// LoRaWAN 1.1 needs separate network keys and rejoin handling that loraflow lacks.
const MAC_VERSIONS_LATER: [&str; 2] = ["1.1.0", "1.1"];
/// Regional Parameters revisions: 1.0.2rA/rB are written "A"/"B" as in ChirpStack.
const REG_PARAMS_REVISIONS: [&str; 7] = ["A", "B", "RP002-1.0.0", "RP002-1.0.1", "RP002-1.0.2", "RP002-1.0.3", "RP002-1.0.4"];
pub(crate) const PAYLOAD_CODECS: [&str; 3] = ["NONE", "CAYENNE_LPP", "JS"];
/// Default `adrInstallationMarginDb`: ChirpStack's default, enough for ordinary fading.
const DEFAULT_INSTALLATION_MARGIN_DB: f32 = 10.0;
/// Beyond 30 dB ADR could never speed up a device anywhere near a gateway.
const MAX_INSTALLATION_MARGIN_DB: f64 = 30.0;
/// Default `devStatusReqFreq`: one DevStatusReq a day.
const DEFAULT_DEV_STATUS_REQ_FREQ: u32 = 1;
/// At most every 5 minutes: each request costs a downlink, and gateways are duty-cycle bound.
const MAX_DEV_STATUS_REQ_FREQ: i64 = 288;
/// Default `classCTimeout` in seconds: ChirpStack's default.
const DEFAULT_CLASS_C_TIMEOUT: u32 = 5;
/// Longest `classCTimeout`: an hour; beyond it a lost ACK would hold the queue for good.
const MAX_CLASS_C_TIMEOUT: i64 = 3600;
/// Definitions per profile: more than any decoder emits, and each costs a lookup per leaf.
const MAX_MEASUREMENT_DEFINITIONS: usize = 256;
/// Longest decoded-object path a definition may name.
const MAX_MEASUREMENT_PATH: usize = 256;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceProfileBody {
    /// Required: 1-100 bytes of UTF-8 on one line, not blank.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    name: Option<String>,
    region: Option<String>,
    /// LoRaWAN version; default 1.0.3.
    #[schema(value_type = Option<String>)]
    mac_version: Option<String>,
    /// Regional Parameters revision; default RP002-1.0.3.
    #[schema(value_type = Option<String>)]
    reg_params_revision: Option<String>,
    supports_otaa: Option<bool>,
    supports_class_c: Option<bool>,
    adr_enabled: Option<bool>,
    // Wider than the stored types, so that out-of-range values get a message with the range.
    /// Within the region's ADR range; default DR0.
    #[schema(minimum = 0, maximum = 15)]
    adr_min_dr: Option<i64>,
    /// Within the region's ADR range; default its fastest rate.
    #[schema(minimum = 0, maximum = 15)]
    adr_max_dr: Option<i64>,
    /// dB; default 10.
    #[schema(minimum = 0, maximum = 30)]
    adr_installation_margin_db: Option<f64>,
    /// DevStatusReq per day, 0 = never; default 1.
    #[schema(minimum = 0, maximum = 288)]
    dev_status_req_freq: Option<i64>,
    /// Seconds a confirmed Class C downlink waits for its ACK; default 5.
    #[schema(minimum = 1, maximum = 3600)]
    class_c_timeout: Option<i64>,
    /// NONE (default), CAYENNE_LPP or JS, any case.
    #[schema(value_type = Option<String>)]
    payload_codec: Option<String>,
    #[serde(default)]
    payload_codec_script: String,
    /// Checked by [`measurement_definitions`] so that an error names the path.
    #[schema(value_type = Option<BTreeMap<String, MeasurementDefinitionJson>>)]
    measurements: Option<serde_json::Value>,
    auto_detect_measurements: Option<bool>,
    // Read-only fields a client may echo back from a GET.
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    id: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    created_at: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    updated_at: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProfileJson {
    id: Uuid,
    name: String,
    region: String,
    mac_version: String,
    reg_params_revision: String,
    supports_otaa: bool,
    supports_class_c: bool,
    adr_enabled: bool,
    adr_min_dr: u8,
    adr_max_dr: u8,
    adr_installation_margin_db: f32,
    dev_status_req_freq: u32,
    class_c_timeout: u32,
    payload_codec: String,
    payload_codec_script: String,
    /// Decoded-object path to `{name, kind}`.
    #[schema(value_type = BTreeMap<String, MeasurementDefinitionJson>)]
    measurements: BTreeMap<String, MeasurementDefinition>,
    auto_detect_measurements: bool,
    #[serde(serialize_with = "super::time_format::utc")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::time_format::utc")]
    updated_at: DateTime<Utc>,
}

impl From<DeviceProfile> for DeviceProfileJson {
    fn from(p: DeviceProfile) -> Self {
        DeviceProfileJson {
            id: p.id,
            name: p.name,
            region: p.region,
            mac_version: p.mac_version,
            reg_params_revision: p.reg_params_revision,
            supports_otaa: p.supports_otaa,
            supports_class_c: p.supports_class_c,
            adr_enabled: p.adr_enabled,
            adr_min_dr: p.adr_min_dr,
            adr_max_dr: p.adr_max_dr,
            adr_installation_margin_db: p.adr_installation_margin_db,
            dev_status_req_freq: p.dev_status_req_freq,
            class_c_timeout: p.class_c_timeout,
            payload_codec: p.payload_codec,
            payload_codec_script: p.payload_codec_script,
            measurements: p.measurements,
            auto_detect_measurements: p.auto_detect_measurements,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// How a profile's `measurements` entry reads (and is written): the series name and its kind.
#[derive(ToSchema)]
#[allow(dead_code)] // Documentation only: the entries are checked by `measurement_definitions`.
pub struct MeasurementDefinitionJson {
    name: String,
    #[schema(value_type = MeasurementKindJson)]
    kind: String,
}

/// The kind of a measurement series (ChirpStack's names); accepted in any case.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)] // Documentation only: `MeasurementKind` is the stored type.
pub enum MeasurementKindJson {
    Gauge,
    Counter,
    Absolute,
    String,
}

/// The validated, defaulted content of a body (everything but id and times).
#[derive(Debug, Clone, PartialEq)]
struct ProfileFields {
    name: String,
    region: String,
    mac_version: String,
    reg_params_revision: String,
    supports_otaa: bool,
    supports_class_c: bool,
    adr_enabled: bool,
    adr_min_dr: u8,
    adr_max_dr: u8,
    adr_installation_margin_db: f32,
    dev_status_req_freq: u32,
    class_c_timeout: u32,
    payload_codec: String,
    payload_codec_script: String,
    measurements: BTreeMap<String, MeasurementDefinition>,
    auto_detect_measurements: bool,
}

/// Case-insensitive match against a fixed set, returning the canonical spelling.
pub(crate) fn one_of(field: &str, value: &str, allowed: &[&'static str]) -> Result<&'static str, ApiError> {
    allowed
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(value.trim()))
        .ok_or_else(|| ApiError::field(field, format!("{value:?} is not one of {}", allowed.join(", "))))
}

/// The ADR data-rate limits: each within the region's ADR range (DR0 up to its fastest LoRa
/// 125 kHz rate), min not above max. Omitted: the whole range.
fn adr_dr_limits(region: &str, min: Option<i64>, max: Option<i64>) -> Result<(u8, u8), ApiError> {
    let top = region_by_name(region).map(|r| r.max_adr_dr()).ok_or_else(|| ApiError::field("region", format!("{region:?} is unknown")))?;
    let check = |field: &str, v: i64| {
        u8::try_from(v)
            .ok()
            .filter(|dr| *dr <= top)
            .ok_or_else(|| ApiError::field(field, format!("DR{v} is outside {region}'s ADR range DR0-DR{top}")))
    };
    let min = min.map(|v| check("adrMinDr", v)).transpose()?.unwrap_or(0);
    let max = max.map(|v| check("adrMaxDr", v)).transpose()?.unwrap_or(top);
    if min > max {
        return Err(ApiError::field("adrMinDr", format!("DR{min} is above adrMaxDr DR{max}")));
    }
    Ok((min, max))
}

/// The region a profile names, by its common name: one of the configured region
/// configurations' regions (uplinks of any other could never reach the device), by default
/// the first configuration's.
fn profile_region(value: Option<&str>, regions: &Regions) -> Result<&'static str, ApiError> {
    let configured = || regions.iter().map(|r| r.common_name()).collect::<Vec<_>>().join(", ");
    let Some(value) = value else { return Ok(regions.first().common_name()) };
    match regions.by_common_name(value) {
        Some(r) => Ok(r.common_name()),
        None if region_by_name(value).is_some() => {
            Err(ApiError::field("region", format!("{value:?} is not a configured region (configured: {})", configured())))
        }
        None => Err(ApiError::field("region", format!("{value:?} is not a region (configured: {})", configured()))),
    }
}

/// Omitted optional fields take the defaults shown in DESIGN.md §3 and README. A script longer than
/// `script_max` (`codec.js_max_script_bytes`) could never be compiled, so it is refused here.
fn validated(body: DeviceProfileBody, script_max: usize, regions: &Regions) -> Result<ProfileFields, ApiError> {
    let name = required_name(body.name)?;
    let region = profile_region(body.region.as_deref(), regions)?;
    let mac = body.mac_version.as_deref().unwrap_or("1.0.3");
    if MAC_VERSIONS_LATER.contains(&mac.trim()) {
        return Err(ApiError::field("macVersion", format!("LoRaWAN {mac} is not supported yet (supported: {})", MAC_VERSIONS.join(", "))));
    }
    let mac_version = one_of("macVersion", mac, &MAC_VERSIONS)?;
    let reg_params_revision =
        one_of("regParamsRevision", body.reg_params_revision.as_deref().unwrap_or("RP002-1.0.3"), &REG_PARAMS_REVISIONS)?;
    let payload_codec = one_of("payloadCodec", body.payload_codec.as_deref().unwrap_or("NONE"), &PAYLOAD_CODECS)?;
    text::at_most("payloadCodecScript", &body.payload_codec_script, script_max)?;
    if payload_codec == "JS" && body.payload_codec_script.trim().is_empty() {
        return Err(ApiError::field("payloadCodecScript", "must not be empty when payloadCodec is JS"));
    }
    let (adr_min_dr, adr_max_dr) = adr_dr_limits(region, body.adr_min_dr, body.adr_max_dr)?;
    let adr_installation_margin_db = match body.adr_installation_margin_db {
        None => DEFAULT_INSTALLATION_MARGIN_DB,
        Some(m) if (0.0..=MAX_INSTALLATION_MARGIN_DB).contains(&m) => m as f32,
        Some(m) => return Err(ApiError::field("adrInstallationMarginDb", format!("{m} dB is outside 0-{MAX_INSTALLATION_MARGIN_DB} dB"))),
    };
    let dev_status_req_freq = match body.dev_status_req_freq {
        None => DEFAULT_DEV_STATUS_REQ_FREQ,
        Some(n @ 0..=MAX_DEV_STATUS_REQ_FREQ) => n as u32,
        Some(n) => {
            return Err(ApiError::field(
                "devStatusReqFreq",
                format!("{n} is outside 0-{MAX_DEV_STATUS_REQ_FREQ} requests per day (0 = never)"),
            ))
        }
    };
    let class_c_timeout = match body.class_c_timeout {
        None => DEFAULT_CLASS_C_TIMEOUT,
        Some(n @ 1..=MAX_CLASS_C_TIMEOUT) => n as u32,
        Some(n) => return Err(ApiError::field("classCTimeout", format!("{n} is outside 1-{MAX_CLASS_C_TIMEOUT} seconds"))),
    };
    Ok(ProfileFields {
        name,
        region: region.to_string(),
        mac_version: mac_version.to_string(),
        reg_params_revision: reg_params_revision.to_string(),
        supports_otaa: body.supports_otaa.unwrap_or(true),
        supports_class_c: body.supports_class_c.unwrap_or(false),
        adr_enabled: body.adr_enabled.unwrap_or(true),
        adr_min_dr,
        adr_max_dr,
        adr_installation_margin_db,
        dev_status_req_freq,
        class_c_timeout,
        payload_codec: payload_codec.to_string(),
        payload_codec_script: body.payload_codec_script,
        measurements: measurement_definitions(body.measurements)?,
        auto_detect_measurements: body.auto_detect_measurements.unwrap_or(true),
    })
}

fn apply(p: &mut DeviceProfile, f: ProfileFields) {
    p.name = f.name;
    p.region = f.region;
    p.mac_version = f.mac_version;
    p.reg_params_revision = f.reg_params_revision;
    p.supports_otaa = f.supports_otaa;
    p.supports_class_c = f.supports_class_c;
    p.adr_enabled = f.adr_enabled;
    p.adr_min_dr = f.adr_min_dr;
    p.adr_max_dr = f.adr_max_dr;
    p.adr_installation_margin_db = f.adr_installation_margin_db;
    p.dev_status_req_freq = f.dev_status_req_freq;
    p.class_c_timeout = f.class_c_timeout;
    p.payload_codec = f.payload_codec;
    p.payload_codec_script = f.payload_codec_script;
    p.measurements = f.measurements;
    p.auto_detect_measurements = f.auto_detect_measurements;
}

/// `measurements`: an object of decoded-object path → `{"name", "kind"}`; omitted or null is
/// none. Errors name the path (`measurements.temperatureSensor.1.kind`).
fn measurement_definitions(value: Option<serde_json::Value>) -> Result<BTreeMap<String, MeasurementDefinition>, ApiError> {
    let entries = match value {
        None | Some(serde_json::Value::Null) => return Ok(BTreeMap::new()),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => return Err(ApiError::field("measurements", "must be an object of decoded-object path to {name, kind}")),
    };
    if entries.len() > MAX_MEASUREMENT_DEFINITIONS {
        return Err(ApiError::field("measurements", format!("{} definitions, at most {MAX_MEASUREMENT_DEFINITIONS}", entries.len())));
    }
    let mut out = BTreeMap::new();
    let mut paths_by_name: BTreeMap<String, String> = BTreeMap::new();
    for (path, def) in entries {
        let field = format!("measurements.{path}");
        if path.trim().is_empty() || path.len() > MAX_MEASUREMENT_PATH {
            return Err(ApiError::field(&field, format!("path must be 1-{MAX_MEASUREMENT_PATH} bytes")));
        }
        let serde_json::Value::Object(def) = def else { return Err(ApiError::field(&field, "must be an object {name, kind}")) };
        if let Some(other) = def.keys().find(|k| !matches!(k.as_str(), "name" | "kind")) {
            return Err(ApiError::field(&format!("{field}.{other}"), "unknown field (expected name, kind)"));
        }
        let name = match def.get("name") {
            Some(serde_json::Value::String(n)) if crate::measurements::valid_name(n) => n.clone(),
            Some(serde_json::Value::String(n)) => {
                return Err(ApiError::field(
                    &format!("{field}.name"),
                    format!("{n:?} must be 1-{} ASCII letters, digits, '_', '-' or '.'", crate::measurements::MAX_NAME_LEN),
                ))
            }
            Some(_) => return Err(ApiError::field(&format!("{field}.name"), "must be a string")),
            None => return Err(ApiError::field(&format!("{field}.name"), "is required")),
        };
        let allowed = || MeasurementKind::ALL.map(MeasurementKind::as_str).join(", ");
        let kind = match def.get("kind") {
            Some(serde_json::Value::String(k)) => MeasurementKind::parse(&k.trim().to_ascii_uppercase())
                .ok_or_else(|| ApiError::field(&format!("{field}.kind"), format!("{k:?} is not one of {}", allowed())))?,
            Some(_) => return Err(ApiError::field(&format!("{field}.kind"), format!("must be one of {}", allowed()))),
            None => return Err(ApiError::field(&format!("{field}.kind"), format!("is required (one of {})", allowed()))),
        };
        if let Some(other) = paths_by_name.insert(name.clone(), path.clone()) {
            return Err(ApiError::field(&format!("{field}.name"), format!("{name:?} is also the name of {other:?}")));
        }
        out.insert(path, MeasurementDefinition { name, kind });
    }
    Ok(out)
}

/// The profile, or 404 naming what was missing.
pub(crate) async fn existing_profile(state: &ApiState, id: Uuid) -> Result<DeviceProfile, ApiError> {
    match state.storage.device_profiles.get(id).await {
        Err(loraflow_network_server::storage::StorageError::NotFound) => Err(ApiError::NotFound(format!("device profile {id} not found"))),
        other => Ok(other?),
    }
}

#[utoipa::path(
    operation_id = "device_profiles_create",
    summary = "Create a device profile",
    post,
    path = "/device-profiles",
    tag = "device-profiles",
    request_body = DeviceProfileBody,
    responses(
        (status = 201, body = DeviceProfileJson, links(
            ("device_profiles_get" = (operation_id = "device_profiles_get", parameters(("id" = "$response.body#/id")))),
            ("device_profiles_update" = (operation_id = "device_profiles_update", parameters(("id" = "$response.body#/id")))),
            ("device_profiles_delete" = (operation_id = "device_profiles_delete", parameters(("id" = "$response.body#/id"))))
        )),
        WriteErrors
    )
)]
pub async fn create(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<DeviceProfileBody>,
) -> Result<(StatusCode, Json<DeviceProfileJson>), ApiError> {
    let f = validated(body, state.codecs.config().js_max_script_bytes, &state.regions)?;
    let now = Utc::now();
    let dp = DeviceProfile {
        id: Uuid::new_v4(),
        name: f.name,
        region: f.region,
        mac_version: f.mac_version,
        reg_params_revision: f.reg_params_revision,
        supports_otaa: f.supports_otaa,
        supports_class_c: f.supports_class_c,
        adr_enabled: f.adr_enabled,
        adr_min_dr: f.adr_min_dr,
        adr_max_dr: f.adr_max_dr,
        adr_installation_margin_db: f.adr_installation_margin_db,
        dev_status_req_freq: f.dev_status_req_freq,
        class_c_timeout: f.class_c_timeout,
        payload_codec: f.payload_codec,
        payload_codec_script: f.payload_codec_script,
        measurements: f.measurements,
        auto_detect_measurements: f.auto_detect_measurements,
        created_at: now,
        updated_at: now,
    };
    state.network.create_device_profile(&dp).await?;
    Ok((StatusCode::CREATED, Json(dp.into())))
}

#[utoipa::path(
    operation_id = "device_profiles_get",
    summary = "Get a device profile",
    get,
    path = "/device-profiles/{id}",
    tag = "device-profiles",
    params(("id" = uuid::Uuid, Path, description = "Device profile id")),
    responses((status = 200, body = DeviceProfileJson), ReadErrors)
)]
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<DeviceProfileJson>, ApiError> {
    let dp = existing_profile(&state, parse_uuid("id", &id)?).await?;
    Ok(Json(dp.into()))
}

#[utoipa::path(
    operation_id = "device_profiles_list",
    summary = "List the device profiles",
    get,
    path = "/device-profiles",
    tag = "device-profiles",
    params(
        ("limit" = Option<u32>, Query, description = "Page size (default 100)", minimum = 0, maximum = 1000),
        ("offset" = Option<u64>, Query, description = "Rows to skip", maximum = 4294967295.0),
    ),
    responses((status = 200, body = ListResponse<DeviceProfileJson>), ReadErrors)
)]
pub async fn list(State(state): State<ApiState>, q: QueryMap) -> Result<Json<ListResponse<DeviceProfileJson>>, ApiError> {
    let p = q.paging()?;
    let page = state.storage.device_profiles.list(p.limit, p.offset).await?;
    Ok(Json(ListResponse { total_count: page.total_count, result: page.result.into_iter().map(Into::into).collect() }))
}

#[utoipa::path(
    operation_id = "device_profiles_update",
    summary = "Replace a device profile",
    put,
    path = "/device-profiles/{id}",
    tag = "device-profiles",
    params(("id" = uuid::Uuid, Path, description = "Device profile id")),
    request_body = DeviceProfileBody,
    responses((status = 200, body = DeviceProfileJson), WriteErrors)
)]
pub async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DeviceProfileBody>,
) -> Result<Json<DeviceProfileJson>, ApiError> {
    let id = parse_uuid("id", &id)?;
    let f = validated(body, state.codecs.config().js_max_script_bytes, &state.regions)?;
    let mut dp = existing_profile(&state, id).await?;
    apply(&mut dp, f);
    dp.updated_at = Utc::now();
    state.network.update_device_profile(&dp).await?;
    Ok(Json(dp.into()))
}

#[utoipa::path(
    operation_id = "device_profiles_delete",
    summary = "Delete a device profile no device uses",
    delete,
    path = "/device-profiles/{id}",
    tag = "device-profiles",
    params(("id" = uuid::Uuid, Path, description = "Device profile id")),
    responses((status = 204, description = "Deleted"), WriteErrors)
)]
pub async fn delete(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = parse_uuid("id", &id)?;
    match state.network.delete_device_profile(id).await {
        Err(loraflow_network_server::storage::StorageError::NotFound) => {
            return Err(ApiError::NotFound(format!("device profile {id} not found")))
        }
        Err(loraflow_network_server::storage::StorageError::Conflict(_)) => {
            return Err(ApiError::Conflict("device profile is used by devices; delete or move them first".into()))
        }
        other => other?,
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> DeviceProfileBody {
        super::super::extract::parse_json(json.as_bytes()).unwrap()
    }

    fn validated(body: DeviceProfileBody) -> Result<ProfileFields, ApiError> {
        super::validated(body, 1024, &Regions::single("EU868"))
    }

    #[test]
    fn a_script_beyond_the_codec_limit_is_refused() {
        let long = format!(r#"{{"name":"p","payloadCodec":"JS","payloadCodecScript":"{}"}}"#, "x".repeat(1025));
        assert!(error_of(&long).starts_with("payloadCodecScript: must be at most 1024 bytes"), "{}", error_of(&long));
    }

    /// The error of parsing, then validating, a body.
    fn error_of(json: &str) -> String {
        super::super::extract::parse_json(json.as_bytes()).and_then(validated).unwrap_err().to_string()
    }

    #[test]
    fn omitted_fields_take_the_design_defaults() {
        let f = validated(body(r#"{"name":"p"}"#)).unwrap();
        assert_eq!(
            f,
            ProfileFields {
                name: "p".into(),
                region: "EU868".into(),
                mac_version: "1.0.3".into(),
                reg_params_revision: "RP002-1.0.3".into(),
                supports_otaa: true,
                supports_class_c: false,
                adr_enabled: true,
                adr_min_dr: 0,
                adr_max_dr: 5,
                adr_installation_margin_db: 10.0,
                dev_status_req_freq: 1,
                class_c_timeout: 5,
                payload_codec: "NONE".into(),
                payload_codec_script: String::new(),
                measurements: BTreeMap::new(),
                auto_detect_measurements: true,
            }
        );
    }

    #[test]
    fn enum_values_are_accepted_in_any_case_and_stored_canonically() {
        let f = validated(body(r#"{"name":"p","region":"eu868","regParamsRevision":"rp002-1.0.2","payloadCodec":"cayenne_lpp"}"#)).unwrap();
        assert_eq!((f.region.as_str(), f.reg_params_revision.as_str(), f.payload_codec.as_str()), ("EU868", "RP002-1.0.2", "CAYENNE_LPP"));
    }

    #[test]
    fn other_regions_are_rejected_naming_region() {
        assert!(error_of(r#"{"name":"p","region":"US915"}"#).starts_with("region: "));
    }

    #[test]
    fn lorawan_1_1_is_rejected_as_not_supported_yet() {
        let e = error_of(r#"{"name":"p","macVersion":"1.1.0"}"#);
        assert!(e.starts_with("macVersion: ") && e.contains("not supported yet"), "{e}");
        assert!(error_of(r#"{"name":"p","macVersion":"2.0"}"#).starts_with("macVersion: "));
    }

    #[test]
    fn unknown_codec_and_bad_revision_name_their_fields() {
        assert!(error_of(r#"{"name":"p","payloadCodec":"PROTOBUF"}"#).starts_with("payloadCodec: "));
        assert!(error_of(r#"{"name":"p","regParamsRevision":"X"}"#).starts_with("regParamsRevision: "));
    }

    #[test]
    fn js_codec_needs_a_script() {
        assert!(error_of(r#"{"name":"p","payloadCodec":"JS"}"#).starts_with("payloadCodecScript: "));
        let f = validated(body(r#"{"name":"p","payloadCodec":"JS","payloadCodecScript":"function decodeUplink(i){return {data:{}}}"}"#))
            .unwrap();
        assert_eq!(f.payload_codec, "JS");
    }

    #[test]
    fn adr_fields_are_taken_when_in_range() {
        let f = validated(body(r#"{"name":"p","adrMinDr":2,"adrMaxDr":4,"adrInstallationMarginDb":7.5,"devStatusReqFreq":0}"#)).unwrap();
        assert_eq!((f.adr_min_dr, f.adr_max_dr, f.adr_installation_margin_db, f.dev_status_req_freq), (2, 4, 7.5, 0));
        // The edges of every range.
        let f = validated(body(r#"{"name":"p","adrMinDr":5,"adrMaxDr":5,"adrInstallationMarginDb":30,"devStatusReqFreq":288}"#)).unwrap();
        assert_eq!((f.adr_min_dr, f.adr_max_dr, f.adr_installation_margin_db, f.dev_status_req_freq), (5, 5, 30.0, 288));
        for (timeout, want) in [(1, 1), (3600, 3600), (30, 30)] {
            let f = validated(body(&format!(r#"{{"name":"p","classCTimeout":{timeout}}}"#))).unwrap();
            assert_eq!(f.class_c_timeout, want);
        }
        let f = validated(body(r#"{"name":"p","adrMinDr":0,"adrMaxDr":0,"adrInstallationMarginDb":0}"#)).unwrap();
        assert_eq!((f.adr_min_dr, f.adr_max_dr, f.adr_installation_margin_db), (0, 0, 0.0));
        // Only a max: the min stays at DR0; only a min: the max stays at the region's top.
        assert_eq!(validated(body(r#"{"name":"p","adrMaxDr":3}"#)).map(|f| (f.adr_min_dr, f.adr_max_dr)).unwrap(), (0, 3));
        assert_eq!(validated(body(r#"{"name":"p","adrMinDr":3}"#)).map(|f| (f.adr_min_dr, f.adr_max_dr)).unwrap(), (3, 5));
    }

    #[test]
    fn out_of_range_adr_fields_name_the_field() {
        let cases = [
            (r#""adrMinDr":6"#, "adrMinDr: DR6 is outside EU868's ADR range DR0-DR5"),
            (r#""adrMinDr":-1"#, "adrMinDr: "),
            (r#""adrMaxDr":7"#, "adrMaxDr: DR7 is outside EU868's ADR range DR0-DR5"),
            (r#""adrMaxDr":300"#, "adrMaxDr: "),
            (r#""adrMinDr":4,"adrMaxDr":2"#, "adrMinDr: DR4 is above adrMaxDr DR2"),
            (r#""adrInstallationMarginDb":-0.5"#, "adrInstallationMarginDb: "),
            (r#""adrInstallationMarginDb":30.5"#, "adrInstallationMarginDb: "),
            (r#""adrInstallationMarginDb":"10""#, "adrInstallationMarginDb: "),
            (r#""devStatusReqFreq":289"#, "devStatusReqFreq: 289 is outside 0-288"),
            (r#""devStatusReqFreq":-1"#, "devStatusReqFreq: "),
            (r#""devStatusReqFreq":1.5"#, "devStatusReqFreq: "),
            (r#""adrMinDr":true"#, "adrMinDr: "),
            (r#""classCTimeout":0"#, "classCTimeout: 0 is outside 1-3600 seconds"),
            (r#""classCTimeout":3601"#, "classCTimeout: 3601 is outside 1-3600 seconds"),
            (r#""classCTimeout":"5""#, "classCTimeout: "),
        ];
        for (fields, want) in cases {
            let e = error_of(&format!(r#"{{"name":"p",{fields}}}"#));
            assert!(e.starts_with(want), "{fields}: {e}");
        }
    }

    #[test]
    fn measurement_definitions_are_taken_with_kinds_in_any_case() {
        let f = validated(body(
            r#"{"name":"p","autoDetectMeasurements":false,"measurements":{"temperatureSensor.1":{"name":"room","kind":"counter"}}}"#,
        ))
        .unwrap();
        assert!(!f.auto_detect_measurements);
        assert_eq!(
            f.measurements,
            BTreeMap::from([(
                "temperatureSensor.1".to_string(),
                MeasurementDefinition { name: "room".into(), kind: MeasurementKind::Counter }
            )])
        );
    }

    #[test]
    fn bad_measurement_definitions_name_the_path_and_member() {
        let cases = [
            (r#"[1]"#, "measurements: "),
            (r#"{"a.b":{"name":"x","kind":"RATE"}}"#, "measurements.a.b.kind: \"RATE\" is not one of GAUGE, COUNTER, ABSOLUTE, STRING"),
            (r#"{"a.b":{"name":"x"}}"#, "measurements.a.b.kind: is required"),
            (r#"{"a.b":{"name":"x","kind":3}}"#, "measurements.a.b.kind: "),
            (r#"{"a.b":{"kind":"GAUGE"}}"#, "measurements.a.b.name: is required"),
            (r#"{"a.b":{"name":"x/y","kind":"GAUGE"}}"#, "measurements.a.b.name: "),
            (r#"{"a.b":{"name":"x","kind":"GAUGE","unit":"C"}}"#, "measurements.a.b.unit: unknown field"),
            (r#"{"a.b":"x"}"#, "measurements.a.b: must be an object"),
            (r#"{"":{"name":"x","kind":"GAUGE"}}"#, "measurements.: path must be"),
            (
                r#"{"a":{"name":"x","kind":"GAUGE"},"b":{"name":"x","kind":"GAUGE"}}"#,
                "measurements.b.name: \"x\" is also the name of \"a\"",
            ),
        ];
        for (defs, want) in cases {
            let e = error_of(&format!(r#"{{"name":"p","measurements":{defs}}}"#));
            assert!(e.starts_with(want), "{defs}: {e}");
        }
        assert!(error_of(r#"{"name":"p","autoDetectMeasurements":"yes"}"#).starts_with("autoDetectMeasurements: "));
    }

    #[test]
    fn a_missing_name_is_rejected() {
        assert!(error_of(r#"{"region":"EU868"}"#).starts_with("name: "));
    }

    #[test]
    fn read_only_fields_from_a_get_are_accepted() {
        validated(body(r#"{"id":"x","name":"p","createdAt":"t","updatedAt":"t"}"#)).unwrap();
    }
}
