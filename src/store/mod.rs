//! Storage behind two traits, chosen in configuration.
//!
//! * [`DurableStore`] holds what must survive a crash: miners (with token hashes), their
//!   outcome statistics and history, and checkpoints of their availability. Every method that
//!   changes data returns only after the change is durable (fsynced / committed).
//! * [`HotStore`] holds what is live and may be lost: miner status (with the heartbeat timeout
//!   as its time-to-live), and the match ledger — which miners a match offered and which of
//!   them have reported an outcome.
//!
//! The rest of the program sees only these traits; `tests/conformance.rs` runs one suite
//! against every implementation.
//!
//! # Contract
//! * Conditional writes are atomic: `update_miner`/`delete_miner` check the stored token hash
//!   and `insert_miner` checks absence in the same transaction as the write.
//! * `record_outcome` reads the stored statistics, applies the outcome with the pure scoring
//!   function and writes both in one transaction, so concurrent outcomes are never lost.
//! * An error leaves the stored data unchanged.

pub mod migrate;
pub mod moka;
pub mod postgres;
pub mod redb;
pub mod redis;

use crate::domain::scoring::{Availability, MinerStats};
use crate::domain::{Address, Miner, MinerStatus};
use async_trait::async_trait;

// These moved to the domain (they are the hub's and the API's words, not storage's); the
// re-export keeps `store::MatchId` etc. working for the stores and the tests.
pub use crate::domain::job::{MatchId, MatchTicket, OutcomeRecord};

/// Errors by meaning; each backend maps its own errors into these.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("token does not match")]
    TokenMismatch,
    #[error("{backend} is unavailable: {message}")]
    Unavailable {
        backend: &'static str,
        message: String,
    },
    #[error("{backend} holds data it cannot read: {message}")]
    Corrupt {
        backend: &'static str,
        message: String,
    },
}

impl StoreError {
    /// The backend cannot be reached or failed to do the operation.
    pub fn unavailable(backend: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            backend,
            message: e.to_string(),
        }
    }

    /// The backend holds data this build cannot read.
    pub fn corrupt(backend: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            backend,
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything durable about one miner, as loaded at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMiner {
    pub miner: Miner,
    pub stats: MinerStats,
    pub availability: Availability,
}

/// The durable store. See the module doc for the contract.
#[async_trait]
pub trait DurableStore: Send + Sync + 'static {
    /// Backend name for status and metrics ("redb", "postgres").
    fn backend(&self) -> &'static str;
    /// Every miner with its statistics, for building the index at start-up.
    async fn load_all(&self) -> Result<Vec<StoredMiner>>;
    /// One miner with its statistics (for applying another hub's change to the index).
    async fn load_miner(&self, address: &Address) -> Result<Option<StoredMiner>>;
    /// Stores a new miner; `AlreadyExists` when the address is taken.
    async fn insert_miner(&self, miner: &Miner) -> Result<()>;
    /// Replaces a registration whose stored token hash equals `miner.token_hash`.
    async fn update_miner(&self, miner: &Miner) -> Result<()>;
    /// Removes a miner, its statistics and availability, if `token_hash` matches.
    async fn delete_miner(&self, address: &Address, token_hash: &str) -> Result<()>;
    /// Appends the outcome and updates the miner's statistics in one commit.
    async fn record_outcome(
        &self,
        outcome: &OutcomeRecord,
        decay_factor: f64,
    ) -> Result<MinerStats>;
    /// Checkpoints availability histories (written by the score updater).
    async fn save_availability(&self, batch: Vec<(Address, Availability)>) -> Result<()>;
    /// Deletes outcome history older than `before` (unix ms); returns how many.
    async fn prune_outcomes(&self, before: u64) -> Result<u64>;
    /// Number of outcome records kept as history.
    async fn outcome_count(&self) -> Result<u64>;
    /// Outcome history in the order it was stored, at most `limit` records after the cursor
    /// `after` (`None` = from the start); returns the records and the cursor of the last one.
    /// Cursors are opaque and only meaningful to the store that returned them.
    async fn export_outcomes(
        &self,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<OutcomeRecord>, Option<u128>)>;
    /// Stores miners exactly as given (token hash, statistics, availability; replacing any
    /// with the same address) and appends outcome records, in one commit (`poolhub migrate`).
    async fn import(&self, miners: Vec<StoredMiner>, outcomes: Vec<OutcomeRecord>) -> Result<()>;
    /// Deletes every miner and every outcome (`poolhub migrate --force`).
    async fn wipe(&self) -> Result<()>;
    /// Cheap liveness check.
    async fn health(&self) -> Result<()>;
    /// Finishes pending writes; later writes fail.
    async fn close(&self);
}

/// Why an outcome cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("no such match (unknown, or older than the outcome window)")]
    UnknownMatch,
    #[error("this miner was not offered by that match")]
    NotOffered,
    #[error("an outcome for this match and miner was already reported")]
    AlreadyReported,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The hot store. See the module doc.
#[async_trait]
pub trait HotStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    /// Stores a miner's live status; it expires after the heartbeat timeout.
    async fn put_status(&self, address: &Address, status: &MinerStatus) -> Result<()>;
    /// The live status, or `None` when the miner has not reported within the timeout.
    async fn get_status(&self, address: &Address) -> Result<Option<MinerStatus>>;
    async fn remove_status(&self, address: &Address) -> Result<()>;
    /// Remembers a match for the outcome window.
    async fn record_match(&self, ticket: MatchTicket) -> Result<()>;
    /// Claims the right to report the outcome of `(match, address)`; each pair once.
    async fn claim_outcome(
        &self,
        id: MatchId,
        address: &Address,
    ) -> std::result::Result<(), ClaimError>;
    /// Gives back a claim whose outcome could not be stored, so the client may retry.
    async fn unclaim_outcome(&self, id: MatchId, address: &Address) -> Result<()>;
    async fn health(&self) -> Result<()>;
    /// Live statuses of many miners at once (periodic resync); same order as `addresses`.
    async fn get_statuses(&self, addresses: &[Address]) -> Result<Vec<Option<MinerStatus>>> {
        let mut out = Vec::with_capacity(addresses.len());
        for a in addresses {
            out.push(self.get_status(a).await?);
        }
        Ok(out)
    }
    /// The channel several hubs sharing this store use to tell each other about changes;
    /// `None` for a store only this process sees.
    fn bus(&self) -> Option<&dyn EventBus> {
        None
    }
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// One published payload (possibly this hub's own).
    Event(String),
    /// The subscription was (re)established: events published while it was down are lost,
    /// so the subscriber should resynchronise.
    Subscribed,
}

/// Publish/subscribe between hubs sharing a hot store.
pub trait EventBus: Send + Sync {
    /// Publishes in the background, in order; never waits on the network.
    fn publish(&self, payload: String);
    /// Starts a subscription that reconnects by itself; it ends when the receiver is dropped.
    fn subscribe(&self) -> tokio::sync::mpsc::Receiver<BusMessage>;
}

/// Told about every durable commit: how long it took, how many writes it carried, and
/// whether it succeeded. Feeds the storage metrics without the store knowing Prometheus.
pub type CommitObserver = std::sync::Arc<dyn Fn(std::time::Duration, usize, bool) + Send + Sync>;
