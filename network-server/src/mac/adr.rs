//! Adaptive data rate: what data rate, TX power and NbTrans a device should use next, from the
//! SNR and frame counters of its recent uplinks (LoRaWAN 1.0.4 §4.3.1.1, §5.3).
//!
//! The algorithm is Semtech's recommended one, as ChirpStack v4's default ADR runs it:
//!
//! 1. `maxSNR` = best SNR over the last [`HISTORY_LEN`] uplinks (each uplink counts with the
//!    best SNR over every gateway that heard it), each moved to the current TX power (2 dB per
//!    TXPower index of difference; see [`AdrHistory::max_snr_at`], where ChirpStack differs);
//! 2. `margin` = `maxSNR` − required SNR of the current data rate − installation margin;
//! 3. `nStep` = `margin / 3`, truncated toward zero (Semtech's `int()`, ChirpStack's `as isize`):
//!    a margin between −3 and 0 dB changes nothing, a dead band that keeps the power from
//!    flapping;
//! 4. positive steps raise the data rate one DR per step up to the maximum, then lower the TX
//!    power (raise the TXPower index) up to the region's largest index; negative steps raise
//!    the TX power (lower the index) down to index 0 and never lower the data rate. The device
//!    itself falls back to lower data rates when it loses the link (ADRACKReq backoff, §4.3.1.1);
//! 5. NbTrans (1–3) follows the packet-loss rate over the history, by ChirpStack's table.
//!
//! How much history each part needs (documented choices):
//! - no uplink at all: nothing but the DR limits is applied;
//! - positive steps run on any non-empty history: more uplinks can only raise `maxSNR`, so a
//!   short history under-estimates the margin, never over-estimates it;
//! - negative steps need a full history of [`HISTORY_LEN`] uplinks sent at the current TX power
//!   index (as ChirpStack), so one bad uplink right after a power change does not undo it;
//! - NbTrans changes only on a full history; until then the current value is kept (clamped to
//!   1–3). ChirpStack instead reads a short history as 0 % loss and lowers NbTrans.
//!
//! The DR limits always apply: a device above the maximum (profile `adrMaxDr`, never above
//! [`Region::max_adr_dr`]) is brought down to it, a device below `adrMinDr` is brought up to it.

use serde::{Deserialize, Serialize};

use crate::region::Region;

/// Uplinks the algorithm looks back over.
pub const HISTORY_LEN: usize = 20;

/// dB of link budget per step (one LoRa DR step is 2.5 dB, one TXPower step 2 dB; Semtech's
/// algorithm rounds both to 3).
const DB_PER_STEP: f32 = 3.0;

/// dB between two TXPower indices: every RP002 region defines TXPower n as MaxEIRP − 2n dB
/// (RP002-1.0.4 §2.4.3 for EU868).
pub const TX_POWER_STEP_DB: f32 = 2.0;

/// What the network server remembers about one uplink for ADR. The short JSON keys keep the
/// stored session small (20 of these live in every ADR session's MAC state).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UplinkMetric {
    #[serde(rename = "f")]
    pub f_cnt: u32,
    /// Best SNR (dB) over the gateways that received the uplink.
    #[serde(rename = "snr")]
    pub max_snr: f32,
    /// TXPower index the device used, as the session believed when the uplink arrived.
    #[serde(rename = "tx")]
    pub tx_power_index: u8,
    #[serde(rename = "gw")]
    pub gateway_count: u32,
}

/// The last [`HISTORY_LEN`] uplinks of a session, oldest first, one entry per frame counter.
/// Serialized as a plain JSON array.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AdrHistory {
    metrics: Vec<UplinkMetric>,
}

