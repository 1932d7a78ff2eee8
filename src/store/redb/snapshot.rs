//! Online backup: a consistent copy of a running hub's redb file, taken while it keeps
//! serving writes.
//!
//! redb updates its file in place, so copying the file while the hub writes can tear it. The
//! copy is made instead from one read transaction: redb's MVCC keeps that snapshot's pages
//! intact for as long as the transaction lives, whatever commits meanwhile. Every table is
//! copied row by row into a new file, which is synced, checked the way `poolhub backup`
//! checks a copy, and only then renamed into place. The copy therefore holds exactly what was
//! committed (every acknowledged write) when the read transaction began, and nothing later or
//! half-written.

use super::backup::{check_copy, finish, partial_path, BackedUp, BackupError};
use super::tables::{AVAILABILITY, BANS, KEYS, META, MINERS, OUTCOMES, STATS};
use redb::{
    Database, Durability, Key, ReadTransaction, ReadableTable, TableDefinition, TableError,
    TableHandle, Value,
};
use std::path::Path;

/// Rows copied per write transaction of the copy (bounds the copy's memory).
const ROWS_PER_COMMIT: usize = 20_000;

/// Copies what `db` holds now into a new redb file at `dest` (which must not exist).
pub fn snapshot(db: &Database, dest: &Path) -> Result<BackedUp, BackupError> {
    if dest.exists() {
        return Err(BackupError::DestinationExists(dest.to_path_buf()));
    }
    let tmp = partial_path(dest)?;
    let copied = copy_all(db, &tmp)
        .and_then(|()| check_copy(&tmp).map_err(BackupError::Check))
        .and_then(|counts| finish(&tmp, dest).map(|()| counts));
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied
}

fn copy_all(db: &Database, tmp: &Path) -> Result<(), BackupError> {
    let err = |e: &dyn std::fmt::Display| BackupError::Snapshot(e.to_string());
    // The snapshot: everything committed before this line, nothing after.
    let rtx = db.begin_read().map_err(|e| err(&e))?;
    let out = Database::create(tmp).map_err(|source| BackupError::Open {
        path: tmp.to_path_buf(),
        source,
    })?;
    copy(&rtx, &out, META)?;
    copy(&rtx, &out, MINERS)?;
    copy(&rtx, &out, STATS)?;
    copy(&rtx, &out, AVAILABILITY)?;
    copy(&rtx, &out, BANS)?;
    copy(&rtx, &out, OUTCOMES)?;
    copy(&rtx, &out, KEYS)?;
    drop(rtx);
    drop(out);
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|source| BackupError::Copy {
            path: tmp.to_path_buf(),
            source,
        })
}

/// Copies one table (absent in the source: nothing to copy) in commits of
/// [`ROWS_PER_COMMIT`]; the last commit is durable, and the file is synced after it anyway.
fn copy<K: Key + 'static, V: Value + 'static>(
    rtx: &ReadTransaction,
    out: &Database,
    def: TableDefinition<K, V>,
) -> Result<(), BackupError> {
    let err = |e: &dyn std::fmt::Display| BackupError::Snapshot(format!("{}: {e}", def.name()));
    let table = match rtx.open_table(def) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(err(&e)),
    };
    let mut rows = table.iter().map_err(|e| err(&e))?.peekable();
    loop {
        let mut wtx = out.begin_write().map_err(|e| err(&e))?;
        wtx.set_durability(Durability::None);
        {
            let mut t = wtx.open_table(def).map_err(|e| err(&e))?;
            for row in rows.by_ref().take(ROWS_PER_COMMIT) {
                let (k, v) = row.map_err(|e| err(&e))?;
                t.insert(k.value(), v.value()).map_err(|e| err(&e))?;
            }
        }
        let last = rows.peek().is_none();
        if last {
            wtx.set_durability(Durability::Immediate);
        }
        wtx.commit().map_err(|e| err(&e))?;
        if last {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Address, Miner};
    use crate::store::redb::RedbStore;
    use crate::store::testing::fixtures;
    use crate::store::DurableStore;

    /// The `i`th miner, its number in the address's last four bytes.
    fn nth(i: u32) -> Miner {
        let mut m = fixtures::miner(1, "h");
        let mut a = [0u8; 20];
        a[16..].copy_from_slice(&i.to_be_bytes());
        m.address = Address::from_bytes(a);
        m
    }

    fn number(m: &Miner) -> u32 {
        let b = m.address.as_bytes();
        u32::from_be_bytes([b[16], b[17], b[18], b[19]])
    }

    /// Writes keep landing while the copy is taken: the copy holds every miner written before
    /// it began and opens as a store; the source keeps everything.
    #[test]
    fn a_copy_taken_under_writes_holds_everything_committed_before_it() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(RedbStore::open(&dir.path().join("hub.redb"), None).unwrap());
        rt.block_on(async {
            for i in 1..=200u32 {
                store.insert_miner(&nth(i)).await.unwrap();
            }
            let mut outcome = fixtures::outcome(1, true, 10);
            outcome.address = nth(1).address;
            store.record_outcome(&outcome, 0.95).await.unwrap();
            // A writer that keeps going through the copy.
            let w = store.clone();
            let writer = tokio::spawn(async move {
                for i in 201..=1200u32 {
                    w.insert_miner(&nth(i)).await.unwrap();
                }
            });
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let dest = dir.path().join("copy.redb");
            let db = store.db.clone();
            let d = dest.clone();
            let copied = tokio::task::spawn_blocking(move || snapshot(&db, &d))
                .await
                .unwrap()
                .unwrap();
            writer.await.unwrap();
            assert!(copied.miners >= 200, "{copied:?}");
            assert_eq!(copied.outcomes, 1);
            let copy = RedbStore::open(&dest, None).unwrap();
            let miners = copy.load_all().await.unwrap();
            assert_eq!(miners.len(), copied.miners);
            // Whatever the copy holds is a prefix of the writes: no miner after a missing one.
            let mut ids: Vec<u32> = miners.iter().map(|m| number(&m.miner)).collect();
            ids.sort_unstable();
            assert_eq!(ids, (1..=ids.len() as u32).collect::<Vec<_>>());
            copy.close().await;
            assert_eq!(store.load_all().await.unwrap().len(), 1200);
            // A second copy to the same name is refused and changes nothing.
            let db = store.db.clone();
            assert!(matches!(
                snapshot(&db, &dest),
                Err(BackupError::DestinationExists(_))
            ));
        });
    }
}
