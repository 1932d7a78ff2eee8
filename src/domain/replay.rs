//! What-if replay: the stored outcome history scored again under other weights, thresholds,
//! decay and priors, and the rankings compared. Pure: the caller reads the store.
//!
//! Both sides are replayed from the same history (the running configuration and the
//! candidate), so the comparison shows what the configuration changes and nothing else: a
//! live score also carries outcomes since pruned from the history.

use crate::domain::miner::Address;
use crate::domain::scoring::{
    failed_threshold, score, Availability, MinerStats, OutcomeSample, ScoringParams,
};
use crate::domain::OutcomeRecord;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One miner as the replay needs it.
#[derive(Debug, Clone, Copy)]
pub struct ReplayMiner {
    pub address: Address,
    pub stake: u64,
    /// Availability is sampled, not derived from outcomes: the stored record is used as is.
    pub availability: Availability,
}

/// Outcome samples per miner, in time order, ready to be folded under any decay.
#[derive(Debug, Default)]
pub struct History {
    samples: HashMap<Address, Vec<OutcomeSample>>,
    pub outcomes: u64,
}

impl History {
    pub fn add(&mut self, records: &[OutcomeRecord]) {
        for r in records {
            self.samples.entry(r.address).or_default().push(r.sample());
        }
        self.outcomes += records.len() as u64;
    }

    /// Sorts each miner's samples by time (the store gives them in commit order, which may
    /// differ a little between concurrent outcomes).
    pub fn settle(&mut self) {
        for s in self.samples.values_mut() {
            s.sort_by_key(|x| x.at);
        }
    }

    /// The miner's statistics as its outcomes build them under `decay_factor`.
    fn stats(&self, address: &Address, decay_factor: f64) -> MinerStats {
        let mut st = MinerStats::default();
        if let Some(samples) = self.samples.get(address) {
            for s in samples {
                st = st.with_outcome(*s, decay_factor);
            }
        }
        st
    }
}

/// One miner's place under one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ReplayStanding)]
pub struct Standing {
    /// 1 = best.
    pub rank: usize,
    pub score: f64,
    /// Whether it meets the thresholds.
    pub passes: bool,
}

/// One miner under both configurations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ReplayChange)]
pub struct Change {
    pub address: Address,
    pub current: Standing,
    pub candidate: Standing,
    /// Positive: it moves up (a better rank) under the candidate.
    pub rank_change: i64,
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ReplayReport)]
pub struct Report {
    pub miners: usize,
    pub outcomes: u64,
    pub top: usize,
    /// How many of the current top `top` are also in the candidate's top `top`.
    pub top_overlap: usize,
    /// Every miner, by its rank under the candidate.
    pub changes: Vec<Change>,
    /// Miners that fail the thresholds now and would pass under the candidate.
    pub newly_pass: Vec<Address>,
    /// Miners that pass now and would fail under the candidate.
    pub newly_fail: Vec<Address>,
}

