//! CN470-510, the 96-channel plan of the LoRaWAN Regional Parameters before RP002 (RP001,
//! up to v1.1rB, "CN470-510 MHz band"), which ChirpStack and The Things Stack use for CN470.
//!
//! RP002-1.0.4 §2.9 replaces it with four other plans (20 MHz and 26 MHz wide, each for
//! antenna type A and B) whose RX2 frequency for an OTAA device depends on the join channel
//! it used; they are not implemented here (see docs/regions.md). The data-rate, RX1
//! data-rate and TX power tables below are RP001's, and they agree with RP002 where RP002
//! defines the same data rates, except that RP002 gives DR0 no payload.

use std::time::Duration;

use super::fixed_channels::{ch_mask_blocks_96, channel_mask_cf_list};
use super::{erp_to_eirp_dbm, CfListType, ChMaskBlock, Channel, DataRate, MaxPayloadSize, Modulation, Region, RegionError, SubBand};

/// CN470-510 band plan (RP001 96-channel plan).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cn470;

/// RP001 CN470-510 "channel frequencies": 96 uplink channels at 470.3 + 0.2·n MHz, DR0-5.
const FIRST_UPLINK: u32 = 470_300_000;
const UPLINK_CHANNELS: u32 = 96;

/// RP001 CN470-510 "channel frequencies": 48 downlink channels at 500.3 + 0.2·n MHz.
const FIRST_DOWNLINK: u32 = 500_300_000;
const DOWNLINK_CHANNELS: u32 = 48;

/// Downlink power in dBm EIRP: China's rules for 470-510 MHz allow 50 mW (17 dBm) e.r.p.,
/// which is the 19.15 dBm max EIRP of RP001 CN470-510 "TXPower table" (rounded down:
/// 19 dBm, as ChirpStack's `lrwn` CN470 region sends).
fn downlink_tx_power_eirp() -> i32 {
    erp_to_eirp_dbm(17)
}

