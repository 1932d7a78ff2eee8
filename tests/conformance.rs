//! The storage conformance suites, run against every backend. The behaviours live in
//! `poolhub::store::testing` (object_store's integration.rs pattern); this file only says
//! which stores to run them on.

mod backends;

use poolhub::store::moka::MokaHotStore;
use poolhub::store::postgres::{PgOptions, PostgresStore};
use poolhub::store::redb::RedbStore;
use poolhub::store::redis::{RedisHotStore, RedisOptions};
use poolhub::store::testing::durable::{durable_suite, everything_survives_reopen, DurableCaps};
use poolhub::store::testing::fixtures::{address, miner, outcome, status};
use poolhub::store::testing::hot::{hot_suite, HotCaps};
use poolhub::store::testing::required_env;
use poolhub::store::{ClaimError, DurableStore, HotStore, MatchId, MatchTicket, StoreError};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

// ---- durable stores ----

#[tokio::test]
async fn redb_in_memory_conforms() {
    durable_suite(
        || async {
            Arc::new(RedbStore::in_memory(None).expect("in-memory redb")) as Arc<dyn DurableStore>
        },
        DurableCaps::new("redb"),
    )
    .await;
}

#[tokio::test]
async fn redb_file_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = std::sync::atomic::AtomicU32::new(0);
    let path = dir.path().to_path_buf();
    durable_suite(
        || {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = path.join(format!("s{i}.redb"));
            async move {
                Arc::new(RedbStore::open(&p, None).expect("redb file")) as Arc<dyn DurableStore>
            }
        },
        DurableCaps::new("redb"),
    )
    .await;
}

