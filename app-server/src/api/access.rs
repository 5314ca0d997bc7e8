//! What an API key may do on a route. The decision is pure ([`decide`]) on the key, the
//! method and the matched route; only "whose device is this?" needs the database
//! ([`check`]).
//!
//! An application-scoped key sees and changes only its application: its devices (and their
//! keys, queue, history, measurements, events), the application itself and its series.
//! A device of another application answers 404, as a device that does not exist (a key must
//! not learn which EUIs exist elsewhere); admin-only resources (gateways, API keys, other
//! applications, creating applications, changing device profiles) answer 403. Device
//! profiles and regions are shared and readable. A read-only key gets 403 on every write.
//! Routes not listed here are admin-only, so a new route is closed to scoped keys until
//! someone decides otherwise.
//!
//! The codec tests (`POST /device-profiles/test-codec`, `POST /device-profiles/{id}/test-codec`)
//! count as reads: they store and publish nothing and show no more than a profile read does
//! (its script), so read-only and application-scoped keys may use them like `GET
//! /device-profiles/{id}`. The script they send does run on the server, but in the same
//! sandbox as an uplink's (time, memory and result limits, abandoned threads past the
//! deadline) and at most `codec_test::concurrent_tests` at a time, so a key can cost the
//! server no more than a device profile's script could.
//! `GET /events` is open to scoped keys: the handler lists their application's events only.

use axum::extract::{MatchedPath, RawPathParams, Request};
use axum::http::Method;
use uuid::Uuid;

use loraflow_network_server::types::Eui64;

use super::auth::Principal;
use super::error::ApiError;
use super::ApiState;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Forbidden(&'static str),
    /// Allowed if the device belongs to the key's application (404 otherwise).
    OwnDevice(Eui64),
}

const ADMIN_ONLY: &str = "this API key is limited to one application; this resource needs an admin key";

/// The decision for `principal` calling `method` on `route` (the route template without the
/// `/api` prefix, e.g. `/devices/{dev_eui}/queue`) with its path parameters.
pub fn decide(principal: &Principal, method: &Method, route: &str, param: impl Fn(&str) -> Option<String>) -> Decision {
    let read = method == Method::GET || method == Method::HEAD || (method == Method::POST && is_dry_run(route));
    if principal.read_only && !read {
        return Decision::Forbidden("this API key is read-only");
    }
    let Some(own) = principal.application_id else {
        return Decision::Allow;
    };
    let segments: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["regions", ..] => Decision::Allow,
        ["device-profiles", ..] if read => Decision::Allow,
        // Listing shows only the key's application; creating one is for admins.
        ["applications"] if read => Decision::Allow,
        ["applications", "{id}" | "{application_id}", ..] => {
            let id = param("id").or_else(|| param("application_id"));
            match id.map(|id| id.parse::<Uuid>()) {
                Some(Ok(id)) if id == own => Decision::Allow,
                Some(Ok(_)) => Decision::Forbidden("another application: this API key is limited to its own"),
                // The handler answers 400 naming the parameter.
                _ => Decision::Allow,
            }
        }
        // The handlers keep listing and creating to the key's application.
        ["devices"] => Decision::Allow,
        // The handler lists the key's application's events only.
        ["events"] if read => Decision::Allow,
        // The live event stream like the device's other reads: its own devices only.
        ["devices", "{dev_eui}", "events", "stream"] => match param("dev_eui").map(|e| e.parse::<Eui64>()) {
            Some(Ok(eui)) => Decision::OwnDevice(eui),
            _ => Decision::Allow,
        },
        ["devices", "{dev_eui}", ..] => match param("dev_eui").map(|e| e.parse::<Eui64>()) {
            Some(Ok(eui)) => Decision::OwnDevice(eui),
            _ => Decision::Allow,
        },
        // Network-wide: gateways' frames and statistics show every application's traffic.
        ["stats"] | ["gateways", ..] => Decision::Forbidden(ADMIN_ONLY),
        _ => Decision::Forbidden(ADMIN_ONLY),
    }
}

/// Routes that compute an answer from their body and change nothing (module docs).
fn is_dry_run(route: &str) -> bool {
    matches!(route, "/device-profiles/test-codec" | "/device-profiles/{id}/test-codec")
}

/// Applies [`decide`] to a request (after routing: the matched route is known).
pub async fn check(state: &ApiState, principal: Principal, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let route = parts.extensions.get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default();
    let route = route.strip_prefix("/api").unwrap_or(&route);
    let params = <RawPathParams as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &()).await.ok();
    let param = |name: &str| params.as_ref().and_then(|p| p.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()));
    match decide(&principal, &parts.method, route, param) {
        Decision::Allow => {}
        Decision::Forbidden(why) => return Err(ApiError::Forbidden(why.into())),
        Decision::OwnDevice(eui) => match state.storage.devices.get(eui).await {
            Ok(d) if principal.sees(d.application_id) => {}
            Ok(_) => return Err(ApiError::NotFound(format!("device {eui} not found"))),
            // Not found (or a database error): the handler answers as it would anyway.
            Err(_) => {}
        },
    }
    Ok(Request::from_parts(parts, body))
}

