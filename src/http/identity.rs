//! The miner identity routes: challenges to sign, and a new token for a lost one. The
//! signed registration itself goes through `handlers::register`.

use super::error::ApiError;
use super::extract::{AddressPath, ApiJson};
use super::AppState;
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
