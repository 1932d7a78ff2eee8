//! The Redis hot store, for several hubs sharing live state.
//!
//! Keys live under `poolhub:<storage.redis_prefix>` so one Redis can serve several hubs (and
//! each test its own prefix):
//! * `…status:<address>`: a miner's live status (JSON), with the heartbeat timeout as TTL;
//! * `…match:<id>`: the match ledger, a hash from each offered address to `0`/`1` (reported),
//!   with the outcome window as TTL; claims are one Lua script, so a pair is claimed once
//!   even when two hubs receive the same outcome. A match made with a client key also holds
//!   `client` (the key's id, format [`OWNED_LEDGER_FORMAT`]), and the script refuses every
//!   other claimant;
//! * `…slots:<address>`: a miner's slot reservations, a sorted set of match ids scored by
//!   their expiry (unix ms, Redis's clock); taking a slot is one Lua script that drops
//!   expired entries and checks the cap, so hubs sharing Redis never over-reserve a miner
//!   (the script reads `TIME` before it writes, which needs Redis 5 or later);
//! * `…events`: the pub/sub channel hubs use to keep each other's indexes current.
//!
//! Status values and ledgers carry a format version (`v`, now [`FORMAT`]) so a later change
//! of format is detected instead of misread; values written before versions existed are
//! read as version 1.
//!
//! Matching must not wait on the network for the ledger, so ledger writes and published
//! events go through one background writer that pipelines whatever is queued, in the order
//! they were queued. A claim first waits until this hub's queued ledger writes are flushed,
//! so an outcome reported to the hub that made the match always finds it. When Redis is
//! down those writes are dropped (logged and counted): matching keeps serving from the
//! index, and outcomes for matches made meanwhile are refused as unknown.
//!
//! The writer and the event subscriptions are owned by the store (a cancellation token and
//! a task tracker): [`HotStore::close`] flushes the queue, then stops and awaits them.
//!
//! The connection is a `ConnectionManager`, which reconnects by itself.

use super::{BusMessage, ClaimError, EventBus, HotStore, MatchId, MatchTicket, Result, StoreError};
use crate::domain::identity::Challenge;
use crate::domain::{Address, MinerStatus, Resources};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BACKEND: &str = "redis";
/// Ledger writes and events that may wait for the writer; more are dropped (and logged).
const QUEUE: usize = 65_536;
/// Most queued writes one pipeline carries.
const MAX_BATCH: usize = 1024;

/// The format version of the values this build writes (status JSON, and ledger hashes of
/// matches made without a key).
pub const FORMAT: u32 = 1;
/// The format of a ledger that names the client key that made the match (its `client`
/// field). Version 1 builds refuse it as newer, so during a rolling upgrade they never
/// accept another key's outcome for it; ledgers without a client stay version 1.
pub const OWNED_LEDGER_FORMAT: u32 = 2;
/// The ledger hash field holding its format version (never an address).
const VERSION_FIELD: &str = "v";
/// The ledger hash field holding the id of the key that made the match (never an address,
/// which starts with `0x`).
const CLIENT_FIELD: &str = "client";

/// KEYS[1] = ledger; ARGV[1] = address, ARGV[2] = the newest ledger format this build reads,
/// ARGV[3] = the claiming key's id ("" for none).
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local fmt = redis.call('HGET', KEYS[1], 'v')
if fmt and tonumber(fmt) > tonumber(ARGV[2]) then return -4 end
local owner = redis.call('HGET', KEYS[1], 'client')
if owner and owner ~= ARGV[3] then return -5 end
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -2 end
if v == '1' then return -3 end
redis.call('HSET', KEYS[1], ARGV[1], '1')
return 0
";

/// KEYS[1] = the miner's reservations; ARGV[1] = match id, ARGV[2] = slots, ARGV[3] = TTL
/// in ms. Redis's own clock dates the entries, so hubs whose clocks differ agree on expiry.
/// Answers 1 when the slot is taken (or renewed), 0 when every slot is held.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
";

const UNCLAIM: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], '0')
end
return 0
";

