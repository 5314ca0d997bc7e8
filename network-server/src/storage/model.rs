//! Rows as the rest of loraflow sees them. Times are UTC; counters are u32 as in LoRaWAN
//! (stored as BIGINT/INTEGER because PostgreSQL has no unsigned types).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use loraflow_packet_forwarder::AllowedNetworks;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::{AesKey, DevAddr, Eui64};

#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub altitude: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub gateway_id: Eui64,
    pub name: String,
    pub description: String,
    pub location: Option<Location>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The region configuration (`[[regions]]` id) the gateway belongs to; `None` = the
    /// first configured one.
    pub region_config_id: Option<String>,
    /// Where its Semtech UDP datagrams may come from; empty = anywhere.
    pub allowed_networks: AllowedNetworks,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProfile {
    pub id: Uuid,
    pub name: String,
    /// e.g. "EU868"
    pub region: String,
    /// "1.0.0" … "1.0.4", "1.1.0"
    pub mac_version: String,
    /// e.g. "RP002-1.0.3"
    pub reg_params_revision: String,
    pub supports_otaa: bool,
    pub supports_class_c: bool,
    pub adr_enabled: bool,
    /// Lowest data rate ADR may set (a device below it is moved up to it).
    pub adr_min_dr: u8,
    /// Highest data rate ADR may set (never above the region's `max_adr_dr`).
    pub adr_max_dr: u8,
    /// dB of SNR kept in reserve above the demodulation floor before ADR speeds a device up.
    pub adr_installation_margin_db: f32,
    /// DevStatusReq sent this many times per day; 0 = never.
    pub dev_status_req_freq: u32,
    /// Seconds a confirmed Class C downlink waits for its ACK (`classCTimeout`).
    pub class_c_timeout: u32,
    /// "NONE" | "CAYENNE_LPP" | "JS"
    pub payload_codec: String,
    pub payload_codec_script: String,
    /// Decoded-object path (`temperatureSensor.1`) → the series it is stored as.
    pub measurements: BTreeMap<String, MeasurementDefinition>,
    /// Numeric leaves without a definition become GAUGE series named after their path.
    pub auto_detect_measurements: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How the values of a series are meant to be read; the names are ChirpStack's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MeasurementKind {
    /// A value at a point in time (temperature).
    Gauge,
    /// An ever-increasing total (energy meter); the interesting figure is its increase.
    Counter,
    /// A count since the previous uplink (pulses since the last report).
    Absolute,
    /// Text (a state name); stored in `text_value`.
    String,
}

impl MeasurementKind {
    pub const ALL: [MeasurementKind; 4] =
        [MeasurementKind::Gauge, MeasurementKind::Counter, MeasurementKind::Absolute, MeasurementKind::String];

    /// The stored and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MeasurementKind::Gauge => "GAUGE",
            MeasurementKind::Counter => "COUNTER",
            MeasurementKind::Absolute => "ABSOLUTE",
            MeasurementKind::String => "STRING",
        }
    }

    pub fn parse(s: &str) -> Option<MeasurementKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a profile says about one decoded-object path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasurementDefinition {
    pub name: String,
    pub kind: MeasurementKind,
}

/// One value of a series taken from an uplink's decoded object.
#[derive(Debug, Clone, PartialEq)]
pub enum MeasurementValue {
    Number(f64),
    Text(String),
}

/// A measurement row of an uplink; time, device and application are the uplink's.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub name: String,
    pub kind: MeasurementKind,
    pub value: MeasurementValue,
}

/// A stored value of a series, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMeasurement {
    pub time: DateTime<Utc>,
    pub name: String,
    pub kind: MeasurementKind,
    pub value: MeasurementValue,
}

/// A REST/MQTT API key (its token is stored only as a SHA-256 digest).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// Only this application's resources; `None`: every resource (an admin key).
    pub application_id: Option<Uuid>,
    /// Reads only.
    pub read_only: bool,
    /// The admin token loraflow generated on first start (replaced by `admin-token rotate`).
    pub generated: bool,
    pub created_at: DateTime<Utc>,
}

impl ApiKey {
    /// A new admin key with a fresh id, made now.
    pub fn new(name: impl Into<String>) -> ApiKey {
        ApiKey { id: Uuid::new_v4(), name: name.into(), application_id: None, read_only: false, generated: false, created_at: Utc::now() }
    }
}

/// One clock hour (UTC) of a numeric series of one device: a row of the hourly rollup
/// (`measurements_hourly`, TimescaleDB's continuous aggregate of the same name). `avg` is
/// `sum / count`; `last` is the value at `last_time`, the newest of the hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourlyMeasurement {
    pub bucket: DateTime<Utc>,
    pub sum: f64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    pub last_time: DateTime<Utc>,
}

