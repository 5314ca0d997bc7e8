//! JavaScript payload codecs in an embedded QuickJS (`rquickjs`).
//!
//! Script formats, detected per call from the functions the script defines:
//! - TTN v3 / ChirpStack v4 / TTN device repository: `decodeUplink(input)` with
//!   `input = {bytes, fPort, recvTime: Date, variables}` returning
//!   `{data, warnings?, errors?}`; `encodeDownlink({data, fPort, variables})`
//!   returning `{bytes, fPort?, warnings?, errors?}`.
//! - TTN v2 (legacy): `Decoder(bytes, port)` returning the object and
//!   `Encoder(object, port)` returning the bytes.
//! - ChirpStack v3: `Decode(fPort, bytes, variables)` / `Encode(fPort, obj, variables)`.
//!
//! Isolation and limits: every distinct script text gets its own QuickJS runtime (so
//! no script ever sees another's globals), capped by a heap limit and a stack limit (a
//! quarter of the worker thread's stack, so deep recursion is a JS exception, not a
//! crash). Calls run on the dedicated threads of [`super::workers`]: every call phase
//! runs under a deadline enforced inside the engine by its interrupt handler (an
//! uncatchable exception) and, for the places where QuickJS never polls it (its regex
//! engine), from outside by the pool's watchdog. A runtime that hit a limit is
//! discarded. Results cross the boundary as JSON text: the glue serialises them with the
//! engine's `JSON.stringify` plus a replacer that counts nesting and size against
//! `js_max_result_depth` / `js_max_result_bytes` before anything is built, and the
//! replacer's JS call at every value is where the stack check and the interrupt handler
//! apply (QuickJS's `JSON.stringify` recurses in C without checking its stack). The
//! script's own `JSON.stringify` is the same guarded function, with a fixed depth limit.
//!
//! Speed: compiling a 40 KB vendor decoder costs milliseconds, a call microseconds,
//! so compiled runtimes are kept in a small LRU pool keyed by the script text; a
//! call checks one out, runs, and returns it. A script therefore keeps state from
//! its own earlier calls (as in ChirpStack), never from another script.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use rquickjs::context::EvalOptions;
use rquickjs::{Coerced, Context, Ctx, Function, Runtime};
use serde_json::{Map, Value};

use super::workers::{Job, PoolConfig, Reply, Response, Watch, Work, WorkerPool};
use super::{CodecConfig, CodecError, Decoded};

/// Evaluated before the user script so it captures the pristine `JSON` and `Date`
/// even if the script replaces them, and installs its entry points as read-only
/// globals the script cannot overwrite.
const GLUE: &str = r#"
(function (g) {
  "use strict";
  var nativeStringify = JSON.stringify, parse = JSON.parse, NativeDate = Date;
  var isArray = Array.isArray, slice = Array.prototype.slice;
  var hasOwn = Object.prototype.hasOwnProperty, defineProperty = Object.defineProperty;
  var SCRIPT_MAX_DEPTH = 1000;
  // JSON.stringify with a replacer that sees every value before the engine descends into
  // it: `open` holds the objects being serialised, innermost last, so its length is the
  // nesting depth. `fail(message)` makes the value to throw when a limit is passed.
  // `outer` levels around the value (the answer's [format, result] pair) are not counted.
  function guardedStringify(value, replacer, space, maxDepth, maxSize, fail, outer) {
    var open = [], size = 0, user = null, keep = null;
    if (typeof replacer === "function") {
      user = replacer;
    } else if (isArray(replacer)) {
      keep = {};
      for (var i = 0; i < replacer.length; i++) {
        var k = replacer[i];
        if (typeof k === "string" || typeof k === "number") keep[k] = true;
      }
    }
    function guard(key, v) {
      var depth = open.length;
      while (depth > 0 && open[depth - 1] !== this) depth--;
      open.length = depth;
      if (user !== null) {
        v = user.call(this, key, v);
      } else if (keep !== null && depth > 0 && !isArray(this) && !hasOwn.call(keep, key)) {
        return undefined;
      }
      if (v !== null && typeof v === "object") {
        if (depth - outer >= maxDepth) throw fail("nesting deeper than " + maxDepth + " levels");
        open.push(v);
      }
      size += key.length + 2;
      if (typeof v === "string") size += v.length;
      if (size > maxSize) throw fail("more than " + maxSize + " characters of JSON");
      return v;
    }
    return nativeStringify(value, guard, space);
  }
  function scriptStringify(value, replacer, space) {
    return guardedStringify(value, replacer, space, SCRIPT_MAX_DEPTH, Infinity, function (m) {
      return new RangeError("JSON.stringify: " + m);
    }, 0);
  }
  defineProperty(scriptStringify, "name", { value: "stringify" });
  defineProperty(JSON, "stringify", { value: scriptStringify, writable: true, enumerable: false, configurable: true });
  // The answer to Rust: [format, result], or ["limit", why] when the result is too deep or large.
  function answer(format, result, maxDepth, maxSize) {
    var token = {}, why = null;
    try {
      return guardedStringify([format, result], undefined, undefined, maxDepth, maxSize, function (m) {
        why = m;
        return token;
      }, 1);
    } catch (e) {
      if (e === token) return nativeStringify(["limit", why]);
      throw e;
    }
  }
  // Typed arrays and other array-likes would stringify as {"0":..}: make them arrays.
  function plainBytes(b) {
    if (b !== null && typeof b === "object" && !isArray(b) && typeof b.length === "number") {
      return slice.call(b);
    }
    return b;
  }
  function decode(bytes, fPort, recvTimeMs, variablesJson, maxDepth, maxSize) {
    var variables = parse(variablesJson);
    if (typeof decodeUplink === "function") {
      return answer("v3", decodeUplink({
        bytes: bytes, fPort: fPort, recvTime: new NativeDate(recvTimeMs), variables: variables
      }), maxDepth, maxSize);
    }
    if (typeof Decoder === "function") {
      return answer("v2", Decoder(bytes, fPort), maxDepth, maxSize);
    }
    if (typeof Decode === "function") {
      return answer("chirpstack_v3", Decode(fPort, bytes, variables), maxDepth, maxSize);
    }
    return nativeStringify([null, null]);
  }
  function encode(dataJson, fPort, variablesJson, maxDepth, maxSize) {
    var data = parse(dataJson), variables = parse(variablesJson), r;
    if (typeof encodeDownlink === "function") {
      r = encodeDownlink({ data: data, fPort: fPort, variables: variables });
      if (r !== null && typeof r === "object") {
        r.bytes = plainBytes(r.bytes);
      }
      return answer("v3", r, maxDepth, maxSize);
    }
    if (typeof Encoder === "function") {
      return answer("v2", plainBytes(Encoder(data, fPort)), maxDepth, maxSize);
    }
    if (typeof Encode === "function") {
      return answer("chirpstack_v3", plainBytes(Encode(fPort, data, variables)), maxDepth, maxSize);
    }
    return nativeStringify([null, null]);
  }
  function define(name, f) {
    defineProperty(g, name, { value: f, writable: false, enumerable: false, configurable: false });
  }
  define("__loraflowDecode", decode);
  define("__loraflowEncode", encode);
})(globalThis);
"#;

