//! The tables of the redb file and the operations on them, inside a transaction the caller
//! owns. Nothing here commits or spawns: the writer (`writer.rs`) groups these operations
//! into commits, and the store (`mod.rs`) runs the reads on blocking threads.

use super::{corrupt, row, unavailable};
use crate::auth::ApiKey;
use crate::domain::identity::Ban;
use crate::domain::scoring::{Availability, MinerStats};
use crate::domain::{Address, Miner};
use crate::store::{binrow, rows};
use crate::store::{OutcomeRecord, Result, StoreError, StoredMiner};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

/// Bumped when the layout of the tables changes; a newer file is refused, not misread. The
/// layout of each row is versioned on its own (`store::rows`).
pub(super) const SCHEMA_VERSION: u64 = 1;

/// `"schema_version"` -> [`SCHEMA_VERSION`]; `"outcome_seq"` -> next outcome sequence.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// address bytes -> a miner row (`store::binrow`; JSON `rows::MinerRow` in older files)
pub(super) const MINERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("miners");
/// address bytes -> a statistics row (`store::binrow`; JSON `rows::StatsRow` in older files)
pub(super) const STATS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("stats");
/// address bytes -> an availability row (`store::binrow`; JSON `rows::AvailabilityRow` in
/// older files)
pub(super) const AVAILABILITY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("availability");
/// address bytes -> `rows::BanRow` (JSON). A file from before bans gets the table when it
/// is opened; the layout of the other tables is unchanged, so the schema version is too.
pub(super) const BANS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bans");
/// (accepted_at_ms << 64 | sequence) -> an outcome row (`store::binrow`; JSON
/// `rows::OutcomeRow` when written before); time-ordered for pruning.
pub(super) const OUTCOMES: TableDefinition<u128, &[u8]> = TableDefinition::new("outcomes");

/// key id -> `rows::KeyRow` (JSON): client and admin keys, by digest only.
pub(super) const KEYS: TableDefinition<u64, &[u8]> = TableDefinition::new("keys");

const SCHEMA_KEY: &str = "schema_version";
/// The oldest row format the per-miner tables may still hold: absent in files written
/// before the binary rows, [`binrow::BINARY_VERSION`] once they were upgraded.
pub(super) const ROW_FORMAT_KEY: &str = "row_format";
const SEQ_KEY: &str = "outcome_seq";

/// A change the writer applies; each is answered with a [`Reply`].
pub(super) enum Op {
    Insert(Miner),
    Update(Miner),
    /// The new record, the token hash the stored one must have, and whether to drop the
    /// statistics and availability.
    Replace(Miner, String, bool),
    Delete(Address, String),
    Ban(Ban),
    Unban(Address),
    Outcome(OutcomeRecord, f64),
    SaveAvailability(Vec<(Address, Availability)>),
    /// Deletes at most `batch` of the oldest outcomes that are older than `before` or beyond
    /// the newest `keep`.
    Prune {
        before: u64,
        keep: Option<u64>,
        batch: u64,
    },
    Import(Vec<StoredMiner>, Vec<OutcomeRecord>),
    Wipe,
    InsertKey(ApiKey),
    RevokeKey(u64),
}

pub(super) enum Reply {
    Done,
    Stats(MinerStats),
    Count(u64),
}

