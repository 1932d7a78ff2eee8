//! One storage conformance suite, run against every backend (object_store's integration.rs
//! pattern): each behaviour is a function taking the store; each backend's test calls them.

use poolhub::domain::scoring::{Availability, MinerStats};
use poolhub::domain::{Address, Capabilities, Endpoint, Miner, MinerStatus};
use poolhub::store::moka::MokaHotStore;
use poolhub::store::redb::RedbStore;
use poolhub::store::{
    ClaimError, DurableStore, HotStore, MatchId, MatchTicket, OutcomeRecord, StoreError,
};
use proptest::prelude::*;
use std::time::Duration;

fn address(i: u8) -> Address {
    let mut b = [0u8; 20];
    b[0] = 0xab;
    b[19] = i;
    Address::from_bytes(b)
}

fn miner(i: u8, token_hash: &str) -> Miner {
    Miner {
        address: address(i),
        endpoint: Endpoint::try_from(format!("http://m{i}.example.com:8080")).unwrap(),
        capabilities: Capabilities {
            models: vec!["llama3.2".into()],
            gpu_memory: 16384,
            max_concurrent_jobs: 4,
            job_types: vec!["inference".into()],
        },
        stake: u64::from(i) * 100,
        token_hash: token_hash.to_string(),
        registered_at: 1_000,
        updated_at: 1_000,
    }
}

fn outcome(i: u8, success: bool, at: u64) -> OutcomeRecord {
    OutcomeRecord {
        match_id: format!("{:032x}", at),
        address: address(i),
        success,
        latency_ms: Some(250.0),
        at,
        error: None,
    }
}

// ---- durable behaviours ----

async fn insert_then_load(s: &dyn DurableStore) {
    s.insert_miner(&miner(1, "h1")).await.unwrap();
    s.insert_miner(&miner(2, "h2")).await.unwrap();
    let all = s.load_all().await.unwrap();
    assert_eq!(all.len(), 2);
    let one = all.iter().find(|m| m.miner.address == address(1)).unwrap();
    assert_eq!(one.miner, miner(1, "h1"));
    assert_eq!(one.stats, MinerStats::default());
}

async fn insert_twice_is_refused(s: &dyn DurableStore) {
    s.insert_miner(&miner(3, "first")).await.unwrap();
    assert_eq!(
        s.insert_miner(&miner(3, "second")).await,
        Err(StoreError::AlreadyExists)
    );
    let all = s.load_all().await.unwrap();
    assert_eq!(
        all.iter()
            .find(|m| m.miner.address == address(3))
            .unwrap()
            .miner
            .token_hash,
        "first"
    );
}

async fn update_checks_the_token(s: &dyn DurableStore) {
    assert_eq!(
        s.update_miner(&miner(4, "h")).await,
        Err(StoreError::NotFound)
    );
    s.insert_miner(&miner(4, "h")).await.unwrap();
    let mut changed = miner(4, "other");
    changed.stake = 999;
    assert_eq!(
        s.update_miner(&changed).await,
        Err(StoreError::TokenMismatch)
    );
    changed.token_hash = "h".into();
    s.update_miner(&changed).await.unwrap();
    let all = s.load_all().await.unwrap();
    assert_eq!(
        all.iter()
            .find(|m| m.miner.address == address(4))
            .unwrap()
            .miner
            .stake,
        999
    );
}

async fn delete_checks_the_token_and_removes_everything(s: &dyn DurableStore) {
    s.insert_miner(&miner(5, "h")).await.unwrap();
    s.record_outcome(&outcome(5, true, 10), 0.95).await.unwrap();
    assert_eq!(
        s.delete_miner(&address(5), "x").await,
        Err(StoreError::TokenMismatch)
    );
    s.delete_miner(&address(5), "h").await.unwrap();
    assert_eq!(
        s.delete_miner(&address(5), "h").await,
        Err(StoreError::NotFound)
    );
    assert!(s
        .load_all()
        .await
        .unwrap()
        .iter()
        .all(|m| m.miner.address != address(5)));
    // Re-registering starts from a clean record.
    s.insert_miner(&miner(5, "h2")).await.unwrap();
    let all = s.load_all().await.unwrap();
    assert_eq!(
        all.iter()
            .find(|m| m.miner.address == address(5))
            .unwrap()
            .stats
            .jobs_total,
        0
    );
}

