//! The in-memory index the matcher reads: every miner with its capabilities, statistics,
//! current score and live status, plus one score-ordered set per model.
//!
//! Matching walks a model's set from the best score down and stops as soon as the answer is
//! settled, so it costs a few dozen entry visits whatever the number of miners. Live status
//! and reservations are atomics inside each entry: a heartbeat or a match takes only the
//! read lock, and only registration, deletion and score changes take the write lock.
//!
//! The per-model sets hold only miners that can take a job (available, fresh, below their
//! concurrency limit), so in a busy pool — where the best miners are the first to fill up —
//! a match does not walk past thousands of full ones. Membership is kept lazily: a walk that
//! meets a miner which can no longer take a job notes it, a heartbeat, a reservation or a
//! released reservation that changes whether a miner has room notes it, the sweeper notes
//! silent miners, and the noted entries are moved in or out under a short write lock before
//! the next match (or by the sweeper).
//!
//! Each set also keeps the counts panic mode is decided on (Envoy's rule, over the whole
//! eligible set rather than the few entries a walk visits): how many listed miners meet the
//! thresholds, and which of them are cooled down, ordered by when their cooldown ends.

use crate::domain::aitbc;
use crate::domain::matching::{self, Candidate, Eligible, Match, MatchCriteria, MatchPolicy};
use crate::domain::scoring::{passes_thresholds, Availability, MinerStats, Score, Thresholds};
use crate::domain::{Address, Miner, MinerStatus, Resources};
use parking_lot::{Mutex, RwLock};
use rand::Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

mod explain;

/// A miner's live status and reservations, updated without the registry's write lock.
///
/// Fields are independent atomics: a reader may see a mix of two consecutive heartbeats,
/// which is harmless because every field is valid on its own.
#[derive(Debug, Default)]
pub struct Live {
    /// The registry slot this belongs to.
    id: u32,
    /// The miner's concurrency limit (copied here so `has_room` needs nothing else).
    max_concurrent: AtomicU32,
    /// Whether the slot is in its models' match sets (changed only under the write lock).
    listed: AtomicBool,
    available: AtomicBool,
    current_load: AtomicU32,
    gpu_utilization: AtomicU64,
    /// f64 bits; NaN when not reported.
    temperature: AtomicU64,
    /// Unix ms; 0 = never reported since this process started.
    reported_at: AtomicU64,
    reserved: AtomicU32,
    /// Figures shown, never matched on (u64::MAX / NaN: not reported); last, away from the
    /// fields a match walk reads.
    memory_used_mb: AtomicU64,
    memory_total_mb: AtomicU64,
    network_latency_ms: AtomicU64,
}

