//! Regional parameters behind one trait, so the MAC layer never names a region.
//!
//! Each region is a zero-sized type implementing [`Region`]; [`region_by_name`] maps the
//! configured name to it; docs/regions.md lists the regions and what each was checked against.

mod as923;
mod au915;
mod cn470;
mod cn779;
mod dynamic;
mod eu433;
mod eu868;
mod fixed_channels;
mod in865;
#[cfg(test)]
mod invariants;
mod ism2400;
mod kr920;
mod ru864;
mod sub_band;
mod us915;

use std::fmt;
use std::time::Duration;

use loraflow_packet_forwarder::frame;

pub use as923::{As923, As923Variant, AS923_DEFAULT_DWELL_TIME};
pub use au915::Au915;
pub use cn470::Cn470;
pub use cn779::CN779;
pub use dynamic::{DynamicPlan, Rx1Rule};
pub use eu433::EU433;
pub use eu868::Eu868;
pub use in865::IN865;
pub use ism2400::ISM2400;
pub use kr920::KR920;
pub use ru864::RU864;
pub use sub_band::{erp_to_eirp_dbm, DutyCycle, SubBand, SubBandId};
pub use us915::Us915;

/// LR-FHSS coding rate (RP002-1.0.3 §2.4.3, DR8-DR11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrFhssCodingRate {
    OneThird,
    TwoThirds,
}

/// The modulation a data rate stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modulation {
    /// `bandwidth` in Hz (125000, 250000, 500000).
    Lora { spreading_factor: u8, bandwidth: u32 },
    /// `bitrate` in bit/s.
    Fsk { bitrate: u32 },
    /// Occupied channel width in Hz (137000 or 336000, rounded as Semtech names them).
    LrFhss { coding_rate: LrFhssCodingRate, occupied_channel_width: u32 },
}

impl Modulation {
    /// From a received frame's modulation; `None` for an LR-FHSS `datr`/`codr` we cannot read.
    pub fn from_frame(m: &frame::Modulation) -> Option<Modulation> {
        match m {
            frame::Modulation::Lora { bandwidth, spreading_factor, .. } => {
                Some(Modulation::Lora { spreading_factor: *spreading_factor, bandwidth: *bandwidth })
            }
            frame::Modulation::Fsk { datarate } => Some(Modulation::Fsk { bitrate: *datarate }),
            frame::Modulation::LrFhss { datr, code_rate } => {
                // Semtech writes e.g. "M0CW137": the OCW in kHz after "CW".
                let khz: u32 = datr.rsplit("CW").next()?.parse().ok()?;
                let coding_rate = match code_rate.as_str() {
                    "1/3" => LrFhssCodingRate::OneThird,
                    "2/3" => LrFhssCodingRate::TwoThirds,
                    _ => return None,
                };
                Some(Modulation::LrFhss { coding_rate, occupied_channel_width: khz * 1000 })
            }
        }
    }

    /// The modulation a gateway is told to transmit with; LoRaWAN downlinks use CR 4/5
    /// (RP002-1.0.3 §2.4.3 lists data rates with coding rate 4/5). `None` for LR-FHSS, which
    /// is uplink only.
    pub fn to_frame(&self) -> Option<frame::Modulation> {
        match *self {
            Modulation::Lora { spreading_factor, bandwidth } => {
                Some(frame::Modulation::Lora { bandwidth, spreading_factor, code_rate: "4/5".into() })
            }
            Modulation::Fsk { bitrate } => Some(frame::Modulation::Fsk { datarate: bitrate }),
            Modulation::LrFhss { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRate {
    pub modulation: Modulation,
    /// False for downlink-only data rates (US915 DR8-13, the 500 kHz downlink channels).
    pub uplink: bool,
    /// False for uplink-only data rates (LR-FHSS, US915 DR0-6).
    pub downlink: bool,
}

/// What a join-accept's CFList carries (LoRaWAN 1.0.4 §6.2.4, RP002-1.0.4 per region).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfListType {
    /// Type 0: up to five extra channel frequencies (regions with dynamic channels: EU868…).
    Frequencies,
    /// Type 1: the channel mask of the enabled fixed channels (US915, AU915, CN470). Only
    /// devices of LoRaWAN 1.0.3 and later read it.
    ChannelMask,
}

/// Whether a device must keep each transmission under 400 ms (LoRaWAN 1.0.4 §5.8
/// TxParamSetupReq; RP002-1.0.4 AS923 "UplinkDwellTime"/"DownlinkDwellTime"). `true` = limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DwellTime {
    pub uplink: bool,
    pub downlink: bool,
}

/// The dwell-time limits and maximum EIRP a TxParamSetupReq sets (LoRaWAN 1.0.4 §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TxParams {
    pub dwell_time: DwellTime,
    /// Index into the MaxEIRP table of TxParamSetupReq (0 = 8 dBm … 15 = 36 dBm).
    pub max_eirp_index: u8,
}

/// Per-deployment choices a region is built with (`region_with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionOptions {
    /// The dwell-time limits the network imposes; `None` = the region's RP002 default.
    pub dwell_time: Option<DwellTime>,
}

