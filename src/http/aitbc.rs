//! AITBC's pool-hub routes under `/v1` (`compat.aitbc`), as AITBC's miners, CLI and
//! coordinator call them: the bodies they send and the answers they read.
//!
//! The mapping into poolhub's model (documented in the README, "Switching from AITBC's pool
//! hub"): `addr` with `proto` → endpoint; `gpu_vram_gb × 1024` → GPU memory (MiB);
//! `max_parallel` → concurrency; `capabilities` → job types; `status == "active"` →
//! available; `current_jobs` → load; `gpu_utilization / 100`. The other fields are kept in
//! the miner's profile or its status and shown by poolhub's own API.
//!
//! Unknown fields are ignored (AITBC's clients send more than these routes read); known
//! fields are checked, and a bad one gets 400 naming it.

use super::auth::ClientCaller;
use super::dto::MinerDto;
use super::error::ApiError;
use super::extract::ApiJson;
use super::AppState;
use crate::domain::aitbc::{Requirements, MAX_TOP_K};
use crate::domain::{Capabilities, Endpoint, Invalid, MinerStatus, Profile, Resources};
use crate::hub::{now_ms, NamedRegistration};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A number or a string: AITBC writes prices as decimal strings, other clients as numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum Decimal {
    Text(String),
    Number(serde_json::Number),
}

/// A tag's value: text, or a number or boolean kept as its text.
#[derive(Deserialize)]
#[serde(untagged)]
enum TagValue {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl TagValue {
    fn into_text(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Number(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

fn default_proto() -> String {
    "http".into()
}

fn one() -> u32 {
    1
}

/// `POST /v1/miners/register`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = AitbcRegisterBody)]
pub struct RegisterBody {
    /// The miner's name: a name that does not start with 0x, without '/', not "register".
    #[schema(
        max_length = 128,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f/0]([^\x00-\x1f\x7f-\x9f/]*[^\s\x00-\x1f\x7f-\x9f/])?$"
    )]
    miner_id: String,
    /// The miner's secret (16 to 512 characters, no whitespace or control characters): its
    /// bearer for heartbeats.
    #[schema(
        min_length = 16,
        max_length = 512,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$"
    )]
    api_key: String,
    /// `http://host:port`, or `host:port` completed by `proto`.
    #[schema(value_type = Endpoint)]
    addr: String,
    #[serde(default = "default_proto")]
    #[schema(pattern = "^https?$", default = "http")]
    proto: String,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 16384)]
    gpu_vram_gb: f64,
    #[serde(default)]
    #[schema(value_type = Option<super::openapi::Name>)]
    gpu_name: Option<String>,
    #[serde(default)]
    #[schema(maximum = 1000000)]
    cpu_cores: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1048576)]
    ram_gb: Option<f64>,
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 100000, default = 1)]
    max_parallel: u32,
    /// A non-negative decimal, as a string ("0.01") or a number.
    #[serde(default)]
    #[schema(value_type = Option<super::openapi::Price>)]
    base_price: Option<Decimal>,
    /// Text, number or boolean values (kept as text); at most 64.
    #[serde(default)]
    #[schema(value_type = super::openapi::Tags)]
    tags: BTreeMap<String, TagValue>,
    /// The job types it serves (default "inference").
    #[serde(default)]
    #[schema(value_type = Vec<super::openapi::Name>, max_items = 256)]
    capabilities: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Option<super::openapi::Name>)]
    region: Option<String>,
}

/// `addr` as AITBC sends it (`http://host:8101`), or a bare `host:port` completed by `proto`.
fn endpoint(addr: &str, proto: &str) -> Result<Endpoint, Invalid> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("{proto}://{addr}")
    };
    let e = Endpoint::try_from(url).map_err(|e| Invalid::new("addr", e.message))?;
    if !e.as_str().starts_with(&format!("{proto}://")) {
        return Err(Invalid::new("addr", "its scheme differs from proto"));
    }
    Ok(e)
}

/// `gpu_vram_gb` in MiB: 0 for a CPU miner.
fn gpu_memory(gb: f64) -> Result<u64, Invalid> {
    if !gb.is_finite() || !(0.0..=16_384.0).contains(&gb) {
        return Err(Invalid::new(
            "gpu_vram_gb",
            "must be a number between 0 and 16384",
        ));
    }
    Ok((gb * 1024.0).round() as u64)
}

