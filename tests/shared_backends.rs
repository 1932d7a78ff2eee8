//! The hub over HTTP with PostgreSQL and Redis: one hub on each combination, two hubs
//! sharing both, and the faults (a store down under a running hub).

mod backends;
mod common;

use common::eventually;

use common::{addr, registration, Api};
use hyper::StatusCode;
use poolhub::config::Config;
use poolhub::server::TestHub;
use std::time::{Duration, Instant};

fn config(pg: Option<(&str, &str)>, redis: Option<(&str, &str)>) -> Config {
    let mut c = Config::default();
    c.storage.ephemeral = true;
    // These tests poll a miner's status every 20 ms while a backend is cut: more than the
    // default status limit (10/s per miner), which is not what they test.
    c.auth.rate_limits = poolhub::config::RateLimits::unlimited();
    backends::use_shared(&mut c, pg, redis);
    c
}

/// Register, heartbeat, match, outcome, deregister: the whole API path on one hub.
async fn full_cycle(api: &Api, n: u32) {
    let a = addr(n);
    let token = api.register(&a, &["llama3.2"], 16384, 4).await;
    let r = api.heartbeat(&a, &token, 0).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let m = api.match_model("llama3.2", 5).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text);
    assert_eq!(m.json["miners"][0]["address"], a);
    let id = m.json["match_id"].as_str().unwrap().to_string();
    let r = api.outcome(&id, &a, true, 200.0).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        api.outcome(&id, &a, true, 200.0).await.status,
        StatusCode::CONFLICT
    );
    let g = api.get(&format!("/api/v1/miners/{a}")).await;
    assert_eq!(g.json["stats"]["jobs_total"], 1);
    assert_eq!(g.json["status"]["current_load"], 0, "{}", g.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn postgres_hub_serves_the_api_keeps_data_and_creates_no_redb_file() {
    let url = backends::database_url();
    let schema = backends::fresh_name("poolhub_test_");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(Some((&url, &schema)), None);
    cfg.storage.path = dir.path().join("never.redb");
    let hub = TestHub::start(cfg.clone()).await.expect("hub starts");
    let api = Api::new(hub.api_addr);
    full_cycle(&api, 1).await;
    let h = api.get("/health").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.text);
    assert_eq!(h.json["storage"][0]["backend"], "postgres");
    let st = api.get("/api/v1/status").await;
    assert!(st.text.contains("postgres"), "{}", st.text);
    hub.stop().await;
    // A restart loads everything back from PostgreSQL.
    let hub = TestHub::start(cfg).await.expect("hub restarts");
    let api = Api::new(hub.api_addr);
    let g = api.get(&format!("/api/v1/miners/{}", addr(1))).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.json["stats"]["jobs_total"], 1);
    hub.stop().await;
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no redb file with PostgreSQL selected"
    );
    backends::drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL and POOLHUB_TEST_REDIS_URL"]
