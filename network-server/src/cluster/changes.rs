//! Cache coherence between instances: every change this instance makes is PUBLISHed on the
//! cluster's `changes` channel as `{"origin":"<instance_id>","change":{…}}`, and every
//! change another instance published is applied here (`NetworkHandle::apply_remote`, which
//! marks what it names stale; the session cache's refresher re-reads it within 100 ms).
//!
//! Pub/sub delivers at most once and only to connected subscribers, so whatever may have
//! been missed is made up by a full resync (`Change::All`): after this instance's
//! subscription was lost, and on the other instances when this one could not publish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Change, ChangeSink, Cluster, ClusterError};
use crate::handle::NetworkHandle;

/// Announcements waiting for the publisher. Beyond this they are dropped and replaced by one
/// `Change::All`: the path that made a change must never wait for Redis.
const QUEUE: usize = 4096;
/// How long one PUBLISH, connect or PING may take before Redis counts as unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the subscription's connection is checked while no message arrives: a Redis
/// that stops answering without closing the socket is noticed within this time.
const PING_INTERVAL: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often an owed resync request is tried again while no change comes to carry it.
const RESYNC_RETRY: Duration = Duration::from_secs(1);
/// What shutdown gives the publisher to send what is still queued.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// One message on the channel, as sent.
#[derive(Serialize)]
struct Outgoing<'a> {
    origin: &'a str,
    change: &'a Change,
}

/// One message on the channel, as received: the change is read only once it is known to
/// come from another instance.
#[derive(Deserialize)]
struct Incoming {
    origin: String,
    change: serde_json::Value,
}

/// The message announcing `change` made by instance `origin`.
fn encode(origin: &str, change: &Change) -> String {
    serde_json::to_string(&Outgoing { origin, change }).expect("a change serializes")
}

/// What a message on the channel asks of this instance.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    /// Published by this instance: already applied.
    Own,
    Remote(Change),
    /// Not understood (a newer instance's kind of change, or garbage): whatever changed is
    /// unknown, so everything is re-read.
    Unreadable(String),
}

fn decode(own_id: &str, payload: &[u8]) -> Received {
    let envelope: Incoming = match serde_json::from_slice(payload) {
        Ok(e) => e,
        Err(e) => return Received::Unreadable(e.to_string()),
    };
    if envelope.origin == own_id {
        return Received::Own;
    }
    match serde_json::from_value(envelope.change) {
        Ok(change) => Received::Remote(change),
        Err(e) => Received::Unreadable(e.to_string()),
    }
}

fn timed_out(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what}: no answer within {REDIS_TIMEOUT:?}")))
}

fn closed() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "pub/sub connection closed"))
}

/// The `ChangeSink` of an instance in a cluster.
pub struct ChangeBus {
    queue: mpsc::Sender<Change>,
    /// Set when an announcement was dropped (queue full): the publisher then asks every other
    /// instance to resync.
    overflowed: Arc<AtomicBool>,
}

impl ChangeSink for ChangeBus {
    fn announce(&self, change: &Change) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(change.clone()) {
            self.overflowed.store(true, Ordering::Release);
        }
        // Closed: the publisher stopped at shutdown; nobody is left to tell.
    }
}

impl ChangeBus {
    /// Subscribes, then starts the publisher and the subscriber; both stop when `stop` is
    /// cancelled (after the network server has drained, so that its last changes are still
    /// announced). Subscribed before returning, so that nothing announced after the caches
    /// are loaded is missed.
    pub async fn start(cluster: &Cluster, handle: &NetworkHandle, stop: CancellationToken) -> Result<Arc<ChangeBus>, ClusterError> {
        let first = subscription(cluster).await?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        tokio::spawn(publish(cluster.clone(), rx, overflowed.clone(), stop.clone()));
        tokio::spawn(subscribe(cluster.clone(), handle.clone(), first, stop));
        Ok(Arc::new(ChangeBus { queue, overflowed }))
    }
}

type Subscription = (redis::aio::PubSubSink, redis::aio::PubSubStream);

async fn subscription(cluster: &Cluster) -> Result<Subscription, redis::RedisError> {
    let connect = async {
        let (mut sink, stream) = cluster.client().get_async_pubsub().await?.split();
        sink.subscribe(cluster.key(&["changes"])).await?;
        Ok((sink, stream))
    };
    tokio::time::timeout(REDIS_TIMEOUT, connect).await.unwrap_or_else(|_| Err(timed_out("SUBSCRIBE")))
}

async fn publish(cluster: Cluster, mut rx: mpsc::Receiver<Change>, overflowed: Arc<AtomicBool>, stop: CancellationToken) {
    let channel = cluster.key(&["changes"]);
    let mut conn = cluster.conn();
    // The others may have missed something of ours: they must re-read everything.
    let mut owe_resync = false;
    let mut retry = tokio::time::interval(RESYNC_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let change = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => Some(c),
                None => return,
            },
            _ = retry.tick() => None,
            _ = stop.cancelled() => break,
        };
        if overflowed.swap(false, Ordering::AcqRel) {
            owe_resync = true;
        }
        if owe_resync {
            owe_resync = !send(&cluster, &mut conn, &channel, &Change::All).await;
        }
        if let Some(change) = change {
            if !send(&cluster, &mut conn, &channel, &change).await {
                owe_resync = true;
            }
        }
    }
    let _ = tokio::time::timeout(DRAIN_GRACE, async {
        while let Ok(change) = rx.try_recv() {
            send(&cluster, &mut conn, &channel, &change).await;
        }
    })
    .await;
}

