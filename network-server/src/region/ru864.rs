//! RU864-870 (RP002-1.0.4 §2.13).

use super::dynamic::{fsk, lora, size, DynamicPlan, Rx1Rule};
use super::{DutyCycle, SubBand, SubBandId};

/// RU864-870 band plan.
pub const RU864: DynamicPlan = DynamicPlan {
    config_id: "ru864",
    common_name: "RU864",
    // §2.13.3: DR0-5 = SF12-SF7 at 125 kHz, DR6 SF7 at 250 kHz, DR7 FSK 50 kbps.
    data_rates: &[
        Some(lora(12, 125_000)),
        Some(lora(11, 125_000)),
        Some(lora(10, 125_000)),
        Some(lora(9, 125_000)),
        Some(lora(8, 125_000)),
        Some(lora(7, 125_000)),
        Some(lora(7, 250_000)),
        Some(fsk(50_000)),
    ],
    // §2.13.6 (not repeater compatible).
    max_payload: &[
        size(59, 51),
        size(59, 51),
        size(59, 51),
        size(123, 115),
        size(250, 242),
        size(250, 242),
        size(250, 242),
        size(250, 242),
    ],
    // §2.13.2: 864-870 MHz.
    channel_range: (864_000_000, 870_000_000),
    // §2.13.2: 868.9 and 869.1 MHz, DR0-5.
    default_channels: &[868_900_000, 869_100_000],
    // The Things Network's RU864 plan.
    extra_channels: &[864_100_000, 864_300_000, 864_500_000, 864_700_000, 864_900_000],
    channel_drs: (0, 5),
    // §2.13.7: RX1DROffset 0-5.
    rx1: Rx1Rule::MinusOffset { max_offset: 5 },
    // §2.13.7: RX2 869.1 MHz, DR0.
    rx2_frequency: 869_100_000,
    rx2_dr: 0,
    // §2.13.3: TXPower 0-7.
    max_tx_power_index: 7,
    downlink_eirp_dbm: 16,
    sub_band: Some(RU864_SUB_BAND),
    downlink_code_rate: "4/5",
    tx_param_max_eirp_index: None,
    extra_channels_allowed: true,
};

/// §2.13.2 gives the default channels a duty cycle below 1 %; the rest of the band is the
/// operator's to place "in compliance with the Russian regulation", so the 1 % is applied
/// to every frequency. 14 dBm ERP (25 mW) = 16 dBm EIRP, the default Max EIRP (§2.13.3).
const RU864_SUB_BAND: SubBand = SubBand { id: SubBandId::Ru864, duty_cycle: DutyCycle::from_permille(10), max_erp_dbm: 14 };

#[cfg(test)]
mod tests {
    use super::super::dynamic::check;
    use super::super::{Modulation, Region};
    use super::*;

    fn lora(sf: u8, bw: u32) -> Option<Modulation> {
        Some(Modulation::Lora { spreading_factor: sf, bandwidth: bw })
    }

    #[test]
    fn tables_follow_rp002_section_2_13() {
        let r = &RU864;
        assert_eq!((r.config_id(), r.common_name()), ("ru864", "RU864"));
        check::data_rates(
            r,
            &[
                lora(12, 125_000),
                lora(11, 125_000),
                lora(10, 125_000),
                lora(9, 125_000),
                lora(8, 125_000),
                lora(7, 125_000),
                lora(7, 250_000),
                Some(Modulation::Fsk { bitrate: 50_000 }),
            ],
        );
        check::payloads(
            r,
            &[
                Some((59, 51)),
                Some((59, 51)),
                Some((59, 51)),
                Some((123, 115)),
                Some((250, 242)),
                Some((250, 242)),
                Some((250, 242)),
                Some((250, 242)),
            ],
        );
        check::rx1_table(
            r,
            &[
                Some(&[0, 0, 0, 0, 0, 0]),
                Some(&[1, 0, 0, 0, 0, 0]),
                Some(&[2, 1, 0, 0, 0, 0]),
                Some(&[3, 2, 1, 0, 0, 0]),
                Some(&[4, 3, 2, 1, 0, 0]),
                Some(&[5, 4, 3, 2, 1, 0]),
                Some(&[6, 5, 4, 3, 2, 1]),
                Some(&[7, 6, 5, 4, 3, 2]),
                None,
            ],
        );
        check::rx1_frequencies(r, &[868_900_000, 869_100_000, 864_100_000], &[863_999_999, 870_000_001, 915_000_000]);
        check::defaults(r, &[868_900_000, 869_100_000], (0, 5), (869_100_000, 0));
        check::tx_power(r, 7);
        assert_eq!(r.max_adr_dr(), 5);
    }

    #[test]
    fn the_whole_band_is_held_to_1_percent_at_16_dbm_eirp() {
        for f in [868_900_000, 869_100_000, 864_100_000] {
            let b = RU864.sub_band(f).unwrap();
            assert_eq!((b.id, b.duty_cycle.permille()), (SubBandId::Ru864, 10), "{f} Hz");
            assert_eq!(RU864.downlink_tx_power(f), 16);
        }
    }

    #[test]
    fn cf_list_is_type_0() {
        assert_eq!(RU864.cf_list_type(), Some(super::super::CfListType::Frequencies));
        let cf = RU864.cf_list(&RU864.default_extra_channels(), &[]).unwrap();
        // 864.1 MHz = 8641000 x 100 Hz = 0x83D9E8.
        assert_eq!(&cf[..3], &[0xe8, 0xd9, 0x83]);
    }
}
