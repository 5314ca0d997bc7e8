//! The `datr` field (PROTOCOL.TXT §4 and §6): a string like `SF7BW125` for LoRa or
//! `M0CW137` for LR-FHSS, a number of bits per second for FSK.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Datr {
    /// LoRa `SF{sf}BW{kHz}` or LR-FHSS `M0CW137`-like names.
    Name(String),
    /// FSK bit rate.
    Bps(u32),
}

/// Parses a LoRa data rate name into (spreading factor, bandwidth in Hz).
/// SF5 and SF6 exist on SX1302/SX1303 concentrators; bandwidths other than 125/250/500 kHz
/// exist on 2.4 GHz concentrators, so any positive bandwidth is accepted.
pub fn parse_lora_datr(s: &str) -> Option<(u8, u32)> {
    let rest = s.strip_prefix("SF")?;
    let (sf, bw) = rest.split_once("BW")?;
    let sf: u8 = sf.parse().ok()?;
    if !(5..=12).contains(&sf) {
        return None;
    }
    let khz: f64 = bw.parse().ok()?;
    let hz = (khz * 1000.0).round();
    if !(hz.is_finite() && hz >= 1.0 && hz <= f64::from(u32::MAX)) {
        return None;
    }
    Some((sf, hz as u32))
}

/// Writes a LoRa data rate name: `SF7BW125`, `SF9BW62.5`.
pub fn lora_datr(spreading_factor: u8, bandwidth_hz: u32) -> String {
    if bandwidth_hz % 1000 == 0 {
        format!("SF{spreading_factor}BW{}", bandwidth_hz / 1000)
    } else {
        format!("SF{spreading_factor}BW{}", f64::from(bandwidth_hz) / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_datr_names_parse_into_sf_and_hz() {
        assert_eq!(parse_lora_datr("SF7BW125"), Some((7, 125_000)));
        assert_eq!(parse_lora_datr("SF12BW500"), Some((12, 500_000)));
        assert_eq!(parse_lora_datr("SF5BW250"), Some((5, 250_000)));
        assert_eq!(parse_lora_datr("SF9BW62.5"), Some((9, 62_500)));
        // 2.4 GHz concentrators (SX1280) write the 812.5 kHz channel as "BW812".
        assert_eq!(parse_lora_datr("SF12BW812"), Some((12, 812_000)));
        assert_eq!(parse_lora_datr("SF5BW812"), Some((5, 812_000)));
        assert_eq!(lora_datr(12, 812_000), "SF12BW812");
    }

    #[test]
    fn malformed_lora_datr_names_are_rejected() {
        for bad in ["", "SF7", "BW125", "SF13BW125", "SF4BW125", "SF7BW", "SF7BW-125", "sf7bw125", "M0CW137"] {
            assert_eq!(parse_lora_datr(bad), None, "{bad}");
        }
    }

    #[test]
    fn lora_datr_names_round_trip() {
        assert_eq!(lora_datr(7, 125_000), "SF7BW125");
        assert_eq!(lora_datr(9, 62_500), "SF9BW62.5");
        assert_eq!(parse_lora_datr(&lora_datr(10, 500_000)), Some((10, 500_000)));
    }

    #[test]
    fn datr_is_a_string_or_a_number_in_json() {
        assert_eq!(serde_json::from_str::<Datr>(r#""SF7BW125""#).unwrap(), Datr::Name("SF7BW125".into()));
        assert_eq!(serde_json::from_str::<Datr>("50000").unwrap(), Datr::Bps(50000));
        assert!(serde_json::from_str::<Datr>("true").is_err());
        assert_eq!(serde_json::to_string(&Datr::Bps(50000)).unwrap(), "50000");
    }
}