fn unavailable(e: impl Into<super::BoxError>) -> StoreError {
    StoreError::unavailable(BACKEND, e)
}

fn corrupt(e: impl Into<super::BoxError>) -> StoreError {
    StoreError::corrupt(BACKEND, e)
}

/// A live status as stored: its own type, so renaming a domain field does not silently
/// change (or break reading) what other hubs and older builds wrote.
#[derive(Serialize, Deserialize)]
struct StatusRow {
    /// Format version; absent (0) in values written before versions existed.
    #[serde(default)]
    v: u32,
    available: bool,
    current_load: u32,
    gpu_utilization: f64,
    temperature: Option<f64>,
    reported_at: u64,
    /// Optional figures added within version 1 (older builds ignore them, and values they
    /// wrote read without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_used_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_total_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network_latency_ms: Option<f64>,
}

fn encode_status(s: &MinerStatus) -> Result<String> {
    serde_json::to_string(&StatusRow {
        v: FORMAT,
        available: s.available,
        current_load: s.current_load,
        gpu_utilization: s.gpu_utilization,
        temperature: s.temperature,
        reported_at: s.reported_at,
        memory_used_mb: s.resources.memory_used_mb,
        memory_total_mb: s.resources.memory_total_mb,
        network_latency_ms: s.resources.network_latency_ms,
    })
    .map_err(corrupt)
}

fn decode_status(raw: &str) -> Result<MinerStatus> {
    let r: StatusRow = serde_json::from_str(raw).map_err(corrupt)?;
    if r.v > FORMAT {
        return Err(corrupt(format!(
            "a status in format version {} (this build reads up to {FORMAT})",
            r.v
        )));
    }
    Ok(MinerStatus {
        available: r.available,
        current_load: r.current_load,
        gpu_utilization: r.gpu_utilization,
        temperature: r.temperature,
        reported_at: r.reported_at,
        resources: Resources {
            memory_used_mb: r.memory_used_mb,
            memory_total_mb: r.memory_total_mb,
            network_latency_ms: r.network_latency_ms,
        },
    })
}

/// An open challenge as stored, apart from the domain type for the same reason as
/// [`StatusRow`]: another hub (maybe another build) reads what this one wrote.
#[derive(Serialize, Deserialize)]
struct ChallengeRow {
    v: u32,
    domain: String,
    address: Address,
    statement: String,
    uri: String,
    chain_id: u64,
    nonce: String,
    issued_at: u64,
    expires_at: u64,
}

fn encode_challenge(c: &Challenge) -> Result<String> {
    serde_json::to_string(&ChallengeRow {
        v: FORMAT,
        domain: c.domain.clone(),
        address: c.address,
        statement: c.statement.clone(),
        uri: c.uri.clone(),
        chain_id: c.chain_id,
        nonce: c.nonce.clone(),
        issued_at: c.issued_at,
        expires_at: c.expires_at,
    })
    .map_err(corrupt)
}

fn decode_challenge(raw: &str) -> Result<Challenge> {
    let r: ChallengeRow = serde_json::from_str(raw).map_err(corrupt)?;
    if r.v > FORMAT {
        return Err(corrupt(format!(
            "a challenge in format version {} (this build reads up to {FORMAT})",
            r.v
        )));
    }
    Ok(Challenge {
        domain: r.domain,
        address: r.address,
        statement: r.statement,
        uri: r.uri,
        chain_id: r.chain_id,
        nonce: r.nonce,
        issued_at: r.issued_at,
        expires_at: r.expires_at,
    })
}

/// Checks a key prefix: printable, no spaces, bounded.
pub fn valid_prefix(p: &str) -> bool {
    p.len() <= 64 && p.chars().all(|c| c.is_ascii_graphic())
}

/// How to reach Redis and what to keep for how long.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: String,
    /// The CA that signed a `rediss://` server's certificate (else the system's store).
    pub ca_file: Option<std::path::PathBuf>,
    /// Appended to `poolhub:`.
    pub prefix: String,
    pub heartbeat_timeout: Duration,
    pub outcome_window: Duration,
}

enum Write {
    Ledger(MatchTicket),
    Publish(String),
}

