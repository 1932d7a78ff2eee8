//! The PostgreSQL and Redis test servers: which to use, and a fresh schema or key prefix per
//! test so runs never collide. A suite whose variable is unset is skipped with a note; one
//! whose variable is set fails (never skips) when its server is unreachable.
#![allow(dead_code)]

use poolhub::store::postgres::{PgOptions, PostgresStore};
use poolhub::store::redis::{RedisHotStore, RedisOptions};
use poolhub::store::HotStore;
use std::time::Duration;

pub const DATABASE_VAR: &str = "POOLHUB_TEST_DATABASE_URL";
pub const REDIS_VAR: &str = "POOLHUB_TEST_REDIS_URL";

fn var(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            eprintln!("note: {name} is not set; skipping this test's backend");
            None
        }
    }
}

pub fn database_url() -> Option<String> {
    var(DATABASE_VAR)
}

pub fn redis_url() -> Option<String> {
    var(REDIS_VAR)
}

/// `prefix` followed by random lowercase hex.
pub fn fresh_name(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

/// A store in a schema of its own (the caller drops it with `drop_schema`).
pub async fn postgres(url: &str) -> PostgresStore {
    PostgresStore::connect(
        PgOptions {
            url: url.to_string(),
            schema: fresh_name("poolhub_test_"),
            max_connections: 8,
            startup_timeout: Duration::from_secs(5),
        },
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{DATABASE_VAR} is set but PostgreSQL is unusable: {e}"))
}

/// A store under a key prefix of its own.
pub async fn redis(url: &str, ttl: Duration) -> RedisHotStore {
    let h = RedisHotStore::open(RedisOptions {
        url: url.to_string(),
        prefix: fresh_name("test:") + ":",
        heartbeat_timeout: ttl,
        outcome_window: Duration::from_secs(60),
    })
    .unwrap();
    h.health()
        .await
        .unwrap_or_else(|e| panic!("{REDIS_VAR} is set but Redis is unusable: {e}"));
    h
}

/// A store on an existing (or new) schema, e.g. to drop it after a test.
pub async fn postgres_schema(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::connect(
        PgOptions {
            url: url.to_string(),
            schema: schema.to_string(),
            max_connections: 2,
            startup_timeout: Duration::from_secs(5),
        },
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{DATABASE_VAR} is set but PostgreSQL is unusable: {e}"))
}
