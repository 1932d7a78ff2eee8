//! The `DurableStore` contract, one function per behaviour.
//!
//! Each function takes a fresh, empty store and panics (with the behaviour in the message)
//! when the store breaks the contract. [`durable_suite`] runs them all with a new store for
//! each; what differs between backends is passed in [`DurableCaps`].

use super::fixtures::{address, availability, miner, named_miner, outcome};
use crate::auth::{ApiKey, Role};
use crate::domain::scoring::MinerStats;
use crate::store::{DurableStore, StoreError, StoredMiner};
use std::future::Future;
use std::sync::Arc;

/// What a backend's suite run needs to know about it.
#[derive(Debug, Clone, Copy)]
pub struct DurableCaps {
    /// The name the store reports from `backend()` and puts in its errors.
    pub backend: &'static str,
    /// How many outcomes for one miner to record at once in the concurrency check (enough
    /// to share commits, few enough for the backend's connection pool).
    pub concurrent_writes: u64,
}

impl DurableCaps {
    /// The defaults for a backend named `backend`.
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            concurrent_writes: 64,
        }
    }
}

/// Runs every behaviour, each on a store of its own from `make`.
pub async fn durable_suite<F, Fut>(make: F, caps: DurableCaps)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn DurableStore>>,
{
    names_its_backend(make().await.as_ref(), caps).await;
    insert_then_load(make().await.as_ref()).await;
    a_named_miner_round_trips(make().await.as_ref()).await;
    insert_twice_is_refused(make().await.as_ref()).await;
    update_checks_the_token(make().await.as_ref()).await;
    delete_checks_the_token_and_removes_everything(make().await.as_ref()).await;
    replace_checks_the_previous_token_and_may_start_fresh(make().await.as_ref()).await;
    bans_remove_the_miner_and_refuse_its_registration(make().await.as_ref()).await;
    a_ban_racing_a_registration_always_wins(make().await).await;
    outcomes_accumulate_into_stats(make().await.as_ref()).await;
    concurrent_outcomes_are_never_lost(make().await, caps).await;
    availability_checkpoint_round_trips(make().await.as_ref()).await;
    prune_drops_old_history_only(make().await.as_ref()).await;
    prune_keeps_exactly_the_newest(make().await.as_ref()).await;
    load_miner_reads_one(make().await.as_ref()).await;
    export_import_round_trips(make().await.as_ref(), make().await.as_ref()).await;
    keys_insert_load_and_revoke(make().await.as_ref()).await;
    a_taken_key_id_or_digest_is_refused(make().await.as_ref()).await;
    closed_store_refuses_writes(make().await.as_ref(), caps).await;
}

fn key(id: u64, secret: &str, role: Role, created_at: u64) -> ApiKey {
    ApiKey {
        id,
        name: format!("client-{id}"),
        role,
        created_at,
        digest: crate::auth::digest(secret),
    }
}

/// Keys load back as inserted (oldest first, every field, ids beyond `i64::MAX` too), and
/// a revoked key is gone from the load; revoking it again, or an unknown id, is `NotFound`.
pub async fn keys_insert_load_and_revoke(s: &dyn DurableStore) {
    assert_eq!(s.load_keys().await.expect("load"), vec![]);
    let a = key(u64::MAX - 1, "secret-a", Role::Client, 20);
    let b = key(2, "secret-b", Role::Admin, 10);
    let c = key(3, "secret-c", Role::Client, 30);
    for k in [&a, &b, &c] {
        s.insert_key(k).await.expect("insert key");
    }
    assert_eq!(
        s.load_keys().await.expect("load"),
        vec![b.clone(), a.clone(), c.clone()]
    );
    s.revoke_key(a.id).await.expect("revoke");
    assert_eq!(s.load_keys().await.expect("load"), vec![b, c]);
    assert_eq!(s.revoke_key(a.id).await, Err(StoreError::NotFound));
    assert_eq!(s.revoke_key(99).await, Err(StoreError::NotFound));
}

