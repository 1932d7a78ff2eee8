//! One typed configuration: `poolhub.toml`, then the seed's environment variables over it,
//! then the command line, then validation of the whole. An invalid configuration stops the
//! program with one message naming every bad key before anything binds.

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
    /// Seconds to let in-flight requests finish after SIGTERM.
    pub shutdown_grace: u64,
    pub log_level: String,
    pub log_format: LogFormat,
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
            log_level: "info".into(),
            log_format: LogFormat::Text,
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
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    /// Outcome history older than this many days is pruned (0 = keep forever).
    pub outcome_retention_days: u64,
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
            outcome_retention_days: 30,
            postgres_schema: "poolhub".into(),
            postgres_max_connections: 16,
            connect_timeout: 30,
            redis_prefix: String::new(),
            resync_interval: 30,
        }
    }
}

/// The seed's `[scoring]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// Environment variables poolhub reads, with the key each one sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("API_HOST", "server.host"),
    ("API_PORT", "server.port"),
    ("METRICS_PORT", "server.metrics_port"),
    ("LOG_LEVEL", "server.log_level"),
    ("LOG_FORMAT", "server.log_format"),
    ("SCORE_UPDATE_INTERVAL", "scoring.update_interval"),
    ("DECAY_FACTOR", "scoring.decay_factor"),
    ("MAX_MINER_SCORE", "scoring.max_score"),
    ("MIN_SUCCESS_RATE", "thresholds.min_success_rate"),
    ("MAX_LATENCY", "thresholds.max_latency"),
    ("MIN_AVAILABILITY", "thresholds.min_availability"),
    ("HEARTBEAT_TIMEOUT", "matching.heartbeat_timeout"),
    ("POOLHUB_DB_PATH", "storage.path"),
    ("DATABASE_URL", "storage.database_url"),
    ("REDIS_URL", "storage.redis_url"),
];

