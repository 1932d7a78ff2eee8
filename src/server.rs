//! Starting and stopping the hub: storage, index, listeners, background tasks, drain.
//!
//! [`serve`] takes already-bound listeners and a shutdown future, so tests bind
//! 127.0.0.1:0 and stop the hub when they like, and `main` binds the configured ports.
//!
//! Everything the server starts has an owner: connections run on one [`TaskTracker`] and
//! background work (the hub's tasks, the systemd watchdog) on another, each stopped by a
//! [`CancellationToken`], so shutdown can wait for all of it before the stores close.

mod conn;

use crate::config::{Config, DurableKind, HotKind};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::moka::MokaHotStore;
use crate::store::postgres::{PgOptions, PostgresStore};
use crate::store::redb::RedbStore;
use crate::store::redis::{DropObserver, RedisHotStore, RedisOptions};
use crate::store::{CommitObserver, DurableStore, HotStore, StoreError};
use crate::tls::server::ServerTls;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Printed with its cause chain: at start-up the operator needs the detail.
    #[error("storage: {}", .0.detail())]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server.tls_cert / server.tls_key: {0}")]
    Tls(#[from] crate::tls::TlsFileError),
}

/// The listeners' TLS, when `server.tls_cert` and `server.tls_key` are set.
pub fn listener_tls(cfg: &Config) -> Result<Option<Arc<ServerTls>>, StartError> {
    match (&cfg.server.tls_cert, &cfg.server.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(Arc::new(ServerTls::load(cert, key)?))),
        _ => Ok(None),
    }
}

/// The two configured stores.
pub type Stores = (Arc<dyn DurableStore>, Arc<dyn HotStore>);

