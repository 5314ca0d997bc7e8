//! The Class C decision (pure): whether a Class C device's next queue item goes out now, and
//! if not, until when it waits. No database, no gateway, no clock: `now` is an input.
//!
//! Rules, in order (LoRaWAN 1.0.4 §6; ChirpStack's `classCTimeout` for the ACK wait):
//! 1. Nothing for a device whose profile is not Class C, or that has sent no uplink since its
//!    join or activation: the server has no gateway to reach it through.
//! 2. While the receive windows of its last uplink are open (until their end, see
//!    [`windows_close`]) nothing is sent: the device listens on RX1's frequency then, and the
//!    gateway may be transmitting the Class A answer; the device is tried again right after.
//! 3. A pending confirmed item (sent, not acknowledged yet) holds the queue: it expires when
//!    its deadline (`timeout_at`) passed; it waits `classCTimeout` after each transmission for
//!    the ACK uplink, then is sent again, at most `max_confirmed_transmissions` times in all,
//!    then expires. An expired item is dropped and the next one considered.
//! 4. Items larger than the RX2 data rate's N (RP002-1.0.3 §2.4.6) are dropped.
//! 5. The first remaining item is sent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::downlink::decide::Settled;
use crate::storage::QueueItem;

pub struct ClassCInput<'a> {
    /// Device profile `supportsClassC`.
    pub supports_class_c: bool,
    /// When the receive windows of the device's last uplink close, or the last Class C frame
    /// has left the gateway if that is later; `None` when no uplink was heard since the join
    /// or activation (or since the server started).
    pub windows_close: Option<DateTime<Utc>>,
    /// The device's queue, oldest first.
    pub queue: &'a [QueueItem],
    /// The pending confirmed item last sent and when its ACK wait ends, if known.
    pub ack_wait: Option<(Uuid, DateTime<Utc>)>,
    /// Device profile `classCTimeout`.
    pub class_c_timeout: Duration,
    /// N of the RX2 data rate: the largest FRMPayload it carries.
    pub max_payload: usize,
    pub max_confirmed_transmissions: u32,
    pub now: DateTime<Utc>,
}

/// What happens next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing until the queue changes or the device sends an uplink.
    Idle,
    /// The receive windows of the last uplink are open until then: decide again then.
    AfterWindows(DateTime<Utc>),
    /// The pending confirmed item waits for its ACK until then; decide again then. When the
    /// wait was not known (the item went out in a Class A window, or before a restart) it
    /// starts now.
    AwaitAck { item: Uuid, until: DateTime<Utc> },
    /// Send this item now (a pending one again, with a new FCntDown).
    Send(QueueItem),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassCDecision {
    /// A pending confirmed item that expired (`acknowledged: false`).
    pub expired: Option<Settled>,
    /// Items that cannot fit the RX2 data rate, with the limit they exceeded.
    pub too_large: Vec<(QueueItem, usize)>,
    pub next: Next,
}

/// When a device's receive windows after an uplink received at `received` are over: RX2
/// opens `rx2_delay` after the uplink (RX1 delay + 1 s, LoRaWAN 1.0.4 §3.3.2) and stays busy
/// for `rx2_busy`, the longer of the Class A frame sent for that uplink and an empty frame at
/// the RX2 data rate (the time the device keeps RX2 open to detect a preamble is shorter).
pub fn windows_close(received: DateTime<Utc>, rx2_delay: Duration, rx2_busy: Duration) -> DateTime<Utc> {
    received + chrono::Duration::from_std(rx2_delay + rx2_busy).unwrap_or_else(|_| chrono::Duration::seconds(2))
}

