//! Access control of the embedded broker. rumqttd checks neither credentials against
//! loraflow's API keys nor topics, so loraflow's front (which relays every client connection,
//! see `front`) reads what a client sends, packet by packet, and lets through only what its
//! key may do:
//! - CONNECT: user name = application id and password = an API key of that application, or
//!   any user name with an admin key / the admin token; no user name only when anonymous
//!   access is on (`mqtt.embedded_allow_anonymous`). Refused with CONNACK "not authorized".
//! - SUBSCRIBE: an application's client only to `application/{its id}/…` (also as a shared
//!   subscription `$share/{group}/application/{its id}/…`).
//! - PUBLISH: an application's client only to its devices' commands
//!   (`application/{its id}/device/{devEui}/command/…`), and not with a read-only key: the
//!   events are loraflow's to publish, so nobody can forge them.
//!
//! A forbidden SUBSCRIBE or PUBLISH closes the connection (MQTT 3.1.1 has no way to refuse a
//! publish) and is counted in `loraflow_mqtt_embedded_denied_total{reason}`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use prometheus::IntCounterVec;
use rumqttc::mqttbytes::v4::Packet;
use uuid::Uuid;

/// What a client may do once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Everything,
    /// Subscribe to everything, publish nothing (a read-only admin key).
    ReadAll,
    Application {
        id: Uuid,
        read_only: bool,
    },
}

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Option<Grant>> + Send + 'a>>;

/// Checks a CONNECT's user name and password (implemented on the REST API's key store).
pub trait MqttAuthenticator: Send + Sync + 'static {
    fn authenticate<'a>(&'a self, username: &'a str, password: &'a str) -> AuthFuture<'a>;
}

/// The rules of one embedded broker.
pub struct Gate {
    pub allow_anonymous: bool,
    /// Set once the key store is up; until then only anonymous clients get in.
    pub authenticator: OnceLock<Arc<dyn MqttAuthenticator>>,
    pub denied: IntCounterVec,
}

/// Why a client's packet was refused (the metric's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Anonymous,
    Credentials,
    Subscribe,
    Publish,
    /// Not MQTT 3.1.1, or not a CONNECT first.
    Protocol,
}

impl Denied {
    pub const ALL: [Denied; 5] = [Denied::Anonymous, Denied::Credentials, Denied::Subscribe, Denied::Publish, Denied::Protocol];

    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Anonymous => "anonymous",
            Denied::Credentials => "credentials",
            Denied::Subscribe => "subscribe",
            Denied::Publish => "publish",
            Denied::Protocol => "protocol",
        }
    }
}

/// CONNACK "connection refused: not authorized" (MQTT 3.1.1 return code 5).
pub const CONNACK_NOT_AUTHORIZED: [u8; 4] = [0x20, 0x02, 0x00, 0x05];

/// Largest packet the gate reads (rumqttd's own limit is the same order).
const MAX_PACKET: usize = 1024 * 1024;

/// The topic filter without a shared-subscription prefix.
fn unshared(filter: &str) -> &str {
    match filter.strip_prefix("$share/").and_then(|rest| rest.split_once('/')) {
        Some((_group, filter)) => filter,
        None => filter,
    }
}

pub fn may_subscribe(grant: Grant, filter: &str) -> bool {
    match grant {
        Grant::Everything | Grant::ReadAll => true,
        Grant::Application { id, .. } => unshared(filter)
            .strip_prefix("application/")
            .and_then(|r| r.strip_prefix(id.to_string().as_str()))
            .is_some_and(|r| r.starts_with('/')),
    }
}

pub fn may_publish(grant: Grant, topic: &str) -> bool {
    match grant {
        Grant::Everything => true,
        Grant::ReadAll | Grant::Application { read_only: true, .. } => false,
        Grant::Application { id, read_only: false } => {
            let parts: Vec<&str> = topic.split('/').collect();
            matches!(parts.as_slice(), ["application", app, "device", dev, "command", _, ..]
                if *app == id.to_string() && !dev.is_empty() && !dev.contains(['+', '#']))
        }
    }
}

/// A connection's state in the gate.
pub enum Verdict {
    /// Pass the packet on.
    Forward,
    /// Pass it on and everything after it unread (full access).
    ForwardRest,
    /// Refuse: answer `reply` (if any) and close.
    Refuse(Denied, Option<&'static [u8]>),
}

/// One client connection: reads whole packets from what the client sent.
pub struct Session {
    gate: Arc<Gate>,
    grant: Option<Grant>,
}

impl Session {
    pub fn new(gate: Arc<Gate>) -> Session {
        Session { gate, grant: None }
    }

