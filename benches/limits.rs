//! What the rate-limit check costs on the match path: one keyed token-bucket check (a hash
//! lookup in governor's sharded map and a compare-and-swap), for a party within its limit and
//! one over it, with 10 and 10,000 other parties tracked.
//!
//! Run with `cargo bench --bench limits`. The layer adds to this only an extension lookup
//! for the peer address and a few string comparisons on the matched route; the key lookup it
//! does is the one the client-key check would do anyway (see `benches/auth.rs`), and it is
//! done once per request.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use poolhub::config::{Rate, RateLimits};
use poolhub::http::limits::{Limiter, Party, RouteClass};
use std::net::IpAddr;

fn limiter(rate: Rate, others: u32) -> Limiter {
    let mut rates = RateLimits::unlimited();
    rates.match_ = rate;
    let l = Limiter::new(&rates);
    for i in 0..others {
        let ip = IpAddr::from(i.wrapping_add(0x0a00_0000).to_be_bytes());
        let _ = l.check(RouteClass::Match, &Party::Ip(ip));
    }
    l
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit");
    // Never runs out within a benchmark: the cost of letting a request through.
    let roomy = Rate {
        per_second: u32::MAX,
        burst: u32::MAX,
    };
    // Runs out at once: the cost of refusing one (computing Retry-After included).
    let tight = Rate {
        per_second: 1,
        burst: 1,
    };
    for others in [10u32, 10_000] {
        let l = limiter(roomy, others);
        let key = Party::Key(7);
        g.bench_function(format!("allowed_key/{others}_parties"), |b| {
            b.iter(|| black_box(l.check(RouteClass::Match, black_box(&key))))
        });
        let ip = Party::Ip(IpAddr::from([192, 0, 2, 1]));
        g.bench_function(format!("allowed_ip/{others}_parties"), |b| {
            b.iter(|| black_box(l.check(RouteClass::Match, black_box(&ip))))
        });
        let l = limiter(tight, others);
        g.bench_function(format!("refused_key/{others}_parties"), |b| {
            b.iter(|| black_box(l.check(RouteClass::Match, black_box(&key))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
