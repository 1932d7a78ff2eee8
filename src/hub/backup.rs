//! Online backup of the durable data, see [`crate::store::DurableStore::snapshot`].

use super::{now_ms, Hub, HubError};
use crate::store::StoreError;
use rand::RngCore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

impl Hub {
    /// A consistent copy of the durable data (every write acknowledged so far) while writes
    /// go on: an open file, already unlinked so nothing is left behind whatever the caller
    /// does, with the miners and outcomes it holds. `None` when the backend has its own tool
    /// (PostgreSQL: `pg_dump`).
    ///
    /// The copy is written next to the data file (the one directory a packaged hub may write),
    /// or in the temporary directory for an in-memory hub.
    pub async fn snapshot(&self) -> Result<Option<(tokio::fs::File, usize, u64)>, HubError> {
        let dir = {
            let t = self.tuning();
            if t.storage.ephemeral {
                std::env::temp_dir()
            } else {
                t.storage
                    .path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            }
        };
        let mut tag = [0u8; 8];
        rand::rng().fill_bytes(&mut tag);
        let path = dir.join(format!(".poolhub-backup-{}.redb", hex::encode(tag)));
        let Some(done) = self.durable.snapshot(&path).await else {
            return Ok(None);
        };
        let (miners, outcomes) = done?;
        let file = tokio::fs::File::open(&path).await;
        let _ = tokio::fs::remove_file(&path).await;
        let file = file.map_err(|e| StoreError::unavailable(self.durable.backend(), e))?;
        tracing::info!(miners, outcomes, "online backup taken");
        Ok(Some((file, miners, outcomes)))
    }
}

impl Hub {
    /// Scheduled backups (`storage.backup_dir`): one now, then one every
    /// `storage.backup_interval` seconds, keeping the newest `storage.backup_keep`. Each is a
    /// [`crate::store::DurableStore::snapshot`], so the hub keeps serving meanwhile.
    pub(crate) fn spawn_backups(
        self: &Arc<Self>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let st = self.tuning().storage.clone();
        let Some(dir) = st.backup_dir else {
            return;
        };
        let every = Duration::from_secs(st.backup_interval.max(1));
        self.metrics
            .backup_interval_seconds
            .set(i64::try_from(every.as_secs()).unwrap_or(i64::MAX));
        let hub = self.clone();
        tracker.spawn(async move {
            loop {
                hub.scheduled_backup(&dir, st.backup_keep as usize).await;
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = cancel.cancelled() => break,
                }
            }
        });
    }

    async fn scheduled_backup(&self, dir: &Path, keep: usize) {
        let m = &self.metrics;
        let name = backup_name(SystemTime::now());
        let result = match tokio::fs::create_dir_all(dir).await {
            Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
            Ok(()) => match self.durable.snapshot(&dir.join(&name)).await {
                None => Err("this backend has no snapshot (use pg_dump)".into()),
                Some(r) => r.map_err(|e| crate::store::error_chain(&e)),
            },
        };
        match result {
            Ok((miners, outcomes)) => {
                m.backups.ok.inc();
                m.backup_last_success
                    .set(i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX));
                let removed = prune_backups(dir, keep);
                tracing::info!(
                    file = %dir.join(&name).display(),
                    miners,
                    outcomes,
                    removed,
                    "scheduled backup written"
                );
            }
            Err(e) => {
                m.backups.error.inc();
                tracing::error!(dir = %dir.display(), "scheduled backup failed: {e}");
            }
        }
    }
}

/// `poolhub-YYYYMMDDTHHMMSSZ.redb`: names that sort by time.
fn backup_name(t: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("poolhub-{stamp}.redb")
}

fn is_backup_name(n: &str) -> bool {
    n.len() == backup_name(SystemTime::UNIX_EPOCH).len()
        && n.starts_with("poolhub-")
        && n.ends_with("Z.redb")
}

/// Deletes all but the newest `keep` scheduled backups in `dir` (other files are left
/// alone); returns how many it deleted.
fn prune_backups(dir: &Path, keep: usize) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_backup_name(n))
        .collect();
    names.sort();
    let extra = names.len().saturating_sub(keep);
    names[..extra]
        .iter()
        .filter(|n| std::fs::remove_file(dir.join(n)).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_sort_by_time_and_only_they_are_pruned() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(backup_name(t), "poolhub-20261118T110640Z.redb");
        let dir = tempfile::tempdir().unwrap();
        for s in 0..5 {
            let n = backup_name(t + Duration::from_secs(s));
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        std::fs::write(dir.path().join("poolhub.redb"), b"the data").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        assert_eq!(prune_backups(dir.path(), 2), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "notes.txt",
                "poolhub-20261118T110643Z.redb",
                "poolhub-20261118T110644Z.redb",
                "poolhub.redb"
            ]
        );
    }
}
