//! The embedded hot store, in this process only: live statuses and the match ledger in the
//! purpose-built tables of [`super::local`] (the two every status update and match touch),
//! slot reservations and sign-in challenges in moka caches with time-to-live.

use super::local::{MatchLedger, Refusal, StatusTable};
use super::{ClaimError, HotStore, MatchId, MatchTicket, Result};
use crate::domain::identity::Challenge;
use crate::domain::{Address, MinerStatus};
use async_trait::async_trait;
use moka::ops::compute::Op;
use moka::sync::Cache;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Live status, the match ledger, slot reservations and open challenges.
pub struct MokaHotStore {
    status: StatusTable,
    matches: MatchLedger,
    slots: Cache<Address, Slots>,
    challenges: Cache<Address, Open>,
}

impl MokaHotStore {
    /// `heartbeat_timeout` is the status TTL; matches are remembered for `outcome_window`,
    /// at most `max_matches` of them (the oldest are forgotten first).
    pub fn new(heartbeat_timeout: Duration, outcome_window: Duration, max_matches: u64) -> Self {
        Self {
            status: StatusTable::new(heartbeat_timeout),
            // A full ledger forgets the oldest matches, never refuses to remember a new one.
            matches: MatchLedger::new(max_matches, outcome_window),
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
        self.status.put(address, *status);
        Ok(())
    }

    async fn get_status(&self, address: &Address) -> Result<Option<MinerStatus>> {
        Ok(self.status.get(address))
    }

    async fn remove_status(&self, address: &Address) -> Result<()> {
        self.status.remove(address);
        Ok(())
    }

    async fn record_match(&self, ticket: MatchTicket) -> Result<()> {
        self.matches
            .record(ticket.id, ticket.client, &ticket.offered);
        Ok(())
    }

    async fn claim_outcome_by(
        &self,
        id: MatchId,
        address: &Address,
        client: Option<u64>,
    ) -> std::result::Result<(), ClaimError> {
        self.matches
            .claim(id, address, client)
            .map_err(|r| match r {
                Refusal::Unknown => ClaimError::UnknownMatch,
                Refusal::NotYours => ClaimError::NotYourMatch,
                Refusal::NotOffered => ClaimError::NotOffered,
                Refusal::AlreadyReported => ClaimError::AlreadyReported,
            })
    }

    async fn unclaim_outcome(&self, id: MatchId, address: &Address) -> Result<()> {
        self.matches.unclaim(id, address);
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
