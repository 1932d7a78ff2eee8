//! Slots held by matches until their outcome arrives or their TTL passes (see
//! [`Reservations`]).

use crate::domain::{Address, MatchId};
use crate::registry::Live;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Slots held by matches until their outcome arrives or their TTL passes.
///
/// Kept by the hub, not the hot store: releasing must happen exactly once, and the map
/// removal is the single place where that is decided.
///
/// The reservations are spread over [`RES_SHARDS`] maps by match id. In one map, the steady
/// turnover (a removal for every insert) filled it with tombstones, and every so often the map
/// rehashed in place, for milliseconds, under the one lock every match takes.
pub(crate) struct Reservations {
    held: Box<[Mutex<HashMap<MatchId, Held>>]>,
    /// Every reservation, by when it expires (oldest first; the TTL is the same for all).
    queue: Mutex<VecDeque<(u64, MatchId)>>,
    /// Reservations each client key holds on this hub (`auth.max_reservations_per_client`).
    per_client: Mutex<HashMap<u64, u32>>,
}

/// The reserved miner, and the client key whose quota the reservation counts against.
struct Held {
    address: Address,
    live: Arc<Live>,
    client: Option<u64>,
}

const RES_SHARDS: usize = 64;

impl Default for Reservations {
    fn default() -> Self {
        Self {
            held: (0..RES_SHARDS).map(|_| Mutex::default()).collect(),
            queue: Mutex::default(),
            per_client: Mutex::default(),
        }
    }
}

/// One reservation of a client's quota, taken but not yet held by a reservation.
pub(crate) struct Quota<'a> {
    reservations: &'a Reservations,
    client: Option<u64>,
}

impl Quota<'_> {
    /// The client whose quota the reservation being added now holds.
    pub(crate) fn keep(mut self) -> Option<u64> {
        self.client.take()
    }
}

impl Drop for Quota<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            self.reservations.give_back(c);
        }
    }
}

impl Reservations {
    fn shard(&self, id: MatchId) -> &Mutex<HashMap<MatchId, Held>> {
        &self.held[(id.0 >> 120) as usize % RES_SHARDS]
    }

    fn give_back(&self, client: u64) {
        let mut g = self.per_client.lock();
        if let Some(n) = g.get_mut(&client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.remove(&client);
            }
        }
    }

    /// Ends a reservation that was taken out of its map: the quota and the slot go back.
    fn end(&self, held: Held) -> Arc<Live> {
        if let Some(c) = held.client {
            self.give_back(c);
        }
        held.live.release();
        held.live
    }

    /// Adds a reservation if the miner still has a free slot (another match may have taken
    /// the last one since this one selected it); returns whether it did. A `client` must have
    /// taken its quota with [`Reservations::take_quota`] first; the quota is given back when
    /// the reservation ends, or at once when none is added.
    pub(crate) fn add(
        &self,
        id: MatchId,
        address: Address,
        live: Arc<Live>,
        expires: u64,
        client: Option<u64>,
    ) -> bool {
        if !live.try_reserve() {
            if let Some(c) = client {
                self.give_back(c);
            }
            return false;
        }
        self.shard(id).lock().insert(
            id,
            Held {
                address,
                live,
                client,
            },
        );
        self.queue.lock().push_back((expires, id));
        true
    }

    /// Takes one of `client`'s `cap` reservations, if it has one left: checked and counted
    /// in one step, so concurrent matches by one key cannot overshoot the cap. The quota
    /// goes back when the guard is dropped unless [`Quota::keep`] hands it to a reservation,
    /// so a match abandoned half-way (the client hung up during a Redis call) cannot leak it.
    pub(crate) fn take_quota(&self, client: u64, cap: u32) -> Option<Quota<'_>> {
        let mut g = self.per_client.lock();
        let n = g.entry(client).or_insert(0);
        if *n >= cap {
            if *n == 0 {
                g.remove(&client);
            }
            return None;
        }
        *n += 1;
        Some(Quota {
            reservations: self,
            client: Some(client),
        })
    }

    /// Reservations `client` holds on this hub.
    pub(crate) fn held_by(&self, client: u64) -> u32 {
        self.per_client.lock().get(&client).copied().unwrap_or(0)
    }

    /// Releases the match's reservation if it is on `address`; returns the miner it freed.
    pub(crate) fn release(&self, id: MatchId, address: &Address) -> Option<Arc<Live>> {
        let held = {
            let mut g = self.shard(id).lock();
            if g.get(&id).is_none_or(|h| h.address != *address) {
                return None;
            }
            g.remove(&id)?
        };
        Some(self.end(held))
    }

    /// Releases up to `max` of the reservations whose TTL has passed, oldest first;
    /// returns the miners it freed, and whether expired ones may be left.
    pub(crate) fn expire(&self, now: u64, max: usize) -> (Vec<Arc<Live>>, bool) {
        let mut due = Vec::new();
        let more = {
            let mut q = self.queue.lock();
            while due.len() < max && q.front().is_some_and(|(t, _)| *t <= now) {
                if let Some((_, id)) = q.pop_front() {
                    due.push(id);
                }
            }
            due.len() == max
        };
        let freed = due
            .into_iter()
            .filter_map(|id| self.shard(id).lock().remove(&id))
            .map(|held| self.end(held))
            .collect();
        (freed, more)
    }

    pub(crate) fn len(&self) -> usize {
        self.held.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key's quota is counted at once, capped, and given back when the match that took
    /// it ends without a reservation, however it ends (here: abandoned, the guard dropped).
    #[test]
    fn a_quota_not_kept_by_a_reservation_goes_back() {
        let r = Reservations::default();
        let first = r.take_quota(7, 2).expect("first");
        let second = r.take_quota(7, 2).expect("second");
        assert!(r.take_quota(7, 2).is_none(), "capped at 2");
        assert!(r.take_quota(8, 2).is_some(), "per key");
        assert_eq!(r.held_by(7), 2);
        drop(first);
        assert_eq!(r.held_by(7), 1, "an abandoned match gives its quota back");
        assert_eq!(
            second.keep(),
            Some(7),
            "kept: now the reservation's to give back"
        );
        assert_eq!(r.held_by(7), 1);
        assert!(r.take_quota(9, 0).is_none(), "a cap of 0 reserves nothing");
        assert_eq!(r.held_by(9), 0);
    }
}
