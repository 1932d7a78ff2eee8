//! `poolhub migrate`: copies everything durable from one store to another (redb file ↔
//! PostgreSQL), then checks the copy.
//!
//! Hubs must be stopped while it runs (a redb file a hub holds is refused anyway): the copy
//! is of the source as it is when read. The target must be empty unless `force`, which
//! wipes it first, so the result is always an exact copy.

use super::postgres::{PgOptions, PostgresStore};
use super::redb::RedbStore;
use super::{DurableStore, StoredMiner};
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
) -> Result<Arc<dyn DurableStore>, String> {
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
        .map_err(|e| format!("{}: {e}", crate::config::redact_url(location)))?;
        return Ok(Arc::new(s));
    }
    let path = Path::new(location);
    if must_exist && !path.is_file() {
        return Err(format!("{location}: no such redb file"));
    }
    let s = RedbStore::open(path, None).map_err(|e| {
        format!("{location}: {e} (is a hub still running on it? stop it before migrating)")
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
) -> Result<Copied, String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: super::StoreError| format!("{what}: {err}")
    };
    let existing = to.load_all().await.map_err(e("reading the target"))?.len();
    let existing_outcomes = to.outcome_count().await.map_err(e("reading the target"))?;
    if existing > 0 || existing_outcomes > 0 {
        if !force {
            return Err(format!(
                "the target is not empty ({existing} miners, {existing_outcomes} outcomes); \
                 use --force to replace its contents"
            ));
        }
        to.wipe().await.map_err(e("emptying the target"))?;
    }
    let miners = from.load_all().await.map_err(e("reading the source"))?;
    for chunk in miners.chunks(MINER_CHUNK) {
        to.import(chunk.to_vec(), Vec::new())
            .await
            .map_err(e("writing miners"))?;
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
    // Verify: the same miners, record for record, and the same number of outcomes.
    let copied = to.load_all().await.map_err(e("verifying"))?;
    if copied.len() != miners.len() {
        return Err(format!(
            "verification failed: {} miners in the source, {} in the target",
            miners.len(),
            copied.len()
        ));
    }
    if sorted(copied) != sorted(miners.clone()) {
        return Err("verification failed: miner records differ after the copy".into());
    }
    let n = to.outcome_count().await.map_err(e("verifying"))?;
    let source_n = from.outcome_count().await.map_err(e("verifying"))?;
    if n != outcomes || n != source_n {
        return Err(format!(
            "verification failed: {source_n} outcomes in the source, {n} in the target"
        ));
    }
    Ok(Copied {
        miners: miners.len(),
        outcomes,
    })
}

/// The whole command: open both, copy, verify, close.
pub async fn run(
    from: &str,
    to: &str,
    from_schema: &str,
    to_schema: &str,
    force: bool,
) -> Result<Copied, String> {
    if from == to && from_schema == to_schema {
        return Err("--from and --to are the same store".into());
    }
    let src = open(from, from_schema, true).await?;
    let dst = open(to, to_schema, false).await?;
    let r = copy(src.as_ref(), dst.as_ref(), force).await;
    src.close().await;
    dst.close().await;
    r
}
