//! Frame counters: rebuilding the 32-bit FCnt from the 16 bits sent on air and deciding
//! whether an uplink is new, a retransmission, a replay or a device that reset its counter.
//!
//! LoRaWAN 1.0.4 §4.3.1.5: devices send only the 16 least-significant bits; the network
//! server keeps the 32-bit value and the MIC is computed over all 32 bits. Since 1.0.2 there
//! is no MAX_FCNT_GAP: any forward jump is acceptable if the MIC verifies.

/// The full 32-bit counter for `f_cnt16`, given the next expected counter (last accepted + 1,
/// or 0 for a new session): the smallest value ≥ `next_expected` with those low 16 bits, except
/// that `next_expected - 1` (the frame just accepted, sent again) maps to itself.
/// Crossing 0xFFFF -> 0x10000 is handled; a counter that would pass `u32::MAX` wraps, and its
/// MIC will then not verify.
pub fn full_f_cnt(next_expected: u32, f_cnt16: u16) -> u32 {
    let last = next_expected.wrapping_sub(1);
    if next_expected > 0 && f_cnt16 == last as u16 {
        return last;
    }
    forward(next_expected, f_cnt16).unwrap_or_else(|| (next_expected & 0xffff_0000) | u32::from(f_cnt16))
}

/// Smallest counter ≥ `next_expected` whose low 16 bits are `f_cnt16`, if it fits in 32 bits.
fn forward(next_expected: u32, f_cnt16: u16) -> Option<u32> {
    let candidate = (next_expected & 0xffff_0000) | u32::from(f_cnt16);
    if candidate >= next_expected {
        Some(candidate)
    } else {
        candidate.checked_add(0x1_0000)
    }
}

/// What an uplink's frame counter means, decided together with the MIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FCntCheck {
    /// A new frame; accept it and store `f_cnt + 1` as the next expected value.
    /// `lost` frames were skipped since the last accepted one.
    Fresh { f_cnt: u32, lost: u32 },
    /// The frame last accepted, received again (a confirmed uplink whose ACK was lost, or a
    /// copy that missed the deduplication window). Do not forward it to the application again.
    Retransmission { f_cnt: u32 },
    /// The MIC verifies only with the counter restarted from 0 (upper bits 0) below the last
    /// accepted value: an ABP device that lost its counter, or a replay from the session's
    /// first 65536 frames; the two cannot be told apart in 1.0.x. Accept only if the device
    /// has frame-counter checks disabled (then store `f_cnt + 1`); otherwise log
    /// `UPLINK_F_CNT_RESET` and drop.
    Reset { f_cnt: u32 },
    /// The MIC verifies with an older counter of a previous 65536-frame epoch: a replay.
    Replay { f_cnt: u32 },
    /// No plausible counter makes the MIC verify: wrong key or corrupted frame.
    MicInvalid,
}

/// Classifies an uplink. `mic_valid(f)` must say whether the frame's MIC verifies with the
/// 32-bit counter `f` (e.g. `|f| lorawan::data_mic_valid(phy, &nwk_s_key, f)`); it is
/// called at most four times.
pub fn check_f_cnt_up(next_expected: u32, f_cnt16: u16, mut mic_valid: impl FnMut(u32) -> bool) -> FCntCheck {
    let last = next_expected.wrapping_sub(1);
    if next_expected > 0 && f_cnt16 == last as u16 && mic_valid(last) {
        return FCntCheck::Retransmission { f_cnt: last };
    }
    if let Some(f) = forward(next_expected, f_cnt16) {
        if mic_valid(f) {
            return FCntCheck::Fresh { f_cnt: f, lost: f - next_expected };
        }
    }
    // Behind us: the same value in the most recent epoch where it is below next_expected.
    let same_epoch = (next_expected & 0xffff_0000) | u32::from(f_cnt16);
    let behind = if same_epoch < next_expected { Some(same_epoch) } else { same_epoch.checked_sub(0x1_0000) };
    let reset = u32::from(f_cnt16);
    if let Some(b) = behind.filter(|b| *b != reset && *b != last) {
        if mic_valid(b) {
            return FCntCheck::Replay { f_cnt: b };
        }
    }
    if reset < last && mic_valid(reset) {
        return FCntCheck::Reset { f_cnt: reset };
    }
    FCntCheck::MicInvalid
}

/// Why the last accepted frame arrived again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    /// The device sends every uplink NbTrans times (LoRaWAN 1.0.4 §5.3): expected, not an error.
    NbTransRepeat,
    /// A confirmed uplink whose ACK was lost, or a copy that missed the deduplication window.
    Retransmission,
}

