//! The PostgreSQL durable store, for several hubs sharing one database.
//!
//! Every table lives in one schema (`storage.postgres_schema`, default `poolhub`), named in
//! every statement, so one database can hold several independent hubs (and the test suite
//! gives each test its own schema). The schema is created and upgraded by versioned
//! migrations at start-up, inside a transaction holding an advisory lock on the schema name:
//! two instances starting at once apply each migration exactly once.
//!
//! Each change is one transaction, committed before the call returns (PostgreSQL's commit is
//! durable with the server's default `synchronous_commit`). Concurrent commits from many
//! connections share WAL flushes in the server, which is PostgreSQL's own group commit.
//!
//! Connection problems map to [`StoreError::Unavailable`] (the hub answers 503); the pool
//! drops broken connections and opens new ones by itself on the next use.

use super::rows::{self, OutcomeRow, RowError};
use super::{
    BoxError, CommitObserver, DurableStore, OutcomeRecord, Result, StoreError, StoredMiner,
};
use crate::auth::ApiKey;
use crate::domain::identity::Ban;
use crate::domain::scoring::{Availability, MinerStats};
use crate::domain::{Address, Miner};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

const BACKEND: &str = "postgres";

/// Outcomes deleted per statement by a prune.
const PRUNE_BATCH: i64 = 512;

/// Migrations, in order; migration `i` brings the schema to version `i + 1`. `{s}` is the
/// quoted schema name. Never edit one that has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: miners (with their statistics and availability in the same row, so one row lock
    // serialises everything about a miner), and the outcome history.
    "CREATE TABLE {s}.miners (
        address      TEXT PRIMARY KEY,
        token_hash   TEXT NOT NULL,
        miner        JSONB NOT NULL,
        stats        JSONB,
        availability JSONB
    );
    CREATE TABLE {s}.outcomes (
        seq        BIGSERIAL PRIMARY KEY,
        at         BIGINT NOT NULL,
        address    TEXT NOT NULL,
        match_id   TEXT NOT NULL,
        success    BOOLEAN NOT NULL,
        latency_ms DOUBLE PRECISION,
        error      TEXT
    );
    CREATE INDEX outcomes_at ON {s}.outcomes (at);",
    // 2: client and admin keys: the digest of each secret, never the secret; the JSON row
    // (`rows::KeyRow`) is what is read back, the columns are there for the constraints.
    "CREATE TABLE {s}.api_keys (
        id     BIGINT PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        key    JSONB NOT NULL
    );",
    // 3: bans, checked by the insert of a miner in the same statement.
    "CREATE TABLE {s}.bans (
        address   TEXT PRIMARY KEY,
        reason    TEXT,
        banned_at BIGINT NOT NULL
    );",
    // 4: history bounded by count (`storage.max_outcomes`): the prune finds the newest N and
    // deletes the oldest first, both in (at, seq) order.
    "CREATE INDEX outcomes_at_seq ON {s}.outcomes (at, seq);
     DROP INDEX {s}.outcomes_at;",
];

/// The newest schema version this build understands.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

fn unavailable(e: impl Into<BoxError>) -> StoreError {
    StoreError::unavailable(BACKEND, e)
}

fn corrupt(e: impl Into<BoxError>) -> StoreError {
    StoreError::corrupt(BACKEND, e)
}

/// A stored row this build cannot read is corrupt data, never a panic.
fn row<T>(r: std::result::Result<T, RowError>) -> Result<T> {
    r.map_err(corrupt)
}

/// Maps a driver error by meaning. Only a unique violation (SQLSTATE 23505) has a meaning
/// of its own, `AlreadyExists`; every other error, data errors included, is reported as
/// `Unavailable` (the request may succeed once the database is reachable again), with the
/// server's message and SQLSTATE kept as the cause.
fn pg(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        if code == "23505" {
            return StoreError::AlreadyExists;
        }
        return unavailable(format!("{} (SQLSTATE {code})", db.message()));
    }
    if e.is_closed() {
        return unavailable("the connection to PostgreSQL was closed");
    }
    unavailable(e)
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        e => unavailable(format!("no database connection: {e}")),
    }
}

