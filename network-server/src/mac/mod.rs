//! LoRaWAN 1.0.x MAC commands (LoRaWAN 1.0.3 §5): parsing what devices send, encoding what
//! the server sends, and the server's immediate answers.
//!
//! One file per command pair. [`parse_uplink_commands`] reads FOpts or an FPort 0 payload;
//! [`handle`] turns the parsed commands into answers (LinkCheckAns, DeviceTimeAns) and notes;
//! answers to requests the server sent (LinkADRAns…) are reported for the caller's state
//! machine, not acted on here.

pub mod adr;
pub mod dev_status;
pub mod device_time;
pub mod dl_channel;
pub mod duty_cycle;
pub mod engine;
pub mod link_adr;
pub mod link_check;
pub mod new_channel;
#[cfg(test)]
mod proptests;
pub mod rx_param_setup;
pub mod rx_timing_setup;
pub mod state;
pub mod tx_param_setup;

use chrono::{DateTime, Utc};

pub use dev_status::DevStatusAns;
pub use device_time::DeviceTimeAns;
pub use dl_channel::{DlChannelAns, DlChannelReq};
pub use duty_cycle::DutyCycleReq;
pub use link_adr::{LinkAdrAns, LinkAdrReq};
pub use link_check::LinkCheckAns;
pub use new_channel::{NewChannelAns, NewChannelReq};
pub use rx_param_setup::{RxParamSetupAns, RxParamSetupReq};
pub use rx_timing_setup::RxTimingSetupReq;
pub use tx_param_setup::TxParamSetupReq;

/// Command identifiers (LoRaWAN 1.0.3 §5, Table 4). Req and Ans of a pair share the CID.
pub mod cid {
    pub const LINK_CHECK: u8 = 0x02;
    pub const LINK_ADR: u8 = 0x03;
    pub const DUTY_CYCLE: u8 = 0x04;
    pub const RX_PARAM_SETUP: u8 = 0x05;
    pub const DEV_STATUS: u8 = 0x06;
    pub const NEW_CHANNEL: u8 = 0x07;
    pub const RX_TIMING_SETUP: u8 = 0x08;
    pub const TX_PARAM_SETUP: u8 = 0x09;
    pub const DL_CHANNEL: u8 = 0x0a;
    pub const DEVICE_TIME: u8 = 0x0d;
}

/// A command's name as the specification writes it: the `command` label of
/// `loraflow_mac_commands_total` and the name in `log` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacCommandName {
    LinkCheckAns,
    LinkAdrReq,
    DutyCycleReq,
    RxParamSetupReq,
    DevStatusReq,
    NewChannelReq,
    RxTimingSetupReq,
    TxParamSetupReq,
    DlChannelReq,
    DeviceTimeAns,
}

impl MacCommandName {
    /// Every command the network server sends.
    pub const ALL: [MacCommandName; 10] = [
        MacCommandName::LinkCheckAns,
        MacCommandName::LinkAdrReq,
        MacCommandName::DutyCycleReq,
        MacCommandName::RxParamSetupReq,
        MacCommandName::DevStatusReq,
        MacCommandName::NewChannelReq,
        MacCommandName::RxTimingSetupReq,
        MacCommandName::TxParamSetupReq,
        MacCommandName::DlChannelReq,
        MacCommandName::DeviceTimeAns,
    ];

    /// Whether the device answers it (a request), so it can also be answered, refused
    /// (`nak`) or never answered.
    pub fn is_request(&self) -> bool {
        !matches!(self, MacCommandName::LinkCheckAns | MacCommandName::DeviceTimeAns)
    }

    pub fn as_str(&self) -> &'static str {
        use MacCommandName as N;
        match self {
            N::LinkCheckAns => "LinkCheckAns",
            N::LinkAdrReq => "LinkADRReq",
            N::DutyCycleReq => "DutyCycleReq",
            N::RxParamSetupReq => "RXParamSetupReq",
            N::DevStatusReq => "DevStatusReq",
            N::NewChannelReq => "NewChannelReq",
            N::RxTimingSetupReq => "RXTimingSetupReq",
            N::TxParamSetupReq => "TxParamSetupReq",
            N::DlChannelReq => "DlChannelReq",
            N::DeviceTimeAns => "DeviceTimeAns",
        }
    }
}