impl RegisterBody {
    fn into_registration(self) -> Result<NamedRegistration, Invalid> {
        if !matches!(self.proto.as_str(), "http" | "https") {
            return Err(Invalid::new("proto", "must be \"http\" or \"https\""));
        }
        let endpoint = endpoint(&self.addr, &self.proto)?;
        let job_types = if self.capabilities.is_empty() {
            vec![crate::domain::miner::DEFAULT_JOB_TYPE.to_string()]
        } else {
            self.capabilities
        };
        let capabilities = Capabilities {
            models: Vec::new(),
            gpu_memory: gpu_memory(self.gpu_vram_gb)?,
            max_concurrent_jobs: self.max_parallel,
            job_types,
        }
        .validated_named()
        .map_err(|e| match e.field.as_str() {
            "capabilities.max_concurrent_jobs" => Invalid::new("max_parallel", e.message),
            "capabilities.job_types" => Invalid::new("capabilities", e.message),
            _ => e,
        })?;
        let base_price = self.base_price.map(|p| match p {
            Decimal::Text(s) => s,
            Decimal::Number(n) => n.to_string(),
        });
        Ok(NamedRegistration {
            api_key: self.api_key,
            endpoint,
            capabilities,
            profile: Profile {
                miner_id: self.miner_id,
                proto: self.proto,
                gpu_name: self.gpu_name,
                cpu_cores: self.cpu_cores,
                ram_gb: self.ram_gb,
                base_price,
                tags: self
                    .tags
                    .into_iter()
                    .map(|(k, v)| (k, v.into_text()))
                    .collect(),
                region: self.region,
            },
        })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AitbcRegisteredDto)]
struct RegisteredDto<'a> {
    status: &'static str,
    miner_id: &'a str,
    address: crate::domain::Address,
    miner: MinerDto<'a>,
}

#[utoipa::path(post, path = "/v1/miners/register", tag = "aitbc", operation_id = "aitbc_register",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered", body = RegisteredDto),
        (status = 200, description = "Updated (same api_key)", body = RegisteredDto),
        (status = 403, description = "Another api_key holds this miner_id, or registration by name is off", body = super::error::ErrorBody),
        (status = 409, description = "Another miner already has this api_key", body = super::error::ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let reg = body.into_registration()?;
    let r = state.hub.register_named(reg).await?;
    let now = now_ms();
    let view = &r.view;
    let cfg = state.hub.config();
    let miner_id = view
        .miner
        .profile
        .as_ref()
        .map_or("", |p| p.miner_id.as_str());
    let body = RegisteredDto {
        status: if r.created { "registered" } else { "updated" },
        miner_id,
        address: view.miner.address,
        miner: MinerDto::new(
            view,
            state.hub.is_online(view, now),
            view.cooldown_until > now,
            &cfg,
        ),
    };
    let code = if r.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(body)).into_response())
}

fn active() -> String {
    "active".into()
}

/// `POST /v1/miners/heartbeat`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct HeartbeatBody {
    /// "active" means available; anything else (1 to 64 characters) means not.
    #[serde(default = "active")]
    #[schema(
        min_length = 1,
        max_length = 16,
        pattern = "^[ -~]+$",
        default = "active"
    )]
    status: String,
    #[serde(default)]
    #[schema(maximum = 100000)]
    current_jobs: u32,
    /// A percentage.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    gpu_utilization: f64,
    /// MiB.
    #[serde(default)]
    #[schema(maximum = 16777216)]
    memory_used: Option<u64>,
    /// MiB.
    #[serde(default)]
    #[schema(maximum = 16777216)]
    memory_total: Option<u64>,
    /// Negative: not measured.
    #[serde(default)]
    #[schema(maximum = 3600000)]
    network_latency_ms: Option<f64>,
}

