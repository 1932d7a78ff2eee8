//! Matching jobs to miners, reservations, and job outcomes.

use super::{now_ms, Hub, HubError};
use crate::domain::matching::MatchCriteria;
use crate::domain::miner::{validate_name, DEFAULT_JOB_TYPE};
use crate::domain::scoring::MinerStats;
use crate::domain::{Address, Invalid};
use crate::domain::{MatchId, MatchTicket, OutcomeRecord};
use crate::registry::Live;
use crate::store::StoreError;
use parking_lot::Mutex;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Longest accepted failure description in an outcome.
const MAX_ERROR_LEN: usize = 1024;

/// A match request, parsed.
#[derive(Debug, Clone)]
pub struct MatchRequest {
    pub model: String,
    pub job_type: Option<String>,
    pub min_gpu_memory: Option<u64>,
    pub max_latency: Option<f64>,
    pub limit: Option<usize>,
    pub exclude: Vec<Address>,
    /// Reserve a slot on the first miner (default). `false` only looks.
    pub reserve: bool,
}

/// One miner a match offers, as the hub answers it (the registry's
/// [`crate::domain::matching::Offer`] with the miner's endpoint).
#[derive(Debug, Clone)]
pub struct Offer {
    pub address: Address,
    pub endpoint: String,
    pub score: f64,
    pub estimated_time: f64,
    pub load: u32,
}

/// The answer to a match request: what it offers, under the id outcomes are reported with.
#[derive(Debug, Clone)]
pub struct Match {
    pub match_id: MatchId,
    pub miners: Vec<Offer>,
    /// Whether the first miner holds a reservation for this match.
    pub reserved: bool,
    /// Cooled-down miners were included because too few healthy ones were left.
    pub panic: bool,
}

/// A client's report of how a job went: unchecked until the hub accepts it, when it becomes
/// an [`OutcomeRecord`] in the history.
#[derive(Debug, Clone)]
pub struct OutcomeReport {
    pub match_id: String,
    pub address: Address,
    pub success: bool,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

/// A miner's standing after an outcome was accepted: what the hub answers to the report.
#[derive(Debug, Clone)]
pub struct Standing {
    pub address: Address,
    pub stats: MinerStats,
    pub score: crate::domain::Score,
    pub cooldown_until: u64,
}

/// Slots held by matches until their outcome arrives or their TTL passes.
///
/// Kept by the hub, not the hot store: releasing must happen exactly once, and the map
/// removal is the single place where that is decided.
#[derive(Default)]
pub(crate) struct Reservations {
    inner: Mutex<ResInner>,
}

#[derive(Default)]
struct ResInner {
    by_match: HashMap<MatchId, (Address, Arc<Live>)>,
    queue: VecDeque<(u64, MatchId)>,
}

impl Reservations {
    pub(crate) fn add(&self, id: MatchId, address: Address, live: Arc<Live>, expires: u64) {
        live.reserve();
        let mut g = self.inner.lock();
        g.by_match.insert(id, (address, live));
        g.queue.push_back((expires, id));
    }

    /// Releases the match's reservation if it is on `address`; returns the miner it freed.
    pub(crate) fn release(&self, id: MatchId, address: &Address) -> Option<Arc<Live>> {
        let mut g = self.inner.lock();
        if g.by_match.get(&id).is_some_and(|(a, _)| a == address) {
            if let Some((_, live)) = g.by_match.remove(&id) {
                live.release();
                return Some(live);
            }
        }
        None
    }

    /// Releases every reservation whose TTL has passed; returns the miners it freed.
    pub(crate) fn expire(&self, now: u64) -> Vec<Arc<Live>> {
        let mut g = self.inner.lock();
        let mut freed = Vec::new();
        while g.queue.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, id)) = g.queue.pop_front() {
                if let Some((_, live)) = g.by_match.remove(&id) {
                    live.release();
                    freed.push(live);
                }
            }
        }
        freed
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.lock().by_match.len()
    }
}

