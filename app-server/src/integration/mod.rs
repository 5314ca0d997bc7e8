//! The application side of an event (DESIGN.md §1, §4): what the network server hands over
//! ([`AppEvent`]) is decrypted, decoded, published on MQTT as ChirpStack v4 integration JSON
//! and stored; downlink commands from MQTT are validated and queued.
//!
//! # Layout
//! - [`Integration`]: the event loop (decrypt with the AppSKey, run the profile's codec,
//!   publish, hand rows to the history writer) and the task wiring.
//! - [`json`]: the event JSON (protobuf JSON mapping of `chirpstack-api` `integration.*Event`).
//! - [`history_writer`]: batched, outage-tolerant writes of uplink and event rows, and the
//!   gate that publishes each event once its row is stored.
//! - [`commands`]: `application/{applicationId}/device/{devEui}/command/down` handling.
//! - [`config`]: the `[integration]` section; [`metrics`]: its Prometheus metrics.
//!
//! Events of one device leave in the order they arrive; events of different devices leave
//! as soon as they are ready, so one device's slow codec never delays another's events. Up
//! to `codec_concurrency` events are in flight, their codecs running at the same time on
//! the codec worker threads ([`crate::codec::workers`]). A codec failure never loses
//! an uplink: it is published and stored without `object`, next to a `log` event
//! (`UPLINK_CODEC`, `ERROR`) that says why. An event is published once its history row is
//! committed (about one transaction later), so a published event survives a crash in the
//! history; while the database is down or slow, events are published without waiting.
//! Events above the MQTT packet limit are reported by a `log` event, never dropped silently.
//!
//! ```no_run
//! # async fn demo(
//! #     storage: loraflow_network_server::storage::Storage,
//! #     network: loraflow_network_server::handle::NetworkHandle,
//! #     events: tokio::sync::mpsc::Receiver<loraflow_network_server::events::AppEvent>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use loraflow_app_server::codec::{CodecConfig, Codecs};
//! use loraflow_app_server::integration::{Integration, IntegrationConfig, IntegrationDeps};
//! use loraflow_app_server::mqtt::{MqttConfig, MqttIntegration};
//! use tokio_util::{sync::CancellationToken, task::TaskTracker};
//!
//! let registry = prometheus::Registry::new();
//! let shutdown = CancellationToken::new();
//! let tracker = TaskTracker::new();
//! let (mqtt, commands, _) = MqttIntegration::start(&MqttConfig::default(), &registry, shutdown.clone()).await?;
//! let deps = IntegrationDeps {
//!     storage,
//!     publisher: Arc::new(mqtt.clone()),
//!     codecs: Codecs::new(CodecConfig::default()),
//!     network,
//! };
//! Integration::new(&IntegrationConfig::default(), deps, &registry)?
//!     .start(events, commands, &tracker, shutdown.clone());
//! // … later: stop, wait for the pipeline (history flushed), then for MQTT.
//! shutdown.cancel();
//! tracker.close();
//! tracker.wait().await;
//! mqtt.stopped().await;
//! # Ok(()) }
//! ```

pub mod commands;
pub mod config;
pub mod history_writer;
pub mod json;
pub mod metrics;
#[cfg(test)]
mod testing;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use uuid::Uuid;

use loraflow_network_server::events::{AppEvent, DataUp};
use loraflow_network_server::handle::NetworkHandle;
use loraflow_network_server::lorawan::encrypt_frm_payload;
use loraflow_network_server::storage::{DeviceContext, EventRecord, Storage, UplinkRecord};

use loraflow_packet_forwarder::log_limit::LogLimiter;

use crate::codec::{CodecCall, CodecError, Codecs, Decoded, PayloadCodec};
use crate::mqtt::{self, DownlinkCommand, MqttHandle, MqttQueueFull};

pub use commands::CommandError;
pub use config::IntegrationConfig;
pub use history_writer::{HistoryHandle, HistoryRow, HistoryWriter, Message};
pub use metrics::IntegrationMetrics;

/// After shutdown, how long the event loop keeps taking events that the network server
/// still hands over (e.g. from dedup windows that were open) before it stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Where events are published. [`MqttHandle`] in the program; tests record.
pub trait EventPublisher: Send + Sync + 'static {
    /// Never waits; `Err` when the message was dropped (the transport counts it).
    fn publish(&self, message: Message) -> Result<(), MqttQueueFull>;
}