impl HeartbeatBody {
    fn into_status(self) -> Result<MinerStatus, Invalid> {
        if self.status.is_empty() || self.status.len() > 64 {
            return Err(Invalid::new("status", "must be 1 to 64 characters"));
        }
        let u = self.gpu_utilization;
        if !u.is_finite() || !(0.0..=100.0).contains(&u) {
            return Err(Invalid::new(
                "gpu_utilization",
                "must be a percentage between 0 and 100",
            ));
        }
        Ok(MinerStatus {
            available: self.status == "active",
            current_load: self.current_jobs,
            gpu_utilization: u / 100.0,
            temperature: None,
            reported_at: 0,
            resources: Resources {
                memory_used_mb: self.memory_used,
                memory_total_mb: self.memory_total,
                network_latency_ms: self.network_latency_ms.filter(|l| *l >= 0.0),
            },
        })
    }
}

/// The miner's key: `Authorization: Bearer <api_key>`, or `X-Api-Key` as AITBC's own
/// services send it.
pub fn miner_key(headers: &HeaderMap) -> Option<&str> {
    super::extract::bearer(headers).or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
    })
}

#[derive(Serialize, utoipa::ToSchema)]
struct HeartbeatDto<'a> {
    status: &'static str,
    miner_id: &'a str,
    available: bool,
    received_at: u64,
}

#[utoipa::path(post, path = "/v1/miners/heartbeat", tag = "aitbc", operation_id = "aitbc_heartbeat",
    request_body = HeartbeatBody,
    security(("aitbc_api_key" = []), ("aitbc_api_key_header" = [])),
    responses(
        (status = 200, description = "Recorded", body = HeartbeatDto),
        (status = 401, description = "No key, or no miner has this key", body = super::error::ErrorBody),
    ))]
pub async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Response, ApiError> {
    let Some(key) = miner_key(&headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a heartbeat needs the miner's key: `Authorization: Bearer <api_key>`",
        ));
    };
    let status = body.into_status()?;
    let (miner_id, status) = state.hub.heartbeat_by_key(key, status).await?;
    Ok(Json(HeartbeatDto {
        status: "ok",
        miner_id: &miner_id,
        available: status.available,
        received_at: status.reported_at,
    })
    .into_response())
}

/// `POST /v1/match`'s `requirements`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct RequirementsBody {
    #[serde(default)]
    #[schema(minimum = 0, maximum = 16384)]
    min_vram_gb: f64,
    #[serde(default)]
    #[schema(minimum = 0)]
    min_ram_gb: f64,
    /// Job types, any of which will do.
    #[serde(default)]
    #[schema(value_type = Vec<super::openapi::Name>, max_items = 256)]
    capabilities_any: Vec<String>,
}

/// `POST /v1/match`'s `hints`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct HintsBody {
    /// Miners in this region rank first.
    #[serde(default)]
    #[schema(value_type = Option<super::openapi::Name>)]
    region: Option<String>,
}

fn default_top_k() -> i64 {
    1
}

/// `POST /v1/match`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = AitbcMatchBody)]
pub struct MatchBody {
    #[schema(value_type = super::openapi::Name)]
    job_id: String,
    #[serde(default, deserialize_with = "super::extract::object")]
    requirements: RequirementsBody,
    #[serde(default, deserialize_with = "super::extract::object")]
    hints: HintsBody,
    #[serde(default = "default_top_k")]
    #[schema(minimum = 1, maximum = 50, default = 1)]
    top_k: i64,
}

impl MatchBody {
    fn requirements(&self) -> Result<Requirements, Invalid> {
        crate::domain::miner::validate_name("job_id", &self.job_id)?;
        let top_k = usize::try_from(self.top_k)
            .ok()
            .filter(|k| (1..=MAX_TOP_K).contains(k))
            .ok_or_else(|| Invalid::new("top_k", "must be between 1 and 50"))?;
        let r = &self.requirements;
        let min_gpu_memory = gpu_memory(r.min_vram_gb)
            .map_err(|e| Invalid::new("requirements.min_vram_gb", e.message))?;
        if !r.min_ram_gb.is_finite() || r.min_ram_gb < 0.0 {
            return Err(Invalid::new(
                "requirements.min_ram_gb",
                "must be a non-negative number",
            ));
        }
        if r.capabilities_any.len() > crate::domain::miner::MAX_MODELS {
            return Err(Invalid::new(
                "requirements.capabilities_any",
                "must list at most 256 job types",
            ));
        }
        for c in &r.capabilities_any {
            crate::domain::miner::validate_name("requirements.capabilities_any", c)?;
        }
        if let Some(region) = &self.hints.region {
            crate::domain::miner::validate_name("hints.region", region)?;
        }
        Ok(Requirements {
            min_gpu_memory,
            min_ram_gb: r.min_ram_gb,
            capabilities_any: r.capabilities_any.clone(),
            region: self.hints.region.clone(),
            top_k,
        })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct CandidateDto {
    miner_id: String,
    addr: String,
    proto: String,
    score: f64,
    explain: String,
    eta_ms: u64,
    price: Option<f64>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AitbcMatchDto)]
struct MatchDto<'a> {
    job_id: &'a str,
    candidates: Vec<CandidateDto>,
}

