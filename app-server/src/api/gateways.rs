//! `/api/gateways`: registration of the gateways allowed to forward traffic.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use loraflow_network_server::storage::{AllowedNetworks, Gateway, Location};
use loraflow_network_server::types::Eui64;

use super::applications::required_name;
use super::error::ApiError;
use super::extract::{ApiJson, QueryMap};
use super::openapi::{ReadErrors, WriteErrors};
use super::text;
use super::{ApiState, ListResponse};

#[derive(Debug, Deserialize, ToSchema)]
// Read-only fields echoed back from a GET are accepted and ignored.
#[allow(dead_code)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayBody {
    /// Required on create; on update it must match the path when present.
    /// 16 hex characters.
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    gateway_id: Option<String>,
    /// Required: 1-100 bytes of UTF-8 on one line, not blank.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    name: Option<String>,
    /// At most 10,000 bytes of UTF-8; of the control characters only tab, line feed and carriage return.
    #[schema(max_length = 10000, pattern = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f]*$")]
    #[serde(default)]
    description: String,
    location: Option<LocationJson>,
    /// The region configuration the gateway belongs to; omitted = the first configured one.
    region_config_id: Option<String>,
    /// CIDR networks its Semtech UDP datagrams may come from; `[]` = anywhere. Omitted: anywhere
    /// on create, unchanged on update (a client that does not know the field must not open a
    /// gateway to everywhere by accident).
    allowed_networks: Option<Vec<String>>,
    // Read-only fields a client may echo back from a GET.
    #[serde(default)]
    #[schema(ignore)]
    created_at: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[schema(ignore)]
    updated_at: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[schema(ignore)]
    last_seen_at: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[schema(ignore)]
    state: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationJson {
    latitude: f64,
    longitude: f64,
    #[serde(default)]
    altitude: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayJson {
    gateway_id: String,
    name: String,
    description: String,
    location: Option<LocationJson>,
    region_config_id: String,
    allowed_networks: Vec<String>,
    #[serde(serialize_with = "super::time_format::utc")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::time_format::utc")]
    updated_at: DateTime<Utc>,
    #[serde(serialize_with = "super::time_format::option::utc")]
    last_seen_at: Option<DateTime<Utc>>,
    /// `ONLINE` (PULL_DATA within the offline timeout), `OFFLINE`, or `NEVER_SEEN`.
    state: &'static str,
}

pub fn parse_eui(field: &str, s: &str) -> Result<Eui64, ApiError> {
    s.to_ascii_lowercase().parse::<Eui64>().map_err(|_| ApiError::field(field, format!("expected 16 hex characters, got {s:?}")))
}

fn validated_location(loc: Option<LocationJson>) -> Result<Option<Location>, ApiError> {
    let Some(l) = loc else { return Ok(None) };
    if !(-90.0..=90.0).contains(&l.latitude) {
        return Err(ApiError::field("location.latitude", "must be between -90 and 90"));
    }
    if !(-180.0..=180.0).contains(&l.longitude) {
        return Err(ApiError::field("location.longitude", "must be between -180 and 180"));
    }
    Ok(Some(Location { latitude: l.latitude, longitude: l.longitude, altitude: l.altitude }))
}

fn validated_networks(networks: Option<Vec<String>>) -> Result<Option<AllowedNetworks>, ApiError> {
    let Some(networks) = networks else { return Ok(None) };
    AllowedNetworks::parse(&networks).map(Some).map_err(|e| ApiError::field(&format!("allowedNetworks[{}]", e.index), e))
}

/// A configured region config id; `None` (the first) when omitted.
fn validated_region(state: &ApiState, id: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(id) = id else { return Ok(None) };
    match state.regions.get(id.trim()) {
        Some(r) => Ok(Some(r.id.to_string())),
        None => {
            let configured: Vec<&str> = state.regions.iter().map(|r| &*r.id).collect();
            Err(ApiError::field("regionConfigId", format!("{id:?} is not a configured region (configured: {})", configured.join(", "))))
        }
    }
}

/// When the gateway was last heard (stored or live) and its state: `ONLINE`, `OFFLINE` or
/// `NEVER_SEEN`.
pub(crate) fn seen_and_state(state: &ApiState, gw: &Gateway) -> (Option<DateTime<Utc>>, &'static str) {
    let live = state.gateway_status.as_ref().and_then(|h| h.gateway_state(gw.gateway_id));
    let live_seen = live.as_ref().and_then(|l| l.last_seen_at);
    // Microseconds, as stored, so the value does not change when read back after a restart.
    let last_seen_at = match (gw.last_seen_at, live_seen) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
    .map(|t| t.trunc_subsecs(6));
    let state_name = match (live.map(|l| l.online).unwrap_or(false), last_seen_at) {
        (true, _) => "ONLINE",
        (false, Some(_)) => "OFFLINE",
        (false, None) => "NEVER_SEEN",
    };
    (last_seen_at, state_name)
}

fn to_json(state: &ApiState, gw: Gateway) -> GatewayJson {
    let (last_seen_at, state_name) = seen_and_state(state, &gw);
    GatewayJson {
        gateway_id: gw.gateway_id.to_string(),
        name: gw.name,
        description: gw.description,
        location: gw.location.map(|l| LocationJson { latitude: l.latitude, longitude: l.longitude, altitude: l.altitude }),
        // A configuration removed from the config file: the gateway is served by the first.
        region_config_id: state.region_config_of(gw.region_config_id.as_deref()),
        allowed_networks: gw.allowed_networks.to_strings(),
        created_at: gw.created_at,
        updated_at: gw.updated_at,
        last_seen_at,
        state: state_name,
    }
}

#[utoipa::path(
    operation_id = "gateways_create",
    summary = "Register a gateway",
    post,
    path = "/gateways",
    tag = "gateways",
    request_body = GatewayBody,
    responses(
        (status = 201, body = GatewayJson, links(
            ("gateways_get" = (operation_id = "gateways_get", parameters(("gateway_id" = "$response.body#/gatewayId")))),
            ("gateways_update" = (operation_id = "gateways_update", parameters(("gateway_id" = "$response.body#/gatewayId")))),
            ("gateways_delete" = (operation_id = "gateways_delete", parameters(("gateway_id" = "$response.body#/gatewayId"))))
        )),
        WriteErrors
    )
)]
pub async fn create(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<GatewayBody>,
) -> Result<(StatusCode, Json<GatewayJson>), ApiError> {
    let id = body.gateway_id.as_deref().ok_or_else(|| ApiError::field("gatewayId", "is required"))?;
    let gateway_id = parse_eui("gatewayId", id)?;
    let name = required_name(body.name)?;
    text::description(&body.description)?;
    let location = validated_location(body.location)?;
    let region_config_id = validated_region(&state, body.region_config_id)?;
    let allowed_networks = validated_networks(body.allowed_networks)?.unwrap_or_default();
    let now = Utc::now();
    let gw = Gateway {
        gateway_id,
        name,
        description: body.description,
        location,
        created_at: now,
        updated_at: now,
        last_seen_at: None,
        region_config_id,
        allowed_networks,
    };
    state.network.create_gateway(&gw).await?;
    Ok((StatusCode::CREATED, Json(to_json(&state, gw))))
}

