//! The integration JSON must parse with ChirpStack's own definitions: every event type is
//! serialised here and parsed by python3 with `chirpstack_api.integration` and
//! `google.protobuf.json_format.Parse(..., ignore_unknown_fields=False)`, so an unknown
//! field, a wrong type or a bad enum name fails the test. Needs `pip install chirpstack-api`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use loraflow_app_server::integration::json::{AckEvent, JoinEvent, LogEvent, StatusEvent, TxAckEvent, UplinkEvent};
use loraflow_network_server::events::{AckInfo, DataUp, JoinInfo, LogCode, LogInfo, LogLevel, StatusInfo, TxAckInfo};
use loraflow_network_server::storage::{Device, DeviceContext, DeviceProfile};
use loraflow_network_server::types::{AesKey, Eui64};
use loraflow_packet_forwarder::frame::{DownlinkFrame, Modulation, RxInfo, Timing, UplinkTxInfo};

const CHECK: &str = r#"
import json, sys
from google.protobuf import json_format
from chirpstack_api import integration

cases = json.load(sys.stdin)
failed = 0
out = {}
for name, payload in cases:
    msg = getattr(integration, name)()
    try:
        json_format.Parse(payload, msg, ignore_unknown_fields=False)
        out[name + ":" + str(len(out))] = json_format.MessageToDict(msg)
    except Exception as e:
        failed += 1
        print(f"{name}: {e}", file=sys.stderr)
print(json.dumps(out))
sys.exit(1 if failed else 0)
"#;

fn context(class_c: bool) -> Arc<DeviceContext> {
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    Arc::new(DeviceContext {
        device: Device {
            dev_eui: "0102030405060708".parse().unwrap(),
            name: "sensor-1".into(),
            description: String::new(),
            application_id: Uuid::from_u128(1),
            device_profile_id: Uuid::from_u128(2),
            join_eui: Eui64::default(),
            skip_fcnt_check: false,
            is_disabled: false,
            tags: json!({"room": "7", "floor": 3}),
            last_seen_at: None,
            dev_addr: None,
            created_at: t,
            updated_at: t,
        },
        profile: DeviceProfile {
            id: Uuid::from_u128(2),
            name: "p".into(),
            region: "EU868".into(),
            mac_version: "1.0.3".into(),
            reg_params_revision: "RP002-1.0.3".into(),
            supports_otaa: true,
            supports_class_c: class_c,
            adr_enabled: true,
            adr_min_dr: 0,
            adr_max_dr: 5,
            adr_installation_margin_db: 10.0,
            dev_status_req_freq: 1,
            class_c_timeout: 5,
            payload_codec: "CAYENNE_LPP".into(),
            payload_codec_script: String::new(),
            measurements: Default::default(),
            auto_detect_measurements: true,
            created_at: t,
            updated_at: t,
        },
        application_name: "farm".into(),
    })
}

fn rx(crc_status: i8, with_time: bool) -> RxInfo {
    let t = Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap() + chrono::Duration::microseconds(123_456);
    RxInfo {
        gateway_id: "aa555a0000000101".parse().unwrap(),
        uplink_id: 4_000_000_000,
        tmst: 0xfedc_ba98,
        time: with_time.then_some(t),
        received_at: t,
        channel: 3,
        rf_chain: 1,
        antenna: 0,
        rssi: -120,
        snr: -7.25,
        crc_status,
        context: 0xfedc_ba98u32.to_be_bytes().to_vec(),
    }
}

fn cases() -> Vec<(&'static str, String)> {
    let now = Utc::now();
    let ctx = context(false);
    let up = |modulation: Modulation, f_port: Option<u8>| DataUp {
        deduplication_id: Uuid::new_v4(),
        time: now,
        device: ctx.clone(),
        dev_addr: "26011234".parse().unwrap(),
        adr: false,
        dr: 0,
        f_cnt: 0,
        f_port,
        confirmed: false,
        frm_payload: vec![],
        app_s_key: AesKey::default(),
        rx_info: vec![rx(1, true), rx(-1, false), rx(0, false)],
        tx_info: UplinkTxInfo { frequency: 868_100_000, modulation },
        region_config_id: "eu868".into(),
        region_common_name: "EU868",
        received_at: std::time::Instant::now(),
        adr_decision: Some(loraflow_network_server::mac::adr::AdrDecision { dr: 5, tx_power_index: 1, nb_trans: 1 }),
    };
    let lora = Modulation::Lora { bandwidth: 125_000, spreading_factor: 12, code_rate: "4/5".into() };
    let object = json!({"temperatureSensor": {"3": 27.2}, "list": [1, "a", null, true], "nested": {"x": {}}});
    let frame = |timing| DownlinkFrame {
        gateway_id: "aa555a0000000101".parse().unwrap(),
        downlink_id: 4_000_000_001,
        phy_payload: vec![0x60],
        timing,
        frequency: 869_525_000,
        power: 27,
        modulation: lora.clone(),
        rf_chain: 0,
        polarization_inversion: true,
        antenna: 0,
    };
    let txack = |timing, queue_item_id| TxAckInfo {
        downlink_id: 4_000_000_001,
        time: now,
        device: context(true),
        queue_item_id,
        f_cnt_down: u32::MAX,
        gateway_id: "aa555a0000000101".parse().unwrap(),
        frame: frame(timing),
    };
    vec![
        ("UplinkEvent", json_of(&UplinkEvent::new(&up(lora.clone(), Some(1)), b"\x01\x02\xff", object.as_object().cloned()))),
        ("UplinkEvent", json_of(&UplinkEvent::new(&up(Modulation::Fsk { datarate: 50_000 }, None), b"", None))),
        (
            "UplinkEvent",
            json_of(&UplinkEvent::new(
                &up(Modulation::LrFhss { datr: "M0CW137".into(), code_rate: "2/3".into() }, Some(223)),
                &[0u8; 242],
                None,
            )),
        ),
        (
            "JoinEvent",
            json_of(&JoinEvent::new(&JoinInfo {
                deduplication_id: Uuid::new_v4(),
                time: now,
                device: ctx.clone(),
                dev_addr: "26011234".parse().unwrap(),
                region_config_id: "eu868".into(),
            })),
        ),
        (
            "AckEvent",
            json_of(&AckEvent::new(&AckInfo {
                deduplication_id: Uuid::new_v4(),
                time: now,
                device: ctx.clone(),
                queue_item_id: Uuid::new_v4(),
                acknowledged: false,
                f_cnt_down: 0,
            })),
        ),
        ("TxAckEvent", json_of(&TxAckEvent::new(&txack(Timing::Tmst(1_000_000), Some(Uuid::new_v4()))))),
        ("TxAckEvent", json_of(&TxAckEvent::new(&txack(Timing::Immediately, None)))),
        (
            "StatusEvent",
            json_of(&StatusEvent::new(&StatusInfo {
                deduplication_id: Uuid::new_v4(),
                time: now,
                device: ctx.clone(),
                margin: -20,
                external_power_source: false,
                battery_level_unavailable: true,
                battery_level: 0.0,
            })),
        ),
        (
            "LogEvent",
            json_of(&LogEvent::new(&LogInfo {
                time: now,
                device: ctx.clone(),
                level: LogLevel::Warning,
                code: LogCode::UplinkFCntRetransmission,
                description: "retransmission".into(),
                context: BTreeMap::from([("f_cnt".to_string(), "7".to_string())]),
            })),
        ),
    ]
    .into_iter()
    .chain(every_log_code(&ctx))
    .collect()
}

