//! Where a Class A downlink may go out: which gateway, in which receive window, without making
//! any gateway break its sub-band's duty cycle (issue 9 part 7).
//!
//! [`plan_attempts`] is pure: it reads the duty-cycle ledger as it stands at `now` and returns
//! the attempts in the order the send step should try them, RX1 then RX2 on the best gateway,
//! then the next-best gateway's RX1 and RX2, and so on; windows that would break a duty cycle
//! are left out. The send step records an attempt's airtime in the ledger only once the
//! gateway has accepted it (TX_ACK without error).

use std::fmt;
use std::time::{Duration, Instant};

use loraflow_packet_forwarder::frame::GatewayId;

use crate::airtime::downlink_time_on_air;
use crate::duty_cycle_ledger::{DutyCycleExceeded, DutyCycleLedger};
use crate::region::{Region, SubBand, SubBandId};

/// A Class A receive window (LoRaWAN 1.0.4 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RxWindow {
    Rx1,
    Rx2,
}

impl RxWindow {
    pub fn as_str(&self) -> &'static str {
        match self {
            RxWindow::Rx1 => "rx1",
            RxWindow::Rx2 => "rx2",
        }
    }
}

impl fmt::Display for RxWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A window's radio parameters: centre frequency in Hz and downlink data rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRadio {
    pub window: RxWindow,
    pub frequency: u32,
    pub dr: u8,
}

/// One way to send the downlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub gateway: GatewayId,
    pub radio: WindowRadio,
    /// Time on air of the frame in this window; what to record once the gateway accepts it.
    pub airtime: Duration,
    /// The sub-band to record it under; `None` where the region sets no duty cycle.
    pub sub_band: Option<SubBand>,
}

/// A window left out because the gateway's sub-band has no airtime left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DutyCycleRefusal {
    pub window: RxWindow,
    pub exceeded: DutyCycleExceeded,
}

/// Why no attempt is possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAttempt {
    #[error("no gateway that heard the uplink can be reached")]
    NoGateway,
    #[error("no receive window has a downlink data rate")]
    NoWindow,
    /// Every window on every candidate gateway would break a duty cycle; the item stays queued.
    /// The first refusal is the best gateway's first window.
    #[error("every gateway that heard the uplink is at its duty-cycle limit{}", best(.refused))]
    DutyCycle { refused: Vec<DutyCycleRefusal> },
}

fn best(refused: &[DutyCycleRefusal]) -> String {
    refused.first().map(|r| format!("; {}: {}", r.window, r.exceeded)).unwrap_or_default()
}

impl NoAttempt {
    /// The sub-band that kept the best gateway's first window from being used, for the
    /// refusal metric.
    pub fn blocking_sub_band(&self) -> Option<SubBandId> {
        match self {
            NoAttempt::DutyCycle { refused } => refused.first().map(|r| r.exceeded.sub_band),
            _ => None,
        }
    }
}

