//! `GET /api/devices/{devEui}/events/stream` and `GET /api/gateways/{gatewayId}/frames/stream`:
//! server-sent events (`crate::live`). Unknown devices and gateways answer 404 before any
//! streaming starts; scoped keys reach only their application's devices (`access`), the
//! gateway stream is for admin keys.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::Event;
use axum::response::Response;
use serde::Deserialize;

use loraflow_network_server::frame_feed::FrameEvent;

use super::devices::existing_device;
use super::error::ApiError;
use super::gateways::parse_eui;
use super::openapi::StreamErrors;
use super::ApiState;
use crate::live::{sse, DeviceEvent};

/// `id:` of a device event: its deduplication id, when it has one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventId {
    deduplication_id: Option<String>,
}

fn device_event(e: DeviceEvent) -> Event {
    let mut event = Event::default().event(e.kind);
    let id = serde_json::from_str::<EventId>(&e.json).ok().and_then(|i| i.deduplication_id);
    if let Some(id) = id.filter(|i| !i.contains(['\n', '\r', '\0'])) {
        event = event.id(id);
    }
    event.data(&*e.json)
}

fn frame_event(f: Arc<FrameEvent>) -> Event {
    let json = serde_json::to_string(&*f).expect("a frame serialises");
    Event::default().event(f.kind()).data(json)
}

#[utoipa::path(
    operation_id = "device_events_stream",
    summary = "Stream a device's events live (server-sent events)",
    description = "`text/event-stream`. First `event: ready` with `{\"devEui\"}` once the subscription is active, \
        then one event per device event in publication order: `event:` the MQTT event name (`up`, `join`, `ack`, \
        `txack`, `status`, `log`, …), `id:` its deduplicationId if any, `data:` the exact JSON published on MQTT. \
        `event: lagged` with `{\"missed\": n}` when this client read too slowly and n events were skipped. \
        A `: keepalive` comment every 15 s. The stream ends at server shutdown. Read it with fetch() \
        (EventSource cannot send the bearer token).",
    get,
    path = "/devices/{dev_eui}/events/stream",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, description = "The event stream", content_type = "text/event-stream", body = String), StreamErrors)
)]
pub async fn device_events(State(state): State<ApiState>, Path(dev_eui): Path<String>) -> Result<Response, ApiError> {
    let dev_eui = parse_eui("devEui", &dev_eui)?;
    existing_device(&state, dev_eui).await?;
    let slot = state.live.stream_slot().ok_or(ApiError::TooManyStreams)?;
    let watch = state.live.devices.watch(dev_eui);
    Ok(sse::answer(serde_json::json!({ "devEui": dev_eui.to_string() }), watch, device_event, state.live.shutdown.clone(), slot))
}

#[utoipa::path(
    operation_id = "gateway_frames_stream",
    summary = "Stream a gateway's raw frames live (server-sent events)",
    description = "`text/event-stream`. First `event: ready` with `{\"gatewayId\"}`, then `event: up` for every \
        uplink copy the gateway forwarded once the server decided about it (`accepted`, and `reason`: the word of \
        loraflow_uplinks_rejected_total / loraflow_joins_rejected_total such as `unknown_dev_addr`, `mic`, \
        `replay`, `parse_error`), `event: down` for every downlink sent to it with its `txAck` result. \
        `event: lagged` with `{\"missed\": n}` when this client read too slowly; a `: keepalive` comment every \
        15 s. Admin keys only.",
    get,
    path = "/gateways/{gateway_id}/frames/stream",
    tag = "gateways",
    params(("gateway_id" = String, Path, description = "Gateway EUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, description = "The frame stream", content_type = "text/event-stream", body = String), StreamErrors)
)]
pub async fn gateway_frames(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let gateway_id = parse_eui("gatewayId", &id)?;
    state.storage.gateways.get(gateway_id).await.map_err(|e| match ApiError::from(e) {
        ApiError::NotFound(_) => ApiError::NotFound(format!("gateway {gateway_id} not found")),
        other => other,
    })?;
    let slot = state.live.stream_slot().ok_or(ApiError::TooManyStreams)?;
    let watch = state.network.frames().watch(gateway_id);
    Ok(sse::answer(serde_json::json!({ "gatewayId": gateway_id.to_string() }), watch, frame_event, state.live.shutdown.clone(), slot))
}
