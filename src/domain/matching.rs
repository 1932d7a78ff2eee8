//! Matching: which of the candidate miners should run a job, best first.
//!
//! A pure function over candidates that the caller yields **best score first** (the registry
//! keeps miners sorted by score per model). That order lets the scan stop as soon as the
//! answer is settled, so a match over 100,000 miners usually looks at a few dozen of them.
//!
//! Load balancing: miners whose score is within `tie_epsilon` of the best are equally good;
//! among them the least-loaded come first (load counts the slots this hub reserved for
//! matches whose outcome has not arrived), and remaining ties are broken at random. Concurrent
//! matches therefore spread over equally good miners instead of all naming the same one.
//!
//! Failover: cooled-down miners (see [`crate::domain::scoring::cooldown_until`]) are left out,
//! unless fewer than `panic_threshold` of the eligible miners are healthy; then the hub
//! "panics" as Envoy does and ranks all of them, so failures can never empty the pool. Like
//! Envoy, the share is taken over the whole eligible set ([`Eligible`], counts the index
//! keeps), never over the few candidates a scan looked at before it stopped: those are the
//! best-scored ones, exactly where recently failed miners may cluster.

use crate::domain::miner::{Address, Miner, MinerStatus};
use crate::domain::scoring::{thermal_factor, too_hot, Thresholds};
use rand::Rng;

/// What the client asks for.
#[derive(Debug, Clone)]
pub struct MatchCriteria<'a> {
    pub model: &'a str,
    pub job_type: &'a str,
    /// MiB.
    pub min_gpu_memory: u64,
    /// Upper bound on `estimated_time`, ms.
    pub max_latency: Option<f64>,
    pub limit: usize,
    /// Addresses the client does not want.
    pub exclude: &'a [Address],
}

/// The hub's matching policy, from configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchPolicy {
    /// A status older than this (ms) means the miner is offline.
    pub heartbeat_timeout_ms: u64,
    /// Scores closer than this to the best are treated as equal for load balancing.
    pub tie_epsilon: f64,
    /// See the module doc.
    pub panic_threshold: f64,
    /// Most healthy candidates examined before the scan stops (at least `limit`).
    pub scan_cap: usize,
    /// `max_temperature` and `derate_temperature` (the rest of the thresholds are applied
    /// through [`Candidate::qualified`]).
    pub thermal: Thresholds,
}

/// One miner as the matcher sees it.
///
/// The numbers are copied from the index's compact per-miner record; `miner` is only
/// dereferenced for candidates that pass the cheap checks, so a walk past busy or offline
/// miners touches as little memory as possible.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a, K> {
    /// Opaque handle for the caller (the registry's slot).
    pub key: K,
    pub miner: &'a Miner,
    pub score: f64,
    /// Prior-smoothed average latency, ms.
    pub avg_latency_ms: f64,
    /// Whether the miner meets the scoring thresholds
    /// ([`crate::domain::scoring::passes_thresholds`]).
    pub qualified: bool,
    pub gpu_memory: u64,
    pub max_concurrent_jobs: u32,
    pub status: Option<MinerStatus>,
    /// Slots reserved by matches still waiting for their outcome.
    pub reserved: u32,
    /// Unix ms until which the miner is cooled down (0 = not).
    pub cooldown_until: u64,
    /// The caller found the miner through an index of the requested model, so it is known
    /// to serve it and the per-candidate string comparison is skipped (it was a tenth of a
    /// match's CPU in the profile).
    pub serves_model: bool,
}

/// The set panic mode is judged on: the miners that could take a job for the model (online,
/// with room, meeting the thresholds), and how many of them are cooled down right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Eligible {
    pub total: usize,
    pub cooled: usize,
}

impl Eligible {
    /// Whether cooled-down miners must be ranked too: fewer than `threshold` of the eligible
    /// miners are healthy (Envoy's panic threshold).
    pub fn panic(&self, threshold: f64) -> bool {
        let healthy = self.total.saturating_sub(self.cooled);
        self.cooled > 0 && (healthy as f64) < threshold * self.total as f64
    }
}

