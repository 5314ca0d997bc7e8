//! `/api/devices`: the devices of an application, each with a device profile.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use loraflow_network_server::storage::{Device, DeviceSession, StorageError};
use loraflow_network_server::types::{AesKey, DevAddr, Eui64};

use super::access;
use super::applications::{parse_uuid, required_name};
use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiJson, QueryMap};
use super::gateways::parse_eui;
use super::openapi::{ReadErrors, WriteErrors};
use super::text;
use super::{ApiState, ListResponse};

pub fn parse_dev_addr(field: &str, s: &str) -> Result<DevAddr, ApiError> {
    s.to_ascii_lowercase().parse::<DevAddr>().map_err(|_| ApiError::field(field, format!("expected 8 hex characters, got {s:?}")))
}

/// Keys are never echoed back in error messages: only their length is reported.
pub fn parse_key(field: &str, s: &str) -> Result<AesKey, ApiError> {
    s.to_ascii_lowercase().parse::<AesKey>().map_err(|_| ApiError::field(field, format!("expected 32 hex characters ({} given)", s.len())))
}

/// The device, or 404 naming it.
pub(crate) async fn existing_device(state: &ApiState, dev_eui: Eui64) -> Result<Device, ApiError> {
    match state.storage.devices.get(dev_eui).await {
        Err(StorageError::NotFound) => Err(ApiError::NotFound(format!("device {dev_eui} not found"))),
        other => Ok(other?),
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceBody {
    /// Required on create; on update it must match the path when present.
    /// 16 hex characters.
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    dev_eui: Option<String>,
    /// Required: 1-100 bytes of UTF-8 on one line, not blank.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    name: Option<String>,
    #[schema(value_type = uuid::Uuid, required = true)]
    application_id: Option<String>,
    #[schema(value_type = uuid::Uuid, required = true)]
    device_profile_id: Option<String>,
    /// 16 hex characters.
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    join_eui: Option<String>,
    /// At most 10,000 bytes of UTF-8; of the control characters only tab, line feed and carriage return.
    #[schema(max_length = 10000, pattern = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f]*$")]
    #[serde(default)]
    description: String,
    #[serde(default)]
    skip_fcnt_check: bool,
    #[serde(default)]
    is_disabled: bool,
    /// At most 32; keys 1-64 bytes, values at most 256, on one line; 4,096 bytes in all.
    #[serde(default)]
    tags: BTreeMap<String, String>,
    // Read-only fields a client may echo back from a GET.
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    last_seen_at: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    dev_addr: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    created_at: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    updated_at: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    state: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJson {
    #[schema(value_type = String)]
    dev_eui: Eui64,
    name: String,
    description: String,
    application_id: Uuid,
    device_profile_id: Uuid,
    #[schema(value_type = String)]
    join_eui: Eui64,
    skip_fcnt_check: bool,
    is_disabled: bool,
    #[schema(value_type = BTreeMap<String, String>)]
    tags: serde_json::Value,
    #[serde(serialize_with = "super::time_format::option::utc")]
    last_seen_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<String>)]
    dev_addr: Option<DevAddr>,
    #[serde(serialize_with = "super::time_format::utc")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::time_format::utc")]
    updated_at: DateTime<Utc>,
    state: DeviceStateJson,
}

/// What the network server knows of the device's link: its session and MAC state. Every
/// field but `joined` is null while the device is not activated.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStateJson {
    /// Activated: joined (OTAA) or activated by hand (ABP), so it has a session.
    joined: bool,
    #[schema(value_type = Option<String>)]
    dev_addr: Option<DevAddr>,
    /// The frame counter the next uplink must have at least.
    f_cnt_up: Option<u32>,
    /// The frame counter of the next downlink.
    f_cnt_down: Option<u32>,
    /// The data rate the last acknowledged LinkADRReq set; null until ADR has set one (the
    /// device then picks its own).
    dr: Option<u8>,
    /// TXPower index the device uses (0 = the region's maximum).
    tx_power_index: Option<u8>,
    /// Transmissions per uplink.
    nb_trans: Option<u8>,
    /// Whether the network server runs ADR for it (its device profile's `adrEnabled`).
    adr: Option<bool>,
    #[serde(serialize_with = "super::time_format::option::utc")]
    last_seen_at: Option<DateTime<Utc>>,
}

