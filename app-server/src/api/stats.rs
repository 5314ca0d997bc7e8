//! `GET /api/stats` and `GET /api/gateways/{gatewayId}/stats`: per-minute traffic of the last
//! hour, counted in memory since the process started (`loraflow_network_server::traffic`).

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use loraflow_network_server::traffic::{HourCounts, BUCKETS, BUCKET_SECONDS};

use super::error::ApiError;
use super::gateways::{parse_eui, seen_and_state};
use super::openapi::ReadErrors;
use super::ApiState;

/// Gateways by state, as `GET /api/gateways` shows them.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayCounts {
    pub online: u64,
    pub offline: u64,
    pub never_seen: u64,
}

/// The network's last hour.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStats {
    /// Seconds per bucket (60).
    pub bucket_seconds: u64,
    /// Start of the oldest bucket.
    #[serde(serialize_with = "super::time_format::utc")]
    pub from: DateTime<Utc>,
    /// End of the newest bucket (the current minute, still counting).
    #[serde(serialize_with = "super::time_format::utc")]
    pub to: DateTime<Utc>,
    /// Accepted data uplinks per minute, 60 values, oldest first.
    pub uplinks: Vec<u64>,
    /// Accepted join-requests per minute, oldest first.
    pub joins: Vec<u64>,
    pub gateways: GatewayCounts,
}

/// Sums over the hour.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTotals {
    pub uplinks: u64,
    pub rejected: u64,
    pub downlinks: u64,
}

/// One gateway's last hour.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStats {
    pub bucket_seconds: u64,
    #[serde(serialize_with = "super::time_format::utc")]
    pub from: DateTime<Utc>,
    #[serde(serialize_with = "super::time_format::utc")]
    pub to: DateTime<Utc>,
    /// Uplink copies this gateway forwarded that the server decided about, per minute.
    pub uplinks: Vec<u64>,
    /// Those not accepted (bad MIC, unknown DevAddr, replay…), per minute.
    pub rejected: Vec<u64>,
    /// Downlink frames sent to this gateway, per minute.
    pub downlinks: Vec<u64>,
    pub totals: GatewayTotals,
}

/// `from` and `to` of an hour of buckets.
fn range(h: &HourCounts) -> (DateTime<Utc>, DateTime<Utc>) {
    let at = |minute: u64| Utc.timestamp_opt((minute * BUCKET_SECONDS) as i64, 0).single().unwrap_or_default();
    (at(h.from_minute), at(h.from_minute + BUCKETS as u64))
}

#[utoipa::path(
    operation_id = "stats_get",
    summary = "Network traffic of the last hour, per minute",
    description = "Accepted uplinks and joins per minute (in memory since the process started) and gateways by \
        state. Admin keys only.",
    get,
    path = "/stats",
    tag = "stats",
    responses((status = 200, body = NetworkStats), ReadErrors)
)]
pub async fn network(State(state): State<ApiState>) -> Result<Json<NetworkStats>, ApiError> {
    let (uplinks, joins) = state.network.traffic().network(Utc::now());
    let mut gateways = GatewayCounts::default();
    let mut offset = 0;
    loop {
        let page = state.storage.gateways.list(1000, offset).await?;
        for gw in &page.result {
            match seen_and_state(&state, gw).1 {
                "ONLINE" => gateways.online += 1,
                "OFFLINE" => gateways.offline += 1,
                _ => gateways.never_seen += 1,
            }
        }
        offset += page.result.len() as u32;
        if page.result.is_empty() || u64::from(offset) >= page.total_count {
            break;
        }
    }
    let (from, to) = range(&uplinks);
    Ok(Json(NetworkStats {
        bucket_seconds: BUCKET_SECONDS,
        from,
        to,
        uplinks: uplinks.counts.to_vec(),
        joins: joins.counts.to_vec(),
        gateways,
    }))
}

#[utoipa::path(
    operation_id = "gateway_stats_get",
    summary = "A gateway's traffic of the last hour, per minute",
    description = "Uplink copies (and how many were rejected) and downlinks per minute, with totals; in memory \
        since the process started. Admin keys only.",
    get,
    path = "/gateways/{gateway_id}/stats",
    tag = "gateways",
    params(("gateway_id" = String, Path, description = "Gateway EUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, body = GatewayStats), ReadErrors)
)]
pub async fn gateway(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<GatewayStats>, ApiError> {
    let gateway_id = parse_eui("gatewayId", &id)?;
    state.storage.gateways.get(gateway_id).await.map_err(|e| match ApiError::from(e) {
        ApiError::NotFound(_) => ApiError::NotFound(format!("gateway {gateway_id} not found")),
        other => other,
    })?;
    let (uplinks, rejected, downlinks) = state.network.traffic().of_gateway(gateway_id, Utc::now());
    let (from, to) = range(&uplinks);
    Ok(Json(GatewayStats {
        bucket_seconds: BUCKET_SECONDS,
        from,
        to,
        totals: GatewayTotals { uplinks: uplinks.total(), rejected: rejected.total(), downlinks: downlinks.total() },
        uplinks: uplinks.counts.to_vec(),
        rejected: rejected.counts.to_vec(),
        downlinks: downlinks.counts.to_vec(),
    }))
}
