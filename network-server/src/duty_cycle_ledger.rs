//! Per-gateway airtime accounting per regulatory sub-band over a sliding hour, so the server
//! never schedules a downlink that would make a gateway break its duty cycle (ETSI EN 300 220:
//! 1 % or 10 % of any hour, depending on the sub-band).
//!
//! Not to be confused with `mac::duty_cycle`, the DutyCycleReq MAC command that limits a
//! *device's* aggregated duty cycle.
//!
//! The ledger is pure: every call takes `now`, nothing reads a clock. [`SharedDutyCycleLedger`]
//! is the thread-safe handle the server keeps for all its tasks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use loraflow_packet_forwarder::frame::GatewayId;

use crate::region::{DutyCycle, SubBand, SubBandId};

/// The period duty cycles are measured over (ETSI EN 300 220-1: one hour).
pub const WINDOW: Duration = Duration::from_secs(3600);

/// Transmissions kept one by one per gateway and sub-band; beyond this the two oldest are
/// merged into one entry that expires with the later of them. That bounds memory (100 gateways
/// x 7 sub-bands x 1024 x 32 bytes is 23 MB at worst) and can only over-count, never under-count.
const MAX_ENTRIES_PER_BAND: usize = 1024;

/// How often `record` also sweeps gateways and sub-bands it is not writing to, so that
/// gateways that went quiet do not keep their entries.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// A transmission would take a gateway past its sub-band's duty cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "gateway {gateway} has used {used:?} of the {limit:?} per hour that {sub_band} allows ({duty_cycle}); {requested:?} more would exceed it"
)]
pub struct DutyCycleExceeded {
    pub gateway: GatewayId,
    pub sub_band: SubBandId,
    pub duty_cycle: DutyCycle,
    /// Airtime of this gateway in this sub-band during the last hour.
    pub used: Duration,
    /// Airtime of the transmission that was refused.
    pub requested: Duration,
    /// What the ledger allows per hour: the duty cycle's allowance times its budget.
    pub limit: Duration,
}

/// One gateway's transmissions in one sub-band, oldest first.
#[derive(Debug, Default)]
struct Transmissions {
    /// (end of the transmission, airtime).
    log: VecDeque<(Instant, Duration)>,
    /// Sum of the airtimes in `log`.
    total: Duration,
}

/// Whether a transmission that ended at `end` still counts at `now`: any part of it lies in
/// the last hour.
fn counts(end: Instant, now: Instant) -> bool {
    // Before the clock has run for an hour nothing has expired yet.
    now.checked_sub(WINDOW).is_none_or(|start| end > start)
}

impl Transmissions {
    /// Airtime of the entries still counting at `now`, without changing anything.
    fn used(&self, now: Instant) -> Duration {
        let expired: Duration = self.log.iter().take_while(|(end, _)| !counts(*end, now)).map(|(_, a)| *a).sum();
        self.total.saturating_sub(expired)
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(end, airtime)) = self.log.front() {
            if counts(end, now) {
                break;
            }
            self.log.pop_front();
            self.total = self.total.saturating_sub(airtime);
        }
    }

    fn push(&mut self, end: Instant, airtime: Duration) {
        if self.log.len() >= MAX_ENTRIES_PER_BAND {
            if let (Some((end1, a1)), Some((end2, a2))) = (self.log.pop_front(), self.log.pop_front()) {
                self.log.push_front((end1.max(end2), a1 + a2));
            }
        }
        self.log.push_back((end, airtime));
        self.total += airtime;
    }
}

/// Airtime per gateway per sub-band over the last hour.
#[derive(Debug)]
pub struct DutyCycleLedger {
    bands: HashMap<(GatewayId, SubBandId), Transmissions>,
    last_sweep: Option<Instant>,
    budget_percent: u8,
}

impl Default for DutyCycleLedger {
    fn default() -> DutyCycleLedger {
        DutyCycleLedger::with_budget_percent(100)
    }
}

impl DutyCycleLedger {
    /// A ledger that allows the whole legal duty cycle.
    pub fn new() -> DutyCycleLedger {
        DutyCycleLedger::default()
    }

    /// A ledger that allows only `percent` (clamped to 1..=100) of each sub-band's legal
    /// airtime: headroom for what the gateway sends on its own (Class B beacons, another
    /// network server behind a packet multiplexer).
    pub fn with_budget_percent(percent: u8) -> DutyCycleLedger {
        DutyCycleLedger { bands: HashMap::new(), last_sweep: None, budget_percent: percent.clamp(1, 100) }
    }