/// 403 unless the caller may use `application_id` (for bodies naming an application).
pub fn require_application(principal: &Principal, application_id: Uuid) -> Result<(), ApiError> {
    if principal.sees(application_id) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("applicationId: another application; this API key is limited to its own".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "3f1c2a8e-0000-4000-8000-000000000001";
    const OTHER: &str = "3f1c2a8e-0000-4000-8000-000000000002";

    fn scoped(read_only: bool) -> Principal {
        Principal { key_id: Some(Uuid::nil()), application_id: Some(APP.parse().unwrap()), read_only }
    }

    fn on(p: &Principal, method: Method, route: &str, params: &[(&str, &str)]) -> Decision {
        decide(p, &method, route, |k| params.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn admin_keys_may_do_everything() {
        for route in ["/gateways", "/api-keys/{id}", "/applications", "/devices/{dev_eui}/queue", "/anything"] {
            assert_eq!(on(&Principal::ADMIN, Method::DELETE, route, &[]), Decision::Allow, "{route}");
        }
    }

    #[test]
    fn read_only_keys_only_read() {
        let admin_reader = Principal { read_only: true, ..Principal::ADMIN };
        assert_eq!(on(&admin_reader, Method::GET, "/gateways", &[]), Decision::Allow);
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(matches!(on(&admin_reader, m.clone(), "/gateways", &[]), Decision::Forbidden(_)), "{m}");
            assert!(matches!(
                on(&scoped(true), m.clone(), "/devices/{dev_eui}/queue", &[("dev_eui", "0102030405060708")]),
                Decision::Forbidden(_)
            ));
        }
    }

    #[test]
    fn scoped_keys_see_their_application_and_its_devices_only() {
        let k = scoped(false);
        assert_eq!(on(&k, Method::PUT, "/applications/{id}", &[("id", APP)]), Decision::Allow);
        assert!(matches!(on(&k, Method::GET, "/applications/{id}", &[("id", OTHER)]), Decision::Forbidden(_)));
        assert!(matches!(
            on(&k, Method::GET, "/applications/{application_id}/measurements/{name}", &[("application_id", OTHER), ("name", "t")]),
            Decision::Forbidden(_)
        ));
        assert_eq!(on(&k, Method::GET, "/applications/{id}", &[("id", "not-a-uuid")]), Decision::Allow, "the handler says 400");
        assert_eq!(on(&k, Method::GET, "/applications", &[]), Decision::Allow);
        assert!(matches!(on(&k, Method::POST, "/applications", &[]), Decision::Forbidden(_)));
        assert_eq!(on(&k, Method::POST, "/devices", &[]), Decision::Allow);
        assert_eq!(
            on(&k, Method::POST, "/devices/{dev_eui}/queue", &[("dev_eui", "0102030405060708")]),
            Decision::OwnDevice("0102030405060708".parse().unwrap())
        );
        assert_eq!(on(&k, Method::GET, "/device-profiles/{id}", &[("id", OTHER)]), Decision::Allow);
        assert!(matches!(on(&k, Method::PUT, "/device-profiles/{id}", &[("id", OTHER)]), Decision::Forbidden(_)));
        assert_eq!(on(&k, Method::GET, "/regions", &[]), Decision::Allow);
        assert_eq!(on(&k, Method::GET, "/events", &[]), Decision::Allow);
        assert_eq!(
            on(&scoped(true), Method::GET, "/devices/{dev_eui}/events/stream", &[("dev_eui", "0102030405060708")]),
            Decision::OwnDevice("0102030405060708".parse().unwrap()),
            "a read-only scoped key may watch its own devices"
        );
        for admin_only in [
            "/gateways",
            "/gateways/{gateway_id}",
            "/gateways/{gateway_id}/frames/stream",
            "/gateways/{gateway_id}/stats",
            "/stats",
            "/api-keys",
            "/api-keys/{id}",
            "/some-new-route",
        ] {
            assert!(matches!(on(&k, Method::GET, admin_only, &[]), Decision::Forbidden(_)), "{admin_only}");
        }
    }

    #[test]
    fn codec_tests_are_reads_for_every_key() {
        for key in [scoped(false), scoped(true), Principal { read_only: true, ..Principal::ADMIN }] {
            assert_eq!(on(&key, Method::POST, "/device-profiles/test-codec", &[]), Decision::Allow);
            assert_eq!(on(&key, Method::POST, "/device-profiles/{id}/test-codec", &[("id", OTHER)]), Decision::Allow);
            // Still not a way to change profiles.
            assert!(matches!(on(&key, Method::POST, "/device-profiles", &[]), Decision::Forbidden(_)));
        }
        assert!(matches!(on(&scoped(true), Method::POST, "/devices", &[]), Decision::Forbidden(_)));
    }
}
