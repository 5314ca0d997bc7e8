//! CN779-787 (RP002-1.0.4 §2.6).

use super::dynamic::{fsk, lora, size, DynamicPlan, Rx1Rule};
use super::{DutyCycle, SubBand, SubBandId};

/// CN779-787 band plan.
pub const CN779: DynamicPlan = DynamicPlan {
    config_id: "cn779",
    common_name: "CN779",
    // §2.6.3: DR0-5 = SF12-SF7 at 125 kHz, DR6 SF7 at 250 kHz, DR7 FSK 50 kbps.
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
    // §2.6.6 (not repeater compatible).
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
    // §2.6.2: channel centres 779.5-786.5 MHz.
    channel_range: (779_500_000, 786_500_000),
    // §2.6.2: 779.5, 779.7, 779.9 MHz, DR0-5.
    default_channels: &[779_500_000, 779_700_000, 779_900_000],
    // §2.6.2 lists 780.5, 780.7 and 780.9 MHz as further join-request channels.
    extra_channels: &[780_500_000, 780_700_000, 780_900_000],
    channel_drs: (0, 5),
    // §2.6.7: RX1DROffset 0-5.
    rx1: Rx1Rule::MinusOffset { max_offset: 5 },
    // §2.6.7: RX2 786 MHz, DR0.
    rx2_frequency: 786_000_000,
    rx2_dr: 0,
    // §2.6.3: TXPower 0-5.
    max_tx_power_index: 5,
    downlink_eirp_dbm: 12,
    sub_band: Some(CN779_SUB_BAND),
    downlink_code_rate: "4/5",
    tx_param_max_eirp_index: None,
    extra_channels_allowed: true,
};

/// §2.6.2: duty cycle below 1 %, EIRP below 12.15 dBm (10 dBm ERP, 12 dBm EIRP rounded
/// down).
const CN779_SUB_BAND: SubBand = SubBand { id: SubBandId::Cn779, duty_cycle: DutyCycle::from_permille(10), max_erp_dbm: 10 };

#[cfg(test)]
mod tests {
    use super::super::dynamic::check;
    use super::super::{Modulation, Region};
    use super::*;

    fn lora(sf: u8, bw: u32) -> Option<Modulation> {
        Some(Modulation::Lora { spreading_factor: sf, bandwidth: bw })
    }

    #[test]
    fn tables_follow_rp002_section_2_6() {
        let r = &CN779;
        assert_eq!((r.config_id(), r.common_name()), ("cn779", "CN779"));
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
        check::rx1_frequencies(r, &[779_500_000, 780_900_000, 786_000_000], &[779_499_999, 786_500_001, 868_100_000]);
        check::defaults(r, &[779_500_000, 779_700_000, 779_900_000], (0, 5), (786_000_000, 0));
        check::tx_power(r, 5);
        assert_eq!(r.max_adr_dr(), 5);
    }

    #[test]
    fn the_band_is_held_to_1_percent_at_12_dbm_eirp() {
        let b = CN779.sub_band(786_000_000).unwrap();
        assert_eq!((b.id, b.duty_cycle.permille()), (SubBandId::Cn779, 10));
        assert_eq!(CN779.downlink_tx_power(786_000_000), 12);
    }

    #[test]
    fn cf_list_is_type_0() {
        assert_eq!(CN779.cf_list_type(), Some(super::super::CfListType::Frequencies));
        let cf = CN779.cf_list(&CN779.default_extra_channels(), &[]).unwrap();
        // 780.5 MHz = 7805000 x 100 Hz = 0x771848; the two unused slots stay zero.
        assert_eq!(&cf[..3], &[0x48, 0x18, 0x77]);
        assert!(cf[9..].iter().all(|b| *b == 0));
    }
}
