//! `POST /api/device-profiles/test-codec` and `POST /api/device-profiles/{id}/test-codec`:
//! decode a payload with a codec as an uplink would, without storing or publishing anything,
//! so that the console can show what a script makes of real bytes before devices use it.
//!
//! The codec runs exactly where uplinks run it ([`crate::codec::Codecs`]): a script on the
//! codec worker threads with the `[codec]` time, memory and result limits, and the watchdog
//! that abandons a thread a script keeps past its deadline. What the script does wrong (throws,
//! loops, returns something that is not an object) is the answer's `error`, never a failed
//! request; only input the server cannot even try (bad hex, an unknown codec) is a 400.
//!
//! These routes take the worker threads the uplink path needs, so at most
//! [`concurrent_tests`] of them run at a time; the others wait their turn, which a looping
//! script ends within its time limit.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::applications::parse_uuid;
use super::device_profiles::{existing_profile, one_of, PAYLOAD_CODECS};
use super::error::ApiError;
use super::extract::ApiJson;
use super::openapi::WriteErrors;
use super::text;
use super::ApiState;
use crate::codec::{CodecConfig, CodecError, PayloadCodec};

/// The largest FRMPayload of any region and data rate (RP002-1.0.3: N = 242 bytes at most);
/// no uplink could carry more.
pub const MAX_TEST_PAYLOAD: usize = 242;

/// How many codec tests may run at once: half the codec worker threads, at least one, so that
/// uplinks always find a free worker even while the console tests a looping script.
pub fn concurrent_tests(config: &CodecConfig) -> usize {
    (config.js_workers() / 2).max(1)
}

/// The permits of [`concurrent_tests`], shared by every request.
pub type TestPermits = Arc<tokio::sync::Semaphore>;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestCodecBody {
    /// NONE, CAYENNE_LPP or JS, any case. Required without a profile; with one, omitted means
    /// the profile's codec.
    #[schema(value_type = Option<String>)]
    payload_codec: Option<String>,
    /// The script for JS (at most `codec.js_max_script_bytes`); with a profile and no
    /// `payloadCodec`, the profile's script is used and this must be omitted.
    payload_codec_script: Option<String>,
    /// The uplink's FPort, 1-223.
    #[schema(value_type = u8, required = true, minimum = 1, maximum = 223)]
    f_port: Option<i64>,
    /// The FRMPayload in base64; or give `hex`.
    #[schema(format = Byte)]
    data: Option<String>,
    /// The FRMPayload in hex (spaces allowed); or give `data`.
    #[schema(pattern = "^[0-9a-fA-F\\s]*$")]
    hex: Option<String>,
}

/// What the codec made of the payload: `object` when it decoded, else `error` (both null for
/// the codec NONE, which decodes nothing).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestCodecJson {
    #[schema(value_type = Option<Object>)]
    object: Option<serde_json::Value>,
    /// What the script threw, with the function it was raised in
    /// (`ReferenceError: foo is not defined (in decodeUplink)`), or which limit it hit.
    error: Option<String>,
}

/// The FPort and payload of a body, checked.
fn input(body: &TestCodecBody) -> Result<(u8, Vec<u8>), ApiError> {
    let f_port = body.f_port.ok_or_else(|| ApiError::field("fPort", "is required"))?;
    // LoRaWAN 1.0.4 §4.3.2: FPort 0 is MAC commands only, 224 the test protocol.
    let f_port = u8::try_from(f_port)
        .ok()
        .filter(|p| (1..=223).contains(p))
        .ok_or_else(|| ApiError::field("fPort", format!("must be 1..=223, got {f_port}")))?;
    let (field, bytes) = match (&body.data, &body.hex) {
        (Some(_), Some(_)) => return Err(ApiError::field("hex", "give either data or hex, not both")),
        (None, None) => return Err(ApiError::field("data", "is required (base64; or give hex)")),
        (Some(d), None) => (
            "data",
            base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map_err(|e| ApiError::field("data", format!("invalid base64: {e}")))?,
        ),
        (None, Some(h)) => {
            let compact: String = h.chars().filter(|c| !c.is_whitespace()).collect();
            ("hex", hex::decode(&compact).map_err(|e| ApiError::field("hex", format!("invalid hex: {e}")))?)
        }
    };
    if bytes.len() > MAX_TEST_PAYLOAD {
        return Err(ApiError::field(field, format!("{} bytes, at most {MAX_TEST_PAYLOAD} fit in an uplink", bytes.len())));
    }
    Ok((f_port, bytes))
}