/// Creates the tables of a new file, and refuses a file with a newer schema.
/// Creates or checks the schema, and upgrades older per-miner rows to the binary format;
/// returns how many rows it upgraded.
pub(super) fn init_schema(db: &Database) -> Result<usize> {
    let txn = db.begin_write().map_err(unavailable)?;
    let mut upgraded = 0;
    {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let found = meta
            .get(SCHEMA_KEY)
            .map_err(unavailable)?
            .map(|v| v.value());
        match found {
            None => {
                meta.insert(SCHEMA_KEY, SCHEMA_VERSION)
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
        txn.open_table(KEYS).map_err(unavailable)?;
        txn.open_table(BANS).map_err(unavailable)?;
        let format = meta
            .get(ROW_FORMAT_KEY)
            .map_err(unavailable)?
            .map_or(0, |v| v.value());
        if format < u64::from(binrow::BINARY_VERSION) {
            upgraded = upgrade_rows(&txn)?;
            meta.insert(ROW_FORMAT_KEY, u64::from(binrow::BINARY_VERSION))
                .map_err(unavailable)?;
        }
    }
    txn.commit().map_err(unavailable)?;
    Ok(upgraded)
}

/// Rewrites every JSON row of the per-miner tables in the binary format, in the caller's
/// transaction (all or nothing). Each row is decoded first, so a row this build cannot read
/// stops the upgrade, and the open, instead of being carried over. Returns the rows rewritten.
fn upgrade_rows(txn: &redb::WriteTransaction) -> Result<usize> {
    type Recode = fn(&[u8]) -> std::result::Result<Vec<u8>, rows::RowError>;
    type PerMiner = TableDefinition<'static, &'static [u8], &'static [u8]>;
    let tables: [(PerMiner, Recode); 3] = [
        (MINERS, |b| binrow::encode_miner(&binrow::decode_miner(b)?)),
        (STATS, |b| {
            Ok(binrow::encode_stats(&binrow::decode_stats(b)?))
        }),
        (AVAILABILITY, |b| {
            Ok(binrow::encode_availability(&binrow::decode_availability(
                b,
            )?))
        }),
    ];
    let mut n = 0;
    for (def, recode) in tables {
        let mut t = txn.open_table(def).map_err(unavailable)?;
        let mut old = Vec::new();
        for entry in t.iter().map_err(unavailable)? {
            let (k, v) = entry.map_err(unavailable)?;
            if binrow::is_json(v.value()) {
                old.push((k.value().to_vec(), row(recode(v.value()))?));
            }
        }
        for (k, v) in &old {
            t.insert(k.as_slice(), v.as_slice()).map_err(unavailable)?;
        }
        n += old.len();
    }
    Ok(n)
}

/// Every table, opened in one write transaction.
pub(super) struct Tables<'t> {
    meta: redb::Table<'t, &'static str, u64>,
    miners: redb::Table<'t, &'static [u8], &'static [u8]>,
    stats: redb::Table<'t, &'static [u8], &'static [u8]>,
    availability: redb::Table<'t, &'static [u8], &'static [u8]>,
    outcomes: redb::Table<'t, u128, &'static [u8]>,
    keys: redb::Table<'t, u64, &'static [u8]>,
    bans: redb::Table<'t, &'static [u8], &'static [u8]>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t redb::WriteTransaction) -> Result<Self> {
        Ok(Self {
            meta: txn.open_table(META).map_err(unavailable)?,
            miners: txn.open_table(MINERS).map_err(unavailable)?,
            stats: txn.open_table(STATS).map_err(unavailable)?,
            availability: txn.open_table(AVAILABILITY).map_err(unavailable)?,
            outcomes: txn.open_table(OUTCOMES).map_err(unavailable)?,
            keys: txn.open_table(KEYS).map_err(unavailable)?,
            bans: txn.open_table(BANS).map_err(unavailable)?,
        })
    }

    fn stored_token(&self, address: &Address) -> Result<Option<String>> {
        match self
            .miners
            .get(address.as_bytes().as_slice())
            .map_err(unavailable)?
        {
            None => Ok(None),
            Some(v) => Ok(Some(row(binrow::decode_miner(v.value()))?.token_hash)),
        }
    }

    fn next_seq(&self) -> Result<u64> {
        Ok(self
            .meta
            .get(SEQ_KEY)
            .map_err(unavailable)?
            .map_or(0, |v| v.value()))
    }

    fn put_miner(&mut self, m: &Miner) -> Result<()> {
        let v = row(binrow::encode_miner(m))?;
        self.miners
            .insert(m.address.as_bytes().as_slice(), v.as_slice())
            .map_err(unavailable)?;
        Ok(())
    }

    fn put_outcome(&mut self, o: &OutcomeRecord, seq: u64) -> Result<()> {
        let v = binrow::encode_outcome(o);
        let key = (u128::from(o.at) << 64) | u128::from(seq);
        self.outcomes
            .insert(key, v.as_slice())
            .map_err(unavailable)?;
        Ok(())
    }

    /// Applies one operation. An `Unavailable` error may leave part of it written: the
    /// caller must then abort the whole transaction.
    pub(super) fn apply(&mut self, op: Op) -> Result<Reply> {
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
                if self
                    .bans
                    .get(key.as_slice())
                    .map_err(unavailable)?
                    .is_some()
                {
                    return Err(StoreError::Banned);
                }
                self.put_miner(&m)?;
                Ok(Reply::Done)
            }
            Op::Update(m) => {
                match self.stored_token(&m.address)? {
                    None => return Err(StoreError::NotFound),
                    Some(t) if t != m.token_hash => return Err(StoreError::TokenMismatch),
                    Some(_) => {}
                }
                self.put_miner(&m)?;
                Ok(Reply::Done)
            }
            Op::Replace(m, previous, fresh) => {
                match self.stored_token(&m.address)? {
                    None => return Err(StoreError::NotFound),
                    Some(t) if t != previous => return Err(StoreError::TokenMismatch),
                    Some(_) => {}
                }
                self.put_miner(&m)?;
                if fresh {
                    let k = m.address.as_bytes().as_slice();
                    self.stats.remove(k).map_err(unavailable)?;
                    self.availability.remove(k).map_err(unavailable)?;
                }
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
            Op::Ban(b) => {
                let k = b.address.as_bytes().as_slice();
                let v = row(rows::encode_ban(&b))?;
                self.bans.insert(k, v.as_bytes()).map_err(unavailable)?;
                let removed = self.miners.remove(k).map_err(unavailable)?.is_some();
                self.stats.remove(k).map_err(unavailable)?;
                self.availability.remove(k).map_err(unavailable)?;
                Ok(Reply::Count(u64::from(removed)))
            }
            Op::Unban(a) => {
                if self
                    .bans
                    .remove(a.as_bytes().as_slice())
                    .map_err(unavailable)?
                    .is_none()
                {
                    return Err(StoreError::NotFound);
                }
                Ok(Reply::Done)
            }
            Op::Outcome(o, decay) => {
                let k = o.address.as_bytes().as_slice();
                if self.miners.get(k).map_err(unavailable)?.is_none() {
                    return Err(StoreError::NotFound);
                }
                let current = match self.stats.get(k).map_err(unavailable)? {
                    Some(v) => row(binrow::decode_stats(v.value()))?,
                    None => MinerStats::default(),
                };
                let next = current.with_outcome(o.sample(), decay);
                let seq = self.next_seq()?;
                let sv = binrow::encode_stats(&next);
                self.stats.insert(k, sv.as_slice()).map_err(unavailable)?;
                self.put_outcome(&o, seq)?;
                self.meta
                    .insert(SEQ_KEY, seq.wrapping_add(1))
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
                    let v = binrow::encode_availability(&av);
                    self.availability
                        .insert(k, v.as_slice())
                        .map_err(unavailable)?;
                }
                Ok(Reply::Done)
            }
            Op::Prune {
                before,
                keep,
                batch,
            } => {
                // Keys are (time, sequence): the first entry is always the oldest.
                let end = u128::from(before) << 64;
                let len = self.outcomes.len().map_err(unavailable)?;
                let excess = keep.map_or(0, |k| len.saturating_sub(k));
                let mut n = 0;
                while n < batch {
                    let first = match self.outcomes.first().map_err(unavailable)? {
                        Some((k, _)) => k.value(),
                        None => break,
                    };
                    if n >= excess && first >= end {
                        break;
                    }
                    self.outcomes.remove(first).map_err(unavailable)?;
                    n += 1;
                }
                Ok(Reply::Count(n))
            }
            Op::Import(miners, outcomes) => {
                for m in miners {
                    let k = m.miner.address.as_bytes().as_slice();
                    let sv = binrow::encode_stats(&m.stats);
                    let av = binrow::encode_availability(&m.availability);
                    self.put_miner(&m.miner)?;
                    self.stats.insert(k, sv.as_slice()).map_err(unavailable)?;
                    self.availability
                        .insert(k, av.as_slice())
                        .map_err(unavailable)?;
                }
                let mut seq = self.next_seq()?;
                for o in outcomes {
                    self.put_outcome(&o, seq)?;
                    seq = seq.wrapping_add(1);
                }
                self.meta.insert(SEQ_KEY, seq).map_err(unavailable)?;
                Ok(Reply::Done)
            }
            Op::Wipe => {
                self.miners.retain(|_, _| false).map_err(unavailable)?;
                self.stats.retain(|_, _| false).map_err(unavailable)?;
                self.availability
                    .retain(|_, _| false)
                    .map_err(unavailable)?;
                self.outcomes.retain(|_, _| false).map_err(unavailable)?;
                self.bans.retain(|_, _| false).map_err(unavailable)?;
                Ok(Reply::Done)
            }
            Op::InsertKey(k) => {
                // Few keys (one per client): a scan for the digest is cheap, and a digest
                // held twice would make one secret mean two keys.
                for entry in self.keys.iter().map_err(unavailable)? {
                    let (id, v) = entry.map_err(unavailable)?;
                    if id.value() == k.id || row(rows::decode_key(v.value()))?.digest == k.digest {
                        return Err(StoreError::AlreadyExists);
                    }
                }
                let v = row(rows::encode_key(&k))?;
                self.keys.insert(k.id, v.as_bytes()).map_err(unavailable)?;
                Ok(Reply::Done)
            }
            Op::RevokeKey(id) => match self.keys.remove(id).map_err(unavailable)? {
                Some(_) => Ok(Reply::Done),
                None => Err(StoreError::NotFound),
            },
        }
    }
}

