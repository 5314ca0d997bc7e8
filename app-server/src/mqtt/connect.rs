//! rumqttc client options from the `[mqtt]` section: broker URL, credentials, TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use rumqttc::tokio_rustls::rustls::{
    self,
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ClientConfig, RootCertStore,
};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use super::{MqttConfig, MqttError};

/// Largest MQTT packet we send (events); also the largest the embedded broker accepts.
pub(crate) const MAX_OUTGOING_PACKET: usize = 1024 * 1024;
/// rumqttc drops the connection on an incoming packet above its limit, and anyone may
/// publish on a command topic: so the limit must be at least what the broker accepts.
/// The embedded broker refuses publishes above [`MAX_OUTGOING_PACKET`] (a forwarded
/// publish may gain a 2-byte packet id); an external broker's limit is unknown, so the
/// protocol's maximum (MQTT 3.1.1 §2.2.3) is allowed. Oversized commands are then ignored
/// by the transport, not by a disconnect.
const MAX_INCOMING_EMBEDDED: usize = MAX_OUTGOING_PACKET + 16;
const MAX_INCOMING_EXTERNAL: usize = 268_435_455;

/// Publishes written but not yet acknowledged. Large enough that the round trip does not
/// cap throughput (at 0.2 ms RTT, 1000 in flight allow millions per second), small
/// enough to bound what is re-sent after a reconnect.
pub(crate) const MAX_INFLIGHT: u16 = 1000;

/// Where the client connects.
pub(crate) enum Broker<'a> {
    Embedded(SocketAddr),
    External(&'a str),
}

pub(crate) fn client_options(cfg: &MqttConfig, broker: Broker<'_>) -> Result<MqttOptions, MqttError> {
    let client_id = if cfg.client_id.is_empty() {
        // MQTT 3.1.1 §3.1.3.1: servers must accept ids of up to 23 characters.
        format!("loraflow-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
    } else {
        cfg.client_id.clone()
    };

    let max_incoming = match broker {
        Broker::Embedded(_) => MAX_INCOMING_EMBEDDED,
        Broker::External(_) => MAX_INCOMING_EXTERNAL,
    };
    let (mut options, url_user, url_pass) = match broker {
        Broker::Embedded(addr) => (MqttOptions::new(client_id, addr.ip().to_string(), addr.port()), None, None),
        Broker::External(url) => {
            let parsed = parse_url(url)?;
            let mut o = MqttOptions::new(client_id, parsed.host, parsed.port);
            if parsed.tls {
                o.set_transport(Transport::tls_with_config(tls_config(cfg)?));
            }
            (o, parsed.username, parsed.password)
        }
    };

    let username = if cfg.username.is_empty() { url_user.unwrap_or_default() } else { cfg.username.clone() };
    let password = if cfg.password.is_empty() { url_pass.unwrap_or_default() } else { cfg.password.clone() };
    if !username.is_empty() || !password.is_empty() {
        options.set_credentials(username, password);
    }

    // rumqttc refuses keep-alives between 0 and 1 s; 0 disables pings.
    options.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs));
    // Resubscribed after every connect and un-acknowledged publishes are re-sent by the
    // transport, so nothing depends on the broker keeping a session for us.
    options.set_clean_session(true);
    options.set_max_packet_size(max_incoming, MAX_OUTGOING_PACKET);
    options.set_inflight(MAX_INFLIGHT);
    // Never full: the transport submits at most MAX_INFLIGHT publishes plus a subscribe
    // and a disconnect.
    options.set_request_channel_capacity(MAX_INFLIGHT as usize + 16);
    Ok(options)
}

struct BrokerUrl {
    host: String,
    port: u16,
    tls: bool,
    username: Option<String>,
    password: Option<String>,
}

fn parse_url(raw: &str) -> Result<BrokerUrl, MqttError> {
    let err = |reason: String| MqttError::InvalidUrl { url: redact(raw), reason };
    let url = url::Url::parse(raw).map_err(|e| err(e.to_string()))?;
    let tls = match url.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => return Err(err(format!("scheme {other:?} is not mqtt:// or mqtts://"))),
    };
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err(err("no host".into())),
    };
    if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(err("only mqtt[s]://[user:password@]host[:port] is understood".into()));
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| err("credentials are not UTF-8".into()));
    let username = if url.username().is_empty() { None } else { Some(decode(url.username())?) };
    let password = url.password().map(decode).transpose()?;
    Ok(BrokerUrl { host, port: url.port().unwrap_or(if tls { 8883 } else { 1883 }), tls, username, password })
}

/// The URL without its password, for error messages.
fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

