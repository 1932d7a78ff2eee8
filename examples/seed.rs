//! Registers N miners on a running hub and sends one heartbeat each, concurrently; writes
//! "address token" lines to a file for the status-update load script. With MATCHES and a
//! match file, it then asks for that many matches and writes "match_id address" lines (the
//! first miner offered), for the outcome load script.
//!
//! `cargo run --release --example seed -- http://127.0.0.1:8000 100000 /tmp/tokens.txt`
//! `cargo run --release --example seed -- http://127.0.0.1:8000 1000 /tmp/tokens.txt 200000 /tmp/matches.txt`

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::Write;
use std::sync::Arc;

const MODELS: [&str; 5] = ["llama3.2", "mistral", "qwen2.5", "phi3", "gemma2"];

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8000".into());
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let out = args
        .next()
        .unwrap_or_else(|| "/tmp/poolhub-tokens.txt".into());
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let client = Arc::new(client);
    let started = std::time::Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (client, base, sem) = (client.clone(), base.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.ok()?;
            let address = format!("0x{:040x}", 0xbeef_0000_0000u64 + u64::from(i));
            let body = format!(
                r#"{{"address":"{address}","endpoint":"http://10.{}.{}.{}:8080","capabilities":{{"models":["llama3.2","{}"],"gpu_memory":{},"max_concurrent_jobs":256}},"stake":{}}}"#,
                i >> 16 & 255, i >> 8 & 255, i & 255, MODELS[(i % 5) as usize],
                [16384, 24576, 81920][(i % 3) as usize], (i % 50) * 1000
            );
            let req = Request::post(format!("{base}/api/v1/miners/register"))
                .body(Full::new(Bytes::from(body)))
                .ok()?;
            let res = client.request(req).await.ok()?;
            let bytes = res.into_body().collect().await.ok()?.to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            let token = v["token"].as_str()?.to_string();
            let status = format!(
                r#"{{"available":true,"current_load":{},"gpu_utilization":0.5,"temperature":60}}"#,
                i % 3
            );
            let req = Request::post(format!("{base}/api/v1/miners/{address}/status"))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::from(status)))
                .ok()?;
            client.request(req).await.ok()?;
            Some((address, token))
        }));
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(&out).expect("token file"));
    let mut ok = 0;
    for t in tasks {
        if let Ok(Some((a, tok))) = t.await {
            let _ = writeln!(f, "{a} {tok}");
            ok += 1;
        }
    }
    let took = started.elapsed();
    eprintln!(
        "registered {ok}/{n} miners in {:.1}s ({:.0}/s, each a durable commit + a heartbeat)",
        took.as_secs_f64(),
        f64::from(ok) / took.as_secs_f64()
    );
    let matches: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    if let (true, Some(path)) = (matches > 0, args.next()) {
        drop(f);
        make_matches(&client, &base, matches, &path).await;
    }
}

/// Asks for `n` matches (64 at a time) and writes "match_id address" per answer that offered
/// a miner: the miner that holds the match's reservation, so as the best miners fill up the
/// matches spread over the pool (load.sh shuffles the file, so outcomes arrive for many
/// miners at once, as they do in a pool, rather than in runs for one miner).
async fn make_matches(
    client: &Arc<Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>>,
    base: &str,
    n: u32,
    path: &str,
) {
    let started = std::time::Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (client, base, sem) = (client.clone(), base.to_string(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.ok()?;
            let req = Request::post(format!("{base}/api/v1/match"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"job_type":"inference","model":"llama3.2"}"#,
                )))
                .ok()?;
            let res = client.request(req).await.ok()?;
            let bytes = res.into_body().collect().await.ok()?.to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            let id = v["match_id"].as_str()?.to_string();
            let address = v["miners"][0]["address"].as_str()?.to_string();
            Some((id, address))
        }));
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("match file"));
    let mut ok = 0;
    for t in tasks {
        if let Ok(Some((id, a))) = t.await {
            let _ = writeln!(f, "{id} {a}");
            ok += 1;
        }
    }
    eprintln!(
        "made {ok}/{n} matches in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
