//! The embedded broker (rumqttd), for `cargo run` without an external broker (DESIGN.md §2),
//! supervised so that hostile clients cannot break it for good.
//!
//! rumqttd 0.20 (the newest release) has a defect (rumqtt issue 1062, fixed upstream but
//! unreleased): a client whose connection fails between CONNECT and CONNACK (a reset, or a
//! refusal at rumqttd's connection limit) leaves an entry behind; the next CONNECT with
//! the same client id panics while holding a mutex, which poisons it, and from then on
//! every connection panics. rumqttd has no shutdown either, so it cannot be restarted on
//! its own port. Hence:
//! - rumqttd listens on a private loopback port; loraflow owns the public listener
//!   (`mqtt.embedded_bind`) and relays each connection to it ([`super::front`]), after
//!   checking the connection limit `mqtt.embedded_max_connections` (rumqttd's own limit
//!   is set above it, never reached). loraflow's own client goes through a second,
//!   private front that the limit does not apply to.
//! - A supervisor probes rumqttd with a fresh MQTT connection every [`PROBE_INTERVAL`].
//!   After [`PROBE_FAILURES`] failed probes in a row (or [`PROBE_TIMEOUTS`] unanswered
//!   ones, so that a merely slow broker is not restarted) it starts a new rumqttd instance,
//!   sends new connections there and closes the relayed ones of the old instance: clients
//!   reconnect on the same address, loraflow's client re-sends what was not acknowledged.
//!   The old instance cannot be stopped; it keeps two idle threads (no sockets reach it).
//!
//! rumqttd logs every connect and disconnect (disconnects at ERROR level): the binary's
//! log filter should include [`super::QUIET_LOG_DIRECTIVES`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::connect::MAX_OUTGOING_PACKET;
use super::front::{Front, Generation};
use super::gate::Gate;
use super::metrics::MqttMetrics;
use super::probe::{probe, ProbeError};
use super::MqttError;
use loraflow_packet_forwarder::log_limit::LogLimiter;

/// How often the supervisor checks that rumqttd still accepts connections.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(300);
/// Failed probes (connection refused or closed without CONNACK) in a row before rumqttd
/// is replaced. A broken rumqttd fails that way at once; two rule out a one-off.
const PROBE_FAILURES: u32 = 2;
/// Unanswered probes in a row before rumqttd is replaced: a hung broker is replaced within
/// about 12 s, a broker that is only slow under load is left alone.
const PROBE_TIMEOUTS: u32 = 5;
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new rumqttd instance may take to accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// rumqttd's own connection limit is this much above `mqtt.embedded_max_connections`:
/// loraflow's client, the probe, and connections of a replaced instance still closing.
const RESERVED_CONNECTIONS: usize = 64;
/// A client has this long after connecting to send CONNECT.
const CONNECT_TIMEOUT_MS: u16 = 10_000;
const WARN_INTERVAL: Duration = Duration::from_secs(30);

pub(crate) struct EmbeddedBroker {
    /// The public address (`mqtt.embedded_bind`), with the real port.
    pub listen: SocketAddr,
    /// The private front for loraflow's own client.
    own: SocketAddr,
    healthy: Arc<AtomicBool>,
    #[cfg_attr(not(test), allow(dead_code))]
    route: watch::Receiver<Generation>,
}

impl EmbeddedBroker {
    /// Starts rumqttd, its fronts and its supervisor on `bind` (port 0 = any free port).
    /// Everything stops accepting when `stop` is cancelled.
    pub async fn start(
        bind: SocketAddr,
        max_connections: usize,
        gate: Arc<Gate>,
        metrics: MqttMetrics,
        stop: CancellationToken,
    ) -> Result<Self, MqttError> {
        let bind_err = |source| MqttError::EmbeddedBind { addr: bind, source };
        let public = bind_listener(bind).map_err(bind_err)?;
        let listen = public.local_addr().map_err(bind_err)?;
        let own = bind_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .map_err(|e| MqttError::EmbeddedStart { addr: listen, reason: format!("cannot bind its private port: {e}") })?;
        let own_addr = own.local_addr().map_err(|e| MqttError::EmbeddedStart { addr: listen, reason: e.to_string() })?;

        let backend = Backend::start(max_connections).await.map_err(|reason| MqttError::EmbeddedStart { addr: listen, reason })?;
        let (route_tx, route_rx) = watch::channel(backend.generation.clone());
        let healthy = Arc::new(AtomicBool::new(true));

        let limit = Arc::new(Semaphore::new(max_connections));
        for (listener, limit, gate) in [(public, Some(limit), Some(gate)), (own, None, None)] {
            let front = Front { listener, route: route_rx.clone(), limit, gate, metrics: metrics.clone(), stop: stop.clone() };
            tokio::spawn(front.run());
        }
        let supervisor = Supervisor { backend, max_connections, route: route_tx, healthy: healthy.clone(), metrics, stop };
        tokio::spawn(supervisor.run());
        Ok(EmbeddedBroker { listen, own: own_addr, healthy, route: route_rx })
    }

