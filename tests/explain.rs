//! `POST /api/v1/match/explain` against an in-process hub: every reason a miner can have,
//! and an explanation reserves nothing.

mod common;

use common::{addr, Api};
use hyper::StatusCode;
use poolhub::config::Config;
use poolhub::server::TestHub;
use serde_json::{json, Value};

const ADMIN: &str = "explain-admin-secret-0123456789";

async fn status(api: &Api, a: &str, token: &str, available: bool, load: u32, temp: f64) {
    let r = api
        .post(
            &format!("/api/v1/miners/{a}/status"),
            &json!({"available": available, "current_load": load,
                    "gpu_utilization": 0.5, "temperature": temp}),
            Some(token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

fn reason_of<'a>(e: &'a Value, a: &str) -> &'a Value {
    e["miners"]
        .as_array()
        .expect("miners")
        .iter()
        .find(|m| m["address"] == a)
        .unwrap_or_else(|| panic!("{a} not explained in {e}"))
}

#[tokio::test]
async fn every_miner_gets_its_reason_and_nothing_is_reserved() {
    let mut cfg = Config::default();
    cfg.storage.ephemeral = true;
    cfg.auth.admin_token = ADMIN.into();
    let hub = TestHub::start(cfg).await.expect("hub starts");
    let api = Api::new(hub.api_addr);
    let best = addr(1); // offered
    let second = addr(2); // eligible, but limit 1: outranked
    let silent = addr(3); // registered, no status: offline
    let resting = addr(4); // unavailable
    let busy = addr(5); // full
    let hot = addr(6); // temperature
    let other = addr(7); // another model
    let small = addr(8); // too little GPU memory
    let unwanted = addr(9); // excluded
    let bad = addr(10); // banned
    let mut tokens = std::collections::HashMap::new();
    for a in [
        &best, &second, &silent, &resting, &busy, &hot, &unwanted, &bad,
    ] {
        tokens.insert(a.clone(), api.register(a, &["llama3.2"], 16384, 2).await);
    }
    tokens.insert(
        other.clone(),
        api.register(&other, &["mistral"], 16384, 2).await,
    );
    tokens.insert(
        small.clone(),
        api.register(&small, &["llama3.2"], 4096, 2).await,
    );
    for a in [&best, &second, &other, &small, &unwanted] {
        status(&api, a, &tokens[a], true, 0, 60.0).await;
    }
    // `best` and `second` tie on their priors; a slightly cooler-than-derate reading keeps
    // both at full score, and `second` is taken out of the tie by a higher load.
    status(&api, &second, &tokens[&second], true, 1, 60.0).await;
    status(&api, &resting, &tokens[&resting], false, 0, 60.0).await;
    status(&api, &busy, &tokens[&busy], true, 2, 60.0).await;
    status(&api, &hot, &tokens[&hot], true, 0, 97.0).await;
    let r = api
        .post(
            "/api/v1/admin/bans",
            &json!({"address": bad, "reason": "forged outcomes"}),
            Some(ADMIN),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);

    let body = json!({"model": "llama3.2", "limit": 1, "exclude": [unwanted],
                      "requirements": {"min_gpu_memory": 8192}});
    let e = api.post("/api/v1/match/explain", &body, None).await;
    assert_eq!(e.status, StatusCode::OK, "{}", e.text);
    let j = &e.json;
    assert_eq!(j["offered"][0]["address"], best.as_str(), "{}", e.text);
    assert_eq!(reason_of(j, &best)["reason"], "offered");
    assert_eq!(reason_of(j, &best)["rank"], 1);
    let out = reason_of(j, &second);
    assert_eq!(out["reason"], "outranked", "{out}");
    assert!(out["score"].as_f64().is_some() && out["last_offered_score"].as_f64().is_some());
    assert_eq!(reason_of(j, &silent)["reason"], "offline");
    assert!(reason_of(j, &silent)["last_status_age_ms"].is_null());
    assert_eq!(reason_of(j, &resting)["reason"], "unavailable");
    let full = reason_of(j, &busy);
    assert_eq!(
        (
            full["reason"].as_str(),
            full["load"].as_u64(),
            full["slots"].as_u64()
        ),
        (Some("full"), Some(2), Some(2))
    );
    let h = reason_of(j, &hot);
    assert_eq!(
        (
            h["reason"].as_str(),
            h["temperature"].as_f64(),
            h["max_temperature"].as_f64()
        ),
        (Some("temperature"), Some(97.0), Some(90.0))
    );
    assert_eq!(reason_of(j, &other)["reason"], "model");
    let g = reason_of(j, &small);
    assert_eq!(
        (
            g["reason"].as_str(),
            g["gpu_memory"].as_u64(),
            g["required"].as_u64()
        ),
        (Some("gpu_memory"), Some(4096), Some(8192))
    );
    assert_eq!(reason_of(j, &unwanted)["reason"], "excluded");
    assert_eq!(j["truncated"], false);

    // One address: a banned one is named so, an unknown one is unregistered.
    let one = |a: &str| json!({"model": "llama3.2", "address": a});
    let e = api.post("/api/v1/match/explain", &one(&bad), None).await;
    assert_eq!(e.json["miners"][0]["reason"], "banned", "{}", e.text);
    assert_eq!(e.json["miners"].as_array().map(Vec::len), Some(1));
    let e = api
        .post("/api/v1/match/explain", &one(&addr(99)), None)
        .await;
    assert_eq!(e.json["miners"][0]["reason"], "unregistered", "{}", e.text);

    // Explaining reserved nothing: the offered miner has no reserved slot.
    let m = api.get(&format!("/api/v1/miners/{best}")).await;
    assert_eq!(m.json["reserved_slots"], 0, "{}", m.text);

    // Bad input is a 4xx naming the field.
    let e = api
        .post(
            "/api/v1/match/explain",
            &json!({"model": "llama3.2", "limit": 0}),
            None,
        )
        .await;
    assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.text);
    assert!(e.text.contains("limit"), "{}", e.text);
    let e = api
        .post(
            "/api/v1/match/explain",
            &json!({"model": "llama3.2", "address": "nope"}),
            None,
        )
        .await;
    assert!(e.status.is_client_error(), "{}", e.text);
    hub.stop().await;
}

#[test]
fn poolhub_explain_prints_each_miners_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = common::Served::start(
        dir.path(),
        &["--ephemeral", "--host", "127.0.0.1", "--port", "0"],
        &[],
        std::process::Stdio::inherit(),
    );
    let (a, b) = (addr(1), addr(2));
    common::rt().block_on(async {
        let api = served.api();
        let t = api.register(&a, &["llama3.2"], 16384, 2).await;
        api.register(&b, &["llama3.2"], 16384, 2).await;
        status(&api, &a, &t, true, 0, 60.0).await;
    });
    let run = |extra: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(["explain", "--hub", &served.base, "--model", "llama3.2"])
            .args(extra)
            .env_remove("POOLHUB_CLIENT_KEY")
            .env_remove("POOLHUB_ADMIN_TOKEN")
            .output()
            .expect("poolhub explain")
    };
    let out = run(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |who: &str| {
        text.lines()
            .find(|l| l.starts_with(who))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line(&a).contains("offered") && line(&a).contains("rank=1"),
        "{text}"
    );
    assert!(line(&b).contains("offline"), "{text}");
    let out = run(&["--limit", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limit"));
}
