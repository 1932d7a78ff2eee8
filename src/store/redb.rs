//! The embedded durable store: one redb file, written by one thread with group commit.
//!
//! redb allows one write transaction at a time and a durable commit costs an fsync. Writers
//! therefore never open transactions themselves: they send their operation to the writer
//! thread, which takes every operation waiting in its queue, applies them in one transaction,
//! commits once (fsync) and only then answers each of them. Under load many writes share one
//! fsync, so durable throughput is not capped at the disk's fsync rate.

use super::{CommitObserver, DurableStore, OutcomeRecord, Result, StoreError, StoredMiner};
use crate::domain::scoring::{Availability, MinerStats};
use crate::domain::{Address, Miner};
use async_trait::async_trait;
use parking_lot::Mutex;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

const BACKEND: &str = "redb";
/// Bumped when the layout of the tables changes; a newer file is refused, not misread.
const SCHEMA_VERSION: u64 = 1;
/// Most operations one commit carries; bounds the latency of the last one in a batch.
const MAX_BATCH: usize = 4096;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// address bytes -> Miner (JSON)
const MINERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("miners");
/// address bytes -> MinerStats (JSON)
const STATS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("stats");
/// address bytes -> Availability (JSON)
const AVAILABILITY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("availability");
/// (accepted_at_ms << 64 | sequence) -> OutcomeRecord (JSON); time-ordered for pruning.
const OUTCOMES: TableDefinition<u128, &[u8]> = TableDefinition::new("outcomes");

fn unavailable(e: impl Into<super::BoxError>) -> StoreError {
    StoreError::unavailable(BACKEND, e)
}

fn corrupt(e: impl Into<super::BoxError>) -> StoreError {
    StoreError::corrupt(BACKEND, e)
}

enum Op {
    Insert(Miner),
    Update(Miner),
    Delete(Address, String),
    Outcome(OutcomeRecord, f64),
    SaveAvailability(Vec<(Address, Availability)>),
    Prune(u64),
    Import(Vec<StoredMiner>, Vec<OutcomeRecord>),
    Wipe,
}

enum Reply {
    Done,
    Stats(MinerStats),
    Count(u64),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply>>,
}

/// The redb durable store. Cloning is cheap; all clones share one writer thread.
pub struct RedbStore {
    db: Arc<Database>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl RedbStore {
    /// Opens (or creates) the file at `path`.
    pub fn open(path: &Path, observer: Option<CommitObserver>) -> Result<Self> {
        let db = Database::create(path)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
        Self::start(db, observer)
    }

    /// A store that lives in memory only (`serve --ephemeral`, tests).
    pub fn in_memory(observer: Option<CommitObserver>) -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(unavailable)?;
        Self::start(db, observer)
    }

    fn start(db: Database, observer: Option<CommitObserver>) -> Result<Self> {
        init_schema(&db)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<Job>();
        let last_error = Arc::new(Mutex::new(None));
        let writer = {
            let db = db.clone();
            let last_error = last_error.clone();
            std::thread::Builder::new()
                .name("redb-writer".into())
                .spawn(move || writer_loop(&db, &rx, observer.as_ref(), &last_error))
                .map_err(unavailable)?
        };
        Ok(Self {
            db,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            last_error,
        })
    }

    async fn submit(&self, op: Op) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.tx.lock();
            let tx = guard
                .as_ref()
                .ok_or_else(|| unavailable("the store is closed"))?;
            tx.send(Job { op, reply })
                .map_err(|_| unavailable("the writer thread stopped"))?;
        }
        rx.await
            .map_err(|_| unavailable("the writer thread stopped"))?
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
}

impl Drop for RedbStore {
    /// Stops the writer after it has committed everything queued, so the file's lock is
    /// released when the store is gone (a reopen right after a drop must succeed).
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }
}

fn init_schema(db: &Database) -> Result<()> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let found = meta
            .get("schema_version")
            .map_err(unavailable)?
            .map(|v| v.value());
        match found {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(unavailable)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(corrupt(format!(
                    "the file has schema version {v}, this poolhub understands up to {SCHEMA_VERSION}; use a newer poolhub"
                )));
            }
            Some(_) => {}
        }
        txn.open_table(MINERS).map_err(unavailable)?;
        txn.open_table(STATS).map_err(unavailable)?;
        txn.open_table(AVAILABILITY).map_err(unavailable)?;
        txn.open_table(OUTCOMES).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(corrupt)
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(format!("{what}: {e}")))
}

