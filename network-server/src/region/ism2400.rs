//! ISM2400: LoRa in the 2.4 GHz ISM band. Not part of RP002-1.0.4; the plan is Semtech's
//! "LoRaWAN 2.4 GHz" regional parameters, cross-checked against ChirpStack's `lrwn`
//! ism2400 region.

use super::dynamic::{lora, size, DynamicPlan, Rx1Rule};

/// LoRa 2.4 GHz uses an 812.5 kHz channel; Semtech's `datr` writes it "BW812", which the
/// packet forwarder reads as 812 kHz.
const BW: u32 = 812_000;

/// ISM2400 band plan. No duty-cycle rule applies.
pub const ISM2400: DynamicPlan = DynamicPlan {
    config_id: "ism2400",
    common_name: "ISM2400",
    // DR0-7 = SF12-SF5 at 812 kHz.
    data_rates: &[
        Some(lora(12, BW)),
        Some(lora(11, BW)),
        Some(lora(10, BW)),
        Some(lora(9, BW)),
        Some(lora(8, BW)),
        Some(lora(7, BW)),
        Some(lora(6, BW)),
        Some(lora(5, BW)),
    ],
    // Not repeater compatible.
    max_payload: &[
        size(59, 51),
        size(123, 115),
        size(248, 240),
        size(248, 240),
        size(248, 240),
        size(248, 240),
        size(248, 240),
        size(248, 240),
    ],
    // The 2.4 GHz ISM band, 2400-2483.5 MHz.
    channel_range: (2_400_000_000, 2_483_500_000),
    // 2403, 2425 and 2479 MHz, DR0-7.
    default_channels: &[2_403_000_000, 2_425_000_000, 2_479_000_000],
    // 2.4 GHz gateways usually listen on the three default channels only.
    extra_channels: &[],
    channel_drs: (0, 7),
    rx1: Rx1Rule::MinusOffset { max_offset: 5 },
    // RX2 2423 MHz, DR0.
    rx2_frequency: 2_423_000_000,
    rx2_dr: 0,
    max_tx_power_index: 7,
    // 10 dBm EIRP, the default Max EIRP.
    downlink_eirp_dbm: 10,
    sub_band: None,
    // The plan transmits with coding rate 4/8 and long interleaving.
    downlink_code_rate: "4/8LI",
    // TxParamSetupReq sets the Max EIRP; 10 dBm is index 1.
    tx_param_max_eirp_index: Some(1),
    // A 24-bit count of 100 Hz cannot reach 2.4 GHz, and the 2.4 GHz plan's own encoding
    // is not checked here: only the default channels are used.
    extra_channels_allowed: false,
};

#[cfg(test)]
mod tests {
    use super::super::dynamic::check;
    use super::super::{Modulation, Region};
    use super::*;
    use loraflow_packet_forwarder::frame;

    fn lora(sf: u8) -> Option<Modulation> {
        Some(Modulation::Lora { spreading_factor: sf, bandwidth: 812_000 })
    }

    #[test]
    fn tables_follow_the_2_4_ghz_plan() {
        let r = &ISM2400;
        assert_eq!((r.config_id(), r.common_name()), ("ism2400", "ISM2400"));
        check::data_rates(r, &[lora(12), lora(11), lora(10), lora(9), lora(8), lora(7), lora(6), lora(5)]);
        check::payloads(
            r,
            &[
                Some((59, 51)),
                Some((123, 115)),
                Some((248, 240)),
                Some((248, 240)),
                Some((248, 240)),
                Some((248, 240)),
                Some((248, 240)),
                Some((248, 240)),
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
        check::rx1_frequencies(r, &[2_403_000_000, 2_425_000_000, 2_479_000_000], &[2_399_999_999, 2_483_500_001, 868_100_000]);
        check::defaults(r, &[2_403_000_000, 2_425_000_000, 2_479_000_000], (0, 7), (2_423_000_000, 0));
        check::tx_power(r, 7);
        assert_eq!(r.max_adr_dr(), 7);
        assert_eq!(r.required_snr(7), Some(-2.5));
        assert_eq!(r.downlink_tx_power(2_423_000_000), 10);
        assert_eq!(r.sub_band(2_423_000_000), None);
    }

    #[test]
    fn downlinks_use_coding_rate_4_8_li() {
        assert_eq!(
            ISM2400.downlink_modulation(0),
            Some(frame::Modulation::Lora { bandwidth: 812_000, spreading_factor: 12, code_rate: "4/8LI".into() })
        );
    }

    #[test]
    fn tx_param_setup_carries_max_eirp_only() {
        let (start, wanted) = ISM2400.tx_params().unwrap();
        assert_eq!(start, wanted);
        assert_eq!(start.max_eirp_index, 1);
        assert_eq!(start.dwell_time, crate::region::DwellTime::default());
        assert!(ISM2400.with_dwell_time(crate::region::DwellTime { uplink: true, downlink: true }).is_none());
    }

    #[test]
    fn there_is_no_cf_list_and_no_extra_channel() {
        assert_eq!(ISM2400.cf_list_type(), None);
        assert_eq!(ISM2400.cf_list(&[2_426_000_000], &[]), None);
        let err = ISM2400.check_extra_channels(&[2_426_000_000]).unwrap_err();
        assert!(err.contains("ISM2400"), "{err}");
    }
}
