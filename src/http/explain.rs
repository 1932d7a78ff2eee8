//! `POST /api/v1/match/explain`: "why not my miner?". The body is a match body plus an
//! optional `address`; the answer lists each miner's reason (see
//! [`crate::domain::explain`] for the codes). Same role and rate class as a match; it
//! reserves nothing.

use super::auth::ClientCaller;
use super::error::ApiError;
use super::extract::ApiJson;
use super::AppState;
use crate::domain::explain::Reason;
use crate::domain::Address;
use crate::hub::MatchRequest;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// A match body, plus the miner to explain (all of them when absent).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ExplainBody {
    #[serde(flatten)]
    request: super::handlers::MatchBody,
    /// Explain this miner only.
    address: Option<Address>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct OfferedDto {
    address: Address,
    rank: usize,
    score: f64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MinerReasonDto {
    address: Address,
    #[serde(flatten)]
    reason: Reason,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ExplanationDto {
    miners: Vec<MinerReasonDto>,
    offered: Vec<OfferedDto>,
    panic: bool,
    truncated: bool,
}

#[utoipa::path(post, path = "/api/v1/match/explain", tag = "matching",
    request_body = ExplainBody,
    security(("client_key" = [])),
    responses(
        (status = 200, description = "Each miner's reason; nothing is reserved", body = ExplanationDto),
        (status = 401, description = "No client key (auth.clients = \"keys\")", body = super::error::ErrorBody),
        (status = 403, description = "Not a client key", body = super::error::ErrorBody),
    ))]
pub async fn explain(
    State(state): State<AppState>,
    ClientCaller(_caller): ClientCaller,
    ApiJson(body): ApiJson<ExplainBody>,
) -> Result<Response, ApiError> {
    // Explaining never reserves, whatever the body says.
    let req = MatchRequest {
        reserve: false,
        ..body.request.request()
    };
    let e = state.hub.explain(req, body.address).await?;
    Ok(Json(ExplanationDto {
        offered: e
            .answer
            .offered
            .iter()
            .enumerate()
            .map(|(i, (address, score))| OfferedDto {
                address: *address,
                rank: i + 1,
                score: *score,
            })
            .collect(),
        panic: e.answer.panic,
        miners: e
            .miners
            .into_iter()
            .map(|(address, reason)| MinerReasonDto { address, reason })
            .collect(),
        truncated: e.truncated,
    })
    .into_response())
}
