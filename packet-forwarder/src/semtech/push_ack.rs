//! PUSH_ACK (0x01), server → gateway: acknowledges PUSH_DATA with the same token
//! (PROTOCOL.TXT §3.3). Four bytes, no gateway EUI, no JSON.

use super::header::{Header, Identifier};
use super::DecodeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushAck {
    pub token: u16,
}

impl PushAck {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4);
        Header { token: self.token, identifier: Identifier::PushAck, gateway_id: None }.encode_into(&mut out);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<PushAck, DecodeError> {
        let (header, _) = Header::decode(buf)?;
        super::expect(header.identifier, Identifier::PushAck)?;
        Ok(PushAck { token: header.token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_ack_is_four_bytes_and_round_trips() {
        let a = PushAck { token: 0xbeef };
        assert_eq!(a.encode(), [2, 0xbe, 0xef, 1]);
        assert_eq!(PushAck::decode(&a.encode()).unwrap(), a);
        assert!(PushAck::decode(&[2, 0xbe, 0xef, 4]).is_err());
    }
}