impl DeviceStateJson {
    fn of(last_seen_at: Option<DateTime<Utc>>, session: Option<(DeviceSession, bool)>) -> Self {
        match session {
            None => DeviceStateJson {
                joined: false,
                dev_addr: None,
                f_cnt_up: None,
                f_cnt_down: None,
                dr: None,
                tx_power_index: None,
                nb_trans: None,
                adr: None,
                last_seen_at,
            },
            Some((s, adr)) => DeviceStateJson {
                joined: true,
                dev_addr: Some(s.dev_addr),
                f_cnt_up: Some(s.f_cnt_up),
                f_cnt_down: Some(s.n_f_cnt_down),
                dr: s.mac_state.dr,
                tx_power_index: Some(s.mac_state.tx_power_index),
                nb_trans: Some(s.mac_state.nb_trans),
                adr: Some(adr),
                last_seen_at,
            },
        }
    }
}

/// The devices with their state, from one query for all their sessions.
async fn with_state(state: &ApiState, devices: Vec<Device>) -> Result<Vec<DeviceJson>, ApiError> {
    let euis: Vec<Eui64> = devices.iter().map(|d| d.dev_eui).collect();
    let mut sessions: std::collections::HashMap<Eui64, (DeviceSession, bool)> =
        state.storage.sessions.get_many_with_adr(&euis).await?.into_iter().map(|(s, adr)| (s.dev_eui, (s, adr))).collect();
    Ok(devices
        .into_iter()
        .map(|d| {
            let session = sessions.remove(&d.dev_eui);
            DeviceJson::new(d, session)
        })
        .collect())
}

async fn one_with_state(state: &ApiState, device: Device) -> Result<DeviceJson, ApiError> {
    Ok(with_state(state, vec![device]).await?.pop().expect("one device in, one out"))
}

