//! Downlink commands from MQTT (DESIGN.md §4): a message on
//! `application/{applicationId}/device/{devEui}/command/down` with
//! `{"devEui", "confirmed", "fPort", "data"}` (base64) or `"object"` instead of `"data"`
//! (encoded by the device profile's codec) becomes a downlink queue item.
//!
//! Fields as in ChirpStack's `integration.DownlinkCommand`: `devEui` may be left out (the
//! topic names the device), `id` may name the queue item (a UUID), unknown fields are
//! ignored. A command that cannot be queued is reported to the device's application as a
//! `log` event (`DOWNLINK_CODEC` for codec errors, `DOWNLINK_PAYLOAD_SIZE` for size,
//! `UNKNOWN` otherwise, with a description naming the field) when the device exists in
//! the topic's application; otherwise only a warning is logged, so that nothing is told to
//! an application that the device does not belong to. An `id` already in the device's
//! queue is the sender's mistake, reported as a `WARNING` log event naming the id.
//!
//! Anyone who may publish on the broker can send commands, so every log line here is
//! rate-limited (one per [`WARN_INTERVAL`], with the count of those left out).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};
use uuid::Uuid;

use loraflow_network_server::handle::NetworkHandle;
use loraflow_network_server::storage::{DeviceContext, Storage, StorageError};
use loraflow_network_server::types::Eui64;

use super::Emitter;
use crate::codec::{CodecError, Codecs, PayloadCodec};
use crate::downlink_queue::{self, EncodeError, MAX_PAYLOAD};
use crate::mqtt::DownlinkCommand;
use loraflow_packet_forwarder::log_limit::LogLimiter;

/// At most one log line per this interval for rejected commands, and one for faults.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Why a command was not queued. The text is what the application sees in the log event.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("applicationId {0:?} in the topic is not a UUID")]
    BadApplicationId(String),
    #[error("devEui {0:?} in the topic is not 16 hex characters")]
    BadTopicDevEui(String),
    #[error("device {0} does not exist")]
    UnknownDevice(Eui64),
    #[error("device {dev_eui} does not belong to application {application_id}")]
    WrongApplication { dev_eui: Eui64, application_id: Uuid },
    #[error("invalid downlink command JSON: {0}")]
    Json(String),
    #[error("devEui {body:?} in the command does not match the topic's {topic}")]
    DevEuiMismatch { body: String, topic: Eui64 },
    #[error("fPort must be 1..=223, got {0}")]
    FPort(i64),
    #[error("exactly one of data and object is required")]
    DataOrObject,
    #[error("data is not valid base64")]
    Base64,
    #[error("id {0:?} is not a UUID")]
    BadId(String),
    #[error("id {0} is already in the device queue; not queued again")]
    DuplicateId(Uuid),
    #[error("payload codec {codec} could not encode object: {source}")]
    Codec { codec: &'static str, source: CodecError },
    #[error("payload is {0} bytes, more than the {MAX_PAYLOAD} a downlink can carry")]
    TooLarge(usize),
    #[error("downlink could not be queued: database error")]
    Storage(#[source] StorageError),
}

impl CommandError {
    /// `integration.LogCode` name for the log event.
    fn log_code(&self) -> &'static str {
        match self {
            CommandError::Codec { .. } => "DOWNLINK_CODEC",
            CommandError::TooLarge(_) => "DOWNLINK_PAYLOAD_SIZE",
            _ => "UNKNOWN",
        }
    }

    /// `integration.LogLevel` name for the log event.
    fn log_level(&self) -> &'static str {
        match self {
            // Most likely a re-sent command that was queued the first time.
            CommandError::DuplicateId(_) => "WARNING",
            _ => "ERROR",
        }
    }

    /// The server's fault rather than the sender's.
    fn is_internal(&self) -> bool {
        matches!(self, CommandError::Storage(_))
    }
}

/// `integration.DownlinkCommand` JSON.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommandBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    dev_eui: Option<String>,
    #[serde(default)]
    confirmed: bool,
    f_port: i64,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    object: Option<Value>,
}

struct Rejected {
    error: CommandError,
    /// Set once the device is known to belong to the topic's application.
    device: Option<Arc<DeviceContext>>,
}

