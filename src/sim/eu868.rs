//! The EU863-870 facts a simulated end device needs (RP002-1.0.4 §2.4): data rates, TX power
//! steps, default channels, payload limits. The device side only; the server has its own
//! region module, kept apart so that the simulator checks the server rather than sharing its
//! tables.

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
}
