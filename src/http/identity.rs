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
#[derive(Serialize)]
pub struct ChallengeDto {
    /// The EIP-4361 text to sign with `personal_sign`, exactly as given.
    pub message: String,
    pub nonce: String,
    /// Unix ms.
    pub expires_at: u64,
}

/// `POST /api/v1/miners/{address}/token`.
#[derive(Serialize)]
pub struct TokenDto {
    pub address: Address,
    pub token: String,
    pub token_note: &'static str,
}

#[derive(Deserialize)]
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanBody {
    address: String,
    #[serde(default)]
    reason: Option<String>,
}

/// One ban in `GET /api/v1/admin/bans` and the answer to `POST`.
#[derive(Serialize)]
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

#[derive(Serialize)]
pub struct BanListDto {
    pub bans: Vec<BanDto>,
}

pub async fn create_ban(
    State(state): State<AppState>,
    AdminCaller(_): AdminCaller,
    ApiJson(body): ApiJson<BanBody>,
) -> Result<Response, ApiError> {
    let address: Address = body.address.parse()?;
    let ban = state.hub.ban(address, body.reason).await?;
    Ok((StatusCode::CREATED, Json(BanDto::from(ban))).into_response())
}

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

pub async fn delete_ban(
    State(state): State<AppState>,
    AdminCaller(_): AdminCaller,
    AddressPath(address): AddressPath,
) -> Result<Response, ApiError> {
    state.hub.unban(&address).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