impl From<CommandError> for Rejected {
    fn from(error: CommandError) -> Self {
        Rejected { error, device: None }
    }
}

pub(crate) struct CommandHandler {
    storage: Storage,
    codecs: Codecs,
    network: NetworkHandle,
    emitter: Emitter,
    rejected_warning: LogLimiter,
    fault_warning: LogLimiter,
}

impl CommandHandler {
    pub(crate) fn new(storage: Storage, codecs: Codecs, network: NetworkHandle, emitter: Emitter) -> Self {
        CommandHandler {
            storage,
            codecs,
            network,
            emitter,
            rejected_warning: LogLimiter::new(WARN_INTERVAL),
            fault_warning: LogLimiter::new(WARN_INTERVAL),
        }
    }

    /// Handles commands one at a time until `shutdown` or until the transport is gone.
    pub(crate) async fn run(self, mut commands: mpsc::Receiver<DownlinkCommand>, shutdown: CancellationToken) {
        loop {
            let cmd = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => break,
                },
            };
            self.handle(&cmd).await;
        }
    }

    /// Queues the command or reports why not; returns the queue item id when queued.
    pub(crate) async fn handle(&self, cmd: &DownlinkCommand) -> Option<Uuid> {
        match self.enqueue(cmd).await {
            Ok((id, dev_eui)) => {
                self.emitter.metrics.downlink_commands.with_label_values(&["queued"]).inc();
                debug!(%dev_eui, queue_item_id = %id, "downlink command queued");
                Some(id)
            }
            Err(Rejected { error, device }) => {
                let outcome = if error.is_internal() { "error" } else { "invalid" };
                self.emitter.metrics.downlink_commands.with_label_values(&[outcome]).inc();
                // Topic parts are as received: shorten them for the log line.
                let dev_eui: String = cmd.dev_eui.chars().take(32).collect();
                let application_id: String = cmd.application_id.chars().take(40).collect();
                if let CommandError::Storage(e) = &error {
                    if let Some(suppressed) = self.fault_warning.allow() {
                        error!(%dev_eui, error = %e, failed_since_last_line = suppressed, "downlink command not queued");
                    }
                } else if let Some(suppressed) = self.rejected_warning.allow() {
                    warn!(%dev_eui, %application_id, reason = %error, rejected_since_last_warning = suppressed, "downlink command rejected");
                }
                if let Some(ctx) = device {
                    let mut context = BTreeMap::new();
                    context.insert("topic_dev_eui".to_string(), ctx.device.dev_eui.to_string());
                    if let CommandError::DuplicateId(id) = &error {
                        context.insert("id".to_string(), id.to_string());
                    }
                    self.emitter.log(&ctx, error.log_level(), error.log_code(), error.to_string(), context);
                }
                None
            }
        }
    }

    async fn enqueue(&self, cmd: &DownlinkCommand) -> Result<(Uuid, Eui64), Rejected> {
        let dev_eui: Eui64 = cmd.dev_eui.to_ascii_lowercase().parse().map_err(|_| CommandError::BadTopicDevEui(cmd.dev_eui.clone()))?;
        let application_id: Uuid = cmd.application_id.parse().map_err(|_| CommandError::BadApplicationId(cmd.application_id.clone()))?;
        let ctx = match self.storage.devices.context(dev_eui).await {
            Ok(ctx) => Arc::new(ctx),
            Err(StorageError::NotFound) => return Err(CommandError::UnknownDevice(dev_eui).into()),
            Err(e) => return Err(CommandError::Storage(e).into()),
        };
        if ctx.device.application_id != application_id {
            return Err(CommandError::WrongApplication { dev_eui, application_id }.into());
        }
        let with_device = |error: CommandError| Rejected { error, device: Some(ctx.clone()) };

        let body: CommandBody = serde_json::from_slice(&cmd.payload).map_err(|e| with_device(CommandError::Json(e.to_string())))?;
        if let Some(body_eui) = &body.dev_eui {
            if body_eui.to_ascii_lowercase().parse::<Eui64>() != Ok(dev_eui) {
                return Err(with_device(CommandError::DevEuiMismatch { body: body_eui.clone(), topic: dev_eui }));
            }
        }
        // LoRaWAN 1.0.4 §4.3.2: FPort 1..223 are application ports; 0 is MAC, 224 test.
        let f_port = match u8::try_from(body.f_port) {
            Ok(p @ 1..=223) => p,
            _ => return Err(with_device(CommandError::FPort(body.f_port))),
        };
        let id = match &body.id {
            None => Uuid::new_v4(),
            Some(s) if s.is_empty() => Uuid::new_v4(),
            Some(s) => s.parse().map_err(|_| with_device(CommandError::BadId(s.clone())))?,
        };
        let data = match (&body.data, &body.object) {
            (Some(data), None) => BASE64.decode(data).map_err(|_| with_device(CommandError::Base64))?,
            (None, Some(object)) => self.encode(&ctx, f_port, object.clone()).await.map_err(with_device)?,
            _ => return Err(with_device(CommandError::DataOrObject)),
        };
        if data.len() > MAX_PAYLOAD {
            return Err(with_device(CommandError::TooLarge(data.len())));
        }

        let item = downlink_queue::unsent(id, dev_eui, f_port, body.confirmed, data);
        self.network.enqueue(&item).await.map_err(|e| match e {
            StorageError::AlreadyExists => with_device(CommandError::DuplicateId(id)),
            e => with_device(CommandError::Storage(e)),
        })?;
        Ok((id, dev_eui))
    }

    async fn encode(&self, ctx: &DeviceContext, f_port: u8, object: Value) -> Result<Vec<u8>, CommandError> {
        downlink_queue::encode_object(&self.codecs, &ctx.profile, ctx.device.tags.as_object().cloned().unwrap_or_default(), f_port, object)
            .await
            .map_err(|e| match e {
                EncodeError::UnknownCodec(source) => CommandError::Codec { codec: "unknown", source },
                EncodeError::NoCodec => CommandError::Codec { codec: PayloadCodec::None.name(), source: CodecError::Unsupported },
                EncodeError::Codec { codec, source } => CommandError::Codec { codec, source },
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{insert_device, Harness};
    use super::*;

    fn command(app: &str, dev_eui: &str, body: Value) -> DownlinkCommand {
        DownlinkCommand { application_id: app.to_string(), dev_eui: dev_eui.to_string(), payload: serde_json::to_vec(&body).unwrap() }
    }

    #[tokio::test]
    async fn a_data_command_is_queued_and_the_network_server_told() {
        let h = Harness::sqlite().await;
        let ctx = insert_device(&h.storage).await;
        let app = ctx.device.application_id.to_string();
        let eui = ctx.device.dev_eui.to_string().to_uppercase();
        let id = h
            .commands()
            .handle(&command(&app, &eui, json!({"devEui": eui, "confirmed": true, "fPort": 10, "data": "AQID"})))
            .await
            .expect("queued");
        let items = h.storage.queue.list(ctx.device.dev_eui).await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].id, id);
        assert_eq!(items[0].data, vec![1, 2, 3]);
        assert_eq!(items[0].f_port, 10);
        assert!(items[0].confirmed);
        assert!(h.published().is_empty());
        h.close().await;
    }

    #[tokio::test]
    async fn an_object_command_is_encoded_by_the_profile_codec() {
        let h = Harness::sqlite().await;
        let ctx = super::super::testing::insert_device_with_codec(
            &h.storage,
            "JS",
            "function encodeDownlink(input) { return { bytes: [input.data.level, 7] }; }",
        )
        .await;
        let app = ctx.device.application_id.to_string();
        let eui = ctx.device.dev_eui.to_string();
        h.commands().handle(&command(&app, &eui, json!({"fPort": 2, "object": {"level": 5}}))).await.expect("queued");
        let items = h.storage.queue.list(ctx.device.dev_eui).await.unwrap();
        assert_eq!(items[0].data, vec![5, 7]);
        assert!(!items[0].confirmed);
        h.close().await;
    }

    /// Rejected commands for an existing device: (body, expected log code, text in the description).
    #[tokio::test]
    async fn invalid_commands_publish_a_log_event_and_queue_nothing() {
        let h = Harness::sqlite().await;
        let ctx = insert_device(&h.storage).await; // codec NONE
        let app = ctx.device.application_id.to_string();
        let eui = ctx.device.dev_eui.to_string();
        let cases = [
            (json!({"fPort": 0, "data": "AQ=="}), "UNKNOWN", "fPort"),
            (json!({"fPort": 224, "data": "AQ=="}), "UNKNOWN", "fPort"),
            (json!({"fPort": 1, "data": "***"}), "UNKNOWN", "base64"),
            (json!({"fPort": 1}), "UNKNOWN", "data and object"),
            (json!({"fPort": 1, "data": "AQ==", "object": {}}), "UNKNOWN", "data and object"),
            (json!({"devEui": "0000000000000001", "fPort": 1, "data": "AQ=="}), "UNKNOWN", "devEui"),
            (json!({"fPort": 1, "data": BASE64.encode([0u8; 243])}), "DOWNLINK_PAYLOAD_SIZE", "243 bytes"),
            (json!({"fPort": 1, "object": {"a": 1}}), "DOWNLINK_CODEC", "NONE"),
            (json!({"fPort": "x"}), "UNKNOWN", "JSON"),
        ];
        for (body, code, text) in &cases {
            assert_eq!(h.commands().handle(&command(&app, &eui, body.clone())).await, None, "{body}");
            let published = h.published();
            let (topic, payload) = published.last().expect("log event published");
            assert_eq!(topic, &format!("application/{app}/device/{eui}/event/log"));
            let log: Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(log["code"], *code, "{body}");
            assert_eq!(log["level"], "ERROR");
            let description = log["description"].as_str().unwrap();
            assert!(description.contains(text), "{body}: {description}");
        }
        assert_eq!(h.published().len(), cases.len());
        assert!(h.storage.queue.list(ctx.device.dev_eui).await.unwrap().is_empty());
        h.close().await;
    }

    #[tokio::test]
    async fn a_duplicate_id_is_a_warning_log_event_naming_the_id_not_a_fault() {
        let h = Harness::sqlite().await;
        let ctx = insert_device(&h.storage).await;
        let app = ctx.device.application_id.to_string();
        let eui = ctx.device.dev_eui.to_string();
        let id = Uuid::new_v4();
        let body = json!({"id": id.to_string(), "fPort": 1, "data": "AQ=="});
        assert_eq!(h.commands().handle(&command(&app, &eui, body.clone())).await, Some(id));
        assert_eq!(h.commands().handle(&command(&app, &eui, body)).await, None);
        let published = h.published();
        let (topic, payload) = published.last().expect("log event published");
        assert_eq!(topic, &format!("application/{app}/device/{eui}/event/log"));
        let log: Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(log["level"], "WARNING");
        assert_eq!(log["code"], "UNKNOWN");
        assert!(log["description"].as_str().unwrap().contains(&id.to_string()), "{log}");
        assert_eq!(log["context"]["id"], id.to_string());
        assert_eq!(h.metrics.downlink_commands.with_label_values(&["invalid"]).get(), 1);
        assert_eq!(h.metrics.downlink_commands.with_label_values(&["error"]).get(), 0);
        assert_eq!(h.storage.queue.list(ctx.device.dev_eui).await.unwrap().len(), 1);
        h.close().await;
    }

    #[tokio::test]
    async fn commands_for_unknown_devices_or_other_applications_only_log() {
        let h = Harness::sqlite().await;
        let ctx = insert_device(&h.storage).await;
        let eui = ctx.device.dev_eui.to_string();
        let body = json!({"fPort": 1, "data": "AQ=="});
        let other_app = Uuid::new_v4().to_string();
        assert_eq!(h.commands().handle(&command(&other_app, &eui, body.clone())).await, None);
        let app = ctx.device.application_id.to_string();
        assert_eq!(h.commands().handle(&command(&app, "0badc0de0badc0de", body.clone())).await, None);
        assert_eq!(h.commands().handle(&command(&app, "not-an-eui", body.clone())).await, None);
        assert_eq!(h.commands().handle(&command("nope", &eui, body)).await, None);
        assert!(h.published().is_empty());
        assert!(h.storage.queue.list(ctx.device.dev_eui).await.unwrap().is_empty());
        assert_eq!(h.metrics.downlink_commands.with_label_values(&["invalid"]).get(), 4);
        h.close().await;
    }
}
