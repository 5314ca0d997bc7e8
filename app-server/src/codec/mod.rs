//! Payload codecs: turn a decrypted FRMPayload into a JSON `object` and back.
//!
//! # Layout
//! - [`cayenne`]: Cayenne LPP, in ChirpStack v4's JSON shape.
//! - [`js`]: user JavaScript in an embedded QuickJS: TTN v3 / ChirpStack v4
//!   (`decodeUplink` / `encodeDownlink`), TTN v2 (`Decoder` / `Encoder`) and
//!   ChirpStack v3 (`Decode` / `Encode`), with a time and memory limit per call.
//!
//! - [`workers`]: the dedicated threads JavaScript runs on, and the watchdog that
//!   abandons a call that does not stop at its time limit.
//!
//! [`Codecs`] is the service the uplink and downlink paths hold. JavaScript runs on
//! its own worker threads: async callers use [`Codecs::decode_uplink_async`] /
//! [`Codecs::encode_downlink_async`], whose future never waits longer than the time
//! limit + 100 ms once the call has a thread; [`Codecs::decode_uplink`] and
//! [`Codecs::encode_downlink`] block the calling thread instead.
//!
//! Memory: at most `js_cached_runtimes` idle runtimes, one per worker thread and one
//! per stuck thread exist at once, each capped at `js_memory_limit_bytes`, plus the
//! threads' stacks; [`CodecConfig::memory_ceiling_bytes`] is that sum and
//! [`CodecConfig::validate`] refuses one above `js_memory_ceiling_bytes`.
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
pub mod workers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
    /// Codec worker threads; 0 = the number of CPUs, at least 2 and at most 16.
    pub js_workers: usize,
    /// Stack of each worker thread. QuickJS's own stack limit is a quarter of it; the
    /// rest is headroom for native code that does not check.
    pub js_thread_stack_bytes: usize,
    /// Abandoned (stuck) worker threads allowed at once; beyond that a script with a
    /// stuck call is refused until it ends.
    pub js_max_stuck_workers: usize,
    /// Deepest nesting of objects and arrays a codec function may return.
    pub js_max_result_depth: usize,
    /// Largest JSON text a codec function's result may take.
    pub js_max_result_bytes: usize,
    /// Refuse a configuration whose worst-case codec memory
    /// ([`CodecConfig::memory_ceiling_bytes`]) is above this.
    pub js_memory_ceiling_bytes: u64,
}

impl Default for CodecConfig {
    fn default() -> Self {
        CodecConfig {
            js_time_limit_ms: 100,
            js_memory_limit_bytes: 32 * 1024 * 1024,
            js_max_script_bytes: 4 * 1024 * 1024,
            js_cached_runtimes: 64,
            js_workers: 0,
            js_thread_stack_bytes: 8 * 1024 * 1024,
            js_max_stuck_workers: 4,
            js_max_result_depth: 32,
            js_max_result_bytes: 256 * 1024,
            js_memory_ceiling_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// A `[codec]` value out of range: the key (without the section) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct CodecConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl CodecConfig {
    pub fn js_time_limit(&self) -> Duration {
        Duration::from_millis(self.js_time_limit_ms)
    }

    /// The worker threads actually started (`js_workers`, or the CPUs for 0).
    pub fn js_workers(&self) -> usize {
        match self.js_workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16),
            n => n,
        }
    }

    /// QuickJS's stack limit within a worker thread's stack.
    pub fn js_stack_limit_bytes(&self) -> usize {
        self.js_thread_stack_bytes / 4
    }

    /// Worst-case memory of the JavaScript codecs: every runtime that can exist at once
    /// (idle in the cache, in use by a worker, held by a stuck thread) at its heap limit,
    /// plus every thread's stack.
    pub fn memory_ceiling_bytes(&self) -> u64 {
        let threads = (self.js_workers() + self.js_max_stuck_workers) as u64;
        let runtimes = self.js_cached_runtimes as u64 + threads;
        runtimes.saturating_mul(self.js_memory_limit_bytes as u64).saturating_add(threads.saturating_mul(self.js_thread_stack_bytes as u64))
    }

