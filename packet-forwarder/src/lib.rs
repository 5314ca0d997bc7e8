//! Semtech UDP packet-forwarder (protocol v2) server for loraflow, and the gateway-neutral
//! frame model the network server works with.
//!
//! # Layout
//!
//! - [`frame`]: what goes up ([`frame::UplinkFrame`], [`frame::GatewayEvent`]) and down
//!   ([`frame::DownlinkFrame`], [`frame::TxAckStatus`]); no Semtech JSON in it.
//! - [`semtech`]: pure encoders/decoders, one module per packet type (`push_data`, `pull_data`,
//!   `pull_resp`, `tx_ack`, …) plus `rxpk`, `txpk`, `stat`. Both directions are public so that a
//!   virtual gateway can be written with this crate.
//! - [`server`]: the tokio UDP server ([`PacketForwarder`]) and its [`Handle`] for downlinks and
//!   gateway state.
//! - [`known`]: the allow-list of gateways ([`KnownGateways`]) with each one's
//!   [`AllowedNetworks`] (`allowed_networks`).
//! - `pull_address`: where a gateway's downlinks go, and the rule for moving it (two PULL_DATA
//!   in a row from a new address).
//! - `rate_limit`: the PUSH_DATA token buckets (`gateway.push_data_rate_*`).
//! - [`config`]: the `[gateway]` configuration section ([`GatewayConfig`]).
//! - `datagram_log`: rate-limited log lines for single datagrams (drops, odd TX_ACKs).
//! - `metrics`: Prometheus metrics, registered into the registry given to
//!   [`PacketForwarder::bind`]; [`DropReason`] lists the `reason` labels.
//!
//! # Example
//!
//! ```no_run
//! use loraflow_packet_forwarder::{frame::GatewayEvent, GatewayConfig, KnownGateways, PacketForwarder};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), loraflow_packet_forwarder::Error> {
//! let config = GatewayConfig { bind: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
//! let registry = prometheus::Registry::new();
//! let (server, mut events) = PacketForwarder::bind(&config, &registry, KnownGateways::new(true)).await?;
//! let handle = server.handle();
//! let shutdown = CancellationToken::new();
//! tokio::spawn(server.run(shutdown.clone()));
//! while let Some(event) = events.recv().await {
//!     if let GatewayEvent::Uplink(frame) = event {
//!         println!("{} bytes from {}", frame.phy_payload.len(), frame.rx_info.gateway_id);
//!     }
//! }
//! # drop(handle);
//! # Ok(())
//! # }
//! ```

pub mod allowed_networks;
pub mod config;
mod datagram_log;
pub mod frame;
pub mod known;
pub mod log_limit;
mod metrics;
mod pull_address;
mod rate_limit;
pub mod semtech;
pub mod server;

pub use allowed_networks::{AllowedNetworks, CidrError};
pub use config::{ConfigError, GatewayConfig};
pub use known::{Admission, KnownGateways};
pub use metrics::{DropReason, ADDRESS_CHANGE_RESULTS, MODULATIONS, PACKET_TYPES};
pub use server::{Error, GatewayState, Handle, PacketForwarder};
