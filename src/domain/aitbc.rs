//! AITBC's match by requirements (`POST /v1/match`) and its SLA verdict
//! (`GET /v1/sla/status`), as pure functions over what the index holds.
//!
//! The match takes every miner (named or address-keyed) that could run the job now, by the
//! same rules as poolhub's own match: online (a fresh heartbeat), available, a free slot
//! counting reservations, meeting the scoring thresholds, and not cooled down unless panic
//! mode lets cooled-down miners back in (Envoy's rule, over this request's whole eligible
//! set). On top of those:
//!
//! * `min_vram_gb`: GPU memory of at least `min_vram_gb × 1024` MiB, so a CPU miner (0) only
//!   matches a job that asks for no GPU memory;
//! * `min_ram_gb`: above 0, only miners that declared at least that much RAM (address-keyed
//!   miners declare none, so they are left out of such a request);
//! * `capabilities_any`: when not empty, miners accepting at least one of the job types;
//! * `hints.region`: a preference, not a filter: miners in that region rank first.
//!
//! Then best score first, the less loaded first among equal scores, the address last so the
//! order is total. Nothing is reserved: AITBC's protocol has no outcome report to release a
//! slot with (poolhub's `/api/v1/match` does).

use super::matching::{estimated_time, is_fresh, Candidate, Eligible, MatchPolicy};
use super::miner::Address;
use std::cmp::Ordering;

/// Most candidates one request may ask for (`top_k`).
pub const MAX_TOP_K: usize = 50;

/// What a `/v1/match` request asks for, checked and in poolhub's units.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirements {
    /// MiB.
    pub min_gpu_memory: u64,
    pub min_ram_gb: f64,
    pub capabilities_any: Vec<String>,
    pub region: Option<String>,
    pub top_k: usize,
}

/// One miner the match offers, best first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked<K> {
    pub key: K,
    pub address: Address,
    pub score: f64,
    /// Reported load plus reservations, and the concurrency limit.
    pub load: u32,
    pub max_concurrent: u32,
    /// Observed latency stretched by load, whole ms.
    pub eta_ms: u64,
    pub in_region: bool,
    pub cooled_down: bool,
}

/// The ranked miners, and whether panic mode let cooled-down ones in.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking<K> {
    pub offers: Vec<Ranked<K>>,
    pub panic: bool,
}

fn fits<K>(c: &Candidate<'_, K>, req: &Requirements, policy: &MatchPolicy, now: u64) -> bool {
    let Some(status) = c.status else {
        return false;
    };
    if !status.available
        || !is_fresh(&status, now, policy.heartbeat_timeout_ms)
        || status.current_load.saturating_add(c.reserved) >= c.max_concurrent_jobs
        || !c.qualified
        || c.gpu_memory < req.min_gpu_memory
        || crate::domain::scoring::too_hot(status.temperature, &policy.thermal)
    {
        return false;
    }
    if req.min_ram_gb > 0.0 {
        let ram = c.miner.profile.as_ref().and_then(|p| p.ram_gb);
        if ram.is_none_or(|r| r < req.min_ram_gb) {
            return false;
        }
    }
    req.capabilities_any.is_empty()
        || req
            .capabilities_any
            .iter()
            .any(|j| c.miner.serves_job_type(j))
}

/// The ranking order: in the hinted region first, then best score, least load, address.
fn order<K>(a: &Ranked<K>, b: &Ranked<K>) -> Ordering {
    b.in_region
        .cmp(&a.in_region)
        .then(b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal))
        .then(a.load.cmp(&b.load))
        .then(a.address.cmp(&b.address))
}

/// The best `k` seen so far, unsorted, with the position of the worst of them: a walk over
/// every miner keeps at most `k` (≤ 50) instead of collecting them all.
struct TopK<K> {
    k: usize,
    items: Vec<Ranked<K>>,
    worst: usize,
}

