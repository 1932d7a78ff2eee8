//! Plain values the storage suites (and any test) build their data from.
//!
//! Miner `i` has address `0xab00…00ii`, serves "llama3.2" for inference, and stakes
//! `i * 100`; its token hash is whatever the test says, since the suites check that a
//! conditional write compares it.

use crate::domain::scoring::Availability;
use crate::domain::{Address, Capabilities, Endpoint, Miner, MinerStatus, Profile, Resources};
use crate::store::OutcomeRecord;

/// The address of miner `i`.
pub fn address(i: u8) -> Address {
    let mut b = [0u8; 20];
    b[0] = 0xab;
    b[19] = i;
    Address::from_bytes(b)
}

/// Miner `i`, registered at t = 1000 ms, with `token_hash` as its stored token hash.
pub fn miner(i: u8, token_hash: &str) -> Miner {
    Miner {
        address: address(i),
        endpoint: Endpoint::try_from(format!("http://m{i}.example.com:8080"))
            .expect("a valid fixture endpoint"),
        capabilities: Capabilities {
            models: vec!["llama3.2".into()],
            gpu_memory: 16384,
            max_concurrent_jobs: 4,
            job_types: vec!["inference".into()],
        },
        stake: u64::from(i) * 100,
        token_hash: token_hash.to_string(),
        registered_at: 1_000,
        updated_at: 1_000,
        proven: false,
        profile: None,
    }
}

/// A miner registered by name (AITBC's `miner_id`): a CPU miner with no models and every
/// profile field set, at the address derived from `name`.
pub fn named_miner(name: &str, token_hash: &str) -> Miner {
    Miner {
        address: Address::for_miner_id(name),
        endpoint: Endpoint::try_from("http://aitbc-host:8101".to_string())
            .expect("a valid fixture endpoint"),
        capabilities: Capabilities {
            models: Vec::new(),
            gpu_memory: 0,
            max_concurrent_jobs: 2,
            job_types: vec!["inference".into(), "training".into()],
        },
        stake: 0,
        token_hash: token_hash.to_string(),
        registered_at: 1_000,
        updated_at: 1_000,
        proven: false,
        profile: Some(Box::new(Profile {
            miner_id: name.to_string(),
            proto: "http".into(),
            gpu_name: Some("CPU-Only".into()),
            cpu_cores: Some(16),
            ram_gb: Some(64.5),
            base_price: Some("0.01".into()),
            tags: [("platform".to_string(), "linux".to_string())].into(),
            region: Some("eu-west".into()),
        })),
    }
}

/// An outcome of miner `i` accepted at `at` (unix ms), 250 ms latency, with a match id
/// derived from `at`.
pub fn outcome(i: u8, success: bool, at: u64) -> OutcomeRecord {
    OutcomeRecord {
        match_id: format!("{at:032x}"),
        address: address(i),
        success,
        latency_ms: Some(250.0),
        at,
        error: (!success).then(|| "timeout".to_string()),
    }
}

/// An availability checkpoint.
pub fn availability(up: f64, total: f64, as_of: u64) -> Availability {
    Availability { up, total, as_of }
}

/// A live status: available, with `load` jobs running.
pub fn status(load: u32) -> MinerStatus {
    MinerStatus {
        available: true,
        current_load: load,
        gpu_utilization: 0.5,
        temperature: Some(60.0),
        reported_at: 5,
        resources: Resources {
            memory_used_mb: Some(1024),
            memory_total_mb: Some(24576),
            network_latency_ms: Some(12.5),
        },
    }
}