async fn outcomes_accumulate_into_stats(s: &dyn DurableStore) {
    assert_eq!(
        s.record_outcome(&outcome(6, true, 1), 0.95).await,
        Err(StoreError::NotFound)
    );
    s.insert_miner(&miner(6, "h")).await.unwrap();
    let before = s.outcome_count().await.unwrap();
    s.record_outcome(&outcome(6, true, 100), 0.95)
        .await
        .unwrap();
    s.record_outcome(&outcome(6, false, 200), 0.95)
        .await
        .unwrap();
    let st = s
        .record_outcome(&outcome(6, false, 300), 0.95)
        .await
        .unwrap();
    assert_eq!(
        (st.jobs_total, st.jobs_succeeded, st.jobs_failed),
        (3, 1, 2)
    );
    assert_eq!(st.consecutive_failures, 2);
    assert_eq!(s.outcome_count().await.unwrap(), before + 3);
    let all = s.load_all().await.unwrap();
    assert_eq!(
        all.iter()
            .find(|m| m.miner.address == address(6))
            .unwrap()
            .stats,
        st
    );
}

async fn concurrent_outcomes_are_never_lost(s: &'static dyn DurableStore) {
    s.insert_miner(&miner(7, "h")).await.unwrap();
    let mut tasks = Vec::new();
    for k in 0..64u64 {
        tasks.push(tokio::spawn(async move {
            s.record_outcome(&outcome(7, k % 2 == 0, 1000 + k), 0.95)
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = s.load_all().await.unwrap();
    let st = all
        .iter()
        .find(|m| m.miner.address == address(7))
        .unwrap()
        .stats;
    assert_eq!(st.jobs_total, 64);
    assert_eq!(st.jobs_succeeded, 32);
}

async fn availability_checkpoint_round_trips(s: &dyn DurableStore) {
    s.insert_miner(&miner(8, "h")).await.unwrap();
    let av = Availability {
        up: 3.0,
        total: 4.0,
        as_of: 77,
    };
    // A deleted (never registered) miner in the batch is skipped, not resurrected.
    s.save_availability(vec![(address(8), av), (address(99), av)])
        .await
        .unwrap();
    let all = s.load_all().await.unwrap();
    assert_eq!(
        all.iter()
            .find(|m| m.miner.address == address(8))
            .unwrap()
            .availability,
        av
    );
    assert!(all.iter().all(|m| m.miner.address != address(99)));
}

async fn prune_drops_old_history_only(s: &dyn DurableStore) {
    s.insert_miner(&miner(9, "h")).await.unwrap();
    let base = s.outcome_count().await.unwrap();
    s.record_outcome(&outcome(9, true, 5_000), 0.95)
        .await
        .unwrap();
    s.record_outcome(&outcome(9, true, 9_000_000_000), 0.95)
        .await
        .unwrap();
    let pruned = s.prune_outcomes(6_000).await.unwrap();
    assert!(pruned >= 1);
    assert_eq!(s.outcome_count().await.unwrap(), base + 2 - pruned);
    assert!(s.health().await.is_ok());
}

async fn durable_suite(make: impl Fn() -> &'static dyn DurableStore) {
    insert_then_load(make()).await;
    insert_twice_is_refused(make()).await;
    update_checks_the_token(make()).await;
    delete_checks_the_token_and_removes_everything(make()).await;
    outcomes_accumulate_into_stats(make()).await;
    concurrent_outcomes_are_never_lost(make()).await;
    availability_checkpoint_round_trips(make()).await;
    prune_drops_old_history_only(make()).await;
}

fn leak<T: DurableStore>(s: T) -> &'static dyn DurableStore {
    Box::leak(Box::new(s))
}

#[tokio::test]
async fn redb_in_memory_conforms() {
    durable_suite(|| leak(RedbStore::in_memory(None).unwrap())).await;
}

#[tokio::test]
async fn redb_file_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicU32::new(0);
    let path = dir.path().to_path_buf();
    durable_suite(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        leak(RedbStore::open(&path.join(format!("s{i}.redb")), None).unwrap())
    })
    .await;
}

#[tokio::test]
async fn redb_file_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reopen.redb");
    {
        let s = RedbStore::open(&path, None).unwrap();
        s.insert_miner(&miner(1, "h")).await.unwrap();
        s.record_outcome(&outcome(1, false, 10), 0.95)
            .await
            .unwrap();
        s.close().await;
        assert!(
            s.insert_miner(&miner(2, "h")).await.is_err(),
            "closed store refuses writes"
        );
    }
    let s = RedbStore::open(&path, None).unwrap();
    let all = s.load_all().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].stats.jobs_failed, 1);
    assert_eq!(all[0].miner.token_hash, "h");
}

