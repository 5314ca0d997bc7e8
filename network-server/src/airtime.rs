//! Time on air of a LoRa or FSK packet: how long a gateway's transmitter is on, which is what
//! the duty-cycle rules count.
//!
//! LoRa follows the formula of the Semtech SX1276/77/78/79 datasheet (§4.1.1.7, "Time on air")
//! and the LoRa Modem Designer's Guide AN1200.13; FSK counts the bytes a LoRaWAN FSK frame puts
//! on the air. Pure arithmetic in integers, so the results are exact to the nanosecond.

use std::time::Duration;

use crate::region::Modulation;

/// LoRa forward error correction; LoRaWAN always uses 4/5 (RP002-1.0.4 §2.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodingRate {
    Cr4_5,
    Cr4_6,
    Cr4_7,
    Cr4_8,
}

impl CodingRate {
    /// `CR` in the datasheet formula: 1 for 4/5 … 4 for 4/8.
    fn cr(self) -> u64 {
        match self {
            CodingRate::Cr4_5 => 1,
            CodingRate::Cr4_6 => 2,
            CodingRate::Cr4_7 => 3,
            CodingRate::Cr4_8 => 4,
        }
    }
}

/// The radio settings that decide a LoRa packet's length on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoraPacket {
    /// 6 to 12.
    pub spreading_factor: u8,
    /// In Hz (125000, 250000, 500000).
    pub bandwidth: u32,
    pub coding_rate: CodingRate,
    /// Programmed preamble length; the radio adds 4.25 symbols of sync word and start frame.
    pub preamble_symbols: u16,
    pub explicit_header: bool,
    pub crc: bool,
    pub low_data_rate_optimize: bool,
}

impl LoraPacket {
    /// A LoRaWAN downlink (LoRaWAN 1.0.4 §4.1, RP002-1.0.4 §2.4.3): 8 preamble symbols,
    /// explicit header, CR 4/5, no payload CRC.
    pub fn lorawan_downlink(spreading_factor: u8, bandwidth: u32) -> LoraPacket {
        LoraPacket { crc: false, ..LoraPacket::lorawan_uplink(spreading_factor, bandwidth) }
    }

    /// A LoRaWAN uplink: as a downlink but with the payload CRC.
    pub fn lorawan_uplink(spreading_factor: u8, bandwidth: u32) -> LoraPacket {
        LoraPacket {
            spreading_factor,
            bandwidth,
            coding_rate: CodingRate::Cr4_5,
            preamble_symbols: 8,
            explicit_header: true,
            crc: true,
            // Semtech's gateway HAL (lgw_time_on_air) and the LoRaWAN stacks turn it on for
            // SF11 and SF12 at 125 kHz, where a symbol lasts 16 ms or more.
            low_data_rate_optimize: bandwidth == 125_000 && spreading_factor >= 11,
        }
    }
}

/// Time on air of a LoRa packet carrying `payload_len` bytes (the whole PHYPayload);
/// `None` for a spreading factor outside 6..=12 or a zero bandwidth.
///
/// SX1276 datasheet §4.1.1.7: with `T_sym = 2^SF / BW`,
/// `n_payload = 8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))) (CR + 4), 0)`
/// and `T = (n_preamble + 4.25 + n_payload) T_sym`.
pub fn lora_time_on_air(packet: &LoraPacket, payload_len: usize) -> Option<Duration> {
    let sf = i64::from(packet.spreading_factor);
    if !(6..=12).contains(&sf) || packet.bandwidth == 0 {
        return None;
    }
    let pl = i64::try_from(payload_len).ok()?;
    let crc = i64::from(packet.crc);
    let implicit_header = i64::from(!packet.explicit_header);
    let de = i64::from(packet.low_data_rate_optimize);
    let numerator = 8 * pl - 4 * sf + 28 + 16 * crc - 20 * implicit_header;
    let denominator = 4 * (sf - 2 * de);
    let blocks = if numerator > 0 { (numerator + denominator - 1) / denominator } else { 0 };
    let payload_symbols = 8 + u64::try_from(blocks).ok()? * (packet.coding_rate.cr() + 4);
    // Quarter symbols keep the 4.25-symbol sync + SFD exact.
    let quarter_symbols = 4 * u64::from(packet.preamble_symbols) + 17 + 4 * payload_symbols;
    let numerator_ns = u128::from(quarter_symbols) * (1u128 << sf) * 1_000_000_000;
    Some(ceil_nanos(numerator_ns, 4 * u128::from(packet.bandwidth)))
}

