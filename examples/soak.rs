//! The soak load (`bench/soak.sh`): a steady mixed load against a running hub, printing the
//! hub's resources and the load's latencies every 30 s.
//!
//! The load: `--miners` miners (1,000) each heartbeating about every 8 s; `--rate` matches a
//! second (300), each reporting an outcome for both miners it offered; and churn: every
//! second one miner registers and another deregisters. Every 30 s one line: RSS and open fds
//! of the hub (from /proc), the data file's size, the outcomes stored (from /metrics), and the
//! p99 of matches and of durable writes (outcomes, registrations, deletions) over those 30 s.
//!
//! `soak BASE METRICS_URL PID DATA_FILE MINUTES [--miners N] [--rate R]`

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Http = Client<HttpConnector, Full<Bytes>>;

struct Load {
    client: Http,
    base: String,
    /// Latencies (µs) since the last report.
    matches: Mutex<Vec<u32>>,
    writes: Mutex<Vec<u32>>,
    errors: AtomicU64,
    done: AtomicU64,
}

impl Load {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: String,
        token: Option<&str>,
    ) -> Option<serde_json::Value> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b.body(Full::new(Bytes::from(body))).ok()?;
        let res = match self.client.request(req).await {
            Ok(r) => r,
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let ok = res.status().is_success();
        let bytes = res.into_body().collect().await.ok()?.to_bytes();
        self.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        serde_json::from_slice(&bytes).ok()
    }

    /// A call whose latency counts as a write (or a match).
    async fn timed(
        &self,
        into: &Mutex<Vec<u32>>,
        method: Method,
        path: &str,
        body: String,
        token: Option<&str>,
    ) -> Option<serde_json::Value> {
        let t = Instant::now();
        let r = self.call(method, path, body, token).await;
        into.lock()
            .push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        r
    }
}

fn address(i: u64) -> String {
    format!("0x{:040x}", 0x50a4_0000_0000u64 + i)
}

fn registration(i: u64) -> String {
    format!(
        r#"{{"address":"{}","endpoint":"http://10.9.{}.{}:8080","capabilities":{{"models":["llama3.2"],"gpu_memory":24576,"max_concurrent_jobs":8}},"stake":1000}}"#,
        address(i),
        (i >> 8) & 255,
        i & 255
    )
}

const STATUS: &str = r#"{"available":true,"current_load":0,"gpu_utilization":0.4}"#;

async fn register(load: &Load, i: u64) -> Option<String> {
    let v = load
        .timed(
            &load.writes,
            Method::POST,
            "/api/v1/miners/register",
            registration(i),
            None,
        )
        .await?;
    let token = v["token"].as_str()?.to_string();
    load.call(
        Method::POST,
        &format!("/api/v1/miners/{}/status", address(i)),
        STATUS.into(),
        Some(&token),
    )
    .await;
    Some(token)
}

