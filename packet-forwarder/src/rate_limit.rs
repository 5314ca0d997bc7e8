//! PUSH_DATA rate limits (`gateway.push_data_rate_*`): token buckets (GCRA, `governor`) per
//! gateway and for the whole server. A datagram is checked against its gateway's bucket
//! first, so that a flooding gateway's excess never uses up the global budget the other
//! gateways live on.

use std::num::NonZeroU32;

use governor::clock::MonotonicClock;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::GatewayConfig;
use crate::frame::GatewayId;
use crate::metrics::DropReason;

type Direct = RateLimiter<NotKeyed, InMemoryState, MonotonicClock>;
type Keyed = RateLimiter<GatewayId, HashMapStateStore<GatewayId>, MonotonicClock>;

pub(crate) struct PushDataLimits {
    per_gateway: Option<Keyed>,
    global: Option<Direct>,
}

/// `rate` datagrams a second with bursts of `burst` (0 = one second's worth); `None` when
/// `rate` is 0 (no limit).
fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl PushDataLimits {
    pub(crate) fn new(config: &GatewayConfig) -> Self {
        PushDataLimits {
            per_gateway: quota(config.push_data_rate_per_gateway, config.push_data_burst_per_gateway)
                .map(|q| RateLimiter::hashmap_with_clock(q, MonotonicClock)),
            global: quota(config.push_data_rate_global, config.push_data_burst_global)
                .map(|q| RateLimiter::direct_with_clock(q, MonotonicClock)),
        }
    }

    /// Takes one PUSH_DATA of `gateway` (which must be an allowed gateway, so that the table
    /// cannot be grown by made-up EUIs); `Some(reason)` when it is over a limit.
    pub(crate) fn check(&self, gateway: GatewayId) -> Option<DropReason> {
        if self.per_gateway.as_ref().is_some_and(|l| l.check_key(&gateway).is_err()) {
            return Some(DropReason::RateLimitedGateway);
        }
        if self.global.as_ref().is_some_and(|l| l.check().is_err()) {
            return Some(DropReason::RateLimitedGlobal);
        }
        None
    }

    /// Forgets gateways whose bucket is full again (they would start afresh anyway).
    pub(crate) fn forget_idle(&self) {
        if let Some(l) = &self.per_gateway {
            l.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Eui64;

    fn limits(per_gateway: (u32, u32), global: (u32, u32)) -> PushDataLimits {
        let config = GatewayConfig {
            push_data_rate_per_gateway: per_gateway.0,
            push_data_burst_per_gateway: per_gateway.1,
            push_data_rate_global: global.0,
            push_data_burst_global: global.1,
            ..Default::default()
        };
        PushDataLimits::new(&config)
    }

    #[test]
    fn a_gateway_over_its_burst_is_limited_while_another_is_not() {
        let l = limits((1, 5), (0, 0));
        let (a, b) = (Eui64::from_u64(1), Eui64::from_u64(2));
        let passed = (0..50).filter(|_| l.check(a).is_none()).count();
        assert_eq!(passed, 5);
        assert_eq!(l.check(a), Some(DropReason::RateLimitedGateway));
        assert_eq!(l.check(b), None);
    }

    #[test]
    fn the_global_limit_applies_to_all_gateways_together() {
        let l = limits((0, 0), (1, 3));
        let passed = (0..30u64).filter(|i| l.check(Eui64::from_u64(i % 3)).is_none()).count();
        assert_eq!(passed, 3);
        assert_eq!(l.check(Eui64::from_u64(9)), Some(DropReason::RateLimitedGlobal));
    }

    #[test]
    fn a_limited_gateway_does_not_use_up_the_global_budget() {
        let l = limits((1, 2), (1, 3));
        let flooder = Eui64::from_u64(1);
        for _ in 0..100 {
            l.check(flooder);
        }
        // The flooder took only its own 2 of the 3 global tokens; the other gateway gets the
        // last one, and then meets the global limit, not its own.
        let other = Eui64::from_u64(2);
        assert_eq!(l.check(other), None);
        assert_eq!(l.check(other), Some(DropReason::RateLimitedGlobal));
    }

    #[test]
    fn zero_turns_a_limit_off_and_a_zero_burst_is_one_seconds_worth() {
        let off = limits((0, 0), (0, 0));
        assert!((0..100_000).all(|_| off.check(Eui64::from_u64(1)).is_none()));
        let l = limits((10, 0), (0, 0));
        assert_eq!((0..100).filter(|_| l.check(Eui64::from_u64(1)).is_none()).count(), 10);
    }
}
