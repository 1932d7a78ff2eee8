//! What a configuration reload (SIGHUP, `systemctl reload`) may change in a running hub.
//!
//! Scoring (weights, thresholds, priors, decay), matching, failover, auth and rate limits,
//! and the log level apply at once. What sizes or binds something the hub built at start
//! needs a restart, and a reload leaves it as it was and names it:
//!
//! * `server.*` except `server.log_level` and, while TLS stays on, `server.tls_cert` and
//!   `server.tls_key` (the listeners, their limits, the log format; the certificate files are
//!   read again on every reload, so a renewed certificate needs no restart);
//! * `storage.*` (the backends and their files);
//! * `compat.*` (which routes exist);
//! * `matching.heartbeat_timeout`, `matching.outcome_window` and
//!   `matching.max_tracked_matches`: the hot store's status lifetime and match ledger were
//!   sized with them.

use super::Config;
use sha2::{Digest, Sha256};

/// A reloaded file split into what applies now and what waits for a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Reload {
    /// The new configuration with every restart-only setting kept as it runs now.
    pub applied: Config,
    /// The restart-only keys whose value in the file differs from the running one.
    pub pending_restart: Vec<String>,
}

/// Splits `new` (already validated) against the running configuration.
pub fn split(running: &Config, new: Config) -> Reload {
    let mut applied = new.clone();
    applied.server = running.server.clone();
    applied.server.log_level = new.server.log_level.clone();
    // New certificate paths apply while TLS stays on (the listeners read them again);
    // turning TLS on or off changes the listeners, so it waits for a restart.
    if running.server.tls_cert.is_some()
        && new.server.tls_cert.is_some()
        && new.server.tls_key.is_some()
    {
        applied.server.tls_cert = new.server.tls_cert.clone();
        applied.server.tls_key = new.server.tls_key.clone();
    }
    applied.storage = running.storage.clone();
    applied.compat = running.compat;
    let (m, r) = (&mut applied.matching, &running.matching);
    m.heartbeat_timeout = r.heartbeat_timeout;
    m.outcome_window = r.outcome_window;
    m.max_tracked_matches = r.max_tracked_matches;
    let mut pending_restart = Vec::new();
    differing_keys("", &value(&new), &value(&applied), &mut pending_restart);
    Reload {
        applied,
        pending_restart,
    }
}

/// A short digest of the whole configuration, shown in `/api/v1/status` so an operator can
/// tell which file a hub runs with. The admin secret enters only as its own digest.
pub fn hash(cfg: &Config) -> String {
    let mut c = cfg.clone();
    if !c.auth.admin_token.is_empty() {
        c.auth.admin_token = hex::encode(Sha256::digest(c.auth.admin_token.as_bytes()));
    }
    let text = toml::to_string(&c).unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

fn value(cfg: &Config) -> toml::Value {
    toml::Value::try_from(cfg).unwrap_or(toml::Value::Boolean(false))
}

/// Every dotted key whose value differs between `a` and `b`.
fn differing_keys(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => differing_keys(&key, va, vb, out),
                    _ => out.push(key),
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_matching_and_auth_apply_and_listeners_wait_for_a_restart() {
        let running = Config::default();
        let mut new = running.clone();
        new.weights.latency = running.weights.latency + 0.1;
        new.thresholds.min_success_rate = 0.5;
        new.matching.scan_cap = 32;
        new.auth.max_reservations_per_client = 7;
        new.server.log_level = "debug".into();
        new.server.port = 9999;
        new.storage.cache_mb = 99;
        new.matching.heartbeat_timeout = 99;
        let r = split(&running, new.clone());
        assert_eq!(r.applied.weights, new.weights);
        assert_eq!(r.applied.thresholds, new.thresholds);
        assert_eq!(r.applied.matching.scan_cap, 32);
        assert_eq!(r.applied.auth.max_reservations_per_client, 7);
        assert_eq!(r.applied.server.log_level, "debug");
        assert_eq!(r.applied.server.port, running.server.port);
        assert_eq!(r.applied.storage, running.storage);
        assert_eq!(
            r.applied.matching.heartbeat_timeout,
            running.matching.heartbeat_timeout
        );
        assert_eq!(
            r.pending_restart,
            [
                "matching.heartbeat_timeout",
                "server.port",
                "storage.cache_mb"
            ]
        );
    }

    #[test]
    fn new_certificate_paths_apply_while_tls_stays_on_but_turning_it_on_waits() {
        let plain = Config::default();
        let mut tls = plain.clone();
        tls.server.tls_cert = Some("a.crt".into());
        tls.server.tls_key = Some("a.key".into());
        // Off to on: the listeners would change, so it waits.
        let r = split(&plain, tls.clone());
        assert_eq!(r.applied.server.tls_cert, None);
        assert_eq!(r.pending_restart, ["server.tls_cert", "server.tls_key"]);
        // On, new paths: applied (the listeners read them).
        let mut moved = tls.clone();
        moved.server.tls_cert = Some("b.crt".into());
        moved.server.tls_key = Some("b.key".into());
        let r = split(&tls, moved.clone());
        assert_eq!(r.applied.server, moved.server);
        assert!(r.pending_restart.is_empty(), "{:?}", r.pending_restart);
        // On to off: waits, and TLS keeps its running files.
        let r = split(&tls, plain);
        assert_eq!(r.applied.server, tls.server);
        assert_eq!(r.pending_restart, ["server.tls_cert", "server.tls_key"]);
    }

    #[test]
    fn an_unchanged_file_changes_nothing_and_keeps_its_hash() {
        let running = Config::default();
        let r = split(&running, running.clone());
        assert_eq!(r.applied, running);
        assert!(r.pending_restart.is_empty());
        assert_eq!(hash(&r.applied), hash(&running));
    }

    #[test]
    fn the_hash_follows_every_setting_the_secret_included() {
        let a = Config::default();
        let mut b = a.clone();
        b.weights.reputation += 0.01;
        let mut c = a.clone();
        c.auth.admin_token = "a-new-secret".into();
        assert_ne!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&c));
        assert_eq!(hash(&a).len(), 16);
    }
}
