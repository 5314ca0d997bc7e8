//! Gateway routes: which instance holds each gateway, i.e. receives its PULL_DATA and so can
//! send it PULL_RESP. Each instance writes `{prefix}:gw:{gateway_id}` = its instance id, with
//! an expiry, for the gateways that pulled from it; a gateway that moves to another instance
//! (failover, a load balancer's new choice) is followed on its next PULL_DATA, since the new
//! instance writes and the old one stops refreshing.
//!
//! Writes come from a periodic look at the UDP server's gateways, not from every datagram:
//! at most one write per gateway every [`REFRESH_EVERY`], all of one round in one pipeline.
//! Known gap: a gateway that leaves this instance and comes back within [`REFRESH_EVERY`] is
//! routed to the other instance until its next PULL_DATA after that.

use std::collections::HashMap;
use std::time::Duration;

use loraflow_packet_forwarder::frame::GatewayId;
use loraflow_packet_forwarder::Handle as GatewayHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// A route lives this long without a refresh: a few times the usual PULL_DATA keepalive
/// (10 s), so that one lost PULL_DATA does not lose the route, and a dead instance's gateways
/// are not routed to it for long (they re-attach elsewhere meanwhile anyway).
pub const ROUTE_TTL: Duration = Duration::from_secs(30);
/// A route that this instance holds is written again at most this often.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How often the recorder looks for gateways that pulled: the delay with which a gateway
/// that connected or moved becomes reachable from the other instances. A look is one pass
/// over the UDP server's gateways under a read lock; the writes are throttled apart.
pub const LOOK_EVERY: Duration = Duration::from_millis(100);

/// A route lookup is on the way to a receive window: without an answer by then, the
/// gateways that pulled here are used.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(100);
/// Recording runs beside everything else and is tried again at the next PULL_DATA.
const RECORD_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a downlink for a gateway goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This instance holds the gateway (or it is the best this instance knows: Redis is
    /// unavailable or names no one, and the gateway pulled here).
    Local,
    /// Another instance holds it.
    Remote(String),
    /// No instance is known to hold it: nothing can be sent.
    Unreachable,
}

impl Route {
    /// The route of one gateway from what Redis says (`None`: no route or Redis unavailable)
    /// and whether the gateway ever pulled here. Redis wins over the local address: a gateway
    /// that moved away keeps its address here until it counts as offline.
    pub fn decide(me: &str, in_redis: Option<&str>, pulled_here: bool) -> Route {
        match in_redis {
            Some(other) if other != me => Route::Remote(other.to_string()),
            Some(_) => Route::Local,
            None if pulled_here => Route::Local,
            None => Route::Unreachable,
        }
    }
}

fn key(cluster: &Cluster, gateway: GatewayId) -> String {
    cluster.key(&["gw", &gateway.to_string()])
}

/// Records that this instance holds `gateways`.
pub async fn record(cluster: &Cluster, gateways: &[GatewayId]) -> redis::RedisResult<()> {
    if gateways.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for g in gateways {
        pipe.cmd("SET").arg(key(cluster, *g)).arg(cluster.instance_id()).arg("PX").arg(ROUTE_TTL.as_millis() as u64).ignore();
    }
    let result = super::bounded(RECORD_TIMEOUT, pipe.query_async::<()>(&mut cluster.conn())).await;
    cluster.report(&result);
    result
}

/// The instance holding each of `gateways`, in order (`None`: no route).
pub async fn lookup(cluster: &Cluster, gateways: &[GatewayId]) -> redis::RedisResult<Vec<Option<String>>> {
    if gateways.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = gateways.iter().map(|g| key(cluster, *g)).collect();
    let result =
        super::bounded(LOOKUP_TIMEOUT, redis::cmd("MGET").arg(&keys).query_async::<Vec<Option<String>>>(&mut cluster.conn())).await;
    cluster.report(&result);
    result
}

/// Writes the routes of the gateways that pulled from this instance until `shutdown`.
pub async fn run_recorder(cluster: Cluster, gateways: GatewayHandle, shutdown: CancellationToken) {
    let mut written: HashMap<GatewayId, Instant> = HashMap::new();
    let mut last_look = Instant::now().checked_sub(LOOK_EVERY).unwrap_or_else(Instant::now);
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = Instant::now();
        let due: Vec<GatewayId> = gateways
            .pulled_since(last_look)
            .into_iter()
            .filter(|(id, _)| written.get(id).is_none_or(|at| now.duration_since(*at) >= REFRESH_EVERY))
            .map(|(id, _)| id)
            .collect();
        last_look = now;
        if due.is_empty() {
            continue;
        }
        match record(&cluster, &due).await {
            Ok(()) => {
                for id in due {
                    written.insert(id, now);
                }
            }
            // Tried again with the gateway's next PULL_DATA; `report` logged the outage.
            Err(e) => tracing::debug!(error = %e, gateways = due.len(), "could not record gateway routes"),
        }
        written.retain(|_, at| now.duration_since(*at) < ROUTE_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::test_cluster;

    #[test]
    fn redis_wins_over_a_local_address_and_no_route_without_one() {
        assert_eq!(Route::decide("a", Some("b"), true), Route::Remote("b".into()));
        assert_eq!(Route::decide("a", Some("a"), false), Route::Local);
        assert_eq!(Route::decide("a", None, true), Route::Local);
        assert_eq!(Route::decide("a", None, false), Route::Unreachable);
    }

    #[tokio::test]
    async fn a_recorded_route_is_found_moves_with_the_last_writer_and_expires() {
        let prefix = format!("lfunit-{}", uuid::Uuid::new_v4().simple());
        let (a, b) = (test_cluster(&prefix, "a").await, test_cluster(&prefix, "b").await);
        let (g1, g2) = (GatewayId::from_u64(1), GatewayId::from_u64(2));
        record(&a, &[g1, g2]).await.unwrap();
        assert_eq!(lookup(&b, &[g1, g2]).await.unwrap(), vec![Some("a".to_string()), Some("a".to_string())]);
        record(&b, &[g2]).await.unwrap();
        assert_eq!(lookup(&a, &[g2]).await.unwrap(), vec![Some("b".to_string())]);
        assert_eq!(lookup(&a, &[GatewayId::from_u64(3)]).await.unwrap(), vec![None]);
        let ttl: i64 = redis::cmd("PTTL").arg(key(&a, g1)).query_async(&mut a.conn()).await.unwrap();
        assert!(ttl > 0 && ttl <= ROUTE_TTL.as_millis() as i64, "{ttl}");
    }
}
