//! Pieces shared by the dynamic-channel regions (RP002-1.0.4 §2.6, 2.7, 2.10-2.13 and the
//! 2.4 GHz plan): they all carry extra channels in a type 0 CFList, address at most 16
//! channels with ChMaskCntl 0, and name their data rates the same way.

use std::ops::RangeInclusive;

use super::{ChMaskBlock, DataRate, MaxPayloadSize, Modulation};

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

/// The RX1 data rate of the regions whose table is "uplink DR minus offset, never below
/// DR0", with offsets 0..=max_offset.
pub(super) fn rx1_dr_minus_offset(uplink_dr: u8, offset: u8, max_offset: u8, max_dr: u8) -> Result<u8, super::RegionError> {
    if offset > max_offset {
        return Err(super::RegionError::Rx1DrOffset(offset));
    }
    if uplink_dr > max_dr {
        return Err(super::RegionError::UnknownDr(uplink_dr));
    }
    Ok(uplink_dr.saturating_sub(offset))
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
