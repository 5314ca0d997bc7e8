//! The JSON of ChirpStack v4's MQTT integration (DESIGN.md §4): the protobuf JSON mapping of
//! `chirpstack-api` `integration.{Uplink,Join,Ack,TxAck,Status,Log}Event`, so that existing
//! consumers parse our events with `json_format.Parse(..., ignore_unknown_fields=False)`.
//!
//! Protobuf JSON rules followed here (proto3 JSON mapping): field names in lowerCamelCase,
//! enums by name, `bytes` as standard base64 with padding, `Timestamp` as RFC 3339 in UTC
//! with `Z`, `Duration` as seconds with an `s` suffix, maps as JSON objects with string
//! keys and values. Like ChirpStack (which emits default values), scalar fields are always
//! present; message fields (`object`, `gwTime`) only when set. Every integer field of these
//! messages is 32-bit, so all of them are JSON numbers.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use loraflow_network_server::events::{AckInfo, DataUp, JoinInfo, LogInfo, StatusInfo, TxAckInfo};
use loraflow_network_server::storage::DeviceContext;
use loraflow_packet_forwarder::frame::{DownlinkFrame, Modulation, RxInfo, Timing, UplinkTxInfo};

/// `Timestamp` of an event: RFC 3339, UTC, milliseconds, `Z` (e.g. `2026-11-25T06:00:00.123Z`).
pub fn time_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `Timestamp` keeping the precision the source has (0, 3, 6 or 9 fraction digits).
fn time_precise(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// `integration.DeviceInfo`. Tenants do not exist in loraflow, so `tenantId`/`tenantName`
/// are left out (both optional in the proto).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    pub application_id: String,
    pub application_name: String,
    pub device_profile_id: String,
    pub device_profile_name: String,
    pub device_name: String,
    pub dev_eui: String,
    /// `common.DeviceClass` name.
    pub device_class_enabled: &'static str,
    /// `map<string, string>`: non-string tag values are written as their JSON text.
    pub tags: BTreeMap<String, String>,
}

