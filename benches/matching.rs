//! Matching cost over 1k / 10k / 100k registered miners.
//!
//! `registry_select`: the index walk and ranking alone (what a match costs in CPU).
//! `hub_match`: the whole service call a handler makes: validation, selection, the match
//! ledger insert (moka) and metrics; `reserve: false` so the run does not fill every miner.
//! `status_update`: a heartbeat through the service (token check, index atomics, moka).
//!
//! Run: `cargo bench --bench matching`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use poolhub::config::Config;
use poolhub::domain::matching::{MatchCriteria, MatchPolicy};
use poolhub::domain::scoring::{self, Availability, MinerStats, OutcomeSample};
use poolhub::domain::{Address, Capabilities, Endpoint, Miner, MinerStatus};
use poolhub::hub::{hash_token, Hub, MatchRequest};
use poolhub::metrics::Metrics;
use poolhub::registry::Registry;
use poolhub::store::moka::MokaHotStore;
use poolhub::store::redb::RedbStore;
use poolhub::store::{DurableStore, StoredMiner};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;

const MODELS: [&str; 5] = ["llama3.2", "mistral", "qwen2.5", "phi3", "gemma2"];

fn now() -> u64 {
    poolhub::hub::now_ms()
}

fn address(i: u32) -> Address {
    let mut b = [0u8; 20];
    b[16..].copy_from_slice(&i.to_be_bytes());
    b[0] = 0xaa;
    Address::from_bytes(b)
}

/// A miner with a plausible random record: most are good, some are new, some fail.
fn fixture(i: u32, rng: &mut StdRng) -> (Miner, MinerStats, MinerStatus) {
    let models = vec![
        MODELS[(i % 5) as usize].to_string(),
        MODELS[((i / 5) % 5) as usize].to_string(),
        "llama3.2".to_string(),
    ];
    let miner = Miner {
        address: address(i),
        endpoint: Endpoint::try_from(format!("http://10.0.{}.{}:8080", i / 256 % 256, i % 256))
            .unwrap(),
        capabilities: Capabilities {
            models,
            gpu_memory: [8192, 16384, 24576, 81920][(i % 4) as usize],
            max_concurrent_jobs: 4,
            job_types: vec!["inference".into()],
        }
        .validated()
        .unwrap(),
        stake: rng.random_range(0..50_000),
        token_hash: hash_token(&format!("token-{i}")),
        registered_at: 0,
        updated_at: 0,
        proven: false,
        profile: None,
    };
    let mut stats = MinerStats::default();
    let jobs = rng.random_range(0..60);
    let p_ok = rng.random_range(0.7..1.0);
    let t0 = now() - 86_400_000;
    for k in 0..jobs {
        stats = stats.with_outcome(
            OutcomeSample {
                success: rng.random_bool(p_ok),
                latency_ms: Some(rng.random_range(200.0..4000.0)),
                at: t0 + k * 1000,
            },
            0.95,
        );
    }
    let status = MinerStatus {
        available: rng.random_bool(0.9),
        current_load: rng.random_range(0..4),
        gpu_utilization: 0.5,
        temperature: Some(60.0),
        reported_at: now(),
        resources: Default::default(),
    };
    (miner, stats, status)
}

/// `busy`: fraction of miners reporting themselves at their concurrency limit, so a match
/// must walk past them (a saturated pool).
fn registry(n: u32, busy: f64) -> Registry {
    let mut rng = StdRng::seed_from_u64(n.into());
    let r = Registry::new(Default::default());
    let p = scoring::ScoringParams::default();
    let t = now();
    for i in 0..n {
        let (m, st, mut status) = fixture(i, &mut rng);
        if rng.random_bool(busy) {
            status.current_load = m.capabilities.max_concurrent_jobs;
        }
        let av = Availability::default();
        let score = scoring::score(&st, &av, m.stake, t, &p);
        let a = m.address;
        r.upsert(m, st, av, score, 0);
        if let Some((_, live)) = r.live(&a) {
            live.set_status(&status);
            r.note(&live);
        }
    }
    r
}

/// Fresh for the whole run, so no miner goes offline while a benchmark repeats.
fn policy() -> MatchPolicy {
    MatchPolicy {
        heartbeat_timeout_ms: 3_600_000,
        tie_epsilon: 0.01,
        panic_threshold: 0.5,
        scan_cap: 16,
        thermal: poolhub::domain::scoring::Thresholds::default(),
    }
}