/// Maximum MACPayload (`m`) and FRMPayload (`n`) sizes in bytes for a data rate, for
/// devices not behind a repeater.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPayloadSize {
    pub m: usize,
    pub n: usize,
}

/// An uplink channel: centre frequency in Hz and the data rates allowed on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub frequency: u32,
    pub min_dr: u8,
    pub max_dr: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("data rate {0} is not defined in this region")]
    UnknownDr(u8),
    #[error("data rate {0} cannot be used for downlinks")]
    UplinkOnlyDr(u8),
    #[error("RX1 data-rate offset {0} is out of range for this region")]
    Rx1DrOffset(u8),
    #[error("frequency {0} Hz is outside this region's band")]
    Frequency(u32),
}

/// Pure regional parameters: everything the MAC layer needs to know about a band plan.
pub trait Region: Send + Sync + fmt::Debug {
    /// Identifier used in events and config, e.g. "eu868".
    fn config_id(&self) -> &'static str;
    /// Name as the specification writes it, e.g. "EU868".
    fn common_name(&self) -> &'static str;
    fn data_rate(&self, dr: u8) -> Option<DataRate>;
    /// The uplink data rate for a received modulation.
    fn dr_for(&self, modulation: &Modulation) -> Option<u8> {
        (0..=15).find(|dr| self.data_rate(*dr).is_some_and(|d| d.uplink && d.modulation == *modulation))
    }
    /// The downlink data rate a transmitted modulation stands for (US915 uses different
    /// numbers for the same modulation up and down: SF8BW500 is DR4 up and DR12 down).
    fn downlink_dr_for(&self, modulation: &Modulation) -> Option<u8> {
        (0..=15).find(|dr| self.data_rate(*dr).is_some_and(|d| d.downlink && d.modulation == *modulation))
    }
    /// RX1 downlink frequency for an uplink received on `uplink_freq` (Hz).
    fn rx1_frequency(&self, uplink_freq: u32) -> Result<u32, RegionError>;
    /// RX1 downlink data rate for an uplink data rate and RX1DROffset.
    fn rx1_dr(&self, uplink_dr: u8, offset: u8) -> Result<u8, RegionError>;
    /// Largest RX1DROffset this region defines.
    fn max_rx1_dr_offset(&self) -> u8;
    fn default_rx2_frequency(&self) -> u32;
    fn default_rx2_dr(&self) -> u8;
    /// RECEIVE_DELAY1; RX2 opens one second after RX1.
    fn default_rx1_delay(&self) -> Duration;
    fn join_accept_delay1(&self) -> Duration;
    fn join_accept_delay2(&self) -> Duration;
    /// Maximum payload of a downlink at `dr`, under the configured downlink dwell time.
    fn max_payload_size(&self, dr: u8) -> Option<MaxPayloadSize>;
    /// Maximum payload at `dr` with (`true`) or without the 400 ms dwell-time limit; regions
    /// without dwell-time rules answer as `max_payload_size`.
    fn max_payload_size_for(&self, dr: u8, dwell_limited: bool) -> Option<MaxPayloadSize> {
        let _ = dwell_limited;
        self.max_payload_size(dr)
    }
    /// The dwell-time limits this network imposes (configured, or the region's default).
    fn dwell_time(&self) -> DwellTime {
        DwellTime::default()
    }
    /// The dwell-time limits a device follows from activation until a TxParamSetupReq
    /// changes them (RP002-1.0.4 per region).
    fn default_dwell_time(&self) -> DwellTime {
        DwellTime::default()
    }
    /// Whether devices of this region understand TxParamSetupReq (RP002-1.0.4: AS923; the
    /// 2.4 GHz plan too).
    fn implements_tx_param_setup(&self) -> bool {
        false
    }
    /// The MaxEIRP index of TxParamSetupReq for the region's default maximum EIRP; `None`
    /// where TxParamSetupReq is not implemented.
    fn max_eirp_index(&self) -> Option<u8> {
        None
    }
    /// What a device starts with and what the network wants, as TxParamSetupReq values;
    /// `None` where TxParamSetupReq is not implemented.
    fn tx_params(&self) -> Option<(TxParams, TxParams)> {
        let max_eirp_index = self.max_eirp_index().filter(|_| self.implements_tx_param_setup())?;
        Some((
            TxParams { dwell_time: self.default_dwell_time(), max_eirp_index },
            TxParams { dwell_time: self.dwell_time(), max_eirp_index },
        ))
    }
    /// The same region with other dwell-time limits; `None` where the region has no
    /// dwell-time rules.
    fn with_dwell_time(&self, dwell_time: DwellTime) -> Option<Box<dyn Region>> {
        let _ = dwell_time;
        None
    }
    /// The modulation a gateway is told to send a downlink at `dr` with; LoRaWAN downlinks
    /// use CR 4/5 everywhere below 1 GHz.
    fn downlink_modulation(&self, dr: u8) -> Option<frame::Modulation> {
        self.data_rate(dr)?.modulation.to_frame()
    }
    /// Downlink transmit power in dBm EIRP for a frequency: the most the frequency's
    /// sub-band allows (`network.downlink_tx_power` overrides it).
    fn downlink_tx_power(&self, freq: u32) -> i32;
    /// dB below the maximum EIRP for a LinkADRReq TXPower index.
    fn tx_power_offset(&self, index: u8) -> Option<i32>;
    /// What this region's CFList carries, if it has one.
    fn cf_list_type(&self) -> Option<CfListType>;
    /// The CFList sent in join-accepts: type 0 carries the `extra` channels (Hz), type 1 the
    /// mask of the `enabled` channel indices. `None` when the region has no CFList or
    /// there is nothing to carry.
    fn cf_list(&self, extra: &[u32], enabled: &[u8]) -> Option<[u8; 16]>;
    /// Largest TXPower index the region defines (the lowest power ADR may ask for).
    fn max_tx_power_index(&self) -> u8;
    /// Highest data rate ADR steps a device up to: the fastest LoRa 125 kHz data rate every
    /// default channel allows (ChirpStack's default ADR likewise stays on LoRa 125 kHz).
    fn max_adr_dr(&self) -> u8;
    /// Lowest data rate ADR may set: the slowest uplink data rate allowed under the uplink
    /// dwell time the network imposes (AS923/AU915 with the 400 ms limit: DR2, because DR0 and
    /// DR1 have no payload there and a device refuses a LinkADRReq for them); DR0 elsewhere.
    fn min_adr_dr(&self) -> u8 {
        let dwell = self.dwell_time().uplink;
        (0..=self.max_adr_dr())
            .find(|&dr| self.data_rate(dr).is_some_and(|d| d.uplink) && self.max_payload_size_for(dr, dwell).is_some())
            .unwrap_or(0)
    }
    /// SNR (dB) the gateway's demodulator needs at an uplink data rate; `None` for data rates
    /// that are not LoRa.
    fn required_snr(&self, dr: u8) -> Option<f32> {
        match self.data_rate(dr)?.modulation {
            Modulation::Lora { spreading_factor, .. } => lora_required_snr(spreading_factor),
            Modulation::Fsk { .. } | Modulation::LrFhss { .. } => None,
        }
    }
    /// The channels every device knows from the start, by index (EU868: 3; US915: 72).
    fn default_uplink_channels(&self) -> Vec<Channel>;
    /// Index of the default channel on `freq` (Hz), if it is one.
    fn uplink_channel_index(&self, freq: u32) -> Option<u8> {
        self.default_uplink_channels().iter().position(|c| c.frequency == freq).map(|i| i as u8)
    }
    /// The default channels gateways are assumed to listen on when the config does not say:
    /// all of them, except in US915/AU915 (sub-band 2: channels 8-15 and 65).
    fn default_enabled_uplink_channels(&self) -> Vec<u8> {
        (0..self.default_uplink_channels().len() as u8).collect()
    }
    /// Default channels plus the ones the default CFList adds.
    fn uplink_channels(&self) -> Vec<Channel>;
    /// The extra channels (Hz) of `network.extra_channels` when it is not set.
    fn default_extra_channels(&self) -> Vec<u32>;
    /// The data-rate range given to extra channels (CFList, NewChannelReq).
    fn extra_channel_dr_range(&self) -> (u8, u8);
    /// Why `extra` cannot be this region's extra channels, if it cannot.
    fn check_extra_channels(&self, extra: &[u32]) -> Result<(), String>;
    /// LinkADRReq channel-mask blocks that enable exactly the channels with these indices
    /// (LoRaWAN 1.0.4 §5.3, RP002-1.0.3 ChMaskCntl tables).
    fn ch_mask_blocks(&self, enabled: &[u8]) -> Vec<ChMaskBlock>;

