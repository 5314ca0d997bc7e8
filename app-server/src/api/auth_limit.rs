//! The limit on failed authentication per client address: after `api.auth_failures_per_minute`
//! wrong tokens within a minute, every request from that address that carries a token answers
//! 429 with `Retry-After` until the minute is over — without looking at the token, so a
//! guesser costs neither a database lookup nor gets an answer, and a valid token from the
//! limited address waits too (the address cannot tell us who is behind it).
//!
//! Windows are fixed: the first failure opens a minute; failures of one address never touch
//! another's count, and a success resets nothing. IPv6 clients are counted per /64, the
//! smallest network one customer usually gets. The map is bounded; when it is full, expired
//! windows are dropped first, then the oldest.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Client addresses tracked at most (a few MB at worst).
const MAX_TRACKED: usize = 65_536;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

pub struct FailedAuthLimiter {
    /// Failures allowed per window; 0: no limit.
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

/// The address counted for `ip`: IPv4 (also when mapped into IPv6) as is, IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Whole seconds until `end`, at least 1 (a `Retry-After: 0` would invite a busy loop).
fn secs_until(end: Instant, now: Instant) -> u64 {
    let left = end.saturating_duration_since(now);
    (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
}

impl FailedAuthLimiter {
    pub fn new(per_minute: u32) -> FailedAuthLimiter {
        FailedAuthLimiter { per_minute, windows: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds `ip` must wait when it has used up its failures, else None.
    pub fn retry_after(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        if self.per_minute == 0 {
            return None;
        }
        let w = *self.lock().get(&client_key(ip))?;
        let end = w.start + WINDOW;
        (w.failures >= self.per_minute && now < end).then(|| secs_until(end, now))
    }

    /// Counts one wrong token from `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        if self.per_minute == 0 {
            return;
        }
        let key = client_key(ip);
        let mut windows = self.lock();
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| now < w.start + WINDOW);
            if windows.len() >= MAX_TRACKED {
                if let Some(oldest) = windows.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k) {
                    windows.remove(&oldest);
                }
            }
        }
        let w = windows.entry(key).or_insert(Window { start: now, failures: 0 });
        if now >= w.start + WINDOW {
            *w = Window { start: now, failures: 0 };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_limited_after_its_failures_until_the_window_ends() {
        let limiter = FailedAuthLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..2 {
            limiter.record_failure(ip("10.0.0.1"), t0);
        }
        assert_eq!(limiter.retry_after(ip("10.0.0.1"), t0), None);
        limiter.record_failure(ip("10.0.0.1"), t0);
        assert_eq!(limiter.retry_after(ip("10.0.0.1"), t0), Some(60));
        assert_eq!(limiter.retry_after(ip("10.0.0.1"), t0 + Duration::from_millis(59_500)), Some(1));
        // Others are unaffected.
        assert_eq!(limiter.retry_after(ip("10.0.0.2"), t0), None);
        // The window ends: a new one starts with the next failure.
        let later = t0 + WINDOW;
        assert_eq!(limiter.retry_after(ip("10.0.0.1"), later), None);
        limiter.record_failure(ip("10.0.0.1"), later);
        assert_eq!(limiter.retry_after(ip("10.0.0.1"), later), None);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = FailedAuthLimiter::new(2);
        let t0 = Instant::now();
        limiter.record_failure(ip("2001:db8:1:2::1"), t0);
        limiter.record_failure(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(limiter.retry_after(ip("2001:db8:1:2::77"), t0).is_some());
        assert!(limiter.retry_after(ip("2001:db8:1:3::1"), t0).is_none());
        limiter.record_failure(ip("::ffff:192.0.2.1"), t0);
        limiter.record_failure(ip("192.0.2.1"), t0);
        assert!(limiter.retry_after(ip("192.0.2.1"), t0).is_some());
    }

    #[test]
    fn zero_disables_the_limit() {
        let limiter = FailedAuthLimiter::new(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            limiter.record_failure(ip("10.0.0.1"), t0);
        }
        assert_eq!(limiter.retry_after(ip("10.0.0.1"), t0), None);
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = FailedAuthLimiter::new(1);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            limiter.record_failure(IpAddr::V4(i.into()), t0 + Duration::from_nanos(u64::from(i)));
        }
        assert_eq!(limiter.lock().len(), MAX_TRACKED);
        // The newest address is tracked, the oldest was dropped.
        assert!(limiter.retry_after(IpAddr::V4((MAX_TRACKED as u32 + 9).into()), t0 + Duration::from_secs(1)).is_some());
        assert!(limiter.retry_after(IpAddr::V4(0.into()), t0 + Duration::from_secs(1)).is_none());
    }
}
