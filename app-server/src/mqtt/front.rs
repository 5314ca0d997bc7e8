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

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::gate::{Denied, Gate, Session, Verdict};
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
    /// Access control of client connections (`None` for loraflow's own client).
    pub gate: Option<Arc<Gate>>,
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
            let gate = self.gate.clone();
            tokio::spawn(async move {
                if permit.is_some() {
                    metrics.embedded_connections.inc();
                }
                relay(client, peer, generation, stop, gate).await;
                if permit.is_some() {
                    metrics.embedded_connections.dec();
                }
                drop(permit);
            });
        }
    }
}

async fn relay(mut client: TcpStream, peer: SocketAddr, generation: Generation, stop: CancellationToken, gate: Option<Arc<Gate>>) {
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
    if let Some(gate) = gate {
        tokio::select! {
            _ = gated(client, backend, gate, peer) => {}
            _ = generation.retired.cancelled() => {}
            _ = stop.cancelled() => {}
        }
        return;
    }
    // copy_bidirectional passes an EOF on as a half-close, so a client that sends CONNECT
    // and leaves still lets rumqttd write its CONNACK (see `embedded` on why that matters).
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
        _ = generation.retired.cancelled() => {}
        _ = stop.cancelled() => {}
    }
}

/// Relays a client connection through the [`Gate`]: its CONNECT first (a refusal is
/// answered by the gate and never reaches rumqttd), then every packet it sends, checked,
/// while what rumqttd sends flows back unread.
async fn gated(client: TcpStream, backend: TcpStream, gate: Arc<Gate>, peer: SocketAddr) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut backend_rx, mut backend_tx) = backend.into_split();
    let mut session = Session::new(gate.clone());
    let mut buf = BytesMut::with_capacity(4096);
    let refuse = |reason: Denied| {
        gate.denied.with_label_values(&[reason.as_str()]).inc();
        debug!(%peer, reason = reason.as_str(), "embedded MQTT broker: client refused");
    };
    // Until its CONNECT is decided rumqttd has nothing to say, so the client's side can
    // still take the gate's refusal.
    let rest = loop {
        match session.next(&mut buf).await {
            Ok(Some((frame, Verdict::Forward))) => {
                if backend_tx.write_all(&frame).await.is_err() {
                    return;
                }
                break false;
            }
            Ok(Some((frame, Verdict::ForwardRest))) => {
                if backend_tx.write_all(&frame).await.is_err() {
                    return;
                }
                break true;
            }
            Ok(Some((_, Verdict::Refuse(reason, reply)))) => {
                refuse(reason);
                if let Some(reply) = reply {
                    let _ = client_tx.write_all(reply).await;
                    let _ = client_tx.shutdown().await;
                }
                return;
            }
            Err(reason) => return refuse(reason),
            Ok(None) => match client_rx.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut backend_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    let up = async {
        if rest {
            if backend_tx.write_all(&buf).await.is_ok() {
                let _ = tokio::io::copy(&mut client_rx, &mut backend_tx).await;
            }
            let _ = backend_tx.shutdown().await;
            return false;
        }
        loop {
            match session.next(&mut buf).await {
                Ok(Some((frame, Verdict::Forward | Verdict::ForwardRest))) => {
                    if backend_tx.write_all(&frame).await.is_err() {
                        return false;
                    }
                }
                Ok(Some((_, Verdict::Refuse(reason, _)))) | Err(reason) => {
                    refuse(reason);
                    return true;
                }
                Ok(None) => match client_rx.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = backend_tx.shutdown().await;
                        return false;
                    }
                    Ok(_) => {}
                },
            }
        }
    };
    // A refused packet ends the connection (both sockets close when this returns); a client
    // that half-closes still gets what rumqttd has left to send.
    tokio::pin!(down, up);
    let refused = tokio::select! {
        refused = &mut up => refused,
        () = &mut down => return,
    };
    if !refused {
        down.await;
    }
}
