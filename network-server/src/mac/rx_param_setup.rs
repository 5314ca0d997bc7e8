//! RXParamSetupReq / RXParamSetupAns (CID 0x05, LoRaWAN 1.0.3 §5.4).

use super::{decode_frequency, encode_frequency};

/// RXParamSetupReq: DLsettings (RX1DRoffset, RX2DataRate) | Frequency (RX2, 24 bits x 100 Hz).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxParamSetupReq {
    /// 0..=7
    pub rx1_dr_offset: u8,
    /// 0..=15
    pub rx2_dr: u8,
    /// RX2 frequency in Hz (multiple of 100).
    pub frequency: u32,
}

impl RxParamSetupReq {
    pub const LEN: usize = 4;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(((self.rx1_dr_offset & 0x07) << 4) | (self.rx2_dr & 0x0f));
        encode_frequency(self.frequency, out);
    }

    pub fn decode(b: &[u8]) -> Self {
        RxParamSetupReq { rx1_dr_offset: (b[0] >> 4) & 0x07, rx2_dr: b[0] & 0x0f, frequency: decode_frequency(&b[1..4]) }
    }
}

/// RXParamSetupAns status: bit 2 RX1DRoffset ACK, bit 1 RX2 data rate ACK, bit 0 channel ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxParamSetupAns {
    pub rx1_dr_offset_ack: bool,
    pub rx2_dr_ack: bool,
    pub channel_ack: bool,
}

impl RxParamSetupAns {
    pub const LEN: usize = 1;

    pub fn decode(b: &[u8]) -> Self {
        RxParamSetupAns { rx1_dr_offset_ack: b[0] & 0x04 != 0, rx2_dr_ack: b[0] & 0x02 != 0, channel_ack: b[0] & 0x01 != 0 }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.rx1_dr_offset_ack) << 2) | (u8::from(self.rx2_dr_ack) << 1) | u8::from(self.channel_ack));
    }

    pub fn accepted(&self) -> bool {
        self.rx1_dr_offset_ack && self.rx2_dr_ack && self.channel_ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_offsets_and_rx2_frequency() {
        let req = RxParamSetupReq { rx1_dr_offset: 2, rx2_dr: 3, frequency: 869_525_000 };
        let mut out = Vec::new();
        req.encode(&mut out);
        // 8695250 = 0x84add2, little-endian.
        assert_eq!(out, [0x23, 0xd2, 0xad, 0x84]);
        assert_eq!(RxParamSetupReq::decode(&out), req);
    }

    #[test]
    fn answer_reports_each_ack() {
        assert!(RxParamSetupAns::decode(&[0x07]).accepted());
        let a = RxParamSetupAns::decode(&[0x06]);
        assert_eq!(a, RxParamSetupAns { rx1_dr_offset_ack: true, rx2_dr_ack: true, channel_ack: false });
    }
}
