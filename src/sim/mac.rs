//! The device side of the LoRaWAN MAC layer for a simulated end device of any region: the
//! answer to every command a network server sends (LoRaWAN 1.0.4 §5, RP002-1.0.4) and ADR
//! backoff (LoRaWAN 1.0.4 §4.3.1.1). Pure: the caller hands in the MAC bytes of each downlink
//! and the SNR the network measured, and asks what the next uplink carries, on which channel,
//! and whether a downlink came in a window the device listens to.
//!
//! The regional numbers (data rates, channels, RX1 mapping, RX2 defaults, payload sizes, power
//! steps) come from the network server's pure region tables through [`RadioPlan`]; what a
//! device *does* with them is the simulator's own code, written from the specification and not
//! shared with the server, so that a simulated device checks the server: the CFList of type 0
//! (frequencies) and type 1 (channel mask), LinkADRReq with every ChMaskCntl (US915/AU915 0-7,
//! CN470 blocks), the choice of a channel among the enabled ones, the RX1 frequency and data
//! rate of an uplink and the RX2 defaults. `sim::eu868` keeps a hand-written copy of the EU868
//! numbers as a cross-check of the server's table.
//!
//! Where the specification leaves a choice, the simulator makes this one:
//! - Answers that fit FOpts (at most 15 bytes) ride with the application payload. Longer ones
//!   go alone as an FPort 0 uplink, and the application payload waits for the next uplink.
//! - ADRACKReq is set whenever ADR is on and ADR_ACK_CNT ≥ ADR_ACK_LIMIT, also at DR0 and
//!   default power (1.0.4 Table 9 keeps it set once the backoff has reached the defaults).
//! - A device without ADR applies a valid channel mask but refuses data rate and TX power
//!   changes (1.0.4 §4.3.1.1 lets it ignore them; the network sees the NAK bits).
//! - A fixed-channel device (US915, AU915, CN470) starts on the plan's sub-band, as devices
//!   sold pre-configured for the usual 8+1-channel gateway do, instead of all 72 channels; the
//!   ADR backoff turns that sub-band back on, not all channels.
//! - TxParamSetupReq is followed and answered where the region implements it (AS923): the
//!   uplink dwell time it sets limits the payload per data rate and rules out the data rates
//!   without a payload under dwell time (AS923 DR0-1); its MaxEIRP is not modelled. Elsewhere it
//!   gets no answer, nor do NewChannelReq and DlChannelReq in fixed-channel regions, which do
//!   not implement them.

use std::sync::Arc;

use loraflow_network_server::mac::{
    parse_downlink_commands, DevStatusAns, DeviceTimeAns, DlChannelAns, DlChannelReq, DownlinkMacCommand, LinkAdrAns, LinkAdrReq,
    LinkCheckAns, MacParseError, NewChannelAns, NewChannelReq, RxParamSetupAns, RxParamSetupReq, UplinkMacCommand,
};
use loraflow_network_server::region::Modulation;
use rand::Rng;

use super::plan::{MaskLayout, RadioPlan};

/// Uplinks without a downlink before ADRACKReq is set (RP002-1.0.4 §2.4.8 default).
pub const ADR_ACK_LIMIT: u32 = 64;
/// Further uplinks without a downlink between two backoff steps (RP002-1.0.4 §2.4.8 default).
pub const ADR_ACK_DELAY: u32 = 32;
/// FOptsLen is 4 bits (LoRaWAN 1.0.4 §4.3.1).
pub const MAX_FOPTS_LEN: usize = 15;
/// "Keep the current value" in LinkADRReq DataRate and TXPower (LoRaWAN 1.0.4 §5.2).
const KEEP: u8 = 0x0f;
/// Channels a dynamic-channel device can hold (ChMask has 16 bits, LoRaWAN 1.0.4 §5.3).
const DYNAMIC_CHANNELS: usize = 16;

/// What the simulated device is and supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacConfig {
    /// The device sets the ADR bit, follows LinkADRReq and runs the ADR backoff.
    pub adr: bool,
    /// Highest data rate the device can use (EU868: 5 = LoRa 125 kHz only, up to 7 = FSK).
    pub max_dr: u8,
    /// Data rate after a join (and of the join-request).
    pub initial_dr: u8,
    /// TXPower index after a join; 0 is the maximum (the LoRaWAN default TX power).
    pub initial_tx_power: u8,
    /// Battery byte of DevStatusAns: 0 external power, 1..=254 level, 255 unknown.
    pub battery: u8,
    /// Class C: the device listens on RX2 whenever it is not sending (LoRaWAN 1.0.4 §17).
    pub class_c: bool,
}

impl Default for MacConfig {
    /// The simulator before ADR existed: no ADR, SF7BW125 (EU868 DR5), maximum power, Class A.
    fn default() -> Self {
        MacConfig { adr: false, max_dr: 5, initial_dr: 5, initial_tx_power: 0, battery: 254, class_c: false }
    }
}

/// An uplink channel the device may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkChannel {
    pub frequency: u32,
    pub min_dr: u8,
    pub max_dr: u8,
    /// RX1 frequency when a DlChannelReq moved it away from the region's mapping.
    pub rx1_frequency: Option<u32>,
}

impl UplinkChannel {
    fn new(frequency: u32, min_dr: u8, max_dr: u8) -> Self {
        UplinkChannel { frequency, min_dr, max_dr, rx1_frequency: None }
    }

    fn allows(&self, dr: u8) -> bool {
        (self.min_dr..=self.max_dr).contains(&dr)
    }
}

/// Radio parameters of one transmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxParams {
    pub dr: u8,
    pub tx_power: u8,
    /// Index of the device channel.
    pub channel: u8,
    pub frequency: u32,
    /// What `dr` stands for in the device's region.
    pub modulation: Modulation,
    /// dB below the maximum EIRP at `tx_power` (the region's TX power table; 0 or negative).
    pub power_offset_db: i32,
}

/// How a downlink reached the device: what a gateway's PULL_RESP told it to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownlinkRadio {
    pub frequency: u32,
    pub modulation: Modulation,
    /// `imme`: sent at once, not at a receive window's time (Class C).
    pub immediate: bool,
}

/// The receive window a downlink was heard in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxWindow {
    Rx1,
    Rx2,
    /// RX2 frequency and data rate outside the Class A windows (LoRaWAN 1.0.4 §17).
    ClassC,
}

/// Why a device did not hear a downlink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("no uplink yet, so no receive window is open")]
    NoUplink,
    #[error("{modulation:?} is not a downlink data rate of the region")]
    UnknownDr { modulation: Modulation },
    #[error("{frequency} Hz DR{dr} matches neither RX1 ({rx1:?}) nor RX2 ({rx2_frequency} Hz DR{rx2_dr})")]
    Mismatch { frequency: u32, dr: u8, rx1: Option<(u32, u8)>, rx2_frequency: u32, rx2_dr: u8 },
    #[error("an immediate downlink on {frequency} Hz DR{dr}: only Class C devices listen outside RX1/RX2")]
    NotClassC { frequency: u32, dr: u8 },
}

/// The MAC part of the next uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkMac {
    pub adr: bool,
    pub adr_ack_req: bool,
    /// Encoded answers, one-shot ones first, then the sticky ones.
    pub commands: Vec<u8>,
    pub dr: u8,
    pub tx_power: u8,
    /// Transmissions of this frame (1 = no repetition).
    pub nb_trans: u8,
}

/// Where an uplink's MAC answers travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In FOpts (possibly empty) next to the application payload.
    FOpts(Vec<u8>),
    /// Alone in the FRMPayload of an FPort 0 uplink; the application payload waits.
    Port0(Vec<u8>),
}

/// Where `commands` go when the application wants to send `app_len` bytes where at most
/// `max_payload` bytes of FOpts + FRMPayload fit: FOpts when they fit both FOpts and that
/// limit together with the application payload (LoRaWAN 1.0.4 §4.3.1.6), otherwise FPort 0
/// on their own.
pub fn place(commands: Vec<u8>, app_len: usize, max_payload: usize) -> Placement {
    if commands.is_empty() || commands.len() <= MAX_FOPTS_LEN && commands.len() + app_len <= max_payload {
        Placement::FOpts(commands)
    } else {
        Placement::Port0(commands)
    }
}

/// What a downlink's MAC commands did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MacReport {
    pub commands: Vec<DownlinkMacCommand>,
    /// Processing stopped here (LoRaWAN 1.0.4 §5: an unknown command ends the list).
    pub error: Option<MacParseError>,
    /// Answers queued for the next uplink.
    pub answers: Vec<UplinkMacCommand>,
}

