//! Registers N miners on a running hub and sends one heartbeat each, concurrently; writes
//! "address token" lines to a file for the status-update load script.
//!
//! `cargo run --release --example seed -- http://127.0.0.1:8000 100000 /tmp/tokens.txt`

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
                r#"{{"address":"{address}","endpoint":"http://10.{}.{}.{}:8080","capabilities":{{"models":["llama3.2","{}"],"gpu_memory":{},"max_concurrent_jobs":8}},"stake":{}}}"#,
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
}
