//! DlChannelReq / DlChannelAns (CID 0x0A, LoRaWAN 1.0.3 §5.6).

use super::{decode_frequency, encode_frequency};

/// DlChannelReq: move the RX1 frequency of uplink channel `ch_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlChannelReq {
    pub ch_index: u8,
    pub frequency: u32,
}

impl DlChannelReq {
    pub const LEN: usize = 4;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.ch_index);
        encode_frequency(self.frequency, out);
    }

    pub fn decode(b: &[u8]) -> Self {
        DlChannelReq { ch_index: b[0], frequency: decode_frequency(&b[1..4]) }
    }
}

/// DlChannelAns status: bit 1 uplink frequency exists, bit 0 channel frequency OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlChannelAns {
    pub uplink_freq_exists: bool,
    pub channel_freq_ok: bool,
}

impl DlChannelAns {
    pub const LEN: usize = 1;

    pub fn decode(b: &[u8]) -> Self {
        DlChannelAns { uplink_freq_exists: b[0] & 0x02 != 0, channel_freq_ok: b[0] & 0x01 != 0 }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.uplink_freq_exists) << 1) | u8::from(self.channel_freq_ok));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_index_and_frequency() {
        let req = DlChannelReq { ch_index: 1, frequency: 868_500_000 };
        let mut out = Vec::new();
        req.encode(&mut out);
        // 8685000 = 0x8485c8
        assert_eq!(out, [1, 0xc8, 0x85, 0x84]);
        assert_eq!(DlChannelReq::decode(&out), req);
    }

    #[test]
    fn answer_bits_are_read_individually() {
        assert_eq!(DlChannelAns::decode(&[0x02]), DlChannelAns { uplink_freq_exists: true, channel_freq_ok: false });
    }
}
