//! The storage contract as code: shared test functions that every backend's tests call
//! (object_store's `integration.rs` pattern), and the fixtures they use.
//!
//! Compiled for this crate's unit tests and, behind the `test-util` feature, for integration
//! tests and other crates (the crate's own dev-dependency on itself turns the feature on, so
//! a plain `cargo test` needs no flags). Nothing here is part of the production API.
//!
//! * [`durable`]: `durable_suite` and one function per behaviour of a `DurableStore`;
//! * [`hot`]: `hot_suite` and one function per behaviour of a `HotStore`;
//! * [`fixtures`]: a miner, an outcome, a status, ... so tests stop copying them.

pub mod durable;
pub mod fixtures;
pub mod hot;

/// The value of a test server's environment variable (`POOLHUB_TEST_DATABASE_URL`, ...).
///
/// Tests that need a server are `#[ignore = "needs VAR"]`, so a plain `cargo test` reports
/// them as ignored instead of passed; run with `--include-ignored` and the variable set. Run
/// without it, the test fails saying so, rather than passing without testing anything.
pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: this test needs its server. Set {name} (see README), or run \
             without --include-ignored to skip it"
        ),
    }
}
