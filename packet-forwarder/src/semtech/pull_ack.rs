//! PULL_ACK (0x04), server → gateway: acknowledges PULL_DATA with the same token
//! (PROTOCOL.TXT §5.3). Four bytes in protocol v2.

use super::header::{Header, Identifier};
use super::DecodeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullAck {
    pub token: u16,
}

impl PullAck {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4);
        Header { token: self.token, identifier: Identifier::PullAck, gateway_id: None }.encode_into(&mut out);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<PullAck, DecodeError> {
        let (header, _) = Header::decode(buf)?;
        super::expect(header.identifier, Identifier::PullAck)?;
        Ok(PullAck { token: header.token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_ack_is_four_bytes_and_round_trips() {
        let a = PullAck { token: 0x0102 };
        assert_eq!(a.encode(), [2, 1, 2, 4]);
        assert_eq!(PullAck::decode(&a.encode()).unwrap(), a);
    }
}
