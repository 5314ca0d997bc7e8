//! `/api/devices/{devEui}/queue`: downlinks waiting for the device's next receive window.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use loraflow_network_server::storage::{Device, QueueItem};

use super::device_profiles::existing_profile;
use super::devices::existing_device;
use super::error::ApiError;
use super::extract::ApiJson;
use super::gateways::parse_eui;
use super::openapi::{ReadErrors, WriteErrors};
use super::{ApiState, ListResponse};
use crate::downlink_queue::{self, EncodeError, MAX_PAYLOAD};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnqueueBody {
    /// Kept wide so that 0 or 300 get our message rather than serde's u8 range error.
    #[schema(value_type = u8, required = true, minimum = 1, maximum = 223)]
    f_port: Option<i64>,
    #[serde(default)]
    confirmed: bool,
    /// Base64 of the payload; or give `object`.
    #[schema(format = Byte)]
    data: Option<String>,
    /// Encoded by the device profile's codec.
    #[schema(value_type = Option<Object>)]
    object: Option<serde_json::Value>,
    // Fields a client may copy from a queue listing or an MQTT downlink command.
    #[serde(default)]
    /// 16 hex characters.
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    dev_eui: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    id: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    f_cnt_down: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    is_pending: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(ignore)]
    created_at: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueueJson {
    id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueItemJson {
    id: Uuid,
    f_port: u8,
    confirmed: bool,
    data: String,
    f_cnt_down: Option<u32>,
    is_pending: bool,
    #[serde(serialize_with = "super::time_format::utc")]
    created_at: DateTime<Utc>,
}

impl From<QueueItem> for QueueItemJson {
    fn from(q: QueueItem) -> Self {
        QueueItemJson {
            id: q.id,
            f_port: q.f_port,
            confirmed: q.confirmed,
            data: base64::engine::general_purpose::STANDARD.encode(&q.data),
            f_cnt_down: q.f_cnt_down,
            is_pending: q.is_pending,
            created_at: q.created_at,
        }
    }
}

/// A validated downlink request: FPort and either the payload or an object to encode.
#[derive(Debug, Clone, PartialEq)]
struct Downlink {
    f_port: u8,
    confirmed: bool,
    payload: Payload,
}

#[derive(Debug, Clone, PartialEq)]
enum Payload {
    Data(Vec<u8>),
    /// Encoded by the device profile's codec once the device is known.
    Object(serde_json::Value),
}

/// LoRaWAN 1.0.4 §4.3.2: FPort 0 carries MAC commands only, 224 is the test protocol and
/// 225..255 are reserved, so applications get 1..=223.
fn validated(body: EnqueueBody) -> Result<Downlink, ApiError> {
    let f_port = body.f_port.ok_or_else(|| ApiError::field("fPort", "is required"))?;
    let f_port = u8::try_from(f_port)
        .ok()
        .filter(|p| (1..=223).contains(p))
        .ok_or_else(|| ApiError::field("fPort", format!("must be 1..=223, got {f_port}")))?;
    let payload = match (body.data, body.object) {
        (Some(_), Some(_)) => return Err(ApiError::field("object", "give either data or object, not both")),
        (None, None) => return Err(ApiError::field("data", "is required (or object, to be encoded by the codec)")),
        (None, Some(object)) if !object.is_object() => return Err(ApiError::field("object", "must be a JSON object")),
        (None, Some(object)) => Payload::Object(object),
        (Some(d), None) => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map_err(|e| ApiError::field("data", format!("invalid base64: {e}")))?;
            Payload::Data(checked_size("data", data)?)
        }
    };
    Ok(Downlink { f_port, confirmed: body.confirmed, payload })
}

fn checked_size(field: &str, data: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    if data.len() > MAX_PAYLOAD {
        return Err(ApiError::field(field, format!("{} bytes, at most {MAX_PAYLOAD} fit in an EU868 downlink", data.len())));
    }
    Ok(data)
}

/// Runs the device profile's codec on `object`; codec errors are the client's input errors.
async fn encoded(state: &ApiState, device: &Device, f_port: u8, object: serde_json::Value) -> Result<Vec<u8>, ApiError> {
    let profile = existing_profile(state, device.device_profile_id).await?;
    // Device tags are what loraflow has of ChirpStack's device variables.
    let variables = device.tags.as_object().cloned().unwrap_or_default();
    downlink_queue::encode_object(&state.codecs, &profile, variables, f_port, object).await.map_err(|e| match e {
        EncodeError::UnknownCodec(e) | EncodeError::Codec { source: e, .. } => ApiError::field("object", e),
        EncodeError::NoCodec => ApiError::field("object", "the device profile has no payload codec (payloadCodec NONE); send base64 data"),
    })
}

