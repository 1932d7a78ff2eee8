//! The `poolhub` command line.

mod cli_admin;
mod cli_explain;
mod cli_replay;

use clap::{Args, Parser, Subcommand};
use poolhub::config::Config;
use poolhub::server;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// poolhub: miner registry, scoring and real-time job matching for a GPU-inference pool.
#[derive(Parser)]
#[command(name = "poolhub", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub: API on server.port (8000), metrics on server.metrics_port (9090).
    ///
    /// Prints the bound API address (http://IP:PORT) as the first line on stdout; logs go to
    /// stderr. Stops gracefully on SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Validate the configuration (file and environment) as `serve` would, and print the
    /// effective configuration with secrets redacted. Exits 1 naming every bad key.
    CheckConfig(CheckConfigArgs),
    /// Copy the redb file of a stopped hub to DEST, consistently, and check the copy.
    ///
    /// Takes redb's lock on the file, so it fails (exit 1) while a hub has the file open:
    /// copying a file the hub is writing can give a torn copy. Stop the hub first
    /// (`systemctl stop poolhub`), back up, start it again. The copy is checked (integrity,
    /// schema version, every miner record) before it appears at DEST.
    Backup(BackupArgs),
    /// Shrink a stopped hub's redb file after a large prune (redb's own compaction), and print
    /// its size before and after. Fails (exit 1) while a hub has the file open.
    Compact(CompactArgs),
    /// Copy everything durable (miners with token hashes, statistics, availability, outcome
    /// history) from one store to another, then verify the copy.
    ///
    /// Each store is a redb file path or a postgresql:// URL. Stop the hubs first. Refuses a
    /// target that holds data unless --force, which empties it first.
    Migrate(MigrateArgs),
    /// Manage the client and admin keys of a running hub (its admin API), with the admin
    /// secret from POOLHUB_ADMIN_TOKEN. Exits 1 with the hub's reason when it refuses.
    Keys(cli_admin::KeysArgs),
    /// Why is my miner not offered? Asks a running hub to explain a match (nothing is
    /// reserved) and prints each miner's reason: offered, model, job_type, gpu_memory,
    /// offline, unavailable, full, cooldown, threshold, latency, temperature, excluded,
    /// banned, outranked, unregistered. Presents POOLHUB_CLIENT_KEY (or POOLHUB_ADMIN_TOKEN)
    /// when set, as a hub with auth.clients = "keys" needs.
    Explain(cli_explain::ExplainArgs),
    /// What if the weights, thresholds, decay or priors were different? Replays the stored
    /// outcome history under a candidate configuration and prints how the rankings change:
    /// the overlap of the top N, each miner's rank change, and the miners that would newly
    /// pass or fail the thresholds. Read-only; --hub asks a running hub to do it.
    Replay(cli_replay::ReplayArgs),
}

#[derive(Args)]
struct MigrateArgs {
    /// Source: a redb file or a postgresql://user:pass@host/db URL.
    #[arg(long)]
    from: String,
    /// Target: a redb file (created if absent) or a postgresql:// URL.
    #[arg(long)]
    to: String,
    /// PostgreSQL schema of the source (storage.postgres_schema).
    #[arg(long, default_value = "poolhub")]
    from_schema: String,
    /// PostgreSQL schema of the target.
    #[arg(long, default_value = "poolhub")]
    to_schema: String,
    /// Replace whatever the target holds.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct ConfigArg {
    /// TOML configuration file (default: built-in defaults; see poolhub.toml).
    #[arg(long, short, env = "POOLHUB_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct CheckConfigArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Miners to size the printed memory budget for.
    #[arg(long, default_value_t = 10_000)]
    miners: u64,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Keep everything in memory; nothing is written to disk.
    #[arg(long)]
    ephemeral: bool,
    /// API address to bind (overrides server.host and API_HOST).
    #[arg(long)]
    host: Option<String>,
    /// API port (overrides server.port and API_PORT). 0 picks a free port; then the metrics
    /// port is also picked freely unless --metrics-port is given.
    #[arg(long)]
    port: Option<u16>,
    /// Metrics port (overrides server.metrics_port and METRICS_PORT); 0 picks a free port.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// The redb file (overrides storage.path and POOLHUB_DB_PATH).
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Args)]
struct BackupArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The redb file of a stopped hub to back up (overrides storage.path and POOLHUB_DB_PATH).
    #[arg(long, conflicts_with = "hub")]
    data: Option<PathBuf>,
    /// A running hub's base URL (e.g. http://127.0.0.1:8000): it writes a consistent copy of
    /// its data while it keeps serving (admin secret or admin key in POOLHUB_ADMIN_TOKEN).
    #[arg(long)]
    hub: Option<String>,
    /// Where to write the copy. Must not exist yet.
    dest: PathBuf,
}

