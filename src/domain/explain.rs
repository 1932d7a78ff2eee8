//! "Why not my miner?": the reason each miner was or was not offered for a match, from the
//! same checks the matcher runs ([`verdict`]) plus what only the whole answer knows (who
//! was offered, panic mode). Pure: the caller hands in the answer and the miner's factors.
//!
//! The reason codes are part of the API (`POST /api/v1/match/explain`) and stay stable:
//! `offered`, `model`, `job_type`, `gpu_memory`, `offline`, `unavailable`, `full`,
//! `cooldown`, `threshold`, `latency`, `temperature`, `excluded`, `banned`, `outranked`,
//! `unregistered`.

use crate::domain::matching::{verdict, Candidate, MatchCriteria, MatchPolicy, Refusal};
use crate::domain::miner::Address;
use crate::domain::scoring::{failed_threshold, Factors, Thresholds};
use serde::Serialize;

/// Why one miner was or was not offered, with the figures behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// In the answer, at `rank` (1 = first), with the score it was ranked by.
    Offered { rank: usize, score: f64 },
    /// It does not serve the requested model.
    Model,
    /// It does not serve the requested job type.
    JobType,
    /// Less GPU memory (MiB) than the request's `min_gpu_memory`.
    GpuMemory { gpu_memory: u64, required: u64 },
    /// No status yet, or the last one is older than `matching.heartbeat_timeout`.
    Offline { last_status_age_ms: Option<u64> },
    /// It reports `available: false`.
    Unavailable,
    /// No free slot: reported load plus reservations reach `max_concurrent_jobs`.
    Full { load: u32, slots: u32 },
    /// Cooled down after consecutive failures, until `cooldown_until` (unix ms).
    Cooldown { cooldown_until: u64 },
    /// Below one of `[thresholds]`: which, the miner's value and the limit.
    Threshold {
        threshold: &'static str,
        value: f64,
        limit: f64,
    },
    /// Its estimated time (ms, by its load) is over the request's `max_latency`.
    Latency {
        estimated_time: f64,
        max_latency: f64,
    },
    /// Its GPU is hotter than `thresholds.max_temperature` (°C).
    Temperature {
        temperature: f64,
        max_temperature: f64,
    },
    /// The request's `exclude` names it.
    Excluded,
    /// The address is banned by the operator.
    Banned,
    /// Eligible, but the answer was full of better miners: its score (after thermal
    /// derating) against the lowest one offered.
    Outranked {
        score: f64,
        last_offered_score: Option<f64>,
    },
    /// No miner is registered at this address.
    Unregistered,
}

impl Reason {
    /// The stable code, as serialized in `reason`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Offered { .. } => "offered",
            Self::Model => "model",
            Self::JobType => "job_type",
            Self::GpuMemory { .. } => "gpu_memory",
            Self::Offline { .. } => "offline",
            Self::Unavailable => "unavailable",
            Self::Full { .. } => "full",
            Self::Cooldown { .. } => "cooldown",
            Self::Threshold { .. } => "threshold",
            Self::Latency { .. } => "latency",
            Self::Temperature { .. } => "temperature",
            Self::Excluded => "excluded",
            Self::Banned => "banned",
            Self::Outranked { .. } => "outranked",
            Self::Unregistered => "unregistered",
        }
    }
}

/// What the match answered: the offers in order (address and score), and panic mode.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub offered: Vec<(Address, f64)>,
    pub panic: bool,
}

