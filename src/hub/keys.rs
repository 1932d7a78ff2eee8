//! Client and admin keys: created and revoked through the admin API, stored (as digests) in
//! the durable store, and held by every hub in its in-memory [`KeyRing`].
//!
//! Every hub sharing the durable store must accept a new key, and refuse a revoked one,
//! within a second. Two paths get it there: a `keys` event on the bus (at once, but pub/sub
//! may lose it) and a reload of the whole set every [`KEY_RELOAD_INTERVAL`] (so a lost event
//! cannot keep a revoked key alive). The reload is one small read of the key table; a
//! request's key check never touches the store.
//!
//! [`KeyRing`]: crate::auth::KeyRing

use super::{now_ms, sync::Event, Hub, HubError};
use crate::auth::{new_secret, ApiKey, Role};
use crate::domain::Invalid;
use crate::store::StoreError;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often each hub reloads every key from the durable store: the bound on how long a
/// revoked key stays usable on another hub when the revocation event was lost.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// Longest key name, in characters.
pub const MAX_KEY_NAME: usize = 64;

/// A key just created: the stored record, and its secret, which is never stored or logged
/// and is shown to the admin once.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

/// Checks a key's name: a label for people and logs, so printable and short.
pub fn validate_key_name(name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() {
        return Err(Invalid::new("name", "must not be empty"));
    }
    if name.chars().count() > MAX_KEY_NAME {
        return Err(Invalid::new(
            "name",
            format!("must be at most {MAX_KEY_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Invalid::new("name", "must not contain control characters"));
    }
    Ok(())
}

/// A key's id as the API shows it: 16 lowercase hex digits.
pub fn key_id_string(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses the form [`key_id_string`] writes (and only it, so one key has one name).
pub fn parse_key_id(s: &str) -> Result<u64, Invalid> {
    let canonical = |b: &u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
    if s.len() != 16 || !s.as_bytes().iter().all(canonical) {
        return Err(Invalid::new(
            "id",
            "must be the 16 lowercase hex digits a key's creation returned",
        ));
    }
    u64::from_str_radix(s, 16).map_err(|_| Invalid::new("id", "not a key id"))
}

impl Hub {
    /// Creates a key: stored (digest only) before it is answered, usable on this hub at once
    /// and on every hub sharing the store within [`KEY_RELOAD_INTERVAL`].
    pub async fn create_key(&self, name: &str, role: Role) -> Result<CreatedKey, HubError> {
        validate_key_name(name)?;
        let _one_change = self.keys_lock.lock().await;
        // A clash (of 64 random bits, or of 256-bit secrets) is as good as impossible;
        // retried anyway rather than answered as an error.
        for _ in 0..4 {
            let secret = new_secret();
            let key = ApiKey {
                // Never 0: that id stands for the operator's own secret in match tickets.
                id: rand::random::<u64>().max(1),
                name: name.to_string(),
                role,
                created_at: now_ms(),
                digest: crate::auth::digest(&secret),
            };
            match self.durable.insert_key(&key).await {
                Ok(()) => {
                    self.keys.insert(key.clone());
                    self.publish(Event::Keys);
                    tracing::info!(id = %key_id_string(key.id), name = %key.name, role = ?key.role,
                        "client key created");
                    return Ok(CreatedKey { key, secret });
                }
                Err(StoreError::AlreadyExists) => continue,
                Err(e) => return Err(self.store_error(e)),
            }
        }
        Err(self.store_error(StoreError::unavailable(
            self.durable.backend(),
            "could not find a free key id",
        )))
    }

    /// Revokes a key here at once, and on every hub sharing the store within
    /// [`KEY_RELOAD_INTERVAL`].
    pub async fn revoke_key(&self, id: u64) -> Result<(), HubError> {
        let _one_change = self.keys_lock.lock().await;
        let r = self.durable.revoke_key(id).await;
        // Gone from the store either way (a stale ring entry is dropped too).
        let was_here = self.keys.revoke(id);
        match r {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                if was_here {
                    self.publish(Event::Keys);
                }
                return Err(HubError::KeyNotFound(key_id_string(id)));
            }
            Err(e) => return Err(self.store_error(e)),
        }
        self.publish(Event::Keys);
        tracing::info!(id = %key_id_string(id), "client key revoked");
        Ok(())
    }

    /// Every live key as the durable store holds it (the source of truth every hub's ring
    /// follows), oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, HubError> {
        self.durable
            .load_keys()
            .await
            .map_err(|e| self.store_error(e))
    }

    /// Replaces this hub's ring with the keys the durable store holds now.
    pub async fn reload_keys(&self) -> Result<(), StoreError> {
        // Serialised with create/revoke here: a reload that read the store before a key
        // was created must not drop it from the ring after it was inserted.
        let _one_change = self.keys_lock.lock().await;
        let keys = self.durable.load_keys().await?;
        self.keys.replace_all(keys);
        Ok(())
    }

    pub(crate) async fn reload_keys_logged(&self) {
        if let Err(e) = self.reload_keys().await {
            let _ = self.store_error(e);
            tracing::warn!("cannot reload client keys; keeping the ones held");
        }
    }

    /// Reservations a key holds on this hub (`auth.max_reservations_per_client` caps it).
    pub fn reservations_held_by(&self, key_id: u64) -> u32 {
        self.reservations.held_by(key_id)
    }

    /// Reloads the keys every [`KEY_RELOAD_INTERVAL`] on `tracker` until `cancel` fires.
    /// Runs on every backend: with PostgreSQL other hubs may change keys at any time.
    pub(crate) fn spawn_key_reload(
        self: &Arc<Self>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let hub = self.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => hub.reload_keys_logged().await,
                    _ = cancel.cancelled() => break,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::tests::{hub_on, match_request, online_miner};
    use crate::store::redb::RedbStore;
    use crate::store::DurableStore;

    #[test]
    fn names_and_ids_are_checked_naming_the_field() {
        assert!(validate_key_name("coordinator-1").is_ok());
        assert!(validate_key_name(&"é".repeat(64)).is_ok());
        for bad in ["", "   ", "tab\there"] {
            assert_eq!(
                validate_key_name(bad).map_err(|e| e.field),
                Err("name".into())
            );
        }
        assert!(validate_key_name(&"x".repeat(65)).is_err());
        assert_eq!(parse_key_id(&key_id_string(u64::MAX)), Ok(u64::MAX));
        assert_eq!(parse_key_id("00000000000000ff"), Ok(255));
        for bad in [
            "ff",
            "00000000000000FF",
            "+000000000000000f",
            "",
            "0x000000000000ff",
        ] {
            assert_eq!(
                parse_key_id(bad).map_err(|e| e.field),
                Err("id".into()),
                "{bad}"
            );
        }
    }

    /// A key created is stored as a digest only, works at once, and a hub opened on the
    /// same store (a restart) loads it; revoked, it is gone from both, and a second
    /// revocation is `KeyNotFound`.
    #[tokio::test]
    async fn keys_are_stored_loaded_at_start_and_revoked() {
        let durable = Arc::new(RedbStore::in_memory(None).expect("redb"));
        let hub = hub_on(durable.clone()).await;
        let created = hub
            .create_key("coordinator-1", Role::Client)
            .await
            .expect("create");
        assert_ne!(created.key.id, 0);
        let stored = durable.load_keys().await.expect("load");
        assert_eq!(stored, vec![created.key.clone()]);
        assert_eq!(stored[0].digest, crate::auth::digest(&created.secret));
        assert_eq!(
            hub.keys().caller(&created.secret).and_then(|c| c.key_id()),
            Some(created.key.id)
        );

        let restarted = hub_on(durable.clone()).await;
        assert!(
            restarted.keys().caller(&created.secret).is_some(),
            "loaded at start"
        );

        hub.revoke_key(created.key.id).await.expect("revoke");
        assert!(hub.keys().caller(&created.secret).is_none());
        assert!(matches!(
            hub.revoke_key(created.key.id).await,
            Err(HubError::KeyNotFound(_))
        ));
        // The other hub catches up by its reload (the periodic task, or the event).
        restarted.reload_keys().await.expect("reload");
        assert!(restarted.keys().caller(&created.secret).is_none());
        assert!(matches!(
            hub.create_key("", Role::Client).await,
            Err(HubError::Invalid(e)) if e.field == "name"
        ));
    }

    /// One key holding its cap of reservations gets further matches without one (and the
    /// miner keeps its free slots for others); an outcome gives the quota back. Another key
    /// is not affected.
    #[tokio::test]
    async fn a_key_cannot_hold_more_reservations_than_its_cap() {
        let durable = Arc::new(RedbStore::in_memory(None).expect("redb"));
        let mut cfg = crate::config::Config::default();
        cfg.storage.ephemeral = true;
        cfg.auth.max_reservations_per_client = 2;
        let hot = Arc::new(crate::store::moka::MokaHotStore::new(
            Duration::from_secs(30),
            Duration::from_secs(3600),
            10_000,
        ));
        let hub = Hub::open(cfg, durable, hot, Arc::new(crate::metrics::Metrics::new()))
            .await
            .expect("hub");
        // Four slots on one miner: without the cap one key could take them all.
        online_miner(&hub, 1).await;
        let greedy = hub.create_key("greedy", Role::Client).await.expect("key");
        let other = hub.create_key("other", Role::Client).await.expect("key");
        let greedy_c = hub.keys().caller(&greedy.secret).expect("caller");
        let other_c = hub.keys().caller(&other.secret).expect("caller");
        let mut ids = Vec::new();
        for _ in 0..2 {
            let m = hub
                .match_job_for(match_request(), Some(&greedy_c))
                .await
                .expect("match");
            assert!(m.reserved);
            ids.push(m.match_id);
        }
        let capped = hub
            .match_job_for(match_request(), Some(&greedy_c))
            .await
            .expect("match");
        assert!(!capped.reserved, "over the cap: matched, not reserved");
        assert_eq!(capped.miners.len(), 1, "the match is still answered");
        assert_eq!(hub.reservations_held_by(greedy.key.id), 2);
        let m = hub
            .match_job_for(match_request(), Some(&other_c))
            .await
            .expect("match");
        assert!(m.reserved, "another key still reserves");

        // An outcome from the greedy key frees one of its reservations.
        hub.report_outcome_for(
            crate::hub::OutcomeReport {
                match_id: ids[0].to_string(),
                address: crate::hub::tests::address(1),
                success: true,
                latency_ms: Some(10.0),
                error: None,
            },
            Some(&greedy_c),
        )
        .await
        .expect("outcome");
        assert_eq!(hub.reservations_held_by(greedy.key.id), 1);
        let again = hub
            .match_job_for(match_request(), Some(&greedy_c))
            .await
            .expect("match");
        assert!(again.reserved);
    }

    /// The other key's outcome for a match is refused, and claims nothing: the owner's own
    /// report is still accepted afterwards.
    #[tokio::test]
    async fn only_the_key_that_made_a_match_reports_its_outcome() {
        let durable = Arc::new(RedbStore::in_memory(None).expect("redb"));
        let hub = hub_on(durable).await;
        online_miner(&hub, 1).await;
        let a = hub.create_key("a", Role::Client).await.expect("key");
        let b = hub.create_key("b", Role::Client).await.expect("key");
        let ca = hub.keys().caller(&a.secret).expect("a");
        let cb = hub.keys().caller(&b.secret).expect("b");
        let m = hub
            .match_job_for(match_request(), Some(&ca))
            .await
            .expect("match");
        let report = || crate::hub::OutcomeReport {
            match_id: m.match_id.to_string(),
            address: crate::hub::tests::address(1),
            success: false,
            latency_ms: None,
            error: None,
        };
        for other in [Some(&cb), None] {
            assert!(matches!(
                hub.report_outcome_for(report(), other).await,
                Err(HubError::Claim(crate::store::ClaimError::NotYourMatch))
            ));
        }
        hub.report_outcome_for(report(), Some(&ca))
            .await
            .expect("the owner's report counts");
    }
}