    // Downlink radio regulation (issue 9 part 7).

    /// The regulatory sub-band a transmission on `freq` (Hz) falls in, with its duty-cycle
    /// limit and maximum power; `None` where the region sets no duty-cycle limit.
    fn sub_band(&self, freq: u32) -> Option<SubBand>;
}

/// ChMaskCntl and ChMask of one LinkADRReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ChMaskBlock {
    pub cntl: u8,
    pub mask: u16,
}

/// The SNR (dB) a LoRa demodulator needs at a spreading factor (Semtech SX1276/SX1302
/// datasheets: SF7 -7.5 dB, 2.5 dB lower per SF step). It does not depend on the bandwidth.
pub fn lora_required_snr(spreading_factor: u8) -> Option<f32> {
    match spreading_factor {
        5 => Some(-2.5),
        6 => Some(-5.0),
        7 => Some(-7.5),
        8 => Some(-10.0),
        9 => Some(-12.5),
        10 => Some(-15.0),
        11 => Some(-17.5),
        12 => Some(-20.0),
        _ => None,
    }
}

/// The region for a configured name ("EU868", "eu868", "EU863-870"), case-insensitive.
pub fn region_by_name(name: &str) -> Option<Box<dyn Region>> {
    match name.trim().to_ascii_lowercase().as_str() {
        "eu868" | "eu863-870" | "eu_863_870" => Some(Box::new(Eu868)),
        "us915" | "us902-928" | "us_902_928" => Some(Box::new(Us915)),
        "au915" | "au915-928" | "au_915_928" => Some(Box::new(Au915)),
        "cn470" | "cn470-510" | "cn_470_510" => Some(Box::new(Cn470)),
        "as923" | "as923-1" | "as923_1" | "as_923" | "as_923_1" | "as923-925" => Some(Box::new(As923::new(As923Variant::As923_1))),
        "as923-2" | "as923_2" | "as_923_2" => Some(Box::new(As923::new(As923Variant::As923_2))),
        "as923-3" | "as923_3" | "as_923_3" => Some(Box::new(As923::new(As923Variant::As923_3))),
        "as923-4" | "as923_4" | "as_923_4" => Some(Box::new(As923::new(As923Variant::As923_4))),
        "kr920" | "kr920-923" | "kr_920_923" => Some(Box::new(KR920)),
        "in865" | "in865-867" | "in_865_867" => Some(Box::new(IN865)),
        "ru864" | "ru864-870" | "ru_864_870" => Some(Box::new(RU864)),
        "cn779" | "cn779-787" | "cn_779_787" => Some(Box::new(CN779)),
        "eu433" | "eu_433" => Some(Box::new(EU433)),
        "ism2400" | "ism_2400" | "lora_2_4" => Some(Box::new(ISM2400)),
        _ => None,
    }
}

