//! Storage behind two traits, chosen in configuration.
//!
//! * [`DurableStore`] holds what must survive a crash: miners (with token hashes), their
//!   outcome statistics and history, and checkpoints of their availability. Every method that
//!   changes data returns only after the change is durable (fsynced / committed).
//! * [`HotStore`] holds what is live and may be lost: miner status (with the heartbeat timeout
//!   as its time-to-live), and the match ledger — which miners a match offered and which of
//!   them have reported an outcome.
//!
//! The rest of the program sees only these traits. The contract below is also code:
//! `testing` (behind the `test-util` feature) has one test function per behaviour, and
//! `tests/conformance.rs` runs them against every implementation.
//!
//! Files: `redb/` (tables, group-commit writer, backup) and `postgres.rs` are the durable
//! backends, `moka.rs` and `redis.rs` the hot ones; `rows.rs` is what the durable backends
//! write (versioned, apart from the domain types); `migrate.rs` copies between durable
//! stores.
//!
//! # Contract
//! * Conditional writes are atomic: `update_miner`/`delete_miner` check the stored token hash
//!   and `insert_miner` checks absence in the same transaction as the write.
//! * `record_outcome` reads the stored statistics, applies the outcome with the pure scoring
//!   function and writes both in one transaction, so concurrent outcomes are never lost.
//! * An error leaves the stored data unchanged.

pub mod binrow;
mod local;
pub mod migrate;
pub mod moka;
pub mod postgres;
pub mod redb;
pub mod redis;
pub mod rows;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

use crate::auth::ApiKey;
use crate::domain::identity::{Ban, Challenge};
use crate::domain::scoring::{Availability, MinerStats};
use crate::domain::{Address, Miner, MinerStatus};
use async_trait::async_trait;

// These moved to the domain (they are the hub's and the API's words, not storage's); the
// re-export keeps `store::MatchId` etc. working for the stores and the tests.
pub use crate::domain::job::{MatchId, MatchTicket, OutcomeRecord};

/// Any error a backend reports, boxed so that strings and driver errors both fit.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors by meaning; each backend maps its own errors into these.
///
/// `Unavailable` and `Corrupt` keep the backend's own error as their [`source`], and their
/// `Display` names only the backend: the message may reach an HTTP client, the detail (a
/// file path, an SQL error, a host name) must not. Logs and the command line print the
/// whole chain with [`StoreError::detail`].
///
/// [`source`]: std::error::Error::source
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("token does not match")]
    TokenMismatch,
    #[error("the address is banned")]
    Banned,
    #[error("{backend} is unavailable")]
    Unavailable {
        backend: &'static str,
        #[source]
        source: Cause,
    },
    #[error("{backend} holds data it cannot read")]
    Corrupt {
        backend: &'static str,
        #[source]
        source: Cause,
    },
}

impl StoreError {
    /// The backend cannot be reached or failed to do the operation; the request may be
    /// retried once it is back. `e` is kept as the source.
    pub fn unavailable(backend: &'static str, e: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            backend,
            source: Cause::new(e),
        }
    }

    /// The backend holds data this build cannot read; retrying will not help. `e` is kept
    /// as the source.
    pub fn corrupt(backend: &'static str, e: impl Into<BoxError>) -> Self {
        Self::Corrupt {
            backend,
            source: Cause::new(e),
        }
    }

    /// The backend that failed, for metrics labels and logs; `None` for the errors that
    /// are answers (not found, already exists, token mismatch), not failures.
    pub fn backend(&self) -> Option<&'static str> {
        match self {
            Self::Unavailable { backend, .. } | Self::Corrupt { backend, .. } => Some(backend),
            Self::NotFound | Self::AlreadyExists | Self::TokenMismatch | Self::Banned => None,
        }
    }

    /// The message followed by every cause ("redb is unavailable: cannot open x: ..."), for
    /// logs and the command line, where the detail belongs. Never put it in an HTTP body.
    pub fn detail(&self) -> String {
        error_chain(self)
    }
}

