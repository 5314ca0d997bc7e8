//! US902-928 (RP002-1.0.4 §2.5).

use std::time::Duration;

use super::fixed_channels::{ch_mask_blocks_72, channel_mask_cf_list, sub_band_2, Grid72};
use super::{CfListType, ChMaskBlock, Channel, DataRate, LrFhssCodingRate, MaxPayloadSize, Modulation, Region, RegionError, SubBand};

/// US902-928 band plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Us915;

/// RP002-1.0.4 §2.5.2: channels 0-63 at 902.3 + 0.2·n MHz (DR0-3), 64-71 at 903.0 + 1.6·n MHz
/// (DR4, and the LR-FHSS DR5-6).
const GRID: Grid72 = Grid72 { first_125khz: 902_300_000, first_500khz: 903_000_000, dr_125khz: (0, 3), dr_500khz: (4, 6) };

/// Downlink power in dBm EIRP. The 500 kHz downlink channels are digitally modulated
/// systems under FCC §15.247(b)(3)/(b)(4): 1 W conducted with up to 6 dBi of antenna gain,
/// 36 dBm EIRP. RP002 sets no gateway power; ChirpStack's `lrwn` US915 region sends a fixed
/// 21 dBm EIRP, which every US915 gateway's power table can reach, and so do we
/// (`network.downlink_tx_power` overrides it).
const DOWNLINK_TX_POWER_EIRP: i32 = 21;

fn up(modulation: Modulation) -> DataRate {
    DataRate { modulation, uplink: true, downlink: false }
}

fn down(spreading_factor: u8) -> DataRate {
    DataRate { modulation: Modulation::Lora { spreading_factor, bandwidth: 500_000 }, uplink: false, downlink: true }
}

fn lora(spreading_factor: u8, bandwidth: u32) -> Modulation {
    Modulation::Lora { spreading_factor, bandwidth }
}

/// RP002-1.0.4 §2.5.7 (RX1 data-rate mapping): rows uplink DR0-6, columns RX1DROffset 0-3.
/// LR-FHSS DR5 and DR6 map like DR0 and DR1.
const RX1_DR: [[u8; 4]; 7] =
    [[10, 9, 8, 8], [11, 10, 9, 8], [12, 11, 10, 9], [13, 12, 11, 10], [13, 13, 12, 11], [10, 9, 8, 8], [11, 10, 9, 8]];

