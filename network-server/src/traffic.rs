//! Traffic counts of the last hour, per minute, in memory since the process started
//! (`GET /api/stats`, `GET /api/gateways/{gatewayId}/stats`). Fed at the same points that
//! decide an uplink's fate and send a downlink; an increment is a few atomic operations, no
//! lock on the way except a read lock to find a gateway's counters, and no database write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::types::Eui64;

/// Minute buckets kept: one hour.
pub const BUCKETS: usize = 60;
/// Seconds per bucket.
pub const BUCKET_SECONDS: u64 = 60;
/// Gateways with counters at most; beyond, new gateway ids are not counted (with
/// `network.allow_unknown_gateways`, forged ids must not grow the map without end).
const MAX_GATEWAYS: usize = 65_536;

/// Minutes since the Unix epoch.
pub fn minute_of(t: DateTime<Utc>) -> u64 {
    (t.timestamp().max(0) as u64) / BUCKET_SECONDS
}

/// A ring of [`BUCKETS`] per-minute counters. Each slot packs the minute it counts (high 32
/// bits) with its count (low 32 bits), so a slot left from an older hour is recognised and
/// restarted by one compare-and-swap, with no lock and no reset task.
pub struct MinuteRing {
    slots: [AtomicU64; BUCKETS],
}

impl Default for MinuteRing {
    fn default() -> Self {
        MinuteRing { slots: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

fn pack(minute: u64, count: u64) -> u64 {
    ((minute & 0xffff_ffff) << 32) | (count & 0xffff_ffff)
}

impl MinuteRing {
    /// Counts `n` in minute `minute`.
    pub fn add(&self, minute: u64, n: u32) {
        let slot = &self.slots[(minute % BUCKETS as u64) as usize];
        let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            let (m, c) = (v >> 32, v & 0xffff_ffff);
            Some(if m == minute & 0xffff_ffff {
                pack(m, c.saturating_add(u64::from(n)).min(0xffff_ffff))
            } else {
                pack(minute, u64::from(n))
            })
        });
    }

    /// The counts of the hour ending with minute `now` (that minute included), oldest first.
    pub fn last_hour(&self, now: u64) -> [u64; BUCKETS] {
        let mut out = [0; BUCKETS];
        for (i, o) in out.iter_mut().enumerate() {
            let Some(minute) = (now + 1 + i as u64).checked_sub(BUCKETS as u64) else { continue };
            let v = self.slots[(minute % BUCKETS as u64) as usize].load(Ordering::Acquire);
            if v >> 32 == minute & 0xffff_ffff {
                *o = v & 0xffff_ffff;
            }
        }
        out
    }
}

/// One gateway's counters.
#[derive(Default)]
pub struct GatewayTraffic {
    /// Uplink copies this gateway forwarded that the server decided about (accepted or not).
    pub uplinks: MinuteRing,
    /// Those of them that were not accepted.
    pub rejected: MinuteRing,
    /// Downlink frames sent to this gateway (each attempt, whatever its TX_ACK).
    pub downlinks: MinuteRing,
}

/// The network's counters. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct TrafficStats {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Accepted data uplinks (deduplicated).
    uplinks: MinuteRing,
    /// Accepted join-requests.
    joins: MinuteRing,
    gateways: RwLock<HashMap<Eui64, Arc<GatewayTraffic>>>,
}

/// A snapshot of one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCounts {
    /// The minute of the oldest bucket (minutes since the Unix epoch).
    pub from_minute: u64,
    pub counts: [u64; BUCKETS],
}

impl HourCounts {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl TrafficStats {
    pub fn accepted_uplink(&self, at: DateTime<Utc>) {
        self.inner.uplinks.add(minute_of(at), 1);
    }

    pub fn accepted_join(&self, at: DateTime<Utc>) {
        self.inner.joins.add(minute_of(at), 1);
    }

    /// A copy forwarded by `gateway` was decided about.
    pub fn gateway_uplink(&self, gateway: Eui64, accepted: bool, at: DateTime<Utc>) {
        if let Some(g) = self.gateway(gateway) {
            let minute = minute_of(at);
            g.uplinks.add(minute, 1);
            if !accepted {
                g.rejected.add(minute, 1);
            }
        }
    }