impl HourlyMeasurement {
    /// The hour holding one value.
    pub fn of(time: DateTime<Utc>, value: f64) -> HourlyMeasurement {
        let bucket = DateTime::from_timestamp(time.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(time);
        HourlyMeasurement { bucket, sum: value, count: 1, min: value, max: value, last: value, last_time: time }
    }

    /// Adds the values of `other` (same device, series and hour); the later `last` wins, and
    /// of two at the same instant the one added.
    pub fn merge(&mut self, other: &HourlyMeasurement) {
        self.sum += other.sum;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.last_time >= self.last_time {
            self.last = other.last;
            self.last_time = other.last_time;
        }
    }
}

/// Whose series a query reads: one device's, or every device's of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesScope {
    Device(Eui64),
    Application(Uuid),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub dev_eui: Eui64,
    pub name: String,
    pub description: String,
    pub application_id: Uuid,
    pub device_profile_id: Uuid,
    pub join_eui: Eui64,
    pub skip_fcnt_check: bool,
    pub is_disabled: bool,
    pub tags: serde_json::Value,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Address of the current session, if any (kept in step with `device_session`).
    pub dev_addr: Option<DevAddr>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceKeys {
    pub dev_eui: Eui64,
    /// LoRaWAN 1.0.x root key (AppKey).
    pub app_key: AesKey,
    /// LoRaWAN 1.1 NwkKey; `None` for 1.0.x devices.
    pub nwk_key: Option<AesKey>,
}

/// A device's network session (OTAA or ABP). For LoRaWAN 1.0.x the three network
/// keys are all the NwkSKey.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSession {
    pub dev_eui: Eui64,
    pub dev_addr: DevAddr,
    pub mac_version: String,
    pub f_nwk_s_int_key: AesKey,
    pub s_nwk_s_int_key: AesKey,
    pub nwk_s_enc_key: AesKey,
    pub app_s_key: AesKey,
    /// Next expected uplink frame counter (32-bit, reconstructed). A fresh session is 0.
    pub f_cnt_up: u32,
    /// Next downlink frame counter to use.
    pub n_f_cnt_down: u32,
    /// RX settings the device uses (acknowledged; see `mac::state::RxParams`).
    /// Seconds, 1..=15.
    pub rx1_delay: u8,
    pub rx1_dr_offset: u8,
    pub rx2_dr: u8,
    /// Hz
    pub rx2_frequency: u32,
    /// Uplink FCnt of a confirmed uplink not yet acknowledged by us, for retransmissions.
    pub pending_ack_f_cnt: Option<u32>,
    /// Set when the session was created by a join (OTAA), false for ABP.
    pub is_otaa: bool,
    /// What the server believes about the device's radio settings and its MAC requests
    /// waiting for an answer (`mac::state`).
    pub mac_state: crate::mac::state::MacState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    pub id: Uuid,
    pub dev_eui: Eui64,
    pub f_port: u8,
    pub confirmed: bool,
    /// Plain application payload; encrypted only when sent.
    pub data: Vec<u8>,
    /// Set once the item was sent (then it is kept until acknowledged or timed out).
    pub f_cnt_down: Option<u32>,
    pub is_pending: bool,
    /// When a pending confirmed item stops waiting for its ACK.
    pub timeout_at: Option<DateTime<Utc>>,
    /// How many times it has been sent.
    pub retries: u32,
    pub created_at: DateTime<Utc>,
}

/// One stored, deduplicated uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkRecord {
    pub deduplication_id: Uuid,
    pub time: DateTime<Utc>,
    pub dev_eui: Eui64,
    pub application_id: Uuid,
    pub dev_addr: DevAddr,
    pub f_cnt: u32,
    pub f_port: Option<u8>,
    pub confirmed: bool,
    pub dr: u8,
    pub frequency: u32,
    pub rssi: i32,
    pub snr: f32,
    pub gateway_count: u32,
    pub data: Vec<u8>,
    pub object: Option<serde_json::Value>,
    pub rx_info: serde_json::Value,
    pub tx_info: serde_json::Value,
    /// The ADR decision the server made on this uplink (DR, TX power index, NbTrans it
    /// wants the device to use next); `None` when ADR did not run for it.
    pub adr_decision: Option<crate::mac::adr::AdrDecision>,
    /// The series values taken from `object`, stored with the uplink in one transaction.
    pub measurements: Vec<Measurement>,
}

/// One stored integration event (join, ack, txack, status, log; `up` lives in uplinks).
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub id: Uuid,
    pub time: DateTime<Utc>,
    pub dev_eui: Eui64,
    pub application_id: Uuid,
    /// "join" | "ack" | "txack" | "status" | "log"
    pub kind: String,
    pub body: serde_json::Value,
}

/// What a stored event is about (the `kind` column of `events`; `up` lives in `uplinks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Join,
    Ack,
    TxAck,
    Status,
    Log,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [EventKind::Join, EventKind::Ack, EventKind::TxAck, EventKind::Status, EventKind::Log];

    /// The stored and published name (`txack`, not `txAck`: it is the MQTT topic segment).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Join => "join",
            EventKind::Ack => "ack",
            EventKind::TxAck => "txack",
            EventKind::Status => "status",
            EventKind::Log => "log",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownEventKind(s.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?} (expected join, ack, txack, status or log)")]
pub struct UnknownEventKind(pub String);

/// The level of a `log` event (its body's `level`, as the integration publishes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub const ALL: [LogLevel; 3] = [LogLevel::Info, LogLevel::Warning, LogLevel::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        LogLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a log level (expected ERROR, WARNING or INFO)"))
    }
}

/// Which events a list across devices shows (every filter optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only the events published to this application.
    pub application_id: Option<Uuid>,
    pub kind: Option<EventKind>,
    /// Only `log` events of this level.
    pub level: Option<LogLevel>,
}

/// A position in a device's history, newest first: a page starts strictly after (older
/// than) this row. The id breaks ties between rows stored with the same time, so paging
/// neither skips nor repeats a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    pub time: DateTime<Utc>,
    /// `deduplication_id` of an uplink, `id` of an event.
    pub id: Uuid,
}

/// One page of a device's uplinks or events, newest first by (time, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub dev_eui: Eui64,
    /// Only rows with `time >= since`.
    pub since: Option<DateTime<Utc>>,
    /// Only rows older than this one (the last row of the previous page).
    pub after: Option<HistoryCursor>,
    pub limit: u32,
}

/// Everything the uplink path needs about a device in one read.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceContext {
    pub device: Device,
    pub profile: DeviceProfile,
    pub application_name: String,
}
