//! HTTPS for the REST API (`api.tls_cert`, `api.tls_key`): rustls with the process's default
//! crypto provider, HTTP/1.1 only (the server speaks nothing else).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

pub use tokio_rustls::TlsAcceptor;

/// Why the certificate or key cannot be used: the `[api]` key and the reason.
#[derive(Debug, thiserror::Error)]
#[error("api.{key}: {reason}")]
pub struct TlsConfigError {
    pub key: &'static str,
    pub reason: String,
}

/// Reads the PEM certificate chain and private key and checks that they belong together.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsConfigError> {
    let cert_err = |reason: String| TlsConfigError { key: "tls_cert", reason: format!("{}: {reason}", cert.display()) };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate in the file".into()));
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsConfigError { key: "tls_key", reason: format!("{}: {e}", key.display()) })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| TlsConfigError { key: "tls_key", reason: format!("{}: does not fit the certificate: {e}", key.display()) })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
