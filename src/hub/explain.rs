//! `POST /api/v1/match/explain`: the match a request would get, and why each miner is in it
//! or not. It runs the same selection as a match but reserves nothing and records no match.

use super::matching::{checked, MatchRequest};
use super::{now_ms, Hub, HubError};
use crate::domain::explain::{Answer, Reason};
use crate::domain::matching::MatchCriteria;
use crate::domain::Address;

/// Most miners one explanation lists when no address is given (address order).
pub const MAX_EXPLAINED: usize = 1000;

/// A match explained.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// What a match would answer now: the offers in order, with their scores.
    pub answer: Answer,
    /// Each miner's reason (one, when an address was given), in address order.
    pub miners: Vec<(Address, Reason)>,
    /// More than [`MAX_EXPLAINED`] miners were registered; the rest are not listed.
    pub truncated: bool,
}

impl Hub {
    /// Explains `req` for every miner, or for `only`.
    pub async fn explain(
        &self,
        req: MatchRequest,
        only: Option<Address>,
    ) -> Result<Explanation, HubError> {
        let t = self.tuning();
        let limit = checked(&req, &t.matching)?;
        let job_type = req
            .job_type
            .as_deref()
            .unwrap_or(crate::domain::miner::DEFAULT_JOB_TYPE);
        let now = now_ms();
        let crit = MatchCriteria {
            model: &req.model,
            job_type,
            min_gpu_memory: req.min_gpu_memory.unwrap_or(0),
            max_latency: req.max_latency,
            limit,
            exclude: &req.exclude,
        };
        let found = self
            .registry
            .select(&crit, &t.policy, now, &mut rand::rng());
        let answer = Answer {
            offered: found.offers.iter().map(|o| (o.address, o.score)).collect(),
            panic: found.panic,
        };
        let listed =
            self.registry
                .explain(&crit, &t.policy, now, &answer, only.as_ref(), MAX_EXPLAINED);
        drop(t);
        let (miners, truncated) = match (listed, only) {
            (Some(l), _) => l,
            // Not in the index: banned (a ban removes the miner), or never registered.
            (None, Some(a)) => {
                let banned = self
                    .durable
                    .bans()
                    .await
                    .map_err(|e| self.store_error(e))?
                    .iter()
                    .any(|b| b.address == a);
                let r = if banned {
                    Reason::Banned
                } else {
                    Reason::Unregistered
                };
                (vec![(a, r)], false)
            }
            (None, None) => (Vec::new(), false),
        };
        Ok(Explanation {
            answer,
            miners,
            truncated,
        })
    }
}
