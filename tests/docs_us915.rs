//! The US915 sub-band 2 `global_conf.json` in docs/packet-forwarder-us915.md listens on exactly
//! the channels loraflow's US915 table puts in sub-band 2, within what an SX1301 radio can
//! receive, and transmits where RX1 and RX2 are.

use loraflow_network_server::region::{region_by_name, Modulation};
use serde_json::Value;

/// SX1301 HAL limits: a 125 kHz channel needs |if| + 62.5 kHz ≤ 925 kHz / 2, a 500 kHz one
/// |if| + 250 kHz ≤ 1100 kHz / 2 (loragw_hal LGW_RF_RX_BANDWIDTH_125KHZ / _500KHZ).
const HALF_BW_125: i64 = 462_500;
const HALF_BW_500: i64 = 550_000;

fn global_conf() -> Value {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/packet-forwarder-us915.md")).unwrap();
    let start = doc.find("```json\n").expect("a json block") + "```json\n".len();
    let len = doc[start..].find("```").expect("the end of the json block");
    serde_json::from_str(&doc[start..start + len]).expect("the example is valid JSON")
}

#[test]
fn the_us915_global_conf_listens_on_sub_band_2_and_transmits_on_rx1_and_rx2() {
    let conf = global_conf();
    let sx = &conf["SX130x_conf"];
    let radio = |r: &Value| sx[format!("radio_{}", r.as_u64().unwrap())]["freq"].as_i64().unwrap();
    let us915 = region_by_name("US915").unwrap();
    let channels = us915.default_uplink_channels();

    // The eight 125 kHz channels, in channel order 8..=15.
    for (i, ch) in (8..16usize).enumerate() {
        let c = &sx[format!("chan_multiSF_{i}")];
        assert_eq!(c["enable"], true);
        let if_hz = c["if"].as_i64().unwrap();
        assert!(if_hz.abs() + 62_500 <= HALF_BW_125, "chan_multiSF_{i}: if {if_hz} does not fit the radio");
        assert_eq!(radio(&c["radio"]) + if_hz, i64::from(channels[ch].frequency), "chan_multiSF_{i} is channel {ch}");
        assert_eq!((channels[ch].min_dr, channels[ch].max_dr), (0, 3));
    }
    // The 500 kHz channel 65 at DR4.
    let std = &sx["chan_Lora_std"];
    let if_hz = std["if"].as_i64().unwrap();
    assert!(if_hz.abs() + 250_000 <= HALF_BW_500, "chan_Lora_std: if {if_hz} does not fit the radio");
    assert_eq!(radio(&std["radio"]) + if_hz, i64::from(channels[65].frequency));
    let m = Modulation::Lora {
        spreading_factor: std["spread_factor"].as_u64().unwrap() as u8,
        bandwidth: std["bandwidth"].as_u64().unwrap() as u32,
    };
    assert_eq!(us915.dr_for(&m), Some(4));
    assert_eq!(sx["chan_FSK"]["enable"], false);
    let sfs: Vec<u64> = sx["chan_multiSF_All"]["spreading_factor_enable"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let wanted: Vec<u64> = (0..=3u8)
        .map(|dr| match us915.data_rate(dr).unwrap().modulation {
            Modulation::Lora { spreading_factor, .. } => u64::from(spreading_factor),
            other => panic!("DR{dr} is {other:?}"),
        })
        .rev()
        .collect();
    assert_eq!(sfs, wanted, "SF7-SF10, DR3-DR0");

    // Downlinks: RX1 of every enabled channel and RX2 inside the transmitter's range.
    let tx = &sx["radio_0"];
    assert_eq!(tx["tx_enable"], true);
    let range = tx["tx_freq_min"].as_u64().unwrap()..=tx["tx_freq_max"].as_u64().unwrap();
    for ch in (8..16).chain([65]) {
        let rx1 = us915.rx1_frequency(channels[ch].frequency).unwrap();
        assert!(range.contains(&u64::from(rx1)), "RX1 {rx1} of channel {ch}");
    }
    assert!(range.contains(&u64::from(us915.default_rx2_frequency())));

    let gw = &conf["gateway_conf"];
    assert_eq!((gw["serv_port_up"].as_u64(), gw["serv_port_down"].as_u64()), (Some(1700), Some(1700)));
}