/// The reason for candidate `c` given the match's `answer`. What the miner *is* (model, job
/// type, memory) comes first, then whether it was offered, then the matcher's own checks.
#[allow(clippy::too_many_arguments)]
pub fn reason<K: Copy>(
    c: &Candidate<'_, K>,
    crit: &MatchCriteria<'_>,
    policy: &MatchPolicy,
    now: u64,
    answer: &Answer,
    factors: &Factors,
    thresholds: &Thresholds,
) -> Reason {
    if !c.miner.serves_model(crit.model) {
        return Reason::Model;
    }
    if !c.miner.serves_job_type(crit.job_type) {
        return Reason::JobType;
    }
    if c.gpu_memory < crit.min_gpu_memory {
        return Reason::GpuMemory {
            gpu_memory: c.gpu_memory,
            required: crit.min_gpu_memory,
        };
    }
    if let Some(i) = answer
        .offered
        .iter()
        .position(|(a, _)| *a == c.miner.address)
    {
        return Reason::Offered {
            rank: i + 1,
            score: answer.offered[i].1,
        };
    }
    match verdict(c, crit, policy, now) {
        Ok(offer) if offer.cooled_down && !answer.panic => Reason::Cooldown {
            cooldown_until: c.cooldown_until,
        },
        Ok(offer) => Reason::Outranked {
            score: offer.score,
            last_offered_score: answer.offered.last().map(|o| o.1),
        },
        Err(Refusal::Offline { reported_at }) => Reason::Offline {
            last_status_age_ms: reported_at.map(|t| now.saturating_sub(t)),
        },
        Err(Refusal::Unavailable) => Reason::Unavailable,
        Err(Refusal::Full { load, slots }) => Reason::Full { load, slots },
        Err(Refusal::GpuMemory { have, need }) => Reason::GpuMemory {
            gpu_memory: have,
            required: need,
        },
        Err(Refusal::Threshold) => match failed_threshold(factors, thresholds) {
            Some((threshold, value, limit)) => Reason::Threshold {
                threshold,
                value,
                limit,
            },
            // The index judged it on the thresholds in force at its last rescoring, which a
            // reload has since changed: the next rescoring (at once) settles it.
            None => Reason::Threshold {
                threshold: "rescoring",
                value: 0.0,
                limit: 0.0,
            },
        },
        Err(Refusal::Latency { estimated, max }) => Reason::Latency {
            estimated_time: estimated,
            max_latency: max,
        },
        Err(Refusal::Temperature { value, limit }) => Reason::Temperature {
            temperature: value,
            max_temperature: limit,
        },
        Err(Refusal::JobType) => Reason::JobType,
        Err(Refusal::Model) => Reason::Model,
        Err(Refusal::Excluded) => Reason::Excluded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::miner::{Capabilities, Endpoint, Miner, MinerStatus};

    const NOW: u64 = 1_700_000_000_000;

    fn miner() -> Miner {
        Miner {
            address: Address::from_bytes([7; 20]),
            endpoint: Endpoint::try_from("http://m.example.com".to_string()).unwrap(),
            capabilities: Capabilities {
                models: vec!["llama3.2".into()],
                gpu_memory: 16384,
                max_concurrent_jobs: 4,
                job_types: vec!["inference".into()],
            },
            stake: 0,
            token_hash: String::new(),
            registered_at: 0,
            updated_at: 0,
            proven: false,
            profile: None,
        }
    }

    fn factors(success_rate: f64) -> Factors {
        Factors {
            success_rate,
            latency: 0.8,
            availability: 0.99,
            reputation: 0.5,
            avg_latency_ms: 1000.0,
            jobs: 50.0,
        }
    }

    fn explain(m: &Miner, f: &Factors, cooldown_until: u64, panic: bool) -> Reason {
        let t = Thresholds::default();
        let c = Candidate {
            key: 0u32,
            miner: m,
            score: 0.7,
            avg_latency_ms: f.avg_latency_ms,
            qualified: crate::domain::scoring::passes_thresholds(f, &t),
            gpu_memory: m.capabilities.gpu_memory,
            max_concurrent_jobs: m.capabilities.max_concurrent_jobs,
            status: Some(MinerStatus {
                available: true,
                current_load: 0,
                gpu_utilization: 0.5,
                temperature: None,
                reported_at: NOW - 1000,
                resources: Default::default(),
            }),
            reserved: 0,
            cooldown_until,
            serves_model: false,
        };
        let crit = MatchCriteria {
            model: "llama3.2",
            job_type: "inference",
            min_gpu_memory: 0,
            max_latency: None,
            limit: 1,
            exclude: &[],
        };
        let policy = MatchPolicy {
            heartbeat_timeout_ms: 30_000,
            tie_epsilon: 0.0001,
            panic_threshold: 0.5,
            scan_cap: 64,
            thermal: t,
        };
        let answer = Answer {
            offered: vec![(Address::from_bytes([1; 20]), 0.9)],
            panic,
        };
        reason(&c, &crit, &policy, NOW, &answer, f, &t)
    }

    #[test]
    fn thresholds_and_cooldowns_are_explained_with_their_figures() {
        let m = miner();
        assert_eq!(
            explain(&m, &factors(0.5), 0, false),
            Reason::Threshold {
                threshold: "min_success_rate",
                value: 0.5,
                limit: 0.8
            }
        );
        let until = NOW + 60_000;
        assert_eq!(
            explain(&m, &factors(0.95), until, false),
            Reason::Cooldown {
                cooldown_until: until
            }
        );
        // In panic mode a cooled-down miner competes: it was simply outranked.
        assert_eq!(
            explain(&m, &factors(0.95), until, true),
            Reason::Outranked {
                score: 0.7,
                last_offered_score: Some(0.9)
            }
        );
        let r = explain(&m, &factors(0.95), 0, false);
        assert_eq!(r.code(), "outranked");
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["reason"], "outranked");
    }
}