/// A key whose id or digest is already stored is `AlreadyExists`, and the first stays.
pub async fn a_taken_key_id_or_digest_is_refused(s: &dyn DurableStore) {
    let first = key(5, "secret-5", Role::Client, 1);
    s.insert_key(&first).await.expect("insert");
    assert_eq!(
        s.insert_key(&key(5, "other-secret", Role::Admin, 2)).await,
        Err(StoreError::AlreadyExists),
        "same id"
    );
    assert_eq!(
        s.insert_key(&key(6, "secret-5", Role::Admin, 2)).await,
        Err(StoreError::AlreadyExists),
        "same digest: one secret must name one key"
    );
    assert_eq!(s.load_keys().await.expect("load"), vec![first]);
}

fn find(all: &[StoredMiner], i: u8) -> &StoredMiner {
    all.iter()
        .find(|m| m.miner.address == address(i))
        .unwrap_or_else(|| panic!("miner {i} is not loaded"))
}

/// `backend()` is the name the caller expects, and a fresh store is healthy.
pub async fn names_its_backend(s: &dyn DurableStore, caps: DurableCaps) {
    assert_eq!(s.backend(), caps.backend);
    s.health().await.expect("a fresh store is healthy");
}

/// A new miner loads back as stored, with empty statistics.
pub async fn insert_then_load(s: &dyn DurableStore) {
    s.insert_miner(&miner(1, "h1")).await.expect("insert 1");
    s.insert_miner(&miner(2, "h2")).await.expect("insert 2");
    let all = s.load_all().await.expect("load_all");
    assert_eq!(all.len(), 2);
    let one = find(&all, 1);
    assert_eq!(one.miner, miner(1, "h1"));
    assert_eq!(one.stats, MinerStats::default());
}

/// A bound by count keeps exactly the newest `keep` records, by time and then arrival, over
/// several batches; combined with an age bound, whichever removes more wins; statistics are
/// untouched.
pub async fn prune_keeps_exactly_the_newest(s: &dyn DurableStore) {
    s.insert_miner(&miner(10, "h")).await.expect("insert");
    // 1,500 records (three prune batches' worth), arriving out of time order in places: two
    // share each timestamp, and every tenth arrives with an older time than the one before.
    let mut expected: Vec<(u64, String)> = Vec::new();
    for i in 0..1_500u64 {
        let at = 10_000 + (i / 2) * 10 - if i % 10 == 9 { 5 } else { 0 };
        let mut o = outcome(10, i % 3 != 0, at);
        o.match_id = format!("{i:032x}");
        s.record_outcome(&o, 0.95).await.expect("outcome");
        expected.push((at, o.match_id));
    }
    // Newest by time, then by arrival (the stable sort keeps arrival order for equal times).
    expected.sort_by_key(|(at, _)| *at);
    let keep = 1_100u64;
    let pruned = s.prune_outcomes(0, Some(keep)).await.expect("prune");
    assert_eq!(pruned, 400);
    assert_eq!(s.outcome_count().await.expect("count"), keep);
    let mut left = Vec::new();
    let mut after = None;
    loop {
        let (page, cursor) = s.export_outcomes(after, 500).await.expect("export");
        if page.is_empty() {
            break;
        }
        left.extend(page.into_iter().map(|o| (o.at, o.match_id)));
        after = cursor;
    }
    left.sort();
    let mut newest: Vec<(u64, String)> = expected[expected.len() - keep as usize..].to_vec();
    newest.sort();
    assert_eq!(left, newest, "exactly the newest {keep}");
    // Nothing more to do at the bound; a tighter age bound then removes more.
    assert_eq!(s.prune_outcomes(0, Some(keep)).await.expect("again"), 0);
    let cut = newest[100].0;
    let older = newest.iter().filter(|(at, _)| *at < cut).count() as u64;
    assert_eq!(
        s.prune_outcomes(cut, Some(keep)).await.expect("by age"),
        older
    );
    let all = s.load_all().await.expect("load_all");
    assert_eq!(
        find(&all, 10).stats.jobs_total,
        1_500,
        "statistics unaffected"
    );
}

