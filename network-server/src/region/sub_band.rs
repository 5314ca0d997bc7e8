//! Regulatory sub-bands: where a gateway may transmit, how long per hour and how loud.
//!
//! A region maps a downlink frequency to a [`SubBand`] ([`super::Region::sub_band`]); the
//! duty-cycle ledger (`crate::duty_cycle_ledger`) counts airtime per gateway per sub-band, and
//! the region's downlink power is the sub-band's maximum, expressed as EIRP.

use std::fmt;
use std::time::Duration;

/// A regulatory sub-band, typed so that logs, metrics and the ledger never carry free text.
///
/// The EU863-870 bands are the ones ETSI EN 300 220-2 V3.1.1 Annex B (and ERC/REC 70-03
/// Annex 1) give to non-specific short range devices; their letters are ETSI's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubBandId {
    /// ETSI band K, 863.0-865.0 MHz.
    EtsiK,
    /// ETSI band L, 865.0-868.0 MHz (the 867.x MHz CFList channels).
    EtsiL,
    /// ETSI band M, 868.0-868.6 MHz (the three default EU868 channels).
    EtsiM,
    /// ETSI band N, 868.7-869.2 MHz.
    EtsiN,
    /// ETSI band P, 869.4-869.65 MHz (the EU868 RX2 frequency, 869.525 MHz).
    EtsiP,
    /// ETSI band R, 869.7-870.0 MHz.
    EtsiR,
    /// An EU863-870 frequency in none of the bands above: the alarm bands 868.6-868.7,
    /// 869.2-869.4 and 869.65-869.7 MHz, or outside 863-870 MHz. LoRaWAN has no business
    /// there; if an operator configures such a frequency anyway, the strictest general limit
    /// applies (0.1 %, 25 mW e.r.p.).
    EtsiOther,
    /// CN779-787 MHz: RP002-1.0.4 §2.6.2 asks for a duty cycle below 1 % at 12.15 dBm EIRP.
    Cn779,
    /// EU433 (433.05-434.79 MHz, ETSI SRD band): RP002-1.0.4 §2.7.2, below 10 % at
    /// 12.15 dBm EIRP.
    Eu433,
    /// RU864-870 MHz: RP002-1.0.4 §2.13.2 gives its default channels a duty cycle below 1 %.
    Ru864,
}

impl SubBandId {
    /// Short, bounded label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            SubBandId::EtsiK => "K",
            SubBandId::EtsiL => "L",
            SubBandId::EtsiM => "M",
            SubBandId::EtsiN => "N",
            SubBandId::EtsiP => "P",
            SubBandId::EtsiR => "R",
            SubBandId::EtsiOther => "other",
            SubBandId::Cn779 => "CN779",
            SubBandId::Eu433 => "EU433",
            SubBandId::Ru864 => "RU864",
        }
    }
}

impl fmt::Display for SubBandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = match self {
            SubBandId::EtsiK => "863.0-865.0 MHz",
            SubBandId::EtsiL => "865.0-868.0 MHz",
            SubBandId::EtsiM => "868.0-868.6 MHz",
            SubBandId::EtsiN => "868.7-869.2 MHz",
            SubBandId::EtsiP => "869.4-869.65 MHz",
            SubBandId::EtsiR => "869.7-870.0 MHz",
            SubBandId::EtsiOther => return f.write_str("outside the ETSI SRD sub-bands"),
            SubBandId::Cn779 => return f.write_str("CN779-787 MHz"),
            SubBandId::Eu433 => return f.write_str("EU433 (433.05-434.79 MHz)"),
            SubBandId::Ru864 => return f.write_str("RU864-870 MHz"),
        };
        write!(f, "ETSI band {} ({range})", self.as_str())
    }
}

/// A duty-cycle limit: the share of any one hour a transmitter may be on the air, in parts per
/// thousand. ETSI EN 300 220-1 defines duty cycle as the transmitter's on-time over one hour;
/// the sub-band limits are 0.1 % (1 ‰), 1 % (10 ‰) and 10 % (100 ‰).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DutyCycle {
    permille: u16,
}

impl DutyCycle {
    /// More than 1000 ‰ is a programming error: it fails the build in a `const`, else panics.
    pub const fn from_permille(permille: u16) -> DutyCycle {
        assert!(permille <= 1000, "a duty cycle is at most 100 %");
        DutyCycle { permille }
    }

    pub const fn permille(&self) -> u16 {
        self.permille
    }

    /// The airtime this duty cycle allows within `window`, exact to the nanosecond (rounded
    /// down, so the allowance is never overstated).
    pub fn allowance(&self, window: Duration) -> Duration {
        let nanos = window.as_nanos() * u128::from(self.permille) / 1000;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for DutyCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} %", self.permille / 10, self.permille % 10)
    }
}

/// A sub-band with its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubBand {
    pub id: SubBandId,
    pub duty_cycle: DutyCycle,
    /// Maximum effective radiated power (relative to a half-wave dipole), the unit ETSI uses.
    pub max_erp_dbm: i32,
}

impl SubBand {
    /// The maximum power as EIRP, the unit LoRaWAN (RP002-1.0.4 §2.4.3) and gateways use.
    pub fn max_eirp_dbm(&self) -> i32 {
        erp_to_eirp_dbm(self.max_erp_dbm)
    }
}

/// EIRP = ERP + 2.15 dB (the gain of a half-wave dipole over an isotropic antenna), rounded
/// down to whole dBm so the result never exceeds the limit: 14 dBm ERP → 16 dBm EIRP, 27 dBm
/// ERP → 29 dBm EIRP, the values ChirpStack's `lrwn` EU868 region uses.
pub fn erp_to_eirp_dbm(erp_dbm: i32) -> i32 {
    // In hundredths of a dB, so the rounding is exact.
    (erp_dbm * 100 + 215).div_euclid(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erp_converts_to_eirp_rounded_down() {
        for (erp, eirp) in [(14, 16), (27, 29), (0, 2), (-3, -1), (20, 22)] {
            assert_eq!(erp_to_eirp_dbm(erp), eirp, "{erp} dBm ERP");
        }
    }

    #[test]
    fn duty_cycle_allowances_over_one_hour_are_exact() {
        let hour = Duration::from_secs(3600);
        assert_eq!(DutyCycle::from_permille(1).allowance(hour), Duration::from_millis(3600));
        assert_eq!(DutyCycle::from_permille(10).allowance(hour), Duration::from_secs(36));
        assert_eq!(DutyCycle::from_permille(100).allowance(hour), Duration::from_secs(360));
        assert_eq!(DutyCycle::from_permille(1000).allowance(hour), hour);
        assert_eq!(DutyCycle::from_permille(0).allowance(hour), Duration::ZERO);
    }

    #[test]
    fn duty_cycles_print_as_percent() {
        assert_eq!(DutyCycle::from_permille(1).to_string(), "0.1 %");
        assert_eq!(DutyCycle::from_permille(10).to_string(), "1.0 %");
        assert_eq!(DutyCycle::from_permille(100).to_string(), "10.0 %");
    }

    #[test]
    #[should_panic(expected = "at most 100 %")]
    fn a_duty_cycle_above_100_percent_is_a_programming_error() {
        let _ = DutyCycle::from_permille(1001);
    }

    #[test]
    fn sub_band_ids_name_the_etsi_band_and_its_range() {
        assert_eq!(SubBandId::EtsiP.to_string(), "ETSI band P (869.4-869.65 MHz)");
        assert_eq!(SubBandId::EtsiP.as_str(), "P");
        assert_eq!(SubBandId::EtsiOther.as_str(), "other");
    }
}
