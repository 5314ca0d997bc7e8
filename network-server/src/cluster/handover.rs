//! Downlink hand-over: instance A decided a downlink for a gateway that instance B holds.
//! A publishes the frame on B's channel `{prefix}:down:{B}` with a request id; B sends it
//! with its own UDP server and publishes the gateway's TX_ACK verdict on A's channel
//! `{prefix}:txack:{A}`; A waits for it within the same budget as a local send
//! (`gateway.tx_ack_timeout_ms` + [`MARGIN`]) and gets a `TxAckStatus` as if it had sent the
//! frame itself (`Timeout` without an answer).
//!
//! Pub/sub rather than streams: a frame for a Class A window is worthless a second later, so
//! nothing is worth keeping for an instance that is not listening. PUBLISH says how many
//! listened; none means B is gone, and A tries the next gateway at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use loraflow_packet_forwarder::frame::{DownlinkFrame, TxAckStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Cluster;
use crate::frame_feed::DownlinkFor;

/// What A waits beyond the gateway's own TX_ACK budget: two pub/sub hops and B's scheduling.
pub const MARGIN: Duration = Duration::from_millis(250);
/// A publish is on the way to a receive window.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(100);
/// Wait between two attempts to subscribe while Redis is unavailable.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// A frame handed to the instance holding its gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub request_id: Uuid,
    /// The instance waiting for the verdict.
    pub from: String,
    pub frame: DownlinkFrame,
    /// Who the frame is for and its data rate, for the gateway's live feed on the sending
    /// instance.
    pub to: Option<DownlinkFor>,
    pub dr: Option<u8>,
}

/// The gateway's verdict, back to the instance that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub request_id: Uuid,
    pub status: TxAckStatus,
}

/// Why a hand-over gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    /// Nobody listens on the instance's channel: it stopped or lost Redis.
    #[error("instance {0} does not listen")]
    NoListener(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What the serving side does with a frame handed to it: send it with the local UDP server
/// and record it where this instance shows its gateways' traffic.
pub trait LocalSender: Send + Sync + 'static {
    fn send(&self, request: Request) -> futures_util::future::BoxFuture<'static, TxAckStatus>;
}

/// Both sides of the hand-over on one instance. Cheap to clone.
#[derive(Clone)]
pub struct HandOver {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: Cluster,
    /// Hand-overs waiting for their verdict.
    waiting: Mutex<HashMap<Uuid, oneshot::Sender<TxAckStatus>>>,
}

impl HandOver {
    pub fn new(cluster: Cluster) -> HandOver {
        HandOver { inner: Arc::new(Inner { cluster, waiting: Mutex::new(HashMap::new()) }) }
    }

    fn down_channel(&self, instance: &str) -> String {
        self.inner.cluster.key(&["down", instance])
    }

    fn txack_channel(&self, instance: &str) -> String {
        self.inner.cluster.key(&["txack", instance])
    }

    /// Hands `frame` to `instance` and waits up to `wait` for the gateway's verdict.
    pub async fn send_via(
        &self,
        instance: &str,
        frame: DownlinkFrame,
        to: Option<DownlinkFor>,
        dr: Option<u8>,
        wait: Duration,
    ) -> Result<TxAckStatus, HandOverError> {
        let cluster = &self.inner.cluster;
        let request = Request { request_id: Uuid::new_v4(), from: cluster.instance_id().to_string(), frame, to, dr };
        let (tx, rx) = oneshot::channel();
        self.inner.waiting.lock().expect("lock").insert(request.request_id, tx);
        // Removes the entry however this ends, including when the caller gives up.
        let _waiting = Waiting { inner: &self.inner, id: request.request_id };
        let payload = serde_json::to_vec(&request).expect("serializable");
        let publish = redis::cmd("PUBLISH").arg(self.down_channel(instance)).arg(payload).clone();
        let published = super::bounded(PUBLISH_TIMEOUT, async { publish.query_async::<i64>(&mut cluster.conn()).await }).await;
        cluster.report(&published);
        if published? == 0 {
            return Err(HandOverError::NoListener(instance.to_string()));
        }
        Ok(match tokio::time::timeout(wait, rx).await {
            Ok(Ok(status)) => status,
            _ => TxAckStatus::Timeout,
        })
    }

