//! What-if replay over a durable store (see [`crate::domain::replay`]): read the miners and
//! the whole outcome history, page by page, and compare two configurations' rankings. Read
//! only. `poolhub replay` runs it on a store it opens (a stopped hub's redb file, or
//! PostgreSQL while hubs run); `POST /api/v1/admin/replay` runs it inside a running hub.

use super::{now_ms, Hub, HubError};
use crate::config::Config;
use crate::domain::replay::{compare, History, ReplayMiner, Report};
use crate::domain::scoring::ScoringParams;
use crate::domain::Invalid;
use crate::store::{DurableStore, Result as StoreResult};

/// Outcomes read per page.
const PAGE: usize = 10_000;
/// Most miners a report lists by name (the counts always cover every miner).
pub const MAX_LISTED: usize = 10_000;

/// Replays `store`'s history under `current` and `candidate`.
pub async fn replay_store(
    store: &dyn DurableStore,
    current: ScoringParams,
    candidate: ScoringParams,
    top: usize,
) -> StoreResult<Report> {
    let miners: Vec<ReplayMiner> = store
        .load_all()
        .await?
        .into_iter()
        .map(|s| ReplayMiner {
            address: s.miner.address,
            stake: s.miner.stake,
            availability: s.availability,
        })
        .collect();
    let mut history = History::default();
    let mut cursor = None;
    loop {
        let (page, next) = store.export_outcomes(cursor, PAGE).await?;
        if page.is_empty() {
            break;
        }
        history.add(&page);
        cursor = next;
    }
    // The folding is CPU work over every outcome: off the async workers.
    let now = now_ms();
    let report = tokio::task::spawn_blocking(move || {
        history.settle();
        let mut r = compare(&miners, &history, &current, &candidate, now, top);
        r.changes.truncate(MAX_LISTED);
        r
    })
    .await
    .map_err(|e| crate::store::StoreError::unavailable(store.backend(), e.to_string()))?;
    Ok(report)
}

/// A candidate configuration from TOML text, validated like a file `serve` would read.
pub fn candidate_from_toml(text: &str) -> Result<Config, Invalid> {
    let cfg = Config::from_toml(text).map_err(|e| Invalid::new("config", e))?;
    cfg.validate()
        .map_err(|e| Invalid::new("config", e.to_string()))?;
    Ok(cfg)
}

impl Hub {
    /// The running configuration against `candidate`, over this hub's stored history.
    pub async fn replay(&self, candidate: &Config, top: usize) -> Result<Report, HubError> {
        if !(1..=10_000).contains(&top) {
            return Err(Invalid::new("top", "must be between 1 and 10000").into());
        }
        let current = self.tuning().params;
        replay_store(
            self.durable.as_ref(),
            current,
            candidate.scoring_params(),
            top,
        )
        .await
        .map_err(|e| self.store_error(e))
    }
}
