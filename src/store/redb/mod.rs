//! The embedded durable store: one redb file, written by one thread with group commit.
//!
//! * `tables.rs`: every table of the file, and the operations on them;
//! * `writer.rs`: the writer thread, which groups concurrent writes into one commit (fsync);
//! * `backup.rs`: `poolhub backup`, a checked copy of a stopped hub's file.
//!
//! Reads do not go through the writer: each runs in its own read transaction (a snapshot)
//! on a blocking thread, since redb's API blocks.

mod backup;
mod compact;
mod snapshot;
mod tables;
mod writer;

pub use backup::{backup, install, partial_path, BackedUp, BackupError};
pub use compact::{compact, CompactError, Compacted};
pub use snapshot::snapshot;

use super::rows::RowError;
use super::{
    error_chain, BoxError, CommitObserver, DurableStore, OutcomeRecord, Result, StoreError,
    StoredMiner,
};
use crate::auth::ApiKey;
use crate::domain::identity::Ban;
use crate::domain::scoring::{Availability, MinerStats};
use crate::domain::{Address, Miner};
use async_trait::async_trait;
use redb::Database;
use std::path::Path;
use std::sync::Arc;
use tables::{Op, Reply};
use writer::Writer;

const BACKEND: &str = "redb";

fn unavailable(e: impl Into<BoxError>) -> StoreError {
    StoreError::unavailable(BACKEND, e)
}

fn corrupt(e: impl Into<BoxError>) -> StoreError {
    StoreError::corrupt(BACKEND, e)
}

/// Outcomes deleted per commit by a prune.
const PRUNE_BATCH: u64 = 512;
/// A stored row this build cannot read is corrupt data, never a panic.
fn row<T>(r: std::result::Result<T, RowError>) -> Result<T> {
    r.map_err(corrupt)
}

/// The redb durable store.
///
/// Not `Clone`: the program shares one behind an `Arc`. It owns its writer thread, which it
/// stops on [`close`](DurableStore::close) or when dropped, after the queued writes commit.
pub struct RedbStore {
    db: Arc<Database>,
    writer: Writer,
    /// The file, when there is one (not for an in-memory store).
    path: Option<std::path::PathBuf>,
}

impl RedbStore {
    /// Opens (or creates) the file at `path`, with redb's default page cache.
    pub fn open(path: &Path, observer: Option<CommitObserver>) -> Result<Self> {
        Self::open_with_cache(path, observer, None)
    }

    /// Opens (or creates) the file at `path` with a page cache of `cache_bytes` (`None`:
    /// redb's default), so the hub's memory stays within what the operator configured
    /// (`storage.cache_mb`).
    pub fn open_with_cache(
        path: &Path,
        observer: Option<CommitObserver>,
        cache_bytes: Option<usize>,
    ) -> Result<Self> {
        let mut builder = Database::builder();
        if let Some(bytes) = cache_bytes {
            builder.set_cache_size(bytes);
        }
        let db = builder.create(path).map_err(|e| {
            unavailable(format!(
                "cannot open {}: {}",
                path.display(),
                error_chain(&e)
            ))
        })?;
        let mut s = Self::start(db, observer)?;
        s.path = Some(path.to_path_buf());
        Ok(s)
    }

    /// A store that lives in memory only (`serve --ephemeral`, tests).
    pub fn in_memory(observer: Option<CommitObserver>) -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(unavailable)?;
        Self::start(db, observer)
    }

    fn start(mut db: Database, observer: Option<CommitObserver>) -> Result<Self> {
        let upgraded = tables::init_schema(&db)?;
        if upgraded > 0 {
            // The upgrade rewrote every per-miner row, which left the old pages free at the
            // end of a file twice the size: give them back once, now, while nothing else
            // has the file.
            let compacted = db.compact();
            tracing::info!(
                rows = upgraded,
                compacted = ?compacted,
                "upgraded the miner rows of the data file to the binary format"
            );
        }
        let db = Arc::new(db);
        let writer = Writer::start(db.clone(), observer)?;
        Ok(Self {
            db,
            writer,
            path: None,
        })
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T>> {
        let db = self.db.clone();
        async move {
            tokio::task::spawn_blocking(move || f(&db))
                .await
                .map_err(unavailable)?
        }
    }

    async fn write(&self, op: Op) -> Result<()> {
        self.writer.submit(op).await.map(|_| ())
    }
}

impl Drop for RedbStore {
    /// Stops the writer after it has committed everything queued, so the file's lock is
    /// released when the store is gone (a reopen right after a drop must succeed).
    fn drop(&mut self) {
        if let Some(h) = self.writer.stop() {
            let _ = h.join();
        }
    }
}

