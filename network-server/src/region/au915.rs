//! AU915-928 (RP002-1.0.4 §2.8).

use std::time::Duration;

use super::fixed_channels::{ch_mask_blocks_72, channel_mask_cf_list, sub_band_2, Grid72};
use super::{CfListType, ChMaskBlock, Channel, DataRate, LrFhssCodingRate, MaxPayloadSize, Modulation, Region, RegionError, SubBand};

/// AU915-928 band plan, for devices in their default dwell-time state (uplink limited to
/// 400 ms, downlink not; see [`Au915::DEFAULT_UPLINK_DWELL_TIME`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Au915;

/// RP002-1.0.4 §2.8.2: channels 0-63 at 915.2 + 0.2·n MHz (DR0-5), 64-71 at 915.9 + 1.6·n MHz
/// (DR6, and the LR-FHSS DR7).
const GRID: Grid72 = Grid72 { first_125khz: 915_200_000, first_500khz: 915_900_000, dr_125khz: (0, 5), dr_500khz: (6, 7) };

/// Downlink power in dBm EIRP: the ACMA LIPD class licence allows 1 W EIRP for digitally
/// modulated transmitters in 915-928 MHz; ChirpStack's `lrwn` AU915 region sends the same
/// 30 dBm (`network.downlink_tx_power` overrides it).
const DOWNLINK_TX_POWER_EIRP: i32 = 30;

fn up(modulation: Modulation) -> DataRate {
    DataRate { modulation, uplink: true, downlink: false }
}

fn down(spreading_factor: u8) -> DataRate {
    DataRate { modulation: Modulation::Lora { spreading_factor, bandwidth: 500_000 }, uplink: false, downlink: true }
}

fn lora(spreading_factor: u8, bandwidth: u32) -> Modulation {
    Modulation::Lora { spreading_factor, bandwidth }
}

/// RP002-1.0.4 §2.8.7 (RX1 data-rate mapping): rows uplink DR0-7, columns RX1DROffset 0-5.
/// LR-FHSS DR7 maps like DR1.
const RX1_DR: [[u8; 6]; 8] = [
    [8, 8, 8, 8, 8, 8],
    [9, 8, 8, 8, 8, 8],
    [10, 9, 8, 8, 8, 8],
    [11, 10, 9, 8, 8, 8],
    [12, 11, 10, 9, 8, 8],
    [13, 12, 11, 10, 9, 8],
    [13, 13, 12, 11, 10, 9],
    [9, 8, 8, 8, 8, 8],
];

impl Au915 {
    /// RP002-1.0.4 §2.8: AU915 devices start with the 400 ms uplink dwell-time limit on
    /// (UplinkDwellTime = 1) until a TxParamSetupReq says otherwise; downlinks have no limit
    /// by default. (Semtech's LoRaMac-node, AU915_DEFAULT_UPLINK_DWELL_TIME = 1, agrees.)
    pub const DEFAULT_UPLINK_DWELL_TIME: bool = true;
    pub const DEFAULT_DOWNLINK_DWELL_TIME: bool = false;

    /// AU915 devices implement TxParamSetupReq (RP002-1.0.4 §2.8; LoRaWAN 1.0.2 devices
    /// of Regional Parameters 1.0.2rA predate it).
    pub fn implements_tx_param_setup(&self) -> bool {
        true
    }

    /// RP002-1.0.4 §2.8.6 (not repeater compatible): M and N by data rate, with the uplink
    /// 400 ms dwell-time limit on (`dwell_limited`) or off. With the limit, DR0 and DR1 are
    /// not allowed at all; the 500 kHz downlink data rates are the same either way.
    pub fn max_payload_size_for(&self, dr: u8, dwell_limited: bool) -> Option<MaxPayloadSize> {
        let (m, n) = match (dr, dwell_limited) {
            (0..=2, false) => (59, 51),
            (3, false) => (123, 115),
            (0 | 1, true) => return None,
            (2, true) => (19, 11),
            (3, true) => (61, 53),
            (4, true) => (133, 125),
            (4..=6, _) => (250, 242),
            (7, _) => (58, 50),
            (8, _) => (61, 53),
            (9, _) => (137, 129),
            (10..=13, _) => (250, 242),
            _ => return None,
        };
        Some(MaxPayloadSize { m, n })
    }
}

