//! One typed configuration: `poolhub.toml`, then the seed's environment variables over it,
//! then the command line, then validation of the whole. An invalid configuration stops the
//! program with one message naming every bad key before anything binds.
//!
//! * `mod.rs` (here): the typed sections, their defaults, loading and rendering.
//! * `env.rs`: the one table of environment variables and the overlay it drives.
//! * `validate.rs`: the checks of the whole, each naming its key.
//! * `reload.rs`: what a reload of the running hub applies and what waits for a restart.

mod auth;
pub mod budget;
mod env;
pub mod reload;
mod validate;

pub use auth::{AuthConfig, ClientAuth, MinerIdentity, Rate, RateLimits};

pub use env::{EnvVar, ENV_VARS};

use crate::domain::scoring::{FailoverParams, Priors, ScoringParams, Thresholds, Weights};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used, with every reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<BadKey>),
}

/// One bad setting: its key (file key or environment variable) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey {
    pub key: String,
    pub message: String,
}

impl fmt::Display for BadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default; meant for a terminal or journald).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Listeners and request handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub metrics_port: u16,
    /// Also serve `/metrics` on the API port (off so metrics are not exposed by accident).
    pub metrics_on_api_port: bool,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Seconds a request may take before the hub answers 408 (0 = no limit).
    pub request_timeout: u64,
    /// Seconds to let in-flight requests finish after SIGTERM; then they are aborted.
    pub shutdown_grace: u64,
    /// Seconds a client has to send a request's complete headers, counted from its first
    /// byte. A client that trickles its headers is disconnected after this, so slow clients
    /// cannot hold connections (and file descriptors) for ever.
    pub header_timeout: u64,
    /// Seconds a connection may stay open with no request in progress (a fresh connection
    /// that sends nothing, or a keep-alive connection between requests) before it is closed.
    pub idle_timeout: u64,
    /// Seconds after which the hub ends an event stream (`GET /api/v1/events`); 0 keeps it
    /// open for as long as the client stays. An `EventSource` reconnects by itself and
    /// resumes with `Last-Event-ID`, so nothing is lost: a limit spreads long-lived
    /// subscribers over the hubs behind a load balancer, and lets a test or a fuzzer read a
    /// stream to its end.
    pub event_stream_max_age: u64,
    /// Most client connections the API port holds at once; connections beyond it are closed
    /// as soon as they are accepted. Keep it below the process's file-descriptor limit.
    pub max_connections: usize,
    /// Proxies (IP addresses or CIDR networks) whose `X-Forwarded-For` names the client.
    /// From any other peer the header is ignored, so a client cannot choose the address its
    /// rate limits are counted against.
    pub trusted_proxies: Vec<String>,
    pub log_level: String,
    pub log_format: LogFormat,
    /// HTTPS on the API and metrics listeners: the certificate chain (PEM, the server's own
    /// certificate first) and its private key. Both or neither; a reload reads them again.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8000,
            metrics_port: 9090,
            metrics_on_api_port: false,
            max_body_bytes: 1024 * 1024,
            request_timeout: 30,
            shutdown_grace: 10,
            header_timeout: 10,
            idle_timeout: 60,
            event_stream_max_age: 0,
            max_connections: 10_000,
            trusted_proxies: Vec::new(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurableKind {
    Redb,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HotKind {
    Moka,
    Redis,
}

/// Where data lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub durable: DurableKind,
    pub hot: HotKind,
    /// The redb file (durable = "redb").
    pub path: PathBuf,
    /// Keep everything in memory; nothing is written to disk (tests, demos).
    pub ephemeral: bool,
    /// A `postgresql://` URL. TLS follows libpq: `sslmode` (`disable`, `prefer` (the default),
    /// `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file, or `system`).
    pub database_url: Option<String>,
    /// A `redis://` URL, or `rediss://` for TLS.
    pub redis_url: Option<String>,
    /// The CA (PEM) that signed a `rediss://` server's certificate; without it the operating
    /// system's store is used. The certificate must name the host in the URL.
    pub redis_ca_file: Option<PathBuf>,
    /// Outcome history older than this many days is pruned (0 = keep forever).
    pub outcome_retention_days: u64,
    /// Most outcome records kept as history (0 = no bound by count); the oldest beyond it
    /// are pruned, whichever of this and `outcome_retention_days` is reached first.
    pub max_outcomes: u64,
    /// redb's page cache, MiB. redb's own default (1 GiB) lets RSS follow the data file; this
    /// bounds it. Reads beyond the cache come from the OS page cache. The index is in memory,
    /// so the hub reads the file only to write: 16 MiB holds the B-trees' upper levels, and
    /// the start-up pass over every row no longer leaves 64 MiB of them resident.
    pub cache_mb: u64,
    /// PostgreSQL schema holding poolhub's tables (durable = "postgres").
    pub postgres_schema: String,
    /// Most PostgreSQL connections one hub holds.
    pub postgres_max_connections: usize,
    /// Seconds start-up keeps retrying an unreachable PostgreSQL before giving up.
    pub connect_timeout: u64,
    /// Appended to `poolhub:` in every Redis key (hot = "redis"), so hubs can share a Redis.
    pub redis_prefix: String,
    /// Seconds between full reloads of the index from the shared stores (hot = "redis"), on
    /// top of the events hubs publish to each other.
    pub resync_interval: u64,
    /// Where scheduled online backups go (redb only; `None`: no scheduled backups). One is
    /// taken at start and then every `backup_interval` seconds, named
    /// `poolhub-YYYYMMDDTHHMMSSZ.redb`; only the newest `backup_keep` are kept.
    pub backup_dir: Option<PathBuf>,
    pub backup_interval: u64,
    pub backup_keep: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            durable: DurableKind::Redb,
            hot: HotKind::Moka,
            path: PathBuf::from("poolhub.redb"),
            ephemeral: false,
            database_url: None,
            redis_url: None,
            redis_ca_file: None,
            outcome_retention_days: 30,
            max_outcomes: 1_000_000,
            cache_mb: 16,
            postgres_schema: "poolhub".into(),
            postgres_max_connections: 16,
            connect_timeout: 30,
            redis_prefix: String::new(),
            resync_interval: 30,
            backup_dir: None,
            backup_interval: 86_400,
            backup_keep: 7,
        }
    }
}

