//! Region configurations: a region (RP002 band plan) with the channel plan the gateways of
//! this server listen on. One server may run several (`[[regions]]`); each gateway belongs to
//! one, and an uplink is handled with the configuration of the gateways that heard it.
//!
//! The config structs here are what the TOML says; [`Regions::from_config`] checks them and
//! builds the runtime [`RegionConfig`]s.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::config::{frequency_list_opt, index_list_opt, InvalidConfig, NetworkConfig};
use crate::mac::state::RxParams;
use crate::region::{self, CfListType, Region};
use crate::types::Eui64;

/// One `[[regions]]` entry. Unset values come from the region (not from `[network]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegionEntry {
    /// The id gateways and events name, e.g. `eu868` or `us915_1`.
    pub id: String,
    /// Any RP002 common name (`EU868`, `US915`, `AS923-2`, …).
    #[serde(alias = "commonName")]
    pub common_name: String,
    /// Indices of the region's default uplink channels the gateways listen on; unset = the
    /// region's default (US915/AU915: sub-band 2, channels 8-15 and 65).
    #[serde(deserialize_with = "index_list_opt", skip_serializing_if = "Option::is_none")]
    pub enabled_uplink_channels: Option<Vec<u8>>,
    /// Extra uplink channels (Hz) for regions with dynamic channels; unset = the region's.
    #[serde(deserialize_with = "frequency_list_opt", skip_serializing_if = "Option::is_none")]
    pub extra_channels: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx1_delay: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx1_dr_offset: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx2_frequency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx2_dr: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downlink_tx_power: Option<i32>,
    /// 400 ms uplink / downlink dwell-time limit (AS923); unset = the region's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplink_dwell_time: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downlink_dwell_time: Option<bool>,
}

/// A region with its channel plan, ready to use.
#[derive(Debug)]
pub struct RegionConfig {
    pub id: Arc<str>,
    pub region: Box<dyn Region>,
    /// Indices of the default uplink channels the gateways listen on, ascending.
    pub enabled_uplink_channels: Vec<u8>,
    /// Extra uplink channels (Hz), sent in type-0 CFLists and NewChannelReq.
    pub extra_channels: Vec<u32>,
    /// The RX settings devices are told to use.
    pub desired_rx: RxParams,
    /// Downlink EIRP in dBm; `None` = the region's for the frequency.
    pub downlink_tx_power: Option<i32>,
}

/// LoRaWAN versions whose devices read a type-1 CFList (channel mask): LoRaWAN 1.0.3 §6.2.5
/// introduced it.
fn reads_channel_mask_cf_list(mac_version: &str) -> bool {
    let v: Vec<u32> = mac_version.trim().split('.').map(|p| p.parse().unwrap_or(0)).collect();
    let (major, minor, patch) = (v.first().copied().unwrap_or(0), v.get(1).copied().unwrap_or(0), v.get(2).copied().unwrap_or(0));
    (major, minor, patch) >= (1, 0, 3)
}

impl RegionConfig {
    pub fn common_name(&self) -> &'static str {
        self.region.common_name()
    }

    /// True for regions whose devices get their channels as a mask (US915, AU915, CN470).
    pub fn has_fixed_channels(&self) -> bool {
        self.region.cf_list_type() == Some(CfListType::ChannelMask)
    }

    /// Whether an uplink on `freq` (Hz) is on a channel this configuration listens on: an
    /// enabled default channel or an extra channel.
    pub fn accepts_uplink(&self, freq: u32) -> bool {
        match self.region.uplink_channel_index(freq) {
            Some(i) => self.enabled_uplink_channels.contains(&i),
            None => self.extra_channels.contains(&freq),
        }
    }

    /// The CFList of a join-accept for a device of this LoRaWAN version: type 0 carries the
    /// extra channels, type 1 the enabled channels' mask (only for LoRaWAN 1.0.3 and later;
    /// older devices get none and are confined with LinkADRReq instead).
    pub fn cf_list(&self, mac_version: &str) -> Option<[u8; 16]> {
        match self.region.cf_list_type()? {
            CfListType::Frequencies => self.region.cf_list(&self.extra_channels, &[]),
            CfListType::ChannelMask if reads_channel_mask_cf_list(mac_version) => self.region.cf_list(&[], &self.enabled_uplink_channels),
            CfListType::ChannelMask => None,
        }
    }

    /// Downlink power (dBm EIRP) on `freq`.
    pub fn downlink_tx_power(&self, freq: u32) -> i32 {
        self.downlink_tx_power.unwrap_or_else(|| self.region.downlink_tx_power(freq))
    }

    /// The channels a device of a fixed-channel region should have enabled; `None` for regions
    /// whose channels are managed with NewChannelReq.
    pub fn confined_channels(&self) -> Option<&[u8]> {
        self.has_fixed_channels().then_some(self.enabled_uplink_channels.as_slice())
    }
}