    /// What this ledger lets a gateway use in `sub_band` per hour.
    pub fn limit(&self, sub_band: &SubBand) -> Duration {
        sub_band.duty_cycle.allowance(WINDOW) * u32::from(self.budget_percent) / 100
    }

    /// Airtime `gateway` has used in `sub_band` during the hour before `now`.
    pub fn used(&self, gateway: GatewayId, sub_band: SubBandId, now: Instant) -> Duration {
        self.bands.get(&(gateway, sub_band)).map_or(Duration::ZERO, |t| t.used(now))
    }

    /// Whether `gateway` may transmit for `airtime` in `sub_band` at `now` without exceeding
    /// the duty cycle over the hour before; reaching the limit exactly is allowed.
    pub fn check(&self, gateway: GatewayId, sub_band: &SubBand, airtime: Duration, now: Instant) -> Result<(), DutyCycleExceeded> {
        let used = self.used(gateway, sub_band.id, now);
        let limit = self.limit(sub_band);
        if used.saturating_add(airtime) <= limit {
            Ok(())
        } else {
            Err(DutyCycleExceeded { gateway, sub_band: sub_band.id, duty_cycle: sub_band.duty_cycle, used, requested: airtime, limit })
        }
    }

    /// Counts a transmission of `airtime` that `gateway` makes in `sub_band`, starting at `now`.
    pub fn record(&mut self, gateway: GatewayId, sub_band: SubBandId, airtime: Duration, now: Instant) {
        let t = self.bands.entry((gateway, sub_band)).or_default();
        t.prune(now);
        t.push(now + airtime, airtime);
        if self.last_sweep.is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_INTERVAL) {
            self.sweep(now);
        }
    }

    /// Drops what no longer counts at `now`, and gateways and sub-bands left with nothing.
    pub fn sweep(&mut self, now: Instant) {
        self.bands.retain(|_, t| {
            t.prune(now);
            !t.log.is_empty()
        });
        self.last_sweep = Some(now);
    }

    /// Number of (gateway, sub-band) pairs with transmissions in memory.
    pub fn len(&self) -> usize {
        self.bands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bands.is_empty()
    }
}

/// The ledger behind a mutex, cheap to clone, for the server's context. Calls hold the lock
/// for a few microseconds and never across an `await`.
#[derive(Debug, Clone, Default)]
pub struct SharedDutyCycleLedger {
    inner: Arc<Mutex<DutyCycleLedger>>,
}

impl SharedDutyCycleLedger {
    pub fn new() -> SharedDutyCycleLedger {
        SharedDutyCycleLedger::default()
    }

    /// See [`DutyCycleLedger::with_budget_percent`].
    pub fn with_budget_percent(percent: u8) -> SharedDutyCycleLedger {
        SharedDutyCycleLedger { inner: Arc::new(Mutex::new(DutyCycleLedger::with_budget_percent(percent))) }
    }

    fn lock(&self) -> MutexGuard<'_, DutyCycleLedger> {
        // A panic while holding the lock cannot leave the ledger half-updated in a way that
        // matters (at worst one transmission is missing), so keep using it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` with the ledger locked, e.g. to plan several attempts against one state.
    pub fn with<R>(&self, f: impl FnOnce(&mut DutyCycleLedger) -> R) -> R {
        f(&mut self.lock())
    }

    pub fn used(&self, gateway: GatewayId, sub_band: SubBandId, now: Instant) -> Duration {
        self.lock().used(gateway, sub_band, now)
    }

    pub fn check(&self, gateway: GatewayId, sub_band: &SubBand, airtime: Duration, now: Instant) -> Result<(), DutyCycleExceeded> {
        self.lock().check(gateway, sub_band, airtime, now)
    }