impl std::fmt::Display for MacCommandName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command sent by an end-device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkMacCommand {
    LinkCheckReq,
    LinkAdrAns(LinkAdrAns),
    DutyCycleAns,
    RxParamSetupAns(RxParamSetupAns),
    DevStatusAns(DevStatusAns),
    NewChannelAns(NewChannelAns),
    RxTimingSetupAns,
    TxParamSetupAns,
    DlChannelAns(DlChannelAns),
    DeviceTimeReq,
}

/// A command sent by the network server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownlinkMacCommand {
    LinkCheckAns(LinkCheckAns),
    LinkAdrReq(LinkAdrReq),
    DutyCycleReq(DutyCycleReq),
    RxParamSetupReq(RxParamSetupReq),
    DevStatusReq,
    NewChannelReq(NewChannelReq),
    RxTimingSetupReq(RxTimingSetupReq),
    TxParamSetupReq(TxParamSetupReq),
    DlChannelReq(DlChannelReq),
    DeviceTimeAns(DeviceTimeAns),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MacParseError {
    /// Payload lengths are only known per CID, so nothing after an unknown one can be read.
    #[error("unknown MAC command CID {cid:#04x} at byte {offset}")]
    UnknownCid { cid: u8, offset: usize },
    #[error("MAC command CID {cid:#04x} at byte {offset} needs {needed} payload bytes, {available} left")]
    Truncated { cid: u8, offset: usize, needed: usize, available: usize },
}

/// Parses MAC commands from a device (FOpts, or a decrypted FPort 0 payload). Stops at the
/// first unknown CID or truncated command and returns what it read before, plus why it stopped.
pub fn parse_uplink_commands(bytes: &[u8]) -> (Vec<UplinkMacCommand>, Option<MacParseError>) {
    use UplinkMacCommand as U;
    parse_with(bytes, |cid| {
        Some(match cid {
            cid::LINK_CHECK => (0, (|_| U::LinkCheckReq) as fn(&[u8]) -> U),
            cid::LINK_ADR => (LinkAdrAns::LEN, |b| U::LinkAdrAns(LinkAdrAns::decode(b))),
            cid::DUTY_CYCLE => (0, |_| U::DutyCycleAns),
            cid::RX_PARAM_SETUP => (RxParamSetupAns::LEN, |b| U::RxParamSetupAns(RxParamSetupAns::decode(b))),
            cid::DEV_STATUS => (DevStatusAns::LEN, |b| U::DevStatusAns(DevStatusAns::decode(b))),
            cid::NEW_CHANNEL => (NewChannelAns::LEN, |b| U::NewChannelAns(NewChannelAns::decode(b))),
            cid::RX_TIMING_SETUP => (0, |_| U::RxTimingSetupAns),
            cid::TX_PARAM_SETUP => (0, |_| U::TxParamSetupAns),
            cid::DL_CHANNEL => (DlChannelAns::LEN, |b| U::DlChannelAns(DlChannelAns::decode(b))),
            cid::DEVICE_TIME => (0, |_| U::DeviceTimeReq),
            _ => return None,
        })
    })
}

/// Parses MAC commands from the network server, as a device would (tests, device simulator).
pub fn parse_downlink_commands(bytes: &[u8]) -> (Vec<DownlinkMacCommand>, Option<MacParseError>) {
    use DownlinkMacCommand as D;
    parse_with(bytes, |cid| {
        Some(match cid {
            cid::LINK_CHECK => (LinkCheckAns::LEN, (|b| D::LinkCheckAns(LinkCheckAns::decode(b))) as fn(&[u8]) -> D),
            cid::LINK_ADR => (LinkAdrReq::LEN, |b| D::LinkAdrReq(LinkAdrReq::decode(b))),
            cid::DUTY_CYCLE => (DutyCycleReq::LEN, |b| D::DutyCycleReq(DutyCycleReq::decode(b))),
            cid::RX_PARAM_SETUP => (RxParamSetupReq::LEN, |b| D::RxParamSetupReq(RxParamSetupReq::decode(b))),
            cid::DEV_STATUS => (0, |_| D::DevStatusReq),
            cid::NEW_CHANNEL => (NewChannelReq::LEN, |b| D::NewChannelReq(NewChannelReq::decode(b))),
            cid::RX_TIMING_SETUP => (RxTimingSetupReq::LEN, |b| D::RxTimingSetupReq(RxTimingSetupReq::decode(b))),
            cid::TX_PARAM_SETUP => (TxParamSetupReq::LEN, |b| D::TxParamSetupReq(TxParamSetupReq::decode(b))),
            cid::DL_CHANNEL => (DlChannelReq::LEN, |b| D::DlChannelReq(DlChannelReq::decode(b))),
            cid::DEVICE_TIME => (DeviceTimeAns::LEN, |b| D::DeviceTimeAns(DeviceTimeAns::decode(b))),
            _ => return None,
        })
    })
}