/// The read side: a snapshot of the three per-miner tables.
struct MinerTables {
    miners: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    stats: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    availability: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl MinerTables {
    fn open(db: &Database) -> Result<Self> {
        let txn = db.begin_read().map_err(unavailable)?;
        Ok(Self {
            miners: txn.open_table(MINERS).map_err(unavailable)?,
            stats: txn.open_table(STATS).map_err(unavailable)?,
            availability: txn.open_table(AVAILABILITY).map_err(unavailable)?,
        })
    }

    /// The statistics and availability that go with a miner row.
    fn complete(&self, key: &[u8], miner: Miner) -> Result<StoredMiner> {
        let stats = match self.stats.get(key).map_err(unavailable)? {
            Some(v) => row(binrow::decode_stats(v.value()))?,
            None => MinerStats::default(),
        };
        let availability = match self.availability.get(key).map_err(unavailable)? {
            Some(v) => row(binrow::decode_availability(v.value()))?,
            None => Availability::default(),
        };
        Ok(StoredMiner {
            miner,
            stats,
            availability,
        })
    }
}

pub(super) fn load_one(db: &Database, address: Address) -> Result<Option<StoredMiner>> {
    let t = MinerTables::open(db)?;
    let k = address.as_bytes().as_slice();
    let Some(v) = t.miners.get(k).map_err(unavailable)? else {
        return Ok(None);
    };
    let miner = row(binrow::decode_miner(v.value()))?;
    t.complete(k, miner).map(Some)
}

/// Every miner with its statistics and availability.
pub(super) fn load_all(db: &Database) -> Result<Vec<StoredMiner>> {
    let mut out = Vec::new();
    for_each_miner(db, |m| {
        out.push(m);
        Ok(true)
    })?;
    Ok(out)
}

/// Hands every miner with its statistics and availability to `f`, in address order, until
/// `f` answers `false`. The three tables share their keys and redb keeps each in key order,
/// so one pass walks all three side by side (a merge join) instead of looking up two rows
/// per miner.
pub(super) fn for_each_miner(
    db: &Database,
    mut f: impl FnMut(StoredMiner) -> Result<bool>,
) -> Result<()> {
    let t = MinerTables::open(db)?;
    let mut stats = t.stats.iter().map_err(unavailable)?.peekable();
    let mut avail = t.availability.iter().map_err(unavailable)?.peekable();
    for entry in t.miners.iter().map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        let key = k.value();
        let miner = row(binrow::decode_miner(v.value()))?;
        if miner.address.as_bytes().as_slice() != key {
            return Err(corrupt(format!(
                "miner row {} is under the wrong key",
                miner.address
            )));
        }
        let stats = next_for(&mut stats, key, binrow::decode_stats)?.unwrap_or_default();
        let availability =
            next_for(&mut avail, key, binrow::decode_availability)?.unwrap_or_default();
        let more = f(StoredMiner {
            miner,
            stats,
            availability,
        })?;
        if !more {
            break;
        }
    }
    Ok(())
}

