//! DevStatusReq / DevStatusAns (CID 0x06, LoRaWAN 1.0.3 §5.5). The request has no payload.

/// DevStatusAns: battery level and the SNR margin of the DevStatusReq as the device heard it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevStatusAns {
    /// 0 = external power, 1..=254 = level (1 min, 254 max), 255 = cannot measure.
    pub battery: u8,
    /// -32..=31 dB (6-bit signed on air).
    pub margin: i8,
}

impl DevStatusAns {
    pub const LEN: usize = 2;

    pub fn decode(b: &[u8]) -> Self {
        // Sign-extend the 6-bit two's-complement value.
        let margin = (((b[1] & 0x3f) << 2) as i8) >> 2;
        DevStatusAns { battery: b[0], margin }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.battery);
        out.push((self.margin as u8) & 0x3f);
    }

    pub fn external_power_source(&self) -> bool {
        self.battery == 0
    }

    pub fn battery_level_unavailable(&self) -> bool {
        self.battery == 255
    }

    /// Battery level in percent as ChirpStack reports it (battery / 254 × 100, two
    /// decimals), when the device measured one.
    /// An f64, so that JSON shows exactly the rounded value.
    pub fn battery_level_percent(&self) -> Option<f64> {
        match self.battery {
            1..=254 => Some((f64::from(self.battery) / 254.0 * 10_000.0).round() / 100.0),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_a_six_bit_signed_value() {
        assert_eq!(DevStatusAns::decode(&[200, 0x1f]).margin, 31);
        assert_eq!(DevStatusAns::decode(&[200, 0x20]).margin, -32);
        assert_eq!(DevStatusAns::decode(&[200, 0x3f]).margin, -1);
        // Bits 7..6 are RFU and ignored.
        assert_eq!(DevStatusAns::decode(&[200, 0xc5]).margin, 5);
        let mut out = Vec::new();
        DevStatusAns { battery: 10, margin: -1 }.encode(&mut out);
        assert_eq!(out, [10, 0x3f]);
    }

    #[test]
    fn battery_has_two_special_values() {
        let ext = DevStatusAns { battery: 0, margin: 0 };
        assert!(ext.external_power_source());
        assert_eq!(ext.battery_level_percent(), None);
        let unk = DevStatusAns { battery: 255, margin: 0 };
        assert!(unk.battery_level_unavailable());
        assert_eq!(unk.battery_level_percent(), None);
        assert_eq!(DevStatusAns { battery: 254, margin: 0 }.battery_level_percent(), Some(100.0));
        assert_eq!(DevStatusAns { battery: 127, margin: 0 }.battery_level_percent(), Some(50.0));
        // 200 / 254 = 78.740157...: rounded to two decimals.
        assert_eq!(DevStatusAns { battery: 200, margin: 0 }.battery_level_percent(), Some(78.74));
        assert_eq!(DevStatusAns { battery: 1, margin: 0 }.battery_level_percent(), Some(0.39));
    }
}