fn parse_env<T: std::str::FromStr>(var: &str, value: &str, errors: &mut Vec<BadKey>) -> Option<T> {
    match value.trim().parse() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(BadKey {
                key: var.to_string(),
                message: format!("cannot parse {value:?}"),
            });
            None
        }
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
        let errors = cfg.apply_env(env);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        Ok(cfg)
    }

    /// Parses TOML text; unknown keys are errors that name the key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " | "))
    }

    /// Applies the seed's environment variables; returns the ones that did not parse.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Vec<BadKey> {
        let mut e = Vec::new();
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        if let Some(v) = get("API_HOST") {
            self.server.host = v;
        }
        if let Some(v) = get("API_PORT").and_then(|v| parse_env("API_PORT", &v, &mut e)) {
            self.server.port = v;
        }
        if let Some(v) = get("METRICS_PORT").and_then(|v| parse_env("METRICS_PORT", &v, &mut e)) {
            self.server.metrics_port = v;
        }
        if let Some(v) = get("LOG_LEVEL") {
            self.server.log_level = v;
        }
        if let Some(v) = get("LOG_FORMAT") {
            match v.as_str() {
                "text" => self.server.log_format = LogFormat::Text,
                "json" => self.server.log_format = LogFormat::Json,
                _ => e.push(BadKey {
                    key: "LOG_FORMAT".into(),
                    message: "must be \"text\" or \"json\"".into(),
                }),
            }
        }
        if let Some(v) = get("SCORE_UPDATE_INTERVAL")
            .and_then(|v| parse_env("SCORE_UPDATE_INTERVAL", &v, &mut e))
        {
            self.scoring.update_interval = v;
        }
        if let Some(v) = get("DECAY_FACTOR").and_then(|v| parse_env("DECAY_FACTOR", &v, &mut e)) {
            self.scoring.decay_factor = v;
        }
        if let Some(v) =
            get("MAX_MINER_SCORE").and_then(|v| parse_env("MAX_MINER_SCORE", &v, &mut e))
        {
            self.scoring.max_score = v;
        }
        if let Some(v) =
            get("MIN_SUCCESS_RATE").and_then(|v| parse_env("MIN_SUCCESS_RATE", &v, &mut e))
        {
            self.thresholds.min_success_rate = v;
        }
        if let Some(v) = get("MAX_LATENCY").and_then(|v| parse_env("MAX_LATENCY", &v, &mut e)) {
            self.thresholds.max_latency = v;
        }
        if let Some(v) =
            get("MIN_AVAILABILITY").and_then(|v| parse_env("MIN_AVAILABILITY", &v, &mut e))
        {
            self.thresholds.min_availability = v;
        }
        if let Some(v) =
            get("HEARTBEAT_TIMEOUT").and_then(|v| parse_env("HEARTBEAT_TIMEOUT", &v, &mut e))
        {
            self.matching.heartbeat_timeout = v;
        }
        if let Some(v) = get("POOLHUB_DB_PATH") {
            self.storage.path = PathBuf::from(v);
        }
        if let Some(v) = get("DATABASE_URL") {
            self.storage.durable = DurableKind::Postgres;
            self.storage.database_url = Some(v);
        }
        if let Some(v) = get("REDIS_URL") {
            self.storage.hot = HotKind::Redis;
            self.storage.redis_url = Some(v);
        }
        e
    }

    /// Checks the whole configuration; returns every problem, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut bad = Vec::new();
        let mut check = |ok: bool, key: &str, message: String| {
            if !ok {
                bad.push(BadKey {
                    key: key.to_string(),
                    message,
                });
            }
        };
        let unit = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        let s = &self.server;
        check(
            s.host.parse::<std::net::IpAddr>().is_ok() || s.host == "localhost",
            "server.host",
            format!("{:?} is not an IP address", s.host),
        );
        check(
            s.port == 0 || s.port != s.metrics_port,
            "server.metrics_port",
            format!("must differ from server.port ({})", s.port),
        );
        check(
            (1024..=64 * 1024 * 1024).contains(&s.max_body_bytes),
            "server.max_body_bytes",
            "must be between 1024 and 67108864".into(),
        );
        check(
            tracing_subscriber::EnvFilter::try_new(&s.log_level).is_ok(),
            "server.log_level",
            format!(
                "{:?} is not a level (error, warn, info, debug, trace) or filter",
                s.log_level
            ),
        );
        let w = &self.weights;
        let ws = [w.success_rate, w.latency, w.availability, w.reputation];
        check(
            ws.iter().all(|x| unit(*x)),
            "weights",
            "every weight must be between 0 and 1".into(),
        );
        let sum: f64 = ws.iter().sum();
        check(
            (sum - 1.0).abs() < 1e-6,
            "weights",
            format!("must sum to 1 (they sum to {sum})"),
        );
        let t = &self.thresholds;
        check(
            unit(t.min_success_rate),
            "thresholds.min_success_rate",
            "must be between 0 and 1".into(),
        );
        check(
            unit(t.min_availability),
            "thresholds.min_availability",
            "must be between 0 and 1".into(),
        );
        check(
            t.max_latency.is_finite() && t.max_latency > 0.0 && t.max_latency <= 86_400_000.0,
            "thresholds.max_latency",
            "must be more than 0 and at most 86400000 ms".into(),
        );
        let sc = &self.scoring;
        check(
            (1..=86_400).contains(&sc.update_interval),
            "scoring.update_interval",
            "must be between 1 and 86400 seconds".into(),
        );
        check(
            sc.decay_factor.is_finite() && sc.decay_factor > 0.0 && sc.decay_factor <= 1.0,
            "scoring.decay_factor",
            "must be more than 0 and at most 1".into(),
        );
        check(
            sc.max_score.is_finite() && sc.max_score > 0.0 && sc.max_score <= 1e9,
            "scoring.max_score",
            "must be a positive number".into(),
        );
        let p = &self.priors;
        check(
            unit(p.success_rate),
            "priors.success_rate",
            "must be between 0 and 1".into(),
        );
        check(
            unit(p.availability),
            "priors.availability",
            "must be between 0 and 1".into(),
        );
        check(
            p.latency_ms.is_finite() && p.latency_ms >= 0.0,
            "priors.latency_ms",
            "must be 0 or more".into(),
        );
        check(
            p.weight.is_finite() && p.weight > 0.0,
            "priors.weight",
            "must be more than 0".into(),
        );
        check(
            p.availability_weight.is_finite() && p.availability_weight > 0.0,
            "priors.availability_weight",
            "must be more than 0".into(),
        );
        check(
            t.min_jobs.is_finite() && t.min_jobs >= 0.0,
            "thresholds.min_jobs",
            "must be 0 or more".into(),
        );
        check(
            p.stake_half.is_finite() && p.stake_half > 0.0,
            "priors.stake_half",
            "must be more than 0".into(),
        );
        check(
            p.experience_half.is_finite() && p.experience_half > 0.0,
            "priors.experience_half",
            "must be more than 0".into(),
        );
        let m = &self.matching;
        check(
            m.heartbeat_timeout >= 1,
            "matching.heartbeat_timeout",
            "must be at least 1 second".into(),
        );
        check(
            (1..=1000).contains(&m.max_limit),
            "matching.max_limit",
            "must be between 1 and 1000".into(),
        );
        check(
            (1..=m.max_limit).contains(&m.default_limit),
            "matching.default_limit",
            "must be between 1 and matching.max_limit".into(),
        );
        check(
            m.reservation_ttl >= 1,
            "matching.reservation_ttl",
            "must be at least 1 second".into(),
        );
        check(
            m.outcome_window >= 1,
            "matching.outcome_window",
            "must be at least 1 second".into(),
        );
        check(
            m.max_tracked_matches >= 1,
            "matching.max_tracked_matches",
            "must be at least 1".into(),
        );
        check(
            m.tie_epsilon.is_finite() && m.tie_epsilon >= 0.0,
            "matching.tie_epsilon",
            "must be 0 or more".into(),
        );
        check(
            m.scan_cap >= 1,
            "matching.scan_cap",
            "must be at least 1".into(),
        );
        let f = &self.failover;
        check(
            unit(f.panic_threshold),
            "failover.panic_threshold",
            "must be between 0 and 1".into(),
        );
        check(
            f.base_cooldown <= f.max_cooldown,
            "failover.base_cooldown",
            "must not exceed failover.max_cooldown".into(),
        );
        let st = &self.storage;
        if st.durable == DurableKind::Postgres {
            let ok = st.database_url.as_deref().is_some_and(|u| {
                (u.starts_with("postgresql://") || u.starts_with("postgres://"))
                    && u.parse::<tokio_postgres::Config>().is_ok()
            });
            check(
                ok,
                "storage.database_url",
                "durable = \"postgres\" needs a postgresql://user:pass@host/db URL (or DATABASE_URL)"
                    .into(),
            );
            let tls_required = st
                .database_url
                .as_deref()
                .and_then(|u| u.parse::<tokio_postgres::Config>().ok())
                .is_some_and(|c| c.get_ssl_mode() == tokio_postgres::config::SslMode::Require);
            check(
                !tls_required,
                "storage.database_url",
                "sslmode=require: this build has no TLS; reach PostgreSQL over a private network or a TLS tunnel"
                    .into(),
            );
            check(
                crate::store::postgres::valid_schema_name(&st.postgres_schema),
                "storage.postgres_schema",
                "must be a lowercase identifier (a-z, 0-9, _; at most 63 characters)".into(),
            );
            check(
                (1..=1000).contains(&st.postgres_max_connections),
                "storage.postgres_max_connections",
                "must be between 1 and 1000".into(),
            );
        } else {
            check(
                st.ephemeral || !st.path.as_os_str().is_empty(),
                "storage.path",
                "must name a file".into(),
            );
        }
        if st.hot == HotKind::Redis {
            let ok = st.redis_url.as_deref().is_some_and(|u| {
                (u.starts_with("redis://") || u.starts_with("unix://"))
                    && redis::Client::open(u).is_ok()
            });
            check(
                ok,
                "storage.redis_url",
                "hot = \"redis\" needs a redis://host:port URL (or REDIS_URL)".into(),
            );
            check(
                crate::store::redis::valid_prefix(&st.redis_prefix),
                "storage.redis_prefix",
                "must be at most 64 printable characters without spaces".into(),
            );
            check(
                (1..=86_400).contains(&st.resync_interval),
                "storage.resync_interval",
                "must be between 1 and 86400 seconds".into(),
            );
        }
        check(
            st.connect_timeout <= 3600,
            "storage.connect_timeout",
            "must be at most 3600 seconds".into(),
        );
        if bad.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(bad))
        }
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
        let text = include_str!("../poolhub.toml");
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
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("no TLS"), "{msg}");
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
        let mut c = Config::from_toml(include_str!("../packaging/compose/poolhub.toml")).unwrap();
        let compose = include_str!("../packaging/compose/docker-compose.yml");
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
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgresql://u:secret@h/db"),
            "postgresql://u:***@h/db"
        );
    }
}