/// The seed's `[scoring]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringSection {
    /// Seconds between full score recomputations (and availability samples).
    pub update_interval: u64,
    /// Fraction of weight history keeps per day.
    pub decay_factor: f64,
    /// Scores lie in [0, max_score].
    pub max_score: f64,
}

impl Default for ScoringSection {
    fn default() -> Self {
        Self {
            update_interval: 60,
            decay_factor: 0.95,
            max_score: 1.0,
        }
    }
}

/// How matches are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchingConfig {
    /// Seconds after its last status a miner counts as offline (also the hot store's TTL).
    pub heartbeat_timeout: u64,
    pub default_limit: usize,
    pub max_limit: usize,
    /// Seconds a match holds a slot on its first miner when no outcome arrives.
    pub reservation_ttl: u64,
    /// Seconds after a match during which its outcomes are accepted.
    pub outcome_window: u64,
    /// Most matches remembered for outcome reporting; the oldest are forgotten first.
    pub max_tracked_matches: u64,
    /// Scores closer than this are equal for load balancing.
    pub tie_epsilon: f64,
    /// Most healthy candidates one match examines.
    pub scan_cap: usize,
}

impl Default for MatchingConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout: 30,
            default_limit: 5,
            max_limit: 100,
            reservation_ttl: 60,
            outcome_window: 3600,
            max_tracked_matches: 100_000,
            tie_epsilon: 0.01,
            scan_cap: 16,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub scoring: ScoringSection,
    pub weights: Weights,
    pub thresholds: Thresholds,
    pub priors: Priors,
    pub matching: MatchingConfig,
    pub failover: FailoverParams,
    pub auth: AuthConfig,
    pub compat: CompatConfig,
}

/// Other hubs' APIs served beside poolhub's own (`[compat]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// AITBC's pool-hub routes under `/v1` (miner registration by `miner_id`, the heartbeat
    /// by key, `/v1/match`, `/v1/sla/status`), so AITBC's miners and CLI work unmodified.
    pub aitbc: bool,
}

impl Default for CompatConfig {
    fn default() -> Self {
        Self { aitbc: true }
    }
}

