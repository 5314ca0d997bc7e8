//! The `[gateway]` section of the loraflow configuration.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Settings of the Semtech UDP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// UDP listen address of the Semtech packet-forwarder protocol.
    pub bind: SocketAddr,
    /// Datagrams larger than this are dropped as `oversized`.
    pub max_datagram_bytes: usize,
    /// How long `Handle::send` waits for the gateway's TX_ACK.
    pub tx_ack_timeout_ms: u64,
    /// A gateway without PULL_DATA for this long is reported offline.
    pub offline_after_secs: u64,
    /// Capacity of the event channel towards the network server; when it is full, events are
    /// dropped (and counted as `channel_full`) instead of stalling the socket loop.
    pub uplink_queue: usize,
    /// Requested kernel receive buffer of the UDP socket (capped by `net.core.rmem_max`).
    pub receive_buffer_bytes: usize,
    /// PUSH_DATA datagrams a second accepted from one gateway; the excess is dropped as
    /// `rate_limited_gateway`. 0 = no limit.
    pub push_data_rate_per_gateway: u32,
    /// Bucket size of the per-gateway limit (datagrams); 0 = one second's worth.
    pub push_data_burst_per_gateway: u32,
    /// PUSH_DATA datagrams a second accepted from all gateways together; the excess is
    /// dropped as `rate_limited_global`. 0 = no limit.
    pub push_data_rate_global: u32,
    /// Bucket size of the global limit (datagrams); 0 = one second's worth.
    pub push_data_burst_global: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 1700)),
            max_datagram_bytes: 32 * 1024,
            tx_ack_timeout_ms: 1000,
            offline_after_secs: 60,
            uplink_queue: 65536,
            receive_buffer_bytes: 8 * 1024 * 1024,
            // Far above what a real gateway sends (one PUSH_DATA carries every packet its
            // forwarder fetched from the concentrator at once), and above `loraflow bench` at 10,000 uplinks/s
            // (one datagram per uplink and gateway): the defaults only stop floods.
            push_data_rate_per_gateway: 20_000,
            push_data_burst_per_gateway: 0,
            push_data_rate_global: 60_000,
            push_data_burst_global: 0,
        }
    }
}

/// A setting of the `[gateway]` section that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gateway.{key}: {message}")]
pub struct ConfigError {
    /// The key inside the `[gateway]` section, e.g. `uplink_queue`.
    pub key: &'static str,
    pub message: String,
}

/// The UDP payload limit of IPv4/IPv6 without jumbograms.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// A PUSH_DATA header is 12 bytes; anything smaller could not carry a single packet.
const MIN_DATAGRAM: usize = 12;

impl GatewayConfig {
    /// Checks the values that would otherwise fail later (a zero-capacity channel panics in tokio).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_DATAGRAM..=MAX_UDP_PAYLOAD).contains(&self.max_datagram_bytes) {
            return Err(ConfigError {
                key: "max_datagram_bytes",
                message: format!("must be between {MIN_DATAGRAM} and {MAX_UDP_PAYLOAD}, got {}", self.max_datagram_bytes),
            });
        }
        if self.tx_ack_timeout_ms == 0 {
            return Err(ConfigError { key: "tx_ack_timeout_ms", message: "must be greater than 0".into() });
        }
        if self.offline_after_secs == 0 {
            return Err(ConfigError { key: "offline_after_secs", message: "must be greater than 0".into() });
        }
        if self.uplink_queue == 0 {
            return Err(ConfigError { key: "uplink_queue", message: "must be greater than 0".into() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = GatewayConfig::default();
        assert_eq!(c.bind, "0.0.0.0:1700".parse().unwrap());
        assert_eq!(c.max_datagram_bytes, 32768);
        assert_eq!(c.tx_ack_timeout_ms, 1000);
        assert_eq!(c.offline_after_secs, 60);
        assert_eq!(c.uplink_queue, 65536);
        assert_eq!((c.push_data_rate_per_gateway, c.push_data_burst_per_gateway), (20_000, 0));
        assert_eq!((c.push_data_rate_global, c.push_data_burst_global), (60_000, 0));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn missing_keys_take_defaults_and_unknown_keys_are_rejected() {
        let c: GatewayConfig = serde_json::from_str(r#"{"bind":"127.0.0.1:1701"}"#).unwrap();
        assert_eq!(c.bind, "127.0.0.1:1701".parse().unwrap());
        assert_eq!(c.tx_ack_timeout_ms, 1000);
        let err = serde_json::from_str::<GatewayConfig>(r#"{"bindd":"127.0.0.1:1701"}"#).unwrap_err();
        assert!(err.to_string().contains("bindd"), "{err}");
    }

    #[test]
    fn a_zero_queue_is_rejected_naming_the_key() {
        let c = GatewayConfig { uplink_queue: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "uplink_queue");
        let c = GatewayConfig { max_datagram_bytes: 4, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().starts_with("gateway.max_datagram_bytes"));
    }
}
