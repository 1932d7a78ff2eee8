//! Black-box tests of the HTTP API against a hub started in-process on 127.0.0.1:0.

mod common;

use common::{addr, registration, Api};
use hyper::{Method, StatusCode};
use poolhub::config::Config;
use poolhub::server::TestHub;
use serde_json::json;

fn cfg() -> Config {
    let mut c = Config::default();
    c.storage.ephemeral = true;
    c
}

async fn start() -> (TestHub, Api) {
    let hub = TestHub::start(cfg()).await.expect("hub starts");
    let api = Api::new(hub.api_addr);
    (hub, api)
}

#[tokio::test]
async fn seed_requests_work_as_written() {
    let (hub, api) = start().await;
    let a = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01";
    let r = api
        .post(
            "/api/v1/miners/register",
            &json!({ "address": a, "endpoint": "http://miner.example.com:8080",
                     "capabilities": { "models": ["llama3.2", "mistral"], "gpu_memory": 16384, "max_concurrent_jobs": 4 },
                     "stake": 10000 }),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = r.json["token"].as_str().unwrap().to_string();
    assert!(token.len() >= 32);
    assert_eq!(r.json["address"], a.to_lowercase());

    let r = api
        .post(
            &format!("/api/v1/miners/{a}/status"),
            &json!({ "available": true, "current_load": 2, "gpu_utilization": 0.75, "temperature": 65 }),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let r = api
        .post(
            "/api/v1/match",
            &json!({ "job_type": "inference", "model": "llama3.2",
                     "requirements": { "min_gpu_memory": 8192, "max_latency": 5000 } }),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let miners = r.json["miners"].as_array().unwrap();
    assert_eq!(miners.len(), 1);
    let m = &miners[0];
    assert_eq!(m["address"], a.to_lowercase());
    assert_eq!(m["endpoint"], "http://miner.example.com:8080");
    let score = m["score"].as_f64().unwrap();
    assert!(score > 0.0 && score <= 1.0);
    // Prior latency 1000 ms, load 2 of 4 -> 1500 ms.
    assert_eq!(m["estimated_time"], 1500);
    assert_eq!(r.json["match_id"].as_str().unwrap().len(), 32);

    assert_eq!(api.get("/health").await.status, StatusCode::OK);
    let s = api.get("/api/v1/status").await;
    assert_eq!(s.json["miners"]["registered"], 1);
    assert_eq!(s.json["miners"]["online"], 1);
    assert_eq!(s.json["matches_served"], 1);
    assert_eq!(s.json["version"], env!("CARGO_PKG_VERSION"));
    hub.stop().await;
}

#[tokio::test]
async fn changing_a_miner_needs_its_own_token() {
    let (hub, api) = start().await;
    let (a, b) = (addr(1), addr(2));
    let ta = api.register(&a, &["m"], 16384, 4).await;
    let tb = api.register(&b, &["m"], 16384, 4).await;
    let body = registration(&a, &["m", "n"], 32768, 8);

    let r = api.post("/api/v1/miners/register", &body, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "unauthorized");
    let r = api.post("/api/v1/miners/register", &body, Some(&tb)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .post("/api/v1/miners/register", &body, Some("ph_nonsense"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Unchanged by the refused attempts.
    let g = api.get(&format!("/api/v1/miners/{a}")).await;
    assert_eq!(g.json["capabilities"]["gpu_memory"], 16384);

    let r = api.post("/api/v1/miners/register", &body, Some(&ta)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json.get("token").is_none(), "token is shown only once");
    let g = api
        .get(&format!(
            "/api/v1/miners/{}",
            a.to_uppercase().replace("0X", "0x")
        ))
        .await;
    assert_eq!(
        g.status,
        StatusCode::OK,
        "addresses compare case-insensitively"
    );
    assert_eq!(g.json["capabilities"]["gpu_memory"], 32768);

    let st = json!({"available": true, "current_load": 0, "gpu_utilization": 0.1});
    let p = format!("/api/v1/miners/{a}/status");
    assert_eq!(
        api.post(&p, &st, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.post(&p, &st, Some(&tb)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(api.post(&p, &st, Some(&ta)).await.status, StatusCode::OK);

    let d = format!("/api/v1/miners/{a}");
    assert_eq!(api.delete(&d, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.delete(&d, Some(&tb)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(api.get(&d).await.status, StatusCode::OK);
    assert_eq!(api.delete(&d, Some(&ta)).await.status, StatusCode::OK);
    assert_eq!(api.get(&d).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.delete(&d, Some(&ta)).await.status,
        StatusCode::NOT_FOUND
    );

    // The address is free again: a new registration gets a new token.
    let ta2 = api.register(&a, &["m"], 16384, 4).await;
    assert_ne!(ta, ta2);
    hub.stop().await;
}

#[tokio::test]
async fn outcomes_only_for_offered_miners_and_once() {
    let (hub, api) = start().await;
    let (a, b) = (addr(10), addr(11));
    let ta = api.register(&a, &["llama3.2"], 16384, 4).await;
    let tb = api.register(&b, &["other"], 16384, 4).await;
    api.heartbeat(&a, &ta, 0).await;
    api.heartbeat(&b, &tb, 0).await;
    let m = api.match_model("llama3.2", 5).await;
    let id = m.json["match_id"].as_str().unwrap().to_string();
    assert_eq!(m.json["miners"][0]["address"], a);
    assert_eq!(m.json["reserved"], true);

    let r = api.outcome(&id, &b, true, 100.0).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "not_offered");
    let r = api
        .outcome("0123456789abcdef0123456789abcdef", &a, true, 100.0)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["error"]["code"], "unknown_match");
    let r = api.outcome("not-a-match-id", &a, true, 100.0).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"]["field"], "match_id");
    let r = api.outcome(&id, &a, true, -5.0).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let before = api.get(&format!("/api/v1/miners/{a}")).await;
    assert_eq!(before.json["reserved_slots"], 1);
    let r = api.outcome(&id, &a, true, 250.0).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = api.outcome(&id, &a, false, 250.0).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["error"]["code"], "already_reported");

    let after = api.get(&format!("/api/v1/miners/{a}")).await;
    assert_eq!(
        after.json["reserved_slots"], 0,
        "the outcome released the reservation"
    );
    assert_eq!(after.json["stats"]["jobs_total"], 1);
    assert_eq!(after.json["stats"]["jobs_succeeded"], 1);
    let s_after = after.json["score"]["value"].as_f64().unwrap();
    let s_before = before.json["score"]["value"].as_f64().unwrap();
    assert!(s_after > s_before, "a fast success raises the score");
    for c in ["success_rate", "latency", "availability", "reputation"] {
        let v = after.json["score"]["components"][c].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{c} = {v}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn match_filters_and_limits() {
    let (hub, api) = start().await;
    let big = addr(20);
    let small = addr(21);
    let busy = addr(22);
    let silent = addr(23);
    let t_big = api.register(&big, &["llama3.2"], 24576, 4).await;
    let t_small = api.register(&small, &["llama3.2"], 4096, 4).await;
    let t_busy = api.register(&busy, &["llama3.2"], 16384, 2).await;
    let _t_silent = api.register(&silent, &["llama3.2"], 16384, 4).await;
    api.heartbeat(&big, &t_big, 0).await;
    api.heartbeat(&small, &t_small, 0).await;
    api.heartbeat(&busy, &t_busy, 2).await; // at its limit
    let unavailable = addr(24);
    let t_un = api.register(&unavailable, &["llama3.2"], 16384, 4).await;
    api.post(
        &format!("/api/v1/miners/{unavailable}/status"),
        &json!({"available": false, "current_load": 0, "gpu_utilization": 0.0}),
        Some(&t_un),
    )
    .await;

    let body =
        json!({"model": "llama3.2", "requirements": {"min_gpu_memory": 8192}, "reserve": false});
    let r = api.post("/api/v1/match", &body, None).await;
    let got: Vec<_> = r.json["miners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["address"].clone())
        .collect();
    assert_eq!(
        got,
        vec![json!(big)],
        "memory, load, availability and freshness all filter"
    );

    let r = api
        .post(
            "/api/v1/match",
            &json!({"model": "llama3.2", "exclude": [big], "reserve": false}),
            None,
        )
        .await;
    let got: Vec<_> = r.json["miners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["address"].clone())
        .collect();
    assert_eq!(got, vec![json!(small)]);

    let r = api
        .post(
            "/api/v1/match",
            &json!({"model": "llama3.2", "requirements": {"max_latency": 500}}),
            None,
        )
        .await;
    assert_eq!(
        r.json["miners"].as_array().unwrap().len(),
        0,
        "prior latency 1000 ms > 500"
    );

    let r = api
        .post(
            "/api/v1/match",
            &json!({"model": "llama3.2", "job_type": "training"}),
            None,
        )
        .await;
    assert_eq!(r.json["miners"].as_array().unwrap().len(), 0);

    for bad in [
        json!({"model": "llama3.2", "limit": 0}),
        json!({"model": "llama3.2", "limit": 101}),
    ] {
        let r = api.post("/api/v1/match", &bad, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json["error"]["field"], "limit");
    }
    hub.stop().await;
}

#[tokio::test]
async fn concurrent_matches_spread_over_equal_miners() {
    let (hub, api) = start().await;
    let mut tokens = Vec::new();
    for i in 0..4 {
        let a = addr(30 + i);
        let t = api.register(&a, &["llama3.2"], 16384, 4).await;
        api.heartbeat(&a, &t, 0).await;
        tokens.push(t);
    }
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..4 {
        let r = api.match_model("llama3.2", 1).await;
        firsts.insert(r.json["miners"][0]["address"].as_str().unwrap().to_string());
    }
    assert_eq!(
        firsts.len(),
        4,
        "each match reserved a slot, so the next went elsewhere"
    );
    let s = api.get("/api/v1/status").await;
    assert_eq!(s.json["reservations_in_flight"], 4);
    hub.stop().await;
}

#[tokio::test]
async fn failing_miner_is_cooled_down_but_never_the_whole_pool() {
    let (good, bad) = (addr(40), addr(41));
    // Thresholds would drop `bad` after two failures (success rate (0 + 5*0.9)/(2 + 5) < 0.8):
    // switch them off to see the cooldown on its own.
    let mut c = cfg();
    c.thresholds.min_success_rate = 0.0;
    let hub = TestHub::start(c).await.unwrap();
    let api = Api::new(hub.api_addr);
    let tb = api.register(&bad, &["m"], 16384, 100).await;
    let tg = api.register(&good, &["m"], 16384, 100).await;
    api.heartbeat(&bad, &tb, 0).await;
    api.heartbeat(&good, &tg, 0).await;
    for _ in 0..3 {
        let r = api
            .post(
                "/api/v1/match",
                &json!({"model": "m", "limit": 2, "reserve": false}),
                None,
            )
            .await;
        let id = r.json["match_id"].as_str().unwrap().to_string();
        let offered: Vec<String> = r.json["miners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["address"].as_str().unwrap().to_string())
            .collect();
        assert!(offered.contains(&bad), "offered until its cooldown starts");
        let o = api.outcome(&id, &bad, false, 100.0).await;
        assert_eq!(o.status, StatusCode::CREATED, "{}", o.text);
    }
    let m = api.get(&format!("/api/v1/miners/{bad}")).await;
    assert_eq!(m.json["stats"]["consecutive_failures"], 3);
    assert_eq!(m.json["stats"]["cooled_down"], true);
    let r = api
        .post(
            "/api/v1/match",
            &json!({"model": "m", "limit": 2, "reserve": false}),
            None,
        )
        .await;
    let offered: Vec<_> = r.json["miners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["address"].clone())
        .collect();
    assert_eq!(
        offered,
        vec![json!(good)],
        "cooled-down miner skipped while others are healthy"
    );
    assert_eq!(r.json["panic"], false);
    // Only the cooled miner serves this model: panic mode offers it rather than nothing.
    let r = api
        .post(
            "/api/v1/match",
            &json!({"model": "m", "exclude": [good], "reserve": false}),
            None,
        )
        .await;
    assert_eq!(r.json["miners"][0]["address"], bad);
    assert_eq!(r.json["panic"], true);
    hub.stop().await;
}

#[tokio::test]
async fn listing_filters_and_paginates() {
    let (hub, api) = start().await;
    for i in 0..7u32 {
        let a = addr(100 + i);
        let model = if i % 2 == 0 { "even" } else { "odd" };
        let t = api.register(&a, &[model], 16384, 4).await;
        if i < 3 {
            api.heartbeat(&a, &t, 0).await;
        }
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/miners?limit=3&cursor={c}"),
            None => "/api/v1/miners?limit=3".to_string(),
        };
        let r = api.get(&path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        for m in r.json["miners"].as_array().unwrap() {
            seen.push(m["address"].as_str().unwrap().to_string());
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "pages are in address order without repeats");
    assert_eq!(seen.len(), 7);

    let r = api.get("/api/v1/miners?model=even").await;
    assert_eq!(r.json["miners"].as_array().unwrap().len(), 4);
    let r = api.get("/api/v1/miners?available=true").await;
    assert_eq!(r.json["miners"].as_array().unwrap().len(), 3);
    let r = api.get("/api/v1/miners?available=false&model=odd").await;
    assert_eq!(r.json["miners"].as_array().unwrap().len(), 2);
    for bad in [
        "/api/v1/miners?limit=0",
        "/api/v1/miners?limit=x",
        "/api/v1/miners?cursor=zz",
        "/api/v1/miners?available=maybe",
    ] {
        let r = api.get(bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(r.json["error"]["code"].is_string());
    }
    hub.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let (hub, api) = start().await;
    let a = addr(200);
    let token = api.register(&a, &["m"], 16384, 4).await;
    let snapshot = api.get(&format!("/api/v1/miners/{a}")).await.json;

    let reg = "/api/v1/miners/register";
    let base = registration(&addr(201), &["m"], 16384, 4);
    let with = |path: &str, v: serde_json::Value| {
        let mut b = base.clone();
        let mut cur = &mut b;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[parts[parts.len() - 1]] = v;
        b
    };
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (with("address", json!("0x123")), "address"),
        (with("address", json!(42)), "address"),
        (with("endpoint", json!("ftp://x")), "endpoint"),
        (with("endpoint", json!("not a url")), "endpoint"),
        (
            with("capabilities.gpu_memory", json!(-1)),
            "capabilities.gpu_memory",
        ),
        (
            with("capabilities.gpu_memory", json!("lots")),
            "capabilities.gpu_memory",
        ),
        (
            with("capabilities.gpu_memory", json!(1e30)),
            "capabilities.gpu_memory",
        ),
        (
            with("capabilities.max_concurrent_jobs", json!(0)),
            "capabilities.max_concurrent_jobs",
        ),
        (
            with("capabilities.models", json!([])),
            "capabilities.models",
        ),
        (with("stake", json!(-10)), "stake"),
    ];
    for (body, field) in cases {
        let r = api.post(reg, &body, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.json["error"]["field"], field, "{}", r.text);
        assert!(r.json["error"]["message"].as_str().unwrap().len() > 5);
    }
    let r = api.post_raw(reg, b"{not json").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"]["code"], "invalid_json");
    let r = api.post_raw(reg, b"").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let big = vec![b' '; 2 * 1024 * 1024];
    let r = api.post_raw(reg, &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json["error"]["code"], "payload_too_large");

    let sp = format!("/api/v1/miners/{a}/status");
    for body in [
        json!({"available": true, "gpu_utilization": 1.5}),
        json!({"available": true, "gpu_utilization": -0.1}),
        json!({"available": true, "current_load": -1}),
        json!({"available": "yes"}),
        json!({"available": true, "temperature": 5000}),
    ] {
        let r = api.post(&sp, &body, Some(&token)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
    }
    let r = api
        .post(
            "/api/v1/miners/0xnope/status",
            &json!({"available": true}),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"]["field"], "address");

    let r = api
        .post(
            "/api/v1/match",
            &json!({"model": "m", "requirements": {"max_latency": -3}}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = api
        .post(
            "/api/v1/match",
            &json!({"model": "m", "exclude": ["0x1"]}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = api
        .post("/api/v1/match", &json!({"job_type": "inference"}), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "model is required");

    let r = api.get("/api/v1/nothing-here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["error"]["code"], "not_found");
    let r = api.send(Method::PUT, "/api/v1/match", None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json["error"]["code"], "method_not_allowed");
    let r = api
        .send(Method::PATCH, &format!("/api/v1/miners/{a}"), None, None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // Nothing changed: one miner, exactly as before.
    let list = api.get("/api/v1/miners").await;
    assert_eq!(list.json["miners"].as_array().unwrap().len(), 1);
    let now = api.get(&format!("/api/v1/miners/{a}")).await.json;
    assert_eq!(now["capabilities"], snapshot["capabilities"]);
    assert_eq!(now["status"], serde_json::Value::Null);
    hub.stop().await;
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let (hub, api) = start().await;
    let a = addr(300);
    let t = api.register(&a, &["m"], 16384, 4).await;
    api.heartbeat(&a, &t, 0).await;
    let r = api.match_model("m", 1).await;
    let id = r.json["match_id"].as_str().unwrap().to_string();
    api.outcome(&id, &a, true, 100.0).await;
    let metrics = Api::new(hub.metrics_addr).get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text;
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} not in metrics"))
    };
    assert_eq!(value("poolhub_miners_total "), 1.0);
    assert_eq!(value("poolhub_jobs_matched_total "), 1.0);
    assert_eq!(value("poolhub_match_duration_count "), 1.0);
    assert!(value(&format!("poolhub_miner_score{{address=\"{a}\"}}")) > 0.0);
    assert_eq!(
        value("poolhub_api_requests_total{method=\"POST\",route=\"/api/v1/match\",status=\"200\"}"),
        1.0
    );
    assert_eq!(value("poolhub_job_outcomes_total{result=\"success\"}"), 1.0);
    // The API port does not serve metrics unless configured to.
    assert_eq!(api.get("/metrics").await.status, StatusCode::NOT_FOUND);

    api.delete(&format!("/api/v1/miners/{a}"), Some(&t)).await;
    let text = Api::new(hub.metrics_addr).get("/metrics").await.text;
    assert!(
        !text.contains(&format!("address=\"{a}\"")),
        "score series removed with the miner"
    );
    hub.stop().await;
}

#[tokio::test]
async fn storage_failure_answers_503_and_health_says_so() {
    let (hub, api) = start().await;
    let a = addr(400);
    let token = api.register(&a, &["m"], 16384, 4).await;
    assert_eq!(api.get("/health").await.status, StatusCode::OK);
    // Close the durable store under the running hub: every durable write must now fail.
    hub.hub.close().await;
    let h = api.get("/health").await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE, "{}", h.text);
    assert_eq!(h.json["status"], "unavailable");
    assert_eq!(h.json["storage"][0]["backend"], "redb");
    assert_eq!(h.json["storage"][0]["healthy"], false);
    let r = api
        .post(
            "/api/v1/miners/register",
            &registration(&addr(401), &["m"], 16384, 4),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "storage_unavailable");
    let r = api
        .delete(&format!("/api/v1/miners/{a}"), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // Reads and heartbeats keep working from memory; nothing was half-applied.
    assert_eq!(api.heartbeat(&a, &token, 0).await.status, StatusCode::OK);
    assert_eq!(
        api.get(&format!("/api/v1/miners/{a}")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&format!("/api/v1/miners/{}", addr(401)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let m = api.match_model("m", 1).await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!(m.json["miners"][0]["address"], a);
    let metrics = Api::new(hub.metrics_addr).get("/metrics").await.text;
    assert!(
        metrics.contains("poolhub_store_errors_total{backend=\"redb\"} 2"),
        "{metrics}"
    );
    hub.stop().await;
}

/// A storage failure is named (which backend, a generic reason) but its detail, which can
/// carry hosts, users or file paths, stays in the log and never reaches a client.
#[tokio::test]
async fn storage_errors_name_the_backend_but_do_not_leak_its_error() {
    let (hub, api) = start().await;
    hub.hub.close().await;
    // What the closed redb store says about itself.
    let detail = "the store is closed";
    let h = api.get("/health").await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE, "{}", h.text);
    assert_eq!(
        h.json["storage"][0]["error"], "redb is unavailable",
        "{}",
        h.text
    );
    assert!(!h.text.contains(detail), "{}", h.text);
    let s = api.get("/api/v1/status").await;
    assert_eq!(
        s.json["storage"][0]["error"], "redb is unavailable",
        "{}",
        s.text
    );
    assert!(!s.text.contains(detail), "{}", s.text);
    let r = api
        .post(
            "/api/v1/miners/register",
            &registration(&addr(402), &["m"], 16384, 4),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "storage_unavailable");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("redb")),
        "{}",
        r.text
    );
    assert!(!r.text.contains(detail), "{}", r.text);
    hub.stop().await;
}

/// The hot routes (`http::fast`) answer as the router would: a percent-encoded address goes
/// through the router, the plain one through the fast path, and both give the same answer;
/// each keeps the router's body limit, errors, method handling and request metrics.
#[tokio::test]
async fn the_hot_routes_answer_exactly_as_the_router_does() {
    let mut c = cfg();
    c.server.max_body_bytes = 4096;
    let hub = TestHub::start(c).await.expect("hub starts");
    let api = Api::new(hub.api_addr);
    let a = addr(77);
    let token = api.register(&a, &["llama3.2"], 16384, 4).await;
    let body = json!({ "available": true, "current_load": 1, "gpu_utilization": 0.5 });
    // "0x" spelled "%30x": the router decodes it, the fast path leaves such paths to it.
    let encoded = format!("/api/v1/miners/%30{}/status", &a[1..]);
    let plain = format!("/api/v1/miners/{a}/status");
    for path in [&encoded, &plain] {
        let r = api.post(path, &body, Some(&token)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert_eq!(r.json["address"], a);
        assert_eq!(r.json["status"]["current_load"], 1);
        assert_eq!(r.content_type, "application/json");
        // The same refusals, in the same order: the token before the body is believed.
        let r = api.post(path, &body, Some("not-the-token")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text);
        let r = api
            .post(path, &json!({ "available": "yes" }), Some(&token))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert_eq!(r.json["error"]["field"], "available", "{}", r.text);
    }
    // A bad address, an oversized body, invalid JSON, another method: as the router answers.
    let r = api
        .post("/api/v1/miners/0x12/status", &body, Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["error"]["field"], "address", "{}", r.text);
    let big = vec![b' '; 8192];
    for path in [plain.as_str(), "/api/v1/match"] {
        let r = api.post_raw(path, &big).await;
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            r.text
        );
        assert_eq!(r.json["error"]["code"], "payload_too_large");
    }
    let r = api.post_raw("/api/v1/match", b"{not json").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"]["code"], "invalid_json");
    let r = api.send(Method::GET, "/api/v1/match", None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text);
    let r = api
        .post("/api/v1/match", &json!({ "model": "llama3.2" }), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["miners"][0]["address"], a);
    // Counted under the route templates, as the router counts them.
    let text = Api::new(hub.metrics_addr).get("/metrics").await.text;
    let count = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let route = "route=\"/api/v1/miners/{address}/status\"";
    assert_eq!(
        count(&format!(
            "poolhub_api_requests_total{{method=\"POST\",{route},status=\"200\"}}"
        )),
        2.0,
        "{text}"
    );
    assert_eq!(
        count(&format!(
            "poolhub_api_requests_total{{method=\"POST\",{route},status=\"413\"}}"
        )),
        1.0
    );
    assert_eq!(
        count("poolhub_api_requests_total{method=\"POST\",route=\"/api/v1/match\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        count("poolhub_api_requests_total{method=\"POST\",route=\"/api/v1/match\",status=\"413\"}"),
        1.0
    );
    hub.stop().await;
}

#[tokio::test]
async fn too_hot_miners_are_not_matched_and_the_breakdown_says_why() {
    let (hub, api) = start().await;
    let (cool, warm, hot) = (addr(40), addr(41), addr(42));
    for (a, temp) in [(&cool, 60.0), (&warm, 85.0), (&hot, 95.0)] {
        let t = api.register(a, &["llama3.2"], 16384, 4).await;
        let r = api
            .post(
                &format!("/api/v1/miners/{a}/status"),
                &serde_json::json!({"available": true, "current_load": 0,
                                    "gpu_utilization": 0.5, "temperature": temp}),
                Some(&t),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let m = api.match_model("llama3.2", 5).await;
    let offered: Vec<&str> = m.json["miners"]
        .as_array()
        .expect("miners")
        .iter()
        .filter_map(|o| o["address"].as_str())
        .collect();
    // Same record: the cool one first, the warm one derated behind it, the hot one absent.
    assert_eq!(offered, [cool.as_str(), warm.as_str()], "{}", m.text);
    let h = api.get(&format!("/api/v1/miners/{hot}")).await;
    assert_eq!(h.json["score"]["thermal"]["too_hot"], true, "{}", h.text);
    let st = api.get("/api/v1/status").await;
    assert_eq!(st.json["miners"]["too_hot"], 1, "{}", st.text);
    let w = api.get(&format!("/api/v1/miners/{warm}")).await;
    let factor = w.json["score"]["thermal"]["factor"]
        .as_f64()
        .expect("factor");
    assert!((factor - 0.75).abs() < 1e-9, "{}", w.text);
    hub.stop().await;
}
