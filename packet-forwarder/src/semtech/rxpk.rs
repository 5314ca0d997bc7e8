//! `rxpk`: one received radio packet inside PUSH_DATA (PROTOCOL.TXT §4), including the
//! multi-antenna `rsig` form of SX1301 v2 / SX1302 gateways, and its conversion into
//! [`UplinkFrame`]s.
//!
//! Each rxpk is decoded on its own so that one unusable entry (bad base64, unknown `datr`,
//! CRC error) never takes the other packets of the same datagram with it.

use base64::Engine as _;
use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use super::datr::{lora_datr, parse_lora_datr, Datr};
use super::freq::mhz;
use super::BASE64;
use crate::frame::{GatewayId, Modulation, RxInfo, UplinkFrame, UplinkTxInfo};
use crate::metrics::DropReason;

/// One `rxpk` object. Fields the protocol marks as informative are optional; `tmst`, `freq`,
/// `modu`, `datr` and `data` are required because a frame cannot be handled without them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rxpk {
    /// UTC time of reception, ISO 8601 "compact" (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// GPS time of reception, milliseconds since the GPS epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmms: Option<u64>,
    /// Concentrator counter (µs) at end of reception.
    pub tmst: u32,
    /// Hz (MHz on the wire).
    #[serde(with = "mhz")]
    pub freq: u32,
    /// IF channel.
    #[serde(default)]
    pub chan: u32,
    /// RF chain.
    #[serde(default)]
    pub rfch: u32,
    /// CRC status: 1 OK, -1 fail, 0 no CRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<i8>,
    /// `LORA`, `FSK` or `LR-FHSS`.
    pub modu: String,
    pub datr: Datr,
    /// LoRa coding rate, e.g. `4/5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codr: Option<String>,
    /// dBm. Accepts integers and floats (some forwarders write `-57.0`).
    #[serde(default, deserialize_with = "rounded_i32", skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i32>,
    /// LoRa SNR in dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsnr: Option<f32>,
    /// Payload size in bytes; when present it must match `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// Base64 of the PHYPayload.
    pub data: String,
    /// Per-antenna signal data (SX1301 v2 / SX1302 multi-antenna gateways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsig: Option<Vec<Rsig>>,
}

/// One entry of `rsig`: the packet as received on one antenna.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Rsig {
    #[serde(default)]
    pub ant: u32,
    /// IF channel on that antenna's board; the rxpk `chan` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chan: Option<u32>,
    /// Channel RSSI, dBm.
    #[serde(default, deserialize_with = "rounded_i32", skip_serializing_if = "Option::is_none")]
    pub rssic: Option<i32>,
    /// Signal RSSI, dBm.
    #[serde(default, deserialize_with = "rounded_i32", skip_serializing_if = "Option::is_none")]
    pub rssis: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsnr: Option<f32>,
    /// Encrypted fine timestamp (base64), kept for completeness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etime: Option<String>,
    /// Frequency offset, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foff: Option<i64>,
}

fn rounded_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let v = Option::<f64>::deserialize(d)?;
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX) => Ok(Some(x.round() as i32)),
        Some(x) => Err(serde::de::Error::custom(format!("{x} is out of range"))),
    }
}

/// Why an rxpk was not turned into frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RxpkError {
    #[error("invalid rxpk: {0}")]
    Invalid(String),
    #[error("rxpk data is not valid base64")]
    BadBase64,
    #[error("rxpk has a CRC error (stat -1)")]
    CrcError,
}

impl RxpkError {
    /// The drop reason counted in `loraflow_gateway_udp_dropped_total`.
    pub fn drop_reason(&self) -> DropReason {
        match self {
            RxpkError::Invalid(_) => DropReason::BadRxpk,
            RxpkError::BadBase64 => DropReason::BadBase64,
            RxpkError::CrcError => DropReason::CrcError,
        }
    }
}

/// GPS epoch, 1980-01-06T00:00:00Z, as a Unix timestamp.
const GPS_EPOCH_UNIX_SECS: i64 = 315_964_800;
/// GPS time runs ahead of UTC by the leap seconds since 1980: 18 since 2017-01-01.
const GPS_UTC_LEAP_SECONDS: i64 = 18;