async fn postgres_and_redis_hub_serves_the_api() {
    let (pg, rd) = (backends::database_url(), backends::redis_url());
    let schema = backends::fresh_name("poolhub_test_");
    let prefix = backends::fresh_name("test:") + ":";
    let hub = TestHub::start(config(Some((&pg, &schema)), Some((&rd, &prefix))))
        .await
        .expect("hub starts");
    let api = Api::new(hub.api_addr);
    full_cycle(&api, 2).await;
    let h = api.get("/health").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.text);
    assert_eq!(h.json["storage"][1]["backend"], "redis");
    hub.stop().await;
    backends::drop_schema(&pg, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_REDIS_URL"]
async fn redb_and_redis_hub_serves_the_api() {
    let rd = backends::redis_url();
    let prefix = backends::fresh_name("test:") + ":";
    let hub = TestHub::start(config(None, Some((&rd, &prefix))))
        .await
        .expect("hub starts");
    full_cycle(&Api::new(hub.api_addr), 3).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL and POOLHUB_TEST_REDIS_URL"]
async fn two_hubs_sharing_postgres_and_redis_see_each_other() {
    let (pg, rd) = (backends::database_url(), backends::redis_url());
    let schema = backends::fresh_name("poolhub_test_");
    let prefix = backends::fresh_name("test:") + ":";
    let cfg = config(Some((&pg, &schema)), Some((&rd, &prefix)));
    let hub_a = TestHub::start(cfg.clone()).await.expect("hub A starts");
    let hub_b = TestHub::start(cfg).await.expect("hub B starts");
    let (a, b) = (Api::new(hub_a.api_addr), Api::new(hub_b.api_addr));
    // Let both subscriptions come up before publishing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Duration::from_secs(1);

    // A registration on A is visible on B within a second.
    let m = addr(10);
    let token = a.register(&m, &["llama3.2"], 16384, 4).await;
    let registered = Instant::now();
    eventually(second, "registration reaches B", || {
        let b = b.clone();
        let m = m.clone();
        async move { b.get(&format!("/api/v1/miners/{m}")).await.status == StatusCode::OK }
    })
    .await;
    eprintln!(
        "registration on A visible on B after {:?}",
        registered.elapsed()
    );

    // A status sent to A makes the miner matchable on B.
    assert_eq!(a.heartbeat(&m, &token, 0).await.status, StatusCode::OK);
    eventually(second, "status reaches B's index", || {
        let b = b.clone();
        let m = m.clone();
        async move {
            let r = b
                .post(
                    "/api/v1/match",
                    &serde_json::json!({"model": "llama3.2", "reserve": false}),
                    None,
                )
                .await;
            r.json["miners"][0]["address"] == serde_json::json!(m)
        }
    })
    .await;

    // The token works on either hub.
    let r = b.heartbeat(&m, &token, 1).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A reservation made on A holds a slot on B too.
    let made = a.match_model("llama3.2", 1).await;
    assert_eq!(made.json["reserved"], true, "{}", made.text);
    let id = made.json["match_id"].as_str().unwrap().to_string();
    eventually(second, "reservation reaches B", || {
        let b = b.clone();
        let m = m.clone();
        async move { b.get(&format!("/api/v1/miners/{m}")).await.json["reserved_slots"] == 1 }
    })
    .await;

    // An outcome reported to B for A's match is accepted (the ledger is in Redis), once.
    let r = b.outcome(&id, &m, true, 300.0).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        a.outcome(&id, &m, true, 300.0).await.status,
        StatusCode::CONFLICT,
        "the claim is shared"
    );
    // ... and A sees the new statistics and the released slot.
    eventually(second, "stats and release reach A", || {
        let a = a.clone();
        let m = m.clone();
        async move {
            let g = a.get(&format!("/api/v1/miners/{m}")).await;
            g.json["stats"]["jobs_total"] == 1 && g.json["reserved_slots"] == 0
        }
    })
    .await;
    assert_eq!(
        b.get(&format!("/api/v1/miners/{m}")).await.json["reserved_slots"],
        0
    );

    // Consecutive failures reported to B cool the miner down on A too.
    for _ in 0..3 {
        let made = b.match_model("llama3.2", 1).await;
        let id = made.json["match_id"].as_str().unwrap().to_string();
        assert_eq!(made.json["miners"][0]["address"], serde_json::json!(m));
        let r = b.outcome(&id, &m, false, 300.0).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    eventually(second, "cooldown reaches A", || {
        let a = a.clone();
        let m = m.clone();
        async move {
            let g = a.get(&format!("/api/v1/miners/{m}")).await;
            g.json["stats"]["cooled_down"] == true && g.json["stats"]["consecutive_failures"] == 3
        }
    })
    .await;

    // Re-registration on B (with A's token) and deregistration reach A.
    let r = b
        .post(
            "/api/v1/miners/register",
            &registration(&m, &["mistral"], 16384, 4),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    eventually(second, "re-registration reaches A", || {
        let a = a.clone();
        let m = m.clone();
        async move {
            a.get(&format!("/api/v1/miners/{m}")).await.json["capabilities"]["models"][0]
                == "mistral"
        }
    })
    .await;
    let r = a.delete(&format!("/api/v1/miners/{m}"), Some(&token)).await;
    assert!(r.status.is_success(), "{}", r.text);
    eventually(second, "deregistration reaches B", || {
        let b = b.clone();
        let m = m.clone();
        async move { b.get(&format!("/api/v1/miners/{m}")).await.status == StatusCode::NOT_FOUND }
    })
    .await;

    hub_a.stop().await;
    hub_b.stop().await;
    backends::drop_schema(&pg, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL and POOLHUB_TEST_REDIS_URL"]
async fn resync_catches_up_with_changes_whose_events_were_missed() {
    let (pg, rd) = (backends::database_url(), backends::redis_url());
    let schema = backends::fresh_name("poolhub_test_");
    let prefix = backends::fresh_name("test:") + ":";
    let cfg = config(Some((&pg, &schema)), Some((&rd, &prefix)));
    let hub_a = TestHub::start(cfg.clone()).await.expect("hub A starts");
    // B starts after A's registration was published: it only learns of it by loading.
    let a = Api::new(hub_a.api_addr);
    let m = addr(20);
    let token = a.register(&m, &["m"], 16384, 4).await;
    assert_eq!(a.heartbeat(&m, &token, 0).await.status, StatusCode::OK);
    let hub_b = TestHub::start(cfg).await.expect("hub B starts");
    let b = Api::new(hub_b.api_addr);
    // The status was published before B subscribed: B takes it from Redis on its resync.
    eventually(
        Duration::from_secs(2),
        "status loaded by B's resync",
        || {
            let b = b.clone();
            async move {
                let r = b
                    .post(
                        "/api/v1/match",
                        &serde_json::json!({"model": "m", "reserve": false}),
                        None,
                    )
                    .await;
                r.json["miners"].as_array().is_some_and(|v| v.len() == 1)
            }
        },
    )
    .await;
    // A miner deleted straight from the durable store disappears on the next resync.
    let s = poolhub::store::postgres::PostgresStore::connect(
        poolhub::store::postgres::PgOptions {
            url: pg.clone(),
            schema: schema.clone(),
            max_connections: 1,
            startup_timeout: Duration::from_secs(5),
        },
        None,
    )
    .await
    .unwrap();
    use poolhub::store::DurableStore;
    let hash = poolhub::hub::hash_token(&token);
    s.delete_miner(&m.parse().unwrap(), &hash).await.unwrap();
    hub_b.hub.resync().await.unwrap();
    assert_eq!(
        b.get(&format!("/api/v1/miners/{m}")).await.status,
        StatusCode::NOT_FOUND
    );
    hub_a.stop().await;
    hub_b.stop().await;
    s.drop_schema().await.unwrap();
}

/// Redis down (here: never there): the hub stays up, says so in /health, refuses status
/// updates with 503, and keeps matching from its index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_the_hub_up_and_matching() {
    let mut cfg = config(None, Some(("redis://127.0.0.1:1", "down:")));
    cfg.storage.ephemeral = true;
    let hub = TestHub::start(cfg).await.expect("hub starts without Redis");
    let api = Api::new(hub.api_addr);
    let h = api.get("/health").await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE, "{}", h.text);
    assert_eq!(h.json["storage"][1]["backend"], "redis");
    assert_eq!(h.json["storage"][1]["healthy"], false);
    assert_eq!(h.json["storage"][0]["healthy"], true);
    // Durable writes do not need Redis.
    let m = addr(30);
    let token = api.register(&m, &["m"], 16384, 4).await;
    let r = api.heartbeat(&m, &token, 0).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "storage_unavailable");
    let r = api.match_model("m", 1).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        api.get(&format!("/api/v1/miners/{m}")).await.status,
        StatusCode::OK
    );
    hub.stop().await;
}

/// PostgreSQL gone under a running hub: writes answer 503 naming it, reads keep working
/// from memory, nothing is half-applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn postgres_down_refuses_writes_and_serves_reads() {
    let url = backends::database_url();
    let schema = backends::fresh_name("poolhub_test_");
    let hub = TestHub::start(config(Some((&url, &schema)), None))
        .await
        .expect("hub starts");
    let api = Api::new(hub.api_addr);
    let m = addr(40);
    let token = api.register(&m, &["m"], 16384, 4).await;
    hub.hub.close().await;
    let h = api.get("/health").await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.json["storage"][0]["backend"], "postgres");
    assert_eq!(h.json["storage"][0]["healthy"], false);
    let r = api
        .post(
            "/api/v1/miners/register",
            &registration(&addr(41), &["m"], 16384, 4),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.text.contains("postgres"), "{}", r.text);
    assert_eq!(api.heartbeat(&m, &token, 0).await.status, StatusCode::OK);
    assert_eq!(api.match_model("m", 1).await.status, StatusCode::OK);
    assert_eq!(
        api.get(&format!("/api/v1/miners/{m}")).await.status,
        StatusCode::OK
    );
    hub.stop().await;
    backends::drop_schema(&url, &schema).await;
}

