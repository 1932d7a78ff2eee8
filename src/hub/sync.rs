//! Keeping several hubs' indexes current when they share PostgreSQL and Redis.
//!
//! Each hub still matches from its own in-memory index, so a match never waits on the
//! network. To keep that index current, every change a hub makes is published on the hot
//! store's event bus (Redis pub/sub), fire-and-forget through the store's background writer:
//! registrations and deletions (the others reload the miner from the durable store), new
//! statistics after an outcome, live statuses, and reservations made and released. Each hub
//! applies the others' events and ignores its own (by instance id).
//!
//! Pub/sub delivers at most once, so a periodic resync (`storage.resync_interval`, and after
//! every re-subscription) reloads every miner from the durable store and every status from
//! the hot store. Reservations are not resynced: they end by outcome or by their TTL.

use super::wire::Envelope;
use super::{now_ms, Hub};
use crate::domain::scoring::MinerStats;
use crate::domain::MatchId;
use crate::domain::{Address, MinerStatus};
use crate::registry::MinerView;
use crate::store::{BusMessage, StoreError, StoredMiner};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a resync does with one stored record, given the index's entry for that address.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Merge {
    /// The index has nothing at this address.
    Insert,
    /// The stored registration is newer; keep whichever statistics are newer.
    Replace {
        stats: MinerStats,
        availability: crate::domain::Availability,
    },
    /// Same registration, newer statistics in the store.
    Stats {
        availability: crate::domain::Availability,
        stake: u64,
    },
    /// The index is as new as the store, or newer.
    Keep,
}

/// Never replaces newer with older: a registration by its `updated_at`, statistics (of the
/// same registration, i.e. the same `registered_at`) by the number of outcomes behind them.
fn merge(v: Option<&MinerView>, s: &StoredMiner) -> Merge {
    let Some(v) = v else {
        return Merge::Insert;
    };
    let same = v.miner.registered_at == s.miner.registered_at;
    if *v.miner != s.miner && s.miner.updated_at >= v.miner.updated_at {
        let stats = if same && v.stats.jobs_total >= s.stats.jobs_total {
            v.stats
        } else {
            s.stats
        };
        let availability = if same { v.availability } else { s.availability };
        Merge::Replace {
            stats,
            availability,
        }
    } else if same && s.stats.jobs_total > v.stats.jobs_total {
        Merge::Stats {
            availability: v.availability,
            stake: v.miner.stake,
        }
    } else {
        Merge::Keep
    }
}

/// One change this hub made, as the other hubs need to hear of it. On the bus it travels
/// as `wire::Envelope`, the versioned protocol, never in this form.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Registered or re-registered: reload it from the durable store.
    Miner {
        address: Address,
    },
    Deleted {
        address: Address,
    },
    Stats {
        address: Address,
        stats: MinerStats,
    },
    Status {
        address: Address,
        status: MinerStatus,
    },
    Reserved {
        match_id: MatchId,
        address: Address,
        expires: u64,
    },
    Released {
        match_id: MatchId,
        address: Address,
    },
    /// A client or admin key was created or revoked: reload the whole set from the durable
    /// store (which holds only digests, so nothing secret travels on the bus).
    Keys,
}

impl Hub {
    /// Tells the other hubs about a change (no-op without a shared hot store).
    pub(crate) fn publish(&self, event: Event) {
        let Some(bus) = self.hot.bus() else { return };
        match serde_json::to_string(&Envelope::new(&self.instance, &event)) {
            Ok(p) => bus.publish(p),
            Err(e) => tracing::error!(error = %e, "cannot encode an event"),
        }
    }

