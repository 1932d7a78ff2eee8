//! The Redis hot store, for several hubs sharing live state.
//!
//! Keys live under `poolhub:<storage.redis_prefix>` so one Redis can serve several hubs (and
//! each test its own prefix):
//! * `…status:<address>`: a miner's live status (JSON), with the heartbeat timeout as TTL;
//! * `…match:<id>`: the match ledger, a hash from each offered address to `0`/`1` (reported),
//!   with the outcome window as TTL; claims are one Lua script, so a pair is claimed once
//!   even when two hubs receive the same outcome;
//! * `…events`: the pub/sub channel hubs use to keep each other's indexes current.
//!
//! Matching must not wait on the network, so ledger writes and published events go through
//! one background writer that pipelines whatever is queued. A claim first waits until this
//! hub's queued ledger writes are flushed, so an outcome reported to the hub that made the
//! match always finds it. When Redis is down those writes are dropped (logged): matching
//! keeps serving from the index, and outcomes for matches made meanwhile are refused as
//! unknown.
//!
//! The connection is a `ConnectionManager`, which reconnects by itself.

use super::{BusMessage, ClaimError, EventBus, HotStore, MatchId, MatchTicket, Result, StoreError};
use crate::domain::{Address, MinerStatus};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const BACKEND: &str = "redis";
/// Ledger writes and events that may wait for the writer; more are dropped (and logged).
const QUEUE: usize = 65_536;
/// Most queued writes one pipeline carries.
const MAX_BATCH: usize = 1024;

const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -2 end
if v == '1' then return -3 end
redis.call('HSET', KEYS[1], ARGV[1], '1')
return 0
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

/// Checks a key prefix: printable, no spaces, bounded.
pub fn valid_prefix(p: &str) -> bool {
    p.len() <= 64 && p.chars().all(|c| c.is_ascii_graphic())
}

/// How to reach Redis and what to keep for how long.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: String,
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
    enqueued: AtomicU64,
    flushed: watch::Receiver<u64>,
    claim: redis::Script,
    unclaim: redis::Script,
    on_dropped: Option<DropObserver>,
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
        let client = redis::Client::open(opts.url.as_str())
            .map_err(|e| unavailable(format!("bad Redis URL: {e}")))?;
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
        tokio::spawn(writer(
            conn.clone(),
            ns.clone(),
            window_ms,
            rx,
            flushed_tx,
            on_dropped.clone(),
        ));
        Ok(Self {
            client,
            conn,
            ns,
            status_ttl_ms: (opts.heartbeat_timeout.as_millis() as u64).max(1),
            queue,
            enqueued: AtomicU64::new(0),
            flushed,
            claim: redis::Script::new(CLAIM),
            unclaim: redis::Script::new(UNCLAIM),
            on_dropped,
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

    fn enqueue(&self, write: Write) {
        let seq = self.enqueued.fetch_add(1, Ordering::AcqRel) + 1;
        if self.queue.try_send(Queued { seq, write }).is_err() {
            // The writer is far behind (Redis is slow or down): keep the hub responsive.
            tracing::warn!("Redis write queue is full; a ledger write or event was dropped");
            if let Some(f) = &self.on_dropped {
                f(1);
            }
        }
    }

    /// Waits (briefly) until everything this hub queued so far has been written.
    async fn flush(&self) {
        let target = self.enqueued.load(Ordering::Acquire);
        let mut rx = self.flushed.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|f| *f >= target)).await;
    }

    /// Deletes every key under this store's namespace (tests).
    pub async fn clear_namespace(&self) -> Result<()> {
        let mut c = self.conn.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.ns))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

/// Sends queued ledger writes and events, pipelined, in order.
async fn writer(
    mut conn: ConnectionManager,
    ns: String,
    window_ms: u64,
    mut rx: mpsc::Receiver<Queued>,
    flushed: watch::Sender<u64>,
    on_dropped: Option<DropObserver>,
) {
    let channel = format!("{ns}events");
    let failing = AtomicBool::new(false);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        let mut last = 0;
        let n = batch.len();
        for q in batch.drain(..) {
            last = q.seq;
            match q.write {
                Write::Ledger(t) => {
                    let key = format!("{ns}match:{}", t.id);
                    let mut hset = redis::cmd("HSET");
                    hset.arg(&key);
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
        flushed.send_replace(last);
    }
}

#[async_trait]
impl HotStore for RedisHotStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn put_status(&self, address: &Address, status: &MinerStatus) -> Result<()> {
        let v = serde_json::to_string(status).map_err(corrupt)?;
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
        v.map(|s| serde_json::from_str(&s).map_err(corrupt))
            .transpose()
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
                out.push(v.and_then(|s| serde_json::from_str(&s).ok()));
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

    async fn claim_outcome(
        &self,
        id: MatchId,
        address: &Address,
    ) -> std::result::Result<(), ClaimError> {
        self.flush().await;
        let mut c = self.conn.clone();
        let r: i64 = self
            .claim
            .key(self.match_key(id))
            .arg(address.to_string())
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        match r {
            0 => Ok(()),
            -1 => Err(ClaimError::UnknownMatch),
            -2 => Err(ClaimError::NotOffered),
            -3 => Err(ClaimError::AlreadyReported),
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
        tokio::spawn(subscriber(client, channel, tx));
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
