//! Matching jobs to miners, reservations, and job outcomes.

use super::reservations::Quota;
use super::{now_ms, Hub, HubError};
use crate::auth::Caller;
use crate::domain::matching::MatchCriteria;
use crate::domain::miner::{validate_name, DEFAULT_JOB_TYPE};
use crate::domain::scoring::MinerStats;
use crate::domain::{Address, Invalid, Miner};
use crate::domain::{MatchId, MatchTicket, OutcomeRecord};
use crate::store::{ClaimError, StoreError};
use rand::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Longest accepted failure description in an outcome.
const MAX_ERROR_LEN: usize = 1024;
/// Candidates a match tries to reserve on, when the shared store finds them full, before
/// it answers without a reservation (bounds the Redis round trips of one match).
const MAX_REFUSED_RESERVATIONS: usize = 4;

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

/// A match request's checks: its limit (defaulted), or what is wrong with it (shared by the
/// match and its explanation).
pub(super) fn checked(
    req: &MatchRequest,
    m: &crate::config::MatchingConfig,
) -> Result<usize, HubError> {
    validate_name("model", &req.model)?;
    let job_type = req.job_type.as_deref().unwrap_or(DEFAULT_JOB_TYPE);
    validate_name("job_type", job_type)?;
    let limit = req.limit.unwrap_or(m.default_limit);
    if limit == 0 || limit > m.max_limit {
        return Err(Invalid::new("limit", format!("must be between 1 and {}", m.max_limit)).into());
    }
    if req
        .min_gpu_memory
        .is_some_and(|m| m > crate::domain::miner::MAX_GPU_MEMORY_MIB)
    {
        return Err(Invalid::new(
            "requirements.min_gpu_memory",
            "must be at most 16777216 MiB",
        )
        .into());
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
    Ok(limit)
}

/// One miner a match offers, as the hub answers it (the registry's
/// [`crate::domain::matching::Offer`] with the miner's registration, shared rather than
/// copied: the answer is written while it is held).
#[derive(Debug, Clone)]
pub struct Offer {
    pub address: Address,
    pub miner: Arc<Miner>,
    pub score: f64,
    pub estimated_time: f64,
    pub load: u32,
}

impl Offer {
    /// Where the client sends the job.
    pub fn endpoint(&self) -> &str {
        self.miner.endpoint.as_str()
    }
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

/// The id a caller's matches are recorded under: its key's id, 0 for the operator's admin
/// secret (key ids are never 0), `None` without a key (open mode: anyone may report).
pub(crate) fn owner_of(caller: Option<&Caller>) -> Option<u64> {
    caller.map(|c| c.key_id().unwrap_or(0))
}

impl Hub {
    /// Finds the best miners for a job, for no particular client (open mode).
    pub async fn match_job(&self, req: MatchRequest) -> Result<Match, HubError> {
        self.match_job_for(req, None).await
    }

    /// Finds the best miners for a job; see [`crate::domain::matching`]. The match is
    /// recorded as `caller`'s, so only that key may report its outcomes; a key that holds
    /// `auth.max_reservations_per_client` reservations already gets its match without one
    /// (`reserved: false`), so no client can reserve the whole pool.
    pub async fn match_job_for(
        &self,
        mut req: MatchRequest,
        caller: Option<&Caller>,
    ) -> Result<Match, HubError> {
        let client = owner_of(caller);
        let started = Instant::now();
        // One look at the settings for the whole match (a reload swaps them whole).
        let t = self.tuning();
        let limit = checked(&req, &t.matching)?;
        let job_type = req.job_type.as_deref().unwrap_or(DEFAULT_JOB_TYPE);
        let m = &t.matching;
        let now = now_ms();
        let ttl_ms = m.reservation_ttl.saturating_mul(1000);
        // The key's quota is taken before the search and given back below if no
        // reservation comes of it.
        let quota = match client {
            Some(c) if req.reserve => {
                let q = self
                    .reservations
                    .take_quota(c, t.auth.max_reservations_per_client);
                req.reserve = q.is_some();
                q
            }
            _ => None,
        };
        // Hubs sharing the hot store hear of each other's reservations late, so there the
        // slot is taken in the store, atomically, for the miner chosen; when the store says
        // it is full, the next candidate is tried. A store only this process sees holds
        // nothing the index does not already count, so the embedded path skips the call.
        let shared = self.hot.bus().is_some();
        let mut exclude = req.exclude;
        let mut refused = 0;
        let expires = now.saturating_add(ttl_ms);
        let mut quota = quota;
        let (offers, panic, match_id, reserved) = loop {
            let crit = MatchCriteria {
                model: &req.model,
                job_type,
                min_gpu_memory: req.min_gpu_memory.unwrap_or(0),
                max_latency: req.max_latency,
                limit,
                exclude: &exclude,
            };
            let (found, match_id) = {
                // ThreadRng is not Send: keep it out of the awaits below.
                let mut rng = rand::rng();
                let found = self.registry.select(&crit, &t.policy, now, &mut rng);
                (found, MatchId(rng.random()))
            };
            let (mut offers, panic) = (found.offers, found.panic);
            let Some(first) = offers.first() else {
                break (offers, panic, match_id, false);
            };
            if !req.reserve {
                break (offers, panic, match_id, false);
            }
            // Taken in the index before the shared store is asked, so the matches this hub
            // runs meanwhile see the slot as gone: otherwise they all pick the same miner
            // during the round trip and the store refuses all but one of them.
            let taken = self.reservations.add(
                match_id,
                first.address,
                first.key.live.clone(),
                expires,
                quota.take().and_then(Quota::keep),
            );
            // A miner this filled leaves the match sets (and the panic counts) now.
            self.registry.note(&first.key.live);
            if taken && !shared {
                break (offers, panic, match_id, true);
            }
            let claimed = if taken {
                let load = first.key.live.status().map_or(0, |s| s.current_load);
                let slots = first
                    .key
                    .miner
                    .capabilities
                    .max_concurrent_jobs
                    .saturating_sub(load);
                let ttl = std::time::Duration::from_millis(ttl_ms);
                self.hot
                    .reserve_slot(&first.address, match_id, slots, ttl)
                    .await
            } else {
                // A match running at once on this hub took the miner's last slot between
                // this one's selection and its reservation.
                Ok(false)
            };
            match claimed {
                Ok(true) => break (offers, panic, match_id, true),
                Ok(false) => {
                    // Full: through a concurrent match here, or through other hubs'
                    // reservations this index has not heard of. Giving the slot back gives
                    // the key's quota back too: take it again.
                    self.unreserve(match_id, &first.address);
                    refused += 1;
                    exclude.push(first.address);
                    if let Some(c) = client {
                        quota = self
                            .reservations
                            .take_quota(c, t.auth.max_reservations_per_client);
                        req.reserve = quota.is_some();
                    }
                    if refused >= MAX_REFUSED_RESERVATIONS {
                        offers.remove(0);
                        break (offers, panic, match_id, false);
                    }
                }
                Err(e) => {
                    // Redis is down: answer from the index, without a reservation (one
                    // that other hubs cannot see could over-reserve the miner).
                    self.unreserve(match_id, &first.address);
                    let _ = self.store_error(e);
                    break (offers, panic, match_id, false);
                }
            }
        };
        if let Some(first) = offers.first() {
            if reserved {
                self.publish(super::Event::Reserved {
                    match_id,
                    address: first.address,
                    expires,
                });
            }
            let ticket = MatchTicket {
                id: match_id,
                offered: offers.iter().map(|o| o.address).collect(),
                created_at: now,
                client,
            };
            if let Err(e) = self.hot.record_match(ticket).await {
                if reserved {
                    self.unreserve(match_id, &first.address);
                    if shared {
                        let _ = self.hot.release_slot(&first.address, match_id).await;
                    }
                }
                return Err(self.store_error(e));
            }
        }
        let miners: Vec<Offer> = offers
            .into_iter()
            .map(|o| Offer {
                address: o.address,
                miner: o.key.miner,
                score: o.score,
                estimated_time: o.estimated_time,
                load: o.load,
            })
            .collect();
        let took = started.elapsed();
        if self.events.active(now) {
            self.emit_match(match_id, &miners, reserved, panic, took);
        }
        let mt = &self.metrics;
        mt.match_duration.observe(took.as_secs_f64());
        self.matches_served.fetch_add(1, Ordering::Relaxed);
        let result = &mt.match_results;
        if miners.is_empty() {
            result.empty.inc();
        } else {
            mt.jobs_matched_total.inc();
            if panic {
                result.panic.inc();
            } else {
                result.matched.inc();
            }
        }
        Ok(Match {
            match_id,
            miners,
            reserved,
            panic,
        })
    }

    /// Gives back a slot this hub took for `id` on `address` (in the index only).
    fn unreserve(&self, id: MatchId, address: &Address) {
        if let Some(live) = self.reservations.release(id, address) {
            self.registry.note(&live);
        }
    }

    /// Accepts a job's outcome reported without a key (open mode).
    pub async fn report_outcome(&self, rep: OutcomeReport) -> Result<Standing, HubError> {
        self.report_outcome_for(rep, None).await
    }

    /// Accepts a job's outcome for a miner that match `match_id` offered; each pair once,
    /// and only from the key that made the match (`NotYourMatch` otherwise). Answered only
    /// after the outcome and the new statistics are durable.
    pub async fn report_outcome_for(
        &self,
        rep: OutcomeReport,
        caller: Option<&Caller>,
    ) -> Result<Standing, HubError> {
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
        if rep
            .error
            .as_ref()
            .is_some_and(|e| e.chars().count() > MAX_ERROR_LEN)
        {
            return Err(Invalid::new("error", "must be at most 1024 characters").into());
        }
        self.hot
            .claim_outcome_by(id, &rep.address, owner_of(caller))
            .await
            .map_err(|e| match e {
                // Redis down: counted and logged like every other storage failure.
                ClaimError::Store(e) => self.store_error(e),
                other => HubError::Claim(other),
            })?;
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
            .record_outcome(&record, self.tuning().params.decay_factor)
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
        if self.hot.bus().is_some() {
            // The match may have been made (and its slot reserved) by another hub; freed in
            // the store before the event goes out, so a hub acting on the event finds it free.
            if let Err(e) = self.hot.release_slot(&rep.address, id).await {
                // The reservation's TTL frees it anyway.
                let _ = self.store_error(e);
            }
        }
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
        if self.events.active(record.at) {
            self.emit_outcome(&record, &rep.address, &view, score.value, cooldown_until);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MinerStatus;
    use crate::store::moka::MokaHotStore;
    use crate::store::redb::RedbStore;
    use crate::store::{HotStore, Result as StoreResult};
    use std::time::Duration;

    /// A hot store whose claims fail as Redis's do while it is down.
    struct ClaimsFail(MokaHotStore);

    #[async_trait::async_trait]
    impl HotStore for ClaimsFail {
        fn backend(&self) -> &'static str {
            "redis"
        }
        async fn put_status(&self, a: &Address, s: &MinerStatus) -> StoreResult<()> {
            self.0.put_status(a, s).await
        }
        async fn get_status(&self, a: &Address) -> StoreResult<Option<MinerStatus>> {
            self.0.get_status(a).await
        }
        async fn remove_status(&self, a: &Address) -> StoreResult<()> {
            self.0.remove_status(a).await
        }
        async fn record_match(&self, t: MatchTicket) -> StoreResult<()> {
            self.0.record_match(t).await
        }
        async fn claim_outcome_by(
            &self,
            _: MatchId,
            _: &Address,
            _: Option<u64>,
        ) -> Result<(), ClaimError> {
            Err(StoreError::unavailable("redis", "connection refused").into())
        }
        async fn unclaim_outcome(&self, id: MatchId, a: &Address) -> StoreResult<()> {
            self.0.unclaim_outcome(id, a).await
        }
        async fn reserve_slot(
            &self,
            a: &Address,
            id: MatchId,
            slots: u32,
            ttl: Duration,
        ) -> StoreResult<bool> {
            self.0.reserve_slot(a, id, slots, ttl).await
        }
        async fn release_slot(&self, a: &Address, id: MatchId) -> StoreResult<()> {
            self.0.release_slot(a, id).await
        }
        async fn put_challenge(
            &self,
            c: &crate::domain::identity::Challenge,
            ttl: Duration,
        ) -> StoreResult<()> {
            self.0.put_challenge(c, ttl).await
        }
        async fn take_challenge(
            &self,
            a: &Address,
        ) -> StoreResult<Option<crate::domain::identity::Challenge>> {
            self.0.take_challenge(a).await
        }
        async fn health(&self) -> StoreResult<()> {
            Ok(())
        }
    }

    /// Issue 9, defect 8: a claim that fails because the hot store is down is counted in
    /// poolhub_store_errors_total under the hot store's backend (and logged).
    #[tokio::test]
    async fn claim_failures_are_counted_as_store_errors() {
        let hot = ClaimsFail(MokaHotStore::new(
            Duration::from_secs(30),
            Duration::from_secs(60),
            100,
        ));
        let hub = Hub::open(
            crate::config::Config::default(),
            Arc::new(RedbStore::in_memory(None).unwrap()),
            Arc::new(hot),
            Arc::new(crate::metrics::Metrics::new()),
        )
        .await
        .unwrap();
        let errors = || {
            hub.metrics
                .store_errors_total
                .with_label_values(&["redis"])
                .get()
        };
        let before = errors();
        let r = hub
            .report_outcome(OutcomeReport {
                match_id: format!("{:032x}", 1),
                address: Address::from_bytes([7; 20]),
                success: true,
                latency_ms: Some(10.0),
                error: None,
            })
            .await;
        assert!(matches!(r, Err(HubError::Store(_))), "{r:?}");
        assert_eq!(errors(), before + 1);
    }
    /// A shared hot store (it has a bus) whose slot claims take a while, as a Redis round
    /// trip does under load; it counts the claims it is asked for.
    struct SlowShared {
        inner: MokaHotStore,
        claims: std::sync::atomic::AtomicUsize,
    }

    impl crate::store::EventBus for SlowShared {
        fn publish(&self, _: String) {}
        fn subscribe(&self) -> tokio::sync::mpsc::Receiver<crate::store::BusMessage> {
            tokio::sync::mpsc::channel(1).1
        }
    }

    #[async_trait::async_trait]
    impl HotStore for SlowShared {
        fn backend(&self) -> &'static str {
            "redis"
        }
        async fn put_status(&self, a: &Address, s: &MinerStatus) -> StoreResult<()> {
            self.inner.put_status(a, s).await
        }
        async fn get_status(&self, a: &Address) -> StoreResult<Option<MinerStatus>> {
            self.inner.get_status(a).await
        }
        async fn remove_status(&self, a: &Address) -> StoreResult<()> {
            self.inner.remove_status(a).await
        }
        async fn record_match(&self, t: MatchTicket) -> StoreResult<()> {
            self.inner.record_match(t).await
        }
        async fn claim_outcome_by(
            &self,
            id: MatchId,
            a: &Address,
            client: Option<u64>,
        ) -> Result<(), ClaimError> {
            self.inner.claim_outcome_by(id, a, client).await
        }
        async fn unclaim_outcome(&self, id: MatchId, a: &Address) -> StoreResult<()> {
            self.inner.unclaim_outcome(id, a).await
        }
        async fn reserve_slot(
            &self,
            a: &Address,
            id: MatchId,
            slots: u32,
            ttl: Duration,
        ) -> StoreResult<bool> {
            self.claims
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.inner.reserve_slot(a, id, slots, ttl).await
        }
        async fn release_slot(&self, a: &Address, id: MatchId) -> StoreResult<()> {
            self.inner.release_slot(a, id).await
        }
        async fn put_challenge(
            &self,
            c: &crate::domain::identity::Challenge,
            ttl: Duration,
        ) -> StoreResult<()> {
            self.inner.put_challenge(c, ttl).await
        }
        async fn take_challenge(
            &self,
            a: &Address,
        ) -> StoreResult<Option<crate::domain::identity::Challenge>> {
            self.inner.take_challenge(a).await
        }
        async fn health(&self) -> StoreResult<()> {
            Ok(())
        }
        fn bus(&self) -> Option<&dyn crate::store::EventBus> {
            Some(self)
        }
    }

    /// Matches running at once on one hub take their slot in the index before asking the
    /// shared store, so they pick different miners: one claim each, none refused. (Claiming
    /// first let every concurrent match pick the same miner during the round trip; the store
    /// then refused all but one, and each refusal cost another round trip.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_matches_take_their_slot_before_the_shared_store_answers() {
        use crate::hub::tests::{address, match_request, online, registration};
        let hot = Arc::new(SlowShared {
            inner: MokaHotStore::new(Duration::from_secs(30), Duration::from_secs(60), 100),
            claims: std::sync::atomic::AtomicUsize::new(0),
        });
        let hub = Arc::new(
            Hub::open(
                crate::config::Config::default(),
                Arc::new(RedbStore::in_memory(None).unwrap()),
                hot.clone(),
                Arc::new(crate::metrics::Metrics::new()),
            )
            .await
            .unwrap(),
        );
        const MINERS: u8 = 4;
        for i in 1..=MINERS {
            let mut reg = registration(i);
            reg.capabilities.max_concurrent_jobs = 1;
            let token = hub.register(reg, None).await.unwrap().token.unwrap();
            hub.update_status(&address(i), Some(&token), online())
                .await
                .unwrap();
        }
        let mut matches = Vec::new();
        for _ in 0..MINERS {
            let hub = hub.clone();
            matches.push(tokio::spawn(async move {
                let mut req = match_request();
                req.limit = Some(1);
                hub.match_job(req).await.unwrap()
            }));
        }
        let mut reserved = std::collections::BTreeSet::new();
        for m in matches {
            let m = m.await.unwrap();
            assert!(m.reserved, "every match finds a free miner");
            assert!(
                reserved.insert(m.miners[0].address),
                "one miner reserved twice"
            );
        }
        assert_eq!(
            hot.claims.load(std::sync::atomic::Ordering::SeqCst),
            usize::from(MINERS),
            "one claim per match: no match was refused and retried"
        );
    }
}