/// The codec named by the body, checked like a device profile's.
fn body_codec(name: &str, script: Option<&str>, script_max: usize) -> Result<PayloadCodec, ApiError> {
    let name = one_of("payloadCodec", name, &PAYLOAD_CODECS)?;
    let script = script.unwrap_or_default();
    text::at_most("payloadCodecScript", script, script_max)?;
    if name == "JS" && script.trim().is_empty() {
        return Err(ApiError::field("payloadCodecScript", "must not be empty when payloadCodec is JS"));
    }
    PayloadCodec::from_profile(name, script).map_err(|e| ApiError::field("payloadCodec", e))
}

/// Decodes as the uplink path does; the script's failures are the answer, not an error.
async fn run(state: &ApiState, codec: &PayloadCodec, f_port: u8, bytes: &[u8]) -> Result<TestCodecJson, ApiError> {
    if *codec == PayloadCodec::None {
        return Ok(TestCodecJson { object: None, error: None });
    }
    // Closed only if the server is shutting down.
    let _permit = state.codec_tests.acquire().await.map_err(|_| ApiError::Internal("codec tests stopped".into()))?;
    // No device, so no variables (the uplink path passes none either).
    let outcome = state.codecs.decode_uplink_async(codec, f_port, bytes, chrono::Utc::now(), &serde_json::Map::new()).await;
    Ok(match outcome {
        Ok(decoded) => TestCodecJson { object: Some(decoded.object), error: None },
        Err(e) => TestCodecJson { object: None, error: Some(message(&e)) },
    })
}

/// The script's own words where there are some (what it threw), else the limit it hit.
fn message(e: &CodecError) -> String {
    match e {
        CodecError::Exception(m) => m.clone(),
        other => other.to_string(),
    }
}

#[utoipa::path(
    operation_id = "device_profiles_test_codec",
    summary = "Decode a payload with a codec given in the body",
    description = "Runs the codec as an uplink would (same worker threads and limits) and stores nothing. \
        A script that throws, loops past `codec.js_time_limit_ms` or returns no object answers 200 with `error`.",
    post,
    path = "/device-profiles/test-codec",
    tag = "device-profiles",
    request_body = TestCodecBody,
    responses((status = 200, body = TestCodecJson), WriteErrors)
)]
pub async fn test(State(state): State<ApiState>, ApiJson(body): ApiJson<TestCodecBody>) -> Result<Json<TestCodecJson>, ApiError> {
    let (f_port, bytes) = input(&body)?;
    let name = body.payload_codec.as_deref().ok_or_else(|| ApiError::field("payloadCodec", "is required (NONE, CAYENNE_LPP or JS)"))?;
    let codec = body_codec(name, body.payload_codec_script.as_deref(), state.codecs.config().js_max_script_bytes)?;
    Ok(Json(run(&state, &codec, f_port, &bytes).await?))
}

