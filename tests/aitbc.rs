//! AITBC's miners, CLI and monitoring against the built binary, with the exact bodies AITBC's
//! code sends (issue 13): registration by `miner_id` with the miner's own `api_key`, the
//! heartbeat by that key, `aitbc pool-hub status` (`/health`), `aitbc pool-hub sla`
//! (`/v1/sla/status`), `/metrics` on the API port, and `/v1/match` for a coordinator.

mod common;

use common::{eventually, registration, rt, Api, Served};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "aitbc-miner-1-key-0123456789";
const CPU_KEY: &str = "aitbc-cpu-miner-key-9876543210";
const ADMIN: &str = "aitbc-test-admin-secret-0001";

/// The registration `register_pool_hub` sends.
fn aitbc_registration(miner_id: &str, api_key: &str, addr: &str, vram_gb: f64) -> Value {
    json!({
        "miner_id": miner_id, "api_key": api_key, "addr": addr, "proto": "http",
        "gpu_vram_gb": vram_gb, "gpu_name": "NVIDIA GeForce RTX 4090", "cpu_cores": 16,
        "ram_gb": 64.0, "max_parallel": 2, "base_price": "0.01",
        "tags": {"platform": "linux", "cuda": "12.4"},
        "capabilities": ["inference", "training"], "region": "eu-west"
    })
}

/// The heartbeat `send_pool_hub_heartbeat` sends every 15 s.
fn aitbc_heartbeat() -> Value {
    json!({
        "status": "active", "current_jobs": 0, "gpu_utilization": 37, "memory_used": 1024,
        "memory_total": 24576, "network_latency_ms": -1.0
    })
}

/// The match request a coordinator would send.
fn aitbc_match(min_vram_gb: f64) -> Value {
    json!({
        "job_id": "job-42",
        "requirements": {"min_vram_gb": min_vram_gb, "min_ram_gb": 32, "capabilities_any": ["inference"]},
        "hints": {"region": "eu-west"},
        "top_k": 5
    })
}

/// AITBC's client treats any 2xx with a non-empty JSON body as success.
fn accepted_by_aitbc(r: &common::Resp) {
    assert!(r.status.is_success(), "{} {}", r.status, r.text);
    assert!(
        r.json.as_object().is_some_and(|o| !o.is_empty()),
        "{}",
        r.text
    );
}

fn start(dir: &std::path::Path, envs: &[(&str, &str)]) -> Served {
    start_logging(dir, envs, std::process::Stdio::null())
}

