//! Background work: the periodic score update (which also samples availability and
//! checkpoints it) and the reservation sweeper. Whoever starts them owns them: they run on
//! the caller's `TaskTracker` and stop on its `CancellationToken`.

use super::{now_ms, Hub};
use crate::domain::matching::is_fresh;
use crate::domain::scoring;
use crate::registry::ScoringOutput;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Entries re-indexed per write-lock acquisition, so matches never wait long.
const APPLY_CHUNK: usize = 4096;

/// How often the outcome history is bounded and the storage gauges refreshed.
const PRUNE_INTERVAL: Duration = Duration::from_secs(5);
/// How often expired reservations are released and the match sets brought up to date.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Reservations released (and their miners re-filed) per lock hold, see `Hub::sweep`.
const SWEEP_BATCH: usize = 256;

impl Hub {
    /// Recomputes every score at `now`, sampling each miner's availability on the way.
    /// Pure CPU work; returns the availability checkpoint to persist.
    pub fn rescore_all(&self, now: u64) -> Vec<(crate::domain::Address, scoring::Availability)> {
        let inputs = self.registry.scoring_inputs();
        let hb = self.tuning().policy.heartbeat_timeout_ms;
        let outputs: Vec<ScoringOutput> = inputs
            .into_iter()
            .map(|i| {
                let online = i
                    .status
                    .is_some_and(|s| s.available && is_fresh(&s, now, hb));
                let availability =
                    i.availability
                        .with_sample(online, now, self.tuning().params.decay_factor);
                ScoringOutput {
                    id: i.id,
                    address: i.address,
                    score: scoring::score(
                        &i.stats,
                        &availability,
                        i.stake,
                        now,
                        &self.tuning().params,
                    ),
                    cooldown_until: scoring::cooldown_until(&i.stats, &self.tuning().failover),
                    availability,
                }
            })
            .collect();
        for chunk in outputs.chunks(APPLY_CHUNK) {
            self.registry.apply_scores(chunk);
        }
        self.last_score_update.store(now, Ordering::Relaxed);
        self.metrics.score_updates_total.inc();
        outputs
            .into_iter()
            .map(|o| (o.address, o.availability))
            .collect()
    }

    /// Persists every miner's availability history.
    pub(crate) async fn checkpoint(&self) {
        let batch: Vec<_> = self
            .registry
            .scoring_inputs()
            .into_iter()
            .map(|i| (i.address, i.availability))
            .collect();
        if let Err(e) = self.durable.save_availability(batch).await {
            let _ = self.store_error(e);
        }
    }

