//! The application service: the registry, the two stores, scoring and matching wired
//! together. HTTP handlers call these methods and nothing else.
//!
//! Write order for every change to a miner: check against the index, commit to the durable
//! store, then apply to the index. Changes to one miner are serialised by a striped lock so
//! the index applies them in commit order; changes to different miners run concurrently and
//! share group commits.
//!
//! * `matching`: match requests, reservations and job outcomes.
//! * `sync`: keeping several hubs' indexes current (events, resync); `wire`: the versioned
//!   format those events travel in.
//! * `tasks`: the background work, owned by the caller's `CancellationToken`/`TaskTracker`.
//! * `identity`: EIP-4361 challenges, signed registrations (takeover of unproven records)
//!   and lost-token reissue; `bans`: the admin's bans and deregistration of any miner.

mod aitbc;
mod backup;
mod bans;
mod explain;
mod identity;
mod keys;
mod matching;
mod registration;
mod reload;
mod replay;
mod reservations;
pub mod stream;
mod sync;
mod tasks;
pub mod views;
mod wire;

pub use aitbc::{NamedRegistration, Sla};
pub use keys::{
    key_id_string, parse_key_id, validate_key_name, CreatedKey, KEY_RELOAD_INTERVAL, MAX_KEY_NAME,
};
pub use matching::{Match, MatchRequest, Offer, OutcomeReport, Standing};
pub use reload::{ReloadHook, Reloaded, Tuning};
pub use replay::{candidate_from_toml, replay_store};
pub use sync::Event;

use crate::config::Config;
use crate::domain::scoring::{self, Availability, MinerStats};
use crate::domain::{Address, Capabilities, Endpoint, Invalid, Miner, MinerStatus, Profile};
use crate::metrics::Metrics;
use crate::registry::{MinerView, Registry};
use crate::store::{ClaimError, DurableStore, HotStore, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const LOCK_STRIPES: usize = 256;

/// Serialises changes to one miner (so the index applies them in commit order) while changes
/// to different miners run concurrently: one of `LOCK_STRIPES` mutexes per address.
struct LockStripes {
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Keyed per process (SipHash), so nobody can choose addresses that share one stripe.
    hasher: std::hash::RandomState,
}

impl LockStripes {
    fn new() -> Self {
        Self {
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Which stripe guards `a`: a hash of all 20 bytes, since addresses may share any part.
    fn index(&self, a: &Address) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(a.as_bytes()) % LOCK_STRIPES as u64) as usize
    }

    fn lock_for(&self, a: &Address) -> &tokio::sync::Mutex<()> {
        &self.locks[self.index(a)]
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why a request to the hub failed, by meaning; the HTTP layer maps each to a status once.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("this miner is registered: changing it needs `Authorization: Bearer <token>` with the token its registration returned")]
    Unauthorized,
    #[error("the bearer token does not belong to miner {0}")]
    Forbidden(Address),
    #[error("miner {0} is not registered")]
    MinerNotFound(Address),
    #[error("no key with id {0}")]
    KeyNotFound(String),
    /// Carries why, in words that tell the miner what to do next.
    #[error("{0}")]
    BadSignature(&'static str),
    #[error("this hub requires a signature: request a challenge from /api/v1/miners/{{address}}/challenge, sign its message with the address's key (personal_sign) and send it as \"signature\"")]
    SignatureRequired,
    #[error(
        "miner {0} changed through another hub meanwhile: request a new challenge and try again"
    )]
    Conflict(Address),
    #[error("address {0} is not banned")]
    NotBanned(Address),
    /// An address in the range kept for miners registered by name: no key signs for it,
    /// and no one may register, prove or take it over by address.
    #[error("addresses starting with 0xa17bc0de are reserved for miners registered by miner_id (POST /v1/miners/register)")]
    ReservedAddress,
    #[error("this api_key is already the key of another miner: give every miner its own key")]
    KeyInUse,
    #[error("no miner is registered with this api_key: register first (POST /v1/miners/register)")]
    UnknownKey,
    #[error("this hub requires every miner to prove an address's key (auth.miner_identity = \"signature\"), which a miner registered by miner_id cannot do: registration by miner_id is refused")]
    NamedRegistrationRefused,
    #[error(transparent)]
    Claim(ClaimError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ClaimError> for HubError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Store(s) => Self::Store(s),
            other => Self::Claim(other),
        }
    }
}

