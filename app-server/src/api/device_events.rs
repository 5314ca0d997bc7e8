//! `/api/devices/{devEui}/events`: the stored join, ack, txack, status and log events of a
//! device, newest first, paged like its uplinks.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use loraflow_network_server::storage::{EventKind, EventRecord, HistoryCursor};

use super::devices::existing_device;
use super::error::ApiError;
use super::extract::QueryMap;
use super::gateways::parse_eui;
use super::history::{history_query, one_more, page, HistoryPage};
use super::openapi::ReadErrors;
use super::ApiState;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    id: Uuid,
    #[serde(serialize_with = "super::time_format::utc")]
    time: DateTime<Utc>,
    kind: String,
    /// The event as it was published over MQTT.
    body: serde_json::Value,
}

impl From<EventRecord> for EventJson {
    fn from(r: EventRecord) -> Self {
        EventJson { id: r.id, time: r.time, kind: r.kind, body: r.body }
    }
}

/// The query parameters of [`list`]: those of [`history_query`] and `kind`.
pub const LIST_QUERY: &[&str] = &["limit", "since", "cursor", "kind"];

/// `?kind=` (join, ack, txack, status or log; all when absent), and `?limit=`, `?since=`,
/// `?cursor=` as in [`history_query`].
#[utoipa::path(
    operation_id = "device_events_list",
    summary = "List a device's stored events, newest first",
    description = "Paged by cursor: follow `nextCursor` until it is null.",
    get,
    path = "/devices/{dev_eui}/events",
    tag = "devices",
    params(
        ("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$"),
        ("limit" = Option<u32>, Query, description = "Page size (default 100)", minimum = 1, maximum = 1000),
        ("since" = Option<String>, Query, format = DateTime, description = "Only rows at or after this RFC 3339 time"),
        ("cursor" = Option<String>, Query, description = "The nextCursor of the previous page", pattern = "^[A-Za-z0-9_-]{32}$"),
        ("kind" = Option<String>, Query, description = "join, ack, txack, status or log; all when absent", pattern = "^(join|ack|txack|status|log)$"),
    ),
    responses((status = 200, body = HistoryPage<EventJson>), ReadErrors)
)]
pub async fn list(
    State(state): State<ApiState>,
    Path(dev_eui): Path<String>,
    q: QueryMap,
) -> Result<Json<HistoryPage<EventJson>>, ApiError> {
    let dev_eui = parse_eui("devEui", &dev_eui)?;
    let query = history_query(dev_eui, &q)?;
    let kind: Option<EventKind> = q.get("kind").map(|k| k.parse().map_err(|e| ApiError::field("kind", e))).transpose()?;
    existing_device(&state, dev_eui).await?;
    let history = &state.storage.history;
    let fetch = one_more(&query);
    let (rows, total) = tokio::try_join!(history.events_page(&fetch, kind), history.count_events(dev_eui, query.since, kind))?;
    Ok(Json(page(rows, query.limit, total, |r| HistoryCursor { time: r.time, id: r.id })))
}
