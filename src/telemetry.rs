//! Logging: tracing-subscriber to stderr (stdout is reserved for the bound address line).

use crate::config::{Config, LogFormat};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Sets the log level of the running process (a reloaded `server.log_level`).
pub type LogLevel = Box<dyn Fn(&str) + Send + Sync>;

/// Installs the global subscriber. `RUST_LOG`, when set, beats `server.log_level`, then and
/// on every reload. Returns how to change the level later (`None` when a subscriber was
/// installed already, as in tests).
pub fn init(cfg: &Config) -> Option<LogLevel> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok());
    let pinned = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(&cfg.server.log_level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    match cfg.server.log_format {
        LogFormat::Json => {
            let b = builder
                .json()
                .with_current_span(false)
                .with_env_filter(filter)
                .with_filter_reloading();
            let handle = b.reload_handle();
            b.try_init().ok()?;
            Some(level_setter(pinned, move |f| handle.reload(f).is_ok()))
        }
        LogFormat::Text => {
            let b = builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_env_filter(filter)
                .with_filter_reloading();
            let handle = b.reload_handle();
            b.try_init().ok()?;
            Some(level_setter(pinned, move |f| handle.reload(f).is_ok()))
        }
    }
}

fn level_setter(
    pinned: bool,
    reload: impl Fn(EnvFilter) -> bool + Send + Sync + 'static,
) -> LogLevel {
    Box::new(move |level| {
        if pinned {
            tracing::info!("RUST_LOG is set: it keeps the log level, not server.log_level");
            return;
        }
        if EnvFilter::try_new(level).is_ok_and(&reload) {
            tracing::info!(level, "log level changed");
        } else {
            tracing::warn!(level, "log level not changed: cannot apply it");
        }
    })
}