/// Opens the configured durable and hot stores. PostgreSQL is retried with backoff for up
/// to `storage.connect_timeout` seconds; Redis is connected lazily (a hub starts while Redis
/// is down, reports it in /health, and connects when it returns).
pub async fn open_stores(cfg: &Config, metrics: &Arc<Metrics>) -> Result<Stores, StartError> {
    // A bad URL or option is the configuration's fault: say so, naming the key, rather than
    // letting the store report itself "unavailable".
    cfg.validate()?;
    let observer: CommitObserver = {
        let m = metrics.clone();
        // Failed operations are counted once each, by the hub (poolhub_store_errors_total).
        Arc::new(move |took: Duration, n: usize, _ok: bool| {
            m.store_commit_duration.observe(took.as_secs_f64());
            m.store_commit_batch_size.observe(n as f64);
        })
    };
    let durable: Arc<dyn DurableStore> = match cfg.storage.durable {
        DurableKind::Redb if cfg.storage.ephemeral => {
            Arc::new(RedbStore::in_memory(Some(observer))?)
        }
        DurableKind::Redb => Arc::new(RedbStore::open_with_cache(
            &cfg.storage.path,
            Some(observer),
            Some(
                usize::try_from(cfg.storage.cache_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            ),
        )?),
        // No redb file is created or opened: PostgreSQL is the only durable store.
        DurableKind::Postgres => {
            let opts = PgOptions {
                url: cfg.storage.database_url.clone().unwrap_or_default(),
                schema: cfg.storage.postgres_schema.clone(),
                max_connections: cfg.storage.postgres_max_connections,
                startup_timeout: Duration::from_secs(cfg.storage.connect_timeout),
            };
            Arc::new(PostgresStore::connect(opts, Some(observer)).await?)
        }
    };
    let hot: Arc<dyn HotStore> = match cfg.storage.hot {
        HotKind::Moka => Arc::new(MokaHotStore::new(
            Duration::from_secs(cfg.matching.heartbeat_timeout),
            Duration::from_secs(cfg.matching.outcome_window),
            cfg.matching.max_tracked_matches,
        )),
        HotKind::Redis => {
            let m = metrics.clone();
            let dropped: DropObserver = Arc::new(move |n: usize| {
                m.store_errors_total
                    .with_label_values(&["redis"])
                    .inc_by(n as u64);
            });
            Arc::new(RedisHotStore::open_observed(
                RedisOptions {
                    url: cfg.storage.redis_url.clone().unwrap_or_default(),
                    ca_file: cfg.storage.redis_ca_file.clone(),
                    prefix: cfg.storage.redis_prefix.clone(),
                    heartbeat_timeout: Duration::from_secs(cfg.matching.heartbeat_timeout),
                    outcome_window: Duration::from_secs(cfg.matching.outcome_window),
                },
                Some(dropped),
            )?)
        }
    };
    Ok((durable, hot))
}

/// The metrics of a hub on `cfg`'s backends, every backend's error series starting at 0.
pub fn metrics_for(cfg: &Config) -> Metrics {
    let durable = match cfg.storage.durable {
        DurableKind::Redb => "redb",
        DurableKind::Postgres => "postgres",
    };
    let hot = match cfg.storage.hot {
        HotKind::Moka => "moka",
        HotKind::Redis => "redis",
    };
    Metrics::with_backends(&[durable, hot])
}

/// Validates the configuration, opens storage and loads the index.
pub async fn build_hub(cfg: Config) -> Result<Arc<Hub>, StartError> {
    cfg.validate()?;
    let metrics = Arc::new(metrics_for(&cfg));
    let (durable, hot) = open_stores(&cfg, &metrics).await?;
    Ok(Arc::new(Hub::open(cfg, durable, hot, metrics).await?))
}

/// Whether clients are open to anyone on a non-loopback address: then anyone who reaches the
/// port can request matches and report outcomes, i.e. bend the scores.
pub fn open_to_the_network(clients: crate::config::ClientAuth, addr: std::net::SocketAddr) -> bool {
    clients == crate::config::ClientAuth::Open && !addr.ip().is_loopback()
}

/// Logs, once at start, that the hub is open to the network (see [`open_to_the_network`]).
fn warn_if_open_to_the_network(clients: crate::config::ClientAuth, addr: std::net::SocketAddr) {
    if open_to_the_network(clients, addr) {
        tracing::warn!(
            %addr,
            "auth.clients = \"open\" on a non-loopback address: anyone who reaches this port \
             can request matches and report outcomes, and so change miners' scores. Set \
             auth.clients = \"keys\" (POOLHUB_CLIENT_AUTH=keys) and create client keys with \
             `poolhub keys create`"
        );
    }
}

/// Binds `host:port`, naming the address when it fails.
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, StartError> {
    let addr = format!("{host}:{port}");
    TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Serves the API and metrics listeners until `shutdown` completes, then drains in-flight
/// requests for at most `server.shutdown_grace` seconds and aborts the rest, stops the
/// background tasks, and only then flushes and closes storage: nothing runs against a closed
/// store.
pub async fn serve(
    hub: Arc<Hub>,
    api: TcpListener,
    metrics: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = api.local_addr() {
        warn_if_open_to_the_network(hub.config().auth.clients, addr);
    }
    if hub.config().auth.clients == crate::config::ClientAuth::Keys
        && hub.config().auth.admin_token.is_empty()
        && hub.keys().is_empty()
    {
        tracing::warn!(
            "auth.clients = \"keys\" but there is no admin secret and no key: every match \
             and outcome is refused until one exists. Set POOLHUB_ADMIN_TOKEN (or \
             auth.admin_token_file), restart, and run `poolhub keys create`"
        );
    }
    let background = CancellationToken::new();
    let tasks = TaskTracker::new();
    hub.spawn_tasks(background.clone(), &tasks);
    crate::systemd::spawn_watchdog(background.clone(), &tasks);
    let limiter = Arc::new(crate::http::limits::Limiter::new(
        &hub.config().auth.rate_limits,
    ));
    {
        // A reload's rate limits apply to the next request; a weak handle, so the hub does
        // not keep this server's limiter alive.
        let limiter = Arc::downgrade(&limiter);
        hub.on_reload(Box::new(move |t| {
            if let Some(l) = limiter.upgrade() {
                l.reconfigure(&t.auth.rate_limits);
            }
        }));
    }
    crate::http::limits::spawn_forgetting(
        limiter.clone(),
        crate::http::limits::FORGET_EVERY,
        hub.metrics().rate_limit_parties.clone(),
        background.clone(),
        &tasks,
    );

    let stop = conn::Stop {
        drain: CancellationToken::new(),
        abort: CancellationToken::new(),
        conns: TaskTracker::new(),
    };
    // Should this future be dropped before it finishes (its runtime shutting down, a test
    // abandoning it), nothing it started keeps running: the guards cancel everything.
    let _guards = (
        background.clone().drop_guard(),
        stop.drain.clone().drop_guard(),
        stop.abort.clone().drop_guard(),
    );
    let limits = conn::Limits::from_config(&hub.config().server);
    let fast = Arc::new(crate::http::fast::FastRoutes::new(
        hub.clone(),
        limiter.clone(),
    ));
    let api_loop = tokio::spawn(conn::accept_loop(
        api,
        crate::http::api_router(hub.clone(), limiter),
        Some(fast),
        tls.clone(),
        limits,
        true,
        stop.clone(),
    ));
    let metrics_loop = tokio::spawn(conn::accept_loop(
        metrics,
        crate::http::metrics_router(hub.clone()),
        None,
        tls,
        limits,
        false,
        stop.clone(),
    ));

    shutdown.await;
    tracing::info!("shutting down: draining requests");
    // Event streams never finish by themselves: end them, so the drain does not wait on
    // them for the whole grace period.
    hub.events().close();
    stop.drain.cancel();
    let _ = api_loop.await;
    let _ = metrics_loop.await;
    stop.conns.close();
    let grace = Duration::from_secs(hub.config().server.shutdown_grace.max(1));
    if tokio::time::timeout(grace, stop.conns.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the grace period; aborting them");
        stop.abort.cancel();
        stop.conns.wait().await;
    }
    background.cancel();
    tasks.close();
    tasks.wait().await;
    hub.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// A hub running in this process on ephemeral ports: what integration tests use.
pub struct TestHub {
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub hub: Arc<Hub>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestHub {
    /// Starts a hub with `cfg` on 127.0.0.1 with free ports.
    pub async fn start(mut cfg: Config) -> Result<Self, StartError> {
        cfg.server.host = "127.0.0.1".into();
        cfg.server.port = 0;
        cfg.server.metrics_port = 0;
        let tls = listener_tls(&cfg)?;
        let hub = build_hub(cfg).await?;
        let api = bind("127.0.0.1", 0).await?;
        let metrics = bind("127.0.0.1", 0).await?;
        let api_addr = api.local_addr().map_err(|source| StartError::Bind {
            addr: "127.0.0.1:0".into(),
            source,
        })?;
        let metrics_addr = metrics.local_addr().map_err(|source| StartError::Bind {
            addr: "127.0.0.1:0".into(),
            source,
        })?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(serve(hub.clone(), api, metrics, tls, async move {
            stopped.cancelled().await;
        }));
        Ok(Self {
            api_addr,
            metrics_addr,
            hub,
            stop,
            task: Some(task),
        })
    }

    /// Stops the hub gracefully and waits until storage is flushed and closed.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// A test that ends (or panics) without [`TestHub::stop`] still stops its hub: the shutdown
/// runs on the test's runtime for as long as that lives, and a test that forgot to stop one
/// hub does not leave it serving beside the next.
impl Drop for TestHub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_clients_are_flagged_only_off_loopback() {
        use crate::config::ClientAuth;
        let public: std::net::SocketAddr = "0.0.0.0:8000".parse().expect("addr");
        let lan: std::net::SocketAddr = "10.1.2.3:8000".parse().expect("addr");
        let local: std::net::SocketAddr = "127.0.0.1:8000".parse().expect("addr");
        let local6: std::net::SocketAddr = "[::1]:8000".parse().expect("addr");
        assert!(open_to_the_network(ClientAuth::Open, public));
        assert!(open_to_the_network(ClientAuth::Open, lan));
        assert!(!open_to_the_network(ClientAuth::Open, local));
        assert!(!open_to_the_network(ClientAuth::Open, local6));
        assert!(!open_to_the_network(ClientAuth::Keys, public));
    }

    #[test]
    fn error_series_start_at_zero_for_the_configured_backends() {
        let mut cfg = Config::default();
        cfg.storage.durable = DurableKind::Postgres;
        cfg.storage.hot = HotKind::Redis;
        let text = metrics_for(&cfg).encode();
        for series in [
            "poolhub_store_errors_total{backend=\"postgres\"} 0",
            "poolhub_store_errors_total{backend=\"redis\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing");
        }
        let text = metrics_for(&Config::default()).encode();
        assert!(text.contains("poolhub_store_errors_total{backend=\"redb\"} 0"));
        assert!(text.contains("poolhub_store_errors_total{backend=\"moka\"} 0"));
    }

    #[tokio::test]
    async fn a_bad_storage_setting_is_a_config_error_not_an_unavailable_store() {
        let metrics = Arc::new(Metrics::new());
        let mut cfg = Config::default();
        cfg.storage.durable = DurableKind::Postgres;
        cfg.storage.database_url = None;
        match open_stores(&cfg, &metrics).await {
            Err(StartError::Config(e)) => {
                assert!(e.to_string().contains("storage.database_url"), "{e}")
            }
            Err(e) => panic!("reported as {e}"),
            Ok(_) => panic!("opened stores without a database URL"),
        }
        let mut cfg = Config::default();
        cfg.storage.path = std::env::temp_dir();
        match open_stores(&cfg, &metrics).await {
            Err(StartError::Config(e)) => assert!(e.to_string().contains("storage.path"), "{e}"),
            Err(e) => panic!("reported as {e}"),
            Ok(_) => panic!("opened a directory as the redb file"),
        }
    }
}
