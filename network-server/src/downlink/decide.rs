//! The downlink decision (pure): from a session, its queue and one data uplink, what the
//! receive windows carry and why. No database, no gateway, no clock: `now` is an input.
//!
//! Rules, in order:
//! 1. A pending confirmed queue item is settled: ACKed, expired (deadline passed or
//!    `max_confirmed_transmissions` sent), or sent again first.
//! 2. The MAC engine (`mac::engine`) matches the uplink's answers and lists candidate commands.
//! 3. A queue item larger than the RX1 data rate's N (RP002-1.0.3 §2.4.6) is dropped; the
//!    next one is considered.
//! 4. With a queue item, MAC commands ride in FOpts (at most 15 bytes, and item + FOpts ≤ N);
//!    without one, they go in FOpts when they fit 15 bytes, else on FPort 0 up to N bytes
//!    (LoRaWAN 1.0.4 §4.3.1.6). Lower-priority commands are left out rather than exceed a limit.
//! 5. A downlink goes out when the uplink was confirmed (ACK), asked ADRACKReq (any downlink
//!    answers it, LoRaWAN 1.0.4 §4.3.1.1), carried RXParamSetupAns or RXTimingSetupAns (the
//!    device repeats them in every uplink until a downlink arrives, §5.4, §5.7), or there are
//!    MAC commands or an item to send.

use chrono::{DateTime, Utc};

use crate::downlink_attempts::RxWindow;
use crate::mac::adr::{self, AdrDecision, AdrDirection, AdrInput, UplinkMetric};
use crate::mac::engine::{self, Candidate, MacInput, MacOutput, MacSettings, UplinkFacts};
use crate::mac::state::{AdrTarget, MacState, Request, RxParams};
use crate::mac::{encode_all, DownlinkMacCommand, UplinkMacCommand};
use crate::region::Region;
use crate::storage::{DeviceSession, QueueItem};

/// Most FOpts bytes (FCtrl.FOptsLen is 4 bits).
pub const MAX_F_OPTS: usize = 15;

/// One receive window's radio parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub name: RxWindow,
    pub delay_us: u32,
    pub frequency: u32,
    pub dr: u8,
}

/// RX1 and RX2 for a Class A downlink answering an uplink at `uplink_freq`/`uplink_dr`.
pub fn class_a_windows(region: &dyn Region, rx: RxParams, uplink_freq: u32, uplink_dr: u8) -> Option<[Window; 2]> {
    let delay = u32::from(rx.rx1_delay.max(1));
    let rx1_dr = region.rx1_dr(uplink_dr, rx.rx1_dr_offset).ok()?;
    let rx1_frequency = region.rx1_frequency(uplink_freq).ok()?;
    Some([
        Window { name: RxWindow::Rx1, delay_us: delay * 1_000_000, frequency: rx1_frequency, dr: rx1_dr },
        Window { name: RxWindow::Rx2, delay_us: (delay + 1) * 1_000_000, frequency: rx.rx2_frequency, dr: rx.rx2_dr },
    ])
}

pub fn session_rx(s: &DeviceSession) -> RxParams {
    RxParams { rx1_delay: s.rx1_delay, rx1_dr_offset: s.rx1_dr_offset, rx2_dr: s.rx2_dr, rx2_frequency: s.rx2_frequency }
}

pub struct DownlinkInput<'a> {
    pub region: &'a dyn Region,
    pub session: &'a DeviceSession,
    /// The device's queue, oldest first (empty when only acknowledging).
    pub queue: &'a [QueueItem],
    pub uplink: &'a UplinkFacts,
    /// The uplink repeats one already handled (a confirmed retransmission or an NbTrans
    /// repeat): only the ACK is due; queue and MAC state are left alone.
    pub ack_only: bool,
    /// Device profile `adrEnabled`: with the uplink's ADR bit, sets ADR in the downlink.
    pub adr_enabled: bool,
    pub adr_target: Option<AdrTarget>,
    pub settings: &'a MacSettings,
    pub max_confirmed_transmissions: u32,
    pub now: DateTime<Utc>,
}

/// A pending confirmed item the uplink settles.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub item: QueueItem,
    pub acknowledged: bool,
}

