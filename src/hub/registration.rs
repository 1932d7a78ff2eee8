//! Registration: a new miner (with its token), a re-registration (with the token it holds),
//! and a re-registration through a hub whose index has not caught up with the store.

use super::*;

impl Hub {
    /// The answer to a registration: the miner as the index now holds it.
    pub(super) fn registered(
        &self,
        address: &Address,
        created: bool,
        token: Option<String>,
    ) -> Result<Registered, HubError> {
        let view = self
            .registry
            .get(address)
            .ok_or(HubError::MinerNotFound(*address))?;
        Ok(Registered {
            created,
            token,
            view,
        })
    }

    /// Registers a new miner (returning its token) or re-registers one (needs its token).
    pub async fn register(
        &self,
        reg: Registration,
        token: Option<&str>,
    ) -> Result<Registered, HubError> {
        self.register_keyed(reg, token, None).await
    }

    /// As [`Hub::register`]; with `chosen`, a new miner's token is that key (a miner
    /// registered by name brings its own) instead of one the hub issues and returns.
    pub(super) async fn register_keyed(
        &self,
        reg: Registration,
        token: Option<&str>,
        chosen: Option<&str>,
    ) -> Result<Registered, HubError> {
        let _guard = self.lock_for(&reg.address).lock().await;
        let now = now_ms();
        if let Some(view) = self.registry.get(&reg.address) {
            // The index may hold an older registration than the store (deleted and
            // registered again through another hub): a token it refuses is checked against
            // the stored record before the answer is 403.
            return match self.authorize(&view.miner, token) {
                Ok(()) => {
                    self.reregister(reg, view.miner.as_ref(), view.stats, view.availability, now)
                        .await
                }
                Err(HubError::Forbidden(_)) => self.reregister_stored(reg, token, now).await,
                Err(e) => Err(e),
            };
        }
        let issued = match chosen {
            Some(_) => None,
            None => Some(new_token()),
        };
        let Some(secret) = chosen.or(issued.as_deref()) else {
            return Err(HubError::Unauthorized);
        };
        let miner = Miner {
            address: reg.address,
            endpoint: reg.endpoint.clone(),
            capabilities: reg.capabilities.clone(),
            stake: reg.stake,
            token_hash: hash_token(secret),
            registered_at: now,
            updated_at: now,
            proven: false,
            profile: reg.profile.clone().map(Box::new),
        };
        match self.durable.insert_miner(&miner).await {
            Ok(()) => {}
            // Registered through another hub sharing the store, and this index has not
            // caught up yet: the stored record decides whether the token is right.
            Err(StoreError::AlreadyExists) => return self.reregister_stored(reg, token, now).await,
            Err(e) => return Err(self.store_error(e)),
        }
        let stats = MinerStats::default();
        let avail = Availability::default();
        let (score, cooldown) = self.score_now(&stats, &avail, miner.stake, now);
        self.registry.upsert(miner, stats, avail, score, cooldown);
        self.metrics.miners_total.set(self.registry.len() as i64);
        self.publish(Event::Miner {
            address: reg.address,
        });
        self.emit_registered(&reg.address, true);
        tracing::info!(address = %reg.address, "miner registered");
        self.registered(&reg.address, true, issued)
    }

    /// Re-registers a miner this hub's index does not know (or knows in an older version)
    /// against its record in the durable store. The caller holds the miner's lock.
    pub(super) async fn reregister_stored(
        &self,
        reg: Registration,
        token: Option<&str>,
        now: u64,
    ) -> Result<Registered, HubError> {
        let stored = self
            .durable
            .load_miner(&reg.address)
            .await
            .map_err(|e| self.store_error(e))?
            // Deleted again meanwhile: there is nothing this token could belong to.
            .ok_or(HubError::MinerNotFound(reg.address))?;
        self.authorize(&stored.miner, token)?;
        self.reregister(reg, &stored.miner, stored.stats, stored.availability, now)
            .await
    }

    /// Replaces the registration of `current` (whose token the caller checked), keeping its
    /// token, history and first registration time. The caller holds the miner's lock.
    pub(super) async fn reregister(
        &self,
        reg: Registration,
        current: &Miner,
        stats: MinerStats,
        availability: Availability,
        now: u64,
    ) -> Result<Registered, HubError> {
        let miner = Miner {
            address: reg.address,
            endpoint: reg.endpoint,
            capabilities: reg.capabilities,
            stake: reg.stake,
            token_hash: current.token_hash.clone(),
            registered_at: current.registered_at,
            updated_at: now,
            proven: current.proven,
            profile: reg.profile.map(Box::new),
        };
        match self.durable.update_miner(&miner).await {
            Ok(()) => {}
            // Deleted or registered anew through another hub since it was read.
            Err(StoreError::TokenMismatch) => return Err(HubError::Forbidden(reg.address)),
            Err(StoreError::NotFound) => return Err(HubError::MinerNotFound(reg.address)),
            Err(e) => return Err(self.store_error(e)),
        }
        let (score, cooldown) = self.score_now(&stats, &availability, miner.stake, now);
        self.registry
            .upsert(miner, stats, availability, score, cooldown);
        self.metrics.miners_total.set(self.registry.len() as i64);
        self.publish(Event::Miner {
            address: reg.address,
        });
        self.emit_registered(&reg.address, false);
        tracing::info!(address = %reg.address, "miner re-registered");
        self.registered(&reg.address, false, None)
    }
}
