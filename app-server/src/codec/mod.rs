//! Payload codecs: turn a decrypted FRMPayload into a JSON `object` and back.
//!
//! # Layout
//! - [`cayenne`]: Cayenne LPP, in ChirpStack v4's JSON shape.
//! - [`js`]: user JavaScript in an embedded QuickJS: TTN v3 / ChirpStack v4
//!   (`decodeUplink` / `encodeDownlink`), TTN v2 (`Decoder` / `Encoder`) and
//!   ChirpStack v3 (`Decode` / `Encode`), with a time and memory limit per call.
//!
//! [`Codecs`] is the service the uplink and downlink paths hold. Its calls are
//! synchronous and may take up to the configured JS time limit, so callers run them
//! in `tokio::task::spawn_blocking` and time them for their metrics.
//!
//! ```
//! use loraflow_app_server::codec::{CodecConfig, Codecs, PayloadCodec};
//!
//! let codecs = Codecs::new(CodecConfig::default());
//! let codec = PayloadCodec::from_profile(
//!     "JS",
//!     "function decodeUplink(input) { return { data: { t: input.bytes[0] } }; }",
//! )
//! .unwrap();
//! let decoded = codecs
//!     .decode_uplink(&codec, 1, &[21], chrono::Utc::now(), &Default::default())
//!     .unwrap();
//! assert_eq!(decoded.object, serde_json::json!({ "t": 21 }));
//! ```

pub mod cayenne;
pub mod js;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use cayenne::CayenneError;

/// The codec a device profile selects (`payloadCodec` + `payloadCodecScript`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadCodec {
    None,
    CayenneLpp,
    /// The script source. Keep one `Arc` per device profile: the compiled-script
    /// cache recognises the same `Arc` without rehashing its text.
    Js(Arc<str>),
}

impl PayloadCodec {
    /// Builds the codec from a device profile's `payloadCodec` name and script.
    /// The script is ignored unless the codec is `"JS"`.
    pub fn from_profile(name: &str, script: &str) -> Result<Self, CodecError> {
        match name {
            "NONE" => Ok(PayloadCodec::None),
            "CAYENNE_LPP" => Ok(PayloadCodec::CayenneLpp),
            "JS" => Ok(PayloadCodec::Js(Arc::from(script))),
            other => Err(CodecError::UnknownCodec(other.to_string())),
        }
    }

    /// The device-profile spelling (`"NONE"`, `"CAYENNE_LPP"`, `"JS"`).
    pub fn name(&self) -> &'static str {
        match self {
            PayloadCodec::None => "NONE",
            PayloadCodec::CayenneLpp => "CAYENNE_LPP",
            PayloadCodec::Js(_) => "JS",
        }
    }
}

/// `[codec]` configuration section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodecConfig {
    /// Wall-clock limit of one script call (and of a script's first evaluation).
    pub js_time_limit_ms: u64,
    /// Heap limit of each QuickJS runtime.
    pub js_memory_limit_bytes: usize,
    /// Largest accepted script. Vendor decoders from the TTN device repository
    /// commonly exceed 40 KB, so the default is generous.
    pub js_max_script_bytes: usize,
    /// How many idle compiled scripts (one QuickJS runtime each) are kept for
    /// reuse, across all scripts; the least recently used are dropped first.
    pub js_cached_runtimes: usize,
}

impl Default for CodecConfig {
    fn default() -> Self {
        CodecConfig {
            js_time_limit_ms: 100,
            js_memory_limit_bytes: 32 * 1024 * 1024,
            js_max_script_bytes: 4 * 1024 * 1024,
            js_cached_runtimes: 64,
        }
    }
}

impl CodecConfig {
    pub fn js_time_limit(&self) -> Duration {
        Duration::from_millis(self.js_time_limit_ms)
    }
}

/// A decoded uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Always a JSON object.
    pub object: Value,
    /// Warnings the script returned (TTN v3 `warnings`); empty for other codecs.
    pub warnings: Vec<String>,
}

/// Why a payload could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("unknown payload codec `{0}` (expected NONE, CAYENNE_LPP or JS)")]
    UnknownCodec(String),
    #[error("payload codec NONE cannot decode or encode")]
    Unsupported,
    #[error("Cayenne LPP: {0}")]
    Cayenne(#[from] CayenneError),
    #[error("script is {size} bytes, more than the limit of {limit}")]
    ScriptTooLarge { size: usize, limit: usize },
    #[error("script does not compile: {0}")]
    Compile(String),
    #[error("script defines none of {0}")]
    MissingFunction(&'static str),
    #[error("script threw: {0}")]
    Exception(String),
    #[error("script returned errors: {}", .0.join("; "))]
    ScriptErrors(Vec<String>),
    #[error("script exceeded its time limit of {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("script exceeded its memory limit of {0} bytes")]
    OutOfMemory(usize),
    #[error("script returned an invalid value: {0}")]
    BadReturn(String),
    #[error("JavaScript engine failure: {0}")]
    Engine(String),
}

impl CodecError {
    /// A short, bounded label for metrics (`reason="timeout"`).
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::UnknownCodec(_) => "unknown_codec",
            CodecError::Unsupported => "unsupported",
            CodecError::Cayenne(_) => "cayenne",
            CodecError::ScriptTooLarge { .. } => "script_too_large",
            CodecError::Compile(_) => "compile",
            CodecError::MissingFunction(_) => "missing_function",
            CodecError::Exception(_) => "exception",
            CodecError::ScriptErrors(_) => "script_errors",
            CodecError::Timeout(_) => "timeout",
            CodecError::OutOfMemory(_) => "out_of_memory",
            CodecError::BadReturn(_) => "bad_return",
            CodecError::Engine(_) => "engine",
        }
    }
}