#[async_trait]
impl DurableStore for RedbStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load_all(&self) -> Result<Vec<StoredMiner>> {
        self.read(tables::load_all).await
    }

    async fn load_chunks(&self, sink: tokio::sync::mpsc::Sender<Vec<StoredMiner>>) -> Result<()> {
        self.read(move |db| {
            let mut chunk = Vec::with_capacity(crate::store::LOAD_CHUNK);
            tables::for_each_miner(db, |m| {
                chunk.push(m);
                if chunk.len() == crate::store::LOAD_CHUNK {
                    let full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(crate::store::LOAD_CHUNK));
                    // The receiver is gone only when the hub stopped loading (it failed):
                    // nothing left to do but stop reading.
                    if sink.blocking_send(full).is_err() {
                        return Ok(false);
                    }
                }
                Ok(true)
            })?;
            if !chunk.is_empty() {
                let _ = sink.blocking_send(chunk);
            }
            Ok(())
        })
        .await
    }

    async fn load_miner(&self, address: &Address) -> Result<Option<StoredMiner>> {
        let a = *address;
        self.read(move |db| tables::load_one(db, a)).await
    }

    async fn insert_miner(&self, miner: &Miner) -> Result<()> {
        self.write(Op::Insert(miner.clone())).await
    }

    async fn update_miner(&self, miner: &Miner) -> Result<()> {
        self.write(Op::Update(miner.clone())).await
    }

    async fn replace_miner(
        &self,
        miner: &Miner,
        previous_token_hash: &str,
        fresh: bool,
    ) -> Result<()> {
        self.write(Op::Replace(
            miner.clone(),
            previous_token_hash.to_string(),
            fresh,
        ))
        .await
    }

    async fn ban(&self, ban: &Ban) -> Result<bool> {
        match self.writer.submit(Op::Ban(ban.clone())).await? {
            Reply::Count(n) => Ok(n > 0),
            _ => Err(unavailable("unexpected reply to a ban")),
        }
    }

    async fn unban(&self, address: &Address) -> Result<()> {
        self.write(Op::Unban(*address)).await
    }

    async fn bans(&self) -> Result<Vec<Ban>> {
        self.read(tables::bans).await
    }

    async fn delete_miner(&self, address: &Address, token_hash: &str) -> Result<()> {
        self.write(Op::Delete(*address, token_hash.to_string()))
            .await
    }

    async fn record_outcome(
        &self,
        outcome: &OutcomeRecord,
        decay_factor: f64,
    ) -> Result<MinerStats> {
        match self
            .writer
            .submit(Op::Outcome(outcome.clone(), decay_factor))
            .await?
        {
            Reply::Stats(s) => Ok(s),
            _ => Err(corrupt("writer answered an outcome with the wrong reply")),
        }
    }

    async fn save_availability(&self, batch: Vec<(Address, Availability)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(Op::SaveAvailability(batch)).await
    }

    async fn prune_outcomes(&self, before: u64, keep: Option<u64>) -> Result<u64> {
        // One small batch per commit: the writer takes other operations between batches, so a
        // large prune never holds up the writes queued behind it for long.
        let mut total = 0;
        loop {
            let op = Op::Prune {
                before,
                keep,
                batch: PRUNE_BATCH,
            };
            let n = match self.writer.submit(op).await? {
                Reply::Count(n) => n,
                _ => return Err(corrupt("writer answered a prune with the wrong reply")),
            };
            total += n;
            if n < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn outcome_count(&self) -> Result<u64> {
        self.read(tables::outcome_count).await
    }

    fn counts_cheaply(&self) -> bool {
        true
    }

    async fn snapshot(&self, dest: &Path) -> Option<Result<(usize, u64)>> {
        let dest = dest.to_path_buf();
        Some(
            self.read(move |db| {
                snapshot(db, &dest)
                    .map(|b| (b.miners, b.outcomes))
                    .map_err(|e| StoreError::unavailable("redb", e))
            })
            .await,
        )
    }

    async fn size_bytes(&self) -> Option<u64> {
        let path = self.path.as_ref()?;
        tokio::fs::metadata(path).await.ok().map(|m| m.len())
    }

    async fn export_outcomes(
        &self,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<OutcomeRecord>, Option<u128>)> {
        self.read(move |db| tables::export(db, after, limit)).await
    }

    async fn import(&self, miners: Vec<StoredMiner>, outcomes: Vec<OutcomeRecord>) -> Result<()> {
        self.write(Op::Import(miners, outcomes)).await
    }

    async fn wipe(&self) -> Result<()> {
        self.write(Op::Wipe).await
    }

    async fn insert_key(&self, key: &ApiKey) -> Result<()> {
        self.write(Op::InsertKey(key.clone())).await
    }

    async fn revoke_key(&self, id: u64) -> Result<()> {
        self.write(Op::RevokeKey(id)).await
    }

    async fn load_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(tables::load_keys).await
    }

    async fn health(&self) -> Result<()> {
        if self.writer.is_closed() {
            return Err(unavailable("the store is closed"));
        }
        if let Some(e) = self.writer.last_error() {
            return Err(unavailable(format!(
                "the last commit failed: {}",
                e.detail()
            )));
        }
        self.read(|db| db.begin_read().map(|_| ()).map_err(unavailable))
            .await
    }

    async fn close(&self) {
        // Dropping the sender lets the writer finish its queue and exit.
        if let Some(h) = self.writer.stop() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

#[cfg(test)]
mod tests;