#[utoipa::path(post, path = "/v1/match", tag = "aitbc", operation_id = "aitbc_match",
    request_body = MatchBody,
    security(("client_key" = [])),
    responses(
        (status = 200, description = "Candidates, best first", body = MatchDto),
        (status = 401, description = "No client key (auth.clients = \"keys\")", body = super::error::ErrorBody),
        (status = 403, description = "Not a client key", body = super::error::ErrorBody),
    ))]
pub async fn match_job(
    State(state): State<AppState>,
    ClientCaller(_caller): ClientCaller,
    ApiJson(body): ApiJson<MatchBody>,
) -> Result<Response, ApiError> {
    let req = body.requirements()?;
    let ranking = state.hub.match_requirements(&req);
    let candidates = ranking
        .offers
        .iter()
        .map(|o| {
            let m = &o.key.miner;
            let proto = m.profile.as_ref().map_or_else(
                || {
                    m.endpoint
                        .as_str()
                        .split_once("://")
                        .map_or("http", |(s, _)| s)
                        .to_string()
                },
                |p| p.proto.clone(),
            );
            let mut explain = format!(
                "score={:.3} load={}/{} eta_ms={}",
                o.score, o.load, o.max_concurrent, o.eta_ms
            );
            if o.in_region {
                explain.push_str(" region=match");
            }
            if o.cooled_down {
                explain.push_str(" cooled_down(panic)");
            }
            CandidateDto {
                miner_id: m.display_id(),
                addr: m.endpoint.as_str().to_string(),
                proto,
                score: o.score,
                explain,
                eta_ms: o.eta_ms,
                price: m.profile.as_deref().and_then(Profile::price),
            }
        })
        .collect();
    Ok(Json(MatchDto {
        job_id: &body.job_id,
        candidates,
    })
    .into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
struct SlaDto {
    status: &'static str,
    active_violations: usize,
    recent_metrics_count: usize,
    timestamp: String,
}

/// `GET /v1/sla/status`: the verdict of [`crate::domain::aitbc::sla_status`]; the "recent
/// metrics" are the online miners' fresh heartbeats it was judged on.
#[utoipa::path(get, path = "/v1/sla/status", tag = "aitbc", operation_id = "aitbc_sla_status",
    responses(
        (status = 200, description = "The pool's SLA verdict", body = SlaDto),
    ))]
