//! The response bodies, typed: what the API promises, in one place.
//!
//! Field order: these answers used to be built with `json!`, whose objects (without serde_json's
//! `preserve_order`) print their keys in alphabetical order. The fields below are declared in
//! that order, and nested domain types go through [`Sorted`], so every answer stays byte for
//! byte what clients have been receiving. Keep new fields in alphabetical order too.

use crate::config::Config;
use crate::domain::{Address, Capabilities, Endpoint, MinerStatus};
use crate::hub::views::{HubStatus, MinerPage, StorageHealth};
use crate::hub::Standing;
use crate::registry::MinerView;
use serde::{Serialize, Serializer};

/// Serializes a value with its object keys in alphabetical order (as `serde_json::Value`
/// holds them), whatever the order its type declares.
pub struct Sorted<'a, T>(pub &'a T);

impl<T: Serialize> Serialize for Sorted<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::to_value(self.0)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

/// One miner, as `GET /api/v1/miners/{address}` and the lists show it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MinerDto<'a> {
    address: Address,
    capabilities: CapabilitiesDto<'a>,
    #[schema(value_type = Endpoint)]
    endpoint: &'a Endpoint,
    /// The name of a miner registered by name (AITBC's `miner_id`); absent for others.
    #[serde(skip_serializing_if = "Option::is_none")]
    miner_id: Option<&'a str>,
    online: bool,
    /// Registered (or taken over) with a signature by the address's key: an unproven record
    /// may be a squatter's, and is taken over by the first signature.
    proven: bool,
    /// What a miner registered by name declared beyond its capabilities.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<ProfileDto<'a>>,
    registered_at: u64,
    reserved_slots: u32,
    score: ScoreDto<'a>,
    stake: u64,
    stats: StatsDto,
    #[schema(value_type = Option<MinerStatus>)]
    status: Option<Sorted<'a, MinerStatus>>,
    updated_at: u64,
}

/// What a miner can run, as answered. Not the request's schema: a miner registered by name
/// (AITBC) may list no models and 0 MiB (a CPU miner).
#[derive(Serialize, utoipa::ToSchema)]
struct CapabilitiesDto<'a> {
    /// MiB.
    gpu_memory: u64,
    job_types: &'a [String],
    max_concurrent_jobs: u32,
    models: &'a [String],
}

impl<'a> CapabilitiesDto<'a> {
    fn of(c: &'a Capabilities) -> Self {
        Self {
            gpu_memory: c.gpu_memory,
            job_types: &c.job_types,
            max_concurrent_jobs: c.max_concurrent_jobs,
            models: &c.models,
        }
    }
}

/// A named miner's profile, in AITBC's field names.
#[derive(Serialize, utoipa::ToSchema)]
struct ProfileDto<'a> {
    base_price: Option<&'a str>,
    cpu_cores: Option<u32>,
    gpu_name: Option<&'a str>,
    proto: &'a str,
    ram_gb: Option<f64>,
    region: Option<&'a str>,
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    tags: &'a std::collections::BTreeMap<String, String>,
}