const DECODE_FUNCTIONS: &str = "decodeUplink, Decoder, Decode";
const ENCODE_FUNCTIONS: &str = "encodeDownlink, Encoder, Encode";

/// Room for the `["v3",…]` wrapper around a result of `js_max_result_bytes`.
const ANSWER_OVERHEAD: usize = 32;

/// The JavaScript half of [`super::Codecs`].
pub(crate) struct JsEngine {
    core: Arc<Core>,
    workers: WorkerPool,
}

/// What the worker threads share: the configuration and the cache of compiled runtimes.
struct Core {
    config: CodecConfig,
    pool: Mutex<Pool>,
}

impl JsEngine {
    pub(crate) fn new(config: CodecConfig) -> Self {
        let workers = WorkerPool::new(PoolConfig {
            workers: config.js_workers(),
            max_stuck: config.js_max_stuck_workers.max(1),
            stack_bytes: config.js_thread_stack_bytes,
        });
        JsEngine { core: Arc::new(Core { config, pool: Mutex::new(Pool::default()) }), workers }
    }

    pub(crate) fn config(&self) -> &CodecConfig {
        &self.core.config
    }

    pub(crate) fn workers(&self) -> &WorkerPool {
        &self.workers
    }

    /// Decodes on a worker thread; `reply` gets the outcome.
    pub(crate) fn decode_uplink(
        &self,
        script: &Arc<str>,
        f_port: u8,
        bytes: &[u8],
        recv_time: DateTime<Utc>,
        variables: &Map<String, Value>,
        reply: Reply,
    ) {
        let variables = match self.core.check_size(script).and_then(|()| json_text(variables)) {
            Ok(v) => v,
            Err(e) => return reply(Err(e)),
        };
        let recv_ms = recv_time.timestamp_millis() as f64;
        let bytes = bytes.to_vec();
        let key = ScriptKey(script.clone());
        let core = self.core.clone();
        let job_key = key.clone();
        let work: Work = Box::new(move |watch| {
            let (result, keep) = core.run(key, watch, |inst, config| inst.decode(config, watch, bytes, f_port, recv_ms, variables));
            (result.map(Response::Decoded), keep)
        });
        self.workers.submit(Job { script: job_key, work, reply });
    }

    /// Encodes on a worker thread; `reply` gets the outcome.
    pub(crate) fn encode_downlink(&self, script: &Arc<str>, f_port: u8, object: &Value, variables: &Map<String, Value>, reply: Reply) {
        let texts = self.core.check_size(script).and_then(|()| Ok((json_text(variables)?, json_text(object)?)));
        let (variables, data) = match texts {
            Ok(t) => t,
            Err(e) => return reply(Err(e)),
        };
        let key = ScriptKey(script.clone());
        let core = self.core.clone();
        let job_key = key.clone();
        let work: Work = Box::new(move |watch| {
            let (result, keep) = core.run(key, watch, |inst, config| inst.encode(config, watch, data, f_port, variables));
            (result.map(Response::Encoded), keep)
        });
        self.workers.submit(Job { script: job_key, work, reply });
    }

    #[cfg(test)]
    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.core.lock()
    }
}

impl Core {
    fn check_size(&self, script: &str) -> Result<(), CodecError> {
        if script.len() > self.config.js_max_script_bytes {
            return Err(CodecError::ScriptTooLarge { size: script.len(), limit: self.config.js_max_script_bytes });
        }
        Ok(())
    }

    /// Runs `f` on a compiled instance of the script, reusing a cached one when there is
    /// one. Returns, unless the call left the instance suspect, what puts it back.
    #[allow(clippy::type_complexity)]
    fn run<T>(
        self: &Arc<Self>,
        key: ScriptKey,
        watch: &Watch,
        f: impl FnOnce(&Instance, &CodecConfig) -> Result<T, CodecError>,
    ) -> (Result<T, CodecError>, Option<Box<dyn FnOnce() + Send>>) {
        let instance = match self.checkout(&key) {
            Some(i) => i,
            None => match Instance::compile(&key.0, &self.config, watch) {
                Ok(i) => i,
                Err(e) => return (Err(e), None),
            },
        };
        let result = f(&instance, &self.config);
        // After a deadline, heap or size limit the script may have stopped half-way
        // through changing its globals: start it afresh next time.
        let suspect = matches!(
            result,
            Err(CodecError::Timeout(_) | CodecError::OutOfMemory(_) | CodecError::Engine(_) | CodecError::ResultTooLarge(_))
        );
        if suspect {
            return (result, None);
        }
        let core = self.clone();
        (result, Some(Box::new(move || core.checkin(key, instance))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // The pool holds no invariant a panicking holder could break half-way.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn checkout(&self, key: &ScriptKey) -> Option<Instance> {
        let mut pool = self.lock();
        let entry = pool.entries.get_mut(key)?;
        let instance = entry.instances.pop();
        if entry.instances.is_empty() {
            pool.entries.remove(key);
        }
        if instance.is_some() {
            pool.idle -= 1;
        }
        instance
    }

    fn checkin(&self, key: ScriptKey, instance: Instance) {
        let cap = self.config.js_cached_runtimes;
        if cap == 0 {
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut pool = self.lock();
            pool.clock += 1;
            let now = pool.clock;
            let entry = pool.entries.entry(key).or_default();
            entry.instances.push(instance);
            entry.last_used = now;
            pool.idle += 1;
            while pool.idle > cap {
                let Some(victim) = pool.entries.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone()) else {
                    break;
                };
                let entry = pool.entries.get_mut(&victim).expect("victim key is present");
                evicted.extend(entry.instances.pop());
                if entry.instances.is_empty() {
                    pool.entries.remove(&victim);
                }
                pool.idle -= 1;
            }
        }
        // Freeing a runtime walks its whole heap: do it outside the lock.
        drop(evicted);
    }
}

/// A script's text as a pool key. Hashing reads only the length and both ends so a
/// 40 KB script is not rehashed per call; equality is by pointer first, then text.
#[derive(Clone)]
pub(crate) struct ScriptKey(Arc<str>);

impl Hash for ScriptKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let b = self.0.as_bytes();
        const ENDS: usize = 256;
        b.len().hash(state);
        b[..b.len().min(ENDS)].hash(state);
        b[b.len().saturating_sub(ENDS)..].hash(state);
    }
}

impl PartialEq for ScriptKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for ScriptKey {}

#[derive(Default)]
struct Pool {
    /// Every entry holds at least one instance.
    entries: HashMap<ScriptKey, PoolEntry>,
    idle: usize,
    clock: u64,
}

#[derive(Default)]
struct PoolEntry {
    instances: Vec<Instance>,
    last_used: u64,
}

/// One compiled script: its own runtime and context.
struct Instance {
    // Declared before `_runtime` so the context is freed first.
    context: Context,
    _runtime: Runtime,
    epoch: Instant,
    /// Nanoseconds since `epoch` after which the interrupt handler stops the script.
    deadline_ns: Arc<AtomicU64>,
    interrupted: Arc<AtomicBool>,
}

