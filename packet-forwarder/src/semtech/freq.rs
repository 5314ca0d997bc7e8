//! Frequencies: Semtech JSON carries MHz as a JSON number (PROTOCOL.TXT §4 `freq`, §6 `freq`),
//! the frame model carries Hz as an integer.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// MHz as a float to Hz, rounded to the nearest Hz: `868.1` is `868099999.99…` in binary.
/// `None` when the value cannot be a radio frequency held in a `u32`.
pub fn mhz_to_hz(mhz: f64) -> Option<u32> {
    let hz = (mhz * 1_000_000.0).round();
    if hz.is_finite() && hz > 0.0 && hz <= f64::from(u32::MAX) {
        Some(hz as u32)
    } else {
        None
    }
}

/// Hz to the decimal text of MHz with exactly six decimals, computed on integers so that no
/// binary floating-point noise can appear (`868100000` → `868.100000`).
pub fn hz_to_mhz_text(hz: u32) -> String {
    format!("{}.{:06}", hz / 1_000_000, hz % 1_000_000)
}

/// Serde adapter for a `u32` Hz field written as MHz.
pub mod mhz {
    use super::*;

    pub fn serialize<S: Serializer>(hz: &u32, s: S) -> Result<S::Ok, S::Error> {
        // The raw number text keeps the six decimals; with serializers other than serde_json
        // it degrades to an ordinary float.
        let raw = serde_json::value::RawValue::from_string(hz_to_mhz_text(*hz)).map_err(serde::ser::Error::custom)?;
        serde::Serialize::serialize(&raw, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let mhz = f64::deserialize(d)?;
        mhz_to_hz(mhz).ok_or_else(|| D::Error::custom(format!("frequency {mhz} MHz is out of range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mhz_floats_round_to_the_nearest_hz() {
        assert_eq!(mhz_to_hz(868.1), Some(868_100_000));
        assert_eq!(mhz_to_hz(868.3), Some(868_300_000));
        assert_eq!(mhz_to_hz(869.525), Some(869_525_000));
        assert_eq!(mhz_to_hz(902.3), Some(902_300_000));
        assert_eq!(mhz_to_hz(867.0999999), Some(867_100_000));
        assert_eq!(mhz_to_hz(433.175), Some(433_175_000));
    }

    #[test]
    fn impossible_frequencies_are_rejected() {
        assert_eq!(mhz_to_hz(0.0), None);
        assert_eq!(mhz_to_hz(-868.1), None);
        assert_eq!(mhz_to_hz(5000.0), None);
        assert_eq!(mhz_to_hz(f64::NAN), None);
    }

    #[test]
    fn hz_are_written_as_mhz_with_six_exact_decimals() {
        assert_eq!(hz_to_mhz_text(868_100_000), "868.100000");
        assert_eq!(hz_to_mhz_text(869_525_000), "869.525000");
        assert_eq!(hz_to_mhz_text(923_200_001), "923.200001");
        assert_eq!(hz_to_mhz_text(2_403_000_000), "2403.000000");
        assert_eq!(hz_to_mhz_text(999_999), "0.999999");
    }
}
