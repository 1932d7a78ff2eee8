//! The two tables of the embedded hot store that every status update and every match
//! touches: live statuses and the match ledger.
//!
//! They were moka caches. moka is a general cache (a frequency sketch, an epoch-based
//! concurrent map, a write log drained by maintenance, timer wheels), and on the hot path
//! that machinery cost more than the hub's own work: a status update spent about as long in
//! `Cache::insert` as in everything else the hub does for it. Neither table needs it:
//!
//! * a status is replaced in place by the miner's next heartbeat and removed when the miner
//!   is deleted, so the table never holds more than one entry per registered miner; expiry
//!   is a comparison at read time;
//! * the ledger forgets matches in the order they were made (the oldest first, when it is
//!   full or when their outcome window has passed), which is a queue beside a map.
//!
//! Both are split into shards behind short `parking_lot` mutexes, so concurrent requests
//! rarely wait for one another. No lock is held across an `.await`.

use crate::domain::{Address, MatchId, MinerStatus};
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// Shards per table: a few times the cores a pool hub runs on.
const SHARDS: usize = 16;

/// Shards of the match ledger. More than the status table's: a full ledger forgets a match
/// for every one it records, and the tombstones removals leave make a shard's map rehash in
/// place now and then, under its lock. At 16 shards of a 500,000-match ledger that was a stall
/// of milliseconds (the match p99); at 128 each shard is an eighth of that.
const LEDGER_SHARDS: usize = 128;

/// One shard of the status table: each status with the instant it stops counting.
type StatusShard = Mutex<HashMap<Address, (MinerStatus, Instant)>>;

/// Live statuses, each valid for `ttl` after it was stored.
pub struct StatusTable {
    shards: Box<[StatusShard]>,
    pick: RandomState,
    ttl: Duration,
}

impl StatusTable {
    pub fn new(ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            pick: RandomState::new(),
            ttl,
        }
    }

    /// The shard of an address. Addresses are chosen by miners: the shard is picked with a
    /// keyed hash, so nobody can crowd one shard on purpose.
    fn shard(&self, a: &Address) -> &StatusShard {
        let i = self.pick.hash_one(a) as usize % SHARDS;
        &self.shards[i]
    }

    pub fn put(&self, a: &Address, status: MinerStatus) {
        let until = Instant::now() + self.ttl;
        self.shard(a).lock().insert(*a, (status, until));
    }

    /// The status, or `None` when none was stored within the TTL.
    pub fn get(&self, a: &Address) -> Option<MinerStatus> {
        let now = Instant::now();
        let g = self.shard(a).lock();
        g.get(a).filter(|(_, until)| *until > now).map(|(s, _)| *s)
    }

    pub fn remove(&self, a: &Address) {
        self.shard(a).lock().remove(a);
    }
}

/// Hashes a [`MatchId`] by its own bits: the hub draws every id it records from a CSPRNG,
/// so they are already uniform (a client can only look ids up, never choose one stored).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One remembered match: who made it, and each offered miner with whether its outcome was
/// reported (one allocation per match).
struct Entry {
    client: Option<u64>,
    until: Instant,
    offered: Vec<(Address, bool)>,
}

#[derive(Default)]
struct LedgerShard {
    map: HashMap<MatchId, Entry, BuildHasherDefault<IdHasher>>,
    /// Every id in `map`, oldest first, with the instant it stops counting.
    order: VecDeque<(MatchId, Instant)>,
}

/// Why a claim on the ledger was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    NotYours,
    NotOffered,
    AlreadyReported,
}

/// Matches remembered for their outcome: at most `capacity` (the oldest are forgotten
/// first) and none longer than `window`.
pub struct MatchLedger {
    shards: Box<[Mutex<LedgerShard>]>,
    per_shard: usize,
    window: Duration,
}

