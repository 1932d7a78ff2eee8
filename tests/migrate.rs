//! `poolhub migrate` run as the binary: redb → PostgreSQL → redb gives back the same data,
//! a non-empty target is refused unless --force, and redb → redb works without servers.

mod backends;

use poolhub::auth::{ApiKey, Role};
use poolhub::domain::identity::Ban;
use poolhub::store::redb::RedbStore;
use poolhub::store::testing::fixtures::{address, availability, miner};
use poolhub::store::testing::required_env;
use poolhub::store::{DurableStore, OutcomeRecord, StoredMiner};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_poolhub");

/// A redb file with 5 miners, 40 outcomes, an availability checkpoint and a ban.
async fn seed(path: &Path) {
    let s = RedbStore::open(path, None).unwrap();
    for i in 0..5 {
        s.insert_miner(&miner(i, &format!("{i:064x}")))
            .await
            .unwrap();
    }
    for k in 0..40u64 {
        s.record_outcome(
            &OutcomeRecord {
                match_id: format!("{k:032x}"),
                address: address((k % 5) as u8),
                success: k % 3 != 0,
                latency_ms: (k % 2 == 0).then_some(100.0 + k as f64),
                at: 10_000 + k,
                error: (k % 3 == 0).then(|| "timeout".to_string()),
            },
            0.95,
        )
        .await
        .unwrap();
    }
    let av = availability(5.0, 6.0, 123);
    s.save_availability(vec![(address(1), av)]).await.unwrap();
    for (id, role) in [(1u64, Role::Client), (u64::MAX, Role::Admin)] {
        s.insert_key(&ApiKey {
            id,
            name: format!("key-{id}"),
            role,
            created_at: id % 1000,
            digest: poolhub::auth::digest(&format!("secret-{id}")),
        })
        .await
        .unwrap();
    }
    s.ban(&Ban {
        address: address(9),
        reason: Some("forged outcomes".into()),
        banned_at: 77,
    })
    .await
    .unwrap();
    s.close().await;
}

async fn contents(path: &Path) -> (Vec<StoredMiner>, Vec<OutcomeRecord>, Vec<ApiKey>, Vec<Ban>) {
    let s = RedbStore::open(path, None).unwrap();
    let mut m = s.load_all().await.unwrap();
    m.sort_by_key(|x| x.miner.address);
    let (o, _) = s.export_outcomes(None, 100_000).await.unwrap();
    let k = s.load_keys().await.unwrap();
    let b = s.bans().await.unwrap();
    s.close().await;
    (m, o, k, b)
}

fn migrate(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("migrate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn redb_to_postgres_and_back_copies_everything() {
    let url = required_env(backends::DATABASE_VAR);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.redb"), dir.path().join("b.redb"));
    seed(&a).await;
    let schema = backends::fresh_name("poolhub_test_");
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());

    let (ok, err) = migrate(&["--from", a_s, "--to", &url, "--to-schema", &schema]);
    assert!(ok, "{err}");
    assert!(err.contains("5 miners and 40 outcomes"), "{err}");

    // A second run into the now non-empty schema is refused, and --force replaces it.
    let (ok, err) = migrate(&["--from", a_s, "--to", &url, "--to-schema", &schema]);
    assert!(!ok);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    let (ok, err) = migrate(&[
        "--from",
        a_s,
        "--to",
        &url,
        "--to-schema",
        &schema,
        "--force",
    ]);
    assert!(ok, "{err}");

    let (ok, err) = migrate(&["--from", &url, "--from-schema", &schema, "--to", b_s]);
    assert!(ok, "{err}");
    assert!(err.contains("5 miners and 40 outcomes (1 bans)"), "{err}");

    let (ma, oa, ka, ba) = contents(&a).await;
    let (mb, ob, kb, bb) = contents(&b).await;
    assert_eq!(ka.len(), 2);
    assert_eq!(ka, kb, "client keys (digests) survive both ways");
    assert_eq!(ba.len(), 1);
    assert_eq!(ba, bb, "bans survive both ways");
    assert_eq!(
        ma, mb,
        "miners, token hashes, stats, availability survive both ways"
    );
    assert_eq!(oa, ob, "outcome history survives both ways");
    assert_eq!(ma[1].availability.up, 5.0);

    let s = backends::postgres_schema(&url, &schema).await;
    s.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_to_redb_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.redb"), dir.path().join("b.redb"));
    seed(&a).await;
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (ok, err) = migrate(&["--from", a_s, "--to", b_s]);
    assert!(ok, "{err}");
    assert!(err.contains("2 client/admin keys copied"), "{err}");
    assert_eq!(contents(&a).await, contents(&b).await);
    let (ok, err) = migrate(&["--from", a_s, "--to", b_s]);
    assert!(!ok && err.contains("not empty"), "{err}");
    let missing = dir.path().join("missing.redb");
    let (ok, err) = migrate(&["--from", missing.to_str().unwrap(), "--to", b_s]);
    assert!(!ok && err.contains("no such redb file"), "{err}");
    assert!(!missing.exists(), "reading never creates a file");
}