/// A miner registered by name keeps its profile through insert, update and both loads.
pub async fn a_named_miner_round_trips(s: &dyn DurableStore) {
    let m = named_miner("aitbc-miner-1", "hn");
    s.insert_miner(&m).await.expect("insert");
    let loaded = s
        .load_miner(&m.address)
        .await
        .expect("load")
        .expect("there");
    assert_eq!(loaded.miner, m);
    let mut changed = m.clone();
    if let Some(p) = changed.profile.as_mut() {
        p.region = None;
        p.tags.insert("cuda".into(), "12.4".into());
    }
    changed.updated_at = 2_000;
    s.update_miner(&changed).await.expect("update");
    let all = s.load_all().await.expect("load_all");
    let found = all
        .iter()
        .find(|x| x.miner.address == m.address)
        .expect("loaded");
    assert_eq!(found.miner, changed);
}

/// Inserting a taken address is `AlreadyExists` and leaves the first registration.
pub async fn insert_twice_is_refused(s: &dyn DurableStore) {
    s.insert_miner(&miner(3, "first")).await.expect("insert");
    assert_eq!(
        s.insert_miner(&miner(3, "second")).await,
        Err(StoreError::AlreadyExists)
    );
    let all = s.load_all().await.expect("load_all");
    assert_eq!(
        find(&all, 3).miner.token_hash,
        "first",
        "the first one stays"
    );
}

/// An update needs the miner to exist (`NotFound`) and its token hash (`TokenMismatch`).
pub async fn update_checks_the_token(s: &dyn DurableStore) {
    assert_eq!(
        s.update_miner(&miner(4, "h")).await,
        Err(StoreError::NotFound)
    );
    s.insert_miner(&miner(4, "h")).await.expect("insert");
    let mut changed = miner(4, "other");
    changed.stake = 999;
    assert_eq!(
        s.update_miner(&changed).await,
        Err(StoreError::TokenMismatch)
    );
    changed.token_hash = "h".into();
    s.update_miner(&changed).await.expect("update");
    let all = s.load_all().await.expect("load_all");
    assert_eq!(find(&all, 4).miner.stake, 999);
}

/// A delete checks the token, removes statistics and availability with the miner, and a
/// later registration starts clean.
pub async fn delete_checks_the_token_and_removes_everything(s: &dyn DurableStore) {
    s.insert_miner(&miner(5, "h")).await.expect("insert");
    s.record_outcome(&outcome(5, true, 10), 0.95)
        .await
        .expect("outcome");
    assert_eq!(
        s.delete_miner(&address(5), "x").await,
        Err(StoreError::TokenMismatch)
    );
    s.delete_miner(&address(5), "h").await.expect("delete");
    assert_eq!(
        s.delete_miner(&address(5), "h").await,
        Err(StoreError::NotFound)
    );
    let all = s.load_all().await.expect("load_all");
    assert!(all.iter().all(|m| m.miner.address != address(5)));
    // Re-registering starts from a clean record.
    s.insert_miner(&miner(5, "h2")).await.expect("insert again");
    let all = s.load_all().await.expect("load_all");
    assert_eq!(find(&all, 5).stats.jobs_total, 0);
}

/// `replace_miner` checks the previous token hash, stores the new one (with `proven`), and
/// drops statistics and availability only when asked for a fresh record.
pub async fn replace_checks_the_previous_token_and_may_start_fresh(s: &dyn DurableStore) {
    let mut next = miner(13, "new");
    next.proven = true;
    assert_eq!(
        s.replace_miner(&next, "old", false).await,
        Err(StoreError::NotFound)
    );
    s.insert_miner(&miner(13, "old")).await.expect("insert");
    s.record_outcome(&outcome(13, true, 10), 0.95)
        .await
        .expect("outcome");
    s.save_availability(vec![(address(13), availability(1.0, 1.0, 5))])
        .await
        .expect("availability");
    assert_eq!(
        s.replace_miner(&next, "wrong", false).await,
        Err(StoreError::TokenMismatch),
        "the previous token hash is checked"
    );
    // A reissued token keeps the history.
    s.replace_miner(&next, "old", false).await.expect("reissue");
    let kept = s
        .load_miner(&address(13))
        .await
        .expect("load")
        .expect("there");
    assert_eq!(kept.miner, next, "new token hash and proven flag stored");
    assert_eq!(kept.stats.jobs_total, 1, "history kept");
    assert_eq!(
        s.update_miner(&miner(13, "old")).await,
        Err(StoreError::TokenMismatch),
        "the old token hash no longer matches"
    );
    // A takeover starts fresh.
    let mut owner = miner(13, "owner");
    owner.proven = true;
    owner.registered_at = 9_000;
    s.replace_miner(&owner, "new", true)
        .await
        .expect("takeover");
    let fresh = s
        .load_miner(&address(13))
        .await
        .expect("load")
        .expect("there");
    assert_eq!(fresh.miner, owner);
    assert_eq!(fresh.stats, MinerStats::default(), "statistics dropped");
    assert_eq!(
        fresh.availability,
        Default::default(),
        "availability dropped"
    );
}

