//! The embedded broker's TCP front: loraflow owns the listening sockets and relays every
//! connection to the current rumqttd instance on a private loopback port.
//!
//! Owning the listener is what lets a broken rumqttd be replaced on the same address
//! (rumqttd 0.20 cannot be stopped or unbound), and it is where the connection limit is
//! enforced: refused before rumqttd sees a byte, because rumqttd's own limit, once hit,
//! trips the same defect it guards against (see `embedded`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::metrics::MqttMetrics;
use loraflow_packet_forwarder::log_limit::LogLimiter;

const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors) instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
const WARN_INTERVAL: Duration = Duration::from_secs(30);

/// The rumqttd instance connections go to, and a token cancelled when it is replaced
/// (which closes every connection relayed to it).
#[derive(Clone, Debug)]
pub(crate) struct Generation {
    pub backend: SocketAddr,
    pub retired: CancellationToken,
}

pub(crate) struct Front {
    pub listener: TcpListener,
    pub route: watch::Receiver<Generation>,
    /// `None`: no limit (the private front for loraflow's own client).
    pub limit: Option<Arc<Semaphore>>,
    pub metrics: MqttMetrics,
    pub stop: CancellationToken,
}

impl Front {
    pub async fn run(self) {
        let refused_warning = LogLimiter::new(WARN_INTERVAL);
        let accept_warning = LogLimiter::new(WARN_INTERVAL);
        let capacity = self.limit.as_ref().map(|l| l.available_permits()).unwrap_or(0);
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let (client, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    if let Some(suppressed) = accept_warning.allow() {
                        warn!(error = %e, failed_since_last_warning = suppressed, "embedded MQTT broker cannot accept connections");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let permit = match &self.limit {
                None => None,
                Some(limit) => match limit.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        self.metrics.embedded_refused.inc();
                        if let Some(suppressed) = refused_warning.allow() {
                            warn!(
                                limit = capacity,
                                refused_since_last_warning = suppressed,
                                "embedded MQTT broker at its connection limit (mqtt.embedded_max_connections), refusing connections"
                            );
                        }
                        drop(client);
                        continue;
                    }
                },
            };
            let generation = self.route.borrow().clone();
            let metrics = self.metrics.clone();
            let stop = self.stop.clone();
            tokio::spawn(async move {
                if permit.is_some() {
                    metrics.embedded_connections.inc();
                }
                relay(client, peer, generation, stop).await;
                if permit.is_some() {
                    metrics.embedded_connections.dec();
                }
                drop(permit);
            });
        }
    }
}

async fn relay(mut client: TcpStream, peer: SocketAddr, generation: Generation, stop: CancellationToken) {
    client.set_nodelay(true).ok();
    let mut backend = match tokio::time::timeout(BACKEND_CONNECT_TIMEOUT, TcpStream::connect(generation.backend)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "embedded MQTT broker not reachable for a relayed connection");
            return;
        }
        Err(_) => return,
    };
    backend.set_nodelay(true).ok();
    // copy_bidirectional passes an EOF on as a half-close, so a client that sends CONNECT
    // and leaves still lets rumqttd write its CONNACK (see `embedded` on why that matters).
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
        _ = generation.retired.cancelled() => {}
        _ = stop.cancelled() => {}
    }
}
