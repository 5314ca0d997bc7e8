//! What the network server believes about a device's radio settings and which of its own
//! MAC requests await an answer. Stored as JSON with the session (`device_sessions.mac_state`);
//! every struct reads with defaults for missing fields, so fields can be added later and rows
//! written before this column existed read as "nothing known yet".

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::region::ChMaskBlock;

use super::adr::AdrHistory;
use super::{DownlinkMacCommand, DutyCycleReq, LinkAdrReq, NewChannelReq, RxParamSetupReq, RxTimingSetupReq, TxParamSetupReq};
use crate::region::{DwellTime, TxParams};

/// The RX window settings a device uses (LoRaWAN 1.0.4 §5.4, §5.7). Kept in the session's
/// own columns; downlinks always use the values the device acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxParams {
    /// Seconds, 1..=15.
    pub rx1_delay: u8,
    pub rx1_dr_offset: u8,
    pub rx2_dr: u8,
    /// Hz
    pub rx2_frequency: u32,
}

impl RxParams {
    /// What a device uses before anything told it otherwise (an ABP device): RECEIVE_DELAY1,
    /// RX1 offset 0 and the region's RX2 (RP002-1.0.3 §2.4.7).
    pub fn region_defaults(region: &dyn crate::region::Region) -> RxParams {
        RxParams {
            rx1_delay: region.default_rx1_delay().as_secs() as u8,
            rx1_dr_offset: 0,
            rx2_dr: region.default_rx2_dr(),
            rx2_frequency: region.default_rx2_frequency(),
        }
    }
}

/// What the ADR algorithm wants the device to use (LinkADRReq, LoRaWAN 1.0.4 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdrTarget {
    pub dr: u8,
    pub tx_power_index: u8,
    pub nb_trans: u8,
}

/// One uplink channel the device knows, by its index (RP002-1.0.3 §2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceChannel {
    pub index: u8,
    /// Hz
    pub frequency: u32,
    pub min_dr: u8,
    pub max_dr: u8,
    /// Enabled by the last accepted channel mask.
    pub enabled: bool,
}

/// A request the server sends, in a form that is stored with the session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// One LinkADRReq per channel-mask block, sent back to back (LoRaWAN 1.0.4 §5.3).
    LinkAdr {
        dr: u8,
        tx_power_index: u8,
        nb_trans: u8,
        masks: Vec<ChMaskBlock>,
    },
    DutyCycle {
        max_duty_cycle: u8,
    },
    RxParamSetup {
        rx1_dr_offset: u8,
        rx2_dr: u8,
        rx2_frequency: u32,
    },
    #[default]
    DevStatus,
    NewChannel {
        index: u8,
        frequency: u32,
        min_dr: u8,
        max_dr: u8,
    },
    RxTimingSetup {
        delay: u8,
    },
    /// Dwell-time limits and MaxEIRP (LoRaWAN 1.0.4 §5.8), in regions that implement it.
    TxParamSetup {
        uplink_dwell_time: bool,
        downlink_dwell_time: bool,
        max_eirp_index: u8,
    },
}

/// A request sent and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Pending {
    pub request: Request,
    /// Transmissions so far.
    pub attempts: u8,
    /// FCntDown of the downlink that carried it last, and the uplink FCnt it answered.
    pub f_cnt_down: u32,
    pub f_cnt_up: u32,
    pub sent_at: Option<DateTime<Utc>>,
}

/// A request the device refused (NAK) or never answered: not sent again before `until`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Held {
    pub request: Request,
    pub until: Option<DateTime<Utc>>,
    /// True when held for lack of an answer (a late sticky answer still counts).
    pub unanswered: bool,
}

/// The MAC state stored with a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MacState {
    /// TXPower index the device uses (0 = the region's maximum, the default after activation).
    pub tx_power_index: u8,
    /// Transmissions per uplink (NbTrans), 1 after activation.
    pub nb_trans: u8,
    /// Data rate last set by an acknowledged LinkADRReq.
    pub dr: Option<u8>,
    /// The device's channels; `None` until the server knows them better than the defaults
    /// (see `MacState::channels_or_initial`).
    pub channels: Option<Vec<DeviceChannel>>,
    /// Acknowledged DutyCycleReq value.
    pub max_duty_cycle: Option<u8>,
    /// Dwell-time limits and MaxEIRP last acknowledged (TxParamSetupAns); `None` = what the
    /// region's devices start with ([`MacState::tx_params_or_initial`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_params: Option<TxParams>,
    pub pending: Vec<Pending>,
    pub held: Vec<Held>,
    pub last_dev_status_req: Option<DateTime<Utc>>,
    /// The last uplinks of an ADR device (`mac::adr`). Kept in memory with the cached session
    /// and written lazily: with the rest of the state whenever that changes, and otherwise once
    /// every [`ADR_HISTORY_SAVE_EVERY`] uplinks, so that ADR costs no database write per uplink
    /// (issue 15). A restart or a crash loses at most that many entries: positive steps start again from
    /// the next uplink, negative ones wait for a full history anyway.
    #[serde(skip_serializing_if = "AdrHistory::is_empty")]
    pub adr_history: AdrHistory,
    /// Entries pushed to `adr_history` since it was last written; never stored (a state read
    /// from the database has nothing unsaved).
    #[serde(skip)]
    pub adr_history_unsaved: u8,
}

