//! The operator's powers over miners: bans, and deregistering any miner.
//!
//! A ban is durable (the durable store's `bans`) and removes the address's miner in the same
//! commit, so a banned address is simply absent from every index: the match path needs no
//! check of its own and costs nothing more. The store refuses to insert a banned address,
//! so the ban holds on every hub sharing the store however stale its index; the removal
//! reaches the other hubs' indexes as a `deleted` event, or at the next resync.

use super::{now_ms, Event, Hub, HubError};
use crate::domain::identity::Ban;
use crate::domain::{Address, Invalid};
use crate::store::StoreError;

/// The longest ban reason kept: a note for operators, not a document.
pub const MAX_REASON: usize = 500;

impl Hub {
    /// Bans `address` and removes its miner (if any) from the store and the index.
    pub async fn ban(&self, address: Address, reason: Option<String>) -> Result<Ban, HubError> {
        let reason = reason
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        if reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REASON)
        {
            return Err(Invalid::new("reason", format!("at most {MAX_REASON} characters")).into());
        }
        let _guard = self.lock_for(&address).lock().await;
        let ban = Ban {
            address,
            reason,
            banned_at: now_ms(),
        };
        let removed = self
            .durable
            .ban(&ban)
            .await
            .map_err(|e| self.store_error(e))?;
        self.forget(&address).await;
        tracing::info!(address = %address, removed, "address banned");
        Ok(ban)
    }

    /// Lifts a ban: the address may register again (as a new miner).
    pub async fn unban(&self, address: &Address) -> Result<(), HubError> {
        match self.durable.unban(address).await {
            Ok(()) => {
                tracing::info!(address = %address, "ban lifted");
                Ok(())
            }
            Err(StoreError::NotFound) => Err(HubError::NotBanned(*address)),
            Err(e) => Err(self.store_error(e)),
        }
    }

    /// Every ban, from the durable store (so every hub sharing it lists the same).
    pub async fn bans(&self) -> Result<Vec<Ban>, HubError> {
        self.durable.bans().await.map_err(|e| self.store_error(e))
    }

    /// Deregisters any miner without its token (the admin's power).
    pub async fn remove_miner(&self, address: &Address) -> Result<(), HubError> {
        let _guard = self.lock_for(address).lock().await;
        // The store's record, not the index's: the index may hold an older token hash.
        let stored = self
            .durable
            .load_miner(address)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or(HubError::MinerNotFound(*address))?;
        match self
            .durable
            .delete_miner(address, &stored.miner.token_hash)
            .await
        {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(StoreError::TokenMismatch) => return Err(HubError::Conflict(*address)),
            Err(e) => return Err(self.store_error(e)),
        }
        self.forget(address).await;
        tracing::info!(address = %address, "miner deregistered by the admin");
        Ok(())
    }

    /// Drops a miner the store no longer holds from the index and the live status, and
    /// tells the other hubs. The caller holds the miner's lock.
    async fn forget(&self, address: &Address) {
        self.registry.remove(address);
        if let Err(e) = self.hot.remove_status(address).await {
            tracing::warn!(address = %address, error = %e, "cannot remove live status");
        }
        self.metrics.miners_total.set(self.registry.len() as i64);
        self.publish(Event::Deleted { address: *address });
        self.emit_deregistered(address);
    }
}