/// Checks a schema name: it is put into SQL, so only plain identifiers are accepted.
pub fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Every statement, with the schema filled in once.
struct Sql {
    select_all: String,
    select_one: String,
    insert: String,
    update: String,
    replace: String,
    token_of: String,
    delete: String,
    lock_stats: String,
    write_stats: String,
    insert_outcome: String,
    save_availability: String,
    prune: String,
    /// The newest record beyond the `keep` newest (the last one to delete).
    prune_cut: String,
    prune_upto: String,
    count: String,
    /// The schema's tables with their indexes and TOAST, bytes.
    size: String,
    export_outcomes: String,
    import_miner: String,
    wipe: String,
    insert_key: String,
    revoke_key: String,
    select_keys: String,
    is_banned: String,
    lock_address: String,
    put_ban: String,
    delete_banned: String,
    unban: String,
    bans: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        Self {
            select_all: format!(
                "SELECT miner::text, stats::text, availability::text FROM {s}.miners ORDER BY address"
            ),
            select_one: format!(
                "SELECT miner::text, stats::text, availability::text FROM {s}.miners WHERE address = $1"
            ),
            // A banned address is refused by the same statement that inserts.
            insert: format!(
                "INSERT INTO {s}.miners (address, token_hash, miner)
                 SELECT $1::text, $2::text, $3::text::jsonb
                 WHERE NOT EXISTS (SELECT 1 FROM {s}.bans WHERE address = $1::text)
                 ON CONFLICT (address) DO NOTHING"
            ),
            update: format!(
                "UPDATE {s}.miners SET miner = $3::text::jsonb WHERE address = $1 AND token_hash = $2"
            ),
            // $5: drop statistics and availability (a takeover starts a fresh record).
            replace: format!(
                "UPDATE {s}.miners SET token_hash = $3, miner = $4::text::jsonb,
                   stats = CASE WHEN $5 THEN NULL ELSE stats END,
                   availability = CASE WHEN $5 THEN NULL ELSE availability END
                 WHERE address = $1 AND token_hash = $2"
            ),
            token_of: format!("SELECT token_hash FROM {s}.miners WHERE address = $1"),
            delete: format!("DELETE FROM {s}.miners WHERE address = $1 AND token_hash = $2"),
            lock_stats: format!(
                "SELECT stats::text FROM {s}.miners WHERE address = $1 FOR UPDATE"
            ),
            write_stats: format!(
                "UPDATE {s}.miners SET stats = $2::text::jsonb WHERE address = $1"
            ),
            insert_outcome: format!(
                "INSERT INTO {s}.outcomes (at, address, match_id, success, latency_ms, error)
                 VALUES ($1, $2, $3, $4, $5, $6)"
            ),
            // A miner deleted since the snapshot matches no row and stays deleted.
            save_availability: format!(
                "UPDATE {s}.miners m SET availability = v.a::jsonb
                 FROM unnest($1::text[], $2::text[]) AS v(address, a)
                 WHERE m.address = v.address"
            ),
            prune: format!(
                "DELETE FROM {s}.outcomes WHERE seq IN (
                     SELECT seq FROM {s}.outcomes WHERE at < $1 ORDER BY at, seq LIMIT $2)"
            ),
            prune_cut: format!(
                "SELECT at, seq FROM {s}.outcomes ORDER BY at DESC, seq DESC OFFSET $1 LIMIT 1"
            ),
            prune_upto: format!(
                "DELETE FROM {s}.outcomes WHERE seq IN (
                     SELECT seq FROM {s}.outcomes WHERE (at, seq) <= ($1, $2)
                     ORDER BY at, seq LIMIT $3)"
            ),
            count: format!("SELECT count(*) FROM {s}.outcomes"),
            size: "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = $1 AND c.relkind = 'r'"
                .to_string(),
            export_outcomes: format!(
                "SELECT seq, at, address, match_id, success, latency_ms, error FROM {s}.outcomes
                 WHERE seq > $1 ORDER BY seq LIMIT $2"
            ),
            import_miner: format!(
                "INSERT INTO {s}.miners (address, token_hash, miner, stats, availability)
                 VALUES ($1, $2, $3::text::jsonb, $4::text::jsonb, $5::text::jsonb)
                 ON CONFLICT (address) DO UPDATE SET token_hash = EXCLUDED.token_hash,
                   miner = EXCLUDED.miner, stats = EXCLUDED.stats,
                   availability = EXCLUDED.availability"
            ),
            wipe: format!("TRUNCATE {s}.miners, {s}.outcomes, {s}.bans RESTART IDENTITY"),
            // No conflict target: a taken id and a taken digest both insert nothing.
            insert_key: format!(
                "INSERT INTO {s}.api_keys (id, digest, key) VALUES ($1, $2, $3::text::jsonb)
                 ON CONFLICT DO NOTHING"
            ),
            revoke_key: format!("DELETE FROM {s}.api_keys WHERE id = $1"),
            select_keys: format!("SELECT key::text FROM {s}.api_keys"),
            is_banned: format!("SELECT 1 FROM {s}.bans WHERE address = $1"),
            // Serialises a new registration of an address with a ban of it. Without it, under
            // READ COMMITTED an insert whose snapshot predates a concurrent ban's commit, and
            // a ban whose delete cannot see the uncommitted insert, would leave a banned
            // address registered.
            lock_address: format!(
                "SELECT pg_advisory_xact_lock(hashtextextended('poolhub-address:{schema}:' || $1, 0))"
            ),
            put_ban: format!(
                "INSERT INTO {s}.bans (address, reason, banned_at) VALUES ($1, $2, $3)
                 ON CONFLICT (address) DO UPDATE SET reason = EXCLUDED.reason,
                   banned_at = EXCLUDED.banned_at"
            ),
            delete_banned: format!("DELETE FROM {s}.miners WHERE address = $1"),
            unban: format!("DELETE FROM {s}.bans WHERE address = $1"),
            bans: format!("SELECT address, reason, banned_at FROM {s}.bans ORDER BY address"),
        }
    }
}

