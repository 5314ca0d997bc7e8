//! Pieces shared by the dynamic-channel regions (RP002-1.0.4 §2.6, 2.7, 2.10-2.13 and the
//! 2.4 GHz plan): they all carry extra channels in a type 0 CFList, address at most 16
//! channels with ChMaskCntl 0, and name their data rates the same way.

use std::ops::RangeInclusive;
use std::time::Duration;

use loraflow_packet_forwarder::frame;

use super::{CfListType, ChMaskBlock, Channel, DataRate, MaxPayloadSize, Modulation, Region, RegionError, SubBand};

/// How a region maps an uplink data rate and RX1DROffset to the RX1 data rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rx1Rule {
    /// Uplink DR minus the offset, never below DR0; offsets 0..=`max_offset`.
    MinusOffset { max_offset: u8 },
    /// Offsets 0..=7 with Effective_RX1DROffset = [0 1 2 3 4 5 -1 -2]; the result is at most
    /// DR5 for LoRa uplinks and at most DR7 for the FSK DR7 (IN865, RP002-1.0.4 §2.12.7).
    Effective { max_lora_dr: u8 },
}

/// A dynamic-channel band plan as data: every number comes from its region's RP002 section
/// (cited where each constant is defined).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicPlan {
    pub config_id: &'static str,
    pub common_name: &'static str,
    /// Index = DR; `None` = RFU.
    pub data_rates: &'static [Option<DataRate>],
    /// Index = DR, not repeater compatible.
    pub max_payload: &'static [Option<MaxPayloadSize>],
    /// Where channels may be placed, Hz.
    pub channel_range: (u32, u32),
    pub default_channels: &'static [u32],
    /// The usual gateway's other channels (`network.extra_channels` default).
    pub extra_channels: &'static [u32],
    /// DR range of default and extra channels.
    pub channel_drs: (u8, u8),
    pub rx1: Rx1Rule,
    pub rx2_frequency: u32,
    pub rx2_dr: u8,
    pub max_tx_power_index: u8,
    /// Downlink EIRP (dBm) where `sub_band` does not set it.
    pub downlink_eirp_dbm: i32,
    /// The duty-cycle rule covering the whole plan, if the region sets one.
    pub sub_band: Option<SubBand>,
    /// LoRa coding rate of downlinks, as Semtech writes it.
    pub downlink_code_rate: &'static str,
    /// MaxEIRP index of TxParamSetupReq where the plan implements it.
    pub tx_param_max_eirp_index: Option<u8>,
    /// Whether extra channels can be given (CFList type 0, NewChannelReq): their 24-bit
    /// frequency field in 100 Hz units ends at 1.677 GHz.
    pub extra_channels_allowed: bool,
}

impl DynamicPlan {
    fn in_range(&self, freq: u32) -> bool {
        (self.channel_range.0..=self.channel_range.1).contains(&freq)
    }

    fn channels(&self, freqs: &[u32]) -> Vec<Channel> {
        let (min_dr, max_dr) = self.channel_drs;
        freqs.iter().map(|&frequency| Channel { frequency, min_dr, max_dr }).collect()
    }
}

