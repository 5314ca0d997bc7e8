//! AS923 (RP002-1.0.4 §2.10): one band plan, shifted per country group by
//! AS923_FREQ_OFFSET, with 400 ms dwell-time limits set by TxParamSetupReq.

use std::time::Duration;

use super::dynamic::{cf_list_frequencies, ch_mask_16, check_extra_channels, fsk, lora, size};
use super::{CfListType, ChMaskBlock, Channel, DataRate, DwellTime, MaxPayloadSize, Region, RegionError, SubBand};

/// The AS923 country groups (RP002-1.0.4 §2.10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum As923Variant {
    /// AS923-1, AS923_FREQ_OFFSET 0.
    As923_1,
    /// AS923-2, -1.80 MHz.
    As923_2,
    /// AS923-3, -6.60 MHz.
    As923_3,
    /// AS923-4, -5.90 MHz.
    As923_4,
}

impl As923Variant {
    pub const ALL: [As923Variant; 4] = [As923Variant::As923_1, As923Variant::As923_2, As923Variant::As923_3, As923Variant::As923_4];

    /// AS923_FREQ_OFFSET in Hz, subtracted from the AS923-1 frequencies (RP002-1.0.4 §2.10.2).
    pub const fn frequency_offset(self) -> u32 {
        match self {
            As923Variant::As923_1 => 0,
            As923Variant::As923_2 => 1_800_000,
            As923Variant::As923_3 => 6_600_000,
            As923Variant::As923_4 => 5_900_000,
        }
    }

    /// Frequency range the variant's channels lie in (RP002-1.0.4 §2.10.2).
    const fn band(self) -> (u32, u32) {
        match self {
            As923Variant::As923_1 => (915_000_000, 928_000_000),
            As923Variant::As923_2 => (920_000_000, 923_000_000),
            As923Variant::As923_3 => (915_000_000, 921_000_000),
            As923Variant::As923_4 => (917_000_000, 920_000_000),
        }
    }

    /// The usual 8-channel gateway plan's five channels beyond the two defaults (The Things
    /// Network's AS923 frequency plans).
    const fn extra_channels(self) -> [u32; 5] {
        match self {
            As923Variant::As923_1 => [922_000_000, 922_200_000, 922_400_000, 922_600_000, 922_800_000],
            As923Variant::As923_2 => [921_800_000, 922_000_000, 922_200_000, 922_400_000, 922_600_000],
            As923Variant::As923_3 => [917_000_000, 917_200_000, 917_400_000, 917_600_000, 917_800_000],
            As923Variant::As923_4 => [917_700_000, 917_900_000, 918_100_000, 918_300_000, 918_500_000],
        }
    }
}

/// An AS923 band plan with the dwell-time limits this network imposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct As923 {
    variant: As923Variant,
    dwell_time: DwellTime,
}

/// What an AS923 device follows until told otherwise: the uplink limit is country-specific
/// and the end-device's to honour (RP002-1.0.4 default settings), so it starts limited, as
/// LoRaMac-node's AS923 does; DownlinkDwellTime defaults to 0.
pub const AS923_DEFAULT_DWELL_TIME: DwellTime = DwellTime { uplink: true, downlink: false };

/// Default Max EIRP 16 dBm (RP002-1.0.4 §2.10.3) = MaxEIRP index 5 of TxParamSetupReq.
const MAX_EIRP_INDEX: u8 = 5;

impl As923 {
    pub const fn new(variant: As923Variant) -> As923 {
        As923 { variant, dwell_time: AS923_DEFAULT_DWELL_TIME }
    }

    pub const fn with_dwell(variant: As923Variant, dwell_time: DwellTime) -> As923 {
        As923 { variant, dwell_time }
    }

    pub const fn variant(&self) -> As923Variant {
        self.variant
    }

    fn shifted(&self, as923_1_freq: u32) -> u32 {
        as923_1_freq - self.variant.frequency_offset()
    }

    fn default_channel_frequencies(&self) -> [u32; 2] {
        [self.shifted(923_200_000), self.shifted(923_400_000)]
    }

