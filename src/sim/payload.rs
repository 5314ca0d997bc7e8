//! What simulated devices send: fixed bytes, a counter, or a Cayenne LPP reading.

/// The uplink payload of a simulated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadKind {
    /// The same bytes every time.
    Fixed(Vec<u8>),
    /// The uplink number, 4 bytes big-endian.
    Counter,
    /// Cayenne LPP temperature (channel 1) and relative humidity (channel 2) that drift.
    Lpp,
}

impl PayloadKind {
    /// The payload of uplink number `n` of device `device`.
    pub fn payload(&self, device: usize, n: u32) -> Vec<u8> {
        match self {
            PayloadKind::Fixed(b) => b.clone(),
            PayloadKind::Counter => n.to_be_bytes().to_vec(),
            PayloadKind::Lpp => {
                let (temperature, humidity) = reading(device, n);
                cayenne_lpp(temperature, humidity)
            }
        }
    }
}

/// A slowly varying temperature (°C) and humidity (%RH): a triangle wave per device so that
/// decoded values visibly change and differ between devices.
fn reading(device: usize, n: u32) -> (f64, f64) {
    let phase = (n as usize + device * 7) % 40;
    let tri = if phase < 20 { phase } else { 40 - phase } as f64;
    (18.0 + tri * 0.25 + (device % 5) as f64, 40.0 + tri * 1.5)
}

/// Cayenne LPP v1: temperature is type 0x67, 0.1 °C signed big-endian; humidity is type 0x68,
/// 0.5 % unsigned.
pub fn cayenne_lpp(temperature_c: f64, humidity_pct: f64) -> Vec<u8> {
    let t = (temperature_c * 10.0).round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
    let h = (humidity_pct * 2.0).round().clamp(0.0, 255.0) as u8;
    let mut out = vec![0x01, 0x67];
    out.extend_from_slice(&t.to_be_bytes());
    out.extend_from_slice(&[0x02, 0x68, h]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cayenne_lpp_encodes_the_reference_example() {
        // The Cayenne LPP documentation's example: 27.2 °C on channel 1 is 01 67 01 10.
        assert_eq!(cayenne_lpp(27.2, 50.0), vec![0x01, 0x67, 0x01, 0x10, 0x02, 0x68, 100]);
        assert_eq!(cayenne_lpp(-4.1, 0.0)[2..4], [0xff, 0xd7]);
    }

    #[test]
    fn lpp_readings_vary_over_time() {
        let p = PayloadKind::Lpp;
        assert_ne!(p.payload(0, 0), p.payload(0, 5));
        assert_eq!(p.payload(0, 0).len(), 7);
    }

    #[test]
    fn counter_and_fixed_payloads() {
        assert_eq!(PayloadKind::Counter.payload(3, 258), vec![0, 0, 1, 2]);
        assert_eq!(PayloadKind::Fixed(vec![9]).payload(0, 1), vec![9]);
    }
}