/// The MAC state of one device session.
#[derive(Debug, Clone)]
pub struct DeviceMac {
    config: MacConfig,
    plan: Arc<RadioPlan>,
    dr: u8,
    tx_power: u8,
    nb_trans: u8,
    /// By index: the region's default channels, then (dynamic regions) CFList/NewChannelReq ones.
    channels: Vec<Option<UplinkChannel>>,
    /// Bit i = channel i enabled.
    ch_mask: u128,
    rx1_dr_offset: u8,
    rx2_dr: u8,
    rx2_frequency: u32,
    rx1_delay: u8,
    max_duty_cycle: u8,
    /// The 400 ms uplink dwell-time limit applies (RP002-1.0.4 AS923 default, TxParamSetupReq).
    uplink_dwell: bool,
    /// Uplinks since the last downlink (ADR_ACK_CNT, LoRaWAN 1.0.4 §4.3.1.1).
    adr_ack_cnt: u32,
    /// Answers sent once, in the next uplink.
    answers: Vec<UplinkMacCommand>,
    /// Answers repeated in every uplink until a downlink arrives (LoRaWAN 1.0.4 §5.4, §5.6, §5.7).
    sticky: Vec<UplinkMacCommand>,
    /// SNR (dB) the network reported for the last uplink, taken as the downlink's SNR.
    last_snr: Option<f32>,
    last_link_check: Option<LinkCheckAns>,
    last_device_time: Option<DeviceTimeAns>,
}

impl DeviceMac {
    /// An EU868 device before its join, with the default channels.
    pub fn new(config: MacConfig) -> Self {
        DeviceMac::for_plan(config, Arc::new(RadioPlan::default()))
    }

    /// A device of `plan`'s region before its join, on the plan's channels.
    pub fn for_plan(config: MacConfig, plan: Arc<RadioPlan>) -> Self {
        let region = &plan.region;
        let defaults = region.default_uplink_channels();
        let size = if plan.layout.is_fixed() { defaults.len().min(128) } else { DYNAMIC_CHANNELS.max(defaults.len()) };
        let mut channels = vec![None; size];
        for (slot, c) in channels.iter_mut().zip(&defaults) {
            *slot = Some(UplinkChannel::new(c.frequency, c.min_dr, c.max_dr));
        }
        DeviceMac {
            config,
            dr: config.initial_dr,
            tx_power: config.initial_tx_power,
            nb_trans: 1,
            channels,
            ch_mask: plan.enabled_mask(),
            rx1_dr_offset: 0,
            rx2_dr: region.default_rx2_dr(),
            rx2_frequency: region.default_rx2_frequency(),
            rx1_delay: 1,
            max_duty_cycle: 0,
            uplink_dwell: region.default_dwell_time().uplink,
            adr_ack_cnt: 0,
            answers: Vec::new(),
            sticky: Vec::new(),
            last_snr: None,
            last_link_check: None,
            last_device_time: None,
            plan,
        }
    }

    pub fn config(&self) -> &MacConfig {
        &self.config
    }
    pub fn plan(&self) -> &Arc<RadioPlan> {
        &self.plan
    }
    pub fn dr(&self) -> u8 {
        self.dr
    }
    pub fn tx_power(&self) -> u8 {
        self.tx_power
    }
    pub fn nb_trans(&self) -> u8 {
        self.nb_trans
    }
    /// The mask of channels 0-15 (all a dynamic-channel device has).
    pub fn ch_mask(&self) -> u16 {
        self.ch_mask as u16
    }
    /// Indices of the enabled channels.
    pub fn enabled_channels(&self) -> Vec<u8> {
        (0..self.channels.len()).filter(|&i| self.ch_mask & (1u128 << i) != 0).map(|i| i as u8).collect()
    }
    pub fn channel(&self, index: usize) -> Option<UplinkChannel> {
        self.channels.get(index).copied().flatten()
    }
    /// RX1DROffset, RX2 data rate, RX2 frequency (Hz), RX1 delay (s).
    pub fn rx_params(&self) -> (u8, u8, u32, u8) {
        (self.rx1_dr_offset, self.rx2_dr, self.rx2_frequency, self.rx1_delay)
    }
    pub fn max_duty_cycle(&self) -> u8 {
        self.max_duty_cycle
    }
    pub fn adr_ack_cnt(&self) -> u32 {
        self.adr_ack_cnt
    }
    pub fn last_link_check(&self) -> Option<LinkCheckAns> {
        self.last_link_check
    }
    pub fn last_device_time(&self) -> Option<DeviceTimeAns> {
        self.last_device_time
    }

    /// Largest FOpts + FRMPayload at `dr` (RP002-1.0.4 N, no repeater) under the device's
    /// uplink dwell time; 0 for an unknown DR or one dwell time rules out.
    pub fn max_payload(&self, dr: u8) -> usize {
        self.plan.region.max_payload_size_for(dr, self.uplink_dwell).map_or(0, |m| m.n)
    }

    pub fn uplink_dwell_time(&self) -> bool {
        self.uplink_dwell
    }

    /// A new session from a join-accept (LoRaWAN 1.0.4 §6.2.5): everything back to the
    /// defaults, then the join-accept's RX settings and CFList.
    pub fn join(&mut self, rx1_dr_offset: u8, rx2_dr: u8, rx_delay: u8, cf_list: Option<&[u8; 16]>) {
        *self = DeviceMac::for_plan(self.config, self.plan.clone());
        self.rx1_dr_offset = rx1_dr_offset;
        self.rx2_dr = rx2_dr;
        self.rx1_delay = rx_delay.max(1);
        let Some(cf) = cf_list else { return };
        match (cf[15], self.plan.layout.is_fixed()) {
            // CFListType 0: five frequencies, 3 bytes each in units of 100 Hz, 0 = none, for
            // the channels after the default ones (RP002-1.0.4 §2.4.4 and alike).
            (0, false) => {
                let first = self.plan.region.default_uplink_channels().len();
                let (min_dr, max_dr) = self.plan.region.extra_channel_dr_range();
                let band = self.plan.band();
                for (i, f) in cf[..15].chunks(3).enumerate() {
                    let hz = u32::from_le_bytes([f[0], f[1], f[2], 0]) * 100;
                    let index = first + i;
                    if hz != 0 && band.contains(&hz) && index < self.channels.len() {
                        self.channels[index] = Some(UplinkChannel::new(hz, min_dr, max_dr));
                        self.ch_mask |= 1u128 << index;
                    }
                }
            }
            // CFListType 1: ChMask of channels 0-15, 16-31, … little-endian, 16 bits each, the
            // rest RFU (LoRaWAN 1.0.4 §4.2.6.1, RP002-1.0.4 §2.5.4 / §2.7.4 / §2.6.4).
            (1, true) => {
                let mut mask = 0u128;
                for (block, bytes) in cf[..14].chunks(2).enumerate() {
                    let bits = u16::from_le_bytes([bytes[0], bytes[1]]);
                    mask |= u128::from(bits) << (16 * block);
                }
                mask &= self.defined_mask();
                if mask != 0 {
                    self.ch_mask = mask;
                }
            }
            // A CFList the region does not define is ignored.
            _ => {}
        }
    }

    fn tx(&self, dr: u8, tx_power: u8, channel: usize) -> TxParams {
        let region = &self.plan.region;
        let frequency = self.channel(channel).map_or(0, |c| c.frequency);
        let modulation =
            region.data_rate(dr).map(|d| d.modulation).unwrap_or(Modulation::Lora { spreading_factor: 12, bandwidth: 125_000 });
        let power_offset_db = region.tx_power_offset(tx_power).unwrap_or(0);
        TxParams { dr, tx_power, channel: channel as u8, frequency, modulation, power_offset_db }
    }

    /// A random channel among those in `mask` that allow `dr`, if any.
    fn pick(&self, mask: u128, dr: u8, rng: &mut impl Rng) -> Option<usize> {
        let usable: Vec<usize> =
            (0..self.channels.len()).filter(|&i| mask & (1u128 << i) != 0 && self.channel(i).is_some_and(|c| c.allows(dr))).collect();
        (!usable.is_empty()).then(|| usable[rng.gen_range(0..usable.len())])
    }

    /// Where the join-request goes: one of the plan's channels (dynamic regions: the default
    /// ones, RP002-1.0.4 §2.x.2) that allows the initial DR.
    pub fn join_tx(&self, rng: &mut impl Rng) -> TxParams {
        let dr = self.config.initial_dr;
        let mask = self.plan.enabled_mask();
        let channel = self.pick(mask, dr, rng).or_else(|| self.pick(mask, self.lowest_dr(), rng)).unwrap_or(0);
        self.tx(dr, self.config.initial_tx_power, channel)
    }

    /// The slowest data rate the device may send at (AS923 under dwell time: DR2).
    fn lowest_dr(&self) -> u8 {
        (0..=15).find(|&dr| self.plan.is_uplink_dr(dr) && self.max_payload(dr) > 0).unwrap_or(0)
    }

    /// The SNR the network reported for the last uplink; DevStatusAns reports it as margin.
    pub fn set_link_snr(&mut self, snr: f32) {
        self.last_snr = Some(snr);
    }