    pub fn record(&self, gateway: GatewayId, sub_band: SubBandId, airtime: Duration, now: Instant) {
        self.lock().record(gateway, sub_band, airtime, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loraflow_packet_forwarder::frame::Eui64;

    fn band(id: SubBandId, permille: u16) -> SubBand {
        SubBand { id, duty_cycle: DutyCycle::from_permille(permille), max_erp_dbm: 14 }
    }

    const GW1: GatewayId = Eui64([0, 0, 0, 0, 0, 0, 0, 1]);
    const GW2: GatewayId = Eui64([0, 0, 0, 0, 0, 0, 0, 2]);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Records `total` seconds of airtime as 1-second transmissions starting at `start`.
    fn fill(ledger: &mut DutyCycleLedger, gw: GatewayId, id: SubBandId, start: Instant, total: u64) {
        for i in 0..total {
            ledger.record(gw, id, secs(1), start + secs(i));
        }
    }

    #[test]
    fn the_1_percent_band_allows_exactly_36_seconds_per_hour() {
        let m = band(SubBandId::EtsiM, 10);
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::new();
        fill(&mut l, GW1, m.id, t0, 35);
        let now = t0 + secs(100);
        assert_eq!(l.used(GW1, m.id, now), secs(35));
        // One more second reaches the limit exactly: allowed.
        assert_eq!(l.check(GW1, &m, secs(1), now), Ok(()));
        // A nanosecond over is not.
        let err = l.check(GW1, &m, secs(1) + Duration::from_nanos(1), now).unwrap_err();
        assert_eq!(err.used, secs(35));
        assert_eq!(err.limit, secs(36));
        assert_eq!(err.sub_band, SubBandId::EtsiM);
        assert_eq!(err.gateway, GW1);
        l.record(GW1, m.id, secs(1), now);
        assert!(l.check(GW1, &m, Duration::from_millis(1), now).is_err());
        assert_eq!(l.check(GW1, &m, Duration::ZERO, now), Ok(()));
    }

    #[test]
    fn the_10_percent_band_allows_exactly_360_seconds_per_hour() {
        let p = band(SubBandId::EtsiP, 100);
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::new();
        fill(&mut l, GW1, p.id, t0, 359);
        let now = t0 + secs(400);
        assert_eq!(l.check(GW1, &p, secs(1), now), Ok(()));
        assert_eq!(l.check(GW1, &p, secs(2), now).unwrap_err().limit, secs(360));
        l.record(GW1, p.id, secs(1), now);
        assert_eq!(l.used(GW1, p.id, now), secs(360));
        assert!(l.check(GW1, &p, Duration::from_millis(1), now).is_err());
    }

    #[test]
    fn the_0_1_percent_band_allows_3_6_seconds_per_hour() {
        let k = band(SubBandId::EtsiK, 1);
        let t0 = Instant::now();
        let l = DutyCycleLedger::new();
        assert_eq!(l.check(GW1, &k, Duration::from_millis(3600), t0), Ok(()));
        assert!(l.check(GW1, &k, Duration::from_millis(3601), t0).is_err());
    }

    #[test]
    fn a_budget_keeps_part_of_the_legal_airtime_in_reserve() {
        let m = band(SubBandId::EtsiM, 10);
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::with_budget_percent(50);
        assert_eq!(l.limit(&m), secs(18));
        l.record(GW1, m.id, secs(18), t0);
        assert_eq!(l.check(GW1, &m, secs(1), t0).unwrap_err().limit, secs(18));
        // Out-of-range budgets are clamped: 0 % would block everything, 200 % break the law.
        assert_eq!(DutyCycleLedger::with_budget_percent(0).limit(&m), Duration::from_millis(360));
        assert_eq!(DutyCycleLedger::with_budget_percent(200).limit(&m), secs(36));
        assert_eq!(DutyCycleLedger::new().limit(&m), secs(36));
    }

    #[test]
    fn transmissions_stop_counting_once_they_ended_more_than_an_hour_ago() {
        let m = band(SubBandId::EtsiM, 10);
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::new();
        l.record(GW1, m.id, secs(36), t0);
        // It ended at t0 + 36 s; it counts until one hour after that.
        assert!(l.check(GW1, &m, secs(1), t0 + secs(36) + WINDOW - Duration::from_nanos(1)).is_err());
        let later = t0 + secs(36) + WINDOW;
        assert_eq!(l.used(GW1, m.id, later), Duration::ZERO);
        assert_eq!(l.check(GW1, &m, secs(36), later), Ok(()));
    }

    #[test]
    fn a_sliding_hour_frees_airtime_transmission_by_transmission() {
        let m = band(SubBandId::EtsiM, 10);
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::new();
        // 36 one-second transmissions, one a minute.
        for i in 0..36 {
            l.record(GW1, m.id, secs(1), t0 + secs(60 * i));
        }
        let full = t0 + secs(60 * 35 + 1);
        assert!(l.check(GW1, &m, secs(1), full).is_err());
        // Just after the first one falls out of the hour, exactly one second is free again.
        let first_out = t0 + secs(1) + WINDOW;
        assert_eq!(l.used(GW1, m.id, first_out), secs(35));
        assert_eq!(l.check(GW1, &m, secs(1), first_out), Ok(()));
        assert!(l.check(GW1, &m, secs(2), first_out).is_err());
    }

    #[test]
    fn sub_bands_are_counted_separately() {
        let m = band(SubBandId::EtsiM, 10);
        let p = band(SubBandId::EtsiP, 100);
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::new();
        l.record(GW1, m.id, secs(36), t0);
        assert!(l.check(GW1, &m, secs(1), t0).is_err());
        assert_eq!(l.check(GW1, &p, secs(360), t0), Ok(()));
        assert_eq!(l.used(GW1, p.id, t0), Duration::ZERO);
    }

    #[test]
    fn gateways_are_counted_separately() {
        let m = band(SubBandId::EtsiM, 10);
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::new();
        l.record(GW1, m.id, secs(36), t0);
        assert!(l.check(GW1, &m, secs(1), t0).is_err());
        assert_eq!(l.check(GW2, &m, secs(36), t0), Ok(()));
    }

    #[test]
    fn memory_stays_bounded_and_merging_never_under_counts() {
        let p = band(SubBandId::EtsiP, 100);
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::new();
        let airtime = Duration::from_millis(100);
        for i in 0..3000u64 {
            l.record(GW1, p.id, airtime, t0 + Duration::from_millis(i));
        }
        let t = &l.bands[&(GW1, p.id)];
        assert!(t.log.len() <= MAX_ENTRIES_PER_BAND, "{} entries", t.log.len());
        let now = t0 + secs(10);
        assert_eq!(l.used(GW1, p.id, now), airtime * 3000);
        // The first transmission ended at t0 + 100 ms; merged with later ones it may count a
        // little longer than alone, never shorter.
        assert_eq!(l.used(GW1, p.id, t0 + Duration::from_millis(100) + WINDOW - Duration::from_nanos(1)), airtime * 3000);
        // After the last one has left the hour, nothing is left.
        let after = t0 + Duration::from_millis(2999) + airtime + WINDOW;
        assert_eq!(l.used(GW1, p.id, after), Duration::ZERO);
    }

    #[test]
    fn quiet_gateways_are_swept_away() {
        let m = band(SubBandId::EtsiM, 10);
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::new();
        for g in 0..100 {
            l.record(GatewayId::from_u64(g), m.id, secs(1), t0);
        }
        assert_eq!(l.len(), 100);
        // Another gateway transmitting more than an hour later sweeps the others out.
        l.record(GW1, SubBandId::EtsiP, secs(1), t0 + WINDOW + secs(2));
        assert_eq!(l.len(), 1);
        l.sweep(t0 + 2 * WINDOW + secs(4));
        assert!(l.is_empty());
    }

    #[test]
    fn out_of_order_timestamps_do_not_break_the_ledger() {
        let m = band(SubBandId::EtsiM, 10);
        let t0 = Instant::now();
        let mut l = DutyCycleLedger::new();
        l.record(GW1, m.id, secs(10), t0 + secs(5));
        l.record(GW1, m.id, secs(10), t0);
        assert_eq!(l.used(GW1, m.id, t0 + secs(20)), secs(20));
        assert_eq!(l.used(GW1, m.id, t0 + secs(16) + WINDOW), Duration::ZERO);
    }

    #[test]
    fn the_shared_ledger_is_one_ledger_for_all_clones() {
        let m = band(SubBandId::EtsiM, 10);
        let t0 = Instant::now();
        let a = SharedDutyCycleLedger::new();
        let b = a.clone();
        std::thread::scope(|s| {
            for i in 0..4 {
                let a = a.clone();
                s.spawn(move || {
                    for j in 0..9 {
                        a.record(GW1, m.id, secs(1), t0 + secs(i * 10 + j));
                    }
                });
            }
        });
        assert_eq!(b.used(GW1, m.id, t0 + secs(60)), secs(36));
        assert!(b.check(GW1, &m, secs(1), t0 + secs(60)).is_err());
        assert_eq!(b.with(|l| l.len()), 1);
    }
}
