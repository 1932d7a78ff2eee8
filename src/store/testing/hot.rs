//! The [`HotStore`] contract as a suite: [`hot_suite`] runs every behaviour below against one
//! store. Each behaviour uses addresses and match ids of its own, so they do not interfere.
//!
//! Expiry is checked both ways: an entry is asserted present only when the test saw it
//! before its TTL could have passed (measured, never assumed), and absent once the TTL plus
//! the backend's slack has passed.

use super::fixtures::status;
use crate::domain::identity::Challenge;
use crate::domain::Address;
use crate::store::{ClaimError, HotStore, MatchId, MatchTicket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the suite must know about the store under test: how it was opened, and how
/// precisely it expires entries.
#[derive(Debug, Clone, Copy)]
pub struct HotCaps {
    /// The heartbeat timeout the store was opened with (the status TTL).
    pub status_ttl: Duration,
    /// The outcome window the store was opened with (the ledger TTL). Keep it short (a
    /// second or two): the suite waits it out.
    pub outcome_window: Duration,
    /// How long after its TTL an entry may still be visible (clock granularity, lazy
    /// expiry).
    pub ttl_slack: Duration,
    /// Concurrent callers in the concurrency checks.
    pub concurrency: usize,
}

impl Default for HotCaps {
    fn default() -> Self {
        Self {
            status_ttl: Duration::from_millis(600),
            outcome_window: Duration::from_millis(1500),
            ttl_slack: Duration::from_millis(300),
            concurrency: 16,
        }
    }
}

/// Runs every hot-store behaviour against `store`, opened as `caps` describes.
pub async fn hot_suite(store: Arc<dyn HotStore>, caps: HotCaps) {
    let h = store.as_ref();
    status_round_trips(h).await;
    status_expires_after_its_ttl(h, caps).await;
    statuses_read_in_bulk(h).await;
    claims_are_once_per_offered_miner(h).await;
    claims_belong_to_the_client_that_matched(h).await;
    concurrent_claims_give_exactly_one_ok(store.clone(), caps).await;
    a_claim_right_after_a_match_succeeds(store.clone(), caps).await;
    ledger_expires_after_the_outcome_window(h, caps).await;
    slots_are_capped(h).await;
    concurrent_reservations_never_exceed_the_slots(store.clone(), caps).await;
    released_and_expired_slots_are_free_again(h, caps).await;
    a_challenge_is_taken_once(h).await;
    concurrent_takes_give_the_challenge_once(store.clone(), caps).await;
    a_newer_challenge_replaces_an_older_one(h).await;
    a_challenge_expires_after_its_ttl(h, caps).await;
    assert!(store.health().await.is_ok());
}

/// `0xcc…` addresses, `tag` naming the behaviour and `i` the miner within it.
pub fn address(tag: u8, i: u8) -> Address {
    let mut b = [0u8; 20];
    b[0] = 0xcc;
    b[18] = tag;
    b[19] = i;
    Address::from_bytes(b)
}

/// A match id unique to the run, so a shared store's leftovers never collide.
fn fresh_id() -> MatchId {
    MatchId(rand::random())
}

fn ticket(id: MatchId, offered: Vec<Address>) -> MatchTicket {
    MatchTicket {
        id,
        offered,
        created_at: 1,
        client: None,
    }
}

pub async fn status_round_trips(h: &dyn HotStore) {
    let a = address(1, 1);
    assert_eq!(h.get_status(&a).await.unwrap(), None);
    h.put_status(&a, &status(2)).await.unwrap();
    assert_eq!(h.get_status(&a).await.unwrap(), Some(status(2)));
    h.put_status(&a, &status(3)).await.unwrap();
    assert_eq!(h.get_status(&a).await.unwrap(), Some(status(3)));
    h.remove_status(&a).await.unwrap();
    assert_eq!(h.get_status(&a).await.unwrap(), None);
}

pub async fn status_expires_after_its_ttl(h: &dyn HotStore, caps: HotCaps) {
    let a = address(2, 1);
    let put = Instant::now();
    h.put_status(&a, &status(1)).await.unwrap();
    let seen = h.get_status(&a).await.unwrap();
    if put.elapsed() < caps.status_ttl {
        assert_eq!(seen, Some(status(1)), "a status lives for its TTL");
    }
    tokio::time::sleep(caps.status_ttl + caps.ttl_slack).await;
    assert_eq!(
        h.get_status(&a).await.unwrap(),
        None,
        "a status expires after the heartbeat timeout"
    );
}

pub async fn statuses_read_in_bulk(h: &dyn HotStore) {
    let (a, b) = (address(3, 1), address(3, 2));
    h.put_status(&a, &status(7)).await.unwrap();
    let got = h.get_statuses(&[a, b]).await.unwrap();
    assert_eq!(got, vec![Some(status(7)), None]);
}

/// A match recorded for a client is claimed by that client only: another key, or none, gets
/// `NotYourMatch` (even for a miner it did not offer, so a stranger learns nothing) and
/// claims nothing, so the owner's report still counts. Ids beyond `i64::MAX` too.
pub async fn claims_belong_to_the_client_that_matched(h: &dyn HotStore) {
    let (a, b) = (address(12, 1), address(12, 2));
    let owner = u64::MAX - 3;
    let id = fresh_id();
    h.record_match(MatchTicket {
        client: Some(owner),
        ..ticket(id, vec![a])
    })
    .await
    .unwrap();
    for other in [Some(7), None] {
        assert_eq!(
            h.claim_outcome_by(id, &a, other).await,
            Err(ClaimError::NotYourMatch),
            "{other:?}"
        );
        assert_eq!(
            h.claim_outcome_by(id, &b, other).await,
            Err(ClaimError::NotYourMatch)
        );
    }
    assert_eq!(
        h.claim_outcome_by(id, &b, Some(owner)).await,
        Err(ClaimError::NotOffered)
    );
    h.claim_outcome_by(id, &a, Some(owner)).await.unwrap();
    assert_eq!(
        h.claim_outcome_by(id, &a, Some(owner)).await,
        Err(ClaimError::AlreadyReported)
    );
    // A match made without a key (open mode) takes anyone's report, keyed or not.
    let open = fresh_id();
    h.record_match(ticket(open, vec![a, b])).await.unwrap();
    h.claim_outcome_by(open, &a, Some(7)).await.unwrap();
    h.claim_outcome_by(open, &b, None).await.unwrap();
}

pub async fn claims_are_once_per_offered_miner(h: &dyn HotStore) {
    let (a, b, c) = (address(4, 1), address(4, 2), address(4, 3));
    let id = fresh_id();
    h.record_match(ticket(id, vec![a, b])).await.unwrap();
    assert_eq!(
        h.claim_outcome(fresh_id(), &a).await,
        Err(ClaimError::UnknownMatch)
    );
    assert_eq!(h.claim_outcome(id, &c).await, Err(ClaimError::NotOffered));
    h.claim_outcome(id, &a).await.unwrap();
    assert_eq!(
        h.claim_outcome(id, &a).await,
        Err(ClaimError::AlreadyReported)
    );
    h.claim_outcome(id, &b).await.unwrap();
    h.unclaim_outcome(id, &b).await.unwrap();
    h.claim_outcome(id, &b).await.unwrap();
}

pub async fn concurrent_claims_give_exactly_one_ok(h: Arc<dyn HotStore>, caps: HotCaps) {
    let a = address(5, 1);
    for _round in 0..4 {
        let id = fresh_id();
        h.record_match(ticket(id, vec![a])).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(caps.concurrency));
        let tasks: Vec<_> = (0..caps.concurrency)
            .map(|_| {
                let (h, barrier) = (h.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    h.claim_outcome(id, &a).await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(ClaimError::AlreadyReported) => {}
                Err(e) => panic!("unexpected claim error: {e}"),
            }
        }
        assert_eq!(ok, 1, "{} concurrent claims of one pair", caps.concurrency);
    }
}

/// What a client does: match, then report at once. The claim must find the match even
/// while other tasks record matches on the same store.
pub async fn a_claim_right_after_a_match_succeeds(h: Arc<dyn HotStore>, caps: HotCaps) {
    const PER_TASK: usize = 200;
    let tasks: Vec<_> = (0..caps.concurrency)
        .map(|t| {
            let h = h.clone();
            tokio::spawn(async move {
                let a = address(6, t as u8);
                let mut refused = 0;
                for _ in 0..PER_TASK {
                    let id = fresh_id();
                    let recorded = Instant::now();
                    h.record_match(ticket(id, vec![a])).await.unwrap();
                    let r = h.claim_outcome(id, &a).await;
                    if r.is_err() && recorded.elapsed() < caps.outcome_window {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    assert_eq!(
        refused,
        0,
        "claims right after their match were refused ({} matches)",
        caps.concurrency * PER_TASK
    );
}

pub async fn ledger_expires_after_the_outcome_window(h: &dyn HotStore, caps: HotCaps) {
    let a = address(7, 1);
    let (early, late) = (fresh_id(), fresh_id());
    let recorded = Instant::now();
    h.record_match(ticket(early, vec![a])).await.unwrap();
    h.record_match(ticket(late, vec![a])).await.unwrap();
    let r = h.claim_outcome(early, &a).await;
    if recorded.elapsed() < caps.outcome_window {
        assert_eq!(r, Ok(()), "a match is remembered for the outcome window");
    }
    tokio::time::sleep(caps.outcome_window + caps.ttl_slack).await;
    assert_eq!(
        h.claim_outcome(late, &a).await,
        Err(ClaimError::UnknownMatch),
        "a match is forgotten after the outcome window"
    );
}

pub async fn slots_are_capped(h: &dyn HotStore) {
    let a = address(8, 1);
    let ttl = Duration::from_secs(60);
    let (m1, m2, m3) = (fresh_id(), fresh_id(), fresh_id());
    assert!(h.reserve_slot(&a, m1, 2, ttl).await.unwrap());
    assert!(h.reserve_slot(&a, m2, 2, ttl).await.unwrap());
    assert!(
        !h.reserve_slot(&a, m3, 2, ttl).await.unwrap(),
        "a third reservation on two slots"
    );
    assert!(
        h.reserve_slot(&a, m1, 2, ttl).await.unwrap(),
        "the holder renews its own slot"
    );
    assert!(
        !h.reserve_slot(&address(8, 2), m3, 0, ttl).await.unwrap(),
        "no slots, no reservation"
    );
    // The cap is the caller's: with more slots (the miner's load went down) it grants more.
    assert!(h.reserve_slot(&a, m3, 3, ttl).await.unwrap());
    // Another miner's slots are its own.
    assert!(h.reserve_slot(&address(8, 3), m3, 1, ttl).await.unwrap());
    for m in [m1, m2, m3] {
        h.release_slot(&a, m).await.unwrap();
    }
    h.release_slot(&address(8, 3), m3).await.unwrap();
}

pub async fn concurrent_reservations_never_exceed_the_slots(h: Arc<dyn HotStore>, caps: HotCaps) {
    const SLOTS: u32 = 4;
    for round in 0..4u8 {
        let a = address(9, round);
        let barrier = Arc::new(tokio::sync::Barrier::new(caps.concurrency));
        let tasks: Vec<_> = (0..caps.concurrency)
            .map(|_| {
                let (h, barrier) = (h.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    h.reserve_slot(&a, fresh_id(), SLOTS, Duration::from_secs(60))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut granted = 0;
        for t in tasks {
            if t.await.unwrap() {
                granted += 1;
            }
        }
        assert_eq!(
            granted,
            SLOTS.min(caps.concurrency as u32),
            "{} concurrent reservations on {SLOTS} slots",
            caps.concurrency
        );
    }
}

pub async fn released_and_expired_slots_are_free_again(h: &dyn HotStore, caps: HotCaps) {
    let a = address(10, 1);
    let long = Duration::from_secs(60);
    let (m1, m2, m3) = (fresh_id(), fresh_id(), fresh_id());
    assert!(h.reserve_slot(&a, m1, 1, long).await.unwrap());
    assert!(!h.reserve_slot(&a, m2, 1, long).await.unwrap());
    h.release_slot(&a, m1).await.unwrap();
    // Releasing what is not held changes nothing.
    h.release_slot(&a, m3).await.unwrap();
    assert!(
        h.reserve_slot(&a, m2, 1, long).await.unwrap(),
        "a released slot is free"
    );
    h.release_slot(&a, m2).await.unwrap();

    let short = Duration::from_millis(300);
    let b = address(10, 2);
    let reserved = Instant::now();
    assert!(h.reserve_slot(&b, m1, 1, short).await.unwrap());
    let refused = !h.reserve_slot(&b, m2, 1, short).await.unwrap();
    if reserved.elapsed() < short {
        assert!(refused, "a reservation holds its slot for its TTL");
    }
    tokio::time::sleep(short + caps.ttl_slack).await;
    assert!(
        h.reserve_slot(&b, m3, 1, long).await.unwrap(),
        "an expired reservation frees its slot"
    );
    h.release_slot(&b, m3).await.unwrap();
}

/// A challenge for `address` with its own nonce, as the hub would issue it.
fn challenge(address: Address, nonce: &str) -> Challenge {
    Challenge {
        domain: "hub.example".into(),
        address,
        statement: "Register this address with the pool hub.".into(),
        uri: "http://hub.example/api/v1/miners/register".into(),
        chain_id: 1,
        nonce: nonce.into(),
        issued_at: 1_000,
        expires_at: 301_000,
    }
}

const LONG: Duration = Duration::from_secs(60);

pub async fn a_challenge_is_taken_once(h: &dyn HotStore) {
    let (a, other) = (address(20, 1), address(20, 2));
    assert_eq!(h.take_challenge(&a).await.unwrap(), None);
    let c = challenge(a, "nonceAAAAAAAAAAAAAAA");
    h.put_challenge(&c, LONG).await.unwrap();
    assert_eq!(h.take_challenge(&other).await.unwrap(), None, "per address");
    assert_eq!(
        h.take_challenge(&a).await.unwrap(),
        Some(c),
        "read back whole"
    );
    assert_eq!(h.take_challenge(&a).await.unwrap(), None, "and only once");
}

pub async fn concurrent_takes_give_the_challenge_once(h: Arc<dyn HotStore>, caps: HotCaps) {
    let a = address(21, 1);
    h.put_challenge(&challenge(a, "nonceBBBBBBBBBBBBBBB"), LONG)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..caps.concurrency {
        let h = h.clone();
        tasks.push(tokio::spawn(async move { h.take_challenge(&a).await }));
    }
    let mut taken = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().is_some() {
            taken += 1;
        }
    }
    assert_eq!(taken, 1, "one of {} callers takes it", caps.concurrency);
}

pub async fn a_newer_challenge_replaces_an_older_one(h: &dyn HotStore) {
    let a = address(22, 1);
    let old = challenge(a, "nonceOldOldOldOldOld");
    let new = challenge(a, "nonceNewNewNewNewNew");
    h.put_challenge(&old, LONG).await.unwrap();
    h.put_challenge(&new, LONG).await.unwrap();
    assert_eq!(h.take_challenge(&a).await.unwrap(), Some(new));
    assert_eq!(
        h.take_challenge(&a).await.unwrap(),
        None,
        "the old one is gone"
    );
}

pub async fn a_challenge_expires_after_its_ttl(h: &dyn HotStore, caps: HotCaps) {
    let a = address(23, 1);
    h.put_challenge(&challenge(a, "nonceExpExpExpExpExp"), caps.status_ttl)
        .await
        .unwrap();
    tokio::time::sleep(caps.status_ttl + caps.ttl_slack).await;
    assert_eq!(
        h.take_challenge(&a).await.unwrap(),
        None,
        "a challenge is refused after its TTL"
    );
}