/// A registration as the client sent it, already parsed into domain types.
#[derive(Debug, Clone)]
pub struct Registration {
    pub address: Address,
    pub endpoint: Endpoint,
    pub capabilities: Capabilities,
    pub stake: u64,
    /// Set for a miner registered by name (its address is then derived from the name).
    pub profile: Option<Profile>,
}

/// The result of a registration.
#[derive(Debug, Clone)]
pub struct Registered {
    /// True for a new miner (201), false for a re-registration (200).
    pub created: bool,
    /// The secret token, only for a new miner: it is shown once and stored only as a hash.
    pub token: Option<String>,
    pub view: MinerView,
}

/// The hub.
pub struct Hub {
    /// The settings in force, swapped whole by a reload (see `reload.rs`).
    tuning: arc_swap::ArcSwap<Tuning>,
    reload_hooks: parking_lot::Mutex<Vec<ReloadHook>>,
    registry: Registry,
    durable: Arc<dyn DurableStore>,
    hot: Arc<dyn HotStore>,
    reservations: reservations::Reservations,
    metrics: Arc<Metrics>,
    locks: LockStripes,
    started: Instant,
    matches_served: AtomicU64,
    last_score_update: AtomicU64,
    /// Prune passes so far (the count bound is checked on every one, or every 12th).
    prune_ticks: AtomicU64,
    /// Serialises registrations by name, so two names cannot take one key at once.
    named_lock: tokio::sync::Mutex<()>,
    scrape_lock: parking_lot::Mutex<()>,
    /// Names this process in the events it publishes to other hubs.
    instance: String,
    /// Client and admin keys by digest: a request's key is checked here, never in a store.
    keys: crate::auth::KeyRing,
    /// Serialises key changes and reloads, so a reload never drops a key created meanwhile.
    keys_lock: tokio::sync::Mutex<()>,
    /// `GET /api/v1/events`: what happened, for whoever watches.
    events: stream::EventStream,
}

/// SHA-256 of a token, hex: what is stored instead of the token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn tokens_equal(a: &str, b: &str) -> bool {
    // Constant time in the content, so response timing does not reveal a hash prefix.
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("ph_{}", hex::encode(bytes))
}

impl Hub {
    /// Builds the hub and loads every miner from the durable store into the index.
    pub async fn open(
        config: Config,
        durable: Arc<dyn DurableStore>,
        hot: Arc<dyn HotStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let operator = (!config.auth.admin_token.is_empty())
            .then(|| crate::auth::digest(&config.auth.admin_token));
        let hub = Self {
            keys: crate::auth::KeyRing::new(operator),
            keys_lock: tokio::sync::Mutex::new(()),
            registry: Registry::new(config.thresholds),
            durable,
            hot,
            reservations: reservations::Reservations::default(),
            metrics,
            locks: LockStripes::new(),
            started: Instant::now(),
            matches_served: AtomicU64::new(0),
            last_score_update: AtomicU64::new(0),
            prune_ticks: AtomicU64::new(0),
            named_lock: tokio::sync::Mutex::new(()),
            scrape_lock: parking_lot::Mutex::new(()),
            instance: {
                let mut b = [0u8; 8];
                rand::rng().fill_bytes(&mut b);
                hex::encode(b)
            },
            tuning: arc_swap::ArcSwap::from_pointee(Tuning::new(config, Vec::new())),
            reload_hooks: parking_lot::Mutex::default(),
            events: stream::EventStream::default(),
        };
        let now = now_ms();
        // The store reads (on a blocking thread) while this task files each chunk in the
        // index: on two cores the two halves of the start-up overlap.
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let durable = hub.durable.clone();
        let reader = tokio::spawn(async move { durable.load_chunks(tx).await });
        let mut n = 0;
        while let Some(chunk) = rx.recv().await {
            n += chunk.len();
            for s in chunk {
                let score = scoring::score(
                    &s.stats,
                    &s.availability,
                    s.miner.stake,
                    now,
                    &hub.tuning().params,
                );
                let cooldown = scoring::cooldown_until(&s.stats, &hub.tuning().failover);
                hub.registry
                    .upsert(s.miner, s.stats, s.availability, score, cooldown);
            }
        }
        reader.await.map_err(|e| {
            StoreError::unavailable(hub.durable.backend(), format!("loading the index: {e}"))
        })??;
        hub.metrics.miners_total.set(n as i64);
        hub.keys.replace_all(hub.durable.load_keys().await?);
        tracing::info!(
            keys = hub.keys.len(),
            miners = n,
            durable = hub.durable.backend(),
            hot = hub.hot.backend(),
            "index loaded"
        );
        Ok(hub)
    }

