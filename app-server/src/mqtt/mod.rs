//! MQTT integration: events out, downlink commands in (DESIGN.md §2, §4).
//!
//! # Layout
//! - [`config`]: the `[mqtt]` section.
//! - `transport`: [`MqttIntegration::start`], the [`MqttHandle`] publishers use, and the
//!   tasks that keep the connection, re-send after reconnects and receive commands.
//! - `tracker`: which accepted messages the broker has not acknowledged yet.
//! - `connect`: rumqttc options from the config (URL, credentials, TLS).
//! - `embedded`: the rumqttd broker started when `mqtt.url` is empty, and its supervisor;
//!   `front`: the listener that relays to it and enforces its connection limit;
//!   `probe`: the MQTT health probe the supervisor uses.
//! - `command`: the downlink command topic.
//!
//! Guarantee: a message `publish` accepted is delivered to the broker at least once and
//! in order, across broker outages and restarts, unless the process stops before the
//! broker is back (the queue is in memory) or shutdown's 2 s flush runs out.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use loraflow_app_server::mqtt::{MqttConfig, MqttIntegration};
//! use tokio_util::sync::CancellationToken;
//!
//! let registry = prometheus::Registry::new();
//! let shutdown = CancellationToken::new();
//! let (mqtt, mut commands, embedded) =
//!     MqttIntegration::start(&MqttConfig::default(), &registry, shutdown.clone()).await?;
//! mqtt.publish("application/x/device/0102030405060708/event/up".into(), b"{}".to_vec())?;
//! if let Some(command) = commands.recv().await {
//!     println!("downlink for {}", command.dev_eui);
//! }
//! shutdown.cancel();
//! mqtt.stopped().await;
//! # Ok(()) }
//! ```

mod command;
pub mod config;
mod connect;
mod embedded;
mod error;
mod front;
pub mod gate;
mod metrics;
mod probe;
mod tracker;
mod transport;

pub use command::DownlinkCommand;
pub use config::MqttConfig;
pub use error::{MqttError, MqttQueueFull};
pub use transport::{MqttHandle, MqttHealth, MqttIntegration};

/// Largest MQTT packet loraflow publishes (1 MiB); the transport refuses larger messages.
pub const MAX_PUBLISH_PACKET: usize = connect::MAX_OUTGOING_PACKET;

/// Whether a QoS 1 publish of this topic and payload fits in [`MAX_PUBLISH_PACKET`].
pub fn publish_fits(topic: &str, payload_len: usize) -> bool {
    // Fixed header (5) + topic length (2) + packet id (2).
    topic.len() + payload_len + 9 <= MAX_PUBLISH_PACKET
}

/// `tracing` filter directives that keep the embedded broker quiet: rumqttd logs every
/// connection, and every disconnect at ERROR level. Add them to the subscriber's filter.
pub const QUIET_LOG_DIRECTIVES: &[&str] = &["rumqttd=off"];