    /// Where loraflow's own client connects (outside the connection limit).
    pub fn connect_addr(&self) -> SocketAddr {
        self.own
    }

    /// Where other local clients reach it (a wildcard listen address is not a destination).
    #[cfg(test)]
    pub fn public_connect_addr(&self) -> SocketAddr {
        use std::net::{IpAddr, Ipv6Addr};
        let ip = match self.listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.listen.port())
    }

    /// The rumqttd instance currently behind the fronts.
    #[cfg(test)]
    pub(crate) fn backend_addr(&self) -> SocketAddr {
        self.route.borrow().backend
    }

    /// `false` from a failed probe until a replacement instance answers.
    pub fn health_flag(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    // std sets SO_REUSEADDR, so a restarted process can bind again while old connections
    // sit in TIME_WAIT; only a live listener is refused.
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

/// One rumqttd instance on a private loopback port.
struct Backend {
    generation: Generation,
    thread: JoinHandle<()>,
}

impl Backend {
    /// Starts an instance and waits until it answers a probe.
    async fn start(max_connections: usize) -> Result<Self, String> {
        // rumqttd binds by itself and reports a failure only in a log line: pick a free
        // port first (the window in which another process could take it is tiny).
        let port_probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("no free loopback port: {e}"))?;
        let addr = port_probe.local_addr().map_err(|e| e.to_string())?;
        drop(port_probe);

        let config = broker_config(addr, max_connections);
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // Returns only when its server thread ended, i.e. the listener failed.
                if let Err(e) = broker.start() {
                    error!(error = %e, "embedded MQTT broker instance stopped");
                }
            })
            .map_err(|e| format!("cannot spawn its thread: {e}"))?;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if thread.is_finished() {
                return Err(format!("its listener on {addr} failed"));
            }
            let last = match probe(addr, &probe_client_id(), PROBE_TIMEOUT).await.map_err(|e| e.to_string()) {
                Ok(()) => break,
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!("no MQTT answer within {} s ({last})", READY_TIMEOUT.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Backend { generation: Generation { backend: addr, retired: CancellationToken::new() }, thread })
    }
}

fn probe_client_id() -> String {
    // Unique per probe: rumqttd's defect is about a client id that is reused.
    format!("loraflow-probe-{:08x}", rand::random::<u32>())
}

struct Supervisor {
    backend: Backend,
    max_connections: usize,
    route: watch::Sender<Generation>,
    healthy: Arc<AtomicBool>,
    metrics: MqttMetrics,
    stop: CancellationToken,
}

impl Supervisor {
    async fn run(mut self) {
        let warning = LogLimiter::new(WARN_INTERVAL);
        let (mut failures, mut timeouts) = (0u32, 0u32);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
            let result = if self.backend.thread.is_finished() {
                Err(ProbeError::Failed("its server thread ended".to_string()))
            } else {
                probe(self.backend.generation.backend, &probe_client_id(), PROBE_TIMEOUT).await
            };
            match &result {
                Ok(()) => (failures, timeouts) = (0, 0),
                Err(ProbeError::Failed(_)) => failures += 1,
                Err(ProbeError::TimedOut(_) | ProbeError::Inconclusive(_)) => timeouts += 1,
            }
            if let Err(reason) = result {
                if failures >= PROBE_FAILURES || timeouts >= PROBE_TIMEOUTS || self.backend.thread.is_finished() {
                    self.healthy.store(false, Ordering::Release);
                    if self.replace(&reason.to_string(), &warning).await {
                        (failures, timeouts) = (0, 0);
                    }
                }
            }
        }
        // Connections relayed to the last instance end with the fronts.
        self.backend.generation.retired.cancel();
    }

    /// `true` when a new instance took over.
    async fn replace(&mut self, reason: &str, warning: &LogLimiter) -> bool {
        let started = Instant::now();
        let new = match Backend::start(self.max_connections).await {
            Ok(b) => b,
            Err(e) => {
                if let Some(suppressed) = warning.allow() {
                    error!(error = %e, failed_since_last_warning = suppressed, "cannot restart the embedded MQTT broker, retrying");
                }
                return false;
            }
        };
        let old = std::mem::replace(&mut self.backend, new);
        self.route.send_replace(self.backend.generation.clone());
        old.generation.retired.cancel();
        self.metrics.embedded_restarts.inc();
        self.healthy.store(true, Ordering::Release);
        if let Some(suppressed) = warning.allow() {
            warn!(
                reason,
                restart_ms = started.elapsed().as_millis() as u64,
                restarts_not_logged = suppressed,
                "embedded MQTT broker stopped answering; restarted it (clients reconnect)"
            );
        } else {
            info!(reason, "embedded MQTT broker restarted");
        }
        true
    }
}