/// One miner a match offers, ranked (the word for a chosen miner at every layer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offer<K> {
    pub key: K,
    pub address: Address,
    pub score: f64,
    /// Milliseconds: observed latency stretched by current load.
    pub estimated_time: f64,
    /// Reported load plus reservations.
    pub load: u32,
    pub cooled_down: bool,
}

impl<K> Offer<K> {
    /// The same offer under the caller's own key (the registry swaps its slot number for a
    /// handle on the miner).
    pub fn with_key<L>(self, key: L) -> Offer<L> {
        Offer {
            key,
            address: self.address,
            score: self.score,
            estimated_time: self.estimated_time,
            load: self.load,
            cooled_down: self.cooled_down,
        }
    }
}

/// What matching answers: the offers, best first, and whether panic mode was on.
#[derive(Debug, Clone, PartialEq)]
pub struct Match<K> {
    pub offers: Vec<Offer<K>>,
    /// True when cooled-down miners were included because too few healthy ones were left.
    pub panic: bool,
}

/// Observed latency stretched by how full the miner is: a miner at half its concurrency
/// limit is expected to take 1.5 times its average.
pub fn estimated_time(avg_latency_ms: f64, load: u32, max_concurrent: u32) -> f64 {
    avg_latency_ms * (1.0 + f64::from(load) / f64::from(max_concurrent.max(1)))
}

/// Whether the miner's last heartbeat is recent enough.
pub fn is_fresh(status: &MinerStatus, now: u64, heartbeat_timeout_ms: u64) -> bool {
    now.saturating_sub(status.reported_at) <= heartbeat_timeout_ms
}

/// Why a candidate is not offered, as far as the candidate alone decides it (ranking
/// against the others, bans and thresholds' details are the caller's). The codes of
/// `POST /api/v1/match/explain` are built on these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// No status, or the last one is older than the heartbeat timeout (`reported_at` in
    /// unix ms, when there is one).
    Offline {
        reported_at: Option<u64>,
    },
    /// The miner reports itself unavailable.
    Unavailable,
    /// Every slot is taken: reported load plus reservations.
    Full {
        load: u32,
        slots: u32,
    },
    GpuMemory {
        have: u64,
        need: u64,
    },
    /// It fails one of `[thresholds]` (the caller names which).
    Threshold,
    /// Its estimated time is over the request's `max_latency`.
    Latency {
        estimated: f64,
        max: f64,
    },
    /// Its GPU is hotter than `thresholds.max_temperature`.
    Temperature {
        value: f64,
        limit: f64,
    },
    JobType,
    Model,
    /// The request's `exclude` names it.
    Excluded,
}