impl Hub {
    /// Finds the best miners for a job; see [`crate::domain::matching`].
    pub async fn match_job(&self, req: MatchRequest) -> Result<Match, HubError> {
        let started = Instant::now();
        validate_name("model", &req.model)?;
        let job_type = req.job_type.as_deref().unwrap_or(DEFAULT_JOB_TYPE);
        validate_name("job_type", job_type)?;
        let m = &self.config.matching;
        let limit = req.limit.unwrap_or(m.default_limit);
        if limit == 0 || limit > m.max_limit {
            return Err(
                Invalid::new("limit", format!("must be between 1 and {}", m.max_limit)).into(),
            );
        }
        if let Some(l) = req.max_latency {
            if !l.is_finite() || l <= 0.0 {
                return Err(Invalid::new(
                    "requirements.max_latency",
                    "must be a positive number of milliseconds",
                )
                .into());
            }
        }
        if req.exclude.len() > 1000 {
            return Err(Invalid::new("exclude", "must list at most 1000 addresses").into());
        }
        let crit = MatchCriteria {
            model: &req.model,
            job_type,
            min_gpu_memory: req.min_gpu_memory.unwrap_or(0),
            max_latency: req.max_latency,
            limit,
            exclude: &req.exclude,
        };
        let now = now_ms();
        let (found, match_id) = {
            // ThreadRng is not Send: keep it out of the awaits below.
            let mut rng = rand::rng();
            let found = self.registry.select(&crit, &self.policy, now, &mut rng);
            (found, MatchId(rng.random()))
        };
        let (offers, panic) = (found.offers, found.panic);
        let mut reserved = false;
        if let Some(first) = offers.first() {
            if req.reserve {
                let ttl = m.reservation_ttl.saturating_mul(1000);
                self.reservations.add(
                    match_id,
                    first.address,
                    first.key.live.clone(),
                    now.saturating_add(ttl),
                );
                // A miner this filled leaves the match sets (and the panic counts) now.
                self.registry.note(&first.key.live);
                reserved = true;
                self.publish(super::Event::Reserved {
                    match_id,
                    address: first.address,
                    expires: now.saturating_add(ttl),
                });
            }
            let ticket = MatchTicket {
                id: match_id,
                offered: offers.iter().map(|o| o.address).collect(),
                created_at: now,
            };
            if let Err(e) = self.hot.record_match(ticket).await {
                if reserved {
                    self.reservations.release(match_id, &first.address);
                }
                return Err(self.store_error(e));
            }
        }
        let miners: Vec<Offer> = offers
            .iter()
            .map(|o| Offer {
                address: o.address,
                endpoint: o.key.miner.endpoint.as_str().to_string(),
                score: o.score,
                estimated_time: o.estimated_time,
                load: o.load,
            })
            .collect();
        let mt = &self.metrics;
        mt.match_duration.observe(started.elapsed().as_secs_f64());
        self.matches_served.fetch_add(1, Ordering::Relaxed);
        let result = if miners.is_empty() {
            "empty"
        } else {
            mt.jobs_matched_total.inc();
            if panic {
                "panic"
            } else {
                "matched"
            }
        };
        mt.match_requests_total.with_label_values(&[result]).inc();
        Ok(Match {
            match_id,
            miners,
            reserved,
            panic,
        })
    }

    /// Accepts a job's outcome for a miner that match `match_id` offered; each pair once.
    /// Answered only after the outcome and the new statistics are durable.
    pub async fn report_outcome(&self, rep: OutcomeReport) -> Result<Standing, HubError> {
        let id: MatchId = rep.match_id.parse()?;
        if let Some(l) = rep.latency_ms {
            if !l.is_finite() || !(0.0..=86_400_000.0).contains(&l) {
                return Err(Invalid::new(
                    "latency_ms",
                    "must be between 0 and 86400000 milliseconds",
                )
                .into());
            }
        }
        if rep.error.as_ref().is_some_and(|e| e.len() > MAX_ERROR_LEN) {
            return Err(Invalid::new("error", "must be at most 1024 characters").into());
        }
        self.hot.claim_outcome(id, &rep.address).await?;
        let _guard = self.lock_for(&rep.address).lock().await;
        let record = OutcomeRecord {
            // The canonical form, whatever the client's spelling (only that one parses).
            match_id: id.to_string(),
            address: rep.address,
            success: rep.success,
            latency_ms: rep.latency_ms,
            at: now_ms(),
            error: rep.error,
        };
        let stats = match self
            .durable
            .record_outcome(&record, self.params.decay_factor)
            .await
        {
            Ok(s) => s,
            Err(StoreError::NotFound) => return Err(HubError::MinerNotFound(rep.address)),
            Err(e) => {
                // Not stored: let the client report it again.
                let _ = self.hot.unclaim_outcome(id, &rep.address).await;
                return Err(self.store_error(e));
            }
        };
        if let Some(live) = self.reservations.release(id, &rep.address) {
            self.registry.note(&live);
        }
        // The match may have been made (and its slot reserved) by another hub.
        self.publish(super::Event::Released {
            match_id: id,
            address: rep.address,
        });
        self.publish(super::Event::Stats {
            address: rep.address,
            stats,
        });
        let view = self
            .registry
            .get(&rep.address)
            .ok_or(HubError::MinerNotFound(rep.address))?;
        let (score, cooldown_until) =
            self.score_now(&stats, &view.availability, view.miner.stake, record.at);
        self.registry
            .update_stats(&rep.address, stats, score, cooldown_until);
        self.metrics
            .job_outcomes_total
            .with_label_values(&[if rep.success { "success" } else { "failure" }])
            .inc();
        if cooldown_until > record.at && !rep.success {
            tracing::info!(
                address = %rep.address,
                consecutive_failures = stats.consecutive_failures,
                cooldown_ms = cooldown_until - record.at,
                "miner cooled down after consecutive failures"
            );
        }
        Ok(Standing {
            address: rep.address,
            stats,
            score,
            cooldown_until,
        })
    }
}
