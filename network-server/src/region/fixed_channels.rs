//! What the fixed-channel regions share: channel masks as LinkADRReq blocks (72 channels for
//! US915/AU915, 96 for CN470) and as the type-1 CFList, and the 64 + 8 uplink / 8 downlink
//! channel grid of US915 and AU915.

use super::{ChMaskBlock, Channel, RegionError};

/// The 72-channel grid of US902-928 and AU915-928 (RP002-1.0.4 §2.5.2 and §2.8.2): 64 channels
/// of 125 kHz 200 kHz apart, 8 channels of 500 kHz 1.6 MHz apart, and 8 downlink channels of
/// 500 kHz 600 kHz apart from 923.3 MHz in both regions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grid72 {
    /// Channel 0 (Hz).
    pub first_125khz: u32,
    /// Channel 64 (Hz).
    pub first_500khz: u32,
    /// The data rates of channels 0-63 and of channels 64-71.
    pub dr_125khz: (u8, u8),
    pub dr_500khz: (u8, u8),
}

/// Downlink channel 0 of both US915 and AU915; the others follow every 600 kHz.
pub(super) const FIRST_DOWNLINK_500KHZ: u32 = 923_300_000;

impl Grid72 {
    pub fn channels(&self) -> Vec<Channel> {
        let narrow =
            (0..64u32).map(|i| Channel { frequency: self.first_125khz + i * 200_000, min_dr: self.dr_125khz.0, max_dr: self.dr_125khz.1 });
        let wide =
            (0..8u32).map(|i| Channel { frequency: self.first_500khz + i * 1_600_000, min_dr: self.dr_500khz.0, max_dr: self.dr_500khz.1 });
        narrow.chain(wide).collect()
    }

    /// The channel index of an uplink frequency: exact grid points only.
    pub fn index(&self, freq: u32) -> Option<u8> {
        let on_grid = |first: u32, step: u32, count: u32| {
            let offset = freq.checked_sub(first)?;
            (offset % step == 0 && offset / step < count).then_some(offset / step)
        };
        on_grid(self.first_125khz, 200_000, 64).or_else(|| on_grid(self.first_500khz, 1_600_000, 8).map(|i| 64 + i)).map(|i| i as u8)
    }

    /// RX1 opens on downlink channel (uplink channel mod 8) (RP002-1.0.4 §2.5.7, §2.8.7).
    pub fn rx1_frequency(&self, uplink_freq: u32) -> Result<u32, RegionError> {
        let index = self.index(uplink_freq).ok_or(RegionError::Frequency(uplink_freq))?;
        Ok(FIRST_DOWNLINK_500KHZ + u32::from(index % 8) * 600_000)
    }
}

/// The gateways of a fixed-channel network usually listen on one sub-band of eight 125 kHz
/// channels and its 500 kHz channel; sub-band 2 (channels 8-15 and 65) is the one The Things
/// Network and Helium use.
pub(super) fn sub_band_2() -> Vec<u8> {
    (8..=15).chain([65]).collect()
}

/// LinkADRReq blocks that leave exactly `enabled` (indices < 72) on, for the 72-channel
/// regions (RP002-1.0.4 §2.5.5 and §2.8.5): ChMaskCntl 0-3 set 16 channels of 125 kHz each,
/// 6 turns all 125 kHz channels on and 7 turns them all off, both then applying ChMask to
/// channels 64-71. Blocks are processed in order within one downlink, so the 6 or 7 block
/// comes first and blocks 0-3 follow only where they differ from that base; the shorter of
/// the two bases wins (ties go to 7, as ChirpStack sends).
///
/// ChMaskCntl 5 (one bit per sub-band, RP002-1.0.4) would be shorter still, but older
/// devices (LoRaMac-node's LoRaWAN 1.0.2 implementation, for one) treat it as RFU and reject
/// the whole request; ChMaskCntl 4 is never needed because 6 and 7 carry the 500 kHz mask.
pub(super) fn ch_mask_blocks_72(enabled: &[u8]) -> Vec<ChMaskBlock> {
    let mut narrow = [0u16; 4];
    let mut wide = 0u16;
    for &i in enabled.iter().filter(|&&i| i < 72) {
        match i {
            0..=63 => narrow[usize::from(i / 16)] |= 1 << (i % 16),
            _ => wide |= 1 << (i - 64),
        }
    }
    let from_base = |cntl: u8, base: u16| {
        let mut blocks = vec![ChMaskBlock { cntl, mask: wide }];
        blocks.extend((0..4u8).filter(|&k| narrow[usize::from(k)] != base).map(|k| ChMaskBlock { cntl: k, mask: narrow[usize::from(k)] }));
        blocks
    };
    let all_off = from_base(7, 0x0000);
    let all_on = from_base(6, 0xffff);
    if all_on.len() < all_off.len() {
        all_on
    } else {
        all_off
    }
}