/// Whether `c` can take this job, and the offer it makes if so (its score derated for heat,
/// see [`thermal_factor`]).
pub fn verdict<K: Copy>(
    c: &Candidate<'_, K>,
    crit: &MatchCriteria<'_>,
    policy: &MatchPolicy,
    now: u64,
) -> Result<Offer<K>, Refusal> {
    // Cheapest and most often failing checks first; `c.miner` is read last.
    let Some(status) = c.status else {
        return Err(Refusal::Offline { reported_at: None });
    };
    if !is_fresh(&status, now, policy.heartbeat_timeout_ms) {
        return Err(Refusal::Offline {
            reported_at: Some(status.reported_at),
        });
    }
    if !status.available {
        return Err(Refusal::Unavailable);
    }
    let load = status.current_load.saturating_add(c.reserved);
    if load >= c.max_concurrent_jobs {
        return Err(Refusal::Full {
            load,
            slots: c.max_concurrent_jobs,
        });
    }
    if c.gpu_memory < crit.min_gpu_memory {
        return Err(Refusal::GpuMemory {
            have: c.gpu_memory,
            need: crit.min_gpu_memory,
        });
    }
    if !c.qualified {
        return Err(Refusal::Threshold);
    }
    if too_hot(status.temperature, &policy.thermal) {
        return Err(Refusal::Temperature {
            value: status.temperature.unwrap_or_default(),
            limit: policy.thermal.max_temperature,
        });
    }
    let est = estimated_time(c.avg_latency_ms, load, c.max_concurrent_jobs);
    if let Some(max) = crit.max_latency.filter(|&m| est > m) {
        return Err(Refusal::Latency {
            estimated: est,
            max,
        });
    }
    if !c.miner.serves_job_type(crit.job_type) {
        return Err(Refusal::JobType);
    }
    if !(c.serves_model || c.miner.serves_model(crit.model)) {
        return Err(Refusal::Model);
    }
    if crit.exclude.contains(&c.miner.address) {
        return Err(Refusal::Excluded);
    }
    Ok(Offer {
        key: c.key,
        address: c.miner.address,
        score: c.score * thermal_factor(status.temperature, &policy.thermal),
        estimated_time: est,
        load,
        cooled_down: c.cooldown_until > now,
    })
}

fn eligible_offer<K: Copy>(
    c: &Candidate<'_, K>,
    crit: &MatchCriteria<'_>,
    policy: &MatchPolicy,
    now: u64,
) -> Option<Offer<K>> {
    verdict(c, crit, policy, now).ok()
}

