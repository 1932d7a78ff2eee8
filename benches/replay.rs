//! What-if replay's own work: 100,000 stored outcomes over 1,000 miners folded into
//! statistics and ranked under two configurations (`domain::replay`), the part that grows
//! with the history. Reading the pages from the store comes on top (`poolhub replay`).
//!
//! Run with `cargo bench --bench replay`.

use criterion::{criterion_group, criterion_main, Criterion};
use poolhub::domain::replay::{compare, History, ReplayMiner};
use poolhub::domain::scoring::{Availability, ScoringParams};
use poolhub::domain::{Address, OutcomeRecord};

const NOW: u64 = 1_700_000_000_000;

fn address(i: u32) -> Address {
    let mut b = [0u8; 20];
    b[16..].copy_from_slice(&i.to_be_bytes());
    Address::from_bytes(b)
}

fn bench(c: &mut Criterion) {
    let miners: Vec<ReplayMiner> = (0..1000)
        .map(|i| ReplayMiner {
            address: address(i),
            stake: u64::from(i) * 10,
            availability: Availability::default(),
        })
        .collect();
    let records: Vec<OutcomeRecord> = (0..100_000u64)
        .map(|k| OutcomeRecord {
            match_id: format!("{k:032x}"),
            address: address((k * 7919 % 1000) as u32),
            success: k % 7 != 0,
            latency_ms: Some(200.0 + (k % 3000) as f64),
            at: NOW - 30 * 86_400_000 + k * 25_000,
            error: None,
        })
        .collect();
    let current = ScoringParams::default();
    let mut candidate = current;
    candidate.weights.latency = 0.45;
    candidate.weights.success_rate = 0.2;
    candidate.decay_factor = 0.8;
    c.bench_function("replay 100k outcomes, 1k miners, two configurations", |b| {
        b.iter(|| {
            let mut h = History::default();
            h.add(&records);
            h.settle();
            compare(&miners, &h, &current, &candidate, NOW, 10)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