fn some_u64(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

fn some_f64(bits: u64) -> Option<f64> {
    let v = f64::from_bits(bits);
    (!v.is_nan()).then_some(v)
}

impl Live {
    fn new(id: u32) -> Self {
        Self {
            id,
            memory_used_mb: AtomicU64::new(u64::MAX),
            memory_total_mb: AtomicU64::new(u64::MAX),
            network_latency_ms: AtomicU64::new(f64::NAN.to_bits()),
            ..Self::default()
        }
    }

    /// Available with a free slot (freshness aside): what the match sets are made of.
    pub fn has_room(&self) -> bool {
        self.reported_at.load(Ordering::Acquire) != 0
            && self.available.load(Ordering::Relaxed)
            && self
                .current_load
                .load(Ordering::Relaxed)
                .saturating_add(self.reserved())
                < self.max_concurrent.load(Ordering::Relaxed)
    }

    fn listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }

    /// The whole status, with the figures that are only shown (memory, network).
    pub fn status(&self) -> Option<MinerStatus> {
        let mut s = self.match_status()?;
        s.resources = Resources {
            memory_used_mb: some_u64(self.memory_used_mb.load(Ordering::Relaxed)),
            memory_total_mb: some_u64(self.memory_total_mb.load(Ordering::Relaxed)),
            network_latency_ms: some_f64(self.network_latency_ms.load(Ordering::Relaxed)),
        };
        Some(s)
    }

    /// The status as matching and counting read it: without the shown-only figures, so the
    /// match walk loads no more than it decides on.
    fn match_status(&self) -> Option<MinerStatus> {
        let reported_at = self.reported_at.load(Ordering::Acquire);
        if reported_at == 0 {
            return None;
        }
        let t = f64::from_bits(self.temperature.load(Ordering::Relaxed));
        Some(MinerStatus {
            available: self.available.load(Ordering::Relaxed),
            current_load: self.current_load.load(Ordering::Relaxed),
            gpu_utilization: f64::from_bits(self.gpu_utilization.load(Ordering::Relaxed)),
            temperature: (!t.is_nan()).then_some(t),
            reported_at,
            resources: Resources::default(),
        })
    }

    pub fn set_status(&self, s: &MinerStatus) {
        self.available.store(s.available, Ordering::Relaxed);
        self.current_load.store(s.current_load, Ordering::Relaxed);
        self.gpu_utilization
            .store(s.gpu_utilization.to_bits(), Ordering::Relaxed);
        self.temperature.store(
            s.temperature.unwrap_or(f64::NAN).to_bits(),
            Ordering::Relaxed,
        );
        let r = &s.resources;
        self.memory_used_mb
            .store(r.memory_used_mb.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.memory_total_mb
            .store(r.memory_total_mb.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.network_latency_ms.store(
            r.network_latency_ms.unwrap_or(f64::NAN).to_bits(),
            Ordering::Relaxed,
        );
        self.reported_at
            .store(s.reported_at.max(1), Ordering::Release);
    }

    pub fn clear_status(&self) {
        self.reported_at.store(0, Ordering::Release);
    }

    pub fn reserved(&self) -> u32 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Counts a reservation made elsewhere (another hub's, heard of through an event): it
    /// happened, so it is counted even if it overfills this index's view.
    pub fn reserve(&self) {
        self.reserved.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a slot if one is free, atomically: two matches running at once that both saw
    /// room cannot both take the last slot (the check in `has_room` and the increment are
    /// one compare-and-swap here).
    pub fn try_reserve(&self) -> bool {
        let max = self.max_concurrent.load(Ordering::Relaxed);
        let load = self.current_load.load(Ordering::Relaxed);
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (load.saturating_add(r) < max).then_some(r + 1)
            })
            .is_ok()
    }

    /// Gives back one reserved slot (never below zero).
    pub fn release(&self) {
        let _ = self
            .reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1));
    }
}

/// A copy of one entry, for reading outside the lock.
#[derive(Debug, Clone)]
pub struct MinerView {
    pub miner: Arc<Miner>,
    pub stats: MinerStats,
    pub availability: Availability,
    pub score: Score,
    pub cooldown_until: u64,
    pub status: Option<MinerStatus>,
    pub reserved: u32,
}

/// An indexed miner as a match offers it: its registration (to answer) and its live part
/// (to reserve a slot on). The key of the offers [`Registry::select`] returns.
#[derive(Debug, Clone)]
pub struct Handle {
    pub miner: Arc<Miner>,
    pub live: Arc<Live>,
}

/// What the periodic score update needs of one entry.
#[derive(Debug, Clone)]
pub struct ScoringInput {
    pub id: u32,
    pub address: Address,
    pub stake: u64,
    pub stats: MinerStats,
    pub availability: Availability,
    pub status: Option<MinerStatus>,
}

/// The result of re-scoring one entry.
#[derive(Debug, Clone)]
pub struct ScoringOutput {
    pub id: u32,
    pub address: Address,
    pub availability: Availability,
    pub score: Score,
    pub cooldown_until: u64,
}

type ScoreKey = (Reverse<u64>, u32);

/// Everything about a miner that is not needed on the match path.
struct Slot {
    miner: Arc<Miner>,
    stats: MinerStats,
    availability: Availability,
    score: Score,
}

/// What the match walk reads of each miner, kept small and contiguous (one `Vec`, indexed by
/// slot) so that walking past busy or offline miners costs one cache line here and one in
/// `Live`, instead of chasing the full record.
struct MatchEntry {
    miner: Arc<Miner>,
    live: Arc<Live>,
    score: f64,
    avg_latency_ms: f64,
    cooldown_until: u64,
    gpu_memory: u64,
    max_concurrent_jobs: u32,
    qualified: bool,
}