/// Every miner's standing under `p` at `now`: scored from its replayed statistics, ranked by
/// score (ties by address, so the ranking is deterministic).
pub fn standings(
    miners: &[ReplayMiner],
    history: &History,
    p: &ScoringParams,
    now: u64,
) -> HashMap<Address, Standing> {
    let mut scored: Vec<(Address, f64, bool)> = miners
        .iter()
        .map(|m| {
            let stats = history.stats(&m.address, p.decay_factor);
            let s = score(&stats, &m.availability, m.stake, now, p);
            let passes = failed_threshold(&s.factors, &p.thresholds).is_none();
            (m.address, s.value, passes)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
        .into_iter()
        .enumerate()
        .map(|(i, (a, score, passes))| {
            (
                a,
                Standing {
                    rank: i + 1,
                    score,
                    passes,
                },
            )
        })
        .collect()
}

/// Replays `history` under `current` and `candidate` and compares the rankings.
pub fn compare(
    miners: &[ReplayMiner],
    history: &History,
    current: &ScoringParams,
    candidate: &ScoringParams,
    now: u64,
    top: usize,
) -> Report {
    let before = standings(miners, history, current, now);
    let after = standings(miners, history, candidate, now);
    let mut changes: Vec<Change> = miners
        .iter()
        .filter_map(|m| {
            let (c, n) = (before.get(&m.address)?, after.get(&m.address)?);
            Some(Change {
                address: m.address,
                current: *c,
                candidate: *n,
                rank_change: c.rank as i64 - n.rank as i64,
            })
        })
        .collect();
    changes.sort_by_key(|c| c.candidate.rank);
    let top_overlap = changes
        .iter()
        .filter(|c| c.current.rank <= top && c.candidate.rank <= top)
        .count();
    let newly_pass = changes
        .iter()
        .filter(|c| !c.current.passes && c.candidate.passes)
        .map(|c| c.address)
        .collect();
    let newly_fail = changes
        .iter()
        .filter(|c| c.current.passes && !c.candidate.passes)
        .map(|c| c.address)
        .collect();
    Report {
        miners: changes.len(),
        outcomes: history.outcomes,
        top,
        top_overlap,
        changes,
        newly_pass,
        newly_fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000_000;

    fn a(i: u8) -> Address {
        Address::from_bytes([i; 20])
    }

    fn outcome(i: u8, success: bool, latency: f64, at: u64) -> OutcomeRecord {
        OutcomeRecord {
            match_id: format!("{:032x}", at),
            address: a(i),
            success,
            latency_ms: Some(latency),
            at,
            error: None,
        }
    }

    fn miners(n: u8) -> Vec<ReplayMiner> {
        (1..=n)
            .map(|i| ReplayMiner {
                address: a(i),
                stake: 0,
                availability: Availability::default(),
            })
            .collect()
    }

    /// Miner 1: fast but failing half the time. Miner 2: slow and reliable.
    fn history() -> History {
        let mut h = History::default();
        let mut recs = Vec::new();
        for k in 0..40u64 {
            recs.push(outcome(1, k % 2 == 0, 200.0, NOW - 3_600_000 + k * 1000));
            recs.push(outcome(2, true, 4000.0, NOW - 3_600_000 + k * 1000));
        }
        h.add(&recs);
        h.settle();
        h
    }

    #[test]
    fn weights_that_favour_latency_reorder_and_thresholds_are_reported() {
        let current = ScoringParams::default();
        let mut candidate = current;
        candidate.weights.success_rate = 0.1;
        candidate.weights.latency = 0.6;
        candidate.weights.availability = 0.2;
        candidate.weights.reputation = 0.1;
        candidate.thresholds.min_success_rate = 0.4;
        let r = compare(&miners(3), &history(), &current, &candidate, NOW, 1);
        assert_eq!(r.outcomes, 80);
        let by = |i: u8| r.changes.iter().find(|c| c.address == a(i)).unwrap();
        // Under the defaults the reliable miner leads; under latency weights the fast one.
        assert!(by(2).current.rank < by(1).current.rank);
        assert_eq!(by(1).candidate.rank, 1);
        assert!(by(1).rank_change > 0);
        assert_eq!(r.top_overlap, 0);
        // Miner 1's 50 % success fails min_success_rate 0.8 and passes 0.4.
        assert_eq!(r.newly_pass, vec![a(1)]);
        assert!(r.newly_fail.is_empty());
        // Miner 3 has no history: it stands on its priors under both.
        assert!(by(3).current.passes && by(3).candidate.passes);
    }

    proptest! {
        #[test]
        fn the_same_configuration_changes_nothing(
            outcomes in proptest::collection::vec((1u8..6, any::<bool>(), 1.0f64..6000.0, 0u64..3_600_000), 0..200),
            top in 1usize..6,
        ) {
            let mut h = History::default();
            let recs: Vec<_> = outcomes.iter().map(|&(i, ok, l, t)| outcome(i, ok, l, NOW - t)).collect();
            h.add(&recs);
            h.settle();
            let p = ScoringParams::default();
            let r = compare(&miners(5), &h, &p, &p, NOW, top);
            prop_assert_eq!(r.top_overlap, top.min(5));
            prop_assert!(r.changes.iter().all(|c| c.rank_change == 0 && c.current == c.candidate));
            prop_assert!(r.newly_pass.is_empty() && r.newly_fail.is_empty());
            // Ranks are 1..=n, each once, and follow the scores.
            let mut ranks: Vec<_> = r.changes.iter().map(|c| c.candidate.rank).collect();
            ranks.sort_unstable();
            prop_assert_eq!(ranks, (1..=5).collect::<Vec<_>>());
            prop_assert!(r.changes.windows(2).all(|w| w[0].candidate.score >= w[1].candidate.score));
        }
    }
}