    /// Takes the next whole packet from `buf` (`Ok(None)`: more bytes needed) and decides on
    /// it; the packet's bytes are returned for forwarding.
    pub async fn next(&mut self, buf: &mut BytesMut) -> Result<Option<(BytesMut, Verdict)>, Denied> {
        let header = match rumqttc::mqttbytes::check(buf.iter(), MAX_PACKET) {
            Ok(h) => h,
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
            Err(_) => return Err(Denied::Protocol),
        };
        let frame = buf.split_to(header.frame_length());
        let packet = Packet::read(&mut frame.clone(), MAX_PACKET).map_err(|_| Denied::Protocol)?;
        let verdict = self.decide(packet).await;
        Ok(Some((frame, verdict)))
    }

    async fn decide(&mut self, packet: Packet) -> Verdict {
        let Some(grant) = self.grant else {
            let Packet::Connect(connect) = packet else {
                return Verdict::Refuse(Denied::Protocol, None);
            };
            let grant = match &connect.login {
                None if self.gate.allow_anonymous => Some(Grant::Everything),
                None => return Verdict::Refuse(Denied::Anonymous, Some(&CONNACK_NOT_AUTHORIZED)),
                Some(login) => match self.gate.authenticator.get() {
                    Some(a) => a.authenticate(&login.username, &login.password).await,
                    None => None,
                },
            };
            return match grant {
                Some(Grant::Everything) => {
                    self.grant = Some(Grant::Everything);
                    Verdict::ForwardRest
                }
                Some(g) => {
                    self.grant = Some(g);
                    Verdict::Forward
                }
                None => Verdict::Refuse(Denied::Credentials, Some(&CONNACK_NOT_AUTHORIZED)),
            };
        };
        match packet {
            Packet::Connect(_) => Verdict::Refuse(Denied::Protocol, None),
            Packet::Subscribe(s) if !s.filters.iter().all(|f| may_subscribe(grant, &f.path)) => Verdict::Refuse(Denied::Subscribe, None),
            Packet::Publish(p) if !may_publish(grant, &p.topic) => Verdict::Refuse(Denied::Publish, None),
            _ => Verdict::Forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "7d6c5b1e-0000-4000-8000-000000000001";
    const OTHER: &str = "7d6c5b1e-0000-4000-8000-000000000002";

    fn app(read_only: bool) -> Grant {
        Grant::Application { id: APP.parse().unwrap(), read_only }
    }

    #[test]
    fn applications_subscribe_to_their_own_topics_only() {
        for ok in [
            format!("application/{APP}/#"),
            format!("application/{APP}/device/+/event/up"),
            format!("$share/g1/application/{APP}/device/+/event/+"),
        ] {
            assert!(may_subscribe(app(true), &ok), "{ok}");
        }
        for bad in [
            "#".to_string(),
            "+/#".to_string(),
            "application/+/device/+/event/up".to_string(),
            "application/#".to_string(),
            format!("application/{OTHER}/#"),
            format!("application/{APP}"),
            format!("application/{APP}x/#"),
            format!("$share/g/application/{OTHER}/#"),
            "$SYS/#".to_string(),
        ] {
            assert!(!may_subscribe(app(false), &bad), "{bad}");
        }
        assert!(may_subscribe(Grant::Everything, "#"));
    }

    #[test]
    fn applications_publish_only_commands_of_their_devices() {
        assert!(may_publish(app(false), &format!("application/{APP}/device/0102030405060708/command/down")));
        for bad in [
            format!("application/{APP}/device/0102030405060708/event/up"),
            format!("application/{OTHER}/device/0102030405060708/command/down"),
            format!("application/{APP}/device/+/command/down"),
            format!("application/{APP}/command/down"),
            "application".to_string(),
        ] {
            assert!(!may_publish(app(false), &bad), "{bad}");
        }
        assert!(!may_publish(app(true), &format!("application/{APP}/device/0102030405060708/command/down")), "read-only");
        assert!(may_publish(Grant::Everything, "application/x/device/y/event/up"));
        assert!(!may_publish(Grant::ReadAll, "application/x/device/y/command/down"));
        assert!(may_subscribe(Grant::ReadAll, "#"));
    }
}
