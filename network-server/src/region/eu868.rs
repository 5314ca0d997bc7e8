//! EU863-870 (RP002-1.0.3 §2.4).

use std::time::Duration;

use super::{
    CfListType, ChMaskBlock, Channel, DataRate, DutyCycle, LrFhssCodingRate, MaxPayloadSize, Modulation, Region, RegionError, SubBand,
    SubBandId,
};

/// EU863-870 band plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Eu868;

fn lora(spreading_factor: u8, bandwidth: u32) -> DataRate {
    DataRate { modulation: Modulation::Lora { spreading_factor, bandwidth }, uplink: true, downlink: true }
}

fn lr_fhss(coding_rate: LrFhssCodingRate, occupied_channel_width: u32) -> DataRate {
    DataRate { modulation: Modulation::LrFhss { coding_rate, occupied_channel_width }, uplink: true, downlink: false }
}

/// Band edges (RP002-1.0.3 §2.4.2).
const BAND: std::ops::RangeInclusive<u32> = 863_000_000..=870_000_000;

/// The three channels every EU868 device starts with (RP002-1.0.3 §2.4.2).
const DEFAULT_CHANNELS: [u32; 3] = [868_100_000, 868_300_000, 868_500_000];

/// Default extra channels (`network.extra_channels`): the usual 8-channel gateway plan.
const EXTRA_CHANNELS: [u32; 5] = [867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000];

/// The sub-bands ETSI EN 300 220-2 V3.1.1 Annex B (ERC/REC 70-03 Annex 1) opens to
/// non-specific short range devices in 863-870 MHz, with the duty cycle and e.r.p. each allows
/// without listen-before-talk: K 863-865 MHz 0.1 % 25 mW, L 865-868 MHz 1 % 25 mW,
/// M 868.0-868.6 MHz 1 % 25 mW, N 868.7-869.2 MHz 0.1 % 25 mW, P 869.4-869.65 MHz 10 % 500 mW,
/// R 869.7-870.0 MHz 1 % 25 mW. RP002-1.0.4 §2.4 defers to these rules; The Things Stack's
/// EU_863_870 band plan uses the same table. 25 mW is 14 dBm and 500 mW 27 dBm. Ranges are
/// `[min, max)` in Hz; the gaps between them are reserved for alarms.
const SUB_BANDS: [(u32, u32, SubBand); 6] = [
    (863_000_000, 865_000_000, etsi(SubBandId::EtsiK, 1, 14)),
    (865_000_000, 868_000_000, etsi(SubBandId::EtsiL, 10, 14)),
    (868_000_000, 868_600_000, etsi(SubBandId::EtsiM, 10, 14)),
    (868_700_000, 869_200_000, etsi(SubBandId::EtsiN, 1, 14)),
    (869_400_000, 869_650_000, etsi(SubBandId::EtsiP, 100, 27)),
    (869_700_000, 870_000_000, etsi(SubBandId::EtsiR, 10, 14)),
];

/// Where LoRaWAN should never transmit; if configured to, the strictest general limit holds.
const OTHER: SubBand = etsi(SubBandId::EtsiOther, 1, 14);

const fn etsi(id: SubBandId, permille: u16, max_erp_dbm: i32) -> SubBand {
    SubBand { id, duty_cycle: DutyCycle::from_permille(permille), max_erp_dbm }
}