impl AdrHistory {
    /// Adds an uplink and drops the oldest beyond [`HISTORY_LEN`].
    ///
    /// A repeat of the last frame counter (NbTrans > 1 sends each frame up to three times) is
    /// merged into its entry, keeping the better SNR and gateway count, so that repeats are
    /// neither counted twice nor read as losses. A frame counter lower than the last one
    /// means a new session or a counter reset: the history starts again from this uplink.
    /// An uplink without a finite SNR tells nothing about the link (and could not be stored
    /// as JSON), so it is left out.
    pub fn push(&mut self, metric: UplinkMetric) {
        if !metric.max_snr.is_finite() {
            return;
        }
        if let Some(last) = self.metrics.last_mut() {
            if metric.f_cnt == last.f_cnt {
                last.max_snr = last.max_snr.max(metric.max_snr);
                last.gateway_count = last.gateway_count.max(metric.gateway_count);
                last.tx_power_index = metric.tx_power_index;
                return;
            }
            if metric.f_cnt < last.f_cnt {
                self.metrics.clear();
            }
        }
        if self.metrics.len() == HISTORY_LEN {
            self.metrics.remove(0);
        }
        self.metrics.push(metric);
    }

    /// Forgets every uplink (after a join, or when the device's radio settings were reset).
    pub fn clear(&mut self) {
        self.metrics.clear();
    }

    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &UplinkMetric> {
        self.metrics.iter()
    }

    /// Best SNR in the history; `None` when empty.
    pub fn max_snr(&self) -> Option<f32> {
        self.metrics.iter().map(|m| m.max_snr).reduce(f32::max)
    }

    /// Best SNR in the history as it would have been at `tx_power_index`: an uplink sent at
    /// another index is moved by [`TX_POWER_STEP_DB`] per index of difference. Without this, an
    /// SNR measured before the server lowered the power would keep counting at full strength
    /// for 20 uplinks and lower the power again and again (ChirpStack's default algorithm does
    /// this, then walks the power back up once the old uplinks leave the history).
    pub fn max_snr_at(&self, tx_power_index: u8) -> Option<f32> {
        self.metrics
            .iter()
            .map(|m| m.max_snr - TX_POWER_STEP_DB * (f32::from(tx_power_index) - f32::from(m.tx_power_index)))
            .reduce(f32::max)
    }

    /// Percentage of frames missing between the oldest and newest frame counter in the
    /// history: lost / (received + lost) × 100. `None` until the history is full.
    pub fn packet_loss_percent(&self) -> Option<f32> {
        if self.metrics.len() < HISTORY_LEN {
            return None;
        }
        let first = self.metrics.first()?.f_cnt;
        let last = self.metrics.last()?.f_cnt;
        // push() keeps counters increasing; a history read back from storage might not be.
        let expected = u64::from(last.saturating_sub(first)) + 1;
        let received = self.metrics.len() as u64;
        let lost = expected.saturating_sub(received);
        Some(lost as f32 / expected as f32 * 100.0)
    }
}

/// Everything [`decide`] looks at. `dr`, `tx_power_index` and `nb_trans` are what the session
/// believes the device uses now; the limits come from the device profile.
pub struct AdrInput<'a> {
    pub region: &'a dyn Region,
    pub dr: u8,
    pub tx_power_index: u8,
    pub nb_trans: u8,
    pub min_dr: u8,
    pub max_dr: u8,
    pub installation_margin_db: f32,
    pub history: &'a AdrHistory,
}

/// The radio settings the device should use next (the content of a LinkADRReq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdrDecision {
    pub dr: u8,
    pub tx_power_index: u8,
    pub nb_trans: u8,
}

impl AdrInput<'_> {
    /// The settings as they are now.
    pub fn current(&self) -> AdrDecision {
        AdrDecision { dr: self.dr, tx_power_index: self.tx_power_index, nb_trans: self.nb_trans }
    }
}

/// Which way a decision moves the link, for `loraflow_adr_decisions_total{direction}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdrDirection {
    /// Less airtime or energy: a higher data rate, or a lower TX power at the same data rate.
    Up,
    /// A sturdier link: a lower data rate (only when the DR limits force it) or more TX power.
    Down,
    /// Only NbTrans changed.
    NbTrans,
    /// Nothing changed.
    Same,
}

