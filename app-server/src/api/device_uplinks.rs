//! `/api/devices/{devEui}/uplinks`: stored uplink history, newest first.

use axum::extract::{Path, State};
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use loraflow_network_server::storage::{HistoryCursor, UplinkRecord};

use super::devices::existing_device;
use super::error::ApiError;
use super::extract::QueryMap;
use super::gateways::parse_eui;
use super::history::{history_query, one_more, page, HistoryPage};
use super::openapi::ReadErrors;
use super::ApiState;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UplinkJson {
    deduplication_id: Uuid,
    #[serde(serialize_with = "super::time_format::utc")]
    time: DateTime<Utc>,
    dev_addr: String,
    f_cnt: u32,
    f_port: Option<u8>,
    confirmed: bool,
    dr: u8,
    frequency: u32,
    rssi: i32,
    snr: f32,
    gateway_count: u32,
    /// Base64 of the decrypted FRMPayload.
    data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    object: Option<serde_json::Value>,
    rx_info: serde_json::Value,
    tx_info: serde_json::Value,
    /// What ADR decided on this uplink (`null` when it did not run), so users can watch
    /// the device's link converge.
    adr_decision: Option<AdrDecisionJson>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdrDecisionJson {
    dr: u8,
    tx_power_index: u8,
    nb_trans: u8,
}

impl From<UplinkRecord> for UplinkJson {
    fn from(r: UplinkRecord) -> Self {
        UplinkJson {
            deduplication_id: r.deduplication_id,
            time: r.time,
            dev_addr: r.dev_addr.to_string(),
            f_cnt: r.f_cnt,
            f_port: r.f_port,
            confirmed: r.confirmed,
            dr: r.dr,
            frequency: r.frequency,
            rssi: r.rssi,
            snr: r.snr,
            gateway_count: r.gateway_count,
            data: base64::engine::general_purpose::STANDARD.encode(&r.data),
            object: r.object,
            rx_info: r.rx_info,
            tx_info: r.tx_info,
            adr_decision: r.adr_decision.map(|d| AdrDecisionJson { dr: d.dr, tx_power_index: d.tx_power_index, nb_trans: d.nb_trans }),
        }
    }
}

/// `?limit=`, `?since=` and `?cursor=` as in [`history_query`].
#[utoipa::path(
    operation_id = "device_uplinks_list",
    summary = "List a device's stored uplinks, newest first",
    description = "Paged by cursor: follow `nextCursor` until it is null.",
    get,
    path = "/devices/{dev_eui}/uplinks",
    tag = "devices",
    params(
        ("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$"),
        ("limit" = Option<u32>, Query, description = "Page size (default 100)", minimum = 1, maximum = 1000),
        ("since" = Option<String>, Query, format = DateTime, description = "Only rows at or after this RFC 3339 time"),
        ("cursor" = Option<String>, Query, description = "The nextCursor of the previous page", pattern = "^[A-Za-z0-9_-]{32}$"),
    ),
    responses((status = 200, body = HistoryPage<UplinkJson>), ReadErrors)
)]
pub async fn list(
    State(state): State<ApiState>,
    Path(dev_eui): Path<String>,
    q: QueryMap,
) -> Result<Json<HistoryPage<UplinkJson>>, ApiError> {
    let dev_eui = parse_eui("devEui", &dev_eui)?;
    let query = history_query(dev_eui, &q)?;
    existing_device(&state, dev_eui).await?;
    let history = &state.storage.history;
    let fetch = one_more(&query);
    let (rows, total) = tokio::try_join!(history.uplinks_page(&fetch), history.count_uplinks(dev_eui, query.since))?;
    Ok(Json(page(rows, query.limit, total, |r| HistoryCursor { time: r.time, id: r.deduplication_id })))
}
