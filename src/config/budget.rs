//! The memory budget: what the hub's resident memory comes to at its peak, from the
//! configuration and the number of miners, so an operator can size a host (and
//! `poolhub check-config` can print it).
//!
//! The figures are measured, not derived (README, "Memory budget"): `PER_MINER_BYTES` by
//! registering 100,000 miners with a heartbeat each and scraping `/metrics` once (the
//! per-miner score series are built at a scrape), `PER_TRACKED_MATCH_BYTES` by
//! `examples/ledger_memory` (a match offering 5 miners), and `FIXED_BYTES` from the soak
//! (`bench/soak.sh`): the runtime, the code, and the buffers of a few hundred keep-alive
//! connections.

use super::{Config, DurableKind, HotKind};

/// Code, runtime, metrics, a few hundred keep-alive connections' buffers.
pub const FIXED_BYTES: u64 = 24 * MIB;
/// One registered miner: its index entry, live status, lock-free reservation counters, its
/// score series at a scrape, and the allocator's overhead.
pub const PER_MINER_BYTES: u64 = 2_400;
/// One match remembered for its outcome in the in-process ledger (`store::local`): the
/// entry with its offered miners (266 bytes measured for 5 miners by
/// `examples/ledger_memory`, rounded up).
pub const PER_TRACKED_MATCH_BYTES: u64 = 300;

const MIB: u64 = 1024 * 1024;

/// The parts of the peak resident memory, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    pub fixed: u64,
    /// redb's page cache (`storage.cache_mb`); 0 with PostgreSQL.
    pub cache: u64,
    pub miners: u64,
    /// The match ledger at `matching.max_tracked_matches`; 0 when it lives in Redis.
    pub ledger: u64,
}

impl MemoryBudget {
    pub fn total(&self) -> u64 {
        self.fixed + self.cache + self.miners + self.ledger
    }
}

impl Config {
    /// The expected peak resident memory with `miners` registered miners.
    pub fn memory_budget(&self, miners: u64) -> MemoryBudget {
        let embedded_durable = self.storage.durable == DurableKind::Redb && !self.storage.ephemeral;
        MemoryBudget {
            fixed: FIXED_BYTES,
            cache: if embedded_durable {
                self.storage.cache_mb.saturating_mul(MIB)
            } else {
                0
            },
            miners: miners.saturating_mul(PER_MINER_BYTES),
            ledger: if self.storage.hot == HotKind::Moka {
                self.matching
                    .max_tracked_matches
                    .saturating_mul(PER_TRACKED_MATCH_BYTES)
            } else {
                0
            },
        }
    }
}

/// Bytes as MiB with one decimal, for people.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_follows_the_configuration() {
        let mut c = Config::default();
        let b = c.memory_budget(10_000);
        assert_eq!(b.cache, 16 * MIB);
        assert_eq!(b.miners, 24_000_000);
        assert_eq!(b.ledger, 100_000 * PER_TRACKED_MATCH_BYTES);
        assert_eq!(b.total(), b.fixed + b.cache + b.miners + b.ledger);
        // A smaller cache and ledger lower it; Redis holds the ledger, PostgreSQL needs no cache.
        c.storage.cache_mb = 8;
        c.matching.max_tracked_matches = 10_000;
        let small = c.memory_budget(10_000);
        assert!(small.total() < b.total());
        c.storage.hot = HotKind::Redis;
        c.storage.durable = DurableKind::Postgres;
        let shared = c.memory_budget(10_000);
        assert_eq!((shared.cache, shared.ledger), (0, 0));
        assert_eq!(mib(3 * MIB / 2), "1.5 MiB");
    }
}
