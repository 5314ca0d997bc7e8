//! Gateway-neutral frame model: what the packet-forwarder hands to the network server and
//! what it takes back. Nothing here knows about Semtech JSON or LoRaWAN sessions.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A 64-bit EUI (gateway id, DevEUI, JoinEUI) as people write it, MSB first,
/// e.g. `0102030405060708`. Wire encodings (LoRaWAN is little-endian) are the caller's job.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Eui64(pub [u8; 8]);

/// Gateways are identified by their EUI.
pub type GatewayId = Eui64;

impl Eui64 {
    pub fn as_u64(&self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    pub fn from_u64(v: u64) -> Self {
        Eui64(v.to_be_bytes())
    }
}

impl fmt::Display for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Eui64({self})")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected 16 hex characters")]
pub struct ParseEui64Error;

impl FromStr for Eui64 {
    type Err = ParseEui64Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 8];
        if s.len() != 16 {
            return Err(ParseEui64Error);
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseEui64Error)?;
        Ok(Eui64(out))
    }
}

impl Serialize for Eui64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Eui64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Modulation of a received or transmitted frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Modulation {
    Lora {
        /// Hz, e.g. 125000.
        bandwidth: u32,
        spreading_factor: u8,
        /// As Semtech writes it: "4/5", "4/6", "4/7", "4/8", "4/5LI"…
        code_rate: String,
    },
    Fsk {
        /// bits per second
        datarate: u32,
    },
    LrFhss {
        /// raw Semtech `datr` string, e.g. "M0CW137"
        datr: String,
        code_rate: String,
    },
}

/// Radio metadata of one copy of an uplink as heard by one gateway (one antenna).
/// Serializable so that instances of a cluster can hand copies to the one that processes
/// the uplink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RxInfo {
    pub gateway_id: GatewayId,
    /// Random id given to this copy when it was received, for correlating logs and events.
    pub uplink_id: u32,
    /// Concentrator counter (µs) at end of reception; downlinks are scheduled against it.
    pub tmst: u32,
    /// GPS/UTC time of reception when the gateway knows it.
    pub time: Option<DateTime<Utc>>,
    /// When loraflow received the datagram.
    pub received_at: DateTime<Utc>,
    pub channel: u32,
    pub rf_chain: u32,
    pub antenna: u32,
    pub rssi: i32,
    pub snr: f32,
    /// CRC status: 1 ok, -1 bad, 0 none.
    pub crc_status: i8,
    /// Opaque context echoed in events: the tmst as 4 big-endian bytes.
    pub context: Vec<u8>,
}

/// Transmission parameters of a received frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkTxInfo {
    /// Hz
    pub frequency: u32,
    pub modulation: Modulation,
}

/// One received radio frame from one gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkFrame {
    pub phy_payload: Vec<u8>,
    pub tx_info: UplinkTxInfo,
    pub rx_info: RxInfo,
}

/// When a downlink must leave the antenna.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timing {
    /// At this concentrator counter value (µs), i.e. Class A relative to an uplink's tmst.
    Tmst(u32),
    /// As soon as possible (Class C).
    Immediately,
}

/// One transmission a gateway is asked to make. Serializable so that an instance of a cluster
/// can hand it to the instance that holds the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownlinkFrame {
    pub gateway_id: GatewayId,
    /// Random id to correlate with the TX_ACK; also used as the PULL_RESP token source.
    pub downlink_id: u32,
    pub phy_payload: Vec<u8>,
    pub timing: Timing,
    /// Hz
    pub frequency: u32,
    /// dBm EIRP
    pub power: i32,
    pub modulation: Modulation,
    /// RF chain to transmit on (0 on virtually every gateway).
    pub rf_chain: u32,
    /// LoRa downlinks to devices use inverted polarity.
    pub polarization_inversion: bool,
    pub antenna: u32,
}

/// The gateway's verdict on a downlink (Semtech TX_ACK `error` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxAckStatus {
    Ok,
    TooLate,
    TooEarly,
    CollisionPacket,
    CollisionBeacon,
    TxFreq,
    TxPower,
    GpsUnlocked,
    /// The gateway has no pull address yet (never sent PULL_DATA), so nothing was sent.
    GatewayNotConnected,
    /// No TX_ACK came back in time.
    Timeout,
    /// An error name we do not know; kept verbatim in logs only.
    Unknown,
}

impl TxAckStatus {
    /// Every status, e.g. to export each metric series from the start.
    pub const ALL: [TxAckStatus; 11] = [
        TxAckStatus::Ok,
        TxAckStatus::TooLate,
        TxAckStatus::TooEarly,
        TxAckStatus::CollisionPacket,
        TxAckStatus::CollisionBeacon,
        TxAckStatus::TxFreq,
        TxAckStatus::TxPower,
        TxAckStatus::GpsUnlocked,
        TxAckStatus::GatewayNotConnected,
        TxAckStatus::Timeout,
        TxAckStatus::Unknown,
    ];

    /// The name used on the wire and in events, e.g. `TOO_LATE`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TxAckStatus::Ok => "OK",
            TxAckStatus::TooLate => "TOO_LATE",
            TxAckStatus::TooEarly => "TOO_EARLY",
            TxAckStatus::CollisionPacket => "COLLISION_PACKET",
            TxAckStatus::CollisionBeacon => "COLLISION_BEACON",
            TxAckStatus::TxFreq => "TX_FREQ",
            TxAckStatus::TxPower => "TX_POWER",
            TxAckStatus::GpsUnlocked => "GPS_UNLOCKED",
            TxAckStatus::GatewayNotConnected => "GATEWAY_NOT_CONNECTED",
            TxAckStatus::Timeout => "TIMEOUT",
            TxAckStatus::Unknown => "UNKNOWN",
        }
    }

    /// Parses the Semtech TX_ACK `error` value; `NONE` and an absent/empty value mean OK.
    pub fn from_semtech(s: &str) -> Self {
        match s {
            "" | "NONE" => TxAckStatus::Ok,
            "TOO_LATE" => TxAckStatus::TooLate,
            "TOO_EARLY" => TxAckStatus::TooEarly,
            "COLLISION_PACKET" => TxAckStatus::CollisionPacket,
            "COLLISION_BEACON" => TxAckStatus::CollisionBeacon,
            "TX_FREQ" => TxAckStatus::TxFreq,
            "TX_POWER" => TxAckStatus::TxPower,
            "GPS_UNLOCKED" => TxAckStatus::GpsUnlocked,
            _ => TxAckStatus::Unknown,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, TxAckStatus::Ok)
    }
}

/// Gateway `stat` report, as far as the Semtech protocol carries it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayStats {
    pub time: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub altitude: Option<f64>,
    pub rx_received: u32,
    pub rx_ok: u32,
    pub rx_forwarded: u32,
    pub ack_ratio: f64,
    pub tx_received: u32,
    pub tx_emitted: u32,
}

/// What the packet-forwarder reports upward.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayEvent {
    /// A LoRa uplink from a gateway that is allowed to forward.
    Uplink(UplinkFrame),
    /// A `stat` object from a gateway.
    Stats { gateway_id: GatewayId, stats: GatewayStats, at: DateTime<Utc> },
    /// The gateway was heard (PUSH_DATA or PULL_DATA); throttled to at most one per gateway
    /// every few seconds so that storage can persist `lastSeenAt` cheaply.
    Seen { gateway_id: GatewayId, at: DateTime<Utc> },
}
