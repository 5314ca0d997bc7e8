//! IN865-867 (RP002-1.0.4 §2.12).

use super::dynamic::{fsk, lora, size, DynamicPlan, Rx1Rule};

/// IN865-867 band plan. Indian rules set no duty cycle.
pub const IN865: DynamicPlan = DynamicPlan {
    config_id: "in865",
    common_name: "IN865",
    // §2.12.3: DR0-5 = SF12-SF7 at 125 kHz, DR6 RFU, DR7 FSK 50 kbps.
    data_rates: &[
        Some(lora(12, 125_000)),
        Some(lora(11, 125_000)),
        Some(lora(10, 125_000)),
        Some(lora(9, 125_000)),
        Some(lora(8, 125_000)),
        Some(lora(7, 125_000)),
        None,
        Some(fsk(50_000)),
    ],
    // §2.12.6 (not repeater compatible).
    max_payload: &[size(59, 51), size(59, 51), size(59, 51), size(123, 115), size(250, 242), size(250, 242), None, size(250, 242)],
    // §2.12.2: 865-867 MHz.
    channel_range: (865_000_000, 867_000_000),
    // §2.12.2: 865.0625, 865.4025, 865.985 MHz, DR0-5.
    default_channels: &[865_062_500, 865_402_500, 865_985_000],
    // The Things Network's IN865 plan.
    extra_channels: &[865_232_500, 866_185_000, 866_385_000, 866_585_000, 866_785_000],
    channel_drs: (0, 5),
    // §2.12.7: offsets 0-7, 6 and 7 raise the RX1 rate; LoRa up to DR5, FSK up to DR7; the
    // RFU DR6 is never chosen.
    rx1: Rx1Rule::Effective { max_lora_dr: 5 },
    // §2.12.7: RX2 866.55 MHz, DR2.
    rx2_frequency: 866_550_000,
    rx2_dr: 2,
    // §2.12.3: TXPower 0-10.
    max_tx_power_index: 10,
    // 30 dBm EIRP, the default Max EIRP (§2.12.3), as ChirpStack's `lrwn` IN865 region sends.
    downlink_eirp_dbm: 30,
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
    fn tables_follow_rp002_section_2_12() {
        let r = &IN865;
        assert_eq!((r.config_id(), r.common_name()), ("in865", "IN865"));
        check::data_rates(r, &[lora(12), lora(11), lora(10), lora(9), lora(8), lora(7), None, Some(Modulation::Fsk { bitrate: 50_000 })]);
        check::payloads(
            r,
            &[Some((59, 51)), Some((59, 51)), Some((59, 51)), Some((123, 115)), Some((250, 242)), Some((250, 242)), None, Some((250, 242))],
        );
        // RP002-1.0.4 §2.12.7 table, offsets 0..7, except DR7 with offset 1: the table says
        // DR6, which is RFU in IN865, so DR5.
        check::rx1_table(
            r,
            &[
                Some(&[0, 0, 0, 0, 0, 0, 1, 2]),
                Some(&[1, 0, 0, 0, 0, 0, 2, 3]),
                Some(&[2, 1, 0, 0, 0, 0, 3, 4]),
                Some(&[3, 2, 1, 0, 0, 0, 4, 5]),
                Some(&[4, 3, 2, 1, 0, 0, 5, 5]),
                Some(&[5, 4, 3, 2, 1, 0, 5, 5]),
                None,
                Some(&[7, 5, 5, 4, 3, 2, 7, 7]),
                None,
            ],
        );
        check::rx1_frequencies(r, &[865_062_500, 865_985_000, 866_550_000], &[864_999_999, 867_000_001, 868_100_000]);
        check::defaults(r, &[865_062_500, 865_402_500, 865_985_000], (0, 5), (866_550_000, 2));
        check::tx_power(r, 10);
        assert_eq!(r.max_adr_dr(), 5);
        assert_eq!(r.downlink_tx_power(866_550_000), 30);
        assert_eq!(r.sub_band(866_550_000), None);
    }

    #[test]
    fn cf_list_is_type_0() {
        assert_eq!(IN865.cf_list_type(), Some(super::super::CfListType::Frequencies));
        let cf = IN865.cf_list(&IN865.default_extra_channels(), &[]).unwrap();
        // 865.2325 MHz = 8652325 x 100 Hz = 0x840625.
        assert_eq!(&cf[..3], &[0x25, 0x06, 0x84]);
    }
}