/// LinkADRReq blocks that leave exactly `enabled` (indices < 96) on, for the 96-channel
/// CN470-510 plan (RP001 CN470-510 "LinkAdrReq command"): ChMaskCntl 0-5 set 16 channels each and 6 turns every channel on; 7 is RFU, so there is no "all off"
/// base and a set of channels is stated block by block unless "all on" plus the blocks that
/// differ from it is shorter.
pub(super) fn ch_mask_blocks_96(enabled: &[u8]) -> Vec<ChMaskBlock> {
    let mut masks = [0u16; 6];
    for &i in enabled.iter().filter(|&&i| i < 96) {
        masks[usize::from(i / 16)] |= 1 << (i % 16);
    }
    let explicit: Vec<ChMaskBlock> = (0..6u8).map(|k| ChMaskBlock { cntl: k, mask: masks[usize::from(k)] }).collect();
    let mut all_on = vec![ChMaskBlock { cntl: 6, mask: 0 }];
    all_on.extend(explicit.iter().filter(|b| b.mask != 0xffff).copied());
    if all_on.len() < explicit.len() {
        all_on
    } else {
        explicit
    }
}

/// A type-1 CFList (RP002-1.0.4 §2.5.4, §2.8.4, §2.9.4): `masks` little-endian 16-bit
/// channel masks (ChMask0 for channels 0-15 and so on), RFU zeros, then CFListType 1 in the
/// last byte. `None` when no channel is enabled: a device told to use no channel could not
/// transmit, so the join-accept goes without a CFList and the device keeps its defaults.
pub(super) fn channel_mask_cf_list(enabled: &[u8], masks: usize) -> Option<[u8; 16]> {
    let channels = masks * 16;
    let enabled: Vec<usize> = enabled.iter().map(|&i| usize::from(i)).filter(|&i| i < channels).collect();
    if enabled.is_empty() {
        return None;
    }
    let mut cf = [0u8; 16];
    for i in enabled {
        cf[i / 8] |= 1 << (i % 8);
    }
    cf[15] = 1;
    Some(cf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cntl: u8, mask: u16) -> ChMaskBlock {
        ChMaskBlock { cntl, mask }
    }

    #[test]
    fn chirpstack_lrwn_us915_link_adr_examples_give_the_same_blocks() {
        // lrwn/src/region/us915.rs test_get_link_adr_req_payloads: channels 0-7 + 64, and
        // channels 0-15 + 64 + 65.
        let first_eight: Vec<u8> = (0..8).chain([64]).collect();
        assert_eq!(ch_mask_blocks_72(&first_eight), vec![block(7, 0x0001), block(0, 0x00ff)]);
        let first_sixteen: Vec<u8> = (0..16).chain([64, 65]).collect();
        assert_eq!(ch_mask_blocks_72(&first_sixteen), vec![block(7, 0x0003), block(0, 0xffff)]);
    }

    #[test]
    fn sub_band_2_is_all_125_khz_off_then_channels_8_to_15() {
        assert_eq!(sub_band_2(), vec![8, 9, 10, 11, 12, 13, 14, 15, 65]);
        assert_eq!(ch_mask_blocks_72(&sub_band_2()), vec![block(7, 0x0002), block(0, 0xff00)]);
    }

    #[test]
    fn every_sub_band_takes_two_blocks() {
        for sb in 0..8u8 {
            let enabled: Vec<u8> = (sb * 8..sb * 8 + 8).chain([64 + sb]).collect();
            let half = if sb % 2 == 0 { 0x00ff } else { 0xff00 };
            assert_eq!(ch_mask_blocks_72(&enabled), vec![block(7, 1 << sb), block(sb / 2, half)], "sub-band {}", sb + 1);
        }
    }

    #[test]
    fn all_channels_take_one_block_with_all_125_khz_on() {
        let all: Vec<u8> = (0..72).collect();
        assert_eq!(ch_mask_blocks_72(&all), vec![block(6, 0x00ff)]);
        let all_125_no_500: Vec<u8> = (0..64).collect();
        assert_eq!(ch_mask_blocks_72(&all_125_no_500), vec![block(6, 0x0000)]);
    }

    #[test]
    fn the_shorter_base_wins() {
        // All but channel 20: base 6 and one block for 16-31 beats base 7 and four blocks.
        let enabled: Vec<u8> = (0..72).filter(|&i| i != 20).collect();
        assert_eq!(ch_mask_blocks_72(&enabled), vec![block(6, 0x00ff), block(1, 0xffef)]);
        // Two sub-bands in different 16-channel blocks.
        let enabled: Vec<u8> = (8..16).chain(16..24).chain([65, 66]).collect();
        assert_eq!(ch_mask_blocks_72(&enabled), vec![block(7, 0x0006), block(0, 0xff00), block(1, 0x00ff)]);
        // Only 500 kHz channels.
        assert_eq!(ch_mask_blocks_72(&[64, 71]), vec![block(7, 0x0081)]);
        // Nothing on (a device would refuse it, but the encoding is still exact).
        assert_eq!(ch_mask_blocks_72(&[]), vec![block(7, 0x0000)]);
        // Indices past 71 do not exist and are ignored.
        assert_eq!(ch_mask_blocks_72(&[0, 72, 200]), vec![block(7, 0x0000), block(0, 0x0001)]);
    }

    /// What a device does with the blocks (LoRaWAN 1.0.4 §5.3, RP002-1.0.4 §2.5.5): applying
    /// them in order must leave exactly the requested channels on.
    fn apply(blocks: &[ChMaskBlock]) -> Vec<u8> {
        let mut on = [false; 72];
        for b in blocks {
            match b.cntl {
                0..=4 => {
                    for bit in 0..16 {
                        let i = usize::from(b.cntl) * 16 + bit;
                        if i < 72 {
                            on[i] = b.mask & (1 << bit) != 0;
                        }
                    }
                }
                6 | 7 => {
                    on[..64].fill(b.cntl == 6);
                    for bit in 0..8 {
                        on[64 + bit] = b.mask & (1 << bit) != 0;
                    }
                }
                other => panic!("ChMaskCntl {other} is not sent"),
            }
        }
        (0..72u8).filter(|&i| on[usize::from(i)]).collect()
    }

    #[test]
    fn applying_the_blocks_leaves_exactly_the_enabled_channels_on() {
        let cases: Vec<Vec<u8>> = vec![
            sub_band_2(),
            (0..72).collect(),
            (0..64).step_by(3).chain([64, 70]).collect(),
            (32..48).collect(),
            vec![0, 15, 16, 31, 32, 47, 48, 63, 64, 71],
            (0..72).filter(|i| i % 16 != 5).collect(),
        ];
        for enabled in cases {
            assert_eq!(apply(&ch_mask_blocks_72(&enabled)), enabled);
        }
    }

    #[test]
    fn the_96_channel_plan_states_every_block_unless_all_on_is_shorter() {
        let first_eight: Vec<u8> = (0..8).collect();
        let want: Vec<ChMaskBlock> = [0x00ff, 0, 0, 0, 0, 0].iter().enumerate().map(|(k, &m)| block(k as u8, m)).collect();
        assert_eq!(ch_mask_blocks_96(&first_eight), want);
        let all: Vec<u8> = (0..96).collect();
        assert_eq!(ch_mask_blocks_96(&all), vec![block(6, 0)]);
        // All but channels 6, 38 and 45 (the ChirpStack lrwn CN470 example): blocks 0 and 2
        // differ from "all on".
        let enabled: Vec<u8> = (0..96).filter(|i| ![6, 38, 45].contains(i)).collect();
        assert_eq!(ch_mask_blocks_96(&enabled), vec![block(6, 0), block(0, 0xffbf), block(2, 0xdfbf)]);
        assert_eq!(ch_mask_blocks_96(&[96, 200]).len(), 6, "indices past 95 are ignored");
    }

    #[test]
    fn type_1_cf_list_has_five_masks_rfu_and_type_1() {
        let cf = channel_mask_cf_list(&sub_band_2(), 5).unwrap();
        // ChMask0 = 0xff00 and ChMask4 = 0x0002, little-endian; bytes 10-14 RFU.
        assert_eq!(cf, [0x00, 0xff, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0, 0, 0, 0, 0, 0x01]);
        let all: Vec<u8> = (0..72).collect();
        let cf = channel_mask_cf_list(&all, 5).unwrap();
        assert_eq!(cf, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0, 0, 0x01]);
        assert_eq!(channel_mask_cf_list(&[], 5), None);
        assert_eq!(channel_mask_cf_list(&[80], 5), None, "channel 80 does not exist with five masks");
    }

    #[test]
    fn type_1_cf_list_with_six_masks_covers_96_channels() {
        let cf = channel_mask_cf_list(&[0, 95], 6).unwrap();
        assert_eq!(cf, [0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0x01]);
    }

    #[test]
    fn grid_indices_and_rx1_follow_the_72_channel_plan() {
        let grid = Grid72 { first_125khz: 902_300_000, first_500khz: 903_000_000, dr_125khz: (0, 3), dr_500khz: (4, 6) };
        let channels = grid.channels();
        assert_eq!(channels.len(), 72);
        for (i, c) in channels.iter().enumerate() {
            assert_eq!(grid.index(c.frequency), Some(i as u8));
        }
        assert_eq!(grid.index(902_300_001), None);
        assert_eq!(grid.index(902_100_000), None);
        assert_eq!(grid.index(915_100_000), None, "one past channel 63");
        assert_eq!(grid.index(915_800_000), None, "one past channel 71");
        assert_eq!(grid.rx1_frequency(902_300_000), Ok(923_300_000));
        assert_eq!(grid.rx1_frequency(915_100_000), Err(RegionError::Frequency(915_100_000)));
    }
}
