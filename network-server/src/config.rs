//! `[network]` section: the LoRaWAN network settings operators choose.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// NetID (6 hex characters) used to allocate DevAddrs for OTAA devices.
    pub net_id: String,
    /// The region of a one-region server: any RP002 common name ("EU868", "US915",
    /// "AS923-2", …). Ignored when `[[regions]]` entries exist.
    pub region: String,
    /// Indices of the region's default uplink channels the gateways listen on. A TOML list,
    /// or comma-separated in the environment; unset = the region's default (US915/AU915:
    /// sub-band 2, channels 8-15 and 65; elsewhere all default channels).
    #[serde(deserialize_with = "index_list_opt", skip_serializing_if = "Option::is_none")]
    pub enabled_uplink_channels: Option<Vec<u8>>,
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
    /// Extra uplink channels (Hz) beyond the region's default ones: sent in the join-accept
    /// CFList and, to ABP devices and devices whose plan changed, in NewChannelReq. A TOML
    /// list, or comma-separated in the environment; empty = none; unset = the region's
    /// (EU868: 867.1-867.9 MHz; none in regions with fixed channels).
    #[serde(deserialize_with = "frequency_list_opt", skip_serializing_if = "Option::is_none")]
    pub extra_channels: Option<Vec<u32>>,
    /// How many times a MAC request of the server is sent before it is given up (and not
    /// sent again for a day).
    pub mac_command_max_attempts: u8,
    /// DutyCycleReq value (aggregated duty cycle 1 / 2^n, 0..=15); unset = never sent.
    pub max_duty_cycle: Option<u8>,
    /// Share (1..=100 %) of each sub-band's legal hourly airtime a gateway may spend on this
    /// server's downlinks; the rest is headroom for what else the gateway sends.
    pub duty_cycle_budget_percent: u8,
    /// Join-requests (with a valid MIC) accepted per DevEUI and minute, in bursts of as many;
    /// the excess is rejected as `rate_limited`. 0 = no limit.
    pub join_requests_per_dev_eui_per_minute: u32,
}

/// A list of numbers from TOML (`[867100000, ...]`) or from an environment variable
/// (`"867100000,867300000"`, which figment hands over as one string or number).
fn number_list<'de, D, T>(d: D, what: &'static str) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + std::str::FromStr + TryFrom<u64> + TryFrom<i64>,
{
    struct V<T>(&'static str, std::marker::PhantomData<T>);
    impl<'de, T> serde::de::Visitor<'de> for V<T>
    where
        T: serde::Deserialize<'de> + std::str::FromStr + TryFrom<u64> + TryFrom<i64>,
    {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of {}", self.0)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<T>()? {
                out.push(v);
            }
            Ok(out)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<T>().map_err(|_| E::custom(format!("{s:?} is not one of {}", self.0))))
                .collect()
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Vec<T>, E> {
            T::try_from(v).map(|f| vec![f]).map_err(|_| E::custom(format!("{v} is not one of {}", self.0)))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Vec<T>, E> {
            T::try_from(v).map(|f| vec![f]).map_err(|_| E::custom(format!("{v} is not one of {}", self.0)))
        }
    }
    d.deserialize_any(V(what, std::marker::PhantomData))
}

fn frequency_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    number_list(d, "frequencies in Hz")
}

/// `frequency_list` for a key whose absence means "the region's default".
pub(crate) fn frequency_list_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
    frequency_list(d).map(Some)
}

/// Channel indices, as a list or comma-separated; absent = the region's default.
pub(crate) fn index_list_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    number_list(d, "channel indices (0-255)").map(Some)
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            net_id: "000000".into(),
            region: "EU868".into(),
            enabled_uplink_channels: None,
            dedup_window_ms: 200,
            allow_unknown_gateways: false,
            rx1_delay: 1,
            rx1_dr_offset: 0,
            rx2_frequency: 0,
            rx2_dr: None,
            downlink_tx_power: None,
            confirmed_downlink_timeout_secs: 60,
            extra_channels: None,
            mac_command_max_attempts: 3,
            max_duty_cycle: None,
            duty_cycle_budget_percent: 100,
            // A real device backs off between join attempts (LoRaWAN 1.0.4, "retransmissions
            // back-off": a 1 % aggregated duty cycle in the first hour, a few a minute even
            // at SF7); the simulator retries every 7 s.
            join_requests_per_dev_eui_per_minute: 20,
        }
    }
}

