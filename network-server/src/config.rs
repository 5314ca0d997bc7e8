//! `[network]` section: the LoRaWAN network settings operators choose.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// NetID (6 hex characters) used to allocate DevAddrs for OTAA devices.
    pub net_id: String,
    /// Enabled region, e.g. "EU868".
    pub region: String,
    /// How long copies of one uplink are collected from all gateways before it is processed.
    pub dedup_window_ms: u64,
    /// Accept frames from gateways that are not registered over the REST API.
    pub allow_unknown_gateways: bool,
    /// Class A RX1 delay in seconds (1..=15); told to OTAA devices in the JoinAccept.
    pub rx1_delay: u8,
    /// RX1 data-rate offset told to OTAA devices.
    pub rx1_dr_offset: u8,
    /// RX2 frequency in Hz; 0 = the region's default.
    pub rx2_frequency: u32,
    /// RX2 data rate; `None` = the region's default.
    pub rx2_dr: Option<u8>,
    /// Downlink EIRP in dBm; `None` = the region's default.
    pub downlink_tx_power: Option<i32>,
    /// How long a confirmed downlink waits for the device's ACK before it is dropped
    /// (with an `ack` event `acknowledged: false`).
    pub confirmed_downlink_timeout_secs: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            net_id: "000000".into(),
            region: "EU868".into(),
            dedup_window_ms: 200,
            allow_unknown_gateways: false,
            rx1_delay: 1,
            rx1_dr_offset: 0,
            rx2_frequency: 0,
            rx2_dr: None,
            downlink_tx_power: None,
            confirmed_downlink_timeout_secs: 60,
        }
    }
}

/// A config value that cannot be used; the key is the dotted config key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid value for `{key}`: {reason}")]
pub struct InvalidConfig {
    pub key: &'static str,
    pub reason: String,
}

impl NetworkConfig {
    pub fn net_id_bytes(&self) -> Result<[u8; 3], InvalidConfig> {
        let mut out = [0u8; 3];
        if self.net_id.len() != 6 || hex::decode_to_slice(&self.net_id, &mut out).is_err() {
            return Err(InvalidConfig { key: "network.net_id", reason: format!("expected 6 hex characters, got {:?}", self.net_id) });
        }
        Ok(out)
    }

    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.net_id_bytes()?;
        if !self.region.eq_ignore_ascii_case("EU868") {
            return Err(InvalidConfig {
                key: "network.region",
                reason: format!("unsupported region {:?} (supported: EU868)", self.region),
            });
        }
        if !(1..=15).contains(&self.rx1_delay) {
            return Err(InvalidConfig { key: "network.rx1_delay", reason: "must be 1..=15 seconds".into() });
        }
        if self.rx1_dr_offset > 5 {
            return Err(InvalidConfig { key: "network.rx1_dr_offset", reason: "must be 0..=5".into() });
        }
        if matches!(self.rx2_dr, Some(dr) if dr > 7) {
            return Err(InvalidConfig { key: "network.rx2_dr", reason: "must be 0..=7".into() });
        }
        if self.dedup_window_ms > 10_000 {
            return Err(InvalidConfig {
                key: "network.dedup_window_ms",
                reason: "must be at most 10000 (RX1 opens 1 s after the uplink)".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        NetworkConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_net_id_names_the_key() {
        let c = NetworkConfig { net_id: "xyz".into(), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "network.net_id");
    }

    #[test]
    fn out_of_range_rx1_delay_names_the_key() {
        let c = NetworkConfig { rx1_delay: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "network.rx1_delay");
    }
}