/// A ban removes the miner with its record, refuses a new registration of the address until
/// it is lifted, and is listed; lifting an absent ban is `NotFound`.
pub async fn bans_remove_the_miner_and_refuse_its_registration(s: &dyn DurableStore) {
    use crate::domain::identity::Ban;
    let ban = |i: u8, reason: Option<&str>| Ban {
        address: address(i),
        reason: reason.map(str::to_string),
        banned_at: 7_000 + u64::from(i),
    };
    s.insert_miner(&miner(14, "h")).await.expect("insert");
    s.record_outcome(&outcome(14, true, 10), 0.95)
        .await
        .expect("outcome");
    assert!(
        s.ban(&ban(14, Some("spam"))).await.expect("ban"),
        "a miner was removed"
    );
    assert!(s.load_miner(&address(14)).await.expect("load").is_none());
    assert!(
        !s.ban(&ban(15, None)).await.expect("ban"),
        "nothing to remove"
    );
    assert_eq!(
        s.insert_miner(&miner(14, "again")).await,
        Err(StoreError::Banned)
    );
    assert_eq!(
        s.insert_miner(&miner(15, "x")).await,
        Err(StoreError::Banned)
    );
    // Banning again replaces the reason.
    s.ban(&ban(14, Some("still spam")))
        .await
        .expect("ban again");
    let mut listed = s.bans().await.expect("bans");
    listed.sort_by_key(|b| b.address);
    assert_eq!(listed, vec![ban(14, Some("still spam")), ban(15, None)]);
    s.unban(&address(14)).await.expect("unban");
    assert_eq!(s.unban(&address(14)).await, Err(StoreError::NotFound));
    s.insert_miner(&miner(14, "again"))
        .await
        .expect("registers once the ban is lifted");
    assert_eq!(s.bans().await.expect("bans"), vec![ban(15, None)]);
    s.wipe().await.expect("wipe");
    assert!(s.bans().await.expect("bans").is_empty(), "wipe clears bans");
}

/// However a registration and a ban of the same address interleave, the address ends up
/// banned and unregistered.
pub async fn a_ban_racing_a_registration_always_wins(s: Arc<dyn DurableStore>) {
    use crate::domain::identity::Ban;
    for i in 100..132u8 {
        let (a, b) = (s.clone(), s.clone());
        let insert = tokio::spawn(async move { a.insert_miner(&miner(i, "h")).await });
        let ban = tokio::spawn(async move {
            b.ban(&Ban {
                address: address(i),
                reason: None,
                banned_at: 1,
            })
            .await
        });
        let inserted = insert.await.expect("insert task");
        assert!(
            matches!(inserted, Ok(()) | Err(StoreError::Banned)),
            "{inserted:?}"
        );
        ban.await.expect("ban task").expect("ban");
        assert!(
            s.load_miner(&address(i)).await.expect("load").is_none(),
            "miner {i} stayed registered although banned"
        );
    }
}

