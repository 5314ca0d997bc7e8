//! What the network server hands to the application side: typed messages, never JSON.
//! Application payloads stay encrypted here; the application server holds the AppSKey use.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use loraflow_packet_forwarder::frame::{DownlinkFrame, GatewayId, RxInfo, UplinkTxInfo};

use crate::storage::DeviceContext;
use crate::types::{AesKey, DevAddr};

/// A deduplicated, authenticated data uplink (MIC and frame counter checked).
#[derive(Debug, Clone)]
pub struct DataUp {
    pub deduplication_id: Uuid,
    pub time: DateTime<Utc>,
    pub device: Arc<DeviceContext>,
    pub dev_addr: DevAddr,
    pub adr: bool,
    pub dr: u8,
    pub f_cnt: u32,
    pub f_port: Option<u8>,
    pub confirmed: bool,
    /// FRMPayload as received (encrypted with the AppSKey); empty when absent or FPort 0.
    pub frm_payload: Vec<u8>,
    pub app_s_key: AesKey,
    /// Every gateway copy, best first.
    pub rx_info: Vec<RxInfo>,
    pub tx_info: UplinkTxInfo,
    pub region_config_id: Arc<str>,
    pub region_common_name: &'static str,
    /// When the first copy of this uplink reached loraflow (for latency metrics).
    pub received_at: std::time::Instant,
    /// What ADR decided after this uplink (data rate, TX power index, NbTrans the device should
    /// use; what it uses now when nothing should change). `None` when ADR did not run: no ADR
    /// bit, ADR off in the device profile, or a LinkADRReq still waiting for its answer.
    /// Not part of the ChirpStack event JSON; for the uplink history.
    pub adr_decision: Option<crate::mac::adr::AdrDecision>,
}

#[derive(Debug, Clone)]
pub struct JoinInfo {
    pub deduplication_id: Uuid,
    pub time: DateTime<Utc>,
    pub device: Arc<DeviceContext>,
    pub dev_addr: DevAddr,
    pub region_config_id: Arc<str>,
}

/// A confirmed downlink was acknowledged by the device, or gave up waiting.
#[derive(Debug, Clone)]
pub struct AckInfo {
    pub deduplication_id: Uuid,
    pub time: DateTime<Utc>,
    pub device: Arc<DeviceContext>,
    pub queue_item_id: Uuid,
    pub acknowledged: bool,
    pub f_cnt_down: u32,
}

/// A gateway accepted a downlink for transmission (TX_ACK without error).
#[derive(Debug, Clone)]
pub struct TxAckInfo {
    pub downlink_id: u32,
    pub time: DateTime<Utc>,
    pub device: Arc<DeviceContext>,
    pub queue_item_id: Option<Uuid>,
    pub f_cnt_down: u32,
    pub gateway_id: GatewayId,
    pub frame: DownlinkFrame,
}

/// DevStatusAns from the device.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    pub deduplication_id: Uuid,
    pub time: DateTime<Utc>,
    pub device: Arc<DeviceContext>,
    pub margin: i32,
    pub external_power_source: bool,
    pub battery_level_unavailable: bool,
    /// Percent, 0..=100.
    pub battery_level: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn as_str(&self) -> &'static str {
        match self {
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
        }
    }
}

/// Codes of ChirpStack's `LogCode` enum that loraflow emits. ChirpStack has no code for MAC
/// commands: a refused or unanswered MAC request is `UNKNOWN` with the command in
/// `context.command`, so that consumers parsing with ChirpStack's schema keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCode {
    UplinkCodec,
    DownlinkCodec,
    UplinkFCntReset,
    UplinkFCntRetransmission,
    UplinkMic,
    Otaa,
    DownlinkPayloadSize,
    DownlinkGateway,
    FCntDown,
    Expired,
    Unknown,
}

impl LogCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            LogCode::UplinkCodec => "UPLINK_CODEC",
            LogCode::DownlinkCodec => "DOWNLINK_CODEC",
            LogCode::UplinkFCntReset => "UPLINK_F_CNT_RESET",
            LogCode::UplinkFCntRetransmission => "UPLINK_F_CNT_RETRANSMISSION",
            LogCode::UplinkMic => "UPLINK_MIC",
            LogCode::Otaa => "OTAA",
            LogCode::DownlinkPayloadSize => "DOWNLINK_PAYLOAD_SIZE",
            LogCode::DownlinkGateway => "DOWNLINK_GATEWAY",
            LogCode::FCntDown => "F_CNT_DOWN",
            LogCode::Expired => "EXPIRED",
            LogCode::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogInfo {
    pub time: DateTime<Utc>,
    pub device: Arc<DeviceContext>,
    pub level: LogLevel,
    pub code: LogCode,
    pub description: String,
    pub context: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum AppEvent {
    Up(Box<DataUp>),
    Join(JoinInfo),
    Ack(AckInfo),
    TxAck(Box<TxAckInfo>),
    Status(StatusInfo),
    Log(LogInfo),
}
