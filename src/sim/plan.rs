//! Which region and which uplink channels a simulation uses, from the id given to `--region`.
//!
//! The ids are ChirpStack's region configuration ids: `eu868`, `as923_2`, … name a region, and
//! for fixed-channel regions a numeric suffix names a sub-band counted from 0: `us915_0` is
//! sub-band 1 (channels 0-7 and 64), `us915_1` sub-band 2 (channels 8-15 and 65), and so on;
//! `cn470_3` is channels 24-31. Common names (`US915`, `EU863-870`) work too and give the
//! region's usual gateway plan. Pure, so that it works without asking the server.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;

use loraflow_network_server::region::{region_by_name, CfListType, Modulation, Region};

/// How LinkADRReq's ChMaskCntl addresses a region's channels (LoRaWAN 1.0.4 §5.3 with the
/// region's RP002-1.0.4 LinkAdrReq section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskLayout {
    /// Up to 16 channels, most of them defined by CFList or NewChannelReq (EU868, AS923, …):
    /// ChMaskCntl 0 = the mask of channels 0-15, 6 = every defined channel on.
    Dynamic,
    /// 64 channels of 125 kHz and 8 of 500 kHz (US915, AU915): ChMaskCntl 0-3 = 16 channels
    /// each, 4 = channels 64-71, 5 = banks of 8+1, 6/7 = all 125 kHz on/off and the mask for
    /// 64-71.
    Fixed72,
    /// Another fixed plan of `n` 125 kHz channels (CN470): ChMaskCntl k = channels 16k..16k+15,
    /// 6 = all on.
    Fixed(u8),
}

impl MaskLayout {
    pub fn of(region: &dyn Region) -> MaskLayout {
        let n = region.default_uplink_channels().len();
        match region.cf_list_type() {
            Some(CfListType::ChannelMask) if n == 72 => MaskLayout::Fixed72,
            Some(CfListType::ChannelMask) => MaskLayout::Fixed(n.min(128) as u8),
            _ => MaskLayout::Dynamic,
        }
    }

    pub fn is_fixed(self) -> bool {
        !matches!(self, MaskLayout::Dynamic)
    }
}

/// The region of a simulation and the uplink channels its devices start with.
#[derive(Clone)]
pub struct RadioPlan {
    /// What `--region` said, trimmed and lowercase.
    pub id: String,
    pub region: Arc<dyn Region>,
    /// Channel indices into `default_uplink_channels` (and, for dynamic regions, what the
    /// CFList adds) the devices use before the network says otherwise.
    pub enabled: Vec<u8>,
    pub layout: MaskLayout,
}

