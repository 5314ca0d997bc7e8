//! The embedded broker (rumqttd), for `cargo run` without an external broker (DESIGN.md §2).
//!
//! rumqttd 0.20 has no shutdown and reports a failed `bind` only in a log line from its
//! server thread, after which `Broker::start` returns. So the address is checked here
//! first (which also resolves port 0 to a real port), and the caller watches
//! [`EmbeddedBroker::is_running`] while its client connects.
//!
//! rumqttd logs every connect and disconnect (disconnects at ERROR level): the binary's
//! log filter should include [`super::QUIET_LOG_DIRECTIVES`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::thread::JoinHandle;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::connect::MAX_OUTGOING_PACKET;
use super::MqttError;

pub(crate) struct EmbeddedBroker {
    /// The address it listens on, with the real port.
    pub listen: SocketAddr,
    thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts the broker on `bind` (port 0 = any free port).
    pub fn start(bind: SocketAddr) -> Result<Self, MqttError> {
        // std (like tokio, which rumqttd uses) sets SO_REUSEADDR, so a restarted process can
        // bind again while old connections sit in TIME_WAIT; only a live listener is refused.
        let probe = TcpListener::bind(bind).map_err(|source| MqttError::EmbeddedBind { addr: bind, source })?;
        let listen = probe.local_addr().map_err(|source| MqttError::EmbeddedBind { addr: bind, source })?;
        drop(probe);

        let config = broker_config(listen);
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // Returns only when its server thread ended, i.e. the listener failed.
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded MQTT broker stopped");
                }
            })
            .map_err(|e| MqttError::EmbeddedStart { addr: listen, reason: format!("cannot spawn its thread: {e}") })?;
        Ok(EmbeddedBroker { listen, thread })
    }

    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Where a local client reaches it (a wildcard listen address is not a destination).
    pub fn connect_addr(&self) -> SocketAddr {
        let ip = match self.listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.listen.port())
    }
}

fn broker_config(listen: SocketAddr) -> Config {
    let server = ServerSettings {
        name: "loraflow-embedded".into(),
        listen,
        tls: None,
        // rumqttd sleeps this long after each accepted connection.
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
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
            max_connections: 10_010,
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
mod tests {
    use super::*;

    #[test]
    fn an_address_in_use_is_refused_naming_it_and_the_key_that_moves_it() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = EmbeddedBroker::start(addr).err().unwrap().to_string();
        assert!(e.contains(&addr.to_string()), "{e}");
        assert!(e.contains("mqtt.embedded_bind") && e.contains("LORAFLOW_MQTT__EMBEDDED_BIND"), "{e}");
    }

    #[test]
    fn port_zero_becomes_a_real_port() {
        let b = EmbeddedBroker::start("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(b.listen.port(), 0);
        assert_eq!(b.connect_addr(), b.listen);
    }

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        let b = EmbeddedBroker::start("0.0.0.0:0".parse().unwrap()).unwrap();
        assert_eq!(b.connect_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(b.connect_addr().port(), b.listen.port());
    }
}