impl<'a> ProfileDto<'a> {
    fn of(p: &'a crate::domain::Profile) -> Self {
        Self {
            base_price: p.base_price.as_deref(),
            cpu_cores: p.cpu_cores,
            gpu_name: p.gpu_name.as_deref(),
            proto: &p.proto,
            ram_gb: p.ram_gb,
            region: p.region.as_deref(),
            tags: &p.tags,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct StatsDto {
    availability_samples: f64,
    avg_latency_ms: f64,
    consecutive_failures: u32,
    cooldown_until: Option<u64>,
    cooled_down: bool,
    jobs_failed: u64,
    jobs_succeeded: u64,
    jobs_total: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ScoreDto<'a> {
    components: ComponentsDto,
    max: f64,
    thermal: ThermalDto,
    value: f64,
    #[schema(value_type = crate::domain::scoring::Weights)]
    weights: Sorted<'a, crate::domain::scoring::Weights>,
}

/// How the last reported GPU temperature bears on matching: `factor` multiplies `value` at
/// match time (1 up to `derate_temperature`, falling linearly to 0.5 at `max_temperature`);
/// `too_hot` miners are not matched at all.
#[derive(Serialize, utoipa::ToSchema)]
struct ThermalDto {
    derate_temperature: f64,
    factor: f64,
    max_temperature: f64,
    temperature: Option<f64>,
    too_hot: bool,
}

impl ThermalDto {
    fn of(temperature: Option<f64>, t: &crate::domain::scoring::Thresholds) -> Self {
        use crate::domain::scoring::{thermal_factor, too_hot};
        Self {
            derate_temperature: t.derate_temperature,
            factor: thermal_factor(temperature, t),
            max_temperature: t.max_temperature,
            temperature,
            too_hot: too_hot(temperature, t),
        }
    }
}

/// The four score components.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ComponentsDto {
    availability: f64,
    latency: f64,
    reputation: f64,
    success_rate: f64,
}

impl ComponentsDto {
    fn of(f: &crate::domain::scoring::Factors) -> Self {
        Self {
            availability: f.availability,
            latency: f.latency,
            reputation: f.reputation,
            success_rate: f.success_rate,
        }
    }
}

impl<'a> MinerDto<'a> {
    /// `online` and `cooled_down` are judged by the caller at one instant for a whole page.
    pub fn new(view: &'a MinerView, online: bool, cooled_down: bool, cfg: &'a Config) -> Self {
        let m = &view.miner;
        let f = &view.score.factors;
        let st = &view.stats;
        Self {
            address: m.address,
            capabilities: CapabilitiesDto::of(&m.capabilities),
            endpoint: &m.endpoint,
            miner_id: m.profile.as_ref().map(|p| p.miner_id.as_str()),
            online,
            proven: m.proven,
            profile: m.profile.as_deref().map(ProfileDto::of),
            registered_at: m.registered_at,
            reserved_slots: view.reserved,
            score: ScoreDto {
                components: ComponentsDto::of(f),
                max: cfg.scoring.max_score,
                thermal: ThermalDto::of(
                    view.status.as_ref().and_then(|s| s.temperature),
                    &cfg.thresholds,
                ),
                value: view.score.value,
                weights: Sorted(&cfg.weights),
            },
            stake: m.stake,
            stats: StatsDto {
                availability_samples: view.availability.total,
                avg_latency_ms: f.avg_latency_ms,
                consecutive_failures: st.consecutive_failures,
                cooldown_until: (view.cooldown_until > 0).then_some(view.cooldown_until),
                cooled_down,
                jobs_failed: st.jobs_failed,
                jobs_succeeded: st.jobs_succeeded,
                jobs_total: st.jobs_total,
            },
            status: view.status.as_ref().map(Sorted),
            updated_at: m.updated_at,
        }
    }
}

/// `POST /api/v1/miners/register`: 201 with the token for a new miner, 200 without it for a
/// re-registration.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RegisteredDto<'a> {
    pub address: Address,
    pub miner: MinerDto<'a>,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_note: Option<&'static str>,
}

/// `DELETE /api/v1/miners/{address}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeregisteredDto {
    pub address: Address,
    pub status: &'static str,
}

/// `GET /api/v1/miners`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MinerListDto<'a> {
    pub miners: Vec<MinerDto<'a>>,
    pub next_cursor: Option<Address>,
}

impl<'a> MinerListDto<'a> {
    pub fn new(
        page: &'a MinerPage,
        online: impl Fn(&MinerView) -> bool,
        now: u64,
        cfg: &'a Config,
    ) -> Self {
        Self {
            miners: page
                .miners
                .iter()
                .map(|v| MinerDto::new(v, online(v), v.cooldown_until > now, cfg))
                .collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// `POST /api/v1/miners/{address}/status`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusDto {
    pub address: Address,
    pub status: MinerStatus,
}

/// One miner offered by a match.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OfferDto<'a> {
    pub address: Address,
    pub endpoint: &'a str,
    pub score: f64,
    pub estimated_time: u64,
}

/// `POST /api/v1/match`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MatchDto<'a> {
    pub match_id: crate::domain::MatchId,
    pub miners: Vec<OfferDto<'a>>,
    pub reserved: bool,
    pub panic: bool,
}

/// `POST /api/v1/outcomes`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OutcomeDto {
    address: Address,
    components: ComponentsDto,
    consecutive_failures: u32,
    cooldown_until: Option<u64>,
    recorded: bool,
    score: f64,
}

impl OutcomeDto {
    pub fn new(r: &Standing, now: u64) -> Self {
        Self {
            address: r.address,
            components: ComponentsDto::of(&r.score.factors),
            consecutive_failures: r.stats.consecutive_failures,
            cooldown_until: (r.cooldown_until > now).then_some(r.cooldown_until),
            recorded: true,
            score: r.score.value,
        }
    }
}

/// One backend in `/health` and `/api/v1/status`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BackendDto {
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    healthy: bool,
    role: &'static str,
}

impl BackendDto {
    fn list(storage: &[StorageHealth]) -> Vec<Self> {
        storage
            .iter()
            .map(|h| Self {
                backend: h.backend,
                error: h.reason.clone(),
                healthy: h.healthy,
                role: h.role,
            })
            .collect()
    }
}

/// `GET /health`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthDto {
    /// Miners with a fresh heartbeat (AITBC's `aitbc pool-hub status` reads it).
    miners_online: usize,
    status: &'static str,
    storage: Vec<BackendDto>,
}

