//! `txpk`: one packet to transmit, carried by PULL_RESP (PROTOCOL.TXT §6), built from a
//! [`DownlinkFrame`].

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::datr::{lora_datr, parse_lora_datr, Datr};
use super::freq::mhz;
use super::BASE64;
use crate::frame::{DownlinkFrame, Modulation, Timing};

/// One `txpk` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Txpk {
    /// Send immediately, ignoring `tmst`/`tmms` (Class C).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imme: bool,
    /// Concentrator counter (µs) at which to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmst: Option<u32>,
    /// GPS time (ms) at which to send; never produced from a [`DownlinkFrame`], decoded for
    /// completeness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmms: Option<u64>,
    /// Hz; written as MHz with six decimals.
    #[serde(with = "mhz")]
    pub freq: u32,
    #[serde(default)]
    pub rfch: u32,
    /// dBm.
    #[serde(default)]
    pub powe: i32,
    pub modu: String,
    pub datr: Datr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codr: Option<String>,
    /// FSK frequency deviation, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdev: Option<u32>,
    /// LoRa polarization inversion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipol: Option<bool>,
    /// Preamble length; the forwarder's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prea: Option<u32>,
    pub size: u32,
    pub data: String,
    /// Disable the physical-layer CRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ncrc: Option<bool>,
    /// Antenna, for multi-antenna gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ant: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxpkError {
    #[error("LR-FHSS is receive-only on Semtech concentrators; a downlink cannot use it")]
    LrFhssDownlink,
    #[error("downlink payload of {0} bytes is larger than a radio frame (255)")]
    PayloadTooLarge(usize),
}

/// Largest PHY payload a concentrator can send.
const MAX_PAYLOAD: usize = 255;

impl Txpk {
    pub fn from_downlink(frame: &DownlinkFrame) -> Result<Txpk, TxpkError> {
        if frame.phy_payload.len() > MAX_PAYLOAD {
            return Err(TxpkError::PayloadTooLarge(frame.phy_payload.len()));
        }
        let (imme, tmst) = match frame.timing {
            Timing::Tmst(t) => (false, Some(t)),
            Timing::Immediately => (true, None),
        };
        let (modu, datr, codr, fdev, ipol) = match &frame.modulation {
            Modulation::Lora { bandwidth, spreading_factor, code_rate } => (
                "LORA",
                Datr::Name(lora_datr(*spreading_factor, *bandwidth)),
                Some(code_rate.clone()),
                None,
                Some(frame.polarization_inversion),
            ),
            // The forwarder needs a deviation for FSK and the frame model has none: LoRaWAN's
            // only FSK rate is 50 kbps with 25 kHz deviation (RP002-1.0.3, EU868 DR7), i.e.
            // half the bit rate, which is also the usual GFSK setting.
            Modulation::Fsk { datarate } => ("FSK", Datr::Bps(*datarate), None, Some(datarate / 2), None),
            Modulation::LrFhss { .. } => return Err(TxpkError::LrFhssDownlink),
        };
        Ok(Txpk {
            imme,
            tmst,
            tmms: None,
            freq: frame.frequency,
            rfch: frame.rf_chain,
            powe: frame.power,
            modu: modu.into(),
            datr,
            codr,
            fdev,
            ipol,
            prea: None,
            size: frame.phy_payload.len() as u32,
            data: BASE64.encode(&frame.phy_payload),
            ncrc: None,
            ant: (frame.antenna != 0).then_some(frame.antenna),
        })
    }

