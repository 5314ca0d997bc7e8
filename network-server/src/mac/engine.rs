//! The MAC-command engine (pure): from a session's MAC state and one uplink, what the device
//! answered, what the server now believes, and which commands the next downlink may carry.
//!
//! Rules:
//! - A request waits in `MacState::pending` with the downlink FCnt it went out in. The device
//!   answers in the uplink that follows that downlink (LoRaWAN 1.0.4 §5); answers are matched
//!   to the requests of the latest downlink in order, per command.
//! - Not answered: sent again with the next downlink, at most `max_attempts` transmissions in
//!   all; then given up (a `log` event) and held back for [`HOLD`].
//! - A NAK (any status bit 0) is not believed: the old values stay, a `log` event says which
//!   bits were refused, and the same request is held back for [`HOLD`] (the device would
//!   refuse it again).
//! - LinkADRReq is believed only when every answer of the block has all three ACK bits set:
//!   the device applies the block atomically (LoRaWAN 1.0.4 §5.3).
//! - Candidates come in priority order: answers to the device (LinkCheckAns, DeviceTimeAns),
//!   RX timing and parameters (without them downlinks miss the device), dwell time and
//!   MaxEIRP (TxParamSetupReq, where the region implements it), channels, ADR, duty cycle,
//!   device status. The downlink takes them in that order while they fit.

use chrono::{DateTime, Duration, Utc};

use super::state::{apply_ch_mask, enabled_indices, AdrTarget, DeviceChannel, Held, MacState, Pending, Request, RxParams};
use super::{DevStatusAns, DownlinkMacCommand, LinkAdrAns, MacCommandName, MacContext, NewChannelAns, RxParamSetupAns, UplinkMacCommand};
use crate::events::LogLevel;
use crate::region::Region;

/// How long a refused or unanswered request is not sent again.
pub const HOLD: Duration = Duration::hours(24);

/// What the engine needs to know about the uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkFacts {
    pub f_cnt: u32,
    pub dr: u8,
    /// Hz
    pub frequency: u32,
    /// FCtrl.ADR: the device runs ADR.
    pub adr: bool,
    pub adr_ack_req: bool,
    pub confirmed: bool,
    /// FCtrl.ACK: acknowledges our last confirmed downlink.
    pub ack: bool,
    /// MAC commands from FOpts or an FPort 0 payload.
    pub commands: Vec<UplinkMacCommand>,
    /// Radio facts for LinkCheckAns / DeviceTimeAns.
    pub link: MacContext,
}

/// Configuration and device-profile values the engine follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacSettings {
    /// RX settings the network wants the device to use (`network.rx*`).
    pub desired_rx: RxParams,
    /// The region configuration's extra channels (NewChannelReq).
    pub extra_channels: Vec<u32>,
    /// Fixed-channel regions (US915, AU915, CN470): the channels the gateways listen on, which
    /// a device must have enabled and nothing else; a device that has others (no type-1 CFList
    /// at join: LoRaWAN 1.0.2 or older, ABP) is sent a LinkADRReq to confine it, even with ADR
    /// off (at its current data rate and power, as ChirpStack does). `None` elsewhere.
    pub confined_channels: Option<Vec<u8>>,
    /// `network.mac_command_max_attempts`
    pub max_attempts: u8,
    /// `network.max_duty_cycle`
    pub max_duty_cycle: Option<u8>,
    /// DevStatusReq per day; 0 = never.
    pub dev_status_req_freq: u32,
    /// Device profile `adrEnabled`.
    pub adr_enabled: bool,
}

pub struct MacInput<'a> {
    pub region: &'a dyn Region,
    pub state: &'a MacState,
    /// RX settings the device uses now (acknowledged).
    pub rx: RxParams,
    pub is_otaa: bool,
    pub uplink: &'a UplinkFacts,
    /// What the ADR algorithm wants; `None` = no change.
    pub adr_target: Option<AdrTarget>,
    pub settings: &'a MacSettings,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Answered,
    Nak,
    Unanswered,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Answered => "answered",
            Outcome::Nak => "nak",
            Outcome::Unanswered => "unanswered",
        }
    }
}

/// Something for the device's `log` events.
#[derive(Debug, Clone, PartialEq)]
pub struct MacLog {
    pub level: LogLevel,
    pub command: MacCommandName,
    pub description: String,
}

/// A command (or LinkADRReq block) the next downlink may carry.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    /// An answer to a device request; sent once, never waited on.
    Answer(DownlinkMacCommand),
    /// A server request, new or sent again.
    Request(Request),
}

impl Candidate {
    pub fn commands(&self) -> Vec<DownlinkMacCommand> {
        match self {
            Candidate::Answer(c) => vec![*c],
            Candidate::Request(r) => r.commands(),
        }
    }

    pub fn encoded_len(&self) -> usize {
        self.commands().iter().map(|c| c.encoded_len()).sum()
    }

