//! PUSH_DATA (0x00), gateway → server: received packets and status (PROTOCOL.TXT §3.2).
//! Header of 12 bytes (with gateway EUI) followed by `{"rxpk":[...],"stat":{...}}`.

use serde::{Deserialize, Serialize};

use super::header::{json_body, Header, Identifier};
use super::rxpk::Rxpk;
use super::stat::Stat;
use super::DecodeError;
use crate::frame::GatewayId;

#[derive(Debug, Clone, PartialEq)]
pub struct PushData {
    pub token: u16,
    pub gateway_id: GatewayId,
    pub payload: PushDataPayload,
}

/// The JSON object of PUSH_DATA, fully typed (strict: one bad rxpk fails the whole decode).
/// The server uses [`RawPushDataPayload`] instead to keep the good entries.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PushDataPayload {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rxpk: Vec<Rxpk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<Stat>,
}

/// The JSON object of PUSH_DATA with its entries still untyped, so that each rxpk and the stat
/// can be decoded (and fail) on their own.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RawPushDataPayload {
    #[serde(default)]
    pub rxpk: Vec<serde_json::Value>,
    #[serde(default)]
    pub stat: Option<serde_json::Value>,
}

impl RawPushDataPayload {
    /// Parses the body after the header; no body at all is an error too.
    pub fn parse(body: &[u8]) -> Result<Self, DecodeError> {
        let json = json_body(body).ok_or(DecodeError::MissingJson)?;
        Ok(serde_json::from_slice(json)?)
    }
}

impl PushData {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        Header { token: self.token, identifier: Identifier::PushData, gateway_id: Some(self.gateway_id) }.encode_into(&mut out);
        // Serializing plain data structures into a Vec cannot fail.
        serde_json::to_writer(&mut out, &self.payload).expect("PUSH_DATA payload serializes");
        out
    }

    pub fn decode(buf: &[u8]) -> Result<PushData, DecodeError> {
        let (header, body) = Header::decode(buf)?;
        super::expect(header.identifier, Identifier::PushData)?;
        let json = json_body(body).ok_or(DecodeError::MissingJson)?;
        Ok(PushData { token: header.token, gateway_id: header.gateway_id.unwrap_or_default(), payload: serde_json::from_slice(json)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Eui64;
    use crate::semtech::datr::Datr;

    fn sample() -> PushData {
        PushData {
            token: 0x1234,
            gateway_id: Eui64::from_u64(0x0102030405060708),
            payload: PushDataPayload {
                rxpk: vec![Rxpk {
                    time: None,
                    tmms: None,
                    tmst: 42,
                    freq: 868_100_000,
                    chan: 0,
                    rfch: 0,
                    stat: Some(1),
                    modu: "LORA".into(),
                    datr: Datr::Name("SF7BW125".into()),
                    codr: Some("4/5".into()),
                    rssi: Some(-60),
                    lsnr: Some(9.5),
                    size: Some(2),
                    data: "AQI=".into(),
                    rsig: None,
                }],
                stat: Some(Stat { rxnb: Some(1), ..Stat::default() }),
            },
        }
    }

    #[test]
    fn push_data_round_trips() {
        let p = sample();
        let bytes = p.encode();
        assert_eq!(&bytes[..12], &[2, 0x12, 0x34, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(PushData::decode(&bytes).unwrap(), p);
    }

    #[test]
    fn the_raw_payload_keeps_entries_apart() {
        let raw = RawPushDataPayload::parse(br#"{"rxpk":[{"bad":1},{"tmst":1}],"stat":{"rxnb":"x"}}"#).unwrap();
        assert_eq!(raw.rxpk.len(), 2);
        assert!(raw.stat.is_some());
        assert!(matches!(RawPushDataPayload::parse(b"{not json"), Err(DecodeError::Json(_))));
        assert!(matches!(RawPushDataPayload::parse(b""), Err(DecodeError::MissingJson)));
        assert!(matches!(RawPushDataPayload::parse(br#"{"rxpk":{}}"#), Err(DecodeError::Json(_))));
    }

    #[test]
    fn a_trailing_nul_after_the_json_is_accepted() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(PushData::decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn decoding_another_type_is_an_error() {
        let mut bytes = sample().encode();
        bytes[3] = 2;
        assert!(matches!(PushData::decode(&bytes), Err(DecodeError::UnexpectedType { .. })));
    }
}
