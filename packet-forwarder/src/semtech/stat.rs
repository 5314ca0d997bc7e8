//! `stat`: the gateway status report inside PUSH_DATA (PROTOCOL.TXT §4).

use serde::{Deserialize, Serialize};

use crate::frame::GatewayStats;

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