impl MatchEntry {
    /// The entry as the matchers see it, with its live status and reservations as read once
    /// by the caller.
    /// The matcher's view of the entry; `in_model_set` when it was drawn from a model's match
    /// set (see [`Candidate::serves_model`]).
    fn candidate(
        &self,
        status: Option<MinerStatus>,
        reserved: u32,
        in_model_set: bool,
    ) -> Candidate<'_, u32> {
        Candidate {
            key: self.live.id,
            miner: &self.miner,
            score: self.score,
            avg_latency_ms: self.avg_latency_ms,
            qualified: self.qualified,
            gpu_memory: self.gpu_memory,
            max_concurrent_jobs: self.max_concurrent_jobs,
            status,
            reserved,
            cooldown_until: self.cooldown_until,
            serves_model: in_model_set,
        }
    }
}

fn key(score: f64, id: u32) -> ScoreKey {
    // For non-negative floats the bit pattern orders like the value.
    (Reverse(score.max(0.0).to_bits()), id)
}

/// One model's match set, with the counts panic mode is decided on.
#[derive(Default)]
struct ModelSet {
    /// Listed miners serving the model, best score first.
    by_score: BTreeSet<ScoreKey>,
    /// Listed miners that meet the thresholds: the eligible set of [`Eligible`].
    qualified: usize,
    /// Of those, the ones with a cooldown that had not ended at the last expiry pass, by the
    /// time it ends. Counting the cooled-down ones at `now` then only skips the few at the
    /// front that ended since that pass.
    cooling: BTreeSet<(u64, u32)>,
}

impl ModelSet {
    fn eligible(&self, now: u64) -> Eligible {
        let ended = self
            .cooling
            .iter()
            .take_while(|(until, _)| *until <= now)
            .count();
        Eligible {
            total: self.qualified,
            cooled: self.cooling.len() - ended,
        }
    }
}

#[derive(Default)]
struct Inner {
    ids: BTreeMap<Address, u32>,
    slots: Vec<Option<Slot>>,
    entries: Vec<Option<MatchEntry>>,
    free: Vec<u32>,
    by_model: HashMap<String, ModelSet>,
    /// Miners registered by name, by the hash of their key: how a heartbeat that names no
    /// miner (AITBC's) finds its miner without a scan.
    by_key: HashMap<String, Address>,
    /// Cooldowns ending at or before this (unix ms) are no longer filed in `cooling`.
    cooldowns_ended: u64,
}

impl Inner {
    fn view(&self, id: u32) -> Option<MinerView> {
        let s = self.slots.get(id as usize)?.as_ref()?;
        let h = self.entries.get(id as usize)?.as_ref()?;
        Some(MinerView {
            miner: s.miner.clone(),
            stats: s.stats,
            availability: s.availability,
            score: s.score,
            cooldown_until: h.cooldown_until,
            status: h.live.status(),
            reserved: h.live.reserved(),
        })
    }

    /// Takes the slot out of its models' match sets.
    fn unindex(&mut self, id: u32) {
        let Some(h) = self.entries[id as usize].as_ref() else {
            return;
        };
        if !h.live.listed.swap(false, Ordering::Relaxed) {
            return;
        }
        let k = key(h.score, id);
        let (qualified, cooling) = (h.qualified, (h.cooldown_until, id));
        let miner = h.miner.clone();
        for m in &miner.capabilities.models {
            if let Some(set) = self.by_model.get_mut(m) {
                set.by_score.remove(&k);
                if qualified {
                    set.qualified -= 1;
                    set.cooling.remove(&cooling);
                }
                if set.by_score.is_empty() {
                    self.by_model.remove(m);
                }
            }
        }
    }

    /// Puts the slot into its models' match sets if it can take a job.
    fn index(&mut self, id: u32) {
        let Some(h) = self.entries[id as usize].as_ref() else {
            return;
        };
        if h.live.listed() || !h.live.has_room() {
            return;
        }
        h.live.listed.store(true, Ordering::Relaxed);
        let k = key(h.score, id);
        let qualified = h.qualified;
        let cooling = (h.cooldown_until > self.cooldowns_ended).then_some((h.cooldown_until, id));
        let miner = h.miner.clone();
        for m in &miner.capabilities.models {
            let set = self.by_model.entry(m.clone()).or_default();
            set.by_score.insert(k);
            if qualified {
                set.qualified += 1;
                if let Some(c) = cooling {
                    set.cooling.insert(c);
                }
            }
        }
    }

    /// Forgets cooldowns that have ended, so counting the current ones stays cheap.
    fn end_cooldowns(&mut self, now: u64) {
        self.cooldowns_ended = self.cooldowns_ended.max(now);
        for set in self.by_model.values_mut() {
            while set.cooling.first().is_some_and(|(until, _)| *until <= now) {
                set.cooling.pop_first();
            }
        }
    }