    pub fn validate(&self) -> Result<(), CodecConfigError> {
        const MIB: usize = 1024 * 1024;
        let range = |key: &'static str, value: usize, min: usize, max: usize| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(CodecConfigError { key, reason: format!("must be {min}..={max}, got {value}") })
            }
        };
        range("js_time_limit_ms", self.js_time_limit_ms.try_into().unwrap_or(usize::MAX), 1, 60_000)?;
        range("js_memory_limit_bytes", self.js_memory_limit_bytes, MIB, 1024 * MIB)?;
        range("js_workers", self.js_workers, 0, 64)?;
        range("js_thread_stack_bytes", self.js_thread_stack_bytes, 2 * MIB, 256 * MIB)?;
        range("js_max_stuck_workers", self.js_max_stuck_workers, 1, 64)?;
        range("js_max_result_depth", self.js_max_result_depth, 1, 100)?;
        range("js_max_result_bytes", self.js_max_result_bytes, 1024, 16 * MIB)?;
        let ceiling = self.memory_ceiling_bytes();
        if ceiling > self.js_memory_ceiling_bytes {
            return Err(CodecConfigError {
                key: "js_memory_ceiling_bytes",
                reason: format!(
                    "the codec settings allow up to {ceiling} bytes ((js_cached_runtimes + threads) × js_memory_limit_bytes + \
                     threads × js_thread_stack_bytes, threads = js_workers + js_max_stuck_workers), more than {}; \
                     lower those or raise this",
                    self.js_memory_ceiling_bytes
                ),
            });
        }
        Ok(())
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
    #[error("script did not stop at its time limit of {} ms (a regular expression or other native code that ignores it); its runtime was abandoned", .0.as_millis())]
    Unresponsive(Duration),
    #[error("script not run: {script} earlier call(s) of it are still stuck past their time limit and {total} codec threads are stuck in all, the most allowed")]
    TooManyStuck { script: usize, total: usize },
    #[error("no codec worker became free within {} s", .0.as_secs())]
    NoWorker(Duration),
    #[error("script result too large: {0}")]
    ResultTooLarge(String),
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
            CodecError::Unresponsive(_) => "unresponsive",
            CodecError::TooManyStuck { .. } => "too_many_stuck",
            CodecError::NoWorker(_) => "no_worker",
            CodecError::ResultTooLarge(_) => "result_too_large",
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

    /// Registers the worker pool's metrics (abandoned and stuck threads, refused calls).
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        self.js.workers().metrics().register(registry)
    }

    /// Decodes an uplink's FRMPayload. Blocks the calling thread while a script runs.
    pub fn decode_uplink(
        &self,
        codec: &PayloadCodec,
        f_port: u8,
        bytes: &[u8],
        recv_time: DateTime<Utc>,
        variables: &Map<String, Value>,
    ) -> Result<Decoded, CodecError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.start_decode(codec, f_port, bytes, recv_time, variables, Box::new(move |r| drop(tx.send(r))));
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Starts decoding at once (a script on a worker thread) and returns its outcome as
    /// a future.
    pub fn decode_uplink_async(
        &self,
        codec: &PayloadCodec,
        f_port: u8,
        bytes: &[u8],
        recv_time: DateTime<Utc>,
        variables: &Map<String, Value>,
    ) -> CodecCall<Decoded> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.start_decode(codec, f_port, bytes, recv_time, variables, Box::new(move |r| drop(tx.send(r))));
        CodecCall(rx)
    }

    /// Encodes a downlink object into an FRMPayload. Blocks the calling thread while a
    /// script runs.
    pub fn encode_downlink(
        &self,
        codec: &PayloadCodec,
        f_port: u8,
        object: &Value,
        variables: &Map<String, Value>,
    ) -> Result<Vec<u8>, CodecError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.start_encode(codec, f_port, object, variables, Box::new(move |r| drop(tx.send(r))));
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Starts encoding at once (a script on a worker thread) and returns its outcome as
    /// a future.
    pub fn encode_downlink_async(
        &self,
        codec: &PayloadCodec,
        f_port: u8,
        object: &Value,
        variables: &Map<String, Value>,
    ) -> CodecCall<Vec<u8>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.start_encode(codec, f_port, object, variables, Box::new(move |r| drop(tx.send(r))));
        CodecCall(rx)
    }

    fn start_decode(
        &self,
        codec: &PayloadCodec,
        f_port: u8,
        bytes: &[u8],
        recv_time: DateTime<Utc>,
        variables: &Map<String, Value>,
        done: Box<dyn FnOnce(Result<Decoded, CodecError>) + Send>,
    ) {
        match codec {
            PayloadCodec::None => done(Err(CodecError::Unsupported)),
            PayloadCodec::CayenneLpp => {
                done(cayenne::decode(bytes).map(|object| Decoded { object, warnings: Vec::new() }).map_err(Into::into))
            }
            PayloadCodec::Js(script) => {
                let reply = Box::new(move |r: Result<workers::Response, CodecError>| {
                    done(r.and_then(|r| match r {
                        workers::Response::Decoded(d) => Ok(d),
                        workers::Response::Encoded(_) => Err(CodecError::Engine("decode answered with bytes".into())),
                    }))
                });
                self.js.decode_uplink(script, f_port, bytes, recv_time, variables, reply)
            }
        }
    }

    fn start_encode(
        &self,
        codec: &PayloadCodec,
        f_port: u8,
        object: &Value,
        variables: &Map<String, Value>,
        done: Box<dyn FnOnce(Result<Vec<u8>, CodecError>) + Send>,
    ) {
        match codec {
            PayloadCodec::None => done(Err(CodecError::Unsupported)),
            PayloadCodec::CayenneLpp => done(cayenne::encode(object).map_err(Into::into)),
            PayloadCodec::Js(script) => {
                let reply = Box::new(move |r: Result<workers::Response, CodecError>| {
                    done(r.and_then(|r| match r {
                        workers::Response::Encoded(b) => Ok(b),
                        workers::Response::Decoded(_) => Err(CodecError::Engine("encode answered with an object".into())),
                    }))
                });
                self.js.encode_downlink(script, f_port, object, variables, reply)
            }
        }
    }
}