#[derive(Args)]
struct CompactArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The redb file to compact (overrides storage.path and POOLHUB_DB_PATH).
    #[arg(long)]
    data: Option<PathBuf>,
}

/// The configuration from the file and environment; on failure the message is printed and
/// the exit code returned.
fn load(arg: &ConfigArg) -> Result<Config, ExitCode> {
    Config::load(arg.config.as_deref(), |k| std::env::var(k).ok()).map_err(|e| {
        eprintln!("poolhub: {e}");
        ExitCode::FAILURE
    })
}

/// The tokio runtime a subcommand runs on (`worker_threads`: the default, one per core, when
/// `None`); on failure the message is printed and the exit code returned.
fn runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        b.worker_threads(n);
    }
    b.enable_all().build().map_err(|e| {
        eprintln!("poolhub: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(arg) => check_config(&arg),
        Command::Serve(args) => serve(args),
        Command::Backup(args) => backup(args),
        Command::Compact(args) => compact(args),
        Command::Migrate(args) => migrate(&args),
        Command::Keys(args) => cli_admin::keys(&args),
        Command::Explain(args) => cli_explain::run(&args, cli_admin::admin_client),
        Command::Replay(args) => cli_replay::run(&args, cli_admin::admin_client),
    }
}

fn check_config(args: &CheckConfigArgs) -> ExitCode {
    let cfg = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("poolhub: {e}");
        return ExitCode::FAILURE;
    }
    print!("{}", cfg.redacted_toml());
    // As TOML comments, so the output stays a valid configuration file.
    let b = cfg.memory_budget(args.miners);
    use poolhub::config::budget::mib;
    println!(
        "\n# expected peak memory with {} miners: {} = fixed {} + cache {} + miners {} + match ledger {} (README: Memory budget)",
        args.miners,
        mib(b.total()),
        mib(b.fixed),
        mib(b.cache),
        mib(b.miners),
        mib(b.ledger)
    );
    eprintln!("poolhub: configuration is valid");
    ExitCode::SUCCESS
}

impl ServeArgs {
    /// The command line over the file and environment (at start and on every reload, so a
    /// reload never reports a flag's setting as a changed file setting).
    fn apply(&self, cfg: &mut Config) {
        if let Some(h) = &self.host {
            cfg.server.host = h.clone();
        }
        if let Some(p) = self.port {
            cfg.server.port = p;
            if p == 0 && self.metrics_port.is_none() {
                cfg.server.metrics_port = 0;
            }
        }
        if let Some(p) = self.metrics_port {
            cfg.server.metrics_port = p;
        }
        if let Some(d) = &self.data {
            cfg.storage.path = d.clone();
        }
        if self.ephemeral {
            cfg.storage.ephemeral = true;
        }
    }

