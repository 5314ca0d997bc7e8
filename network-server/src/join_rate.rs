//! Join-request flood limit per DevEUI (`network.join_requests_per_dev_eui_per_minute`).
//!
//! Every accepted join-request costs database writes (DevNonce, JoinNonce, session) and a
//! join-accept's airtime, and a device stuck in a join loop, or anyone replaying its captured
//! join-requests through a gateway, can send them without end. A token bucket per DevEUI
//! (GCRA, `governor`) lets `n` through at once and then one every `60 / n` seconds; the rest
//! are rejected as `rate_limited`. It is checked after the MIC, so that datagrams forged
//! without the AppKey never use up a real device's budget, and so that only registered
//! devices take a place in the table.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::MonotonicClock;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::types::Eui64;

/// How many checks between sweeps of the devices whose bucket is full again.
const SWEEP_EVERY: u64 = 4096;

pub(crate) struct JoinRateLimit {
    limiter: Option<RateLimiter<Eui64, HashMapStateStore<Eui64>, MonotonicClock>>,
    checks: AtomicU64,
}

impl JoinRateLimit {
    /// `per_minute` join-requests per DevEUI, in bursts of as many; 0 = no limit.
    pub(crate) fn new(per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| RateLimiter::hashmap_with_clock(Quota::per_minute(n), MonotonicClock));
        JoinRateLimit { limiter, checks: AtomicU64::new(0) }
    }

    /// Takes one join-request of `dev_eui`; `false` when it is over the limit.
    pub(crate) fn allow(&self, dev_eui: Eui64) -> bool {
        let Some(limiter) = &self.limiter else { return true };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&dev_eui).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_gets_its_burst_and_then_is_limited_while_another_is_not() {
        let l = JoinRateLimit::new(3);
        let (a, b) = (Eui64::from_u64(1), Eui64::from_u64(2));
        assert_eq!((0..10).filter(|_| l.allow(a)).count(), 3);
        assert!(l.allow(b));
    }

    #[test]
    fn zero_is_no_limit() {
        let l = JoinRateLimit::new(0);
        assert!((0..10_000).all(|_| l.allow(Eui64::from_u64(1))));
    }

    #[test]
    fn sweeping_keeps_the_limited_devices() {
        let l = JoinRateLimit::new(1);
        assert!(l.allow(Eui64::from_u64(1)));
        // Many other devices pass through sweeps; device 1 stays limited.
        for i in 2..(2 * SWEEP_EVERY) {
            l.allow(Eui64::from_u64(i));
        }
        assert!(!l.allow(Eui64::from_u64(1)));
    }
}
