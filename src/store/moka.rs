//! The embedded hot store: moka caches with time-to-live, in this process only.

use super::{ClaimError, HotStore, MatchId, MatchTicket, Result};
use crate::domain::{Address, MinerStatus};
use async_trait::async_trait;
use moka::sync::Cache;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

struct Ledger {
    offered: Vec<Address>,
    reported: Mutex<Vec<bool>>,
}

/// Live status and the match ledger in moka caches.
pub struct MokaHotStore {
    status: Cache<Address, MinerStatus>,
    matches: Cache<MatchId, Arc<Ledger>>,
}

impl MokaHotStore {
    /// `heartbeat_timeout` is the status TTL; matches are remembered for `outcome_window`,
    /// at most `max_matches` of them (the oldest are forgotten first).
    pub fn new(heartbeat_timeout: Duration, outcome_window: Duration, max_matches: u64) -> Self {
        Self {
            status: Cache::builder().time_to_live(heartbeat_timeout).build(),
            // LRU, not moka's default TinyLFU: a full ledger must forget the oldest matches,
            // never refuse to remember a new one.
            matches: Cache::builder()
                .time_to_live(outcome_window)
                .max_capacity(max_matches)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
        }
    }
}

#[async_trait]
impl HotStore for MokaHotStore {
    fn backend(&self) -> &'static str {
        "moka"
    }

    async fn put_status(&self, address: &Address, status: &MinerStatus) -> Result<()> {
        self.status.insert(*address, *status);
        Ok(())
    }

    async fn get_status(&self, address: &Address) -> Result<Option<MinerStatus>> {
        Ok(self.status.get(address))
    }

    async fn remove_status(&self, address: &Address) -> Result<()> {
        self.status.invalidate(address);
        Ok(())
    }

    async fn record_match(&self, ticket: MatchTicket) -> Result<()> {
        let n = ticket.offered.len();
        let ledger = Ledger {
            offered: ticket.offered,
            reported: Mutex::new(vec![false; n]),
        };
        self.matches.insert(ticket.id, Arc::new(ledger));
        Ok(())
    }

    async fn claim_outcome(
        &self,
        id: MatchId,
        address: &Address,
    ) -> std::result::Result<(), ClaimError> {
        let ledger = self.matches.get(&id).ok_or(ClaimError::UnknownMatch)?;
        let i = ledger
            .offered
            .iter()
            .position(|a| a == address)
            .ok_or(ClaimError::NotOffered)?;
        {
            let mut reported = ledger.reported.lock();
            if reported[i] {
                return Err(ClaimError::AlreadyReported);
            }
            reported[i] = true;
        }
        Ok(())
    }

    async fn unclaim_outcome(&self, id: MatchId, address: &Address) -> Result<()> {
        if let Some(ledger) = self.matches.get(&id) {
            if let Some(i) = ledger.offered.iter().position(|a| a == address) {
                ledger.reported.lock()[i] = false;
            }
        }
        Ok(())
    }

    async fn health(&self) -> Result<()> {
        Ok(())
    }
}