impl EventPublisher for MqttHandle {
    fn publish(&self, message: Message) -> Result<(), MqttQueueFull> {
        MqttHandle::publish(self, message.topic, message.payload)
    }
}

/// What the integration needs from the rest of the program.
pub struct IntegrationDeps {
    pub storage: Storage,
    pub publisher: Arc<dyn EventPublisher>,
    pub codecs: Codecs,
    /// Told about every downlink queued from MQTT.
    pub network: NetworkHandle,
}

/// The event pipeline, the downlink command handler and the history writer.
pub struct Integration {
    emitter: Emitter,
    codecs: Codecs,
    writer: HistoryWriter,
    commands: commands::CommandHandler,
    codec_concurrency: usize,
}

impl Integration {
    /// Registers the metrics in `registry` (once per registry).
    pub fn new(
        config: &IntegrationConfig,
        deps: IntegrationDeps,
        registry: &prometheus::Registry,
    ) -> Result<Integration, prometheus::Error> {
        let metrics = IntegrationMetrics::register(registry)?;
        let (history, writer) = HistoryWriter::new(deps.storage.history.clone(), deps.publisher, config, metrics.clone());
        let emitter = Emitter { history, metrics };
        let commands = commands::CommandHandler::new(deps.storage, deps.codecs.clone(), deps.network, emitter.clone());
        Ok(Integration { emitter, codecs: deps.codecs, writer, commands, codec_concurrency: config.codec_concurrency() })
    }

    /// A handle for storing rows next to the integration's own (e.g. for other components'
    /// events); it keeps the history writer alive while held.
    pub fn history(&self) -> HistoryHandle {
        self.emitter.history.clone()
    }

    /// Spawns [`Integration::run`] on `tracker`.
    pub fn start(
        self,
        events: mpsc::Receiver<AppEvent>,
        commands: mpsc::Receiver<DownlinkCommand>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        tracker.spawn(self.run(events, commands, shutdown));
    }

    /// Runs until `shutdown`: then takes the events still handed over within 1 s (or until
    /// the sender is dropped), publishes them, stops taking commands and returns once the
    /// history writer has flushed (at most `history_flush_timeout_ms` after `shutdown`).
    pub async fn run(self, events: mpsc::Receiver<AppEvent>, commands: mpsc::Receiver<DownlinkCommand>, shutdown: CancellationToken) {
        let Integration { emitter, codecs, writer, commands: handler, codec_concurrency } = self;
        let pipeline =
            Pipeline { emitter, codecs, max_in_flight: codec_concurrency.max(1), codec_warning: LogLimiter::new(CODEC_WARN_INTERVAL) };
        // Each future owns its history handles and drops them when it ends, which is what
        // lets the writer finish.
        tokio::join!(pipeline.run(events, shutdown.clone()), handler.run(commands, shutdown.clone()), writer.run(shutdown.clone()),);
    }
}

/// Hands events and their rows to the history writer, which publishes each event once its
/// row is stored. Events too large for MQTT are never dropped silently: an uplink loses its
/// `object` first; anything still too large is stored only, and the application gets a `log`
/// event saying so (which is itself made to fit).
#[derive(Clone)]
pub(crate) struct Emitter {
    history: HistoryHandle,
    metrics: IntegrationMetrics,
}

/// Longest `description` (and context value) of a `log` event that had to be shrunk to fit.
const SHRUNK_LOG_TEXT: usize = 4096;

fn event_topic(kind: &str, ctx: &DeviceContext) -> String {
    format!("application/{}/device/{}/event/{kind}", ctx.device.application_id, ctx.device.dev_eui)
}

