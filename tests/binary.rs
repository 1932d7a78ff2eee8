//! Tests of the built `poolhub` binary as an operator runs it: start, restart, kill -9,
//! SIGTERM, configuration errors, `--ephemeral --port 0`.

mod common;

use common::{addr, rt, Served};
use hyper::StatusCode;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = common::BIN;

/// `poolhub serve ARGS` in `dir`.
fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Served {
    Served::start(dir, args, envs, Stdio::inherit())
}

const SERVE: &[&str] = &["--data", "hub.redb", "--host", "127.0.0.1", "--port", "0"];

#[test]
fn kill_9_right_after_answers_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let p = start(dir.path(), SERVE, &[]);
    let api = p.api();
    let n = 24u32;
    let tokens: Vec<(String, String)> = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..n {
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                let a = addr(i);
                let t = api.register(&a, &["llama3.2"], 16384, 1000).await;
                assert_eq!(api.heartbeat(&a, &t, 0).await.status, StatusCode::OK);
                (a, t)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        // Concurrent outcomes: each match offers some miners, every offered one reports.
        let mut reported = 0u64;
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let r = api.match_model("llama3.2", 4).await;
            let id = r.json["match_id"].as_str().unwrap().to_string();
            for m in r.json["miners"].as_array().unwrap() {
                let (api, id, a) = (
                    api.clone(),
                    id.clone(),
                    m["address"].as_str().unwrap().to_string(),
                );
                reported += 1;
                tasks.push(tokio::spawn(async move {
                    let o = api.outcome(&id, &a, true, 300.0).await;
                    assert_eq!(o.status, StatusCode::CREATED, "{}", o.text);
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(reported, 48);
        out
    });
    // The last answer has arrived: kill without any chance to flush.
    p.kill9();

    let p = start(dir.path(), SERVE, &[]);
    let api = p.api();
    rt.block_on(async {
        let list = api.get("/api/v1/miners?limit=500").await;
        assert_eq!(list.json["miners"].as_array().unwrap().len(), n as usize);
        let mut jobs = 0;
        for (a, t) in &tokens {
            let m = api.get(&format!("/api/v1/miners/{a}")).await;
            assert_eq!(m.status, StatusCode::OK);
            assert_eq!(
                m.json["status"],
                serde_json::Value::Null,
                "live status is hot data"
            );
            jobs += m.json["stats"]["jobs_total"].as_u64().unwrap();
            // The token still works, and only for its own miner.
            assert_eq!(api.heartbeat(a, t, 0).await.status, StatusCode::OK);
            assert_eq!(
                api.heartbeat(a, "ph_wrong", 0).await.status,
                StatusCode::FORBIDDEN
            );
        }
        assert_eq!(jobs, 48, "every acknowledged outcome survived");
    });
    p.kill9();
}

#[test]
fn sigterm_stops_gracefully_and_restart_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let p = start(dir.path(), SERVE, &[]);
    let api = p.api();
    let a = addr(7);
    let token = rt.block_on(api.register(&a, &["m"], 16384, 4));
    let st = p.sigterm();
    assert!(st.success(), "exit status {st:?}");

    let p = start(dir.path(), SERVE, &[]);
    let api = p.api();
    rt.block_on(async {
        let m = api.get(&format!("/api/v1/miners/{a}")).await;
        assert_eq!(m.status, StatusCode::OK);
        let r = api
            .post(
                "/api/v1/miners/register",
                &common::registration(&a, &["m"], 16384, 4),
                None,
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "the address stays taken"
        );
        assert_eq!(api.heartbeat(&a, &token, 1).await.status, StatusCode::OK);
    });
    assert!(p.sigterm().success());
}

#[test]
fn ephemeral_with_port_0_writes_nothing_and_runs_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let args = ["--ephemeral", "--host", "127.0.0.1", "--port", "0"];
    let p1 = start(dir.path(), &args, &[]);
    let p2 = start(dir.path(), &args, &[]);
    assert_ne!(p1.base, p2.base);
    rt.block_on(async {
        for p in [&p1, &p2] {
            let api = p.api();
            api.register(&addr(1), &["m"], 16384, 4).await;
            assert_eq!(api.get("/health").await.status, StatusCode::OK);
            let s = api.get("/api/v1/status").await;
            assert_eq!(s.json["ephemeral"], true);
        }
    });
    p1.kill9();
    p2.kill9();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(files.is_empty(), "ephemeral mode wrote {files:?}");
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let free = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(
        dir.path().join("c.toml"),
        "[server]\nport = 1\nhost = \"127.0.0.1\"\n",
    )
    .unwrap();
    let port = free.to_string();
    let p = start(
        dir.path(),
        &["--ephemeral", "--config", "c.toml", "--metrics-port", "0"],
        &[("API_PORT", &port), ("MIN_SUCCESS_RATE", "0.5")],
    );
    assert_eq!(p.base, format!("http://127.0.0.1:{free}"));
    let rt = rt();
    rt.block_on(async {
        let s = p.api().get("/api/v1/status").await;
        assert_eq!(s.json["config"]["thresholds"]["min_success_rate"], 0.5);
    });
    p.kill9();
}

fn run(args: &[&str], dir: &Path, envs: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run poolhub")
}

#[test]
fn invalid_config_stops_before_binding_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[weights]\nsuccess_rate = 0.5\nlatency = 0.25\navailability = 0.2\nreputation = 0.15\n",
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(
        &[
            "serve",
            "--config",
            "bad.toml",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ],
        dir.path(),
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("weights: must sum to 1"), "{err}");
    assert!(out.stdout.is_empty(), "nothing was bound or printed");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port left free"
    );
    assert!(
        !dir.path().join("poolhub.redb").exists(),
        "no storage opened"
    );

    std::fs::write(
        dir.path().join("typo.toml"),
        "[matching]\nheartbeat_timout = 5\n",
    )
    .unwrap();
    let out = run(&["serve", "--config", "typo.toml"], dir.path(), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeat_timout"));

    let out = run(
        &["serve", "--ephemeral"],
        dir.path(),
        &[("API_PORT", "http")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("API_PORT"));
}

#[test]
fn check_config_prints_the_effective_config_or_every_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["check-config"], dir.path(), &[("MAX_MINER_SCORE", "10")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("max_score = 10.0"), "{text}");

    std::fs::write(
        dir.path().join("bad.toml"),
        "[thresholds]\nmin_success_rate = 3.0\n[scoring]\ndecay_factor = 0.0\n",
    )
    .unwrap();
    let out = run(&["check-config", "--config", "bad.toml"], dir.path(), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("thresholds.min_success_rate") && err.contains("scoring.decay_factor"),
        "{err}"
    );
    let _ = json!(null);
}
