//! `/api/api-keys` (admin keys only, see `access`): keys for people and programs, optionally
//! limited to one application and to reading. The token is answered once, at creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use loraflow_network_server::storage::{ApiKey, StorageError};

use super::applications::{parse_uuid, required_name};
use super::error::ApiError;
use super::extract::ApiJson;
use super::openapi::{ReadErrors, WriteErrors};
use super::{ApiState, ListResponse};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyBody {
    /// Required: 1-100 bytes of UTF-8 on one line, not blank.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    name: Option<String>,
    #[schema(value_type = Option<uuid::Uuid>)]
    application_id: Option<String>,
    #[serde(default)]
    read_only: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyJson {
    id: Uuid,
    name: String,
    application_id: Option<Uuid>,
    read_only: bool,
    /// The admin token loraflow generated on first start.
    generated: bool,
    created_at: DateTime<Utc>,
}

impl From<ApiKey> for ApiKeyJson {
    fn from(k: ApiKey) -> Self {
        ApiKeyJson {
            id: k.id,
            name: k.name,
            application_id: k.application_id,
            read_only: k.read_only,
            generated: k.generated,
            created_at: k.created_at,
        }
    }
}

/// A new key with its token, the only time the token is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedJson {
    #[serde(flatten)]
    key: ApiKeyJson,
    token: String,
}

#[utoipa::path(
    operation_id = "api_keys_create",
    summary = "Create an API key (admin only); the token is answered only here",
    post,
    path = "/api-keys",
    tag = "api-keys",
    request_body = ApiKeyBody,
    responses(
        (status = 201, description = "The key with its token, shown only here", body = CreatedJson, links(
            ("api_keys_delete" = (operation_id = "api_keys_delete", parameters(("id" = "$response.body#/id"))))
        )),
        WriteErrors
    )
)]
pub async fn create(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<ApiKeyBody>,
) -> Result<(StatusCode, Json<CreatedJson>), ApiError> {
    let name = required_name(body.name)?;
    let application_id = body.application_id.as_deref().map(|s| parse_uuid("applicationId", s)).transpose()?;
    if let Some(id) = application_id {
        match state.storage.applications.get(id).await {
            Err(StorageError::NotFound) => return Err(ApiError::field("applicationId", format!("no application {id}"))),
            other => other?,
        };
    }
    let (key, token) = state.auth.create(name, application_id, body.read_only).await.map_err(|e| match e {
        // Deleted between the check and the insert.
        StorageError::Conflict(m) => ApiError::BadRequest(m),
        other => other.into(),
    })?;
    Ok((StatusCode::CREATED, Json(CreatedJson { key: key.into(), token })))
}

#[utoipa::path(
    operation_id = "api_keys_list",
    summary = "List the API keys, without their tokens (admin only)",
    get,
    path = "/api-keys",
    tag = "api-keys",
    responses((status = 200, body = ListResponse<ApiKeyJson>), ReadErrors)
)]
pub async fn list(State(state): State<ApiState>) -> Result<Json<ListResponse<ApiKeyJson>>, ApiError> {
    let keys = state.auth.list().await?;
    Ok(Json(ListResponse { total_count: keys.len() as u64, result: keys.into_iter().map(Into::into).collect() }))
}

#[utoipa::path(
    operation_id = "api_keys_delete",
    summary = "Revoke an API key (admin only)",
    delete,
    path = "/api-keys/{id}",
    tag = "api-keys",
    params(("id" = uuid::Uuid, Path, description = "API key id")),
    responses((status = 204, description = "Revoked"), WriteErrors)
)]
pub async fn delete(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = parse_uuid("id", &id)?;
    match state.auth.revoke(id).await {
        Err(StorageError::NotFound) => Err(ApiError::NotFound(format!("API key {id} not found"))),
        other => other.map(|()| StatusCode::NO_CONTENT).map_err(Into::into),
    }
}