/// PUBLISHes one change; false when Redis did not take it.
async fn send(cluster: &Cluster, conn: &mut redis::aio::ConnectionManager, channel: &str, change: &Change) -> bool {
    let message = encode(cluster.instance_id(), change);
    let result = match tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<i64>(conn)).await {
        Ok(r) => r,
        Err(_) => Err(timed_out("PUBLISH")),
    };
    cluster.report(&result);
    if let Err(e) = &result {
        tracing::debug!(error = %e, ?change, "change not announced; the other instances will resync");
    }
    result.is_ok()
}

/// Subscribes to the channel and applies what other instances announce, for as long as the
/// instance runs: a lost subscription is made again with backoff, and then everything is
/// re-read because announcements may have been missed meanwhile.
async fn subscribe(cluster: Cluster, handle: NetworkHandle, first: Subscription, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    let mut missed = false;
    let mut first = Some(first);
    loop {
        let connected = match first.take() {
            Some(s) => Ok(s),
            None => tokio::select! {
                r = subscription(&cluster) => r,
                _ = stop.cancelled() => return,
            },
        };
        cluster.report(&connected);
        let (mut sink, mut stream) = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, retry_in = ?backoff, "cannot subscribe to cluster changes");
                missed = true;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        if missed {
            tracing::info!("subscribed to cluster changes again; re-reading devices, profiles and gateways");
            apply(&handle, Change::All).await;
        }
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let lost = loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(m) => on_message(&cluster, &handle, m.get_payload_bytes()).await,
                    None => break closed(),
                },
                _ = ping.tick() => {
                    let answer = match tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(r) => r,
                        Err(_) => Err(timed_out("PING")),
                    };
                    cluster.report(&answer);
                    if let Err(e) = answer {
                        break e;
                    }
                }
                _ = stop.cancelled() => return,
            }
        };
        cluster.report(&Err::<(), _>(lost));
        missed = true;
    }
}

async fn on_message(cluster: &Cluster, handle: &NetworkHandle, payload: &[u8]) {
    match decode(cluster.instance_id(), payload) {
        Received::Own => {}
        Received::Remote(change) => apply(handle, change).await,
        Received::Unreadable(reason) => {
            tracing::warn!(%reason, "unreadable cluster change; re-reading everything");
            apply(handle, Change::All).await;
        }
    }
}

async fn apply(handle: &NetworkHandle, change: Change) {
    if let Err(e) = handle.apply_remote(change.clone()).await {
        // Device marks are set without the database; what fails is re-reading gateways.
        tracing::warn!(error = %e, ?change, "could not apply another instance's change");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Eui64;

    #[test]
    fn messages_name_their_origin_and_carry_the_change() {
        let change = Change::Device { dev_eui: Eui64::from_u64(0x0102030405060708) };
        let message = encode("node0", &change);
        assert_eq!(message, r#"{"origin":"node0","change":{"kind":"device","dev_eui":"0102030405060708"}}"#);
        assert_eq!(decode("node1", message.as_bytes()), Received::Remote(change));
        assert_eq!(decode("node1", encode("node0", &Change::All).as_bytes()), Received::Remote(Change::All));
    }

    #[test]
    fn an_instance_ignores_its_own_changes() {
        let message = encode("node0", &Change::Gateway { gateway_id: Eui64::from_u64(1) });
        assert_eq!(decode("node0", message.as_bytes()), Received::Own);
        // Even a kind of change it would not understand: it cannot have sent one.
        assert_eq!(decode("node0", br#"{"origin":"node0","change":{"kind":"future"}}"#), Received::Own);
    }

    #[test]
    fn what_is_not_understood_asks_for_a_resync() {
        for bad in [&b"not json"[..], br#"{"origin":"node2"}"#, br#"{"origin":"node2","change":{"kind":"future"}}"#] {
            assert!(matches!(decode("node0", bad), Received::Unreadable(_)), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_change_and_flags_a_resync_without_blocking() {
        let (queue, mut rx) = mpsc::channel(1);
        let bus = ChangeBus { queue, overflowed: Arc::new(AtomicBool::new(false)) };
        bus.announce(&Change::Queue { dev_eui: Eui64::from_u64(1) });
        assert!(!bus.overflowed.load(Ordering::Acquire));
        bus.announce(&Change::Queue { dev_eui: Eui64::from_u64(2) });
        assert!(bus.overflowed.load(Ordering::Acquire));
        assert_eq!(rx.recv().await, Some(Change::Queue { dev_eui: Eui64::from_u64(1) }));
        assert!(rx.try_recv().is_err());
    }
}
