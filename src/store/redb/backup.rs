//! `poolhub backup`: a consistent copy of a stopped hub's redb file, checked before it
//! appears at its destination.
//!
//! The source is opened with redb's lock held for the whole copy, so no hub can write it
//! meanwhile (and a running hub's file is refused: a copy taken while it writes can be torn).
//! The copy goes to a temporary file next to the destination, is synced, checked the way the
//! hub would open it, and only then renamed into place.

use super::RedbStore;
use crate::store::{BoxError, DurableStore};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = *b"redb\x1a\x0a\xa9\x0d\x0a";

/// What the checked copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackedUp {
    pub miners: usize,
    pub outcomes: u64,
}

/// Why no backup was made. Nothing is left at the destination in every case.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{} already exists", .0.display())]
    DestinationExists(PathBuf),
    #[error("{} is not a file name", .0.display())]
    NotAFileName(PathBuf),
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a redb file", .0.display())]
    NotRedb(PathBuf),
    #[error(
        "{} is in use, most likely by a running hub. A copy taken while the hub writes can \
         be torn: stop the hub (systemctl stop poolhub), back up, then start it again",
        .0.display()
    )]
    InUse(PathBuf),
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("cannot copy to {}", .path.display())]
    Copy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot copy the running hub's data: {0}")]
    Snapshot(String),
    #[error("the copy does not check out")]
    Check(#[source] BoxError),
    #[error("cannot create {}", .path.display())]
    Rename {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Copies the redb file `src` to `dest` while holding redb's lock on `src` (so no hub can
/// write it meanwhile), checks the copy, and only then renames it into place.
pub fn backup(src: &Path, dest: &Path) -> Result<BackedUp, BackupError> {
    if dest.exists() {
        return Err(BackupError::DestinationExists(dest.to_path_buf()));
    }
    // Opening a file that is not a redb file would rewrite its header: refuse it first.
    let mut magic = [0u8; REDB_MAGIC.len()];
    std::fs::File::open(src)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|source| BackupError::Read {
            path: src.to_path_buf(),
            source,
        })?;
    if magic != REDB_MAGIC {
        return Err(BackupError::NotRedb(src.to_path_buf()));
    }
    let locked = redb::Database::open(src).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => BackupError::InUse(src.to_path_buf()),
        source => BackupError::Open {
            path: src.to_path_buf(),
            source,
        },
    })?;
    let tmp = partial_path(dest)?;
    let copied = std::fs::copy(src, &tmp)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .map_err(|source| BackupError::Copy {
            path: tmp.clone(),
            source,
        });
    drop(locked);
    let counts = match copied.and_then(|()| check_copy(&tmp).map_err(BackupError::Check)) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    finish(&tmp, dest)?;
    Ok(counts)
}

/// The temporary name a copy is written under, next to `dest`.
pub fn partial_path(dest: &Path) -> Result<PathBuf, BackupError> {
    let name = dest
        .file_name()
        .ok_or_else(|| BackupError::NotAFileName(dest.to_path_buf()))?;
    Ok(dest.with_file_name(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Checks a copy written at `tmp` (see [`partial_path`]) the way the hub would open it, and
/// renames it to `dest`; on failure nothing is left at either name.
pub fn install(tmp: &Path, dest: &Path) -> Result<BackedUp, BackupError> {
    if dest.exists() {
        let _ = std::fs::remove_file(tmp);
        return Err(BackupError::DestinationExists(dest.to_path_buf()));
    }
    match check_copy(tmp) {
        Ok(counts) => finish(tmp, dest).map(|()| counts),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(BackupError::Check(e))
        }
    }
}

/// Renames the checked copy `tmp` into place, durably (the directory is synced); on failure
/// the copy is removed.
pub(super) fn finish(tmp: &Path, dest: &Path) -> Result<(), BackupError> {
    if let Err(source) = std::fs::rename(tmp, dest) {
        let _ = std::fs::remove_file(tmp);
        return Err(BackupError::Rename {
            path: dest.to_path_buf(),
            source,
        });
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Opens the copy the way the hub would: redb's integrity check, then the store (schema
/// version) and every miner record.
pub(super) fn check_copy(path: &Path) -> Result<BackedUp, BoxError> {
    let mut db = redb::Database::open(path)?;
    db.check_integrity()?;
    drop(db);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = RedbStore::open(path, None)?;
        let miners = store.load_all().await;
        let outcomes = store.outcome_count().await;
        store.close().await;
        Ok(BackedUp {
            miners: miners?.len(),
            outcomes: outcomes?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::fixtures;

    #[test]
    fn a_stopped_file_is_copied_and_checked_and_nothing_else_is() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("hub.redb");
        let s = RedbStore::open(&src, None).unwrap();
        rt.block_on(async {
            for i in 1..=3 {
                s.insert_miner(&fixtures::miner(i, "h")).await.unwrap();
            }
            s.record_outcome(&fixtures::outcome(1, true, 10), 0.95)
                .await
                .unwrap();
        });
        // While a store holds the file, it is refused and nothing is written.
        let busy = dir.path().join("busy.redb");
        let e = backup(&src, &busy).unwrap_err();
        assert!(matches!(e, BackupError::InUse(_)), "{e:?}");
        assert!(!busy.exists());
        rt.block_on(s.close());
        drop(s);

        let dest = dir.path().join("copy.redb");
        let done = backup(&src, &dest).unwrap();
        assert_eq!(
            done,
            BackedUp {
                miners: 3,
                outcomes: 1
            }
        );
        let again = backup(&src, &dest).unwrap_err();
        assert!(matches!(again, BackupError::DestinationExists(_)));
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, "hello, these are notes").unwrap();
        let e = backup(&notes, &dir.path().join("x.redb")).unwrap_err();
        assert!(matches!(e, BackupError::NotRedb(_)), "{e:?}");
        assert_eq!(
            std::fs::read_to_string(&notes).unwrap(),
            "hello, these are notes"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "no partial files left: {names:?}");
    }
}
