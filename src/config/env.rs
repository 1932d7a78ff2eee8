//! The environment overlay: the seed's variables, in one table that both applies them and
//! documents them, so a variable cannot be listed without being read or read without being
//! listed.

use super::{BadKey, ClientAuth, Config, DurableKind, HotKind, LogFormat, MinerIdentity};
use std::path::PathBuf;
use std::str::FromStr;

/// One environment variable poolhub reads: its name, the file key it overrides, and how its
/// value is applied (an error says why the value was refused).
pub struct EnvVar {
    pub name: &'static str,
    pub key: &'static str,
    apply: fn(&mut Config, &str) -> Result<(), String>,
}

fn parse<T: FromStr>(value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("cannot parse {value:?}"))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("must be true or false, not {other:?}")),
    }
}

/// Every environment variable poolhub reads, with the key each one sets. An empty value
/// counts as unset.
pub const ENV_VARS: &[EnvVar] = &[
    EnvVar {
        name: "API_HOST",
        key: "server.host",
        apply: |c, v| {
            c.server.host = v.to_string();
            Ok(())
        },
    },
    EnvVar {
        name: "API_PORT",
        key: "server.port",
        apply: |c, v| {
            c.server.port = parse(v)?;
            Ok(())
        },
    },
    EnvVar {
        name: "METRICS_PORT",
        key: "server.metrics_port",
        apply: |c, v| {
            c.server.metrics_port = parse(v)?;
            Ok(())
        },
    },
    EnvVar {
        name: "LOG_LEVEL",
        key: "server.log_level",
        apply: |c, v| {
            c.server.log_level = v.to_string();
            Ok(())
        },
    },
    EnvVar {
        name: "LOG_FORMAT",
        key: "server.log_format",
        apply: |c, v| {
            c.server.log_format = match v {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err("must be \"text\" or \"json\"".into()),
            };
            Ok(())
        },
    },
    EnvVar {
        name: "SCORE_UPDATE_INTERVAL",
        key: "scoring.update_interval",
        apply: |c, v| {
            c.scoring.update_interval = parse(v)?;
            Ok(())
        },
    },
    EnvVar {
        name: "DECAY_FACTOR",
        key: "scoring.decay_factor",
        apply: |c, v| {
            c.scoring.decay_factor = parse(v)?;
            Ok(())
        },
    },
    EnvVar {
        name: "MAX_MINER_SCORE",
        key: "scoring.max_score",
        apply: |c, v| {
            c.scoring.max_score = parse(v)?;
            Ok(())
        },
    },
    EnvVar {
        name: "MIN_SUCCESS_RATE",
        key: "thresholds.min_success_rate",
        apply: |c, v| {
            c.thresholds.min_success_rate = parse(v)?;
            Ok(())
        },
    },
    EnvVar {
        name: "MAX_LATENCY",
        key: "thresholds.max_latency",
        apply: |c, v| {
            c.thresholds.max_latency = parse(v)?;
            Ok(())
        },
    },
    EnvVar {
        name: "MIN_AVAILABILITY",
        key: "thresholds.min_availability",
        apply: |c, v| {
            c.thresholds.min_availability = parse(v)?;
            Ok(())
        },
    },
    EnvVar {
        name: "HEARTBEAT_TIMEOUT",
        key: "matching.heartbeat_timeout",
        apply: |c, v| {
            c.matching.heartbeat_timeout = parse(v)?;
            Ok(())
        },
    },
    EnvVar {
        name: "POOLHUB_DB_PATH",
        key: "storage.path",
        apply: |c, v| {
            c.storage.path = PathBuf::from(v);
            Ok(())
        },
    },
    // A URL also selects its backend: setting DATABASE_URL alone is enough to use PostgreSQL.
    EnvVar {
        name: "DATABASE_URL",
        key: "storage.database_url",
        apply: |c, v| {
            c.storage.durable = DurableKind::Postgres;
            c.storage.database_url = Some(v.to_string());
            Ok(())
        },
    },
    EnvVar {
        name: "REDIS_URL",
        key: "storage.redis_url",
        apply: |c, v| {
            c.storage.hot = HotKind::Redis;
            c.storage.redis_url = Some(v.to_string());
            Ok(())
        },
    },
    EnvVar {
        name: "POOLHUB_MINER_IDENTITY",
        key: "auth.miner_identity",
        apply: |c, v| {
            c.auth.miner_identity = match v.trim() {
                "token" => MinerIdentity::Token,
                "signature" => MinerIdentity::Signature,
                other => return Err(format!("must be \"token\" or \"signature\", not {other:?}")),
            };
            Ok(())
        },
    },
    EnvVar {
        name: "POOLHUB_CLIENT_AUTH",
        key: "auth.clients",
        apply: |c, v| {
            c.auth.clients = match v.trim() {
                "open" => ClientAuth::Open,
                "keys" => ClientAuth::Keys,
                other => return Err(format!("must be \"open\" or \"keys\", not {other:?}")),
            };
            Ok(())
        },
    },
    EnvVar {
        name: "POOLHUB_METRICS_ON_API_PORT",
        key: "server.metrics_on_api_port",
        apply: |c, v| {
            c.server.metrics_on_api_port = parse_bool(v)?;
            Ok(())
        },
    },
    EnvVar {
        name: "POOLHUB_COMPAT_AITBC",
        key: "compat.aitbc",
        apply: |c, v| {
            c.compat.aitbc = parse_bool(v)?;
            Ok(())
        },
    },
    // The admin secret itself: never logged, redacted by check-config.
    EnvVar {
        name: "POOLHUB_ADMIN_TOKEN",
        key: "auth.admin_token",
        apply: |c, v| {
            c.auth.admin_token = v.trim().to_string();
            Ok(())
        },
    },
];

