//! Which accepted messages the broker has not acknowledged yet.
//!
//! rumqttc 0.25 cannot be trusted with this: on a connection error its `EventLoop::clean`
//! moves un-acknowledged publishes (and requests still in its channel) into `pending`, then
//! *clears* `pending` when the broker answers the next CONNECT with `session_present = false`
//! (`eventloop.rs`, `poll`), which is what a clean session or a restarted broker without
//! persistence does; a publish parked by a packet-id collision is not even moved. So the
//! transport keeps its own copy of every message from the moment it hands it to rumqttc
//! until the PUBACK (MQTT 3.1.1 §4.3.2), and re-sends the un-acknowledged ones itself,
//! in their original order, after a reconnect.
//!
//! rumqttc assigns the packet id. It handles requests strictly in channel order and reports
//! each as `Outgoing::Publish(pkid)` in that same order (a publish held back by a collision
//! is reported when it is finally written, before any later one), so the n-th report
//! belongs to the n-th submitted message.

use std::collections::{HashMap, VecDeque};

/// A message as accepted by `MqttHandle::publish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// An accepted message and its place in the publish order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tracked {
    pub seq: u64,
    pub msg: Outbound,
}

pub(crate) struct Tracker {
    max_unacked: usize,
    /// Handed to rumqttc, packet id not known yet (oldest first).
    submitted: VecDeque<Tracked>,
    /// Written with this packet id, waiting for its PUBACK.
    sent: HashMap<u16, Tracked>,
    /// Displaced by an unexpected packet-id reuse; still owed to the broker.
    orphans: Vec<Tracked>,
}

impl Tracker {
    pub fn new(max_unacked: usize) -> Self {
        Tracker { max_unacked, submitted: VecDeque::new(), sent: HashMap::with_capacity(max_unacked), orphans: Vec::new() }
    }

    /// Whether another message may be handed to rumqttc without exceeding its in-flight
    /// window (beyond it rumqttc would stop reading requests and its channel would fill).
    pub fn has_room(&self) -> bool {
        self.len() < self.max_unacked
    }

    pub fn len(&self) -> usize {
        self.submitted.len() + self.sent.len() + self.orphans.len()
    }

    pub fn submitted(&mut self, t: Tracked) {
        self.submitted.push_back(t);
    }

    /// rumqttc wrote the oldest submitted message with this packet id. `false` when
    /// nothing was waiting for an id (the report is ignored).
    pub fn sent(&mut self, pkid: u16) -> bool {
        let Some(t) = self.submitted.pop_front() else {
            return false;
        };
        if let Some(displaced) = self.sent.insert(pkid, t) {
            self.orphans.push(displaced);
        }
        true
    }

    /// The broker acknowledged this packet id; returns the message it completes.
    pub fn acked(&mut self, pkid: u16) -> Option<Tracked> {
        self.sent.remove(&pkid)
    }

    /// The connection is gone: everything not acknowledged, oldest first, to be sent again.
    pub fn take_unacked(&mut self) -> Vec<Tracked> {
        let mut all: Vec<Tracked> = self.sent.drain().map(|(_, t)| t).collect();
        all.append(&mut self.orphans);
        all.extend(self.submitted.drain(..));
        all.sort_by_key(|t| t.seq);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Tracked {
        Tracked { seq, msg: Outbound { topic: format!("t/{seq}"), payload: vec![seq as u8] } }
    }

    #[test]
    fn packet_ids_are_matched_to_messages_in_submission_order() {
        let mut t = Tracker::new(10);
        t.submitted(msg(1));
        t.submitted(msg(2));
        assert!(t.sent(7));
        assert!(t.sent(8));
        assert_eq!(t.acked(8), Some(msg(2)));
        assert_eq!(t.acked(7), Some(msg(1)));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn an_ack_for_an_unknown_packet_id_completes_nothing() {
        let mut t = Tracker::new(10);
        t.submitted(msg(1));
        t.sent(1);
        assert_eq!(t.acked(2), None);
        assert_eq!(t.acked(1), Some(msg(1)));
        assert_eq!(t.acked(1), None);
    }

    #[test]
    fn a_sent_report_without_a_submitted_message_is_ignored() {
        let mut t = Tracker::new(10);
        assert!(!t.sent(1));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_window_is_full_at_max_unacked_messages_and_frees_on_ack() {
        let mut t = Tracker::new(2);
        t.submitted(msg(1));
        assert!(t.has_room());
        t.submitted(msg(2));
        assert!(!t.has_room());
        t.sent(1);
        assert!(!t.has_room());
        t.acked(1);
        assert!(t.has_room());
    }

    #[test]
    fn unacked_and_unsent_messages_come_back_oldest_first_after_a_disconnect() {
        let mut t = Tracker::new(10);
        for seq in 1..=5 {
            t.submitted(msg(seq));
        }
        t.sent(3);
        t.sent(1);
        t.sent(2);
        t.acked(1); // message 2 done
        let back: Vec<u64> = t.take_unacked().iter().map(|m| m.seq).collect();
        assert_eq!(back, vec![1, 3, 4, 5]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_message_displaced_by_packet_id_reuse_is_not_lost() {
        let mut t = Tracker::new(10);
        t.submitted(msg(1));
        t.submitted(msg(2));
        t.sent(1);
        t.sent(1);
        assert_eq!(t.len(), 2);
        let back: Vec<u64> = t.take_unacked().iter().map(|m| m.seq).collect();
        assert_eq!(back, vec![1, 2]);
    }
}