/// A config value that cannot be used; the key is the dotted config key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid value for `{key}`: {reason}")]
pub struct InvalidConfig {
    pub key: String,
    pub reason: String,
}

impl NetworkConfig {
    pub fn net_id_bytes(&self) -> Result<[u8; 3], InvalidConfig> {
        let mut out = [0u8; 3];
        if self.net_id.len() != 6 || hex::decode_to_slice(&self.net_id, &mut out).is_err() {
            return Err(InvalidConfig {
                key: "network.net_id".into(),
                reason: format!("expected 6 hex characters, got {:?}", self.net_id),
            });
        }
        Ok(out)
    }

    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.net_id_bytes()?;
        if !(1..=15).contains(&self.rx1_delay) {
            return Err(InvalidConfig { key: "network.rx1_delay".into(), reason: "must be 1..=15 seconds".into() });
        }
        if self.mac_command_max_attempts == 0 {
            return Err(InvalidConfig { key: "network.mac_command_max_attempts".into(), reason: "must be at least 1".into() });
        }
        if matches!(self.max_duty_cycle, Some(v) if v > 15) {
            return Err(InvalidConfig { key: "network.max_duty_cycle".into(), reason: "must be 0..=15 (duty cycle 1/2^n)".into() });
        }
        if !(1..=100).contains(&self.duty_cycle_budget_percent) {
            return Err(InvalidConfig { key: "network.duty_cycle_budget_percent".into(), reason: "must be 1..=100".into() });
        }
        if self.dedup_window_ms > 10_000 {
            return Err(InvalidConfig {
                key: "network.dedup_window_ms".into(),
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
    fn bad_values_name_the_key() {
        let c = NetworkConfig { max_duty_cycle: Some(16), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "network.max_duty_cycle");
        let c = NetworkConfig { mac_command_max_attempts: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "network.mac_command_max_attempts");
    }

    #[test]
    fn extra_channels_are_the_regions_unless_set() {
        // Absent from TOML and environment: the region's default (`region_config`).
        let c: NetworkConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.extra_channels, None);
        let c: NetworkConfig = serde_json::from_str(r#"{"extra_channels": ""}"#).unwrap();
        assert_eq!(c.extra_channels, Some(vec![]));
        let c: NetworkConfig = serde_json::from_str(r#"{"enabled_uplink_channels": "8, 9,65"}"#).unwrap();
        assert_eq!(c.enabled_uplink_channels, Some(vec![8, 9, 65]));
        let c: NetworkConfig = serde_json::from_str(r#"{"enabled_uplink_channels": [0, 1]}"#).unwrap();
        assert_eq!(c.enabled_uplink_channels, Some(vec![0, 1]));
        assert!(serde_json::from_str::<NetworkConfig>(r#"{"enabled_uplink_channels": "300"}"#).is_err());
    }

    #[test]
    fn extra_channels_read_from_a_list_or_a_comma_separated_string() {
        #[derive(Deserialize)]
        struct W {
            #[serde(deserialize_with = "frequency_list")]
            f: Vec<u32>,
        }
        let w: W = serde_json::from_str(r#"{"f": [867100000, 867300000]}"#).unwrap();
        assert_eq!(w.f, vec![867_100_000, 867_300_000]);
        let w: W = serde_json::from_str(r#"{"f": "867100000, 867300000"}"#).unwrap();
        assert_eq!(w.f, vec![867_100_000, 867_300_000]);
        let w: W = serde_json::from_str(r#"{"f": ""}"#).unwrap();
        assert!(w.f.is_empty());
        let w: W = serde_json::from_str(r#"{"f": 867100000}"#).unwrap();
        assert_eq!(w.f, vec![867_100_000]);
        assert!(serde_json::from_str::<W>(r#"{"f": "868 MHz"}"#).is_err());
    }

    #[test]
    fn a_duty_cycle_budget_outside_1_to_100_percent_names_the_key() {
        for bad in [0, 101, 255] {
            let c = NetworkConfig { duty_cycle_budget_percent: bad, ..Default::default() };
            assert_eq!(c.validate().unwrap_err().key, "network.duty_cycle_budget_percent", "{bad}");
        }
        for good in [1, 50, 100] {
            NetworkConfig { duty_cycle_budget_percent: good, ..Default::default() }.validate().unwrap();
        }
    }

    #[test]
    fn out_of_range_rx1_delay_names_the_key() {
        let c = NetworkConfig { rx1_delay: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "network.rx1_delay");
    }
}