/// Redis cut under a running hub and restored: 503s and /health while it is gone, matching
/// goes on, and everything recovers by itself within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_REDIS_URL"]
async fn redis_outage_is_survived_and_recovered_from() {
    let rd = backends::redis_url();
    let proxy = backends::Proxy::start(backends::host_port(&rd)).await;
    let prefix = backends::fresh_name("test:") + ":";
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let hub = TestHub::start(config(None, Some((&url, &prefix))))
        .await
        .expect("hub starts");
    let api = Api::new(hub.api_addr);
    let m = addr(50);
    let token = api.register(&m, &["m"], 16384, 4).await;
    assert_eq!(api.heartbeat(&m, &token, 0).await.status, StatusCode::OK);
    proxy.down();
    eventually(Duration::from_secs(5), "status refused while Redis is gone", || {
        let api = api.clone();
        let (m, token) = (m.clone(), token.clone());
        async move { api.heartbeat(&m, &token, 0).await.status == StatusCode::SERVICE_UNAVAILABLE }
    })
    .await;
    let h = api.get("/health").await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE, "{}", h.text);
    assert_eq!(h.json["storage"][1]["backend"], "redis");
    let r = api.match_model("m", 1).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["miners"][0]["address"], m,
        "served from the last known index"
    );
    proxy.up();
    eventually(
        Duration::from_secs(5),
        "recovered after Redis returned",
        || {
            let api = api.clone();
            let (m, token) = (m.clone(), token.clone());
            async move {
                api.heartbeat(&m, &token, 0).await.status == StatusCode::OK
                    && api.get("/health").await.status == StatusCode::OK
            }
        },
    )
    .await;
    // The ledger works again: a new match's outcome is accepted.
    let r = api.match_model("m", 1).await;
    let id = r.json["match_id"].as_str().unwrap().to_string();
    let r = api.outcome(&id, &m, true, 100.0).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    hub.stop().await;
}

