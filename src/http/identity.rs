//! The miner identity routes: challenges to sign, and a new token for a lost one (the
//! signed registration itself goes through `handlers::register`); and the admin's bans.

use super::auth::AdminCaller;
use super::error::ApiError;
use super::extract::{AddressPath, ApiJson};
use super::AppState;
use crate::domain::identity::Ban;
use crate::domain::identity::RawSignature;
use crate::domain::Address;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// `POST /api/v1/miners/{address}/challenge`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ChallengeDto {
    /// The EIP-4361 text to sign with `personal_sign`, exactly as given.
    pub message: String,
    pub nonce: String,
    /// Unix ms.
    pub expires_at: u64,
}

/// `POST /api/v1/miners/{address}/token`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenDto {
    pub address: Address,
    pub token: String,
    pub token_note: &'static str,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    signature: String,
}

/// A `"signature"` field as sent. A malformed one is answered like any other signature
/// that proves nothing (401 `bad_signature`), with the format in the message.
pub fn parse_signature(s: &str) -> Result<RawSignature, ApiError> {
    s.parse::<RawSignature>().map_err(|e| ApiError {
        field: Some("signature".into()),
        ..ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string())
    })
}

#[utoipa::path(post, path = "/api/v1/miners/{address}/challenge", tag = "identity",
    params(("address" = super::openapi::OwnAddress, Path, description = "The address to prove")),
    responses(
        (status = 200, description = "An EIP-4361 message to sign with personal_sign", body = ChallengeDto),
        (status = 403, description = "The address is banned", body = super::error::ErrorBody),
    ))]
pub async fn challenge(
    State(state): State<AppState>,
    AddressPath(address): AddressPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let c = state.hub.challenge(address, host).await?;
    Ok(Json(ChallengeDto {
        message: c.message(),
        nonce: c.nonce,
        expires_at: c.expires_at,
    })
    .into_response())
}

#[utoipa::path(post, path = "/api/v1/miners/{address}/token", tag = "identity",
    params(("address" = super::openapi::OwnAddress, Path, description = "The miner's address")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "A new token (the old one stops working)", body = TokenDto),
        (status = 401, description = "The signature proves nothing", body = super::error::ErrorBody),
        (status = 403, description = "Banned", body = super::error::ErrorBody),
        (status = 404, description = "No such miner", body = super::error::ErrorBody),
    ))]
pub async fn reissue_token(
    State(state): State<AppState>,
    AddressPath(address): AddressPath,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Response, ApiError> {
    let signature = parse_signature(&body.signature)?;
    let token = state.hub.reissue_token(&address, &signature).await?;
    Ok(Json(TokenDto {
        address,
        token,
        token_note: "shown once: the previous token no longer works",
    })
    .into_response())
}

/// `POST /api/v1/admin/bans`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanBody {
    #[schema(value_type = Address)]
    address: String,
    /// Why, for the operator's records (at most 500 characters).
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// One ban in `GET /api/v1/admin/bans` and the answer to `POST`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BanDto {
    pub address: Address,
    pub reason: Option<String>,
    pub banned_at: u64,
}

impl From<Ban> for BanDto {
    fn from(b: Ban) -> Self {
        Self {
            address: b.address,
            reason: b.reason,
            banned_at: b.banned_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BanListDto {
    pub bans: Vec<BanDto>,
}

#[utoipa::path(post, path = "/api/v1/admin/bans", tag = "admin",
    request_body = BanBody,
    security(("admin_key" = [])),
    responses(
        (status = 201, description = "Banned (its record, if any, is removed)", body = BanDto),
        (status = 401, description = "No admin key", body = super::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::error::ErrorBody),
    ))]
pub async fn create_ban(
    State(state): State<AppState>,
    AdminCaller(_): AdminCaller,
    ApiJson(body): ApiJson<BanBody>,
) -> Result<Response, ApiError> {
    let address: Address = body.address.parse()?;
    let ban = state.hub.ban(address, body.reason).await?;
    Ok((StatusCode::CREATED, Json(BanDto::from(ban))).into_response())
}

#[utoipa::path(get, path = "/api/v1/admin/bans", tag = "admin",
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Every ban", body = BanListDto),
        (status = 401, description = "No admin key", body = super::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::error::ErrorBody),
    ))]
pub async fn list_bans(
    State(state): State<AppState>,
    AdminCaller(_): AdminCaller,
) -> Result<Response, ApiError> {
    let bans = state.hub.bans().await?;
    Ok(Json(BanListDto {
        bans: bans.into_iter().map(BanDto::from).collect(),
    })
    .into_response())
}

#[utoipa::path(delete, path = "/api/v1/admin/bans/{address}", tag = "admin",
    params(("address" = super::openapi::MinerRef, Path, description = "The banned address")),
    security(("admin_key" = [])),
    responses(
        (status = 204, description = "Unbanned"),
        (status = 401, description = "No admin key", body = super::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::error::ErrorBody),
        (status = 404, description = "Not banned", body = super::error::ErrorBody),
    ))]
pub async fn delete_ban(
    State(state): State<AppState>,
    AdminCaller(_): AdminCaller,
    AddressPath(address): AddressPath,
) -> Result<Response, ApiError> {
    state.hub.unban(&address).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
