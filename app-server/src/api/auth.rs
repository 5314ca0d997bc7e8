//! Bearer-token authentication for `/api/*` and the API keys it accepts. Tokens are only
//! ever stored and compared as SHA-256 digests, so neither the database nor a log can give a
//! usable token away. [`Auth`] owns the keys: creating and revoking go through it, so its
//! cache never outlives a revocation made here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use loraflow_network_server::storage::{ApiKey, Storage, StorageError};

use super::access;
use super::error::ApiError;
use super::ApiState;

/// How long a key confirmed by the database is trusted without asking again: a key revoked
/// by another process (`loraflow admin-token rotate`, another instance) stops working within
/// this time; one revoked through this server stops at once.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// [`CACHE_TTL`] in a cluster: a key revoked (or an application deleted) through one
/// instance must be refused by every other within a second. Re-validating against the
/// shared database rather than announcing revocations over Redis keeps that promise even
/// while Redis is away, for one indexed lookup per key and instance twice a second.
pub const CLUSTER_CACHE_TTL: Duration = Duration::from_millis(500);

/// The name of the admin key loraflow generates when it has none.
pub const GENERATED_KEY_NAME: &str = "admin (generated)";

/// Who is calling: what the key may see and whether it may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The stored key (`None`: `api.admin_token` from the configuration).
    pub key_id: Option<Uuid>,
    /// `Some`: only this application's resources.
    pub application_id: Option<Uuid>,
    pub read_only: bool,
}

impl Principal {
    pub const ADMIN: Principal = Principal { key_id: None, application_id: None, read_only: false };

    fn of(key: &ApiKey) -> Principal {
        Principal { key_id: Some(key.id), application_id: key.application_id, read_only: key.read_only }
    }

    /// Whether the caller may see `application_id`'s resources.
    pub fn sees(&self, application_id: Uuid) -> bool {
        self.application_id.is_none_or(|own| own == application_id)
    }
}

pub struct Auth {
    admin_digest: Option<[u8; 32]>,
    storage: Storage,
    /// Keys confirmed by the database, by digest, with when. Looking a digest up is not a
    /// timing oracle for the token: finding which digest matches needs a SHA-256 preimage.
    known: RwLock<HashMap<[u8; 32], (Principal, Instant)>>,
    /// How long a confirmed key is trusted: [`CACHE_TTL`], or [`CLUSTER_CACHE_TTL`].
    ttl: Duration,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token (`lf_` and 48 hex digits).
pub fn new_token() -> String {
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    format!("lf_{}", hex::encode(raw))
}

/// Replaces the generated admin key by a new one and returns its token: what
/// `loraflow admin-token rotate` does (the old token stops working).
pub async fn rotate_generated(storage: &Storage) -> Result<String, StorageError> {
    let token = new_token();
    let key = ApiKey { generated: true, ..ApiKey::new(GENERATED_KEY_NAME) };
    storage.api_keys.replace_generated(&key, &digest(&token)).await?;
    Ok(token)
}

impl Auth {
    /// Sets up authentication. Returns the newly generated token when neither
    /// `api.admin_token` is set nor any key was stored before: the caller prints it once.
    pub async fn bootstrap(admin_token: Option<&str>, storage: Storage) -> Result<(Auth, Option<String>), StorageError> {
        let admin_digest = admin_token.filter(|t| !t.is_empty()).map(digest);
        let mut generated = None;
        if admin_digest.is_none() && storage.api_keys.count().await? == 0 {
            generated = Some(rotate_generated(&storage).await?);
        }
        let auth = Auth { admin_digest, storage, known: RwLock::new(HashMap::new()), ttl: CACHE_TTL };
        Ok((auth, generated))
    }

    /// Trusts a confirmed key for `ttl` instead of [`CACHE_TTL`] (cluster mode:
    /// [`CLUSTER_CACHE_TTL`]).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Auth {
        self.ttl = ttl;
        self
    }

    /// The caller a token stands for, or `None` for an unknown (or revoked) token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, StorageError> {
        let d = digest(token);
        if let Some(admin) = &self.admin_digest {
            if bool::from(admin.ct_eq(&d)) {
                return Ok(Some(Principal::ADMIN));
            }
        }
        // Looking digests up (here and in the database index) is not a timing oracle: the
        // time may tell how much of a stored *digest* an attempt's digest matches, but
        // SHA-256 gives no way to choose a token for a wanted digest prefix, so that tells
        // nothing about any token.
        if let Some((p, at)) = self.known.read().expect("auth cache poisoned").get(&d) {
            if at.elapsed() < self.ttl {
                return Ok(Some(*p));
            }
        }
        let found = self.storage.api_keys.find(&d).await?.map(|k| Principal::of(&k));
        let mut known = self.known.write().expect("auth cache poisoned");
        match found {
            Some(p) => known.insert(d, (p, Instant::now())),
            None => known.remove(&d),
        };
        Ok(found)
    }

    /// Stores a new key and returns it with its token (shown once, stored hashed).
    pub async fn create(&self, name: String, application_id: Option<Uuid>, read_only: bool) -> Result<(ApiKey, String), StorageError> {
        let token = new_token();
        let key = ApiKey { application_id, read_only, ..ApiKey::new(name) };
        self.storage.api_keys.insert(&key, &digest(&token)).await?;
        Ok((key, token))
    }

    pub async fn list(&self) -> Result<Vec<ApiKey>, StorageError> {
        self.storage.api_keys.list().await
    }

    /// Deletes a key; the next request with its token is refused.
    pub async fn revoke(&self, id: Uuid) -> Result<(), StorageError> {
        self.storage.api_keys.delete(id).await?;
        self.known.write().expect("auth cache poisoned").retain(|_, (p, _)| p.key_id != Some(id));
        Ok(())
    }

    /// Forgets the keys of an application that is gone (they were deleted with it).
    pub fn application_deleted(&self, application_id: Uuid) {
        self.known.write().expect("auth cache poisoned").retain(|_, (p, _)| p.application_id != Some(application_id));
    }
}

/// The token of an `Authorization: Bearer …` header; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Authenticates the bearer token, checks what its key may do on this route
/// ([`access::decide`]) and hands the [`Principal`] to the handler.
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
    let Some(principal) = state.auth.authenticate(token).await? else {
        if let Some(ip) = client {
            state.auth_failures.record_failure(ip, Instant::now());
        }
        return Err(ApiError::Unauthorized);
    };
    let mut req = access::check(&state, principal, req).await?;
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// Clients of the embedded broker authenticate with an API key: user name = the key's
/// application id (any user name for an admin key or the admin token).
impl crate::mqtt::gate::MqttAuthenticator for Auth {
    fn authenticate<'a>(&'a self, username: &'a str, password: &'a str) -> crate::mqtt::gate::AuthFuture<'a> {
        use crate::mqtt::gate::Grant;
        Box::pin(async move {
            let principal = Auth::authenticate(self, password).await.ok().flatten()?;
            match principal.application_id {
                None if principal.read_only => Some(Grant::ReadAll),
                None => Some(Grant::Everything),
                Some(id) if username.parse::<Uuid>().ok() == Some(id) => Some(Grant::Application { id, read_only: principal.read_only }),
                Some(_) => None,
            }
        })
    }
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