impl HealthDto {
    /// The answer, and whether every backend is healthy.
    pub fn new(storage: &[StorageHealth], miners_online: usize) -> (Self, bool) {
        let ok = storage.iter().all(|b| b.healthy);
        (
            Self {
                miners_online,
                status: if ok { "ok" } else { "unavailable" },
                storage: BackendDto::list(storage),
            },
            ok,
        )
    }
}

/// `GET /api/v1/status`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HubStatusDto<'a> {
    config: StatusConfigDto<'a>,
    /// Digest of the configuration in force (changes with every applied reload).
    config_hash: &'a str,
    /// Unix ms when it was loaded (start or reload).
    config_loaded_at: u64,
    /// Settings changed in the file that wait for a restart.
    #[schema(value_type = Vec<String>)]
    config_pending_restart: &'a [String],
    ephemeral: bool,
    last_score_update: Option<u64>,
    matches_served: u64,
    #[schema(value_type = crate::registry::Counts)]
    miners: Sorted<'a, crate::registry::Counts>,
    reservations_in_flight: usize,
    service: &'static str,
    storage: Vec<BackendDto>,
    uptime_seconds: u64,
    version: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
struct StatusConfigDto<'a> {
    heartbeat_timeout: u64,
    reservation_ttl: u64,
    #[schema(value_type = crate::config::ScoringSection)]
    scoring: Sorted<'a, crate::config::ScoringSection>,
    #[schema(value_type = crate::domain::scoring::Thresholds)]
    thresholds: Sorted<'a, crate::domain::scoring::Thresholds>,
    #[schema(value_type = crate::domain::scoring::Weights)]
    weights: Sorted<'a, crate::domain::scoring::Weights>,
}

