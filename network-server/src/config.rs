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
    /// Extra uplink channels (Hz) beyond the region's default ones: sent in the join-accept
    /// CFList and, to ABP devices and devices whose plan changed, in NewChannelReq. A TOML
    /// list, or comma-separated in the environment; empty = none.
    #[serde(deserialize_with = "frequency_list")]
    pub extra_channels: Vec<u32>,
    /// How many times a MAC request of the server is sent before it is given up (and not
    /// sent again for a day).
    pub mac_command_max_attempts: u8,
    /// DutyCycleReq value (aggregated duty cycle 1 / 2^n, 0..=15); unset = never sent.
    pub max_duty_cycle: Option<u8>,
    /// Share (1..=100 %) of each sub-band's legal hourly airtime a gateway may spend on this
    /// server's downlinks; the rest is headroom for what else the gateway sends.
    pub duty_cycle_budget_percent: u8,
}

/// A list of frequencies from TOML (`[867100000, ...]`) or from an environment variable
/// (`"867100000,867300000"`, which figment hands over as one string or number).
fn frequency_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u32>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of frequencies in Hz")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<u32>()? {
                out.push(v);
            }
            Ok(out)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u32>, E> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u32>().map_err(|_| E::custom(format!("{s:?} is not a frequency in Hz"))))
                .collect()
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Vec<u32>, E> {
            u32::try_from(v).map(|f| vec![f]).map_err(|_| E::custom(format!("{v} is not a frequency in Hz")))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Vec<u32>, E> {
            u32::try_from(v).map(|f| vec![f]).map_err(|_| E::custom(format!("{v} is not a frequency in Hz")))
        }
    }
    d.deserialize_any(V)
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
            extra_channels: vec![867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000],
            mac_command_max_attempts: 3,
            max_duty_cycle: None,
            duty_cycle_budget_percent: 100,
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
    /// The RX settings the network wants devices to use: `rx1_delay`, `rx1_dr_offset`, and
    /// `rx2_dr` / `rx2_frequency` or the region's defaults where unset.
    pub fn desired_rx(&self, region: &dyn crate::region::Region) -> crate::mac::state::RxParams {
        crate::mac::state::RxParams {
            rx1_delay: self.rx1_delay,
            rx1_dr_offset: self.rx1_dr_offset,
            rx2_dr: self.rx2_dr.unwrap_or_else(|| region.default_rx2_dr()),
            rx2_frequency: if self.rx2_frequency == 0 { region.default_rx2_frequency() } else { self.rx2_frequency },
        }
    }

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
        if let Some(region) = crate::region::region_by_name(&self.region) {
            region.check_extra_channels(&self.extra_channels).map_err(|reason| InvalidConfig { key: "network.extra_channels", reason })?;
        }
        if self.mac_command_max_attempts == 0 {
            return Err(InvalidConfig { key: "network.mac_command_max_attempts", reason: "must be at least 1".into() });
        }
        if matches!(self.max_duty_cycle, Some(v) if v > 15) {
            return Err(InvalidConfig { key: "network.max_duty_cycle", reason: "must be 0..=15 (duty cycle 1/2^n)".into() });
        }
        if !(1..=100).contains(&self.duty_cycle_budget_percent) {
            return Err(InvalidConfig { key: "network.duty_cycle_budget_percent", reason: "must be 1..=100".into() });
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
    fn bad_extra_channels_name_the_key() {
        for extra in [vec![868_100_000], vec![915_000_000], vec![867_100_000, 867_100_000]] {
            let c = NetworkConfig { extra_channels: extra, ..Default::default() };
            assert_eq!(c.validate().unwrap_err().key, "network.extra_channels");
        }
        let c = NetworkConfig { max_duty_cycle: Some(16), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "network.max_duty_cycle");
        let c = NetworkConfig { mac_command_max_attempts: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "network.mac_command_max_attempts");
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
    fn desired_rx_takes_the_region_defaults_where_unset() {
        use crate::mac::state::RxParams;
        use crate::region::Eu868;
        assert_eq!(NetworkConfig::default().desired_rx(&Eu868), RxParams::region_defaults(&Eu868));
        let c = NetworkConfig { rx1_delay: 3, rx1_dr_offset: 1, rx2_dr: Some(3), rx2_frequency: 869_100_000, ..Default::default() };
        assert_eq!(c.desired_rx(&Eu868), RxParams { rx1_delay: 3, rx1_dr_offset: 1, rx2_dr: 3, rx2_frequency: 869_100_000 });
    }

    #[test]
    fn out_of_range_rx1_delay_names_the_key() {
        let c = NetworkConfig { rx1_delay: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "network.rx1_delay");
    }
}
