//! Semtech UDP packet-forwarder protocol, version 2 (Semtech `lora_gateway`
//! `packet_forwarder/PROTOCOL.TXT`, "Basic communication protocol between Lora gateway and
//! server", v2). Pure encoders and decoders for both sides: the server uses the decoders of
//! gateway packets and the encoders of server packets; virtual gateways in tests and
//! simulators use the other half.
//!
//! | id   | packet    | direction        | module          |
//! |------|-----------|------------------|-----------------|
//! | 0x00 | PUSH_DATA | gateway → server | [`push_data`]   |
//! | 0x01 | PUSH_ACK  | server → gateway | [`push_ack`]    |
//! | 0x02 | PULL_DATA | gateway → server | [`pull_data`]   |
//! | 0x03 | PULL_RESP | server → gateway | [`pull_resp`]   |
//! | 0x04 | PULL_ACK  | server → gateway | [`pull_ack`]    |
//! | 0x05 | TX_ACK    | gateway → server | [`tx_ack`]      |

pub mod datr;
pub mod freq;
pub mod header;
pub mod pull_ack;
pub mod pull_data;
pub mod pull_resp;
pub mod push_ack;
pub mod push_data;
pub mod rxpk;
pub mod stat;
pub mod tx_ack;
pub mod txpk;

#[cfg(test)]
mod proptests;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

pub use datr::Datr;
pub use header::{Header, HeaderError, Identifier, PROTOCOL_VERSION};
pub use pull_ack::PullAck;
pub use pull_data::PullData;
pub use pull_resp::PullResp;
pub use push_ack::PushAck;
pub use push_data::{PushData, PushDataPayload, RawPushDataPayload};
pub use rxpk::{Rsig, Rxpk, RxpkError};
pub use stat::{Stat, StatError};
pub use tx_ack::{TxAck, TxAckPayload, TxpkAck};
pub use txpk::{Txpk, TxpkError};

/// Standard base64 alphabet; padding written, and accepted with or without on decode
/// because not every forwarder pads.
pub(crate) const BASE64: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

/// Why a datagram could not be decoded as the expected packet.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("expected a {expected:?} packet, got {got:?}")]
    UnexpectedType { expected: Identifier, got: Identifier },
    #[error("the packet carries no JSON object")]
    MissingJson,
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub(crate) fn expect(got: Identifier, expected: Identifier) -> Result<(), DecodeError> {
    if got == expected {
        Ok(())
    } else {
        Err(DecodeError::UnexpectedType { expected, got })
    }
}

/// Any protocol v2 packet, for code that reads both directions (e.g. a capture decoder).
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    PushData(PushData),
    PushAck(PushAck),
    PullData(PullData),
    PullResp(PullResp),
    PullAck(PullAck),
    TxAck(TxAck),
}

impl Packet {
    /// Decodes a datagram of any type; strict about the JSON content.
    pub fn decode(buf: &[u8]) -> Result<Packet, DecodeError> {
        let (header, _) = Header::decode(buf)?;
        Ok(match header.identifier {
            Identifier::PushData => Packet::PushData(PushData::decode(buf)?),
            Identifier::PushAck => Packet::PushAck(PushAck::decode(buf)?),
            Identifier::PullData => Packet::PullData(PullData::decode(buf)?),
            Identifier::PullResp => Packet::PullResp(PullResp::decode(buf)?),
            Identifier::PullAck => Packet::PullAck(PullAck::decode(buf)?),
            Identifier::TxAck => Packet::TxAck(TxAck::decode(buf)?),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Packet::PushData(p) => p.encode(),
            Packet::PushAck(p) => p.encode(),
            Packet::PullData(p) => p.encode(),
            Packet::PullResp(p) => p.encode(),
            Packet::PullAck(p) => p.encode(),
            Packet::TxAck(p) => p.encode(),
        }
    }

    pub fn identifier(&self) -> Identifier {
        match self {
            Packet::PushData(_) => Identifier::PushData,
            Packet::PushAck(_) => Identifier::PushAck,
            Packet::PullData(_) => Identifier::PullData,
            Packet::PullResp(_) => Identifier::PullResp,
            Packet::PullAck(_) => Identifier::PullAck,
            Packet::TxAck(_) => Identifier::TxAck,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Eui64, TxAckStatus};
    use base64::Engine as _;

    #[test]
    fn every_packet_type_round_trips_through_packet() {
        let gw = Eui64::from_u64(7);
        let txpk: Txpk = serde_json::from_str(
            r#"{"imme":true,"freq":869.525,"rfch":0,"powe":14,"modu":"LORA","datr":"SF9BW125","codr":"4/5","ipol":true,"size":1,"data":"AA=="}"#,
        )
        .unwrap();
        let packets = [
            Packet::PushData(PushData { token: 1, gateway_id: gw, payload: PushDataPayload::default() }),
            Packet::PushAck(PushAck { token: 2 }),
            Packet::PullData(PullData { token: 3, gateway_id: gw }),
            Packet::PullResp(PullResp { token: 4, txpk }),
            Packet::PullAck(PullAck { token: 5 }),
            Packet::TxAck(TxAck::new(6, gw, TxAckStatus::TxFreq)),
        ];
        for p in packets {
            let bytes = p.encode();
            assert_eq!(bytes[3], p.identifier() as u8);
            assert_eq!(Packet::decode(&bytes).unwrap(), p);
        }
    }

    #[test]
    fn base64_is_accepted_with_or_without_padding() {
        assert_eq!(BASE64.decode("AQI=").unwrap(), [1, 2]);
        assert_eq!(BASE64.decode("AQI").unwrap(), [1, 2]);
        assert_eq!(BASE64.encode([1, 2]), "AQI=");
        assert!(BASE64.decode("A-I_").is_err());
    }
}