/// The attempts to make for a downlink of `phy_payload_len` bytes, best first.
///
/// `gateways` are the ones that heard the uplink and can be reached, best first (repeats are
/// ignored); `windows` are the receive windows the frame fits in, in the order to try them
/// (RX1, RX2). A window whose data rate cannot carry a downlink is skipped.
pub fn plan_attempts(
    gateways: &[GatewayId],
    windows: &[WindowRadio],
    phy_payload_len: usize,
    region: &dyn Region,
    ledger: &DutyCycleLedger,
    now: Instant,
) -> Result<Vec<Attempt>, NoAttempt> {
    let mut seen: Vec<GatewayId> = Vec::with_capacity(gateways.len());
    for g in gateways {
        if !seen.contains(g) {
            seen.push(*g);
        }
    }
    if seen.is_empty() {
        return Err(NoAttempt::NoGateway);
    }
    let usable: Vec<(WindowRadio, Duration, Option<SubBand>)> = windows
        .iter()
        .filter_map(|w| {
            let dr = region.data_rate(w.dr).filter(|d| d.downlink)?;
            let airtime = downlink_time_on_air(&dr.modulation, phy_payload_len)?;
            Some((*w, airtime, region.sub_band(w.frequency)))
        })
        .collect();
    if usable.is_empty() {
        return Err(NoAttempt::NoWindow);
    }

    let mut attempts = Vec::new();
    let mut refused = Vec::new();
    for gateway in seen {
        for (radio, airtime, sub_band) in &usable {
            let verdict = match sub_band {
                Some(band) => ledger.check(gateway, band, *airtime, now),
                None => Ok(()),
            };
            match verdict {
                Ok(()) => attempts.push(Attempt { gateway, radio: *radio, airtime: *airtime, sub_band: *sub_band }),
                Err(exceeded) => refused.push(DutyCycleRefusal { window: radio.window, exceeded }),
            }
        }
    }
    if attempts.is_empty() {
        return Err(NoAttempt::DutyCycle { refused });
    }
    Ok(attempts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Eu868;
    use loraflow_packet_forwarder::frame::Eui64;

    const A: GatewayId = Eui64([0xa; 8]);
    const B: GatewayId = Eui64([0xb; 8]);
    const C: GatewayId = Eui64([0xc; 8]);

    const RX1: WindowRadio = WindowRadio { window: RxWindow::Rx1, frequency: 868_100_000, dr: 5 };
    const RX2: WindowRadio = WindowRadio { window: RxWindow::Rx2, frequency: 869_525_000, dr: 0 };

    /// A 13-byte PHYPayload: MHDR, FHDR with one FOpts byte, MIC.
    const LEN: usize = 13;

    fn band(freq: u32) -> SubBand {
        Eu868.sub_band(freq).unwrap()
    }

    /// Uses up `gateway`'s whole allowance in the sub-band of `freq`.
    fn exhaust(ledger: &mut DutyCycleLedger, gateway: GatewayId, freq: u32, now: Instant) {
        let b = band(freq);
        ledger.record(gateway, b.id, b.duty_cycle.allowance(crate::duty_cycle_ledger::WINDOW), now);
    }

    fn order(attempts: &[Attempt]) -> Vec<(GatewayId, RxWindow)> {
        attempts.iter().map(|a| (a.gateway, a.radio.window)).collect()
    }

    #[test]
    fn with_airtime_everywhere_the_best_gateway_comes_first_rx1_before_rx2() {
        let l = DutyCycleLedger::new();
        let got = plan_attempts(&[A, B], &[RX1, RX2], LEN, &Eu868, &l, Instant::now()).unwrap();
        assert_eq!(order(&got), vec![(A, RxWindow::Rx1), (A, RxWindow::Rx2), (B, RxWindow::Rx1), (B, RxWindow::Rx2)]);
        // SF7 and SF12 downlinks of 13 bytes, no CRC (see airtime.rs).
        assert_eq!(got[0].airtime, Duration::from_micros(41_216));
        assert_eq!(got[1].airtime, Duration::from_micros(1_155_072));
        assert_eq!(got[0].sub_band.unwrap().id, SubBandId::EtsiM);
        assert_eq!(got[1].sub_band.unwrap().id, SubBandId::EtsiP);
    }

    #[test]
    fn a_full_rx1_sub_band_leaves_rx2_first() {
        let now = Instant::now();
        let mut l = DutyCycleLedger::new();
        exhaust(&mut l, A, RX1.frequency, now);
        let got = plan_attempts(&[A, B], &[RX1, RX2], LEN, &Eu868, &l, now).unwrap();
        assert_eq!(order(&got), vec![(A, RxWindow::Rx2), (B, RxWindow::Rx1), (B, RxWindow::Rx2)]);
    }

    #[test]
    fn a_gateway_with_both_sub_bands_full_gives_way_to_the_next_best() {
        let now = Instant::now();
        let mut l = DutyCycleLedger::new();
        exhaust(&mut l, A, RX1.frequency, now);
        exhaust(&mut l, A, RX2.frequency, now);
        exhaust(&mut l, B, RX2.frequency, now);
        let got = plan_attempts(&[A, B, C], &[RX1, RX2], LEN, &Eu868, &l, now).unwrap();
        assert_eq!(order(&got), vec![(B, RxWindow::Rx1), (C, RxWindow::Rx1), (C, RxWindow::Rx2)]);
    }

    #[test]
    fn when_every_gateway_is_full_the_refusal_names_sub_band_and_usage() {
        let now = Instant::now();
        let mut l = DutyCycleLedger::new();
        for g in [A, B] {
            exhaust(&mut l, g, RX1.frequency, now);
            exhaust(&mut l, g, RX2.frequency, now);
        }
        let err = plan_attempts(&[A, B], &[RX1, RX2], LEN, &Eu868, &l, now).unwrap_err();
        let NoAttempt::DutyCycle { refused } = &err else { panic!("{err:?}") };
        let got: Vec<(GatewayId, RxWindow, SubBandId)> =
            refused.iter().map(|r| (r.exceeded.gateway, r.window, r.exceeded.sub_band)).collect();
        assert_eq!(
            got,
            vec![
                (A, RxWindow::Rx1, SubBandId::EtsiM),
                (A, RxWindow::Rx2, SubBandId::EtsiP),
                (B, RxWindow::Rx1, SubBandId::EtsiM),
                (B, RxWindow::Rx2, SubBandId::EtsiP),
            ]
        );
        assert_eq!(refused[0].exceeded.used, Duration::from_secs(36));
        assert_eq!(refused[0].exceeded.limit, Duration::from_secs(36));
        assert_eq!(refused[1].exceeded.limit, Duration::from_secs(360));
        assert_eq!(err.blocking_sub_band(), Some(SubBandId::EtsiM));
        assert!(err.to_string().contains("; rx1: gateway 0a0a0a0a0a0a0a0a has used 36s of the 36s per hour that ETSI band M"), "{err}");
        // Built by hand without refusals it still prints.
        assert!(NoAttempt::DutyCycle { refused: vec![] }.to_string().ends_with("limit"));
    }

    #[test]
    fn airtime_a_few_milliseconds_short_of_the_limit_is_not_enough_for_sf12() {
        let now = Instant::now();
        let mut l = DutyCycleLedger::new();
        // 359.5 s used in P: the 1.16 s SF12 RX2 frame no longer fits, RX1 still does.
        l.record(A, SubBandId::EtsiP, Duration::from_millis(359_500), now);
        let got = plan_attempts(&[A], &[RX1, RX2], LEN, &Eu868, &l, now).unwrap();
        assert_eq!(order(&got), vec![(A, RxWindow::Rx1)]);
    }

    #[test]
    fn airtime_used_more_than_an_hour_ago_no_longer_blocks() {
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::new();
        exhaust(&mut l, A, RX1.frequency, t0);
        exhaust(&mut l, A, RX2.frequency, t0);
        let later = t0 + Duration::from_secs(360) + crate::duty_cycle_ledger::WINDOW;
        let got = plan_attempts(&[A], &[RX1, RX2], LEN, &Eu868, &l, later).unwrap();
        assert_eq!(order(&got), vec![(A, RxWindow::Rx1), (A, RxWindow::Rx2)]);
    }

    #[test]
    fn repeated_gateways_are_tried_once() {
        let l = DutyCycleLedger::new();
        let got = plan_attempts(&[A, A, B, A], &[RX1], LEN, &Eu868, &l, Instant::now()).unwrap();
        assert_eq!(order(&got), vec![(A, RxWindow::Rx1), (B, RxWindow::Rx1)]);
    }

    #[test]
    fn no_gateway_and_no_window_are_their_own_refusals() {
        let l = DutyCycleLedger::new();
        let now = Instant::now();
        assert_eq!(plan_attempts(&[], &[RX1, RX2], LEN, &Eu868, &l, now), Err(NoAttempt::NoGateway));
        assert_eq!(plan_attempts(&[A], &[], LEN, &Eu868, &l, now), Err(NoAttempt::NoWindow));
        // LR-FHSS (DR8) is uplink only, DR15 does not exist.
        let lr = WindowRadio { dr: 8, ..RX1 };
        let undefined = WindowRadio { dr: 15, ..RX2 };
        assert_eq!(plan_attempts(&[A], &[lr, undefined], LEN, &Eu868, &l, now), Err(NoAttempt::NoWindow));
        assert_eq!(NoAttempt::NoGateway.blocking_sub_band(), None);
    }

    #[test]
    fn only_one_usable_window_is_planned_alone() {
        let l = DutyCycleLedger::new();
        let lr = WindowRadio { dr: 8, ..RX1 };
        let got = plan_attempts(&[A], &[lr, RX2], LEN, &Eu868, &l, Instant::now()).unwrap();
        assert_eq!(order(&got), vec![(A, RxWindow::Rx2)]);
    }
}
