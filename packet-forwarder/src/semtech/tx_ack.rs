//! TX_ACK (0x05), gateway → server: the verdict on a PULL_RESP, same token
//! (PROTOCOL.TXT §5.5). 12-byte header, then optionally `{"txpk_ack":{"error":"..."}}`.
//! No JSON, an empty object or `"error":"NONE"` mean the packet was accepted. SX1302
//! forwarders may instead send `{"txpk_ack":{"warn":"TX_POWER","value":..}}` when they
//! adjusted the packet but still send it: that is a success too.

use serde::{Deserialize, Serialize};

use super::header::{json_body, Header, Identifier};
use super::DecodeError;
use crate::frame::{GatewayId, TxAckStatus};

#[derive(Debug, Clone, PartialEq)]
pub struct TxAck {
    pub token: u16,
    pub gateway_id: GatewayId,
    /// `None` when the datagram carries no JSON.
    pub payload: Option<TxAckPayload>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TxAckPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txpk_ack: Option<TxpkAck>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TxpkAck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

impl TxAckPayload {
    /// Parses the optional JSON after the header.
    pub fn parse(body: &[u8]) -> Result<Option<TxAckPayload>, DecodeError> {
        match json_body(body) {
            None => Ok(None),
            Some(json) => Ok(Some(serde_json::from_slice(json)?)),
        }
    }
}

impl TxAck {
    /// What a gateway sends for `status`: no JSON for OK, `{"txpk_ack":{"error":..}}` otherwise.
    pub fn new(token: u16, gateway_id: GatewayId, status: TxAckStatus) -> TxAck {
        let payload = (!status.is_ok())
            .then(|| TxAckPayload { txpk_ack: Some(TxpkAck { error: Some(status.as_str().to_string()), ..TxpkAck::default() }) });
        TxAck { token, gateway_id, payload }
    }

    /// The gateway's verdict.
    pub fn status(&self) -> TxAckStatus {
        let error = self.payload.as_ref().and_then(|p| p.txpk_ack.as_ref()).and_then(|a| a.error.as_deref());
        TxAckStatus::from_semtech(error.unwrap_or(""))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        Header { token: self.token, identifier: Identifier::TxAck, gateway_id: Some(self.gateway_id) }.encode_into(&mut out);
        if let Some(p) = &self.payload {
            serde_json::to_writer(&mut out, p).expect("TX_ACK payload serializes");
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<TxAck, DecodeError> {
        let (header, body) = Header::decode(buf)?;
        super::expect(header.identifier, Identifier::TxAck)?;
        Ok(TxAck { token: header.token, gateway_id: header.gateway_id.unwrap_or_default(), payload: TxAckPayload::parse(body)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Eui64;

    fn gw() -> GatewayId {
        Eui64::from_u64(0x0102030405060708)
    }

    #[test]
    fn a_header_only_tx_ack_means_ok() {
        let bytes = [2, 0, 5, 5, 1, 2, 3, 4, 5, 6, 7, 8];
        let a = TxAck::decode(&bytes).unwrap();
        assert_eq!((a.token, a.gateway_id, a.status()), (5, gw(), TxAckStatus::Ok));
        assert_eq!(TxAck::new(5, gw(), TxAckStatus::Ok).encode(), bytes);
    }

    #[test]
    fn error_names_map_to_statuses() {
        for (json, status) in [
            (r#"{"txpk_ack":{"error":"NONE"}}"#, TxAckStatus::Ok),
            (r#"{"txpk_ack":{"error":"TOO_LATE"}}"#, TxAckStatus::TooLate),
            (r#"{"txpk_ack":{"error":"COLLISION_BEACON"}}"#, TxAckStatus::CollisionBeacon),
            (r#"{"txpk_ack":{"error":"SOMETHING_NEW"}}"#, TxAckStatus::Unknown),
            (r#"{"txpk_ack":{"warn":"TX_POWER","value":20}}"#, TxAckStatus::Ok),
            (r#"{"txpk_ack":{}}"#, TxAckStatus::Ok),
            ("{}", TxAckStatus::Ok),
            ("{}\0", TxAckStatus::Ok),
        ] {
            let mut bytes = vec![2, 0, 1, 5, 1, 2, 3, 4, 5, 6, 7, 8];
            bytes.extend_from_slice(json.as_bytes());
            assert_eq!(TxAck::decode(&bytes).unwrap().status(), status, "{json}");
        }
    }

    #[test]
    fn tx_ack_with_an_error_round_trips() {
        let a = TxAck::new(0xfffe, gw(), TxAckStatus::TooEarly);
        let bytes = a.encode();
        assert!(bytes.ends_with(br#"{"txpk_ack":{"error":"TOO_EARLY"}}"#));
        let back = TxAck::decode(&bytes).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.status(), TxAckStatus::TooEarly);
    }

    #[test]
    fn a_tx_ack_with_broken_json_is_an_error() {
        let mut bytes = vec![2, 0, 1, 5, 1, 2, 3, 4, 5, 6, 7, 8];
        bytes.extend_from_slice(b"{\"txpk_ack\":");
        assert!(matches!(TxAck::decode(&bytes), Err(DecodeError::Json(_))));
    }
}