fn stopped() -> CodecError {
    CodecError::Engine("codec engine stopped".into())
}

/// A codec call that has started; resolves to its outcome. Dropping it does not stop
/// the script (it ends at its time limit).
#[derive(Debug)]
pub struct CodecCall<T>(tokio::sync::oneshot::Receiver<Result<T, CodecError>>);

impl<T> Future for CodecCall<T> {
    type Output = Result<T, CodecError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or_else(|_| Err(stopped())))
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
    fn defaults_validate_and_their_memory_ceiling_is_the_documented_sum() {
        let c = CodecConfig { js_workers: 4, ..CodecConfig::default() };
        c.validate().unwrap();
        // (64 cached + 4 workers + 4 stuck) × 32 MiB + (4 + 4) × 8 MiB.
        assert_eq!(c.memory_ceiling_bytes(), 72 * 32 * 1024 * 1024 + 8 * 8 * 1024 * 1024);
        CodecConfig::default().validate().unwrap();
        CodecConfig { js_workers: 16, ..CodecConfig::default() }.validate().unwrap();
    }

    #[test]
    fn settings_above_the_memory_ceiling_are_refused_naming_the_key() {
        let c = CodecConfig { js_cached_runtimes: 1000, ..CodecConfig::default() };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "js_memory_ceiling_bytes");
        assert!(e.reason.contains("js_cached_runtimes"), "{e}");
        let raised = CodecConfig { js_memory_ceiling_bytes: c.memory_ceiling_bytes(), ..c };
        raised.validate().unwrap();
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let cases = [
            (CodecConfig { js_time_limit_ms: 0, ..CodecConfig::default() }, "js_time_limit_ms"),
            (CodecConfig { js_thread_stack_bytes: 64 * 1024, ..CodecConfig::default() }, "js_thread_stack_bytes"),
            (CodecConfig { js_max_stuck_workers: 0, ..CodecConfig::default() }, "js_max_stuck_workers"),
            (CodecConfig { js_max_result_depth: 0, ..CodecConfig::default() }, "js_max_result_depth"),
            (CodecConfig { js_max_result_bytes: 10, ..CodecConfig::default() }, "js_max_result_bytes"),
            (CodecConfig { js_workers: 65, ..CodecConfig::default() }, "js_workers"),
        ];
        for (c, key) in cases {
            assert_eq!(c.validate().unwrap_err().key, key);
        }
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
