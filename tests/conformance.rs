//! One storage conformance suite, run against every backend (object_store's integration.rs
//! pattern): each behaviour is a function taking the store; each backend's test calls them.

use poolhub::domain::scoring::{Availability, MinerStats};
use poolhub::domain::{Address, Capabilities, Endpoint, Miner, MinerStatus};
mod backends;

use poolhub::store::moka::MokaHotStore;
use poolhub::store::postgres::{PgOptions, PostgresStore};
use poolhub::store::redb::RedbStore;
use poolhub::store::redis::{RedisHotStore, RedisOptions};
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

async fn load_miner_reads_one(s: &dyn DurableStore) {
    assert_eq!(s.load_miner(&address(10)).await.unwrap(), None);
    s.insert_miner(&miner(10, "h")).await.unwrap();
    s.record_outcome(&outcome(10, true, 50), 0.95)
        .await
        .unwrap();
    let one = s.load_miner(&address(10)).await.unwrap().unwrap();
    assert_eq!(one.miner, miner(10, "h"));
    assert_eq!(one.stats.jobs_total, 1);
}

/// What `poolhub migrate` relies on: export everything, import it elsewhere, wipe.
async fn export_import_round_trips(s: &dyn DurableStore, target: &dyn DurableStore) {
    s.insert_miner(&miner(11, "h11")).await.unwrap();
    s.insert_miner(&miner(12, "h12")).await.unwrap();
    for k in 0..5u64 {
        s.record_outcome(&outcome(11, k != 2, 100 + k), 0.95)
            .await
            .unwrap();
    }
    let av = Availability {
        up: 1.0,
        total: 2.0,
        as_of: 9,
    };
    s.save_availability(vec![(address(12), av)]).await.unwrap();
    // Paged export sees every record once, in order.
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = s.export_outcomes(cursor, 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        all.extend(page);
        cursor = next;
    }
    assert_eq!(all.len() as u64, s.outcome_count().await.unwrap());
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    let miners = s.load_all().await.unwrap();
    target.import(miners.clone(), all.clone()).await.unwrap();
    let mut got = target.load_all().await.unwrap();
    let mut want = miners;
    got.sort_by_key(|m| m.miner.address);
    want.sort_by_key(|m| m.miner.address);
    assert_eq!(
        got, want,
        "miners, token hashes, stats and availability copied"
    );
    assert_eq!(target.outcome_count().await.unwrap(), all.len() as u64);
    let (copied, _) = target.export_outcomes(None, 1000).await.unwrap();
    assert_eq!(copied, all);
    // An imported miner keeps its token: a conditional update with it succeeds.
    let mut m = miner(11, "h11");
    m.stake = 1;
    target.update_miner(&m).await.unwrap();
    target.wipe().await.unwrap();
    assert!(target.load_all().await.unwrap().is_empty());
    assert_eq!(target.outcome_count().await.unwrap(), 0);
}

async fn durable_suite<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = &'static dyn DurableStore>,
{
    insert_then_load(make().await).await;
    insert_twice_is_refused(make().await).await;
    update_checks_the_token(make().await).await;
    delete_checks_the_token_and_removes_everything(make().await).await;
    outcomes_accumulate_into_stats(make().await).await;
    concurrent_outcomes_are_never_lost(make().await).await;
    availability_checkpoint_round_trips(make().await).await;
    prune_drops_old_history_only(make().await).await;
    load_miner_reads_one(make().await).await;
    export_import_round_trips(make().await, make().await).await;
}

fn leak<T: DurableStore>(s: T) -> &'static dyn DurableStore {
    Box::leak(Box::new(s))
}

#[tokio::test]
async fn redb_in_memory_conforms() {
    durable_suite(|| async { leak(RedbStore::in_memory(None).unwrap()) }).await;
}