impl Config {
    /// Reads `path` (or the defaults when `None`), then applies the environment.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: p.to_path_buf(),
                    message,
                })?
            }
            None => Self::default(),
        };
        let mut errors = cfg.apply_env(env);
        if let Err(e) = cfg.auth.read_admin_token_file() {
            errors.push(e);
        }
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        Ok(cfg)
    }

    /// Parses TOML text; unknown keys are errors that name the key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " | "))
    }

    /// The scoring engine's view of the configuration.
    pub fn scoring_params(&self) -> ScoringParams {
        ScoringParams {
            weights: self.weights,
            thresholds: self.thresholds,
            priors: self.priors,
            decay_factor: self.scoring.decay_factor,
            max_score: self.scoring.max_score,
        }
    }

    /// The configuration as TOML with secrets (passwords in URLs) redacted.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        c.storage.database_url = c.storage.database_url.as_deref().map(redact_url);
        c.storage.redis_url = c.storage.redis_url.as_deref().map(redact_url);
        if !c.auth.admin_token.is_empty() {
            c.auth.admin_token = "***".into();
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Replaces the password of a URL with `***`.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => "***".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_are_valid_and_match_the_seed() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.server.port, 8000);
        assert_eq!(c.server.metrics_port, 9090);
        assert_eq!(c.weights.success_rate, 0.4);
        assert_eq!(c.thresholds.max_latency, 5000.0);
        assert_eq!(c.scoring.update_interval, 60);
    }

    #[test]
    fn shipped_poolhub_toml_is_the_defaults() {
        let text = include_str!("../../poolhub.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn env_overrides_file() {
        let mut c = Config::from_toml("[server]\nport = 1234\n").unwrap();
        let errs = c.apply_env(env(&[
            ("API_PORT", "4321"),
            ("MIN_SUCCESS_RATE", "0.5"),
            ("MAX_MINER_SCORE", "100"),
        ]));
        assert!(errs.is_empty());
        assert_eq!(c.server.port, 4321);
        assert_eq!(c.thresholds.min_success_rate, 0.5);
        assert_eq!(c.scoring.max_score, 100.0);
    }

    #[test]
    fn bad_env_names_the_variable() {
        let mut c = Config::default();
        let errs = c.apply_env(env(&[("API_PORT", "eighty")]));
        assert_eq!(errs[0].key, "API_PORT");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml("[weights]\nsucess_rate = 0.4\n").unwrap_err();
        assert!(e.contains("sucess_rate"), "{e}");
    }

    #[test]
    fn weights_must_sum_to_one_and_every_bad_key_is_named() {
        let mut c = Config::default();
        c.weights.latency = 0.5;
        c.thresholds.min_availability = 2.0;
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("weights: must sum to 1"), "{msg}");
        assert!(msg.contains("thresholds.min_availability"), "{msg}");
    }

    #[test]
    fn database_and_redis_urls_select_and_validate() {
        let mut c = Config::default();
        let errs = c.apply_env(env(&[
            ("DATABASE_URL", "postgresql://u:p@localhost/poolhub"),
            ("REDIS_URL", "redis://localhost:6379"),
        ]));
        assert!(errs.is_empty());
        assert_eq!(c.storage.durable, DurableKind::Postgres);
        assert_eq!(c.storage.hot, HotKind::Redis);
        c.validate().unwrap();
        c.storage.database_url = Some("postgresql://u@h/db?sslmode=require".into());
        c.validate().unwrap();
        c.storage.database_url = Some("postgresql://u@h/db?sslmode=verify-full".into());
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("storage.database_url: sslmode=verify-full needs sslrootcert"),
            "{msg}"
        );
        c.storage.database_url =
            Some("postgresql://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem".into());
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/ca.pem"), "{msg}");
        c.storage.database_url = Some("postgresql://u@h/db".into());
        c.storage.redis_url = Some("rediss://localhost:6380".into());
        c.validate().unwrap();
        c.storage.redis_url = Some("rediss://localhost:6380/#insecure".into());
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("#insecure"), "{msg}");
        c.storage.redis_url = Some("redis://localhost:6379".into());
        c.storage.redis_ca_file = Some("/nonexistent/redis-ca.pem".into());
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("storage.redis_ca_file"), "{msg}");
        c.storage.redis_ca_file = None;
        c.storage.database_url = Some("mysql://x".into());
        c.storage.redis_url = Some("http://x".into());
        c.storage.postgres_schema = "Bad-Name".into();
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("storage.database_url"), "{msg}");
        assert!(msg.contains("storage.redis_url"), "{msg}");
        assert!(msg.contains("storage.postgres_schema"), "{msg}");
        let mut c = Config::default();
        c.storage.durable = DurableKind::Postgres;
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("storage.database_url"), "{msg}");
    }

    #[test]
    fn compose_deployment_is_valid_and_in_the_seeds_shape() {
        let mut c =
            Config::from_toml(include_str!("../../packaging/compose/poolhub.toml")).unwrap();
        let compose = include_str!("../../packaging/compose/docker-compose.yml");
        let url = |var: &str| {
            compose
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{var}: ")))
                .map(str::to_string)
        };
        let errs = c.apply_env(|k| match k {
            "DATABASE_URL" | "REDIS_URL" => url(k),
            _ => None,
        });
        assert!(errs.is_empty());
        c.validate().unwrap();
        assert_eq!(c.storage.durable, DurableKind::Postgres);
        assert_eq!(c.storage.hot, HotKind::Redis);
        for needle in [
            "\"8000:8000\"",
            "\"9090:9090\"",
            "image: redis:7-alpine",
            "image: postgres:15",
            "POSTGRES_DB: poolhub",
            "redis-data:/data",
            "postgres-data:/var/lib/postgresql/data",
        ] {
            assert!(compose.contains(needle), "compose file lacks {needle}");
        }
    }

    #[test]
    fn connection_limits_are_validated() {
        let mut c = Config::default();
        c.server.header_timeout = 0;
        c.server.idle_timeout = 0;
        c.server.max_connections = 0;
        let msg = c.validate().unwrap_err().to_string();
        for key in [
            "server.header_timeout",
            "server.idle_timeout",
            "server.max_connections",
        ] {
            assert!(msg.contains(key), "{msg}");
        }
    }

    #[test]
    fn a_directory_as_the_redb_file_is_a_config_error() {
        let dir = std::env::temp_dir();
        let mut c = Config::default();
        c.storage.path = dir.clone();
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("storage.path"), "{msg}");
        c.storage.ephemeral = true;
        c.validate().unwrap();
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgresql://u:secret@h/db"),
            "postgresql://u:***@h/db"
        );
    }
}