    /// The configuration as `serve` would start with now: file, environment, command line,
    /// validated.
    fn configuration(&self) -> Result<Config, poolhub::config::ConfigError> {
        let mut cfg = Config::load(self.config.config.as_deref(), |k| std::env::var(k).ok())?;
        self.apply(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut cfg = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    args.apply(&mut cfg);
    if let Err(e) = cfg.validate() {
        eprintln!("poolhub: {e}");
        return ExitCode::FAILURE;
    }
    let log_level = poolhub::telemetry::init(&cfg);
    let rt = match runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(run(cfg, Arc::new(args), log_level)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("poolhub: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    cfg: Config,
    args: Arc<ServeArgs>,
    log_level: Option<poolhub::telemetry::LogLevel>,
) -> Result<(), server::StartError> {
    let host = cfg.server.host.clone();
    let (port, metrics_port) = (cfg.server.port, cfg.server.metrics_port);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        durable = ?cfg.storage.durable,
        hot = ?cfg.storage.hot,
        path = %cfg.storage.path.display(),
        ephemeral = cfg.storage.ephemeral,
        update_interval = cfg.scoring.update_interval,
        heartbeat_timeout = cfg.matching.heartbeat_timeout,
        "starting poolhub"
    );
    let signals = shutdown_signal();
    #[cfg(unix)]
    let hangups = hangups();
    let tls = server::listener_tls(&cfg)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let hub = server::build_hub(cfg).await?;
    if let Some(set) = log_level {
        hub.on_reload(Box::new(move |t| set(&t.server.log_level)));
    }
    #[cfg(unix)]
    reload_on_sighup(hangups, hub.clone(), args, tls.clone());
    let api = server::bind(&host, port).await?;
    let metrics = server::bind(&host, metrics_port).await?;
    let bind_err = |source| server::StartError::Bind {
        addr: host.clone(),
        source,
    };
    let api_addr = api.local_addr().map_err(bind_err)?;
    let metrics_addr = metrics.local_addr().map_err(bind_err)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{scheme}://{api_addr}");
        let _ = out.flush();
    }
    tracing::info!(api = %api_addr, metrics = %metrics_addr, https = (scheme == "https"), "listening");
    poolhub::systemd::notify_ready(&format!(
        "serving API on {api_addr}, metrics on {metrics_addr}"
    ));
    let stop = async {
        signals.await;
        poolhub::systemd::notify_stopping();
    };
    server::serve(hub, api, metrics, tls, stop)
        .await
        .map_err(|source| server::StartError::Bind {
            addr: api_addr.to_string(),
            source,
        })
}

/// The SIGHUP handler, installed before the (possibly long) start so a SIGHUP meanwhile
/// does not kill the process; it is acted on once the hub is up.
#[cfg(unix)]
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP, so no configuration reload: {e}");
            None
        }
    }
}

/// Reloads the configuration on every SIGHUP (`systemctl reload poolhub`): see
/// [`poolhub::config::reload`] for what applies and what waits for a restart.
#[cfg(unix)]
fn reload_on_sighup(
    hangups: Option<tokio::signal::unix::Signal>,
    hub: Arc<poolhub::hub::Hub>,
    args: Arc<ServeArgs>,
    tls: Option<Arc<poolhub::tls::server::ServerTls>>,
) {
    let Some(mut hup) = hangups else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            poolhub::systemd::notify_reloading();
            let (hub, args, tls) = (hub.clone(), args.clone(), tls.clone());
            // Reading the files and rescoring every miner stay off the request workers.
            let outcome =
                tokio::task::spawn_blocking(move || reload(&hub, &args, tls.as_deref())).await;
            if let Err(e) = outcome {
                tracing::error!("configuration reload failed: {e}");
            }
            poolhub::systemd::notify_ready("serving (configuration reloaded)");
        }
    });
}