/// Appends one outcome to the history, as the columns of its [`OutcomeRow`].
async fn insert_outcome(
    txn: &deadpool_postgres::Transaction<'_>,
    stmt: &tokio_postgres::Statement,
    o: &OutcomeRecord,
) -> Result<()> {
    let r = OutcomeRow::from(o);
    txn.execute(
        stmt,
        &[
            &i64_of(r.at),
            &r.address,
            &r.match_id,
            &r.success,
            &r.latency_ms,
            &r.error,
        ],
    )
    .await
    .map_err(pg)
    .map(|_| ())
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub url: String,
    pub schema: String,
    /// Most connections this hub holds.
    pub max_connections: usize,
    /// How long start-up keeps retrying an unreachable database before giving up.
    pub startup_timeout: Duration,
}

/// The PostgreSQL durable store.
pub struct PostgresStore {
    pool: Pool,
    sql: Sql,
    schema: String,
    observer: Option<CommitObserver>,
    closed: std::sync::atomic::AtomicBool,
}

/// One `miners` row: the three JSON columns, each a versioned row of `store::rows`.
fn row_to_stored(miner: &str, stats: Option<&str>, avail: Option<&str>) -> Result<StoredMiner> {
    Ok(StoredMiner {
        miner: row(rows::decode_miner(miner.as_bytes()))?,
        stats: match stats {
            Some(s) => row(rows::decode_stats(s.as_bytes()))?,
            None => MinerStats::default(),
        },
        availability: match avail {
            Some(a) => row(rows::decode_availability(a.as_bytes()))?,
            None => Availability::default(),
        },
    })
}

