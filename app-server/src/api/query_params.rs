//! Which query parameters each route accepts. A request naming any other parameter answers
//! 400 naming it, before its handler runs, so that a misspelt `?applicationID=` cannot
//! silently list every device. Routes not listed here accept none.
//!
//! The lists are declared next to the handlers that read them (`LIST_QUERY` and the like);
//! this table only binds them to the routes of [`super::router`].

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::{device_events, device_measurements, devices, events, extract, history};

/// (method, route as written in the router under `/api`, accepted parameters).
const ACCEPTED: &[(Method, &str, &[&str])] = &[
    (Method::GET, "/api/gateways", extract::PAGING_QUERY),
    (Method::GET, "/api/applications", extract::PAGING_QUERY),
    (Method::GET, "/api/device-profiles", extract::PAGING_QUERY),
    (Method::GET, "/api/devices", devices::LIST_QUERY),
    (Method::GET, "/api/devices/{dev_eui}/uplinks", history::HISTORY_QUERY),
    (Method::GET, "/api/devices/{dev_eui}/events", device_events::LIST_QUERY),
    (Method::GET, "/api/events", events::LIST_QUERY),
    (Method::GET, "/api/devices/{dev_eui}/measurements/{name}", device_measurements::SERIES_QUERY),
    (Method::GET, "/api/applications/{application_id}/measurements/{name}", device_measurements::SERIES_QUERY),
];

/// The parameters `method` on `route` accepts.
pub fn accepted(method: &Method, route: &str) -> &'static [&'static str] {
    ACCEPTED.iter().find(|(m, r, _)| m == method && *r == route).map(|(_, _, keys)| *keys).unwrap_or(&[])
}

/// The first parameter of `query` not in `accepted`, percent-decoded.
fn first_unknown(query: &str, accepted: &[&str]) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).map(|(k, _)| k).find(|k| !accepted.contains(&k.as_ref())).map(|k| k.into_owned())
}

/// Route layer of `/api`: refuses parameters the matched route does not accept.
/// The documented operations (method, route template), from the OpenAPI document.
static OPERATIONS: std::sync::OnceLock<std::collections::HashSet<(Method, String)>> = std::sync::OnceLock::new();

/// Records the operations of the OpenAPI document (`paths` → methods), once.
pub fn set_operations(document: &serde_json::Value) {
    let ops = document["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .filter_map(move |(m, _)| Some((Method::from_bytes(m.to_uppercase().as_bytes()).ok()?, path.clone())))
        })
        .collect();
    let _ = OPERATIONS.set(ops);
}

/// A method the route does not have (TRACE, PUT on a read-only route…) is let through
/// unchecked: routing answers it 405.
pub async fn reject_unknown(req: Request, next: Next) -> Result<Response, ApiError> {
    // HEAD is answered by the GET handler.
    let method = if req.method() == Method::HEAD { Method::GET } else { req.method().clone() };
    let route = req.extensions().get::<MatchedPath>().map(|r| r.as_str().to_string()).unwrap_or_default();
    if OPERATIONS.get().is_some_and(|ops| !ops.contains(&(method.clone(), route))) {
        return Ok(next.run(req).await);
    }
    if let (Some(query), Some(route)) = (req.uri().query(), req.extensions().get::<MatchedPath>()) {
        if let Some(unknown) = first_unknown(query, accepted(&method, route.as_str())) {
            let allowed = accepted(&method, route.as_str());
            let reason = if allowed.is_empty() {
                "unknown query parameter; this endpoint takes none".to_string()
            } else {
                format!("unknown query parameter; this endpoint takes {}", allowed.join(", "))
            };
            return Err(ApiError::field(&unknown, reason));
        }
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parameters_are_found_decoded() {
        assert_eq!(first_unknown("limit=1&offset=2", extract::PAGING_QUERY), None);
        assert_eq!(first_unknown("limit=1&applicationID=x", extract::PAGING_QUERY).as_deref(), Some("applicationID"));
        assert_eq!(first_unknown("a%20b=1", &[]).as_deref(), Some("a b"));
        assert_eq!(first_unknown("", &[]), None);
    }

    #[test]
    fn routes_not_listed_accept_nothing() {
        assert_eq!(accepted(&Method::POST, "/api/devices"), &[] as &[&str]);
        assert!(accepted(&Method::GET, "/api/devices").contains(&"applicationId"));
    }
}