impl DeviceInfo {
    pub fn from_context(ctx: &DeviceContext) -> Self {
        let tags = match &ctx.device.tags {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        DeviceInfo {
            application_id: ctx.device.application_id.to_string(),
            application_name: ctx.application_name.clone(),
            device_profile_id: ctx.profile.id.to_string(),
            device_profile_name: ctx.profile.name.clone(),
            device_name: ctx.device.name.clone(),
            dev_eui: ctx.device.dev_eui.to_string(),
            // Class C devices listen continuously once their profile enables it; loraflow
            // has no Class B.
            device_class_enabled: if ctx.profile.supports_class_c { "CLASS_C" } else { "CLASS_A" },
            tags,
        }
    }
}

/// `gw.Modulation`: a oneof, written as the one set member.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ModulationJson {
    Lora(LoraModulationInfo),
    Fsk(FskModulationInfo),
    LrFhss(LrFhssModulationInfo),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoraModulationInfo {
    pub bandwidth: u32,
    pub spreading_factor: u32,
    /// `gw.CodeRate` name.
    pub code_rate: &'static str,
    /// Downlinks only (devices listen with inverted IQ); absent on uplinks as in ChirpStack.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub polarization_inversion: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FskModulationInfo {
    pub datarate: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LrFhssModulationInfo {
    /// Hz
    pub operating_channel_width: u32,
    pub code_rate: &'static str,
}

/// Semtech's code rate text (`"4/5"`, `"4/5LI"`…) as a `gw.CodeRate` name.
fn code_rate_name(semtech: &str) -> &'static str {
    match semtech.trim() {
        "4/5" => "CR_4_5",
        "4/6" | "2/3" => "CR_4_6",
        "4/7" => "CR_4_7",
        "4/8" | "1/2" => "CR_4_8",
        "3/8" => "CR_3_8",
        "2/6" | "1/3" => "CR_2_6",
        "1/4" => "CR_1_4",
        "1/6" => "CR_1_6",
        "5/6" => "CR_5_6",
        "4/5LI" => "CR_LI_4_5",
        "4/6LI" => "CR_LI_4_6",
        "4/8LI" => "CR_LI_4_8",
        _ => "CR_UNDEFINED",
    }
}

/// Operating channel width from a Semtech LR-FHSS `datr` such as `M0CW137` (kHz after `CW`).
fn lr_fhss_ocw_hz(datr: &str) -> u32 {
    datr.split_once("CW").and_then(|(_, khz)| khz.trim().parse::<u32>().ok()).map_or(0, |khz| khz.saturating_mul(1000))
}

impl ModulationJson {
    fn new(m: &Modulation, polarization_inversion: bool) -> Self {
        match m {
            Modulation::Lora { bandwidth, spreading_factor, code_rate } => ModulationJson::Lora(LoraModulationInfo {
                bandwidth: *bandwidth,
                spreading_factor: u32::from(*spreading_factor),
                code_rate: code_rate_name(code_rate),
                polarization_inversion,
            }),
            Modulation::Fsk { datarate } => ModulationJson::Fsk(FskModulationInfo { datarate: *datarate }),
            Modulation::LrFhss { datr, code_rate } => ModulationJson::LrFhss(LrFhssModulationInfo {
                operating_channel_width: lr_fhss_ocw_hz(datr),
                code_rate: code_rate_name(code_rate),
            }),
        }
    }
}

/// `gw.UplinkRxInfo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UplinkRxInfoJson {
    pub gateway_id: String,
    pub uplink_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw_time: Option<String>,
    pub ns_time: String,
    pub rssi: i32,
    pub snr: f32,
    pub channel: u32,
    pub rf_chain: u32,
    pub antenna: u32,
    /// base64 of the concentrator timestamp (4 bytes, big-endian).
    pub context: String,
    pub metadata: BTreeMap<&'static str, String>,
    /// `gw.CRCStatus` name.
    pub crc_status: &'static str,
}

impl UplinkRxInfoJson {
    pub fn new(rx: &RxInfo, region_config_id: &str, region_common_name: &str) -> Self {
        let mut metadata = BTreeMap::new();
        metadata.insert("region_config_id", region_config_id.to_string());
        metadata.insert("region_common_name", region_common_name.to_string());
        UplinkRxInfoJson {
            gateway_id: rx.gateway_id.to_string(),
            uplink_id: rx.uplink_id,
            gw_time: rx.time.map(time_precise),
            ns_time: time_millis(rx.received_at),
            rssi: rx.rssi,
            snr: rx.snr,
            channel: rx.channel,
            rf_chain: rx.rf_chain,
            antenna: rx.antenna,
            context: b64(&rx.context),
            metadata,
            crc_status: match rx.crc_status {
                1 => "CRC_OK",
                -1 => "BAD_CRC",
                _ => "NO_CRC",
            },
        }
    }
}

/// `gw.UplinkTxInfo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UplinkTxInfoJson {
    pub frequency: u32,
    pub modulation: ModulationJson,
}

impl UplinkTxInfoJson {
    pub fn new(tx: &UplinkTxInfo) -> Self {
        UplinkTxInfoJson { frequency: tx.frequency, modulation: ModulationJson::new(&tx.modulation, false) }
    }
}

/// `gw.Timing` (a oneof).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TimingJson {
    Immediately {},
    Delay {
        /// `google.protobuf.Duration`, e.g. `"1s"`.
        delay: String,
    },
}

/// `gw.DownlinkTxInfo`.
///
/// Class A downlinks are scheduled at an absolute concentrator time. ChirpStack writes them
/// as the uplink's context plus a delay; loraflow's frame only holds the absolute time, so
/// it is written as `context` = that time (4 bytes, big-endian, like the uplink context) and
/// a delay of `0s`, which means the same instant to anything that interprets it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DownlinkTxInfoJson {
    pub frequency: u32,
    pub power: i32,
    pub modulation: ModulationJson,
    pub board: u32,
    pub antenna: u32,
    pub timing: TimingJson,
    pub context: String,
}