impl DeviceJson {
    fn new(d: Device, session: Option<(DeviceSession, bool)>) -> Self {
        DeviceJson {
            state: DeviceStateJson::of(d.last_seen_at, session),
            dev_eui: d.dev_eui,
            name: d.name,
            description: d.description,
            application_id: d.application_id,
            device_profile_id: d.device_profile_id,
            join_eui: d.join_eui,
            skip_fcnt_check: d.skip_fcnt_check,
            is_disabled: d.is_disabled,
            // A NULL or non-object column still reads as `{}` so clients can index it.
            tags: if d.tags.is_object() { d.tags } else { serde_json::json!({}) },
            last_seen_at: d.last_seen_at,
            dev_addr: d.dev_addr,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// The validated content of a body, apart from the DevEUI.
#[derive(Debug, Clone, PartialEq)]
struct DeviceFields {
    name: String,
    description: String,
    application_id: Uuid,
    device_profile_id: Uuid,
    join_eui: Eui64,
    skip_fcnt_check: bool,
    is_disabled: bool,
    tags: serde_json::Value,
}

/// Checks everything that needs no database; references are checked by `check_references`.
fn validated(body: DeviceBody) -> Result<DeviceFields, ApiError> {
    let name = required_name(body.name)?;
    let application_id = match body.application_id.as_deref() {
        Some(s) => parse_uuid("applicationId", s)?,
        None => return Err(ApiError::field("applicationId", "is required")),
    };
    let device_profile_id = match body.device_profile_id.as_deref() {
        Some(s) => parse_uuid("deviceProfileId", s)?,
        None => return Err(ApiError::field("deviceProfileId", "is required")),
    };
    let join_eui = match body.join_eui.as_deref() {
        Some(s) => parse_eui("joinEui", s)?,
        None => Eui64([0; 8]),
    };
    text::description(&body.description)?;
    text::check_tags(&body.tags)?;
    let tags = serde_json::to_value(&body.tags).map_err(|e| ApiError::field("tags", e))?;
    Ok(DeviceFields {
        name,
        description: body.description,
        application_id,
        device_profile_id,
        join_eui,
        skip_fcnt_check: body.skip_fcnt_check,
        is_disabled: body.is_disabled,
        tags,
    })
}

/// Unknown references are the client's input error (400 naming the field), checked before
/// writing so the answer does not depend on how a backend reports a broken foreign key.
async fn check_references(state: &ApiState, f: &DeviceFields) -> Result<(), ApiError> {
    match state.storage.applications.get(f.application_id).await {
        Err(StorageError::NotFound) => return Err(ApiError::field("applicationId", format!("no application {}", f.application_id))),
        other => {
            other?;
        }
    }
    match state.storage.device_profiles.get(f.device_profile_id).await {
        Err(StorageError::NotFound) => {
            return Err(ApiError::field("deviceProfileId", format!("no device profile {}", f.device_profile_id)))
        }
        other => {
            other?;
        }
    }
    Ok(())
}

/// A reference that vanished between the check and the write still names its field.
fn reference_error(e: StorageError) -> ApiError {
    match e {
        StorageError::Conflict(m) if m.starts_with("applicationId") || m.starts_with("deviceProfileId") => ApiError::BadRequest(m),
        StorageError::AlreadyExists => ApiError::Conflict("a device with this devEui already exists".into()),
        other => other.into(),
    }
}

fn apply(d: &mut Device, f: DeviceFields) {
    d.name = f.name;
    d.description = f.description;
    d.application_id = f.application_id;
    d.device_profile_id = f.device_profile_id;
    d.join_eui = f.join_eui;
    d.skip_fcnt_check = f.skip_fcnt_check;
    d.is_disabled = f.is_disabled;
    d.tags = f.tags;
}

#[utoipa::path(
    operation_id = "devices_create",
    summary = "Create a device",
    post,
    path = "/devices",
    tag = "devices",
    request_body = DeviceBody,
    responses(
        (status = 201, body = DeviceJson, links(
            ("devices_get" = (operation_id = "devices_get", parameters(("dev_eui" = "$response.body#/devEui")))),
            ("devices_update" = (operation_id = "devices_update", parameters(("dev_eui" = "$response.body#/devEui")))),
            ("devices_delete" = (operation_id = "devices_delete", parameters(("dev_eui" = "$response.body#/devEui")))),
            ("device_keys_put" = (operation_id = "device_keys_put", parameters(("dev_eui" = "$response.body#/devEui")))),
            ("device_keys_get" = (operation_id = "device_keys_get", parameters(("dev_eui" = "$response.body#/devEui")))),
            ("device_activation_activate" = (operation_id = "device_activation_activate", parameters(("dev_eui" = "$response.body#/devEui")))),
            ("device_queue_enqueue" = (operation_id = "device_queue_enqueue", parameters(("dev_eui" = "$response.body#/devEui")))),
            ("device_queue_list" = (operation_id = "device_queue_list", parameters(("dev_eui" = "$response.body#/devEui")))),
            ("device_uplinks_list" = (operation_id = "device_uplinks_list", parameters(("dev_eui" = "$response.body#/devEui")))),
            ("device_events_list" = (operation_id = "device_events_list", parameters(("dev_eui" = "$response.body#/devEui"))))
        )),
        WriteErrors
    )
)]
pub async fn create(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<DeviceBody>,
) -> Result<(StatusCode, Json<DeviceJson>), ApiError> {
    let id = body.dev_eui.clone().ok_or_else(|| ApiError::field("devEui", "is required"))?;
    let dev_eui = parse_eui("devEui", &id)?;
    let fields = validated(body)?;
    access::require_application(&principal, fields.application_id)?;
    check_references(&state, &fields).await?;
    let now = Utc::now();
    let dev = Device {
        dev_eui,
        name: fields.name,
        description: fields.description,
        application_id: fields.application_id,
        device_profile_id: fields.device_profile_id,
        join_eui: fields.join_eui,
        skip_fcnt_check: fields.skip_fcnt_check,
        is_disabled: fields.is_disabled,
        tags: fields.tags,
        last_seen_at: None,
        dev_addr: None,
        created_at: now,
        updated_at: now,
    };
    // A device deleted and created again is not served from a stale cache entry: the
    // network server re-reads it.
    state.network.create_device(&dev).await.map_err(reference_error)?;
    // Its session went with an earlier device of this EUI: a new device is not activated.
    Ok((StatusCode::CREATED, Json(DeviceJson::new(dev, None))))
}

#[utoipa::path(
    operation_id = "devices_get",
    summary = "Get a device",
    get,
    path = "/devices/{dev_eui}",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, body = DeviceJson), ReadErrors)
)]
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<DeviceJson>, ApiError> {
    let dev = existing_device(&state, parse_eui("devEui", &id)?).await?;
    Ok(Json(one_with_state(&state, dev).await?))
}

/// The query parameters of [`list`].
pub const LIST_QUERY: &[&str] = &["limit", "offset", "applicationId"];

#[utoipa::path(
    operation_id = "devices_list",
    summary = "List the devices, of one application or of all",
    get,
    path = "/devices",
    tag = "devices",
    params(
        ("limit" = Option<u32>, Query, description = "Page size (default 100)", minimum = 0, maximum = 1000),
        ("offset" = Option<u64>, Query, description = "Rows to skip", maximum = 4294967295.0),
        ("applicationId" = Option<uuid::Uuid>, Query, description = "Only the devices of this application"),
    ),
    responses((status = 200, body = ListResponse<DeviceJson>), ReadErrors)
)]
pub async fn list(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    q: QueryMap,
) -> Result<Json<ListResponse<DeviceJson>>, ApiError> {
    let p = q.paging()?;
    let asked = q.get("applicationId").map(|s| parse_uuid("applicationId", s)).transpose()?;
    if let Some(id) = asked {
        access::require_application(&principal, id)?;
    }
    // A key limited to one application lists its devices only.
    let application_id = asked.or(principal.application_id);
    let page = state.storage.devices.list(application_id, p.limit, p.offset).await?;
    Ok(Json(ListResponse { total_count: page.total_count, result: with_state(&state, page.result).await? }))
}

