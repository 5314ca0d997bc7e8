//! Bearer-token authentication for `/api/*`. Tokens are only ever stored and compared as
//! SHA-256 digests, so neither the database nor a log can give a usable token away.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use loraflow_network_server::storage::{Storage, StorageError};

use super::error::ApiError;
use super::ApiState;

pub struct Auth {
    admin_digest: Option<[u8; 32]>,
    storage: Storage,
    /// Digests already confirmed by the database, so a request costs no query.
    known: RwLock<HashSet<[u8; 32]>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    /// Sets up authentication. Returns the newly generated token when neither
    /// `api.admin_token` is set nor any token was stored before: the caller prints it once.
    pub async fn bootstrap(admin_token: Option<&str>, storage: Storage) -> Result<(Auth, Option<String>), StorageError> {
        let admin_digest = admin_token.filter(|t| !t.is_empty()).map(digest);
        let mut generated = None;
        if admin_digest.is_none() && storage.api_keys.count().await? == 0 {
            let mut raw = [0u8; 24];
            rand::thread_rng().fill_bytes(&mut raw);
            let token = format!("lf_{}", hex::encode(raw));
            storage.api_keys.insert(Uuid::new_v4(), "admin (generated)", &digest(&token)).await?;
            generated = Some(token);
        }
        let auth = Auth { admin_digest, storage, known: RwLock::new(HashSet::new()) };
        Ok((auth, generated))
    }

    pub async fn is_valid(&self, token: &str) -> Result<bool, StorageError> {
        let d = digest(token);
        if let Some(admin) = &self.admin_digest {
            if bool::from(admin.ct_eq(&d)) {
                return Ok(true);
            }
        }
        // Looking digests up (here and in the database index) is not a timing oracle: the
        // time may tell how much of a stored *digest* an attempt's digest matches, but
        // SHA-256 gives no way to choose a token for a wanted digest prefix, so that tells
        // nothing about any token.
        if self.known.read().expect("auth cache poisoned").contains(&d) {
            return Ok(true);
        }
        if self.storage.api_keys.exists(&d).await? {
            self.known.write().expect("auth cache poisoned").insert(d);
            return Ok(true);
        }
        Ok(false)
    }
}

/// The token of an `Authorization: Bearer …` header; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub async fn require_bearer(State(state): State<ApiState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or(ApiError::Unauthorized)?;
    // The client address comes from the accept loop (absent only when the router is driven
    // without it, as in unit tests).
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(retry_after_secs) = client.and_then(|ip| state.auth_failures.retry_after(ip, Instant::now())) {
        return Err(ApiError::TooManyRequests { retry_after_secs });
    }
    if !state.auth.is_valid(token).await? {
        if let Some(ip) = client {
            state.auth_failures.record_failure(ip, Instant::now());
        }
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("bEaReR  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