impl<'a> HubStatusDto<'a> {
    pub fn new(s: &'a HubStatus, cfg: &'a crate::hub::Tuning) -> Self {
        Self {
            config_hash: &cfg.hash,
            config_loaded_at: cfg.loaded_at,
            config_pending_restart: &cfg.pending_restart,
            config: StatusConfigDto {
                heartbeat_timeout: cfg.matching.heartbeat_timeout,
                reservation_ttl: cfg.matching.reservation_ttl,
                scoring: Sorted(&cfg.scoring),
                thresholds: Sorted(&cfg.thresholds),
                weights: Sorted(&cfg.weights),
            },
            ephemeral: cfg.storage.ephemeral,
            last_score_update: s.last_score_update,
            matches_served: s.matches_served,
            miners: Sorted(&s.miners),
            reservations_in_flight: s.reservations_in_flight,
            service: "poolhub",
            storage: BackendDto::list(&s.storage),
            uptime_seconds: s.uptime_seconds,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every typed answer prints exactly the bytes the `json!` version printed: the reference
    //! renderings below are the handlers' code before the answers were typed.
    use super::*;
    use crate::domain::scoring::{self, Availability, MinerStats};
    use crate::domain::{Endpoint, Miner};
    use crate::hub::views::StorageHealth;
    use crate::registry::Registry;
    use serde_json::json;

    fn view(status: Option<MinerStatus>, cooldown: u64) -> MinerView {
        let cfg = Config::default();
        let miner = Miner {
            address: "0xabcdef0123456789abcdef0123456789abcdef01"
                .parse()
                .unwrap(),
            endpoint: Endpoint::try_from("http://miner.example:8080".to_string()).unwrap(),
            capabilities: Capabilities {
                models: vec!["llama3.2".into()],
                gpu_memory: 16384,
                max_concurrent_jobs: 4,
                job_types: vec!["inference".into()],
            },
            stake: 10,
            token_hash: "h".into(),
            registered_at: 1,
            updated_at: 2,
            proven: false,
            profile: None,
        };
        let stats = MinerStats {
            jobs_total: 3,
            jobs_succeeded: 2,
            jobs_failed: 1,
            consecutive_failures: 1,
            ..MinerStats::default()
        };
        let avail = Availability {
            up: 1.0,
            total: 2.5,
            as_of: 5,
        };
        let score = scoring::score(&stats, &avail, 10, 10, &cfg.scoring_params());
        let reg = Registry::new(cfg.thresholds);
        let address = miner.address;
        reg.upsert(miner, stats, avail, score, cooldown);
        let mut v = reg.get(&address).unwrap();
        v.status = status;
        v
    }

    fn old_miner_json(
        view: &MinerView,
        online: bool,
        cooldown_now: bool,
        params: &Config,
    ) -> serde_json::Value {
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
            "proven": m.proven,
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
                // Added with thermal awareness: 60 °C is under the default 80 °C derating.
                "thermal": {
                    "temperature": view.status.and_then(|s| s.temperature),
                    "factor": 1.0,
                    "derate_temperature": 80.0,
                    "max_temperature": 90.0,
                    "too_hot": false,
                },
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

    fn same(new: &impl Serialize, old: &serde_json::Value) {
        let new = serde_json::to_string(new).unwrap();
        let old = serde_json::to_string(old).unwrap();
        assert_eq!(new, old);
    }

    #[test]
    fn miner_answers_are_unchanged() {
        let cfg = Config::default();
        let status = MinerStatus {
            available: true,
            current_load: 1,
            gpu_utilization: 0.5,
            temperature: Some(60.0),
            reported_at: 7,
            resources: Default::default(),
        };
        for v in [view(Some(status), 99), view(None, 0)] {
            for (online, cooled) in [(true, false), (false, true)] {
                let old = old_miner_json(&v, online, cooled, &cfg);
                same(&MinerDto::new(&v, online, cooled, &cfg), &old);
                // Registration, both kinds.
                same(
                    &RegisteredDto {
                        address: v.miner.address,
                        miner: MinerDto::new(&v, online, cooled, &cfg),
                        status: "registered",
                        token: Some("ph_x".into()),
                        token_note: Some("note"),
                    },
                    &json!({ "address": v.miner.address, "status": "registered",
                             "token": "ph_x", "token_note": "note", "miner": old }),
                );
                same(
                    &RegisteredDto {
                        address: v.miner.address,
                        miner: MinerDto::new(&v, online, cooled, &cfg),
                        status: "updated",
                        token: None,
                        token_note: None,
                    },
                    &json!({ "address": v.miner.address, "status": "updated", "miner": old }),
                );
            }
        }
        let page = MinerPage {
            miners: vec![view(None, 0)],
            next_cursor: Some(view(None, 0).miner.address),
        };
        let old = json!({
            "miners": [old_miner_json(&page.miners[0], false, false, &cfg)],
            "next_cursor": page.next_cursor,
        });
        same(&MinerListDto::new(&page, |_| false, 0, &cfg), &old);
        let v = view(None, 0);
        same(
            &DeregisteredDto {
                address: v.miner.address,
                status: "deregistered",
            },
            &json!({ "address": v.miner.address, "status": "deregistered" }),
        );
    }

    #[test]
    fn outcome_health_and_status_answers_are_unchanged() {
        let cfg = Config::default();
        let v = view(None, 50);
        let r = Standing {
            address: v.miner.address,
            stats: v.stats,
            score: v.score,
            cooldown_until: v.cooldown_until,
        };
        for now in [10, 100] {
            let old = json!({
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
                "cooldown_until": (r.cooldown_until > now).then_some(r.cooldown_until),
            });
            same(&OutcomeDto::new(&r, now), &old);
        }
        let storage = vec![
            StorageHealth {
                role: "durable",
                backend: "redb",
                healthy: false,
                reason: Some("redb is unavailable".into()),
            },
            StorageHealth {
                role: "hot",
                backend: "moka",
                healthy: true,
                reason: None,
            },
        ];
        let old_backends = json!([
            { "role": "durable", "backend": "redb", "healthy": false, "error": "redb is unavailable" },
            { "role": "hot", "backend": "moka", "healthy": true },
        ]);
        let (health, ok) = HealthDto::new(&storage, 2);
        assert!(!ok);
        // The old fields unchanged, and `miners_online` added (AITBC's CLI reads it).
        same(
            &health,
            &json!({ "miners_online": 2, "status": "unavailable", "storage": old_backends }),
        );
        let s = HubStatus {
            uptime_seconds: 3,
            storage,
            miners: crate::registry::Counts {
                registered: 4,
                online: 3,
                available: 2,
                cooled_down: 1,
                too_hot: 0,
                violations: 1,
            },
            matches_served: 9,
            reservations_in_flight: 1,
            last_score_update: None,
        };
        let tuning = crate::hub::Tuning::new(cfg.clone(), vec!["server.port".into()]);
        // The same fields, and the configuration's hash, load time and pending keys added.
        let old = json!({
            "config_hash": tuning.hash,
            "config_loaded_at": tuning.loaded_at,
            "config_pending_restart": ["server.port"],
            "service": "poolhub",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": s.uptime_seconds,
            "storage": old_backends,
            "ephemeral": cfg.storage.ephemeral,
            "miners": s.miners,
            "matches_served": s.matches_served,
            "reservations_in_flight": s.reservations_in_flight,
            "last_score_update": s.last_score_update,
            "config": {
                "weights": cfg.weights,
                "thresholds": cfg.thresholds,
                "scoring": cfg.scoring,
                "heartbeat_timeout": cfg.matching.heartbeat_timeout,
                "reservation_ttl": cfg.matching.reservation_ttl,
            },
        });
        same(&HubStatusDto::new(&s, &tuning), &old);
    }
}