impl<K: Copy> TopK<K> {
    fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k),
            worst: 0,
        }
    }

    fn offer(&mut self, r: Ranked<K>) {
        if self.items.len() < self.k {
            self.items.push(r);
            if self.items.len() == self.k {
                self.find_worst();
            }
        } else if order(&r, &self.items[self.worst]) == Ordering::Less {
            self.items[self.worst] = r;
            self.find_worst();
        }
    }

    fn find_worst(&mut self) {
        self.worst = (0..self.items.len())
            .max_by(|&a, &b| order(&self.items[a], &self.items[b]))
            .unwrap_or(0);
    }

    fn sorted(mut self) -> Vec<Ranked<K>> {
        self.items.sort_by(order);
        self.items
    }
}

/// Ranks every candidate that fits `req`; see the module doc for the rules.
pub fn rank<'a, K: Copy + 'a>(
    candidates: impl IntoIterator<Item = Candidate<'a, K>>,
    req: &Requirements,
    policy: &MatchPolicy,
    now: u64,
) -> Ranking<K> {
    // Two selections in one walk: the best of all, and the best of the healthy ones; which
    // one answers depends on panic mode, known only once every candidate is counted.
    let mut all = TopK::new(req.top_k);
    let mut healthy = TopK::new(req.top_k);
    let mut eligible = Eligible::default();
    for c in candidates {
        if !fits(&c, req, policy, now) {
            continue;
        }
        let load = c
            .status
            .map_or(0, |s| s.current_load.saturating_add(c.reserved));
        let in_region = match &req.region {
            Some(want) => {
                c.miner.profile.as_ref().and_then(|p| p.region.as_deref()) == Some(want.as_str())
            }
            None => false,
        };
        let heat = c.status.and_then(|s| s.temperature);
        let r = Ranked {
            key: c.key,
            address: c.miner.address,
            score: c.score * crate::domain::scoring::thermal_factor(heat, &policy.thermal),
            load,
            max_concurrent: c.max_concurrent_jobs,
            eta_ms: estimated_time(c.avg_latency_ms, load, c.max_concurrent_jobs).round() as u64,
            in_region,
            cooled_down: c.cooldown_until > now,
        };
        eligible.total += 1;
        if r.cooled_down {
            eligible.cooled += 1;
        } else {
            healthy.offer(r);
        }
        all.offer(r);
    }
    let panic = eligible.panic(policy.panic_threshold);
    let offers = if panic { all } else { healthy }.sorted();
    Ranking { offers, panic }
}

/// `GET /v1/sla/status`'s verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaStatus {
    Healthy,
    Degraded,
    Critical,
}

impl SlaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Critical => "critical",
        }
    }
}

