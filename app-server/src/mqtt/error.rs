use std::net::SocketAddr;

/// Why the MQTT integration could not start. A broker that is down is not an error:
/// the transport keeps retrying in the background.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("invalid `mqtt.url` {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid `{key}` {path:?}: {reason}")]
    Tls { key: &'static str, path: String, reason: String },
    #[error(
        "embedded MQTT broker cannot listen on {addr}: {source}; \
         set `mqtt.embedded_bind` (env LORAFLOW_MQTT__EMBEDDED_BIND) to another address, \
         or `mqtt.url` to use an external broker"
    )]
    EmbeddedBind { addr: SocketAddr, source: std::io::Error },
    #[error(
        "embedded MQTT broker on {addr} did not start: {reason}; \
         `mqtt.embedded_bind` (env LORAFLOW_MQTT__EMBEDDED_BIND) moves it"
    )]
    EmbeddedStart { addr: SocketAddr, reason: String },
    #[error("registering MQTT metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// `MqttHandle::publish` refused the message: the queue (`mqtt.queue_size`) is full,
/// the integration has stopped, or the message can never be published (bad topic,
/// too large). The message is dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("MQTT publish queue full or closed (`mqtt.queue_size`); message dropped")]
pub struct MqttQueueFull;
