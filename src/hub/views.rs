//! The hub's read side, as the HTTP handlers need it: pages of miners, the status snapshot and
//! storage health. Handlers call these instead of reaching into the registry, so the index
//! can change shape without the HTTP layer noticing.

use super::{now_ms, Hub};
use crate::domain::Address;
use crate::registry::{Counts, MinerView};
use crate::store::StoreError;

/// Which miners a page lists.
#[derive(Debug, Clone, Default)]
pub struct MinerFilter {
    /// Only miners serving this model.
    pub model: Option<String>,
    /// Only miners that are (true) or are not (false) online and reporting available.
    pub available: Option<bool>,
    /// Miners after this address (the previous page's cursor).
    pub after: Option<Address>,
    /// Most miners on the page.
    pub limit: usize,
}

/// One page of miners, in address order.
#[derive(Debug, Clone)]
pub struct MinerPage {
    pub miners: Vec<MinerView>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Address>,
}

/// One storage backend's health as clients may see it: a generic reason, never the backend's
/// own error text (which can carry hosts, users or paths). The detail goes to the log.
#[derive(Debug, Clone)]
pub struct StorageHealth {
    pub role: &'static str,
    pub backend: &'static str,
    pub healthy: bool,
    /// Why it is unhealthy, in words safe to show anyone.
    pub reason: Option<String>,
}

/// What `/api/v1/status` shows.
#[derive(Debug, Clone)]
pub struct HubStatus {
    pub uptime_seconds: u64,
    pub storage: Vec<StorageHealth>,
    pub miners: Counts,
    pub matches_served: u64,
    pub reservations_in_flight: usize,
    /// Unix ms of the last periodic score update; `None` before the first.
    pub last_score_update: Option<u64>,
}

/// A reason for a storage failure that names the backend and nothing else.
pub fn public_reason(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable { backend, .. } => format!("{backend} is unavailable"),
        StoreError::Corrupt { backend, .. } => format!("{backend} holds data it cannot read"),
        _ => "storage error".to_string(),
    }
}

impl Hub {
    /// One page of miners matching `filter`.
    pub fn list_miners(&self, filter: &MinerFilter) -> MinerPage {
        let now = now_ms();
        let miners = self
            .registry
            .list(filter.after.as_ref(), filter.limit, |v| {
                filter
                    .model
                    .as_deref()
                    .is_none_or(|m| v.miner.serves_model(m))
                    && filter.available.is_none_or(|want| {
                        let avail = self.is_online(v, now) && v.status.is_some_and(|s| s.available);
                        avail == want
                    })
            });
        let next_cursor = (miners.len() == filter.limit)
            .then(|| miners.last().map(|v| v.miner.address))
            .flatten();
        MinerPage {
            miners,
            next_cursor,
        }
    }

    /// Health of both stores. A failing backend's error is logged with its cause here; the
    /// answer carries only [`public_reason`].
    pub async fn storage_health(&self) -> Vec<StorageHealth> {
        let durable = self.durable.health().await;
        let hot = self.hot.health().await;
        [
            ("durable", self.durable.backend(), durable),
            ("hot", self.hot.backend(), hot),
        ]
        .into_iter()
        .map(|(role, backend, r)| {
            let reason = r.err().map(|e| {
                tracing::warn!(role, backend, error = %e.detail(), "storage backend unhealthy");
                public_reason(&e)
            });
            StorageHealth {
                role,
                backend,
                healthy: reason.is_none(),
                reason,
            }
        })
        .collect()
    }

    /// What the hub is doing, for `/api/v1/status`.
    pub async fn status(&self) -> HubStatus {
        let miners = self
            .registry
            .counts(now_ms(), self.tuning().policy.heartbeat_timeout_ms);
        let last = self.last_score_update();
        HubStatus {
            uptime_seconds: self.uptime().as_secs(),
            storage: self.storage_health().await,
            miners,
            matches_served: self.matches_served(),
            reservations_in_flight: self.reservations_in_flight(),
            last_score_update: (last > 0).then_some(last),
        }
    }
}