    /// A downlink frame was sent to `gateway`.
    pub fn gateway_downlink(&self, gateway: Eui64, at: DateTime<Utc>) {
        if let Some(g) = self.gateway(gateway) {
            g.downlinks.add(minute_of(at), 1);
        }
    }

    /// Accepted uplinks and joins of the hour ending with `now`'s minute.
    pub fn network(&self, now: DateTime<Utc>) -> (HourCounts, HourCounts) {
        let m = minute_of(now);
        (self.hour(&self.inner.uplinks, m), self.hour(&self.inner.joins, m))
    }

    /// Uplinks, rejected and downlinks of `gateway` in the hour ending with `now`'s minute
    /// (zeros for a gateway never heard since the start).
    pub fn of_gateway(&self, gateway: Eui64, now: DateTime<Utc>) -> (HourCounts, HourCounts, HourCounts) {
        let m = minute_of(now);
        let g = self.inner.gateways.read().unwrap_or_else(|p| p.into_inner()).get(&gateway).cloned();
        let g = g.unwrap_or_default();
        (self.hour(&g.uplinks, m), self.hour(&g.rejected, m), self.hour(&g.downlinks, m))
    }

    fn hour(&self, ring: &MinuteRing, now_minute: u64) -> HourCounts {
        HourCounts { from_minute: (now_minute + 1).saturating_sub(BUCKETS as u64), counts: ring.last_hour(now_minute) }
    }

    fn gateway(&self, id: Eui64) -> Option<Arc<GatewayTraffic>> {
        if let Some(g) = self.inner.gateways.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Some(g.clone());
        }
        let mut map = self.inner.gateways.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_GATEWAYS && !map.contains_key(&id) {
            return None;
        }
        Some(map.entry(id).or_default().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_minute_and_the_hour_reads_oldest_first() {
        let ring = MinuteRing::default();
        let now = 29_000_000;
        ring.add(now, 1);
        ring.add(now, 2);
        ring.add(now - 1, 5);
        ring.add(now - 59, 7);
        let hour = ring.last_hour(now);
        assert_eq!(hour[59], 3);
        assert_eq!(hour[58], 5);
        assert_eq!(hour[0], 7);
        assert_eq!(hour.iter().sum::<u64>(), 15);
    }

    #[test]
    fn a_slot_from_an_older_hour_restarts_and_old_minutes_read_as_zero() {
        let ring = MinuteRing::default();
        let now = 29_000_000;
        ring.add(now - 60, 9); // same slot as `now`, one hour earlier
        assert_eq!(ring.last_hour(now).iter().sum::<u64>(), 0, "an hour ago is outside the last hour");
        assert_eq!(ring.last_hour(now - 1)[0], 9, "but inside the hour before");
        ring.add(now, 1);
        assert_eq!(ring.last_hour(now)[59], 1, "the slot restarted, not 10");
        // Two hours later nothing of it is left.
        assert_eq!(ring.last_hour(now + 120), [0; BUCKETS]);
    }

    #[test]
    fn concurrent_increments_are_all_counted() {
        let ring = Arc::new(MinuteRing::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        ring.add(100, 1);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(ring.last_hour(100)[59], 40_000);
    }

    #[test]
    fn gateway_counts_split_rejected_and_downlinks() {
        let stats = TrafficStats::default();
        let now = Utc::now();
        let gw = Eui64::from_u64(1);
        stats.gateway_uplink(gw, true, now);
        stats.gateway_uplink(gw, false, now);
        stats.gateway_downlink(gw, now);
        stats.accepted_uplink(now);
        stats.accepted_join(now);
        let (up, rejected, down) = stats.of_gateway(gw, now);
        assert_eq!((up.total(), rejected.total(), down.total()), (2, 1, 1));
        assert_eq!(up.from_minute + 59, minute_of(now));
        let (up, joins) = stats.network(now);
        assert_eq!((up.total(), joins.total()), (1, 1));
        assert_eq!(stats.of_gateway(Eui64::from_u64(2), now).0.total(), 0);
    }
}