impl PostgresStore {
    /// Connects and brings the schema up to date, retrying an unreachable database with
    /// backoff (logged) for up to `startup_timeout`.
    pub async fn connect(opts: PgOptions, observer: Option<CommitObserver>) -> Result<Self> {
        if !valid_schema_name(&opts.schema) {
            return Err(unavailable(format!(
                "schema name {:?} must be a plain lowercase identifier",
                opts.schema
            )));
        }
        let target = crate::tls::client::PgTarget::parse(&opts.url)
            .map_err(|e| unavailable(format!("bad database URL: {e}")))?;
        let tls = target
            .client_config()
            .map_err(|e| unavailable(format!("PostgreSQL TLS: {e}")))?;
        let mut cfg = target.config;
        cfg.connect_timeout(Duration::from_secs(3));
        cfg.keepalives(true);
        cfg.keepalives_idle(Duration::from_secs(30));
        if cfg.get_application_name().is_none() {
            cfg.application_name("poolhub");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = match tls {
            None => Manager::from_config(cfg, NoTls, manager_config),
            Some(tls) => Manager::from_config(
                cfg,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                manager_config,
            ),
        };
        let pool = Pool::builder(mgr)
            .max_size(opts.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(unavailable)?;
        let store = Self {
            pool,
            sql: Sql::new(&opts.schema),
            schema: opts.schema,
            observer,
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        let deadline = Instant::now() + opts.startup_timeout;
        let mut delay = Duration::from_millis(250);
        loop {
            match store.migrate().await {
                Ok(()) => return Ok(store),
                Err(e @ StoreError::Corrupt { .. }) => return Err(e),
                Err(e) if Instant::now() + delay >= deadline => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e.detail(), retry_in_ms = delay.as_millis() as u64,
                        "PostgreSQL is not reachable yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The schema this store uses.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Creates or upgrades the schema, one instance at a time.
    async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let txn = client.transaction().await.map_err(pg)?;
        // Serialises concurrent start-ups on this schema (released at commit or rollback).
        txn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('poolhub-migrate:' || $1, 0))",
            &[&self.schema],
        )
        .await
        .map_err(pg)?;
        let s = format!("\"{}\"", self.schema);
        txn.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.schema_version (
                 version    INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(pg)?;
        let current: i32 = txn
            .query_one(
                &format!("SELECT COALESCE(max(version), 0) FROM {s}.schema_version"),
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if current > SCHEMA_VERSION {
            return Err(corrupt(format!(
                "schema {s} has version {current}, this poolhub understands up to {SCHEMA_VERSION}; use a newer poolhub"
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = i as i32 + 1;
            txn.batch_execute(&m.replace("{s}", &s)).await.map_err(pg)?;
            txn.execute(
                &format!("INSERT INTO {s}.schema_version (version) VALUES ($1)"),
                &[&version],
            )
            .await
            .map_err(pg)?;
            tracing::info!(schema = %self.schema, version, "PostgreSQL schema migrated");
        }
        txn.commit().await.map_err(pg)
    }

    /// Drops the schema and everything in it (tests).
    pub async fn drop_schema(&self) -> Result<()> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .await
            .map_err(pg)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            Err(unavailable("the store is closed"))
        } else {
            Ok(())
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.check_open()?;
        self.pool.get().await.map_err(pool_err)
    }

    /// Runs one write and reports it to the metrics observer: how long it took, and whether
    /// it failed in the backend (a refused write, such as a token mismatch, did not).
    async fn observed<T>(&self, write: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let r = write.await;
        if let Some(o) = &self.observer {
            let failed = r.as_ref().err().and_then(StoreError::backend).is_some();
            o(started.elapsed(), 1, !failed);
        }
        r
    }

    async fn do_record_outcome(&self, o: &OutcomeRecord, decay: f64) -> Result<MinerStats> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let addr = o.address.to_string();
        let stmt = txn.prepare_cached(&self.sql.lock_stats).await.map_err(pg)?;
        let locked = txn
            .query_opt(&stmt, &[&addr])
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        let current = match locked.get::<_, Option<&str>>(0) {
            Some(s) => row(rows::decode_stats(s.as_bytes()))?,
            None => MinerStats::default(),
        };
        let next = current.with_outcome(o.sample(), decay);
        let stmt = txn
            .prepare_cached(&self.sql.write_stats)
            .await
            .map_err(pg)?;
        txn.execute(&stmt, &[&addr, &row(rows::encode_stats(&next))?])
            .await
            .map_err(pg)?;
        let stmt = txn
            .prepare_cached(&self.sql.insert_outcome)
            .await
            .map_err(pg)?;
        insert_outcome(&txn, &stmt, o).await?;
        txn.commit().await.map_err(pg)?;
        Ok(next)
    }

    /// Why a conditional write matched no row: the miner is gone, or the token differs.
    async fn why_not(&self, client: &deadpool_postgres::Client, addr: &str) -> StoreError {
        match client.query_opt(&self.sql.token_of, &[&addr]).await {
            Ok(None) => StoreError::NotFound,
            Ok(Some(_)) => StoreError::TokenMismatch,
            Err(e) => pg(e),
        }
    }
}

#[async_trait]
impl DurableStore for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load_all(&self) -> Result<Vec<StoredMiner>> {
        let client = self.client().await?;
        let rows = client.query(&self.sql.select_all, &[]).await.map_err(pg)?;
        rows.iter()
            .map(|r| row_to_stored(r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    async fn load_miner(&self, address: &Address) -> Result<Option<StoredMiner>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.select_one)
            .await
            .map_err(pg)?;
        let row = client
            .query_opt(&stmt, &[&address.to_string()])
            .await
            .map_err(pg)?;
        row.map(|r| row_to_stored(r.get(0), r.get(1), r.get(2)))
            .transpose()
    }

    async fn insert_miner(&self, miner: &Miner) -> Result<()> {
        self.observed(async {
            let mut client = self.client().await?;
            let txn = client.transaction().await.map_err(pg)?;
            let addr = miner.address.to_string();
            let lock = txn
                .prepare_cached(&self.sql.lock_address)
                .await
                .map_err(pg)?;
            txn.execute(&lock, &[&addr]).await.map_err(pg)?;
            let stmt = txn.prepare_cached(&self.sql.insert).await.map_err(pg)?;
            let n = txn
                .execute(
                    &stmt,
                    &[&addr, &miner.token_hash, &row(rows::encode_miner(miner))?],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                let banned = txn
                    .query_opt(&self.sql.is_banned, &[&addr])
                    .await
                    .map_err(pg)?;
                // Dropping the transaction rolls it back (nothing was written).
                return Err(if banned.is_some() {
                    StoreError::Banned
                } else {
                    StoreError::AlreadyExists
                });
            }
            txn.commit().await.map_err(pg)
        })
        .await
    }

    async fn update_miner(&self, miner: &Miner) -> Result<()> {
        self.observed(async {
            let client = self.client().await?;
            let addr = miner.address.to_string();
            let stmt = client.prepare_cached(&self.sql.update).await.map_err(pg)?;
            let n = client
                .execute(
                    &stmt,
                    &[&addr, &miner.token_hash, &row(rows::encode_miner(miner))?],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                Err(self.why_not(&client, &addr).await)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn replace_miner(
        &self,
        miner: &Miner,
        previous_token_hash: &str,
        fresh: bool,
    ) -> Result<()> {
        self.observed(async {
            let client = self.client().await?;
            let addr = miner.address.to_string();
            let stmt = client.prepare_cached(&self.sql.replace).await.map_err(pg)?;
            let n = client
                .execute(
                    &stmt,
                    &[
                        &addr,
                        &previous_token_hash,
                        &miner.token_hash,
                        &row(rows::encode_miner(miner))?,
                        &fresh,
                    ],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                Err(self.why_not(&client, &addr).await)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn delete_miner(&self, address: &Address, token_hash: &str) -> Result<()> {
        self.observed(async {
            let client = self.client().await?;
            let addr = address.to_string();
            let stmt = client.prepare_cached(&self.sql.delete).await.map_err(pg)?;
            let n = client
                .execute(&stmt, &[&addr, &token_hash])
                .await
                .map_err(pg)?;
            if n == 0 {
                Err(self.why_not(&client, &addr).await)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn record_outcome(
        &self,
        outcome: &OutcomeRecord,
        decay_factor: f64,
    ) -> Result<MinerStats> {
        self.observed(self.do_record_outcome(outcome, decay_factor))
            .await
    }

    async fn save_availability(&self, batch: Vec<(Address, Availability)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.observed(async {
            let mut addrs = Vec::with_capacity(batch.len());
            let mut avs = Vec::with_capacity(batch.len());
            for (a, av) in &batch {
                addrs.push(a.to_string());
                avs.push(row(rows::encode_availability(av))?);
            }
            let client = self.client().await?;
            client
                .execute(&self.sql.save_availability, &[&addrs, &avs])
                .await
                .map_err(pg)
                .map(|_| ())
        })
        .await
    }

    async fn prune_outcomes(&self, before: u64, keep: Option<u64>) -> Result<u64> {
        // Small batches, each its own statement (and commit), so no long lock on the table.
        let client = self.client().await?;
        let batch = PRUNE_BATCH;
        let mut total = 0;
        loop {
            let n = client
                .execute(&self.sql.prune, &[&i64_of(before), &batch])
                .await
                .map_err(pg)?;
            total += n;
            if n < batch as u64 {
                break;
            }
        }
        let Some(keep) = keep else {
            return Ok(total);
        };
        // The cut is found once: records arriving meanwhile are newer and stay.
        let Some(cut) = client
            .query_opt(&self.sql.prune_cut, &[&i64_of(keep)])
            .await
            .map_err(pg)?
        else {
            return Ok(total);
        };
        let (at, seq): (i64, i64) = (cut.get(0), cut.get(1));
        loop {
            let n = client
                .execute(&self.sql.prune_upto, &[&at, &seq, &batch])
                .await
                .map_err(pg)?;
            total += n;
            if n < batch as u64 {
                return Ok(total);
            }
        }
    }

    async fn size_bytes(&self) -> Option<u64> {
        let client = self.client().await.ok()?;
        let row = client
            .query_one(&self.sql.size, &[&self.schema])
            .await
            .ok()?;
        let bytes: i64 = row.get(0);
        u64::try_from(bytes).ok()
    }

    async fn outcome_count(&self) -> Result<u64> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one(&self.sql.count, &[])
            .await
            .map_err(pg)?
            .get(0);
        Ok(n as u64)
    }

    async fn export_outcomes(
        &self,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<OutcomeRecord>, Option<u128>)> {
        let client = self.client().await?;
        let after = after.map_or(0, |c| i64::try_from(c).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let rows = client
            .query(&self.sql.export_outcomes, &[&after, &limit])
            .await
            .map_err(pg)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last = None;
        for r in &rows {
            let seq: i64 = r.get(0);
            let at: i64 = r.get(1);
            // The columns' layout is versioned by the schema; the row type converts them.
            let columns = OutcomeRow {
                version: rows::FORMAT_VERSION,
                at: at.max(0) as u64,
                address: r.get(2),
                match_id: r.get(3),
                success: r.get(4),
                latency_ms: r.get(5),
                error: r.get(6),
            };
            out.push(
                OutcomeRecord::try_from(columns)
                    .map_err(|e| corrupt(format!("outcome {seq}: {}", super::error_chain(&e))))?,
            );
            last = Some(seq as u128);
        }
        Ok((out, last))
    }

    async fn import(&self, miners: Vec<StoredMiner>, outcomes: Vec<OutcomeRecord>) -> Result<()> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let stmt = txn.prepare(&self.sql.import_miner).await.map_err(pg)?;
        for m in &miners {
            txn.execute(
                &stmt,
                &[
                    &m.miner.address.to_string(),
                    &m.miner.token_hash,
                    &row(rows::encode_miner(&m.miner))?,
                    &row(rows::encode_stats(&m.stats))?,
                    &row(rows::encode_availability(&m.availability))?,
                ],
            )
            .await
            .map_err(pg)?;
        }
        let stmt = txn.prepare(&self.sql.insert_outcome).await.map_err(pg)?;
        for o in &outcomes {
            insert_outcome(&txn, &stmt, o).await?;
        }
        txn.commit().await.map_err(pg)
    }

    async fn ban(&self, ban: &Ban) -> Result<bool> {
        let b = rows::BanRow::from(ban);
        self.observed(async {
            let mut client = self.client().await?;
            let txn = client.transaction().await.map_err(pg)?;
            txn.execute(&self.sql.lock_address, &[&b.address])
                .await
                .map_err(pg)?;
            txn.execute(
                &self.sql.put_ban,
                &[&b.address, &b.reason, &i64_of(b.banned_at)],
            )
            .await
            .map_err(pg)?;
            let n = txn
                .execute(&self.sql.delete_banned, &[&b.address])
                .await
                .map_err(pg)?;
            txn.commit().await.map_err(pg)?;
            Ok(n > 0)
        })
        .await
    }

    async fn unban(&self, address: &Address) -> Result<()> {
        self.observed(async {
            let client = self.client().await?;
            let n = client
                .execute(&self.sql.unban, &[&address.to_string()])
                .await
                .map_err(pg)?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn bans(&self) -> Result<Vec<Ban>> {
        let client = self.client().await?;
        let rows = client.query(&self.sql.bans, &[]).await.map_err(pg)?;
        rows.iter()
            .map(|r| {
                let at: i64 = r.get(2);
                row(Ban::try_from(rows::BanRow {
                    version: rows::FORMAT_VERSION,
                    address: r.get(0),
                    reason: r.get(1),
                    banned_at: u64::try_from(at).unwrap_or(0),
                }))
            })
            .collect()
    }

    async fn wipe(&self) -> Result<()> {
        let client = self.client().await?;
        client.batch_execute(&self.sql.wipe).await.map_err(pg)
    }

    async fn health(&self) -> Result<()> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(pg)
            .map(|_| ())
    }

    async fn insert_key(&self, key: &ApiKey) -> Result<()> {
        let text = row(rows::encode_key(key))?;
        self.observed(async {
            let client = self.client().await?;
            // The id's bits as a BIGINT, so every u64 round-trips.
            let n = client
                .execute(
                    &self.sql.insert_key,
                    &[&(key.id as i64), &hex::encode(key.digest), &text],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                Err(StoreError::AlreadyExists)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn revoke_key(&self, id: u64) -> Result<()> {
        self.observed(async {
            let client = self.client().await?;
            let n = client
                .execute(&self.sql.revoke_key, &[&(id as i64)])
                .await
                .map_err(pg)?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn load_keys(&self) -> Result<Vec<ApiKey>> {
        let client = self.client().await?;
        let found = client.query(&self.sql.select_keys, &[]).await.map_err(pg)?;
        let mut out = Vec::with_capacity(found.len());
        for r in found {
            let text: String = r.get(0);
            out.push(row(rows::decode_key(text.as_bytes()))?);
        }
        out.sort_by_key(|k| (k.created_at, k.id));
        Ok(out)
    }

    async fn close(&self) {
        // Every write is committed before it returns: nothing is pending. Later calls fail.
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.pool.close();
    }
}