impl Region for DynamicPlan {
    fn config_id(&self) -> &'static str {
        self.config_id
    }

    fn common_name(&self) -> &'static str {
        self.common_name
    }

    fn data_rate(&self, dr: u8) -> Option<DataRate> {
        self.data_rates.get(usize::from(dr)).copied().flatten()
    }

    /// RX1 uses the uplink's channel in every dynamic-channel region (x.7).
    fn rx1_frequency(&self, uplink_freq: u32) -> Result<u32, RegionError> {
        if self.in_range(uplink_freq) {
            Ok(uplink_freq)
        } else {
            Err(RegionError::Frequency(uplink_freq))
        }
    }

    fn rx1_dr(&self, uplink_dr: u8, offset: u8) -> Result<u8, RegionError> {
        if offset > self.max_rx1_dr_offset() {
            return Err(RegionError::Rx1DrOffset(offset));
        }
        if !self.data_rate(uplink_dr).is_some_and(|d| d.uplink) {
            return Err(RegionError::UnknownDr(uplink_dr));
        }
        Ok(match self.rx1 {
            Rx1Rule::MinusOffset { .. } => uplink_dr.saturating_sub(offset),
            Rx1Rule::Effective { max_lora_dr } => {
                let effective: i16 = match offset {
                    6 => -1,
                    7 => -2,
                    o => i16::from(o),
                };
                let cap = if matches!(self.data_rate(uplink_dr), Some(DataRate { modulation: Modulation::Fsk { .. }, .. })) {
                    i16::from(uplink_dr)
                } else {
                    i16::from(max_lora_dr)
                };
                let dr = (i16::from(uplink_dr) - effective).clamp(0, cap) as u8;
                // IN865's table puts DR7 with offset 1 on DR6, which IN865 leaves RFU; the
                // next defined rate below is used instead.
                (0..=dr).rev().find(|d| self.data_rate(*d).is_some_and(|x| x.downlink)).unwrap_or(0)
            }
        })
    }

    fn max_rx1_dr_offset(&self) -> u8 {
        match self.rx1 {
            Rx1Rule::MinusOffset { max_offset } => max_offset,
            Rx1Rule::Effective { .. } => 7,
        }
    }

    fn default_rx2_frequency(&self) -> u32 {
        self.rx2_frequency
    }

    fn default_rx2_dr(&self) -> u8 {
        self.rx2_dr
    }

    /// RECEIVE_DELAY1 1 s, JOIN_ACCEPT_DELAY1 5 s, JOIN_ACCEPT_DELAY2 6 s in every region's
    /// default settings (x.9).
    fn default_rx1_delay(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn join_accept_delay1(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn join_accept_delay2(&self) -> Duration {
        Duration::from_secs(6)
    }

    fn max_payload_size(&self, dr: u8) -> Option<MaxPayloadSize> {
        self.max_payload.get(usize::from(dr)).copied().flatten()
    }

    fn implements_tx_param_setup(&self) -> bool {
        self.tx_param_max_eirp_index.is_some()
    }

    fn max_eirp_index(&self) -> Option<u8> {
        self.tx_param_max_eirp_index
    }

    fn downlink_modulation(&self, dr: u8) -> Option<frame::Modulation> {
        match self.data_rate(dr)?.modulation {
            Modulation::Lora { spreading_factor, bandwidth } => {
                Some(frame::Modulation::Lora { bandwidth, spreading_factor, code_rate: self.downlink_code_rate.into() })
            }
            other => other.to_frame(),
        }
    }

    fn downlink_tx_power(&self, freq: u32) -> i32 {
        self.sub_band(freq).map_or(self.downlink_eirp_dbm, |b| b.max_eirp_dbm())
    }

    /// Index 0 = Max EIRP, each step 2 dB less (x.3 TXPower tables).
    fn tx_power_offset(&self, index: u8) -> Option<i32> {
        (index <= self.max_tx_power_index).then(|| -2 * i32::from(index))
    }

    fn max_tx_power_index(&self) -> u8 {
        self.max_tx_power_index
    }

    /// The fastest LoRa data rate of the default channels.
    fn max_adr_dr(&self) -> u8 {
        let top = self.channel_drs.1;
        (0..=top).rev().find(|dr| matches!(self.data_rate(*dr), Some(DataRate { modulation: Modulation::Lora { .. }, .. }))).unwrap_or(0)
    }

    fn cf_list_type(&self) -> Option<CfListType> {
        self.extra_channels_allowed.then_some(CfListType::Frequencies)
    }

    fn cf_list(&self, extra: &[u32], _enabled: &[u8]) -> Option<[u8; 16]> {
        if !self.extra_channels_allowed {
            return None;
        }
        cf_list_frequencies(extra)
    }

    fn default_uplink_channels(&self) -> Vec<Channel> {
        self.channels(self.default_channels)
    }

    fn uplink_channels(&self) -> Vec<Channel> {
        let mut all = self.default_uplink_channels();
        all.extend(self.channels(self.extra_channels));
        all
    }

    fn default_extra_channels(&self) -> Vec<u32> {
        self.extra_channels.to_vec()
    }

    fn extra_channel_dr_range(&self) -> (u8, u8) {
        self.channel_drs
    }

    fn check_extra_channels(&self, extra: &[u32]) -> Result<(), String> {
        if !self.extra_channels_allowed && !extra.is_empty() {
            return Err(format!("{} takes no extra channels (only its default channels)", self.common_name));
        }
        check_extra_channels(self.common_name, self.channel_range.0..=self.channel_range.1, self.default_channels, extra)
    }

    fn ch_mask_blocks(&self, enabled: &[u8]) -> Vec<ChMaskBlock> {
        ch_mask_16(enabled)
    }

    fn sub_band(&self, _freq: u32) -> Option<SubBand> {
        self.sub_band
    }
}

pub(super) const fn lora(spreading_factor: u8, bandwidth: u32) -> DataRate {
    DataRate { modulation: Modulation::Lora { spreading_factor, bandwidth }, uplink: true, downlink: true }
}

pub(super) const fn fsk(bitrate: u32) -> DataRate {
    DataRate { modulation: Modulation::Fsk { bitrate }, uplink: true, downlink: true }
}

pub(super) const fn size(m: usize, n: usize) -> Option<MaxPayloadSize> {
    Some(MaxPayloadSize { m, n })
}

/// CFList type 0 (every dynamic-channel region's x.4 section): up to five 24-bit
/// frequencies in units of 100 Hz, little-endian, then CFListType 0x00.
pub(super) fn cf_list_frequencies(extra: &[u32]) -> Option<[u8; 16]> {
    if extra.is_empty() {
        return None;
    }
    let mut cf = [0u8; 16];
    for (i, f) in extra.iter().take(5).enumerate() {
        cf[i * 3..i * 3 + 3].copy_from_slice(&(f / 100).to_le_bytes()[..3]);
    }
    Some(cf)
}

/// ChMaskCntl 0: one bit per channel 0..=15 (every dynamic-channel region's x.5 section).
pub(super) fn ch_mask_16(enabled: &[u8]) -> Vec<ChMaskBlock> {
    let mask = enabled.iter().filter(|&&i| i < 16).fold(0u16, |m, &i| m | (1 << i));
    vec![ChMaskBlock { cntl: 0, mask }]
}

/// The checks `network.extra_channels` gets in a dynamic-channel region: at most five (the
/// CFList holds five), on the channel-frequency range, a multiple of 100 Hz (the CFList
/// unit), not a default channel, listed once.
pub(super) fn check_extra_channels(name: &str, range: RangeInclusive<u32>, defaults: &[u32], extra: &[u32]) -> Result<(), String> {
    if extra.len() > 5 {
        return Err(format!("at most 5 channels fit the {name} CFList, got {}", extra.len()));
    }
    for (i, f) in extra.iter().enumerate() {
        if !range.contains(f) {
            return Err(format!("{f} Hz is outside the {name} channel range ({}-{} Hz)", range.start(), range.end()));
        }
        if f % 100 != 0 {
            return Err(format!("{f} Hz is not a multiple of 100 Hz"));
        }
        if defaults.contains(f) {
            return Err(format!("{f} Hz is a default channel"));
        }
        if extra[..i].contains(f) {
            return Err(format!("{f} Hz is listed twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cf_list_encodes_100_hz_units_little_endian() {
        // 923.6 MHz = 9236000 x 100 Hz = 0x8CEE20.
        let cf = cf_list_frequencies(&[923_600_000]).unwrap();
        assert_eq!(&cf[..3], &[0x20, 0xee, 0x8c]);
        assert!(cf[3..].iter().all(|b| *b == 0));
        assert_eq!(cf_list_frequencies(&[]), None);
    }

    #[test]
    fn extra_channel_checks_name_the_problem() {
        let range = 920_000_000..=923_000_000;
        let defaults = [921_400_000];
        let cases: [(&[u32], Option<&str>); 6] = [
            (&[921_800_000], None),
            (&[919_000_000], Some("outside")),
            (&[921_800_050], Some("100 Hz")),
            (&[921_400_000], Some("default channel")),
            (&[921_800_000, 921_800_000], Some("twice")),
            (&[920_200_000, 920_400_000, 920_600_000, 920_800_000, 921_000_000, 921_200_000], Some("at most 5")),
        ];
        for (extra, err) in cases {
            let got = check_extra_channels("X", range.clone(), &defaults, extra);
            match err {
                None => assert_eq!(got, Ok(()), "{extra:?}"),
                Some(part) => assert!(got.as_ref().unwrap_err().contains(part), "{extra:?}: {got:?}"),
            }
        }
    }
}

/// Table checks the region tests share: each region's test passes its RP002 numbers.
#[cfg(test)]
pub(super) mod check {
    use super::super::{MaxPayloadSize, Modulation, Region, RegionError};

    /// DR ↔ modulation both ways; `None` = RFU.
    pub fn data_rates(r: &dyn Region, want: &[Option<Modulation>]) {
        for (dr, m) in want.iter().enumerate() {
            let dr = dr as u8;
            assert_eq!(r.data_rate(dr).map(|d| d.modulation), *m, "{} DR{dr}", r.common_name());
            if let Some(m) = m {
                assert_eq!(r.dr_for(m), Some(dr), "{} DR{dr}", r.common_name());
                assert_eq!(r.downlink_dr_for(m), Some(dr), "{} DR{dr}", r.common_name());
            }
        }
        for dr in want.len() as u8..=15 {
            assert_eq!(r.data_rate(dr), None, "{} DR{dr}", r.common_name());
        }
    }

    pub fn payloads(r: &dyn Region, want: &[Option<(usize, usize)>]) {
        for (dr, mn) in want.iter().enumerate() {
            let got = r.max_payload_size(dr as u8);
            assert_eq!(got, mn.map(|(m, n)| MaxPayloadSize { m, n }), "{} DR{dr}", r.common_name());
            assert_eq!(r.max_payload_size_for(dr as u8, true), got, "no dwell-time table in {}", r.common_name());
        }
        assert_eq!(r.max_payload_size(want.len() as u8), None);
    }

    /// Rows: uplink DRs (`None` = not an uplink DR); columns: RX1DROffset 0..
    pub fn rx1_table(r: &dyn Region, table: &[Option<&[u8]>]) {
        for (dr, row) in table.iter().enumerate() {
            let dr = dr as u8;
            match row {
                Some(row) => {
                    assert_eq!(row.len(), usize::from(r.max_rx1_dr_offset()) + 1, "{}", r.common_name());
                    for (offset, want) in row.iter().enumerate() {
                        assert_eq!(r.rx1_dr(dr, offset as u8), Ok(*want), "{} DR{dr} offset {offset}", r.common_name());
                    }
                    assert_eq!(r.rx1_dr(dr, r.max_rx1_dr_offset() + 1), Err(RegionError::Rx1DrOffset(r.max_rx1_dr_offset() + 1)));
                }
                None => assert_eq!(r.rx1_dr(dr, 0), Err(RegionError::UnknownDr(dr)), "{} DR{dr}", r.common_name()),
            }
        }
    }

    /// RX1 on the uplink frequency inside the band, an error outside.
    pub fn rx1_frequencies(r: &dyn Region, inside: &[u32], outside: &[u32]) {
        for &f in inside {
            assert_eq!(r.rx1_frequency(f), Ok(f), "{} {f} Hz", r.common_name());
        }
        for &f in outside {
            assert_eq!(r.rx1_frequency(f), Err(RegionError::Frequency(f)), "{} {f} Hz", r.common_name());
        }
    }

    pub fn tx_power(r: &dyn Region, max_index: u8) {
        for i in 0..=max_index {
            assert_eq!(r.tx_power_offset(i), Some(-2 * i32::from(i)), "{} TXPower {i}", r.common_name());
        }
        assert_eq!(r.tx_power_offset(max_index + 1), None);
        assert_eq!(r.max_tx_power_index(), max_index);
    }

    pub fn defaults(r: &dyn Region, channels: &[u32], drs: (u8, u8), rx2: (u32, u8)) {
        let got: Vec<(u32, u8, u8)> = r.default_uplink_channels().iter().map(|c| (c.frequency, c.min_dr, c.max_dr)).collect();
        let want: Vec<(u32, u8, u8)> = channels.iter().map(|&f| (f, drs.0, drs.1)).collect();
        assert_eq!(got, want, "{}", r.common_name());
        assert_eq!((r.default_rx2_frequency(), r.default_rx2_dr()), rx2, "{}", r.common_name());
        assert_eq!(r.default_rx1_delay(), std::time::Duration::from_secs(1));
        assert_eq!(r.join_accept_delay1(), std::time::Duration::from_secs(5));
        assert_eq!(r.join_accept_delay2(), std::time::Duration::from_secs(6));
        assert_eq!(r.check_extra_channels(&r.default_extra_channels()), Ok(()));
        assert_eq!(r.ch_mask_blocks(&[0, 1, 2]), vec![super::ChMaskBlock { cntl: 0, mask: 0x0007 }]);
        assert_eq!(r.ch_mask_blocks(&[0, 15]), vec![super::ChMaskBlock { cntl: 0, mask: 0x8001 }]);
    }
}