    /// The keys that may call the client and admin routes.
    pub fn keys(&self) -> &crate::auth::KeyRing {
        &self.keys
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn lock_for(&self, a: &Address) -> &tokio::sync::Mutex<()> {
        self.locks.lock_for(a)
    }

    /// Counts (by the backend that failed) and logs a storage failure, once per operation.
    fn store_error(&self, e: StoreError) -> HubError {
        if let StoreError::Unavailable { backend, .. } | StoreError::Corrupt { backend, .. } = &e {
            self.metrics
                .store_errors_total
                .with_label_values(&[backend])
                .inc();
            // The whole cause chain: the log is where the detail belongs (never a response).
            tracing::warn!(error = %e.detail(), "storage operation failed");
        }
        HubError::Store(e)
    }

    /// Whether `address` is in the index (which follows every hub's registrations): the rate
    /// limit on registrations counts new addresses only, so a miner re-registering is never
    /// throttled by its neighbours behind the same address.
    pub fn is_registered(&self, address: &Address) -> bool {
        self.registry.live(address).is_some()
    }

    /// Whether `token` is the token of `address`'s miner. A status update counts against the
    /// miner's own rate limit only when it is, so nobody can use up a miner's allowance by
    /// sending updates in its name.
    pub fn holds_token(&self, address: &Address, token: &str) -> bool {
        self.registry
            .live(address)
            .is_some_and(|(miner, _)| self.authorize(&miner, Some(token)).is_ok())
    }

    fn authorize(&self, miner: &Miner, token: Option<&str>) -> Result<(), HubError> {
        let token = token.ok_or(HubError::Unauthorized)?;
        if tokens_equal(&hash_token(token), &miner.token_hash) {
            Ok(())
        } else {
            Err(HubError::Forbidden(miner.address))
        }
    }

    fn score_now(
        &self,
        stats: &MinerStats,
        avail: &Availability,
        stake: u64,
        now: u64,
    ) -> (scoring::Score, u64) {
        (
            scoring::score(stats, avail, stake, now, &self.tuning().params),
            scoring::cooldown_until(stats, &self.tuning().failover),
        )
    }

    /// Records a miner's live status (its heartbeat). Touches only the hot store and index.
    pub async fn update_status(
        &self,
        address: &Address,
        token: Option<&str>,
        mut status: MinerStatus,
    ) -> Result<MinerStatus, HubError> {
        status.validate()?;
        let (miner, live) = self
            .registry
            .live(address)
            .ok_or(HubError::MinerNotFound(*address))?;
        self.authorize(&miner, token)?;
        status.reported_at = now_ms();
        if let Err(e) = self.hot.put_status(address, &status).await {
            return Err(self.store_error(e));
        }
        // Read only while someone watches: a plain heartbeat stays as cheap as it was.
        if self.events.active(status.reported_at) {
            self.emit_status_change(address, live.status(), &status);
        }
        live.set_status(&status);
        self.registry.note(&live);
        self.publish(Event::Status {
            address: *address,
            status,
        });
        Ok(status)
    }

    /// Deregisters a miner (needs its token).
    pub async fn deregister(&self, address: &Address, token: Option<&str>) -> Result<(), HubError> {
        let _guard = self.lock_for(address).lock().await;
        let view = self
            .registry
            .get(address)
            .ok_or(HubError::MinerNotFound(*address))?;
        self.authorize(&view.miner, token)?;
        match self
            .durable
            .delete_miner(address, &view.miner.token_hash)
            .await
        {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(StoreError::TokenMismatch) => return Err(HubError::Forbidden(*address)),
            Err(e) => return Err(self.store_error(e)),
        }
        self.registry.remove(address);
        if let Err(e) = self.hot.remove_status(address).await {
            tracing::warn!(address = %address, error = %e, "cannot remove live status");
        }
        self.metrics.miners_total.set(self.registry.len() as i64);
        self.publish(Event::Deleted { address: *address });
        self.emit_deregistered(address);
        tracing::info!(address = %address, "miner deregistered");
        Ok(())
    }

    /// One miner with its status as the hot store holds it.
    pub async fn get(&self, address: &Address) -> Result<MinerView, HubError> {
        let mut view = self
            .registry
            .get(address)
            .ok_or(HubError::MinerNotFound(*address))?;
        // The hot store is the source of truth for live status (it may be shared).
        match self.hot.get_status(address).await {
            Ok(s) => view.status = s,
            Err(e) => {
                tracing::warn!(error = %e, "hot store read failed; showing the index's status")
            }
        }
        Ok(view)
    }

    /// Whether a miner is online (fresh status) at `now`.
    pub fn is_online(&self, view: &MinerView, now: u64) -> bool {
        view.status.is_some_and(|s| {
            crate::domain::matching::is_fresh(&s, now, self.tuning().policy.heartbeat_timeout_ms)
        })
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn matches_served(&self) -> u64 {
        self.matches_served.load(Ordering::Relaxed)
    }

    /// Unix ms of the last periodic score update (0 = none yet).
    pub fn last_score_update(&self) -> u64 {
        self.last_score_update.load(Ordering::Relaxed)
    }

    pub fn reservations_in_flight(&self) -> usize {
        self.reservations.len()
    }

    pub fn heartbeat_timeout_ms(&self) -> u64 {
        self.tuning().policy.heartbeat_timeout_ms
    }

    /// The Prometheus exposition, with the registry-wide gauges brought up to date first.
    /// Scrapes are serialised so that one scrape never sees another's half-rebuilt scores.
    pub fn render_metrics(&self) -> String {
        let _one_at_a_time = self.scrape_lock.lock();
        self.refresh_gauges();
        self.metrics.encode()
    }

    /// Brings the registry-wide gauges up to date.
    fn refresh_gauges(&self) {
        let c = self
            .registry
            .counts(now_ms(), self.tuning().policy.heartbeat_timeout_ms);
        let m = &self.metrics;
        m.miners_total.set(c.registered as i64);
        m.miners_online.set(c.online as i64);
        m.miners_available.set(c.available as i64);
        m.miners_cooled_down.set(c.cooled_down as i64);
        m.miners_too_hot.set(c.too_hot as i64);
        m.reservations_in_flight.set(self.reservations.len() as i64);
        m.event_subscribers.set(self.events.subscribers() as i64);
        m.miner_score.reset();
        for (a, s) in self.registry.scores() {
            m.miner_score.with_label_values(&[&a.to_string()]).set(s);
        }
    }

    /// Checkpoints availability, then closes the durable store and flushes the hot store's
    /// queued ledger writes and events. Stop the background tasks first (cancel the token
    /// given to [`Hub::spawn_tasks`] and wait on its tracker), so none of them writes after
    /// this.
    pub async fn close(&self) {
        self.checkpoint().await;
        self.durable.close().await;
        self.hot.close().await;
    }
}

#[cfg(test)]
pub(crate) mod tests;
