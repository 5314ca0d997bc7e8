//! Identifier and key types shared by every layer, in the byte order people write them
//! (MSB first). LoRaWAN puts EUIs and DevAddr on the wire little-endian: convert with
//! `to_wire`/`from_wire`, never by hand at call sites.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use loraflow_packet_forwarder::frame::{Eui64, ParseEui64Error};

/// A 32-bit device address as written by people, e.g. `26011234` (MSB first).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DevAddr(pub [u8; 4]);

impl DevAddr {
    pub fn as_u32(&self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    pub fn from_u32(v: u32) -> Self {
        DevAddr(v.to_be_bytes())
    }

    /// The four bytes as they appear in a PHYPayload (little-endian).
    pub fn to_wire(&self) -> [u8; 4] {
        let mut b = self.0;
        b.reverse();
        b
    }

    pub fn from_wire(b: [u8; 4]) -> Self {
        let mut b = b;
        b.reverse();
        DevAddr(b)
    }
}

/// A 128-bit AES key. Its `Debug` never prints the key, so keys cannot leak into logs.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct AesKey(pub [u8; 16]);

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(..)")
    }
}

impl AesKey {
    /// Lower-case hex, for the REST API and storage only (never for logs).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected {0} hex characters")]
pub struct ParseHexError(pub usize);

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], ParseHexError> {
    let mut out = [0u8; N];
    if s.len() != N * 2 {
        return Err(ParseHexError(N * 2));
    }
    hex::decode_to_slice(s, &mut out).map_err(|_| ParseHexError(N * 2))?;
    Ok(out)
}

impl FromStr for DevAddr {
    type Err = ParseHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<4>(s).map(DevAddr)
    }
}

impl FromStr for AesKey {
    type Err = ParseHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<16>(s).map(AesKey)
    }
}

impl fmt::Display for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevAddr({self})")
    }
}

macro_rules! hex_serde {
    ($t:ty, $to:expr) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let f: fn(&$t) -> String = $to;
                s.serialize_str(&f(self))
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.to_ascii_lowercase().parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_serde!(DevAddr, |v| v.to_string());
hex_serde!(AesKey, |v| v.to_hex());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_addr_wire_order_is_reversed() {
        let a: DevAddr = "26011234".parse().unwrap();
        assert_eq!(a.to_wire(), [0x34, 0x12, 0x01, 0x26]);
        assert_eq!(DevAddr::from_wire(a.to_wire()), a);
        assert_eq!(a.as_u32(), 0x2601_1234);
    }

    #[test]
    fn keys_parse_any_case_and_never_debug_print() {
        let k: AesKey = "00112233445566778899AABBCCDDEEFF".to_ascii_lowercase().parse().unwrap();
        assert_eq!(k.to_hex(), "00112233445566778899aabbccddeeff");
        assert_eq!(format!("{k:?}"), "AesKey(..)");
        assert!("0011".parse::<AesKey>().is_err());
    }
}
