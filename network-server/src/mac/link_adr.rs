//! LinkADRReq / LinkADRAns (CID 0x03, LoRaWAN 1.0.3 §5.2).

/// LinkADRReq: DataRate_TXPower | ChMask (16 bits, LE) | Redundancy (ChMaskCntl, NbTrans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAdrReq {
    /// 0..=15 (15 = keep the current value, 1.0.4).
    pub dr: u8,
    /// Region TXPower index 0..=15 (15 = keep current, 1.0.4).
    pub tx_power: u8,
    pub ch_mask: u16,
    /// 0..=7
    pub ch_mask_cntl: u8,
    /// 0..=15; 0 means keep the current value.
    pub nb_trans: u8,
}

impl LinkAdrReq {
    pub const LEN: usize = 4;

    /// Fields are masked to their bit widths.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(((self.dr & 0x0f) << 4) | (self.tx_power & 0x0f));
        out.extend_from_slice(&self.ch_mask.to_le_bytes());
        out.push(((self.ch_mask_cntl & 0x07) << 4) | (self.nb_trans & 0x0f));
    }

    pub fn decode(b: &[u8]) -> Self {
        LinkAdrReq {
            dr: b[0] >> 4,
            tx_power: b[0] & 0x0f,
            ch_mask: u16::from_le_bytes([b[1], b[2]]),
            ch_mask_cntl: (b[3] >> 4) & 0x07,
            nb_trans: b[3] & 0x0f,
        }
    }
}

/// LinkADRAns status: bit 2 power ACK, bit 1 data rate ACK, bit 0 channel mask ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAdrAns {
    pub power_ack: bool,
    pub dr_ack: bool,
    pub ch_mask_ack: bool,
}

impl LinkAdrAns {
    pub const LEN: usize = 1;

    pub fn decode(b: &[u8]) -> Self {
        LinkAdrAns { power_ack: b[0] & 0x04 != 0, dr_ack: b[0] & 0x02 != 0, ch_mask_ack: b[0] & 0x01 != 0 }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.power_ack) << 2) | (u8::from(self.dr_ack) << 1) | u8::from(self.ch_mask_ack));
    }

    /// The device applied the whole request only if all three bits are set.
    pub fn accepted(&self) -> bool {
        self.power_ack && self.dr_ack && self.ch_mask_ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_packs_dr_power_mask_and_redundancy() {
        // 0x12 = DR1 | TXPower 2; ChMask little-endian; 0x43 = ChMaskCntl 4 | NbTrans 3.
        let req = LinkAdrReq { dr: 1, tx_power: 2, ch_mask: 0x0007, ch_mask_cntl: 4, nb_trans: 3 };
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(out, [0x12, 0x07, 0x00, 0x43]);
        assert_eq!(LinkAdrReq::decode(&out), req);
    }

    #[test]
    fn answer_bits_are_read_individually() {
        let a = LinkAdrAns::decode(&[0x07]);
        assert!(a.accepted());
        let a = LinkAdrAns::decode(&[0x05]);
        assert_eq!(a, LinkAdrAns { power_ack: true, dr_ack: false, ch_mask_ack: true });
        assert!(!a.accepted());
        let mut out = Vec::new();
        a.encode(&mut out);
        assert_eq!(out, [0x05]);
    }
}