    /// The MAC part of the next new uplink frame (not of a repetition): ADR bits, backoff and
    /// the answers to send. One-shot answers are consumed; sticky ones stay.
    pub fn next_uplink(&mut self) -> UplinkMac {
        let mut adr_ack_req = false;
        if self.config.adr {
            // LoRaWAN 1.0.4 §4.3.1.1 and Table 9: ADRACKReq from ADR_ACK_LIMIT uplinks without a
            // downlink on; one backoff step every ADR_ACK_DELAY uplinks after that.
            let cnt = self.adr_ack_cnt;
            if cnt >= ADR_ACK_LIMIT + ADR_ACK_DELAY && (cnt - ADR_ACK_LIMIT) % ADR_ACK_DELAY == 0 {
                self.backoff_step();
            }
            adr_ack_req = cnt >= ADR_ACK_LIMIT;
        }
        self.adr_ack_cnt = self.adr_ack_cnt.saturating_add(1);
        let mut commands = Vec::new();
        for a in self.answers.drain(..).chain(self.sticky.iter().copied()) {
            a.encode(&mut commands);
        }
        UplinkMac { adr: self.config.adr, adr_ack_req, commands, dr: self.dr, tx_power: self.tx_power, nb_trans: self.nb_trans }
    }

    /// Default power first, then one data rate lower per step, and at the lowest data rate one
    /// transmission per frame and the plan's channels back on (LoRaWAN 1.0.4 §4.3.1.1).
    fn backoff_step(&mut self) {
        if self.tx_power != 0 {
            self.tx_power = 0;
        } else if self.dr > self.lowest_dr() {
            self.dr -= 1;
        } else {
            self.nb_trans = 1;
            self.ch_mask |= self.plan.enabled_mask();
        }
    }

    /// A channel for the next transmission: a random enabled one that allows the current data
    /// rate, or one of the plan's channels if the mask left none.
    pub fn choose_channel(&self, rng: &mut impl Rng) -> TxParams {
        let channel = self
            .pick(self.ch_mask, self.dr, rng)
            .or_else(|| self.pick(self.plan.enabled_mask(), self.dr, rng))
            .or_else(|| self.pick(self.plan.enabled_mask(), self.lowest_dr(), rng))
            .unwrap_or(0);
        self.tx(self.dr, self.tx_power, channel)
    }

    /// The window in which a downlink sent on `radio` reaches a device whose last uplink was
    /// `up`, or why the device does not hear it: RX1 on the region's RX1 frequency for the
    /// uplink channel (or the DlChannelReq one) at the RX1 data rate for the uplink DR and
    /// RX1DROffset, RX2 on its frequency and data rate, and for Class C devices RX2 at any
    /// time. A join-accept (`join`) is heard with the default RX1DROffset 0 and default RX2.
    pub fn rx_window(&self, up: Option<&TxParams>, radio: &DownlinkRadio, join: bool) -> Result<RxWindow, WindowError> {
        let region = &self.plan.region;
        let dr = region.downlink_dr_for(&radio.modulation).ok_or(WindowError::UnknownDr { modulation: radio.modulation })?;
        let (offset, rx2_frequency, rx2_dr) = if join {
            (0, region.default_rx2_frequency(), region.default_rx2_dr())
        } else {
            (self.rx1_dr_offset, self.rx2_frequency, self.rx2_dr)
        };
        let on_rx2 = radio.frequency == rx2_frequency && dr == rx2_dr;
        if radio.immediate {
            return match (self.config.class_c && !join, on_rx2) {
                (true, true) => Ok(RxWindow::ClassC),
                (true, false) => Err(WindowError::Mismatch { frequency: radio.frequency, dr, rx1: None, rx2_frequency, rx2_dr }),
                (false, _) => Err(WindowError::NotClassC { frequency: radio.frequency, dr }),
            };
        }
        let up = up.ok_or(WindowError::NoUplink)?;
        let moved = if join { None } else { self.channel(usize::from(up.channel)).and_then(|c| c.rx1_frequency) };
        let rx1_frequency = moved.map(Ok).unwrap_or_else(|| region.rx1_frequency(up.frequency)).ok();
        let rx1 = rx1_frequency.zip(region.rx1_dr(up.dr, offset).ok());
        if rx1 == Some((radio.frequency, dr)) {
            Ok(RxWindow::Rx1)
        } else if on_rx2 {
            Ok(RxWindow::Rx2)
        } else {
            Err(WindowError::Mismatch { frequency: radio.frequency, dr, rx1, rx2_frequency, rx2_dr })
        }
    }

    /// A Class A downlink with a valid MIC arrived carrying `mac_commands` (FOpts or the
    /// decrypted FPort 0 payload, possibly empty). Resets ADR_ACK_CNT, ends the repetition of
    /// sticky answers and handles the commands in order.
    pub fn downlink_received(&mut self, mac_commands: &[u8]) -> MacReport {
        use DownlinkMacCommand as D;
        self.adr_ack_cnt = 0;
        self.sticky.clear();
        let (commands, error) = parse_downlink_commands(mac_commands);
        let before = self.answers.len();
        let mut i = 0;
        while i < commands.len() {
            match commands[i] {
                D::LinkAdrReq(_) => {
                    // A contiguous run of LinkADRReq is one atomic block with one answer per
                    // command, all alike (LoRaWAN 1.0.4 §5.2).
                    let block: Vec<LinkAdrReq> =
                        commands[i..].iter().map_while(|c| if let D::LinkAdrReq(r) = c { Some(*r) } else { None }).collect();
                    i += block.len();
                    let ans = self.link_adr(&block);
                    self.answers.extend(block.iter().map(|_| UplinkMacCommand::LinkAdrAns(ans)));
                    continue;
                }
                D::DutyCycleReq(r) => {
                    self.max_duty_cycle = r.max_duty_cycle;
                    self.answers.push(UplinkMacCommand::DutyCycleAns);
                }
                D::RxParamSetupReq(r) => {
                    let ans = self.rx_param_setup(r);
                    self.sticky.push(UplinkMacCommand::RxParamSetupAns(ans));
                }
                D::DevStatusReq => {
                    let ans = DevStatusAns { battery: self.config.battery, margin: margin(self.last_snr) };
                    self.answers.push(UplinkMacCommand::DevStatusAns(ans));
                }
                // Fixed-channel regions do not implement NewChannelReq or DlChannelReq.
                D::NewChannelReq(_) | D::DlChannelReq(_) if self.plan.layout.is_fixed() => {}
                D::NewChannelReq(r) => {
                    let ans = self.new_channel(r);
                    self.answers.push(UplinkMacCommand::NewChannelAns(ans));
                }
                D::RxTimingSetupReq(r) => {
                    self.rx1_delay = r.seconds();
                    self.sticky.push(UplinkMacCommand::RxTimingSetupAns);
                }
                D::DlChannelReq(r) => {
                    let ans = self.dl_channel(r);
                    self.sticky.push(UplinkMacCommand::DlChannelAns(ans));
                }
                D::TxParamSetupReq(r) if self.plan.region.implements_tx_param_setup() => {
                    self.uplink_dwell = r.uplink_dwell_time;
                    self.answers.push(UplinkMacCommand::TxParamSetupAns);
                }
                D::TxParamSetupReq(_) => {}
                D::LinkCheckAns(a) => self.last_link_check = Some(a),
                D::DeviceTimeAns(a) => self.last_device_time = Some(a),
            }
            i += 1;
        }
        let mut answers = self.answers[before..].to_vec();
        answers.extend(self.sticky.iter().copied());
        MacReport { commands, error, answers }
    }

    fn defined_mask(&self) -> u128 {
        self.channels.iter().enumerate().filter(|(_, c)| c.is_some()).fold(0, |m, (i, _)| m | (1u128 << i))
    }

    /// The mask after one LinkADRReq's ChMaskCntl/ChMask, or `None` for a ChMaskCntl the
    /// region does not define (RP002-1.0.4 LinkAdrReq of each region).
    fn apply_ch_mask(&self, mask: u128, cntl: u8, bits: u16) -> Option<u128> {
        let defined = self.defined_mask();
        let bits = u128::from(bits);
        let block = |mask: u128, k: u8| (mask & !(0xffffu128 << (16 * k))) | (bits << (16 * k));
        match self.plan.layout {
            MaskLayout::Dynamic => match cntl {
                0 => Some(bits),
                6 => Some(defined),
                _ => None,
            },
            // US915/AU915 (RP002-1.0.4 §2.5.5, §2.7.5): 0-3 the 125 kHz blocks, 4 channels
            // 64-71, 5 a bank of eight 125 kHz channels and its 500 kHz channel per bit, 6/7 all
            // 125 kHz channels on/off with the mask for 64-71.
            MaskLayout::Fixed72 => {
                let narrow = (1u128 << 64) - 1;
                let wide = (bits & 0xff) << 64;
                match cntl {
                    0..=3 => Some(block(mask, cntl)),
                    4 => Some((mask & narrow) | wide),
                    5 => Some((0..8).filter(|b| bits & (1 << b) != 0).fold(0, |m, b| m | (0xffu128 << (8 * b)) | (1u128 << (64 + b)))),
                    6 => Some(narrow | wide),
                    7 => Some(wide),
                    _ => None,
                }
            }
            // CN470 (RP002-1.0.4 §2.6.5): one 16-channel block per ChMaskCntl, 6 = all on.
            MaskLayout::Fixed(n) => match cntl {
                6 => Some(defined),
                k if u16::from(k) * 16 < u16::from(n) => Some(block(mask, k)),
                _ => None,
            },
        }
    }