fn every_log_code(ctx: &Arc<DeviceContext>) -> Vec<(&'static str, String)> {
    use LogCode::*;
    [
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
    ]
    .into_iter()
    .zip([LogLevel::Info, LogLevel::Warning, LogLevel::Error].into_iter().cycle())
    .map(|(code, level)| {
        let ev = LogEvent::new(&LogInfo {
            time: Utc::now(),
            device: ctx.clone(),
            level,
            code,
            description: String::new(),
            context: BTreeMap::new(),
        });
        ("LogEvent", json_of(&ev))
    })
    .collect()
}

fn json_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

fn python_has_chirpstack_api() -> bool {
    Command::new("python3")
        .args(["-c", "import chirpstack_api.integration, google.protobuf"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn every_event_type_parses_with_chirpstack_api() {
    assert!(python_has_chirpstack_api(), "python3 with chirpstack_api is required: pip install chirpstack-api");
    let cases = cases();
    let input = serde_json::to_vec(&cases).unwrap();
    let mut child = Command::new("python3")
        .args(["-c", CHECK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "chirpstack_api refused our JSON:\n{}", String::from_utf8_lossy(&out.stderr));

    // What protobuf read back is what we meant (not silently defaulted).
    let parsed: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    let up = &parsed["UplinkEvent:0"];
    assert_eq!(up["data"], "AQL/");
    assert_eq!(up["object"]["temperatureSensor"]["3"], 27.2);
    // CLASS_A is the enum's zero value, which MessageToDict leaves out.
    assert!(up["deviceInfo"].get("deviceClassEnabled").is_none());
    assert_eq!(up["deviceInfo"]["tags"]["floor"], "3");
    assert_eq!(up["rxInfo"][0]["uplinkId"], 4_000_000_000u32);
    assert_eq!(up["rxInfo"][0]["crcStatus"], "CRC_OK");
    assert_eq!(up["rxInfo"][1]["crcStatus"], "BAD_CRC");
    assert_eq!(up["rxInfo"][0]["gwTime"], "2026-11-25T06:00:00.123456Z");
    assert_eq!(up["rxInfo"][0]["context"], "/ty6mA==");
    assert_eq!(up["rxInfo"][0]["metadata"]["region_common_name"], "EU868");
    assert_eq!(up["txInfo"]["modulation"]["lora"]["codeRate"], "CR_4_5");
    assert_eq!(up["txInfo"]["modulation"]["lora"]["spreadingFactor"], 12);
    assert_eq!(up["regionConfigId"], "eu868");
    assert_eq!(parsed["UplinkEvent:1"]["txInfo"]["modulation"]["fsk"]["datarate"], 50_000);
    assert_eq!(parsed["UplinkEvent:2"]["txInfo"]["modulation"]["lrFhss"]["operatingChannelWidth"], 137_000);
    let txack = &parsed["TxAckEvent:5"];
    assert_eq!(txack["txInfo"]["timing"]["delay"]["delay"], "0s");
    assert_eq!(txack["txInfo"]["context"], "AA9CQA==");
    assert_eq!(txack["txInfo"]["power"], 27);
    assert_eq!(txack["fCntDown"], u32::MAX);
    assert_eq!(txack["deviceInfo"]["deviceClassEnabled"], "CLASS_C");
    assert!(parsed["TxAckEvent:6"]["txInfo"]["timing"].get("immediately").is_some());
    assert_eq!(parsed["StatusEvent:7"]["margin"], -20);
    assert_eq!(parsed["StatusEvent:7"]["batteryLevelUnavailable"], true);
    assert_eq!(parsed["LogEvent:8"]["code"], "UPLINK_F_CNT_RETRANSMISSION");
    assert_eq!(parsed["LogEvent:8"]["level"], "WARNING");
    assert_eq!(parsed["LogEvent:8"]["context"]["f_cnt"], "7");
    assert_eq!(parsed.len(), cases.len());
}