#[utoipa::path(
    operation_id = "device_profiles_test_codec_of_profile",
    summary = "Decode a payload with a device profile's codec, or one given in the body",
    description = "As `POST /device-profiles/test-codec`; without `payloadCodec` the stored profile's codec and script are used.",
    post,
    path = "/device-profiles/{id}/test-codec",
    tag = "device-profiles",
    params(("id" = uuid::Uuid, Path, description = "Device profile id")),
    request_body = TestCodecBody,
    responses((status = 200, body = TestCodecJson), WriteErrors)
)]
pub async fn test_profile(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TestCodecBody>,
) -> Result<Json<TestCodecJson>, ApiError> {
    let id = parse_uuid("id", &id)?;
    let (f_port, bytes) = input(&body)?;
    let profile = existing_profile(&state, id).await?;
    let codec = match body.payload_codec.as_deref() {
        Some(name) => body_codec(name, body.payload_codec_script.as_deref(), state.codecs.config().js_max_script_bytes)?,
        None if body.payload_codec_script.is_some() => {
            return Err(ApiError::field("payloadCodecScript", "give payloadCodec with it (omit both to test the profile's codec)"))
        }
        None => PayloadCodec::from_profile(&profile.payload_codec, &profile.payload_codec_script)
            .map_err(|e| ApiError::Internal(format!("device profile {id}: {e}")))?,
    };
    Ok(Json(run(&state, &codec, f_port, &bytes).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> TestCodecBody {
        super::super::extract::parse_json(json.as_bytes()).unwrap()
    }

    fn input_error(json: &str) -> String {
        input(&body(json)).unwrap_err().to_string()
    }

    #[test]
    fn payload_comes_from_base64_or_hex() {
        assert_eq!(input(&body(r#"{"fPort":2,"data":"AWcBEA=="}"#)).unwrap(), (2, vec![1, 0x67, 1, 0x10]));
        assert_eq!(input(&body(r#"{"fPort":2,"hex":"01 67 01 10"}"#)).unwrap(), (2, vec![1, 0x67, 1, 0x10]));
        assert_eq!(input(&body(r#"{"fPort":1,"hex":""}"#)).unwrap(), (1, vec![]));
    }

    #[test]
    fn bad_input_names_its_field() {
        assert!(input_error(r#"{"fPort":1,"hex":"0g"}"#).starts_with("hex: "));
        assert!(input_error(r#"{"fPort":1,"hex":"012"}"#).starts_with("hex: "));
        assert!(input_error(r#"{"fPort":1,"data":"***"}"#).starts_with("data: "));
        assert!(input_error(r#"{"fPort":1}"#).starts_with("data: "));
        assert!(input_error(r#"{"fPort":1,"data":"","hex":""}"#).starts_with("hex: "));
        assert!(input_error(r#"{"data":""}"#).starts_with("fPort: "));
        assert!(input_error(r#"{"fPort":0,"data":""}"#).starts_with("fPort: "));
        assert!(input_error(r#"{"fPort":224,"data":""}"#).starts_with("fPort: "));
        assert!(input_error(&format!(r#"{{"fPort":1,"hex":"{}"}}"#, "00".repeat(243))).starts_with("hex: "));
    }

    #[test]
    fn codec_names_are_checked_like_a_profiles() {
        assert_eq!(body_codec("cayenne_lpp", None, 100).unwrap(), PayloadCodec::CayenneLpp);
        assert!(body_codec("LUA", None, 100).unwrap_err().to_string().starts_with("payloadCodec: "));
        assert!(body_codec("JS", Some("  "), 100).unwrap_err().to_string().starts_with("payloadCodecScript: "));
        assert!(body_codec("JS", Some(&"x".repeat(101)), 100).unwrap_err().to_string().starts_with("payloadCodecScript: "));
    }

    #[test]
    fn at_least_one_test_runs_at_a_time_and_never_all_workers() {
        assert_eq!(concurrent_tests(&CodecConfig { js_workers: 1, ..CodecConfig::default() }), 1);
        assert_eq!(concurrent_tests(&CodecConfig { js_workers: 2, ..CodecConfig::default() }), 1);
        assert_eq!(concurrent_tests(&CodecConfig { js_workers: 8, ..CodecConfig::default() }), 4);
    }
}