    fn in_band(&self, freq: u32) -> bool {
        let (lo, hi) = self.variant.band();
        (lo..=hi).contains(&freq)
    }
}

impl Region for As923 {
    fn config_id(&self) -> &'static str {
        match self.variant {
            As923Variant::As923_1 => "as923",
            As923Variant::As923_2 => "as923_2",
            As923Variant::As923_3 => "as923_3",
            As923Variant::As923_4 => "as923_4",
        }
    }

    fn common_name(&self) -> &'static str {
        match self.variant {
            As923Variant::As923_1 => "AS923-1",
            As923Variant::As923_2 => "AS923-2",
            As923Variant::As923_3 => "AS923-3",
            As923Variant::As923_4 => "AS923-4",
        }
    }

    /// RP002-1.0.4 §2.10.3. DR8-14 are RFU.
    fn data_rate(&self, dr: u8) -> Option<DataRate> {
        Some(match dr {
            0 => lora(12, 125_000),
            1 => lora(11, 125_000),
            2 => lora(10, 125_000),
            3 => lora(9, 125_000),
            4 => lora(8, 125_000),
            5 => lora(7, 125_000),
            6 => lora(7, 250_000),
            7 => fsk(50_000),
            _ => return None,
        })
    }

    /// RP002-1.0.4 §2.10.7: RX1 uses the uplink's channel.
    fn rx1_frequency(&self, uplink_freq: u32) -> Result<u32, RegionError> {
        if self.in_band(uplink_freq) {
            Ok(uplink_freq)
        } else {
            Err(RegionError::Frequency(uplink_freq))
        }
    }

    /// RP002-1.0.4 §2.10.7: Effective_RX1DROffset = [0 1 2 3 4 5 -1 -2][RX1DROffset];
    /// RX1 DR = MIN(5, MAX(Min_DR, uplink DR - Effective_RX1DROffset)), Min_DR = 2 under the
    /// downlink dwell-time limit, else 0.
    fn rx1_dr(&self, uplink_dr: u8, offset: u8) -> Result<u8, RegionError> {
        let effective: i16 = match offset {
            0..=5 => i16::from(offset),
            6 => -1,
            7 => -2,
            _ => return Err(RegionError::Rx1DrOffset(offset)),
        };
        if uplink_dr > 7 {
            return Err(RegionError::UnknownDr(uplink_dr));
        }
        let min_dr = if self.dwell_time.downlink { 2 } else { 0 };
        Ok((i16::from(uplink_dr) - effective).clamp(min_dr, 5) as u8)
    }

    fn max_rx1_dr_offset(&self) -> u8 {
        7
    }

    /// RP002-1.0.4 §2.10.7: 923.2 MHz - AS923_FREQ_OFFSET, DR2.
    fn default_rx2_frequency(&self) -> u32 {
        self.shifted(923_200_000)
    }

    fn default_rx2_dr(&self) -> u8 {
        2
    }

    /// RP002-1.0.4 §2.10.9 default settings.
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
        self.max_payload_size_for(dr, self.dwell_time.downlink)
    }

    /// RP002-1.0.4 §2.10.6 (not repeater compatible). Under the dwell-time limit DR0 and DR1
    /// are "N/A" (`None`).
    fn max_payload_size_for(&self, dr: u8, dwell_limited: bool) -> Option<MaxPayloadSize> {
        match (dr, dwell_limited) {
            (0 | 1, false) => size(59, 51),
            (2 | 3, false) => size(123, 115),
            (4..=7, false) => size(250, 242),
            (0 | 1, true) => None,
            (2, true) => size(19, 11),
            (3, true) => size(61, 53),
            (4, true) => size(133, 125),
            (5..=7, true) => size(250, 242),
            _ => None,
        }
    }

    fn dwell_time(&self) -> DwellTime {
        self.dwell_time
    }

    fn default_dwell_time(&self) -> DwellTime {
        AS923_DEFAULT_DWELL_TIME
    }

    fn implements_tx_param_setup(&self) -> bool {
        true
    }

    fn max_eirp_index(&self) -> Option<u8> {
        Some(MAX_EIRP_INDEX)
    }

    fn with_dwell_time(&self, dwell_time: DwellTime) -> Option<Box<dyn Region>> {
        Some(Box::new(As923::with_dwell(self.variant, dwell_time)))
    }

    /// 16 dBm EIRP, the default Max EIRP (RP002-1.0.4 §2.10.3), as ChirpStack's `lrwn`
    /// AS923 region sends.
    fn downlink_tx_power(&self, _freq: u32) -> i32 {
        16
    }

    /// RP002-1.0.4 §2.10.3: index 0 = Max EIRP, each step 2 dB less, 0..=7.
    fn tx_power_offset(&self, index: u8) -> Option<i32> {
        (index <= 7).then(|| -2 * i32::from(index))
    }

    fn max_tx_power_index(&self) -> u8 {
        7
    }

    /// DR5 (SF7BW125), the fastest rate of the default channels.
    fn max_adr_dr(&self) -> u8 {
        5
    }

    fn cf_list_type(&self) -> Option<CfListType> {
        Some(CfListType::Frequencies)
    }

    /// RP002-1.0.4 §2.10.4: type 0.
    fn cf_list(&self, extra: &[u32], _enabled: &[u8]) -> Option<[u8; 16]> {
        cf_list_frequencies(extra)
    }

    /// RP002-1.0.4 §2.10.2: 923.2 and 923.4 MHz (minus the offset), DR0-5.
    fn default_uplink_channels(&self) -> Vec<Channel> {
        self.default_channel_frequencies().iter().map(|&frequency| Channel { frequency, min_dr: 0, max_dr: 5 }).collect()
    }

    fn uplink_channels(&self) -> Vec<Channel> {
        let mut all = self.default_uplink_channels();
        all.extend(self.variant.extra_channels().iter().map(|&frequency| Channel { frequency, min_dr: 0, max_dr: 5 }));
        all
    }

    fn default_extra_channels(&self) -> Vec<u32> {
        self.variant.extra_channels().to_vec()
    }

    fn extra_channel_dr_range(&self) -> (u8, u8) {
        (0, 5)
    }

    fn check_extra_channels(&self, extra: &[u32]) -> Result<(), String> {
        let (lo, hi) = self.variant.band();
        check_extra_channels(self.common_name(), lo..=hi, &self.default_channel_frequencies(), extra)
    }

    /// RP002-1.0.4 §2.10.5: ChMaskCntl 0 addresses channels 0..15.
    fn ch_mask_blocks(&self, enabled: &[u8]) -> Vec<ChMaskBlock> {
        ch_mask_16(enabled)
    }

    /// RP002-1.0.4 sets no duty cycle for AS923; where local rules require listen-before-talk
    /// (Japan, ARIB STD-T108) that is the gateway's to do.
    fn sub_band(&self, _freq: u32) -> Option<SubBand> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Modulation;
    use As923Variant::*;

    fn all() -> [As923; 4] {
        As923Variant::ALL.map(As923::new)
    }

    #[test]
    fn names_and_ids_follow_chirpstack() {
        let want = [("as923", "AS923-1"), ("as923_2", "AS923-2"), ("as923_3", "AS923-3"), ("as923_4", "AS923-4")];
        for (r, (id, name)) in all().iter().zip(want) {
            assert_eq!((r.config_id(), r.common_name()), (id, name));
        }
    }

    #[test]
    fn data_rates_follow_section_2_10_3_both_ways() {
        let want = [(12, 125_000), (11, 125_000), (10, 125_000), (9, 125_000), (8, 125_000), (7, 125_000), (7, 250_000)];
        for r in all() {
            for (dr, (sf, bw)) in want.iter().enumerate() {
                let m = Modulation::Lora { spreading_factor: *sf, bandwidth: *bw };
                assert_eq!(r.data_rate(dr as u8).unwrap().modulation, m);
                assert_eq!(r.dr_for(&m), Some(dr as u8));
                assert_eq!(r.downlink_dr_for(&m), Some(dr as u8));
            }
            assert_eq!(r.data_rate(7).unwrap().modulation, Modulation::Fsk { bitrate: 50_000 });
            assert_eq!(r.dr_for(&Modulation::Fsk { bitrate: 50_000 }), Some(7));
            for dr in 8..=15 {
                assert_eq!(r.data_rate(dr), None);
            }
        }
    }

    #[test]
    fn frequency_offsets_shift_channels_and_rx2() {
        // RP002-1.0.4 §2.10.2: AS923-1 923.2/923.4, AS923-2 921.4/921.6, AS923-3 916.6/916.8,
        // AS923-4 917.3/917.5 MHz; RX2 on the first.
        let want = [
            (As923_1, 923_200_000, 923_400_000),
            (As923_2, 921_400_000, 921_600_000),
            (As923_3, 916_600_000, 916_800_000),
            (As923_4, 917_300_000, 917_500_000),
        ];
        for (v, a, b) in want {
            let r = As923::new(v);
            let freqs: Vec<u32> = r.default_uplink_channels().iter().map(|c| c.frequency).collect();
            assert_eq!(freqs, vec![a, b], "{v:?}");
            assert!(r.default_uplink_channels().iter().all(|c| (c.min_dr, c.max_dr) == (0, 5)));
            assert_eq!(r.default_rx2_frequency(), a, "{v:?}");
            assert_eq!(r.default_rx2_dr(), 2);
            for ch in r.uplink_channels() {
                assert_eq!(r.rx1_frequency(ch.frequency), Ok(ch.frequency), "{v:?}");
            }
            assert_eq!(r.check_extra_channels(&r.default_extra_channels()), Ok(()), "{v:?}");
        }
        assert_eq!(As923::new(As923_2).rx1_frequency(923_200_000), Err(RegionError::Frequency(923_200_000)));
        assert_eq!(As923::new(As923_1).rx1_frequency(868_100_000), Err(RegionError::Frequency(868_100_000)));
    }

    #[test]
    fn delays_are_the_default_settings() {
        for r in all() {
            assert_eq!(r.default_rx1_delay(), Duration::from_secs(1));
            assert_eq!(r.join_accept_delay1(), Duration::from_secs(5));
            assert_eq!(r.join_accept_delay2(), Duration::from_secs(6));
        }
    }

    #[test]
    fn max_payload_sizes_follow_section_2_10_6_with_and_without_dwell_time() {
        let off = [
            Some((59, 51)),
            Some((59, 51)),
            Some((123, 115)),
            Some((123, 115)),
            Some((250, 242)),
            Some((250, 242)),
            Some((250, 242)),
            Some((250, 242)),
        ];
        let on = [None, None, Some((19, 11)), Some((61, 53)), Some((133, 125)), Some((250, 242)), Some((250, 242)), Some((250, 242))];
        let r = As923::new(As923_1);
        for dr in 0..8u8 {
            let want = |t: &[Option<(usize, usize)>; 8]| t[usize::from(dr)].map(|(m, n)| MaxPayloadSize { m, n });
            assert_eq!(r.max_payload_size_for(dr, false), want(&off), "DR{dr} no dwell");
            assert_eq!(r.max_payload_size_for(dr, true), want(&on), "DR{dr} dwell");
            // Downlinks follow the configured downlink dwell time.
            let limited = As923::with_dwell(As923_1, DwellTime { uplink: true, downlink: true });
            assert_eq!(limited.max_payload_size(dr), want(&on));
            assert_eq!(r.max_payload_size(dr), want(&off));
        }
        assert_eq!(r.max_payload_size_for(8, false), None);
    }

    #[test]
    fn rx1_data_rate_follows_the_table_for_every_dr_and_offset() {
        // Rows: uplink DR0..DR7; columns RX1DROffset 0..7 (RP002-1.0.4 §2.10.7).
        let no_dwell: [[u8; 8]; 8] = [
            [0, 0, 0, 0, 0, 0, 1, 2],
            [1, 0, 0, 0, 0, 0, 2, 3],
            [2, 1, 0, 0, 0, 0, 3, 4],
            [3, 2, 1, 0, 0, 0, 4, 5],
            [4, 3, 2, 1, 0, 0, 5, 5],
            [5, 4, 3, 2, 1, 0, 5, 5],
            [5, 5, 4, 3, 2, 1, 5, 5],
            [5, 5, 5, 4, 3, 2, 5, 5],
        ];
        let dwell: [[u8; 8]; 8] = [
            [2, 2, 2, 2, 2, 2, 2, 2],
            [2, 2, 2, 2, 2, 2, 2, 3],
            [2, 2, 2, 2, 2, 2, 3, 4],
            [3, 2, 2, 2, 2, 2, 4, 5],
            [4, 3, 2, 2, 2, 2, 5, 5],
            [5, 4, 3, 2, 2, 2, 5, 5],
            [5, 5, 4, 3, 2, 2, 5, 5],
            [5, 5, 5, 4, 3, 2, 5, 5],
        ];
        for (downlink, table) in [(false, no_dwell), (true, dwell)] {
            let r = As923::with_dwell(As923_3, DwellTime { uplink: true, downlink });
            for (dr, row) in table.iter().enumerate() {
                for (offset, want) in row.iter().enumerate() {
                    assert_eq!(r.rx1_dr(dr as u8, offset as u8), Ok(*want), "dwell {downlink} DR{dr} offset {offset}");
                    assert!(r.max_payload_size(*want).is_some(), "RX1 DR{want} is usable");
                }
            }
            assert_eq!(r.rx1_dr(0, 8), Err(RegionError::Rx1DrOffset(8)));
            assert_eq!(r.rx1_dr(8, 0), Err(RegionError::UnknownDr(8)));
        }
    }

    #[test]
    fn dwell_time_starts_limited_uplink_only_and_tx_param_setup_is_implemented() {
        for r in all() {
            assert_eq!(r.default_dwell_time(), DwellTime { uplink: true, downlink: false });
            assert_eq!(r.dwell_time(), r.default_dwell_time());
            assert!(r.implements_tx_param_setup());
            let (start, wanted) = r.tx_params().unwrap();
            assert_eq!(start, wanted);
            assert_eq!(start.max_eirp_index, 5);
        }
        let off = DwellTime { uplink: false, downlink: false };
        let r = As923::new(As923_2).with_dwell_time(off).unwrap();
        assert_eq!(r.config_id(), "as923_2");
        assert_eq!(r.dwell_time(), off);
        let (start, wanted) = r.tx_params().unwrap();
        assert_ne!(start, wanted);
        assert_eq!(wanted.dwell_time, off);
    }

    #[test]
    fn cf_list_carries_the_extra_channels_as_type_0() {
        let r = As923::new(As923_1);
        assert_eq!(r.cf_list_type(), Some(CfListType::Frequencies));
        let cf = r.cf_list(&r.default_extra_channels(), &[]).unwrap();
        // 922.0 MHz = 9220000 x 100 Hz = 0x8CAFA0; 922.8 MHz = 0x8CCEE0.
        assert_eq!(&cf[..3], &[0xa0, 0xaf, 0x8c]);
        assert_eq!(&cf[12..15], &[0xe0, 0xce, 0x8c]);
        assert_eq!(cf[15], 0);
        assert_eq!(r.cf_list(&[], &[]), None);
    }

    #[test]
    fn tx_power_steps_are_2_db_down_to_index_7() {
        let r = As923::new(As923_1);
        for i in 0..=7u8 {
            assert_eq!(r.tx_power_offset(i), Some(-2 * i32::from(i)));
        }
        assert_eq!(r.tx_power_offset(8), None);
        assert_eq!(r.max_tx_power_index(), 7);
        assert_eq!(r.downlink_tx_power(923_200_000), 16);
    }

    #[test]
    fn channel_mask_is_one_block_of_16() {
        let r = As923::new(As923_1);
        assert_eq!(r.ch_mask_blocks(&[0, 1]), vec![ChMaskBlock { cntl: 0, mask: 0x0003 }]);
        assert_eq!(r.ch_mask_blocks(&[0, 1, 2, 3, 4, 5, 6]), vec![ChMaskBlock { cntl: 0, mask: 0x007f }]);
    }

    #[test]
    fn there_is_no_duty_cycle_sub_band() {
        assert_eq!(As923::new(As923_1).sub_band(923_200_000), None);
    }
}
