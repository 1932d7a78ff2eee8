//! `poolhub migrate`: copies everything durable from one store to another (redb file ↔
//! PostgreSQL), then checks the copy.
//!
//! Hubs must be stopped while it runs (a redb file a hub holds is refused anyway): the copy
//! is of the source as it is when read. The target must be empty unless `force`, which
//! wipes it first, so the result is always an exact copy.

use super::postgres::{PgOptions, PostgresStore};
use super::redb::RedbStore;
use super::{DurableStore, StoreError, StoredMiner};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Miners per import commit.
const MINER_CHUNK: usize = 1000;
/// Outcome records per export page and import commit.
const OUTCOME_PAGE: usize = 5000;

/// What a migration copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub miners: usize,
    pub outcomes: u64,
    /// Client and admin keys (digests only) copied.
    pub keys: usize,
    pub bans: usize,
}

/// Why a migration stopped. The target is left as the failed step left it: run again with
/// `--force` once the cause is fixed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("--from and --to are the same store")]
    SameStore,
    #[error("{0}: no such redb file")]
    NoSuchFile(String),
    /// `location` is shown with its password redacted.
    #[error("{location}")]
    OpenPostgres {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("{location} (is a hub still running on it? stop it before migrating)")]
    OpenRedb {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "the target is not empty ({miners} miners, {outcomes} outcomes); use --force to \
         replace its contents"
    )]
    NotEmpty { miners: usize, outcomes: u64 },
    /// A store failed during the step named.
    #[error("{step}")]
    Store {
        step: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("verification failed: {in_source} miners in the source, {in_target} in the target")]
    MinerCount { in_source: usize, in_target: usize },
    #[error("verification failed: miner records differ after the copy")]
    MinerRecords,
    #[error("verification failed: a key of the source is missing from the target")]
    KeyRecords,
    #[error("verification failed: {in_source} outcomes in the source, {in_target} in the target")]
    OutcomeCount { in_source: u64, in_target: u64 },
    #[error("verification failed: {in_source} bans in the source, {in_target} in the target")]
    BanCount { in_source: usize, in_target: usize },
}

/// A location given on the command line: a `postgresql://` URL or a redb file path.
pub fn is_postgres(location: &str) -> bool {
    location.starts_with("postgresql://") || location.starts_with("postgres://")
}

/// Opens a location. A redb source must exist (reading never creates a file).
pub async fn open(
    location: &str,
    schema: &str,
    must_exist: bool,
) -> Result<Arc<dyn DurableStore>, MigrateError> {
    if is_postgres(location) {
        let s = PostgresStore::connect(
            PgOptions {
                url: location.to_string(),
                schema: schema.to_string(),
                max_connections: 4,
                startup_timeout: Duration::from_secs(10),
            },
            None,
        )
        .await
        .map_err(|source| MigrateError::OpenPostgres {
            location: crate::config::redact_url(location),
            source,
        })?;
        return Ok(Arc::new(s));
    }
    let path = Path::new(location);
    if must_exist && !path.is_file() {
        return Err(MigrateError::NoSuchFile(location.to_string()));
    }
    let s = RedbStore::open(path, None).map_err(|source| MigrateError::OpenRedb {
        location: location.to_string(),
        source,
    })?;
    Ok(Arc::new(s))
}

fn sorted(mut v: Vec<StoredMiner>) -> Vec<StoredMiner> {
    v.sort_by_key(|m| m.miner.address);
    v
}

/// Copies miners (with token hashes, statistics and availability) and the outcome history
/// from `from` to `to`, then verifies counts and miner records.
pub async fn copy(
    from: &dyn DurableStore,
    to: &dyn DurableStore,
    force: bool,
) -> Result<Copied, MigrateError> {
    let e = |step: &'static str| move |source| MigrateError::Store { step, source };
    let existing = to.load_all().await.map_err(e("reading the target"))?.len();
    let existing_outcomes = to.outcome_count().await.map_err(e("reading the target"))?;
    let existing_bans = to.bans().await.map_err(e("reading the target"))?.len();
    if existing > 0 || existing_outcomes > 0 || existing_bans > 0 {
        if !force {
            return Err(MigrateError::NotEmpty {
                miners: existing,
                outcomes: existing_outcomes,
            });
        }
        to.wipe().await.map_err(e("emptying the target"))?;
    }
    let miners = from.load_all().await.map_err(e("reading the source"))?;
    for chunk in miners.chunks(MINER_CHUNK) {
        to.import(chunk.to_vec(), Vec::new())
            .await
            .map_err(e("writing miners"))?;
    }
    // Bans after miners: a ban removes its address's miner, and a banned address has none.
    let bans = from.bans().await.map_err(e("reading bans"))?;
    for b in &bans {
        to.ban(b).await.map_err(e("writing bans"))?;
    }
    let mut cursor = None;
    let mut outcomes = 0u64;
    loop {
        let (page, next) = from
            .export_outcomes(cursor, OUTCOME_PAGE)
            .await
            .map_err(e("reading outcomes"))?;
        if page.is_empty() {
            break;
        }
        outcomes += page.len() as u64;
        to.import(Vec::new(), page)
            .await
            .map_err(e("writing outcomes"))?;
        cursor = next;
    }
    // Keys are not wiped by `--force` (they are credentials, not data): a key already in
    // the target is kept, and one that clashes with a different key there stops the copy.
    let keys = from.load_keys().await.map_err(e("reading keys"))?;
    let present = to
        .load_keys()
        .await
        .map_err(e("reading the target's keys"))?;
    for k in &keys {
        if !present.contains(k) {
            to.insert_key(k).await.map_err(e("writing keys"))?;
        }
    }
    let copied_keys = to.load_keys().await.map_err(e("verifying"))?;
    if !keys.iter().all(|k| copied_keys.contains(k)) {
        return Err(MigrateError::KeyRecords);
    }
    // Verify: the same miners, record for record, and the same number of outcomes.
    let copied = to.load_all().await.map_err(e("verifying"))?;
    if copied.len() != miners.len() {
        return Err(MigrateError::MinerCount {
            in_source: miners.len(),
            in_target: copied.len(),
        });
    }
    if sorted(copied) != sorted(miners.clone()) {
        return Err(MigrateError::MinerRecords);
    }
    let n = to.outcome_count().await.map_err(e("verifying"))?;
    let source_n = from.outcome_count().await.map_err(e("verifying"))?;
    if n != outcomes || n != source_n {
        return Err(MigrateError::OutcomeCount {
            in_source: source_n,
            in_target: n,
        });
    }
    let copied_bans = to.bans().await.map_err(e("verifying"))?;
    if copied_bans.len() != bans.len() {
        return Err(MigrateError::BanCount {
            in_source: bans.len(),
            in_target: copied_bans.len(),
        });
    }
    Ok(Copied {
        miners: miners.len(),
        outcomes,
        keys: keys.len(),
        bans: bans.len(),
    })
}

/// The whole command: open both, copy, verify, close.
pub async fn run(
    from: &str,
    to: &str,
    from_schema: &str,
    to_schema: &str,
    force: bool,
) -> Result<Copied, MigrateError> {
    if from == to && from_schema == to_schema {
        return Err(MigrateError::SameStore);
    }
    let src = open(from, from_schema, true).await?;
    let dst = open(to, to_schema, false).await?;
    let r = copy(src.as_ref(), dst.as_ref(), force).await;
    src.close().await;
    dst.close().await;
    r
}