/// Uplinks whose ADR history may stay unsaved before the MAC state is written for them alone.
pub const ADR_HISTORY_SAVE_EVERY: u8 = 10;

impl Default for MacState {
    fn default() -> Self {
        MacState {
            tx_power_index: 0,
            nb_trans: 1,
            dr: None,
            channels: None,
            max_duty_cycle: None,
            tx_params: None,
            pending: Vec::new(),
            held: Vec::new(),
            last_dev_status_req: None,
            adr_history: AdrHistory::default(),
            adr_history_unsaved: 0,
        }
    }
}

impl MacState {
    /// The state of a session made by a join: the device has the region's default channels
    /// plus those of the CFList it was sent.
    pub fn after_join(region: &dyn crate::region::Region, cf_list_channels: &[u32]) -> MacState {
        MacState { channels: Some(initial_channels(region, cf_list_channels)), ..MacState::default() }
    }

    /// The state of a session made by a join whose type-1 CFList (fixed-channel regions)
    /// left the device with exactly the `enabled` default channels.
    pub fn with_enabled_channels(region: &dyn crate::region::Region, enabled: &[u8]) -> MacState {
        let mut channels = initial_channels(region, &[]);
        for c in &mut channels {
            c.enabled = enabled.contains(&c.index);
        }
        MacState { channels: Some(channels), ..MacState::default() }
    }

    /// The same state apart from the ADR history not yet written: what decides whether the
    /// state must be stored now.
    pub fn same_apart_from_history(&self, other: &MacState) -> bool {
        let strip = |s: &MacState| MacState { adr_history: AdrHistory::default(), adr_history_unsaved: 0, ..s.clone() };
        strip(self) == strip(other)
    }

    /// True when the state must be written now: anything but the ADR history changed, or the
    /// history has gone unsaved for [`ADR_HISTORY_SAVE_EVERY`] uplinks.
    pub fn needs_saving(&self, stored: &MacState) -> bool {
        !self.same_apart_from_history(stored) || self.adr_history_unsaved >= ADR_HISTORY_SAVE_EVERY
    }

    /// The channels the device is believed to have. Without stored knowledge: an ABP device
    /// has the region's defaults; an OTAA session from before this state existed got the
    /// region's default CFList (what loraflow always sent).
    pub fn channels_or_initial(&self, region: &dyn crate::region::Region, is_otaa: bool) -> Vec<DeviceChannel> {
        match &self.channels {
            Some(c) => c.clone(),
            None if is_otaa => initial_channels(region, &region.default_extra_channels()),
            None => initial_channels(region, &[]),
        }
    }
}

impl MacState {
    /// The dwell-time limits and MaxEIRP the device is believed to follow; `None` where the
    /// region does not implement TxParamSetupReq.
    pub fn tx_params_or_initial(&self, region: &dyn crate::region::Region) -> Option<TxParams> {
        let (initial, _) = region.tx_params()?;
        Some(self.tx_params.unwrap_or(initial))
    }
}

fn initial_channels(region: &dyn crate::region::Region, extra: &[u32]) -> Vec<DeviceChannel> {
    let (min_dr, max_dr) = region.extra_channel_dr_range();
    let mut out: Vec<DeviceChannel> = region
        .default_uplink_channels()
        .iter()
        .enumerate()
        .map(|(i, c)| DeviceChannel { index: i as u8, frequency: c.frequency, min_dr: c.min_dr, max_dr: c.max_dr, enabled: true })
        .collect();
    let first = out.len();
    out.extend(extra.iter().enumerate().map(|(i, &frequency)| DeviceChannel {
        index: (first + i) as u8,
        frequency,
        min_dr,
        max_dr,
        enabled: true,
    }));
    out
}

/// The indices of the channels enabled and in use.
pub fn enabled_indices(channels: &[DeviceChannel]) -> Vec<u8> {
    channels.iter().filter(|c| c.enabled && c.frequency != 0).map(|c| c.index).collect()
}