#[utoipa::path(
    operation_id = "device_queue_enqueue",
    summary = "Queue a downlink (base64 data, or an object for the profile's codec)",
    post,
    path = "/devices/{dev_eui}/queue",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    request_body = EnqueueBody,
    responses((status = 201, body = EnqueueJson), WriteErrors)
)]
pub async fn enqueue(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EnqueueBody>,
) -> Result<(StatusCode, Json<EnqueueJson>), ApiError> {
    let dev_eui = parse_eui("devEui", &id)?;
    if let Some(b) = body.dev_eui.as_deref() {
        if parse_eui("devEui", b)? != dev_eui {
            return Err(ApiError::field("devEui", "does not match the path"));
        }
    }
    let device = existing_device(&state, dev_eui).await?;
    let d = validated(body)?;
    let data = match d.payload {
        Payload::Data(data) => data,
        Payload::Object(object) => checked_size("object", encoded(&state, &device, d.f_port, object).await?)?,
    };
    let item = downlink_queue::unsent(Uuid::new_v4(), dev_eui, d.f_port, d.confirmed, data);
    state.network.enqueue(&item).await?;
    Ok((StatusCode::CREATED, Json(EnqueueJson { id: item.id })))
}

#[utoipa::path(
    operation_id = "device_queue_list",
    summary = "List a device's queued downlinks",
    get,
    path = "/devices/{dev_eui}/queue",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, body = ListResponse<QueueItemJson>), ReadErrors)
)]
pub async fn list(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<ListResponse<QueueItemJson>>, ApiError> {
    let dev_eui = parse_eui("devEui", &id)?;
    existing_device(&state, dev_eui).await?;
    let items = state.storage.queue.list(dev_eui).await?;
    Ok(Json(ListResponse { total_count: items.len() as u64, result: items.into_iter().map(Into::into).collect() }))
}

#[utoipa::path(
    operation_id = "device_queue_flush",
    summary = "Delete every queued downlink of a device",
    delete,
    path = "/devices/{dev_eui}/queue",
    tag = "devices",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 204, description = "The queue is empty"), WriteErrors)
)]
pub async fn flush(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let dev_eui = parse_eui("devEui", &id)?;
    existing_device(&state, dev_eui).await?;
    state.network.flush_queue(dev_eui).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downlink(json: &str) -> Result<Downlink, ApiError> {
        validated(super::super::extract::parse_json(json.as_bytes())?)
    }

    fn error_of(json: &str) -> String {
        downlink(json).unwrap_err().to_string()
    }

    #[test]
    fn data_is_decoded_from_base64_and_confirmed_defaults_to_false() {
        let d = downlink(r#"{"fPort":10,"data":"AQID"}"#).unwrap();
        assert_eq!(d, Downlink { f_port: 10, confirmed: false, payload: Payload::Data(vec![1, 2, 3]) });
    }

    #[test]
    fn f_port_must_be_an_application_port() {
        for port in ["0", "224", "255", "300", "-1"] {
            assert!(error_of(&format!(r#"{{"fPort":{port},"data":"AQID"}}"#)).starts_with("fPort: "), "{port}");
        }
        assert!(error_of(r#"{"data":"AQID"}"#).starts_with("fPort: "));
        assert!(error_of(r#"{"fPort":"1","data":"AQID"}"#).starts_with("fPort: "));
        assert_eq!(downlink(r#"{"fPort":223,"data":""}"#).unwrap().f_port, 223);
    }

    #[test]
    fn data_must_be_base64_and_fit_an_eu868_downlink() {
        assert!(error_of(r#"{"fPort":1,"data":"not base64!"}"#).starts_with("data: "));
        assert!(error_of(r#"{"fPort":1}"#).starts_with("data: "));
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![0u8; n]);
        let d = downlink(&format!(r#"{{"fPort":1,"data":"{}"}}"#, b64(242))).unwrap();
        assert_eq!(d.payload, Payload::Data(vec![0; 242]));
        assert!(error_of(&format!(r#"{{"fPort":1,"data":"{}"}}"#, b64(243))).starts_with("data: "));
    }

    #[test]
    fn an_object_is_kept_for_the_codec() {
        let d = downlink(r#"{"fPort":2,"confirmed":true,"object":{"led":true}}"#).unwrap();
        assert_eq!(d, Downlink { f_port: 2, confirmed: true, payload: Payload::Object(serde_json::json!({"led": true})) });
    }

    #[test]
    fn object_must_be_a_json_object_and_not_come_with_data() {
        assert!(error_of(r#"{"fPort":1,"object":[1,2]}"#).starts_with("object: "));
        assert!(error_of(r#"{"fPort":1,"data":"AQ==","object":{}}"#).starts_with("object: "));
    }

    #[test]
    fn an_encoded_object_is_held_to_the_same_size_limit() {
        assert!(checked_size("object", vec![0; 243]).unwrap_err().to_string().starts_with("object: "));
        assert_eq!(checked_size("object", vec![0; 242]).unwrap().len(), 242);
    }

    #[test]
    fn a_listing_shows_data_in_base64_and_no_fcnt_before_sending() {
        let item = QueueItem {
            id: Uuid::nil(),
            dev_eui: loraflow_network_server::types::Eui64([1; 8]),
            f_port: 5,
            confirmed: true,
            data: vec![1, 2, 3],
            f_cnt_down: None,
            is_pending: false,
            timeout_at: None,
            retries: 0,
            created_at: DateTime::<Utc>::from_timestamp(0, 0).unwrap(),
        };
        let json = serde_json::to_value(QueueItemJson::from(item)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": Uuid::nil(), "fPort": 5, "confirmed": true, "data": "AQID", "fCntDown": null,
                "isPending": false, "createdAt": "1970-01-01T00:00:00.000000Z"})
        );
    }
}