/// Why a downlink is sent (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Ack,
    AdrAckReq,
    /// Stops the device repeating RXParamSetupAns / RXTimingSetupAns.
    StickyAnswer,
    MacCommands,
    QueueItem,
}

/// The frame to build and send.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub ack: bool,
    pub adr: bool,
    pub f_pending: bool,
    pub item: Option<QueueItem>,
    /// The chosen MAC candidates (indices into `MacOutput::candidates`), in frame order.
    pub mac: Vec<usize>,
    /// MAC commands go in FRMPayload on FPort 0 instead of FOpts.
    pub mac_on_f_port_0: bool,
    pub why: Vec<Why>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DownlinkDecision {
    pub settled: Option<Settled>,
    /// Items that cannot fit the RX1 data rate, with the limit they exceeded.
    pub too_large: Vec<(QueueItem, usize)>,
    pub mac: MacOutput,
    pub windows: Option<[Window; 2]>,
    pub send: Option<Planned>,
}

impl DownlinkDecision {
    pub fn mac_commands(&self) -> Vec<DownlinkMacCommand> {
        let Some(p) = &self.send else { return Vec::new() };
        p.mac.iter().flat_map(|&i| self.mac.candidates[i].commands()).collect()
    }

    /// Whether the application or the device waits for this downlink (a queue item, an ACK,
    /// an answer to ADRACKReq or to a device's MAC request), rather than only the server
    /// for its own MAC requests.
    pub fn awaited_by_device(&self) -> bool {
        let Some(p) = &self.send else { return false };
        p.why.iter().any(|w| matches!(w, Why::Ack | Why::AdrAckReq | Why::QueueItem))
            || p.mac.iter().any(|&i| matches!(self.mac.candidates[i], Candidate::Answer(_)))
    }

    /// (FOpts, FPort, FRMPayload) of the planned frame.
    pub fn frame_parts(&self) -> (Vec<u8>, Option<u8>, Vec<u8>) {
        let Some(p) = &self.send else { return (Vec::new(), None, Vec::new()) };
        let mac = encode_all(&self.mac_commands());
        match (&p.item, p.mac_on_f_port_0) {
            (Some(item), _) => (mac, Some(item.f_port), item.data.clone()),
            (None, true) => (Vec::new(), Some(0), mac),
            (None, false) => (mac, None, Vec::new()),
        }
    }

    /// The MAC state to store once the planned frame went out with `f_cnt_down`.
    pub fn state_after_send(&self, f_cnt_down: u32, f_cnt_up: u32, now: DateTime<Utc>) -> MacState {
        let Some(p) = &self.send else { return self.mac.state.clone() };
        let sent: Vec<&Candidate> = p.mac.iter().map(|&i| &self.mac.candidates[i]).collect();
        engine::record_sent(&self.mac.state, &sent, f_cnt_down, f_cnt_up, now)
    }
}

/// Settles a pending confirmed item; returns it and the queue in sending order.
fn settle(queue: &[QueueItem], device_acked: bool, now: DateTime<Utc>, max: u32) -> (Option<Settled>, Vec<QueueItem>) {
    let mut items = queue.to_vec();
    let Some(pos) = items.iter().position(|i| i.is_pending) else { return (None, items) };
    let item = items.remove(pos);
    let expired = item.timeout_at.is_some_and(|t| t <= now) || item.retries >= max;
    if device_acked || expired {
        (Some(Settled { item, acknowledged: device_acked }), items)
    } else {
        // Not acknowledged yet: sent again in this uplink's windows.
        items.insert(0, item);
        (None, items)
    }
}

