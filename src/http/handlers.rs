//! Handlers: parse into domain values, call the hub, render. Nothing here knows which
//! storage backend is configured.

use super::auth::ClientCaller;
use super::dto::{
    DeregisteredDto, HealthDto, HubStatusDto, MatchDto, MinerDto, MinerListDto, OfferDto,
    OutcomeDto, RegisteredDto, StatusDto,
};
use super::error::ApiError;
use super::extract::{AddressPath, ApiJson, Bearer};
use super::AppState;
use crate::domain::{Address, Capabilities, Endpoint, MinerStatus, Resources};
use crate::hub::views::MinerFilter;
use crate::hub::{now_ms, MatchRequest, OutcomeReport, Registration};
use crate::registry::MinerView;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct RegisterBody {
    address: String,
    endpoint: String,
    capabilities: Capabilities,
    #[serde(default)]
    stake: u64,
    /// `personal_sign` by the address's key over its latest challenge (optional unless
    /// `auth.miner_identity = "signature"`).
    #[serde(default)]
    signature: Option<String>,
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
    /// Optional figures, shown and not scored.
    #[serde(default)]
    memory_used_mb: Option<u64>,
    #[serde(default)]
    memory_total_mb: Option<u64>,
    #[serde(default)]
    network_latency_ms: Option<f64>,
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

impl MatchBody {
    /// The hub's request (a slot is reserved unless `"reserve": false`).
    pub(super) fn request(self) -> MatchRequest {
        MatchRequest {
            model: self.model,
            job_type: self.job_type,
            min_gpu_memory: self.requirements.min_gpu_memory,
            max_latency: self.requirements.max_latency,
            limit: self.limit,
            exclude: self.exclude,
            reserve: self.reserve.unwrap_or(true),
        }
    }
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

/// Renders one miner at this instant.
fn render<'a>(
    state: &AppState,
    view: &'a MinerView,
    cfg: &'a crate::config::Config,
) -> MinerDto<'a> {
    let now = now_ms();
    MinerDto::new(
        view,
        state.hub.is_online(view, now),
        view.cooldown_until > now,
        cfg,
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
        profile: None,
    };
    let signature = body
        .signature
        .as_deref()
        .map(super::identity::parse_signature)
        .transpose()?;
    let r = state
        .hub
        .register_signed(reg, token.as_deref(), signature.as_ref())
        .await?;
    // A proven owner may get a token without creating the record (a reissue).
    let created = r.created;
    let cfg = state.hub.config();
    let body = RegisteredDto {
        address: r.view.miner.address,
        miner: render(&state, &r.view, &cfg),
        status: if created { "registered" } else { "updated" },
        token_note: r.token.is_some().then_some(
            "shown once: send it as `Authorization: Bearer <token>` to change this miner",
        ),
        token: r.token,
    };
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(body)).into_response())
}

pub async fn update_status(
    State(state): State<AppState>,
    AddressPath(address): AddressPath,
    Bearer(token): Bearer,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Response, ApiError> {
    status_update(&state, address, token.as_deref(), body).await
}

/// A status update once its request is read (the router's handler and `http::fast` share it).
pub(super) async fn status_update(
    state: &AppState,
    address: Address,
    token: Option<&str>,
    body: StatusBody,
) -> Result<Response, ApiError> {
    let status = MinerStatus {
        available: body.available,
        current_load: body.current_load,
        gpu_utilization: body.gpu_utilization,
        temperature: body.temperature,
        reported_at: 0,
        resources: Resources {
            memory_used_mb: body.memory_used_mb,
            memory_total_mb: body.memory_total_mb,
            network_latency_ms: body.network_latency_ms,
        },
    };
    let s = state.hub.update_status(&address, token, status).await?;
    Ok(Json(StatusDto { address, status: s }).into_response())
}

pub async fn get_miner(
    State(state): State<AppState>,
    AddressPath(address): AddressPath,
) -> Result<Response, ApiError> {
    let view = state.hub.get(&address).await?;
    Ok(Json(render(&state, &view, &state.hub.config())).into_response())
}

pub async fn delete_miner(
    State(state): State<AppState>,
    AddressPath(address): AddressPath,
    Bearer(token): Bearer,
) -> Result<Response, ApiError> {
    // The admin may deregister any miner; anyone else needs the miner's own token.
    let admin = token
        .as_deref()
        .and_then(|t| state.hub.keys().caller(t))
        .is_some_and(|c| c.role() == crate::auth::Role::Admin);
    if admin {
        state.hub.remove_miner(&address).await?;
    } else {
        state.hub.deregister(&address, token.as_deref()).await?;
    }
    Ok(Json(DeregisteredDto {
        address,
        status: "deregistered",
    })
    .into_response())
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
    let hub = &state.hub;
    let page = hub.list_miners(&MinerFilter {
        model: q.model,
        available: q.available,
        after,
        limit,
    });
    let now = now_ms();
    let cfg = hub.config();
    let body = MinerListDto::new(&page, |v| hub.is_online(v, now), now, &cfg);
    Ok(Json(body).into_response())
}

pub async fn match_job(
    State(state): State<AppState>,
    ClientCaller(caller): ClientCaller,
    ApiJson(body): ApiJson<MatchBody>,
) -> Result<Response, ApiError> {
    match_for(&state, caller, body).await
}

/// A match once its request is read and its caller known (the router's handler and
/// `http::fast` share it).
pub(super) async fn match_for(
    state: &AppState,
    caller: Option<crate::auth::Caller>,
    body: MatchBody,
) -> Result<Response, ApiError> {
    let out = state
        .hub
        .match_job_for(body.request(), caller.as_ref())
        .await?;
    let miners: Vec<OfferDto<'_>> = out
        .miners
        .iter()
        .map(|m| OfferDto {
            address: m.address,
            endpoint: m.endpoint(),
            score: m.score,
            estimated_time: m.estimated_time.round() as u64,
        })
        .collect();
    Ok(Json(MatchDto {
        match_id: out.match_id,
        miners,
        reserved: out.reserved,
        panic: out.panic,
    })
    .into_response())
}

pub async fn report_outcome(
    State(state): State<AppState>,
    ClientCaller(caller): ClientCaller,
    ApiJson(body): ApiJson<OutcomeBody>,
) -> Result<Response, ApiError> {
    let r = state
        .hub
        .report_outcome_for(
            OutcomeReport {
                match_id: body.match_id,
                address: body.address,
                success: body.success,
                latency_ms: body.latency_ms,
                error: body.error,
            },
            caller.as_ref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(OutcomeDto::new(&r, now_ms()))).into_response())
}

pub async fn health(State(state): State<AppState>) -> Response {
    let storage = state.hub.storage_health().await;
    let (body, ok) = HealthDto::new(&storage, state.hub.miners_online());
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

pub async fn status(State(state): State<AppState>) -> Response {
    let status = state.hub.status().await;
    Json(HubStatusDto::new(&status, &state.hub.tuning())).into_response()
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