impl Rxpk {
    /// Decodes one rxpk from its JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Rxpk, RxpkError> {
        serde_json::from_value(value).map_err(|e| RxpkError::Invalid(e.to_string()))
    }

    /// The modulation described by `modu`, `datr` and `codr`.
    pub fn modulation(&self) -> Result<Modulation, RxpkError> {
        match (self.modu.as_str(), &self.datr) {
            ("LORA", Datr::Name(name)) => {
                let (spreading_factor, bandwidth) =
                    parse_lora_datr(name).ok_or_else(|| RxpkError::Invalid(format!("unknown LoRa datr {name:?}")))?;
                let code_rate =
                    self.codr.clone().filter(|c| !c.is_empty()).ok_or_else(|| RxpkError::Invalid("LoRa rxpk without codr".into()))?;
                Ok(Modulation::Lora { bandwidth, spreading_factor, code_rate })
            }
            ("FSK", Datr::Bps(datarate)) if *datarate > 0 => Ok(Modulation::Fsk { datarate: *datarate }),
            ("LR-FHSS", Datr::Name(name)) if !name.is_empty() => {
                Ok(Modulation::LrFhss { datr: name.clone(), code_rate: self.codr.clone().unwrap_or_default() })
            }
            (modu, datr) => Err(RxpkError::Invalid(format!("modu {modu:?} with datr {datr:?}"))),
        }
    }

    /// The PHYPayload, checked against `size` when present.
    pub fn payload(&self) -> Result<Vec<u8>, RxpkError> {
        let bytes = BASE64.decode(self.data.trim()).map_err(|_| RxpkError::BadBase64)?;
        if let Some(size) = self.size {
            if size as usize != bytes.len() {
                return Err(RxpkError::Invalid(format!("size {size} but data holds {} bytes", bytes.len())));
            }
        }
        Ok(bytes)
    }

    /// Reception time: `time` when readable, otherwise derived from `tmms`.
    pub fn reception_time(&self) -> Option<DateTime<Utc>> {
        if let Some(t) = self.time.as_deref() {
            if let Ok(t) = DateTime::parse_from_rfc3339(t) {
                return Some(t.with_timezone(&Utc));
            }
        }
        let tmms = i64::try_from(self.tmms?).ok()?;
        let epoch = Utc.timestamp_opt(GPS_EPOCH_UNIX_SECS - GPS_UTC_LEAP_SECONDS, 0).single()?;
        epoch.checked_add_signed(Duration::try_milliseconds(tmms)?)
    }

    /// One frame per antenna: one for the plain form, one per `rsig` entry otherwise.
    /// Checks the CRC first (a bad-CRC packet is dropped whatever else is wrong with it),
    /// then modulation, then payload.
    pub fn to_uplink_frames(&self, gateway_id: GatewayId, received_at: DateTime<Utc>) -> Result<Vec<UplinkFrame>, RxpkError> {
        let crc_status = self.stat.unwrap_or(0);
        if crc_status == -1 {
            return Err(RxpkError::CrcError);
        }
        let modulation = self.modulation()?;
        let phy_payload = self.payload()?;
        let tx_info = UplinkTxInfo { frequency: self.freq, modulation };
        let time = self.reception_time();
        let context = self.tmst.to_be_bytes().to_vec();
        let rx_info = |channel: u32, antenna: u32, rssi: Option<i32>, snr: Option<f32>| RxInfo {
            gateway_id,
            uplink_id: rand::random(),
            tmst: self.tmst,
            time,
            received_at,
            channel,
            rf_chain: self.rfch,
            antenna,
            // FSK has no SNR and some forwarders omit RSSI; 0 stands for "not reported".
            rssi: rssi.unwrap_or(0),
            snr: snr.unwrap_or(0.0),
            crc_status,
            context: context.clone(),
        };
        let frames = match self.rsig.as_deref() {
            Some(rsig) if !rsig.is_empty() => rsig
                .iter()
                .map(|r| UplinkFrame {
                    phy_payload: phy_payload.clone(),
                    tx_info: tx_info.clone(),
                    rx_info: rx_info(r.chan.unwrap_or(self.chan), r.ant, r.rssic.or(r.rssis).or(self.rssi), r.lsnr.or(self.lsnr)),
                })
                .collect(),
            _ => vec![UplinkFrame {
                phy_payload: phy_payload.clone(),
                tx_info: tx_info.clone(),
                rx_info: rx_info(self.chan, 0, self.rssi, self.lsnr),
            }],
        };
        Ok(frames)
    }

    /// The rxpk a gateway would send for this frame: the gateway-side encoder used by virtual
    /// gateways in tests and simulators. A non-zero antenna is written in the `rsig` form.
    pub fn from_uplink_frame(frame: &UplinkFrame) -> Rxpk {
        let rx = &frame.rx_info;
        let (modu, datr, codr, lora) = match &frame.tx_info.modulation {
            Modulation::Lora { bandwidth, spreading_factor, code_rate } => {
                ("LORA", Datr::Name(lora_datr(*spreading_factor, *bandwidth)), Some(code_rate.clone()), true)
            }
            Modulation::Fsk { datarate } => ("FSK", Datr::Bps(*datarate), None, false),
            Modulation::LrFhss { datr, code_rate } => {
                ("LR-FHSS", Datr::Name(datr.clone()), Some(code_rate.clone()).filter(|c| !c.is_empty()), false)
            }
        };
        let snr = lora.then_some(rx.snr);
        let (rssi, lsnr, rsig) = if rx.antenna == 0 {
            (Some(rx.rssi), snr, None)
        } else {
            let r = Rsig { ant: rx.antenna, chan: Some(rx.channel), rssic: Some(rx.rssi), lsnr: snr, ..Rsig::default() };
            (None, None, Some(vec![r]))
        };
        Rxpk {
            time: rx.time.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            tmms: None,
            tmst: rx.tmst,
            freq: frame.tx_info.frequency,
            chan: rx.channel,
            rfch: rx.rf_chain,
            stat: Some(rx.crc_status),
            modu: modu.into(),
            datr,
            codr,
            rssi,
            lsnr,
            size: Some(frame.phy_payload.len() as u32),
            data: BASE64.encode(&frame.phy_payload),
            rsig,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Eui64;
    use serde_json::json;

    fn gw() -> GatewayId {
        Eui64::from_u64(0xaa555a0000000101)
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    fn frames(v: serde_json::Value) -> Result<Vec<UplinkFrame>, RxpkError> {
        Rxpk::from_value(v)?.to_uplink_frames(gw(), now())
    }

    // PROTOCOL.TXT §4 example rxpk (first entry).
    fn spec_example() -> serde_json::Value {
        json!({"time":"2013-03-31T16:21:17.528002Z","tmst":3512348611u32,"chan":2,"rfch":0,"freq":866.349812,
               "stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/6","rssi":-35,"lsnr":5.1,"size":32,
               "data":"-DS4CGaDCdG+48eJNM3Vai-zDpsR71Pn9CPA9uCON84"})
    }

    #[test]
    fn the_spec_example_with_url_safe_base64_is_a_bad_base64_drop() {
        // The example in PROTOCOL.TXT uses '-' which is not in the standard alphabet the
        // forwarders actually emit; it must be refused, not panic.
        assert_eq!(frames(spec_example()), Err(RxpkError::BadBase64));
    }

    #[test]
    fn every_field_of_a_lora_rxpk_lands_in_the_frame() {
        let mut v = spec_example();
        v["data"] = json!("QAEAAAGAAQAB");
        v["size"] = json!(9);
        let f = frames(v).unwrap();
        assert_eq!(f.len(), 1);
        let f = &f[0];
        assert_eq!(f.phy_payload, [0x40, 1, 0, 0, 1, 0x80, 1, 0, 1]);
        assert_eq!(f.tx_info.frequency, 866_349_812);
        assert_eq!(f.tx_info.modulation, Modulation::Lora { bandwidth: 125_000, spreading_factor: 7, code_rate: "4/6".into() });
        let rx = &f.rx_info;
        assert_eq!(rx.gateway_id, gw());
        assert_eq!(rx.tmst, 3_512_348_611);
        assert_eq!(rx.context, 3_512_348_611u32.to_be_bytes());
        assert_eq!(rx.time, Some(Utc.with_ymd_and_hms(2013, 3, 31, 16, 21, 17).unwrap() + Duration::microseconds(528_002)));
        assert_eq!(rx.received_at, now());
        assert_eq!((rx.channel, rx.rf_chain, rx.antenna), (2, 0, 0));
        assert_eq!(rx.rssi, -35);
        assert_eq!(rx.snr, 5.1);
        assert_eq!(rx.crc_status, 1);
    }

    #[test]
    fn frequencies_round_to_the_nearest_hz() {
        for (mhz, hz) in [(868.1, 868_100_000u32), (867.9, 867_900_000), (868.299999999, 868_300_000), (904.6, 904_600_000)] {
            let v = json!({"tmst":1,"freq":mhz,"modu":"LORA","datr":"SF7BW125","codr":"4/5","data":"AA=="});
            assert_eq!(frames(v).unwrap()[0].tx_info.frequency, hz, "{mhz}");
        }
    }

    #[test]
    fn a_2_4_ghz_lora_rxpk_keeps_its_frequency_bandwidth_and_coding_rate() {
        let v = json!({"tmst":1,"freq":2425.0,"modu":"LORA","datr":"SF12BW812","codr":"4/8LI","data":"AA=="});
        let f = &frames(v).unwrap()[0];
        assert_eq!(f.tx_info.frequency, 2_425_000_000);
        assert_eq!(f.tx_info.modulation, Modulation::Lora { bandwidth: 812_000, spreading_factor: 12, code_rate: "4/8LI".into() });
    }

    #[test]
    fn missing_optional_fields_take_neutral_values() {
        let v = json!({"tmst":7,"freq":868.5,"modu":"LORA","datr":"SF12BW125","codr":"4/5","data":"AQID"});
        let f = &frames(v).unwrap()[0];
        assert_eq!(f.phy_payload, [1, 2, 3]);
        let rx = &f.rx_info;
        assert_eq!(rx.time, None);
        assert_eq!((rx.channel, rx.rf_chain, rx.antenna, rx.rssi, rx.crc_status), (0, 0, 0, 0, 0));
        assert_eq!(rx.snr, 0.0);
    }

    #[test]
    fn missing_required_fields_make_the_rxpk_invalid() {
        for field in ["tmst", "freq", "modu", "datr", "data"] {
            let mut v = json!({"tmst":7,"freq":868.5,"modu":"LORA","datr":"SF12BW125","codr":"4/5","data":"AQID"});
            v.as_object_mut().unwrap().remove(field);
            let err = frames(v).unwrap_err();
            assert_eq!(err.drop_reason(), DropReason::BadRxpk, "{field}: {err}");
        }
    }

    #[test]
    fn a_bad_crc_is_dropped_as_crc_error_before_anything_else() {
        let v = json!({"tmst":7,"freq":868.5,"stat":-1,"modu":"LORA","datr":"SF99","data":"!!"});
        assert_eq!(frames(v).unwrap_err().drop_reason(), DropReason::CrcError);
        let v = json!({"tmst":7,"freq":868.5,"stat":0,"modu":"LORA","datr":"SF7BW125","codr":"4/5","data":"AA=="});
        assert_eq!(frames(v).unwrap()[0].rx_info.crc_status, 0);
    }

    #[test]
    fn unknown_datr_modu_or_size_mismatch_are_bad_rxpk() {
        let base = json!({"tmst":7,"freq":868.5,"modu":"LORA","datr":"SF7BW125","codr":"4/5","data":"AQID"});
        let cases = [
            ("datr", json!("SF13BW125")),
            ("datr", json!(50000)),
            ("modu", json!("CHIRP")),
            ("codr", json!("")),
            ("size", json!(4)),
            ("freq", json!(-1.0)),
            ("rssi", json!("loud")),
        ];
        for (k, val) in cases {
            let mut v = base.clone();
            v[k] = val.clone();
            assert_eq!(frames(v).unwrap_err().drop_reason(), DropReason::BadRxpk, "{k}={val}");
        }
    }

    #[test]
    fn fsk_and_lr_fhss_keep_their_modulation() {
        let fsk = json!({"tmst":1,"freq":868.8,"stat":1,"modu":"FSK","datr":50000,"rssi":-75,"size":3,"data":"AQID"});
        let f = &frames(fsk).unwrap()[0];
        assert_eq!(f.tx_info.modulation, Modulation::Fsk { datarate: 50000 });
        assert_eq!(f.rx_info.rssi, -75);
        let lr = json!({"tmst":1,"freq":868.1,"stat":1,"modu":"LR-FHSS","datr":"M0CW137","codr":"2/3","rssi":-90,"data":"AQID"});
        let f = &frames(lr).unwrap()[0];
        assert_eq!(f.tx_info.modulation, Modulation::LrFhss { datr: "M0CW137".into(), code_rate: "2/3".into() });
    }

    #[test]
    fn rsig_gives_one_frame_per_antenna() {
        // SX1301 v2 (e.g. Kerlink iBTS) form: no top-level rssi/lsnr.
        let v = json!({"tmst":1000,"chan":3,"rfch":1,"freq":868.5,"stat":1,"modu":"LORA","datr":"SF9BW125","codr":"4/5",
                       "size":2,"data":"AQI=",
                       "rsig":[{"ant":0,"chan":3,"rssic":-80,"rssis":-82,"lsnr":7.5,"etime":"abc=","foff":-120},
                               {"ant":1,"chan":11,"rssic":-95.4,"lsnr":-2.25}]});
        let f = frames(v).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].rx_info.antenna, f[0].rx_info.channel, f[0].rx_info.rssi, f[0].rx_info.snr), (0, 3, -80, 7.5));
        assert_eq!((f[1].rx_info.antenna, f[1].rx_info.channel, f[1].rx_info.rssi, f[1].rx_info.snr), (1, 11, -95, -2.25));
        assert!(f.iter().all(|f| f.rx_info.rf_chain == 1 && f.rx_info.tmst == 1000 && f.phy_payload == [1, 2]));
    }

    #[test]
    fn an_empty_rsig_falls_back_to_the_top_level_fields() {
        let v = json!({"tmst":1,"freq":868.5,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-50,"lsnr":9.0,"data":"AA==","rsig":[]});
        let f = frames(v).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rx_info.rssi, -50);
    }

    #[test]
    fn gps_time_is_used_when_utc_time_is_missing() {
        // 1_000_000_000_000 ms after the GPS epoch, minus 18 leap seconds.
        let v = json!({"tmst":1,"tmms":1_000_000_000_000u64,"freq":868.5,"modu":"LORA","datr":"SF7BW125","codr":"4/5","data":"AA=="});
        let t = frames(v).unwrap()[0].rx_info.time.unwrap();
        assert_eq!(t.timestamp(), 315_964_800 + 1_000_000_000 - 18);
    }

    #[test]
    fn each_copy_gets_its_own_uplink_id() {
        let v = json!({"tmst":1,"freq":868.5,"modu":"LORA","datr":"SF7BW125","codr":"4/5","data":"AA==",
                       "rsig":[{"ant":0,"chan":0,"rssic":-1},{"ant":1,"chan":0,"rssic":-1}]});
        // Two random u32 colliding is a one in four billion event; try a few times to be sure.
        let distinct = (0..3).any(|_| {
            let f = frames(v.clone()).unwrap();
            f[0].rx_info.uplink_id != f[1].rx_info.uplink_id
        });
        assert!(distinct);
    }

    #[test]
    fn a_frame_encoded_by_a_virtual_gateway_decodes_to_the_same_frame() {
        let frame = UplinkFrame {
            phy_payload: vec![0x40, 1, 2, 3, 4],
            tx_info: UplinkTxInfo {
                frequency: 868_300_000,
                modulation: Modulation::Lora { bandwidth: 125_000, spreading_factor: 10, code_rate: "4/5".into() },
            },
            rx_info: RxInfo {
                gateway_id: gw(),
                uplink_id: 1,
                tmst: 123_456,
                time: Some(Utc.with_ymd_and_hms(2026, 5, 6, 7, 8, 9).unwrap()),
                received_at: now(),
                channel: 1,
                rf_chain: 0,
                antenna: 2,
                rssi: -101,
                snr: -7.25,
                crc_status: 1,
                context: 123_456u32.to_be_bytes().to_vec(),
            },
        };
        let json = serde_json::to_value(Rxpk::from_uplink_frame(&frame)).unwrap();
        assert_eq!(json["freq"], json!(868.3));
        let back = frames(json).unwrap();
        assert_eq!(back.len(), 1);
        let mut back = back.into_iter().next().unwrap();
        back.rx_info.uplink_id = 1;
        assert_eq!(back, frame);
    }
}
