//! How much memory the in-process match ledger takes per remembered match (for sizing
//! `matching.max_tracked_matches`). `cargo run --release --example ledger_memory`
use poolhub::domain::Address;
use poolhub::store::moka::MokaHotStore;
use poolhub::store::{HotStore, MatchId, MatchTicket};
use std::time::Duration;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let n: u64 = 200_000;
    let store = MokaHotStore::new(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        10_000_000,
    );
    let before = rss_kib();
    for i in 0..n {
        let offered = (0..5u8)
            .map(|k| {
                let mut b = [0u8; 20];
                b[0] = k;
                b[12..].copy_from_slice(&i.to_be_bytes());
                Address::from_bytes(b)
            })
            .collect();
        let ticket = MatchTicket {
            id: MatchId(u128::from(i) * 7919),
            offered,
            created_at: i,
            client: None,
        };
        store.record_match(ticket).await.expect("record");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    println!(
        "{n} matches (5 miners each): {} KiB, {:.0} bytes per match",
        after - before,
        (after - before) as f64 * 1024.0 / n as f64
    );
}