impl fmt::Debug for RadioPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RadioPlan")
            .field("id", &self.id)
            .field("region", &self.region.common_name())
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl Default for RadioPlan {
    /// EU868 with its three default channels: what the simulator did before regions.
    fn default() -> Self {
        RadioPlan::from_id("eu868").expect("EU868 is always available")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown region {0:?} (e.g. eu868, us915_1, au915_0, as923_2, US915)")]
    UnknownRegion(String),
    #[error("{region} has no sub-band {index} (ids {region}_0 to {region}_{max})")]
    NoSuchSubBand { region: String, index: u32, max: u32 },
}

impl RadioPlan {
    /// The plan for a `--region` id or common name.
    pub fn from_id(id: &str) -> Result<RadioPlan, PlanError> {
        let id = id.trim().to_ascii_lowercase();
        // A fixed-channel region with a sub-band suffix: "us915_1", "cn470_3".
        if let Some((name, n)) = id.rsplit_once('_') {
            if let (Some(region), Ok(index)) = (region_by_name(name), n.parse::<u32>()) {
                let layout = MaskLayout::of(region.as_ref());
                if layout.is_fixed() {
                    let channels = region.default_uplink_channels().len();
                    let wide = layout == MaskLayout::Fixed72;
                    let enabled = sub_band_channels(channels, wide, index).ok_or_else(|| PlanError::NoSuchSubBand {
                        region: name.to_string(),
                        index,
                        max: sub_band_count(channels, wide).saturating_sub(1),
                    })?;
                    return Ok(RadioPlan { id, region: Arc::from(region), enabled, layout });
                }
            }
        }
        let region = region_by_name(&id).ok_or_else(|| PlanError::UnknownRegion(id.clone()))?;
        let layout = MaskLayout::of(region.as_ref());
        let enabled = region.default_enabled_uplink_channels();
        Ok(RadioPlan { id, region: Arc::from(region), enabled, layout })
    }

    pub fn common_name(&self) -> &'static str {
        self.region.common_name()
    }

    /// The bit mask of [`RadioPlan::enabled`].
    pub fn enabled_mask(&self) -> u128 {
        self.enabled.iter().filter(|&&i| i < 128).fold(0, |m, &i| m | 1u128 << i)
    }

    /// Frequencies (Hz) of the enabled channels a gateway of this plan listens to, by index.
    pub fn enabled_frequencies(&self) -> Vec<(u8, u32)> {
        let channels = self.region.default_uplink_channels();
        let mut out: Vec<(u8, u32)> = self.enabled.iter().filter_map(|&i| channels.get(usize::from(i)).map(|c| (i, c.frequency))).collect();
        if !self.layout.is_fixed() {
            let n = channels.len() as u8;
            out.extend(self.region.default_extra_channels().into_iter().enumerate().map(|(k, f)| (n + k as u8, f)));
        }
        out
    }

    /// The band a device may be told to use (RxParamSetupReq, NewChannelReq, DlChannelReq).
    pub fn band(&self) -> RangeInclusive<u32> {
        band_of(self.region.config_id()).unwrap_or_else(|| {
            // A region this table does not know yet: the span of its own channels.
            let mut fs: Vec<u32> = self.region.default_uplink_channels().iter().map(|c| c.frequency).collect();
            fs.push(self.region.default_rx2_frequency());
            let lo = fs.iter().copied().min().unwrap_or(0);
            let hi = fs.iter().copied().max().unwrap_or(u32::MAX);
            lo.saturating_sub(1_000_000)..=hi.saturating_add(1_000_000)
        })
    }

    /// The highest uplink data rate a LoRa or FSK device can use in this region (LR-FHSS is
    /// not simulated).
    pub fn max_uplink_dr(&self) -> u8 {
        (0..=15).filter(|&dr| self.is_uplink_dr(dr)).max().unwrap_or(0)
    }

    /// Whether `dr` is an uplink LoRa or FSK data rate of the region.
    pub fn is_uplink_dr(&self, dr: u8) -> bool {
        self.region.data_rate(dr).is_some_and(|d| d.uplink && !matches!(d.modulation, Modulation::LrFhss { .. }))
    }
}

/// How many 8-channel sub-bands a fixed plan of `channels` channels has.
fn sub_band_count(channels: usize, with_500khz: bool) -> u32 {
    (if with_500khz { 64 } else { channels } / 8) as u32
}

/// The channels of sub-band `index` (from 0) of a fixed plan with `channels` channels: eight
/// 125 kHz channels `8·index..8·index+7`, plus the 500 kHz channel `64+index` when the plan
/// has them (`with_500khz`, US915/AU915: 64 + 8 channels).
pub fn sub_band_channels(channels: usize, with_500khz: bool, index: u32) -> Option<Vec<u8>> {
    let narrow = if with_500khz { 64 } else { channels };
    let first = index.checked_mul(8)? as usize;
    if first + 8 > narrow {
        return None;
    }
    let mut out: Vec<u8> = (first..first + 8).map(|c| c as u8).collect();
    if with_500khz {
        out.push(64 + index as u8);
    }
    Some(out)
}