/// `layout(cid)` gives the payload length and a decoder that receives exactly that many bytes.
fn parse_with<T>(bytes: &[u8], layout: impl Fn(u8) -> Option<(usize, fn(&[u8]) -> T)>) -> (Vec<T>, Option<MacParseError>) {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let cid = bytes[offset];
        let Some((len, decode)) = layout(cid) else {
            return (out, Some(MacParseError::UnknownCid { cid, offset }));
        };
        let available = bytes.len() - offset - 1;
        if available < len {
            return (out, Some(MacParseError::Truncated { cid, offset, needed: len, available }));
        }
        out.push(decode(&bytes[offset + 1..offset + 1 + len]));
        offset += 1 + len;
    }
    (out, None)
}

impl UplinkMacCommand {
    pub fn cid(&self) -> u8 {
        use UplinkMacCommand as U;
        match self {
            U::LinkCheckReq => cid::LINK_CHECK,
            U::LinkAdrAns(_) => cid::LINK_ADR,
            U::DutyCycleAns => cid::DUTY_CYCLE,
            U::RxParamSetupAns(_) => cid::RX_PARAM_SETUP,
            U::DevStatusAns(_) => cid::DEV_STATUS,
            U::NewChannelAns(_) => cid::NEW_CHANNEL,
            U::RxTimingSetupAns => cid::RX_TIMING_SETUP,
            U::TxParamSetupAns => cid::TX_PARAM_SETUP,
            U::DlChannelAns(_) => cid::DL_CHANNEL,
            U::DeviceTimeReq => cid::DEVICE_TIME,
        }
    }

    /// Appends CID and payload, as a device would send it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use UplinkMacCommand as U;
        out.push(self.cid());
        match self {
            U::LinkAdrAns(a) => a.encode(out),
            U::RxParamSetupAns(a) => a.encode(out),
            U::DevStatusAns(a) => a.encode(out),
            U::NewChannelAns(a) => a.encode(out),
            U::DlChannelAns(a) => a.encode(out),
            U::LinkCheckReq | U::DutyCycleAns | U::RxTimingSetupAns | U::TxParamSetupAns | U::DeviceTimeReq => {}
        }
    }
}

impl DownlinkMacCommand {
    pub fn cid(&self) -> u8 {
        use DownlinkMacCommand as D;
        match self {
            D::LinkCheckAns(_) => cid::LINK_CHECK,
            D::LinkAdrReq(_) => cid::LINK_ADR,
            D::DutyCycleReq(_) => cid::DUTY_CYCLE,
            D::RxParamSetupReq(_) => cid::RX_PARAM_SETUP,
            D::DevStatusReq => cid::DEV_STATUS,
            D::NewChannelReq(_) => cid::NEW_CHANNEL,
            D::RxTimingSetupReq(_) => cid::RX_TIMING_SETUP,
            D::TxParamSetupReq(_) => cid::TX_PARAM_SETUP,
            D::DlChannelReq(_) => cid::DL_CHANNEL,
            D::DeviceTimeAns(_) => cid::DEVICE_TIME,
        }
    }

    /// Appends CID and payload. Fields wider than their on-air bit field are masked.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use DownlinkMacCommand as D;
        out.push(self.cid());
        match self {
            D::LinkCheckAns(c) => c.encode(out),
            D::LinkAdrReq(c) => c.encode(out),
            D::DutyCycleReq(c) => c.encode(out),
            D::RxParamSetupReq(c) => c.encode(out),
            D::DevStatusReq => {}
            D::NewChannelReq(c) => c.encode(out),
            D::RxTimingSetupReq(c) => c.encode(out),
            D::TxParamSetupReq(c) => c.encode(out),
            D::DlChannelReq(c) => c.encode(out),
            D::DeviceTimeAns(c) => c.encode(out),
        }
    }

    pub fn name(&self) -> MacCommandName {
        use DownlinkMacCommand as D;
        use MacCommandName as N;
        match self {
            D::LinkCheckAns(_) => N::LinkCheckAns,
            D::LinkAdrReq(_) => N::LinkAdrReq,
            D::DutyCycleReq(_) => N::DutyCycleReq,
            D::RxParamSetupReq(_) => N::RxParamSetupReq,
            D::DevStatusReq => N::DevStatusReq,
            D::NewChannelReq(_) => N::NewChannelReq,
            D::RxTimingSetupReq(_) => N::RxTimingSetupReq,
            D::TxParamSetupReq(_) => N::TxParamSetupReq,
            D::DlChannelReq(_) => N::DlChannelReq,
            D::DeviceTimeAns(_) => N::DeviceTimeAns,
        }
    }

    /// Encoded length, CID included.
    pub fn encoded_len(&self) -> usize {
        let mut v = Vec::new();
        self.encode(&mut v);
        v.len()
    }
}