    /// Listens on this instance's channels until `shutdown`: frames handed to it are sent
    /// with `local` (each on its own task) and their verdict published back; verdicts for
    /// this instance's hand-overs wake their waiters. Resubscribes after a lost connection.
    pub async fn serve(self, local: Arc<dyn LocalSender>, shutdown: CancellationToken) {
        let me = self.inner.cluster.instance_id().to_string();
        let (down, txack) = (self.down_channel(&me), self.txack_channel(&me));
        loop {
            match self.inner.cluster.client().get_async_pubsub().await {
                Ok(mut pubsub) => {
                    let subscribed = pubsub.subscribe(&[down.as_str(), txack.as_str()]).await;
                    self.inner.cluster.report(&subscribed);
                    if subscribed.is_ok() {
                        tracing::debug!(instance = %me, "listening for downlink hand-overs");
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                msg = messages.next() => match msg {
                                    Some(msg) => self.on_message(msg.get_channel_name() == down, msg.get_payload_bytes(), &local),
                                    None => break,
                                },
                            }
                        }
                        tracing::warn!("downlink hand-over subscription lost; subscribing again");
                    }
                }
                Err(e) => self.inner.cluster.report::<()>(&Err(e)),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            }
        }
    }

    fn on_message(&self, is_request: bool, payload: &[u8], local: &Arc<dyn LocalSender>) {
        if !is_request {
            match serde_json::from_slice::<Reply>(payload) {
                Ok(reply) => {
                    if let Some(waiter) = self.inner.waiting.lock().expect("lock").remove(&reply.request_id) {
                        let _ = waiter.send(reply.status);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable downlink hand-over verdict"),
            }
            return;
        }
        let request = match serde_json::from_slice::<Request>(payload) {
            Ok(r) => r,
            Err(e) => return tracing::warn!(error = %e, "unreadable downlink hand-over"),
        };
        let this = self.clone();
        let sending = local.send(request.clone());
        tokio::spawn(async move {
            let status = sending.await;
            let reply = serde_json::to_vec(&Reply { request_id: request.request_id, status }).expect("serializable");
            let cluster = &this.inner.cluster;
            let publish = redis::cmd("PUBLISH").arg(this.txack_channel(&request.from)).arg(reply).clone();
            let published = super::bounded(PUBLISH_TIMEOUT, async { publish.query_async::<i64>(&mut cluster.conn()).await }).await;
            cluster.report(&published);
            if let Err(e) = published {
                tracing::warn!(error = %e, gateway_id = %request.frame.gateway_id, "could not return a handed-over downlink's TX_ACK");
            }
        });
    }

    /// Hand-overs waiting for their verdict.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.lock().expect("lock").len()
    }
}