/// The id ChirpStack gives a one-sub-band US915/AU915 plan (`us915_1` = channels 8-15 and
/// 65); the region's id for any other plan.
fn default_id(region: &dyn Region, enabled: &[u8]) -> String {
    let base = region.config_id().to_string();
    if region.default_uplink_channels().len() == 72 && enabled.len() == 9 {
        let n = enabled[8].wrapping_sub(64);
        let expected: Vec<u8> = (8 * n..8 * n + 8).chain([64 + n]).collect();
        if n < 8 && enabled == expected.as_slice() {
            return format!("{base}_{n}");
        }
    }
    base
}

/// The region for a common name and optional dwell-time settings (unset ones keep the
/// region's RP002 default).
fn build_region(name: &str, uplink_dwell: Option<bool>, downlink_dwell: Option<bool>) -> Result<Box<dyn Region>, String> {
    let region =
        region::region_by_name(name).ok_or_else(|| format!("unknown region {name:?} (use an RP002 common name such as EU868 or US915)"))?;
    if uplink_dwell.is_none() && downlink_dwell.is_none() {
        return Ok(region);
    }
    let default = region.dwell_time();
    let dwell_time =
        region::DwellTime { uplink: uplink_dwell.unwrap_or(default.uplink), downlink: downlink_dwell.unwrap_or(default.downlink) };
    region::region_with(name, &region::RegionOptions { dwell_time: Some(dwell_time) })
}

/// Settings of one entry after the `[network]` fallbacks, before checking.
struct Draft<'a> {
    key: String,
    id: Option<&'a str>,
    common_name: &'a str,
    enabled: Option<&'a [u8]>,
    extra: Option<&'a [u32]>,
    rx1_delay: u8,
    rx1_dr_offset: u8,
    rx2_frequency: Option<u32>,
    rx2_dr: Option<u8>,
    downlink_tx_power: Option<i32>,
    uplink_dwell_time: Option<bool>,
    downlink_dwell_time: Option<bool>,
}

fn invalid(key: &str, field: &str, reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig { key: format!("{key}{field}"), reason: reason.into() }
}