impl Instance {
    fn compile(script: &str, config: &CodecConfig, watch: &Watch) -> Result<Instance, CodecError> {
        let runtime = Runtime::new().map_err(|e| CodecError::Engine(e.to_string()))?;
        runtime.set_memory_limit(config.js_memory_limit_bytes);
        runtime.set_max_stack_size(config.js_stack_limit_bytes());
        let epoch = Instant::now();
        let deadline_ns = Arc::new(AtomicU64::new(u64::MAX));
        let interrupted = Arc::new(AtomicBool::new(false));
        {
            let deadline_ns = deadline_ns.clone();
            let interrupted = interrupted.clone();
            runtime.set_interrupt_handler(Some(Box::new(move || {
                let now = epoch.elapsed().as_nanos() as u64;
                if now > deadline_ns.load(Ordering::Relaxed) {
                    interrupted.store(true, Ordering::Relaxed);
                    true
                } else {
                    false
                }
            })));
        }
        let context = Context::full(&runtime).map_err(|e| match e {
            rquickjs::Error::Allocation => CodecError::OutOfMemory(config.js_memory_limit_bytes),
            e => CodecError::Engine(e.to_string()),
        })?;
        let instance = Instance { context, _runtime: runtime, epoch, deadline_ns, interrupted };
        instance.call(config, watch, |ctx| ctx.eval::<(), _>(GLUE))?;
        let source = script.as_bytes().to_vec();
        instance
            .call(config, watch, |ctx| {
                // Vendor scripts are often sloppy-mode code (implicit globals).
                let mut options = EvalOptions::default();
                options.strict = false;
                ctx.eval_with_options::<(), _>(source, options)
            })
            .map_err(|e| match e {
                CodecError::Exception(m) if m.starts_with("SyntaxError") => CodecError::Compile(m),
                e => e,
            })?;
        Ok(instance)
    }

    fn decode(
        &self,
        config: &CodecConfig,
        watch: &Watch,
        bytes: Vec<u8>,
        f_port: u8,
        recv_ms: f64,
        variables: String,
    ) -> Result<Decoded, CodecError> {
        let (depth, size) = (config.js_max_result_depth, config.js_max_result_bytes);
        let out = self.call(config, watch, |ctx| {
            let f: Function = ctx.globals().get("__loraflowDecode")?;
            f.call::<_, String>((bytes, f_port, recv_ms, variables, depth, size))
        })?;
        let (format, result) = split_tagged(&out, DECODE_FUNCTIONS, size)?;
        match format.as_str() {
            "v3" => {
                let mut r = into_object(result, "decodeUplink")?;
                check_errors(&mut r)?;
                let warnings = strings(r.remove("warnings"));
                match r.remove("data") {
                    Some(data @ Value::Object(_)) => Ok(Decoded { object: data, warnings }),
                    Some(other) => Err(CodecError::BadReturn(format!("decodeUplink `data` must be an object, got {}", type_name(&other)))),
                    None => Err(CodecError::BadReturn("decodeUplink returned neither `data` nor `errors`".into())),
                }
            }
            _ => Ok(Decoded { object: Value::Object(into_object(result, "Decoder")?), warnings: Vec::new() }),
        }
    }

    fn encode(&self, config: &CodecConfig, watch: &Watch, data: String, f_port: u8, variables: String) -> Result<Vec<u8>, CodecError> {
        let (depth, size) = (config.js_max_result_depth, config.js_max_result_bytes);
        let out = self.call(config, watch, |ctx| {
            let f: Function = ctx.globals().get("__loraflowEncode")?;
            f.call::<_, String>((data, f_port, variables, depth, size))
        })?;
        let (format, result) = split_tagged(&out, ENCODE_FUNCTIONS, size)?;
        match format.as_str() {
            "v3" => {
                let mut r = into_object(result, "encodeDownlink")?;
                check_errors(&mut r)?;
                match r.remove("bytes") {
                    Some(bytes) => byte_array(bytes),
                    None => Err(CodecError::BadReturn("encodeDownlink returned neither `bytes` nor `errors`".into())),
                }
            }
            _ => byte_array(result),
        }
    }

    /// Runs `f` in the context under the configured deadline (inside the engine and, via
    /// `watch`, from outside) and maps a JS failure to the [`CodecError`] that says why.
    fn call<T>(
        &self,
        config: &CodecConfig,
        watch: &Watch,
        f: impl for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<T>,
    ) -> Result<T, CodecError> {
        let limit = config.js_time_limit();
        watch.arm(limit);
        let deadline = self.epoch.elapsed() + limit;
        self.interrupted.store(false, Ordering::Relaxed);
        self.deadline_ns.store(deadline.as_nanos() as u64, Ordering::Relaxed);
        let result = self.context.with(|ctx| match f(&ctx) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.js_error(&ctx, e, config)),
        });
        self.deadline_ns.store(u64::MAX, Ordering::Relaxed);
        watch.disarm();
        result
    }

    fn js_error(&self, ctx: &Ctx<'_>, error: rquickjs::Error, config: &CodecConfig) -> CodecError {
        let message = match error {
            rquickjs::Error::Exception => {
                let thrown = ctx.catch();
                // Reading `stack` may run a getter of the script's, still under the deadline.
                let stack = thrown.as_object().and_then(|o| o.get::<_, Option<String>>("stack").ok().flatten());
                // Coercing runs user code (a thrown object's toString), still under
                // the deadline; if it fails too, say so rather than guess.
                let text = thrown.get::<Coerced<String>>().map(|c| c.0).unwrap_or_else(|_| {
                    let _ = ctx.catch();
                    "exception that cannot be converted to a string".to_string()
                });
                match stack.as_deref().and_then(script_function) {
                    Some(place) => text + &place,
                    None => text,
                }
            }
            rquickjs::Error::Allocation => return CodecError::OutOfMemory(config.js_memory_limit_bytes),
            other => return CodecError::Engine(other.to_string()),
        };
        if self.interrupted.load(Ordering::Relaxed) {
            return CodecError::Timeout(config.js_time_limit());
        }
        if message.contains("out of memory") {
            return CodecError::OutOfMemory(config.js_memory_limit_bytes);
        }
        CodecError::Exception(message)
    }
}

/// Functions of [`GLUE`] that never run the script's code: an error raised inside them is
/// the glue's (a result too deep or too large), not in a function of the script.
const GLUE_FRAMES: [&str; 4] = ["guard", "guardedStringify", "answer", "plainBytes"];

/// The script function an error was raised in, for its message (` (in helper)`): the
/// innermost frame of a QuickJS `stack` (`    at helper (eval_script:7:13)`); `None` when
/// that frame is the glue's, native code or top-level code. Both the glue and the script are
/// `eval_script`, so they are told apart by function name. No line: QuickJS records positions
/// only at calls and `throw`, so for an error raised elsewhere (a property of undefined, an
/// unknown variable) the frame holds the line of the last call before it, which would
/// point the reader at the wrong line.
fn script_function(stack: &str) -> Option<String> {
    let frame = stack.lines().map(str::trim).find(|l| l.starts_with("at "))?;
    let (function, place) = frame.trim_start_matches("at ").split_once(" (")?;
    let named = !function.is_empty() && !function.starts_with('<');
    (named && place.starts_with("eval_script:") && !GLUE_FRAMES.contains(&function)).then(|| format!(" (in {function})"))
}

