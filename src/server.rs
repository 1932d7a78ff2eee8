//! Starting and stopping the hub: storage, index, listeners, background tasks, drain.
//!
//! [`serve`] takes already-bound listeners and a shutdown future, so tests bind
//! 127.0.0.1:0 and stop the hub when they like, and `main` binds the configured ports.

use crate::config::{Config, DurableKind, HotKind};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::moka::MokaHotStore;
use crate::store::postgres::{PgOptions, PostgresStore};
use crate::store::redb::RedbStore;
use crate::store::redis::{DropObserver, RedisHotStore, RedisOptions};
use crate::store::{CommitObserver, DurableStore, HotStore, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The two configured stores.
pub type Stores = (Arc<dyn DurableStore>, Arc<dyn HotStore>);

/// Opens the configured durable and hot stores. PostgreSQL is retried with backoff for up
/// to `storage.connect_timeout` seconds; Redis is connected lazily (a hub starts while Redis
/// is down, reports it in /health, and connects when it returns).
pub async fn open_stores(cfg: &Config, metrics: &Arc<Metrics>) -> Result<Stores, StartError> {
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
        DurableKind::Redb => Arc::new(RedbStore::open(&cfg.storage.path, Some(observer))?),
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

/// Validates the configuration, opens storage and loads the index.
pub async fn build_hub(cfg: Config) -> Result<Arc<Hub>, StartError> {
    cfg.validate()?;
    let metrics = Arc::new(Metrics::new());
    let (durable, hot) = open_stores(&cfg, &metrics).await?;
    Ok(Arc::new(Hub::open(cfg, durable, hot, metrics).await?))
}

/// Binds `host:port`, naming the address when it fails.
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, StartError> {
    let addr = format!("{host}:{port}");
    TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Serves the API and metrics listeners until `shutdown` completes, then drains in-flight
/// requests (at most `server.shutdown_grace` seconds), stops background tasks, and flushes
/// storage.
pub async fn serve(
    hub: Arc<Hub>,
    api: TcpListener,
    metrics: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let (stop_tx, stop_rx) = watch::channel(false);
    let cancel = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    hub.spawn_tasks(cancel.clone(), &tracker);

    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = api.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let api_server = axum::serve(api, crate::http::api_router(hub.clone()))
        .with_graceful_shutdown(wait(stop_rx.clone()));
    let metrics_server = axum::serve(metrics, crate::http::metrics_router(hub.clone()))
        .with_graceful_shutdown(wait(stop_rx.clone()));
    let api_task = tokio::spawn(async move { api_server.await });
    let metrics_task = tokio::spawn(async move { metrics_server.await });

    shutdown.await;
    tracing::info!("shutting down: draining requests");
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(hub.config().server.shutdown_grace.max(1));
    let drained = tokio::time::timeout(grace, async {
        let _ = api_task.await;
        let _ = metrics_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still running after the grace period; closing anyway");
    }
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    hub.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// A hub running in this process on ephemeral ports: what integration tests use.
pub struct TestHub {
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub hub: Arc<Hub>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestHub {
    /// Starts a hub with `cfg` on 127.0.0.1 with free ports.
    pub async fn start(mut cfg: Config) -> Result<Self, StartError> {
        cfg.server.host = "127.0.0.1".into();
        cfg.server.port = 0;
        cfg.server.metrics_port = 0;
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(hub.clone(), api, metrics, async move {
            let _ = rx.await;
        }));
        Ok(Self {
            api_addr,
            metrics_addr,
            hub,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// Stops the hub gracefully and waits until storage is flushed and closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