fn build(d: Draft) -> Result<RegionConfig, InvalidConfig> {
    let k = d.key.as_str();
    let name_key = if k == "network." { "region" } else { "common_name" };
    let region = build_region(d.common_name, d.uplink_dwell_time, d.downlink_dwell_time).map_err(|r| {
        let field = match (d.uplink_dwell_time, d.downlink_dwell_time) {
            (Some(_), _) => "uplink_dwell_time",
            (None, Some(_)) => "downlink_dwell_time",
            (None, None) => name_key,
        };
        invalid(k, if region::region_by_name(d.common_name).is_none() { name_key } else { field }, r)
    })?;
    let count = region.default_uplink_channels().len();
    let mut enabled = match d.enabled {
        Some(e) => e.to_vec(),
        None => region.default_enabled_uplink_channels(),
    };
    if let Some(bad) = enabled.iter().find(|i| usize::from(**i) >= count) {
        return Err(invalid(k, "enabled_uplink_channels", format!("{} has channels 0..={}, not {bad}", region.common_name(), count - 1)));
    }
    enabled.sort_unstable();
    enabled.dedup();
    if enabled.is_empty() {
        return Err(invalid(k, "enabled_uplink_channels", "at least one channel must be enabled"));
    }
    let extra = match d.extra {
        Some(e) => e.to_vec(),
        None => region.default_extra_channels(),
    };
    region.check_extra_channels(&extra).map_err(|r| invalid(k, "extra_channels", r))?;
    if !(1..=15).contains(&d.rx1_delay) {
        return Err(invalid(k, "rx1_delay", "must be 1..=15 seconds"));
    }
    if d.rx1_dr_offset > region.max_rx1_dr_offset() {
        return Err(invalid(k, "rx1_dr_offset", format!("must be 0..={} in {}", region.max_rx1_dr_offset(), region.common_name())));
    }
    if let Some(dr) = d.rx2_dr {
        if !region.data_rate(dr).is_some_and(|r| r.downlink) {
            return Err(invalid(k, "rx2_dr", format!("DR{dr} is not a downlink data rate of {}", region.common_name())));
        }
    }
    let desired_rx = RxParams {
        rx1_delay: d.rx1_delay,
        rx1_dr_offset: d.rx1_dr_offset,
        rx2_dr: d.rx2_dr.unwrap_or_else(|| region.default_rx2_dr()),
        rx2_frequency: d.rx2_frequency.filter(|f| *f != 0).unwrap_or_else(|| region.default_rx2_frequency()),
    };
    let id = match d.id {
        Some(id) => id.trim().to_string(),
        None => default_id(region.as_ref(), &enabled),
    };
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(invalid(k, "id", format!("{id:?} must be non-empty letters, digits, '_' or '-'")));
    }
    Ok(RegionConfig {
        id: id.into(),
        region,
        enabled_uplink_channels: enabled,
        extra_channels: extra,
        desired_rx,
        downlink_tx_power: d.downlink_tx_power,
    })
}

/// The region configurations of a server, in configured order; the first one is the default
/// for gateways that do not name one.
#[derive(Debug, Clone)]
pub struct Regions {
    list: Arc<Vec<Arc<RegionConfig>>>,
}

impl Regions {
    /// From `[[regions]]`, or one configuration from `network.*` when there are none.
    pub fn from_config(network: &NetworkConfig, entries: &[RegionEntry]) -> Result<Regions, InvalidConfig> {
        let mut list: Vec<Arc<RegionConfig>> = Vec::new();
        if entries.is_empty() {
            list.push(Arc::new(build(Draft {
                key: "network.".into(),
                id: None,
                common_name: &network.region,
                enabled: network.enabled_uplink_channels.as_deref(),
                extra: network.extra_channels.as_deref(),
                rx1_delay: network.rx1_delay,
                rx1_dr_offset: network.rx1_dr_offset,
                rx2_frequency: Some(network.rx2_frequency),
                rx2_dr: network.rx2_dr,
                downlink_tx_power: network.downlink_tx_power,
                uplink_dwell_time: None,
                downlink_dwell_time: None,
            })?));
        }
        for (i, e) in entries.iter().enumerate() {
            let key = format!("regions[{i}].");
            if e.id.trim().is_empty() {
                return Err(invalid(&key, "id", "is required"));
            }
            if e.common_name.trim().is_empty() {
                return Err(invalid(&key, "common_name", "is required"));
            }
            let rc = build(Draft {
                key: key.clone(),
                id: Some(&e.id),
                common_name: &e.common_name,
                enabled: e.enabled_uplink_channels.as_deref(),
                extra: e.extra_channels.as_deref(),
                rx1_delay: e.rx1_delay.unwrap_or(network.rx1_delay),
                rx1_dr_offset: e.rx1_dr_offset.unwrap_or(network.rx1_dr_offset),
                rx2_frequency: e.rx2_frequency,
                rx2_dr: e.rx2_dr,
                downlink_tx_power: e.downlink_tx_power,
                uplink_dwell_time: e.uplink_dwell_time,
                downlink_dwell_time: e.downlink_dwell_time,
            })?;
            if list.iter().any(|o| o.id == rc.id) {
                return Err(invalid(&key, "id", format!("{:?} is used by an earlier entry", e.id)));
            }
            list.push(Arc::new(rc));
        }
        Ok(Regions { list: Arc::new(list) })
    }

    /// One configuration with the region's defaults (tests, tools).
    pub fn single(common_name: &str) -> Regions {
        let network = NetworkConfig { region: common_name.into(), ..NetworkConfig::default() };
        Regions::from_config(&network, &[]).expect("a known region with its defaults is valid")
    }

