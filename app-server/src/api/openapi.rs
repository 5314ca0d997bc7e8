//! The OpenAPI 3.1 document of the REST API, generated from the handlers' `#[utoipa::path]`
//! annotations and their types' `ToSchema` derives. The router is built from the same
//! annotations (`utoipa_axum::routes!`), so a route cannot exist without being documented.
//!
//! Served without authentication at `GET /api/openapi.json`: it describes the API, holds no
//! data, and API clients and fuzzers need it before they have a token.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// The body of every error answer (DESIGN.md §3). A 400 message starts with the camelCase
/// name of the offending field; 5xx messages are generic.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// The document's fixed part: title, security scheme; paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "loraflow",
        description = "LoRaWAN network and application server. Every `/api/*` operation needs \
            `Authorization: Bearer <token>` (the admin token or an API key); errors are \
            `{\"error\": \"...\"}` and a 400 names the field.",
        license(name = "Apache-2.0")
    ),
    security(("bearer" = [])),
    modifiers(&BearerScheme),
    components(schemas(ErrorBody)),
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token (`api.admin_token`, or the one generated on first start) or an API key"))
                    .build(),
            ),
        );
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build()
        .into()
}

fn errors(codes: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    codes.iter().map(|(code, description)| (code.to_string(), error_response(description))).collect()
}

const BAD_REQUEST: (&str, &str) = ("400", "Invalid input; the message starts with the field's name");
const UNAUTHORIZED: (&str, &str) = ("401", "Missing or unknown bearer token");
const FORBIDDEN: (&str, &str) = ("403", "The API key may not do this (admin only, read-only, or another application)");
const NOT_FOUND: (&str, &str) = ("404", "The resource (or one it belongs to) does not exist");
const CONFLICT: (&str, &str) = ("409", "Conflicts with stored data (already exists, still in use)");
const INTERNAL: (&str, &str) = ("500", "Internal error (the cause is logged)");
const TOO_LARGE: (&str, &str) = ("413", "The body is larger than api.max_body_bytes");
const NOT_JSON: (&str, &str) = ("415", "The body is not application/json");
const TOO_MANY: (&str, &str) = ("429", "Too many wrong tokens from this address (api.auth_failures_per_minute); see Retry-After");
const TOO_SLOW: (&str, &str) = ("503", "The answer took longer than api.handler_timeout_secs");

/// The errors any `/api/*` read can answer.
pub struct ReadErrors;

impl utoipa::IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, TOO_MANY, INTERNAL, TOO_SLOW])
    }
}

const NO_STREAM_SLOT: (&str, &str) =
    ("503", "Every live stream slot (api.max_streams) is taken, or the answer took longer than api.handler_timeout_secs");

/// The errors a live stream (`…/stream`) can answer before it starts.
pub struct StreamErrors;

impl utoipa::IntoResponses for StreamErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, TOO_MANY, INTERNAL, NO_STREAM_SLOT])
    }
}

/// The errors any `/api/*` write can answer.
pub struct WriteErrors;

impl utoipa::IntoResponses for WriteErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, TOO_LARGE, NOT_JSON, TOO_MANY, INTERNAL, TOO_SLOW])
    }
}

/// The document as JSON. utoipa 5.5 writes a response link's `operationId`, `operationRef`
/// and `requestBody` under their Rust names (`operation_id`, ...), which OpenAPI tools do not
/// read; they are renamed here.
pub fn to_json(doc: &utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut value = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    let operations = value.get_mut("paths").and_then(|p| p.as_object_mut()).into_iter().flat_map(|p| p.values_mut());
    let responses = operations
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|r| r.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(|l| l.as_object_mut()) else { continue };
        for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
            for (from, to) in [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")] {
                if let Some(v) = link.remove(from) {
                    link.insert(to.to_string(), v);
                }
            }
        }
    }
    value
}

/// The serialized document, built once when the router is.
#[derive(Clone)]
pub struct OpenApiJson(pub Arc<str>);

/// This document.
#[utoipa::path(
    operation_id = "openapi_document",
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
pub async fn document(Extension(doc): Extension<OpenApiJson>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0.to_string())
}