struct Queued {
    seq: u64,
    write: Write,
}

/// The Redis hot store.
pub struct RedisHotStore {
    client: redis::Client,
    conn: ConnectionManager,
    ns: String,
    status_ttl_ms: u64,
    queue: mpsc::Sender<Queued>,
    /// The sequence number of the last write queued. Held while a write is numbered *and*
    /// queued, so the channel's order is the numbers' order and `flushed` (the writer's
    /// last number) can only grow: `flushed >= n` then means every write numbered up to
    /// `n` has been handled. A write the queue refuses takes no number.
    enqueued: parking_lot::Mutex<u64>,
    flushed: watch::Receiver<u64>,
    claim: redis::Script,
    unclaim: redis::Script,
    reserve: redis::Script,
    on_dropped: Option<DropObserver>,
    /// Stops the writer and every subscription (on `close`, or when the store is dropped).
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Told how many background writes were dropped (feeds `poolhub_store_errors_total`).
pub type DropObserver = std::sync::Arc<dyn Fn(usize) + Send + Sync>;

impl RedisHotStore {
    /// Prepares the store without contacting Redis: a hub starts (and reports Redis as
    /// unhealthy) while Redis is down, and connects when it comes back.
    pub fn open(opts: RedisOptions) -> Result<Self> {
        Self::open_observed(opts, None)
    }