fn json_text<T: serde::Serialize>(v: &T) -> Result<String, CodecError> {
    serde_json::to_string(v).map_err(|e| CodecError::Engine(e.to_string()))
}

/// Splits the glue's `[format, result]` answer; `["limit", why]` is a result over the
/// depth or size limit.
fn split_tagged(out: &str, functions: &'static str, max_size: usize) -> Result<(String, Value), CodecError> {
    // The glue counts characters; a multi-byte text can still be larger in bytes.
    if out.len() > max_size.saturating_add(ANSWER_OVERHEAD) {
        return Err(CodecError::ResultTooLarge(format!("{} bytes of JSON, more than {max_size}", out.len())));
    }
    let parsed: Value = serde_json::from_str(out).map_err(|e| CodecError::BadReturn(format!("result is not JSON: {e}")))?;
    let Value::Array(mut pair) = parsed else {
        return Err(CodecError::Engine("glue returned a non-array".into()));
    };
    let result = pair.pop().unwrap_or(Value::Null);
    match pair.pop() {
        Some(Value::String(format)) if format == "limit" => {
            Err(CodecError::ResultTooLarge(result.as_str().unwrap_or("over the limit").to_string()))
        }
        Some(Value::String(format)) => Ok((format, result)),
        _ => Err(CodecError::MissingFunction(functions)),
    }
}

fn into_object(v: Value, function: &str) -> Result<Map<String, Value>, CodecError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(CodecError::BadReturn(format!("{function} must return an object, got {}", type_name(&other)))),
    }
}

/// A non-empty `errors` array means the script refused the input (TTN v3 contract).
fn check_errors(r: &mut Map<String, Value>) -> Result<(), CodecError> {
    let errors = strings(r.remove("errors"));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CodecError::ScriptErrors(errors))
    }
}

/// `warnings` / `errors`: an array of messages (a lone string is accepted too).
fn strings(v: Option<Value>) -> Vec<String> {
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.into_iter().map(text).collect(),
        Some(other) => vec![text(other)],
    }
}

fn byte_array(v: Value) -> Result<Vec<u8>, CodecError> {
    let Value::Array(items) = v else {
        return Err(CodecError::BadReturn(format!("bytes must be an array, got {}", type_name(&v))));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| CodecError::BadReturn(format!("bytes[{i}] is {item}, not an integer 0..=255")))
        })
        .collect()
}

/// "a string", "an object"…: the JSON kind of a value, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::super::{Codecs, PayloadCodec};
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;
    use std::time::Duration;

    fn codecs() -> Codecs {
        Codecs::new(CodecConfig::default())
    }

    fn js(script: &str) -> PayloadCodec {
        PayloadCodec::Js(Arc::from(script))
    }

    fn decode(c: &Codecs, codec: &PayloadCodec, f_port: u8, bytes: &[u8]) -> Result<Decoded, CodecError> {
        let recv = Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap();
        c.decode_uplink(codec, f_port, bytes, recv, &Map::new())
    }

    /// Written in the style of the TTN device repository (`vendor/<x>/<model>.js`):
    /// helper functions, several fPorts, warnings for out-of-range readings, errors
    /// for unknown ports, and an `encodeDownlink` / `decodeDownlink` pair.
    const TH_SENSOR: &str = r#"
// Acme TH-200 temperature / humidity sensor codec (device-repository style).
var MODES = { 0: "periodic", 1: "on_change", 2: "threshold" };

function readUInt16BE(bytes, i) {
  return ((bytes[i] << 8) | bytes[i + 1]) >>> 0;
}

function readInt16BE(bytes, i) {
  var v = readUInt16BE(bytes, i);
  return v > 0x7fff ? v - 0x10000 : v;
}

function round(value, digits) {
  var f = Math.pow(10, digits);
  return Math.round(value * f) / f;
}

function batteryPercent(mv) {
  // Linear between 2.5 V (empty) and 3.6 V (full) for a Li-SOCl2 cell.
  var pct = ((mv - 2500) / (3600 - 2500)) * 100;
  return Math.max(0, Math.min(100, Math.round(pct)));
}

function decodeMeasurement(bytes, warnings) {
  if (bytes.length < 7) {
    return null;
  }
  var data = {
    temperature: round(readInt16BE(bytes, 0) / 100, 2),
    humidity: round(bytes[2] / 2, 1),
    batteryVoltage: round(readUInt16BE(bytes, 3) / 1000, 3),
    battery: batteryPercent(readUInt16BE(bytes, 3)),
    status: {
      externalPower: (bytes[5] & 0x01) !== 0,
      sensorFault: (bytes[5] & 0x02) !== 0
    },
    counter: bytes[6]
  };
  if (data.temperature < -40 || data.temperature > 85) {
    warnings.push("temperature out of sensor range");
  }
  if (data.battery < 10) {
    warnings.push("low battery");
  }
  if (data.status.sensorFault) {
    warnings.push("sensor fault reported");
  }
  return data;
}

function decodeConfig(bytes) {
  return {
    interval: readUInt16BE(bytes, 0),
    mode: MODES[bytes[2]] || "unknown",
    firmware: bytes[3] + "." + bytes[4] + "." + bytes[5]
  };
}

function decodeUplink(input) {
  var warnings = [];
  switch (input.fPort) {
    case 1:
      var data = decodeMeasurement(input.bytes, warnings);
      if (data === null) {
        return { errors: ["measurement frame too short: " + input.bytes.length + " bytes"] };
      }
      data.receivedAt = input.recvTime.toISOString();
      if (input.variables && input.variables.location) {
        data.location = input.variables.location;
      }
      return { data: data, warnings: warnings };
    case 2:
      return { data: decodeConfig(input.bytes), warnings: warnings };
    case 3:
      var alarms = [];
      for (var i = 0; i < input.bytes.length; i++) {
        alarms.push({ code: input.bytes[i], active: true });
      }
      return { data: { alarms: alarms }, warnings: warnings };
    default:
      return { errors: ["unknown FPort " + input.fPort] };
  }
}

function encodeDownlink(input) {
  var errors = [];
  var interval = input.data.interval;
  if (typeof interval !== "number" || interval < 10 || interval > 65535) {
    errors.push("interval must be between 10 and 65535 seconds");
  }
  var mode = ["periodic", "on_change", "threshold"].indexOf(input.data.mode || "periodic");
  if (mode < 0) {
    errors.push("unknown mode " + input.data.mode);
  }
  if (errors.length > 0) {
    return { errors: errors };
  }
  return {
    bytes: [(interval >> 8) & 0xff, interval & 0xff, mode],
    fPort: 10,
    warnings: interval < 60 ? ["short intervals drain the battery"] : []
  };
}

