//! EU433 (RP002-1.0.4 §2.7).

use super::dynamic::{fsk, lora, size, DynamicPlan, Rx1Rule};
use super::{DutyCycle, SubBand, SubBandId};

/// EU433 band plan.
pub const EU433: DynamicPlan = DynamicPlan {
    config_id: "eu433",
    common_name: "EU433",
    // §2.7.3: DR0-5 = SF12-SF7 at 125 kHz, DR6 SF7 at 250 kHz, DR7 FSK 50 kbps.
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
    // §2.7.6 (not repeater compatible).
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
    // §2.7.2: channel centres 433.175-434.665 MHz.
    channel_range: (433_175_000, 434_665_000),
    // §2.7.2: 433.175, 433.375, 433.575 MHz, DR0-5.
    default_channels: &[433_175_000, 433_375_000, 433_575_000],
    // Five more at the same 200 kHz spacing (no public gateway plan is more common).
    extra_channels: &[433_775_000, 433_975_000, 434_175_000, 434_375_000, 434_575_000],
    channel_drs: (0, 5),
    // §2.7.7: RX1DROffset 0-5.
    rx1: Rx1Rule::MinusOffset { max_offset: 5 },
    // §2.7.7: RX2 434.665 MHz, DR0.
    rx2_frequency: 434_665_000,
    rx2_dr: 0,
    // §2.7.3: TXPower 0-5.
    max_tx_power_index: 5,
    downlink_eirp_dbm: 12,
    sub_band: Some(EU433_SUB_BAND),
    downlink_code_rate: "4/5",
    tx_param_max_eirp_index: None,
    extra_channels_allowed: true,
};

/// §2.7.2: transmit duty cycle below 10 %, EIRP below 12.15 dBm (10 dBm ERP, the ETSI
/// 433.05-434.79 MHz SRD limit; 12 dBm EIRP rounded down).
const EU433_SUB_BAND: SubBand = SubBand { id: SubBandId::Eu433, duty_cycle: DutyCycle::from_permille(100), max_erp_dbm: 10 };

#[cfg(test)]
mod tests {
    use super::super::dynamic::check;
    use super::super::{Modulation, Region};
    use super::*;

    fn lora(sf: u8, bw: u32) -> Option<Modulation> {
        Some(Modulation::Lora { spreading_factor: sf, bandwidth: bw })
    }

    #[test]
    fn tables_follow_rp002_section_2_7() {
        let r = &EU433;
        assert_eq!((r.config_id(), r.common_name()), ("eu433", "EU433"));
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
        // RP002 EU433 RX1 table (offsets 0..5).
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
        check::rx1_frequencies(r, &[433_175_000, 434_665_000], &[433_174_999, 434_665_001, 868_100_000]);
        check::defaults(r, &[433_175_000, 433_375_000, 433_575_000], (0, 5), (434_665_000, 0));
        check::tx_power(r, 5);
        assert_eq!(r.max_adr_dr(), 5);
    }

    #[test]
    fn the_band_is_held_to_10_percent_at_12_dbm_eirp() {
        let b = EU433.sub_band(434_665_000).unwrap();
        assert_eq!((b.id, b.duty_cycle.permille()), (SubBandId::Eu433, 100));
        assert_eq!(EU433.downlink_tx_power(434_665_000), 12);
    }

    #[test]
    fn cf_list_is_type_0() {
        assert_eq!(EU433.cf_list_type(), Some(super::super::CfListType::Frequencies));
        let cf = EU433.cf_list(&EU433.default_extra_channels(), &[]).unwrap();
        // 433.775 MHz = 4337750 x 100 Hz = 0x423056.
        assert_eq!(&cf[..3], &[0x56, 0x30, 0x42]);
    }
}