struct Tables<'t> {
    meta: redb::Table<'t, &'static str, u64>,
    miners: redb::Table<'t, &'static [u8], &'static [u8]>,
    stats: redb::Table<'t, &'static [u8], &'static [u8]>,
    availability: redb::Table<'t, &'static [u8], &'static [u8]>,
    outcomes: redb::Table<'t, u128, &'static [u8]>,
}

impl Tables<'_> {
    fn stored_token(&self, address: &Address) -> Result<Option<String>> {
        match self
            .miners
            .get(address.as_bytes().as_slice())
            .map_err(unavailable)?
        {
            None => Ok(None),
            Some(v) => Ok(Some(from_json::<Miner>("miner", v.value())?.token_hash)),
        }
    }

    fn apply(&mut self, op: Op) -> Result<Reply> {
        match op {
            Op::Insert(m) => {
                let key = *m.address.as_bytes();
                if self
                    .miners
                    .get(key.as_slice())
                    .map_err(unavailable)?
                    .is_some()
                {
                    return Err(StoreError::AlreadyExists);
                }
                let v = to_json(&m)?;
                self.miners
                    .insert(key.as_slice(), v.as_slice())
                    .map_err(unavailable)?;
                Ok(Reply::Done)
            }
            Op::Update(m) => {
                match self.stored_token(&m.address)? {
                    None => return Err(StoreError::NotFound),
                    Some(t) if t != m.token_hash => return Err(StoreError::TokenMismatch),
                    Some(_) => {}
                }
                let v = to_json(&m)?;
                self.miners
                    .insert(m.address.as_bytes().as_slice(), v.as_slice())
                    .map_err(unavailable)?;
                Ok(Reply::Done)
            }
            Op::Delete(a, token) => {
                match self.stored_token(&a)? {
                    None => return Err(StoreError::NotFound),
                    Some(t) if t != token => return Err(StoreError::TokenMismatch),
                    Some(_) => {}
                }
                let k = a.as_bytes().as_slice();
                self.miners.remove(k).map_err(unavailable)?;
                self.stats.remove(k).map_err(unavailable)?;
                self.availability.remove(k).map_err(unavailable)?;
                Ok(Reply::Done)
            }
            Op::Outcome(o, decay) => {
                let k = o.address.as_bytes().as_slice();
                if self.miners.get(k).map_err(unavailable)?.is_none() {
                    return Err(StoreError::NotFound);
                }
                let current: MinerStats = match self.stats.get(k).map_err(unavailable)? {
                    Some(v) => from_json("stats", v.value())?,
                    None => MinerStats::default(),
                };
                let next = current.with_outcome(o.sample(), decay);
                let seq = self
                    .meta
                    .get("outcome_seq")
                    .map_err(unavailable)?
                    .map_or(0, |v| v.value());
                let sv = to_json(&next)?;
                let ov = to_json(&o)?;
                self.stats.insert(k, sv.as_slice()).map_err(unavailable)?;
                let key = (u128::from(o.at) << 64) | u128::from(seq);
                self.outcomes
                    .insert(key, ov.as_slice())
                    .map_err(unavailable)?;
                self.meta
                    .insert("outcome_seq", seq.wrapping_add(1))
                    .map_err(unavailable)?;
                Ok(Reply::Stats(next))
            }
            Op::SaveAvailability(batch) => {
                for (a, av) in batch {
                    let k = a.as_bytes().as_slice();
                    // A miner deleted since the snapshot stays deleted.
                    if self.miners.get(k).map_err(unavailable)?.is_none() {
                        continue;
                    }
                    let v = to_json(&av)?;
                    self.availability
                        .insert(k, v.as_slice())
                        .map_err(unavailable)?;
                }
                Ok(Reply::Done)
            }
            Op::Prune(before) => {
                let end = u128::from(before) << 64;
                let n = self
                    .outcomes
                    .extract_from_if(..end, |_, _| true)
                    .map_err(unavailable)?
                    .count() as u64;
                Ok(Reply::Count(n))
            }
            Op::Import(miners, outcomes) => {
                for m in miners {
                    let k = m.miner.address.as_bytes().as_slice();
                    let (mv, sv, av) = (
                        to_json(&m.miner)?,
                        to_json(&m.stats)?,
                        to_json(&m.availability)?,
                    );
                    self.miners.insert(k, mv.as_slice()).map_err(unavailable)?;
                    self.stats.insert(k, sv.as_slice()).map_err(unavailable)?;
                    self.availability
                        .insert(k, av.as_slice())
                        .map_err(unavailable)?;
                }
                let mut seq = self
                    .meta
                    .get("outcome_seq")
                    .map_err(unavailable)?
                    .map_or(0, |v| v.value());
                for o in outcomes {
                    let ov = to_json(&o)?;
                    let key = (u128::from(o.at) << 64) | u128::from(seq);
                    self.outcomes
                        .insert(key, ov.as_slice())
                        .map_err(unavailable)?;
                    seq = seq.wrapping_add(1);
                }
                self.meta.insert("outcome_seq", seq).map_err(unavailable)?;
                Ok(Reply::Done)
            }
            Op::Wipe => {
                self.miners.retain(|_, _| false).map_err(unavailable)?;
                self.stats.retain(|_, _| false).map_err(unavailable)?;
                self.availability
                    .retain(|_, _| false)
                    .map_err(unavailable)?;
                self.outcomes.retain(|_, _| false).map_err(unavailable)?;
                Ok(Reply::Done)
            }
        }
    }
}