/// Outcomes fold into the statistics in one commit with their history record; the stats
/// returned are the ones stored.
pub async fn outcomes_accumulate_into_stats(s: &dyn DurableStore) {
    assert_eq!(
        s.record_outcome(&outcome(6, true, 1), 0.95).await,
        Err(StoreError::NotFound),
        "an outcome for an unknown miner is refused"
    );
    s.insert_miner(&miner(6, "h")).await.expect("insert");
    assert_eq!(s.outcome_count().await.expect("count"), 0);
    for (ok, at) in [(true, 100), (false, 200)] {
        s.record_outcome(&outcome(6, ok, at), 0.95)
            .await
            .expect("outcome");
    }
    let st = s
        .record_outcome(&outcome(6, false, 300), 0.95)
        .await
        .expect("outcome");
    assert_eq!(
        (st.jobs_total, st.jobs_succeeded, st.jobs_failed),
        (3, 1, 2)
    );
    assert_eq!(st.consecutive_failures, 2);
    assert_eq!(st.last_failure_at, 300);
    assert_eq!(s.outcome_count().await.expect("count"), 3);
    let all = s.load_all().await.expect("load_all");
    assert_eq!(
        find(&all, 6).stats,
        st,
        "the returned stats are the stored ones"
    );
}

/// Outcomes recorded at once for one miner are all counted (no lost update).
pub async fn concurrent_outcomes_are_never_lost(s: Arc<dyn DurableStore>, caps: DurableCaps) {
    s.insert_miner(&miner(7, "h")).await.expect("insert");
    let n = caps.concurrent_writes;
    let tasks: Vec<_> = (0..n)
        .map(|k| {
            let s = s.clone();
            tokio::spawn(async move {
                s.record_outcome(&outcome(7, k % 2 == 0, 1000 + k), 0.95)
                    .await
                    .expect("concurrent outcome");
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let all = s.load_all().await.expect("load_all");
    let st = find(&all, 7).stats;
    assert_eq!(st.jobs_total, n, "every outcome counted once");
    assert_eq!(st.jobs_succeeded, n.div_ceil(2));
    assert_eq!(s.outcome_count().await.expect("count"), n);
}

/// A checkpoint is stored for known miners and never resurrects an unknown one.
pub async fn availability_checkpoint_round_trips(s: &dyn DurableStore) {
    s.insert_miner(&miner(8, "h")).await.expect("insert");
    let av = availability(3.0, 4.0, 77);
    // A deleted (never registered) miner in the batch is skipped, not resurrected.
    s.save_availability(vec![(address(8), av), (address(99), av)])
        .await
        .expect("save");
    let all = s.load_all().await.expect("load_all");
    assert_eq!(find(&all, 8).availability, av);
    assert!(all.iter().all(|m| m.miner.address != address(99)));
    s.save_availability(Vec::new()).await.expect("empty batch");
}

/// History strictly older than the cut is deleted, and only that: the count returned and
/// the records left are both exact.
pub async fn prune_drops_old_history_only(s: &dyn DurableStore) {
    s.insert_miner(&miner(9, "h")).await.expect("insert");
    for at in [5_000, 5_999, 6_000, 9_000_000_000] {
        s.record_outcome(&outcome(9, true, at), 0.95)
            .await
            .expect("outcome");
    }
    assert_eq!(s.prune_outcomes(6_000, None).await.expect("prune"), 2);
    assert_eq!(s.outcome_count().await.expect("count"), 2);
    let (left, _) = s.export_outcomes(None, 10).await.expect("export");
    let ats: Vec<u64> = left.iter().map(|o| o.at).collect();
    assert_eq!(ats, vec![6_000, 9_000_000_000]);
    assert_eq!(s.prune_outcomes(6_000, None).await.expect("prune again"), 0);
    // Pruning history never touches the statistics it was folded into.
    let all = s.load_all().await.expect("load_all");
    assert_eq!(find(&all, 9).stats.jobs_total, 4);
    s.health().await.expect("healthy after a prune");
}

/// `load_miner` gives one miner with its statistics, `None` for an unknown address.
pub async fn load_miner_reads_one(s: &dyn DurableStore) {
    assert_eq!(s.load_miner(&address(10)).await.expect("load"), None);
    s.insert_miner(&miner(10, "h")).await.expect("insert");
    s.record_outcome(&outcome(10, true, 50), 0.95)
        .await
        .expect("outcome");
    let one = s
        .load_miner(&address(10))
        .await
        .expect("load")
        .expect("miner 10 is stored");
    assert_eq!(one.miner, miner(10, "h"));
    assert_eq!(one.stats.jobs_total, 1);
}

/// What `poolhub migrate` relies on: export everything, import it elsewhere, wipe.
pub async fn export_import_round_trips(s: &dyn DurableStore, target: &dyn DurableStore) {
    s.insert_miner(&miner(11, "h11")).await.expect("insert");
    s.insert_miner(&miner(12, "h12")).await.expect("insert");
    for k in 0..5u64 {
        s.record_outcome(&outcome(11, k != 2, 100 + k), 0.95)
            .await
            .expect("outcome");
    }
    let av = availability(1.0, 2.0, 9);
    s.save_availability(vec![(address(12), av)])
        .await
        .expect("save");
    // Paged export sees every record once, in order.
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = s.export_outcomes(cursor, 2).await.expect("export");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        all.extend(page);
        cursor = next;
    }
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    let miners = s.load_all().await.expect("load_all");
    target
        .import(miners.clone(), all.clone())
        .await
        .expect("import");
    let mut got = target.load_all().await.expect("load_all");
    let mut want = miners;
    got.sort_by_key(|m| m.miner.address);
    want.sort_by_key(|m| m.miner.address);
    assert_eq!(
        got, want,
        "miners, token hashes, stats and availability copied"
    );
    assert_eq!(target.outcome_count().await.expect("count"), 5);
    let (copied, _) = target.export_outcomes(None, 1000).await.expect("export");
    assert_eq!(copied, all);
    // An imported miner keeps its token: a conditional update with it succeeds.
    let mut m = miner(11, "h11");
    m.stake = 1;
    target
        .update_miner(&m)
        .await
        .expect("update with the copied token");
    target.wipe().await.expect("wipe");
    assert!(target.load_all().await.expect("load_all").is_empty());
    assert_eq!(target.outcome_count().await.expect("count"), 0);
}

/// After `close`, writes fail as `Unavailable` naming the backend, and the message says no
/// more than that (the cause is the error's source, for the log).
pub async fn closed_store_refuses_writes(s: &dyn DurableStore, caps: DurableCaps) {
    s.insert_miner(&miner(13, "h")).await.expect("insert");
    s.close().await;
    match s.insert_miner(&miner(14, "h")).await {
        Err(e @ StoreError::Unavailable { .. }) => {
            assert_eq!(e.backend(), Some(caps.backend));
            assert_eq!(e.to_string(), format!("{} is unavailable", caps.backend));
            assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
        }
        other => panic!("a closed store answered a write with {other:?}"),
    }
    assert!(s.health().await.is_err(), "a closed store is not healthy");
}

/// What was acknowledged is there after the store is closed and opened again (`reopen`
/// opens the same data: the same file, the same schema). Not a crash test: the first store
/// is closed cleanly.
pub async fn everything_survives_reopen<F, Fut>(first: Arc<dyn DurableStore>, reopen: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Arc<dyn DurableStore>>,
{
    first.insert_miner(&miner(1, "h")).await.expect("insert");
    first
        .record_outcome(&outcome(1, false, 10), 0.95)
        .await
        .expect("outcome");
    first
        .save_availability(vec![(address(1), availability(1.0, 2.0, 3))])
        .await
        .expect("save");
    let before = first.load_all().await.expect("load_all");
    let k = key(42, "survivor", Role::Client, 7);
    first.insert_key(&k).await.expect("insert key");
    first.close().await;
    drop(first);
    let s = reopen().await;
    let all = s.load_all().await.expect("load_all after reopen");
    assert_eq!(all, before);
    assert_eq!(all[0].stats.jobs_failed, 1);
    assert_eq!(all[0].miner.token_hash, "h");
    assert_eq!(s.outcome_count().await.expect("count"), 1);
    assert_eq!(s.load_keys().await.expect("keys after reopen"), vec![k]);
    s.close().await;
}
