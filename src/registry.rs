//! The in-memory index the matcher reads: every miner with its capabilities, statistics,
//! current score and live status, plus one score-ordered set per model.
//!
//! Matching walks a model's set from the best score down and stops as soon as the answer is
//! settled, so it costs a few dozen entry visits whatever the number of miners. Live status
//! and reservations are atomics inside each entry: a heartbeat or a match takes only the
//! read lock, and only registration, deletion and score changes take the write lock.

use crate::domain::matching::{self, Candidate, MatchCriteria, MatchPolicy, Pick};
use crate::domain::scoring::{passes_thresholds, Availability, MinerStats, Score, Thresholds};
use crate::domain::{Address, Miner, MinerStatus};
use parking_lot::RwLock;
use rand::Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// A miner's live status and reservations, updated without the registry's write lock.
///
/// Fields are independent atomics: a reader may see a mix of two consecutive heartbeats,
/// which is harmless because every field is valid on its own.
#[derive(Debug, Default)]
pub struct Live {
    available: AtomicBool,
    current_load: AtomicU32,
    gpu_utilization: AtomicU64,
    /// f64 bits; NaN when not reported.
    temperature: AtomicU64,
    /// Unix ms; 0 = never reported since this process started.
    reported_at: AtomicU64,
    reserved: AtomicU32,
}

impl Live {
    pub fn status(&self) -> Option<MinerStatus> {
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
        self.reported_at
            .store(s.reported_at.max(1), Ordering::Release);
    }

    pub fn clear_status(&self) {
        self.reported_at.store(0, Ordering::Release);
    }

    pub fn reserved(&self) -> u32 {
        self.reserved.load(Ordering::Relaxed)
    }

