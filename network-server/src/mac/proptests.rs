//! Property tests of the MAC command codec (issue 12 part 8), both directions: any FOpts or
//! FPort 0 bytes parse to the commands before the first unreadable one and say where and why
//! they stopped; every command with in-range fields encodes to bytes that parse back to it,
//! and those bytes are what encoding the parsed commands gives again.

use chrono::{DateTime, Utc};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::*;

/// A frequency the 24-bit field carries: a multiple of 100 Hz below 2^24 × 100 Hz.
fn frequency() -> impl Strategy<Value = u32> {
    (0u32..(1 << 24)).prop_map(|f| f * 100)
}

fn uplink_command() -> impl Strategy<Value = UplinkMacCommand> {
    use UplinkMacCommand as U;
    prop_oneof![
        Just(U::LinkCheckReq),
        any::<[bool; 3]>().prop_map(|[power_ack, dr_ack, ch_mask_ack]| U::LinkAdrAns(LinkAdrAns { power_ack, dr_ack, ch_mask_ack })),
        Just(U::DutyCycleAns),
        any::<[bool; 3]>().prop_map(|[rx1_dr_offset_ack, rx2_dr_ack, channel_ack]| U::RxParamSetupAns(RxParamSetupAns {
            rx1_dr_offset_ack,
            rx2_dr_ack,
            channel_ack
        })),
        (any::<u8>(), -32i8..=31).prop_map(|(battery, margin)| U::DevStatusAns(DevStatusAns { battery, margin })),
        any::<[bool; 2]>().prop_map(|[dr_range_ok, channel_freq_ok]| U::NewChannelAns(NewChannelAns { dr_range_ok, channel_freq_ok })),
        Just(U::RxTimingSetupAns),
        Just(U::TxParamSetupAns),
        any::<[bool; 2]>()
            .prop_map(|[uplink_freq_exists, channel_freq_ok]| U::DlChannelAns(DlChannelAns { uplink_freq_exists, channel_freq_ok })),
        Just(U::DeviceTimeReq),
    ]
}

fn downlink_command() -> impl Strategy<Value = DownlinkMacCommand> {
    use DownlinkMacCommand as D;
    prop_oneof![
        (any::<u8>(), any::<u8>()).prop_map(|(margin, gw_cnt)| D::LinkCheckAns(LinkCheckAns { margin, gw_cnt })),
        (0u8..=15, 0u8..=15, any::<u16>(), 0u8..=7, 0u8..=15).prop_map(|(dr, tx_power, ch_mask, ch_mask_cntl, nb_trans)| D::LinkAdrReq(
            LinkAdrReq { dr, tx_power, ch_mask, ch_mask_cntl, nb_trans }
        )),
        (0u8..=15).prop_map(|max_duty_cycle| D::DutyCycleReq(DutyCycleReq { max_duty_cycle })),
        (0u8..=7, 0u8..=15, frequency()).prop_map(|(rx1_dr_offset, rx2_dr, frequency)| D::RxParamSetupReq(RxParamSetupReq {
            rx1_dr_offset,
            rx2_dr,
            frequency
        })),
        Just(D::DevStatusReq),
        (any::<u8>(), frequency(), 0u8..=15, 0u8..=15).prop_map(|(ch_index, frequency, min_dr, max_dr)| D::NewChannelReq(NewChannelReq {
            ch_index,
            frequency,
            min_dr,
            max_dr
        })),
        (0u8..=15).prop_map(|delay| D::RxTimingSetupReq(RxTimingSetupReq { delay })),
        (any::<bool>(), any::<bool>(), 0u8..=15).prop_map(|(downlink_dwell_time, uplink_dwell_time, max_eirp_index)| D::TxParamSetupReq(
            TxParamSetupReq { downlink_dwell_time, uplink_dwell_time, max_eirp_index }
        )),
        (any::<u8>(), frequency()).prop_map(|(ch_index, frequency)| D::DlChannelReq(DlChannelReq { ch_index, frequency })),
        (any::<u32>(), any::<u8>()).prop_map(|(seconds, fraction)| D::DeviceTimeAns(DeviceTimeAns { seconds, fraction })),
    ]
}

/// MAC command bytes: anything, or mostly known CIDs so that parsing gets past the first one.
fn command_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..40), vec(prop_oneof![3 => 0x02u8..=0x0d, 1 => any::<u8>()], 0..40)]
}

/// Where parsing stopped: the end of the input, or the offset of the command it could not read.
fn stop(len: usize, err: Option<MacParseError>) -> usize {
    match err {
        None => len,
        Some(MacParseError::UnknownCid { offset, .. } | MacParseError::Truncated { offset, .. }) => offset,
    }
}

fn encode_uplink(cmds: &[UplinkMacCommand]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cmds {
        c.encode(&mut out);
    }
    out
}

fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    (DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(), 0u32..2_000_000_000)
        .prop_filter_map("representable", |(s, ns)| DateTime::from_timestamp(s, ns))
}

proptest! {
    #[test]
    fn any_uplink_bytes_parse_up_to_the_first_unreadable_command(b in command_bytes()) {
        let (cmds, err) = parse_uplink_commands(&b);
        let end = stop(b.len(), err);
        prop_assert!(end <= b.len());
        match err {
            Some(MacParseError::UnknownCid { cid, offset }) => prop_assert_eq!(b[offset], cid),
            Some(MacParseError::Truncated { cid, offset, needed, available }) => {
                prop_assert_eq!(b[offset], cid);
                prop_assert_eq!(available, b.len() - offset - 1);
                prop_assert!(available < needed);
            }
            None => {}
        }
        // Every command read is re-encoded to as many bytes as it took, with its CID where it was.
        let again = encode_uplink(&cmds);
        prop_assert_eq!(again.len(), end);
        let (back, _) = parse_uplink_commands(&again);
        prop_assert_eq!(back, cmds);
    }

    #[test]
    fn any_downlink_bytes_parse_up_to_the_first_unreadable_command(b in command_bytes()) {
        let (cmds, err) = parse_downlink_commands(&b);
        let end = stop(b.len(), err);
        let again = encode_all(&cmds);
        prop_assert_eq!(again.len(), end);
        prop_assert_eq!(cmds.iter().map(|c| c.encoded_len()).sum::<usize>(), end);
        prop_assert_eq!(parse_downlink_commands(&again), (cmds, None));
    }

    #[test]
    fn uplink_commands_parse_back_from_their_encoding(cmds in vec(uplink_command(), 0..12)) {
        let bytes = encode_uplink(&cmds);
        let (back, err) = parse_uplink_commands(&bytes);
        prop_assert_eq!(err, None);
        prop_assert_eq!(&back, &cmds);
        // and the canonical bytes come back from the parsed commands
        prop_assert_eq!(encode_uplink(&back), bytes);
    }

    #[test]
    fn downlink_commands_parse_back_from_their_encoding(cmds in vec(downlink_command(), 0..12)) {
        let bytes = encode_all(&cmds);
        let (back, err) = parse_downlink_commands(&bytes);
        prop_assert_eq!(err, None);
        prop_assert_eq!(&back, &cmds);
        prop_assert_eq!(encode_all(&back), bytes);
    }

    #[test]
    fn a_truncated_command_list_keeps_the_whole_commands_before_the_cut(cmds in vec(downlink_command(), 1..6), cut in any::<prop::sample::Index>()) {
        let bytes = encode_all(&cmds);
        let cut = cut.index(bytes.len());
        let (back, err) = parse_downlink_commands(&bytes[..cut]);
        prop_assert!(cmds.starts_with(&back));
        let whole: usize = back.iter().map(|c| c.encoded_len()).sum();
        if whole < cut {
            let truncated_at = matches!(err, Some(MacParseError::Truncated { offset, .. }) if offset == whole);
            prop_assert!(truncated_at, "{err:?} after {whole} bytes");
        } else {
            prop_assert_eq!(err, None);
        }
    }

    #[test]
    fn any_commands_and_uplink_context_are_handled(
        cmds in vec(uplink_command(), 0..12),
        best_snr in any::<f32>(),
        spreading_factor in option::of(any::<u8>()),
        gateway_count in any::<u32>(),
        rx_time in any_time(),
    ) {
        let o = handle(&cmds, &MacContext { best_snr, spreading_factor, gateway_count, rx_time });
        // At most one LinkCheckAns and one DeviceTimeAns, whatever the device repeats.
        prop_assert!(o.answers.len() <= 2);
        prop_assert_eq!(o.answers.len(), usize::from(cmds.contains(&UplinkMacCommand::LinkCheckReq)) + usize::from(cmds.contains(&UplinkMacCommand::DeviceTimeReq)));
        for a in &o.answers {
            if let DownlinkMacCommand::LinkCheckAns(a) = a {
                prop_assert!(a.margin <= 254);
                prop_assert_eq!(u32::from(a.gw_cnt), gateway_count.min(255));
            }
        }
    }

    #[test]
    fn device_time_is_answered_for_any_instant(t in any_time()) {
        let a = DeviceTimeAns::at(t);
        let mut b = Vec::new();
        a.encode(&mut b);
        prop_assert_eq!(DeviceTimeAns::decode(&b), a);
    }

    #[test]
    fn link_margin_is_in_range_for_any_snr(snr in any::<f32>(), sf in any::<u8>()) {
        if let Some(m) = link_check::margin(snr, Some(sf)) {
            prop_assert!(m <= 254);
        }
    }
}