/// Applies the channel-mask blocks of an accepted LinkADRReq, in order (LoRaWAN 1.0.4 §5.3;
/// RP002-1.0.4 ChMaskCntl tables). Regions of up to 16 channels: ChMaskCntl 0 is the mask,
/// 6 turns every channel on. US915/AU915 (72 channels): 0-3 are the 125 kHz channels 16·n
/// to 16·n+15, 4 channels 64-71, 6/7 turn all 125 kHz channels on/off and the mask is for
/// 64-71. CN470 (96 channels): 0-5 are blocks of 16, 6 turns every channel on. Other values
/// leave the channels as they are.
pub fn apply_ch_mask(channels: &mut [DeviceChannel], default_count: usize, masks: &[ChMaskBlock]) {
    let us_like = default_count == 72;
    let blocks = default_count.div_ceil(16).max(1);
    for m in masks {
        let cntl = usize::from(m.cntl);
        let set_block = |channels: &mut [DeviceChannel], first: usize| {
            for c in channels.iter_mut() {
                let i = usize::from(c.index);
                if (first..first + 16).contains(&i) {
                    c.enabled = m.mask & (1 << (i - first)) != 0;
                }
            }
        };
        match cntl {
            6 | 7 if us_like => {
                for c in channels.iter_mut() {
                    if c.index < 64 {
                        c.enabled = cntl == 6;
                    }
                }
                set_block(channels, 64);
            }
            6 => channels.iter_mut().for_each(|c| c.enabled = true),
            n if n < blocks && (!us_like || n <= 4) => set_block(channels, 16 * n),
            _ => {}
        }
    }
}

impl Request {
    /// The commands this request is sent as.
    pub fn commands(&self) -> Vec<DownlinkMacCommand> {
        match self {
            Request::LinkAdr { dr, tx_power_index, nb_trans, masks } => masks
                .iter()
                .map(|m| {
                    DownlinkMacCommand::LinkAdrReq(LinkAdrReq {
                        dr: *dr,
                        tx_power: *tx_power_index,
                        ch_mask: m.mask,
                        ch_mask_cntl: m.cntl,
                        nb_trans: *nb_trans,
                    })
                })
                .collect(),
            Request::DutyCycle { max_duty_cycle } => {
                vec![DownlinkMacCommand::DutyCycleReq(DutyCycleReq { max_duty_cycle: *max_duty_cycle })]
            }
            Request::RxParamSetup { rx1_dr_offset, rx2_dr, rx2_frequency } => vec![DownlinkMacCommand::RxParamSetupReq(RxParamSetupReq {
                rx1_dr_offset: *rx1_dr_offset,
                rx2_dr: *rx2_dr,
                frequency: *rx2_frequency,
            })],
            Request::DevStatus => vec![DownlinkMacCommand::DevStatusReq],
            Request::NewChannel { index, frequency, min_dr, max_dr } => vec![DownlinkMacCommand::NewChannelReq(NewChannelReq {
                ch_index: *index,
                frequency: *frequency,
                min_dr: *min_dr,
                max_dr: *max_dr,
            })],
            Request::RxTimingSetup { delay } => vec![DownlinkMacCommand::RxTimingSetupReq(RxTimingSetupReq { delay: *delay })],
            Request::TxParamSetup { uplink_dwell_time, downlink_dwell_time, max_eirp_index } => {
                vec![DownlinkMacCommand::TxParamSetupReq(TxParamSetupReq {
                    downlink_dwell_time: *downlink_dwell_time,
                    uplink_dwell_time: *uplink_dwell_time,
                    max_eirp_index: *max_eirp_index,
                })]
            }
        }
    }

    pub fn name(&self) -> super::MacCommandName {
        use super::MacCommandName as N;
        match self {
            Request::LinkAdr { .. } => N::LinkAdrReq,
            Request::DutyCycle { .. } => N::DutyCycleReq,
            Request::RxParamSetup { .. } => N::RxParamSetupReq,
            Request::DevStatus => N::DevStatusReq,
            Request::NewChannel { .. } => N::NewChannelReq,
            Request::RxTimingSetup { .. } => N::RxTimingSetupReq,
            Request::TxParamSetup { .. } => N::TxParamSetupReq,
        }
    }

    /// The TxParamSetupReq that sets `params`.
    pub fn tx_param_setup(params: TxParams) -> Request {
        Request::TxParamSetup {
            uplink_dwell_time: params.dwell_time.uplink,
            downlink_dwell_time: params.dwell_time.downlink,
            max_eirp_index: params.max_eirp_index,
        }
    }