fn bench_select(c: &mut Criterion) {
    let mut g = c.benchmark_group("registry_select");
    let policy = policy();
    for n in [1_000u32, 10_000, 100_000] {
        let r = registry(n, 0.0);
        let busy = registry(n, 0.9);
        let mut rng = StdRng::seed_from_u64(1);
        for (name, model, r) in [
            ("all_serve_model", "llama3.2", &r),
            ("fifth_serve_model", "phi3", &r),
            ("90pct_busy", "llama3.2", &busy),
        ] {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    let crit = MatchCriteria {
                        model,
                        job_type: "inference",
                        min_gpu_memory: 8192,
                        max_latency: Some(5000.0),
                        limit: 5,
                        exclude: &[],
                    };
                    let m = r.select(&crit, &policy, now(), &mut rng);
                    assert!(!m.offers.is_empty());
                    m.offers.len()
                })
            });
        }
    }
    g.finish();
}

async fn hub(n: u32) -> Arc<Hub> {
    let mut cfg = Config::default();
    cfg.storage.ephemeral = true;
    cfg.matching.heartbeat_timeout = 3600;
    let metrics = Arc::new(Metrics::new());
    let durable = Arc::new(RedbStore::in_memory(None).unwrap());
    let hot = Arc::new(MokaHotStore::new(
        Duration::from_secs(3600),
        Duration::from_secs(3600),
        1_000_000,
    ));
    // The miners go into the store first and the hub loads them, as at start-up.
    let mut rng = StdRng::seed_from_u64(u64::from(n));
    let mut statuses = Vec::with_capacity(n as usize);
    let mut stored = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (miner, stats, status) = fixture(i, &mut rng);
        statuses.push((miner.address, status));
        stored.push(StoredMiner {
            miner,
            stats,
            availability: Availability::default(),
        });
    }
    durable.import(stored, Vec::new()).await.unwrap();
    let hub = Arc::new(Hub::open(cfg, durable, hot, metrics).await.unwrap());
    for (i, (a, status)) in statuses.into_iter().enumerate() {
        hub.update_status(&a, Some(&format!("token-{i}")), status)
            .await
            .unwrap();
    }
    hub
}

fn bench_hub(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("hub");
    for n in [1_000u32, 10_000, 100_000] {
        let hub = rt.block_on(hub(n));
        g.bench_with_input(BenchmarkId::new("match", n), &n, |b, _| {
            b.iter(|| {
                let out = rt
                    .block_on(hub.match_job(MatchRequest {
                        model: "llama3.2".into(),
                        job_type: Some("inference".into()),
                        min_gpu_memory: Some(8192),
                        max_latency: Some(5000.0),
                        limit: None,
                        exclude: Vec::new(),
                        reserve: false,
                    }))
                    .unwrap();
                out.miners.len()
            })
        });
        let mut i = 0u32;
        g.bench_with_input(BenchmarkId::new("status_update", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % n;
                let token = format!("token-{i}");
                let status = MinerStatus {
                    available: true,
                    current_load: 1,
                    gpu_utilization: 0.4,
                    temperature: Some(61.0),
                    reported_at: 0,
                    resources: Default::default(),
                };
                rt.block_on(hub.update_status(&address(i), Some(&token), status))
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// The metric work one match request does (the match histogram and counters in the hub, the
/// request counter and duration histogram in the HTTP middleware), on its own: the cost of
/// metrics on the match path, to set against `hub/match`.
fn bench_metrics(c: &mut Criterion) {
    let m = Metrics::new();
    let mut g = c.benchmark_group("metrics");
    g.bench_function("per_match_request", |b| {
        b.iter(|| {
            m.match_duration.observe(0.000_012);
            m.jobs_matched_total.inc();
            m.match_requests_total.with_label_values(&["matched"]).inc();
            m.api_requests_total
                .with_label_values(&["POST", "/api/v1/match", "200"])
                .inc();
            m.http_request_duration
                .with_label_values(&["/api/v1/match"])
                .observe(0.000_02);
        })
    });
    g.finish();
}

/// AITBC's `/v1/match`: a walk over every miner (the request names no model).
fn bench_by_requirements(c: &mut Criterion) {
    let mut g = c.benchmark_group("registry_by_requirements");
    let policy = policy();
    let req = poolhub::domain::aitbc::Requirements {
        min_gpu_memory: 8192,
        min_ram_gb: 0.0,
        capabilities_any: vec!["inference".into()],
        region: None,
        top_k: 5,
    };
    for n in [1_000u32, 10_000, 100_000] {
        let r = registry(n, 0.0);
        g.bench_with_input(BenchmarkId::new("top5", n), &n, |b, _| {
            b.iter(|| {
                let m = r.rank_by_requirements(&req, &policy, now());
                assert!(!m.offers.is_empty());
                m.offers.len()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(50);
    targets = bench_select, bench_by_requirements, bench_hub, bench_metrics
}
criterion_main!(benches);
