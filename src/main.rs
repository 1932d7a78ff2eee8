//! The `poolhub` command line.

use clap::{Args, Parser, Subcommand};
use poolhub::config::Config;
use poolhub::server;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

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
    CheckConfig(ConfigArg),
}

#[derive(Args)]
struct ConfigArg {
    /// TOML configuration file (default: built-in defaults; see poolhub.toml).
    #[arg(long, short, env = "POOLHUB_CONFIG")]
    config: Option<PathBuf>,
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

fn load(arg: &ConfigArg) -> Result<Config, String> {
    Config::load(arg.config.as_deref(), |k| std::env::var(k).ok()).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(arg) => check_config(&arg),
        Command::Serve(args) => serve(args),
    }
}

fn check_config(arg: &ConfigArg) -> ExitCode {
    let cfg = match load(arg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("poolhub: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("poolhub: {e}");
        return ExitCode::FAILURE;
    }
    print!("{}", cfg.redacted_toml());
    eprintln!("poolhub: configuration is valid");
    ExitCode::SUCCESS
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut cfg = match load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("poolhub: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(h) = args.host {
        cfg.server.host = h;
    }
    if let Some(p) = args.port {
        cfg.server.port = p;
        if p == 0 && args.metrics_port.is_none() {
            cfg.server.metrics_port = 0;
        }
    }
    if let Some(p) = args.metrics_port {
        cfg.server.metrics_port = p;
    }
    if let Some(d) = args.data {
        cfg.storage.path = d;
    }
    if args.ephemeral {
        cfg.storage.ephemeral = true;
    }
    if let Err(e) = cfg.validate() {
        eprintln!("poolhub: {e}");
        return ExitCode::FAILURE;
    }
    poolhub::telemetry::init(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poolhub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("poolhub: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> Result<(), server::StartError> {
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
    let hub = server::build_hub(cfg).await?;
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
        let _ = writeln!(out, "http://{api_addr}");
        let _ = out.flush();
    }
    tracing::info!(api = %api_addr, metrics = %metrics_addr, "listening");
    server::serve(hub, api, metrics, shutdown_signal())
        .await
        .map_err(|source| server::StartError::Bind {
            addr: api_addr.to_string(),
            source,
        })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