#[utoipa::path(
    operation_id = "devices_update",
    summary = "Replace a device",
    put,
    path = "/devices/{dev_eui}",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    request_body = DeviceBody,
    responses((status = 200, body = DeviceJson), WriteErrors)
)]
pub async fn update(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DeviceBody>,
) -> Result<Json<DeviceJson>, ApiError> {
    let dev_eui = parse_eui("devEui", &id)?;
    if let Some(b) = body.dev_eui.as_deref() {
        if parse_eui("devEui", b)? != dev_eui {
            return Err(ApiError::field("devEui", "does not match the path"));
        }
    }
    let fields = validated(body)?;
    // Not into another application (the device itself was checked before the handler).
    access::require_application(&principal, fields.application_id)?;
    let mut dev = existing_device(&state, dev_eui).await?;
    check_references(&state, &fields).await?;
    apply(&mut dev, fields);
    dev.updated_at = Utc::now();
    state.network.update_device(&dev).await.map_err(reference_error)?;
    Ok(Json(one_with_state(&state, dev).await?))
}

#[utoipa::path(
    operation_id = "devices_delete",
    summary = "Delete a device with its keys, session and queue",
    delete,
    path = "/devices/{dev_eui}",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 204, description = "Deleted"), WriteErrors)
)]
pub async fn delete(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let dev_eui = parse_eui("devEui", &id)?;
    match state.network.delete_device(dev_eui).await {
        Err(StorageError::NotFound) => return Err(ApiError::NotFound(format!("device {dev_eui} not found"))),
        other => other?,
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "6f1c1e4e-3f7a-4b7e-9d59-3d2c9b8a7f10";
    const DP: &str = "0e0c5f8e-8c43-4a35-b1a6-47a9e3b8c2d1";

    fn error_of(json: &str) -> String {
        let body: DeviceBody = super::super::extract::parse_json(json.as_bytes()).unwrap();
        validated(body).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_body_gets_a_zero_join_eui_and_empty_tags() {
        let body: DeviceBody =
            super::super::extract::parse_json(format!(r#"{{"name":"d","applicationId":"{APP}","deviceProfileId":"{DP}"}}"#).as_bytes())
                .unwrap();
        let f = validated(body).unwrap();
        assert_eq!(f.join_eui, Eui64([0; 8]));
        assert_eq!(f.tags, serde_json::json!({}));
        assert!(!f.skip_fcnt_check && !f.is_disabled);
    }

    #[test]
    fn join_eui_is_accepted_in_upper_case() {
        let body: DeviceBody = super::super::extract::parse_json(
            format!(r#"{{"name":"d","applicationId":"{APP}","deviceProfileId":"{DP}","joinEui":"70B3D57ED0000000"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(validated(body).unwrap().join_eui.to_string(), "70b3d57ed0000000");
    }

    #[test]
    fn each_invalid_field_is_named() {
        assert!(error_of(&format!(r#"{{"applicationId":"{APP}","deviceProfileId":"{DP}"}}"#)).starts_with("name: "));
        assert!(error_of(&format!(r#"{{"name":"d","deviceProfileId":"{DP}"}}"#)).starts_with("applicationId: "));
        assert!(error_of(&format!(r#"{{"name":"d","applicationId":"x","deviceProfileId":"{DP}"}}"#)).starts_with("applicationId: "));
        assert!(error_of(&format!(r#"{{"name":"d","applicationId":"{APP}"}}"#)).starts_with("deviceProfileId: "));
        assert!(error_of(&format!(r#"{{"name":"d","applicationId":"{APP}","deviceProfileId":"{DP}","joinEui":"12"}}"#))
            .starts_with("joinEui: "));
    }

    #[test]
    fn tags_must_be_strings() {
        let e = super::super::extract::parse_json::<DeviceBody>(br#"{"name":"d","tags":{"floor":3}}"#).unwrap_err().to_string();
        assert!(e.starts_with("tags.floor: "), "{e}");
    }

    #[test]
    fn dev_addr_and_keys_parse_any_case_and_name_the_field() {
        assert_eq!(parse_dev_addr("devAddr", "2601ABCD").unwrap().to_string(), "2601abcd");
        assert!(parse_dev_addr("devAddr", "2601ABC").unwrap_err().to_string().starts_with("devAddr: "));
        assert_eq!(parse_key("appKey", "000102030405060708090A0B0C0D0E0F").unwrap().to_hex(), "000102030405060708090a0b0c0d0e0f");
        let e = parse_key("appKey", "zz0102030405060708090A0B0C0D0E0F").unwrap_err().to_string();
        assert!(e.starts_with("appKey: ") && !e.contains("zz01"), "{e}");
    }
}
