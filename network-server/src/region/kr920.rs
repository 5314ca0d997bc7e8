//! KR920-923 (RP002-1.0.4 §2.11).

use super::dynamic::{lora, size, DynamicPlan, Rx1Rule};

/// KR920-923 band plan. RP002 sets no duty cycle here: Korean rules require
/// listen-before-talk, which the gateway (and device) radios do.
pub const KR920: DynamicPlan = DynamicPlan {
    config_id: "kr920",
    common_name: "KR920",
    // §2.11.3: DR0-5 = SF12-SF7 at 125 kHz; DR6-14 RFU.
    data_rates: &[
        Some(lora(12, 125_000)),
        Some(lora(11, 125_000)),
        Some(lora(10, 125_000)),
        Some(lora(9, 125_000)),
        Some(lora(8, 125_000)),
        Some(lora(7, 125_000)),
    ],
    // §2.11.6 (not repeater compatible).
    max_payload: &[size(59, 51), size(59, 51), size(59, 51), size(123, 115), size(250, 242), size(250, 242)],
    // §2.11.2: channels between 920.9 and 923.3 MHz.
    channel_range: (920_900_000, 923_300_000),
    // §2.11.2: 922.1, 922.3, 922.5 MHz, DR0-5.
    default_channels: &[922_100_000, 922_300_000, 922_500_000],
    // The Things Network's KR920 plan (922.1-923.3 MHz and 921.9 MHz).
    extra_channels: &[922_700_000, 922_900_000, 923_100_000, 923_300_000, 921_900_000],
    channel_drs: (0, 5),
    // §2.11.7: RX1DROffset 0-5.
    rx1: Rx1Rule::MinusOffset { max_offset: 5 },
    // §2.11.7: RX2 921.9 MHz, DR0.
    rx2_frequency: 921_900_000,
    rx2_dr: 0,
    // §2.11.3: TXPower 0-7.
    max_tx_power_index: 7,
    // 23 dBm EIRP, the gateway maximum ChirpStack's `lrwn` KR920 region uses.
    downlink_eirp_dbm: 23,
    sub_band: None,
    downlink_code_rate: "4/5",
    tx_param_max_eirp_index: None,
    extra_channels_allowed: true,
};

#[cfg(test)]
mod tests {
    use super::super::dynamic::check;
    use super::super::{Modulation, Region};
    use super::*;

    fn lora(sf: u8) -> Option<Modulation> {
        Some(Modulation::Lora { spreading_factor: sf, bandwidth: 125_000 })
    }

    #[test]
    fn tables_follow_rp002_section_2_11() {
        let r = &KR920;
        assert_eq!((r.config_id(), r.common_name()), ("kr920", "KR920"));
        check::data_rates(r, &[lora(12), lora(11), lora(10), lora(9), lora(8), lora(7)]);
        check::payloads(r, &[Some((59, 51)), Some((59, 51)), Some((59, 51)), Some((123, 115)), Some((250, 242)), Some((250, 242))]);
        check::rx1_table(
            r,
            &[
                Some(&[0, 0, 0, 0, 0, 0]),
                Some(&[1, 0, 0, 0, 0, 0]),
                Some(&[2, 1, 0, 0, 0, 0]),
                Some(&[3, 2, 1, 0, 0, 0]),
                Some(&[4, 3, 2, 1, 0, 0]),
                Some(&[5, 4, 3, 2, 1, 0]),
                None,
            ],
        );
        check::rx1_frequencies(r, &[922_100_000, 922_500_000, 923_300_000, 920_900_000], &[920_899_999, 923_300_001, 868_100_000]);
        check::defaults(r, &[922_100_000, 922_300_000, 922_500_000], (0, 5), (921_900_000, 0));
        check::tx_power(r, 7);
        assert_eq!(r.max_adr_dr(), 5);
        assert_eq!(r.downlink_tx_power(922_100_000), 23);
        assert_eq!(r.sub_band(922_100_000), None);
        assert!(!r.implements_tx_param_setup());
    }

    #[test]
    fn cf_list_is_type_0() {
        assert_eq!(KR920.cf_list_type(), Some(super::super::CfListType::Frequencies));
        let cf = KR920.cf_list(&KR920.default_extra_channels(), &[]).unwrap();
        // 922.7 MHz = 9227000 x 100 Hz = 0x8CCAF8.
        assert_eq!(&cf[..3], &[0xf8, 0xca, 0x8c]);
        assert_eq!(cf[15], 0);
    }
}
