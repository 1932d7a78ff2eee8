//! The index's half of "why not my miner?": a walk over every miner (or one), each judged
//! by [`crate::domain::explain::reason`] against an answer the caller already has.

use super::Registry;
use crate::domain::explain::{reason, Answer, Reason};
use crate::domain::matching::{MatchCriteria, MatchPolicy};
use crate::domain::Address;

impl Registry {
    /// The reason of every miner in address order (at most `max`, and whether more were
    /// left out), or of `only`: `None` when `only` is not in the index.
    pub fn explain(
        &self,
        crit: &MatchCriteria<'_>,
        policy: &MatchPolicy,
        now: u64,
        answer: &Answer,
        only: Option<&Address>,
        max: usize,
    ) -> Option<(Vec<(Address, Reason)>, bool)> {
        let thresholds = *self.thresholds.lock();
        let g = self.inner.read();
        let judge = |id: u32| -> Option<(Address, Reason)> {
            let h = g.entries.get(id as usize)?.as_ref()?;
            let s = g.slots.get(id as usize)?.as_ref()?;
            let c = h.candidate(h.live.match_status(), h.live.reserved(), false);
            let r = reason(&c, crit, policy, now, answer, &s.score.factors, &thresholds);
            Some((h.miner.address, r))
        };
        if let Some(a) = only {
            let id = *g.ids.get(a)?;
            return Some((judge(id).into_iter().collect(), false));
        }
        let mut out: Vec<(Address, Reason)> = g
            .ids
            .values()
            .take(max.saturating_add(1))
            .filter_map(|&id| judge(id))
            .collect();
        let truncated = out.len() > max;
        out.truncate(max);
        Some((out, truncated))
    }
}