    pub fn reserve(&self) {
        self.reserved.fetch_add(1, Ordering::Relaxed);
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

/// What a match chose, with what the caller needs to answer and reserve.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub pick: Pick<u32>,
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
struct Hot {
    miner: Arc<Miner>,
    live: Arc<Live>,
    score: f64,
    avg_latency_ms: f64,
    cooldown_until: u64,
    gpu_memory: u64,
    max_concurrent_jobs: u32,
    qualified: bool,
}

fn key(score: f64, id: u32) -> ScoreKey {
    // For non-negative floats the bit pattern orders like the value.
    (Reverse(score.max(0.0).to_bits()), id)
}

#[derive(Default)]
struct Inner {
    ids: BTreeMap<Address, u32>,
    slots: Vec<Option<Slot>>,
    hot: Vec<Option<Hot>>,
    free: Vec<u32>,
    by_model: HashMap<String, BTreeSet<ScoreKey>>,
}

impl Inner {
    fn view(&self, id: u32) -> Option<MinerView> {
        let s = self.slots.get(id as usize)?.as_ref()?;
        let h = self.hot.get(id as usize)?.as_ref()?;
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

    fn unindex(&mut self, id: u32) {
        let Some(h) = self.hot[id as usize].as_ref() else {
            return;
        };
        let k = key(h.score, id);
        let miner = h.miner.clone();
        for m in &miner.capabilities.models {
            if let Some(set) = self.by_model.get_mut(m) {
                set.remove(&k);
                if set.is_empty() {
                    self.by_model.remove(m);
                }
            }
        }
    }

    fn index(&mut self, id: u32) {
        let Some(h) = self.hot[id as usize].as_ref() else {
            return;
        };
        let k = key(h.score, id);
        let miner = h.miner.clone();
        for m in &miner.capabilities.models {
            self.by_model.entry(m.clone()).or_default().insert(k);
        }
    }

    /// Sets a slot's score-dependent fields, keeping the model sets in order.
    fn rescore(&mut self, id: u32, score: Score, cooldown_until: u64, thresholds: &Thresholds) {
        self.unindex(id);
        if let Some(s) = self.slots[id as usize].as_mut() {
            s.score = score;
        }
        if let Some(h) = self.hot[id as usize].as_mut() {
            h.score = score.value;
            h.avg_latency_ms = score.factors.avg_latency_ms;
            h.qualified = passes_thresholds(&score.factors, thresholds);
            h.cooldown_until = cooldown_until;
        }
        self.index(id);
    }
}

/// The index. One per process; shared by reference.
pub struct Registry {
    inner: RwLock<Inner>,
    /// Which miners qualify is decided when their score changes, not on every match.
    thresholds: Thresholds,
}

impl Registry {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            thresholds,
        }
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
        let (id, live) = match existing {
            Some(id) => {
                g.unindex(id);
                let live = g.hot[id as usize]
                    .as_ref()
                    .map(|h| h.live.clone())
                    .unwrap_or_default();
                (id, live)
            }
            None => {
                let id = match g.free.pop() {
                    Some(id) => id,
                    None => {
                        g.slots.push(None);
                        g.hot.push(None);
                        (g.slots.len() - 1) as u32
                    }
                };
                g.ids.insert(address, id);
                (id, Arc::new(Live::default()))
            }
        };
        let miner = Arc::new(miner);
        g.hot[id as usize] = Some(Hot {
            miner: miner.clone(),
            live,
            score: score.value,
            avg_latency_ms: score.factors.avg_latency_ms,
            cooldown_until,
            gpu_memory: miner.capabilities.gpu_memory,
            max_concurrent_jobs: miner.capabilities.max_concurrent_jobs,
            qualified: passes_thresholds(&score.factors, &self.thresholds),
        });
        g.slots[id as usize] = Some(Slot {
            miner,
            stats,
            availability,
            score,
        });
        g.index(id);
    }

    /// Removes a miner; returns whether it was there.
    pub fn remove(&self, address: &Address) -> bool {
        let mut g = self.inner.write();
        let Some(id) = g.ids.remove(address) else {
            return false;
        };
        g.unindex(id);
        g.slots[id as usize] = None;
        g.hot[id as usize] = None;
        g.free.push(id);
        true
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
        g.hot[id as usize]
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
        g.rescore(id, score, cooldown_until, &self.thresholds);
        true
    }

    /// Everything the periodic score update reads, copied out under the read lock.
    pub fn scoring_inputs(&self) -> Vec<ScoringInput> {
        let g = self.inner.read();
        g.ids
            .iter()
            .filter_map(|(a, &id)| {
                let s = g.slots[id as usize].as_ref()?;
                let h = g.hot[id as usize].as_ref()?;
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
            g.rescore(o.id, o.score, o.cooldown_until, &self.thresholds);
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
    ) -> (Vec<Chosen>, bool) {
        let g = self.inner.read();
        let Some(set) = g.by_model.get(crit.model) else {
            return (Vec::new(), false);
        };
        let Some(&(top, _)) = set.first() else {
            return (Vec::new(), false);
        };
        let start = rng.random_range(0..=g.slots.len() as u32);
        let top_group = set
            .range((top, start)..)
            .take_while(|k| k.0 == top)
            .chain(set.range((top, 0)..(top, start)));
        let rest = set.range((Bound::Excluded((top, u32::MAX)), Bound::Unbounded));
        let candidates = top_group.chain(rest).filter_map(|&(_, id)| {
            let h = g.hot[id as usize].as_ref()?;
            Some(Candidate {
                key: id,
                miner: &h.miner,
                score: h.score,
                avg_latency_ms: h.avg_latency_ms,
                qualified: h.qualified,
                gpu_memory: h.gpu_memory,
                max_concurrent_jobs: h.max_concurrent_jobs,
                status: h.live.status(),
                reserved: h.live.reserved(),
                cooldown_until: h.cooldown_until,
            })
        });
        let sel = matching::select(candidates, crit, policy, now, rng);
        let chosen = sel
            .picks
            .into_iter()
            .filter_map(|pick| {
                let h = g.hot[pick.key as usize].as_ref()?;
                Some(Chosen {
                    pick,
                    miner: h.miner.clone(),
                    live: h.live.clone(),
                })
            })
            .collect();
        (chosen, sel.panic)
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

    /// Counts over every entry: (registered, online, available, cooled down).
    pub fn counts(&self, now: u64, heartbeat_timeout_ms: u64) -> Counts {
        let g = self.inner.read();
        let mut c = Counts {
            registered: g.ids.len(),
            ..Counts::default()
        };
        for h in g.hot.iter().flatten() {
            if let Some(st) = h.live.status() {
                if matching::is_fresh(&st, now, heartbeat_timeout_ms) {
                    c.online += 1;
                    if st.available {
                        c.available += 1;
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
            .filter_map(|(a, &id)| g.hot[id as usize].as_ref().map(|h| (*a, h.score)))
            .collect()
    }
}

/// Miner counts for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub registered: usize,
    pub online: usize,
    pub available: usize,
    pub cooled_down: usize,
}
