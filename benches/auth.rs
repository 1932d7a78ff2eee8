//! What a client-key check costs on the match path: one SHA-256 of the presented secret and
//! one lookup in the in-memory ring, with 10 and 10,000 keys in it.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use poolhub::auth::{digest, new_secret, ApiKey, KeyRing, Role};

fn ring(n: u64) -> (KeyRing, String) {
    let ring = KeyRing::new(Some(digest("operator")));
    let mut last = String::new();
    for id in 0..n {
        last = new_secret();
        ring.insert(ApiKey {
            id,
            name: format!("client-{id}"),
            role: Role::Client,
            created_at: id,
            digest: digest(&last),
        });
    }
    (ring, last)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("auth");
    for n in [10u64, 10_000] {
        let (ring, secret) = ring(n);
        g.bench_function(format!("key_check/{n}_keys"), |b| {
            b.iter(|| black_box(ring.caller(black_box(&secret))))
        });
        let unknown = new_secret();
        g.bench_function(format!("unknown_key/{n}_keys"), |b| {
            b.iter(|| black_box(ring.caller(black_box(&unknown))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