    /// Moves a slot into or out of the match sets after its live state changed.
    fn refresh(&mut self, id: u32, now: u64, heartbeat_timeout_ms: u64) {
        let Some(h) = self.entries.get(id as usize).and_then(Option::as_ref) else {
            return;
        };
        let fresh = h
            .live
            .match_status()
            .is_some_and(|s| matching::is_fresh(&s, now, heartbeat_timeout_ms));
        let want = fresh && h.live.has_room();
        if want && !h.live.listed() {
            self.index(id);
        } else if !want && h.live.listed() {
            self.unindex(id);
        }
    }

    /// Sets a slot's score-dependent fields, keeping the model sets in order.
    fn rescore(&mut self, id: u32, score: Score, cooldown_until: u64, thresholds: &Thresholds) {
        // Re-listed only if it was listed: `index` cannot judge freshness, so an entry that
        // was left out stays out until `refresh` decides.
        let was_listed = self.entries[id as usize]
            .as_ref()
            .is_some_and(|h| h.live.listed());
        self.unindex(id);
        if let Some(s) = self.slots[id as usize].as_mut() {
            s.score = score;
        }
        if let Some(h) = self.entries[id as usize].as_mut() {
            h.score = score.value;
            h.avg_latency_ms = score.factors.avg_latency_ms;
            h.qualified = passes_thresholds(&score.factors, thresholds);
            h.cooldown_until = cooldown_until;
        }
        if was_listed {
            self.index(id);
        }
    }
}

/// The index. One per process; shared by reference.
pub struct Registry {
    inner: RwLock<Inner>,
    /// Which miners qualify is decided when their score changes, not on every match. A
    /// reload replaces them, then rescores every miner.
    thresholds: Mutex<Thresholds>,
    /// Slots whose membership in the match sets may be out of date.
    noted: Mutex<Vec<u32>>,
    any_noted: AtomicBool,
}

