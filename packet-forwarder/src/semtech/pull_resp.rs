//! PULL_RESP (0x03), server → gateway: one packet to transmit, `{"txpk":{...}}`
//! (PROTOCOL.TXT §5.4). In protocol v2 the token is random and the gateway echoes it in TX_ACK.

use serde::{Deserialize, Serialize};

use super::header::{json_body, Header, Identifier};
use super::txpk::Txpk;
use super::DecodeError;

#[derive(Debug, Clone, PartialEq)]
pub struct PullResp {
    pub token: u16,
    pub txpk: Txpk,
}

#[derive(Serialize, Deserialize)]
struct Body {
    txpk: Txpk,
}

impl PullResp {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        Header { token: self.token, identifier: Identifier::PullResp, gateway_id: None }.encode_into(&mut out);
        #[derive(Serialize)]
        struct BodyRef<'a> {
            txpk: &'a Txpk,
        }
        // Serializing plain data structures into a Vec cannot fail.
        serde_json::to_writer(&mut out, &BodyRef { txpk: &self.txpk }).expect("PULL_RESP payload serializes");
        out
    }

    pub fn decode(buf: &[u8]) -> Result<PullResp, DecodeError> {
        let (header, body) = Header::decode(buf)?;
        super::expect(header.identifier, Identifier::PullResp)?;
        let json = json_body(body).ok_or(DecodeError::MissingJson)?;
        let body: Body = serde_json::from_slice(json)?;
        Ok(PullResp { token: header.token, txpk: body.txpk })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semtech::datr::Datr;

    #[test]
    fn pull_resp_round_trips_and_wraps_txpk() {
        let p = PullResp {
            token: 0x4242,
            txpk: Txpk {
                imme: true,
                tmst: None,
                tmms: None,
                freq: 869_525_000,
                rfch: 0,
                powe: 27,
                modu: "LORA".into(),
                datr: Datr::Name("SF12BW125".into()),
                codr: Some("4/5".into()),
                fdev: None,
                ipol: Some(true),
                prea: None,
                size: 1,
                data: "AA==".into(),
                ncrc: None,
                ant: None,
            },
        };
        let bytes = p.encode();
        assert_eq!(&bytes[..4], &[2, 0x42, 0x42, 3]);
        let json: serde_json::Value = serde_json::from_slice(&bytes[4..]).unwrap();
        assert_eq!(json["txpk"]["freq"], serde_json::json!(869.525));
        assert_eq!(PullResp::decode(&bytes).unwrap(), p);
    }

    #[test]
    fn pull_resp_without_txpk_is_an_error() {
        assert!(matches!(PullResp::decode(&[2, 0, 0, 3]), Err(DecodeError::MissingJson)));
        assert!(matches!(PullResp::decode(b"\x02\x00\x00\x03{}"), Err(DecodeError::Json(_))));
    }
}