/// `e` and its causes joined by ": ", the way an operator wants to read a failure.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// The backend's own error under a [`StoreError`]. Shared (`Arc`) because `StoreError` is
/// `Clone`: one failed group commit answers every write it carried with the same error.
/// Two causes are equal when they read the same, which is what tests compare.
#[derive(Clone)]
pub struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Wraps any error, or a message.
    pub fn new(e: impl Into<BoxError>) -> Self {
        Self(std::sync::Arc::from(e.into()))
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

/// Transparent: the wrapped error's own causes follow it in the chain.
impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything durable about one miner, as loaded at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMiner {
    pub miner: Miner,
    pub stats: MinerStats,
    pub availability: Availability,
}

/// Miners per chunk of [`DurableStore::load_chunks`].
pub const LOAD_CHUNK: usize = 1024;

/// The durable store. See the module doc for the contract.
#[async_trait]
pub trait DurableStore: Send + Sync + 'static {
    /// Backend name for status and metrics ("redb", "postgres").
    fn backend(&self) -> &'static str;
    /// Every miner with its statistics, for building the index at start-up.
    async fn load_all(&self) -> Result<Vec<StoredMiner>>;
    /// Every miner with its statistics, sent to `sink` in chunks as they are read, so the
    /// index is built while the store is still being read (on another core) and no list of
    /// every miner is ever held at once: at 100,000 miners that list was about 50 MB the
    /// allocator kept after start-up. The default reads the whole list first.
    async fn load_chunks(&self, sink: tokio::sync::mpsc::Sender<Vec<StoredMiner>>) -> Result<()> {
        let all = self.load_all().await?;
        let mut all = all.into_iter().peekable();
        while all.peek().is_some() {
            let chunk: Vec<StoredMiner> = all.by_ref().take(LOAD_CHUNK).collect();
            if sink.send(chunk).await.is_err() {
                break;
            }
        }
        Ok(())
    }
    /// One miner with its statistics (for applying another hub's change to the index).
    async fn load_miner(&self, address: &Address) -> Result<Option<StoredMiner>>;
    /// Stores a new miner; `AlreadyExists` when the address is taken, `Banned` when it is
    /// banned (checked in the same statement or transaction as the insert).
    async fn insert_miner(&self, miner: &Miner) -> Result<()>;
    /// Replaces a registration whose stored token hash equals `miner.token_hash`.
    async fn update_miner(&self, miner: &Miner) -> Result<()>;
    /// Replaces a registration whose stored token hash is `previous_token_hash` with `miner`
    /// (whose token hash may differ: a reissued token, or a takeover). With `fresh`, the
    /// statistics and availability are dropped too, in the same commit: the proven owner
    /// taking over a squatted address must not inherit the squatter's record.
    async fn replace_miner(
        &self,
        miner: &Miner,
        previous_token_hash: &str,
        fresh: bool,
    ) -> Result<()>;
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
    /// Deletes outcome history older than `before` (unix ms) and, with `keep`, all but the
    /// newest `keep` records (by time, then arrival); returns how many. Deletes in small
    /// batches, each its own commit, so other writes go through between them.
    async fn prune_outcomes(&self, before: u64, keep: Option<u64>) -> Result<u64>;
    /// Number of outcome records kept as history.
    async fn outcome_count(&self) -> Result<u64>;
    /// The store's size on disk, bytes, when it has one (`poolhub_store_file_bytes`).
    async fn size_bytes(&self) -> Option<u64>;
    /// Writes a consistent copy of everything committed so far (every acknowledged write) to
    /// the new file `dest`, while writes go on; answers the miners and outcomes it holds.
    /// `None` when the backend has its own tool for that (PostgreSQL: `pg_dump`).
    async fn snapshot(&self, dest: &std::path::Path) -> Option<Result<(usize, u64)>> {
        let _ = dest;
        None
    }
    /// Whether counting the outcomes (and so checking `storage.max_outcomes`) is cheap enough
    /// to do every few seconds. redb keeps the count; PostgreSQL must walk an index, so the
    /// hub checks the count bound there once a minute.
    fn counts_cheaply(&self) -> bool {
        false
    }
    /// Outcome history in the order it was stored, at most `limit` records after the cursor
    /// `after` (`None` = from the start); returns the records and the cursor of the last one.
    /// Cursors are opaque and only meaningful to the store that returned them.
    async fn export_outcomes(
        &self,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<OutcomeRecord>, Option<u128>)>;
    /// Bans `ban.address` (replacing an earlier ban of it) and removes its miner with its
    /// statistics and availability, in one commit; answers whether a miner was removed.
    /// Outcome history is kept: it is the record of what happened.
    async fn ban(&self, ban: &Ban) -> Result<bool>;
    /// Lifts the ban of `address`; `NotFound` when it is not banned.
    async fn unban(&self, address: &Address) -> Result<()>;
    /// Every ban, ordered by address.
    async fn bans(&self) -> Result<Vec<Ban>>;
    /// Stores miners exactly as given (token hash, statistics, availability; replacing any
    /// with the same address) and appends outcome records, in one commit (`poolhub migrate`).
    async fn import(&self, miners: Vec<StoredMiner>, outcomes: Vec<OutcomeRecord>) -> Result<()>;
    /// Deletes every miner, outcome and ban (`poolhub migrate --force`).
    async fn wipe(&self) -> Result<()>;
    /// Cheap liveness check.
    async fn health(&self) -> Result<()>;
    /// Finishes pending writes; later writes fail.
    async fn close(&self);
    /// Stores a new client or admin key (its digest, never its secret); `AlreadyExists`
    /// when its id or its digest is taken. Every hub sharing the store loads it.
    async fn insert_key(&self, key: &ApiKey) -> Result<()>;
    /// Deletes the key with this id, so no hub loads it again; `NotFound` when there is
    /// none.
    async fn revoke_key(&self, id: u64) -> Result<()>;
    /// Every live (not revoked) key, oldest first: what each hub's key ring is built from.
    async fn load_keys(&self) -> Result<Vec<ApiKey>>;
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
    #[error("this match was made with another client key: only that key may report its outcomes")]
    NotYourMatch,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The hot store. See the module doc.
///
/// # Contract
/// (checked for every backend by `store::testing::hot::hot_suite`, built with the `test-util`
/// feature)
/// * A status expires after the heartbeat timeout.
/// * `claim_outcome` succeeds once per offered `(match, address)` pair, whichever hub and
///   however many callers try at once; a claim made right after `record_match` on the same
///   store finds the match.
/// * A match recorded with a `client` is claimed only by that client (`NotYourMatch`).
/// * `reserve_slot` never lets a miner hold more unexpired reservations than the `slots`
///   the caller passes, however many processes share the store; a reservation ends by
///   `release_slot` or when its TTL passes.
/// * `close` returns only after the writes the store accepted have been sent.
/// * `take_challenge` returns a challenge at most once, only the latest one put for the
///   address, and none after its TTL.
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
    /// Claims the right to report the outcome of `(match, address)` without a key (open
    /// mode): [`HotStore::claim_outcome_by`] with no client.
    async fn claim_outcome(
        &self,
        id: MatchId,
        address: &Address,
    ) -> std::result::Result<(), ClaimError> {
        self.claim_outcome_by(id, address, None).await
    }
    /// Claims the right to report the outcome of `(match, address)`, each pair once, for
    /// `client` (the reporting key's id): a match recorded with a client accepts only that
    /// client (`NotYourMatch` otherwise, checked before anything else about the pair, and
    /// claiming nothing); one recorded without accepts anyone.
    async fn claim_outcome_by(
        &self,
        id: MatchId,
        address: &Address,
        client: Option<u64>,
    ) -> std::result::Result<(), ClaimError>;
    /// Gives back a claim whose outcome could not be stored, so the client may retry.
    async fn unclaim_outcome(&self, id: MatchId, address: &Address) -> Result<()>;
    /// Takes one of `address`'s `slots` for match `id` until `ttl` has passed: `Ok(true)`
    /// when taken (or already held by `id`, whose TTL is then renewed), `Ok(false)` when
    /// unexpired reservations of other matches hold every slot.
    ///
    /// The check and the write are one atomic step in the store, so when several hubs share
    /// it this — not a hub's index, which hears of the others' reservations only later —
    /// is what keeps a miner from holding more reservations than it has slots.
    async fn reserve_slot(
        &self,
        address: &Address,
        id: MatchId,
        slots: u32,
        ttl: std::time::Duration,
    ) -> Result<bool>;
    /// Gives back the slot match `id` holds on `address`, if any (the outcome arrived).
    async fn release_slot(&self, address: &Address, id: MatchId) -> Result<()>;
    /// Keeps `challenge` as the one open sign-in challenge of its address for `ttl`,
    /// replacing any older one (only the latest challenge counts).
    ///
    /// In the hot store, not the hub's memory, so a miner may fetch a challenge from one hub
    /// and answer it through another sharing the store.
    async fn put_challenge(&self, challenge: &Challenge, ttl: std::time::Duration) -> Result<()>;
    /// Removes and returns the open challenge of `address` (`None` if there is none or it
    /// expired). One atomic step in the store: however many hubs and callers try at once,
    /// one challenge is taken once, which is what makes its nonce single-use.
    async fn take_challenge(&self, address: &Address) -> Result<Option<Challenge>>;
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
    /// Sends the writes still queued in the background and stops the store's background
    /// tasks, so a hub that shuts down does not lose the ledger entries of its last matches.
    /// Later background writes are dropped (and counted).
    async fn close(&self) {}
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

#[cfg(test)]
mod tests {
    use super::StoreError;
    use std::error::Error as _;

    #[test]
    fn backend_errors_name_the_backend_and_keep_the_detail_as_their_source() {
        let io = std::io::Error::other("cannot open /secret/path/hub.redb");
        for (e, shown) in [
            (StoreError::unavailable("redb", io), "redb is unavailable"),
            (
                StoreError::corrupt("postgres", "miner row 0xab: bad JSON"),
                "postgres holds data it cannot read",
            ),
        ] {
            assert_eq!(e.to_string(), shown, "Display is generic");
            let source = e.source().expect("the cause is kept");
            assert!(!source.to_string().is_empty());
            assert!(e.detail().starts_with(shown) && e.detail().len() > shown.len());
        }
        let e = StoreError::unavailable("redb", "cannot open /secret/path/hub.redb");
        assert_eq!(
            e.detail(),
            "redb is unavailable: cannot open /secret/path/hub.redb"
        );
        assert_eq!(e.backend(), Some("redb"));
        assert_eq!(StoreError::NotFound.backend(), None);
        assert_eq!(e.clone(), e, "clones compare equal");
    }
}