struct Waiting<'a> {
    inner: &'a Inner,
    id: Uuid,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.inner.waiting.lock().expect("lock").remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::test_cluster;
    use loraflow_packet_forwarder::frame::{GatewayId, Modulation, Timing};

    fn frame(gateway: u64) -> DownlinkFrame {
        DownlinkFrame {
            gateway_id: GatewayId::from_u64(gateway),
            downlink_id: 7,
            phy_payload: vec![0x60, 1, 2, 3],
            timing: Timing::Tmst(1_000_000),
            frequency: 868_100_000,
            power: 14,
            modulation: Modulation::Lora { bandwidth: 125_000, spreading_factor: 7, code_rate: "4/5".into() },
            rf_chain: 0,
            polarization_inversion: true,
            antenna: 0,
        }
    }

    /// Answers every frame with a fixed verdict after a delay, and keeps what it was given.
    struct Fixed {
        status: TxAckStatus,
        after: Duration,
        got: Arc<Mutex<Vec<Request>>>,
    }

    impl LocalSender for Fixed {
        fn send(&self, request: Request) -> futures_util::future::BoxFuture<'static, TxAckStatus> {
            self.got.lock().unwrap().push(request);
            let (status, after) = (self.status, self.after);
            Box::pin(async move {
                tokio::time::sleep(after).await;
                status
            })
        }
    }

    async fn serving(prefix: &str, id: &str, status: TxAckStatus, after: Duration) -> (HandOver, Arc<Mutex<Vec<Request>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let h = HandOver::new(test_cluster(prefix, id).await);
        tokio::spawn(h.clone().serve(Arc::new(Fixed { status, after, got: got.clone() }), CancellationToken::new()));
        (h, got)
    }

    /// Subscriptions are asynchronous: waits until `instance` listens on its channel.
    async fn until_listening(h: &HandOver, instance: &str) {
        for _ in 0..100 {
            let n: (String, i64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(h.down_channel(instance)).query_async(&mut h.inner.cluster.conn()).await.unwrap();
            if n.1 > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{instance} never subscribed");
    }

    #[tokio::test]
    async fn the_holder_sends_the_frame_and_its_verdict_comes_back_to_the_asker() {
        let prefix = format!("lfunit-{}", uuid::Uuid::new_v4().simple());
        let (a, _) = serving(&prefix, "a", TxAckStatus::Ok, Duration::ZERO).await;
        let (_b, got_b) = serving(&prefix, "b", TxAckStatus::TooLate, Duration::from_millis(50)).await;
        until_listening(&a, "a").await;
        until_listening(&a, "b").await;
        let to = DownlinkFor { dev_eui: crate::types::Eui64([9; 8]), dev_addr: None, f_cnt_down: Some(4) };
        let status = a.send_via("b", frame(1), Some(to), Some(5), Duration::from_secs(1)).await.unwrap();
        // The verdict is B's gateway's, not a default.
        assert_eq!(status, TxAckStatus::TooLate);
        let got = got_b.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].frame.clone(), got[0].from.as_str(), got[0].to, got[0].dr), (frame(1), "a", Some(to), Some(5)));
        assert_eq!(a.waiting(), 0);
    }

    #[tokio::test]
    async fn a_slow_holder_ends_in_timeout_and_a_missing_one_is_reported_at_once() {
        let prefix = format!("lfunit-{}", uuid::Uuid::new_v4().simple());
        let (a, _) = serving(&prefix, "a", TxAckStatus::Ok, Duration::ZERO).await;
        let (_b, _) = serving(&prefix, "b", TxAckStatus::Ok, Duration::from_millis(500)).await;
        until_listening(&a, "a").await;
        until_listening(&a, "b").await;
        let status = a.send_via("b", frame(1), None, None, Duration::from_millis(100)).await.unwrap();
        assert_eq!(status, TxAckStatus::Timeout);
        assert_eq!(a.waiting(), 0);
        let started = std::time::Instant::now();
        let err = a.send_via("gone", frame(1), None, None, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, HandOverError::NoListener(ref i) if i == "gone"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// What the hand-over adds to a gateway's own TX_ACK time must fit in [`MARGIN`] with room
    /// to spare, or a verdict that came in time locally would be a `Timeout` remotely.
    #[tokio::test]
    async fn the_round_trip_overhead_fits_well_inside_the_margin() {
        let prefix = format!("lfunit-{}", uuid::Uuid::new_v4().simple());
        let (a, _) = serving(&prefix, "a", TxAckStatus::Ok, Duration::ZERO).await;
        let (_b, _) = serving(&prefix, "b", TxAckStatus::Ok, Duration::ZERO).await;
        until_listening(&a, "a").await;
        until_listening(&a, "b").await;
        let mut took = Vec::new();
        for _ in 0..200 {
            let started = std::time::Instant::now();
            assert_eq!(a.send_via("b", frame(1), None, None, Duration::from_secs(1)).await.unwrap(), TxAckStatus::Ok);
            took.push(started.elapsed());
        }
        took.sort();
        let (p50, p99) = (took[100], took[197]);
        eprintln!("hand-over round trip over the local Redis: p50 {p50:?}, p99 {p99:?}");
        assert!(p99 < MARGIN / 2, "p50 {p50:?}, p99 {p99:?}");
    }

    #[test]
    fn messages_keep_every_field_of_the_frame() {
        let r = Request { request_id: Uuid::new_v4(), from: "node0".into(), frame: frame(3), to: None, dr: Some(0) };
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<Request>(&json).unwrap(), r);
        let reply = Reply { request_id: r.request_id, status: TxAckStatus::CollisionPacket };
        assert_eq!(serde_json::from_slice::<Reply>(&serde_json::to_vec(&reply).unwrap()).unwrap(), reply);
    }
}