impl DownlinkTxInfoJson {
    pub fn new(f: &DownlinkFrame) -> Self {
        let (timing, context) = match f.timing {
            Timing::Tmst(tmst) => (TimingJson::Delay { delay: "0s".into() }, b64(&tmst.to_be_bytes())),
            Timing::Immediately => (TimingJson::Immediately {}, String::new()),
        };
        DownlinkTxInfoJson {
            frequency: f.frequency,
            power: f.power,
            modulation: ModulationJson::new(&f.modulation, f.polarization_inversion),
            board: 0,
            antenna: f.antenna,
            timing,
            context,
        }
    }
}

/// `integration.UplinkEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UplinkEvent {
    pub deduplication_id: String,
    pub time: String,
    pub device_info: DeviceInfo,
    pub dev_addr: String,
    pub adr: bool,
    pub dr: u32,
    pub f_cnt: u32,
    /// 0 when the frame had no FPort.
    pub f_port: u32,
    pub confirmed: bool,
    /// base64 of the decrypted FRMPayload.
    pub data: String,
    /// `google.protobuf.Struct`: only when a codec produced an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<serde_json::Map<String, Value>>,
    pub rx_info: Vec<UplinkRxInfoJson>,
    pub tx_info: UplinkTxInfoJson,
    pub region_config_id: String,
}

impl UplinkEvent {
    /// `data` is the decrypted FRMPayload; `object` what the codec returned, if it ran.
    pub fn new(up: &DataUp, data: &[u8], object: Option<serde_json::Map<String, Value>>) -> Self {
        UplinkEvent {
            deduplication_id: up.deduplication_id.to_string(),
            time: time_millis(up.time),
            device_info: DeviceInfo::from_context(&up.device),
            dev_addr: up.dev_addr.to_string(),
            adr: up.adr,
            dr: u32::from(up.dr),
            f_cnt: up.f_cnt,
            f_port: up.f_port.map_or(0, u32::from),
            confirmed: up.confirmed,
            data: b64(data),
            object,
            rx_info: up.rx_info.iter().map(|rx| UplinkRxInfoJson::new(rx, &up.region_config_id, up.region_common_name)).collect(),
            tx_info: UplinkTxInfoJson::new(&up.tx_info),
            region_config_id: up.region_config_id.to_string(),
        }
    }
}

/// `integration.JoinEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinEvent {
    pub deduplication_id: String,
    pub time: String,
    pub device_info: DeviceInfo,
    pub dev_addr: String,
    pub region_config_id: String,
}

impl JoinEvent {
    pub fn new(j: &JoinInfo) -> Self {
        JoinEvent {
            deduplication_id: j.deduplication_id.to_string(),
            time: time_millis(j.time),
            device_info: DeviceInfo::from_context(&j.device),
            dev_addr: j.dev_addr.to_string(),
            region_config_id: j.region_config_id.to_string(),
        }
    }
}

/// `integration.AckEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AckEvent {
    pub deduplication_id: String,
    pub time: String,
    pub device_info: DeviceInfo,
    pub queue_item_id: String,
    pub acknowledged: bool,
    pub f_cnt_down: u32,
}

impl AckEvent {
    pub fn new(a: &AckInfo) -> Self {
        AckEvent {
            deduplication_id: a.deduplication_id.to_string(),
            time: time_millis(a.time),
            device_info: DeviceInfo::from_context(&a.device),
            queue_item_id: a.queue_item_id.to_string(),
            acknowledged: a.acknowledged,
            f_cnt_down: a.f_cnt_down,
        }
    }
}