impl Region for Au915 {
    fn config_id(&self) -> &'static str {
        "au915"
    }

    fn common_name(&self) -> &'static str {
        "AU915"
    }

    /// RP002-1.0.4 §2.8.3 (Table "AU915-928 Data rate table"). DR0-7 are uplink only,
    /// DR8-13 downlink only; DR14 is RFU.
    fn data_rate(&self, dr: u8) -> Option<DataRate> {
        Some(match dr {
            0 => up(lora(12, 125_000)),
            1 => up(lora(11, 125_000)),
            2 => up(lora(10, 125_000)),
            3 => up(lora(9, 125_000)),
            4 => up(lora(8, 125_000)),
            5 => up(lora(7, 125_000)),
            6 => up(lora(8, 500_000)),
            7 => up(Modulation::LrFhss { coding_rate: LrFhssCodingRate::OneThird, occupied_channel_width: 1_523_000 }),
            8 => down(12),
            9 => down(11),
            10 => down(10),
            11 => down(9),
            12 => down(8),
            13 => down(7),
            _ => return None,
        })
    }

    /// RP002-1.0.4 §2.8.7: downlink channel (uplink channel mod 8), 923.3 + 0.6·n MHz.
    fn rx1_frequency(&self, uplink_freq: u32) -> Result<u32, RegionError> {
        GRID.rx1_frequency(uplink_freq)
    }

    /// The downlink dwell time changes nothing here: the mapping has one table.
    fn rx1_dr(&self, uplink_dr: u8, offset: u8) -> Result<u8, RegionError> {
        if offset > self.max_rx1_dr_offset() {
            return Err(RegionError::Rx1DrOffset(offset));
        }
        let row = RX1_DR.get(usize::from(uplink_dr)).ok_or(RegionError::UnknownDr(uplink_dr))?;
        Ok(row[usize::from(offset)])
    }

    /// RP002-1.0.4 §2.8.7: RX1DROffset 0-5; 6 and 7 are RFU.
    fn max_rx1_dr_offset(&self) -> u8 {
        5
    }

    /// RP002-1.0.4 §2.8.7: RX2 at 923.3 MHz, DR8.
    fn default_rx2_frequency(&self) -> u32 {
        923_300_000
    }

    fn default_rx2_dr(&self) -> u8 {
        8
    }

    /// RP002-1.0.4 §2.8.8 default settings: RECEIVE_DELAY1 1 s, JOIN_ACCEPT_DELAY1 5 s,
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

    /// For the devices' default dwell time: only the uplink one limits payloads in AU915,
    /// so DR0 and DR1 have none and the downlink data rates are unaffected.
    fn max_payload_size(&self, dr: u8) -> Option<MaxPayloadSize> {
        self.max_payload_size_for(dr, Self::DEFAULT_UPLINK_DWELL_TIME)
    }

    fn downlink_tx_power(&self, _freq: u32) -> i32 {
        DOWNLINK_TX_POWER_EIRP
    }

    /// RP002-1.0.4 §2.8.3 (TXPower table): index 0 = max EIRP (30 dBm), 2 dB less per step,
    /// 0..=14.
    fn tx_power_offset(&self, index: u8) -> Option<i32> {
        (index <= 14).then(|| -2 * i32::from(index))
    }

    fn max_tx_power_index(&self) -> u8 {
        14
    }

    /// DR5 (SF7BW125), the fastest data rate of the 125 kHz channels.
    fn max_adr_dr(&self) -> u8 {
        5
    }

    fn cf_list_type(&self) -> Option<CfListType> {
        Some(CfListType::ChannelMask)
    }

    /// RP002-1.0.4 §2.8.4: type 1, ChMask0-4 for channels 0-71.
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

    /// RP002-1.0.4 §2.8.2: the channels are fixed (NewChannelReq is not implemented).
    fn check_extra_channels(&self, extra: &[u32]) -> Result<(), String> {
        if extra.is_empty() {
            Ok(())
        } else {
            Err("AU915 has fixed channels and no extra ones; leave it empty (use enabled channels instead)".into())
        }
    }

    /// RP002-1.0.4 §2.8.5: the same ChMaskCntl meanings as US915.
    fn ch_mask_blocks(&self, enabled: &[u8]) -> Vec<ChMaskBlock> {
        ch_mask_blocks_72(enabled)
    }

    /// No duty-cycle limit in AU915.
    fn sub_band(&self, _freq: u32) -> Option<SubBand> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_chirpstack_ones() {
        assert_eq!(Au915.config_id(), "au915");
        assert_eq!(Au915.common_name(), "AU915");
    }

    #[test]
    fn data_rates_follow_rp002_section_2_8_3() {
        let table = [
            (0, lora(12, 125_000), true, false),
            (1, lora(11, 125_000), true, false),
            (2, lora(10, 125_000), true, false),
            (3, lora(9, 125_000), true, false),
            (4, lora(8, 125_000), true, false),
            (5, lora(7, 125_000), true, false),
            (6, lora(8, 500_000), true, false),
            (7, Modulation::LrFhss { coding_rate: LrFhssCodingRate::OneThird, occupied_channel_width: 1_523_000 }, true, false),
            (8, lora(12, 500_000), false, true),
            (9, lora(11, 500_000), false, true),
            (10, lora(10, 500_000), false, true),
            (11, lora(9, 500_000), false, true),
            (12, lora(8, 500_000), false, true),
            (13, lora(7, 500_000), false, true),
        ];
        for (dr, modulation, uplink, downlink) in table {
            assert_eq!(Au915.data_rate(dr), Some(DataRate { modulation, uplink, downlink }), "DR{dr}");
            if uplink {
                assert_eq!(Au915.dr_for(&modulation), Some(dr), "uplink DR{dr}");
            } else {
                assert_eq!(Au915.downlink_dr_for(&modulation), Some(dr), "downlink DR{dr}");
            }
        }
        assert_eq!(Au915.dr_for(&lora(8, 500_000)), Some(6));
        assert_eq!(Au915.downlink_dr_for(&lora(8, 500_000)), Some(12));
        for dr in [14, 15] {
            assert_eq!(Au915.data_rate(dr), None, "DR{dr} is RFU");
        }
    }

    #[test]
    fn rx1_data_rate_follows_the_mapping_for_every_dr_and_offset() {
        // Rows: uplink DR0..DR7; columns: RX1DROffset 0..5 (RP002-1.0.4 §2.8.7).
        let table: [[u8; 6]; 8] = [
            [8, 8, 8, 8, 8, 8],
            [9, 8, 8, 8, 8, 8],
            [10, 9, 8, 8, 8, 8],
            [11, 10, 9, 8, 8, 8],
            [12, 11, 10, 9, 8, 8],
            [13, 12, 11, 10, 9, 8],
            [13, 13, 12, 11, 10, 9],
            [9, 8, 8, 8, 8, 8],
        ];
        for (dr, row) in table.iter().enumerate() {
            for (offset, want) in row.iter().enumerate() {
                assert_eq!(Au915.rx1_dr(dr as u8, offset as u8), Ok(*want), "DR{dr} offset {offset}");
            }
        }
        assert_eq!(Au915.rx1_dr(0, 6), Err(RegionError::Rx1DrOffset(6)));
        assert_eq!(Au915.rx1_dr(8, 0), Err(RegionError::UnknownDr(8)));
    }

    #[test]
    fn rx1_frequency_is_the_downlink_channel_of_uplink_channel_mod_8() {
        let table = [
            (0, 915_200_000, 923_300_000),
            (7, 916_600_000, 927_500_000),
            (8, 916_800_000, 923_300_000),
            (15, 918_200_000, 927_500_000),
            (63, 927_800_000, 927_500_000),
            (64, 915_900_000, 923_300_000),
            (65, 917_500_000, 923_900_000),
            (71, 927_100_000, 927_500_000),
        ];
        for (ch, up, rx1) in table {
            assert_eq!(Au915.uplink_channel_index(up), Some(ch), "{up} Hz");
            assert_eq!(Au915.rx1_frequency(up), Ok(rx1), "channel {ch}");
        }
        assert_eq!(Au915.rx1_frequency(902_300_000), Err(RegionError::Frequency(902_300_000)), "a US915 channel");
    }

    #[test]
    fn rx2_and_delays_are_the_defaults() {
        assert_eq!(Au915.default_rx2_frequency(), 923_300_000);
        assert_eq!(Au915.default_rx2_dr(), 8);
        assert_eq!(Au915.default_rx1_delay(), Duration::from_secs(1));
        assert_eq!(Au915.join_accept_delay1(), Duration::from_secs(5));
        assert_eq!(Au915.join_accept_delay2(), Duration::from_secs(6));
    }

    #[test]
    fn max_payload_sizes_follow_section_2_8_6_with_and_without_dwell_time() {
        // (DR, without the uplink dwell-time limit, with it)
        let mp = |m, n| Some(MaxPayloadSize { m, n });
        let table = [
            (0, mp(59, 51), None),
            (1, mp(59, 51), None),
            (2, mp(59, 51), mp(19, 11)),
            (3, mp(123, 115), mp(61, 53)),
            (4, mp(250, 242), mp(133, 125)),
            (5, mp(250, 242), mp(250, 242)),
            (6, mp(250, 242), mp(250, 242)),
            (7, mp(58, 50), mp(58, 50)),
            (8, mp(61, 53), mp(61, 53)),
            (9, mp(137, 129), mp(137, 129)),
            (10, mp(250, 242), mp(250, 242)),
            (11, mp(250, 242), mp(250, 242)),
            (12, mp(250, 242), mp(250, 242)),
            (13, mp(250, 242), mp(250, 242)),
            (14, None, None),
        ];
        for (dr, off, on) in table {
            assert_eq!(Au915.max_payload_size_for(dr, false), off, "DR{dr} dwell time off");
            assert_eq!(Au915.max_payload_size_for(dr, true), on, "DR{dr} dwell time on");
            assert_eq!(Au915.max_payload_size(dr), on, "DR{dr} default");
        }
    }

    #[test]
    fn devices_start_with_the_uplink_dwell_limit_and_accept_tx_param_setup() {
        const { assert!(Au915::DEFAULT_UPLINK_DWELL_TIME) };
        const { assert!(!Au915::DEFAULT_DOWNLINK_DWELL_TIME) };
        assert!(Au915.implements_tx_param_setup());
    }

    #[test]
    fn channels_are_the_72_fixed_ones() {
        let ch = Au915.default_uplink_channels();
        assert_eq!(ch.len(), 72);
        assert_eq!(ch[0], Channel { frequency: 915_200_000, min_dr: 0, max_dr: 5 });
        assert_eq!(ch[63], Channel { frequency: 927_800_000, min_dr: 0, max_dr: 5 });
        assert_eq!(ch[64], Channel { frequency: 915_900_000, min_dr: 6, max_dr: 7 });
        assert_eq!(ch[71], Channel { frequency: 927_100_000, min_dr: 6, max_dr: 7 });
        assert_eq!(Au915.default_enabled_uplink_channels(), vec![8, 9, 10, 11, 12, 13, 14, 15, 65]);
        assert!(Au915.check_extra_channels(&[]).is_ok());
        assert!(Au915.check_extra_channels(&[916_800_000]).is_err());
    }

    #[test]
    fn cf_list_and_link_adr_masks_for_sub_band_2() {
        let enabled = Au915.default_enabled_uplink_channels();
        assert_eq!(Au915.cf_list(&[], &enabled).unwrap(), [0x00, 0xff, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0, 0, 0, 0, 0, 0x01]);
        assert_eq!(Au915.ch_mask_blocks(&enabled), vec![ChMaskBlock { cntl: 7, mask: 0x0002 }, ChMaskBlock { cntl: 0, mask: 0xff00 }]);
    }

    #[test]
    fn tx_power_runs_from_30_dbm_to_2_dbm_in_2_db_steps() {
        for index in 0..=14u8 {
            assert_eq!(Au915.tx_power_offset(index), Some(-2 * i32::from(index)));
        }
        assert_eq!(Au915.tx_power_offset(15), None);
        assert_eq!(Au915.max_tx_power_index(), 14);
    }

    #[test]
    fn adr_tops_out_at_sf7_on_125_khz_and_power_is_fixed() {
        assert_eq!(Au915.max_adr_dr(), 5);
        assert_eq!(Au915.required_snr(0), Some(-20.0));
        assert_eq!(Au915.sub_band(923_300_000), None);
        assert_eq!(Au915.downlink_tx_power(923_300_000), 30);
    }
}
