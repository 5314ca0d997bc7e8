//! Log lines caused by single datagrams, rate-limited: anyone who can reach the UDP port can
//! send thousands of datagrams a second, and one line each would flood the log (and the disk
//! under it). Every kind of line is written at most once per [`LOG_INTERVAL`], carrying how
//! many occurrences it stands for; metrics still count each one.
//!
//! Text that came from the network goes through [`untrusted`]: cut to a bounded length, and
//! logged with `?` (Debug) so quotes and control characters are escaped.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::DropReason;

/// At most one line per drop reason or notice in this interval.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How much of a network-supplied text goes into a log line.
const MAX_UNTRUSTED_CHARS: usize = 120;

/// Per-datagram events worth a line that are not drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    TxAckUnknownError,
    TxAckNotPending,
    PullDataFromUnknownGateway,
    PullAddressSet,
    PullAddressPending,
    PullAddressMoved,
    PeerUnreachable,
    ReplyFailed,
}

impl Notice {
    const COUNT: usize = 8;

    fn index(self) -> usize {
        self as usize
    }
}

/// When each kind of line was last written and how many occurrences it has not reported yet.
#[derive(Default)]
pub(crate) struct DatagramLog {
    drops: Limiter<{ DropReason::ALL.len() }>,
    notices: Limiter<{ Notice::COUNT }>,
}

impl DatagramLog {
    /// Counts one dropped datagram (or part of one); returns whether a warning line was
    /// written for it.
    pub(crate) fn dropped(&mut self, reason: DropReason, src: SocketAddr, detail: &dyn Display) -> bool {
        let Some(count) = self.drops.note(reason.index()) else { return false };
        tracing::warn!(reason = reason.as_str(), count, src = %src, detail = ?untrusted(detail), "dropped Semtech UDP input");
        true
    }

    /// Counts one `notice`; `Some(count)` when a line may be written now, `count` being the
    /// occurrences it stands for (this one included).
    pub(crate) fn notice(&mut self, notice: Notice) -> Option<u64> {
        self.notices.note(notice.index())
    }
}

struct Limiter<const N: usize> {
    last: [Option<Instant>; N],
    count: [u64; N],
}

impl<const N: usize> Default for Limiter<N> {
    fn default() -> Self {
        Limiter { last: [None; N], count: [0; N] }
    }
}

impl<const N: usize> Limiter<N> {
    fn note(&mut self, i: usize) -> Option<u64> {
        self.count[i] += 1;
        if self.last[i].is_some_and(|t| t.elapsed() < LOG_INTERVAL) {
            return None;
        }
        self.last[i] = Some(Instant::now());
        Some(std::mem::take(&mut self.count[i]))
    }
}

/// A network-supplied text fit for a log field: at most [`MAX_UNTRUSTED_CHARS`] characters.
/// Log it with `?` so that it is quoted and escaped.
pub(crate) fn untrusted(text: impl Display) -> String {
    let mut s = text.to_string();
    if let Some((cut, _)) = s.char_indices().nth(MAX_UNTRUSTED_CHARS) {
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_warnings_are_limited_to_one_per_reason_per_interval() {
        let mut log = DatagramLog::default();
        let src = SocketAddr::from(([127, 0, 0, 1], 1700));
        assert!(log.dropped(DropReason::BadJson, src, &"first"));
        for _ in 0..100 {
            assert!(!log.dropped(DropReason::BadJson, src, &"again"));
        }
        // Another reason has its own budget.
        assert!(log.dropped(DropReason::TooShort, src, &"first"));
        // The suppressed ones are carried into the next line's count.
        assert_eq!(log.drops.count[DropReason::BadJson.index()], 100);
        assert_eq!(log.drops.count[DropReason::TooShort.index()], 0);
    }

    #[test]
    fn notices_are_limited_per_kind_and_report_what_they_stand_for() {
        let mut log = DatagramLog::default();
        assert_eq!(log.notice(Notice::TxAckUnknownError), Some(1));
        for _ in 0..9_999 {
            assert_eq!(log.notice(Notice::TxAckUnknownError), None);
        }
        assert_eq!(log.notice(Notice::TxAckNotPending), Some(1));
        // One interval later.
        let i = Notice::TxAckUnknownError.index();
        log.notices.last[i] = Instant::now().checked_sub(LOG_INTERVAL);
        assert_eq!(log.notice(Notice::TxAckUnknownError), Some(10_000));
        assert_eq!(log.notice(Notice::TxAckUnknownError), None);
    }

    #[test]
    fn untrusted_text_is_cut_and_escaped_when_logged_with_debug() {
        let long = "é".repeat(1000);
        let cut = untrusted(&long);
        assert_eq!(cut.chars().count(), MAX_UNTRUSTED_CHARS + 1);
        let forged = format!("{:?}", untrusted("bad\n2026-01-01 ERROR forged"));
        assert!(!forged.contains('\n'));
        assert_eq!(forged, r#""bad\n2026-01-01 ERROR forged""#);
    }
}
