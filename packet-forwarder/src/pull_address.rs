//! Where a gateway's downlinks go (PROTOCOL.TXT §5.2: the source of its PULL_DATA), and when
//! that may change.
//!
//! Any host can send a PULL_DATA carrying a registered gateway's EUI. Following every such
//! datagram would hand the gateway's downlinks to whoever sent the last one (issue 12), so a
//! new address only takes over once it has sent [`CONFIRMATIONS`] PULL_DATA in a row, the
//! second within `window` of the first, with none from the current address in between. A
//! gateway whose NAT mapping changed (or that restarted, with a new source port) sends
//! PULL_DATA every `keepalive_interval` (5-10 s) from the new address and is followed after its
//! second one; one forged datagram never moves the
//! path. This is a pure state machine: the caller passes the time and does the I/O.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

/// PULL_DATA in a row from a new address before downlinks go there.
pub(crate) const CONFIRMATIONS: u8 = 2;

/// The downlink address of one gateway and the address that may replace it.
#[derive(Debug, Default, Clone)]
pub(crate) struct PullAddress {
    current: Option<SocketAddr>,
    candidate: Option<Candidate>,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    addr: SocketAddr,
    seen: u8,
    first_at: Instant,
}

/// What one PULL_DATA did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PullOutcome {
    /// The first PULL_DATA of the gateway: its address is taken as is (nothing to protect yet).
    Established,
    /// From the current address.
    Current,
    /// From another address, which has now sent `seen` in a row; downlinks still go to `current`.
    Pending { current: SocketAddr, seen: u8 },
    /// The other address confirmed itself; downlinks go there from now on.
    Moved { from: SocketAddr },
}

impl PullOutcome {
    /// Whether the PULL_DATA came from (what is now) the downlink address: only those keep
    /// the gateway online, so that a forger elsewhere cannot keep a dead gateway ONLINE.
    pub(crate) fn came_from_downlink_address(self) -> bool {
        !matches!(self, PullOutcome::Pending { .. })
    }
}

impl PullAddress {
    /// Where PULL_RESP goes, if anywhere.
    pub(crate) fn current(&self) -> Option<SocketAddr> {
        self.current
    }

    /// Takes one PULL_DATA from `src` at `now`.
    pub(crate) fn on_pull_data(&mut self, src: SocketAddr, now: Instant, window: Duration) -> PullOutcome {
        let Some(current) = self.current else {
            self.current = Some(src);
            self.candidate = None;
            return PullOutcome::Established;
        };
        if src == current {
            // The gateway is still there: whatever another address sent is no longer "in a row".
            self.candidate = None;
            return PullOutcome::Current;
        }
        let seen = match self.candidate {
            Some(c) if c.addr == src && now.saturating_duration_since(c.first_at) <= window => c.seen + 1,
            _ => {
                self.candidate = Some(Candidate { addr: src, seen: 1, first_at: now });
                1
            }
        };
        if seen >= CONFIRMATIONS {
            self.current = Some(src);
            self.candidate = None;
            return PullOutcome::Moved { from: current };
        }
        if let Some(c) = self.candidate.as_mut() {
            c.seen = seen;
        }
        PullOutcome::Pending { current, seen }
    }

    /// Forgets the address (and any candidate), e.g. when its network is no longer allowed:
    /// the next PULL_DATA from an allowed address establishes a new one.
    pub(crate) fn forget(&mut self) {
        *self = PullAddress::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_pull_data_sets_the_address() {
        let mut p = PullAddress::default();
        let t = Instant::now();
        assert_eq!(p.on_pull_data(addr("192.0.2.1:4000"), t, WINDOW), PullOutcome::Established);
        assert_eq!(p.current(), Some(addr("192.0.2.1:4000")));
        assert_eq!(p.on_pull_data(addr("192.0.2.1:4000"), t, WINDOW), PullOutcome::Current);
    }

    #[test]
    fn one_forged_pull_data_does_not_move_the_address() {
        let mut p = PullAddress::default();
        let t = Instant::now();
        let real = addr("192.0.2.1:4000");
        let forger = addr("203.0.113.9:5000");
        p.on_pull_data(real, t, WINDOW);
        assert_eq!(p.on_pull_data(forger, t, WINDOW), PullOutcome::Pending { current: real, seen: 1 });
        assert_eq!(p.current(), Some(real));
        // The real gateway's next keepalive breaks the row: the forger starts again from one.
        assert_eq!(p.on_pull_data(real, t + Duration::from_secs(10), WINDOW), PullOutcome::Current);
        assert_eq!(p.on_pull_data(forger, t + Duration::from_secs(11), WINDOW), PullOutcome::Pending { current: real, seen: 1 });
        assert_eq!(p.current(), Some(real));
    }

    #[test]
    fn a_rebound_nat_mapping_moves_after_its_second_keepalive() {
        let mut p = PullAddress::default();
        let t = Instant::now();
        let old = addr("192.0.2.1:4000");
        let new = addr("192.0.2.1:4711");
        p.on_pull_data(old, t, WINDOW);
        assert!(!p.on_pull_data(new, t + Duration::from_secs(10), WINDOW).came_from_downlink_address());
        let moved = p.on_pull_data(new, t + Duration::from_secs(20), WINDOW);
        assert_eq!(moved, PullOutcome::Moved { from: old });
        assert!(moved.came_from_downlink_address());
        assert_eq!(p.current(), Some(new));
        // The old address is now the stranger.
        assert_eq!(p.on_pull_data(old, t + Duration::from_secs(21), WINDOW), PullOutcome::Pending { current: new, seen: 1 });
    }

    #[test]
    fn a_second_pull_data_outside_the_window_counts_as_a_first() {
        let mut p = PullAddress::default();
        let t = Instant::now();
        let old = addr("192.0.2.1:4000");
        let new = addr("192.0.2.1:4711");
        p.on_pull_data(old, t, WINDOW);
        p.on_pull_data(new, t, WINDOW);
        assert_eq!(p.on_pull_data(new, t + WINDOW + Duration::from_secs(1), WINDOW), PullOutcome::Pending { current: old, seen: 1 });
        let third = p.on_pull_data(new, t + WINDOW + Duration::from_secs(2), WINDOW);
        assert_eq!(third, PullOutcome::Moved { from: old });
    }

    #[test]
    fn two_strangers_alternating_never_confirm_each_other() {
        let mut p = PullAddress::default();
        let t = Instant::now();
        let real = addr("192.0.2.1:4000");
        p.on_pull_data(real, t, WINDOW);
        for i in 0..10 {
            let from = if i % 2 == 0 { addr("203.0.113.1:1") } else { addr("203.0.113.2:1") };
            assert!(matches!(p.on_pull_data(from, t, WINDOW), PullOutcome::Pending { seen: 1, .. }));
        }
        assert_eq!(p.current(), Some(real));
    }

    #[test]
    fn forget_clears_the_address_and_the_candidate() {
        let mut p = PullAddress::default();
        let t = Instant::now();
        p.on_pull_data(addr("192.0.2.1:4000"), t, WINDOW);
        p.on_pull_data(addr("192.0.2.2:4000"), t, WINDOW);
        p.forget();
        assert_eq!(p.current(), None);
        assert_eq!(p.on_pull_data(addr("192.0.2.2:4000"), t, WINDOW), PullOutcome::Established);
    }
}