/// Classifies the last accepted frame received again, given the NbTrans the device uses.
pub fn again(nb_trans: u8) -> Again {
    if nb_trans > 1 {
        Again::NbTransRepeat
    } else {
        Again::Retransmission
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_frame_again_is_a_repeat_only_when_the_device_uses_nb_trans() {
        for (nb_trans, want) in
            [(0, Again::Retransmission), (1, Again::Retransmission), (2, Again::NbTransRepeat), (3, Again::NbTransRepeat)]
        {
            assert_eq!(again(nb_trans), want, "NbTrans {nb_trans}");
        }
    }

    use super::*;

    #[test]
    fn counter_continues_in_the_same_epoch() {
        assert_eq!(full_f_cnt(0, 0), 0);
        assert_eq!(full_f_cnt(0, 5), 5);
        assert_eq!(full_f_cnt(10, 10), 10);
        assert_eq!(full_f_cnt(10, 12), 12);
        assert_eq!(full_f_cnt(0x0003_0010, 0x0020), 0x0003_0020);
    }

    #[test]
    fn rollover_from_ffff_gives_10000() {
        assert_eq!(full_f_cnt(0xffff, 0x0000), 0x1_0000);
        assert_eq!(full_f_cnt(0x1_0000, 0x0000), 0x1_0000);
        assert_eq!(full_f_cnt(0xfff0, 0x0003), 0x1_0003);
        assert_eq!(full_f_cnt(0x0001_fffe, 0x0001), 0x0002_0001);
    }

    #[test]
    fn the_last_accepted_counter_maps_to_itself() {
        assert_eq!(full_f_cnt(11, 10), 10);
        assert_eq!(full_f_cnt(0x1_0000, 0xffff), 0xffff);
    }

    #[test]
    fn an_older_counter_is_read_as_a_jump_forward() {
        // So that a replayed frame's MIC is checked against a counter it was never made with.
        assert_eq!(full_f_cnt(100, 50), 0x1_0032);
    }

    #[test]
    fn counter_near_u32_max_does_not_overflow() {
        assert_eq!(full_f_cnt(0xffff_fff0, 0xfff5), 0xffff_fff5);
        assert_eq!(full_f_cnt(0xffff_fff0, 0x0001), 0xffff_0001);
    }

    /// A MIC oracle that accepts exactly one 32-bit counter, like a real frame does.
    fn made_with(f: u32) -> impl FnMut(u32) -> bool {
        move |c| c == f
    }

    #[test]
    fn fresh_frames_report_how_many_were_lost() {
        assert_eq!(check_f_cnt_up(0, 0, made_with(0)), FCntCheck::Fresh { f_cnt: 0, lost: 0 });
        assert_eq!(check_f_cnt_up(10, 14, made_with(14)), FCntCheck::Fresh { f_cnt: 14, lost: 4 });
        assert_eq!(check_f_cnt_up(0xffff, 0, made_with(0x1_0000)), FCntCheck::Fresh { f_cnt: 0x1_0000, lost: 1 });
    }

    #[test]
    fn the_same_frame_again_is_a_retransmission() {
        assert_eq!(check_f_cnt_up(11, 10, made_with(10)), FCntCheck::Retransmission { f_cnt: 10 });
        assert_eq!(check_f_cnt_up(0x1_0000, 0xffff, made_with(0xffff)), FCntCheck::Retransmission { f_cnt: 0xffff });
    }

    #[test]
    fn an_old_frame_from_a_previous_epoch_is_a_replay() {
        assert_eq!(check_f_cnt_up(0x2_0010, 0x0005, made_with(0x2_0005)), FCntCheck::Replay { f_cnt: 0x2_0005 });
        assert_eq!(check_f_cnt_up(0x2_0010, 0x8000, made_with(0x1_8000)), FCntCheck::Replay { f_cnt: 0x1_8000 });
    }

    #[test]
    fn a_device_restarting_from_zero_is_a_reset() {
        assert_eq!(check_f_cnt_up(500, 0, made_with(0)), FCntCheck::Reset { f_cnt: 0 });
        assert_eq!(check_f_cnt_up(0x3_0000, 2, made_with(2)), FCntCheck::Reset { f_cnt: 2 });
    }

    #[test]
    fn a_frame_no_counter_explains_has_an_invalid_mic() {
        assert_eq!(check_f_cnt_up(10, 12, |_| false), FCntCheck::MicInvalid);
        let mut calls = 0;
        let _ = check_f_cnt_up(0x2_0010, 0x0005, |_| {
            calls += 1;
            false
        });
        assert!(calls <= 4);
    }
}
