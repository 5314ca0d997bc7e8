//! The raw frames of each gateway, for whoever watches it live
//! (`GET /api/gateways/{gatewayId}/frames/stream`): every uplink copy it forwarded, once the
//! server decided about it (accepted, or rejected with the reason word of
//! `loraflow_uplinks_rejected_total` / `loraflow_joins_rejected_total`), and every downlink
//! sent to it with its TX_ACK result.
//!
//! Frames are built only for watched gateways ([`crate::feed::Feed`]); the uplink path pays
//! one atomic load when nobody watches.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use loraflow_packet_forwarder::frame::{DownlinkFrame, GatewayId, Modulation as FrameModulation, TxAckStatus, UplinkFrame};

use crate::feed::Feed;
use crate::lorawan::{MType, Phy};
use crate::types::{DevAddr, Eui64};

/// Gateways' frames, by gateway; each watched gateway keeps its last
/// [`crate::feed::DEFAULT_CAPACITY`] frames for its slowest watcher.
pub type FrameFeed = Feed<GatewayId, Arc<FrameEvent>>;

/// One frame as the stream shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FrameEvent {
    Up(UpFrame),
    Down(DownFrame),
}

impl FrameEvent {
    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameEvent::Up(_) => "up",
            FrameEvent::Down(_) => "down",
        }
    }
}

/// LoRa modulation of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoraModulation {
    pub spreading_factor: u8,
    pub bandwidth: u32,
}

/// One uplink copy and the server's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpFrame {
    #[serde(serialize_with = "micros")]
    pub time: DateTime<Utc>,
    pub gateway_id: String,
    #[serde(serialize_with = "base64_bytes")]
    pub phy_payload: Vec<u8>,
    pub m_type: Option<&'static str>,
    pub dev_addr: Option<String>,
    pub dev_eui: Option<String>,
    pub f_cnt: Option<u32>,
    pub f_port: Option<u8>,
    pub frequency: u32,
    pub dr: Option<u8>,
    pub modulation: Option<LoraModulation>,
    pub rssi: i32,
    pub snr: f32,
    pub accepted: bool,
    pub reason: Option<&'static str>,
    pub deduplication_id: Option<Uuid>,
}

/// One downlink sent to a gateway and its TX_ACK result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DownFrame {
    #[serde(serialize_with = "micros")]
    pub time: DateTime<Utc>,
    pub gateway_id: String,
    #[serde(serialize_with = "base64_bytes")]
    pub phy_payload: Vec<u8>,
    pub m_type: Option<&'static str>,
    pub dev_addr: Option<String>,
    pub dev_eui: Option<String>,
    pub f_cnt_down: Option<u32>,
    pub frequency: u32,
    pub dr: Option<u8>,
    /// `OK` or the Semtech error name (`TOO_LATE`, `TIMEOUT`: no TX_ACK came back…).
    pub tx_ack: Option<&'static str>,
}

/// The name of a message type as the stream spells it (LoRaWAN 1.0.4 §4.2.1).
pub fn m_type_name(m: MType) -> &'static str {
    match m {
        MType::JoinRequest => "JoinRequest",
        MType::JoinAccept => "JoinAccept",
        MType::UnconfirmedDataUp => "UnconfirmedDataUp",
        MType::UnconfirmedDataDown => "UnconfirmedDataDown",
        MType::ConfirmedDataUp => "ConfirmedDataUp",
        MType::ConfirmedDataDown => "ConfirmedDataDown",
        MType::RejoinRequest => "RejoinRequest",
        MType::Proprietary => "Proprietary",
    }
}

/// What the server found out about an uplink, shared by all its copies.
#[derive(Debug, Clone, Copy, Default)]
pub struct UplinkFacts<'a> {
    pub phy: Option<&'a Phy>,
    pub dev_eui: Option<Eui64>,
    /// The full frame counter once a session matched (else the 16 bits on air).
    pub f_cnt: Option<u32>,
    pub dr: Option<u8>,
    pub deduplication_id: Option<Uuid>,
}

