//! LinkCheckReq / LinkCheckAns (CID 0x02, LoRaWAN 1.0.3 §5.1).

/// LinkCheckAns: link margin in dB above the demodulation floor of the uplink, and how many
/// gateways received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkCheckAns {
    /// 0..=254; 255 is reserved.
    pub margin: u8,
    pub gw_cnt: u8,
}

impl LinkCheckAns {
    pub const LEN: usize = 2;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.margin, self.gw_cnt]);
    }

    pub fn decode(b: &[u8]) -> Self {
        LinkCheckAns { margin: b[0], gw_cnt: b[1] }
    }
}

/// The SNR (dB) a LoRa demodulator needs at a spreading factor.
pub fn required_snr(spreading_factor: u8) -> Option<f32> {
    crate::region::lora_required_snr(spreading_factor)
}

/// §5.1: "the link margin in dB of the last successfully received LinkCheckReq", i.e. the best
/// SNR minus the floor, rounded down and clamped to 0..=254. `None` when there is no LoRa
/// floor for the modulation (FSK, LR-FHSS).
pub fn margin(best_snr: f32, spreading_factor: Option<u8>) -> Option<u8> {
    let floor = required_snr(spreading_factor?)?;
    let m = (best_snr - floor).floor();
    // `as` saturates and maps NaN to 0, so a bogus SNR cannot panic.
    Some((m as i32).clamp(0, 254) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_snr_above_the_spreading_factor_floor() {
        assert_eq!(margin(5.0, Some(7)), Some(12));
        assert_eq!(margin(-10.0, Some(12)), Some(10));
        assert_eq!(margin(-12.5, Some(9)), Some(0));
        assert_eq!(margin(2.9, Some(8)), Some(12));
    }

    #[test]
    fn margin_is_clamped_to_the_field() {
        assert_eq!(margin(-30.0, Some(7)), Some(0));
        assert_eq!(margin(400.0, Some(12)), Some(254));
        assert_eq!(margin(f32::NAN, Some(7)), Some(0));
        assert_eq!(margin(10.0, None), None);
        assert_eq!(margin(10.0, Some(13)), None);
    }

    #[test]
    fn answer_encodes_margin_then_gateway_count() {
        let mut out = Vec::new();
        LinkCheckAns { margin: 20, gw_cnt: 3 }.encode(&mut out);
        assert_eq!(out, [20, 3]);
        assert_eq!(LinkCheckAns::decode(&out), LinkCheckAns { margin: 20, gw_cnt: 3 });
    }
}
