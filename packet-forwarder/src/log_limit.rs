//! Lock-free "at most one log line per interval" gate, for log lines that one message from
//! outside (a datagram, an uplink, an MQTT publish) can cause: shared by every component so
//! that no per-message line can flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct LogLimiter {
    start: Instant,
    interval_ms: u64,
    /// Milliseconds since `start` of the last allowed line, plus one (0 = never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            start: Instant::now(),
            interval_ms: interval.as_millis() as u64,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were suppressed since
    /// the previous one; `None` when the caller must stay quiet.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(self.start.elapsed().as_millis() as u64 + 1)
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + self.interval_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Only one of several racing callers wins the slot.
        match self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => Some(self.suppressed.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_call_is_allowed_and_the_next_within_the_interval_is_not() {
        let l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.allow_at(1), Some(0));
        assert_eq!(l.allow_at(5_000), None);
        assert_eq!(l.allow_at(9_999), None);
    }

    #[test]
    fn after_the_interval_a_line_is_allowed_and_reports_what_was_suppressed() {
        let l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.allow_at(1), Some(0));
        assert_eq!(l.allow_at(2), None);
        assert_eq!(l.allow_at(3), None);
        assert_eq!(l.allow_at(10_001), Some(2));
        assert_eq!(l.allow_at(10_002), None);
    }
}
