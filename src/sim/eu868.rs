//! The EU863-870 numbers (RP002-1.0.4 §2.4) written out by hand from the specification: data
//! rates, TX power steps, default channels, payload limits. The simulated devices use the
//! network server's region tables for every region; this copy stays as a cross-check of the
//! server's EU868 table, which the simulator would otherwise take on trust.

use std::ops::RangeInclusive;

/// Default uplink channels 0..=2 (RP002-1.0.4 §2.4.2), in Hz. They support DR0..=DR5 and
/// cannot be changed or removed by NewChannelReq.
pub const DEFAULT_CHANNELS: [u32; 3] = [868_100_000, 868_300_000, 868_500_000];

/// Uplink channels an EU868 device can hold (ChMask has 16 bits, RP002-1.0.4 §2.4.5).
pub const MAX_CHANNELS: usize = 16;

/// The EU863-870 band (RP002-1.0.4 §2.4.1); any channel frequency outside it is refused.
pub const BAND: RangeInclusive<u32> = 863_000_000..=870_000_000;

/// RX2 defaults (RP002-1.0.4 §2.4.7): 869.525 MHz at DR0.
pub const RX2_FREQUENCY: u32 = 869_525_000;
pub const RX2_DR: u8 = 0;

/// Highest RX1DROffset EU868 defines (RP002-1.0.4 §2.4.7).
pub const MAX_RX1_DR_OFFSET: u8 = 5;

/// TXPower 0 is MaxEIRP; each index is 2 dB less, down to 7 = MaxEIRP − 14 dB. 8..=14 are RFU
/// (RP002-1.0.4 §2.4.3, Table "EU863-870 TX power table").
pub const MAX_TX_POWER_INDEX: u8 = 7;
pub const TX_POWER_STEP_DB: f32 = 2.0;

/// Highest data rate EU868 defines for a LoRa or FSK device (DR8..=11 are LR-FHSS, which the
/// simulator does not speak).
pub const MAX_DR: u8 = 7;

/// How a data rate is modulated (RP002-1.0.4 §2.4.3, Table "EU863-870 data rate table").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modulation {
    Lora { spreading_factor: u8, bandwidth_khz: u32 },
    Fsk { bit_rate: u32 },
}

/// The modulation of an EU868 data rate; `None` for LR-FHSS and RFU values.
pub fn modulation(dr: u8) -> Option<Modulation> {
    Some(match dr {
        0..=5 => Modulation::Lora { spreading_factor: 12 - dr, bandwidth_khz: 125 },
        6 => Modulation::Lora { spreading_factor: 7, bandwidth_khz: 250 },
        7 => Modulation::Fsk { bit_rate: 50_000 },
        _ => return None,
    })
}

/// Largest MACPayload (M) at a data rate without repeater (RP002-1.0.4 §2.4.6). FOpts and the
/// FRMPayload share M − 8 bytes (FHDR 7 + FPort 1).
pub fn max_mac_payload(dr: u8) -> usize {
    match dr {
        0..=2 => 59,
        3 => 123,
        _ => 250,
    }
}

/// Bytes left for FOpts + FRMPayload at a data rate.
pub fn max_frm_payload(dr: u8) -> usize {
    max_mac_payload(dr) - 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rates_map_to_the_rp002_modulations() {
        let table = [
            (0, Some(Modulation::Lora { spreading_factor: 12, bandwidth_khz: 125 })),
            (5, Some(Modulation::Lora { spreading_factor: 7, bandwidth_khz: 125 })),
            (6, Some(Modulation::Lora { spreading_factor: 7, bandwidth_khz: 250 })),
            (7, Some(Modulation::Fsk { bit_rate: 50_000 })),
            (8, None),
            (15, None),
        ];
        for (dr, want) in table {
            assert_eq!(modulation(dr), want, "DR{dr}");
        }
    }

    #[test]
    fn payload_limits_follow_the_data_rate() {
        assert_eq!([0, 2, 3, 4, 5, 7].map(max_frm_payload), [51, 51, 115, 242, 242, 242]);
    }

    #[test]
    fn the_server_eu868_table_agrees_with_this_copy() {
        use loraflow_network_server::region::{Eu868, Modulation as M, Region};
        let r = Eu868;
        for dr in 0..=15u8 {
            let server = r.data_rate(dr).filter(|d| d.uplink && d.downlink).map(|d| match d.modulation {
                M::Lora { spreading_factor, bandwidth } => Modulation::Lora { spreading_factor, bandwidth_khz: bandwidth / 1000 },
                M::Fsk { bitrate } => Modulation::Fsk { bit_rate: bitrate },
                M::LrFhss { .. } => unreachable!("LR-FHSS is uplink only"),
            });
            assert_eq!(server, modulation(dr), "DR{dr}");
            if dr <= MAX_DR {
                assert_eq!(r.max_payload_size(dr).map(|m| m.n), Some(max_frm_payload(dr)), "DR{dr}");
            }
        }
        let channels: Vec<u32> = r.default_uplink_channels().iter().map(|c| c.frequency).collect();
        assert_eq!(channels, DEFAULT_CHANNELS);
        assert_eq!((r.default_rx2_frequency(), r.default_rx2_dr(), r.max_rx1_dr_offset()), (RX2_FREQUENCY, RX2_DR, MAX_RX1_DR_OFFSET));
        assert_eq!(r.max_tx_power_index(), MAX_TX_POWER_INDEX);
        for i in 0..=MAX_TX_POWER_INDEX {
            assert_eq!(r.tx_power_offset(i), Some(-(TX_POWER_STEP_DB as i32) * i32::from(i)), "TXPower {i}");
        }
        assert!(BAND.contains(&r.default_rx2_frequency()));
        assert_eq!(MAX_CHANNELS, 16);
    }
}
