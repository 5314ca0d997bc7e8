//! Putting an application downlink on a device's queue: the part the REST API
//! (`POST /api/devices/{devEui}/queue`) and MQTT downlink commands share. Each caller
//! validates its own input and maps [`EncodeError`] to its own error model.

use chrono::Utc;
use serde_json::{Map, Value};
use uuid::Uuid;

use loraflow_network_server::storage::{DeviceProfile, QueueItem};
use loraflow_network_server::types::Eui64;

use crate::codec::{CodecError, Codecs, PayloadCodec};

/// RP002-1.0.3 §2.4.6: the largest EU868 FRMPayload without FOpts (N at DR5..DR7). Smaller
/// data rates allow less; the network server checks that when it schedules.
pub const MAX_PAYLOAD: usize = 242;

/// Why an `object` could not be encoded into a payload.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The profile names a codec loraflow does not know.
    #[error(transparent)]
    UnknownCodec(CodecError),
    /// The profile's codec is NONE, which cannot encode.
    #[error("the device profile has no payload codec (payloadCodec NONE)")]
    NoCodec,
    #[error("payload codec {codec} could not encode object: {source}")]
    Codec { codec: &'static str, source: CodecError },
}

/// A new queue item that has not been sent yet.
pub fn unsent(id: Uuid, dev_eui: Eui64, f_port: u8, confirmed: bool, data: Vec<u8>) -> QueueItem {
    QueueItem {
        id,
        dev_eui,
        f_port,
        confirmed,
        data,
        f_cnt_down: None,
        is_pending: false,
        timeout_at: None,
        retries: 0,
        created_at: Utc::now(),
    }
}

/// Encodes `object` with the codec of `profile`; `variables` are what the script sees as
/// `input.variables`.
pub async fn encode_object(
    codecs: &Codecs,
    profile: &DeviceProfile,
    variables: Map<String, Value>,
    f_port: u8,
    object: Value,
) -> Result<Vec<u8>, EncodeError> {
    let codec = PayloadCodec::from_profile(&profile.payload_codec, &profile.payload_codec_script).map_err(EncodeError::UnknownCodec)?;
    if codec == PayloadCodec::None {
        return Err(EncodeError::NoCodec);
    }
    let name = codec.name();
    // Scripts run on the codec worker threads, cut off at their time limit.
    codecs.encode_downlink_async(&codec, f_port, &object, &variables).await.map_err(|source| EncodeError::Codec { codec: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecConfig;

    fn profile(codec: &str, script: &str) -> DeviceProfile {
        DeviceProfile {
            id: Uuid::nil(),
            name: "p".into(),
            region: "EU868".into(),
            mac_version: "1.0.4".into(),
            reg_params_revision: "RP002-1.0.3".into(),
            supports_otaa: true,
            supports_class_c: false,
            adr_enabled: true,
            adr_min_dr: 0,
            adr_max_dr: 5,
            adr_installation_margin_db: 10.0,
            dev_status_req_freq: 1,
            class_c_timeout: 5,
            payload_codec: codec.into(),
            payload_codec_script: script.into(),
            measurements: Default::default(),
            auto_detect_measurements: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    async fn encoded(p: &DeviceProfile, variables: Map<String, Value>) -> Result<Vec<u8>, EncodeError> {
        let codecs = Codecs::new(CodecConfig::default());
        encode_object(&codecs, p, variables, 3, serde_json::json!({"level": 5})).await
    }

    #[tokio::test]
    async fn a_script_encodes_the_object_and_sees_the_variables() {
        let p = profile(
            "JS",
            "function encodeDownlink(input) { return { bytes: [input.data.level, input.fPort, Number(input.variables.k)] }; }",
        );
        let variables = serde_json::json!({"k": "9"}).as_object().cloned().unwrap();
        assert_eq!(encoded(&p, variables).await.unwrap(), vec![5, 3, 9]);
    }

    #[tokio::test]
    async fn codec_none_and_unknown_codecs_are_refused_before_running_anything() {
        assert!(matches!(encoded(&profile("NONE", ""), Map::new()).await, Err(EncodeError::NoCodec)));
        assert!(matches!(encoded(&profile("XML", ""), Map::new()).await, Err(EncodeError::UnknownCodec(CodecError::UnknownCodec(_)))));
    }

    #[tokio::test]
    async fn a_failing_script_names_its_codec() {
        let p = profile("JS", "function encodeDownlink(input) { throw new Error('no'); }");
        match encoded(&p, Map::new()).await {
            Err(EncodeError::Codec { codec: "JS", source: CodecError::Exception(_) }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_item_is_unsent() {
        let item = unsent(Uuid::nil(), Eui64([1; 8]), 7, true, vec![1]);
        assert_eq!((item.f_cnt_down, item.is_pending, item.timeout_at, item.retries), (None, false, None, 0));
        assert_eq!((item.f_port, item.confirmed, item.data), (7, true, vec![1]));
    }
}