fn start_logging(
    dir: &std::path::Path,
    envs: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> Served {
    let mut all = vec![("POOLHUB_METRICS_ON_API_PORT", "true")];
    all.extend_from_slice(envs);
    Served::start(
        dir,
        &["--data", "hub.redb", "--port", "0", "--metrics-port", "0"],
        &all,
        stderr,
    )
}

fn candidates(r: &common::Resp) -> Vec<String> {
    r.json["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text))
        .iter()
        .map(|c| c["miner_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn aitbc_miner_cli_and_monitoring_calls_work_and_a_hijack_gets_403() {
    let dir = tempfile::tempdir().expect("dir");
    // Debug logging to a file, to check that the keys never reach the log.
    let log = std::fs::File::create(dir.path().join("hub.log")).expect("log file");
    let hub = start_logging(dir.path(), &[("LOG_LEVEL", "debug")], log.into());
    let api = hub.api();
    rt().block_on(async {
        // `aitbc pool-hub status` before any miner: ok, zero online, an integer.
        let h = api.get("/health").await;
        assert_eq!(h.status, StatusCode::OK, "{}", h.text);
        assert_eq!(h.json["status"], "ok");
        assert_eq!(h.json["miners_online"], json!(0));

        // The miner registers (at every start: twice), then beats.
        let body = aitbc_registration("aitbc-miner-1", KEY, "http://10.0.0.7:8101", 24.0);
        let first = api.post("/v1/miners/register", &body, None).await;
        accepted_by_aitbc(&first);
        assert_eq!(first.status, StatusCode::CREATED);
        let again = api.post("/v1/miners/register", &body, None).await;
        accepted_by_aitbc(&again);
        assert_eq!(again.status, StatusCode::OK);
        assert!(
            !first.text.contains(KEY) && !again.text.contains(KEY),
            "the key is never echoed"
        );
        let beat = api
            .post("/v1/miners/heartbeat", &aitbc_heartbeat(), Some(KEY))
            .await;
        accepted_by_aitbc(&beat);

        // The CLI's checks.
        let h = api.get("/health").await;
        assert_eq!(h.json["status"], "ok");
        assert!(
            h.json["miners_online"].as_u64().is_some_and(|n| n >= 1),
            "{}",
            h.text
        );
        let sla = api.get("/v1/sla/status").await;
        assert_eq!(sla.status, StatusCode::OK, "{}", sla.text);
        assert_eq!(sla.json["status"], "healthy", "{}", sla.text);
        assert_eq!(sla.json["active_violations"], json!(0));
        assert_eq!(sla.json["recent_metrics_count"], json!(1));
        assert!(sla.json["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        // Monitoring scrapes the API port.
        let m = api.get("/metrics").await;
        assert_eq!(m.status, StatusCode::OK);
        assert!(
            m.text.lines().any(|l| l == "poolhub_miners_online 1"),
            "{}",
            m.text
        );

        // A coordinator's match finds it, with every field AITBC's answer has.
        let r = api.post("/v1/match", &aitbc_match(16.0), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["job_id"], "job-42");
        let c = &r.json["candidates"][0];
        assert_eq!(c["miner_id"], "aitbc-miner-1");
        assert_eq!(c["addr"], "http://10.0.0.7:8101");
        assert_eq!(c["proto"], "http");
        assert!(c["score"].as_f64().is_some_and(|s| s > 0.0), "{c}");
        assert!(c["eta_ms"].as_u64().is_some(), "{c}");
        assert_eq!(c["price"], json!(0.01));
        assert!(c["explain"].as_str().is_some_and(|e| e.contains("score=")));

        // A CPU miner (0 GB) matches only a job asking for no GPU memory.
        let cpu = aitbc_registration("aitbc-cpu-1", CPU_KEY, "http://10.0.0.8:8101", 0.0);
        accepted_by_aitbc(&api.post("/v1/miners/register", &cpu, None).await);
        accepted_by_aitbc(
            &api.post("/v1/miners/heartbeat", &aitbc_heartbeat(), Some(CPU_KEY))
                .await,
        );
        let gpu_job = api.post("/v1/match", &aitbc_match(8.0), None).await;
        assert_eq!(candidates(&gpu_job), ["aitbc-miner-1"]);
        let any_job = api.post("/v1/match", &aitbc_match(0.0), None).await;
        let mut both = candidates(&any_job);
        both.sort();
        assert_eq!(both, ["aitbc-cpu-1", "aitbc-miner-1"]);

        // poolhub's own API shows them by name, with the mapped and the kept fields.
        let g = api.get("/api/v1/miners/aitbc-miner-1").await;
        assert_eq!(g.status, StatusCode::OK, "{}", g.text);
        assert_eq!(g.json["miner_id"], "aitbc-miner-1");
        assert!(g.json["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("0xa17bc0de")));
        assert_eq!(g.json["capabilities"]["gpu_memory"], 24576);
        assert_eq!(g.json["capabilities"]["max_concurrent_jobs"], 2);
        assert_eq!(
            g.json["capabilities"]["job_types"],
            json!(["inference", "training"])
        );
        assert_eq!(g.json["profile"]["region"], "eu-west");
        assert_eq!(g.json["profile"]["tags"]["cuda"], "12.4");
        assert_eq!(g.json["status"]["gpu_utilization"], json!(0.37));
        assert_eq!(g.json["status"]["memory_total_mb"], 24576);
        assert!(!g.text.contains(KEY));
        let list = api.get("/api/v1/miners").await;
        assert_eq!(
            list.json["miners"]
                .as_array()
                .map(|m| m.iter().filter(|x| x["miner_id"].is_string()).count()),
            Some(2),
            "{}",
            list.text
        );
        // They list no models, so a match for a named model does not offer them.
        let by_model = api
            .post(
                "/api/v1/match",
                &json!({"model": "llama3.2", "limit": 5}),
                None,
            )
            .await;
        assert_eq!(by_model.status, StatusCode::OK);
        assert_eq!(by_model.json["miners"], json!([]), "{}", by_model.text);

        // Hijack: the same miner_id with another key, pointing elsewhere.
        let hijack = aitbc_registration(
            "aitbc-miner-1",
            "attacker-chosen-key-00000",
            "http://203.0.113.9:8101",
            80.0,
        );
        let r = api.post("/v1/miners/register", &hijack, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(r.json["error"]["code"], "forbidden");
        let g = api.get("/api/v1/miners/aitbc-miner-1").await;
        assert_eq!(g.json["endpoint"], "http://10.0.0.7:8101", "unchanged");
        assert_eq!(g.json["capabilities"]["gpu_memory"], 24576);
        // Nor can the address route reach the name's reserved address.
        let squat = api
            .post(
                "/api/v1/miners/register",
                &registration(
                    g.json["address"].as_str().expect("address"),
                    &["llama3.2"],
                    16384,
                    4,
                ),
                None,
            )
            .await;
        // Well-formed, but nobody may claim it by address: 403.
        assert_eq!(squat.status, StatusCode::FORBIDDEN, "{}", squat.text);
        assert_eq!(
            squat.json["error"]["code"], "reserved_address",
            "{}",
            squat.text
        );
        assert_eq!(squat.json["error"]["field"], "address", "{}", squat.text);

        // Heartbeats: an unknown key and no key are 401; a short key is refused by name.
        let r = api
            .post(
                "/v1/miners/heartbeat",
                &aitbc_heartbeat(),
                Some("no-such-key-00000000"),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        let r = api
            .post("/v1/miners/heartbeat", &aitbc_heartbeat(), None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        let short = aitbc_registration("aitbc-miner-9", "short-key", "http://h:1", 8.0);
        let r = api.post("/v1/miners/register", &short, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.json["error"]["field"], "api_key", "{}", r.text);
        // Bad input is a 4xx naming the field, never a 5xx.
        let mut bad = aitbc_heartbeat();
        bad["gpu_utilization"] = json!(250);
        let r = api.post("/v1/miners/heartbeat", &bad, Some(KEY)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.json["error"]["field"], "gpu_utilization");
        let r = api
            .post("/v1/match", &json!({"job_id": "j", "top_k": 0}), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.json["error"]["field"], "top_k");
    });

    // After a restart the names, profiles and keys are all there: the same key still beats.
    assert!(hub.sigterm().success());
    let hub = start(dir.path(), &[("POOLHUB_ADMIN_TOKEN", ADMIN)]);
    let api = hub.api();
    rt().block_on(async {
        let r = api
            .post("/v1/miners/heartbeat", &aitbc_heartbeat(), Some(KEY))
            .await;
        accepted_by_aitbc(&r);
        assert_eq!(r.json["miner_id"], "aitbc-miner-1");
        let g = api.get("/api/v1/miners/aitbc-miner-1").await;
        assert_eq!(g.json["profile"]["gpu_name"], "NVIDIA GeForce RTX 4090");
        let r = api
            .post(
                "/v1/miners/register",
                &aitbc_registration(
                    "aitbc-miner-1",
                    "attacker-chosen-key-00000",
                    "http://x:1",
                    8.0,
                ),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        // The operator frees the name; then another key may take it.
        let r = api
            .delete("/api/v1/miners/aitbc-miner-1", Some(ADMIN))
            .await;
        assert!(r.status.is_success(), "{}", r.text);
        let r = api
            .post("/v1/miners/heartbeat", &aitbc_heartbeat(), Some(KEY))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        let r = api
            .post(
                "/v1/miners/register",
                &aitbc_registration(
                    "aitbc-miner-1",
                    "new-owner-key-0123456789",
                    "http://y:1",
                    8.0,
                ),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    });
    let log = std::fs::read_to_string(dir.path().join("hub.log")).expect("log");
    assert!(log.contains("miner registered"), "debug log written: {log}");
    for secret in [KEY, CPU_KEY, "attacker-chosen-key-00000"] {
        assert!(!log.contains(secret), "a key reached the log");
    }
}

/// The heartbeat keeps an AITBC miner online and matchable; when it stops, the miner drops
/// out of matches, `/health`'s count and the SLA.
#[test]
fn the_heartbeat_keeps_an_aitbc_miner_online_and_matchable() {
    let dir = tempfile::tempdir().expect("dir");
    let hub = start(dir.path(), &[("HEARTBEAT_TIMEOUT", "2")]);
    let api = hub.api();
    rt().block_on(async {
        let body = aitbc_registration("aitbc-miner-1", KEY, "http://10.0.0.7:8101", 24.0);
        accepted_by_aitbc(&api.post("/v1/miners/register", &body, None).await);
        // Beats every 500 ms for 4 s, twice the timeout: online and matchable throughout.
        for _ in 0..8 {
            accepted_by_aitbc(
                &api.post("/v1/miners/heartbeat", &aitbc_heartbeat(), Some(KEY))
                    .await,
            );
            let r = api.post("/v1/match", &aitbc_match(16.0), None).await;
            assert_eq!(candidates(&r), ["aitbc-miner-1"], "{}", r.text);
            assert_eq!(api.get("/health").await.json["miners_online"], json!(1));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Silence: it goes offline.
        eventually(
            Duration::from_secs(10),
            "the silent miner is offline",
            || {
                let api = api.clone();
                async move { api.get("/health").await.json["miners_online"] == json!(0) }
            },
        )
        .await;
        let r = api.post("/v1/match", &aitbc_match(16.0), None).await;
        assert!(candidates(&r).is_empty(), "{}", r.text);
        assert_eq!(api.get("/v1/sla/status").await.json["status"], "critical");
        // A "busy" heartbeat: online, not matchable.
        let mut busy = aitbc_heartbeat();
        busy["status"] = json!("busy");
        accepted_by_aitbc(&api.post("/v1/miners/heartbeat", &busy, Some(KEY)).await);
        assert_eq!(api.get("/health").await.json["miners_online"], json!(1));
        let r = api.post("/v1/match", &aitbc_match(16.0), None).await;
        assert!(candidates(&r).is_empty(), "{}", r.text);
    });
}

/// `compat.aitbc = false` takes the `/v1` routes away and leaves `/api/v1` as it is.
#[test]
fn the_aitbc_routes_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("dir");
    let hub = start(dir.path(), &[("POOLHUB_COMPAT_AITBC", "false")]);
    let api: Api = hub.api();
    rt().block_on(async {
        let body = aitbc_registration("aitbc-miner-1", KEY, "http://10.0.0.7:8101", 24.0);
        let r = api.post("/v1/miners/register", &body, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        assert_eq!(
            api.get("/v1/sla/status").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(api.get("/health").await.status, StatusCode::OK);
    });
}

mod backends;

/// Two hubs sharing PostgreSQL + Redis: a miner registered by name on one is seen, beats and
/// is matched through the other, and a hijack through either is refused, even before the
/// second hub's index has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL and POOLHUB_TEST_REDIS_URL"]
async fn two_hubs_sharing_postgres_and_redis_serve_aitbc_miners() {
    use poolhub::server::TestHub;
    let (pg, rd) = (backends::database_url(), backends::redis_url());
    let schema = backends::fresh_name("poolhub_test_");
    let prefix = backends::fresh_name("test:") + ":";
    let mut cfg = poolhub::config::Config::default();
    cfg.storage.ephemeral = true;
    backends::use_shared(&mut cfg, Some((&pg, &schema)), Some((&rd, &prefix)));
    let hub_a = TestHub::start(cfg.clone()).await.expect("hub A starts");
    let hub_b = TestHub::start(cfg).await.expect("hub B starts");
    let (a, b) = (Api::new(hub_a.api_addr), Api::new(hub_b.api_addr));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let body = aitbc_registration("aitbc-miner-1", KEY, "http://10.0.0.7:8101", 24.0);
    accepted_by_aitbc(&a.post("/v1/miners/register", &body, None).await);
    // At once through B, caught up or not: the stored record decides.
    let hijack = aitbc_registration(
        "aitbc-miner-1",
        "attacker-chosen-key-00000",
        "http://x:1",
        8.0,
    );
    let r = b.post("/v1/miners/register", &hijack, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    eventually(Duration::from_secs(5), "B knows the named miner", || {
        let b = b.clone();
        async move { b.get("/api/v1/miners/aitbc-miner-1").await.json["miner_id"] == "aitbc-miner-1" }
    })
    .await;
    // B finds it by its key; A sees the heartbeat and matches it.
    let beat = b
        .post("/v1/miners/heartbeat", &aitbc_heartbeat(), Some(KEY))
        .await;
    accepted_by_aitbc(&beat);
    eventually(
        Duration::from_secs(5),
        "A matches the miner that beat on B",
        || {
            let a = a.clone();
            async move {
                candidates(&a.post("/v1/match", &aitbc_match(16.0), None).await)
                    == ["aitbc-miner-1"]
            }
        },
    )
    .await;
    assert_eq!(b.get("/health").await.json["miners_online"], json!(1));
    // A re-registration with the key through B updates the one record both hubs hold.
    let mut moved = body.clone();
    moved["addr"] = json!("http://10.0.0.70:8101");
    let r = b.post("/v1/miners/register", &moved, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    eventually(Duration::from_secs(5), "A sees the new addr", || {
        let a = a.clone();
        async move {
            a.get("/api/v1/miners/aitbc-miner-1").await.json["endpoint"] == "http://10.0.0.70:8101"
        }
    })
    .await;
    let r = a.post("/v1/miners/register", &hijack, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    hub_a.stop().await;
    hub_b.stop().await;
    backends::drop_schema(&pg, &schema).await;
}
