//! `poolhub compact`: shrinks a stopped hub's redb file after a large prune, with redb's own
//! compaction (it moves live pages down and truncates the file).
//!
//! The file is opened with redb's lock, so a running hub's file is refused rather than
//! rewritten under it.

use std::path::{Path, PathBuf};

/// The file's size before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub before: u64,
    pub after: u64,
}

/// Why the file was not compacted. The file is unchanged in every case but `Compact`, where
/// redb's own recovery applies on the next open.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is in use, most likely by a running hub: stop it first (systemctl stop poolhub)", .0.display())]
    InUse(PathBuf),
    #[error("cannot open {} as a redb file", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("compacting {} failed", .path.display())]
    Compact {
        path: PathBuf,
        #[source]
        source: redb::CompactionError,
    },
}

fn size(path: &Path) -> Result<u64, CompactError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| CompactError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Compacts the redb file at `path` until redb finds nothing more to move.
pub fn compact(path: &Path) -> Result<Compacted, CompactError> {
    let before = size(path)?;
    let mut db = redb::Database::open(path).map_err(|source| match source {
        redb::DatabaseError::DatabaseAlreadyOpen => CompactError::InUse(path.to_path_buf()),
        source => CompactError::Open {
            path: path.to_path_buf(),
            source,
        },
    })?;
    // Each pass moves what it can; a few passes reach the fixed point on a pruned file.
    for _ in 0..8 {
        let moved = db.compact().map_err(|source| CompactError::Compact {
            path: path.to_path_buf(),
            source,
        })?;
        if !moved {
            break;
        }
    }
    drop(db);
    Ok(Compacted {
        before,
        after: size(path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;
    use crate::store::testing::fixtures::{miner, outcome};
    use crate::store::DurableStore;

    /// A file that held many outcomes shrinks once they are pruned and it is compacted, and
    /// what is left is still there.
    #[tokio::test]
    async fn a_pruned_file_shrinks_and_keeps_what_is_left() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("hub.redb");
        {
            let s = RedbStore::open(&path, None).expect("open");
            s.insert_miner(&miner(1, "h")).await.expect("miner");
            for at in 1..=3_000u64 {
                s.record_outcome(&outcome(1, at % 3 == 0, at), 0.95)
                    .await
                    .expect("outcome");
            }
            assert_eq!(s.prune_outcomes(2_991, None).await.expect("prune"), 2_990);
            s.close().await;
        }
        let c = compact(&path).expect("compact");
        assert!(c.after < c.before, "{c:?}");
        let s = RedbStore::open(&path, None).expect("reopen");
        assert_eq!(s.outcome_count().await.expect("count"), 10);
        assert_eq!(s.load_all().await.expect("load").len(), 1);
        s.close().await;
    }

    #[tokio::test]
    async fn an_open_file_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("hub.redb");
        let s = RedbStore::open(&path, None).expect("open");
        assert!(matches!(compact(&path), Err(CompactError::InUse(_))));
        s.close().await;
        assert!(matches!(
            compact(&dir.path().join("absent.redb")),
            Err(CompactError::Read { .. })
        ));
    }
}