/// Encodes a list of commands back to back (for FOpts, at most 15 bytes, or an FPort 0 payload).
pub fn encode_all(cmds: &[DownlinkMacCommand]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cmds {
        c.encode(&mut out);
    }
    out
}

/// What the MAC layer needs to know about the uplink that carried the commands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacContext {
    /// Best SNR (dB) over the gateways that received the uplink.
    pub best_snr: f32,
    /// The uplink's LoRa spreading factor; `None` for FSK / LR-FHSS.
    pub spreading_factor: Option<u8>,
    /// Number of gateways that received the uplink.
    pub gateway_count: u32,
    /// When the uplink ended (gateway GPS time when known, else reception time).
    pub rx_time: DateTime<Utc>,
}

/// Answers to send in the next downlink, human-readable notes for the device log, and the
/// device status when the device reported one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MacOutcome {
    pub answers: Vec<DownlinkMacCommand>,
    pub notes: Vec<String>,
    pub dev_status: Option<DevStatusAns>,
}

/// Handles a device's MAC commands. Each request kind is answered once per uplink even if a
/// device repeats it; answers to server requests are only noted.
pub fn handle(cmds: &[UplinkMacCommand], ctx: &MacContext) -> MacOutcome {
    use UplinkMacCommand as U;
    let mut o = MacOutcome::default();
    let mut answered_link_check = false;
    let mut answered_time = false;
    for cmd in cmds {
        match cmd {
            U::LinkCheckReq if !answered_link_check => {
                answered_link_check = true;
                let margin = link_check::margin(ctx.best_snr, ctx.spreading_factor).unwrap_or_else(|| {
                    o.notes.push("LinkCheckReq on a non-LoRa uplink: margin reported as 0".into());
                    0
                });
                let gw_cnt = ctx.gateway_count.min(255) as u8;
                o.answers.push(DownlinkMacCommand::LinkCheckAns(LinkCheckAns { margin, gw_cnt }));
            }
            U::DeviceTimeReq if !answered_time => {
                answered_time = true;
                o.answers.push(DownlinkMacCommand::DeviceTimeAns(DeviceTimeAns::at(ctx.rx_time)));
            }
            U::LinkCheckReq | U::DeviceTimeReq => {
                o.notes.push(format!("repeated {} in one uplink ignored", name(cmd)));
            }
            U::DevStatusAns(s) => {
                o.dev_status = Some(*s);
                o.notes.push(format!("DevStatusAns: battery {}, margin {} dB", s.battery, s.margin));
            }
            U::LinkAdrAns(a) => o.notes.push(format!(
                "LinkADRAns: power {}, data rate {}, channel mask {}",
                ack(a.power_ack),
                ack(a.dr_ack),
                ack(a.ch_mask_ack)
            )),
            U::RxParamSetupAns(a) => o.notes.push(format!(
                "RXParamSetupAns: RX1DRoffset {}, RX2 data rate {}, channel {}",
                ack(a.rx1_dr_offset_ack),
                ack(a.rx2_dr_ack),
                ack(a.channel_ack)
            )),
            U::NewChannelAns(a) => {
                o.notes.push(format!("NewChannelAns: data-rate range {}, frequency {}", ack(a.dr_range_ok), ack(a.channel_freq_ok)))
            }
            U::DlChannelAns(a) => o.notes.push(format!(
                "DlChannelAns: uplink frequency {}, channel frequency {}",
                ack(a.uplink_freq_exists),
                ack(a.channel_freq_ok)
            )),
            U::DutyCycleAns | U::RxTimingSetupAns | U::TxParamSetupAns => {
                o.notes.push(format!("{} received", name(cmd)));
            }
        }
    }
    o
}