impl AdrDirection {
    pub const ALL: [AdrDirection; 4] = [AdrDirection::Up, AdrDirection::Down, AdrDirection::NbTrans, AdrDirection::Same];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AdrDirection::Up => "up",
            AdrDirection::Down => "down",
            AdrDirection::NbTrans => "nb_trans",
            AdrDirection::Same => "same",
        }
    }
}

/// How `after` differs from `before`. The data rate decides first, then the TX power (a higher
/// index is less power), then NbTrans.
pub fn direction(before: AdrDecision, after: AdrDecision) -> AdrDirection {
    use std::cmp::Ordering::*;
    match (after.dr.cmp(&before.dr), after.tx_power_index.cmp(&before.tx_power_index)) {
        (Greater, _) | (Equal, Greater) => AdrDirection::Up,
        (Less, _) | (Equal, Less) => AdrDirection::Down,
        (Equal, Equal) if after.nb_trans != before.nb_trans => AdrDirection::NbTrans,
        (Equal, Equal) => AdrDirection::Same,
    }
}

/// The settings the device should use next; [`AdrInput::current`] when nothing should change.
pub fn decide(input: &AdrInput) -> AdrDecision {
    let region = input.region;
    let max_dr = input.max_dr.min(region.max_adr_dr());
    let min_dr = input.min_dr.max(region.min_adr_dr()).min(max_dr);
    let max_tx_power_index = region.max_tx_power_index();

    let dr = input.dr.clamp(min_dr, max_dr);
    // A session may believe an index the region does not define (a region change, a bad
    // import); the nearest defined one is what the device can actually be told.
    let tx_power_index = input.tx_power_index.min(max_tx_power_index);
    let nb_trans = match input.history.packet_loss_percent() {
        Some(loss) => nb_trans_for_loss(input.nb_trans, loss),
        None => input.nb_trans.clamp(1, 3),
    };

    let (Some(max_snr), Some(required)) = (input.history.max_snr_at(tx_power_index), region.required_snr(dr)) else {
        return AdrDecision { dr, tx_power_index, nb_trans };
    };
    let margin = max_snr - required - input.installation_margin_db;
    // `as` truncates toward zero and saturates (NaN becomes 0: no step).
    let steps = (margin / DB_PER_STEP) as i32;

    let full_history_at_this_power = input.history.iter().filter(|m| m.tx_power_index == input.tx_power_index).count() == HISTORY_LEN;
    if steps < 0 && !full_history_at_this_power {
        return AdrDecision { dr, tx_power_index, nb_trans };
    }
    let (dr, tx_power_index) = apply_steps(steps, dr, tx_power_index, max_dr, max_tx_power_index);
    AdrDecision { dr, tx_power_index, nb_trans }
}

/// Spends `steps` of 3 dB: positive ones on the data rate first, then on TX power; negative
/// ones on TX power only.
fn apply_steps(steps: i32, mut dr: u8, mut tx_power_index: u8, max_dr: u8, max_tx_power_index: u8) -> (u8, u8) {
    if steps > 0 {
        for _ in 0..steps {
            if dr < max_dr {
                dr += 1;
            } else if tx_power_index < max_tx_power_index {
                tx_power_index += 1;
            } else {
                break;
            }
        }
    } else {
        let up = steps.unsigned_abs().min(u32::from(tx_power_index)) as u8;
        tx_power_index -= up;
    }
    (dr, tx_power_index)
}