/// `integration.TxAckEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TxAckEvent {
    pub downlink_id: u32,
    pub time: String,
    pub device_info: DeviceInfo,
    /// Empty (the proto3 default) for a downlink that carried no queue item (MAC only).
    pub queue_item_id: String,
    pub f_cnt_down: u32,
    pub gateway_id: String,
    pub tx_info: DownlinkTxInfoJson,
}

impl TxAckEvent {
    pub fn new(t: &TxAckInfo) -> Self {
        TxAckEvent {
            downlink_id: t.downlink_id,
            time: time_millis(t.time),
            device_info: DeviceInfo::from_context(&t.device),
            queue_item_id: t.queue_item_id.map(|id| id.to_string()).unwrap_or_default(),
            f_cnt_down: t.f_cnt_down,
            gateway_id: t.gateway_id.to_string(),
            tx_info: DownlinkTxInfoJson::new(&t.frame),
        }
    }
}

/// `integration.StatusEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    pub deduplication_id: String,
    pub time: String,
    pub device_info: DeviceInfo,
    pub margin: i32,
    pub external_power_source: bool,
    pub battery_level_unavailable: bool,
    pub battery_level: f64,
}

impl StatusEvent {
    pub fn new(s: &StatusInfo) -> Self {
        StatusEvent {
            deduplication_id: s.deduplication_id.to_string(),
            time: time_millis(s.time),
            device_info: DeviceInfo::from_context(&s.device),
            margin: s.margin,
            external_power_source: s.external_power_source,
            battery_level_unavailable: s.battery_level_unavailable,
            battery_level: s.battery_level,
        }
    }
}

/// `integration.LogEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    pub time: String,
    pub device_info: DeviceInfo,
    /// `integration.LogLevel` name.
    pub level: &'static str,
    /// `integration.LogCode` name.
    pub code: &'static str,
    pub description: String,
    pub context: BTreeMap<String, String>,
}