/// One reload: the whole file is checked first (the listeners' certificate included); any
/// error keeps the running configuration.
fn reload(
    hub: &poolhub::hub::Hub,
    args: &ServeArgs,
    tls: Option<&poolhub::tls::server::ServerTls>,
) {
    let loaded = args.configuration().and_then(|cfg| {
        // The certificate is read again even when its paths did not change: that is how a
        // renewed certificate is put in service. Turning TLS on or off needs a restart.
        if let (Some(tls), Some(cert), Some(key)) = (tls, &cfg.server.tls_cert, &cfg.server.tls_key)
        {
            tls.reload(cert, key).map_err(|e| {
                let key_name = if e.path == *cert {
                    "server.tls_cert"
                } else {
                    "server.tls_key"
                };
                poolhub::config::ConfigError::Invalid(vec![poolhub::config::BadKey {
                    key: key_name.into(),
                    message: e.to_string(),
                }])
            })?;
        }
        Ok(cfg)
    });
    match loaded {
        Ok(cfg) => {
            let r = hub.reload(cfg);
            if r.changed {
                tracing::info!(config_hash = %r.hash, "configuration reloaded");
            } else {
                tracing::info!(config_hash = %r.hash, "configuration reloaded: no change applies");
            }
            if !r.pending_restart.is_empty() {
                tracing::warn!(
                    keys = %r.pending_restart.join(", "),
                    "changed settings that apply only after a restart were left as they are"
                );
            }
        }
        Err(e) => {
            hub.reload_refused();
            match e {
                poolhub::config::ConfigError::Invalid(bad) => {
                    for b in bad {
                        tracing::error!(key = %b.key, "configuration reload: {}", b.message);
                    }
                }
                other => tracing::error!("configuration reload: {other}"),
            }
            tracing::error!("configuration reload refused: the running configuration is kept");
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now, so a signal that arrives while the hub is
/// still starting stops it gracefully instead of killing it, and returns a future that
/// completes on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        let recv = |s: Option<Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        async move {
            tokio::select! {
                _ = recv(term) => {},
                _ = recv(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn migrate(args: &MigrateArgs) -> ExitCode {
    use poolhub::config::redact_url;
    // Copying is I/O-bound: two workers are plenty.
    let rt = match runtime(Some(2)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let shown = |s: &str| {
        if poolhub::store::migrate::is_postgres(s) {
            redact_url(s)
        } else {
            s.to_string()
        }
    };
    match rt.block_on(poolhub::store::migrate::run(
        &args.from,
        &args.to,
        &args.from_schema,
        &args.to_schema,
        args.force,
    )) {
        Ok(c) => {
            eprintln!(
                "poolhub: migrated {} miners and {} outcomes ({} bans) from {} to {} (counts and miner records verified); {} client/admin keys copied",
                c.miners,
                c.outcomes,
                c.bans,
                shown(&args.from),
                shown(&args.to),
                c.keys
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "poolhub: migrate failed: {}",
                poolhub::store::error_chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}

/// The redb file a file command works on: `--data`, else the configured `storage.path`;
/// refused (naming what the command does) when the configuration keeps no redb file.
fn redb_file(config: &ConfigArg, data: Option<PathBuf>, what: &str) -> Result<PathBuf, ExitCode> {
    let cfg = load(config)?;
    if cfg.storage.durable != poolhub::config::DurableKind::Redb || cfg.storage.ephemeral {
        eprintln!("poolhub: {what}; this configuration keeps no redb file");
        return Err(ExitCode::FAILURE);
    }
    Ok(data.unwrap_or(cfg.storage.path))
}

fn compact(args: CompactArgs) -> ExitCode {
    let path = match redb_file(&args.config, args.data, "compact shrinks the redb file") {
        Ok(p) => p,
        Err(code) => return code,
    };
    match poolhub::store::redb::compact(&path) {
        Ok(c) => {
            println!(
                "poolhub: compacted {}: {} bytes before, {} bytes after",
                path.display(),
                c.before,
                c.after
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "poolhub: compact failed: {}",
                poolhub::store::error_chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}

fn backup(args: BackupArgs) -> ExitCode {
    if let Some(hub) = &args.hub {
        return cli_admin::backup_online(hub, &args.dest);
    }
    let path = match redb_file(&args.config, args.data, "backup copies the redb file") {
        Ok(p) => p,
        Err(code) => return code,
    };
    match poolhub::store::redb::backup(&path, &args.dest) {
        Ok(poolhub::store::redb::BackedUp { miners, outcomes }) => {
            eprintln!(
                "poolhub: backed up {} to {} ({miners} miners, {outcomes} outcomes; copy checked)",
                path.display(),
                args.dest.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "poolhub: backup failed: {}",
                poolhub::store::error_chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}

/// mimalloc in every build: see Cargo.toml for the figures behind the choice.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