#[tokio::test]
async fn redb_file_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("reopen.redb");
    let open =
        || Arc::new(RedbStore::open(&path, None).expect("redb file")) as Arc<dyn DurableStore>;
    everything_survives_reopen(open(), || async { open() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn postgres_conforms() {
    let url = required_env(backends::DATABASE_VAR);
    let made: std::sync::Mutex<Vec<Arc<PostgresStore>>> = Default::default();
    durable_suite(
        || {
            let url = url.clone();
            let made = &made;
            async move {
                let s = Arc::new(backends::postgres(&url).await);
                made.lock().expect("lock").push(s.clone());
                s as Arc<dyn DurableStore>
            }
        },
        DurableCaps {
            // The pool holds 8 connections: more writers than that queue for one.
            concurrent_writes: 32,
            ..DurableCaps::new("postgres")
        },
    )
    .await;
    let made = made.lock().expect("lock").clone();
    for s in made {
        // Closed stores cannot drop their schema: reconnect to it.
        backends::postgres_schema(&url, s.schema())
            .await
            .drop_schema()
            .await
            .expect("drop schema");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn postgres_keeps_everything_across_reconnect() {
    let url = required_env(backends::DATABASE_VAR);
    let first = backends::postgres(&url).await;
    let schema = first.schema().to_string();
    everything_survives_reopen(Arc::new(first), || async {
        Arc::new(backends::postgres_schema(&url, &schema).await) as Arc<dyn DurableStore>
    })
    .await;
    backends::postgres_schema(&url, &schema)
        .await
        .drop_schema()
        .await
        .expect("drop schema");
}

/// Rows written before rows had a format version (serde of the domain types) still load,
/// and a row from a newer format is refused as corrupt, naming its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn postgres_reads_unversioned_rows_and_refuses_newer_ones() {
    let url = required_env(backends::DATABASE_VAR);
    let s = backends::postgres(&url).await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    let legacy_miner = r#"{"address":"0xab00000000000000000000000000000000000001","endpoint":"http://m1.example.com:8080","capabilities":{"models":["llama3.2"],"gpu_memory":16384,"max_concurrent_jobs":4,"job_types":["inference"]},"stake":100,"token_hash":"h","registered_at":1000,"updated_at":1000}"#;
    let legacy_stats = r#"{"successes":0.0,"failures":1.0,"latency_sum_ms":250.0,"latency_count":1.0,"consecutive_failures":1,"last_failure_at":10,"jobs_total":1,"jobs_succeeded":0,"jobs_failed":1,"as_of":10}"#;
    let legacy_availability = r#"{"up":3.0,"total":4.0,"as_of":77}"#;
    let insert = format!(
        "INSERT INTO \"{}\".miners (address, token_hash, miner, stats, availability)
         VALUES ($1, $2, $3::text::jsonb, $4::text::jsonb, $5::text::jsonb)",
        s.schema()
    );
    client
        .execute(
            &insert,
            &[
                &address(1).to_string(),
                &"h",
                &legacy_miner,
                &legacy_stats,
                &legacy_availability,
            ],
        )
        .await
        .expect("insert a legacy row");
    let all = s.load_all().await.expect("legacy rows load");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].miner, miner(1, "h"));
    assert_eq!(all[0].stats.jobs_failed, 1);
    assert_eq!(all[0].availability.total, 4.0);
    let st = s
        .record_outcome(&outcome(1, true, 20), 0.95)
        .await
        .expect("outcome on a legacy row");
    assert_eq!(st.jobs_total, 2);

    client
        .execute(
            &insert,
            &[
                &address(2).to_string(),
                &"h",
                &r#"{"v":4,"id":"0xab00000000000000000000000000000000000002"}"#,
                &legacy_stats,
                &legacy_availability,
            ],
        )
        .await
        .expect("insert a newer row");
    let e = s.load_all().await.expect_err("a newer row is refused");
    assert!(
        matches!(
            e,
            StoreError::Corrupt {
                backend: "postgres",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.detail().contains("format version 4"), "{}", e.detail());
    s.drop_schema().await.expect("drop schema");
    drop(client);
    let _ = conn.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn postgres_migrations_are_safe_when_instances_start_at_once() {
    let url = required_env(backends::DATABASE_VAR);
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
            .expect("connect")
        }
    };
    let opened = futures_util::future::join_all((0..4).map(|_| open(schema.clone()))).await;
    opened[0]
        .insert_miner(&miner(1, "h"))
        .await
        .expect("insert");
    assert_eq!(opened[3].load_all().await.expect("load_all").len(), 1);
    // Reopening an up-to-date schema changes nothing.
    let again = open(schema.clone()).await;
    assert_eq!(again.load_all().await.expect("load_all").len(), 1);
    again.drop_schema().await.expect("drop schema");
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
        Err(e @ StoreError::Unavailable { .. }) => {
            assert_eq!(e.backend(), Some("postgres"));
            assert_eq!(
                e.to_string(),
                "postgres is unavailable",
                "no detail in Display"
            );
            assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

// ---- hot behaviours: poolhub::store::testing::hot, run for moka and Redis ----

const NEEDS_REDIS: &str = "needs POOLHUB_TEST_REDIS_URL";

fn redis_url() -> String {
    required_env(backends::REDIS_VAR)
}

/// A Redis store for the hot suite: a key prefix of its own (`extra` appended, to nest one
/// namespace in another), and the suite's TTLs.
async fn redis_store(url: &str, prefix: &str, caps: HotCaps) -> RedisHotStore {
    let h = RedisHotStore::open(RedisOptions {
        url: url.to_string(),
        ca_file: None,
        prefix: prefix.to_string(),
        heartbeat_timeout: caps.status_ttl,
        outcome_window: caps.outcome_window,
    })
    .unwrap();
    h.health()
        .await
        .unwrap_or_else(|e| panic!("{NEEDS_REDIS}, and Redis is unusable: {e}"));
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moka_conforms() {
    let caps = HotCaps {
        // moka checks every entry's TTL on read, to the millisecond.
        ttl_slack: Duration::from_millis(50),
        ..HotCaps::default()
    };
    let h = MokaHotStore::new(caps.status_ttl, caps.outcome_window, 100_000);
    hot_suite(Arc::new(h), caps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs POOLHUB_TEST_REDIS_URL"]
async fn redis_conforms() {
    let url = redis_url();
    // Redis expires keys on access to the millisecond; the slack covers the round trip.
    let caps = HotCaps::default();
    let h = Arc::new(redis_store(&url, &(backends::fresh_name("test:hot:") + ":"), caps).await);
    hot_suite(h.clone(), caps).await;
    h.clear_namespace().await.unwrap();
}

/// Issue 9, defect 9: clearing one pool's namespace leaves a pool whose prefix extends it
/// (as every prefix extends the default, empty one) untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_REDIS_URL"]
async fn redis_clear_namespace_stays_in_its_own_namespace() {
    let url = redis_url();
    let caps = HotCaps {
        status_ttl: Duration::from_secs(60),
        outcome_window: Duration::from_secs(60),
        ..HotCaps::default()
    };
    let outer = backends::fresh_name("test:hot:") + ":";
    let a = redis_store(&url, &outer, caps).await;
    let b = redis_store(&url, &format!("{outer}inner:"), caps).await;
    // Namespaces nest even without a separator: "…:" and "…:status:".
    let c = redis_store(&url, &format!("{outer}status:"), caps).await;
    let m = poolhub::store::testing::hot::address(40, 1);
    for s in [&a, &b, &c] {
        s.put_status(&m, &status(1)).await.unwrap();
        s.record_match(MatchTicket {
            client: None,
            id: MatchId(7),
            offered: vec![m],
            created_at: 1,
        })
        .await
        .unwrap();
        assert!(s
            .reserve_slot(&m, MatchId(7), 1, Duration::from_secs(60))
            .await
            .unwrap());
    }
    a.claim_outcome(MatchId(7), &m).await.unwrap(); // the ledger write is flushed
    assert_eq!(a.clear_namespace().await.unwrap(), 3);
    assert_eq!(a.get_status(&m).await.unwrap(), None);
    for s in [&b, &c] {
        assert_eq!(
            s.get_status(&m).await.unwrap(),
            Some(status(1)),
            "another pool's status survives"
        );
        s.claim_outcome(MatchId(7), &m).await.unwrap();
        assert!(
            !s.reserve_slot(&m, MatchId(8), 1, Duration::from_secs(60))
                .await
                .unwrap(),
            "another pool's reservation survives"
        );
    }
    b.clear_namespace().await.unwrap();
    c.clear_namespace().await.unwrap();
}

/// `close` sends what is still queued: a match recorded just before a hub shuts down can
/// be claimed through another hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_REDIS_URL"]
async fn redis_close_flushes_queued_ledger_writes() {
    let url = redis_url();
    let caps = HotCaps {
        outcome_window: Duration::from_secs(60),
        ..HotCaps::default()
    };
    let prefix = backends::fresh_name("test:hot:") + ":";
    let closing = redis_store(&url, &prefix, caps).await;
    let other = redis_store(&url, &prefix, caps).await;
    let m = poolhub::store::testing::hot::address(41, 1);
    let ids: Vec<MatchId> = (0..5000u128).map(|i| MatchId(0xc105e << 64 | i)).collect();
    for id in &ids {
        closing
            .record_match(MatchTicket {
                client: None,
                id: *id,
                offered: vec![m],
                created_at: 1,
            })
            .await
            .unwrap();
    }
    closing.close().await;
    // Closed: later background writes are dropped, not sent (and never block).
    closing
        .record_match(MatchTicket {
            client: None,
            id: MatchId(1),
            offered: vec![m],
            created_at: 1,
        })
        .await
        .unwrap();
    // The last match recorded before close is there (the writer keeps queue order).
    other.claim_outcome(ids[ids.len() - 1], &m).await.unwrap();
    other.claim_outcome(ids[0], &m).await.unwrap();
    assert_eq!(
        other.claim_outcome(MatchId(1), &m).await,
        Err(ClaimError::UnknownMatch),
        "a write after close is not sent"
    );
    other.clear_namespace().await.unwrap();
}

/// Status values and ledgers carry a format version; values from before versions are still
/// read, and a newer format is reported as unreadable instead of misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_REDIS_URL"]
async fn redis_values_carry_a_format_version() {
    let url = redis_url();
    let caps = HotCaps {
        status_ttl: Duration::from_secs(60),
        outcome_window: Duration::from_secs(60),
        ..HotCaps::default()
    };
    let prefix = backends::fresh_name("test:hot:") + ":";
    let h = redis_store(&url, &prefix, caps).await;
    let ns = h.namespace().to_string();
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let m = poolhub::store::testing::hot::address(42, 1);
    h.put_status(&m, &status(2)).await.unwrap();
    let stored: String = redis::cmd("GET")
        .arg(format!("{ns}status:{m}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(v["v"], poolhub::store::redis::FORMAT, "{stored}");
    h.record_match(MatchTicket {
        client: None,
        id: MatchId(9),
        offered: vec![m],
        created_at: 1,
    })
    .await
    .unwrap();
    h.claim_outcome(MatchId(9), &m).await.unwrap();
    let fmt: Option<u32> = redis::cmd("HGET")
        .arg(format!("{ns}match:{}", MatchId(9)))
        .arg("v")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(fmt, Some(poolhub::store::redis::FORMAT));

    // Written by a build from before format versions: still read.
    let legacy = serde_json::to_string(&status(3)).unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{ns}status:{m}"))
        .arg(legacy)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(h.get_status(&m).await.unwrap(), Some(status(3)));
    let _: () = redis::cmd("HSET")
        .arg(format!("{ns}match:{}", MatchId(10)))
        .arg(m.to_string())
        .arg(0)
        .query_async(&mut raw)
        .await
        .unwrap();
    h.claim_outcome(MatchId(10), &m).await.unwrap();

    // Written by a later format: refused as unreadable, not misread.
    let newer = stored.replace(
        &format!("\"v\":{}", poolhub::store::redis::FORMAT),
        "\"v\":99",
    );
    assert_ne!(newer, stored);
    let _: () = redis::cmd("SET")
        .arg(format!("{ns}status:{m}"))
        .arg(newer)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(matches!(
        h.get_status(&m).await,
        Err(StoreError::Corrupt { .. })
    ));
    let _: () = redis::cmd("HSET")
        .arg(format!("{ns}match:{}", MatchId(11)))
        .arg(m.to_string())
        .arg(0)
        .arg("v")
        .arg(99)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(matches!(
        h.claim_outcome(MatchId(11), &m).await,
        Err(ClaimError::Store(StoreError::Corrupt { .. }))
    ));
    h.clear_namespace().await.unwrap();
}

#[tokio::test]
async fn redis_unreachable_is_unavailable_not_a_crash() {
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = dropped.clone();
    let h = RedisHotStore::open_observed(
        RedisOptions {
            url: "redis://127.0.0.1:1".into(),
            ca_file: None,
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
    assert!(matches!(
        h.reserve_slot(&address(1), MatchId(1), 1, Duration::from_secs(1))
            .await,
        Err(StoreError::Unavailable { .. })
    ));
    // Recording a match never waits on the network.
    h.record_match(MatchTicket {
        client: None,
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
    // Closing does not hang on an unreachable Redis.
    h.close().await;
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
            // No close(): the store is only dropped. Drop still joins the writer thread, so
            // this is no crash; it shows that every answered write was already committed,
            // with nothing left for a close to flush.
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