#[tokio::test]
async fn redb_file_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicU32::new(0);
    let path = dir.path().to_path_buf();
    durable_suite(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = path.join(format!("s{i}.redb"));
        async move { leak(RedbStore::open(&p, None).unwrap()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn postgres_conforms() {
    let url = backends::database_url();
    let made: std::sync::Mutex<Vec<&'static PostgresStore>> = Default::default();
    durable_suite(|| {
        let url = url.clone();
        let made = &made;
        async move {
            let s: &'static PostgresStore = Box::leak(Box::new(backends::postgres(&url).await));
            made.lock().unwrap().push(s);
            s as &'static dyn DurableStore
        }
    })
    .await;
    let made = made.lock().unwrap().clone();
    for s in made {
        s.drop_schema().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn postgres_migrations_are_safe_when_instances_start_at_once() {
    let url = backends::database_url();
    let schema = backends::fresh_name("poolhub_test_");
    let open = |schema: String| {
        let url = url.clone();
        async move {
            PostgresStore::connect(
                PgOptions {
                    url,
                    schema,
                    max_connections: 2,
                    startup_timeout: Duration::from_secs(5),
                },
                None,
            )
            .await
            .unwrap()
        }
    };
    let opened = futures_util::future::join_all((0..4).map(|_| open(schema.clone()))).await;
    opened[0].insert_miner(&miner(1, "h")).await.unwrap();
    assert_eq!(opened[3].load_all().await.unwrap().len(), 1);
    // Reopening an up-to-date schema changes nothing.
    let again = open(schema.clone()).await;
    assert_eq!(again.load_all().await.unwrap().len(), 1);
    again.drop_schema().await.unwrap();
}

#[tokio::test]
async fn postgres_unreachable_is_unavailable_not_a_crash() {
    let r = PostgresStore::connect(
        PgOptions {
            url: "postgresql://postgres@127.0.0.1:1/none".into(),
            schema: "poolhub".into(),
            max_connections: 1,
            startup_timeout: Duration::from_millis(600),
        },
        None,
    )
    .await;
    match r {
        Err(StoreError::Unavailable { backend, .. }) => assert_eq!(backend, "postgres"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connected to a closed port"),
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_REDIS_URL"]
async fn redis_conforms() {
    let url = backends::redis_url();
    let ttl = Duration::from_millis(400);
    let h = backends::redis(&url, ttl).await;
    status_round_trips_and_expires(&h, ttl).await;
    claims_are_once_per_offered_miner(&h).await;
    statuses_read_in_bulk(&h).await;
    h.clear_namespace().await.unwrap();
}

#[tokio::test]
async fn redis_unreachable_is_unavailable_not_a_crash() {
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = dropped.clone();
    let h = RedisHotStore::open_observed(
        RedisOptions {
            url: "redis://127.0.0.1:1".into(),
            prefix: "x:".into(),
            heartbeat_timeout: Duration::from_secs(1),
            outcome_window: Duration::from_secs(1),
        },
        Some(std::sync::Arc::new(move |n| {
            counter.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        })),
    )
    .unwrap();
    match h.health().await {
        Err(StoreError::Unavailable { backend, .. }) => assert_eq!(backend, "redis"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(h.put_status(&address(1), &status(1)).await.is_err());
    // Recording a match never waits on the network.
    h.record_match(MatchTicket {
        id: MatchId(1),
        offered: vec![address(1)],
        created_at: 1,
    })
    .await
    .unwrap();
    // ... and a ledger write Redis could not take is reported (poolhub_store_errors_total).
    let started = std::time::Instant::now();
    while dropped.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "dropped write not reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn statuses_read_in_bulk(h: &dyn HotStore) {
    h.put_status(&address(7), &status(7)).await.unwrap();
    let got = h.get_statuses(&[address(7), address(8)]).await.unwrap();
    assert_eq!(got, vec![Some(status(7)), None]);
}

#[tokio::test]
async fn moka_conforms() {
    let ttl = Duration::from_millis(400);
    let h = MokaHotStore::new(ttl, Duration::from_secs(60), 1000);
    status_round_trips_and_expires(&h, ttl).await;
    claims_are_once_per_offered_miner(&h).await;
    statuses_read_in_bulk(&h).await;
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