    /// The payload to send (gateway side).
    pub fn payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        BASE64.decode(self.data.trim())
    }

    /// The modulation to send with (gateway side); `None` when `modu`/`datr` do not match.
    pub fn modulation(&self) -> Option<Modulation> {
        match (self.modu.as_str(), &self.datr) {
            ("LORA", Datr::Name(n)) => {
                let (spreading_factor, bandwidth) = parse_lora_datr(n)?;
                Some(Modulation::Lora { bandwidth, spreading_factor, code_rate: self.codr.clone().unwrap_or_default() })
            }
            ("FSK", Datr::Bps(datarate)) => Some(Modulation::Fsk { datarate: *datarate }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Eui64;

    fn downlink() -> DownlinkFrame {
        DownlinkFrame {
            gateway_id: Eui64::from_u64(1),
            downlink_id: 0x1234_5678,
            phy_payload: vec![0x60, 1, 2, 3],
            timing: Timing::Tmst(1_000_000),
            frequency: 868_100_000,
            power: 14,
            modulation: Modulation::Lora { bandwidth: 125_000, spreading_factor: 7, code_rate: "4/5".into() },
            rf_chain: 0,
            polarization_inversion: true,
            antenna: 0,
        }
    }

    #[test]
    fn a_class_a_lora_downlink_serializes_like_the_spec_example() {
        let json = serde_json::to_string(&Txpk::from_downlink(&downlink()).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"tmst":1000000,"freq":868.100000,"rfch":0,"powe":14,"modu":"LORA","datr":"SF7BW125","codr":"4/5","ipol":true,"size":4,"data":"YAECAw=="}"#
        );
    }

    #[test]
    fn freq_is_written_with_six_exact_decimals() {
        for (hz, text) in [(869_525_000u32, "869.525000"), (868_300_000, "868.300000"), (923_300_001, "923.300001")] {
            let d = DownlinkFrame { frequency: hz, ..downlink() };
            let json = serde_json::to_string(&Txpk::from_downlink(&d).unwrap()).unwrap();
            assert!(json.contains(&format!(r#""freq":{text},"#)), "{json}");
            // and a gateway reading it gets the same Hz back
            let back: Txpk = serde_json::from_str(&json).unwrap();
            assert_eq!(back.freq, hz);
        }
    }

    #[test]
    fn class_c_downlinks_are_immediate_without_tmst() {
        let d = DownlinkFrame { timing: Timing::Immediately, antenna: 1, ..downlink() };
        let v = serde_json::to_value(Txpk::from_downlink(&d).unwrap()).unwrap();
        assert_eq!(v["imme"], true);
        assert!(v.get("tmst").is_none());
        assert_eq!(v["ant"], 1);
        let v = serde_json::to_value(Txpk::from_downlink(&downlink()).unwrap()).unwrap();
        assert!(v.get("imme").is_none());
        assert!(v.get("ant").is_none(), "antenna 0 is left out");
    }

    #[test]
    fn fsk_downlinks_carry_a_deviation_and_no_polarity() {
        let d = DownlinkFrame { modulation: Modulation::Fsk { datarate: 50_000 }, ..downlink() };
        let t = Txpk::from_downlink(&d).unwrap();
        assert_eq!((t.modu.as_str(), &t.datr, t.fdev, t.ipol, t.codr.as_deref()), ("FSK", &Datr::Bps(50_000), Some(25_000), None, None));
        assert_eq!(t.modulation(), Some(Modulation::Fsk { datarate: 50_000 }));
    }

    #[test]
    fn lr_fhss_and_oversized_downlinks_are_refused() {
        let d = DownlinkFrame { modulation: Modulation::LrFhss { datr: "M0CW137".into(), code_rate: "1/3".into() }, ..downlink() };
        assert_eq!(Txpk::from_downlink(&d), Err(TxpkError::LrFhssDownlink));
        let d = DownlinkFrame { phy_payload: vec![0; 256], ..downlink() };
        assert_eq!(Txpk::from_downlink(&d), Err(TxpkError::PayloadTooLarge(256)));
    }

    #[test]
    fn a_gateway_reads_back_payload_and_modulation() {
        let t = Txpk::from_downlink(&downlink()).unwrap();
        assert_eq!(t.payload().unwrap(), vec![0x60, 1, 2, 3]);
        assert_eq!(t.modulation(), Some(downlink().modulation));
    }
}