impl LogEvent {
    pub fn new(l: &LogInfo) -> Self {
        LogEvent {
            time: time_millis(l.time),
            device_info: DeviceInfo::from_context(&l.device),
            level: l.level.as_str(),
            code: l.code.as_str(),
            description: l.description.clone(),
            context: l.context.clone(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;
    use serde_json::json;
    use uuid::Uuid;

    use loraflow_network_server::events::{LogCode, LogLevel};
    use loraflow_network_server::storage::{Device, DeviceProfile};
    use loraflow_network_server::types::{AesKey, DevAddr, Eui64};

    use super::*;

    pub(crate) const APP_ID: &str = "7d6c5b1e-0000-4000-8000-000000000001";
    pub(crate) const PROFILE_ID: &str = "7d6c5b1e-0000-4000-8000-000000000002";
    pub(crate) const DEDUP_ID: &str = "7d6c5b1e-0000-4000-8000-0000000000dd";

    pub(crate) fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap() + chrono::Duration::milliseconds(123)
    }

    pub(crate) fn context(codec: &str, script: &str) -> Arc<DeviceContext> {
        Arc::new(DeviceContext {
            device: Device {
                dev_eui: "0102030405060708".parse().unwrap(),
                name: "sensor-1".into(),
                description: String::new(),
                application_id: APP_ID.parse().unwrap(),
                device_profile_id: PROFILE_ID.parse().unwrap(),
                join_eui: Eui64::default(),
                skip_fcnt_check: false,
                is_disabled: false,
                tags: json!({"room": "7", "floor": 3}),
                last_seen_at: None,
                dev_addr: Some("26011234".parse().unwrap()),
                created_at: t0(),
                updated_at: t0(),
            },
            profile: DeviceProfile {
                id: PROFILE_ID.parse().unwrap(),
                name: "lpp-sensors".into(),
                region: "EU868".into(),
                mac_version: "1.0.3".into(),
                reg_params_revision: "RP002-1.0.3".into(),
                supports_otaa: true,
                supports_class_c: false,
                adr_enabled: true,
                adr_min_dr: 0,
                adr_max_dr: 5,
                adr_installation_margin_db: 10.0,
                dev_status_req_freq: 1,
                class_c_timeout: 5,
                payload_codec: codec.into(),
                payload_codec_script: script.into(),
                measurements: Default::default(),
                auto_detect_measurements: true,
                created_at: t0(),
                updated_at: t0(),
            },
            application_name: "farm".into(),
        })
    }

    pub(crate) fn rx_info() -> RxInfo {
        RxInfo {
            gateway_id: "aa555a0000000101".parse().unwrap(),
            uplink_id: 123,
            tmst: 0x0102_0304,
            time: None,
            received_at: t0(),
            channel: 0,
            rf_chain: 0,
            antenna: 0,
            rssi: -57,
            snr: 9.5,
            crc_status: 1,
            context: vec![1, 2, 3, 4],
        }
    }

    /// A data uplink with zeroed flags and counters; `frm_payload` is stored as given.
    pub(crate) fn data_up(ctx: Arc<DeviceContext>, f_port: Option<u8>, frm_payload: Vec<u8>) -> DataUp {
        DataUp {
            deduplication_id: DEDUP_ID.parse().unwrap(),
            time: t0(),
            device: ctx,
            dev_addr: "26011234".parse().unwrap(),
            adr: false,
            dr: 5,
            f_cnt: 0,
            f_port,
            confirmed: false,
            frm_payload,
            app_s_key: AesKey([0x2b; 16]),
            rx_info: vec![rx_info()],
            tx_info: UplinkTxInfo {
                frequency: 868_100_000,
                modulation: Modulation::Lora { bandwidth: 125_000, spreading_factor: 7, code_rate: "4/5".into() },
            },
            region_config_id: "eu868".into(),
            region_common_name: "EU868",
            received_at: std::time::Instant::now(),
            adr_decision: None,
        }
    }

    fn device_info_json() -> Value {
        json!({
            "applicationId": APP_ID, "applicationName": "farm",
            "deviceProfileId": PROFILE_ID, "deviceProfileName": "lpp-sensors",
            "deviceName": "sensor-1", "devEui": "0102030405060708",
            "deviceClassEnabled": "CLASS_A", "tags": {"floor": "3", "room": "7"}
        })
    }

    #[test]
    fn uplink_without_codec_has_every_top_level_field_and_no_object() {
        let up = data_up(context("NONE", ""), Some(1), vec![]);
        let ev = serde_json::to_value(UplinkEvent::new(&up, &[0xde, 0xad, 0xbe, 0xef], None)).unwrap();
        assert_eq!(
            ev,
            json!({
                "deduplicationId": DEDUP_ID,
                "time": "2026-11-25T06:00:00.123Z",
                "deviceInfo": device_info_json(),
                "devAddr": "26011234", "adr": false, "dr": 5, "fCnt": 0, "fPort": 1, "confirmed": false,
                "data": "3q2+7w==",
                "rxInfo": [{
                    "gatewayId": "aa555a0000000101", "uplinkId": 123,
                    "nsTime": "2026-11-25T06:00:00.123Z",
                    "rssi": -57, "snr": 9.5, "channel": 0, "rfChain": 0, "antenna": 0,
                    "context": "AQIDBA==",
                    "metadata": {"region_config_id": "eu868", "region_common_name": "EU868"},
                    "crcStatus": "CRC_OK"
                }],
                "txInfo": {"frequency": 868100000,
                           "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}}},
                "regionConfigId": "eu868"
            })
        );
    }

    #[test]
    fn uplink_with_codec_carries_the_object_and_gateway_time() {
        let mut up = data_up(context("CAYENNE_LPP", ""), Some(2), vec![]);
        up.adr = true;
        up.confirmed = true;
        up.f_cnt = 70_000;
        up.rx_info[0].time = Some(t0() + chrono::Duration::microseconds(5));
        let obj = json!({"temperatureSensor": {"3": 27.2}}).as_object().unwrap().clone();
        let ev = serde_json::to_value(UplinkEvent::new(&up, &[], Some(obj))).unwrap();
        assert_eq!(ev["object"], json!({"temperatureSensor": {"3": 27.2}}));
        assert_eq!(ev["data"], "");
        assert_eq!(ev["fCnt"], 70_000);
        assert_eq!(ev["adr"], true);
        assert_eq!(ev["confirmed"], true);
        assert_eq!(ev["rxInfo"][0]["gwTime"], "2026-11-25T06:00:00.123005Z");
    }

    #[test]
    fn uplink_without_fport_reports_fport_zero() {
        let up = data_up(context("NONE", ""), None, vec![]);
        let ev = serde_json::to_value(UplinkEvent::new(&up, &[], None)).unwrap();
        assert_eq!(ev["fPort"], 0);
    }

    #[test]
    fn class_c_profiles_report_class_c() {
        let mut ctx = (*context("NONE", "")).clone();
        ctx.profile.supports_class_c = true;
        assert_eq!(DeviceInfo::from_context(&ctx).device_class_enabled, "CLASS_C");
    }

    #[test]
    fn fsk_and_lr_fhss_modulations_use_their_oneof_member() {
        let fsk = serde_json::to_value(ModulationJson::new(&Modulation::Fsk { datarate: 50_000 }, false)).unwrap();
        assert_eq!(fsk, json!({"fsk": {"datarate": 50000}}));
        let lr = ModulationJson::new(&Modulation::LrFhss { datr: "M0CW137".into(), code_rate: "4/6".into() }, false);
        assert_eq!(serde_json::to_value(lr).unwrap(), json!({"lrFhss": {"operatingChannelWidth": 137000, "codeRate": "CR_4_6"}}));
    }

    #[test]
    fn semtech_code_rates_map_to_chirpstack_names() {
        assert_eq!(code_rate_name("4/5"), "CR_4_5");
        assert_eq!(code_rate_name("4/8"), "CR_4_8");
        assert_eq!(code_rate_name("4/5LI"), "CR_LI_4_5");
        assert_eq!(code_rate_name("9/9"), "CR_UNDEFINED");
    }

    #[test]
    fn bad_crc_and_no_crc_are_named() {
        let mut rx = rx_info();
        rx.crc_status = -1;
        assert_eq!(UplinkRxInfoJson::new(&rx, "eu868", "EU868").crc_status, "BAD_CRC");
        rx.crc_status = 0;
        assert_eq!(UplinkRxInfoJson::new(&rx, "eu868", "EU868").crc_status, "NO_CRC");
    }

    #[test]
    fn join_event_json() {
        let j = JoinInfo {
            deduplication_id: DEDUP_ID.parse().unwrap(),
            time: t0(),
            device: context("NONE", ""),
            dev_addr: DevAddr([0x26, 0x01, 0x12, 0x34]),
            region_config_id: "eu868".into(),
        };
        assert_eq!(
            serde_json::to_value(JoinEvent::new(&j)).unwrap(),
            json!({"deduplicationId": DEDUP_ID, "time": "2026-11-25T06:00:00.123Z",
                   "deviceInfo": device_info_json(), "devAddr": "26011234", "regionConfigId": "eu868"})
        );
    }

    #[test]
    fn ack_event_json_keeps_defaults() {
        let qid = Uuid::from_u128(7);
        let a = AckInfo {
            deduplication_id: DEDUP_ID.parse().unwrap(),
            time: t0(),
            device: context("NONE", ""),
            queue_item_id: qid,
            acknowledged: false,
            f_cnt_down: 0,
        };
        assert_eq!(
            serde_json::to_value(AckEvent::new(&a)).unwrap(),
            json!({"deduplicationId": DEDUP_ID, "time": "2026-11-25T06:00:00.123Z",
                   "deviceInfo": device_info_json(), "queueItemId": qid.to_string(),
                   "acknowledged": false, "fCntDown": 0})
        );
    }

    fn downlink_frame(timing: Timing) -> DownlinkFrame {
        DownlinkFrame {
            gateway_id: "aa555a0000000101".parse().unwrap(),
            downlink_id: 42,
            phy_payload: vec![0x60],
            timing,
            frequency: 868_100_000,
            power: 14,
            modulation: Modulation::Lora { bandwidth: 125_000, spreading_factor: 7, code_rate: "4/5".into() },
            rf_chain: 0,
            polarization_inversion: true,
            antenna: 0,
        }
    }

    #[test]
    fn txack_event_json_with_delay_timing_and_context() {
        let t = TxAckInfo {
            downlink_id: 42,
            time: t0(),
            device: context("NONE", ""),
            queue_item_id: Some(Uuid::from_u128(7)),
            f_cnt_down: 3,
            gateway_id: "aa555a0000000101".parse().unwrap(),
            frame: downlink_frame(Timing::Tmst(1_000_000)),
        };
        assert_eq!(
            serde_json::to_value(TxAckEvent::new(&t)).unwrap(),
            json!({"downlinkId": 42, "time": "2026-11-25T06:00:00.123Z",
                   "deviceInfo": device_info_json(),
                   "queueItemId": Uuid::from_u128(7).to_string(), "fCntDown": 3,
                   "gatewayId": "aa555a0000000101",
                   "txInfo": {"frequency": 868100000, "power": 14,
                              "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7,
                                                      "codeRate": "CR_4_5", "polarizationInversion": true}},
                              "board": 0, "antenna": 0,
                              "timing": {"delay": {"delay": "0s"}},
                              "context": "AA9CQA=="}})
        );
    }

    #[test]
    fn txack_event_for_class_c_is_immediate_and_without_queue_item() {
        let t = TxAckInfo {
            downlink_id: 1,
            time: t0(),
            device: context("NONE", ""),
            queue_item_id: None,
            f_cnt_down: 0,
            gateway_id: "aa555a0000000101".parse().unwrap(),
            frame: downlink_frame(Timing::Immediately),
        };
        let v = serde_json::to_value(TxAckEvent::new(&t)).unwrap();
        assert_eq!(v["txInfo"]["timing"], json!({"immediately": {}}));
        assert_eq!(v["queueItemId"], "");
        assert_eq!(v["fCntDown"], 0);
    }

    #[test]
    fn status_event_json() {
        let s = StatusInfo {
            deduplication_id: DEDUP_ID.parse().unwrap(),
            time: t0(),
            device: context("NONE", ""),
            margin: -3,
            external_power_source: false,
            battery_level_unavailable: false,
            battery_level: 75.5,
        };
        assert_eq!(
            serde_json::to_value(StatusEvent::new(&s)).unwrap(),
            json!({"deduplicationId": DEDUP_ID, "time": "2026-11-25T06:00:00.123Z",
                   "deviceInfo": device_info_json(), "margin": -3, "externalPowerSource": false,
                   "batteryLevelUnavailable": false, "batteryLevel": 75.5})
        );
    }

    #[test]
    fn log_event_json() {
        let l = LogInfo {
            time: t0(),
            device: context("NONE", ""),
            level: LogLevel::Error,
            code: LogCode::UplinkCodec,
            description: "bad".into(),
            context: BTreeMap::from([("deduplication_id".to_string(), DEDUP_ID.to_string())]),
        };
        assert_eq!(
            serde_json::to_value(LogEvent::new(&l)).unwrap(),
            json!({"time": "2026-11-25T06:00:00.123Z", "deviceInfo": device_info_json(),
                   "level": "ERROR", "code": "UPLINK_CODEC", "description": "bad",
                   "context": {"deduplication_id": DEDUP_ID}})
        );
    }

    #[test]
    fn times_have_milliseconds_and_z_even_on_whole_seconds() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(time_millis(t), "2026-01-02T03:04:05.000Z");
    }
}
