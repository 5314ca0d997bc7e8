//! `GET /api/events`: the latest stored events across devices (join, ack, txack, status,
//! log; uplinks are in each device's `/uplinks`), newest first, for the console's overview.
//! A key limited to an application sees the events published to its application only.

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use loraflow_network_server::storage::{EventFilter, EventKind, EventRecord, LogLevel};
use loraflow_network_server::types::Eui64;

use super::auth::Principal;
use super::error::ApiError;
use super::extract::QueryMap;
use super::openapi::ReadErrors;
use super::{ApiState, ListResponse};

/// Events per answer unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 20;
/// An overview, not an export: older events are paged per device (`/devices/{devEui}/events`).
const MAX_LIMIT: u32 = 100;

/// The query parameters of [`list`].
pub const LIST_QUERY: &[&str] = &["kind", "level", "limit"];

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentEventJson {
    id: Uuid,
    #[serde(serialize_with = "super::time_format::utc")]
    time: DateTime<Utc>,
    kind: String,
    #[schema(value_type = String)]
    dev_eui: Eui64,
    /// The application the event was published to.
    application_id: Uuid,
    /// `log` events: ERROR, WARNING or INFO.
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<String>,
    /// The event as it was published over MQTT.
    body: serde_json::Value,
}

impl From<EventRecord> for RecentEventJson {
    fn from(r: EventRecord) -> Self {
        let level = (r.kind == EventKind::Log.as_str()).then(|| r.body["level"].as_str().map(str::to_string)).flatten();
        RecentEventJson { id: r.id, time: r.time, kind: r.kind, dev_eui: r.dev_eui, application_id: r.application_id, level, body: r.body }
    }
}

/// The filter and limit of a query.
fn parsed(q: &QueryMap, principal: &Principal) -> Result<(EventFilter, u32), ApiError> {
    let kind = q.get("kind").map(|k| k.parse::<EventKind>().map_err(|e| ApiError::field("kind", e))).transpose()?;
    let level = q.get("level").map(|l| l.parse::<LogLevel>().map_err(|e| ApiError::field("level", e))).transpose()?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::field("limit", format!("must be 1..={MAX_LIMIT}, got {s:?}")))?,
    };
    Ok((EventFilter { application_id: principal.application_id, kind, level }, limit))
}

#[utoipa::path(
    operation_id = "events_list",
    summary = "List the latest events of every device, newest first",
    description = "Stored join, ack, txack, status and log events across devices (a key limited to an \
        application: its application's). `totalCount` counts every matching event, `result` holds the newest `limit`.",
    get,
    path = "/events",
    tag = "devices",
    params(
        ("kind" = Option<String>, Query, description = "join, ack, txack, status or log; all when absent", pattern = "^(join|ack|txack|status|log)$"),
        ("level" = Option<String>, Query, description = "Only log events of this level", pattern = "^(ERROR|WARNING|INFO)$"),
        ("limit" = Option<u32>, Query, description = "How many (default 20)", minimum = 1, maximum = 100),
    ),
    responses((status = 200, body = ListResponse<RecentEventJson>), ReadErrors)
)]
pub async fn list(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    q: QueryMap,
) -> Result<Json<ListResponse<RecentEventJson>>, ApiError> {
    let (filter, limit) = parsed(&q, &principal)?;
    let history = &state.storage.history;
    let (rows, total) = tokio::try_join!(history.recent_events(&filter, limit), history.count_recent_events(&filter))?;
    Ok(Json(ListResponse { total_count: total, result: rows.into_iter().map(Into::into).collect() }))
}