    /// This hub's instance id (in its events).
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Applies one event from the bus; the hub's own events are ignored.
    pub async fn apply_remote(&self, payload: &str) {
        // Every hub hears its own events back: skip them before parsing (the envelope is
        // serialised with `from` first).
        if payload
            .strip_prefix("{\"from\":\"")
            .is_some_and(|r| r.starts_with(self.instance.as_str()))
        {
            return;
        }
        let env = match Envelope::parse(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an event this build cannot read");
                return;
            }
        };
        if env.from == self.instance {
            return;
        }
        let from = env.from.clone();
        let event = match env.into_event() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, from = %from, "ignoring an invalid event");
                return;
            }
        };
        tracing::trace!(event = ?event, from = %from, "remote event");
        match event {
            Event::Miner { address } => {
                let known = self.registry.get(&address).is_some();
                if let Err(e) = self.reload_miner(&address).await {
                    tracing::warn!(address = %address, error = %e,
                        "cannot reload a miner another hub changed; the next resync will");
                } else if self.registry.get(&address).is_some() {
                    // Registered through another hub: this hub's watchers see it too.
                    self.emit_registered(&address, !known);
                }
            }
            Event::Deleted { address } => {
                let _guard = self.lock_for(&address).lock().await;
                if self.registry.remove(&address) {
                    self.metrics.miners_total.set(self.registry.len() as i64);
                    self.emit_deregistered(&address);
                }
            }
            Event::Stats { address, stats } => {
                // Under the lock like every other writer of a miner's statistics, so a
                // resync deciding what to keep cannot interleave with it.
                let _guard = self.lock_for(&address).lock().await;
                if let Some(view) = self.registry.get(&address) {
                    let (score, cooldown) =
                        self.score_now(&stats, &view.availability, view.miner.stake, now_ms());
                    self.registry.update_stats(&address, stats, score, cooldown);
                }
            }
            Event::Status { address, status } => self.apply_status(&address, &status),
            Event::Reserved {
                match_id: id,
                address,
                expires,
            } => {
                if let Some((_, live)) = self.registry.live(&address) {
                    let ttl = self.tuning().matching.reservation_ttl.saturating_mul(1000);
                    let expires = expires.min(now_ms().saturating_add(ttl));
                    // Counted against no key here: a key's quota is per hub.
                    self.reservations
                        .add(id, address, live.clone(), expires, None);
                    self.registry.note(&live);
                }
            }
            Event::Released {
                match_id: id,
                address,
            } => {
                if let Some(live) = self.reservations.release(id, &address) {
                    self.registry.note(&live);
                }
            }
            Event::Keys => self.reload_keys_logged().await,
        }
    }

    /// Takes a status into the index unless it already holds a newer one.
    fn apply_status(&self, address: &Address, status: &MinerStatus) {
        if let Some((_, live)) = self.registry.live(address) {
            let current = live.status();
            if current.is_none_or(|cur| cur.reported_at <= status.reported_at) {
                self.emit_status_change(address, current, status);
                live.set_status(status);
                self.registry.note(&live);
            }
        }
    }

    /// Reloads one miner from the durable store into the index (or removes it).
    async fn reload_miner(&self, address: &Address) -> Result<(), StoreError> {
        // Read under the lock, so a change this hub commits meanwhile is not undone by an
        // older copy.
        let _guard = self.lock_for(address).lock().await;
        let stored = self.durable.load_miner(address).await?;
        match stored {
            Some(s) => {
                // Outcomes this hub applied may be newer than what was read; a miner
                // deleted and registered again elsewhere starts from its new record.
                let stats = match self.registry.get(address) {
                    Some(v)
                        if v.miner.registered_at == s.miner.registered_at
                            && v.stats.jobs_total > s.stats.jobs_total =>
                    {
                        v.stats
                    }
                    _ => s.stats,
                };
                let (score, cooldown) =
                    self.score_now(&stats, &s.availability, s.miner.stake, now_ms());
                self.registry
                    .upsert(s.miner, stats, s.availability, score, cooldown);
            }
            None => {
                self.registry.remove(address);
            }
        }
        self.metrics.miners_total.set(self.registry.len() as i64);
        Ok(())
    }

    /// Reloads every miner from the durable store and every status from the hot store.
    /// Changes this hub makes meanwhile win: only older entries are replaced or removed.
    pub async fn resync(&self) -> Result<(), StoreError> {
        let started = now_ms();
        let stored = self.durable.load_all().await?;
        self.apply_snapshot(stored, started).await
    }

    /// The second half of [`Hub::resync`]: takes `stored`, read from the durable store at
    /// `started`, into the index.
    async fn apply_snapshot(
        &self,
        stored: Vec<StoredMiner>,
        started: u64,
    ) -> Result<(), StoreError> {
        let mut seen = HashSet::with_capacity(stored.len());
        let (mut added, mut changed, mut removed) = (0usize, 0usize, 0usize);
        for s in stored {
            let address = s.miner.address;
            seen.insert(address);
            // Most entries are current: decide without the lock first, and again under it,
            // since an outcome or a registration may be applied while we wait for it.
            if matches!(merge(self.registry.get(&address).as_ref(), &s), Merge::Keep) {
                continue;
            }
            let _guard = self.lock_for(&address).lock().await;
            match merge(self.registry.get(&address).as_ref(), &s) {
                Merge::Keep => {}
                Merge::Insert => {
                    // Missing here: registered elsewhere (the event was lost), or deleted
                    // here after the snapshot was read. The store's current record decides.
                    if let Some(cur) = self.durable.load_miner(&address).await? {
                        let (score, cooldown) =
                            self.score_now(&cur.stats, &cur.availability, cur.miner.stake, started);
                        self.registry.upsert(
                            cur.miner,
                            cur.stats,
                            cur.availability,
                            score,
                            cooldown,
                        );
                        added += 1;
                    }
                }
                Merge::Replace {
                    stats,
                    availability,
                } => {
                    let (score, cooldown) =
                        self.score_now(&stats, &availability, s.miner.stake, started);
                    self.registry
                        .upsert(s.miner, stats, availability, score, cooldown);
                    changed += 1;
                }
                Merge::Stats {
                    availability,
                    stake,
                } => {
                    let (score, cooldown) = self.score_now(&s.stats, &availability, stake, started);
                    self.registry
                        .update_stats(&address, s.stats, score, cooldown);
                    changed += 1;
                }
            }
        }
        let local: Vec<Address> = self
            .registry
            .scoring_inputs()
            .into_iter()
            .map(|i| i.address)
            .collect();
        for a in &local {
            if seen.contains(a) {
                continue;
            }
            let _guard = self.lock_for(a).lock().await;
            // Registered here after the snapshot was read: keep it.
            if self
                .registry
                .get(a)
                .is_some_and(|v| v.miner.updated_at < started)
            {
                // A registration may commit while the snapshot is read, with a time older
                // than the resync's: only the store's current answer can say it is gone.
                if self.durable.load_miner(a).await?.is_none() {
                    self.registry.remove(a);
                    removed += 1;
                }
            }
        }
        self.metrics.miners_total.set(self.registry.len() as i64);
        let addresses: Vec<Address> = local.into_iter().filter(|a| seen.contains(a)).collect();
        let statuses = self.hot.get_statuses(&addresses).await?;
        for (a, s) in addresses.iter().zip(statuses) {
            if let Some(s) = s {
                self.apply_status(a, &s);
            }
        }
        tracing::debug!(
            added,
            changed,
            removed,
            took_ms = now_ms().saturating_sub(started),
            "index resynchronised from the shared stores"
        );
        Ok(())
    }

    /// Follows the other hubs' events and resyncs periodically, on `tracker` until `cancel`
    /// fires; nothing to do when the hot store is not shared.
    pub(crate) fn spawn_sync(self: &Arc<Self>, cancel: CancellationToken, tracker: &TaskTracker) {
        let Some(bus) = self.hot.bus() else { return };
        let mut rx = bus.subscribe();
        let hub = self.clone();
        let every = Duration::from_secs(self.tuning().storage.resync_interval.max(1));
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(BusMessage::Event(p)) => hub.apply_remote(&p).await,
                        // Events published while unsubscribed are lost: catch up.
                        Some(BusMessage::Subscribed) => hub.resync_logged().await,
                        None => break,
                    },
                    _ = tick.tick() => hub.resync_logged().await,
                    _ = cancel.cancelled() => break,
                }
            }
        });
    }

    async fn resync_logged(&self) {
        if let Err(e) = self.resync().await {
            tracing::warn!(error = %e, "resync failed; serving from the current index");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::tests::{address, hub_on, registration};
    use crate::store::redb::RedbStore;
    use crate::store::DurableStore;

    /// A registration that commits while a resync's snapshot is being read is missing from
    /// that snapshot, though its `updated_at` may be older than the resync's start: the
    /// resync removed it from the index, and its heartbeats got 404 (seen as a flaky
    /// `binary_serves_on_database_url_and_redis_url`).
    #[tokio::test]
    async fn resync_keeps_a_miner_registered_while_its_snapshot_was_read() {
        let durable = Arc::new(RedbStore::in_memory(None).expect("redb"));
        let hub = hub_on(durable.clone()).await;
        let snapshot = durable.load_all().await.expect("load");
        hub.register(registration(1), None).await.expect("register");
        let started = now_ms() + 1;
        hub.apply_snapshot(snapshot, started).await.expect("resync");
        assert!(hub.registry.get(&address(1)).is_some(), "still indexed");
    }

    /// Defect 6: resync read the index's entry before it took the miner's lock, so stats
    /// applied while it waited for that lock were overwritten by the older snapshot.
    #[tokio::test]
    async fn resync_never_rolls_back_statistics_applied_while_it_waited() {
        let durable = Arc::new(RedbStore::in_memory(None).expect("redb"));
        let hub = Arc::new(hub_on(durable.clone()).await);
        hub.register(registration(1), None).await.expect("register");
        let a = address(1);
        // Another hub re-registers it (a new endpoint), and the event is lost.
        let mut moved = (*hub.registry.get(&a).expect("indexed").miner).clone();
        moved.endpoint =
            crate::domain::Endpoint::try_from("http://moved.example.com".to_string()).expect("url");
        moved.updated_at += 1;
        durable.update_miner(&moved).await.expect("update");
        let snapshot = durable.load_all().await.expect("load");

        // An outcome is being applied (under the miner's lock) when the resync arrives.
        let guard = hub.lock_for(&a).lock().await;
        let resync = tokio::spawn({
            let hub = hub.clone();
            async move { hub.apply_snapshot(snapshot, now_ms()).await }
        });
        // Single-threaded runtime: the resync runs until it waits for the lock.
        tokio::task::yield_now().await;
        let v = hub.registry.get(&a).expect("indexed");
        let newer = v.stats.with_outcome(
            crate::domain::scoring::OutcomeSample {
                success: true,
                latency_ms: Some(50.0),
                at: now_ms(),
            },
            hub.tuning().params.decay_factor,
        );
        let (score, cooldown) = hub.score_now(&newer, &v.availability, v.miner.stake, now_ms());
        hub.registry.update_stats(&a, newer, score, cooldown);
        drop(guard);
        resync.await.expect("join").expect("resync");

        let v = hub.registry.get(&a).expect("indexed");
        assert_eq!(v.miner.endpoint.as_str(), "http://moved.example.com");
        assert_eq!(
            v.stats.jobs_total, 1,
            "the outcome applied meanwhile is kept"
        );
    }
}