    /// What an acknowledged TxParamSetupReq sets; `None` for other requests.
    pub fn tx_params(&self) -> Option<TxParams> {
        match *self {
            Request::TxParamSetup { uplink_dwell_time, downlink_dwell_time, max_eirp_index } => {
                Some(TxParams { dwell_time: DwellTime { uplink: uplink_dwell_time, downlink: downlink_dwell_time }, max_eirp_index })
            }
            _ => None,
        }
    }

    /// Two requests of the same kind (and channel) never wait at once.
    pub fn same_slot(&self, other: &Request) -> bool {
        match (self, other) {
            (Request::NewChannel { index: a, .. }, Request::NewChannel { index: b, .. }) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Eu868;

    #[test]
    fn a_row_written_before_the_column_existed_reads_as_defaults() {
        let s: MacState = serde_json::from_str("{}").unwrap();
        assert_eq!(s, MacState::default());
        assert_eq!(s.nb_trans, 1);
        // Fields added by a later version are ignored by this one.
        let s: MacState = serde_json::from_str(r#"{"nb_trans": 2, "future_field": [1, 2]}"#).unwrap();
        assert_eq!(s.nb_trans, 2);
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let s = MacState {
            pending: vec![Pending {
                request: Request::RxParamSetup { rx1_dr_offset: 1, rx2_dr: 3, rx2_frequency: 869_525_000 },
                attempts: 2,
                f_cnt_down: 7,
                f_cnt_up: 12,
                sent_at: Some("2026-11-30T00:00:00Z".parse().unwrap()),
            }],
            held: vec![Held {
                request: Request::NewChannel { index: 3, frequency: 867_100_000, min_dr: 0, max_dr: 5 },
                until: None,
                unanswered: false,
            }],
            ..MacState::after_join(&Eu868, &[867_100_000])
        };
        let mut s = s;
        s.adr_history.push(crate::mac::adr::UplinkMetric { f_cnt: 12, max_snr: 7.5, tx_power_index: 1, gateway_count: 2 });
        s.adr_history_unsaved = 1;
        let json = serde_json::to_string(&s).unwrap();
        let read: MacState = serde_json::from_str(&json).unwrap();
        assert_eq!(read, MacState { adr_history_unsaved: 0, ..s }, "what was unsaved is saved once read back");
        // A state without history stores no history field.
        assert!(!serde_json::to_string(&MacState::default()).unwrap().contains("adr_history"));
    }

    #[test]
    fn channel_masks_apply_per_ch_mask_cntl() {
        let mut eu = MacState::after_join(&Eu868, &[867_100_000, 867_300_000]).channels.unwrap();
        apply_ch_mask(&mut eu, 3, &[ChMaskBlock { cntl: 0, mask: 0b1_0011 }]);
        assert_eq!(enabled_indices(&eu), vec![0, 1, 4]);
        apply_ch_mask(&mut eu, 3, &[ChMaskBlock { cntl: 6, mask: 0 }]);
        assert_eq!(enabled_indices(&eu), vec![0, 1, 2, 3, 4]);

        // 72 channels as in US915 (frequencies do not matter to the mask).
        let mut us: Vec<DeviceChannel> = (0..72u8)
            .map(|i| DeviceChannel { index: i, frequency: 902_300_000 + u32::from(i), min_dr: 0, max_dr: 3, enabled: true })
            .collect();
        // Sub-band 2: all 125 kHz off with channel 65 on, then channels 8-15 on.
        apply_ch_mask(&mut us, 72, &[ChMaskBlock { cntl: 7, mask: 0x0002 }, ChMaskBlock { cntl: 0, mask: 0xff00 }]);
        assert_eq!(enabled_indices(&us), vec![8, 9, 10, 11, 12, 13, 14, 15, 65]);
        apply_ch_mask(&mut us, 72, &[ChMaskBlock { cntl: 6, mask: 0x00ff }]);
        assert_eq!(enabled_indices(&us).len(), 72);
        apply_ch_mask(&mut us, 72, &[ChMaskBlock { cntl: 3, mask: 0 }, ChMaskBlock { cntl: 4, mask: 0x0001 }]);
        assert_eq!(enabled_indices(&us).len(), 72 - 16 - 7);
    }

    #[test]
    fn abp_devices_start_with_the_default_channels_and_old_otaa_sessions_with_the_default_cf_list() {
        let s = MacState::default();
        assert_eq!(s.channels_or_initial(&Eu868, false).len(), 3);
        let otaa = s.channels_or_initial(&Eu868, true);
        assert_eq!(otaa.len(), 8);
        assert_eq!((otaa[3].index, otaa[3].frequency, otaa[3].max_dr), (3, 867_100_000, 5));
    }
}