    /// LoRaWAN 1.0.4 §5.2 with RP002-1.0.4 §2.4.5: the channel masks of the block apply in
    /// order, DataRate, TXPower and NbTrans come from the last command; nothing changes unless
    /// all three bits are ACK.
    fn link_adr(&mut self, block: &[LinkAdrReq]) -> LinkAdrAns {
        let defined = self.defined_mask();
        let mut mask = self.ch_mask;
        let mut mask_ok = true;
        for r in block {
            match self.apply_ch_mask(mask, r.ch_mask_cntl, r.ch_mask) {
                Some(m) => {
                    // Enabling a channel that does not exist refuses the whole block.
                    mask_ok &= m & !defined == 0;
                    mask = m;
                }
                None => mask_ok = false,
            }
        }
        mask_ok &= mask != 0;
        let Some(last) = block.last() else {
            return LinkAdrAns { power_ack: false, dr_ack: false, ch_mask_ack: false };
        };
        let usable_mask = if mask_ok { mask } else { self.ch_mask };
        let dr = if last.dr == KEEP { self.dr } else { last.dr };
        let tx_power = if last.tx_power == KEEP { self.tx_power } else { last.tx_power };
        let dr_ok = (last.dr == KEEP || self.config.adr)
            && dr <= self.config.max_dr
            && self.plan.is_uplink_dr(dr)
            && self.max_payload(dr) > 0
            && self.channels.iter().enumerate().any(|(i, c)| usable_mask & (1u128 << i) != 0 && c.is_some_and(|c| c.allows(dr)));
        let power_ok = (last.tx_power == KEEP || self.config.adr) && tx_power <= self.plan.region.max_tx_power_index();
        let ans = LinkAdrAns { power_ack: power_ok, dr_ack: dr_ok, ch_mask_ack: mask_ok };
        if ans.accepted() {
            self.dr = dr;
            self.tx_power = tx_power;
            // NbTrans 0 means the default, 1 (LoRaWAN 1.0.4 §5.2).
            self.nb_trans = last.nb_trans.max(1);
            self.ch_mask = mask;
        } else if !self.config.adr && mask_ok {
            // A device without ADR still follows the channel plan (Semtech, "Implementing
            // Adaptive Data Rate", processing LinkADRReq without ADR).
            self.ch_mask = mask;
        }
        ans
    }

    /// LoRaWAN 1.0.4 §5.4: all three fields valid or nothing changes. The RX2 data rate must
    /// be a downlink rate the device can receive: one it could send with too, or a
    /// downlink-only one (US915 DR8-13), which every device of the region receives.
    fn rx_param_setup(&mut self, r: RxParamSetupReq) -> RxParamSetupAns {
        let rx2 = self.plan.region.data_rate(r.rx2_dr);
        let ans = RxParamSetupAns {
            rx1_dr_offset_ack: r.rx1_dr_offset <= self.plan.region.max_rx1_dr_offset(),
            rx2_dr_ack: rx2.is_some_and(|d| d.downlink && (!d.uplink || r.rx2_dr <= self.config.max_dr)),
            channel_ack: self.plan.band().contains(&r.frequency),
        };
        if ans.accepted() {
            self.rx1_dr_offset = r.rx1_dr_offset;
            self.rx2_dr = r.rx2_dr;
            self.rx2_frequency = r.frequency;
        }
        ans
    }

    /// LoRaWAN 1.0.4 §5.6: the region's default channels (EU868 0..=2, RP002-1.0.4 §2.4.2)
    /// cannot be changed; frequency 0 removes a channel.
    fn new_channel(&mut self, r: NewChannelReq) -> NewChannelAns {
        let i = usize::from(r.ch_index);
        let changeable = (self.plan.region.default_uplink_channels().len()..self.channels.len()).contains(&i);
        let ans = if r.frequency == 0 {
            NewChannelAns { dr_range_ok: changeable, channel_freq_ok: changeable }
        } else {
            NewChannelAns {
                dr_range_ok: changeable && r.min_dr <= r.max_dr && r.max_dr <= self.plan.max_uplink_dr(),
                channel_freq_ok: changeable && self.plan.band().contains(&r.frequency),
            }
        };
        if ans.dr_range_ok && ans.channel_freq_ok {
            if r.frequency == 0 {
                self.channels[i] = None;
                self.ch_mask &= !(1u128 << i);
            } else {
                self.channels[i] = Some(UplinkChannel::new(r.frequency, r.min_dr, r.max_dr));
                self.ch_mask |= 1u128 << i;
            }
        }
        ans
    }

    /// LoRaWAN 1.0.4 §5.6: moves the RX1 frequency of an existing uplink channel.
    fn dl_channel(&mut self, r: DlChannelReq) -> DlChannelAns {
        let band = self.plan.band();
        let slot = self.channels.get_mut(usize::from(r.ch_index)).and_then(Option::as_mut);
        let ans = DlChannelAns { uplink_freq_exists: slot.is_some(), channel_freq_ok: band.contains(&r.frequency) };
        if let (Some(c), true) = (slot, ans.channel_freq_ok) {
            c.rx1_frequency = Some(r.frequency);
        }
        ans
    }
}