    /// The default configuration.
    pub fn first(&self) -> &Arc<RegionConfig> {
        &self.list[0]
    }

    pub fn get(&self, id: &str) -> Option<&Arc<RegionConfig>> {
        self.list.iter().find(|r| &*r.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<RegionConfig>> {
        self.list.iter()
    }

    /// The configuration whose region has this common name (any spelling), for a device
    /// profile's `region`; the first such.
    pub fn by_common_name(&self, name: &str) -> Option<&Arc<RegionConfig>> {
        let wanted = region::region_by_name(name)?.config_id();
        self.list.iter().find(|r| r.region.config_id() == wanted)
    }
}

/// Which region configuration each registered gateway belongs to. Shared by the REST API
/// (which changes it) and the network server (which reads it for every uplink); gateways
/// not in the map belong to the first configuration.
#[derive(Debug, Clone, Default)]
pub struct GatewayRegions {
    inner: Arc<RwLock<HashMap<Eui64, Arc<str>>>>,
}

impl GatewayRegions {
    pub fn set(&self, gateway: Eui64, region_config_id: &str) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).insert(gateway, region_config_id.into());
    }

    pub fn remove(&self, gateway: Eui64) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).remove(&gateway);
    }

    pub fn replace_all(&self, all: impl IntoIterator<Item = (Eui64, String)>) {
        let fresh = all.into_iter().map(|(g, id)| (g, Arc::<str>::from(id))).collect();
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    pub fn get(&self, gateway: Eui64) -> Option<Arc<str>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).get(&gateway).cloned()
    }

    /// The configuration of a gateway: its own, or the first for gateways without one (and
    /// for ids no longer configured).
    pub fn config_of<'a>(&self, regions: &'a Regions, gateway: Eui64) -> &'a Arc<RegionConfig> {
        self.get(gateway).and_then(|id| regions.get(&id)).unwrap_or_else(|| regions.first())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(region: &str) -> NetworkConfig {
        NetworkConfig { region: region.into(), ..NetworkConfig::default() }
    }

    #[test]
    fn the_default_is_one_eu868_config_with_its_extra_channels() {
        let r = Regions::from_config(&NetworkConfig::default(), &[]).unwrap();
        let eu = r.first();
        assert_eq!(&*eu.id, "eu868");
        assert_eq!(eu.common_name(), "EU868");
        assert_eq!(eu.enabled_uplink_channels, vec![0, 1, 2]);
        assert_eq!(eu.extra_channels, vec![867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000]);
        assert_eq!(eu.desired_rx, RxParams::region_defaults(&region::Eu868));
        assert!(!eu.has_fixed_channels());
        assert_eq!(eu.confined_channels(), None);
    }

    #[test]
    fn eu868_accepts_default_and_extra_channels_only() {
        let r = Regions::single("EU868");
        let eu = r.first();
        for f in [868_100_000, 868_300_000, 868_500_000, 867_100_000, 867_900_000] {
            assert!(eu.accepts_uplink(f), "{f}");
        }
        for f in [868_800_000, 869_525_000, 915_200_000] {
            assert!(!eu.accepts_uplink(f), "{f}");
        }
        let only_two = Regions::from_config(
            &NetworkConfig { enabled_uplink_channels: Some(vec![0, 1]), extra_channels: Some(vec![]), ..NetworkConfig::default() },
            &[],
        )
        .unwrap();
        assert!(only_two.first().accepts_uplink(868_300_000));
        assert!(!only_two.first().accepts_uplink(868_500_000));
        assert!(!only_two.first().accepts_uplink(867_100_000));
    }

    #[test]
    fn eu868_cf_list_carries_the_extra_channels_for_every_version() {
        let r = Regions::single("EU868");
        for v in ["1.0.0", "1.0.2", "1.0.3", "1.0.4"] {
            let cf = r.first().cf_list(v).unwrap();
            assert_eq!(cf[15], 0, "CFList type 0");
            assert_eq!(&cf[0..3], &[0x18, 0x4f, 0x84], "867.1 MHz / 100 Hz, little endian");
        }
        let none = Regions::from_config(&NetworkConfig { extra_channels: Some(vec![]), ..NetworkConfig::default() }, &[]).unwrap();
        assert_eq!(none.first().cf_list("1.0.3"), None);
    }

    #[test]
    fn mac_versions_from_1_0_3_read_a_channel_mask() {
        for (v, reads) in [("1.0.0", false), ("1.0.1", false), ("1.0.2", false), ("1.0.3", true), ("1.0.4", true), ("1.1.0", true)] {
            assert_eq!(reads_channel_mask_cf_list(v), reads, "{v}");
        }
    }

    #[test]
    fn default_ids_name_a_single_sub_band() {
        assert_eq!(default_id(&region::Eu868, &[0, 1, 2]), "eu868");
        let sb = |n: u8| -> Vec<u8> { (8 * n..8 * n + 8).chain([64 + n]).collect() };
        assert_eq!(default_id(&region::Us915, &sb(0)), "us915_0");
        assert_eq!(default_id(&region::Us915, &sb(1)), "us915_1");
        assert_eq!(default_id(&region::Au915, &sb(7)), "au915_7");
        assert_eq!(default_id(&region::Us915, &(0..72).collect::<Vec<u8>>()), "us915");
        assert_eq!(default_id(&region::Us915, &sb(1)[..8]), "us915");
    }

    #[test]
    fn network_region_us915_alone_gives_sub_band_2_without_extra_channels() {
        let r = Regions::single("US915");
        let us = r.first();
        assert_eq!(&*us.id, "us915_1");
        assert_eq!(us.common_name(), "US915");
        assert_eq!(us.enabled_uplink_channels, vec![8, 9, 10, 11, 12, 13, 14, 15, 65]);
        assert!(us.extra_channels.is_empty());
        assert!(us.has_fixed_channels());
        assert_eq!(us.confined_channels(), Some(&[8, 9, 10, 11, 12, 13, 14, 15, 65][..]));
        // Channel 8 = 903.9 MHz, 15 = 905.3 MHz, 65 = 904.6 MHz (RP002-1.0.4 §2.5.2).
        for f in [903_900_000, 905_300_000, 904_600_000] {
            assert!(us.accepts_uplink(f), "{f}");
        }
        for f in [902_300_000, 905_500_000, 903_000_000, 868_100_000] {
            assert!(!us.accepts_uplink(f), "{f}");
        }
        let au = Regions::single("AU915");
        assert_eq!(&*au.first().id, "au915_1");
    }

    #[test]
    fn us915_cf_list_is_the_channel_mask_for_1_0_3_and_later_only() {
        let r = Regions::single("US915");
        for v in ["1.0.0", "1.0.1", "1.0.2"] {
            assert_eq!(r.first().cf_list(v), None, "{v}");
        }
        let cf = r.first().cf_list("1.0.3").unwrap();
        // ChMask0 (channels 0-15): 8-15 on; ChMask4 (64-71): 65 on; CFListType 1.
        assert_eq!(cf, [0x00, 0xff, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0, 0, 0, 0, 0, 1]);
        assert_eq!(r.first().cf_list("1.0.4"), Some(cf));
    }

    #[test]
    fn dwell_time_settings_reach_the_region() {
        let entry = |up: Option<bool>, down: Option<bool>| RegionEntry {
            id: "as".into(),
            common_name: "AS923".into(),
            uplink_dwell_time: up,
            downlink_dwell_time: down,
            ..Default::default()
        };
        let n = NetworkConfig::default();
        let on = Regions::from_config(&n, &[entry(Some(true), Some(true))]).unwrap();
        let off = Regions::from_config(&n, &[entry(Some(false), Some(false))]).unwrap();
        assert_eq!(on.first().region.dwell_time(), region::DwellTime { uplink: true, downlink: true });
        assert_eq!(off.first().region.dwell_time(), region::DwellTime { uplink: false, downlink: false });
        // Downlink payloads at DR2 are limited with dwell time on (RP002-1.0.4 §2.8.6: 11 vs 115 bytes).
        assert!(on.first().region.max_payload_size(2).unwrap().n < off.first().region.max_payload_size(2).unwrap().n);
    }

    #[test]
    fn bad_entries_name_their_key() {
        let n = NetworkConfig::default();
        let eu = |id: &str| RegionEntry { id: id.into(), common_name: "EU868".into(), ..Default::default() };
        let cases: Vec<(Vec<RegionEntry>, &str)> = vec![
            (vec![RegionEntry { common_name: "XX999".into(), ..eu("a") }], "regions[0].common_name"),
            (vec![eu("a"), eu("a")], "regions[1].id"),
            (vec![eu("")], "regions[0].id"),
            (vec![eu("a b")], "regions[0].id"),
            (vec![RegionEntry { enabled_uplink_channels: Some(vec![3]), ..eu("a") }], "regions[0].enabled_uplink_channels"),
            (vec![RegionEntry { enabled_uplink_channels: Some(vec![]), ..eu("a") }], "regions[0].enabled_uplink_channels"),
            (vec![eu("a"), RegionEntry { extra_channels: Some(vec![915_000_000]), ..eu("b") }], "regions[1].extra_channels"),
            (vec![RegionEntry { rx2_dr: Some(9), ..eu("a") }], "regions[0].rx2_dr"),
            (vec![RegionEntry { rx1_dr_offset: Some(7), ..eu("a") }], "regions[0].rx1_dr_offset"),
            (vec![RegionEntry { uplink_dwell_time: Some(true), ..eu("a") }], "regions[0].uplink_dwell_time"),
            (vec![RegionEntry { downlink_dwell_time: Some(false), ..eu("a") }], "regions[0].downlink_dwell_time"),
            (
                vec![RegionEntry { common_name: "US915".into(), enabled_uplink_channels: Some(vec![72]), ..eu("a") }],
                "regions[0].enabled_uplink_channels",
            ),
            (
                vec![RegionEntry { common_name: "US915".into(), extra_channels: Some(vec![923_300_000]), ..eu("a") }],
                "regions[0].extra_channels",
            ),
        ];
        for (entries, key) in cases {
            let e = Regions::from_config(&n, &entries).unwrap_err();
            assert_eq!(e.key, key, "{entries:?}: {e}");
        }
        let e = Regions::from_config(&network("XX999"), &[]).unwrap_err();
        assert_eq!(e.key, "network.region");
        let e = Regions::from_config(&NetworkConfig { enabled_uplink_channels: Some(vec![0, 9]), ..n.clone() }, &[]).unwrap_err();
        assert_eq!(e.key, "network.enabled_uplink_channels");
    }

    #[test]
    fn entries_keep_their_order_and_ids_and_take_region_defaults() {
        let entries = vec![
            RegionEntry { id: "eu_a".into(), common_name: "eu868".into(), rx2_dr: Some(3), ..Default::default() },
            RegionEntry { id: "eu_b".into(), common_name: "EU863-870".into(), extra_channels: Some(vec![]), ..Default::default() },
        ];
        let r = Regions::from_config(&NetworkConfig::default(), &entries).unwrap();
        let ids: Vec<&str> = r.iter().map(|c| &*c.id).collect();
        assert_eq!(ids, ["eu_a", "eu_b"]);
        assert_eq!(&*r.first().id, "eu_a");
        assert_eq!(r.get("eu_a").unwrap().desired_rx.rx2_dr, 3);
        assert!(r.get("eu_b").unwrap().extra_channels.is_empty());
        assert!(r.get("eu868").is_none());
        assert_eq!(&*r.by_common_name("EU868").unwrap().id, "eu_a");
        assert!(r.by_common_name("US915").is_none());
    }

    #[test]
    fn gateways_without_a_config_get_the_first() {
        let entries = vec![
            RegionEntry { id: "a".into(), common_name: "EU868".into(), ..Default::default() },
            RegionEntry { id: "b".into(), common_name: "EU868".into(), ..Default::default() },
        ];
        let r = Regions::from_config(&NetworkConfig::default(), &entries).unwrap();
        let g = GatewayRegions::default();
        let (one, two) = (Eui64::from_u64(1), Eui64::from_u64(2));
        g.set(one, "b");
        assert_eq!(&*g.config_of(&r, one).id, "b");
        assert_eq!(&*g.config_of(&r, two).id, "a");
        g.set(two, "gone");
        assert_eq!(&*g.config_of(&r, two).id, "a");
        g.replace_all([(two, "b".to_string())]);
        assert_eq!(&*g.config_of(&r, one).id, "a");
        assert_eq!(&*g.config_of(&r, two).id, "b");
    }
}
