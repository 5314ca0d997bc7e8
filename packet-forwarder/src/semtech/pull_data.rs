//! PULL_DATA (0x02), gateway → server: keep-alive that opens the downlink path; the server
//! remembers its source address for PULL_RESP (PROTOCOL.TXT §5.2). 12 bytes, no JSON.

use super::header::{Header, Identifier};
use super::DecodeError;
use crate::frame::GatewayId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullData {
    pub token: u16,
    pub gateway_id: GatewayId,
}

impl PullData {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12);
        Header { token: self.token, identifier: Identifier::PullData, gateway_id: Some(self.gateway_id) }.encode_into(&mut out);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<PullData, DecodeError> {
        let (header, _) = Header::decode(buf)?;
        super::expect(header.identifier, Identifier::PullData)?;
        Ok(PullData { token: header.token, gateway_id: header.gateway_id.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Eui64;

    #[test]
    fn pull_data_round_trips() {
        let p = PullData { token: 9, gateway_id: Eui64::from_u64(0xaabbccddeeff0011) };
        let bytes = p.encode();
        assert_eq!(bytes, [2, 0, 9, 2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11]);
        assert_eq!(PullData::decode(&bytes).unwrap(), p);
    }
}