/// DevStatusAns margin: the SNR rounded to whole dB, clamped to the 6-bit signed range
/// −32..=31 (LoRaWAN 1.0.4 §5.5); 0 before any uplink was measured.
pub fn margin(snr: Option<f32>) -> i8 {
    snr.map_or(0, |s| s.round().clamp(-32.0, 31.0) as i8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loraflow_network_server::mac::{encode_all, parse_uplink_commands, DutyCycleReq, RxTimingSetupReq, TxParamSetupReq};
    use rand::SeedableRng;
    use DownlinkMacCommand as D;
    use UplinkMacCommand as U;

    /// EU868 CFList with 867.1, 867.3, 867.5, 867.7, 867.9 MHz (the server's default).
    fn cf_list() -> [u8; 16] {
        let mut cf = [0u8; 16];
        for (i, mhz10) in [8671u32, 8673, 8675, 8677, 8679].iter().enumerate() {
            cf[i * 3..i * 3 + 3].copy_from_slice(&(mhz10 * 1000).to_le_bytes()[..3]);
        }
        cf
    }

    fn device(config: MacConfig) -> DeviceMac {
        let mut d = DeviceMac::new(config);
        d.join(0, 0, 1, Some(&cf_list()));
        d
    }

    fn adr_device() -> DeviceMac {
        device(MacConfig { adr: true, initial_dr: 0, ..MacConfig::default() })
    }

    fn down(cmds: &[DownlinkMacCommand]) -> Vec<u8> {
        encode_all(cmds)
    }

    fn sent(d: &mut DeviceMac) -> Vec<UplinkMacCommand> {
        let (cmds, err) = parse_uplink_commands(&d.next_uplink().commands);
        assert_eq!(err, None);
        cmds
    }

    fn req(dr: u8, tx_power: u8, ch_mask: u16, ch_mask_cntl: u8, nb_trans: u8) -> LinkAdrReq {
        LinkAdrReq { dr, tx_power, ch_mask, ch_mask_cntl, nb_trans }
    }

    fn ans(bits: u8) -> LinkAdrAns {
        LinkAdrAns::decode(&[bits])
    }

    /// (DR, TXPower, NbTrans, channel mask) of a device.
    type Radio = (u8, u8, u8, u16);

    #[test]
    fn the_join_accept_cf_list_adds_channels_three_to_seven() {
        let d = adr_device();
        assert_eq!(d.ch_mask(), 0x00ff);
        assert_eq!(d.channel(3).map(|c| c.frequency), Some(867_100_000));
        assert_eq!(d.channel(7).map(|c| c.frequency), Some(867_900_000));
        assert_eq!(d.channel(8), None);
        let bare = device(MacConfig::default());
        let mut no_cf = DeviceMac::new(MacConfig::default());
        no_cf.join(0, 0, 1, None);
        assert_eq!((bare.ch_mask(), no_cf.ch_mask()), (0x00ff, 0x0007));
    }

    #[test]
    fn link_adr_req_answers_each_field_and_applies_only_when_all_are_ack() {
        // (request, expected status bits power|dr|mask, expected (dr, power, nb_trans, mask) after)
        let start = (0, 0, 1, 0x00ff);
        let table: [(LinkAdrReq, u8, Radio); 13] = [
            (req(5, 2, 0x00ff, 0, 1), 0b111, (5, 2, 1, 0x00ff)),
            (req(3, 7, 0x0007, 0, 3), 0b111, (3, 7, 3, 0x0007)),
            (req(6, 2, 0x00ff, 0, 1), 0b101, start),  // DR6 is above the device's DR5
            (req(12, 2, 0x00ff, 0, 1), 0b101, start), // RFU data rate
            (req(KEEP, 2, 0x00ff, 0, 1), 0b111, (0, 2, 1, 0x00ff)),
            (req(5, 8, 0x00ff, 0, 1), 0b011, start), // TXPower 8 is RFU in EU868
            (req(5, KEEP, 0x00ff, 0, 2), 0b111, (5, 0, 2, 0x00ff)),
            (req(5, 1, 0x0000, 0, 1), 0b110, start),             // no channel left
            (req(5, 1, 0x0401, 0, 1), 0b110, start),             // channel 10 does not exist
            (req(5, 1, 0x0000, 6, 1), 0b111, (5, 1, 1, 0x00ff)), // ChMaskCntl 6: all channels on
            (req(5, 1, 0x00ff, 3, 1), 0b110, start),             // ChMaskCntl 3 is RFU
            (req(4, 1, 0x0018, 0, 0), 0b111, (4, 1, 1, 0x0018)), // NbTrans 0 means 1
            (req(5, 1, 0x00ff, 0, 15), 0b111, (5, 1, 15, 0x00ff)),
        ];
        for (r, bits, after) in table {
            let mut d = adr_device();
            let report = d.downlink_received(&down(&[D::LinkAdrReq(r)]));
            assert_eq!(report.answers, vec![U::LinkAdrAns(ans(bits))], "{r:?}");
            assert_eq!((d.dr(), d.tx_power(), d.nb_trans(), d.ch_mask()), after, "{r:?}");
            assert_eq!(sent(&mut d), vec![U::LinkAdrAns(ans(bits))], "{r:?}");
        }
    }

    #[test]
    fn a_data_rate_no_enabled_channel_allows_is_refused() {
        let mut d = adr_device();
        d.downlink_received(&down(&[D::NewChannelReq(NewChannelReq { ch_index: 8, frequency: 868_800_000, min_dr: 0, max_dr: 3 })]));
        let report = d.downlink_received(&down(&[D::LinkAdrReq(req(5, 0, 0x0100, 0, 1))]));
        assert_eq!(report.answers, vec![U::LinkAdrAns(ans(0b101))]);
        let report = d.downlink_received(&down(&[D::LinkAdrReq(req(3, 0, 0x0100, 0, 1))]));
        assert_eq!(report.answers, vec![U::LinkAdrAns(ans(0b111))]);
        assert_eq!((d.dr(), d.ch_mask()), (3, 0x0100));
    }

    #[test]
    fn a_device_with_dr7_support_accepts_dr6_and_dr7() {
        let mut d = device(MacConfig { adr: true, max_dr: 7, initial_dr: 0, ..MacConfig::default() });
        // The default channels allow DR0..=5 only: DR7 needs a channel that allows it.
        let r = d.downlink_received(&down(&[D::LinkAdrReq(req(7, 0, 0x00ff, 0, 1))]));
        assert_eq!(r.answers, vec![U::LinkAdrAns(ans(0b101))]);
        d.downlink_received(&down(&[D::NewChannelReq(NewChannelReq { ch_index: 8, frequency: 868_800_000, min_dr: 7, max_dr: 7 })]));
        let r = d.downlink_received(&down(&[D::LinkAdrReq(req(7, 0, 0x0100, 0, 1))]));
        assert_eq!(r.answers, vec![U::LinkAdrAns(ans(0b111))]);
        assert_eq!(d.dr(), 7);
    }

    #[test]
    fn a_block_of_link_adr_reqs_is_applied_atomically_with_one_answer_each() {
        // (block, status bits of every answer, (dr, power, nb_trans, mask) after)
        let table: [(Vec<LinkAdrReq>, u8, Radio); 4] = [
            // Masks in order, DataRate/TXPower/NbTrans from the last command only.
            (vec![req(9, 9, 0x0000, 6, 0), req(5, 3, 0x0006, 0, 2)], 0b111, (5, 3, 2, 0x0006)),
            (vec![req(5, 3, 0x0006, 0, 2), req(2, 1, 0x0000, 6, 1)], 0b111, (2, 1, 1, 0x00ff)),
            // One bad mask refuses the whole block, even if the last one is fine.
            (vec![req(5, 3, 0x0006, 2, 2), req(5, 3, 0x0006, 0, 2)], 0b110, (0, 0, 1, 0x00ff)),
            // A bad data rate in the last command refuses the masks of the earlier ones too.
            (vec![req(5, 3, 0x0006, 0, 2), req(6, 3, 0x0006, 0, 2)], 0b101, (0, 0, 1, 0x00ff)),
        ];
        for (block, bits, after) in table {
            let mut d = adr_device();
            let cmds: Vec<DownlinkMacCommand> = block.iter().map(|r| D::LinkAdrReq(*r)).collect();
            let report = d.downlink_received(&down(&cmds));
            assert_eq!(report.answers, vec![U::LinkAdrAns(ans(bits)); block.len()], "{block:?}");
            assert_eq!((d.dr(), d.tx_power(), d.nb_trans(), d.ch_mask()), after, "{block:?}");
        }
    }

    #[test]
    fn link_adr_reqs_separated_by_another_command_are_two_blocks() {
        let mut d = adr_device();
        let cmds = [D::LinkAdrReq(req(5, 3, 0x0006, 2, 2)), D::DevStatusReq, D::LinkAdrReq(req(4, 1, 0x0003, 0, 1))];
        let report = d.downlink_received(&down(&cmds));
        assert_eq!(report.answers[0], U::LinkAdrAns(ans(0b110)));
        assert!(matches!(report.answers[1], U::DevStatusAns(_)));
        assert_eq!(report.answers[2], U::LinkAdrAns(ans(0b111)));
        assert_eq!((d.dr(), d.tx_power(), d.ch_mask()), (4, 1, 0x0003));
    }

    #[test]
    fn a_device_without_adr_follows_the_channel_mask_but_not_rate_or_power() {
        let mut d = device(MacConfig::default());
        let r = d.downlink_received(&down(&[D::LinkAdrReq(req(3, 2, 0x0003, 0, 1))]));
        assert_eq!(r.answers, vec![U::LinkAdrAns(ans(0b001))]);
        assert_eq!((d.dr(), d.tx_power(), d.ch_mask()), (5, 0, 0x0003));
        let r = d.downlink_received(&down(&[D::LinkAdrReq(req(KEEP, KEEP, 0x0007, 0, 2))]));
        assert_eq!(r.answers, vec![U::LinkAdrAns(ans(0b111))]);
        assert_eq!((d.dr(), d.nb_trans(), d.ch_mask()), (5, 2, 0x0007));
    }

    /// (uplink number since the last downlink, ADRACKReq, DR, TXPower, NbTrans, mask)
    type Step = (u32, bool, u8, u8, u8, u16);

    #[test]
    fn adr_backoff_sets_adr_ack_req_at_64_and_steps_every_32_uplinks() {
        let mut d = adr_device();
        d.downlink_received(&down(&[D::LinkAdrReq(req(5, 3, 0x0018, 0, 2))]));
        let table: [Step; 14] = [
            (0, false, 5, 3, 2, 0x0018),
            (63, false, 5, 3, 2, 0x0018),
            (64, true, 5, 3, 2, 0x0018),
            (95, true, 5, 3, 2, 0x0018),
            (96, true, 5, 0, 2, 0x0018), // default (maximum) power first
            (127, true, 5, 0, 2, 0x0018),
            (128, true, 4, 0, 2, 0x0018), // then one data rate lower per ADR_ACK_DELAY
            (160, true, 3, 0, 2, 0x0018),
            (192, true, 2, 0, 2, 0x0018),
            (224, true, 1, 0, 2, 0x0018),
            (256, true, 0, 0, 2, 0x0018),
            (287, true, 0, 0, 2, 0x0018),
            (288, true, 0, 0, 1, 0x001f), // at DR0: NbTrans 1 and the default channels back
            (400, true, 0, 0, 1, 0x001f),
        ];
        let mut n = 0;
        for (at, adr_ack_req, dr, power, nb_trans, mask) in table {
            let mut up = d.next_uplink();
            while n < at {
                n += 1;
                up = d.next_uplink();
            }
            n += 1;
            assert!(up.adr, "uplink {at}");
            assert_eq!(
                (up.adr_ack_req, up.dr, up.tx_power, up.nb_trans, d.ch_mask()),
                (adr_ack_req, dr, power, nb_trans, mask),
                "uplink {at}"
            );
        }
    }

    #[test]
    fn any_downlink_resets_the_adr_ack_counter() {
        let mut d = adr_device();
        for _ in 0..70 {
            d.next_uplink();
        }
        assert!(d.next_uplink().adr_ack_req);
        d.downlink_received(&[]);
        assert_eq!(d.adr_ack_cnt(), 0);
        let up = d.next_uplink();
        assert!(!up.adr_ack_req);
        assert_eq!(d.adr_ack_cnt(), 1);
    }

    #[test]
    fn without_adr_there_is_no_adr_ack_req_and_no_backoff() {
        let mut d = device(MacConfig { initial_tx_power: 3, ..MacConfig::default() });
        for _ in 0..500 {
            let up = d.next_uplink();
            assert_eq!((up.adr, up.adr_ack_req, up.dr, up.tx_power), (false, false, 5, 3));
        }
    }

    #[test]
    fn rx_param_rx_timing_and_dl_channel_answers_repeat_until_a_downlink() {
        let mut d = adr_device();
        let cmds = [
            D::RxParamSetupReq(RxParamSetupReq { rx1_dr_offset: 2, rx2_dr: 3, frequency: 869_525_000 }),
            D::RxTimingSetupReq(RxTimingSetupReq { delay: 3 }),
            D::DlChannelReq(DlChannelReq { ch_index: 3, frequency: 867_300_000 }),
            D::DevStatusReq,
        ];
        d.set_link_snr(4.0);
        d.downlink_received(&down(&cmds));
        let sticky = vec![
            U::RxParamSetupAns(RxParamSetupAns { rx1_dr_offset_ack: true, rx2_dr_ack: true, channel_ack: true }),
            U::RxTimingSetupAns,
            U::DlChannelAns(DlChannelAns { uplink_freq_exists: true, channel_freq_ok: true }),
        ];
        let mut first = vec![U::DevStatusAns(DevStatusAns { battery: 254, margin: 4 })];
        first.extend(sticky.iter().copied());
        assert_eq!(sent(&mut d), first, "one-shot answers once, then the sticky ones");
        assert_eq!(sent(&mut d), sticky);
        assert_eq!(sent(&mut d), sticky);
        assert_eq!(d.rx_params(), (2, 3, 869_525_000, 3));
        assert_eq!(d.channel(3).and_then(|c| c.rx1_frequency), Some(867_300_000));
        d.downlink_received(&[]);
        assert_eq!(sent(&mut d), vec![]);
    }

    #[test]
    fn invalid_rx_param_setup_is_nacked_per_field_and_not_applied() {
        // (request, expected ACK bits rx1 offset | rx2 dr | channel)
        let table = [
            (RxParamSetupReq { rx1_dr_offset: 5, rx2_dr: 5, frequency: 869_525_000 }, 0b111),
            (RxParamSetupReq { rx1_dr_offset: 6, rx2_dr: 0, frequency: 869_525_000 }, 0b011),
            (RxParamSetupReq { rx1_dr_offset: 0, rx2_dr: 6, frequency: 869_525_000 }, 0b101),
            (RxParamSetupReq { rx1_dr_offset: 0, rx2_dr: 0, frequency: 915_000_000 }, 0b110),
        ];
        for (r, bits) in table {
            let mut d = adr_device();
            let report = d.downlink_received(&down(&[D::RxParamSetupReq(r)]));
            assert_eq!(report.answers, vec![U::RxParamSetupAns(RxParamSetupAns::decode(&[bits]))], "{r:?}");
            let want = if bits == 0b111 { (r.rx1_dr_offset, r.rx2_dr, r.frequency, 1) } else { (0, 0, 869_525_000, 1) };
            assert_eq!(d.rx_params(), want, "{r:?}");
        }
    }

    #[test]
    fn new_channel_req_adds_changes_and_removes_channels_but_not_the_default_ones() {
        // (request, expected ACK bits dr range | frequency, channel afterwards)
        let nc = |ch_index, frequency, min_dr, max_dr| NewChannelReq { ch_index, frequency, min_dr, max_dr };
        let table = [
            (nc(8, 868_800_000, 0, 5), 0b11, Some(868_800_000)),
            (nc(3, 868_900_000, 0, 5), 0b11, Some(868_900_000)),
            (nc(3, 0, 0, 0), 0b11, None),
            (nc(1, 868_900_000, 0, 5), 0b00, Some(868_300_000)),
            (nc(8, 902_300_000, 0, 5), 0b10, None),
            (nc(8, 868_800_000, 5, 2), 0b01, None),
            (nc(8, 868_800_000, 0, 9), 0b01, None),
            (nc(16, 868_800_000, 0, 5), 0b00, None),
        ];
        for (r, bits, after) in table {
            let mut d = adr_device();
            let report = d.downlink_received(&down(&[D::NewChannelReq(r)]));
            assert_eq!(report.answers, vec![U::NewChannelAns(NewChannelAns::decode(&[bits]))], "{r:?}");
            let i = usize::from(r.ch_index);
            assert_eq!(d.channel(i).map(|c| c.frequency), after, "{r:?}");
            if i < 16 {
                assert_eq!(d.ch_mask() & (1 << i) != 0, after.is_some(), "mask bit follows the channel: {r:?}");
            }
        }
    }

    #[test]
    fn dl_channel_req_needs_an_existing_channel_and_a_frequency_in_the_band() {
        let table = [
            (DlChannelReq { ch_index: 0, frequency: 869_100_000 }, 0b11),
            (DlChannelReq { ch_index: 9, frequency: 869_100_000 }, 0b01),
            (DlChannelReq { ch_index: 2, frequency: 920_000_000 }, 0b10),
        ];
        for (r, bits) in table {
            let mut d = adr_device();
            let report = d.downlink_received(&down(&[D::DlChannelReq(r)]));
            assert_eq!(report.answers, vec![U::DlChannelAns(DlChannelAns::decode(&[bits]))], "{r:?}");
            let moved = d.channel(usize::from(r.ch_index)).and_then(|c| c.rx1_frequency);
            assert_eq!(moved, (bits == 0b11).then_some(r.frequency), "{r:?}");
        }
    }

    #[test]
    fn dev_status_margin_is_the_rounded_snr_clamped_to_six_bits() {
        let table =
            [(None, 0), (Some(5.4), 5), (Some(-5.6), -6), (Some(31.4), 31), (Some(40.0), 31), (Some(-32.0), -32), (Some(-45.0), -32)];
        for (snr, want) in table {
            assert_eq!(margin(snr), want, "{snr:?}");
            let mut d = device(MacConfig { battery: 77, ..MacConfig::default() });
            if let Some(s) = snr {
                d.set_link_snr(s);
            }
            d.downlink_received(&down(&[D::DevStatusReq]));
            let (cmds, _) = parse_uplink_commands(&d.next_uplink().commands);
            assert_eq!(cmds, vec![U::DevStatusAns(DevStatusAns { battery: 77, margin: want })], "{snr:?}");
        }
    }

    #[test]
    fn duty_cycle_link_check_device_time_and_tx_param_setup() {
        let mut d = adr_device();
        let cmds = [
            D::DutyCycleReq(DutyCycleReq { max_duty_cycle: 7 }),
            D::LinkCheckAns(LinkCheckAns { margin: 20, gw_cnt: 2 }),
            D::DeviceTimeAns(DeviceTimeAns { seconds: 1_400_000_000, fraction: 3 }),
            D::TxParamSetupReq(TxParamSetupReq { downlink_dwell_time: true, uplink_dwell_time: true, max_eirp_index: 3 }),
        ];
        let report = d.downlink_received(&down(&cmds));
        assert_eq!(report.commands.len(), 4);
        assert_eq!(report.answers, vec![U::DutyCycleAns], "answers only what an EU868 device implements");
        assert_eq!(d.max_duty_cycle(), 7);
        assert_eq!(d.last_link_check(), Some(LinkCheckAns { margin: 20, gw_cnt: 2 }));
        assert_eq!(d.last_device_time().map(|t| t.seconds), Some(1_400_000_000));
    }

    #[test]
    fn an_unknown_command_ends_processing_and_keeps_what_came_before() {
        let mut d = adr_device();
        let mut bytes = down(&[D::DevStatusReq]);
        bytes.extend_from_slice(&[0x7f, 0x06]);
        let report = d.downlink_received(&bytes);
        assert_eq!(report.commands, vec![D::DevStatusReq]);
        assert_eq!(report.error, Some(MacParseError::UnknownCid { cid: 0x7f, offset: 1 }));
        assert_eq!(report.answers.len(), 1);
    }

    #[test]
    fn answers_ride_in_fopts_when_they_fit_else_alone_on_fport_0() {
        // (answer bytes, application payload bytes, DR, FOpts?)
        let table = [
            (0, 4, 5, true),
            (15, 4, 5, true),
            (16, 4, 5, false),
            (15, 36, 0, true), // 15 + 36 = 51, the DR0 limit
            (15, 37, 0, false),
            (3, 242, 5, false),
            (3, 239, 5, true),
            (0, 300, 5, true), // nothing to place: the payload check is the builder's
        ];
        for (n, app, dr, fopts) in table {
            let cmds = vec![0x06; n];
            let want = if fopts { Placement::FOpts(cmds.clone()) } else { Placement::Port0(cmds.clone()) };
            assert_eq!(place(cmds, app, super::super::eu868::max_frm_payload(dr)), want, "{n} answer bytes, {app} payload bytes, DR{dr}");
        }
    }

    #[test]
    fn channels_are_chosen_among_enabled_ones_that_allow_the_data_rate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut d = adr_device();
        d.downlink_received(&down(&[
            D::NewChannelReq(NewChannelReq { ch_index: 8, frequency: 868_800_000, min_dr: 3, max_dr: 5 }),
            D::LinkAdrReq(req(4, 0, 0x0118, 0, 1)),
        ]));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let tx = d.choose_channel(&mut rng);
            assert_eq!(tx.dr, 4);
            seen.insert((tx.channel, tx.frequency));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![(3, 867_100_000), (4, 867_300_000), (8, 868_800_000)]);
        let j = d.join_tx(&mut rng);
        assert!(j.channel < 3 && j.dr == 0, "join-requests use the default channels at the initial DR: {j:?}");
    }

    // Other regions, with the server's region tables (US915 from RP002-1.0.4 §2.5).

    fn us915(config: MacConfig) -> DeviceMac {
        DeviceMac::for_plan(config, Arc::new(RadioPlan::from_id("us915_1").unwrap()))
    }

    fn us915_adr() -> DeviceMac {
        us915(MacConfig { adr: true, max_dr: 4, initial_dr: 0, ..MacConfig::default() })
    }

    const SUB_BAND_2: [u8; 9] = [8, 9, 10, 11, 12, 13, 14, 15, 65];

    /// CFList type 1 for channels 8-15 and 65 (LoRaWAN 1.0.4 §4.2.6.1): ChMask0 = 0xff00,
    /// ChMask1-3 = 0, ChMask4 = bit 1, RFU, CFListType 1.
    const CF_LIST_SUB_BAND_2: [u8; 16] = [0x00, 0xff, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0, 0, 0, 0, 0, 1];

    fn lora(spreading_factor: u8, bandwidth: u32) -> Modulation {
        Modulation::Lora { spreading_factor, bandwidth }
    }

    #[test]
    fn a_type_1_cf_list_enables_exactly_its_channels() {
        // Before the join: the plan's sub-band. A type-1 CFList for sub-band 1 moves it there.
        let mut d = us915_adr();
        assert_eq!(d.enabled_channels(), SUB_BAND_2);
        let mut cf = [0u8; 16];
        cf[0] = 0xff;
        cf[8] = 0x01;
        cf[15] = 1;
        d.join(0, 8, 1, Some(&cf));
        assert_eq!(d.enabled_channels(), [0, 1, 2, 3, 4, 5, 6, 7, 64]);
        d.join(0, 8, 1, Some(&CF_LIST_SUB_BAND_2));
        assert_eq!(d.enabled_channels(), SUB_BAND_2);
        // The server encodes sub-band 2 the same way.
        assert_eq!(d.plan().region.cf_list(&[], &SUB_BAND_2), Some(CF_LIST_SUB_BAND_2));
        // A type-0 CFList means nothing to a fixed-channel device, nor type 1 to an EU868 one.
        let mut d = us915_adr();
        d.join(0, 8, 1, Some(&cf_list()));
        assert_eq!(d.enabled_channels(), SUB_BAND_2);
        let mut d = DeviceMac::new(MacConfig::default());
        d.join(0, 0, 1, Some(&CF_LIST_SUB_BAND_2));
        assert_eq!(d.enabled_channels(), [0, 1, 2]);
    }

    #[test]
    fn ch_mask_cntl_7_then_0_gives_channels_8_to_15_and_65() {
        let mut d = us915_adr();
        d.join(0, 8, 1, None);
        let block = [D::LinkAdrReq(req(3, 5, 0x0002, 7, 1)), D::LinkAdrReq(req(3, 5, 0xff00, 0, 1))];
        d.downlink_received(&down(&[D::LinkAdrReq(req(3, 0, 0, 6, 1))])); // all 125 kHz on first
        assert_eq!(d.enabled_channels().len(), 64);
        let report = d.downlink_received(&down(&block));
        assert_eq!(report.answers, vec![U::LinkAdrAns(ans(0b111)); 2]);
        assert_eq!((d.dr(), d.tx_power(), d.enabled_channels()), (3, 5, SUB_BAND_2.to_vec()));
    }

    #[test]
    fn the_servers_ch_mask_blocks_confine_a_device_to_every_sub_band() {
        for index in 0..8u8 {
            let want: Vec<u8> = (8 * index..8 * index + 8).chain([64 + index]).collect();
            let mut d = us915_adr();
            let blocks = d.plan().region.ch_mask_blocks(&want);
            let cmds: Vec<DownlinkMacCommand> = blocks.iter().map(|b| D::LinkAdrReq(req(2, 1, b.mask, b.cntl, 1))).collect();
            let report = d.downlink_received(&down(&cmds));
            assert!(report.answers.iter().all(|a| *a == U::LinkAdrAns(ans(0b111))), "sub-band {}: {blocks:?}", index + 1);
            assert_eq!(d.enabled_channels(), want, "sub-band {}: {blocks:?}", index + 1);
        }
    }

    #[test]
    fn every_ch_mask_cntl_of_a_72_channel_plan() {
        // (ChMaskCntl, ChMask, enabled channels after, from sub-band 2)
        let table: [(u8, u16, Vec<u8>); 6] = [
            (1, 0x000f, (8..16).chain(16..20).chain([65]).collect()),
            (4, 0x0081, (8..16).chain([64, 71]).collect()),
            (5, 0x0005, (0..8).chain(16..24).chain([64, 66]).collect()),
            (6, 0x0000, (0..64).collect()),
            (7, 0x0010, vec![68]),
            (3, 0x8000, (8..16).chain([63, 65]).collect()),
        ];
        for (cntl, mask, want) in table {
            let mut d = us915_adr();
            // DR4 only runs on the 500 kHz channels; KEEP keeps DR0, which none of them allows.
            let r = req(KEEP, KEEP, mask, cntl, 1);
            let report = d.downlink_received(&down(&[D::LinkAdrReq(r)]));
            let dr_ok = want.iter().any(|&c| c < 64);
            assert_eq!(report.answers, vec![U::LinkAdrAns(LinkAdrAns { power_ack: true, dr_ack: dr_ok, ch_mask_ack: true })], "{r:?}");
            if dr_ok {
                assert_eq!(d.enabled_channels(), want, "{r:?}");
            }
        }
        // All channels off is refused.
        let mut d = us915_adr();
        let report = d.downlink_received(&down(&[D::LinkAdrReq(req(0, 0, 0, 7, 1))]));
        assert_eq!(report.answers, vec![U::LinkAdrAns(ans(0b110))]);
        assert_eq!(d.enabled_channels(), SUB_BAND_2);
    }

    #[test]
    fn a_dynamic_region_refuses_ch_mask_cntl_it_does_not_define() {
        for cntl in [1, 5, 7] {
            let mut d = adr_device();
            let report = d.downlink_received(&down(&[D::LinkAdrReq(req(3, 0, 0x0007, cntl, 1))]));
            assert_eq!(report.answers, vec![U::LinkAdrAns(ans(0b110))], "ChMaskCntl {cntl}");
        }
    }

    #[test]
    fn fixed_channel_devices_send_on_enabled_channels_that_allow_the_data_rate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut d = us915_adr();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let tx = d.choose_channel(&mut rng);
            assert_eq!((tx.dr, tx.modulation), (0, lora(10, 125_000)));
            seen.insert((tx.channel, tx.frequency));
        }
        let want: Vec<(u8, u32)> = (8..16u8).map(|c| (c, 902_300_000 + 200_000 * u32::from(c))).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), want, "903.9-905.3 MHz");
        let join = d.join_tx(&mut rng);
        assert!((8..16).contains(&join.channel), "{join:?}");
        // DR4 runs only on the 500 kHz channel of the sub-band, 904.6 MHz.
        d.downlink_received(&down(&[D::LinkAdrReq(req(4, 14, 0x0002, 6, 1))]));
        let tx = d.choose_channel(&mut rng);
        assert_eq!((tx.dr, tx.channel, tx.frequency, tx.modulation), (4, 65, 904_600_000, lora(8, 500_000)));
        assert_eq!(tx.power_offset_db, -28, "TXPower 14 is 28 dB below MaxEIRP");
    }

    #[test]
    fn fixed_channel_devices_ignore_new_channel_and_dl_channel_but_take_us915_rx2_rates() {
        let mut d = us915_adr();
        let report = d.downlink_received(&down(&[
            D::NewChannelReq(NewChannelReq { ch_index: 3, frequency: 903_000_000, min_dr: 0, max_dr: 3 }),
            D::DlChannelReq(DlChannelReq { ch_index: 8, frequency: 925_000_000 }),
            D::RxParamSetupReq(RxParamSetupReq { rx1_dr_offset: 3, rx2_dr: 8, frequency: 923_300_000 }),
        ]));
        let ok = RxParamSetupAns { rx1_dr_offset_ack: true, rx2_dr_ack: true, channel_ack: true };
        assert_eq!(report.answers, vec![U::RxParamSetupAns(ok)]);
        assert_eq!(d.rx_params(), (3, 8, 923_300_000, 1));
        // DR0 is uplink-only, 869.525 MHz outside the band, offset 4 beyond US915's 0-3.
        let report =
            d.downlink_received(&down(&[D::RxParamSetupReq(RxParamSetupReq { rx1_dr_offset: 4, rx2_dr: 0, frequency: 869_525_000 })]));
        assert_eq!(report.answers, vec![U::RxParamSetupAns(RxParamSetupAns::decode(&[0]))]);
    }

    fn radio(frequency: u32, modulation: Modulation, immediate: bool) -> DownlinkRadio {
        DownlinkRadio { frequency, modulation, immediate }
    }

    #[test]
    fn us915_downlinks_are_heard_on_the_mapped_500khz_channel_or_rx2() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut d = us915(MacConfig { adr: true, max_dr: 4, initial_dr: 3, ..MacConfig::default() });
        let mut up = d.choose_channel(&mut rng);
        up.channel = 10;
        up.frequency = 904_300_000;
        // (downlink, window): RX1 = 923.3 + 0.6·(10 mod 8) MHz at DR3+10 = DR13 (SF7BW500).
        let table = [
            (radio(924_500_000, lora(7, 500_000), false), Ok(RxWindow::Rx1)),
            (radio(923_300_000, lora(12, 500_000), false), Ok(RxWindow::Rx2)),
            (radio(923_300_000, lora(7, 500_000), false), Err(())),
            (radio(924_500_000, lora(8, 500_000), false), Err(())),
            (radio(923_300_000, lora(12, 500_000), true), Err(())),
        ];
        for (r, want) in table {
            assert_eq!(d.rx_window(Some(&up), &r, false).map_err(drop), want, "{r:?}");
        }
        // The 500 kHz uplink channel 65 maps to 923.9 MHz; DR4 with RX1DROffset 2 gives DR12
        // (SF8BW500).
        d.downlink_received(&down(&[D::RxParamSetupReq(RxParamSetupReq { rx1_dr_offset: 2, rx2_dr: 8, frequency: 923_300_000 })]));
        let wide = TxParams { dr: 4, channel: 65, frequency: 904_600_000, modulation: lora(8, 500_000), ..up };
        assert_eq!(d.rx_window(Some(&wide), &radio(923_900_000, lora(8, 500_000), false), false), Ok(RxWindow::Rx1));
        // A join-accept uses the defaults: offset 0 (DR4 → DR13) whatever the session says.
        assert_eq!(d.rx_window(Some(&wide), &radio(923_900_000, lora(7, 500_000), false), true), Ok(RxWindow::Rx1));
        assert!(d.rx_window(None, &radio(923_300_000, lora(12, 500_000), false), false).is_err(), "no uplink, no window");
    }

    #[test]
    fn only_class_c_devices_hear_immediate_downlinks_and_only_on_rx2() {
        let rx2 = radio(869_525_000, lora(12, 125_000), true);
        let elsewhere = radio(868_100_000, lora(12, 125_000), true);
        let class_a = device(MacConfig::default());
        assert_eq!(class_a.rx_window(None, &rx2, false), Err(WindowError::NotClassC { frequency: 869_525_000, dr: 0 }));
        let mut class_c = device(MacConfig { class_c: true, ..MacConfig::default() });
        assert_eq!(class_c.rx_window(None, &rx2, false), Ok(RxWindow::ClassC));
        assert!(matches!(class_c.rx_window(None, &elsewhere, false), Err(WindowError::Mismatch { .. })));
        assert!(class_c.rx_window(None, &rx2, true).is_err(), "join-accepts come in RX1/RX2 only");
        // RX2 moved by RxParamSetupReq: Class C follows it.
        class_c.downlink_received(&down(&[D::RxParamSetupReq(RxParamSetupReq { rx1_dr_offset: 0, rx2_dr: 3, frequency: 869_525_000 })]));
        assert!(class_c.rx_window(None, &rx2, false).is_err());
        assert_eq!(class_c.rx_window(None, &radio(869_525_000, lora(9, 125_000), true), false), Ok(RxWindow::ClassC));
    }

    #[test]
    fn eu868_rx1_is_the_uplink_frequency_or_the_dl_channel_one() {
        let mut d = adr_device();
        let up = TxParams { dr: 5, tx_power: 0, channel: 4, frequency: 867_300_000, modulation: lora(7, 125_000), power_offset_db: 0 };
        assert_eq!(d.rx_window(Some(&up), &radio(867_300_000, lora(7, 125_000), false), false), Ok(RxWindow::Rx1));
        assert_eq!(d.rx_window(Some(&up), &radio(869_525_000, lora(12, 125_000), false), false), Ok(RxWindow::Rx2));
        d.downlink_received(&down(&[D::DlChannelReq(DlChannelReq { ch_index: 4, frequency: 868_900_000 })]));
        assert!(d.rx_window(Some(&up), &radio(867_300_000, lora(7, 125_000), false), false).is_err());
        assert_eq!(d.rx_window(Some(&up), &radio(868_900_000, lora(7, 125_000), false), false), Ok(RxWindow::Rx1));
        let fsk = radio(869_525_000, Modulation::Fsk { bitrate: 50_000 }, false);
        assert!(matches!(d.rx_window(Some(&up), &fsk, false), Err(WindowError::Mismatch { dr: 7, .. })));
    }

    #[test]
    fn cn470_blocks_of_the_server_confine_a_device_to_each_group_of_eight() {
        for group in 0..12u8 {
            let want: Vec<u8> = (8 * group..8 * group + 8).collect();
            let mut d = DeviceMac::for_plan(
                MacConfig { adr: true, max_dr: 5, initial_dr: 0, ..MacConfig::default() },
                Arc::new(RadioPlan::from_id("cn470_0").unwrap()),
            );
            let blocks = d.plan().region.ch_mask_blocks(&want);
            let cmds: Vec<DownlinkMacCommand> = blocks.iter().map(|b| D::LinkAdrReq(req(2, 1, b.mask, b.cntl, 1))).collect();
            let report = d.downlink_received(&down(&cmds));
            assert!(report.answers.iter().all(|a| *a == U::LinkAdrAns(ans(0b111))), "group {group}: {blocks:?}");
            assert_eq!(d.enabled_channels(), want, "group {group}: {blocks:?}");
            // ChMaskCntl 7 is RFU in CN470.
            let report = d.downlink_received(&down(&[D::LinkAdrReq(req(2, 1, 0x00ff, 7, 1))]));
            assert_eq!(report.answers, vec![U::LinkAdrAns(ans(0b110))]);
        }
    }

    #[test]
    fn an_as923_device_takes_its_extra_channels_from_a_type_0_cf_list() {
        let plan = Arc::new(RadioPlan::from_id("as923_2").unwrap());
        let mut d = DeviceMac::for_plan(MacConfig::default(), plan.clone());
        let defaults: Vec<u32> = plan.region.default_uplink_channels().iter().map(|c| c.frequency).collect();
        let extra: Vec<u32> = (1..=5).map(|k| defaults[0] + 200_000 * (k + 1)).collect();
        let cf = plan.region.cf_list(&extra, &[]).expect("a type-0 CFList");
        d.join(0, 2, 1, Some(&cf));
        let n = defaults.len();
        let got: Vec<u32> = (n..n + 5).filter_map(|i| d.channel(i).map(|c| c.frequency)).collect();
        assert_eq!(got, extra);
        assert_eq!(d.enabled_channels(), (0..(n + 5) as u8).collect::<Vec<u8>>());
    }

    #[test]
    fn as923_devices_follow_tx_param_setup_and_its_uplink_dwell_time() {
        use loraflow_network_server::mac::TxParamSetupReq;
        let plan = Arc::new(RadioPlan::from_id("as923").unwrap());
        let mut d = DeviceMac::for_plan(MacConfig { adr: true, max_dr: 5, initial_dr: 2, ..MacConfig::default() }, plan);
        let dwell = d.uplink_dwell_time();
        assert_eq!(dwell, d.plan().region.default_dwell_time().uplink);
        // Dwell time off: DR0 carries 51 bytes and can be asked for.
        let off = TxParamSetupReq { downlink_dwell_time: false, uplink_dwell_time: false, max_eirp_index: 5 };
        let report = d.downlink_received(&down(&[D::TxParamSetupReq(off)]));
        assert_eq!(report.answers, vec![U::TxParamSetupAns]);
        assert_eq!((d.uplink_dwell_time(), d.max_payload(0), d.max_payload(2)), (false, 51, 115));
        assert_eq!(d.downlink_received(&down(&[D::LinkAdrReq(req(0, 0, 0x0003, 0, 1))])).answers, vec![U::LinkAdrAns(ans(0b111))]);
        // Dwell time on (RP002-1.0.4 AS923 payload table): DR0-1 carry nothing and are refused.
        let on = TxParamSetupReq { uplink_dwell_time: true, ..off };
        d.downlink_received(&down(&[D::TxParamSetupReq(on)]));
        assert_eq!((d.uplink_dwell_time(), d.max_payload(0), d.max_payload(2)), (true, 0, 11));
        assert_eq!(d.downlink_received(&down(&[D::LinkAdrReq(req(1, 0, 0x0003, 0, 1))])).answers, vec![U::LinkAdrAns(ans(0b101))]);
        assert_eq!(d.downlink_received(&down(&[D::LinkAdrReq(req(2, 0, 0x0003, 0, 1))])).answers, vec![U::LinkAdrAns(ans(0b111))]);
        // The ADR backoff stops at DR2.
        for _ in 0..400 {
            d.next_uplink();
        }
        assert_eq!(d.dr(), 2);
    }
}