    /// Like [`open`](Self::open); `on_dropped` is told how many background writes (match
    /// ledger entries, events) were lost because Redis could not take them.
    pub fn open_observed(opts: RedisOptions, on_dropped: Option<DropObserver>) -> Result<Self> {
        if !valid_prefix(&opts.prefix) {
            return Err(unavailable(format!(
                "key prefix {:?} must be printable ASCII without spaces",
                opts.prefix
            )));
        }
        let client = crate::tls::client::redis_client(&opts.url, opts.ca_file.as_deref())
            .map_err(unavailable)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), cfg).map_err(unavailable)?;
        let ns = format!("poolhub:{}", opts.prefix);
        let (queue, rx) = mpsc::channel(QUEUE);
        let (flushed_tx, flushed) = watch::channel(0u64);
        let window_ms = opts.outcome_window.as_millis() as u64;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(writer(
            conn.clone(),
            ns.clone(),
            window_ms,
            rx,
            flushed_tx,
            on_dropped.clone(),
            cancel.clone(),
        ));
        Ok(Self {
            client,
            conn,
            ns,
            status_ttl_ms: (opts.heartbeat_timeout.as_millis() as u64).max(1),
            queue,
            enqueued: parking_lot::Mutex::new(0),
            flushed,
            claim: redis::Script::new(CLAIM),
            unclaim: redis::Script::new(UNCLAIM),
            reserve: redis::Script::new(RESERVE),
            on_dropped,
            cancel,
            tasks,
        })
    }

    /// The key prefix in use (`poolhub:` + the configured prefix).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    fn status_key(&self, a: &Address) -> String {
        format!("{}status:{a}", self.ns)
    }

    fn match_key(&self, id: MatchId) -> String {
        format!("{}match:{id}", self.ns)
    }

    fn slots_key(&self, a: &Address) -> String {
        format!("{}slots:{a}", self.ns)
    }

    fn challenge_key(&self, a: &Address) -> String {
        format!("{}challenge:{a}", self.ns)
    }

    fn enqueue(&self, write: Write) {
        let refused = {
            // Numbering and queueing under one lock: see `enqueued`. `try_send` never waits.
            let mut last = self.enqueued.lock();
            let seq = *last + 1;
            match self.queue.try_send(Queued { seq, write }) {
                Ok(()) => {
                    *last = seq;
                    None
                }
                Err(e) => Some(e),
            }
        };
        if let Some(e) = refused {
            match e {
                // The writer is far behind (Redis is slow or down): keep the hub responsive.
                mpsc::error::TrySendError::Full(_) => {
                    tracing::warn!("Redis write queue is full; a ledger write or event was dropped")
                }
                mpsc::error::TrySendError::Closed(_) => {
                    tracing::debug!("Redis store is closed; a ledger write or event was dropped")
                }
            }
            if let Some(f) = &self.on_dropped {
                f(1);
            }
        }
    }

    /// Waits (at most 2 s) until every write this store queued so far has been handled by
    /// the writer: sent, or dropped and counted because Redis could not take it.
    async fn flush(&self) {
        let target = *self.enqueued.lock();
        let mut rx = self.flushed.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|f| *f >= target)).await;
    }

    /// Whether `key` is one of the keys this store writes under its own namespace. Strict,
    /// because namespaces nest: with prefixes `""` and `"a:"`, `poolhub:a:status:…` starts
    /// with `poolhub:` but belongs to the other pool.
    #[cfg(any(test, feature = "test-util"))]
    fn owns(&self, key: &str) -> bool {
        let Some(rest) = key.strip_prefix(self.ns.as_str()) else {
            return false;
        };
        let canonical_address = |a: &str| a.parse::<Address>().is_ok_and(|p| p.to_string() == a);
        if let Some(a) = rest.strip_prefix("status:") {
            canonical_address(a)
        } else if let Some(a) = rest.strip_prefix("slots:") {
            canonical_address(a)
        } else if let Some(id) = rest.strip_prefix("match:") {
            id.parse::<MatchId>().is_ok_and(|p| p.to_string() == id)
        } else {
            false
        }
    }

    /// Deletes every key this store wrote under its namespace, and nothing else (not the
    /// keys of a pool whose prefix extends this one's); returns how many. For tests only:
    /// it walks the keyspace with `SCAN` (never `KEYS`, which blocks Redis).
    #[cfg(any(test, feature = "test-util"))]
    pub async fn clear_namespace(&self) -> Result<u64> {
        let mut pattern = String::with_capacity(self.ns.len() + 1);
        for ch in self.ns.chars() {
            if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push('*');
        let mut c = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            let ours: Vec<String> = keys.into_iter().filter(|k| self.owns(k)).collect();
            if !ours.is_empty() {
                let n: u64 = redis::cmd("DEL")
                    .arg(&ours)
                    .query_async(&mut c)
                    .await
                    .map_err(unavailable)?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

impl Drop for RedisHotStore {
    fn drop(&mut self) {
        // Background tasks never outlive their store, even one that was not closed.
        self.cancel.cancel();
    }
}

/// Sends queued ledger writes and events, pipelined, in order, until cancelled; then
/// counts what is left in the queue as dropped.
async fn writer(
    mut conn: ConnectionManager,
    ns: String,
    window_ms: u64,
    mut rx: mpsc::Receiver<Queued>,
    flushed: watch::Sender<u64>,
    on_dropped: Option<DropObserver>,
    cancel: CancellationToken,
) {
    let channel = format!("{ns}events");
    let failing = AtomicBool::new(false);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            _ = cancel.cancelled() => break,
        };
        if n == 0 {
            break;
        }
        let mut pipe = redis::pipe();
        let mut last = 0;
        let n = batch.len();
        for q in batch.drain(..) {
            last = last.max(q.seq);
            match q.write {
                Write::Ledger(t) => {
                    let key = format!("{ns}match:{}", t.id);
                    let mut hset = redis::cmd("HSET");
                    match t.client {
                        Some(c) => hset
                            .arg(&key)
                            .arg(VERSION_FIELD)
                            .arg(OWNED_LEDGER_FORMAT)
                            .arg(CLIENT_FIELD)
                            .arg(c.to_string()),
                        None => hset.arg(&key).arg(VERSION_FIELD).arg(FORMAT),
                    };
                    for a in &t.offered {
                        hset.arg(a.to_string()).arg(0);
                    }
                    pipe.add_command(hset).ignore();
                    pipe.cmd("PEXPIRE").arg(&key).arg(window_ms).ignore();
                }
                Write::Publish(p) => {
                    pipe.cmd("PUBLISH").arg(&channel).arg(p).ignore();
                }
            }
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                if failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis writes succeed again");
                }
            }
            Err(e) => {
                if let Some(f) = &on_dropped {
                    f(n);
                }
                if !failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Redis is unreachable: match ledger writes and events are dropped until it returns");
                }
            }
        }
        // Numbers arrive in order (see `RedisHotStore::enqueued`); `max` keeps `flushed`
        // monotonic whatever happens.
        flushed.send_if_modified(|f| {
            let moved = last > *f;
            *f = (*f).max(last);
            moved
        });
    }
    rx.close();
    let mut left = 0;
    while rx.try_recv().is_ok() {
        left += 1;
    }
    if left > 0 {
        tracing::warn!(
            dropped = left,
            "Redis store closed with writes still queued"
        );
        if let Some(f) = &on_dropped {
            f(left);
        }
    }
}

