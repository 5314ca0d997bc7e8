//! `/api/applications`: the groups of devices whose events share an MQTT topic prefix.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use loraflow_network_server::storage::Application;

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiJson, QueryMap};
use super::openapi::{ReadErrors, WriteErrors};
use super::text;
use super::{ApiState, ListResponse};

#[derive(Debug, Deserialize, ToSchema)]
// Read-only fields echoed back from a GET are accepted and ignored.
#[allow(dead_code)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationBody {
    /// Required: 1-100 bytes of UTF-8 on one line, not blank.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    name: Option<String>,
    /// At most 10,000 bytes of UTF-8; of the control characters only tab, line feed and carriage return.
    #[schema(max_length = 10000, pattern = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f]*$")]
    #[serde(default)]
    description: String,
    #[serde(default)]
    #[schema(ignore)]
    id: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[schema(ignore)]
    created_at: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[schema(ignore)]
    updated_at: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationJson {
    id: Uuid,
    name: String,
    description: String,
    #[serde(serialize_with = "super::time_format::utc")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::time_format::utc")]
    updated_at: DateTime<Utc>,
}

impl From<Application> for ApplicationJson {
    fn from(a: Application) -> Self {
        ApplicationJson { id: a.id, name: a.name, description: a.description, created_at: a.created_at, updated_at: a.updated_at }
    }
}

pub fn parse_uuid(field: &str, s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| ApiError::field(field, format!("expected a UUID, got {s:?}")))
}

pub use super::text::required_name;

#[utoipa::path(
    operation_id = "applications_create",
    summary = "Create an application",
    post,
    path = "/applications",
    tag = "applications",
    request_body = ApplicationBody,
    responses(
        (status = 201, body = ApplicationJson, links(
            ("applications_get" = (operation_id = "applications_get", parameters(("id" = "$response.body#/id")))),
            ("applications_update" = (operation_id = "applications_update", parameters(("id" = "$response.body#/id")))),
            ("applications_delete" = (operation_id = "applications_delete", parameters(("id" = "$response.body#/id"))))
        )),
        WriteErrors
    )
)]
pub async fn create(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<ApplicationBody>,
) -> Result<(StatusCode, Json<ApplicationJson>), ApiError> {
    let name = required_name(body.name)?;
    text::description(&body.description)?;
    let now = Utc::now();
    let app = Application { id: Uuid::new_v4(), name, description: body.description, created_at: now, updated_at: now };
    state.network.create_application(&app).await?;
    Ok((StatusCode::CREATED, Json(app.into())))
}

#[utoipa::path(
    operation_id = "applications_get",
    summary = "Get an application",
    get,
    path = "/applications/{id}",
    tag = "applications",
    params(("id" = uuid::Uuid, Path, description = "Application id")),
    responses((status = 200, body = ApplicationJson), ReadErrors)
)]
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<ApplicationJson>, ApiError> {
    let app = state.storage.applications.get(parse_uuid("id", &id)?).await?;
    Ok(Json(app.into()))
}

#[utoipa::path(
    operation_id = "applications_list",
    summary = "List the applications",
    get,
    path = "/applications",
    tag = "applications",
    params(
        ("limit" = Option<u32>, Query, description = "Page size (default 100)", minimum = 0, maximum = 1000),
        ("offset" = Option<u64>, Query, description = "Rows to skip", maximum = 4294967295.0),
    ),
    responses((status = 200, body = ListResponse<ApplicationJson>), ReadErrors)
)]
pub async fn list(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    q: QueryMap,
) -> Result<Json<ListResponse<ApplicationJson>>, ApiError> {
    let p = q.paging()?;
    // A key limited to one application lists that one.
    if let Some(own) = principal.application_id {
        let result: Vec<ApplicationJson> = state.storage.applications.get(own).await.map(|a| vec![a.into()]).or_else(|e| match e {
            loraflow_network_server::storage::StorageError::NotFound => Ok(Vec::new()),
            e => Err(e),
        })?;
        let total_count = result.len() as u64;
        let result = result.into_iter().skip(p.offset as usize).take(p.limit as usize).collect();
        return Ok(Json(ListResponse { total_count, result }));
    }
    let page = state.storage.applications.list(p.limit, p.offset).await?;
    Ok(Json(ListResponse { total_count: page.total_count, result: page.result.into_iter().map(Into::into).collect() }))
}

#[utoipa::path(
    operation_id = "applications_update",
    summary = "Replace an application",
    put,
    path = "/applications/{id}",
    tag = "applications",
    params(("id" = uuid::Uuid, Path, description = "Application id")),
    request_body = ApplicationBody,
    responses((status = 200, body = ApplicationJson), WriteErrors)
)]
pub async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ApplicationBody>,
) -> Result<Json<ApplicationJson>, ApiError> {
    let id = parse_uuid("id", &id)?;
    let name = required_name(body.name)?;
    text::description(&body.description)?;
    let mut app = state.storage.applications.get(id).await?;
    app.name = name;
    app.description = body.description;
    app.updated_at = Utc::now();
    state.network.update_application(&app).await?;
    Ok(Json(app.into()))
}

#[utoipa::path(
    operation_id = "applications_delete",
    summary = "Delete an application with its devices",
    delete,
    path = "/applications/{id}",
    tag = "applications",
    params(("id" = uuid::Uuid, Path, description = "Application id")),
    responses((status = 204, description = "Deleted with its devices"), WriteErrors)
)]
pub async fn delete(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = parse_uuid("id", &id)?;
    // The delete cascades to the devices and their sessions; the network server forgets
    // their cached sessions with it.
    state.network.delete_application(id).await?;
    state.auth.application_deleted(id);
    Ok(StatusCode::NO_CONTENT)
}