fn tls_config(cfg: &MqttConfig) -> Result<TlsConfiguration, MqttError> {
    let mut roots = RootCertStore::empty();
    if cfg.tls_ca_file.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "could not load some system CA certificates");
        }
        roots.add_parsable_certificates(native.certs);
        if roots.is_empty() {
            return Err(MqttError::Tls {
                key: "mqtt.tls_ca_file",
                path: String::new(),
                reason: "no system CA certificates found; set the CA file of the broker".into(),
            });
        }
    } else {
        let certs = read_certs("mqtt.tls_ca_file", &cfg.tls_ca_file)?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(tls_err("mqtt.tls_ca_file", &cfg.tls_ca_file, "no usable CA certificate".into()));
        }
    }

    // Explicit provider: `ClientConfig::builder()` panics when more than one rustls crypto
    // backend is compiled in and none was installed.
    let provider = CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("mqtt.url", "", e.to_string()))?
        .with_root_certificates(roots);

    let config = match (cfg.tls_cert_file.is_empty(), cfg.tls_key_file.is_empty()) {
        (true, true) => builder.with_no_client_auth(),
        (false, false) => {
            let certs = read_certs("mqtt.tls_cert_file", &cfg.tls_cert_file)?;
            let key = PrivateKeyDer::from_pem_file(Path::new(&cfg.tls_key_file))
                .map_err(|e| tls_err("mqtt.tls_key_file", &cfg.tls_key_file, e.to_string()))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| tls_err("mqtt.tls_key_file", &cfg.tls_key_file, e.to_string()))?
        }
        (true, false) => return Err(tls_err("mqtt.tls_cert_file", "", "required when mqtt.tls_key_file is set".into())),
        (false, true) => return Err(tls_err("mqtt.tls_key_file", "", "required when mqtt.tls_cert_file is set".into())),
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

fn read_certs(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, MqttError> {
    let certs = CertificateDer::pem_file_iter(Path::new(path))
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err(key, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_err(key, path, "no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn tls_err(key: &'static str, path: &str, reason: String) -> MqttError {
    MqttError::Tls { key, path: path.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(url: &str) -> Result<MqttOptions, MqttError> {
        client_options(&MqttConfig { url: url.into(), ..MqttConfig::default() }, Broker::External(url))
    }

    #[test]
    fn a_plain_url_gives_host_port_and_credentials() {
        let o = external("mqtt://user:p%40ss@broker.example:1884").unwrap();
        assert_eq!(o.broker_address(), ("broker.example".to_string(), 1884));
        let login = o.credentials().unwrap();
        assert_eq!((login.username.as_str(), login.password.as_str()), ("user", "p@ss"));
        assert!(matches!(o.transport(), Transport::Tcp));
    }

    #[test]
    fn ports_default_to_1883_and_8883() {
        assert_eq!(external("mqtt://h").unwrap().broker_address().1, 1883);
        assert_eq!(external("tcp://h").unwrap().broker_address().1, 1883);
        let o = external("mqtts://h").unwrap();
        assert_eq!(o.broker_address().1, 8883);
        assert!(matches!(o.transport(), Transport::Tls(_)));
    }

    #[test]
    fn configured_username_and_password_override_the_url() {
        let cfg = MqttConfig { url: "mqtt://a:b@h".into(), username: "c".into(), password: "d".into(), ..MqttConfig::default() };
        let o = client_options(&cfg, Broker::External(&cfg.url)).unwrap();
        let login = o.credentials().unwrap();
        assert_eq!((login.username.as_str(), login.password.as_str()), ("c", "d"));
    }

    #[test]
    fn the_client_accepts_every_packet_its_broker_may_forward() {
        let embedded = client_options(&MqttConfig::default(), Broker::Embedded("127.0.0.1:1".parse().unwrap())).unwrap();
        assert!(embedded.max_packet_size() >= MAX_OUTGOING_PACKET + 2);
        assert_eq!(external("mqtt://h").unwrap().max_packet_size(), 268_435_455);
    }

    #[test]
    fn no_credentials_means_anonymous() {
        assert!(external("mqtt://h:1").unwrap().credentials().is_none());
    }

    #[test]
    fn client_id_is_configured_or_random_and_short() {
        let cfg = MqttConfig { client_id: "gw-bridge".into(), ..MqttConfig::default() };
        let o = client_options(&cfg, Broker::Embedded("127.0.0.1:1".parse().unwrap())).unwrap();
        assert_eq!(o.client_id(), "gw-bridge");
        let a = external("mqtt://h").unwrap().client_id();
        let b = external("mqtt://h").unwrap().client_id();
        assert!(a.starts_with("loraflow-") && a.len() <= 23, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn bad_urls_are_refused_naming_the_key_without_the_password() {
        for url in ["http://h", "mqtt://", "mqtt://h/topic", "mqtt://h?x=1", "not a url"] {
            let e = external(url).unwrap_err().to_string();
            assert!(e.contains("`mqtt.url`"), "{url}: {e}");
        }
        let e = external("ftp://u:secret@h").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn a_missing_ca_file_is_refused_naming_the_key() {
        let cfg = MqttConfig { url: "mqtts://h".into(), tls_ca_file: "/nonexistent/ca.pem".into(), ..MqttConfig::default() };
        let e = client_options(&cfg, Broker::External(&cfg.url)).unwrap_err().to_string();
        assert!(e.contains("`mqtt.tls_ca_file`") && e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_client_certificate_without_a_key_is_refused() {
        let cfg = MqttConfig { url: "mqtts://h".into(), tls_cert_file: "/some/cert.pem".into(), ..MqttConfig::default() };
        // The CA comes from the system; when the machine has none, that error comes first.
        let e = client_options(&cfg, Broker::External(&cfg.url)).unwrap_err().to_string();
        assert!(e.contains("`mqtt.tls_key_file`") || e.contains("`mqtt.tls_ca_file`"), "{e}");
    }
}
