//! TXParamSetupReq / TXParamSetupAns (CID 0x09, LoRaWAN 1.0.3 §5.8). The answer has no
//! payload. Only regions with dwell-time rules (AS923) use it; EU868 devices ignore it.

/// TXParamSetupReq EIRP_DwellTime: bit 5 downlink dwell time, bit 4 uplink dwell time (400 ms
/// limit when set), bits 3..0 MaxEIRP index (8, 10, 12, 13, 14, 16, 18, 20, 21, 24, 26, 27,
/// 29, 30, 33, 36 dBm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxParamSetupReq {
    pub downlink_dwell_time: bool,
    pub uplink_dwell_time: bool,
    pub max_eirp_index: u8,
}

const MAX_EIRP_DBM: [u8; 16] = [8, 10, 12, 13, 14, 16, 18, 20, 21, 24, 26, 27, 29, 30, 33, 36];

impl TxParamSetupReq {
    pub const LEN: usize = 1;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.downlink_dwell_time) << 5) | (u8::from(self.uplink_dwell_time) << 4) | (self.max_eirp_index & 0x0f));
    }

    pub fn decode(b: &[u8]) -> Self {
        TxParamSetupReq { downlink_dwell_time: b[0] & 0x20 != 0, uplink_dwell_time: b[0] & 0x10 != 0, max_eirp_index: b[0] & 0x0f }
    }

    pub fn max_eirp_dbm(&self) -> u8 {
        MAX_EIRP_DBM[usize::from(self.max_eirp_index & 0x0f)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dwell_bits_and_eirp_index_round_trip() {
        let req = TxParamSetupReq { downlink_dwell_time: true, uplink_dwell_time: false, max_eirp_index: 5 };
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(out, [0x25]);
        assert_eq!(TxParamSetupReq::decode(&out), req);
        assert_eq!(req.max_eirp_dbm(), 16);
    }
}
