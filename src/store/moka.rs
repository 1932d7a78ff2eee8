//! The embedded hot store: moka caches with time-to-live, in this process only.

use super::{ClaimError, HotStore, MatchId, MatchTicket, Result};
use crate::domain::identity::Challenge;
use crate::domain::{Address, MinerStatus};
use async_trait::async_trait;
use moka::ops::compute::Op;
use moka::sync::Cache;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Ledger {
    client: Option<u64>,
    offered: Vec<Address>,
    reported: Mutex<Vec<bool>>,
}

/// One miner's slot reservations: which match holds each, and until when.
type Slots = Arc<Vec<(MatchId, Instant)>>;

/// Keeps a miner's reservation entry exactly as long as its latest reservation, so the
/// cache forgets a miner once nothing is reserved on it (and never earlier).
struct UntilLastExpires;

fn until_last(v: &Slots, now: Instant) -> Option<Duration> {
    v.iter()
        .map(|(_, until)| until.saturating_duration_since(now))
        .max()
}

impl moka::Expiry<Address, Slots> for UntilLastExpires {
    fn expire_after_create(&self, _: &Address, v: &Slots, now: Instant) -> Option<Duration> {
        until_last(v, now)
    }

    fn expire_after_update(
        &self,
        _: &Address,
        v: &Slots,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        until_last(v, now)
    }
}

/// An open sign-in challenge and the instant it stops counting.
type Open = Arc<(Challenge, Instant)>;

/// Keeps a challenge exactly as long as its own TTL (each `put_challenge` names one).
struct UntilDeadline;

impl moka::Expiry<Address, Open> for UntilDeadline {
    fn expire_after_create(&self, _: &Address, v: &Open, now: Instant) -> Option<Duration> {
        Some(v.1.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &Address,
        v: &Open,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.1.saturating_duration_since(now))
    }
}

/// Live status, the match ledger, slot reservations and open challenges in moka caches.
pub struct MokaHotStore {
    status: Cache<Address, MinerStatus>,
    matches: Cache<MatchId, Arc<Ledger>>,
    slots: Cache<Address, Slots>,
    challenges: Cache<Address, Open>,
}

impl MokaHotStore {
    /// `heartbeat_timeout` is the status TTL; matches are remembered for `outcome_window`,
    /// at most `max_matches` of them (the oldest are forgotten first).
    pub fn new(heartbeat_timeout: Duration, outcome_window: Duration, max_matches: u64) -> Self {
        Self {
            status: Cache::builder().time_to_live(heartbeat_timeout).build(),
            // LRU, not moka's default TinyLFU: a full ledger must forget the oldest matches,
            // never refuse to remember a new one.
            matches: Cache::builder()
                .time_to_live(outcome_window)
                .max_capacity(max_matches)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
            // At most one entry per miner with a live reservation, and no more miners than
            // matches are remembered (each reservation belongs to a match).
            slots: Cache::builder()
                .max_capacity(max_matches)
                .expire_after(UntilLastExpires)
                .build(),
            // One per address at most; bounded like the ledger, so a flood of challenge
            // requests evicts open challenges (their miners ask again) instead of growing.
            challenges: Cache::builder()
                .max_capacity(max_matches)
                .expire_after(UntilDeadline)
                .build(),
        }
    }
}

#[async_trait]
impl HotStore for MokaHotStore {
    fn backend(&self) -> &'static str {
        "moka"
    }

    async fn put_status(&self, address: &Address, status: &MinerStatus) -> Result<()> {
        self.status.insert(*address, *status);
        Ok(())
    }

    async fn get_status(&self, address: &Address) -> Result<Option<MinerStatus>> {
        Ok(self.status.get(address))
    }

    async fn remove_status(&self, address: &Address) -> Result<()> {
        self.status.invalidate(address);
        Ok(())
    }

    async fn record_match(&self, ticket: MatchTicket) -> Result<()> {
        let n = ticket.offered.len();
        let ledger = Ledger {
            client: ticket.client,
            offered: ticket.offered,
            reported: Mutex::new(vec![false; n]),
        };
        self.matches.insert(ticket.id, Arc::new(ledger));
        Ok(())
    }

    async fn claim_outcome_by(
        &self,
        id: MatchId,
        address: &Address,
        client: Option<u64>,
    ) -> std::result::Result<(), ClaimError> {
        let ledger = self.matches.get(&id).ok_or(ClaimError::UnknownMatch)?;
        if ledger.client.is_some() && ledger.client != client {
            return Err(ClaimError::NotYourMatch);
        }
        let i = ledger
            .offered
            .iter()
            .position(|a| a == address)
            .ok_or(ClaimError::NotOffered)?;
        {
            let mut reported = ledger.reported.lock();
            if reported[i] {
                return Err(ClaimError::AlreadyReported);
            }
            reported[i] = true;
        }
        Ok(())
    }

    async fn unclaim_outcome(&self, id: MatchId, address: &Address) -> Result<()> {
        if let Some(ledger) = self.matches.get(&id) {
            if let Some(i) = ledger.offered.iter().position(|a| a == address) {
                ledger.reported.lock()[i] = false;
            }
        }
        Ok(())
    }

    async fn reserve_slot(
        &self,
        address: &Address,
        id: MatchId,
        slots: u32,
        ttl: Duration,
    ) -> Result<bool> {
        let now = Instant::now();
        let until = now + ttl;
        let mut granted = false;
        // `and_compute_with` runs one closure per key at a time: the check and the insert
        // are one step, as the Redis script makes them.
        self.slots.entry(*address).and_compute_with(|current| {
            let mut held: Vec<(MatchId, Instant)> = current
                .map(|e| {
                    e.into_value()
                        .iter()
                        .copied()
                        .filter(|(_, t)| *t > now)
                        .collect()
                })
                .unwrap_or_default();
            if let Some(r) = held.iter_mut().find(|(m, _)| *m == id) {
                r.1 = until;
                granted = true;
            } else if held.len() < slots as usize {
                held.push((id, until));
                granted = true;
            }
            if held.is_empty() {
                Op::Remove
            } else {
                Op::Put(Arc::new(held))
            }
        });
        Ok(granted)
    }

    async fn release_slot(&self, address: &Address, id: MatchId) -> Result<()> {
        let now = Instant::now();
        self.slots.entry(*address).and_compute_with(|current| {
            let Some(e) = current else { return Op::Nop };
            let held: Vec<(MatchId, Instant)> = e
                .into_value()
                .iter()
                .copied()
                .filter(|(m, t)| *m != id && *t > now)
                .collect();
            if held.is_empty() {
                Op::Remove
            } else {
                Op::Put(Arc::new(held))
            }
        });
        Ok(())
    }

    async fn put_challenge(&self, challenge: &Challenge, ttl: Duration) -> Result<()> {
        let until = Instant::now() + ttl;
        self.challenges
            .insert(challenge.address, Arc::new((challenge.clone(), until)));
        Ok(())
    }

    async fn take_challenge(&self, address: &Address) -> Result<Option<Challenge>> {
        // `remove` is one step per key: of two callers, one gets the challenge. Expiry is
        // checked here too, since moka may hand back an entry it has not evicted yet.
        let now = Instant::now();
        Ok(self
            .challenges
            .remove(address)
            .filter(|open| open.1 > now)
            .map(|open| open.0.clone()))
    }

    async fn health(&self) -> Result<()> {
        Ok(())
    }
}