impl Registry {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            thresholds: Mutex::new(thresholds),
            noted: Mutex::new(Vec::new()),
            any_noted: AtomicBool::new(false),
        }
    }

    /// The thresholds miners qualify by from now on; they apply as scores are next set (a
    /// reload rescores every miner at once).
    pub fn set_thresholds(&self, thresholds: Thresholds) {
        *self.thresholds.lock() = thresholds;
    }

    fn note_ids(&self, ids: impl IntoIterator<Item = u32>) {
        let mut n = self.noted.lock();
        n.extend(ids);
        if !n.is_empty() {
            self.any_noted.store(true, Ordering::Release);
        }
    }

    /// Tells the index that a miner's live state changed (heartbeat, released reservation);
    /// it is re-filed before the next match if it now belongs elsewhere.
    pub fn note(&self, live: &Live) {
        if live.has_room() != live.listed() {
            self.note_ids([live.id]);
        }
    }

    /// Re-files every noted slot (cheap when nothing is noted).
    pub fn settle(&self, now: u64, heartbeat_timeout_ms: u64) {
        if !self.any_noted.swap(false, Ordering::AcqRel) {
            return;
        }
        let ids = std::mem::take(&mut *self.noted.lock());
        let mut g = self.inner.write();
        for id in ids {
            g.refresh(id, now, heartbeat_timeout_ms);
        }
    }

    /// Notes every listed miner that can no longer take a job (its heartbeat went stale, or
    /// it filled up without a match walk meeting it), so the match sets and their counts stay
    /// close to the truth between matches. The sweeper calls this a few times a second; it
    /// reads two atomics per miner under the read lock.
    pub fn note_stale(&self, now: u64, heartbeat_timeout_ms: u64) {
        let stale: Vec<u32> = {
            let g = self.inner.read();
            g.entries
                .iter()
                .flatten()
                .filter(|h| h.live.listed())
                .filter(|h| {
                    !h.live.has_room()
                        || h.live
                            .reported_at
                            .load(Ordering::Acquire)
                            .saturating_add(heartbeat_timeout_ms)
                            < now
                })
                .map(|h| h.live.id)
                .collect()
        };
        if !stale.is_empty() {
            self.note_ids(stale);
        }
    }

    /// Miners whose heartbeat expired in `(from, to]`, and those whose cooldown ran out in
    /// it: the event stream's offline and cooldown-ended events (one walk, only while
    /// someone watches the stream).
    pub fn lapsed_between(
        &self,
        from: u64,
        to: u64,
        heartbeat_timeout_ms: u64,
    ) -> (Vec<Address>, Vec<Address>) {
        let g = self.inner.read();
        let (mut offline, mut cooled) = (Vec::new(), Vec::new());
        for h in g.entries.iter().flatten() {
            let at = h.live.reported_at.load(Ordering::Acquire);
            let expired = at.saturating_add(heartbeat_timeout_ms);
            if at != 0 && expired > from && expired <= to {
                offline.push(h.miner.address);
            }
            if h.cooldown_until > from && h.cooldown_until <= to {
                cooled.push(h.miner.address);
            }
        }
        (offline, cooled)
    }

    /// Forgets cooldowns that ended by `now` (the sweeper calls this a few times a second),
    /// which keeps the per-match count of cooled-down miners to a short walk.
    pub fn end_cooldowns(&self, now: u64) {
        self.inner.write().end_cooldowns(now);
    }

    /// Registered miners.
    pub fn len(&self) -> usize {
        self.inner.read().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a miner or replaces its registration; live status and reservations are kept.
    pub fn upsert(
        &self,
        miner: Miner,
        stats: MinerStats,
        availability: Availability,
        score: Score,
        cooldown_until: u64,
    ) {
        let mut g = self.inner.write();
        let address = miner.address;
        let existing = g.ids.get(&address).copied();
        if let Some(old) = existing.and_then(|id| g.slots[id as usize].as_ref()) {
            if old.miner.profile.is_some() {
                let hash = old.miner.token_hash.clone();
                if g.by_key.get(&hash) == Some(&address) {
                    g.by_key.remove(&hash);
                }
            }
        }
        if miner.profile.is_some() {
            g.by_key.insert(miner.token_hash.clone(), address);
        }
        let mut was_listed = false;
        let (id, live) = match existing {
            Some(id) => {
                was_listed = g.entries[id as usize]
                    .as_ref()
                    .is_some_and(|h| h.live.listed());
                g.unindex(id);
                let live = g.entries[id as usize]
                    .as_ref()
                    .map_or_else(|| Arc::new(Live::new(id)), |h| h.live.clone());
                (id, live)
            }
            None => {
                let id = match g.free.pop() {
                    Some(id) => id,
                    None => {
                        g.slots.push(None);
                        g.entries.push(None);
                        (g.slots.len() - 1) as u32
                    }
                };
                g.ids.insert(address, id);
                (id, Arc::new(Live::new(id)))
            }
        };
        let miner = Arc::new(miner);
        live.max_concurrent
            .store(miner.capabilities.max_concurrent_jobs, Ordering::Relaxed);
        g.entries[id as usize] = Some(MatchEntry {
            miner: miner.clone(),
            live,
            score: score.value,
            avg_latency_ms: score.factors.avg_latency_ms,
            cooldown_until,
            gpu_memory: miner.capabilities.gpu_memory,
            max_concurrent_jobs: miner.capabilities.max_concurrent_jobs,
            qualified: passes_thresholds(&score.factors, &self.thresholds.lock()),
        });
        g.slots[id as usize] = Some(Slot {
            miner,
            stats,
            availability,
            score,
        });
        // As in `rescore`; and its capacity may have changed, so it is re-filed (with its
        // freshness checked) before the next match.
        if was_listed {
            g.index(id);
        }
        drop(g);
        self.note_ids([id]);
    }

    /// Removes a miner; returns whether it was there.
    pub fn remove(&self, address: &Address) -> bool {
        let mut g = self.inner.write();
        let Some(id) = g.ids.remove(address) else {
            return false;
        };
        if let Some(hash) = g.slots[id as usize]
            .as_ref()
            .filter(|s| s.miner.profile.is_some())
            .map(|s| s.miner.token_hash.clone())
        {
            if g.by_key.get(&hash) == Some(address) {
                g.by_key.remove(&hash);
            }
        }
        g.unindex(id);
        g.slots[id as usize] = None;
        g.entries[id as usize] = None;
        g.free.push(id);
        true
    }

    /// The miner registered by name whose key has this hash (see `hub::hash_token`).
    pub fn named_by_key(&self, token_hash: &str) -> Option<Address> {
        self.inner.read().by_key.get(token_hash).copied()
    }

    /// Ranks every miner against AITBC's requirements (a walk over all of them: the request
    /// names no model, so no per-model set narrows it down).
    pub fn rank_by_requirements(
        &self,
        req: &aitbc::Requirements,
        policy: &MatchPolicy,
        now: u64,
    ) -> aitbc::Ranking<Handle> {
        let g = self.inner.read();
        let candidates = g
            .entries
            .iter()
            .flatten()
            .map(|h| h.candidate(h.live.match_status(), h.live.reserved(), false));
        let r = aitbc::rank(candidates, req, policy, now);
        let offers = r
            .offers
            .into_iter()
            .filter_map(|o| {
                let h = g.entries[o.key as usize].as_ref()?;
                Some(aitbc::Ranked {
                    key: Handle {
                        miner: h.miner.clone(),
                        live: h.live.clone(),
                    },
                    address: o.address,
                    score: o.score,
                    load: o.load,
                    max_concurrent: o.max_concurrent,
                    eta_ms: o.eta_ms,
                    in_region: o.in_region,
                    cooled_down: o.cooled_down,
                })
            })
            .collect();
        aitbc::Ranking {
            offers,
            panic: r.panic,
        }
    }

    pub fn get(&self, address: &Address) -> Option<MinerView> {
        let g = self.inner.read();
        let id = *g.ids.get(address)?;
        g.view(id)
    }

    /// The live part of an entry, for status updates and reservations.
    pub fn live(&self, address: &Address) -> Option<(Arc<Miner>, Arc<Live>)> {
        let g = self.inner.read();
        let id = *g.ids.get(address)?;
        g.entries[id as usize]
            .as_ref()
            .map(|h| (h.miner.clone(), h.live.clone()))
    }

    /// Replaces a miner's statistics and score unless they are older than what it holds
    /// (outcomes for one miner may finish committing in any order).
    pub fn update_stats(
        &self,
        address: &Address,
        stats: MinerStats,
        score: Score,
        cooldown_until: u64,
    ) -> bool {
        let mut g = self.inner.write();
        let Some(id) = g.ids.get(address).copied() else {
            return false;
        };
        let Some(slot) = g.slots[id as usize].as_ref() else {
            return false;
        };
        if slot.stats.jobs_total > stats.jobs_total {
            return false;
        }
        if let Some(slot) = g.slots[id as usize].as_mut() {
            slot.stats = stats;
        }
        let thresholds = *self.thresholds.lock();
        g.rescore(id, score, cooldown_until, &thresholds);
        true
    }

    /// Everything the periodic score update reads, copied out under the read lock.
    pub fn scoring_inputs(&self) -> Vec<ScoringInput> {
        let g = self.inner.read();
        g.ids
            .iter()
            .filter_map(|(a, &id)| {
                let s = g.slots[id as usize].as_ref()?;
                let h = g.entries[id as usize].as_ref()?;
                Some(ScoringInput {
                    id,
                    address: *a,
                    stake: s.miner.stake,
                    stats: s.stats,
                    availability: s.availability,
                    status: h.live.status(),
                })
            })
            .collect()
    }

    /// Applies re-scored entries; entries deleted or replaced meanwhile are skipped.
    pub fn apply_scores(&self, batch: &[ScoringOutput]) {
        let thresholds = *self.thresholds.lock();
        let mut g = self.inner.write();
        for o in batch {
            let same = g
                .slots
                .get(o.id as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.miner.address == o.address);
            if !same {
                continue;
            }
            if let Some(s) = g.slots[o.id as usize].as_mut() {
                s.availability = o.availability;
            }
            g.rescore(o.id, o.score, o.cooldown_until, &thresholds);
        }
    }

    /// Runs the matcher over the model's miners, best score first.
    ///
    /// Among miners with exactly the best score (typically many new miners on their priors)
    /// the walk starts at a random one, so such a group shares the work instead of the
    /// lowest slots always being examined first.
    pub fn select(
        &self,
        crit: &MatchCriteria<'_>,
        policy: &MatchPolicy,
        now: u64,
        rng: &mut impl Rng,
    ) -> Match<Handle> {
        let none = Match {
            offers: Vec::new(),
            panic: false,
        };
        let hb = policy.heartbeat_timeout_ms;
        self.settle(now, hb);
        let g = self.inner.read();
        let Some(model) = g.by_model.get(crit.model) else {
            return none;
        };
        let mut eligible = model.eligible(now);
        // The client's exclusions are part of this request's eligible set; few, so cheap.
        let mut excluded: Vec<u32> = crit
            .exclude
            .iter()
            .filter_map(|a| g.ids.get(a).copied())
            .collect();
        excluded.sort_unstable();
        excluded.dedup();
        for id in excluded {
            let Some(h) = g.entries[id as usize].as_ref() else {
                continue;
            };
            if h.live.listed() && h.qualified && h.miner.serves_model(crit.model) {
                eligible.total = eligible.total.saturating_sub(1);
                if h.cooldown_until > now.max(g.cooldowns_ended) {
                    eligible.cooled = eligible.cooled.saturating_sub(1);
                }
            }
        }
        let set = &model.by_score;
        let Some(&(top, _)) = set.first() else {
            return none;
        };
        let start = rng.random_range(0..=g.slots.len() as u32);
        let top_group = set
            .range((top, start)..)
            .take_while(|k| k.0 == top)
            .chain(set.range((top, 0)..(top, start)));
        let rest = set.range((Bound::Excluded((top, u32::MAX)), Bound::Unbounded));
        let mut stale = Vec::new();
        let candidates = top_group.chain(rest).filter_map(|&(_, id)| {
            let h = g.entries[id as usize].as_ref()?;
            let status = h.live.match_status();
            let reserved = h.live.reserved();
            let takes_jobs = status.is_some_and(|s| {
                s.available
                    && matching::is_fresh(&s, now, hb)
                    && s.current_load.saturating_add(reserved) < h.max_concurrent_jobs
            });
            if !takes_jobs {
                stale.push(id);
            }
            Some(h.candidate(status, reserved, true))
        });
        let m = matching::select(candidates, crit, policy, eligible, now, rng);
        let offers = m
            .offers
            .into_iter()
            .filter_map(|o| {
                let h = g.entries[o.key as usize].as_ref()?;
                Some(o.with_key(Handle {
                    miner: h.miner.clone(),
                    live: h.live.clone(),
                }))
            })
            .collect();
        drop(g);
        if !stale.is_empty() {
            self.note_ids(stale);
        }
        Match {
            offers,
            panic: m.panic,
        }
    }

    /// Miners in address order after `after`, filtered, at most `limit`.
    pub fn list(
        &self,
        after: Option<&Address>,
        limit: usize,
        filter: impl Fn(&MinerView) -> bool,
    ) -> Vec<MinerView> {
        let g = self.inner.read();
        let range = match after {
            Some(a) => g.ids.range((Bound::Excluded(*a), Bound::Unbounded)),
            None => g.ids.range(..),
        };
        range
            .filter_map(|(_, &id)| g.view(id))
            .filter(|v| filter(v))
            .take(limit)
            .collect()
    }

    /// Counts over every entry: registered, online, available, cooled down, and the online
    /// ones that fail the thresholds or are cooled down.
    pub fn counts(&self, now: u64, heartbeat_timeout_ms: u64) -> Counts {
        let thresholds = *self.thresholds.lock();
        let g = self.inner.read();
        let mut c = Counts {
            registered: g.ids.len(),
            ..Counts::default()
        };
        for h in g.entries.iter().flatten() {
            if let Some(st) = h.live.match_status() {
                if matching::is_fresh(&st, now, heartbeat_timeout_ms) {
                    c.online += 1;
                    if st.available {
                        c.available += 1;
                    }
                    if crate::domain::scoring::too_hot(st.temperature, &thresholds) {
                        c.too_hot += 1;
                    }
                    if !h.qualified || h.cooldown_until > now {
                        c.violations += 1;
                    }
                }
            }
            if h.cooldown_until > now {
                c.cooled_down += 1;
            }
        }
        c
    }

    /// Every miner's address and score (for the per-miner score gauge).
    pub fn scores(&self) -> Vec<(Address, f64)> {
        let g = self.inner.read();
        g.ids
            .iter()
            .filter_map(|(a, &id)| g.entries[id as usize].as_ref().map(|h| (*a, h.score)))
            .collect()
    }
}

/// Miner counts for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Counts {
    pub registered: usize,
    pub online: usize,
    pub available: usize,
    pub cooled_down: usize,
    /// Online miners whose last temperature is over `thresholds.max_temperature` (not
    /// matched until they cool).
    pub too_hot: usize,
    /// Online miners failing the scoring thresholds or cooled down (the SLA's violations).
    #[serde(skip)]
    pub violations: usize,
}

#[cfg(test)]
mod tests;