pub fn decide(input: &DownlinkInput) -> DownlinkDecision {
    let up = input.uplink;
    let rx = session_rx(input.session);
    let mac = if input.ack_only {
        MacOutput {
            state: input.session.mac_state.clone(),
            rx,
            candidates: Vec::new(),
            logs: Vec::new(),
            counts: Vec::new(),
            dev_status: None,
            notes: Vec::new(),
        }
    } else {
        engine::run(&MacInput {
            region: input.region,
            state: &input.session.mac_state,
            rx,
            is_otaa: input.session.is_otaa,
            uplink: up,
            adr_target: input.adr_target,
            settings: input.settings,
            now: input.now,
        })
    };
    let (settled, mut items) =
        if input.ack_only { (None, Vec::new()) } else { settle(input.queue, up.ack, input.now, input.max_confirmed_transmissions) };

    // Downlinks use the RX settings the device acknowledged, this uplink's answers included.
    let windows = class_a_windows(input.region, mac.rx, up.frequency, up.dr);
    let mut decision = DownlinkDecision { settled, too_large: Vec::new(), mac, windows, send: None };
    let Some(windows) = windows else { return decision };
    let n = input.region.max_payload_size(windows[0].dr).map_or(0, |m| m.n);

    while items.first().is_some_and(|i| i.data.len() > n) {
        decision.too_large.push((items.remove(0), n));
    }
    let item = items.first().cloned();
    let candidates = &decision.mac.candidates;
    let (mac, mac_on_f_port_0) = match &item {
        Some(i) => (engine::select(candidates, MAX_F_OPTS.min(n - i.data.len())), false),
        None => {
            let all_len: usize = candidates.iter().map(|c| c.encoded_len()).sum();
            if all_len <= MAX_F_OPTS {
                ((0..candidates.len()).collect(), false)
            } else {
                let chosen = engine::select(candidates, n);
                let len: usize = chosen.iter().map(|&i| candidates[i].encoded_len()).sum();
                (chosen, len > MAX_F_OPTS)
            }
        }
    };

    let mut why = Vec::new();
    if up.confirmed {
        why.push(Why::Ack);
    }
    if up.adr_ack_req && !input.ack_only {
        why.push(Why::AdrAckReq);
    }
    let sticky = up.commands.iter().any(|c| matches!(c, UplinkMacCommand::RxParamSetupAns(_) | UplinkMacCommand::RxTimingSetupAns));
    if sticky && !input.ack_only {
        why.push(Why::StickyAnswer);
    }
    if !mac.is_empty() {
        why.push(Why::MacCommands);
    }
    if item.is_some() {
        why.push(Why::QueueItem);
    }
    if why.is_empty() {
        return decision;
    }
    decision.send =
        Some(Planned { ack: up.confirmed, adr: up.adr && input.adr_enabled, f_pending: items.len() > 1, item, mac, mac_on_f_port_0, why });
    decision
}

/// The device profile's ADR knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdrProfile {
    /// `adrEnabled`
    pub enabled: bool,
    pub min_dr: u8,
    pub max_dr: u8,
    pub installation_margin_db: f32,
}

/// What ADR made of one uplink: the settings the session believes the device uses and the
/// ones the algorithm wants (equal when nothing should change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdrOutcome {
    pub believed: AdrDecision,
    pub decided: AdrDecision,
}

impl AdrOutcome {
    /// The engine's input: a target only when something should change.
    pub fn target(&self) -> Option<AdrTarget> {
        let d = self.decided;
        (d != self.believed).then_some(AdrTarget { dr: d.dr, tx_power_index: d.tx_power_index, nb_trans: d.nb_trans })
    }

    pub fn direction(&self) -> AdrDirection {
        adr::direction(self.believed, self.decided)
    }
}