fn ack(b: bool) -> &'static str {
    if b {
        "ACK"
    } else {
        "NACK"
    }
}

/// The command's name as the specification writes it.
pub fn name(cmd: &UplinkMacCommand) -> &'static str {
    use UplinkMacCommand as U;
    match cmd {
        U::LinkCheckReq => "LinkCheckReq",
        U::LinkAdrAns(_) => "LinkADRAns",
        U::DutyCycleAns => "DutyCycleAns",
        U::RxParamSetupAns(_) => "RXParamSetupAns",
        U::DevStatusAns(_) => "DevStatusAns",
        U::NewChannelAns(_) => "NewChannelAns",
        U::RxTimingSetupAns => "RXTimingSetupAns",
        U::TxParamSetupAns => "TxParamSetupAns",
        U::DlChannelAns(_) => "DlChannelAns",
        U::DeviceTimeReq => "DeviceTimeReq",
    }
}

/// 24-bit little-endian frequency in units of 100 Hz (LoRaWAN 1.0.3 §5.4, §5.6).
pub(crate) fn encode_frequency(hz: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&(hz / 100).to_le_bytes()[..3]);
}

pub(crate) fn decode_frequency(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], 0]) * 100
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn ctx() -> MacContext {
        MacContext { best_snr: 5.5, spreading_factor: Some(7), gateway_count: 2, rx_time: "2026-01-01T00:00:00Z".parse().unwrap() }
    }

    #[test]
    fn every_uplink_command_parses_back_from_its_encoding() {
        let cmds = vec![
            UplinkMacCommand::LinkCheckReq,
            UplinkMacCommand::LinkAdrAns(LinkAdrAns { power_ack: true, dr_ack: false, ch_mask_ack: true }),
            UplinkMacCommand::DutyCycleAns,
            UplinkMacCommand::RxParamSetupAns(RxParamSetupAns { rx1_dr_offset_ack: true, rx2_dr_ack: true, channel_ack: false }),
            UplinkMacCommand::DevStatusAns(DevStatusAns { battery: 200, margin: -3 }),
            UplinkMacCommand::NewChannelAns(NewChannelAns { dr_range_ok: true, channel_freq_ok: false }),
            UplinkMacCommand::RxTimingSetupAns,
            UplinkMacCommand::TxParamSetupAns,
            UplinkMacCommand::DlChannelAns(DlChannelAns { uplink_freq_exists: false, channel_freq_ok: true }),
            UplinkMacCommand::DeviceTimeReq,
        ];
        let mut bytes = Vec::new();
        for c in &cmds {
            c.encode(&mut bytes);
        }
        assert_eq!(bytes, [0x02, 0x03, 0x05, 0x04, 0x05, 0x06, 0x06, 200, 0x3d, 0x07, 0x02, 0x08, 0x09, 0x0a, 0x01, 0x0d]);
        assert_eq!(parse_uplink_commands(&bytes), (cmds, None));
    }

    #[test]
    fn every_downlink_command_parses_back_from_its_encoding() {
        let cmds = vec![
            DownlinkMacCommand::LinkCheckAns(LinkCheckAns { margin: 12, gw_cnt: 2 }),
            DownlinkMacCommand::LinkAdrReq(LinkAdrReq { dr: 5, tx_power: 1, ch_mask: 0x00ff, ch_mask_cntl: 0, nb_trans: 1 }),
            DownlinkMacCommand::DutyCycleReq(DutyCycleReq { max_duty_cycle: 3 }),
            DownlinkMacCommand::RxParamSetupReq(RxParamSetupReq { rx1_dr_offset: 1, rx2_dr: 3, frequency: 869_525_000 }),
            DownlinkMacCommand::DevStatusReq,
            DownlinkMacCommand::NewChannelReq(NewChannelReq { ch_index: 3, frequency: 867_100_000, min_dr: 0, max_dr: 5 }),
            DownlinkMacCommand::RxTimingSetupReq(RxTimingSetupReq { delay: 2 }),
            DownlinkMacCommand::TxParamSetupReq(TxParamSetupReq {
                downlink_dwell_time: false,
                uplink_dwell_time: true,
                max_eirp_index: 15,
            }),
            DownlinkMacCommand::DlChannelReq(DlChannelReq { ch_index: 3, frequency: 867_100_000 }),
            DownlinkMacCommand::DeviceTimeAns(DeviceTimeAns { seconds: 1_451_260_818, fraction: 128 }),
        ];
        let bytes = encode_all(&cmds);
        assert_eq!(bytes.len(), cmds.iter().map(|c| c.encoded_len()).sum::<usize>());
        assert_eq!(&bytes[..3], &[0x02, 12, 2]);
        assert_eq!(parse_downlink_commands(&bytes), (cmds, None));
    }

    #[test]
    fn unknown_cid_stops_parsing_and_keeps_what_came_before() {
        let (cmds, err) = parse_uplink_commands(&[0x02, 0x0d, 0x42, 0x02]);
        assert_eq!(cmds, vec![UplinkMacCommand::LinkCheckReq, UplinkMacCommand::DeviceTimeReq]);
        assert_eq!(err, Some(MacParseError::UnknownCid { cid: 0x42, offset: 2 }));
    }

    #[test]
    fn truncated_command_stops_parsing_with_its_sizes() {
        let (cmds, err) = parse_uplink_commands(&[0x03, 0x07, 0x06, 0xff]);
        assert_eq!(cmds.len(), 1);
        assert_eq!(err, Some(MacParseError::Truncated { cid: 0x06, offset: 2, needed: 2, available: 1 }));
        assert_eq!(parse_uplink_commands(&[]), (vec![], None));
    }

    #[test]
    fn random_bytes_never_panic_the_command_parsers() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..50_000 {
            let len = rng.gen_range(0..32);
            let mut b = vec![0u8; len];
            rng.fill(&mut b[..]);
            for x in b.iter_mut() {
                *x %= 0x10;
            }
            let _ = parse_uplink_commands(&b);
            let _ = parse_downlink_commands(&b);
        }
    }

    #[test]
    fn link_check_is_answered_with_margin_and_gateway_count() {
        let o = handle(&[UplinkMacCommand::LinkCheckReq], &ctx());
        // 5.5 dB - (-7.5 dB) = 13 dB.
        assert_eq!(o.answers, vec![DownlinkMacCommand::LinkCheckAns(LinkCheckAns { margin: 13, gw_cnt: 2 })]);
        let many = MacContext { gateway_count: 1000, best_snr: -25.0, ..ctx() };
        let o = handle(&[UplinkMacCommand::LinkCheckReq], &many);
        assert_eq!(o.answers, vec![DownlinkMacCommand::LinkCheckAns(LinkCheckAns { margin: 0, gw_cnt: 255 })]);
    }

    #[test]
    fn device_time_is_answered_in_gps_time() {
        let o = handle(&[UplinkMacCommand::DeviceTimeReq], &ctx());
        assert_eq!(o.answers, vec![DownlinkMacCommand::DeviceTimeAns(DeviceTimeAns { seconds: 1_451_260_818, fraction: 0 })]);
    }

    #[test]
    fn repeated_requests_are_answered_once() {
        let o = handle(&[UplinkMacCommand::LinkCheckReq, UplinkMacCommand::LinkCheckReq], &ctx());
        assert_eq!(o.answers.len(), 1);
        assert_eq!(o.notes.len(), 1);
    }

    #[test]
    fn answers_to_server_requests_are_noted_and_status_is_kept() {
        let status = DevStatusAns { battery: 0, margin: 10 };
        let o = handle(
            &[
                UplinkMacCommand::LinkAdrAns(LinkAdrAns { power_ack: true, dr_ack: true, ch_mask_ack: false }),
                UplinkMacCommand::DevStatusAns(status),
                UplinkMacCommand::DutyCycleAns,
            ],
            &ctx(),
        );
        assert!(o.answers.is_empty());
        assert_eq!(o.dev_status, Some(status));
        assert_eq!(o.notes.len(), 3);
        assert!(o.notes[0].contains("channel mask NACK"), "{:?}", o.notes);
    }

    #[test]
    fn link_check_on_fsk_still_answers() {
        let fsk = MacContext { spreading_factor: None, ..ctx() };
        let o = handle(&[UplinkMacCommand::LinkCheckReq], &fsk);
        assert_eq!(o.answers, vec![DownlinkMacCommand::LinkCheckAns(LinkCheckAns { margin: 0, gw_cnt: 2 })]);
        assert_eq!(o.notes.len(), 1);
    }
}
