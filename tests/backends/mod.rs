//! The PostgreSQL and Redis test servers: which to use, and a fresh schema or key prefix per
//! test so runs never collide.
//!
//! Tests that need a server are `#[ignore = "needs POOLHUB_TEST_…"]`, so a plain `cargo test`
//! lists them as ignored instead of passing them silently. Run with `-- --include-ignored`
//! (as `.ci/run` does), such a test fails, never skips, when its variable is unset or its
//! server is unreachable.
#![allow(dead_code)]

use poolhub::config::{Config, DurableKind, HotKind};
use poolhub::store::postgres::{PgOptions, PostgresStore};
use poolhub::store::redis::{RedisHotStore, RedisOptions};
use poolhub::store::HotStore;
use std::time::Duration;

pub const DATABASE_VAR: &str = "POOLHUB_TEST_DATABASE_URL";
pub const REDIS_VAR: &str = "POOLHUB_TEST_REDIS_URL";

/// The PostgreSQL test server's URL; panics when `POOLHUB_TEST_DATABASE_URL` is unset.
pub fn database_url() -> String {
    poolhub::store::testing::required_env(DATABASE_VAR)
}

/// The Redis test server's URL; panics when `POOLHUB_TEST_REDIS_URL` is unset.
pub fn redis_url() -> String {
    poolhub::store::testing::required_env(REDIS_VAR)
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
        ca_file: None,
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

/// A TCP proxy in front of a test server that a test can cut and restore, to see how the
/// hub behaves while a backend is unreachable and that it recovers by itself.
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

/// `host:port` of a `scheme://[user@]host:port/...` URL.
pub fn host_port(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port().expect("test URLs name their port")
    )
}

impl Proxy {
    pub async fn start(target: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let accept = {
            let (up, conns) = (up.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let target = target.clone();
                    conns.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    }));
                }
            })
        };
        Self {
            port,
            up,
            conns,
            accept,
        }
    }

    /// Cuts every open connection and refuses new ones (they are closed on accept).
    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
        self.accept.abort();
    }
}

/// Points `c` at the test PostgreSQL (`(url, schema)`) and/or the test Redis
/// (`(url, key prefix)`), as every test of hubs on the shared backends needs.
pub fn use_shared(c: &mut Config, pg: Option<(&str, &str)>, redis: Option<(&str, &str)>) {
    if let Some((url, schema)) = pg {
        c.storage.ephemeral = false;
        c.storage.durable = DurableKind::Postgres;
        c.storage.database_url = Some(url.into());
        c.storage.postgres_schema = schema.into();
        c.storage.connect_timeout = 5;
    }
    if let Some((url, prefix)) = redis {
        c.storage.hot = HotKind::Redis;
        c.storage.redis_url = Some(url.into());
        c.storage.redis_prefix = prefix.into();
    }
}

/// Drops a test's PostgreSQL schema.
pub async fn drop_schema(url: &str, schema: &str) {
    postgres_schema(url, schema)
        .await
        .drop_schema()
        .await
        .unwrap_or_else(|e| panic!("dropping schema {schema}: {e}"));
}
