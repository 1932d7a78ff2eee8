//! Handlers: parse into domain values, call the hub, render. Nothing here knows which
//! storage backend is configured.

use super::error::ApiError;
use super::extract::{AddressPath, ApiJson, Bearer};
use super::AppState;
use crate::domain::{Address, Capabilities, Endpoint, MinerStatus};
use crate::hub::{now_ms, MatchRequest, OutcomeReport, Registration};
use crate::registry::MinerView;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Deserialize)]
pub struct RegisterBody {
    address: String,
    endpoint: String,
    capabilities: Capabilities,
    #[serde(default)]
    stake: u64,
}

#[derive(Deserialize)]
pub struct StatusBody {
    available: bool,
    #[serde(default)]
    current_load: u32,
    #[serde(default)]
    gpu_utilization: f64,
    #[serde(default)]
    temperature: Option<f64>,
}

#[derive(Deserialize, Default)]
pub struct Requirements {
    min_gpu_memory: Option<u64>,
    max_latency: Option<f64>,
}

#[derive(Deserialize)]
pub struct MatchBody {
    model: String,
    job_type: Option<String>,
    #[serde(default)]
    requirements: Requirements,
    limit: Option<usize>,
    #[serde(default)]
    exclude: Vec<Address>,
    reserve: Option<bool>,
}

#[derive(Deserialize)]
pub struct OutcomeBody {
    match_id: String,
    address: Address,
    success: bool,
    latency_ms: Option<f64>,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    model: Option<String>,
    available: Option<bool>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct MatchedMiner<'a> {
    address: Address,
    endpoint: &'a str,
    score: f64,
    estimated_time: u64,
}

#[derive(Serialize)]
struct MatchResponse<'a> {
    match_id: String,
    miners: Vec<MatchedMiner<'a>>,
    reserved: bool,
    panic: bool,
}

#[derive(Serialize)]
struct StatusResponse {
    address: Address,
    status: MinerStatus,
}

/// JSON rendering of one miner.
fn miner_json(
    view: &MinerView,
    online: bool,
    cooldown_now: bool,
    params: &crate::config::Config,
) -> Value {
    let m = &view.miner;
    let f = &view.score.factors;
    let st = &view.stats;
    json!({
        "address": m.address,
        "endpoint": m.endpoint,
        "capabilities": m.capabilities,
        "stake": m.stake,
        "registered_at": m.registered_at,
        "updated_at": m.updated_at,
        "online": online,
        "status": view.status,
        "reserved_slots": view.reserved,
        "stats": {
            "jobs_total": st.jobs_total,
            "jobs_succeeded": st.jobs_succeeded,
            "jobs_failed": st.jobs_failed,
            "consecutive_failures": st.consecutive_failures,
            "avg_latency_ms": f.avg_latency_ms,
            "availability_samples": view.availability.total,
            "cooled_down": cooldown_now,
            "cooldown_until": (view.cooldown_until > 0).then_some(view.cooldown_until),
        },
        "score": {
            "value": view.score.value,
            "max": params.scoring.max_score,
            "components": {
                "success_rate": f.success_rate,
                "latency": f.latency,
                "availability": f.availability,
                "reputation": f.reputation,
            },
            "weights": params.weights,
        },
    })
}

fn render(state: &AppState, view: &MinerView) -> Value {
    let now = now_ms();
    miner_json(
        view,
        state.hub.is_online(view, now),
        view.cooldown_until > now,
        state.hub.config(),
    )
}

pub async fn register(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let reg = Registration {
        address: body.address.parse()?,
        endpoint: Endpoint::try_from(body.endpoint)?,
        capabilities: body.capabilities.validated()?,
        stake: body.stake,
    };
    let r = state.hub.register(reg, token.as_deref()).await?;
    let miner = render(&state, &r.view);
    Ok(if let Some(token) = r.token {
        (
            StatusCode::CREATED,
            Json(json!({
                "address": r.view.miner.address,
                "status": "registered",
                "token": token,
                "token_note": "shown once: send it as `Authorization: Bearer <token>` to change this miner",
                "miner": miner,
            })),
        )
            .into_response()
    } else {
        Json(json!({
            "address": r.view.miner.address,
            "status": "updated",
            "miner": miner,
        }))
        .into_response()
    })
}

