//! Configuration reload of the built binary: SIGHUP applies the file's scoring settings to a
//! running hub, an invalid file changes nothing, and restart-only settings are reported.

mod common;

use common::{addr, rt, Api, Served};
use hyper::StatusCode;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const BIN_ARGS: &[&str] = &[
    "--config",
    "poolhub.toml",
    "--ephemeral",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
];

/// A configuration with the given weights (success, latency, availability, reputation).
fn write_config(dir: &Path, weights: [f64; 4], extra: &str) {
    let [s, l, a, r] = weights;
    let text = format!(
        "[server]\nmetrics_on_api_port = true\n\n[weights]\nsuccess_rate = {s}\nlatency = {l}\n\
         availability = {a}\nreputation = {r}\n{extra}"
    );
    std::fs::write(dir.join("poolhub.toml"), text).expect("write config");
}

async fn score(api: &Api, a: &str) -> (f64, serde_json::Value) {
    let m = api.get(&format!("/api/v1/miners/{a}")).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text);
    let s = &m.json["score"];
    (s["value"].as_f64().expect("score"), s["weights"].clone())
}

async fn reloads(api: &Api, result: &str) -> f64 {
    let m = api.get("/metrics").await;
    let line = format!("poolhub_config_reloads_total{{result=\"{result}\"}} ");
    m.text
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

/// Polls until `reloads_total{result}` reaches `n` (a reload runs after the signal returns).
async fn until_reloaded(api: &Api, result: &str, n: f64) {
    let started = Instant::now();
    while reloads(api, result).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {result} reload counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn sighup_applies_new_weights_and_an_invalid_file_keeps_the_running_ones() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), [0.4, 0.3, 0.2, 0.1], "");
    let mut hub = Served::start(dir.path(), BIN_ARGS, &[], Stdio::piped());
    let mut stderr = hub.child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let api = hub.api();
    let rt = rt();
    let a = addr(1);
    rt.block_on(async {
        let token = api.register(&a, &["llama3.2"], 16384, 4).await;
        assert_eq!(api.heartbeat(&a, &token, 0).await.status, StatusCode::OK);
        // A track record, so the four components differ and the weights matter.
        for _ in 0..3 {
            let m = api.match_model("llama3.2", 1).await;
            let id = m.json["match_id"].as_str().expect("match id").to_string();
            let o = api.outcome(&id, &a, true, 900.0).await;
            assert_eq!(o.status, StatusCode::CREATED, "{}", o.text);
        }
        assert_eq!(reloads(&api, "ok").await, 0.0);
        assert_eq!(reloads(&api, "error").await, 0.0);
        let (before, _) = score(&api, &a).await;
        let status = api.get("/api/v1/status").await;
        let hash = status.json["config_hash"]
            .as_str()
            .expect("hash")
            .to_string();

        // New weights: applied to the running hub, the score recomputed at once.
        write_config(dir.path(), [0.1, 0.1, 0.1, 0.7], "");
        hub.signal("-HUP");
        until_reloaded(&api, "ok", 1.0).await;
        let (after, weights) = score(&api, &a).await;
        assert_eq!(weights["reputation"], 0.7, "{weights}");
        assert_ne!(after, before, "the score follows the new weights");
        let status = api.get("/api/v1/status").await;
        let new_hash = status.json["config_hash"]
            .as_str()
            .expect("hash")
            .to_string();
        assert_ne!(new_hash, hash);
        assert_eq!(status.json["config"]["weights"]["reputation"], 0.7);

        // An invalid file: every error logged, nothing applied.
        std::fs::write(
            dir.path().join("poolhub.toml"),
            "[weights]\nsuccess_rate = 2.0\n\n[thresholds]\nmin_success_rate = -1\n",
        )
        .unwrap();
        hub.signal("-HUP");
        until_reloaded(&api, "error", 1.0).await;
        let (kept, weights) = score(&api, &a).await;
        assert_eq!(kept, after);
        assert_eq!(weights["reputation"], 0.7);
        let status = api.get("/api/v1/status").await;
        assert_eq!(status.json["config_hash"], new_hash.as_str());

        // A restart-only setting: reported, left as it runs.
        write_config(
            dir.path(),
            [0.1, 0.1, 0.1, 0.7],
            "\n[storage]\ncache_mb = 32\n",
        );
        hub.signal("-HUP");
        until_reloaded(&api, "ok", 2.0).await;
        let status = api.get("/api/v1/status").await;
        assert_eq!(
            status.json["config_pending_restart"],
            serde_json::json!(["storage.cache_mb"]),
            "{}",
            status.text
        );
        assert_eq!(status.json["config_hash"], new_hash.as_str());
    });
    // Still serving after three reloads, and it stops cleanly.
    assert!(hub.sigterm().success());
    let log = log.join().expect("log");
    // The refused file's every error, each under its key.
    for key in ["key=weights", "key=thresholds.min_success_rate"] {
        assert!(log.contains(key), "{key} not logged:\n{log}");
    }
    assert!(log.contains("the running configuration is kept"), "{log}");
    assert!(log.contains("storage.cache_mb"), "{log}");
}
