//! DutyCycleReq / DutyCycleAns (CID 0x04, LoRaWAN 1.0.3 §5.3). The answer has no payload.

/// DutyCycleReq: aggregated duty cycle limited to 1 / 2^max_duty_cycle (0 = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DutyCycleReq {
    /// 0..=15
    pub max_duty_cycle: u8,
}

impl DutyCycleReq {
    pub const LEN: usize = 1;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.max_duty_cycle & 0x0f);
    }

    pub fn decode(b: &[u8]) -> Self {
        DutyCycleReq { max_duty_cycle: b[0] & 0x0f }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_the_exponent_in_four_bits() {
        let mut out = Vec::new();
        DutyCycleReq { max_duty_cycle: 7 }.encode(&mut out);
        assert_eq!(out, [7]);
        assert_eq!(DutyCycleReq::decode(&[0xf7]), DutyCycleReq { max_duty_cycle: 7 });
    }
}
