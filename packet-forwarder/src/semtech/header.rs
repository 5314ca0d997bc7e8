//! The binary header every Semtech UDP datagram starts with
//! (Semtech packet_forwarder PROTOCOL.TXT v2, §3 to §6):
//!
//! ```text
//! 0      protocol version (2)
//! 1-2    random token
//! 3      identifier
//! 4-11   gateway EUI (PUSH_DATA, PULL_DATA, TX_ACK only)
//! rest   JSON object (PUSH_DATA, PULL_RESP, TX_ACK)
//! ```

use crate::frame::GatewayId;

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 2;

/// Length of version + token + identifier.
pub const SHORT_HEADER_LEN: usize = 4;

/// Length of a header that carries the gateway EUI.
pub const LONG_HEADER_LEN: usize = 12;

/// Packet identifier, byte 3 of every datagram (PROTOCOL.TXT §3-§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Identifier {
    PushData = 0x00,
    PushAck = 0x01,
    PullData = 0x02,
    PullResp = 0x03,
    PullAck = 0x04,
    TxAck = 0x05,
}

impl Identifier {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => Identifier::PushData,
            0x01 => Identifier::PushAck,
            0x02 => Identifier::PullData,
            0x03 => Identifier::PullResp,
            0x04 => Identifier::PullAck,
            0x05 => Identifier::TxAck,
            _ => return None,
        })
    }

    /// Whether the header carries the gateway EUI (bytes 4-11).
    pub fn has_gateway_id(&self) -> bool {
        matches!(self, Identifier::PushData | Identifier::PullData | Identifier::TxAck)
    }

    /// Minimum datagram length for this packet type.
    pub fn header_len(&self) -> usize {
        if self.has_gateway_id() {
            LONG_HEADER_LEN
        } else {
            SHORT_HEADER_LEN
        }
    }

    /// Snake-case name, used as the `packet_type` metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Identifier::PushData => "push_data",
            Identifier::PushAck => "push_ack",
            Identifier::PullData => "pull_data",
            Identifier::PullResp => "pull_resp",
            Identifier::PullAck => "pull_ack",
            Identifier::TxAck => "tx_ack",
        }
    }
}

/// Why a datagram's header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("datagram of {len} bytes is shorter than the {need}-byte header")]
    TooShort { len: usize, need: usize },
    #[error("protocol version {0} is not supported (expected 2)")]
    WrongVersion(u8),
    #[error("unknown packet identifier 0x{0:02x}")]
    UnknownType(u8),
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub token: u16,
    pub identifier: Identifier,
    /// Present exactly when `identifier.has_gateway_id()`.
    pub gateway_id: Option<GatewayId>,
}

impl Header {
    /// Reads the header and returns it with the rest of the datagram (the JSON body, if any).
    /// Checks in wire order so that the error names the first thing wrong.
    pub fn decode(buf: &[u8]) -> Result<(Header, &[u8]), HeaderError> {
        if buf.len() < SHORT_HEADER_LEN {
            return Err(HeaderError::TooShort { len: buf.len(), need: SHORT_HEADER_LEN });
        }
        if buf[0] != PROTOCOL_VERSION {
            return Err(HeaderError::WrongVersion(buf[0]));
        }
        let identifier = Identifier::from_u8(buf[3]).ok_or(HeaderError::UnknownType(buf[3]))?;
        let token = u16::from_be_bytes([buf[1], buf[2]]);
        let need = identifier.header_len();
        if buf.len() < need {
            return Err(HeaderError::TooShort { len: buf.len(), need });
        }
        let gateway_id = if identifier.has_gateway_id() {
            let mut eui = [0u8; 8];
            eui.copy_from_slice(&buf[4..12]);
            Some(crate::frame::Eui64(eui))
        } else {
            None
        };
        Ok((Header { token, identifier, gateway_id }, &buf[need..]))
    }

    /// Writes the header; the gateway EUI is written only for the types that carry it.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(PROTOCOL_VERSION);
        out.extend_from_slice(&self.token.to_be_bytes());
        out.push(self.identifier as u8);
        if self.identifier.has_gateway_id() {
            out.extend_from_slice(&self.gateway_id.unwrap_or_default().0);
        }
    }
}

/// The JSON part of a datagram without the trailing NUL bytes and whitespace some packet
/// forwarders append (they send C strings with their terminator); `None` when nothing is left.
pub fn json_body(body: &[u8]) -> Option<&[u8]> {
    let end = body.iter().rposition(|b| !matches!(b, 0 | b' ' | b'\t' | b'\r' | b'\n'))?;
    Some(&body[..=end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Eui64;

    #[test]
    fn a_push_data_header_round_trips_with_its_gateway_id() {
        let h = Header { token: 0xabcd, identifier: Identifier::PushData, gateway_id: Some(Eui64::from_u64(0x0102030405060708)) };
        let mut buf = Vec::new();
        h.encode_into(&mut buf);
        assert_eq!(buf, [2, 0xab, 0xcd, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        buf.extend_from_slice(b"{}");
        let (back, rest) = Header::decode(&buf).unwrap();
        assert_eq!(back, h);
        assert_eq!(rest, b"{}");
    }

    #[test]
    fn an_ack_header_has_no_gateway_id() {
        let h = Header { token: 7, identifier: Identifier::PullAck, gateway_id: None };
        let mut buf = Vec::new();
        h.encode_into(&mut buf);
        assert_eq!(buf, [2, 0, 7, 4]);
        assert_eq!(Header::decode(&buf).unwrap().0, h);
    }

    #[test]
    fn short_wrong_version_and_unknown_type_are_told_apart() {
        assert_eq!(Header::decode(&[2, 0]), Err(HeaderError::TooShort { len: 2, need: 4 }));
        assert_eq!(Header::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(HeaderError::WrongVersion(1)));
        assert_eq!(Header::decode(&[2, 0, 0, 9]), Err(HeaderError::UnknownType(9)));
        // PULL_DATA needs the 8-byte EUI.
        assert_eq!(Header::decode(&[2, 0, 0, 2, 1, 2]), Err(HeaderError::TooShort { len: 6, need: 12 }));
    }

    #[test]
    fn json_body_strips_c_string_terminators() {
        assert_eq!(json_body(b"{\"a\":1}\0"), Some(&b"{\"a\":1}"[..]));
        assert_eq!(json_body(b"\0\0"), None);
        assert_eq!(json_body(b""), None);
    }
}