pub fn decide(input: &ClassCInput) -> ClassCDecision {
    let mut decision = ClassCDecision { expired: None, too_large: Vec::new(), next: Next::Idle };
    if !input.supports_class_c {
        return decision;
    }
    let Some(close) = input.windows_close else { return decision };
    if input.queue.is_empty() {
        return decision;
    }
    if input.now < close {
        decision.next = Next::AfterWindows(close);
        return decision;
    }
    let now = input.now;
    let mut items = input.queue.to_vec();
    if let Some(pos) = items.iter().position(|i| i.is_pending) {
        let item = items.remove(pos);
        let deadline_passed = item.timeout_at.is_some_and(|t| t <= now);
        let wait = input.ack_wait.filter(|(id, _)| *id == item.id).map(|(_, until)| until);
        match wait {
            _ if deadline_passed => decision.expired = Some(Settled { item, acknowledged: false }),
            Some(until) if until > now => {
                let until = item.timeout_at.map_or(until, |t| t.min(until));
                decision.next = Next::AwaitAck { item: item.id, until };
                return decision;
            }
            None => {
                let wait = chrono::Duration::from_std(input.class_c_timeout).unwrap_or_else(|_| chrono::Duration::seconds(5));
                let until = item.timeout_at.map_or(now + wait, |t| t.min(now + wait));
                decision.next = Next::AwaitAck { item: item.id, until };
                return decision;
            }
            Some(_) if item.retries >= input.max_confirmed_transmissions => decision.expired = Some(Settled { item, acknowledged: false }),
            Some(_) => {
                decision.next = Next::Send(item);
                return decision;
            }
        }
    }
    while items.first().is_some_and(|i| i.data.len() > input.max_payload) {
        decision.too_large.push((items.remove(0), input.max_payload));
    }
    if let Some(item) = items.into_iter().next() {
        decision.next = Next::Send(item);
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Eui64;

    fn now() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    fn item(len: usize, confirmed: bool) -> QueueItem {
        QueueItem {
            id: Uuid::new_v4(),
            dev_eui: Eui64([1; 8]),
            f_port: 10,
            confirmed,
            data: vec![0xab; len],
            f_cnt_down: None,
            is_pending: false,
            timeout_at: None,
            retries: 0,
            created_at: now(),
        }
    }

    fn pending(retries: u32) -> QueueItem {
        QueueItem { is_pending: true, retries, f_cnt_down: Some(4), timeout_at: Some(now() + secs(60)), ..item(3, true) }
    }

    fn input(queue: &[QueueItem]) -> ClassCInput<'_> {
        ClassCInput {
            supports_class_c: true,
            windows_close: Some(now() - secs(1)),
            queue,
            ack_wait: None,
            class_c_timeout: Duration::from_secs(5),
            max_payload: 51,
            max_confirmed_transmissions: 3,
            now: now(),
        }
    }

    #[test]
    fn only_class_c_devices_heard_since_activation_with_queued_items_get_a_downlink() {
        let queue = [item(4, false)];
        // (supportsClassC, uplink heard, queue) -> sent
        let cases = [(true, true, true, true), (false, true, true, false), (true, false, true, false), (true, true, false, false)];
        for (class_c, heard, queued, want) in cases {
            let q: &[QueueItem] = if queued { &queue } else { &[] };
            let d = decide(&ClassCInput { supports_class_c: class_c, windows_close: heard.then(|| now() - secs(1)), ..input(q) });
            assert_eq!(d.next == Next::Send(queue[0].clone()), want, "{class_c} {heard} {queued}: {:?}", d.next);
            if !want {
                assert_eq!(d.next, Next::Idle);
            }
        }
    }

    #[test]
    fn nothing_goes_out_while_the_last_uplinks_windows_are_open() {
        let queue = [item(4, false)];
        let close = now() + chrono::Duration::milliseconds(1500);
        let d = decide(&ClassCInput { windows_close: Some(close), ..input(&queue) });
        assert_eq!(d.next, Next::AfterWindows(close));
        // From the moment they close, the item goes out.
        let d = decide(&ClassCInput { windows_close: Some(close), now: close, ..input(&queue) });
        assert_eq!(d.next, Next::Send(queue[0].clone()));
    }

    #[test]
    fn the_windows_end_after_rx2_and_the_frame_sent_in_it() {
        let ms = Duration::from_millis;
        let cases = [(2_000, 991, 2_991), (6_000, 991, 6_991), (2_000, 2_466, 4_466)];
        for (rx2_delay, busy, want) in cases {
            assert_eq!(windows_close(now(), ms(rx2_delay), ms(busy)), now() + chrono::Duration::milliseconds(want as i64));
        }
    }

    #[test]
    fn a_pending_confirmed_item_waits_for_its_ack_then_is_sent_again_then_expires() {
        let p = pending(1);
        let next = item(2, false);
        let queue = [p.clone(), next.clone()];
        // The wait is unknown (sent in a Class A window, or before a restart): it starts now.
        let d = decide(&input(&queue));
        assert_eq!(d.next, Next::AwaitAck { item: p.id, until: now() + secs(5) });
        // Known and running: the next item waits too.
        let d = decide(&ClassCInput { ack_wait: Some((p.id, now() + secs(2))), ..input(&queue) });
        assert_eq!(d.next, Next::AwaitAck { item: p.id, until: now() + secs(2) });
        // The wait of another item does not count.
        let d = decide(&ClassCInput { ack_wait: Some((Uuid::new_v4(), now() - secs(2))), ..input(&queue) });
        assert_eq!(d.next, Next::AwaitAck { item: p.id, until: now() + secs(5) });
        // Over: sent again.
        let d = decide(&ClassCInput { ack_wait: Some((p.id, now())), ..input(&queue) });
        assert_eq!((d.expired, d.next), (None, Next::Send(p.clone())));
        // Over after the last transmission: dropped, and the next item goes out.
        let tired = pending(3);
        let queue = [tired.clone(), next.clone()];
        let d = decide(&ClassCInput { ack_wait: Some((tired.id, now())), ..input(&queue) });
        assert_eq!(d.expired, Some(Settled { item: tired, acknowledged: false }));
        assert_eq!(d.next, Next::Send(next.clone()));
    }

    #[test]
    fn a_pending_item_past_its_deadline_expires_and_the_wait_never_outlasts_it() {
        let next = item(2, false);
        let mut late = pending(1);
        late.timeout_at = Some(now());
        let queue = [late.clone(), next.clone()];
        let d = decide(&ClassCInput { ack_wait: Some((late.id, now() + secs(3))), ..input(&queue) });
        assert_eq!(d.expired, Some(Settled { item: late, acknowledged: false }));
        assert_eq!(d.next, Next::Send(next));
        let mut soon = pending(1);
        soon.timeout_at = Some(now() + secs(1));
        let d = decide(&ClassCInput { ack_wait: Some((soon.id, now() + secs(3))), ..input(std::slice::from_ref(&soon)) });
        assert_eq!(d.next, Next::AwaitAck { item: soon.id, until: now() + secs(1) });
    }

    #[test]
    fn items_too_large_for_rx2_are_dropped_and_the_next_one_is_sent() {
        let queue = [item(52, false), item(60, true), item(51, false)];
        let d = decide(&input(&queue));
        assert_eq!(d.too_large.iter().map(|(i, n)| (i.id, *n)).collect::<Vec<_>>(), vec![(queue[0].id, 51), (queue[1].id, 51)]);
        assert_eq!(d.next, Next::Send(queue[2].clone()));
    }
}