pub async fn sla_status(State(state): State<AppState>) -> Response {
    let sla = state.hub.sla();
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(sla.at);
    Json(SlaDto {
        status: sla.status.as_str(),
        active_violations: sla.violations,
        recent_metrics_count: sla.online,
        timestamp: humantime::format_rfc3339_millis(at).to_string(),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> RegisterBody {
        serde_json::from_value(json).expect("body")
    }

    /// The exact body AITBC's miner sends maps field by field.
    #[test]
    fn aitbc_registration_maps_onto_poolhub_fields() {
        let r = body(serde_json::json!({
            "miner_id": "aitbc-miner-1", "api_key": "k".repeat(20), "addr": "http://host:8101",
            "proto": "http", "gpu_vram_gb": 24.0, "gpu_name": "RTX 4090", "cpu_cores": 16,
            "ram_gb": 64.0, "max_parallel": 2, "base_price": "0.01",
            "tags": {"platform": "linux", "cuda": "12.4"},
            "capabilities": ["inference", "training"], "region": "eu-west"
        }))
        .into_registration()
        .expect("maps");
        assert_eq!(r.endpoint.as_str(), "http://host:8101");
        assert_eq!(r.capabilities.gpu_memory, 24 * 1024);
        assert_eq!(r.capabilities.max_concurrent_jobs, 2);
        assert_eq!(r.capabilities.job_types, ["inference", "training"]);
        assert!(r.capabilities.models.is_empty());
        assert_eq!(r.profile.base_price.as_deref(), Some("0.01"));
        assert_eq!(r.profile.tags["cuda"], "12.4");
        // A CPU miner, a bare host, a numeric price and tag.
        let r = body(serde_json::json!({
            "miner_id": "cpu", "api_key": "k".repeat(20), "addr": "host:8101",
            "gpu_vram_gb": 0.0, "base_price": 0.5, "tags": {"cores": 8}
        }))
        .into_registration()
        .expect("maps");
        assert_eq!(r.endpoint.as_str(), "http://host:8101");
        assert_eq!(r.capabilities.gpu_memory, 0);
        assert_eq!(r.profile.base_price.as_deref(), Some("0.5"));
        assert_eq!(r.profile.tags["cores"], "8");
        // Bad fields are named as AITBC calls them.
        let bad = |j: serde_json::Value| body(j).into_registration().unwrap_err().field;
        let base =
            || serde_json::json!({"miner_id": "m", "api_key": "k".repeat(20), "addr": "http://h"});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base();
            b[k] = v;
            b
        };
        assert_eq!(bad(with("addr", "ftp://h".into())), "addr");
        assert_eq!(bad(with("proto", "grpc".into())), "proto");
        assert_eq!(bad(with("gpu_vram_gb", (-1.0).into())), "gpu_vram_gb");
        assert_eq!(bad(with("max_parallel", 0.into())), "max_parallel");
        assert_eq!(
            bad(with("addr", "https://h".into())),
            "addr",
            "scheme differs from proto"
        );
    }

    #[test]
    fn the_heartbeat_maps_and_checks_the_percentage() {
        let hb: HeartbeatBody = serde_json::from_value(serde_json::json!({
            "status": "active", "current_jobs": 1, "gpu_utilization": 37,
            "memory_used": 1024, "memory_total": 24576, "network_latency_ms": -1.0,
            "last_seen": "2026-11-27T00:00:00Z", "architecture": "ada_lovelace"
        }))
        .expect("unknown fields are ignored");
        let s = hb.into_status().expect("maps");
        assert!(s.available);
        assert_eq!(s.current_load, 1);
        assert!((s.gpu_utilization - 0.37).abs() < 1e-12);
        assert_eq!(s.resources.memory_total_mb, Some(24576));
        assert_eq!(
            s.resources.network_latency_ms, None,
            "-1 means not measured"
        );
        let busy: HeartbeatBody =
            serde_json::from_value(serde_json::json!({"status": "busy"})).expect("body");
        assert!(!busy.into_status().expect("maps").available);
        let over: HeartbeatBody =
            serde_json::from_value(serde_json::json!({"gpu_utilization": 130})).expect("body");
        assert_eq!(over.into_status().unwrap_err().field, "gpu_utilization");
    }

    #[test]
    fn match_requests_are_checked_by_field() {
        let m = |j: serde_json::Value| serde_json::from_value::<MatchBody>(j).expect("body");
        let r = m(serde_json::json!({
            "job_id": "j1", "requirements": {"min_vram_gb": 8, "min_ram_gb": 16, "capabilities_any": ["inference"]},
            "hints": {"region": "eu"}, "top_k": 3
        }))
        .requirements()
        .expect("valid");
        assert_eq!(r.min_gpu_memory, 8192);
        assert_eq!(r.top_k, 3);
        assert_eq!(r.region.as_deref(), Some("eu"));
        for (j, field) in [
            (serde_json::json!({"job_id": "j", "top_k": 0}), "top_k"),
            (serde_json::json!({"job_id": "j", "top_k": 51}), "top_k"),
            (serde_json::json!({"job_id": ""}), "job_id"),
            (
                serde_json::json!({"job_id": "j", "requirements": {"min_vram_gb": -2}}),
                "requirements.min_vram_gb",
            ),
        ] {
            assert_eq!(m(j).requirements().unwrap_err().field, field);
        }
    }
}
