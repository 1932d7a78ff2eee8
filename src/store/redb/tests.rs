//! What only the redb store can show: files written before rows had a format version.

use super::tables::{AVAILABILITY, META, MINERS, OUTCOMES, ROW_FORMAT_KEY, STATS};
use super::RedbStore;
use crate::store::binrow::BINARY_VERSION;
use crate::store::testing::fixtures::{address, miner};
use crate::store::{DurableStore, StoreError};
use std::path::Path;

/// Rows exactly as the code before `store::rows` wrote them: serde_json of the domain types
/// (no `"v"`), under the same keys.
const LEGACY_MINER: &str = r#"{"address":"0xab00000000000000000000000000000000000001","endpoint":"http://m1.example.com:8080","capabilities":{"models":["llama3.2"],"gpu_memory":16384,"max_concurrent_jobs":4,"job_types":["inference"]},"stake":100,"token_hash":"h","registered_at":1000,"updated_at":1000}"#;
const LEGACY_STATS: &str = r#"{"successes":0.0,"failures":1.0,"latency_sum_ms":250.0,"latency_count":1.0,"consecutive_failures":1,"last_failure_at":10,"jobs_total":1,"jobs_succeeded":0,"jobs_failed":1,"as_of":10}"#;
const LEGACY_AVAILABILITY: &str = r#"{"up":3.0,"total":4.0,"as_of":77}"#;
const LEGACY_OUTCOME: &str = r#"{"match_id":"0000000000000000000000000000000a","address":"0xab00000000000000000000000000000000000001","success":false,"latency_ms":250.0,"at":10,"error":null}"#;

/// A file as the previous code left it: its schema (via the store) and these rows for
/// miner 1, written with redb directly.
fn write_file(path: &Path, miner_row: &str) {
    drop(RedbStore::open(path, None).expect("create"));
    let db = redb::Database::open(path).expect("open");
    let txn = db.begin_write().expect("txn");
    {
        let k = address(1);
        let k = k.as_bytes().as_slice();
        let mut t = txn.open_table(MINERS).expect("miners");
        t.insert(k, miner_row.as_bytes()).expect("miner");
        let mut t = txn.open_table(STATS).expect("stats");
        t.insert(k, LEGACY_STATS.as_bytes()).expect("stats");
        let mut t = txn.open_table(AVAILABILITY).expect("availability");
        t.insert(k, LEGACY_AVAILABILITY.as_bytes())
            .expect("availability");
        let mut t = txn.open_table(OUTCOMES).expect("outcomes");
        t.insert(10u128 << 64, LEGACY_OUTCOME.as_bytes())
            .expect("outcome");
    }
    txn.commit().expect("commit");
}

#[tokio::test]
async fn a_file_written_before_row_versions_opens_and_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("legacy.redb");
    write_file(&path, LEGACY_MINER);
    let s = RedbStore::open(&path, None).expect("open legacy file");
    let all = s.load_all().await.expect("legacy rows load");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].miner, miner(1, "h"));
    assert_eq!(all[0].stats.jobs_failed, 1);
    assert_eq!(all[0].availability.total, 4.0);
    let (outcomes, _) = s.export_outcomes(None, 10).await.expect("export");
    assert_eq!(outcomes.len(), 1);
    assert_eq!((outcomes[0].at, outcomes[0].success), (10, false));
    // Legacy rows are read and updated in place: the token check and the stats both work.
    let st = s
        .record_outcome(&crate::store::testing::fixtures::outcome(1, true, 20), 0.95)
        .await
        .expect("outcome on a legacy row");
    assert_eq!((st.jobs_total, st.jobs_succeeded), (2, 1));
    s.update_miner(&miner(1, "h")).await.expect("update");
    assert_eq!(
        s.load_miner(&address(1))
            .await
            .expect("load")
            .map(|m| m.stats),
        Some(st)
    );
}

#[tokio::test]
async fn a_row_from_a_newer_format_is_corrupt_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("newer.redb");
    write_file(
        &path,
        r#"{"v":4,"id":"0xab00000000000000000000000000000000000001"}"#,
    );
    let s = RedbStore::open(&path, None).expect("the file itself opens");
    for r in [
        s.load_all().await.map(|_| ()),
        s.load_miner(&address(1)).await.map(|_| ()),
        s.update_miner(&miner(1, "h")).await,
    ] {
        let e = r.expect_err("a newer row is refused");
        assert!(
            matches!(
                e,
                StoreError::Corrupt {
                    backend: "redb",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.detail()
                .contains("miner row has format version 4; this poolhub reads up to version 3"),
            "{}",
            e.detail()
        );
    }
}

/// A file as the build before the binary rows left it: JSON rows, and no row format noted.
fn write_file_before_binary_rows(path: &Path, miner_row: &str) {
    write_file(path, miner_row);
    let db = redb::Database::open(path).expect("open");
    let txn = db.begin_write().expect("txn");
    txn.open_table(META)
        .expect("meta")
        .remove(ROW_FORMAT_KEY)
        .expect("remove");
    txn.commit().expect("commit");
}

/// The first byte of each per-miner row of miner 1, and of the outcome row.
fn first_bytes(path: &Path) -> [u8; 4] {
    let db = redb::Database::open(path).expect("open");
    let txn = db.begin_read().expect("txn");
    let k = address(1);
    let k = k.as_bytes().as_slice();
    let first = |def: redb::TableDefinition<&[u8], &[u8]>| {
        let t = txn.open_table(def).expect("table");
        let v = t.get(k).expect("get").expect("row");
        v.value()[0]
    };
    let outcomes = txn.open_table(OUTCOMES).expect("outcomes");
    let o = outcomes
        .get(10u128 << 64)
        .expect("get")
        .expect("row")
        .value()[0];
    [first(MINERS), first(STATS), first(AVAILABILITY), o]
}

#[tokio::test]
async fn a_file_from_before_binary_rows_is_upgraded_in_place_and_reads_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("json-rows.redb");
    write_file_before_binary_rows(&path, LEGACY_MINER);
    assert_eq!(first_bytes(&path), [b'{'; 4]);

    let s = RedbStore::open(&path, None).expect("open the older file");
    let all = s.load_all().await.expect("load");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].miner, miner(1, "h"));
    assert_eq!(all[0].stats.jobs_failed, 1);
    assert_eq!(all[0].availability.total, 4.0);
    drop(s);

    // The per-miner rows are binary now; the outcome row is left as it was.
    assert_eq!(
        first_bytes(&path),
        [BINARY_VERSION, BINARY_VERSION, BINARY_VERSION, b'{']
    );
    // A second open finds nothing to upgrade and reads the same.
    let s = RedbStore::open(&path, None).expect("reopen");
    let again = s.load_all().await.expect("load again");
    assert_eq!(again[0].miner, miner(1, "h"));
    assert_eq!(again[0].stats, all[0].stats);
    assert_eq!(again[0].availability, all[0].availability);
    let (outcomes, _) = s.export_outcomes(None, 10).await.expect("export");
    assert_eq!((outcomes[0].at, outcomes[0].success), (10, false));
}

#[tokio::test]
async fn a_row_the_upgrade_cannot_read_stops_the_open_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("newer-json.redb");
    write_file_before_binary_rows(
        &path,
        r#"{"v":9,"id":"0xab00000000000000000000000000000000000001"}"#,
    );
    let e = RedbStore::open(&path, None)
        .err()
        .expect("a row of a newer format stops the upgrade");
    assert!(e.detail().contains("format version 9"), "{}", e.detail());
    assert_eq!(first_bytes(&path), [b'{'; 4], "nothing was rewritten");
}
