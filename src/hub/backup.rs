//! Online backup of the durable data, see [`crate::store::DurableStore::snapshot`].

use super::{Hub, HubError};
use crate::store::StoreError;
use rand::RngCore;
use std::path::{Path, PathBuf};

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