impl Region for Eu868 {
    fn config_id(&self) -> &'static str {
        "eu868"
    }

    fn common_name(&self) -> &'static str {
        "EU868"
    }

    /// RP002-1.0.3 §2.4.3. DR12-14 are RFU; DR15 is reserved by LoRaWAN.
    fn data_rate(&self, dr: u8) -> Option<DataRate> {
        use LrFhssCodingRate::*;
        Some(match dr {
            0 => lora(12, 125_000),
            1 => lora(11, 125_000),
            2 => lora(10, 125_000),
            3 => lora(9, 125_000),
            4 => lora(8, 125_000),
            5 => lora(7, 125_000),
            6 => lora(7, 250_000),
            7 => DataRate { modulation: Modulation::Fsk { bitrate: 50_000 }, uplink: true, downlink: true },
            8 => lr_fhss(OneThird, 137_000),
            9 => lr_fhss(TwoThirds, 137_000),
            10 => lr_fhss(OneThird, 336_000),
            11 => lr_fhss(TwoThirds, 336_000),
            _ => return None,
        })
    }

    /// RP002-1.0.3 §2.4.7: RX1 uses the uplink's frequency.
    fn rx1_frequency(&self, uplink_freq: u32) -> Result<u32, RegionError> {
        if BAND.contains(&uplink_freq) {
            Ok(uplink_freq)
        } else {
            Err(RegionError::Frequency(uplink_freq))
        }
    }

    /// RP002-1.0.3 §2.4.7 (RX1 data-rate mapping). LoRa/FSK uplinks step down one DR per
    /// offset unit, never below DR0; LR-FHSS uplinks (DR8-11) map to the LoRa rate of
    /// comparable sensitivity.
    fn rx1_dr(&self, uplink_dr: u8, offset: u8) -> Result<u8, RegionError> {
        if offset > self.max_rx1_dr_offset() {
            return Err(RegionError::Rx1DrOffset(offset));
        }
        match uplink_dr {
            0..=7 => Ok(uplink_dr.saturating_sub(offset)),
            8 | 10 => Ok(1u8.saturating_sub(offset)),
            9 | 11 => Ok(2u8.saturating_sub(offset)),
            _ => Err(RegionError::UnknownDr(uplink_dr)),
        }
    }

    fn max_rx1_dr_offset(&self) -> u8 {
        5
    }

    /// RP002-1.0.3 §2.4.7: RX2 at 869.525 MHz, DR0.
    fn default_rx2_frequency(&self) -> u32 {
        869_525_000
    }

    fn default_rx2_dr(&self) -> u8 {
        0
    }

    /// RP002-1.0.3 §2.4.8 default settings: RECEIVE_DELAY1 1 s, JOIN_ACCEPT_DELAY1 5 s,
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

    /// RP002-1.0.3 §2.4.6 (not repeater compatible).
    fn max_payload_size(&self, dr: u8) -> Option<MaxPayloadSize> {
        let (m, n) = match dr {
            0..=2 => (59, 51),
            3 => (123, 115),
            4..=7 => (250, 242),
            8 | 10 => (58, 50),
            9 | 11 => (123, 115),
            _ => return None,
        };
        Some(MaxPayloadSize { m, n })
    }

    /// The sub-band's maximum as EIRP (RP002-1.0.4 §2.4): 29 dBm in 869.4-869.65 MHz (RX2),
    /// 16 dBm elsewhere, as ChirpStack's `lrwn` EU868 region sends. Gateways whose antenna
    /// gain or power table differ are set with `network.downlink_tx_power`.
    fn downlink_tx_power(&self, freq: u32) -> i32 {
        self.sub_band(freq).unwrap_or(OTHER).max_eirp_dbm()
    }

    /// RP002-1.0.3 §2.4.3 (TXPower encoding): index 0 = max EIRP, each step 2 dB less, 0..=7.
    fn tx_power_offset(&self, index: u8) -> Option<i32> {
        (index <= 7).then(|| -2 * i32::from(index))
    }

    /// RP002-1.0.3 §2.4.3: TXPower 8-14 are RFU.
    fn max_tx_power_index(&self) -> u8 {
        7
    }

    /// DR5 (SF7BW125): DR6 (SF7BW250) and DR7 (FSK) are not on the default channels and
    /// usually not on the CFList channels a gateway listens to.
    fn max_adr_dr(&self) -> u8 {
        5
    }

    fn cf_list_type(&self) -> Option<CfListType> {
        Some(CfListType::Frequencies)
    }

    /// RP002-1.0.3 §2.4.4: CFList type 0, five 24-bit frequencies in units of 100 Hz,
    /// little-endian, then CFListType 0x00. Every default channel is always enabled.
    fn cf_list(&self, extra: &[u32], _enabled: &[u8]) -> Option<[u8; 16]> {
        if extra.is_empty() {
            return None;
        }
        let mut cf = [0u8; 16];
        for (i, f) in extra.iter().take(5).enumerate() {
            cf[i * 3..i * 3 + 3].copy_from_slice(&(f / 100).to_le_bytes()[..3]);
        }
        Some(cf)
    }

    fn default_uplink_channels(&self) -> Vec<Channel> {
        DEFAULT_CHANNELS.iter().map(|&frequency| Channel { frequency, min_dr: 0, max_dr: 5 }).collect()
    }

    fn uplink_channels(&self) -> Vec<Channel> {
        let mut all = self.default_uplink_channels();
        all.extend(EXTRA_CHANNELS.iter().map(|&frequency| Channel { frequency, min_dr: 0, max_dr: 5 }));
        all
    }

    fn default_extra_channels(&self) -> Vec<u32> {
        EXTRA_CHANNELS.to_vec()
    }

    /// DR0-5, as the default channels (RP002-1.0.3 §2.4.2).
    fn extra_channel_dr_range(&self) -> (u8, u8) {
        (0, 5)
    }

    /// At most five (the CFList holds five, RP002-1.0.3 §2.4.4), inside the band, distinct,
    /// not a default channel, and a multiple of 100 Hz (the on-air unit).
    fn check_extra_channels(&self, extra: &[u32]) -> Result<(), String> {
        if extra.len() > 5 {
            return Err(format!("at most 5 channels fit the EU868 CFList, got {}", extra.len()));
        }
        for (i, f) in extra.iter().enumerate() {
            if !BAND.contains(f) {
                return Err(format!("{f} Hz is outside the EU868 band (863-870 MHz)"));
            }
            if f % 100 != 0 {
                return Err(format!("{f} Hz is not a multiple of 100 Hz"));
            }
            if DEFAULT_CHANNELS.contains(f) {
                return Err(format!("{f} Hz is a default channel"));
            }
            if extra[..i].contains(f) {
                return Err(format!("{f} Hz is listed twice"));
            }
        }
        Ok(())
    }

    /// Up to 16 channels: one block with ChMaskCntl 0 (RP002-1.0.3 §2.4.5).
    fn ch_mask_blocks(&self, enabled: &[u8]) -> Vec<ChMaskBlock> {
        let mask = enabled.iter().filter(|&&i| i < 16).fold(0u16, |m, &i| m | (1 << i));
        vec![ChMaskBlock { cntl: 0, mask }]
    }

    /// Always `Some`: all of EU863-870 is duty-cycle regulated.
    fn sub_band(&self, freq: u32) -> Option<SubBand> {
        let band = SUB_BANDS.iter().find(|(min, max, _)| (*min..*max).contains(&freq)).map_or(OTHER, |(_, _, b)| *b);
        Some(band)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_chirpstack_ones() {
        assert_eq!(Eu868.config_id(), "eu868");
        assert_eq!(Eu868.common_name(), "EU868");
    }

    #[test]
    fn data_rates_follow_rp002_section_2_4_3() {
        let lora = |dr| match Eu868.data_rate(dr).unwrap().modulation {
            Modulation::Lora { spreading_factor, bandwidth } => (spreading_factor, bandwidth),
            other => panic!("DR{dr} is {other:?}"),
        };
        assert_eq!(lora(0), (12, 125_000));
        assert_eq!(lora(1), (11, 125_000));
        assert_eq!(lora(2), (10, 125_000));
        assert_eq!(lora(3), (9, 125_000));
        assert_eq!(lora(4), (8, 125_000));
        assert_eq!(lora(5), (7, 125_000));
        assert_eq!(lora(6), (7, 250_000));
        assert_eq!(Eu868.data_rate(7).unwrap().modulation, Modulation::Fsk { bitrate: 50_000 });
        for dr in 8..=11 {
            let d = Eu868.data_rate(dr).unwrap();
            assert!(matches!(d.modulation, Modulation::LrFhss { .. }));
            assert!(!d.downlink, "LR-FHSS DR{dr} is uplink only");
        }
        for dr in 12..=15 {
            assert_eq!(Eu868.data_rate(dr), None);
        }
    }

    #[test]
    fn dr_for_round_trips_every_defined_data_rate() {
        for dr in 0..=11 {
            let m = Eu868.data_rate(dr).unwrap().modulation;
            assert_eq!(Eu868.dr_for(&m), Some(dr));
        }
        assert_eq!(Eu868.dr_for(&Modulation::Lora { spreading_factor: 7, bandwidth: 500_000 }), None);
        assert_eq!(Eu868.dr_for(&Modulation::Fsk { bitrate: 9600 }), None);
    }

    #[test]
    fn rx1_data_rate_follows_the_mapping_for_every_dr_and_offset() {
        // Rows: uplink DR0..DR11; columns: RX1DROffset 0..5 (RP002-1.0.3 §2.4.7).
        let table: [[u8; 6]; 12] = [
            [0, 0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 0],
            [2, 1, 0, 0, 0, 0],
            [3, 2, 1, 0, 0, 0],
            [4, 3, 2, 1, 0, 0],
            [5, 4, 3, 2, 1, 0],
            [6, 5, 4, 3, 2, 1],
            [7, 6, 5, 4, 3, 2],
            [1, 0, 0, 0, 0, 0],
            [2, 1, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 0],
            [2, 1, 0, 0, 0, 0],
        ];
        for (dr, row) in table.iter().enumerate() {
            for (offset, want) in row.iter().enumerate() {
                assert_eq!(Eu868.rx1_dr(dr as u8, offset as u8), Ok(*want), "DR{dr} offset {offset}");
                assert!(Eu868.data_rate(*want).unwrap().downlink);
            }
        }
        assert_eq!(Eu868.rx1_dr(5, 6), Err(RegionError::Rx1DrOffset(6)));
        assert_eq!(Eu868.rx1_dr(12, 0), Err(RegionError::UnknownDr(12)));
    }

    #[test]
    fn rx1_uses_the_uplink_frequency_and_rx2_the_region_default() {
        for ch in Eu868.uplink_channels() {
            assert_eq!(Eu868.rx1_frequency(ch.frequency), Ok(ch.frequency));
        }
        assert_eq!(Eu868.rx1_frequency(915_000_000), Err(RegionError::Frequency(915_000_000)));
        assert_eq!(Eu868.default_rx2_frequency(), 869_525_000);
        assert_eq!(Eu868.default_rx2_dr(), 0);
        assert_eq!(Eu868.default_rx1_delay(), Duration::from_secs(1));
        assert_eq!(Eu868.join_accept_delay1(), Duration::from_secs(5));
        assert_eq!(Eu868.join_accept_delay2(), Duration::from_secs(6));
    }

    #[test]
    fn max_payload_sizes_follow_section_2_4_6() {
        let want = [
            (59, 51),
            (59, 51),
            (59, 51),
            (123, 115),
            (250, 242),
            (250, 242),
            (250, 242),
            (250, 242),
            (58, 50),
            (123, 115),
            (58, 50),
            (123, 115),
        ];
        for (dr, (m, n)) in want.iter().enumerate() {
            assert_eq!(Eu868.max_payload_size(dr as u8), Some(MaxPayloadSize { m: *m, n: *n }));
            // M is N plus the FHDR (7 bytes) and FPort.
            assert_eq!(m - n, 8);
        }
        assert_eq!(Eu868.max_payload_size(12), None);
    }

    #[test]
    fn cf_list_carries_the_five_extra_channels_as_type_0() {
        let cf = Eu868.cf_list(&Eu868.default_extra_channels(), &[]).unwrap();
        // 867.1 MHz = 8671000 x 100 Hz = 0x844f18, little-endian (same bytes as the lora-rs
        // CFList join-accept vector).
        assert_eq!(cf, [0x18, 0x4f, 0x84, 0xe8, 0x56, 0x84, 0xb8, 0x5e, 0x84, 0x88, 0x66, 0x84, 0x58, 0x6e, 0x84, 0x00]);
    }

    #[test]
    fn default_channels_are_the_three_mandatory_ones() {
        let freqs: Vec<u32> = Eu868.default_uplink_channels().iter().map(|c| c.frequency).collect();
        assert_eq!(freqs, vec![868_100_000, 868_300_000, 868_500_000]);
        assert!(Eu868.default_uplink_channels().iter().all(|c| c.min_dr == 0 && c.max_dr == 5));
        assert_eq!(Eu868.uplink_channels().len(), 8);
    }

    #[test]
    fn extra_channels_are_checked_against_the_band_and_the_default_channels() {
        let ok: &[u32] = &[867_100_000, 867_300_000];
        let cases: [(&[u32], bool); 7] = [
            (&[], true),
            (ok, true),
            (&[867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000, 868_800_000], false),
            (&[915_000_000], false),
            (&[868_100_000], false),
            (&[867_100_000, 867_100_000], false),
            (&[867_100_050], false),
        ];
        for (extra, valid) in cases {
            assert_eq!(Eu868.check_extra_channels(extra).is_ok(), valid, "{extra:?}");
        }
        assert_eq!(Eu868.check_extra_channels(&Eu868.default_extra_channels()), Ok(()));
    }

    #[test]
    fn channel_mask_has_one_bit_per_enabled_channel() {
        assert_eq!(Eu868.ch_mask_blocks(&[0, 1, 2]), vec![ChMaskBlock { cntl: 0, mask: 0x0007 }]);
        assert_eq!(Eu868.ch_mask_blocks(&[0, 1, 2, 3, 4, 5, 6, 7]), vec![ChMaskBlock { cntl: 0, mask: 0x00ff }]);
        assert_eq!(Eu868.ch_mask_blocks(&[0, 2, 15]), vec![ChMaskBlock { cntl: 0, mask: 0x8005 }]);
    }

    #[test]
    fn a_shorter_extra_channel_list_leaves_the_cf_list_tail_zero() {
        let cf = Eu868.cf_list(&[867_100_000], &[]).unwrap();
        assert_eq!(&cf[..3], &[0x18, 0x4f, 0x84]);
        assert!(cf[3..].iter().all(|b| *b == 0));
    }

    #[test]
    fn downlink_tx_power_is_the_sub_band_maximum_as_eirp() {
        let table = [
            (869_525_000, 29, "RX2"),
            (869_400_000, 29, "lower edge of P"),
            (869_649_999, 29, "just below the upper edge of P"),
            (869_650_000, 16, "upper edge of P belongs to the alarm band above"),
            (869_399_999, 16, "just below P"),
            (868_100_000, 16, "default channel"),
            (868_300_000, 16, "default channel"),
            (868_500_000, 16, "default channel"),
            (867_100_000, 16, "CFList channel"),
            (867_500_000, 16, "CFList channel"),
            (867_900_000, 16, "CFList channel"),
            (863_000_000, 16, "band start"),
            (869_850_000, 16, "band R"),
            (870_000_000, 16, "band end"),
        ];
        for (freq, eirp, why) in table {
            assert_eq!(Eu868.downlink_tx_power(freq), eirp, "{freq} Hz ({why})");
        }
    }

    #[test]
    fn every_frequency_maps_to_its_etsi_sub_band() {
        use SubBandId::*;
        let table = [
            (863_000_000, EtsiK, 1, 14),
            (864_999_999, EtsiK, 1, 14),
            (865_000_000, EtsiL, 10, 14),
            (867_100_000, EtsiL, 10, 14),
            (867_900_000, EtsiL, 10, 14),
            (868_000_000, EtsiM, 10, 14),
            (868_100_000, EtsiM, 10, 14),
            (868_300_000, EtsiM, 10, 14),
            (868_500_000, EtsiM, 10, 14),
            (868_599_999, EtsiM, 10, 14),
            (868_600_000, EtsiOther, 1, 14),
            (868_650_000, EtsiOther, 1, 14),
            (868_700_000, EtsiN, 1, 14),
            (868_800_000, EtsiN, 1, 14),
            (869_200_000, EtsiOther, 1, 14),
            (869_300_000, EtsiOther, 1, 14),
            (869_400_000, EtsiP, 100, 27),
            (869_525_000, EtsiP, 100, 27),
            (869_650_000, EtsiOther, 1, 14),
            (869_700_000, EtsiR, 10, 14),
            (869_999_999, EtsiR, 10, 14),
            (870_000_000, EtsiOther, 1, 14),
            (862_999_999, EtsiOther, 1, 14),
            (915_000_000, EtsiOther, 1, 14),
        ];
        for (freq, id, permille, erp) in table {
            let band = Eu868.sub_band(freq).unwrap();
            assert_eq!(band.id, id, "{freq} Hz");
            assert_eq!(band.duty_cycle.permille(), permille, "{freq} Hz");
            assert_eq!(band.max_erp_dbm, erp, "{freq} Hz");
        }
    }

    #[test]
    fn sub_bands_do_not_overlap_and_are_sorted() {
        for pair in SUB_BANDS.windows(2) {
            assert!(pair[0].0 < pair[0].1 && pair[0].1 <= pair[1].0, "{:?} then {:?}", pair[0].2.id, pair[1].2.id);
        }
    }

    #[test]
    fn tx_power_steps_are_2_db() {
        assert_eq!(Eu868.tx_power_offset(0), Some(0));
        assert_eq!(Eu868.tx_power_offset(7), Some(-14));
        assert_eq!(Eu868.tx_power_offset(8), None);
        assert_eq!(Eu868.tx_power_offset(Eu868.max_tx_power_index()), Some(-14));
    }

    #[test]
    fn adr_tops_out_at_the_fastest_lora_125_khz_rate() {
        assert_eq!(Eu868.max_adr_dr(), 5);
        assert_eq!(Eu868.data_rate(5).unwrap().modulation, Modulation::Lora { spreading_factor: 7, bandwidth: 125_000 });
        assert!(Eu868.default_uplink_channels().iter().all(|c| c.max_dr == Eu868.max_adr_dr()));
    }

    #[test]
    fn required_snr_follows_the_spreading_factor_of_each_data_rate() {
        let want = [(0, -20.0), (1, -17.5), (2, -15.0), (3, -12.5), (4, -10.0), (5, -7.5), (6, -7.5)];
        for (dr, snr) in want {
            assert_eq!(Eu868.required_snr(dr), Some(snr), "DR{dr}");
        }
        for dr in 7..=15 {
            assert_eq!(Eu868.required_snr(dr), None, "DR{dr} is not LoRa");
        }
    }
}
