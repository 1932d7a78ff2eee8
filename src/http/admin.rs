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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    name: Option<String>,
    /// `"client"` (the default: the least a key can do) or `"admin"`.
    role: Option<String>,
}

/// A key as the API shows it: everything but the secret, which only creation answers.
#[derive(Serialize)]
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
#[derive(Serialize)]
pub struct CreatedKeyDto {
    pub id: String,
    /// The secret: shown here once, stored nowhere (only its SHA-256 is).
    pub key: String,
    pub name: String,
    pub role: Role,
    pub created_at: u64,
}

#[derive(Serialize)]
pub struct KeyListDto {
    pub keys: Vec<KeyDto>,
}

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

#[derive(Deserialize)]
pub struct ReplayBody {
    /// The candidate configuration, as the text of a poolhub.toml.
    config: String,
    /// How many of the best miners the overlap is taken over (default 10).
    top: Option<usize>,
}

/// `POST /api/v1/admin/replay`: the stored outcome history scored again under a candidate
/// configuration, against the running one. Read-only.
pub async fn replay(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Response, ApiError> {
    let candidate = crate::hub::candidate_from_toml(&body.config)?;
    let report = state.hub.replay(&candidate, body.top.unwrap_or(10)).await?;
    Ok(Json(report).into_response())
}