    async fn score_tick(self: &Arc<Self>) {
        let hub = self.clone();
        let started = std::time::Instant::now();
        let now = now_ms();
        let batch = match tokio::task::spawn_blocking(move || hub.rescore_all(now)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "score update failed");
                return;
            }
        };
        let n = batch.len();
        if let Err(e) = self.durable.save_availability(batch).await {
            let _ = self.store_error(e);
        }
        tracing::debug!(
            miners = n,
            took_ms = started.elapsed().as_millis() as u64,
            "scores updated"
        );
    }

    /// Starts the background work — the score updater, the reservation sweeper and (with a
    /// shared hot store) the sync between hubs, and the key reload — on `tracker`, so whoever owns the hub can
    /// wait for it; every task stops at its next await once `cancel` fires.
    pub fn spawn_tasks(self: &Arc<Self>, cancel: CancellationToken, tracker: &TaskTracker) {
        {
            let hub = self.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                loop {
                    // Read each time: a reload may change the interval.
                    let every = Duration::from_secs(hub.tuning().scoring.update_interval);
                    tokio::select! {
                        () = tokio::time::sleep(every) => hub.score_tick().await,
                        () = cancel.cancelled() => break,
                    }
                }
            });
        }
        {
            let hub = self.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                let mut tick = tokio::time::interval(PRUNE_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => hub.prune_tick().await,
                        _ = cancel.cancelled() => break,
                    }
                }
            });
        }
        self.spawn_sync(cancel.clone(), tracker);
        self.spawn_backups(cancel.clone(), tracker);
        self.spawn_key_reload(cancel.clone(), tracker);
        let hub = self.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => hub.sweep(now_ms()).await,
                    _ = cancel.cancelled() => break,
                }
            }
        });
    }

    /// Bounds the outcome history by age and count (in small batches, see
    /// `DurableStore::prune_outcomes`) and refreshes the storage gauges.
    async fn prune_tick(&self) {
        let st = &self.tuning().storage;
        let before = match st.outcome_retention_days {
            0 => 0,
            days => now_ms().saturating_sub(days.saturating_mul(86_400_000)),
        };
        // The count bound (and the count) every pass where counting is cheap, else once a
        // minute.
        let tick = self.prune_ticks.fetch_add(1, Ordering::Relaxed);
        let count_now = self.durable.counts_cheaply() || tick % 12 == 0;
        let keep = (st.max_outcomes > 0 && count_now).then_some(st.max_outcomes);
        if before > 0 || keep.is_some() {
            let started = std::time::Instant::now();
            match self.durable.prune_outcomes(before, keep).await {
                Ok(0) => {}
                Ok(p) => tracing::info!(
                    pruned = p,
                    took_ms = started.elapsed().as_millis() as u64,
                    "outcome history pruned"
                ),
                Err(e) => {
                    let _ = self.store_error(e);
                }
            }
        }
        if count_now {
            match self.durable.outcome_count().await {
                Ok(n) => self.metrics.outcomes_stored.set(n as i64),
                Err(e) => tracing::debug!(error = %e, "cannot count stored outcomes"),
            }
        }
        if let Some(bytes) = self.durable.size_bytes().await {
            self.metrics.store_file_bytes.set(bytes as i64);
        }
    }

    /// One sweeper pass: expired reservations released, and the match sets and their panic
    /// counts brought up to date between matches (silent miners out, ended cooldowns
    /// forgotten).
    ///
    /// The sweep runs on a runtime worker, between requests. Under a sustained match load
    /// thousands of reservations expire per pass: released all at once they held the
    /// reservation lock and then the index's write lock for milliseconds, and every match
    /// waited (match p99 was 10 times p50). They are released in batches of
    /// [`SWEEP_BATCH`], each re-filed before the next, with a yield in between so requests
    /// run.
    async fn sweep(&self, now: u64) {
        let hb = self.tuning().policy.heartbeat_timeout_ms;
        let mut released = 0;
        loop {
            let (freed, more) = self.reservations.expire(now, SWEEP_BATCH);
            for live in &freed {
                self.registry.note(live);
            }
            released += freed.len();
            if !more {
                break;
            }
            self.registry.settle(now, hb);
            tokio::task::yield_now().await;
        }
        if released > 0 {
            tracing::debug!(released, "reservations expired");
        }
        self.registry.note_stale(now, hb);
        self.registry.end_cooldowns(now);
        self.registry.settle(now, hb);
        let since = self.events.swept(now);
        if since > 0 && self.events.active(now) {
            let (offline, cooled) = self.registry.lapsed_between(since, now, hb);
            self.emit_offline(&offline);
            self.emit_cooldowns_ended(&cooled);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::hub::tests::hub;
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    #[tokio::test]
    async fn background_tasks_run_on_the_callers_tracker_and_stop_on_cancel() {
        let hub = Arc::new(hub().await);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        hub.spawn_tasks(cancel.clone(), &tracker);
        assert_eq!(
            tracker.len(),
            4,
            "scorer, pruner, sweeper and key reload (no shared hot store: no sync)"
        );
        cancel.cancel();
        tracker.close();
        // Only a guard against hanging the suite: the tasks stop at their next await.
        tokio::time::timeout(std::time::Duration::from_secs(60), tracker.wait())
            .await
            .expect("tasks stopped");
        assert_eq!(Arc::strong_count(&hub), 1, "no task holds the hub any more");
    }
}