/// ChirpStack's NbTrans table: rows are packet loss below 5 %, 10 %, 30 % and above; columns
/// the current NbTrans 1, 2, 3 (values outside 1–3 are read as the nearest).
fn nb_trans_for_loss(current: u8, loss_percent: f32) -> u8 {
    const TABLE: [[u8; 3]; 4] = [[1, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3]];
    let row = if loss_percent < 5.0 {
        0
    } else if loss_percent < 10.0 {
        1
    } else if loss_percent < 30.0 {
        2
    } else {
        3
    };
    TABLE[row][usize::from(current.clamp(1, 3) - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Eu868;

    fn metric(f_cnt: u32, max_snr: f32) -> UplinkMetric {
        UplinkMetric { f_cnt, max_snr, tx_power_index: 0, gateway_count: 1 }
    }

    /// `n` consecutive uplinks from FCnt 0 at one SNR and TX power index.
    fn history(n: u32, snr: f32, tx_power_index: u8) -> AdrHistory {
        let mut h = AdrHistory::default();
        for f in 0..n {
            h.push(UplinkMetric { tx_power_index, ..metric(f, snr) });
        }
        h
    }

    fn input<'a>(h: &'a AdrHistory, dr: u8, tx_power_index: u8) -> AdrInput<'a> {
        AdrInput { region: &Eu868, dr, tx_power_index, nb_trans: 1, min_dr: 0, max_dr: 5, installation_margin_db: 10.0, history: h }
    }

    fn d(dr: u8, tx_power_index: u8, nb_trans: u8) -> AdrDecision {
        AdrDecision { dr, tx_power_index, nb_trans }
    }

    #[test]
    fn positive_margin_raises_the_data_rate_first_then_lowers_the_power() {
        // EU868, margin 10 dB; required SNR DR0 -20, DR3 -12.5, DR5 -7.5.
        // (dr, tx index, max SNR) -> expected (dr, tx index)
        let cases = [
            // -20 + 10 + 3 = -7: one step exactly.
            (0, 0, -7.0, (1, 0)),
            // 2.99 dB over: no step.
            (0, 0, -7.01, (0, 0)),
            // 15 dB over at DR0: five steps, all on the data rate.
            (0, 0, 5.0, (5, 0)),
            // 30 dB over at DR0: five DR steps, five power steps.
            (0, 0, 20.0, (5, 5)),
            // Far over: power stops at index 7 (RP002 §2.4.3, max EIRP - 14 dB).
            (0, 0, 60.0, (5, 7)),
            // DR3 with 6.5 dB over: two DR steps.
            (3, 0, 4.0, (5, 0)),
            // DR3 with 9.5 dB over: two DR steps and one power step.
            (3, 2, 7.0, (5, 3)),
            // At the top already: steps only lower the power.
            (5, 1, 8.5, (5, 3)),
            (5, 7, 30.0, (5, 7)),
        ];
        for (dr, tx, snr, (want_dr, want_tx)) in cases {
            let h = history(5, snr, tx);
            assert_eq!(decide(&input(&h, dr, tx)), d(want_dr, want_tx, 1), "DR{dr} tx {tx} SNR {snr}");
        }
    }

    #[test]
    fn required_snr_and_margin_follow_the_spreading_factor() {
        // An SNR exactly at the floor of each DR plus margin plus 3 dB gives one step.
        for (dr, floor) in [(0u8, -20.0f32), (1, -17.5), (2, -15.0), (3, -12.5), (4, -10.0)] {
            let h = history(3, floor + 10.0 + 3.0, 0);
            assert_eq!(decide(&input(&h, dr, 0)).dr, dr + 1, "DR{dr}");
            let h = history(3, floor + 10.0 + 2.9, 0);
            assert_eq!(decide(&input(&h, dr, 0)).dr, dr, "DR{dr} just under");
        }
        // The installation margin moves the threshold one for one.
        let h = history(3, -4.0, 0);
        let mut i = input(&h, 0, 0);
        assert_eq!(decide(&i).dr, 2, "-4 - (-20) - 10 = 6 dB: two steps");
        i.installation_margin_db = 0.0;
        assert_eq!(decide(&i).dr, 5, "16 dB: five steps");
        i.installation_margin_db = 30.0;
        assert_eq!(decide(&i), d(0, 0, 1), "negative margin on a short history changes nothing");
    }

    #[test]
    fn the_best_snr_of_the_history_decides() {
        let mut h = history(19, -20.0, 0);
        h.push(metric(19, -1.0));
        // -1 - (-20) - 10 = 9 dB: three steps, although 19 of 20 uplinks were at the floor.
        assert_eq!(decide(&input(&h, 0, 0)), d(3, 0, 1));
    }

    #[test]
    fn negative_margin_raises_the_power_and_never_lowers_the_data_rate() {
        // Full history at the current index. (dr, tx index, max SNR) -> expected tx index.
        let cases = [
            // DR5 needs -7.5 + 10: SNR 0 is 2.5 dB short, inside the dead band.
            (5, 3, 0.0, 3),
            // 3 dB short: one step.
            (5, 3, -0.5, 2),
            // 9 dB short: three steps.
            (5, 3, -6.5, 0),
            // 20 dB short: the power stops at index 0.
            (5, 3, -17.5, 0),
            (2, 0, -30.0, 0),
        ];
        for (dr, tx, snr, want_tx) in cases {
            let h = history(20, snr, tx);
            assert_eq!(decide(&input(&h, dr, tx)), d(dr, want_tx, 1), "DR{dr} tx {tx} SNR {snr}");
        }
    }

    #[test]
    fn negative_steps_wait_for_a_full_history_at_the_current_power() {
        // 19 uplinks are not enough.
        let h = history(19, -10.0, 4);
        assert_eq!(decide(&input(&h, 5, 4)), d(5, 4, 1));
        // 20 uplinks, but some were sent at another power: still waiting.
        let mut h = history(20, -10.0, 4);
        h.push(UplinkMetric { tx_power_index: 5, ..metric(20, -10.0) });
        assert_eq!(decide(&input(&h, 5, 4)), d(5, 4, 1));
        // 20 at the current power: -10 - (-7.5) - 10 = -12.5 dB, four steps up in power.
        let h = history(20, -10.0, 4);
        assert_eq!(decide(&input(&h, 5, 4)), d(5, 0, 1));
    }

    #[test]
    fn uplinks_sent_at_another_power_count_as_if_sent_at_the_current_one() {
        // Heard at +10 dB at index 0; the device now sends at index 3 (6 dB quieter) and the
        // newer uplinks say so. DR5 needs -7.5 + 10: the old uplinks must not read as 7.5 dB
        // of margin (two more power steps), only as 1.5 dB (none).
        let mut h = history(10, 10.0, 0);
        for f in 10..13 {
            h.push(UplinkMetric { tx_power_index: 3, ..metric(f, 4.0) });
        }
        assert_eq!(h.max_snr_at(3), Some(4.0));
        assert_eq!(h.max_snr_at(0), Some(10.0));
        assert_eq!(decide(&input(&h, 5, 3)), d(5, 3, 1));
        // Without the newer uplinks the old ones still count, moved by 6 dB.
        let h = history(10, 10.0, 0);
        assert_eq!(decide(&input(&h, 5, 3)), d(5, 3, 1));
        let h = history(10, 16.0, 0);
        assert_eq!(decide(&input(&h, 5, 3)), d(5, 5, 1), "16 - 6 = 10 dB, 7.5 over: two steps");
    }

    #[test]
    fn an_empty_history_changes_nothing_but_the_limits() {
        let h = AdrHistory::default();
        assert_eq!(decide(&input(&h, 2, 3)), d(2, 3, 1));
        let mut i = input(&h, 5, 3);
        i.max_dr = 3;
        assert_eq!(decide(&i), d(3, 3, 1));
    }

    #[test]
    fn the_data_rate_stays_within_the_profile_and_region_limits() {
        // (dr, min, max, max SNR) -> expected DR, on a 20-uplink history.
        let cases = [
            // Max DR caps positive steps.
            (0, 0, 3, 10.0, 3),
            // A device above the max is brought down even with a great link.
            (5, 0, 3, 10.0, 3),
            // A device below the min is brought up, then steps go on from there.
            (0, 2, 5, -20.0, 2),
            (0, 2, 5, 6.5, 5),
            // A profile max beyond what ADR can use in the region is read as the region's (DR5;
            // DR6 is SF7BW250, which not every EU868 gateway channel hears).
            (0, 0, 15, 40.0, 5),
            (6, 0, 15, 40.0, 5),
            // min > max: max wins.
            (0, 4, 2, -20.0, 2),
            // Negative margin never lowers the DR below where it is.
            (4, 0, 5, -40.0, 4),
        ];
        for (dr, min_dr, max_dr, snr, want) in cases {
            let h = history(20, snr, 0);
            let mut i = input(&h, dr, 0);
            i.min_dr = min_dr;
            i.max_dr = max_dr;
            let out = decide(&i);
            assert_eq!(out.dr, want, "DR{dr} in {min_dr}..={max_dr} at SNR {snr}: {out:?}");
            assert!(out.dr >= min_dr.min(max_dr) && out.dr <= max_dr.min(5));
        }
    }

    #[test]
    fn an_uplink_dwell_time_limit_keeps_adr_at_dr2_or_faster() {
        use crate::region::{region_with, RegionOptions};
        let au915 = region_with("AU915", &RegionOptions::default()).unwrap();
        assert_eq!(au915.min_adr_dr(), 2);
        let as923 =
            region_with("AS923", &RegionOptions { dwell_time: Some(crate::region::DwellTime { uplink: true, downlink: false }) }).unwrap();
        assert_eq!(as923.min_adr_dr(), 2);
        let as923_free = region_with("AS923", &RegionOptions { dwell_time: Some(crate::region::DwellTime::default()) }).unwrap();
        assert_eq!(as923_free.min_adr_dr(), 0);
        assert_eq!(Eu868.min_adr_dr(), 0);
        // A device heard at DR0 with no SNR history yet is moved up to DR2, the profile's
        // DR0 minimum notwithstanding.
        let h = AdrHistory::default();
        let mut i = input(&h, 0, 0);
        i.region = au915.as_ref();
        assert_eq!(decide(&i).dr, 2);
    }

    #[test]
    fn a_tx_power_index_beyond_the_region_is_brought_back() {
        let h = AdrHistory::default();
        assert_eq!(decide(&input(&h, 5, 12)).tx_power_index, 7);
    }

    #[test]
    fn nb_trans_follows_the_packet_loss_table() {
        // (lost frames within a 20-uplink history, current NbTrans) -> NbTrans.
        // Loss = lost / (20 + lost): 0 -> 0 %, 1 -> 4.8 %, 2 -> 9.1 %, 3 -> 13 %, 9 -> 31 %.
        let cases = [
            (0, 1, 1),
            (0, 2, 1),
            (0, 3, 2),
            (1, 3, 2),
            (2, 1, 1),
            (2, 2, 2),
            (2, 3, 3),
            (3, 1, 2),
            (3, 2, 3),
            (3, 3, 3),
            (9, 1, 3),
            (9, 3, 3),
            // Out-of-range values are read as the nearest column.
            (0, 0, 1),
            (9, 7, 3),
        ];
        for (lost, nb_trans, want) in cases {
            let mut h = AdrHistory::default();
            let mut f = 0;
            for i in 0..20 {
                // Skip `lost` counters in the middle of the history.
                if i == 10 {
                    f += lost;
                }
                h.push(metric(f, -20.0));
                f += 1;
            }
            let mut i = input(&h, 0, 0);
            i.nb_trans = nb_trans;
            assert_eq!(decide(&i).nb_trans, want, "{lost} lost, NbTrans {nb_trans}");
        }
    }

    #[test]
    fn nb_trans_is_kept_until_the_history_is_full() {
        let mut h = AdrHistory::default();
        for f in [0, 5, 10] {
            h.push(metric(f, -20.0));
        }
        for (nb_trans, want) in [(1, 1), (2, 2), (3, 3), (0, 1), (9, 3)] {
            let mut i = input(&h, 0, 0);
            i.nb_trans = nb_trans;
            assert_eq!(decide(&i).nb_trans, want);
        }
    }

    #[test]
    fn packet_loss_counts_the_gaps_between_frame_counters() {
        assert_eq!(history(20, 0.0, 0).packet_loss_percent(), Some(0.0));
        assert_eq!(history(19, 0.0, 0).packet_loss_percent(), None);
        let mut h = AdrHistory::default();
        // 20 received out of FCnt 0..=24: 5 lost of 25 = 20 %.
        for f in (0..25).filter(|f| f % 5 != 2) {
            h.push(metric(f, 0.0));
        }
        assert_eq!(h.len(), 20);
        assert_eq!(h.packet_loss_percent(), Some(20.0));
    }

    #[test]
    fn history_keeps_the_last_twenty_uplinks() {
        let h = history(50, 1.0, 0);
        assert_eq!(h.len(), HISTORY_LEN);
        assert_eq!(h.iter().map(|m| m.f_cnt).collect::<Vec<_>>(), (30..50).collect::<Vec<_>>());
        let mut h = h;
        h.clear();
        assert!(h.is_empty());
        assert_eq!(h.max_snr(), None);
    }

    #[test]
    fn repeated_frames_merge_into_one_entry_with_the_best_snr() {
        let mut h = AdrHistory::default();
        h.push(metric(7, -3.0));
        h.push(UplinkMetric { gateway_count: 3, ..metric(7, 2.0) });
        h.push(metric(7, -9.0));
        assert_eq!(h.len(), 1);
        assert_eq!(h.iter().next(), Some(&UplinkMetric { f_cnt: 7, max_snr: 2.0, tx_power_index: 0, gateway_count: 3 }));
    }

    #[test]
    fn a_frame_counter_going_back_restarts_the_history() {
        let mut h = history(10, 1.0, 0);
        h.push(metric(0, 4.0));
        assert_eq!(h.iter().copied().collect::<Vec<_>>(), vec![metric(0, 4.0)]);
    }

    #[test]
    fn history_serializes_as_a_small_json_array() {
        let mut h = AdrHistory::default();
        h.push(UplinkMetric { f_cnt: 10, max_snr: 7.3, tx_power_index: 2, gateway_count: 1 });
        h.push(UplinkMetric { f_cnt: 11, max_snr: -12.5, tx_power_index: 2, gateway_count: 3 });
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, r#"[{"f":10,"snr":7.3,"tx":2,"gw":1},{"f":11,"snr":-12.5,"tx":2,"gw":3}]"#);
        assert_eq!(serde_json::from_str::<AdrHistory>(&json).unwrap(), h);
        assert_eq!(serde_json::from_str::<AdrHistory>("[]").unwrap(), AdrHistory::default());
        // A full history stays well under a kilobyte.
        assert!(serde_json::to_string(&history(20, -17.25, 7)).unwrap().len() < 1000);
    }

    #[test]
    fn an_uplink_without_a_finite_snr_is_left_out() {
        let mut h = history(3, 1.0, 0);
        for snr in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            h.push(metric(3, snr));
        }
        assert_eq!(h, history(3, 1.0, 0));
    }

    #[test]
    fn direction_names_which_way_the_link_moved() {
        let cases = [
            (d(0, 0, 1), d(3, 0, 1), AdrDirection::Up),
            (d(5, 0, 1), d(5, 2, 1), AdrDirection::Up),
            (d(5, 2, 1), d(5, 0, 1), AdrDirection::Down),
            (d(5, 0, 1), d(3, 4, 1), AdrDirection::Down),
            (d(3, 4, 1), d(5, 0, 1), AdrDirection::Up),
            (d(3, 4, 1), d(3, 4, 3), AdrDirection::NbTrans),
            (d(3, 4, 2), d(3, 4, 2), AdrDirection::Same),
        ];
        for (before, after, want) in cases {
            assert_eq!(direction(before, after), want, "{before:?} -> {after:?}");
        }
        let labels: Vec<_> = AdrDirection::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(labels, ["up", "down", "nb_trans", "same"]);
    }
}
