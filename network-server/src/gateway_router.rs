//! Where the network server's downlinks go: every frame passes through [`GatewayRouter`].
//! A gateway held by this instance (its PULL_DATA comes here) gets the frame from the local
//! UDP server; one held by another instance of a cluster gets it through that instance
//! (`cluster::handover`), and the TX_ACK verdict comes back as if the frame had been sent
//! here, within the same budget. The RX1→RX2 and next-gateway logic of `downlink::send` only
//! sees the verdict.
//!
//! One process alone, or a cluster whose Redis does not answer: every gateway is local.

use std::sync::Arc;

use loraflow_packet_forwarder::frame::{DownlinkFrame, GatewayId, TxAckStatus};
use loraflow_packet_forwarder::Handle as GatewayHandle;
use prometheus::{IntCounterVec, Opts, Registry};

use crate::cluster::handover::{self, HandOver, HandOverError, LocalSender};
use crate::cluster::routes::{self, Route};
use crate::cluster::Cluster;
use crate::frame_feed::{DownFrame, DownlinkFor, FrameEvent};
use crate::handle::NetworkHandle;

/// `result` label of the hand-over metrics besides the `TxAckStatus` names.
const NO_LISTENER: &str = "NO_LISTENER";
const REDIS_ERROR: &str = "REDIS_ERROR";

/// The local UDP server plus, in a cluster, the hand-over to the other instances.
#[derive(Clone)]
pub struct GatewayRouter {
    local: GatewayHandle,
    cluster: Option<(Cluster, HandOver)>,
    forwarded: IntCounterVec,
    served: IntCounterVec,
}

impl GatewayRouter {
    pub fn new(local: GatewayHandle, cluster: Option<Cluster>, registry: &Registry) -> GatewayRouter {
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["result"]).expect("metric");
            if let Err(e) = registry.register(Box::new(c.clone())) {
                tracing::debug!(error = %e, "metric registered twice");
            }
            c
        };
        let forwarded = counter(
            "loraflow_cluster_downlinks_forwarded_total",
            "Downlinks handed to the instance holding their gateway, by the verdict that came back (TX_ACK status, NO_LISTENER, REDIS_ERROR)",
        );
        let served = counter(
            "loraflow_cluster_downlinks_served_total",
            "Downlinks another instance handed to this one, by the TX_ACK status of the local gateway",
        );
        // Every series at 0 from the start (one instance alone too: dashboards are the same).
        for s in TxAckStatus::ALL {
            forwarded.with_label_values(&[s.as_str()]);
            served.with_label_values(&[s.as_str()]);
        }
        forwarded.with_label_values(&[NO_LISTENER]);
        forwarded.with_label_values(&[REDIS_ERROR]);
        GatewayRouter { local, cluster: cluster.map(|c| (c.clone(), HandOver::new(c))), forwarded, served }
    }

    /// The local UDP server (gateway state, pending TX_ACKs).
    pub fn local(&self) -> &GatewayHandle {
        &self.local
    }

    /// Where a downlink for each of `gateways` goes, in order: one Redis round trip for all.
    pub async fn routes(&self, gateways: &[GatewayId]) -> Vec<Route> {
        let pulled_here = |g: &GatewayId| self.local.gateway_state(*g).is_some_and(|s| s.pull_addr.is_some());
        let Some((cluster, _)) = &self.cluster else {
            return gateways.iter().map(|g| Route::decide("", None, pulled_here(g))).collect();
        };
        let in_redis = match routes::lookup(cluster, gateways).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e, "gateway routes unavailable; using the local gateways");
                vec![None; gateways.len()]
            }
        };
        gateways.iter().zip(in_redis).map(|(g, r)| Route::decide(cluster.instance_id(), r.as_deref(), pulled_here(g))).collect()
    }

    /// Sends `frame` along `route` and returns the gateway's verdict. `to` and `dr` describe
    /// the frame for the gateway's live feed on the instance that sends it.
    pub async fn send(&self, frame: DownlinkFrame, route: &Route, to: Option<DownlinkFor>, dr: Option<u8>) -> TxAckStatus {
        let instance = match route {
            Route::Local => return self.local.send(frame).await,
            Route::Unreachable => return TxAckStatus::GatewayNotConnected,
            Route::Remote(instance) => instance,
        };
        let Some((_, handover)) = &self.cluster else { return self.local.send(frame).await };
        let wait = self.local.tx_ack_timeout() + handover::MARGIN;
        let gateway_id = frame.gateway_id;
        match handover.send_via(instance, frame.clone(), to, dr, wait).await {
            Ok(status) => {
                self.forwarded.with_label_values(&[status.as_str()]).inc();
                status
            }
            Err(HandOverError::NoListener(_)) => {
                self.forwarded.with_label_values(&[NO_LISTENER]).inc();
                tracing::info!(gateway_id = %gateway_id, instance = %instance, "instance holding the gateway does not listen; trying the next gateway");
                TxAckStatus::GatewayNotConnected
            }
            // Redis failed between the route lookup and now: as with no Redis at all, the
            // gateway is only reachable if it pulled here.
            Err(HandOverError::Redis(e)) => {
                self.forwarded.with_label_values(&[REDIS_ERROR]).inc();
                tracing::debug!(error = %e, "downlink hand-over failed; sending locally");
                self.local.send(frame).await
            }
        }
    }

    /// In a cluster: serves frames handed to this instance (sent with the local UDP server,
    /// shown in the gateway's live feed and traffic counts) and returns verdicts to their
    /// waiters, until `shutdown`. Nothing to do alone.
    pub async fn serve(self, network: NetworkHandle, shutdown: tokio_util::sync::CancellationToken) {
        let Some((_, handover)) = self.cluster.clone() else { return };
        let sender = Arc::new(ServeHandedOver { local: self.local.clone(), network, served: self.served.clone() });
        handover.serve(sender, shutdown).await;
    }
}

/// Sends a frame another instance handed over, and records it like a local downlink.
struct ServeHandedOver {
    local: GatewayHandle,
    network: NetworkHandle,
    served: IntCounterVec,
}

impl LocalSender for ServeHandedOver {
    fn send(&self, request: handover::Request) -> futures_util::future::BoxFuture<'static, TxAckStatus> {
        let (local, network, served) = (self.local.clone(), self.network.clone(), self.served.clone());
        Box::pin(async move {
            let frame = request.frame;
            let status = local.send(frame.clone()).await;
            served.with_label_values(&[status.as_str()]).inc();
            if status != TxAckStatus::GatewayNotConnected {
                network.traffic().gateway_downlink(frame.gateway_id, chrono::Utc::now());
            }
            if let Some(to) = request.to {
                network
                    .frames()
                    .send_with(frame.gateway_id, || Arc::new(FrameEvent::Down(DownFrame::new(&frame, &to, request.dr, status))));
            }
            status
        })
    }
}
