//! RXTimingSetupReq / RXTimingSetupAns (CID 0x08, LoRaWAN 1.0.3 §5.7). The answer has no payload.

/// RXTimingSetupReq: RX1 delay in seconds, 0..=15 where 0 also means 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxTimingSetupReq {
    pub delay: u8,
}

impl RxTimingSetupReq {
    pub const LEN: usize = 1;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.delay & 0x0f);
    }

    pub fn decode(b: &[u8]) -> Self {
        RxTimingSetupReq { delay: b[0] & 0x0f }
    }

    pub fn seconds(&self) -> u8 {
        self.delay.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_zero_means_one_second() {
        assert_eq!(RxTimingSetupReq { delay: 0 }.seconds(), 1);
        assert_eq!(RxTimingSetupReq::decode(&[0x05]).seconds(), 5);
        let mut out = Vec::new();
        RxTimingSetupReq { delay: 15 }.encode(&mut out);
        assert_eq!(out, [15]);
    }
}