#[async_trait]
impl HotStore for RedisHotStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn put_status(&self, address: &Address, status: &MinerStatus) -> Result<()> {
        let v = encode_status(status)?;
        let mut c = self.conn.clone();
        redis::cmd("SET")
            .arg(self.status_key(address))
            .arg(v)
            .arg("PX")
            .arg(self.status_ttl_ms)
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn get_status(&self, address: &Address) -> Result<Option<MinerStatus>> {
        let mut c = self.conn.clone();
        let v: Option<String> = redis::cmd("GET")
            .arg(self.status_key(address))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        v.map(|s| decode_status(&s)).transpose()
    }

    async fn get_statuses(&self, addresses: &[Address]) -> Result<Vec<Option<MinerStatus>>> {
        let mut out = Vec::with_capacity(addresses.len());
        let mut c = self.conn.clone();
        for chunk in addresses.chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|a| self.status_key(a)).collect();
            let vs: Vec<Option<String>> = redis::cmd("MGET")
                .arg(keys)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            for v in vs {
                // An unreadable entry is treated as absent: it expires with its TTL anyway.
                out.push(v.and_then(|s| decode_status(&s).ok()));
            }
        }
        Ok(out)
    }

    async fn remove_status(&self, address: &Address) -> Result<()> {
        let mut c = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.status_key(address))
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn record_match(&self, ticket: MatchTicket) -> Result<()> {
        self.enqueue(Write::Ledger(ticket));
        Ok(())
    }

    async fn claim_outcome_by(
        &self,
        id: MatchId,
        address: &Address,
        client: Option<u64>,
    ) -> std::result::Result<(), ClaimError> {
        self.flush().await;
        let mut c = self.conn.clone();
        let r: i64 = self
            .claim
            .key(self.match_key(id))
            .arg(address.to_string())
            .arg(OWNED_LEDGER_FORMAT)
            .arg(client.map(|c| c.to_string()).unwrap_or_default())
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        match r {
            0 => Ok(()),
            -1 => Err(ClaimError::UnknownMatch),
            -2 => Err(ClaimError::NotOffered),
            -3 => Err(ClaimError::AlreadyReported),
            -5 => Err(ClaimError::NotYourMatch),
            -4 => Err(corrupt(format!(
                "match {id}'s ledger is in a newer format than version {OWNED_LEDGER_FORMAT}"
            ))
            .into()),
            other => Err(corrupt(format!("claim script answered {other}")).into()),
        }
    }

    async fn unclaim_outcome(&self, id: MatchId, address: &Address) -> Result<()> {
        let mut c = self.conn.clone();
        self.unclaim
            .key(self.match_key(id))
            .arg(address.to_string())
            .invoke_async::<i64>(&mut c)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn reserve_slot(
        &self,
        address: &Address,
        id: MatchId,
        slots: u32,
        ttl: Duration,
    ) -> Result<bool> {
        let mut c = self.conn.clone();
        let r: i64 = self
            .reserve
            .key(self.slots_key(address))
            .arg(id.to_string())
            .arg(slots)
            .arg((ttl.as_millis() as u64).max(1))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(r == 1)
    }

    async fn put_challenge(&self, challenge: &Challenge, ttl: Duration) -> Result<()> {
        let v = encode_challenge(challenge)?;
        let mut c = self.conn.clone();
        // SET replaces any older challenge of the address: only the latest one counts.
        redis::cmd("SET")
            .arg(self.challenge_key(&challenge.address))
            .arg(v)
            .arg("PX")
            .arg((ttl.as_millis() as u64).max(1))
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn take_challenge(&self, address: &Address) -> Result<Option<Challenge>> {
        let mut c = self.conn.clone();
        // GETDEL (Redis 6.2+) reads and deletes in one step: two hubs cannot both take it.
        let v: Option<String> = redis::cmd("GETDEL")
            .arg(self.challenge_key(address))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        v.map(|s| decode_challenge(&s)).transpose()
    }

    async fn release_slot(&self, address: &Address, id: MatchId) -> Result<()> {
        let mut c = self.conn.clone();
        redis::cmd("ZREM")
            .arg(self.slots_key(address))
            .arg(id.to_string())
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn close(&self) {
        self.flush().await;
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    async fn health(&self) -> Result<()> {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    fn bus(&self) -> Option<&dyn EventBus> {
        Some(self)
    }
}

impl EventBus for RedisHotStore {
    fn publish(&self, payload: String) {
        self.enqueue(Write::Publish(payload));
    }

    fn subscribe(&self) -> mpsc::Receiver<BusMessage> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = self.client.clone();
        let channel = format!("{}events", self.ns);
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = subscriber(client, channel, tx) => {}
                _ = cancel.cancelled() => {}
            }
        });
        rx
    }
}