/// Chooses up to `crit.limit` miners from `candidates` (best score first), see the module doc.
///
/// Panic mode: a scan that stops early has seen only the best-scored few, so it goes by
/// `eligible`, the index's counts over the model's whole eligible set. A scan that walked
/// every candidate has seen this request's whole eligible set (its filters included) and
/// goes by that.
pub fn select<'a, K: Copy + 'a>(
    candidates: impl IntoIterator<Item = Candidate<'a, K>>,
    crit: &MatchCriteria<'_>,
    policy: &MatchPolicy,
    eligible: Eligible,
    now: u64,
    rng: &mut impl Rng,
) -> Match<K> {
    let limit = crit.limit;
    let by_counts = eligible.panic(policy.panic_threshold);
    if limit == 0 {
        return Match {
            offers: Vec::new(),
            panic: by_counts,
        };
    }
    let cap = policy.scan_cap.max(limit);
    let mut pool: Vec<(Offer<K>, u32)> = Vec::with_capacity(limit.min(64));
    // Cooled-down candidates, in case the walk ends up deciding on panic after all.
    let mut aside: Vec<(Offer<K>, u32)> = Vec::new();
    let mut seen = Eligible::default();
    let mut truncated = false;
    let mut best: Option<f64> = None;
    for c in candidates {
        if pool.len() >= limit {
            if let Some(b) = best {
                // Every candidate from here on offers at most `c.score` (heat only lowers an
                // offer), so once `limit` offers in hand reach it and it is out of the best's
                // tie band, the answer is settled.
                let settled = c.score < b - policy.tie_epsilon
                    && pool.iter().filter(|p| p.0.score >= c.score).count() >= limit;
                if settled || pool.len() >= cap {
                    truncated = true;
                    break;
                }
            }
        }
        let Some(pick) = eligible_offer(&c, crit, policy, now) else {
            continue;
        };
        seen.total += 1;
        if pick.cooled_down {
            seen.cooled += 1;
            if !by_counts {
                // Bound the memory a mass cooldown can make one match use.
                if aside.len() < cap {
                    aside.push((pick, c.max_concurrent_jobs));
                }
                continue;
            }
        }
        best = Some(best.map_or(pick.score, |b: f64| b.max(pick.score)));
        pool.push((pick, c.max_concurrent_jobs));
    }
    let panic = if truncated {
        by_counts
    } else {
        seen.panic(policy.panic_threshold)
    };
    if panic && !by_counts {
        pool.extend(aside);
    } else if !panic && by_counts {
        pool.retain(|p| !p.0.cooled_down);
    }

    pool.sort_by(|a, b| b.0.score.total_cmp(&a.0.score));

    // Equally good miners: least loaded first, the rest of the tie broken at random.
    if let Some(top) = pool.first().map(|p| p.0.score) {
        let band = pool
            .iter()
            .take_while(|p| p.0.score >= top - policy.tie_epsilon)
            .count();
        let lf = |p: &(Offer<K>, u32)| f64::from(p.0.load) / f64::from(p.1.max(1));
        let mut keyed: Vec<(f64, u32, (Offer<K>, u32))> = pool
            .drain(..band)
            .map(|p| (lf(&p), rng.random::<u32>(), p))
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let rest = std::mem::take(&mut pool);
        pool = keyed.into_iter().map(|k| k.2).chain(rest).collect();
    }
    pool.truncate(limit);
    Match {
        offers: pool.into_iter().map(|p| p.0).collect(),
        panic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::miner::{Capabilities, Endpoint};
    use crate::domain::scoring::{passes_thresholds, Factors, Score, Thresholds};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const NOW: u64 = 1_700_000_000_000;

    fn miner(i: u8, mem: u64, conc: u32) -> Miner {
        let mut a = [0u8; 20];
        a[19] = i;
        Miner {
            address: Address::from_bytes(a),
            endpoint: Endpoint::try_from(format!("http://m{i}.example.com")).unwrap(),
            capabilities: Capabilities {
                models: vec!["llama3.2".into()],
                gpu_memory: mem,
                max_concurrent_jobs: conc,
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

    fn score(v: f64, lat: f64) -> Score {
        Score {
            value: v,
            factors: Factors {
                success_rate: 0.99,
                latency: 0.9,
                availability: 0.99,
                reputation: 0.5,
                avg_latency_ms: lat,
                jobs: 100.0,
            },
        }
    }

    fn status(load: u32) -> Option<MinerStatus> {
        Some(MinerStatus {
            available: true,
            current_load: load,
            gpu_utilization: 0.5,
            temperature: None,
            reported_at: NOW - 1000,
            resources: Default::default(),
        })
    }

    fn policy() -> MatchPolicy {
        MatchPolicy {
            heartbeat_timeout_ms: 30_000,
            tie_epsilon: 0.0001,
            panic_threshold: 0.5,
            scan_cap: 64,
            thermal: crate::domain::scoring::Thresholds::default(),
        }
    }

    fn crit(limit: usize) -> MatchCriteria<'static> {
        MatchCriteria {
            model: "llama3.2",
            job_type: "inference",
            min_gpu_memory: 8192,
            max_latency: Some(5000.0),
            limit,
            exclude: &[],
        }
    }

    struct World {
        miners: Vec<Miner>,
        scores: Vec<Score>,
        statuses: Vec<Option<MinerStatus>>,
        reserved: Vec<u32>,
        cooldown: Vec<u64>,
    }

    impl World {
        fn candidates(&self) -> Vec<Candidate<'_, usize>> {
            let mut v: Vec<_> = (0..self.miners.len())
                .map(|i| Candidate {
                    key: i,
                    miner: &self.miners[i],
                    score: self.scores[i].value,
                    avg_latency_ms: self.scores[i].factors.avg_latency_ms,
                    qualified: passes_thresholds(&self.scores[i].factors, &Thresholds::default()),
                    gpu_memory: self.miners[i].capabilities.gpu_memory,
                    max_concurrent_jobs: self.miners[i].capabilities.max_concurrent_jobs,
                    status: self.statuses[i],
                    reserved: self.reserved[i],
                    cooldown_until: self.cooldown[i],
                    serves_model: false,
                })
                .collect();
            v.sort_by(|a, b| b.score.total_cmp(&a.score));
            v
        }

        /// The counts the index keeps: online, with room, qualified; and of those, cooled.
        fn eligible(&self) -> Eligible {
            let p = policy();
            let mut e = Eligible::default();
            for c in self.candidates() {
                let open = c.status.is_some_and(|s| {
                    s.available
                        && is_fresh(&s, NOW, p.heartbeat_timeout_ms)
                        && s.current_load + c.reserved < c.max_concurrent_jobs
                });
                if open && c.qualified {
                    e.total += 1;
                    if c.cooldown_until > NOW {
                        e.cooled += 1;
                    }
                }
            }
            e
        }
    }

    fn world(n: u8) -> World {
        World {
            miners: (0..n).map(|i| miner(i, 16384, 4)).collect(),
            scores: (0..n)
                .map(|i| score(0.5 + f64::from(i) / 1000.0, 1000.0))
                .collect(),
            statuses: (0..n).map(|_| status(0)).collect(),
            reserved: vec![0; n as usize],
            cooldown: vec![0; n as usize],
        }
    }

    fn pick_keys(w: &World, c: &MatchCriteria<'_>) -> Match<usize> {
        select(
            w.candidates(),
            c,
            &policy(),
            w.eligible(),
            NOW,
            &mut StdRng::seed_from_u64(7),
        )
    }

    #[test]
    fn ranks_by_score_and_applies_every_filter() {
        let mut w = world(8);
        w.miners[7].capabilities.gpu_memory = 4096; // too little memory
        w.statuses[6].as_mut().unwrap().available = false; // not available
        w.statuses[5].as_mut().unwrap().reported_at = NOW - 31_000; // stale
        w.statuses[4] = status(4); // full
        w.scores[3].factors.success_rate = 0.5; // below threshold
        w.scores[2].factors.avg_latency_ms = 4000.0;
        w.statuses[2] = status(3); // estimated 7000 ms > max_latency
        let sel = pick_keys(&w, &crit(5));
        let keys: Vec<_> = sel.offers.iter().map(|p| p.key).collect();
        assert_eq!(keys, vec![1, 0]);
        assert!(!sel.panic);
        assert!((sel.offers[0].estimated_time - 1000.0).abs() < 1e-9);
    }

    fn hot(temp: f64) -> Option<MinerStatus> {
        status(0).map(|s| MinerStatus {
            temperature: Some(temp),
            ..s
        })
    }

    #[test]
    fn too_hot_miners_are_left_out_and_warm_ones_derated() {
        // Scores 0.500 … 0.507: 7 is the best on record.
        let mut w = world(8);
        w.statuses[7] = hot(95.0); // over max_temperature: not matched
        w.statuses[6] = hot(89.0); // derated to 0.55 of its score
        w.statuses[5] = hot(80.0); // at derate_temperature: untouched
        let sel = pick_keys(&w, &crit(8));
        let keys: Vec<_> = sel.offers.iter().map(|p| p.key).collect();
        assert_eq!(keys, vec![5, 4, 3, 2, 1, 0, 6]);
        let six = sel.offers.iter().find(|o| o.key == 6).unwrap();
        assert!((six.score - 0.506 * 0.55).abs() < 1e-9, "{}", six.score);
        // The scan stops early only when the derated offers in hand settle the answer: after
        // 7 (cool) and 6 (derated to 0.28), 5 (0.505) is below the best's tie band, yet it
        // still beats 6 for the second place.
        let mut w = world(8);
        w.statuses[6] = hot(89.0);
        let sel = pick_keys(&w, &crit(2));
        let keys: Vec<_> = sel.offers.iter().map(|p| p.key).collect();
        assert_eq!(keys, vec![7, 5]);
        let mut w = world(8);
        w.statuses[7] = hot(89.0);
        assert_eq!(
            verdict(&w.candidates()[0], &crit(1), &policy(), NOW).map(|o| o.key),
            Ok(7)
        );
        let mut w = world(2);
        w.statuses[1] = hot(91.0);
        let c = w.candidates();
        assert_eq!(
            verdict(&c[0], &crit(1), &policy(), NOW),
            Err(Refusal::Temperature {
                value: 91.0,
                limit: 90.0
            })
        );
    }

    #[test]
    fn every_refusal_is_named() {
        let mut w = world(8);
        w.miners[7].capabilities.gpu_memory = 4096;
        w.statuses[6].as_mut().unwrap().available = false;
        w.statuses[5].as_mut().unwrap().reported_at = NOW - 31_000;
        w.statuses[4] = status(4);
        w.scores[3].factors.success_rate = 0.5;
        w.statuses[2] = None;
        let why = |i: usize| {
            let c = w.candidates().into_iter().find(|c| c.key == i).unwrap();
            verdict(&c, &crit(5), &policy(), NOW).err()
        };
        assert_eq!(
            why(7),
            Some(Refusal::GpuMemory {
                have: 4096,
                need: 8192
            })
        );
        assert_eq!(why(6), Some(Refusal::Unavailable));
        assert_eq!(
            why(5),
            Some(Refusal::Offline {
                reported_at: Some(NOW - 31_000)
            })
        );
        assert_eq!(why(4), Some(Refusal::Full { load: 4, slots: 4 }));
        assert_eq!(why(3), Some(Refusal::Threshold));
        assert_eq!(why(2), Some(Refusal::Offline { reported_at: None }));
        assert_eq!(why(1), None);
    }

    #[test]
    fn exclude_and_job_type_and_model() {
        let w = world(3);
        let ex = [w.miners[2].address];
        let c = MatchCriteria {
            exclude: &ex,
            ..crit(5)
        };
        assert_eq!(pick_keys(&w, &c).offers.len(), 2);
        let c = MatchCriteria {
            job_type: "training",
            ..crit(5)
        };
        assert!(pick_keys(&w, &c).offers.is_empty());
        let c = MatchCriteria {
            model: "mistral",
            ..crit(5)
        };
        assert!(pick_keys(&w, &c).offers.is_empty());
    }

    #[test]
    fn reservations_count_as_load_and_spread_ties() {
        let mut w = world(3);
        for s in &mut w.scores {
            s.value = 0.9;
        }
        w.reserved[0] = 1;
        w.reserved[1] = 1;
        let sel = pick_keys(&w, &crit(1));
        assert_eq!(sel.offers[0].key, 2, "least loaded of equals first");
        w.reserved = vec![4, 0, 0];
        let sel = pick_keys(&w, &crit(5));
        assert!(
            sel.offers.iter().all(|p| p.key != 0),
            "full after reservations"
        );
    }

    #[test]
    fn random_tie_break_spreads_first_pick() {
        let mut w = world(10);
        for s in &mut w.scores {
            s.value = 0.9;
        }
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let sel = select(
                w.candidates(),
                &crit(1),
                &policy(),
                w.eligible(),
                NOW,
                &mut rng,
            );
            seen.insert(sel.offers[0].key);
        }
        assert!(seen.len() >= 8, "only {} distinct first offers", seen.len());
    }

    #[test]
    fn cooled_miners_are_skipped_until_panic() {
        let mut w = world(4);
        w.cooldown[3] = NOW + 1000;
        let sel = pick_keys(&w, &crit(5));
        assert!(sel.offers.iter().all(|p| p.key != 3));
        assert!(!sel.panic);
        // Three of four cooled: 25% healthy < 50% panic threshold -> all ranked.
        w.cooldown = vec![0, NOW + 1000, NOW + 1000, NOW + 1000];
        let sel = pick_keys(&w, &crit(5));
        assert!(sel.panic);
        assert_eq!(sel.offers.len(), 4);
        assert_eq!(sel.offers[0].key, 3);
        // All cooled: still never empty.
        w.cooldown = vec![NOW + 1000; 4];
        assert_eq!(pick_keys(&w, &crit(5)).offers.len(), 4);
    }

    #[test]
    fn panic_threshold_is_a_share_of_the_whole_eligible_set() {
        let e = |total, cooled| Eligible { total, cooled };
        assert!(!e(0, 0).panic(0.5));
        assert!(!e(10, 0).panic(0.5));
        assert!(!e(1010, 2).panic(0.5));
        assert!(!e(10, 5).panic(0.5), "exactly half healthy is enough");
        assert!(e(10, 6).panic(0.5));
        assert!(e(3, 3).panic(0.5));
        assert!(!e(3, 3).panic(0.0), "a zero threshold never panics");
    }

    /// A walk that saw every candidate knows this request's eligible set exactly: when its
    /// filters leave only cooled-down miners, it panics rather than answer nothing, whatever
    /// the model-wide counts say.
    #[test]
    fn a_complete_walk_decides_panic_on_what_this_request_can_use() {
        let mut w = world(4);
        w.cooldown[3] = NOW + 1000;
        let ex: Vec<Address> = w.miners[..3].iter().map(|m| m.address).collect();
        let c = MatchCriteria {
            exclude: &ex,
            ..crit(5)
        };
        let sel = pick_keys(&w, &c);
        assert!(sel.panic);
        assert_eq!(
            sel.offers.iter().map(|p| p.key).collect::<Vec<_>>(),
            vec![3]
        );
    }

    /// Defect 1 at the matcher: the scan stops early, yet two cooled-down miners at the top
    /// of a large healthy pool neither trigger panic nor come first.
    #[test]
    fn cooled_miners_at_the_top_of_a_healthy_pool_are_skipped() {
        let mut w = world(200);
        w.cooldown[199] = NOW + 1000;
        w.cooldown[198] = NOW + 1000;
        let sel = pick_keys(&w, &crit(1));
        assert!(!sel.panic);
        assert_eq!(sel.offers[0].key, 197);
    }

    proptest! {
        #[test]
        fn result_is_bounded_filtered_and_ordered(
            scores in proptest::collection::vec(0.0f64..1.0, 1..80),
            loads in proptest::collection::vec(0u32..6, 80),
            avail in proptest::collection::vec(any::<bool>(), 80),
            limit in 0usize..20,
            seed in any::<u64>(),
        ) {
            let n = scores.len();
            let mut w = world(n as u8);
            for i in 0..n {
                w.scores[i].value = scores[i];
                w.statuses[i] = status(loads[i]);
                w.statuses[i].as_mut().unwrap().available = avail[i];
            }
            let p = policy();
            let sel = select(w.candidates(), &crit(limit), &p, w.eligible(), NOW, &mut StdRng::seed_from_u64(seed));
            prop_assert!(sel.offers.len() <= limit);
            let eligible = (0..n).filter(|&i| avail[i] && loads[i] < 4).count();
            prop_assert_eq!(sel.offers.len(), eligible.min(limit));
            let mut seen = std::collections::HashSet::new();
            for pk in &sel.offers {
                prop_assert!(seen.insert(pk.key), "duplicate pick");
                prop_assert!(avail[pk.key] && loads[pk.key] < 4);
            }
            // Outside the tie band at the top, order is by score.
            if let Some(top) = sel.offers.first().map(|p| p.score) {
                let rest: Vec<f64> = sel.offers.iter().map(|p| p.score)
                    .filter(|s| *s < top - p.tie_epsilon).collect();
                prop_assert!(rest.windows(2).all(|w| w[0] >= w[1]));
                // No eligible miner outside the answer beats one inside it by more than a tie.
                let worst = sel.offers.iter().map(|p| p.score).fold(f64::INFINITY, f64::min);
                for i in 0..n {
                    if avail[i] && loads[i] < 4 && !seen.contains(&i) {
                        prop_assert!(scores[i] <= worst + p.tie_epsilon + 1e-12 || sel.offers.len() < limit);
                    }
                }
            }
        }
    }
}