/// Bytes a LoRaWAN FSK frame adds around the PHYPayload: 5 preamble bytes, a 3-byte sync word,
/// 1 length byte and a 2-byte CRC, as Semtech's gateway HAL (lgw_time_on_air) and The Things
/// Stack count them.
const FSK_OVERHEAD_BYTES: u64 = 5 + 3 + 1 + 2;

/// Time on air of an FSK packet carrying `payload_len` bytes at `bitrate` bit/s; `None` for a
/// zero bitrate.
pub fn fsk_time_on_air(bitrate: u32, payload_len: usize) -> Option<Duration> {
    if bitrate == 0 {
        return None;
    }
    let bits = (u64::try_from(payload_len).ok()? + FSK_OVERHEAD_BYTES) * 8;
    Some(ceil_nanos(u128::from(bits) * 1_000_000_000, u128::from(bitrate)))
}

/// Time on air of a LoRaWAN downlink of `phy_payload_len` bytes with a region's data-rate
/// modulation; `None` for LR-FHSS, which LoRaWAN uses for uplinks only.
pub fn downlink_time_on_air(modulation: &Modulation, phy_payload_len: usize) -> Option<Duration> {
    match *modulation {
        Modulation::Lora { spreading_factor, bandwidth } => {
            lora_time_on_air(&LoraPacket::lorawan_downlink(spreading_factor, bandwidth), phy_payload_len)
        }
        Modulation::Fsk { bitrate } => fsk_time_on_air(bitrate, phy_payload_len),
        Modulation::LrFhss { .. } => None,
    }
}