impl Config {
    /// Applies the seed's environment variables ([`ENV_VARS`]) read through `env`; returns
    /// the ones whose value was refused, each named by its variable.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Vec<BadKey> {
        let mut bad = Vec::new();
        for var in ENV_VARS {
            let Some(value) = env(var.name).filter(|v| !v.is_empty()) else {
                continue;
            };
            if let Err(message) = (var.apply)(self, &value) {
                bad.push(BadKey {
                    key: var.name.to_string(),
                    message,
                });
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_is_applied_and_names_a_real_key() {
        // Optional keys (the URLs) are absent from TOML when unset: set them for the lookup.
        let mut full = Config::default();
        full.storage.database_url = Some(String::new());
        full.storage.redis_url = Some(String::new());
        let defaults = toml::Value::try_from(full).unwrap();
        for var in ENV_VARS {
            // The key exists in the file format.
            let mut at = &defaults;
            for part in var.key.split('.') {
                at = at
                    .get(part)
                    .unwrap_or_else(|| panic!("{} names no key {}", var.name, var.key));
            }
            // And the variable changes the configuration.
            let value = match var.name {
                "LOG_FORMAT" => "json",
                "DATABASE_URL" => "postgresql://u@h/db",
                "REDIS_URL" => "redis://h:6379",
                "API_HOST" | "LOG_LEVEL" | "POOLHUB_DB_PATH" | "POOLHUB_ADMIN_TOKEN" => "changed",
                "POOLHUB_MINER_IDENTITY" => "signature",
                "POOLHUB_CLIENT_AUTH" => "keys",
                // The default is off for one and on for the other.
                "POOLHUB_METRICS_ON_API_PORT" => "true",
                "POOLHUB_COMPAT_AITBC" => "false",
                _ => "0.5",
            };
            let value = if [
                "API_PORT",
                "METRICS_PORT",
                "SCORE_UPDATE_INTERVAL",
                "HEARTBEAT_TIMEOUT",
            ]
            .contains(&var.name)
            {
                "7"
            } else {
                value
            };
            let mut c = Config::default();
            let bad = c.apply_env(|k| (k == var.name).then(|| value.to_string()));
            assert!(bad.is_empty(), "{}: {bad:?}", var.name);
            assert_ne!(c, Config::default(), "{} changed nothing", var.name);
        }
    }

    #[test]
    fn the_readme_documents_every_variable() {
        let readme = include_str!("../../README.md");
        for var in ENV_VARS {
            let row = format!("| `{}` | `{}`", var.name, var.key);
            assert!(readme.contains(&row), "README has no row {row}");
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let mut c = Config::default();
        assert!(c.apply_env(|_| Some(String::new())).is_empty());
        assert_eq!(c, Config::default());
    }

    #[test]
    fn bad_log_format_is_named() {
        let mut c = Config::default();
        let bad = c.apply_env(|k| (k == "LOG_FORMAT").then(|| "xml".to_string()));
        assert_eq!(bad[0].key, "LOG_FORMAT");
    }
}
