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

#[derive(Deserialize, Default)]
pub struct ExplainRequirements {
    min_gpu_memory: Option<u64>,
    max_latency: Option<f64>,
}

#[derive(Deserialize)]
pub struct ExplainBody {
    model: String,
    job_type: Option<String>,
    #[serde(default)]
    requirements: ExplainRequirements,
    limit: Option<usize>,
    #[serde(default)]
    exclude: Vec<Address>,
    /// Explain this miner only.
    address: Option<Address>,
}

#[derive(Serialize)]
struct OfferedDto {
    address: Address,
    rank: usize,
    score: f64,
}

#[derive(Serialize)]
struct MinerReasonDto {
    address: Address,
    #[serde(flatten)]
    reason: Reason,
}

#[derive(Serialize)]
struct ExplanationDto {
    miners: Vec<MinerReasonDto>,
    offered: Vec<OfferedDto>,
    panic: bool,
    truncated: bool,
}

pub async fn explain(
    State(state): State<AppState>,
    ClientCaller(_caller): ClientCaller,
    ApiJson(body): ApiJson<ExplainBody>,
) -> Result<Response, ApiError> {
    let req = MatchRequest {
        model: body.model,
        job_type: body.job_type,
        min_gpu_memory: body.requirements.min_gpu_memory,
        max_latency: body.requirements.max_latency,
        limit: body.limit,
        exclude: body.exclude,
        reserve: false,
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