impl Emitter {
    /// Stores a non-uplink event as an [`EventRecord`] and publishes it on
    /// `application/{applicationId}/device/{devEui}/event/{kind}`.
    fn event<T: Serialize>(&self, kind: &'static str, ctx: &DeviceContext, time: DateTime<Utc>, body: &T) {
        let body = match serde_json::to_value(body) {
            Ok(b) => b,
            Err(e) => {
                // Only non-finite floats can fail here; the event cannot be represented.
                warn!(kind, dev_eui = %ctx.device.dev_eui, error = %e, "event not serialisable; dropped");
                return;
            }
        };
        let topic = event_topic(kind, ctx);
        let payload = serde_json::to_vec(&body).expect("a JSON value serialises");
        let size = payload.len();
        let message = mqtt::publish_fits(&topic, size).then_some(Message { kind, dev_eui: ctx.device.dev_eui, topic, payload });
        let fits = message.is_some();
        let row = EventRecord {
            id: Uuid::new_v4(),
            time,
            dev_eui: ctx.device.dev_eui,
            application_id: ctx.device.application_id,
            kind: kind.to_string(),
            body,
        };
        self.history.submit(Some(HistoryRow::Event(row)), message);
        if !fits {
            let description = format!(
                "{kind} event of {size} bytes is above the MQTT limit of {} bytes; stored but not published",
                mqtt::MAX_PUBLISH_PACKET
            );
            self.log(ctx, "ERROR", "UNKNOWN", description, size_context(kind, size));
        }
    }

    /// Publishes and stores a `log` event made by the application server itself. It always
    /// fits in an MQTT message: if it would not, the device tags are left out and long
    /// texts cut.
    fn log(&self, ctx: &DeviceContext, level: &'static str, code: &'static str, description: String, context: BTreeMap<String, String>) {
        let time = Utc::now();
        let mut ev = json::LogEvent {
            time: json::time_millis(time),
            device_info: json::DeviceInfo::from_context(ctx),
            level,
            code,
            description,
            context,
        };
        let topic = event_topic("log", ctx);
        let too_large = |ev: &json::LogEvent| serde_json::to_vec(ev).map_or(true, |p| !mqtt::publish_fits(&topic, p.len()));
        if too_large(&ev) {
            ev.device_info.tags.clear();
            ev.context.insert("device_tags".into(), "omitted: too large for an MQTT message".into());
            shorten(&mut ev.description);
            for v in ev.context.values_mut() {
                shorten(v);
            }
            ev.context.retain(|k, _| k.len() <= 256);
            debug_assert!(!too_large(&ev));
        }
        self.event("log", ctx, time, &ev);
    }

    /// Publishes the `up` event of an uplink and stores its [`UplinkRecord`]. An event too
    /// large for MQTT is published without `object` (the record then has none either)
    /// next to an `UPLINK_CODEC` log event; if even that is too large (huge device tags),
    /// the uplink is stored only, with an `UNKNOWN` log event.
    fn up(&self, up: &DataUp, data: Vec<u8>, object: Option<Map<String, Value>>) {
        let ctx = &*up.device;
        let topic = event_topic("up", ctx);
        let mut event = json::UplinkEvent::new(up, &data, object);
        let mut payload = serde_json::to_vec(&event);
        let size = |p: &Result<Vec<u8>, serde_json::Error>| p.as_ref().map_or(usize::MAX, Vec::len);
        if event.object.is_some() && !payload.as_ref().is_ok_and(|p| mqtt::publish_fits(&topic, p.len())) {
            let with_object = size(&payload);
            event.object = None;
            payload = serde_json::to_vec(&event);
            let description = match with_object {
                usize::MAX => "decoded object cannot be represented as JSON; uplink published and stored without object".to_string(),
                n => format!(
                    "uplink event of {n} bytes with its decoded object is above the MQTT limit of {} bytes; \
                     uplink published and stored without object",
                    mqtt::MAX_PUBLISH_PACKET
                ),
            };
            let mut context = uplink_log_context(up);
            context.insert("size".into(), with_object.to_string());
            context.insert("limit".into(), mqtt::MAX_PUBLISH_PACKET.to_string());
            self.log(ctx, "ERROR", "UPLINK_CODEC", description, context);
        }
        let message = match payload {
            Ok(p) if mqtt::publish_fits(&topic, p.len()) => Some(Message { kind: "up", dev_eui: ctx.device.dev_eui, topic, payload: p }),
            Ok(p) => {
                let description = format!(
                    "up event of {} bytes is above the MQTT limit of {} bytes (device tags too large?); \
                     uplink stored but not published",
                    p.len(),
                    mqtt::MAX_PUBLISH_PACKET
                );
                let mut context = uplink_log_context(up);
                context.extend(size_context("up", p.len()));
                self.log(ctx, "ERROR", "UNKNOWN", description, context);
                None
            }
            Err(e) => {
                warn!(dev_eui = %ctx.device.dev_eui, error = %e, "up event not serialisable; uplink stored but not published");
                None
            }
        };
        // The object is stored as published; it moves into the record (it can be large).
        let object = event.object.take();
        let record = uplink_record(up, &event, object, data);
        self.history.submit(Some(HistoryRow::Uplink(record)), message);
    }
}