function decodeDownlink(input) {
  return {
    data: { interval: readUInt16BE(input.bytes, 0), mode: MODES[input.bytes[2]] },
    warnings: [],
    errors: []
  };
}
"#;

    #[test]
    fn device_repository_style_decoder_decodes_each_port() {
        let c = codecs();
        let codec = js(TH_SENSOR);
        assert!(TH_SENSOR.len() > 2000);

        // 23.45 °C, 48.5 %, 3.3 V, no flags, counter 7.
        let d = decode(&c, &codec, 1, &[0x09, 0x29, 97, 0x0C, 0xE4, 0x00, 7]).unwrap();
        assert_eq!(
            d.object,
            json!({
                "temperature": 23.45, "humidity": 48.5, "batteryVoltage": 3.3, "battery": 73,
                "status": {"externalPower": false, "sensorFault": false}, "counter": 7,
                "receivedAt": "2026-11-25T06:00:00.000Z"
            })
        );
        assert!(d.warnings.is_empty());

        // -45.00 °C, battery 2.6 V, sensor fault flag: three warnings.
        let d = decode(&c, &codec, 1, &[0xEE, 0x6C, 10, 0x0A, 0x28, 0x02, 8]).unwrap();
        // JSON.stringify writes -45.00 as -45.
        assert_eq!(d.object["temperature"], json!(-45));
        assert_eq!(d.warnings, vec!["temperature out of sensor range", "low battery", "sensor fault reported"]);

        let d = decode(&c, &codec, 2, &[0x02, 0x58, 1, 1, 4, 2]).unwrap();
        assert_eq!(d.object, json!({"interval": 600, "mode": "on_change", "firmware": "1.4.2"}));

        let d = decode(&c, &codec, 3, &[4, 9]).unwrap();
        assert_eq!(d.object, json!({"alarms": [{"code": 4, "active": true}, {"code": 9, "active": true}]}));
    }

    #[test]
    fn variables_reach_the_script() {
        let c = codecs();
        let mut vars = Map::new();
        vars.insert("location".into(), json!("greenhouse 3"));
        let d = c.decode_uplink(&js(TH_SENSOR), 1, &[0, 0, 0, 0x0C, 0xE4, 0, 0], Utc::now(), &vars).unwrap();
        assert_eq!(d.object["location"], json!("greenhouse 3"));
    }

    #[test]
    fn errors_returned_by_the_script_are_an_error() {
        let c = codecs();
        assert_eq!(decode(&c, &js(TH_SENSOR), 99, &[1]), Err(CodecError::ScriptErrors(vec!["unknown FPort 99".into()])));
        assert_eq!(
            decode(&c, &js(TH_SENSOR), 1, &[1, 2]),
            Err(CodecError::ScriptErrors(vec!["measurement frame too short: 2 bytes".into()]))
        );
    }

    #[test]
    fn encode_downlink_returns_the_scripts_bytes() {
        let c = codecs();
        let b = c.encode_downlink(&js(TH_SENSOR), 10, &json!({"interval": 600, "mode": "threshold"}), &Map::new()).unwrap();
        assert_eq!(b, vec![0x02, 0x58, 2]);
        assert_eq!(
            c.encode_downlink(&js(TH_SENSOR), 10, &json!({"interval": 1}), &Map::new()),
            Err(CodecError::ScriptErrors(vec!["interval must be between 10 and 65535 seconds".into()]))
        );
    }

    #[test]
    fn ttn_v2_decoder_and_encoder_work() {
        let script = r#"
            function Decoder(bytes, port) {
              var decoded = {};
              if (port === 1) decoded.led = bytes[0] === 1 ? "on" : "off";
              decoded.port = port;
              return decoded;
            }
            function Encoder(object, port) {
              var bytes = [];
              if (port === 1) bytes[0] = object.led === "on" ? 1 : 0;
              return bytes;
            }
        "#;
        let c = codecs();
        let d = decode(&c, &js(script), 1, &[1]).unwrap();
        assert_eq!(d.object, json!({"led": "on", "port": 1}));
        let b = c.encode_downlink(&js(script), 1, &json!({"led": "on"}), &Map::new()).unwrap();
        assert_eq!(b, vec![1]);
    }

    #[test]
    fn chirpstack_v3_decode_and_encode_work() {
        let script = r#"
            function Decode(fPort, bytes, variables) { return { sum: bytes[0] + bytes[1], port: fPort }; }
            function Encode(fPort, obj, variables) { return new Uint8Array([obj.a, obj.b]); }
        "#;
        let c = codecs();
        assert_eq!(decode(&c, &js(script), 5, &[2, 3]).unwrap().object, json!({"sum": 5, "port": 5}));
        assert_eq!(c.encode_downlink(&js(script), 5, &json!({"a": 1, "b": 255}), &Map::new()).unwrap(), vec![1, 255]);
    }

    #[test]
    fn functions_declared_with_const_are_found() {
        let script = "const decodeUplink = (input) => ({ data: { n: input.bytes.length } });";
        assert_eq!(decode(&codecs(), &js(script), 1, &[1, 2, 3]).unwrap().object, json!({"n": 3}));
    }

    #[test]
    fn infinite_loop_is_cut_off_by_the_time_limit() {
        let c = codecs();
        let codec = js("function decodeUplink(input) { while (true) {} }");
        let started = Instant::now();
        let r = decode(&c, &codec, 1, &[1]);
        let elapsed = started.elapsed();
        assert_eq!(r, Err(CodecError::Timeout(Duration::from_millis(100))));
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
        assert!(elapsed >= Duration::from_millis(100), "took {elapsed:?}");
        // The engine stays usable for the next call.
        let started = Instant::now();
        assert!(matches!(decode(&c, &codec, 1, &[1]), Err(CodecError::Timeout(_))));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn infinite_loop_at_top_level_is_cut_off_too() {
        let started = Instant::now();
        let r = decode(&codecs(), &js("for (;;) {} function Decoder() { return {}; }"), 1, &[]);
        assert!(matches!(r, Err(CodecError::Timeout(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn catching_the_interrupt_does_not_escape_the_time_limit() {
        let script = r#"
            function decodeUplink(input) {
              for (;;) { try { while (true) {} } catch (e) {} }
            }
        "#;
        let started = Instant::now();
        let r = decode(&codecs(), &js(script), 1, &[]);
        assert!(matches!(r, Err(CodecError::Timeout(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn thrown_exception_gives_its_message() {
        let c = codecs();
        let r = decode(&c, &js("function decodeUplink(i) { throw new Error('bad frame'); }"), 1, &[]);
        assert_eq!(r, Err(CodecError::Exception("Error: bad frame (in decodeUplink)".into())));
        let r = decode(&c, &js("function decodeUplink(i) { throw 'plain string'; }"), 1, &[]);
        assert_eq!(r, Err(CodecError::Exception("plain string".into())));
        let r = decode(&c, &js("function decodeUplink(i) { return i.bytes.foo.bar; }"), 1, &[]);
        assert!(matches!(&r, Err(CodecError::Exception(m)) if m.starts_with("TypeError")), "{r:?}");
    }

    #[test]
    fn an_exception_names_the_script_function_it_was_raised_in() {
        let script = "function check(b) {\n  if (b.length < 2) {\n    throw new RangeError('short frame');\n  }\n}\n\
                      function decodeUplink(i) {\n  check(i.bytes);\n  return { data: { t: foo } };\n}";
        let r = decode(&codecs(), &js(script), 1, &[1]);
        assert_eq!(r, Err(CodecError::Exception("RangeError: short frame (in check)".into())));
        let r = decode(&codecs(), &js(script), 1, &[1, 2]);
        assert_eq!(r, Err(CodecError::Exception("ReferenceError: foo is not defined (in decodeUplink)".into())));
    }

    #[test]
    fn stack_frames_of_the_glue_or_native_code_name_no_function() {
        assert_eq!(
            script_function("    at decodeUplink (eval_script:3:9)\n    at decode (eval_script:120:51)\n").as_deref(),
            Some(" (in decodeUplink)")
        );
        assert_eq!(script_function("    at <eval> (eval_script:12:7)\n"), None);
        assert_eq!(script_function("    at guard (eval_script:80:5)\n    at decodeUplink (eval_script:2:3)\n"), None);
        assert_eq!(script_function("    at stringify (native)\n"), None);
        assert_eq!(script_function(""), None);
    }

    #[test]
    fn syntax_error_is_a_compile_error() {
        let r = decode(&codecs(), &js("function decodeUplink(input { }"), 1, &[]);
        assert!(matches!(&r, Err(CodecError::Compile(m)) if m.starts_with("SyntaxError")), "{r:?}");
    }

    #[test]
    fn script_without_codec_functions_is_reported() {
        let c = codecs();
        assert_eq!(decode(&c, &js("var x = 1;"), 1, &[]), Err(CodecError::MissingFunction(DECODE_FUNCTIONS)));
        assert_eq!(
            c.encode_downlink(&js("function decodeUplink() {}"), 1, &json!({}), &Map::new()),
            Err(CodecError::MissingFunction(ENCODE_FUNCTIONS))
        );
    }

    #[test]
    fn bad_return_values_are_rejected() {
        let c = codecs();
        let cases = [
            "function decodeUplink() { return 5; }",
            "function decodeUplink() { return {}; }",
            "function decodeUplink() { return { data: [1, 2] }; }",
            "function Decoder() { return null; }",
        ];
        for script in cases {
            let r = decode(&c, &js(script), 1, &[]);
            assert!(matches!(r, Err(CodecError::BadReturn(_))), "{script}: {r:?}");
        }
        let encoders = [
            "function encodeDownlink() { return { bytes: [1, 256] }; }",
            "function encodeDownlink() { return { bytes: [-1] }; }",
            "function encodeDownlink() { return { bytes: [1.5] }; }",
            "function encodeDownlink() { return { bytes: 'AQ==' }; }",
            "function Encoder() { return [1, 'x']; }",
        ];
        for script in encoders {
            let r = c.encode_downlink(&js(script), 1, &json!({}), &Map::new());
            assert!(matches!(r, Err(CodecError::BadReturn(_))), "{script}: {r:?}");
        }
    }

    #[test]
    fn unbounded_allocation_is_out_of_memory() {
        let c = Codecs::new(CodecConfig { js_memory_limit_bytes: 8 * 1024 * 1024, js_time_limit_ms: 5_000, ..CodecConfig::default() });
        let script = r#"
            function decodeUplink(input) {
              var hoard = [];
              for (;;) { hoard.push(new Array(10000).fill(input.fPort)); }
            }
        "#;
        let r = decode(&c, &js(script), 1, &[]);
        assert_eq!(r, Err(CodecError::OutOfMemory(8 * 1024 * 1024)));
        let string_growth = "function decodeUplink() { var s = 'x'; for (;;) { s = s + s; } }";
        let r = decode(&c, &js(string_growth), 1, &[]);
        assert_eq!(r, Err(CodecError::OutOfMemory(8 * 1024 * 1024)));
        // A well-behaved script still runs afterwards.
        assert!(decode(&c, &js(TH_SENSOR), 2, &[0, 10, 0, 1, 0, 0]).is_ok());
    }

    #[test]
    fn deep_recursion_is_an_exception_not_a_crash() {
        let r = decode(&codecs(), &js("function decodeUplink(i) { return decodeUplink(i); }"), 1, &[]);
        assert!(matches!(&r, Err(CodecError::Exception(m)) if m.contains("call stack size exceeded")), "{r:?}");
    }

    /// Builds an object nested `depth` levels deep in a loop (no recursion needed).
    const DEEP: &str = "function deep(n) { var o = {}; for (var i = 0; i < n; i++) { o = { a: o }; } return o; }\n";

    /// Building 50,000 levels takes tens of milliseconds in a debug build: give the
    /// depth tests time, so that they test depth.
    fn roomy() -> Codecs {
        Codecs::new(CodecConfig { js_time_limit_ms: 3_000, ..CodecConfig::default() })
    }

    #[test]
    fn a_50000_deep_result_is_an_error_not_a_crash() {
        let c = roomy();
        let script = format!("{DEEP} function decodeUplink(input) {{ return {{ data: deep(50000) }}; }}");
        let r = decode(&c, &js(&script), 1, &[]);
        assert!(matches!(&r, Err(CodecError::ResultTooLarge(m)) if m.contains("nesting deeper than 32")), "{r:?}");
        let v2 = format!("{DEEP} function Decoder() {{ var a = []; for (var i = 0; i < 50000; i++) a = [a]; return {{ a: a }}; }}");
        let r = decode(&c, &js(&v2), 1, &[]);
        assert!(matches!(&r, Err(CodecError::ResultTooLarge(_))), "{r:?}");
        // 31 levels under `data` (plus the returned object) is still fine.
        let ok = format!("{DEEP} function decodeUplink(input) {{ return {{ data: deep(30) }}; }}");
        let d = decode(&c, &js(&ok), 1, &[]).unwrap();
        let mut depth = 0;
        let mut v = &d.object;
        while let Some(inner) = v.get("a") {
            depth += 1;
            v = inner;
        }
        assert_eq!(depth, 30);
    }

    #[test]
    fn the_result_depth_limit_is_configurable() {
        let c = Codecs::new(CodecConfig { js_max_result_depth: 3, ..CodecConfig::default() });
        let script = format!("{DEEP} function Decoder(bytes) {{ return deep(bytes[0]); }}");
        // The returned object is level 1.
        assert!(decode(&c, &js(&script), 1, &[2]).is_ok());
        assert!(matches!(decode(&c, &js(&script), 1, &[3]), Err(CodecError::ResultTooLarge(_))));
    }

    #[test]
    fn a_json_stringify_bomb_in_the_script_is_an_exception() {
        let c = roomy();
        let script = format!("{DEEP} function decodeUplink(input) {{ return {{ data: {{ s: JSON.stringify(deep(50000)) }} }}; }}");
        let r = decode(&c, &js(&script), 1, &[]);
        assert!(matches!(&r, Err(CodecError::Exception(m)) if m.contains("JSON.stringify: nesting deeper than 1000")), "{r:?}");
        // A `toJSON` that builds the depth while serialising is caught the same way.
        let sneaky = format!(
            "{DEEP} function decodeUplink(input) {{ return {{ data: {{ s: JSON.stringify({{ toJSON: function () {{ return deep(50000); }} }}) }} }}; }}"
        );
        let r = decode(&c, &js(&sneaky), 1, &[]);
        assert!(matches!(&r, Err(CodecError::Exception(m)) if m.contains("JSON.stringify")), "{r:?}");
        // Also when the glue serialises the result: the toJSON result is checked too.
        let result = format!(
            "{DEEP} function decodeUplink(input) {{ return {{ data: {{ x: {{ toJSON: function () {{ return deep(50000); }} }} }} }}; }}"
        );
        assert!(matches!(decode(&c, &js(&result), 1, &[]), Err(CodecError::ResultTooLarge(_))));
        // JSON.parse of deep text stops at the engine's stack limit.
        let parse = "function decodeUplink(input) { JSON.parse('['.repeat(200000)); return { data: {} }; }";
        let r = decode(&c, &js(parse), 1, &[]);
        assert!(matches!(&r, Err(CodecError::Exception(_))), "{r:?}");
    }

    #[test]
    fn guarded_json_stringify_keeps_its_behaviour() {
        let script = r#"
            function decodeUplink(input) {
              var d = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
              return { data: {
                plain: JSON.stringify({ b: 1, a: [1, { c: "x" }, undefined, function () {}], u: undefined }),
                spaced: JSON.stringify({ a: [1] }, null, 2),
                replaced: JSON.stringify({ a: 1, b: 2 }, function (k, v) { return k === "b" ? undefined : v; }),
                listed: JSON.stringify({ a: 1, b: 2, c: { a: 3, z: 4 } }, ["a", "c"]),
                date: JSON.stringify({ d: d }),
                nothing: typeof JSON.stringify(undefined),
                cycle: (function () { var o = {}; o.o = o; try { JSON.stringify(o); return "no"; } catch (e) { return e.name; } })(),
                name: JSON.stringify.name,
                when: d
              } };
            }
        "#;
        let d = decode(&codecs(), &js(script), 1, &[]).unwrap();
        assert_eq!(
            d.object,
            json!({
                "plain": r#"{"b":1,"a":[1,{"c":"x"},null,null]}"#,
                "spaced": "{\n  \"a\": [\n    1\n  ]\n}",
                "replaced": r#"{"a":1}"#,
                "listed": r#"{"a":1,"c":{"a":3}}"#,
                "date": r#"{"d":"2026-01-02T03:04:05.000Z"}"#,
                "nothing": "undefined",
                "cycle": "TypeError",
                "name": "stringify",
                "when": "2026-01-02T03:04:05.000Z"
            })
        );
    }

    #[test]
    fn a_deep_encode_downlink_result_is_an_error() {
        let c = roomy();
        let script = format!("{DEEP} function encodeDownlink(input) {{ return {{ bytes: [1], extra: deep(50000) }}; }}");
        let r = c.encode_downlink(&js(&script), 1, &json!({}), &Map::new());
        assert!(matches!(&r, Err(CodecError::ResultTooLarge(_))), "{r:?}");
        let bomb = format!("{DEEP} function encodeDownlink(input) {{ JSON.stringify(deep(50000)); return {{ bytes: [1] }}; }}");
        let r = c.encode_downlink(&js(&bomb), 1, &json!({}), &Map::new());
        assert!(matches!(&r, Err(CodecError::Exception(_))), "{r:?}");
        // The engine still works.
        assert_eq!(c.encode_downlink(&js(TH_SENSOR), 10, &json!({"interval": 600}), &Map::new()).unwrap(), vec![2, 0x58, 0]);
    }

    #[test]
    fn a_result_over_the_size_limit_is_an_error() {
        let c = Codecs::new(CodecConfig { js_max_result_bytes: 4096, ..CodecConfig::default() });
        let big_string = "function Decoder() { return { s: 'x'.repeat(5000) }; }";
        assert!(matches!(decode(&c, &js(big_string), 1, &[]), Err(CodecError::ResultTooLarge(_))));
        let many_values = "function Decoder() { var a = []; for (var i = 0; i < 10000; i++) a.push(i); return { a: a }; }";
        let r = decode(&c, &js(many_values), 1, &[]);
        assert!(matches!(&r, Err(CodecError::ResultTooLarge(m)) if m.contains("more than 4096 characters")), "{r:?}");
        // Multi-byte text: under the limit in characters, over it in bytes.
        let wide = r"function Decoder() { return { s: '\u20ac'.repeat(2000) }; }";
        assert!(matches!(decode(&c, &js(wide), 1, &[]), Err(CodecError::ResultTooLarge(_))));
        assert!(decode(&c, &js("function Decoder() { return { s: 'x'.repeat(3000) }; }"), 1, &[]).is_ok());
    }

    const REGEX_BOMB: &str = "function decodeUplink(input) { return { data: { m: /^(a+)+$/.test('a'.repeat(30) + 'b') } }; }";

    #[test]
    fn a_catastrophic_regex_is_cut_off_at_the_deadline() {
        let c = codecs();
        let started = Instant::now();
        let r = decode(&c, &js(REGEX_BOMB), 1, &[]);
        let elapsed = started.elapsed();
        assert_eq!(r, Err(CodecError::Unresponsive(Duration::from_millis(100))));
        // Limit 100 ms + 100 ms grace; generous for a loaded machine, far below the
        // regex's own minutes.
        assert!(elapsed < Duration::from_millis(1000), "took {elapsed:?}");
        assert!(elapsed >= Duration::from_millis(200), "took {elapsed:?}");
        assert_eq!(c.js.workers().metrics().abandoned.get(), 1);
        assert_eq!(c.js.workers().metrics().stuck.get(), 1);
        // Other scripts keep running, on a replacement thread.
        let started = Instant::now();
        assert!(decode(&c, &js(TH_SENSOR), 2, &[0, 10, 0, 1, 0, 0]).is_ok());
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn a_script_with_stuck_calls_is_refused_at_the_stuck_limit() {
        let c = Codecs::new(CodecConfig { js_max_stuck_workers: 2, js_workers: 2, ..CodecConfig::default() });
        for _ in 0..2 {
            assert!(matches!(decode(&c, &js(REGEX_BOMB), 1, &[]), Err(CodecError::Unresponsive(_))));
        }
        let started = Instant::now();
        assert_eq!(decode(&c, &js(REGEX_BOMB), 1, &[]), Err(CodecError::TooManyStuck { script: 2, total: 2 }));
        assert!(started.elapsed() < Duration::from_millis(50), "refusal took {:?}", started.elapsed());
        assert_eq!(c.js.workers().metrics().refused.get(), 1);
        // Replacements took over from the stuck threads, within the ceiling of
        // js_workers + js_max_stuck_workers threads, and a well-behaved script runs.
        assert!(decode(&c, &js(TH_SENSOR), 2, &[0, 10, 0, 1, 0, 0]).is_ok());
        let threads = c.js.workers().metrics().threads.get();
        assert!((3..=4).contains(&threads), "{threads} threads");
        assert_eq!(c.js.workers().metrics().stuck.get(), 2);
    }

    #[test]
    fn scripts_run_on_threads_with_the_configured_stack() {
        // Deep JS recursion stops at QuickJS's limit (a quarter of the thread stack)
        // whatever the thread it lands on.
        let c = Codecs::new(CodecConfig { js_thread_stack_bytes: 4 * 1024 * 1024, js_time_limit_ms: 3_000, ..CodecConfig::default() });
        let script = "function f(n) { return n === 0 ? 0 : 1 + f(n - 1); } function Decoder() { return { n: f(1e6) }; }";
        let r = decode(&c, &js(script), 1, &[]);
        assert!(matches!(&r, Err(CodecError::Exception(m)) if m.contains("stack")), "{r:?}");
        let ok = "function f(n) { return n === 0 ? 0 : 1 + f(n - 1); } function Decoder() { return { n: f(200) }; }";
        assert_eq!(decode(&c, &js(ok), 1, &[]).unwrap().object, json!({"n": 200}));
    }

    #[tokio::test]
    async fn async_calls_resolve_without_blocking_the_runtime() {
        let c = codecs();
        let recv = Utc::now();
        let slow = js("function Decoder() { var t = Date.now(); while (Date.now() - t < 50) {} return { slow: true }; }");
        let fast = js("function Decoder() { return { fast: true }; }");
        let slow_call = c.decode_uplink_async(&slow, 1, &[], recv, &Map::new());
        let fast_call = c.decode_uplink_async(&fast, 1, &[], recv, &Map::new());
        assert_eq!(fast_call.await.unwrap().object, json!({"fast": true}));
        assert_eq!(slow_call.await.unwrap().object, json!({"slow": true}));
        let lpp = c.decode_uplink_async(&PayloadCodec::CayenneLpp, 1, &[3, 0x67, 1, 0x10], recv, &Map::new()).await.unwrap();
        assert_eq!(lpp.object, json!({"temperatureSensor": {"3": 27.2}}));
    }

    #[test]
    fn script_larger_than_40_kb_works() {
        // A vendor-sized decoder: a large lookup table plus the real decoder.
        let mut script = String::from("var ERROR_CODES = {\n");
        for i in 0..2000 {
            script.push_str(&format!("  {i}: \"error code {i}: sensor subsystem diagnostic message\",\n"));
        }
        script.push_str("};\n");
        script.push_str(TH_SENSOR);
        script.push_str("function describe(code) { return ERROR_CODES[code]; }\n");
        assert!(script.len() > 40 * 1024, "{} bytes", script.len());
        let c = codecs();
        let codec = js(&script);
        let started = Instant::now();
        let d = decode(&c, &codec, 2, &[0x02, 0x58, 0, 2, 0, 0]).unwrap();
        let first = started.elapsed();
        assert_eq!(d.object["firmware"], json!("2.0.0"));
        let started = Instant::now();
        let d = decode(&c, &codec, 2, &[0x02, 0x58, 0, 3, 0, 0]).unwrap();
        let cached = started.elapsed();
        assert_eq!(d.object["firmware"], json!("3.0.0"));
        println!("{} byte script: first call (compile) {first:?}, cached call {cached:?}", script.len());
    }

    #[test]
    fn script_over_the_size_limit_is_refused() {
        let c = Codecs::new(CodecConfig { js_max_script_bytes: 10, ..CodecConfig::default() });
        assert_eq!(decode(&c, &js("function Decoder() { return {}; }"), 1, &[]), Err(CodecError::ScriptTooLarge { size: 33, limit: 10 }));
    }

    #[test]
    fn scripts_do_not_see_each_others_globals() {
        let c = codecs();
        let writer = js("var shared = 'secret'; function Decoder() { globalThis.leak = 1; return { seen: typeof shared }; }");
        let reader = js("function Decoder() { return { shared: typeof shared, leak: typeof leak }; }");
        assert_eq!(decode(&c, &writer, 1, &[]).unwrap().object, json!({"seen": "string"}));
        assert_eq!(decode(&c, &reader, 1, &[]).unwrap().object, json!({"shared": "undefined", "leak": "undefined"}));
    }

    #[test]
    fn scripts_cannot_replace_the_glue() {
        let script = r#"
            __loraflowDecode = function () { return "hijacked"; };
            JSON.stringify = function () { return "broken"; };
            function Decoder(bytes) { return { ok: true }; }
        "#;
        assert_eq!(decode(&codecs(), &js(script), 1, &[]).unwrap().object, json!({"ok": true}));
    }

    #[test]
    fn equal_script_text_in_different_arcs_shares_the_cache() {
        let c = codecs();
        let a = js(TH_SENSOR);
        let b = js(TH_SENSOR);
        decode(&c, &a, 2, &[0, 10, 0, 1, 0, 0]).unwrap();
        decode(&c, &b, 2, &[0, 10, 0, 1, 0, 0]).unwrap();
        let pool = c.js.lock();
        assert_eq!(pool.idle, 1);
        assert_eq!(pool.entries.len(), 1);
    }

    #[test]
    fn pool_keeps_at_most_the_configured_number_of_runtimes() {
        let c = Codecs::new(CodecConfig { js_cached_runtimes: 2, ..CodecConfig::default() });
        for i in 0..5 {
            let script = format!("function Decoder() {{ return {{ i: {i} }}; }}");
            assert_eq!(decode(&c, &js(&script), 1, &[]).unwrap().object, json!({"i": i}));
        }
        let pool = c.js.lock();
        assert_eq!(pool.idle, 2);
        assert_eq!(pool.entries.len(), 2);
    }

    #[test]
    fn concurrent_calls_from_many_threads_all_succeed() {
        let c = codecs();
        let codec = js(TH_SENSOR);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let (c, codec) = (c.clone(), codec.clone());
                s.spawn(move || {
                    for n in 0..50u8 {
                        let d = decode(&c, &codec, 1, &[0, 0, 0, 0x0C, 0xE4, 0, n ^ t]).unwrap();
                        assert_eq!(d.object["counter"], json!(n ^ t));
                    }
                });
            }
        });
    }

    #[test]
    fn cost_of_a_cached_call_is_measured() {
        let c = codecs();
        let codec = js(TH_SENSOR);
        let bytes = [0x09, 0x29, 97, 0x0C, 0xE4, 0x00, 7];
        let started = Instant::now();
        decode(&c, &codec, 1, &bytes).unwrap();
        let first = started.elapsed();
        let n = 2000;
        let started = Instant::now();
        for _ in 0..n {
            decode(&c, &codec, 1, &bytes).unwrap();
        }
        let per_call = started.elapsed() / n;
        println!("JS decode: first call (compile) {first:?}, cached call {per_call:?}");
        // Generous bound even for unoptimised debug builds; a regression to
        // compiling per call would be far above it.
        assert!(per_call < first, "cached {per_call:?} vs first {first:?}");
    }
}