/// Rounded up, so airtime is never understated to the duty-cycle ledger.
fn ceil_nanos(numerator: u128, denominator: u128) -> Duration {
    let nanos = numerator.div_ceil(denominator);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(micros: u64) -> Duration {
        Duration::from_micros(micros)
    }

    #[test]
    fn lorawan_uplinks_match_the_things_stack_toa_vectors() {
        // lorawan-stack pkg/toa/toa_test.go: 10-byte payload, CR 4/5, CRC on.
        let table = [
            (7, 125_000, 41_216),
            (8, 125_000, 72_192),
            (9, 125_000, 144_384),
            (10, 125_000, 288_768),
            (11, 125_000, 577_536),
            (12, 125_000, 991_232),
            (7, 250_000, 20_608),
            (7, 500_000, 10_304),
        ];
        for (sf, bw, micros) in table {
            assert_eq!(lora_time_on_air(&LoraPacket::lorawan_uplink(sf, bw), 10), Some(us(micros)), "SF{sf} BW{bw}");
        }
    }

    #[test]
    fn coding_rates_add_symbols_per_block() {
        // Same source: SF7/125 kHz, 10 bytes, CRC on.
        let table = [(CodingRate::Cr4_5, 41_216), (CodingRate::Cr4_6, 45_312), (CodingRate::Cr4_7, 49_408), (CodingRate::Cr4_8, 53_504)];
        for (coding_rate, micros) in table {
            let p = LoraPacket { coding_rate, ..LoraPacket::lorawan_uplink(7, 125_000) };
            assert_eq!(lora_time_on_air(&p, 10), Some(us(micros)), "{coding_rate:?}");
        }
    }

    #[test]
    fn payload_sizes_change_airtime_in_whole_blocks() {
        // Same source: SF7/125 kHz, CRC on. 13 bytes is the common "46.3 ms" figure.
        let table = [(13, 46_336), (14, 46_336), (15, 46_336), (16, 51_456), (19, 51_456)];
        for (len, micros) in table {
            assert_eq!(lora_time_on_air(&LoraPacket::lorawan_uplink(7, 125_000), len), Some(us(micros)), "{len} bytes");
        }
    }

    #[test]
    fn a_full_sf12_uplink_takes_almost_two_and_a_half_seconds() {
        // 51 bytes at SF12/125 kHz with low-data-rate optimisation and CRC:
        // ceil((408 - 48 + 28 + 16) / 40) = 11 blocks, 8 + 11 x 5 = 63 payload symbols,
        // (8 + 4.25 + 63) x 32.768 ms = 2465.792 ms.
        assert_eq!(lora_time_on_air(&LoraPacket::lorawan_uplink(12, 125_000), 51), Some(us(2_465_792)));
    }

    #[test]
    fn downlinks_have_no_crc_and_are_shorter() {
        // The uplink cases above without the 16 CRC bits, by the same formula.
        let table = [
            (7, 125_000, 13, 41_216),
            (12, 125_000, 51, 2_301_952),
            (12, 125_000, 12, 991_232),
            (9, 125_000, 17, 164_864),
            (7, 250_000, 33, 35_968),
            // An empty payload still sends the 8 header symbols.
            (12, 125_000, 0, 663_552),
            (7, 125_000, 242, 379_136),
        ];
        for (sf, bw, len, micros) in table {
            let m = Modulation::Lora { spreading_factor: sf, bandwidth: bw };
            assert_eq!(downlink_time_on_air(&m, len), Some(us(micros)), "SF{sf} BW{bw} {len} bytes");
        }
    }

    #[test]
    fn low_data_rate_optimisation_is_on_only_for_sf11_and_sf12_at_125_khz() {
        for sf in 6..=12 {
            for bw in [125_000, 250_000, 500_000] {
                let want = bw == 125_000 && sf >= 11;
                assert_eq!(LoraPacket::lorawan_downlink(sf, bw).low_data_rate_optimize, want, "SF{sf} BW{bw}");
            }
        }
        // And it lengthens the packet: fewer bits per symbol.
        let with = LoraPacket::lorawan_downlink(12, 125_000);
        let without = LoraPacket { low_data_rate_optimize: false, ..with };
        assert!(lora_time_on_air(&with, 51) > lora_time_on_air(&without, 51));
    }

    #[test]
    fn implicit_header_saves_symbols() {
        let explicit = LoraPacket::lorawan_downlink(7, 125_000);
        let implicit = LoraPacket { explicit_header: false, ..explicit };
        assert!(lora_time_on_air(&implicit, 20) < lora_time_on_air(&explicit, 20));
    }

    #[test]
    fn fsk_counts_preamble_sync_length_and_crc_bytes() {
        // lorawan-stack pkg/toa/toa_test.go: 200 bytes at 50 kbit/s = 33.76 ms.
        assert_eq!(fsk_time_on_air(50_000, 200), Some(us(33_760)));
        // 13 bytes + 11 overhead = 192 bits = 3.84 ms.
        assert_eq!(downlink_time_on_air(&Modulation::Fsk { bitrate: 50_000 }, 13), Some(us(3_840)));
        // Not a whole number of microseconds: rounded up to the nanosecond.
        assert_eq!(fsk_time_on_air(3, 0), Some(Duration::from_nanos(29_333_333_334)));
    }

    #[test]
    fn impossible_settings_have_no_airtime() {
        assert_eq!(lora_time_on_air(&LoraPacket::lorawan_downlink(5, 125_000), 10), None);
        assert_eq!(lora_time_on_air(&LoraPacket::lorawan_downlink(13, 125_000), 10), None);
        assert_eq!(lora_time_on_air(&LoraPacket::lorawan_downlink(7, 0), 10), None);
        assert_eq!(fsk_time_on_air(0, 10), None);
        let lr = Modulation::LrFhss { coding_rate: crate::region::LrFhssCodingRate::OneThird, occupied_channel_width: 137_000 };
        assert_eq!(downlink_time_on_air(&lr, 10), None);
    }
}