fn p99(samples: &mut [u32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let i = ((samples.len() as f64) * 0.99).ceil() as usize;
    f64::from(samples[i.saturating_sub(1).min(samples.len() - 1)]) / 1000.0
}

fn proc_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn proc_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

async fn metric(client: &Http, url: &str, name: &str) -> Option<f64> {
    let res = client
        .get(url.parse().ok()?)
        .await
        .ok()?
        .into_body()
        .collect()
        .await
        .ok()?
        .to_bytes();
    let text = String::from_utf8_lossy(&res).to_string();
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let flag = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(default)
    };
    let (base, metrics_url, pid, data, minutes) = match positional.as_slice() {
        [b, m, p, d, min, ..] => (
            b.to_string(),
            m.to_string(),
            p.parse::<u32>().expect("PID"),
            std::path::PathBuf::from(d),
            min.parse::<u64>().expect("MINUTES"),
        ),
        _ => {
            eprintln!("usage: soak BASE METRICS_URL PID DATA_FILE MINUTES [--miners N] [--rate R]");
            std::process::exit(2);
        }
    };
    let miners = flag("--miners", 1000);
    let rate = flag("--rate", 300);
    let client: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    let load = Arc::new(Load {
        client: client.clone(),
        base,
        matches: Mutex::new(Vec::new()),
        writes: Mutex::new(Vec::new()),
        errors: AtomicU64::new(0),
        done: AtomicU64::new(0),
    });

    // The pool: registered at once, then kept beating.
    let tokens: Arc<Mutex<Vec<(u64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..miners {
        let load = load.clone();
        set.spawn(async move { register(&load, i).await.map(|t| (i, t)) });
    }
    while let Some(r) = set.join_next().await {
        if let Ok(Some(t)) = r {
            tokens.lock().push(t);
        }
    }
    eprintln!("soak: {} miners registered", tokens.lock().len());
    let end = Instant::now() + Duration::from_secs(minutes * 60);

    // Heartbeats: the whole pool every 8 s, spread evenly.
    {
        let (load, tokens) = (load.clone(), tokens.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(8_000_000 / miners.max(1)));
            let mut k = 0usize;
            loop {
                tick.tick().await;
                let pick = {
                    let t = tokens.lock();
                    if t.is_empty() {
                        continue;
                    }
                    k = (k + 1) % t.len();
                    t[k].clone()
                };
                let load = load.clone();
                tokio::spawn(async move {
                    load.call(
                        Method::POST,
                        &format!("/api/v1/miners/{}/status", address(pick.0)),
                        STATUS.into(),
                        Some(&pick.1),
                    )
                    .await;
                });
            }
        });
    }
    // Churn: one new miner and one deregistration a second.
    {
        let (load, tokens) = (load.clone(), tokens.clone());
        tokio::spawn(async move {
            let mut next = miners;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(t) = register(&load, next).await {
                    tokens.lock().push((next, t));
                }
                next += 1;
                let gone = {
                    let mut t = tokens.lock();
                    (!t.is_empty()).then(|| t.remove(0))
                };
                if let Some((i, token)) = gone {
                    load.timed(
                        &load.writes,
                        Method::DELETE,
                        &format!("/api/v1/miners/{}", address(i)),
                        String::new(),
                        Some(&token),
                    )
                    .await;
                }
            }
        });
    }
    // Matches, each with an outcome for both miners offered.
    {
        let load = load.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let load = load.clone();
                tokio::spawn(async move {
                    let Some(m) = load
                        .timed(
                            &load.matches,
                            Method::POST,
                            "/api/v1/match",
                            r#"{"model":"llama3.2","limit":2}"#.into(),
                            None,
                        )
                        .await
                    else {
                        return;
                    };
                    let id = m["match_id"].as_str().unwrap_or_default().to_string();
                    for offer in m["miners"].as_array().cloned().unwrap_or_default() {
                        let a = offer["address"].as_str().unwrap_or_default();
                        let body = format!(
                            r#"{{"match_id":"{id}","address":"{a}","success":true,"latency_ms":180}}"#
                        );
                        load.timed(&load.writes, Method::POST, "/api/v1/outcomes", body, None)
                            .await;
                    }
                });
            }
        });
    }

    println!(
        "{:>7} {:>8} {:>5} {:>9} {:>10} {:>11} {:>11} {:>9} {:>7}",
        "elapsed",
        "rss_mb",
        "fds",
        "file_mb",
        "outcomes",
        "match_p99",
        "write_p99",
        "req/s",
        "errors"
    );
    let started = Instant::now();
    let mut last_done = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.tick().await;
    while Instant::now() < end {
        tick.tick().await;
        let mut m = std::mem::take(&mut *load.matches.lock());
        let mut w = std::mem::take(&mut *load.writes.lock());
        let done = load.done.load(Ordering::Relaxed);
        let file_mb = std::fs::metadata(&data).map_or(0.0, |m| m.len() as f64 / 1_048_576.0);
        let outcomes = metric(&client, &metrics_url, "poolhub_outcomes_stored")
            .await
            .unwrap_or(-1.0);
        println!(
            "{:>6}s {:>8.1} {:>5} {:>9.1} {:>10} {:>9.2}ms {:>9.2}ms {:>9.0} {:>7}",
            started.elapsed().as_secs(),
            proc_rss_mb(pid),
            proc_fds(pid),
            file_mb,
            outcomes,
            p99(&mut m),
            p99(&mut w),
            (done - last_done) as f64 / 30.0,
            load.errors.load(Ordering::Relaxed)
        );
        last_done = done;
    }
}