// ---- hot behaviours ----

fn status(load: u32) -> MinerStatus {
    MinerStatus {
        available: true,
        current_load: load,
        gpu_utilization: 0.5,
        temperature: Some(60.0),
        reported_at: 5,
    }
}

async fn status_round_trips_and_expires(h: &dyn HotStore, ttl: Duration) {
    assert_eq!(h.get_status(&address(1)).await.unwrap(), None);
    h.put_status(&address(1), &status(2)).await.unwrap();
    assert_eq!(h.get_status(&address(1)).await.unwrap(), Some(status(2)));
    h.put_status(&address(1), &status(3)).await.unwrap();
    assert_eq!(
        h.get_status(&address(1))
            .await
            .unwrap()
            .unwrap()
            .current_load,
        3
    );
    h.remove_status(&address(1)).await.unwrap();
    assert_eq!(h.get_status(&address(1)).await.unwrap(), None);
    h.put_status(&address(2), &status(1)).await.unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    assert_eq!(
        h.get_status(&address(2)).await.unwrap(),
        None,
        "status expires after the heartbeat timeout"
    );
}

async fn claims_are_once_per_offered_miner(h: &dyn HotStore) {
    let id = MatchId(42);
    h.record_match(MatchTicket {
        id,
        offered: vec![address(1), address(2)],
        created_at: 1,
    })
    .await
    .unwrap();
    assert_eq!(
        h.claim_outcome(MatchId(43), &address(1)).await,
        Err(ClaimError::UnknownMatch)
    );
    assert_eq!(
        h.claim_outcome(id, &address(3)).await,
        Err(ClaimError::NotOffered)
    );
    h.claim_outcome(id, &address(1)).await.unwrap();
    assert_eq!(
        h.claim_outcome(id, &address(1)).await,
        Err(ClaimError::AlreadyReported)
    );
    h.claim_outcome(id, &address(2)).await.unwrap();
    h.unclaim_outcome(id, &address(2)).await.unwrap();
    h.claim_outcome(id, &address(2)).await.unwrap();
    assert!(h.health().await.is_ok());
}

#[tokio::test]
async fn moka_conforms() {
    let ttl = Duration::from_millis(400);
    let h = MokaHotStore::new(ttl, Duration::from_secs(60), 1000);
    status_round_trips_and_expires(&h, ttl).await;
    claims_are_once_per_offered_miner(&h).await;
}

// ---- nothing acknowledged is lost across a restart (property) ----

#[derive(Debug, Clone)]
enum Op {
    Insert(u8),
    Update(u8, u64),
    Delete(u8),
    Outcome(u8, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Insert),
        (0u8..6, any::<u64>()).prop_map(|(i, s)| Op::Update(i, s)),
        (0u8..6).prop_map(Op::Delete),
        (0u8..6, any::<bool>()).prop_map(|(i, ok)| Op::Outcome(i, ok)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn acknowledged_writes_survive_reopen(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        let expected = rt.block_on(async {
            let s = RedbStore::open(&path, None).unwrap();
            let mut model: std::collections::BTreeMap<u8, (u64, u64)> = Default::default();
            for (t, o) in ops.iter().enumerate() {
                match *o {
                    Op::Insert(i) => if s.insert_miner(&miner(i, "h")).await.is_ok() {
                        model.insert(i, (u64::from(i) * 100, 0));
                    },
                    Op::Update(i, stake) => {
                        let mut m = miner(i, "h");
                        m.stake = stake;
                        if s.update_miner(&m).await.is_ok() {
                            model.get_mut(&i).unwrap().0 = stake;
                        }
                    }
                    Op::Delete(i) => if s.delete_miner(&address(i), "h").await.is_ok() {
                        model.remove(&i);
                    },
                    Op::Outcome(i, ok) => if s.record_outcome(&outcome(i, ok, t as u64 + 1), 0.95).await.is_ok() {
                        model.get_mut(&i).unwrap().1 += 1;
                    },
                }
            }
            // No close(): as if the process died right after the last answer.
            model
        });
        let loaded = rt.block_on(async {
            let s = RedbStore::open(&path, None).unwrap();
            s.load_all().await.unwrap()
        });
        let got: std::collections::BTreeMap<u8, (u64, u64)> = loaded
            .iter()
            .map(|m| (m.miner.address.as_bytes()[19], (m.miner.stake, m.stats.jobs_total)))
            .collect();
        prop_assert_eq!(got, expected);
    }
}
