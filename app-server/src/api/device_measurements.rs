//! `/api/devices/{devEui}/measurements`: the series taken from a device's decoded uplinks.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;

use loraflow_network_server::storage::{MeasurementKind, MeasurementValue, StoredMeasurement};

use super::devices::existing_device;
use super::error::ApiError;
use super::gateways::parse_eui;
use super::{ApiState, ListResponse};

/// A series with its newest value: `value` is a number, or text for kind STRING.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesJson {
    name: String,
    kind: MeasurementKind,
    time: DateTime<Utc>,
    value: serde_json::Value,
}

impl From<StoredMeasurement> for SeriesJson {
    fn from(m: StoredMeasurement) -> Self {
        let value = match m.value {
            MeasurementValue::Number(n) => serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number),
            MeasurementValue::Text(t) => serde_json::Value::String(t),
        };
        SeriesJson { name: m.name, kind: m.kind, time: m.time, value }
    }
}

/// Every series of the device with its latest value and time, ordered by name.
pub async fn latest(State(state): State<ApiState>, Path(dev_eui): Path<String>) -> Result<Json<ListResponse<SeriesJson>>, ApiError> {
    let dev_eui = parse_eui("devEui", &dev_eui)?;
    existing_device(&state, dev_eui).await?;
    let rows = state.storage.measurements.latest_measurements(dev_eui).await?;
    Ok(Json(ListResponse { total_count: rows.len() as u64, result: rows.into_iter().map(Into::into).collect() }))
}
