//! What-if replay: `POST /api/v1/admin/replay` inside a running hub, and `poolhub replay`
//! on a stopped hub's file and against a running hub.

mod common;

use common::{addr, Api, Served};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::process::Stdio;

const ADMIN: &str = "replay-admin-secret-0123456789";

/// Latency matters most, and a 50 % success rate passes.
const CANDIDATE: &str = "[weights]\nsuccess_rate = 0.1\nlatency = 0.6\navailability = 0.2\n\
                         reputation = 0.1\n\n[thresholds]\nmin_success_rate = 0.4\n";

/// Two miners with a record: `fast` answers in 200 ms but fails 3 jobs in 5, `steady` takes
/// 2.5 s and never fails. Answers their addresses and the outcomes reported (`fast` stops
/// being offered once its record fails min_success_rate).
async fn history(api: &Api) -> (String, String, u64) {
    let mut reported = 0;
    let (fast, steady) = (addr(1), addr(2));
    let tf = api.register(&fast, &["m"], 16384, 64).await;
    let ts = api.register(&steady, &["m"], 16384, 64).await;
    for i in 0..30 {
        api.heartbeat(&fast, &tf, 0).await;
        api.heartbeat(&steady, &ts, 0).await;
        let m = api
            .post(
                "/api/v1/match",
                &json!({"model": "m", "limit": 2, "reserve": false}),
                None,
            )
            .await;
        let id = m.json["match_id"].as_str().expect("match id").to_string();
        for o in m.json["miners"].as_array().expect("miners") {
            let a = o["address"].as_str().expect("address");
            // Never three failures in a row, which would cool it down before it has a record.
            let (ok, lat) = if a == fast {
                (matches!(i % 5, 0 | 2), 200.0)
            } else {
                (true, 2500.0)
            };
            let r = api.outcome(&id, a, ok, lat).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            reported += 1;
        }
    }
    (fast, steady, reported)
}

fn change<'a>(report: &'a Value, a: &str) -> &'a Value {
    report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["address"] == a)
        .unwrap_or_else(|| panic!("{a} not in {report}"))
}

#[tokio::test]
async fn the_admin_route_compares_the_running_configuration_with_a_candidate() {
    let mut cfg = poolhub::config::Config::default();
    cfg.storage.ephemeral = true;
    cfg.auth.admin_token = ADMIN.into();
    let hub = poolhub::server::TestHub::start(cfg).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let (fast, steady, reported) = history(&api).await;
    let r = api
        .post(
            "/api/v1/admin/replay",
            &json!({"config": CANDIDATE, "top": 1}),
            Some(ADMIN),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = &r.json;
    assert_eq!(j["outcomes"], reported, "{j}");
    assert_eq!(j["miners"], 2);
    // Now the steady miner leads; under the candidate the fast one does.
    assert_eq!(change(j, &steady)["current"]["rank"], 1, "{j}");
    assert_eq!(change(j, &fast)["candidate"]["rank"], 1, "{j}");
    assert_eq!(change(j, &fast)["rank_change"], 1);
    assert_eq!(j["top_overlap"], 0);
    // 40 % success fails min_success_rate 0.8 (once 10 jobs are on record) and passes 0.4.
    assert_eq!(j["newly_pass"], json!([fast]));
    assert_eq!(j["newly_fail"], json!([]));

    // The running configuration against itself: nothing moves.
    let same = api
        .post("/api/v1/admin/replay", &json!({"config": ""}), Some(ADMIN))
        .await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.text);
    assert!(same.json["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .all(|c| c["rank_change"] == 0));

    // An invalid candidate is a 400 naming it; the route is the admin's.
    let bad = api
        .post(
            "/api/v1/admin/replay",
            &json!({"config": "[weights]\nlatency = 2.0\n"}),
            Some(ADMIN),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert!(bad.text.contains("weights"), "{}", bad.text);
    let anon = api
        .post("/api/v1/admin/replay", &json!({"config": CANDIDATE}), None)
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    hub.stop().await;
}

#[test]
fn poolhub_replay_reads_a_stopped_hubs_file_and_asks_a_running_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("candidate.toml"), CANDIDATE).expect("candidate");
    let args = ["--data", "hub.redb", "--host", "127.0.0.1", "--port", "0"];
    let served = Served::start(
        dir.path(),
        &args,
        &[("POOLHUB_ADMIN_TOKEN", ADMIN)],
        Stdio::inherit(),
    );
    let (fast, _, reported) = common::rt().block_on(history(&served.api()));
    let replay = |extra: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(["replay", "--config", "candidate.toml"])
            .args(extra)
            .current_dir(dir.path())
            .env("POOLHUB_ADMIN_TOKEN", ADMIN)
            .output()
            .expect("poolhub replay")
    };
    // A running hub does it itself (its file is locked).
    let out = replay(&["--hub", &served.base]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        text.contains(&format!("{reported} outcomes replayed")),
        "{text}"
    );
    assert!(
        text.contains(&format!("newly pass the thresholds: {fast}")),
        "{text}"
    );
    assert!(served.sigterm().success());
    // The stopped hub's file, read directly, gives the same report.
    let out = replay(&["--data", "hub.redb", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j["outcomes"], reported);
    assert_eq!(j["newly_pass"], json!([fast]));
    let line = text
        .lines()
        .find(|l| l.starts_with(&fast))
        .unwrap_or_else(|| panic!("{fast} not listed in {text}"));
    assert!(line.contains("fail -> pass"), "{line}");
    // A broken candidate is refused with its key named.
    std::fs::write(dir.path().join("bad.toml"), "[weights]\nlatency = 2.0\n").expect("bad");
    let out = std::process::Command::new(common::BIN)
        .args(["replay", "--config", "bad.toml", "--data", "hub.redb"])
        .current_dir(dir.path())
        .output()
        .expect("poolhub replay");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("weights"));
}
