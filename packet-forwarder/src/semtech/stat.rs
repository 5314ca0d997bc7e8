//! `stat`: the gateway status report inside PUSH_DATA (PROTOCOL.TXT §4).

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::frame::GatewayStats;

/// More radio packets than this in one stat interval (30 s by default) is no real gateway:
/// even a 64-channel concentrator at full load stays well below 1,000 a second.
pub const MAX_PACKETS_PER_STAT: u32 = 100_000;

const LATITUDE: RangeInclusive<f64> = -90.0..=90.0;
const LONGITUDE: RangeInclusive<f64> = -180.0..=180.0;
/// Metres: below the Dead Sea shore to above the highest mountains, with room for a mast.
const ALTITUDE: RangeInclusive<f64> = -500.0..=10_000.0;
const ACK_RATIO: RangeInclusive<f64> = 0.0..=100.0;

/// A `stat` value no gateway reports: the whole stat is dropped rather than stored or added
/// to the metrics, since one forged stat can otherwise inflate the counters for good.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatError {
    #[error("{field} {value} is outside {min}..={max}")]
    OutOfRange { field: &'static str, value: f64, min: f64, max: f64 },
    #[error("{field} {value} is more than one stat interval can hold ({MAX_PACKETS_PER_STAT})")]
    TooMany { field: &'static str, value: u32 },
    #[error("{field} {value} is more than rxnb {rxnb}")]
    MoreThanReceived { field: &'static str, value: u32, rxnb: u32 },
}

/// One `stat` object. Every field is optional: forwarders without GPS leave out the position,
/// and SX1302 forwarders add fields (e.g. `temp`) that are ignored here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Stat {
    /// UTC system time, "2014-01-12 08:59:28 GMT" style (not RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lati: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long: Option<f64>,
    /// Metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alti: Option<f64>,
    /// Radio packets received since the last stat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxnb: Option<u32>,
    /// Radio packets received with a valid CRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxok: Option<u32>,
    /// Radio packets forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxfw: Option<u32>,
    /// Percentage of upstream datagrams that were acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ackr: Option<f64>,
    /// Downlink datagrams received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwnb: Option<u32>,
    /// Packets emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txnb: Option<u32>,
}

impl Stat {
    pub fn from_value(value: serde_json::Value) -> Result<Stat, serde_json::Error> {
        serde_json::from_value(value)
    }

    /// Rejects values no gateway reports (PROTOCOL.TXT §4 gives the meaning of each field):
    /// positions off the globe, counters beyond what one interval can hold, more packets
    /// with a good CRC or forwarded than received, an ACK ratio outside 0-100 %. Negative
    /// counters do not get here: they fail [`from_value`](Self::from_value).
    pub fn check(&self) -> Result<(), StatError> {
        let ranges =
            [("lati", self.lati, LATITUDE), ("long", self.long, LONGITUDE), ("alti", self.alti, ALTITUDE), ("ackr", self.ackr, ACK_RATIO)];
        for (field, value, range) in ranges {
            if let Some(value) = value.filter(|v| !range.contains(v)) {
                return Err(StatError::OutOfRange { field, value, min: *range.start(), max: *range.end() });
            }
        }
        let counters = [("rxnb", self.rxnb), ("rxok", self.rxok), ("rxfw", self.rxfw), ("dwnb", self.dwnb), ("txnb", self.txnb)];
        for (field, value) in counters {
            if let Some(value) = value.filter(|v| *v > MAX_PACKETS_PER_STAT) {
                return Err(StatError::TooMany { field, value });
            }
        }
        let rxnb = self.rxnb.unwrap_or(0);
        for (field, value) in [("rxok", self.rxok), ("rxfw", self.rxfw)] {
            if let Some(value) = value.filter(|v| *v > rxnb) {
                return Err(StatError::MoreThanReceived { field, value, rxnb });
            }
        }
        Ok(())
    }

    pub fn to_gateway_stats(&self) -> GatewayStats {
        GatewayStats {
            time: self.time.clone(),
            latitude: self.lati,
            longitude: self.long,
            altitude: self.alti,
            rx_received: self.rxnb.unwrap_or(0),
            rx_ok: self.rxok.unwrap_or(0),
            rx_forwarded: self.rxfw.unwrap_or(0),
            ack_ratio: self.ackr.unwrap_or(0.0),
            tx_received: self.dwnb.unwrap_or(0),
            tx_emitted: self.txnb.unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_maps_onto_gateway_stats() {
        // PROTOCOL.TXT §4 example.
        let s: Stat = serde_json::from_str(
            r#"{"time":"2014-01-12 08:59:28 GMT","lati":46.24000,"long":3.25230,"alti":145,
                "rxnb":2,"rxok":2,"rxfw":2,"ackr":100.0,"dwnb":2,"txnb":2}"#,
        )
        .unwrap();
        let g = s.to_gateway_stats();
        assert_eq!(g.time.as_deref(), Some("2014-01-12 08:59:28 GMT"));
        assert_eq!((g.latitude, g.longitude, g.altitude), (Some(46.24), Some(3.2523), Some(145.0)));
        assert_eq!((g.rx_received, g.rx_ok, g.rx_forwarded, g.tx_received, g.tx_emitted), (2, 2, 2, 2, 2));
        assert_eq!(g.ack_ratio, 100.0);
    }

    #[test]
    fn a_stat_without_gps_or_counters_is_valid() {
        let s: Stat = serde_json::from_str(r#"{"time":"2014-01-12 08:59:28 GMT","temp":41.5}"#).unwrap();
        let g = s.to_gateway_stats();
        assert_eq!(g.latitude, None);
        assert_eq!(g.rx_received, 0);
    }

    #[test]
    fn believable_stats_pass_the_check() {
        let s: Stat = serde_json::from_str(
            r#"{"lati":-89.9,"long":179.9,"alti":-420,"rxnb":100000,"rxok":99000,"rxfw":100000,"ackr":0.0,"dwnb":5,"txnb":5}"#,
        )
        .unwrap();
        assert_eq!(s.check(), Ok(()));
        assert_eq!(Stat::default().check(), Ok(()));
    }

    #[test]
    fn absurd_stats_are_rejected_naming_the_field() {
        let cases = [
            (r#"{"lati":91.0}"#, "lati"),
            (r#"{"long":-180.5}"#, "long"),
            (r#"{"alti":40000}"#, "alti"),
            (r#"{"alti":-11000}"#, "alti"),
            (r#"{"ackr":250.0}"#, "ackr"),
            (r#"{"rxnb":4000000000}"#, "rxnb"),
            (r#"{"rxnb":1,"txnb":100001}"#, "txnb"),
            (r#"{"rxnb":2,"rxok":3}"#, "rxok"),
            (r#"{"rxfw":1}"#, "rxfw"),
        ];
        for (json, field) in cases {
            let err = serde_json::from_str::<Stat>(json).unwrap().check().unwrap_err();
            assert!(err.to_string().starts_with(field), "{json}: {err}");
        }
    }

    #[test]
    fn negative_counters_are_rejected() {
        assert!(serde_json::from_str::<Stat>(r#"{"rxnb":-1}"#).is_err());
    }

    #[test]
    fn positions_read_back_as_the_exact_doubles_written() {
        // Found by the property tests: without serde_json's `float_roundtrip` this altitude
        // read back one unit in the last place off (…957e-87 became …955e-87).
        let s = Stat { alti: Some(1.3676852706813957e-87), ..Stat::default() };
        let back: Stat = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