/// Band edges (Hz) by region config id, RP002-1.0.4 §2.x.1 of each region.
fn band_of(config_id: &str) -> Option<RangeInclusive<u32>> {
    let prefix = config_id.split('_').next().unwrap_or(config_id);
    Some(match prefix {
        "eu868" => 863_000_000..=870_000_000,
        "us915" => 902_000_000..=928_000_000,
        "au915" => 915_000_000..=928_000_000,
        "cn470" => 470_000_000..=510_000_000,
        "as923" => 915_000_000..=928_000_000,
        "kr920" => 920_900_000..=923_300_000,
        "in865" => 865_000_000..=867_000_000,
        "ru864" => 864_000_000..=870_000_000,
        "cn779" => 779_000_000..=787_000_000,
        "eu433" => 433_175_000..=434_665_000,
        "ism2400" => 2_400_000_000..=2_500_000_000,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_bands_of_a_72_channel_plan_are_eight_narrow_channels_and_one_wide() {
        // (sub-band index as in the id, expected channels): us915_0 = sub-band 1, …
        let table: [(u32, Option<Vec<u8>>); 4] = [
            (0, Some(vec![0, 1, 2, 3, 4, 5, 6, 7, 64])),
            (1, Some(vec![8, 9, 10, 11, 12, 13, 14, 15, 65])),
            (7, Some(vec![56, 57, 58, 59, 60, 61, 62, 63, 71])),
            (8, None),
        ];
        for (index, want) in table {
            assert_eq!(sub_band_channels(72, true, index), want, "sub-band {index}");
        }
    }

    #[test]
    fn sub_bands_of_a_narrow_only_plan_are_eight_channels() {
        assert_eq!(sub_band_channels(96, false, 3), Some((24..32).collect()));
        assert_eq!(sub_band_channels(96, false, 11), Some((88..96).collect()));
        assert_eq!(sub_band_channels(96, false, 12), None);
        assert_eq!(sub_band_channels(72, true, u32::MAX), None);
    }

    #[test]
    fn eu868_by_id_or_name_has_its_three_default_channels() {
        for id in ["eu868", "EU868", " EU863-870 "] {
            let p = RadioPlan::from_id(id).unwrap();
            assert_eq!((p.region.config_id(), p.enabled.as_slice(), p.layout), ("eu868", &[0u8, 1, 2][..], MaskLayout::Dynamic), "{id}");
            assert_eq!(p.enabled_mask(), 0b111);
        }
        let p = RadioPlan::default();
        assert_eq!(p.band(), 863_000_000..=870_000_000);
        assert_eq!(p.max_uplink_dr(), 7, "DR8-11 are LR-FHSS");
        let f: Vec<u32> = p.enabled_frequencies().into_iter().map(|(_, f)| f).collect();
        assert_eq!(f, [868_100_000, 868_300_000, 868_500_000, 867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000]);
    }

    #[test]
    fn unknown_ids_and_sub_bands_of_dynamic_regions_are_refused() {
        assert!(matches!(RadioPlan::from_id("mars433"), Err(PlanError::UnknownRegion(_))));
        assert!(matches!(RadioPlan::from_id("eu868_1"), Err(PlanError::UnknownRegion(_))), "EU868 has no sub-bands");
        assert!(matches!(RadioPlan::from_id(""), Err(PlanError::UnknownRegion(_))));
    }

    /// Runs once the US915 table exists in the network server (branch regions-fixed).
    #[test]
    fn us915_ids_name_chirpstack_sub_bands() {
        let Some(_) = region_by_name("US915") else { return };
        let table: [(&str, Vec<u8>); 3] = [
            ("us915_0", vec![0, 1, 2, 3, 4, 5, 6, 7, 64]),
            ("us915_1", vec![8, 9, 10, 11, 12, 13, 14, 15, 65]),
            ("US915", vec![8, 9, 10, 11, 12, 13, 14, 15, 65]),
        ];
        for (id, want) in table {
            let p = RadioPlan::from_id(id).unwrap();
            assert_eq!((p.region.common_name(), p.layout, &p.enabled), ("US915", MaskLayout::Fixed72, &want), "{id}");
        }
        assert_eq!(RadioPlan::from_id("us915_8").unwrap_err(), PlanError::NoSuchSubBand { region: "us915".into(), index: 8, max: 7 });
        let p = RadioPlan::from_id("us915_1").unwrap();
        let f = p.enabled_frequencies();
        assert_eq!(f.first(), Some(&(8, 903_900_000)));
        assert_eq!(f.last(), Some(&(65, 904_600_000)));
        assert_eq!(p.max_uplink_dr(), 4, "DR4 = SF8BW500; DR5-6 are LR-FHSS");
    }

    #[test]
    fn au915_cn470_and_as923_ids() {
        let p = RadioPlan::from_id("au915_1").unwrap();
        assert_eq!(
            (p.common_name(), p.layout, p.enabled.as_slice()),
            ("AU915", MaskLayout::Fixed72, &[8u8, 9, 10, 11, 12, 13, 14, 15, 65][..])
        );
        let f: Vec<u32> = p.enabled_frequencies().into_iter().map(|(_, f)| f).collect();
        assert_eq!(f.first().copied(), Some(916_800_000), "915.2 + 0.2 × 8 MHz");
        assert_eq!(f.last().copied(), Some(917_500_000), "915.9 + 1.6 × 1 MHz");
        let p = RadioPlan::from_id("cn470_1").unwrap();
        assert_eq!((p.common_name(), p.layout, p.enabled.clone()), ("CN470", MaskLayout::Fixed(96), (8..16).collect::<Vec<u8>>()));
        assert!(matches!(RadioPlan::from_id("cn470_12"), Err(PlanError::NoSuchSubBand { max: 11, .. })));
        // "_2" is part of the AS923-2 name, not a sub-band.
        let p = RadioPlan::from_id("as923_2").unwrap();
        assert_eq!((p.region.config_id(), p.layout), ("as923_2", MaskLayout::Dynamic));
        assert_eq!(p.band(), 915_000_000..=928_000_000);
    }
}