fn broker_config(listen: SocketAddr, max_connections: usize) -> Config {
    let server = ServerSettings {
        name: "loraflow-embedded".into(),
        listen,
        tls: None,
        // rumqttd sleeps this long after each accepted connection.
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: CONNECT_TIMEOUT_MS,
            // Larger publishes are refused (the sender is disconnected): loraflow's own
            // client accepts everything up to this size, so none can disconnect it.
            max_payload_size: MAX_OUTGOING_PACKET,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: max_connections + RESERVED_CONNECTIONS,
            max_outgoing_packet_count: 200,
            // Per subscription filter, rumqttd keeps up to size × count bytes for subscribers
            // that lag behind; a segment must hold at least one packet.
            max_segment_size: 8 * MAX_OUTGOING_PACKET,
            max_segment_count: 8,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use prometheus::Registry;

    use std::net::{IpAddr, Ipv4Addr};

    use super::super::probe::connect_packet;
    use super::*;

    fn metrics() -> MqttMetrics {
        MqttMetrics::register(&Registry::new()).unwrap()
    }

    /// Anonymous clients may do everything (what these tests are not about).
    fn open_gate() -> Arc<Gate> {
        Arc::new(Gate { allow_anonymous: true, authenticator: std::sync::OnceLock::new(), denied: metrics().embedded_denied })
    }

    #[tokio::test]
    async fn an_address_in_use_is_refused_naming_it_and_the_key_that_moves_it() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = EmbeddedBroker::start(addr, 10, open_gate(), metrics(), CancellationToken::new()).await.err().unwrap().to_string();
        assert!(e.contains(&addr.to_string()), "{e}");
        assert!(e.contains("mqtt.embedded_bind") && e.contains("LORAFLOW_MQTT__EMBEDDED_BIND"), "{e}");
    }

    #[tokio::test]
    async fn port_zero_becomes_a_real_port_that_answers_mqtt() {
        let b = EmbeddedBroker::start("127.0.0.1:0".parse().unwrap(), 10, open_gate(), metrics(), CancellationToken::new()).await.unwrap();
        assert_ne!(b.listen.port(), 0);
        assert_eq!(b.public_connect_addr(), b.listen);
        probe(b.listen, "t1", PROBE_TIMEOUT).await.unwrap();
        probe(b.connect_addr(), "t2", PROBE_TIMEOUT).await.unwrap();
    }

    #[tokio::test]
    async fn a_wildcard_listen_address_is_reached_on_loopback() {
        let b = EmbeddedBroker::start("0.0.0.0:0".parse().unwrap(), 10, open_gate(), metrics(), CancellationToken::new()).await.unwrap();
        assert_eq!(b.public_connect_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(b.public_connect_addr().port(), b.listen.port());
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_but_the_own_front_is_not_limited() {
        let m = metrics();
        let b = EmbeddedBroker::start("127.0.0.1:0".parse().unwrap(), 2, open_gate(), m.clone(), CancellationToken::new()).await.unwrap();
        let _held: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(b.listen).unwrap()).collect();
        // The relay tasks take their permits asynchronously.
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.embedded_connections.get() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let e = probe(b.listen, "over", PROBE_TIMEOUT).await.unwrap_err();
        assert!(matches!(&e, ProbeError::Failed(r) if r.contains("CONNACK")), "{e}");
        assert_eq!(m.embedded_refused.get(), 1);
        probe(b.connect_addr(), "own", PROBE_TIMEOUT).await.unwrap();
    }

    /// The rumqttd defect, triggered directly on the instance (the front would soften it):
    /// CONNECT and reset, twice at once with one client id, three times.
    pub(crate) async fn break_rumqttd(addr: SocketAddr) {
        async fn connect_and_reset(addr: SocketAddr) {
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, &connect_packet("same-id", 30)).await;
                let _ = s.set_zero_linger();
            }
        }
        for _ in 0..3 {
            tokio::join!(connect_and_reset(addr), connect_and_reset(addr));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_rumqttd_is_replaced_on_the_same_address_within_a_second_or_two() {
        let m = metrics();
        let b = EmbeddedBroker::start("127.0.0.1:0".parse().unwrap(), 10, open_gate(), m.clone(), CancellationToken::new()).await.unwrap();
        // A client whose relayed connection must be closed by the restart.
        let mut before = tokio::net::TcpStream::connect(b.listen).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut before, &connect_packet("victim", 30)).await.unwrap();

        let backend = b.backend_addr();
        let broken_at = Instant::now();
        break_rumqttd(backend).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.embedded_restarts.get() == 0 {
            assert!(Instant::now() < deadline, "rumqttd was not replaced");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // 2 probes at 300 ms plus start-up; generous for a loaded machine.
        assert!(broken_at.elapsed() < Duration::from_secs(3), "{:?}", broken_at.elapsed());
        probe(b.listen, "same-id", PROBE_TIMEOUT).await.expect("the public address answers again");
        assert!(b.health_flag().load(Ordering::Acquire));
        assert_ne!(b.backend_addr(), backend, "a new instance");
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tokio::io::AsyncReadExt::read(&mut before, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection to the old instance was closed");
    }
}
