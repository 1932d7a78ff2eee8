//! The admin API for client keys: create (the secret is answered once), list (never a
//! secret), revoke. Guarded by [`AdminCaller`]: the operator's secret or an admin-role key.

use super::auth::AdminCaller;
use super::error::ApiError;
use super::extract::ApiJson;
use super::AppState;
use crate::auth::{ApiKey, Role};
use crate::domain::Invalid;
use crate::hub::{key_id_string, parse_key_id};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// `POST /api/v1/admin/keys`. Both fields are optional in the type so that a missing one
/// is answered as a 400 naming it, like every other invalid field.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// A label for people and logs: at most 64 characters, not blank, no control characters.
    #[schema(required = true, value_type = String, max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    name: Option<String>,
    /// `"client"` (the default: the least a key can do) or `"admin"`.
    #[schema(value_type = Option<Role>)]
    role: Option<String>,
}

/// A key as the API shows it: everything but the secret, which only creation answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyDto {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Unix ms.
    pub created_at: u64,
}

impl From<&ApiKey> for KeyDto {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: key_id_string(k.id),
            name: k.name.clone(),
            role: k.role,
            created_at: k.created_at,
        }
    }
}

/// The answer to a creation: the key, once, with its record.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKeyDto {
    pub id: String,
    /// The secret: shown here once, stored nowhere (only its SHA-256 is).
    pub key: String,
    pub name: String,
    pub role: Role,
    pub created_at: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyListDto {
    pub keys: Vec<KeyDto>,
}

#[utoipa::path(post, path = "/api/v1/admin/keys", tag = "admin",
    request_body = CreateKeyBody,
    security(("admin_key" = [])),
    responses(
        (status = 201, description = "The key, with its secret shown once", body = CreatedKeyDto),
        (status = 401, description = "No admin key", body = super::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::error::ErrorBody),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .ok_or_else(|| Invalid::new("name", "is required"))?;
    let role = match body.role.as_deref() {
        None => Role::Client,
        Some(r) => r.parse::<Role>().map_err(|m| Invalid::new("role", m))?,
    };
    let created = state.hub.create_key(&name, role).await?;
    let k = &created.key;
    let dto = CreatedKeyDto {
        id: key_id_string(k.id),
        key: created.secret.clone(),
        name: k.name.clone(),
        role: k.role,
        created_at: k.created_at,
    };
    Ok((StatusCode::CREATED, Json(dto)).into_response())
}

#[utoipa::path(get, path = "/api/v1/admin/keys", tag = "admin",
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Every key, without secrets", body = KeyListDto),
        (status = 401, description = "No admin key", body = super::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::error::ErrorBody),
    ))]
pub async fn list_keys(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
) -> Result<Response, ApiError> {
    let keys = state.hub.list_keys().await?;
    Ok(Json(KeyListDto {
        keys: keys.iter().map(KeyDto::from).collect(),
    })
    .into_response())
}

#[utoipa::path(delete, path = "/api/v1/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "The key's id (16 hexadecimal digits)", pattern = "^[0-9a-f]{16}$")),
    security(("admin_key" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No admin key", body = super::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::error::ErrorBody),
        (status = 404, description = "No such key", body = super::error::ErrorBody),
        (status = 409, description = "The key is in use by the caller", body = super::error::ErrorBody),
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_key_id(&id)?;
    state.hub.revoke_key(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/admin/backup`: a consistent copy of the running hub's data, as the body of
/// the answer (`application/octet-stream`, a redb file; see
/// [`crate::store::redb::snapshot`]). The hub keeps serving writes meanwhile; the copy holds
/// every write acknowledged before the request arrived. `poolhub backup --hub URL DEST` calls
/// it. With PostgreSQL the answer is 409 naming `pg_dump`, the tool for that backend.
#[utoipa::path(post, path = "/api/v1/admin/backup", tag = "admin",
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "A consistent copy of the data file (redb)", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("x-poolhub-miners" = u64, description = "Miners in the copy"), ("x-poolhub-outcomes" = u64, description = "Outcomes in the copy"))),
        (status = 401, description = "No admin key", body = super::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::error::ErrorBody),
        (status = 409, description = "The data is in PostgreSQL: use pg_dump", body = super::error::ErrorBody),
    ))]
pub async fn backup(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
) -> Result<Response, ApiError> {
    let copy = state.hub.snapshot().await?;
    let Some((file, miners, outcomes)) = copy else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_not_supported",
            "this hub's data is in PostgreSQL: back it up with pg_dump (README: Backup)",
        ));
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| crate::hub::HubError::from(crate::store::StoreError::unavailable("redb", e)))?
        .len();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
            (axum::http::header::CONTENT_LENGTH, len.to_string()),
            (
                axum::http::HeaderName::from_static("x-poolhub-miners"),
                miners.to_string(),
            ),
            (
                axum::http::HeaderName::from_static("x-poolhub-outcomes"),
                outcomes.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ReplayBody {
    /// The candidate configuration, as the text of a poolhub.toml.
    #[schema(content_media_type = "application/toml")]
    config: String,
    /// How many of the best miners the overlap is taken over (default 10).
    #[schema(minimum = 1, maximum = 10000)]
    top: Option<usize>,
}

/// `POST /api/v1/admin/replay`: the stored outcome history scored again under a candidate
/// configuration, against the running one. Read-only.
#[utoipa::path(post, path = "/api/v1/admin/replay", tag = "admin",
    request_body = ReplayBody,
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "How the rankings would change", body = crate::domain::replay::Report),
        (status = 401, description = "No admin key", body = super::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::error::ErrorBody),
    ))]
pub async fn replay(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Response, ApiError> {
    let candidate = crate::hub::candidate_from_toml(&body.config)?;
    let report = state.hub.replay(&candidate, body.top.unwrap_or(10)).await?;
    Ok(Json(report).into_response())
}