/// The region for a configured name, built with `options`. Errors name why: an unknown
/// region, or a dwell time set for a region without dwell-time rules.
pub fn region_with(name: &str, options: &RegionOptions) -> Result<Box<dyn Region>, String> {
    let region = region_by_name(name).ok_or_else(|| format!("unknown region {name:?}"))?;
    match options.dwell_time {
        None => Ok(region),
        Some(d) => {
            region.with_dwell_time(d).ok_or_else(|| format!("{} has no dwell-time rules; leave the dwell time unset", region.common_name()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_found_by_any_spelling_of_their_name() {
        for n in ["EU868", "eu868", " Eu868 ", "EU863-870"] {
            assert_eq!(region_by_name(n).unwrap().config_id(), "eu868");
        }
        for n in ["US915", "us915", "US902-928", "US_902_928"] {
            assert_eq!(region_by_name(n).unwrap().config_id(), "us915");
        }
        for n in ["AU915", "au915", "AU915-928", "au_915_928"] {
            assert_eq!(region_by_name(n).unwrap().config_id(), "au915");
        }
        for n in ["CN470", "cn470", "CN470-510", "CN_470_510"] {
            assert_eq!(region_by_name(n).unwrap().config_id(), "cn470");
        }
        assert!(region_by_name("US916").is_none());
        assert!(region_by_name("").is_none());
        assert!(region_by_name("XX999").is_none());
    }

    /// Every spelling of every region this module knows, with the id it must resolve to.
    const NAMES: &[(&str, &str)] = &[
        ("AS923", "as923"),
        ("AS923-1", "as923"),
        ("as923_1", "as923"),
        ("AS923-2", "as923_2"),
        ("as923_2", "as923_2"),
        ("AS923-3", "as923_3"),
        ("as923_3", "as923_3"),
        ("AS923-4", "as923_4"),
        ("AS_923_4", "as923_4"),
        ("KR920", "kr920"),
        ("KR920-923", "kr920"),
        ("IN865", "in865"),
        ("IN865-867", "in865"),
        ("RU864", "ru864"),
        ("RU864-870", "ru864"),
        ("CN779", "cn779"),
        ("CN779-787", "cn779"),
        ("EU433", "eu433"),
        ("ISM2400", "ism2400"),
    ];

    #[test]
    fn every_common_name_resolves() {
        for (name, id) in NAMES {
            assert_eq!(region_by_name(name).map(|r| r.config_id()), Some(*id), "{name}");
            // The config id itself is a valid name.
            assert_eq!(region_by_name(id).map(|r| r.config_id()), Some(*id), "{id}");
        }
    }

    fn all_regions() -> Vec<Box<dyn Region>> {
        let mut names: Vec<&str> = NAMES.iter().map(|(_, id)| *id).collect();
        names.push("eu868");
        names.dedup();
        names.into_iter().map(|n| region_by_name(n).unwrap()).collect()
    }

    #[test]
    fn every_region_satisfies_the_generic_invariants() {
        for r in all_regions() {
            let name = r.common_name();
            let uplink_drs: Vec<u8> = (0..=15).filter(|dr| r.data_rate(*dr).is_some_and(|d| d.uplink)).collect();
            assert!(!uplink_drs.is_empty(), "{name}");
            for &dr in &uplink_drs {
                assert_eq!(r.dr_for(&r.data_rate(dr).unwrap().modulation), Some(dr), "{name} DR{dr}");
                for offset in 0..=r.max_rx1_dr_offset() {
                    let rx1 = r.rx1_dr(dr, offset).unwrap_or_else(|e| panic!("{name} DR{dr} offset {offset}: {e}"));
                    assert!(r.data_rate(rx1).is_some_and(|d| d.downlink), "{name} DR{dr}/{offset} -> DR{rx1} is not a downlink DR");
                }
            }
            assert!(r.rx1_dr(uplink_drs[0], r.max_rx1_dr_offset() + 1).is_err(), "{name}");
            assert!(r.data_rate(r.default_rx2_dr()).is_some_and(|d| d.downlink), "{name} RX2 DR");
            assert!(r.max_payload_size(r.default_rx2_dr()).is_some(), "{name} RX2 payload");
            for ch in r.uplink_channels() {
                let f = r.rx1_frequency(ch.frequency).unwrap_or_else(|e| panic!("{name} {} Hz: {e}", ch.frequency));
                assert!(f > 0);
            }
            assert_eq!(r.check_extra_channels(&r.default_extra_channels()), Ok(()), "{name}");
            let top = r.max_adr_dr();
            assert!(
                matches!(r.data_rate(top), Some(DataRate { modulation: Modulation::Lora { .. }, uplink: true, .. })),
                "{name} max ADR DR{top}"
            );
            assert!(r.default_uplink_channels().iter().all(|c| c.max_dr >= top), "{name}");
            assert_eq!(r.tx_power_offset(0), Some(0), "{name}");
            assert!(r.tx_power_offset(r.max_tx_power_index()).is_some(), "{name}");
            assert_eq!(r.tx_power_offset(r.max_tx_power_index() + 1), None, "{name}");
            assert!(r.default_rx1_delay() < r.join_accept_delay1() && r.join_accept_delay1() < r.join_accept_delay2(), "{name}");
            assert_eq!(r.tx_params().is_some(), r.implements_tx_param_setup(), "{name}");
            // The default dwell state is what a region built without options imposes.
            assert_eq!(r.dwell_time(), r.default_dwell_time(), "{name}");
            for dr in uplink_drs {
                assert!(r.downlink_modulation(dr).is_some() || !r.data_rate(dr).unwrap().downlink, "{name} DR{dr}");
            }
        }
    }

    #[test]
    fn region_with_sets_the_dwell_time_where_the_region_has_rules() {
        let on = DwellTime { uplink: true, downlink: true };
        let r = region_with("AS923-2", &RegionOptions { dwell_time: Some(on) }).unwrap();
        assert_eq!((r.config_id(), r.dwell_time()), ("as923_2", on));
        let r = region_with("as923", &RegionOptions::default()).unwrap();
        assert_eq!(r.dwell_time(), r.default_dwell_time());
        let err = region_with("EU868", &RegionOptions { dwell_time: Some(on) }).unwrap_err();
        assert!(err.contains("EU868") && err.contains("dwell"), "{err}");
        let err = region_with("nowhere", &RegionOptions::default()).unwrap_err();
        assert!(err.contains("unknown region") && err.contains("nowhere"), "{err}");
    }

    #[test]
    fn frame_modulations_convert_both_ways() {
        let lora = frame::Modulation::Lora { bandwidth: 125_000, spreading_factor: 9, code_rate: "4/5".into() };
        let m = Modulation::from_frame(&lora).unwrap();
        assert_eq!(m, Modulation::Lora { spreading_factor: 9, bandwidth: 125_000 });
        assert_eq!(m.to_frame(), Some(lora));
        let fsk = frame::Modulation::Fsk { datarate: 50_000 };
        assert_eq!(Modulation::from_frame(&fsk), Some(Modulation::Fsk { bitrate: 50_000 }));
        let lr = frame::Modulation::LrFhss { datr: "M0CW137".into(), code_rate: "2/3".into() };
        let m = Modulation::from_frame(&lr).unwrap();
        assert_eq!(m, Modulation::LrFhss { coding_rate: LrFhssCodingRate::TwoThirds, occupied_channel_width: 137_000 });
        assert_eq!(m.to_frame(), None);
        let bad = frame::Modulation::LrFhss { datr: "garbage".into(), code_rate: "2/3".into() };
        assert_eq!(Modulation::from_frame(&bad), None);
    }
}