/// The ADR step of a data uplink (pure; LoRaWAN 1.0.4 §4.3.1.1): for a device whose uplink has
/// the ADR bit and whose profile enables ADR, the uplink joins the session's history (`state`
/// is changed) and the algorithm runs. Nothing happens without the ADR bit or with ADR off:
/// the server never sends such a device a LinkADRReq.
///
/// What the session believes: the data rate is the one the uplink arrived at (the device's
/// own ADRACKReq backoff moves it without telling us), TX power and NbTrans are those of the
/// last acknowledged LinkADRReq. While a LinkADRReq waits for its answer the algorithm does
/// not run (`None`): the device may already use the new settings, and the answer decides what
/// is believed; the next uplink decides again from there.
pub fn adr_step(region: &dyn Region, state: &mut MacState, up: &UplinkFacts, profile: &AdrProfile) -> Option<AdrOutcome> {
    if !(up.adr && profile.enabled) {
        return None;
    }
    state.adr_history.push(UplinkMetric {
        f_cnt: up.f_cnt,
        max_snr: up.link.best_snr,
        tx_power_index: state.tx_power_index,
        gateway_count: up.link.gateway_count,
    });
    state.adr_history_unsaved = state.adr_history_unsaved.saturating_add(1);
    if state.pending.iter().any(|p| matches!(p.request, Request::LinkAdr { .. })) {
        return None;
    }
    let input = AdrInput {
        region,
        dr: up.dr,
        tx_power_index: state.tx_power_index,
        nb_trans: state.nb_trans,
        min_dr: profile.min_dr,
        max_dr: profile.max_dr,
        installation_margin_db: profile.installation_margin_db,
        history: &state.adr_history,
    };
    Some(AdrOutcome { believed: input.current(), decided: adr::decide(&input) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::MacContext;
    use crate::region::Eu868;
    use crate::types::{AesKey, DevAddr, Eui64};

    fn default_rx() -> RxParams {
        RxParams::region_defaults(&Eu868)
    }

    fn now() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    fn session() -> DeviceSession {
        DeviceSession {
            dev_eui: Eui64([1; 8]),
            dev_addr: DevAddr([0x26, 1, 2, 3]),
            mac_version: "1.0.3".into(),
            f_nwk_s_int_key: AesKey::default(),
            s_nwk_s_int_key: AesKey::default(),
            nwk_s_enc_key: AesKey::default(),
            app_s_key: AesKey::default(),
            f_cnt_up: 11,
            n_f_cnt_down: 0,
            rx1_delay: 1,
            rx1_dr_offset: 0,
            rx2_dr: 0,
            rx2_frequency: 869_525_000,
            pending_ack_f_cnt: None,
            is_otaa: true,
            mac_state: MacState::after_join(&Eu868, &Eu868.default_extra_channels()),
            created_at: now(),
            updated_at: now(),
        }
    }

    fn settings() -> MacSettings {
        MacSettings {
            desired_rx: default_rx(),
            extra_channels: Eu868.default_extra_channels(),
            confined_channels: None,
            max_attempts: 3,
            max_duty_cycle: None,
            dev_status_req_freq: 0,
            adr_enabled: false,
        }
    }

    fn uplink() -> UplinkFacts {
        UplinkFacts {
            f_cnt: 10,
            dr: 5,
            frequency: 868_300_000,
            adr: false,
            adr_ack_req: false,
            confirmed: false,
            ack: false,
            commands: Vec::new(),
            link: MacContext { best_snr: 5.0, spreading_factor: Some(7), gateway_count: 1, rx_time: now() },
        }
    }

    fn item(len: usize, confirmed: bool) -> QueueItem {
        QueueItem {
            id: uuid::Uuid::new_v4(),
            dev_eui: Eui64([1; 8]),
            f_port: 10,
            confirmed,
            data: vec![0xab; len],
            f_cnt_down: None,
            is_pending: false,
            timeout_at: None,
            retries: 0,
            created_at: now(),
        }
    }

    fn decide_with(session: &DeviceSession, queue: &[QueueItem], up: &UplinkFacts, s: &MacSettings, adr_enabled: bool) -> DownlinkDecision {
        decide(&DownlinkInput {
            region: &Eu868,
            session,
            queue,
            uplink: up,
            ack_only: false,
            adr_enabled,
            adr_target: None,
            settings: s,
            max_confirmed_transmissions: 3,
            now: now(),
        })
    }

    #[test]
    fn class_a_windows_follow_rp002_for_eu868() {
        let w = class_a_windows(&Eu868, default_rx(), 868_300_000, 5).unwrap();
        assert_eq!(w[0], Window { name: RxWindow::Rx1, delay_us: 1_000_000, frequency: 868_300_000, dr: 5 });
        assert_eq!(w[1], Window { name: RxWindow::Rx2, delay_us: 2_000_000, frequency: 869_525_000, dr: 0 });
        let rx = RxParams { rx1_delay: 5, rx1_dr_offset: 2, rx2_dr: 3, rx2_frequency: 869_525_000 };
        let w = class_a_windows(&Eu868, rx, 868_100_000, 5).unwrap();
        assert_eq!((w[0].delay_us, w[0].dr), (5_000_000, 3));
        assert_eq!((w[1].delay_us, w[1].dr), (6_000_000, 3));
    }

    #[test]
    fn when_a_downlink_is_sent_and_why() {
        let s = settings();
        // (confirmed, ADRACKReq, LinkCheckReq, queue item) -> reasons
        type Case = ((bool, bool, bool, bool), Vec<Why>);
        let cases: [Case; 6] = [
            ((false, false, false, false), vec![]),
            ((true, false, false, false), vec![Why::Ack]),
            ((false, true, false, false), vec![Why::AdrAckReq]),
            ((false, false, true, false), vec![Why::MacCommands]),
            ((false, false, false, true), vec![Why::QueueItem]),
            ((true, true, true, true), vec![Why::Ack, Why::AdrAckReq, Why::MacCommands, Why::QueueItem]),
        ];
        for ((confirmed, adr_ack_req, link_check, queued), want) in cases {
            let mut up = uplink();
            up.confirmed = confirmed;
            up.adr_ack_req = adr_ack_req;
            if link_check {
                up.commands.push(UplinkMacCommand::LinkCheckReq);
            }
            let queue = if queued { vec![item(5, false)] } else { vec![] };
            let d = decide_with(&session(), &queue, &up, &s, false);
            assert_eq!(d.send.as_ref().map(|p| p.why.clone()).unwrap_or_default(), want, "{confirmed} {adr_ack_req} {link_check} {queued}");
            if let Some(p) = &d.send {
                assert_eq!(p.ack, confirmed);
            }
        }
    }

    #[test]
    fn only_downlinks_a_device_or_application_waits_for_are_awaited_by_the_device() {
        let s = settings();
        // (confirmed, ADRACKReq, LinkCheckReq, queue item, ABP: the server's NewChannelReq) -> awaited
        let cases = [
            ((false, false, false, false, true), false),
            ((true, false, false, false, false), true),
            ((false, true, false, false, false), true),
            ((false, false, true, false, false), true),
            ((false, false, false, true, false), true),
            ((false, false, false, false, false), false),
        ];
        for ((confirmed, adr_ack_req, link_check, queued, abp), want) in cases {
            let mut up = uplink();
            up.confirmed = confirmed;
            up.adr_ack_req = adr_ack_req;
            if link_check {
                up.commands.push(UplinkMacCommand::LinkCheckReq);
            }
            let mut session = session();
            if abp {
                session.is_otaa = false;
                session.mac_state = MacState::default();
            }
            let queue = if queued { vec![item(5, false)] } else { vec![] };
            let d = decide_with(&session, &queue, &up, &s, false);
            assert_eq!(d.awaited_by_device(), want, "{confirmed} {adr_ack_req} {link_check} {queued} {abp}");
            assert_eq!(d.send.is_some(), want || abp, "a downlink is planned");
        }
    }

    #[test]
    fn an_rx_setup_answer_gets_a_downlink_so_that_the_device_stops_repeating_it() {
        for answer in [
            UplinkMacCommand::RxTimingSetupAns,
            UplinkMacCommand::RxParamSetupAns(crate::mac::RxParamSetupAns { rx1_dr_offset_ack: true, rx2_dr_ack: true, channel_ack: true }),
        ] {
            let mut up = uplink();
            up.commands.push(answer);
            let d = decide_with(&session(), &[], &up, &settings(), false);
            assert_eq!(d.send.map(|p| p.why), Some(vec![Why::StickyAnswer]), "{answer:?}");
        }
    }

    #[test]
    fn an_adr_ack_req_with_nothing_due_gets_an_empty_downlink() {
        let mut up = uplink();
        up.adr_ack_req = true;
        up.adr = true;
        let d = decide_with(&session(), &[], &up, &settings(), true);
        let p = d.send.as_ref().expect("a downlink");
        assert!(p.adr, "ADR bit echoed when the profile allows ADR");
        assert_eq!(d.frame_parts(), (vec![], None, vec![]));
        let d = decide_with(&session(), &[], &up, &settings(), false);
        assert!(!d.send.unwrap().adr);
    }

    #[test]
    fn mac_commands_go_in_f_opts_up_to_15_bytes_else_on_f_port_0() {
        // An ABP device with the default plan gets five NewChannelReq (6 bytes each).
        let mut abp = session();
        abp.is_otaa = false;
        abp.mac_state = MacState::default();
        let d = decide_with(&abp, &[], &uplink(), &settings(), false);
        let (f_opts, f_port, payload) = d.frame_parts();
        assert_eq!((f_opts.len(), f_port, payload.len()), (0, Some(0), 30));
        // With an application payload they ride in FOpts, as many as fit 15 bytes.
        let d = decide_with(&abp, &[item(10, false)], &uplink(), &settings(), false);
        let (f_opts, f_port, payload) = d.frame_parts();
        assert_eq!((f_opts.len(), f_port, payload.len()), (12, Some(10), 10));
        // Few enough: FOpts without FPort.
        let mut up = uplink();
        up.commands.push(UplinkMacCommand::LinkCheckReq);
        let d = decide_with(&session(), &[], &up, &settings(), false);
        let (f_opts, f_port, payload) = d.frame_parts();
        assert_eq!((f_opts[0], f_opts.len(), f_port, payload.len()), (0x02, 3, None, 0));
    }

    #[test]
    fn the_rx1_payload_limit_covers_mac_commands_and_drops_items_that_cannot_fit() {
        let mut abp = session();
        abp.is_otaa = false;
        abp.mac_state = MacState::default();
        let mut up = uplink();
        up.dr = 0; // N = 51
                   // 48 bytes leave 3 for FOpts: no NewChannelReq (6 bytes) fits.
        let d = decide_with(&abp, &[item(48, false), item(3, false)], &up, &settings(), false);
        let (f_opts, f_port, payload) = d.frame_parts();
        assert_eq!((f_opts.len(), f_port, payload.len()), (0, Some(10), 48));
        assert!(d.send.as_ref().unwrap().f_pending);
        // An item larger than N is dropped and the next one is sent.
        let d = decide_with(&session(), &[item(52, false), item(20, false)], &up, &settings(), false);
        assert_eq!(d.too_large.len(), 1);
        assert_eq!(d.too_large[0].1, 51);
        assert_eq!(d.send.unwrap().item.unwrap().data.len(), 20);
    }

    #[test]
    fn a_pending_confirmed_item_is_acked_expired_or_sent_again() {
        let mut pending = item(4, true);
        pending.is_pending = true;
        pending.retries = 1;
        pending.timeout_at = Some(now() + chrono::Duration::seconds(30));
        let mut up = uplink();
        up.ack = true;
        let d = decide_with(&session(), &[pending.clone()], &up, &settings(), false);
        assert_eq!(d.settled, Some(Settled { item: pending.clone(), acknowledged: true }));
        assert!(d.send.is_none());

        let d = decide_with(&session(), &[item(2, false), pending.clone()], &uplink(), &settings(), false);
        assert_eq!(d.settled, None);
        assert_eq!(d.send.unwrap().item.unwrap().id, pending.id, "resent first");

        let mut old = pending.clone();
        old.timeout_at = Some(now());
        let d = decide_with(&session(), &[old.clone()], &uplink(), &settings(), false);
        assert_eq!(d.settled, Some(Settled { item: old, acknowledged: false }));
        let mut tired = pending;
        tired.retries = 3;
        let d = decide_with(&session(), &[tired.clone()], &uplink(), &settings(), false);
        assert_eq!(d.settled, Some(Settled { item: tired, acknowledged: false }));
    }

    #[test]
    fn downlinks_keep_the_acknowledged_rx_settings_until_the_device_answers() {
        let s = MacSettings { desired_rx: RxParams { rx2_frequency: 869_100_000, rx2_dr: 3, ..default_rx() }, ..settings() };
        let d = decide_with(&session(), &[], &uplink(), &s, false);
        assert_eq!(d.windows.unwrap()[1].frequency, 869_525_000);
        let sent = d.state_after_send(0, 10, now());
        let mut next = session();
        next.mac_state = sent;
        let mut up = uplink();
        up.commands.push(UplinkMacCommand::RxParamSetupAns(crate::mac::RxParamSetupAns {
            rx1_dr_offset_ack: true,
            rx2_dr_ack: true,
            channel_ack: true,
        }));
        let d = decide_with(&next, &[], &up, &s, false);
        let w = d.windows.unwrap();
        assert_eq!((w[1].frequency, w[1].dr), (869_100_000, 3));
    }

    #[test]
    fn only_acknowledging_leaves_queue_and_mac_state_alone() {
        let mut up = uplink();
        up.confirmed = true;
        up.commands.push(UplinkMacCommand::LinkCheckReq);
        let d = decide(&DownlinkInput {
            region: &Eu868,
            session: &session(),
            queue: &[item(3, false)],
            uplink: &up,
            ack_only: true,
            adr_enabled: false,
            adr_target: None,
            settings: &settings(),
            max_confirmed_transmissions: 3,
            now: now(),
        });
        let p = d.send.as_ref().unwrap();
        assert_eq!(p.why, vec![Why::Ack]);
        assert!(p.item.is_none() && p.mac.is_empty());
        assert_eq!(d.mac.state, session().mac_state);
    }

    fn adr_profile(enabled: bool) -> AdrProfile {
        AdrProfile { enabled, min_dr: 0, max_dr: 5, installation_margin_db: 10.0 }
    }

    fn adr_uplink(adr: bool, dr: u8, snr: f32) -> UplinkFacts {
        UplinkFacts { adr, dr, link: MacContext { best_snr: snr, ..uplink().link }, ..uplink() }
    }

    #[test]
    fn adr_runs_only_for_uplinks_with_the_adr_bit_and_a_profile_that_enables_it() {
        let decision = |dr, tx_power_index, nb_trans| AdrDecision { dr, tx_power_index, nb_trans };
        // (ADR bit, profile, uplink DR, SNR) -> outcome
        let cases = [
            (false, true, 0, 10.0, None),
            (true, false, 0, 10.0, None),
            // 10 - (-20) - 10 = 20 dB: six steps, five on the data rate, one on the power.
            (true, true, 0, 10.0, Some((decision(0, 0, 1), decision(5, 1, 1)))),
            // DR5 with -7.5 + 10 + 1 dB: inside one step, nothing changes.
            (true, true, 5, 3.5, Some((decision(5, 0, 1), decision(5, 0, 1)))),
        ];
        for (adr_bit, enabled, dr, snr, want) in cases {
            let mut state = session().mac_state;
            let got = adr_step(&Eu868, &mut state, &adr_uplink(adr_bit, dr, snr), &adr_profile(enabled));
            assert_eq!(got.map(|o| (o.believed, o.decided)), want, "ADR bit {adr_bit}, profile {enabled}, DR{dr}, SNR {snr}");
            let ran = want.is_some();
            assert_eq!((state.adr_history.len(), state.adr_history_unsaved), (usize::from(ran), u8::from(ran)));
            assert_eq!(got.and_then(|o| o.target()).is_some(), want.is_some_and(|(b, d)| b != d));
        }
    }

    #[test]
    fn adr_waits_for_the_answer_to_a_pending_link_adr_req_but_keeps_the_uplink() {
        let mut state = session().mac_state;
        state.pending.push(crate::mac::state::Pending {
            request: Request::LinkAdr { dr: 5, tx_power_index: 1, nb_trans: 1, masks: Vec::new() },
            attempts: 1,
            ..Default::default()
        });
        assert_eq!(adr_step(&Eu868, &mut state, &adr_uplink(true, 0, 10.0), &adr_profile(true)), None);
        assert_eq!(state.adr_history.len(), 1);
    }

    #[test]
    fn adr_believes_the_uplink_data_rate_and_the_acknowledged_power() {
        let mut state = session().mac_state;
        state.dr = Some(5);
        state.tx_power_index = 2;
        state.nb_trans = 2;
        // The device backed off to DR3 by itself: the algorithm starts from DR3.
        let o = adr_step(&Eu868, &mut state, &adr_uplink(true, 3, -20.0), &adr_profile(true)).unwrap();
        assert_eq!(o.believed, AdrDecision { dr: 3, tx_power_index: 2, nb_trans: 2 });
        assert_eq!(o.direction(), AdrDirection::Same);
        assert_eq!(state.adr_history.iter().next().map(|m| m.tx_power_index), Some(2));
    }

    #[test]
    fn the_adr_history_alone_is_written_every_few_uplinks_and_any_other_change_at_once() {
        let stored = session().mac_state;
        let mut state = stored.clone();
        for f in 0..u32::from(crate::mac::state::ADR_HISTORY_SAVE_EVERY) {
            assert!(!state.needs_saving(&stored), "after {f} uplinks");
            adr_step(&Eu868, &mut state, &UplinkFacts { f_cnt: f, ..adr_uplink(true, 5, 3.5) }, &adr_profile(true));
        }
        assert!(state.needs_saving(&stored));
        let changed = MacState { nb_trans: 2, ..stored.clone() };
        assert!(changed.needs_saving(&stored));
    }
}