#[utoipa::path(
    operation_id = "gateways_get",
    summary = "Get a gateway with its live state",
    get,
    path = "/gateways/{gateway_id}",
    tag = "gateways",
    params(("gateway_id" = String, Path, description = "Gateway EUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, body = GatewayJson), ReadErrors)
)]
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<GatewayJson>, ApiError> {
    let gw = state.storage.gateways.get(parse_eui("gatewayId", &id)?).await?;
    Ok(Json(to_json(&state, gw)))
}

#[utoipa::path(
    operation_id = "gateways_list",
    summary = "List the gateways",
    get,
    path = "/gateways",
    tag = "gateways",
    params(
        ("limit" = Option<u32>, Query, description = "Page size (default 100)", minimum = 0, maximum = 1000),
        ("offset" = Option<u64>, Query, description = "Rows to skip", maximum = 4294967295.0),
    ),
    responses((status = 200, body = ListResponse<GatewayJson>), ReadErrors)
)]
pub async fn list(State(state): State<ApiState>, q: QueryMap) -> Result<Json<ListResponse<GatewayJson>>, ApiError> {
    let p = q.paging()?;
    let page = state.storage.gateways.list(p.limit, p.offset).await?;
    Ok(Json(ListResponse { total_count: page.total_count, result: page.result.into_iter().map(|g| to_json(&state, g)).collect() }))
}

#[utoipa::path(
    operation_id = "gateways_update",
    summary = "Replace a gateway",
    put,
    path = "/gateways/{gateway_id}",
    tag = "gateways",
    params(("gateway_id" = String, Path, description = "Gateway EUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    request_body = GatewayBody,
    responses((status = 200, body = GatewayJson), WriteErrors)
)]
pub async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GatewayBody>,
) -> Result<Json<GatewayJson>, ApiError> {
    let gateway_id = parse_eui("gatewayId", &id)?;
    if let Some(b) = body.gateway_id.as_deref() {
        if parse_eui("gatewayId", b)? != gateway_id {
            return Err(ApiError::field("gatewayId", "does not match the path"));
        }
    }
    let name = required_name(body.name)?;
    text::description(&body.description)?;
    let location = validated_location(body.location)?;
    let region_config_id = validated_region(&state, body.region_config_id)?;
    let allowed_networks = validated_networks(body.allowed_networks)?;
    let mut gw = state.storage.gateways.get(gateway_id).await?;
    gw.name = name;
    gw.description = body.description;
    gw.location = location;
    // Like the other fields, an update sets it: omitted = the first configuration.
    gw.region_config_id = region_config_id;
    if let Some(networks) = allowed_networks {
        gw.allowed_networks = networks;
    }
    gw.updated_at = Utc::now();
    state.network.update_gateway(&gw).await?;
    Ok(Json(to_json(&state, gw)))
}

#[utoipa::path(
    operation_id = "gateways_delete",
    summary = "Delete a gateway",
    delete,
    path = "/gateways/{gateway_id}",
    tag = "gateways",
    params(("gateway_id" = String, Path, description = "Gateway EUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 204, description = "Deleted"), WriteErrors)
)]
pub async fn delete(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let gateway_id = parse_eui("gatewayId", &id)?;
    state.network.delete_gateway(gateway_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