pub async fn update_status(
    State(state): State<AppState>,
    AddressPath(address): AddressPath,
    Bearer(token): Bearer,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Response, ApiError> {
    let status = MinerStatus {
        available: body.available,
        current_load: body.current_load,
        gpu_utilization: body.gpu_utilization,
        temperature: body.temperature,
        reported_at: 0,
    };
    let s = state
        .hub
        .update_status(&address, token.as_deref(), status)
        .await?;
    Ok(Json(StatusResponse { address, status: s }).into_response())
}

pub async fn get_miner(
    State(state): State<AppState>,
    AddressPath(address): AddressPath,
) -> Result<Response, ApiError> {
    let view = state.hub.get(&address).await?;
    Ok(Json(render(&state, &view)).into_response())
}

pub async fn delete_miner(
    State(state): State<AppState>,
    AddressPath(address): AddressPath,
    Bearer(token): Bearer,
) -> Result<Response, ApiError> {
    state.hub.deregister(&address, token.as_deref()).await?;
    Ok(Json(json!({ "address": address, "status": "deregistered" })).into_response())
}

pub async fn list_miners(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(crate::domain::Invalid::new("limit", "must be between 1 and 500").into());
    }
    let after: Option<Address> = match q.cursor.as_deref() {
        Some(c) => Some(c.parse().map_err(|_| {
            crate::domain::Invalid::new("cursor", "must be the next_cursor of a previous page")
        })?),
        None => None,
    };
    let now = now_ms();
    let hub = &state.hub;
    let views = hub.registry().list(after.as_ref(), limit, |v| {
        q.model.as_deref().is_none_or(|m| v.miner.serves_model(m))
            && q.available.is_none_or(|want| {
                let avail = hub.is_online(v, now) && v.status.is_some_and(|s| s.available);
                avail == want
            })
    });
    let next = (views.len() == limit)
        .then(|| views.last().map(|v| v.miner.address))
        .flatten();
    let miners: Vec<Value> = views.iter().map(|v| render(&state, v)).collect();
    Ok(Json(json!({ "miners": miners, "next_cursor": next })).into_response())
}

pub async fn match_job(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MatchBody>,
) -> Result<Response, ApiError> {
    let req = MatchRequest {
        model: body.model,
        job_type: body.job_type,
        min_gpu_memory: body.requirements.min_gpu_memory,
        max_latency: body.requirements.max_latency,
        limit: body.limit,
        exclude: body.exclude,
        reserve: body.reserve.unwrap_or(true),
    };
    let out = state.hub.match_job(req).await?;
    let miners: Vec<MatchedMiner<'_>> = out
        .miners
        .iter()
        .map(|m| MatchedMiner {
            address: m.address,
            endpoint: &m.endpoint,
            score: m.score,
            estimated_time: m.estimated_time.round() as u64,
        })
        .collect();
    Ok(Json(MatchResponse {
        match_id: out.match_id.to_string(),
        miners,
        reserved: out.reserved,
        panic: out.panic,
    })
    .into_response())
}

pub async fn report_outcome(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OutcomeBody>,
) -> Result<Response, ApiError> {
    let r = state
        .hub
        .report_outcome(OutcomeReport {
            match_id: body.match_id,
            address: body.address,
            success: body.success,
            latency_ms: body.latency_ms,
            error: body.error,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "address": r.address,
            "recorded": true,
            "score": r.score.value,
            "components": {
                "success_rate": r.score.factors.success_rate,
                "latency": r.score.factors.latency,
                "availability": r.score.factors.availability,
                "reputation": r.score.factors.reputation,
            },
            "consecutive_failures": r.stats.consecutive_failures,
            "cooldown_until": (r.cooldown_until > now_ms()).then_some(r.cooldown_until),
        })),
    )
        .into_response())
}

pub async fn health(State(state): State<AppState>) -> Response {
    let backends = state.hub.health().await;
    let ok = backends.iter().all(|b| b.healthy);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({ "status": if ok { "ok" } else { "unavailable" }, "storage": backends })),
    )
        .into_response()
}

pub async fn status(State(state): State<AppState>) -> Response {
    let hub = &state.hub;
    let cfg = hub.config();
    let counts = hub.registry().counts(now_ms(), hub.heartbeat_timeout_ms());
    let backends = hub.health().await;
    let last = hub.last_score_update();
    Json(json!({
        "service": "poolhub",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": hub.uptime().as_secs(),
        "storage": backends,
        "ephemeral": cfg.storage.ephemeral,
        "miners": counts,
        "matches_served": hub.matches_served(),
        "reservations_in_flight": hub.reservations_in_flight(),
        "last_score_update": (last > 0).then_some(last),
        "config": {
            "weights": cfg.weights,
            "thresholds": cfg.thresholds,
            "scoring": cfg.scoring,
            "heartbeat_timeout": cfg.matching.heartbeat_timeout,
            "reservation_ttl": cfg.matching.reservation_ttl,
        },
    }))
    .into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    // Rebuilding one score series per miner takes a while at 100k miners: off the runtime.
    let hub = state.hub.clone();
    let text = tokio::task::spawn_blocking(move || hub.render_metrics())
        .await
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; the API lives under /api/v1",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}