/// PostgreSQL cut under a running hub and restored: writes 503 naming it, reads go on, and
/// writes work again by themselves once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn postgres_outage_is_survived_and_recovered_from() {
    let pg = backends::database_url();
    let proxy = backends::Proxy::start(backends::host_port(&pg)).await;
    let mut via = url::Url::parse(&pg).unwrap();
    via.set_port(Some(proxy.port)).unwrap();
    let schema = backends::fresh_name("poolhub_test_");
    let hub = TestHub::start(config(Some((via.as_str(), &schema)), None))
        .await
        .expect("hub starts");
    let api = Api::new(hub.api_addr);
    let m = addr(60);
    let token = api.register(&m, &["m"], 16384, 4).await;
    proxy.down();
    let r = api
        .post(
            "/api/v1/miners/register",
            &registration(&addr(61), &["m"], 16384, 4),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.text.contains("postgres"), "{}", r.text);
    let h = api.get("/health").await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE, "{}", h.text);
    assert_eq!(h.json["storage"][0]["backend"], "postgres");
    assert_eq!(api.heartbeat(&m, &token, 0).await.status, StatusCode::OK);
    assert_eq!(api.match_model("m", 1).await.status, StatusCode::OK);
    proxy.up();
    eventually(Duration::from_secs(5), "writes work again", || {
        let api = api.clone();
        async move {
            api.post(
                "/api/v1/miners/register",
                &registration(&addr(61), &["m"], 16384, 4),
                None,
            )
            .await
            .status
                == StatusCode::CREATED
        }
    })
    .await;
    assert_eq!(api.get("/health").await.status, StatusCode::OK);
    hub.stop().await;
    backends::drop_schema(&pg, &schema).await;
}

/// The binary itself: DATABASE_URL and REDIS_URL select the backends, a restart finds the
/// data in PostgreSQL, SIGTERM stops it cleanly, and no redb file appears.
#[test]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL and POOLHUB_TEST_REDIS_URL"]
fn binary_serves_on_database_url_and_redis_url() {
    let (pg, rd) = (backends::database_url(), backends::redis_url());
    let rt = common::rt();
    let dir = tempfile::tempdir().unwrap();
    let schema = backends::fresh_name("poolhub_test_");
    let prefix = backends::fresh_name("test:") + ":";
    let cfg = dir.path().join("hub.toml");
    std::fs::write(
        &cfg,
        format!("[storage]\npostgres_schema = \"{schema}\"\nredis_prefix = \"{prefix}\"\n"),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let envs = [("DATABASE_URL", pg.as_str()), ("REDIS_URL", rd.as_str())];
    let args = [
        "--config",
        cfg.as_str(),
        "--port",
        "0",
        "--host",
        "127.0.0.1",
    ];
    let served = common::Served::start(dir.path(), &args, &envs, std::process::Stdio::null());
    let api = served.api();
    let m = addr(70);
    rt.block_on(async {
        let token = api.register(&m, &["m"], 16384, 4).await;
        assert_eq!(api.heartbeat(&m, &token, 0).await.status, StatusCode::OK);
        let h = api.get("/health").await;
        assert_eq!(h.status, StatusCode::OK, "{}", h.text);
        assert_eq!(h.json["storage"][0]["backend"], "postgres");
        assert_eq!(h.json["storage"][1]["backend"], "redis");
    });
    assert!(served.sigterm().success());
    let served = common::Served::start(dir.path(), &args, &envs, std::process::Stdio::null());
    let api = served.api();
    rt.block_on(async {
        let g = api.get(&format!("/api/v1/miners/{m}")).await;
        assert_eq!(g.status, StatusCode::OK, "kept in PostgreSQL: {}", g.text);
        assert_eq!(g.json["online"], true, "status kept in Redis: {}", g.text);
    });
    assert!(served.sigterm().success());
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files,
        vec![std::ffi::OsString::from("hub.toml")],
        "no redb file"
    );
    rt.block_on(backends::drop_schema(&pg, &schema));
}