type RowIter<'a> = std::iter::Peekable<redb::Range<'a, &'static [u8], &'static [u8]>>;

/// The row under `key` in a key-ordered table walked alongside the miners, if it has one.
/// Rows under keys no miner has (none are written, but a damaged file may hold some) are
/// stepped over.
fn next_for<T>(
    rows: &mut RowIter<'_>,
    key: &[u8],
    decode: fn(&[u8]) -> std::result::Result<T, rows::RowError>,
) -> Result<Option<T>> {
    loop {
        let order = match rows.peek() {
            None => return Ok(None),
            Some(Err(_)) => {
                let e = rows.next().and_then(|r| r.err());
                return Err(unavailable(e.map_or_else(
                    || "table read failed".to_string(),
                    |e| e.to_string(),
                )));
            }
            Some(Ok((k, _))) => k.value().cmp(key),
        };
        match order {
            std::cmp::Ordering::Less => {
                rows.next();
            }
            std::cmp::Ordering::Equal => {
                return match rows.next() {
                    Some(Ok((_, v))) => row(decode(v.value())).map(Some),
                    _ => Ok(None),
                };
            }
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
}

pub(super) fn export(
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
    for entry in t
        .range::<u128>((lower, Bound::Unbounded))
        .map_err(unavailable)?
        .take(limit.max(1))
    {
        let (k, v) = entry.map_err(unavailable)?;
        out.push(row(binrow::decode_outcome(v.value()))?);
        last = Some(k.value());
    }
    Ok((out, last))
}

pub(super) fn load_keys(db: &Database) -> Result<Vec<ApiKey>> {
    let txn = db.begin_read().map_err(unavailable)?;
    let t = txn.open_table(KEYS).map_err(unavailable)?;
    let mut out = Vec::new();
    for entry in t.iter().map_err(unavailable)? {
        let (_, v) = entry.map_err(unavailable)?;
        out.push(row(rows::decode_key(v.value()))?);
    }
    out.sort_by_key(|k| (k.created_at, k.id));
    Ok(out)
}

pub(super) fn bans(db: &Database) -> Result<Vec<Ban>> {
    let txn = db.begin_read().map_err(unavailable)?;
    let t = txn.open_table(BANS).map_err(unavailable)?;
    let mut out = Vec::new();
    for entry in t.iter().map_err(unavailable)? {
        let (_, v) = entry.map_err(unavailable)?;
        out.push(row(rows::decode_ban(v.value()))?);
    }
    Ok(out)
}

pub(super) fn outcome_count(db: &Database) -> Result<u64> {
    let txn = db.begin_read().map_err(unavailable)?;
    let t = txn.open_table(OUTCOMES).map_err(unavailable)?;
    t.len().map_err(unavailable)
}
