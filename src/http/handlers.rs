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

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RegisterBody {
    #[schema(value_type = super::openapi::OwnAddress)]
    address: String,
    #[schema(value_type = Endpoint)]
    endpoint: String,
    #[serde(deserialize_with = "super::extract::object")]
    capabilities: Capabilities,
    /// The miner's stake, for the reputation component (at most 2^63 - 1).
    #[serde(default)]
    #[schema(maximum = 9223372036854775807_u64)]
    stake: u64,
    /// `personal_sign` by the address's key over its latest challenge (optional unless
    /// `auth.miner_identity = "signature"`).
    #[serde(default)]
    #[schema(pattern = "^0x[0-9a-fA-F]{130}$")]
    signature: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct StatusBody {
    available: bool,
    /// Jobs running now.
    #[serde(default)]
    #[schema(maximum = 100000)]
    current_load: u32,
    /// Fraction of the GPU in use.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    gpu_utilization: f64,
    /// Degrees Celsius.
    #[serde(default)]
    #[schema(minimum = -60, maximum = 200)]
    temperature: Option<f64>,
    /// Optional figures, shown and not scored.
    #[serde(default)]
    #[schema(maximum = 16777216)]
    memory_used_mb: Option<u64>,
    #[serde(default)]
    #[schema(maximum = 16777216)]
    memory_total_mb: Option<u64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3600000)]
    network_latency_ms: Option<f64>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct Requirements {
    /// MiB.
    #[schema(maximum = 16777216)]
    min_gpu_memory: Option<u64>,
    /// The longest acceptable estimated time, ms.
    #[schema(exclusive_minimum = 0)]
    max_latency: Option<f64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct MatchBody {
    #[schema(value_type = super::openapi::Name, example = "llama3.2")]
    model: String,
    /// Default "inference".
    #[schema(value_type = Option<super::openapi::Name>)]
    job_type: Option<String>,
    #[serde(default, deserialize_with = "super::extract::object")]
    requirements: Requirements,
    /// How many miners to offer (default `matching.default_limit`, at most
    /// `matching.max_limit`).
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    #[serde(default)]
    #[schema(max_items = 1000)]
    exclude: Vec<Address>,
    /// Reserve a slot on each miner offered (default true).
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

#[derive(Deserialize, utoipa::ToSchema)]
pub struct OutcomeBody {
    #[schema(value_type = crate::domain::MatchId)]
    match_id: String,
    address: Address,
    success: bool,
    #[schema(minimum = 0, maximum = 86400000)]
    latency_ms: Option<f64>,
    #[schema(max_length = 1024)]
    error: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only miners serving this model.
    model: Option<String>,
    /// Only miners whose last status says available (true) or not (false).
    available: Option<bool>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<Address>)]
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

#[utoipa::path(post, path = "/api/v1/miners/register", tag = "miners",
    request_body = RegisterBody,
    security((), ("miner_token" = [])),
    responses(
        (status = 201, description = "Registered; the token is shown once", body = RegisteredDto),
        (status = 200, description = "Updated by the miner's own token (or a signature)", body = RegisteredDto),
        (status = 401, description = "A signature that proves nothing, or one is required", body = super::error::ErrorBody),
        (status = 403, description = "Another miner's address (the token does not match), or banned", body = super::error::ErrorBody),
        (status = 409, description = "The address is taken", body = super::error::ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    if i64::try_from(body.stake).is_err() {
        return Err(
            crate::domain::Invalid::new("stake", "must be at most 9223372036854775807").into(),
        );
    }
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

#[utoipa::path(post, path = "/api/v1/miners/{address}/status", tag = "miners",
    params(("address" = super::openapi::MinerRef, Path, description = "An address, or a named miner's miner_id")),
    request_body = StatusBody,
    security(("miner_token" = [])),
    responses(
        (status = 200, description = "The status as stored", body = StatusDto),
        (status = 401, description = "No token", body = super::error::ErrorBody),
        (status = 403, description = "Not this miner's token", body = super::error::ErrorBody),
        (status = 404, description = "No such miner", body = super::error::ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/api/v1/miners/{address}", tag = "miners",
    params(("address" = super::openapi::MinerRef, Path, description = "An address, or a named miner's miner_id")),
    responses(
        (status = 200, description = "The miner, its status and score", body = MinerDto),
        (status = 404, description = "No such miner", body = super::error::ErrorBody),
    ))]
pub async fn get_miner(
    State(state): State<AppState>,
    AddressPath(address): AddressPath,
) -> Result<Response, ApiError> {
    let view = state.hub.get(&address).await?;
    Ok(Json(render(&state, &view, &state.hub.config())).into_response())
}

#[utoipa::path(delete, path = "/api/v1/miners/{address}", tag = "miners",
    params(("address" = super::openapi::MinerRef, Path, description = "An address, or a named miner's miner_id")),
    security(("miner_token" = []), ("admin_key" = [])),
    responses(
        (status = 200, description = "Deregistered", body = DeregisteredDto),
        (status = 401, description = "No token", body = super::error::ErrorBody),
        (status = 403, description = "Not this miner's token", body = super::error::ErrorBody),
        (status = 404, description = "No such miner", body = super::error::ErrorBody),
    ))]
pub async fn delete_miner(
    State(state): State<AppState>,
    AddressPath(address): AddressPath,
    Bearer(token): Bearer,
) -> Result<Response, ApiError> {
    // The admin may deregister any miner; anyone else needs the miner's own token.
    if token.is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "deregistering needs the miner's token (or an admin key): `Authorization: Bearer <token>`",
        ));
    }
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

#[utoipa::path(get, path = "/api/v1/miners", tag = "miners",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of miners, by address", body = MinerListDto),
    ))]
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

#[utoipa::path(post, path = "/api/v1/match", tag = "matching",
    request_body = MatchBody,
    security(("client_key" = [])),
    responses(
        (status = 200, description = "The best miners for the job, best first (possibly none)", body = MatchDto),
        (status = 401, description = "No client key (auth.clients = \"keys\")", body = super::error::ErrorBody),
        (status = 403, description = "Not a client key", body = super::error::ErrorBody),
    ))]
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

#[utoipa::path(post, path = "/api/v1/outcomes", tag = "matching",
    request_body = OutcomeBody,
    security(("client_key" = [])),
    responses(
        (status = 201, description = "Recorded; the miner's new standing", body = OutcomeDto),
        (status = 401, description = "No client key (auth.clients = \"keys\")", body = super::error::ErrorBody),
        (status = 403, description = "Not a client key, or not the key that made the match", body = super::error::ErrorBody),
        (status = 404, description = "No such match (or it is older than matching.outcome_window)", body = super::error::ErrorBody),
        (status = 409, description = "This miner's outcome for this match is already recorded", body = super::error::ErrorBody),
        (status = 422, description = "The match did not offer this miner", body = super::error::ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Every storage backend answers", body = HealthDto),
        (status = 503, description = "A storage backend does not answer", body = HealthDto),
    ))]
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

#[utoipa::path(get, path = "/api/v1/status", tag = "operations",
    responses(
        (status = 200, description = "The hub's counts, settings and storage", body = HubStatusDto),
    ))]
pub async fn status(State(state): State<AppState>) -> Response {
    let status = state.hub.status().await;
    Json(HubStatusDto::new(&status, &state.hub.tuning())).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
    ))]
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