/// Keeps one subscription alive, reconnecting with backoff, until the receiver is dropped.
async fn subscriber(client: redis::Client, channel: String, tx: mpsc::Sender<BusMessage>) {
    use futures_util::StreamExt;
    let mut delay = Duration::from_millis(100);
    let mut down = false;
    loop {
        let connected = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(2), connected) => r,
            _ = tx.closed() => return,
        };
        match ps {
            Ok(Ok(ps)) => {
                delay = Duration::from_millis(100);
                if std::mem::replace(&mut down, false) {
                    tracing::info!("Redis event subscription restored");
                }
                if tx.send(BusMessage::Subscribed).await.is_err() {
                    return;
                }
                let mut stream = ps.into_on_message();
                loop {
                    tokio::select! {
                        m = stream.next() => match m {
                            Some(m) => {
                                let Ok(p) = m.get_payload::<String>() else { continue };
                                if tx.send(BusMessage::Event(p)).await.is_err() {
                                    return;
                                }
                            }
                            None => break,
                        },
                        _ = tx.closed() => return,
                    }
                }
                tracing::warn!("Redis event subscription lost; reconnecting");
                down = true;
            }
            Ok(Err(e)) => {
                if !std::mem::replace(&mut down, true) {
                    tracing::warn!(error = %e, "cannot subscribe to Redis events; retrying");
                }
            }
            Err(_) => {
                if !std::mem::replace(&mut down, true) {
                    tracing::warn!("subscribing to Redis events timed out; retrying");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tx.closed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 9, defect 3: `flushed` never moves backwards, even if the queue delivered
    /// writes out of number order (`enqueue` now prevents that; the writer does not rely
    /// on it). It used to be set to the batch's *last* number, so a batch [2, 1] left it at
    /// 1 after 2 had been reported, and a claim could pass `flush` too early.
    #[tokio::test]
    async fn flushed_is_monotonic_whatever_the_queue_order() {
        // Nothing listens there: the pipeline fails fast, and the writes count as handled.
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(200)))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, cfg).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let (flushed_tx, mut flushed) = watch::channel(0u64);
        for seq in [2, 1] {
            tx.try_send(Queued {
                seq,
                write: Write::Publish(String::new()),
            })
            .unwrap();
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer(
            conn,
            "poolhub:unit:".into(),
            1000,
            rx,
            flushed_tx,
            None,
            cancel.clone(),
        ));
        flushed.wait_for(|f| *f != 0).await.unwrap();
        assert_eq!(*flushed.borrow(), 2);
        drop(tx);
        task.await.unwrap();
        assert_eq!(*flushed.borrow(), 2, "flushed went backwards");
    }
}