impl UpFrame {
    /// The frame of one copy with the verdict (`reason` is `None` when accepted).
    pub fn new(copy: &UplinkFrame, facts: &UplinkFacts<'_>, reason: Option<&'static str>) -> UpFrame {
        let (dev_addr, f_cnt, f_port) = match facts.phy {
            Some(Phy::Data(d)) => (Some(d.dev_addr), Some(facts.f_cnt.unwrap_or(u32::from(d.f_cnt16))), d.f_port),
            _ => (None, None, None),
        };
        let dev_eui = facts.dev_eui.or(match facts.phy {
            Some(Phy::JoinRequest(jr)) => Some(jr.dev_eui),
            _ => None,
        });
        UpFrame {
            time: copy.rx_info.time.unwrap_or(copy.rx_info.received_at),
            gateway_id: copy.rx_info.gateway_id.to_string(),
            phy_payload: copy.phy_payload.clone(),
            m_type: copy.phy_payload.first().map(|b| m_type_name(MType::from_mhdr(*b))),
            dev_addr: dev_addr.map(|a: DevAddr| a.to_string()),
            dev_eui: dev_eui.map(|e| e.to_string()),
            f_cnt,
            f_port,
            frequency: copy.tx_info.frequency,
            dr: facts.dr,
            modulation: lora(&copy.tx_info.modulation),
            rssi: copy.rx_info.rssi,
            snr: copy.rx_info.snr,
            accepted: reason.is_none(),
            reason,
            deduplication_id: facts.deduplication_id,
        }
    }
}

/// Who a downlink is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DownlinkFor {
    pub dev_eui: Eui64,
    pub dev_addr: Option<DevAddr>,
    pub f_cnt_down: Option<u32>,
}

impl DownFrame {
    pub fn new(frame: &DownlinkFrame, to: &DownlinkFor, dr: Option<u8>, tx_ack: TxAckStatus) -> DownFrame {
        DownFrame {
            time: Utc::now(),
            gateway_id: frame.gateway_id.to_string(),
            phy_payload: frame.phy_payload.clone(),
            m_type: frame.phy_payload.first().map(|b| m_type_name(MType::from_mhdr(*b))),
            dev_addr: to.dev_addr.map(|a| a.to_string()),
            dev_eui: Some(to.dev_eui.to_string()),
            f_cnt_down: to.f_cnt_down,
            frequency: frame.frequency,
            dr,
            tx_ack: Some(tx_ack.as_str()),
        }
    }
}

fn lora(m: &FrameModulation) -> Option<LoraModulation> {
    match m {
        FrameModulation::Lora { bandwidth, spreading_factor, .. } => {
            Some(LoraModulation { spreading_factor: *spreading_factor, bandwidth: *bandwidth })
        }
        _ => None,
    }
}

/// The REST API's one timestamp format (six fractional digits, `Z`).
fn micros<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

fn base64_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use loraflow_packet_forwarder::frame::{RxInfo, UplinkTxInfo};

    fn copy(phy: Vec<u8>) -> UplinkFrame {
        UplinkFrame {
            phy_payload: phy,
            tx_info: UplinkTxInfo {
                frequency: 868_100_000,
                modulation: FrameModulation::Lora { bandwidth: 125_000, spreading_factor: 7, code_rate: "4/5".into() },
            },
            rx_info: RxInfo {
                gateway_id: Eui64::from_u64(0x0102),
                uplink_id: 1,
                tmst: 1000,
                time: None,
                received_at: "2026-01-02T03:04:05.678Z".parse().unwrap(),
                channel: 0,
                rf_chain: 0,
                antenna: 0,
                rssi: -60,
                snr: 5.5,
                crc_status: 1,
                context: vec![],
            },
        }
    }

    #[test]
    fn an_uplink_copy_serialises_as_the_contract_says() {
        let phy = vec![0x40, 0x04, 0x03, 0x02, 0x01, 0x00, 0x07, 0x00, 0x01, 0xaa, 0x11, 0x22, 0x33, 0x44];
        let parsed = crate::lorawan::parse(&phy).unwrap();
        let facts = UplinkFacts { phy: Some(&parsed), dev_eui: None, f_cnt: None, dr: Some(5), deduplication_id: None };
        let json = serde_json::to_value(FrameEvent::Up(UpFrame::new(&copy(phy), &facts, Some("unknown_dev_addr")))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "time": "2026-01-02T03:04:05.678000Z", "gatewayId": "0000000000000102", "phyPayload": "QAQDAgEABwABqhEiM0Q=",
                "mType": "UnconfirmedDataUp", "devAddr": "01020304", "devEui": null, "fCnt": 7, "fPort": 1,
                "frequency": 868100000, "dr": 5, "modulation": {"spreadingFactor": 7, "bandwidth": 125000},
                "rssi": -60, "snr": 5.5, "accepted": false, "reason": "unknown_dev_addr", "deduplicationId": null
            })
        );
    }

    #[test]
    fn an_unparseable_copy_keeps_what_its_first_byte_says() {
        let facts = UplinkFacts::default();
        let f = UpFrame::new(&copy(vec![0x40, 1, 2]), &facts, Some("parse_error"));
        assert_eq!((f.m_type, f.dev_addr, f.accepted), (Some("UnconfirmedDataUp"), None, false));
        assert_eq!(UpFrame::new(&copy(vec![]), &facts, Some("parse_error")).m_type, None);
    }
}