impl MatchLedger {
    pub fn new(capacity: u64, window: Duration) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        Self {
            shards: (0..LEDGER_SHARDS)
                .map(|_| Mutex::new(LedgerShard::default()))
                .collect(),
            per_shard: capacity.div_ceil(LEDGER_SHARDS),
            window,
        }
    }

    fn shard(&self, id: MatchId) -> &Mutex<LedgerShard> {
        // The top bits: the map inside the shard uses the low ones.
        &self.shards[(id.0 >> 120) as usize % LEDGER_SHARDS]
    }

    pub fn record(&self, id: MatchId, client: Option<u64>, offered: &[Address]) {
        let now = Instant::now();
        let until = now + self.window;
        let entry = Entry {
            client,
            until,
            offered: offered.iter().map(|a| (*a, false)).collect(),
        };
        let mut g = self.shard(id).lock();
        while let Some(&(old, until)) = g.order.front() {
            if g.order.len() < self.per_shard && until > now {
                break;
            }
            g.order.pop_front();
            g.map.remove(&old);
        }
        if g.map.insert(id, entry).is_none() {
            g.order.push_back((id, until));
        }
    }

    /// Marks `(id, address)` reported, once, for `client` (see `HotStore::claim_outcome_by`).
    pub fn claim(&self, id: MatchId, a: &Address, client: Option<u64>) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut g = self.shard(id).lock();
        // Past its window but not yet pushed out by a newer match: as good as forgotten.
        let e = g
            .map
            .get_mut(&id)
            .filter(|e| e.until > now)
            .ok_or(Refusal::Unknown)?;
        if e.client.is_some() && e.client != client {
            return Err(Refusal::NotYours);
        }
        let slot = e
            .offered
            .iter_mut()
            .find(|(m, _)| m == a)
            .ok_or(Refusal::NotOffered)?;
        if slot.1 {
            return Err(Refusal::AlreadyReported);
        }
        slot.1 = true;
        Ok(())
    }

    /// Gives a claim back (its outcome could not be stored).
    pub fn unclaim(&self, id: MatchId, a: &Address) {
        let mut g = self.shard(id).lock();
        if let Some(slot) = g
            .map
            .get_mut(&id)
            .and_then(|e| e.offered.iter_mut().find(|(m, _)| m == a))
        {
            slot.1 = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> Address {
        Address::from_bytes([i; 20])
    }

    #[test]
    fn a_full_ledger_forgets_the_oldest_matches_first() {
        // One match per shard; ids go to the shards by their top byte.
        let ledger = MatchLedger::new(LEDGER_SHARDS as u64, Duration::from_secs(3600));
        let id = |shard: u128, n: u128| MatchId((shard << 120) | n);
        ledger.record(id(3, 1), None, &[addr(1)]);
        ledger.record(id(3, 2), None, &[addr(1)]);
        // Shard 3 holds one match: the first is gone, the second is claimable.
        assert_eq!(
            ledger.claim(id(3, 1), &addr(1), None),
            Err(Refusal::Unknown)
        );
        assert_eq!(ledger.claim(id(3, 2), &addr(1), None), Ok(()));
        // Other shards are untouched by shard 3's turnover.
        ledger.record(id(4, 1), None, &[addr(1)]);
        assert_eq!(ledger.claim(id(4, 1), &addr(1), None), Ok(()));
    }

    #[test]
    fn a_match_past_its_window_is_unknown() {
        let ledger = MatchLedger::new(100, Duration::from_millis(30));
        ledger.record(MatchId(7), None, &[addr(1)]);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            ledger.claim(MatchId(7), &addr(1), None),
            Err(Refusal::Unknown)
        );
    }

    #[test]
    fn each_offered_miner_is_claimed_once_by_the_matching_client() {
        let ledger = MatchLedger::new(100, Duration::from_secs(60));
        ledger.record(MatchId(9), Some(5), &[addr(1), addr(2)]);
        let m = MatchId(9);
        assert_eq!(ledger.claim(m, &addr(1), Some(6)), Err(Refusal::NotYours));
        assert_eq!(ledger.claim(m, &addr(1), None), Err(Refusal::NotYours));
        assert_eq!(ledger.claim(m, &addr(3), Some(5)), Err(Refusal::NotOffered));
        assert_eq!(ledger.claim(m, &addr(1), Some(5)), Ok(()));
        assert_eq!(
            ledger.claim(m, &addr(1), Some(5)),
            Err(Refusal::AlreadyReported)
        );
        ledger.unclaim(m, &addr(1));
        assert_eq!(ledger.claim(m, &addr(1), Some(5)), Ok(()));
        assert_eq!(ledger.claim(m, &addr(2), Some(5)), Ok(()));
    }

    #[test]
    fn the_ledger_never_holds_more_than_its_capacity() {
        let ledger = MatchLedger::new(1000, Duration::from_secs(60));
        for i in 0..20_000u128 {
            ledger.record(
                MatchId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
                None,
                &[],
            );
        }
        let held: usize = ledger.shards.iter().map(|s| s.lock().map.len()).sum();
        assert!(held <= 1000 + LEDGER_SHARDS, "{held}");
        assert!(held >= 900, "{held}");
    }

    #[test]
    fn a_status_lasts_its_ttl_and_is_replaced_in_place() {
        let table = StatusTable::new(Duration::from_millis(40));
        let mut s = MinerStatus {
            available: true,
            current_load: 1,
            gpu_utilization: 0.5,
            temperature: None,
            reported_at: 1,
            resources: Default::default(),
        };
        table.put(&addr(1), s);
        assert_eq!(table.get(&addr(1)).map(|s| s.current_load), Some(1));
        s.current_load = 2;
        table.put(&addr(1), s);
        assert_eq!(table.get(&addr(1)).map(|s| s.current_load), Some(2));
        std::thread::sleep(Duration::from_millis(80));
        assert!(table.get(&addr(1)).is_none());
        table.put(&addr(2), s);
        table.remove(&addr(2));
        assert!(table.get(&addr(2)).is_none());
    }
}