impl Region for Us915 {
    fn config_id(&self) -> &'static str {
        "us915"
    }

    fn common_name(&self) -> &'static str {
        "US915"
    }

    /// RP002-1.0.4 §2.5.3 (Table "US902-928 Data rate table"). DR0-6 are uplink only,
    /// DR8-13 downlink only; DR7 and DR14 are RFU.
    fn data_rate(&self, dr: u8) -> Option<DataRate> {
        Some(match dr {
            0 => up(lora(10, 125_000)),
            1 => up(lora(9, 125_000)),
            2 => up(lora(8, 125_000)),
            3 => up(lora(7, 125_000)),
            4 => up(lora(8, 500_000)),
            5 => up(Modulation::LrFhss { coding_rate: LrFhssCodingRate::OneThird, occupied_channel_width: 1_523_000 }),
            6 => up(Modulation::LrFhss { coding_rate: LrFhssCodingRate::TwoThirds, occupied_channel_width: 1_523_000 }),
            8 => down(12),
            9 => down(11),
            10 => down(10),
            11 => down(9),
            12 => down(8),
            13 => down(7),
            _ => return None,
        })
    }

    /// RP002-1.0.4 §2.5.7: downlink channel (uplink channel mod 8), 923.3 + 0.6·n MHz.
    fn rx1_frequency(&self, uplink_freq: u32) -> Result<u32, RegionError> {
        GRID.rx1_frequency(uplink_freq)
    }

    fn rx1_dr(&self, uplink_dr: u8, offset: u8) -> Result<u8, RegionError> {
        if offset > self.max_rx1_dr_offset() {
            return Err(RegionError::Rx1DrOffset(offset));
        }
        let row = RX1_DR.get(usize::from(uplink_dr)).ok_or(RegionError::UnknownDr(uplink_dr))?;
        Ok(row[usize::from(offset)])
    }

    /// RP002-1.0.4 §2.5.7: RX1DROffset 0-3; 4-7 are RFU.
    fn max_rx1_dr_offset(&self) -> u8 {
        3
    }

    /// RP002-1.0.4 §2.5.7: RX2 at 923.3 MHz, DR8.
    fn default_rx2_frequency(&self) -> u32 {
        923_300_000
    }

    fn default_rx2_dr(&self) -> u8 {
        8
    }

    /// RP002-1.0.4 §2.5.8 default settings: RECEIVE_DELAY1 1 s, JOIN_ACCEPT_DELAY1 5 s,
    /// JOIN_ACCEPT_DELAY2 6 s.
    fn default_rx1_delay(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn join_accept_delay1(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn join_accept_delay2(&self) -> Duration {
        Duration::from_secs(6)
    }

    /// RP002-1.0.4 §2.5.6 (not repeater compatible).
    fn max_payload_size(&self, dr: u8) -> Option<MaxPayloadSize> {
        let (m, n) = match dr {
            0 => (19, 11),
            1 => (61, 53),
            2 | 6 => (133, 125),
            3 | 4 => (250, 242),
            5 => (58, 50),
            8 => (61, 53),
            9 => (137, 129),
            10..=13 => (250, 242),
            _ => return None,
        };
        Some(MaxPayloadSize { m, n })
    }

    fn downlink_tx_power(&self, _freq: u32) -> i32 {
        DOWNLINK_TX_POWER_EIRP
    }

    /// RP002-1.0.4 §2.5.3 (TXPower table): index 0 = max EIRP (30 dBm), 2 dB less per step,
    /// 0..=14.
    fn tx_power_offset(&self, index: u8) -> Option<i32> {
        (index <= 14).then(|| -2 * i32::from(index))
    }

    fn max_tx_power_index(&self) -> u8 {
        14
    }

    /// DR3 (SF7BW125), the fastest data rate of the 125 kHz channels.
    fn max_adr_dr(&self) -> u8 {
        3
    }

    fn cf_list_type(&self) -> Option<CfListType> {
        Some(CfListType::ChannelMask)
    }

    /// RP002-1.0.4 §2.5.4: type 1, ChMask0-4 for channels 0-71.
    fn cf_list(&self, _extra: &[u32], enabled: &[u8]) -> Option<[u8; 16]> {
        channel_mask_cf_list(enabled, 5)
    }

    fn default_uplink_channels(&self) -> Vec<Channel> {
        GRID.channels()
    }

    fn uplink_channel_index(&self, freq: u32) -> Option<u8> {
        GRID.index(freq)
    }

    fn default_enabled_uplink_channels(&self) -> Vec<u8> {
        sub_band_2()
    }

    fn uplink_channels(&self) -> Vec<Channel> {
        GRID.channels()
    }

    fn default_extra_channels(&self) -> Vec<u32> {
        Vec::new()
    }

    /// There are no extra channels; the 125 kHz range is what any would carry.
    fn extra_channel_dr_range(&self) -> (u8, u8) {
        GRID.dr_125khz
    }

    /// RP002-1.0.4 §2.5.2: the channels are fixed (NewChannelReq is not implemented).
    fn check_extra_channels(&self, extra: &[u32]) -> Result<(), String> {
        if extra.is_empty() {
            Ok(())
        } else {
            Err("US915 has fixed channels and no extra ones; leave it empty (use enabled channels instead)".into())
        }
    }

    fn ch_mask_blocks(&self, enabled: &[u8]) -> Vec<ChMaskBlock> {
        ch_mask_blocks_72(enabled)
    }

    /// No duty-cycle limit: FCC Part 15 limits dwell time and power, not airtime per hour.
    fn sub_band(&self, _freq: u32) -> Option<SubBand> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_chirpstack_ones() {
        assert_eq!(Us915.config_id(), "us915");
        assert_eq!(Us915.common_name(), "US915");
    }

    #[test]
    fn data_rates_follow_rp002_section_2_5_3() {
        // (DR, modulation, uplink, downlink)
        let lr = |coding_rate| Modulation::LrFhss { coding_rate, occupied_channel_width: 1_523_000 };
        let table = [
            (0, lora(10, 125_000), true, false),
            (1, lora(9, 125_000), true, false),
            (2, lora(8, 125_000), true, false),
            (3, lora(7, 125_000), true, false),
            (4, lora(8, 500_000), true, false),
            (5, lr(LrFhssCodingRate::OneThird), true, false),
            (6, lr(LrFhssCodingRate::TwoThirds), true, false),
            (8, lora(12, 500_000), false, true),
            (9, lora(11, 500_000), false, true),
            (10, lora(10, 500_000), false, true),
            (11, lora(9, 500_000), false, true),
            (12, lora(8, 500_000), false, true),
            (13, lora(7, 500_000), false, true),
        ];
        for (dr, modulation, uplink, downlink) in table {
            assert_eq!(Us915.data_rate(dr), Some(DataRate { modulation, uplink, downlink }), "DR{dr}");
            if uplink {
                assert_eq!(Us915.dr_for(&modulation), Some(dr), "uplink DR{dr}");
            } else {
                assert_eq!(Us915.downlink_dr_for(&modulation), Some(dr), "downlink DR{dr}");
            }
        }
        for dr in [7, 14, 15] {
            assert_eq!(Us915.data_rate(dr), None, "DR{dr} is RFU");
        }
    }

    #[test]
    fn sf8_bw500_is_dr4_up_and_dr12_down() {
        let m = lora(8, 500_000);
        assert_eq!(Us915.dr_for(&m), Some(4));
        assert_eq!(Us915.downlink_dr_for(&m), Some(12));
        assert_eq!(Us915.dr_for(&lora(12, 500_000)), None, "SF12BW500 is downlink only");
        assert_eq!(Us915.downlink_dr_for(&lora(10, 125_000)), None, "SF10BW125 is uplink only");
        assert_eq!(Us915.dr_for(&lora(12, 125_000)), None, "SF11/12 at 125 kHz are not US915 rates");
    }

    #[test]
    fn rx1_data_rate_follows_the_mapping_for_every_dr_and_offset() {
        // Rows: uplink DR0..DR6; columns: RX1DROffset 0..3 (RP002-1.0.4 §2.5.7).
        let table: [[u8; 4]; 7] =
            [[10, 9, 8, 8], [11, 10, 9, 8], [12, 11, 10, 9], [13, 12, 11, 10], [13, 13, 12, 11], [10, 9, 8, 8], [11, 10, 9, 8]];
        for (dr, row) in table.iter().enumerate() {
            for (offset, want) in row.iter().enumerate() {
                assert_eq!(Us915.rx1_dr(dr as u8, offset as u8), Ok(*want), "DR{dr} offset {offset}");
                assert!(Us915.data_rate(*want).unwrap().downlink);
            }
        }
        assert_eq!(Us915.rx1_dr(0, 4), Err(RegionError::Rx1DrOffset(4)));
        assert_eq!(Us915.rx1_dr(7, 0), Err(RegionError::UnknownDr(7)));
        assert_eq!(Us915.rx1_dr(8, 0), Err(RegionError::UnknownDr(8)), "DR8 is never an uplink");
    }

    #[test]
    fn rx1_frequency_is_the_downlink_channel_of_uplink_channel_mod_8() {
        // (uplink channel, uplink Hz, RX1 Hz)
        let table = [
            (0, 902_300_000, 923_300_000),
            (1, 902_500_000, 923_900_000),
            (7, 903_700_000, 927_500_000),
            (8, 903_900_000, 923_300_000),
            (9, 904_100_000, 923_900_000),
            (15, 905_300_000, 927_500_000),
            (63, 914_900_000, 927_500_000),
            (64, 903_000_000, 923_300_000),
            (65, 904_600_000, 923_900_000),
            (70, 912_600_000, 926_900_000),
            (71, 914_200_000, 927_500_000),
        ];
        for (ch, up, rx1) in table {
            assert_eq!(Us915.uplink_channel_index(up), Some(ch), "{up} Hz");
            assert_eq!(Us915.rx1_frequency(up), Ok(rx1), "channel {ch}");
        }
        assert_eq!(Us915.rx1_frequency(868_100_000), Err(RegionError::Frequency(868_100_000)));
        assert_eq!(Us915.rx1_frequency(902_400_000), Err(RegionError::Frequency(902_400_000)), "between channels");
    }

    #[test]
    fn rx2_and_delays_are_the_defaults() {
        assert_eq!(Us915.default_rx2_frequency(), 923_300_000);
        assert_eq!(Us915.default_rx2_dr(), 8);
        assert_eq!(Us915.default_rx1_delay(), Duration::from_secs(1));
        assert_eq!(Us915.join_accept_delay1(), Duration::from_secs(5));
        assert_eq!(Us915.join_accept_delay2(), Duration::from_secs(6));
    }

    #[test]
    fn max_payload_sizes_follow_section_2_5_6() {
        let want = [
            (0, 19, 11),
            (1, 61, 53),
            (2, 133, 125),
            (3, 250, 242),
            (4, 250, 242),
            (5, 58, 50),
            (6, 133, 125),
            (8, 61, 53),
            (9, 137, 129),
            (10, 250, 242),
            (11, 250, 242),
            (12, 250, 242),
            (13, 250, 242),
        ];
        for (dr, m, n) in want {
            assert_eq!(Us915.max_payload_size(dr), Some(MaxPayloadSize { m, n }), "DR{dr}");
            assert_eq!(m - n, 8);
        }
        for dr in [7, 14, 15] {
            assert_eq!(Us915.max_payload_size(dr), None);
        }
    }

    #[test]
    fn channels_are_the_72_fixed_ones() {
        let ch = Us915.default_uplink_channels();
        assert_eq!(ch.len(), 72);
        assert_eq!(ch[0], Channel { frequency: 902_300_000, min_dr: 0, max_dr: 3 });
        assert_eq!(ch[63], Channel { frequency: 914_900_000, min_dr: 0, max_dr: 3 });
        assert_eq!(ch[64], Channel { frequency: 903_000_000, min_dr: 4, max_dr: 6 });
        assert_eq!(ch[71], Channel { frequency: 914_200_000, min_dr: 4, max_dr: 6 });
        assert_eq!(Us915.uplink_channels(), ch);
        assert!(Us915.default_extra_channels().is_empty());
        assert_eq!(Us915.default_enabled_uplink_channels(), vec![8, 9, 10, 11, 12, 13, 14, 15, 65]);
    }

    #[test]
    fn extra_channels_are_refused() {
        assert_eq!(Us915.check_extra_channels(&[]), Ok(()));
        assert!(Us915.check_extra_channels(&[903_900_000]).is_err());
    }

    #[test]
    fn cf_list_is_type_1_with_the_sub_band_2_mask() {
        assert_eq!(Us915.cf_list_type(), Some(CfListType::ChannelMask));
        let cf = Us915.cf_list(&[], &Us915.default_enabled_uplink_channels()).unwrap();
        assert_eq!(cf, [0x00, 0xff, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0, 0, 0, 0, 0, 0x01]);
    }

    #[test]
    fn link_adr_masks_for_sub_band_2_and_all_channels() {
        let blocks = Us915.ch_mask_blocks(&Us915.default_enabled_uplink_channels());
        assert_eq!(blocks, vec![ChMaskBlock { cntl: 7, mask: 0x0002 }, ChMaskBlock { cntl: 0, mask: 0xff00 }]);
        let all: Vec<u8> = (0..72).collect();
        assert_eq!(Us915.ch_mask_blocks(&all), vec![ChMaskBlock { cntl: 6, mask: 0x00ff }]);
    }

    #[test]
    fn tx_power_runs_from_30_dbm_to_2_dbm_in_2_db_steps() {
        for index in 0..=14u8 {
            assert_eq!(Us915.tx_power_offset(index), Some(-2 * i32::from(index)));
        }
        assert_eq!(30 + Us915.tx_power_offset(14).unwrap(), 2);
        assert_eq!(Us915.tx_power_offset(15), None);
        assert_eq!(Us915.max_tx_power_index(), 14);
    }

    #[test]
    fn adr_tops_out_at_sf7_on_125_khz() {
        assert_eq!(Us915.max_adr_dr(), 3);
        assert_eq!(Us915.data_rate(3).unwrap().modulation, lora(7, 125_000));
        assert_eq!(Us915.required_snr(0), Some(-15.0), "DR0 is SF10");
        assert_eq!(Us915.required_snr(5), None, "LR-FHSS");
    }

    #[test]
    fn no_duty_cycle_sub_bands_and_a_fixed_downlink_power() {
        for freq in [923_300_000, 927_500_000, 902_300_000] {
            assert_eq!(Us915.sub_band(freq), None);
            assert_eq!(Us915.downlink_tx_power(freq), 21);
        }
    }
}
