//! `[mqtt]` section.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// External broker, e.g. `mqtt://user:pass@127.0.0.1:1883` or `mqtts://host:8883`.
    /// Empty: start the embedded broker on `embedded_bind` and publish to it.
    pub url: String,
    /// Listen address of the embedded broker.
    pub embedded_bind: SocketAddr,
    /// Client connections the embedded broker accepts on `embedded_bind` (loraflow's own
    /// client is not counted).
    pub embedded_max_connections: usize,
    /// Whether clients of the embedded broker may connect without credentials (and then
    /// see and publish everything). Unset: only while `embedded_bind` is a loopback address.
    /// With credentials a client is limited to its application (see `mqtt::gate`).
    pub embedded_allow_anonymous: Option<bool>,
    /// Overrides the user name in `url`.
    pub username: String,
    /// Overrides the password in `url`.
    pub password: String,
    /// MQTT client id; empty = `loraflow-<random>`.
    pub client_id: String,
    /// Events waiting for the broker; beyond this new events are dropped and counted.
    pub queue_size: usize,
    /// PEM file of the CA that signed the broker's certificate (mqtts://); empty = system roots.
    pub tls_ca_file: String,
    /// Client certificate and key (PEM) for brokers that require mutual TLS.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Seconds between keep-alive pings.
    pub keep_alive_secs: u64,
    /// Set by cluster mode, not by users: the group of the shared subscription
    /// (`$share/<group>/…`, MQTT 5 and Mosquitto 2 / EMQX with 3.1.1) through which the
    /// instances of a cluster split downlink commands, so that each is handled once.
    #[serde(skip)]
    pub command_share_group: Option<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: String::new(),
            embedded_bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            embedded_max_connections: 1000,
            embedded_allow_anonymous: None,
            username: String::new(),
            password: String::new(),
            client_id: String::new(),
            queue_size: 100_000,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            keep_alive_secs: 30,
            command_share_group: None,
        }
    }
}

impl MqttConfig {
    /// `embedded_allow_anonymous`, or its default for `embedded_bind`.
    pub fn allows_anonymous(&self) -> bool {
        self.embedded_allow_anonymous.unwrap_or_else(|| self.embedded_bind.ip().is_loopback())
    }
}