/// `context` of a `log` event about one uplink.
fn uplink_log_context(up: &DataUp) -> BTreeMap<String, String> {
    let mut c = BTreeMap::new();
    c.insert("deduplication_id".to_string(), up.deduplication_id.to_string());
    c.insert("f_cnt".to_string(), up.f_cnt.to_string());
    c.insert("f_port".to_string(), up.f_port.unwrap_or(0).to_string());
    c
}

fn size_context(kind: &str, size: usize) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("event".to_string(), kind.to_string()),
        ("size".to_string(), size.to_string()),
        ("limit".to_string(), mqtt::MAX_PUBLISH_PACKET.to_string()),
    ])
}

/// Cuts `s` to at most [`SHRUNK_LOG_TEXT`] bytes, on a character boundary.
fn shorten(s: &mut String) {
    if s.len() > SHRUNK_LOG_TEXT {
        let mut end = SHRUNK_LOG_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

fn uplink_record(up: &DataUp, event: &json::UplinkEvent, object: Option<Map<String, Value>>, data: Vec<u8>) -> UplinkRecord {
    let ctx = &*up.device;
    let first = up.rx_info.first();
    let gateways: BTreeSet<_> = up.rx_info.iter().map(|rx| rx.gateway_id).collect();
    let measurements = object
        .as_ref()
        .map(|o| crate::measurements::measurements(o, &ctx.profile.measurements, ctx.profile.auto_detect_measurements))
        .unwrap_or_default();
    UplinkRecord {
        deduplication_id: up.deduplication_id,
        time: up.time,
        dev_eui: ctx.device.dev_eui,
        application_id: ctx.device.application_id,
        dev_addr: up.dev_addr,
        f_cnt: up.f_cnt,
        f_port: up.f_port,
        confirmed: up.confirmed,
        dr: up.dr,
        frequency: up.tx_info.frequency,
        rssi: first.map_or(0, |rx| rx.rssi),
        snr: first.map_or(0.0, |rx| rx.snr),
        gateway_count: gateways.len() as u32,
        data,
        object: object.map(Value::Object),
        rx_info: serde_json::to_value(&event.rx_info).unwrap_or(Value::Null),
        tx_info: serde_json::to_value(&event.tx_info).unwrap_or(Value::Null),
        adr_decision: up.adr_decision,
        measurements,
    }
}

/// The codec's part of an uplink, computed on a codec worker thread for JavaScript.
struct CodecRun {
    codec: &'static str,
    result: Result<Decoded, CodecError>,
    elapsed: Duration,
}

enum Decoding {
    /// No codec ran (no FPort, FPort 0, or profile codec NONE).
    NotRun,
    Done(CodecRun),
    Running {
        codec: &'static str,
        started: Instant,
        call: CodecCall<Decoded>,
    },
}

/// An event waiting for its turn to be published.
enum InFlight {
    Up { up: Box<DataUp>, data: Vec<u8>, decoding: Decoding },
    Other(AppEvent),
}

impl InFlight {
    fn dev_eui(&self) -> [u8; 8] {
        let ctx = match self {
            InFlight::Up { up, .. } => &up.device,
            InFlight::Other(AppEvent::Up(up)) => &up.device,
            InFlight::Other(AppEvent::Join(e)) => &e.device,
            InFlight::Other(AppEvent::Ack(e)) => &e.device,
            InFlight::Other(AppEvent::TxAck(e)) => &e.device,
            InFlight::Other(AppEvent::Status(e)) => &e.device,
            InFlight::Other(AppEvent::Log(e)) => &e.device,
        };
        ctx.device.dev_eui.0
    }

    /// Ready to publish, polling a running codec (which then becomes `Done`).
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let InFlight::Up { decoding, .. } = self else { return true };
        let Decoding::Running { codec, started, call } = decoding else { return true };
        let (codec, elapsed) = (*codec as &'static str, started.elapsed());
        match Pin::new(call).poll(cx) {
            Poll::Ready(result) => {
                *decoding = Decoding::Done(CodecRun { codec, result, elapsed });
                true
            }
            Poll::Pending => false,
        }
    }
}

/// Events in flight, in one FIFO per device (DevEUI): a device's events leave in arrival
/// order, different devices' as soon as their own turn comes.
#[derive(Default)]
struct DeviceQueues {
    devices: HashMap<[u8; 8], VecDeque<(u64, InFlight)>>,
    len: usize,
    seq: u64,
}

impl DeviceQueues {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, event: InFlight) {
        self.seq += 1;
        self.len += 1;
        self.devices.entry(event.dev_eui()).or_default().push_back((self.seq, event));
    }

    /// Waits until the first event of some device is ready and takes it; among several,
    /// the one that arrived first. Cancel-safe: a finished codec is kept in its event.
    async fn next_ready(&mut self) -> Ready {
        let (dev_eui, seq) = std::future::poll_fn(|cx| {
            let mut oldest: Option<([u8; 8], u64)> = None;
            for (dev_eui, queue) in self.devices.iter_mut() {
                let (seq, head) = queue.front_mut().expect("device queues are never empty");
                if head.poll_ready(cx) && oldest.is_none_or(|(_, s)| *seq < s) {
                    oldest = Some((*dev_eui, *seq));
                }
            }
            match oldest {
                Some(o) => Poll::Ready(o),
                None => Poll::Pending,
            }
        })
        .await;
        let queue = self.devices.get_mut(&dev_eui).expect("ready device has a queue");
        let (taken, event) = queue.pop_front().expect("ready device has an event");
        debug_assert_eq!(taken, seq);
        if queue.is_empty() {
            self.devices.remove(&dev_eui);
        }
        self.len -= 1;
        match event {
            InFlight::Up { up, data, decoding } => {
                let run = match decoding {
                    Decoding::NotRun => None,
                    Decoding::Done(run) => Some(run),
                    Decoding::Running { .. } => unreachable!("only ready events are taken"),
                };
                Ready::Up { up, data, run }
            }
            InFlight::Other(ev) => Ready::Other(ev),
        }
    }
}

struct Pipeline {
    emitter: Emitter,
    codecs: Codecs,
    max_in_flight: usize,
    /// A failing codec fails on every uplink of its devices: one line per interval.
    codec_warning: LogLimiter,
}

/// At most one "codec failed" line per this interval; each failure is in a metric and in
/// the device's `log` event.
const CODEC_WARN_INTERVAL: Duration = Duration::from_secs(10);

impl Pipeline {
    async fn run(self, mut events: mpsc::Receiver<AppEvent>, shutdown: CancellationToken) {
        let mut in_flight = DeviceQueues::default();
        let mut open = true;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            if !open && in_flight.is_empty() {
                break;
            }
            let can_take = open && in_flight.len() < self.max_in_flight;
            let has_work = !in_flight.is_empty();
            let deadline = drain_deadline.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                biased;
                ready = in_flight.next_ready(), if has_work => self.finish(ready),
                ev = events.recv(), if can_take => match ev {
                    Some(ev) => in_flight.push(self.begin(ev)),
                    None => open = false,
                },
                _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                }
                _ = tokio::time::sleep_until(deadline), if open && drain_deadline.is_some() => {
                    let left = events.len();
                    if left > 0 {
                        warn!(events = left, "integration stopped with events not processed");
                    }
                    open = false;
                }
            }
        }
    }

    fn begin(&self, ev: AppEvent) -> InFlight {
        let AppEvent::Up(up) = ev else {
            return InFlight::Other(ev);
        };
        let data = decrypt(&up);
        let f_port = match up.f_port {
            Some(p) if p > 0 => p,
            // FPort 0 (MAC commands, network's business) or none: nothing to decode.
            _ => return InFlight::Up { up, data, decoding: Decoding::NotRun },
        };
        let profile = &up.device.profile;
        let codec = match PayloadCodec::from_profile(&profile.payload_codec, &profile.payload_codec_script) {
            Ok(PayloadCodec::None) => return InFlight::Up { up, data, decoding: Decoding::NotRun },
            Ok(c) => c,
            Err(e) => {
                let run = CodecRun { codec: "unknown", result: Err(e), elapsed: Duration::ZERO };
                return InFlight::Up { up, data, decoding: Decoding::Done(run) };
            }
        };
        // Cayenne LPP answers before this returns; scripts run on the codec worker threads.
        let started = Instant::now();
        let call = self.codecs.decode_uplink_async(&codec, f_port, &data, up.time, &Map::new());
        let decoding = Decoding::Running { codec: codec.name(), started, call };
        InFlight::Up { up, data, decoding }
    }

    fn finish(&self, ready: Ready) {
        match ready {
            Ready::Up { up, data, run } => self.finish_up(&up, data, run),
            Ready::Other(ev) => self.finish_other(ev),
        }
    }

    fn finish_up(&self, up: &DataUp, data: Vec<u8>, run: Option<CodecRun>) {
        let ctx = &*up.device;
        let mut object = None;
        if let Some(run) = run {
            self.emitter.metrics.codec_seconds.observe(run.elapsed.as_secs_f64());
            let log_context = uplink_log_context(up);
            match run.result {
                Ok(Decoded { object: Value::Object(map), warnings }) => {
                    object = Some(map);
                    if !warnings.is_empty() {
                        let description = format!("{} codec warnings: {}", run.codec, warnings.join("; "));
                        self.emitter.log(ctx, "WARNING", "UPLINK_CODEC", description, log_context);
                    }
                }
                Ok(Decoded { object: other, .. }) => {
                    self.codec_failed(up, run.codec, "bad_return");
                    let description = format!(
                        "{} codec returned {} instead of an object; uplink published without object",
                        run.codec,
                        crate::codec::js::type_name(&other)
                    );
                    self.emitter.log(ctx, "ERROR", "UPLINK_CODEC", description, log_context);
                }
                Err(e) => {
                    self.codec_failed(up, run.codec, e.kind());
                    let description = format!("{} codec failed: {e}; uplink published without object", run.codec);
                    self.emitter.log(ctx, "ERROR", "UPLINK_CODEC", description, log_context);
                }
            }
        }

        self.emitter.up(up, data, object);
        debug!(
            dedup_id = %up.deduplication_id,
            dev_eui = %ctx.device.dev_eui,
            f_cnt = up.f_cnt,
            latency_ms = up.received_at.elapsed().as_secs_f64() * 1000.0,
            "uplink handed over to be stored and published"
        );
    }

    fn codec_failed(&self, up: &DataUp, codec: &'static str, kind: &'static str) {
        self.emitter.metrics.codec_errors.inc();
        let Some(suppressed) = self.codec_warning.allow() else { return };
        // The error text can quote the payload: it goes to the device's log event only.
        warn!(
            dedup_id = %up.deduplication_id,
            dev_eui = %up.device.device.dev_eui,
            codec,
            error_kind = kind,
            suppressed_since_last_line = suppressed,
            "payload codec failed; uplink published without object"
        );
    }

    fn finish_other(&self, ev: AppEvent) {
        match ev {
            AppEvent::Up(_) => unreachable!("uplinks are InFlight::Up"),
            AppEvent::Join(j) => self.emitter.event("join", &j.device, j.time, &json::JoinEvent::new(&j)),
            AppEvent::Ack(a) => self.emitter.event("ack", &a.device, a.time, &json::AckEvent::new(&a)),
            AppEvent::TxAck(t) => self.emitter.event("txack", &t.device, t.time, &json::TxAckEvent::new(&t)),
            AppEvent::Status(s) => self.emitter.event("status", &s.device, s.time, &json::StatusEvent::new(&s)),
            AppEvent::Log(l) => self.emitter.event("log", &l.device, l.time, &json::LogEvent::new(&l)),
        }
    }
}

enum Ready {
    Up { up: Box<DataUp>, data: Vec<u8>, run: Option<CodecRun> },
    Other(AppEvent),
}

/// FRMPayload decryption with the AppSKey, uplink direction, full 32-bit FCnt
/// (LoRaWAN 1.0.4 §4.3.3). FPort 0 payloads are MAC commands under the NwkSKey and never
/// reach the application.
fn decrypt(up: &DataUp) -> Vec<u8> {
    match up.f_port {
        Some(p) if p > 0 && !up.frm_payload.is_empty() => encrypt_frm_payload(&up.app_s_key, true, up.dev_addr, up.f_cnt, &up.frm_payload),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
