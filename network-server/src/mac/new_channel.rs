//! NewChannelReq / NewChannelAns (CID 0x07, LoRaWAN 1.0.3 §5.6).

use super::{decode_frequency, encode_frequency};

/// NewChannelReq: ChIndex | Freq (24 bits x 100 Hz; 0 disables the channel) | DrRange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewChannelReq {
    pub ch_index: u8,
    pub frequency: u32,
    /// 0..=15
    pub min_dr: u8,
    /// 0..=15
    pub max_dr: u8,
}

impl NewChannelReq {
    pub const LEN: usize = 5;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.ch_index);
        encode_frequency(self.frequency, out);
        out.push(((self.max_dr & 0x0f) << 4) | (self.min_dr & 0x0f));
    }

    pub fn decode(b: &[u8]) -> Self {
        NewChannelReq { ch_index: b[0], frequency: decode_frequency(&b[1..4]), min_dr: b[4] & 0x0f, max_dr: b[4] >> 4 }
    }
}

/// NewChannelAns status: bit 1 data-rate range OK, bit 0 channel frequency OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewChannelAns {
    pub dr_range_ok: bool,
    pub channel_freq_ok: bool,
}

impl NewChannelAns {
    pub const LEN: usize = 1;

    pub fn decode(b: &[u8]) -> Self {
        NewChannelAns { dr_range_ok: b[0] & 0x02 != 0, channel_freq_ok: b[0] & 0x01 != 0 }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.dr_range_ok) << 1) | u8::from(self.channel_freq_ok));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_index_frequency_and_dr_range() {
        let req = NewChannelReq { ch_index: 3, frequency: 867_100_000, min_dr: 0, max_dr: 5 };
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(out, [3, 0x18, 0x4f, 0x84, 0x50]);
        assert_eq!(NewChannelReq::decode(&out), req);
    }

    #[test]
    fn answer_bits_are_read_individually() {
        assert_eq!(NewChannelAns::decode(&[0x03]), NewChannelAns { dr_range_ok: true, channel_freq_ok: true });
        assert_eq!(NewChannelAns::decode(&[0x01]), NewChannelAns { dr_range_ok: false, channel_freq_ok: true });
    }
}