/// The codec service: cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct Codecs {
    js: Arc<js::JsEngine>,
}

impl std::fmt::Debug for Codecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codecs").field("config", self.js.config()).finish_non_exhaustive()
    }
}

impl Codecs {
    pub fn new(config: CodecConfig) -> Self {
        Codecs { js: Arc::new(js::JsEngine::new(config)) }
    }

    pub fn config(&self) -> &CodecConfig {
        self.js.config()
    }

    /// Decodes an uplink's FRMPayload. Blocking (up to the JS time limit).
    pub fn decode_uplink(
        &self,
        codec: &PayloadCodec,
        f_port: u8,
        bytes: &[u8],
        recv_time: DateTime<Utc>,
        variables: &Map<String, Value>,
    ) -> Result<Decoded, CodecError> {
        match codec {
            PayloadCodec::None => Err(CodecError::Unsupported),
            PayloadCodec::CayenneLpp => Ok(Decoded { object: cayenne::decode(bytes)?, warnings: Vec::new() }),
            PayloadCodec::Js(script) => self.js.decode_uplink(script, f_port, bytes, recv_time, variables),
        }
    }

    /// Encodes a downlink object into an FRMPayload. Blocking (up to the JS time limit).
    pub fn encode_downlink(
        &self,
        codec: &PayloadCodec,
        f_port: u8,
        object: &Value,
        variables: &Map<String, Value>,
    ) -> Result<Vec<u8>, CodecError> {
        match codec {
            PayloadCodec::None => Err(CodecError::Unsupported),
            PayloadCodec::CayenneLpp => Ok(cayenne::encode(object)?),
            PayloadCodec::Js(script) => self.js.encode_downlink(script, f_port, object, variables),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codecs_are_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn codecs_service_is_send_sync_and_clone() {
        codecs_are_send_sync_clone::<Codecs>();
    }

    #[test]
    fn profile_names_map_to_codecs() {
        assert_eq!(PayloadCodec::from_profile("NONE", "x").unwrap(), PayloadCodec::None);
        assert_eq!(PayloadCodec::from_profile("CAYENNE_LPP", "").unwrap(), PayloadCodec::CayenneLpp);
        assert_eq!(PayloadCodec::from_profile("JS", "var a;").unwrap(), PayloadCodec::Js(Arc::from("var a;")));
        assert_eq!(PayloadCodec::from_profile("js", ""), Err(CodecError::UnknownCodec("js".into())));
    }

    #[test]
    fn config_defaults_and_rejects_unknown_fields() {
        let c: CodecConfig = serde_json::from_value(json!({"js_time_limit_ms": 50})).unwrap();
        assert_eq!(c.js_time_limit_ms, 50);
        assert_eq!(c.js_memory_limit_bytes, 32 * 1024 * 1024);
        assert_eq!(c.js_max_script_bytes, 4 * 1024 * 1024);
        assert!(serde_json::from_value::<CodecConfig>(json!({"js_time_limit": 1})).is_err());
    }

    #[test]
    fn codec_none_is_unsupported_both_ways() {
        let c = Codecs::new(CodecConfig::default());
        let vars = Map::new();
        assert_eq!(c.decode_uplink(&PayloadCodec::None, 1, &[1], Utc::now(), &vars), Err(CodecError::Unsupported));
        assert_eq!(c.encode_downlink(&PayloadCodec::None, 1, &json!({}), &vars), Err(CodecError::Unsupported));
    }

    #[test]
    fn cayenne_codec_decodes_and_encodes_through_the_service() {
        let c = Codecs::new(CodecConfig::default());
        let vars = Map::new();
        let d = c.decode_uplink(&PayloadCodec::CayenneLpp, 2, &[3, 0x67, 1, 0x10], Utc::now(), &vars).unwrap();
        assert_eq!(d.object, json!({"temperatureSensor": {"3": 27.2}}));
        assert!(d.warnings.is_empty());
        let b = c.encode_downlink(&PayloadCodec::CayenneLpp, 2, &d.object, &vars).unwrap();
        assert_eq!(b, vec![3, 0x67, 1, 0x10]);
        assert!(matches!(
            c.decode_uplink(&PayloadCodec::CayenneLpp, 2, &[3, 0x67, 1], Utc::now(), &vars),
            Err(CodecError::Cayenne(CayenneError::Truncated { .. }))
        ));
    }
}