/// The SLA rule: a violation is an online miner that fails the scoring thresholds or is
/// cooled down. No violation is healthy; violations by half or more of the online miners —
/// or miners registered and none online — are critical; anything between is degraded.
pub fn sla_status(registered: usize, online: usize, violations: usize) -> SlaStatus {
    if registered > 0 && online == 0 {
        SlaStatus::Critical
    } else if violations == 0 {
        SlaStatus::Healthy
    } else if violations.saturating_mul(2) >= online {
        SlaStatus::Critical
    } else {
        SlaStatus::Degraded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::miner::{Capabilities, Endpoint, Miner, MinerStatus};
    use crate::domain::profile::Profile;
    use proptest::prelude::*;

    const NOW: u64 = 1_000_000;

    fn policy() -> MatchPolicy {
        MatchPolicy {
            heartbeat_timeout_ms: 60_000,
            tie_epsilon: 0.0,
            panic_threshold: 0.5,
            scan_cap: 64,
            thermal: crate::domain::scoring::Thresholds::default(),
        }
    }

    fn miner(i: u8, gpu_mib: u64, ram: Option<f64>, region: Option<&str>) -> Miner {
        let id = format!("m{i}");
        Miner {
            address: Address::for_miner_id(&id),
            endpoint: Endpoint::try_from(format!("http://m{i}:8101")).unwrap(),
            capabilities: Capabilities {
                models: Vec::new(),
                gpu_memory: gpu_mib,
                max_concurrent_jobs: 2,
                job_types: vec!["inference".into()],
            },
            stake: 0,
            token_hash: String::new(),
            registered_at: 0,
            updated_at: 0,
            proven: false,
            profile: Some(Box::new(Profile {
                miner_id: id,
                proto: "http".into(),
                gpu_name: None,
                cpu_cores: None,
                ram_gb: ram,
                base_price: None,
                tags: Default::default(),
                region: region.map(str::to_string),
            })),
        }
    }

    fn candidate(m: &Miner, score: f64, load: u32, cooldown_until: u64) -> Candidate<'_, u8> {
        Candidate {
            key: 0,
            miner: m,
            score,
            avg_latency_ms: 100.0,
            qualified: true,
            gpu_memory: m.capabilities.gpu_memory,
            max_concurrent_jobs: m.capabilities.max_concurrent_jobs,
            status: Some(MinerStatus {
                available: true,
                current_load: load,
                gpu_utilization: 0.1,
                temperature: None,
                reported_at: NOW,
                resources: Default::default(),
            }),
            reserved: 0,
            cooldown_until,
            serves_model: false,
        }
    }

    fn req() -> Requirements {
        Requirements {
            min_gpu_memory: 0,
            min_ram_gb: 0.0,
            capabilities_any: Vec::new(),
            region: None,
            top_k: 10,
        }
    }

    #[test]
    fn requirements_filter_and_the_region_ranks_first() {
        let gpu = miner(1, 24 * 1024, Some(64.0), Some("eu"));
        let cpu = miner(2, 0, Some(16.0), Some("us"));
        let big = miner(3, 80 * 1024, None, Some("us"));
        let all = || {
            [
                candidate(&gpu, 0.5, 0, 0),
                candidate(&cpu, 0.9, 0, 0),
                candidate(&big, 0.7, 1, 0),
            ]
        };
        let ids = |r: &Ranking<u8>| r.offers.iter().map(|o| o.address).collect::<Vec<_>>();
        // No requirement: by score.
        let r = rank(all(), &req(), &policy(), NOW);
        assert_eq!(ids(&r), [cpu.address, big.address, gpu.address]);
        // A GPU job leaves the CPU miner out.
        let mut q = req();
        q.min_gpu_memory = 1024;
        assert_eq!(
            ids(&rank(all(), &q, &policy(), NOW)),
            [big.address, gpu.address]
        );
        // RAM: an undeclared amount does not satisfy a RAM requirement.
        q.min_ram_gb = 32.0;
        assert_eq!(ids(&rank(all(), &q, &policy(), NOW)), [gpu.address]);
        // The region hint reorders, it does not filter.
        let mut q = req();
        q.region = Some("eu".into());
        assert_eq!(
            ids(&rank(all(), &q, &policy(), NOW)),
            [gpu.address, cpu.address, big.address]
        );
        // Job types: any of them.
        let mut q = req();
        q.capabilities_any = vec!["training".into(), "inference".into()];
        assert_eq!(rank(all(), &q, &policy(), NOW).offers.len(), 3);
        q.capabilities_any = vec!["training".into()];
        assert!(rank(all(), &q, &policy(), NOW).offers.is_empty());
        // top_k.
        let mut q = req();
        q.top_k = 1;
        assert_eq!(ids(&rank(all(), &q, &policy(), NOW)), [cpu.address]);
    }

    #[test]
    fn full_stale_and_cooled_down_miners_are_left_out_unless_panic() {
        let a = miner(1, 1024, None, None);
        let b = miner(2, 1024, None, None);
        let c = miner(3, 1024, None, None);
        let mut stale = candidate(&a, 0.9, 0, 0);
        if let Some(s) = stale.status.as_mut() {
            s.reported_at = NOW - 120_000;
        }
        let full = candidate(&b, 0.9, 2, 0);
        let r = rank(
            [stale, full, candidate(&c, 0.1, 0, 0)],
            &req(),
            &policy(),
            NOW,
        );
        assert_eq!(r.offers.len(), 1);
        assert_eq!(r.offers[0].address, c.address);
        // One cooled down of two: healthy share 0.5 is not below the threshold.
        let r = rank(
            [candidate(&a, 0.9, 0, NOW + 10), candidate(&b, 0.1, 0, 0)],
            &req(),
            &policy(),
            NOW,
        );
        assert!(!r.panic);
        assert_eq!(r.offers.len(), 1);
        // Both cooled down: panic, both ranked.
        let r = rank(
            [
                candidate(&a, 0.9, 0, NOW + 10),
                candidate(&b, 0.1, 0, NOW + 10),
            ],
            &req(),
            &policy(),
            NOW,
        );
        assert!(r.panic);
        assert_eq!(r.offers.len(), 2);
        assert!(r.offers[0].cooled_down);
    }

    #[test]
    fn the_sla_rule() {
        assert_eq!(sla_status(0, 0, 0), SlaStatus::Healthy);
        assert_eq!(sla_status(3, 0, 0), SlaStatus::Critical);
        assert_eq!(sla_status(3, 3, 0), SlaStatus::Healthy);
        assert_eq!(sla_status(3, 3, 1), SlaStatus::Degraded);
        assert_eq!(sla_status(4, 4, 2), SlaStatus::Critical);
    }

    proptest! {
        /// The walk's bounded selection gives exactly what sorting every fitting miner and
        /// keeping the first top_k would, cooled-down miners and panic mode included.
        #[test]
        fn the_selection_equals_a_full_sort(
            miners_spec in proptest::collection::vec((0.0f64..1.0, any::<bool>(), any::<bool>(), 0u32..2), 0..60),
            k in 1usize..12,
        ) {
            let miners: Vec<Miner> = miners_spec
                .iter()
                .enumerate()
                .map(|(i, (_, eu, _, _))| miner(i as u8, 1024, None, Some(if *eu { "eu" } else { "us" })))
                .collect();
            let cands: Vec<Candidate<'_, u8>> = miners
                .iter()
                .zip(&miners_spec)
                .map(|(m, (s, _, cooled, load))| {
                    candidate(m, (s * 100.0).round() / 100.0, *load, if *cooled { NOW + 1 } else { 0 })
                })
                .collect();
            let mut q = req();
            q.top_k = k;
            q.region = Some("eu".into());
            let got = rank(cands.clone(), &q, &policy(), NOW);
            let mut naive: Vec<Ranked<u8>> = Vec::new();
            for c in &cands {
                naive.push(Ranked {
                    key: c.key,
                    address: c.miner.address,
                    score: c.score,
                    load: c.status.map_or(0, |s| s.current_load),
                    max_concurrent: c.max_concurrent_jobs,
                    eta_ms: 0,
                    in_region: c.miner.profile.as_ref().and_then(|p| p.region.as_deref()) == Some("eu"),
                    cooled_down: c.cooldown_until > NOW,
                });
            }
            let e = Eligible { total: naive.len(), cooled: naive.iter().filter(|r| r.cooled_down).count() };
            prop_assert_eq!(got.panic, e.panic(policy().panic_threshold));
            if !got.panic {
                naive.retain(|r| !r.cooled_down);
            }
            naive.sort_by(order);
            naive.truncate(k);
            let want: Vec<Address> = naive.iter().map(|r| r.address).collect();
            let have: Vec<Address> = got.offers.iter().map(|r| r.address).collect();
            prop_assert_eq!(have, want);
        }

        /// The answer is never longer than top_k, and in-region offers always come first,
        /// each group by score.
        #[test]
        fn ranking_order(scores in proptest::collection::vec((0.0f64..1.0, any::<bool>()), 0..30), k in 1usize..10) {
            let miners: Vec<Miner> = scores
                .iter()
                .enumerate()
                .map(|(i, (_, eu))| miner(i as u8, 1024, None, Some(if *eu { "eu" } else { "us" })))
                .collect();
            let cands = miners.iter().zip(&scores).map(|(m, (s, _))| candidate(m, *s, 0, 0));
            let mut q = req();
            q.top_k = k;
            q.region = Some("eu".into());
            let r = rank(cands, &q, &policy(), NOW);
            prop_assert!(r.offers.len() <= k);
            for w in r.offers.windows(2) {
                prop_assert!(w[0].in_region >= w[1].in_region);
                if w[0].in_region == w[1].in_region {
                    prop_assert!(w[0].score >= w[1].score);
                }
            }
        }
    }
}