fn writer_loop(
    db: &Database,
    rx: &mpsc::Receiver<Job>,
    observer: Option<&CommitObserver>,
    last_error: &Mutex<Option<String>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let n = batch.len();
        let outcome = commit_batch(db, batch);
        let ok = outcome.is_ok();
        *last_error.lock() = outcome.as_ref().err().map(|(_, e)| e.to_string());
        if let Some(obs) = observer {
            obs(started.elapsed(), n, ok);
        }
        match outcome {
            Ok(replies) => {
                for (reply, r) in replies {
                    let _ = reply.send(r);
                }
            }
            Err((replies, e)) => {
                tracing::error!(error = %e.detail(), writes = n, "redb commit failed; the writes were not stored");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

type Replies = Vec<(oneshot::Sender<Result<Reply>>, Result<Reply>)>;

#[allow(clippy::type_complexity)]
fn commit_batch(
    db: &Database,
    batch: Vec<Job>,
) -> std::result::Result<Replies, (Vec<oneshot::Sender<Result<Reply>>>, StoreError)> {
    let mut senders = Vec::with_capacity(batch.len());
    let mut ops = Vec::with_capacity(batch.len());
    for j in batch {
        senders.push(j.reply);
        ops.push(j.op);
    }
    let fail = |senders, e| Err((senders, e));
    let mut txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => return fail(senders, unavailable(e)),
    };
    txn.set_durability(Durability::Immediate);
    let applied = (|| {
        let mut tables = Tables {
            meta: txn.open_table(META).map_err(unavailable)?,
            miners: txn.open_table(MINERS).map_err(unavailable)?,
            stats: txn.open_table(STATS).map_err(unavailable)?,
            availability: txn.open_table(AVAILABILITY).map_err(unavailable)?,
            outcomes: txn.open_table(OUTCOMES).map_err(unavailable)?,
        };
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let r = tables.apply(op);
            // A storage failure mid-transaction may leave partial writes: abort them all.
            if let Err(e @ StoreError::Unavailable { .. }) = &r {
                return Err(e.clone());
            }
            results.push(r);
        }
        Ok(results)
    })();
    let results = match applied {
        Ok(r) => r,
        // Dropping the transaction without committing aborts it.
        Err(e) => return fail(senders, e),
    };
    if let Err(e) = txn.commit() {
        return fail(senders, unavailable(e));
    }
    Ok(senders.into_iter().zip(results).collect())
}

fn load_one_blocking(db: &Database, address: Address) -> Result<Option<StoredMiner>> {
    let txn = db.begin_read().map_err(unavailable)?;
    let miners = txn.open_table(MINERS).map_err(unavailable)?;
    let k = address.as_bytes().as_slice();
    let Some(v) = miners.get(k).map_err(unavailable)? else {
        return Ok(None);
    };
    let miner: Miner = from_json("miner", v.value())?;
    let stats = txn.open_table(STATS).map_err(unavailable)?;
    let avail = txn.open_table(AVAILABILITY).map_err(unavailable)?;
    let st = match stats.get(k).map_err(unavailable)? {
        Some(v) => from_json("stats", v.value())?,
        None => MinerStats::default(),
    };
    let av = match avail.get(k).map_err(unavailable)? {
        Some(v) => from_json("availability", v.value())?,
        None => Availability::default(),
    };
    Ok(Some(StoredMiner {
        miner,
        stats: st,
        availability: av,
    }))
}

fn export_blocking(
    db: &Database,
    after: Option<u128>,
    limit: usize,
) -> Result<(Vec<OutcomeRecord>, Option<u128>)> {
    use std::ops::Bound;
    let txn = db.begin_read().map_err(unavailable)?;
    let t = txn.open_table(OUTCOMES).map_err(unavailable)?;
    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut out = Vec::new();
    let mut last = None;
    for row in t
        .range::<u128>((lower, Bound::Unbounded))
        .map_err(unavailable)?
        .take(limit.max(1))
    {
        let (k, v) = row.map_err(unavailable)?;
        out.push(from_json("outcome", v.value())?);
        last = Some(k.value());
    }
    Ok((out, last))
}

fn load_all_blocking(db: &Database) -> Result<Vec<StoredMiner>> {
    let txn = db.begin_read().map_err(unavailable)?;
    let miners = txn.open_table(MINERS).map_err(unavailable)?;
    let stats = txn.open_table(STATS).map_err(unavailable)?;
    let avail = txn.open_table(AVAILABILITY).map_err(unavailable)?;
    let mut out = Vec::with_capacity(miners.len().map_err(unavailable)? as usize);
    for row in miners.iter().map_err(unavailable)? {
        let (k, v) = row.map_err(unavailable)?;
        let miner: Miner = from_json("miner", v.value())?;
        if miner.address.as_bytes().as_slice() != k.value() {
            return Err(corrupt(format!(
                "miner row {} is under the wrong key",
                miner.address
            )));
        }
        let st = match stats.get(k.value()).map_err(unavailable)? {
            Some(v) => from_json("stats", v.value())?,
            None => MinerStats::default(),
        };
        let av = match avail.get(k.value()).map_err(unavailable)? {
            Some(v) => from_json("availability", v.value())?,
            None => Availability::default(),
        };
        out.push(StoredMiner {
            miner,
            stats: st,
            availability: av,
        });
    }
    Ok(out)
}

#[async_trait]
impl DurableStore for RedbStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load_all(&self) -> Result<Vec<StoredMiner>> {
        self.read(load_all_blocking).await
    }

    async fn load_miner(&self, address: &Address) -> Result<Option<StoredMiner>> {
        let a = *address;
        self.read(move |db| load_one_blocking(db, a)).await
    }

    async fn insert_miner(&self, miner: &Miner) -> Result<()> {
        self.submit(Op::Insert(miner.clone())).await.map(|_| ())
    }

    async fn update_miner(&self, miner: &Miner) -> Result<()> {
        self.submit(Op::Update(miner.clone())).await.map(|_| ())
    }

    async fn delete_miner(&self, address: &Address, token_hash: &str) -> Result<()> {
        self.submit(Op::Delete(*address, token_hash.to_string()))
            .await
            .map(|_| ())
    }

    async fn record_outcome(
        &self,
        outcome: &OutcomeRecord,
        decay_factor: f64,
    ) -> Result<MinerStats> {
        match self
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
        self.submit(Op::SaveAvailability(batch)).await.map(|_| ())
    }

    async fn prune_outcomes(&self, before: u64) -> Result<u64> {
        match self.submit(Op::Prune(before)).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(corrupt("writer answered a prune with the wrong reply")),
        }
    }

    async fn outcome_count(&self) -> Result<u64> {
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(OUTCOMES).map_err(unavailable)?;
            t.len().map_err(unavailable)
        })
        .await
    }

    async fn export_outcomes(
        &self,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<OutcomeRecord>, Option<u128>)> {
        self.read(move |db| export_blocking(db, after, limit)).await
    }

    async fn import(&self, miners: Vec<StoredMiner>, outcomes: Vec<OutcomeRecord>) -> Result<()> {
        self.submit(Op::Import(miners, outcomes)).await.map(|_| ())
    }

    async fn wipe(&self) -> Result<()> {
        self.submit(Op::Wipe).await.map(|_| ())
    }

    async fn health(&self) -> Result<()> {
        if self.tx.lock().is_none() {
            return Err(unavailable("the store is closed"));
        }
        if let Some(e) = self.last_error.lock().clone() {
            return Err(unavailable(format!("last commit failed: {e}")));
        }
        self.read(|db| db.begin_read().map(|_| ()).map_err(unavailable))
            .await
    }

    async fn close(&self) {
        // Dropping the sender lets the writer finish its queue and exit.
        self.tx.lock().take();
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}