impl Region for Cn470 {
    fn config_id(&self) -> &'static str {
        "cn470"
    }

    fn common_name(&self) -> &'static str {
        "CN470"
    }

    /// RP001 CN470-510 "data rate table": DR0-5 are LoRa SF12-SF7 at 125 kHz, up and
    /// down; DR6-15 are RFU.
    fn data_rate(&self, dr: u8) -> Option<DataRate> {
        let spreading_factor = match dr {
            0..=5 => 12 - dr,
            _ => return None,
        };
        Some(DataRate { modulation: Modulation::Lora { spreading_factor, bandwidth: 125_000 }, uplink: true, downlink: true })
    }

    /// RP001 CN470-510 "receive windows": RX1 on downlink channel (uplink channel mod 48),
    /// 500.3 + 0.2·n MHz.
    fn rx1_frequency(&self, uplink_freq: u32) -> Result<u32, RegionError> {
        let index = self.uplink_channel_index(uplink_freq).ok_or(RegionError::Frequency(uplink_freq))?;
        Ok(FIRST_DOWNLINK + (u32::from(index) % DOWNLINK_CHANNELS) * 200_000)
    }

    /// RP001 CN470-510 "receive windows": one DR down per offset unit, never below DR0,
    /// offsets 0-5.
    fn rx1_dr(&self, uplink_dr: u8, offset: u8) -> Result<u8, RegionError> {
        if offset > self.max_rx1_dr_offset() {
            return Err(RegionError::Rx1DrOffset(offset));
        }
        if uplink_dr > 5 {
            return Err(RegionError::UnknownDr(uplink_dr));
        }
        Ok(uplink_dr.saturating_sub(offset))
    }

    fn max_rx1_dr_offset(&self) -> u8 {
        5
    }

    /// RP001 CN470-510 "receive windows": RX2 at 505.3 MHz, DR0.
    fn default_rx2_frequency(&self) -> u32 {
        505_300_000
    }

    fn default_rx2_dr(&self) -> u8 {
        0
    }

    /// RP001 CN470-510 "default settings": RECEIVE_DELAY1 1 s, JOIN_ACCEPT_DELAY1 5 s,
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

    /// RP001 CN470-510 "maximum payload size" (not repeater compatible).
    fn max_payload_size(&self, dr: u8) -> Option<MaxPayloadSize> {
        let (m, n) = match dr {
            0..=2 => (59, 51),
            3 => (123, 115),
            4 | 5 => (250, 242),
            _ => return None,
        };
        Some(MaxPayloadSize { m, n })
    }

    fn downlink_tx_power(&self, _freq: u32) -> i32 {
        downlink_tx_power_eirp()
    }

    /// RP001 CN470-510 "TXPower table": index 0 = max EIRP (19.15 dBm), 2 dB less per
    /// step, 0..=7.
    fn tx_power_offset(&self, index: u8) -> Option<i32> {
        (index <= 7).then(|| -2 * i32::from(index))
    }

    fn max_tx_power_index(&self) -> u8 {
        7
    }

    /// DR5 (SF7BW125), the fastest data rate.
    fn max_adr_dr(&self) -> u8 {
        5
    }

    fn cf_list_type(&self) -> Option<CfListType> {
        Some(CfListType::ChannelMask)
    }

    /// Type 1, ChMask0-5 for channels 0-95 (RP001 CN470-510 "CFList").
    fn cf_list(&self, _extra: &[u32], enabled: &[u8]) -> Option<[u8; 16]> {
        channel_mask_cf_list(enabled, 6)
    }

    fn default_uplink_channels(&self) -> Vec<Channel> {
        (0..UPLINK_CHANNELS).map(|i| Channel { frequency: FIRST_UPLINK + i * 200_000, min_dr: 0, max_dr: 5 }).collect()
    }

    fn uplink_channel_index(&self, freq: u32) -> Option<u8> {
        let offset = freq.checked_sub(FIRST_UPLINK)?;
        (offset % 200_000 == 0 && offset / 200_000 < UPLINK_CHANNELS).then_some((offset / 200_000) as u8)
    }

    /// Channels 0-7 (470.3-471.7 MHz), the eight an 8-channel gateway listens on in
    /// ChirpStack's default CN470 configuration (`region_cn470_0.toml`).
    fn default_enabled_uplink_channels(&self) -> Vec<u8> {
        (0..8).collect()
    }

    fn uplink_channels(&self) -> Vec<Channel> {
        self.default_uplink_channels()
    }

    fn default_extra_channels(&self) -> Vec<u32> {
        Vec::new()
    }

    /// There are no extra channels; DR0-5 is what any would carry.
    fn extra_channel_dr_range(&self) -> (u8, u8) {
        (0, 5)
    }

    /// RP001 CN470-510 "channel frequencies": the channels are fixed (NewChannelReq is not
    /// implemented).
    fn check_extra_channels(&self, extra: &[u32]) -> Result<(), String> {
        if extra.is_empty() {
            Ok(())
        } else {
            Err("CN470 has fixed channels and no extra ones; leave it empty (use enabled channels instead)".into())
        }
    }

    fn ch_mask_blocks(&self, enabled: &[u8]) -> Vec<ChMaskBlock> {
        ch_mask_blocks_96(enabled)
    }

    /// RP001 sets no duty-cycle limit for CN470-510.
    fn sub_band(&self, _freq: u32) -> Option<SubBand> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_chirpstack_ones() {
        assert_eq!(Cn470.config_id(), "cn470");
        assert_eq!(Cn470.common_name(), "CN470");
    }

    #[test]
    fn data_rates_are_sf12_to_sf7_at_125_khz_both_ways() {
        for (dr, sf) in [(0, 12), (1, 11), (2, 10), (3, 9), (4, 8), (5, 7)] {
            let m = Modulation::Lora { spreading_factor: sf, bandwidth: 125_000 };
            assert_eq!(Cn470.data_rate(dr), Some(DataRate { modulation: m, uplink: true, downlink: true }), "DR{dr}");
            assert_eq!(Cn470.dr_for(&m), Some(dr));
            assert_eq!(Cn470.downlink_dr_for(&m), Some(dr));
        }
        for dr in 6..=15 {
            assert_eq!(Cn470.data_rate(dr), None, "DR{dr} is RFU");
        }
        assert_eq!(Cn470.dr_for(&Modulation::Lora { spreading_factor: 7, bandwidth: 500_000 }), None);
    }

    #[test]
    fn rx1_data_rate_follows_the_mapping_for_every_dr_and_offset() {
        // Rows: uplink DR0..DR5; columns: RX1DROffset 0..5 (RP001 CN470-510 "receive windows").
        let table: [[u8; 6]; 6] =
            [[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [2, 1, 0, 0, 0, 0], [3, 2, 1, 0, 0, 0], [4, 3, 2, 1, 0, 0], [5, 4, 3, 2, 1, 0]];
        for (dr, row) in table.iter().enumerate() {
            for (offset, want) in row.iter().enumerate() {
                assert_eq!(Cn470.rx1_dr(dr as u8, offset as u8), Ok(*want), "DR{dr} offset {offset}");
            }
        }
        assert_eq!(Cn470.rx1_dr(5, 6), Err(RegionError::Rx1DrOffset(6)));
        assert_eq!(Cn470.rx1_dr(6, 0), Err(RegionError::UnknownDr(6)));
    }

    #[test]
    fn rx1_frequency_is_the_downlink_channel_of_uplink_channel_mod_48() {
        // (uplink channel, uplink Hz, RX1 Hz); channels 0 and 95 are ChirpStack lrwn's cases.
        let table = [
            (0, 470_300_000, 500_300_000),
            (1, 470_500_000, 500_500_000),
            (7, 471_700_000, 501_700_000),
            (47, 479_700_000, 509_700_000),
            (48, 479_900_000, 500_300_000),
            (49, 480_100_000, 500_500_000),
            (95, 489_300_000, 509_700_000),
        ];
        for (ch, up, rx1) in table {
            assert_eq!(Cn470.uplink_channel_index(up), Some(ch), "{up} Hz");
            assert_eq!(Cn470.rx1_frequency(up), Ok(rx1), "channel {ch}");
        }
        assert_eq!(Cn470.rx1_frequency(489_500_000), Err(RegionError::Frequency(489_500_000)), "one past channel 95");
        assert_eq!(Cn470.rx1_frequency(470_400_000), Err(RegionError::Frequency(470_400_000)), "between channels");
        assert_eq!(Cn470.rx1_frequency(470_100_000), Err(RegionError::Frequency(470_100_000)), "below channel 0");
    }

    #[test]
    fn rx2_and_delays_are_the_defaults() {
        assert_eq!(Cn470.default_rx2_frequency(), 505_300_000);
        assert_eq!(Cn470.default_rx2_dr(), 0);
        assert_eq!(Cn470.default_rx1_delay(), Duration::from_secs(1));
        assert_eq!(Cn470.join_accept_delay1(), Duration::from_secs(5));
        assert_eq!(Cn470.join_accept_delay2(), Duration::from_secs(6));
    }

    #[test]
    fn max_payload_sizes_follow_rp001() {
        let want = [(0, 59, 51), (1, 59, 51), (2, 59, 51), (3, 123, 115), (4, 250, 242), (5, 250, 242)];
        for (dr, m, n) in want {
            assert_eq!(Cn470.max_payload_size(dr), Some(MaxPayloadSize { m, n }), "DR{dr}");
        }
        assert_eq!(Cn470.max_payload_size(6), None);
    }

    #[test]
    fn channels_are_the_96_fixed_ones_and_gateways_listen_on_0_to_7() {
        let ch = Cn470.default_uplink_channels();
        assert_eq!(ch.len(), 96);
        assert_eq!(ch[0], Channel { frequency: 470_300_000, min_dr: 0, max_dr: 5 });
        assert_eq!(ch[95], Channel { frequency: 489_300_000, min_dr: 0, max_dr: 5 });
        assert_eq!(Cn470.default_enabled_uplink_channels(), vec![0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(Cn470.check_extra_channels(&[]).is_ok());
        assert!(Cn470.check_extra_channels(&[470_300_000]).is_err());
    }

    #[test]
    fn cf_list_is_type_1_with_six_masks() {
        let cf = Cn470.cf_list(&[], &Cn470.default_enabled_uplink_channels()).unwrap();
        assert_eq!(cf, [0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
    }

    #[test]
    fn link_adr_masks_state_the_six_blocks_for_channels_0_to_7() {
        let blocks = Cn470.ch_mask_blocks(&Cn470.default_enabled_uplink_channels());
        let masks: Vec<(u8, u16)> = blocks.iter().map(|b| (b.cntl, b.mask)).collect();
        assert_eq!(masks, vec![(0, 0x00ff), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]);
    }

    #[test]
    fn tx_power_steps_are_2_db_from_19_dbm() {
        assert_eq!(Cn470.tx_power_offset(0), Some(0));
        assert_eq!(Cn470.tx_power_offset(7), Some(-14));
        assert_eq!(Cn470.tx_power_offset(8), None);
        assert_eq!(Cn470.max_tx_power_index(), 7);
        assert_eq!(Cn470.downlink_tx_power(505_300_000), 19);
        assert_eq!(Cn470.sub_band(505_300_000), None);
    }

    #[test]
    fn adr_tops_out_at_sf7() {
        assert_eq!(Cn470.max_adr_dr(), 5);
        assert_eq!(Cn470.required_snr(5), Some(-7.5));
    }
}