    pub fn name(&self) -> MacCommandName {
        match self {
            Candidate::Answer(c) => c.name(),
            Candidate::Request(r) => r.name(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MacOutput {
    /// The state after this uplink's answers, before the next downlink is sent.
    pub state: MacState,
    /// The RX settings the device uses after this uplink's answers.
    pub rx: RxParams,
    /// In priority order.
    pub candidates: Vec<Candidate>,
    pub logs: Vec<MacLog>,
    pub counts: Vec<(MacCommandName, Outcome)>,
    pub dev_status: Option<DevStatusAns>,
    /// Debug notes (unparsed or unsolicited answers).
    pub notes: Vec<String>,
}

/// Runs the engine for one uplink.
pub fn run(input: &MacInput) -> MacOutput {
    let mut state = input.state.clone();
    state.held.retain(|h| h.until.is_some_and(|t| t > input.now));
    let mut out = MacOutput {
        rx: input.rx,
        candidates: Vec::new(),
        logs: Vec::new(),
        counts: Vec::new(),
        dev_status: None,
        notes: Vec::new(),
        state: MacState::default(),
    };

    // Device requests (LinkCheckReq, DeviceTimeReq) and DevStatusAns.
    let handled = super::handle(&input.uplink.commands, &input.uplink.link);
    out.dev_status = handled.dev_status;
    out.notes.extend(handled.notes);
    out.candidates.extend(handled.answers.into_iter().map(Candidate::Answer));

    let mut channels = state.channels_or_initial(input.region, input.is_otaa);
    let channels_before = channels.clone();
    match_answers(input, &mut state, &mut channels, &mut out);
    if channels != channels_before || state.channels.is_some() {
        state.channels = Some(channels.clone());
    }

    let mut requests: Vec<Request> = state.pending.iter().map(|p| p.request.clone()).collect();
    for r in wanted(input, &state, &channels, out.rx) {
        let waiting = state.pending.iter().any(|p| p.request.same_slot(&r));
        let held = state.held.iter().any(|h| h.request == r);
        if !waiting && !held {
            requests.push(r);
        }
    }
    requests.sort_by_key(priority);
    out.candidates.extend(requests.into_iter().map(Candidate::Request));
    out.state = state;
    out
}

/// Lower first.
fn priority(r: &Request) -> u8 {
    match r {
        Request::RxTimingSetup { .. } => 1,
        Request::RxParamSetup { .. } => 2,
        // The dwell time decides the RX1 data rate and the payload sizes of downlinks.
        Request::TxParamSetup { .. } => 3,
        Request::NewChannel { .. } => 4,
        Request::LinkAdr { .. } => 5,
        Request::DutyCycle { .. } => 6,
        Request::DevStatus => 7,
    }
}

fn bits(names: &[(&str, bool)]) -> String {
    names.iter().map(|(n, ok)| format!("{n} {}", if *ok { "ACK" } else { "NAK" })).collect::<Vec<_>>().join(", ")
}

fn match_answers(input: &MacInput, state: &mut MacState, channels: &mut Vec<DeviceChannel>, out: &mut MacOutput) {
    let mut link_adr: Vec<LinkAdrAns> = Vec::new();
    let mut rx_param: Vec<RxParamSetupAns> = Vec::new();
    let mut new_channel: Vec<NewChannelAns> = Vec::new();
    let mut rx_timing = 0usize;
    let mut duty_cycle = 0usize;
    let mut tx_param = 0usize;
    for c in &input.uplink.commands {
        match c {
            UplinkMacCommand::LinkAdrAns(a) => link_adr.push(*a),
            UplinkMacCommand::RxParamSetupAns(a) => rx_param.push(*a),
            UplinkMacCommand::NewChannelAns(a) => new_channel.push(*a),
            UplinkMacCommand::RxTimingSetupAns => rx_timing += 1,
            UplinkMacCommand::DutyCycleAns => duty_cycle += 1,
            UplinkMacCommand::TxParamSetupAns => tx_param += 1,
            _ => {}
        }
    }
    let (mut link_adr, mut rx_param, mut new_channel) = (link_adr.into_iter(), rx_param.into_iter(), new_channel.into_iter());
    let latest = state.pending.iter().map(|p| p.f_cnt_down).max();
    let pending = std::mem::take(&mut state.pending);
    let hold = |state: &mut MacState, request: Request, unanswered: bool| {
        state.held.retain(|h| !h.request.same_slot(&request));
        state.held.push(Held { request, until: Some(input.now + HOLD), unanswered });
    };
    for p in pending {
        let in_latest = Some(p.f_cnt_down) == latest;
        let name = p.request.name();
        let answered: Option<Result<(), String>> = if !in_latest {
            None
        } else {
            match &p.request {
                Request::LinkAdr { dr, tx_power_index, nb_trans, masks } => {
                    let answers: Vec<LinkAdrAns> = link_adr.by_ref().take(masks.len()).collect();
                    if answers.is_empty() {
                        None
                    } else if answers.len() == masks.len() && answers.iter().all(|a| a.accepted()) {
                        state.dr = Some(*dr);
                        state.tx_power_index = *tx_power_index;
                        state.nb_trans = (*nb_trans).max(1);
                        apply_ch_mask(channels, input.region.default_uplink_channels().len(), masks);
                        Some(Ok(()))
                    } else {
                        let a = answers.iter().find(|a| !a.accepted()).copied().unwrap_or(answers[0]);
                        Some(Err(format!(
                            "LinkADRReq (DR{dr}, TXPower {tx_power_index}, NbTrans {nb_trans}) refused: {}; the device keeps its settings",
                            bits(&[("power", a.power_ack), ("data rate", a.dr_ack), ("channel mask", a.ch_mask_ack)])
                        )))
                    }
                }
                Request::RxParamSetup { rx1_dr_offset, rx2_dr, rx2_frequency } => rx_param.next().map(|a| {
                    if a.accepted() {
                        out.rx.rx1_dr_offset = *rx1_dr_offset;
                        out.rx.rx2_dr = *rx2_dr;
                        out.rx.rx2_frequency = *rx2_frequency;
                        Ok(())
                    } else {
                        Err(format!(
                            "RXParamSetupReq (RX1DROffset {rx1_dr_offset}, RX2 DR{rx2_dr}, RX2 {rx2_frequency} Hz) refused: {}; downlinks keep the old RX settings",
                            bits(&[("RX1DROffset", a.rx1_dr_offset_ack), ("RX2 data rate", a.rx2_dr_ack), ("channel", a.channel_ack)])
                        ))
                    }
                }),
                Request::RxTimingSetup { delay } => (rx_timing > 0).then(|| {
                    rx_timing -= 1;
                    out.rx.rx1_delay = (*delay).max(1);
                    Ok(())
                }),
                Request::DutyCycle { max_duty_cycle } => (duty_cycle > 0).then(|| {
                    duty_cycle -= 1;
                    state.max_duty_cycle = Some(*max_duty_cycle);
                    Ok(())
                }),
                // TxParamSetupAns is empty: it can only acknowledge (LoRaWAN 1.0.4 §5.8).
                Request::TxParamSetup { .. } => (tx_param > 0).then(|| {
                    tx_param -= 1;
                    state.tx_params = p.request.tx_params();
                    Ok(())
                }),
                Request::DevStatus => out.dev_status.map(|_| Ok(())),
                Request::NewChannel { index, frequency, min_dr, max_dr } => new_channel.next().map(|a| {
                    if a.dr_range_ok && a.channel_freq_ok {
                        channels.retain(|c| c.index != *index);
                        if *frequency != 0 {
                            channels.push(DeviceChannel { index: *index, frequency: *frequency, min_dr: *min_dr, max_dr: *max_dr, enabled: true });
                            channels.sort_by_key(|c| c.index);
                        }
                        Ok(())
                    } else {
                        Err(format!(
                            "NewChannelReq (channel {index}, {frequency} Hz, DR{min_dr}-{max_dr}) refused: {}; the channel is not used",
                            bits(&[("data-rate range", a.dr_range_ok), ("frequency", a.channel_freq_ok)])
                        ))
                    }
                }),
            }
        };
        match answered {
            Some(Ok(())) => out.counts.push((name, Outcome::Answered)),
            Some(Err(description)) => {
                out.counts.push((name, Outcome::Nak));
                out.logs.push(MacLog { level: LogLevel::Warning, command: name, description });
                hold(state, p.request, false);
            }
            None if p.attempts >= input.settings.max_attempts => {
                out.counts.push((name, Outcome::Unanswered));
                out.logs.push(MacLog {
                    level: LogLevel::Warning,
                    command: name,
                    description: format!(
                        "{name} not answered after {} transmissions; not sent again for {} hours",
                        p.attempts,
                        HOLD.num_hours()
                    ),
                });
                // DevStatusReq has its own schedule.
                if p.request != Request::DevStatus {
                    hold(state, p.request, true);
                }
            }
            None => state.pending.push(p),
        }
    }
    // RXParamSetupAns and RXTimingSetupAns repeat in every uplink until a downlink arrives
    // (LoRaWAN 1.0.4 §5.4, §5.7): a late one still answers a request given up on.
    for a in rx_param {
        let pos = state.held.iter().position(|h| h.unanswered && matches!(h.request, Request::RxParamSetup { .. }));
        match pos.map(|i| state.held.remove(i).request) {
            Some(Request::RxParamSetup { rx1_dr_offset, rx2_dr, rx2_frequency }) if a.accepted() => {
                out.rx = RxParams { rx1_dr_offset, rx2_dr, rx2_frequency, ..out.rx };
                out.counts.push((MacCommandName::RxParamSetupReq, Outcome::Answered));
            }
            _ => out.notes.push("RXParamSetupAns without a request waiting for it".into()),
        }
    }
    for _ in 0..rx_timing {
        let pos = state.held.iter().position(|h| h.unanswered && matches!(h.request, Request::RxTimingSetup { .. }));
        match pos.map(|i| state.held.remove(i).request) {
            Some(Request::RxTimingSetup { delay }) => {
                out.rx.rx1_delay = delay.max(1);
                out.counts.push((MacCommandName::RxTimingSetupReq, Outcome::Answered));
            }
            _ => out.notes.push("RXTimingSetupAns without a request waiting for it".into()),
        }
    }
}

/// What the server wants the device to change, before checking what already waits.
fn wanted(input: &MacInput, state: &MacState, channels: &[DeviceChannel], rx: RxParams) -> Vec<Request> {
    let s = input.settings;
    let mut out = Vec::new();
    if s.desired_rx.rx1_delay != rx.rx1_delay {
        out.push(Request::RxTimingSetup { delay: s.desired_rx.rx1_delay });
    }
    let d = s.desired_rx;
    if (d.rx1_dr_offset, d.rx2_dr, d.rx2_frequency) != (rx.rx1_dr_offset, rx.rx2_dr, rx.rx2_frequency) {
        out.push(Request::RxParamSetup { rx1_dr_offset: d.rx1_dr_offset, rx2_dr: d.rx2_dr, rx2_frequency: d.rx2_frequency });
    }

    // Only where the region implements TxParamSetupReq (AS923): the limits the network
    // imposes, when the device is believed to follow others.
    if let (Some((_, configured)), Some(believed)) = (input.region.tx_params(), state.tx_params_or_initial(input.region)) {
        if believed != configured {
            out.push(Request::tx_param_setup(configured));
        }
    }

    // Extra channels sit right after the default ones (RP002-1.0.3 §2.4.4).
    let first = input.region.default_uplink_channels().len();
    let (min_dr, max_dr) = input.region.extra_channel_dr_range();
    let have = |index: usize| channels.iter().find(|c| usize::from(c.index) == index).map_or(0, |c| c.frequency);
    let last_known = channels.iter().map(|c| usize::from(c.index) + 1).max().unwrap_or(0);
    for index in first..last_known.max(first + s.extra_channels.len()).min(16) {
        let want = s.extra_channels.get(index - first).copied().unwrap_or(0);
        if have(index) != want {
            out.push(Request::NewChannel { index: index as u8, frequency: want, min_dr, max_dr });
        }
    }

    let adr_change = input.adr_target.filter(|t| {
        let changes = t.dr != input.uplink.dr || t.tx_power_index != state.tx_power_index || t.nb_trans != state.nb_trans;
        input.uplink.adr && s.adr_enabled && changes
    });
    let have = enabled_indices(channels);
    let confine = s.confined_channels.as_ref().filter(|want| **want != have);
    if adr_change.is_some() || confine.is_some() {
        let t = adr_change.unwrap_or(AdrTarget { dr: input.uplink.dr, tx_power_index: state.tx_power_index, nb_trans: state.nb_trans });
        let enabled = s.confined_channels.as_ref().unwrap_or(&have);
        out.push(Request::LinkAdr {
            dr: t.dr,
            tx_power_index: t.tx_power_index,
            nb_trans: t.nb_trans,
            masks: input.region.ch_mask_blocks(enabled),
        });
    }
    if let Some(v) = s.max_duty_cycle {
        if state.max_duty_cycle != Some(v) {
            out.push(Request::DutyCycle { max_duty_cycle: v });
        }
    }
    if s.dev_status_req_freq > 0 {
        let interval = Duration::seconds(86_400 / i64::from(s.dev_status_req_freq));
        if state.last_dev_status_req.is_none_or(|t| input.now - t >= interval) {
            out.push(Request::DevStatus);
        }
    }
    out
}

/// The candidates (indices) that fit in `budget` bytes, in priority order; one that does
/// not fit is left for a later downlink and smaller ones after it may still go.
pub fn select(candidates: &[Candidate], budget: usize) -> Vec<usize> {
    let mut used = 0;
    let mut out = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let len = c.encoded_len();
        if used + len <= budget {
            used += len;
            out.push(i);
        }
    }
    out
}

/// The state once a downlink carrying `sent` went out with `f_cnt_down`. The requests sent
/// come first, in frame order, so that answers are matched in the order the device gives them.
pub fn record_sent(state: &MacState, sent: &[&Candidate], f_cnt_down: u32, f_cnt_up: u32, now: DateTime<Utc>) -> MacState {
    let mut s = state.clone();
    let mut rest = std::mem::take(&mut s.pending);
    for c in sent {
        let Candidate::Request(r) = c else { continue };
        let attempts = match rest.iter().position(|p| p.request.same_slot(r)) {
            Some(i) => rest.remove(i).attempts,
            None => 0,
        };
        if *r == Request::DevStatus {
            s.last_dev_status_req = Some(now);
        }
        s.pending.push(Pending { request: r.clone(), attempts: attempts.saturating_add(1), f_cnt_down, f_cnt_up, sent_at: Some(now) });
    }
    s.pending.extend(rest);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::{LinkCheckAns, RxParamSetupReq};
    use crate::region::{ChMaskBlock, Eu868};

    fn default_rx() -> RxParams {
        RxParams::region_defaults(&Eu868)
    }

    fn now() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    fn settings() -> MacSettings {
        MacSettings {
            desired_rx: default_rx(),
            extra_channels: Eu868.default_extra_channels(),
            confined_channels: None,
            max_attempts: 3,
            max_duty_cycle: None,
            dev_status_req_freq: 0,
            adr_enabled: true,
        }
    }

    fn uplink(commands: Vec<UplinkMacCommand>) -> UplinkFacts {
        UplinkFacts {
            f_cnt: 10,
            dr: 0,
            frequency: 868_100_000,
            adr: true,
            adr_ack_req: false,
            confirmed: false,
            ack: false,
            commands,
            link: MacContext { best_snr: 5.0, spreading_factor: Some(12), gateway_count: 1, rx_time: now() },
        }
    }

    /// An OTAA device that knows the default plan, nothing pending.
    fn settled() -> MacState {
        MacState::after_join(&Eu868, &Eu868.default_extra_channels())
    }

    fn run_with(state: &MacState, rx: RxParams, up: &UplinkFacts, target: Option<AdrTarget>, s: &MacSettings) -> MacOutput {
        run(&MacInput { region: &Eu868, state, rx, is_otaa: true, uplink: up, adr_target: target, settings: s, now: now() })
    }

    fn requests(o: &MacOutput) -> Vec<Request> {
        o.candidates
            .iter()
            .filter_map(|c| match c {
                Candidate::Request(r) => Some(r.clone()),
                Candidate::Answer(_) => None,
            })
            .collect()
    }

    /// Runs the engine and records every candidate as sent.
    fn send_all(state: &MacState, rx: RxParams, up: &UplinkFacts, s: &MacSettings, f_cnt_down: u32) -> (MacOutput, MacState) {
        let o = run_with(state, rx, up, None, s);
        let all: Vec<&Candidate> = o.candidates.iter().collect();
        let next = record_sent(&o.state, &all, f_cnt_down, up.f_cnt, now());
        (o, next)
    }

    #[test]
    fn a_device_on_the_wanted_settings_gets_no_request() {
        let o = run_with(&settled(), default_rx(), &uplink(vec![]), None, &settings());
        assert!(o.candidates.is_empty(), "{:?}", o.candidates);
        assert_eq!(o.state, settled());
        assert_eq!(o.rx, default_rx());
    }

    #[test]
    fn rx_settings_that_differ_from_the_device_are_requested() {
        let cases = [
            (RxParams { rx1_delay: 3, ..default_rx() }, vec![Request::RxTimingSetup { delay: 3 }]),
            (
                RxParams { rx2_dr: 3, rx2_frequency: 869_525_000, ..default_rx() },
                vec![Request::RxParamSetup { rx1_dr_offset: 0, rx2_dr: 3, rx2_frequency: 869_525_000 }],
            ),
            (
                RxParams { rx1_delay: 2, rx1_dr_offset: 1, rx2_dr: 0, rx2_frequency: 869_100_000 },
                vec![
                    Request::RxTimingSetup { delay: 2 },
                    Request::RxParamSetup { rx1_dr_offset: 1, rx2_dr: 0, rx2_frequency: 869_100_000 },
                ],
            ),
        ];
        for (desired, want) in cases {
            let s = MacSettings { desired_rx: desired, ..settings() };
            let o = run_with(&settled(), default_rx(), &uplink(vec![]), None, &s);
            assert_eq!(requests(&o), want, "{desired:?}");
            // Until the device answers, the old values stay in use.
            assert_eq!(o.rx, default_rx());
        }
    }

    #[test]
    fn rx_params_move_only_when_every_bit_is_acknowledged() {
        let desired = RxParams { rx2_dr: 3, ..default_rx() };
        let s = MacSettings { desired_rx: desired, ..settings() };
        let (_, sent) = send_all(&settled(), default_rx(), &uplink(vec![]), &s, 4);
        assert_eq!(sent.pending.len(), 1);
        let cases = [
            (RxParamSetupAns { rx1_dr_offset_ack: true, rx2_dr_ack: true, channel_ack: true }, desired, Outcome::Answered),
            (RxParamSetupAns { rx1_dr_offset_ack: true, rx2_dr_ack: false, channel_ack: true }, default_rx(), Outcome::Nak),
        ];
        for (ans, rx, outcome) in cases {
            let o = run_with(&sent, default_rx(), &uplink(vec![UplinkMacCommand::RxParamSetupAns(ans)]), None, &s);
            assert_eq!(o.rx, rx, "{ans:?}");
            assert_eq!(o.counts, vec![(MacCommandName::RxParamSetupReq, outcome)]);
            assert!(o.state.pending.is_empty());
            // A refused request is logged and not asked again at once.
            assert_eq!(o.logs.len(), usize::from(outcome == Outcome::Nak));
            assert!(requests(&o).is_empty(), "{:?}", o.candidates);
        }
    }

    #[test]
    fn an_unanswered_request_is_sent_again_until_the_attempt_bound() {
        let s = MacSettings { desired_rx: RxParams { rx1_delay: 2, ..default_rx() }, max_attempts: 3, ..settings() };
        let mut state = settled();
        for attempt in 1..=3u8 {
            let (o, next) = send_all(&state, default_rx(), &uplink(vec![]), &s, u32::from(attempt));
            assert_eq!(requests(&o), vec![Request::RxTimingSetup { delay: 2 }], "attempt {attempt}");
            assert_eq!(next.pending[0].attempts, attempt);
            assert_eq!(next.pending[0].f_cnt_down, u32::from(attempt));
            state = next;
        }
        let o = run_with(&state, default_rx(), &uplink(vec![]), None, &s);
        assert_eq!(o.counts, vec![(MacCommandName::RxTimingSetupReq, Outcome::Unanswered)]);
        assert_eq!(o.logs.len(), 1);
        assert!(requests(&o).is_empty(), "given up and held: {:?}", o.candidates);
        // A day later it is tried again.
        let later = run(&MacInput {
            region: &Eu868,
            state: &o.state,
            rx: default_rx(),
            is_otaa: true,
            uplink: &uplink(vec![]),
            adr_target: None,
            settings: &s,
            now: now() + HOLD + Duration::seconds(1),
        });
        assert_eq!(requests(&later), vec![Request::RxTimingSetup { delay: 2 }]);
        // A late sticky answer still counts.
        let late = run_with(&o.state, default_rx(), &uplink(vec![UplinkMacCommand::RxTimingSetupAns]), None, &s);
        assert_eq!(late.rx.rx1_delay, 2);
    }

    #[test]
    fn abp_devices_get_new_channel_requests_and_a_nak_is_not_believed() {
        let s = settings();
        let abp = MacState::default();
        let run_abp = |state: &MacState, up: &UplinkFacts| {
            run(&MacInput {
                region: &Eu868,
                state,
                rx: default_rx(),
                is_otaa: false,
                uplink: up,
                adr_target: None,
                settings: &s,
                now: now(),
            })
        };
        let first = run_abp(&abp, &uplink(vec![]));
        let want: Vec<Request> = (3u8..8)
            .map(|i| Request::NewChannel { index: i, frequency: 867_100_000 + u32::from(i - 3) * 200_000, min_dr: 0, max_dr: 5 })
            .collect();
        assert_eq!(requests(&first), want);
        // OTAA devices got them in the CFList.
        let o = run_with(&abp, default_rx(), &uplink(vec![]), None, &s);
        assert!(o.candidates.is_empty());

        let sent = record_sent(&first.state, &first.candidates.iter().collect::<Vec<_>>(), 1, 10, now());
        let ok = NewChannelAns { dr_range_ok: true, channel_freq_ok: true };
        let nak = NewChannelAns { dr_range_ok: true, channel_freq_ok: false };
        let answers = vec![ok, nak, ok, ok, ok].into_iter().map(UplinkMacCommand::NewChannelAns).collect();
        let o = run_abp(&sent, &uplink(answers));
        let freqs: Vec<u32> = o.state.channels.as_ref().unwrap().iter().map(|c| c.frequency).collect();
        assert_eq!(freqs, vec![868_100_000, 868_300_000, 868_500_000, 867_100_000, 867_500_000, 867_700_000, 867_900_000]);
        assert_eq!(o.logs.len(), 1);
        assert!(o.logs[0].description.contains("channel 4"), "{:?}", o.logs);
        assert!(requests(&o).is_empty(), "the refused channel is held back: {:?}", o.candidates);
    }

    #[test]
    fn a_changed_channel_plan_is_sent_to_devices_that_joined_with_the_old_one() {
        let s = MacSettings { extra_channels: vec![867_100_000, 868_800_000], ..settings() };
        let o = run_with(&settled(), default_rx(), &uplink(vec![]), None, &s);
        assert_eq!(
            requests(&o),
            vec![
                Request::NewChannel { index: 4, frequency: 868_800_000, min_dr: 0, max_dr: 5 },
                Request::NewChannel { index: 5, frequency: 0, min_dr: 0, max_dr: 5 },
                Request::NewChannel { index: 6, frequency: 0, min_dr: 0, max_dr: 5 },
                Request::NewChannel { index: 7, frequency: 0, min_dr: 0, max_dr: 5 },
            ]
        );
    }

    #[test]
    fn link_adr_is_believed_only_when_all_three_bits_are_set() {
        let target = AdrTarget { dr: 5, tx_power_index: 2, nb_trans: 2 };
        let o = run_with(&settled(), default_rx(), &uplink(vec![]), Some(target), &settings());
        let req = Request::LinkAdr { dr: 5, tx_power_index: 2, nb_trans: 2, masks: vec![ChMaskBlock { cntl: 0, mask: 0x00ff }] };
        assert_eq!(requests(&o), vec![req]);
        let sent = record_sent(&o.state, &o.candidates.iter().collect::<Vec<_>>(), 1, 10, now());
        let cases = [
            (LinkAdrAns { power_ack: true, dr_ack: true, ch_mask_ack: true }, (Some(5), 2, 2), Outcome::Answered),
            (LinkAdrAns { power_ack: true, dr_ack: false, ch_mask_ack: true }, (None, 0, 1), Outcome::Nak),
            (LinkAdrAns { power_ack: false, dr_ack: true, ch_mask_ack: true }, (None, 0, 1), Outcome::Nak),
            (LinkAdrAns { power_ack: true, dr_ack: true, ch_mask_ack: false }, (None, 0, 1), Outcome::Nak),
        ];
        for (ans, (dr, power, nb), outcome) in cases {
            let o = run_with(&sent, default_rx(), &uplink(vec![UplinkMacCommand::LinkAdrAns(ans)]), Some(target), &settings());
            assert_eq!((o.state.dr, o.state.tx_power_index, o.state.nb_trans), (dr, power, nb), "{ans:?}");
            assert_eq!(o.counts, vec![(MacCommandName::LinkAdrReq, outcome)]);
        }
    }

    /// US915 sub-band 2 (channels 8-15 and 65), as a fixed-channel region configuration says.
    fn sub_band_2() -> Vec<u8> {
        (8..16).chain([65]).collect()
    }

    fn run_us915(state: &MacState, up: &UplinkFacts, target: Option<AdrTarget>, s: &MacSettings, is_otaa: bool) -> MacOutput {
        use crate::region::Us915;
        let rx = RxParams::region_defaults(&Us915);
        run(&MacInput { region: &Us915, state, rx, is_otaa, uplink: up, adr_target: target, settings: s, now: now() })
    }

    fn us915_settings() -> MacSettings {
        use crate::region::Us915;
        MacSettings {
            desired_rx: RxParams::region_defaults(&Us915),
            extra_channels: vec![],
            confined_channels: Some(sub_band_2()),
            adr_enabled: false,
            ..settings()
        }
    }

    fn us915_uplink(dr: u8, adr: bool) -> UplinkFacts {
        UplinkFacts { dr, frequency: 903_900_000, adr, ..uplink(vec![]) }
    }

    #[test]
    fn a_fixed_channel_device_on_all_channels_is_confined_even_with_adr_off() {
        let s = us915_settings();
        // ABP: the device was told nothing and uses all 72 channels.
        let o = run_us915(&MacState::default(), &us915_uplink(2, false), None, &s, false);
        let link_adr: Vec<Request> = requests(&o).into_iter().filter(|r| matches!(r, Request::LinkAdr { .. })).collect();
        assert_eq!(
            link_adr,
            vec![Request::LinkAdr {
                dr: 2,
                tx_power_index: 0,
                nb_trans: 1,
                masks: vec![ChMaskBlock { cntl: 7, mask: 0x0002 }, ChMaskBlock { cntl: 0, mask: 0xff00 }],
            }],
            "current DR, power and NbTrans with the sub-band-2 blocks"
        );

        // Accepted (one LinkADRAns per block): the device has exactly sub-band 2 and nothing
        // more is asked.
        let all: Vec<&Candidate> = o.candidates.iter().collect();
        let sent = record_sent(&o.state, &all, 1, 10, now());
        let ok = LinkAdrAns { power_ack: true, dr_ack: true, ch_mask_ack: true };
        let up = UplinkFacts { f_cnt: 11, ..us915_uplink(2, false) };
        let up = UplinkFacts { commands: vec![UplinkMacCommand::LinkAdrAns(ok), UplinkMacCommand::LinkAdrAns(ok)], ..up };
        let o = run_us915(&sent, &up, None, &s, false);
        let enabled = enabled_indices(o.state.channels.as_ref().unwrap());
        assert_eq!(enabled, sub_band_2());
        assert!(!requests(&o).iter().any(|r| matches!(r, Request::LinkAdr { .. })), "{:?}", requests(&o));
    }

    #[test]
    fn a_device_that_got_the_channel_mask_cf_list_is_left_alone_and_adr_keeps_the_mask() {
        use crate::region::Us915;
        let s = us915_settings();
        let joined = MacState::with_enabled_channels(&Us915, &sub_band_2());
        let o = run_us915(&joined, &us915_uplink(1, false), None, &s, true);
        assert!(!requests(&o).iter().any(|r| matches!(r, Request::LinkAdr { .. })));

        // ADR asks for DR3: its LinkADRReq carries the sub-band-2 blocks too.
        let s = MacSettings { adr_enabled: true, ..s };
        let target = AdrTarget { dr: 3, tx_power_index: 2, nb_trans: 1 };
        let o = run_us915(&joined, &us915_uplink(1, true), Some(target), &s, true);
        let masks: Vec<Vec<ChMaskBlock>> = requests(&o)
            .into_iter()
            .filter_map(|r| match r {
                Request::LinkAdr { dr: 3, tx_power_index: 2, masks, .. } => Some(masks),
                _ => None,
            })
            .collect();
        assert_eq!(masks, vec![vec![ChMaskBlock { cntl: 7, mask: 0x0002 }, ChMaskBlock { cntl: 0, mask: 0xff00 }]]);
    }

    #[test]
    fn link_adr_needs_the_adr_bit_the_profile_and_a_change() {
        let target = AdrTarget { dr: 5, tx_power_index: 0, nb_trans: 1 };
        let cases = [(true, true, 0, true), (false, true, 0, false), (true, false, 0, false), (true, true, 5, false)];
        for (adr_bit, enabled, uplink_dr, want) in cases {
            let mut up = uplink(vec![]);
            up.adr = adr_bit;
            up.dr = uplink_dr;
            let s = MacSettings { adr_enabled: enabled, ..settings() };
            let o = run_with(&settled(), default_rx(), &up, Some(target), &s);
            assert_eq!(!requests(&o).is_empty(), want, "adr bit {adr_bit}, profile {enabled}, DR{uplink_dr}");
        }
    }

    #[test]
    fn dev_status_is_requested_as_often_as_the_profile_says() {
        let cases = [(0, None, false), (1, None, true), (1, Some(23), false), (1, Some(24), true), (4, Some(6), true), (4, Some(5), false)];
        for (freq, hours_ago, want) in cases {
            let s = MacSettings { dev_status_req_freq: freq, ..settings() };
            let state = MacState { last_dev_status_req: hours_ago.map(|h| now() - Duration::hours(h)), ..settled() };
            let o = run_with(&state, default_rx(), &uplink(vec![]), None, &s);
            assert_eq!(requests(&o).contains(&Request::DevStatus), want, "freq {freq}, last {hours_ago:?} h ago");
        }
        let s = MacSettings { dev_status_req_freq: 1, ..settings() };
        let (_, sent) = send_all(&settled(), default_rx(), &uplink(vec![]), &s, 1);
        assert_eq!(sent.last_dev_status_req, Some(now()));
        let ans = DevStatusAns { battery: 200, margin: 7 };
        let o = run_with(&sent, default_rx(), &uplink(vec![UplinkMacCommand::DevStatusAns(ans)]), None, &s);
        assert_eq!(o.dev_status, Some(ans));
        assert_eq!(o.counts, vec![(MacCommandName::DevStatusReq, Outcome::Answered)]);
        assert!(requests(&o).is_empty());
    }

    #[test]
    fn duty_cycle_is_sent_only_when_configured_and_not_yet_acknowledged() {
        let s = MacSettings { max_duty_cycle: Some(7), ..settings() };
        let (o, sent) = send_all(&settled(), default_rx(), &uplink(vec![]), &s, 1);
        assert_eq!(requests(&o), vec![Request::DutyCycle { max_duty_cycle: 7 }]);
        let o = run_with(&sent, default_rx(), &uplink(vec![UplinkMacCommand::DutyCycleAns]), None, &s);
        assert_eq!(o.state.max_duty_cycle, Some(7));
        assert!(requests(&o).is_empty());
        assert!(requests(&run_with(&settled(), default_rx(), &uplink(vec![]), None, &settings())).is_empty());
    }

    #[test]
    fn answers_to_the_device_come_first_and_selection_keeps_priority_within_the_budget() {
        let s = MacSettings { desired_rx: RxParams { rx2_dr: 3, ..default_rx() }, dev_status_req_freq: 1, ..settings() };
        let o = run_with(&settled(), default_rx(), &uplink(vec![UplinkMacCommand::LinkCheckReq]), None, &s);
        assert_eq!(o.candidates[0], Candidate::Answer(DownlinkMacCommand::LinkCheckAns(LinkCheckAns { margin: 25, gw_cnt: 1 })));
        assert_eq!(o.candidates[1], Candidate::Request(Request::RxParamSetup { rx1_dr_offset: 0, rx2_dr: 3, rx2_frequency: 869_525_000 }));
        assert_eq!(o.candidates[2], Candidate::Request(Request::DevStatus));
        // LinkCheckAns 3 + RXParamSetupReq 5 + DevStatusReq 1.
        assert_eq!(select(&o.candidates, 15), vec![0, 1, 2]);
        // 4 bytes: the answer (3) and then what still fits (DevStatusReq, 1).
        assert_eq!(select(&o.candidates, 4), vec![0, 2]);
        assert_eq!(select(&o.candidates, 0), Vec::<usize>::new());
    }

    #[test]
    fn answers_are_matched_to_the_latest_downlink_only() {
        // Sent in downlink 1 and left out of downlink 2 (no room): an answer in the uplink
        // after downlink 2 belongs to what downlink 2 carried.
        let rx_req = Request::RxParamSetup { rx1_dr_offset: 0, rx2_dr: 3, rx2_frequency: 869_525_000 };
        let state = MacState {
            pending: vec![
                Pending { request: rx_req.clone(), attempts: 1, f_cnt_down: 1, f_cnt_up: 9, sent_at: Some(now()) },
                Pending { request: Request::DevStatus, attempts: 1, f_cnt_down: 2, f_cnt_up: 10, sent_at: Some(now()) },
            ],
            ..settled()
        };
        let ans = RxParamSetupAns { rx1_dr_offset_ack: true, rx2_dr_ack: true, channel_ack: true };
        let s = MacSettings { desired_rx: RxParams { rx2_dr: 3, ..default_rx() }, ..settings() };
        let o = run_with(&state, default_rx(), &uplink(vec![UplinkMacCommand::RxParamSetupAns(ans)]), None, &s);
        assert_eq!(o.rx, default_rx());
        assert_eq!(o.state.pending.len(), 2, "both still wait: {:?}", o.state.pending);
        let _ = RxParamSetupReq { rx1_dr_offset: 0, rx2_dr: 0, frequency: 0 };
    }

    /// An AS923 OTAA device that knows the default plan, run against `region`.
    fn run_as923(region: &dyn Region, state: &MacState, up: &UplinkFacts) -> MacOutput {
        let s =
            MacSettings { desired_rx: RxParams::region_defaults(region), extra_channels: region.default_extra_channels(), ..settings() };
        let rx = RxParams::region_defaults(region);
        run(&MacInput { region, state, rx, is_otaa: true, uplink: up, adr_target: None, settings: &s, now: now() })
    }

    #[test]
    fn tx_param_setup_is_sent_only_when_the_believed_dwell_time_differs_from_the_configured_one() {
        use crate::region::{As923, As923Variant, DwellTime};
        let as923 = As923::new(As923Variant::As923_2);
        let joined = MacState::after_join(&as923, &as923.default_extra_channels());
        // Configured as RP002 says devices start: nothing to say.
        assert!(run_as923(&as923, &joined, &uplink(vec![])).candidates.is_empty());
        // EU868 has no TxParamSetupReq.
        assert!(run_with(&settled(), default_rx(), &uplink(vec![]), None, &settings()).candidates.is_empty());

        let cases = [
            (DwellTime { uplink: false, downlink: false }, false, false),
            (DwellTime { uplink: true, downlink: true }, true, true),
            (DwellTime { uplink: false, downlink: true }, false, true),
        ];
        for (dwell, up, down) in cases {
            let r = As923::with_dwell(As923Variant::As923_2, dwell);
            let o = run_as923(&r, &joined, &uplink(vec![]));
            let want = Request::TxParamSetup { uplink_dwell_time: up, downlink_dwell_time: down, max_eirp_index: 5 };
            assert_eq!(requests(&o), vec![want.clone()], "{dwell:?}");
            assert_eq!(
                want.commands(),
                vec![DownlinkMacCommand::TxParamSetupReq(crate::mac::TxParamSetupReq {
                    downlink_dwell_time: down,
                    uplink_dwell_time: up,
                    max_eirp_index: 5
                })]
            );

            let sent = record_sent(&o.state, &o.candidates.iter().collect::<Vec<_>>(), 1, 10, now());
            // Not answered yet: the device still follows the old limits; sent again.
            let again = run_as923(&r, &sent, &uplink(vec![]));
            assert_eq!(again.state.tx_params, None);
            assert_eq!(requests(&again), vec![want.clone()]);
            // The empty answer confirms it; nothing more to send.
            let o = run_as923(&r, &sent, &uplink(vec![UplinkMacCommand::TxParamSetupAns]));
            assert_eq!(o.counts, vec![(MacCommandName::TxParamSetupReq, Outcome::Answered)]);
            assert_eq!(o.state.tx_params, Some(crate::region::TxParams { dwell_time: dwell, max_eirp_index: 5 }));
            assert_eq!(o.state.tx_params_or_initial(&r), Some(crate::region::TxParams { dwell_time: dwell, max_eirp_index: 5 }));
            assert!(o.state.pending.is_empty());
            assert!(requests(&o).is_empty(), "{:?}", o.candidates);
        }
    }

    #[test]
    fn tx_param_setup_goes_after_rx_settings_and_before_channels() {
        use crate::region::{As923, As923Variant, DwellTime};
        let r = As923::with_dwell(As923Variant::As923_1, DwellTime::default());
        let s = MacSettings {
            desired_rx: RxParams { rx1_delay: 2, ..RxParams::region_defaults(&r) },
            extra_channels: vec![922_000_000],
            dev_status_req_freq: 1,
            ..settings()
        };
        let state = MacState::after_join(&r, &[]);
        let rx = RxParams::region_defaults(&r);
        let o = run(&MacInput {
            region: &r,
            state: &state,
            rx,
            is_otaa: true,
            uplink: &uplink(vec![]),
            adr_target: None,
            settings: &s,
            now: now(),
        });
        let names: Vec<MacCommandName> = o.candidates.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            vec![
                MacCommandName::RxTimingSetupReq,
                MacCommandName::TxParamSetupReq,
                MacCommandName::NewChannelReq,
                MacCommandName::DevStatusReq
            ]
        );
    }

    #[test]
    fn a_tx_param_setup_request_round_trips_through_the_stored_state() {
        let req = Request::TxParamSetup { uplink_dwell_time: false, downlink_dwell_time: true, max_eirp_index: 5 };
        let state = MacState { pending: vec![Pending { request: req.clone(), attempts: 1, ..Pending::default() }], ..MacState::default() };
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains(r#""cmd":"tx_param_setup""#), "{json}");
        assert_eq!(serde_json::from_str::<MacState>(&json).unwrap().pending[0].request, req);
        // A state without acknowledged TX parameters does not store the field.
        assert!(!serde_json::to_string(&MacState::default()).unwrap().contains("tx_params"));
    }

    #[test]
    fn record_sent_puts_the_frame_order_first_and_counts_attempts() {
        let a = Request::NewChannel { index: 3, frequency: 867_100_000, min_dr: 0, max_dr: 5 };
        let b = Request::NewChannel { index: 4, frequency: 867_300_000, min_dr: 0, max_dr: 5 };
        let state = MacState {
            pending: vec![
                Pending { request: a.clone(), attempts: 1, f_cnt_down: 1, ..Pending::default() },
                Pending { request: b.clone(), attempts: 2, f_cnt_down: 1, ..Pending::default() },
            ],
            ..MacState::default()
        };
        let cb = Candidate::Request(b.clone());
        let s = record_sent(&state, &[&cb], 5, 11, now());
        assert_eq!(s.pending.iter().map(|p| (p.request.clone(), p.attempts, p.f_cnt_down)).collect::<Vec<_>>(), vec![(b, 3, 5), (a, 1, 1)]);
    }
}
