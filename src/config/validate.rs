//! Validation of the whole configuration: every problem found at once, each naming its key,
//! before anything binds or opens. A mistake in a setting is reported here as the setting's
//! fault, never later as a storage backend being "unavailable".

use super::{BadKey, Config, ConfigError, DurableKind, HotKind};

impl Config {
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
            (1..=3600).contains(&s.header_timeout),
            "server.header_timeout",
            "must be between 1 and 3600 seconds".into(),
        );
        check(
            (1..=86_400).contains(&s.idle_timeout),
            "server.idle_timeout",
            "must be between 1 and 86400 seconds".into(),
        );
        check(
            (1..=1_000_000).contains(&s.max_connections),
            "server.max_connections",
            "must be between 1 and 1000000".into(),
        );
        check(
            tracing_subscriber::EnvFilter::try_new(&s.log_level).is_ok(),
            "server.log_level",
            format!(
                "{:?} is not a level (error, warn, info, debug, trace) or filter",
                s.log_level
            ),
        );
        for (i, p) in s.trusted_proxies.iter().enumerate() {
            let parsed = p.parse::<crate::net::Cidr>();
            check(
                parsed.is_ok(),
                &format!("server.trusted_proxies[{i}]"),
                parsed.err().unwrap_or_default(),
            );
        }
        let a = &self.auth;
        check(
            a.admin_token.is_empty() || a.admin_token.len() >= 16,
            "auth.admin_token",
            "the admin secret must be at least 16 characters".into(),
        );
        check(
            a.max_reservations_per_client >= 1,
            "auth.max_reservations_per_client",
            "must be at least 1".into(),
        );
        check(
            (10..=3600).contains(&a.challenge_ttl),
            "auth.challenge_ttl",
            "must be between 10 and 3600 seconds".into(),
        );
        check(
            !a.domain.contains(char::is_whitespace),
            "auth.domain",
            format!(
                "{:?} must be a host name (and port), without spaces",
                a.domain
            ),
        );
        for class in ["register", "status", "match", "outcome", "admin"] {
            let r = a.rate_limits.rate(class);
            check(
                r.per_second == 0 || r.burst >= 1,
                &format!("auth.rate_limits.{class}.burst"),
                "must be at least 1 when per_second is set".into(),
            );
        }
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
        check(
            t.max_temperature.is_finite() && (1.0..=200.0).contains(&t.max_temperature),
            "thresholds.max_temperature",
            "must be between 1 and 200 (°C)".into(),
        );
        check(
            t.derate_temperature.is_finite()
                && t.derate_temperature > 0.0
                && t.derate_temperature <= t.max_temperature,
            "thresholds.derate_temperature",
            "must be more than 0 and at most thresholds.max_temperature (°C)".into(),
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
            let url = st
                .database_url
                .as_deref()
                .filter(|u| u.starts_with("postgresql://") || u.starts_with("postgres://"));
            match url.map(crate::tls::client::PgTarget::parse) {
                None => check(
                    false,
                    "storage.database_url",
                    "durable = \"postgres\" needs a postgresql://user:pass@host/db URL (or DATABASE_URL)"
                        .into(),
                ),
                Some(Err(e)) => check(false, "storage.database_url", e),
                // The CA file `sslrootcert` names is read here, so a bad one stops
                // `check-config` and the start rather than the first connection.
                Some(Ok(target)) => {
                    if let Err(e) = target.client_config() {
                        check(false, "storage.database_url", format!("sslrootcert: {e}"));
                    }
                }
            }
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
            // Caught here rather than as "redb is unavailable" when the store opens. (A
            // missing parent directory is not refused: systemd creates StateDirectory= only
            // when the service starts, after `check-config` ran.)
            check(
                st.ephemeral || !st.path.is_dir(),
                "storage.path",
                format!(
                    "{} is a directory; name the redb file in it",
                    st.path.display()
                ),
            );
        }
        if st.hot == HotKind::Redis {
            let ok = st.redis_url.as_deref().is_some_and(|u| {
                (u.starts_with("redis://")
                    || u.starts_with("rediss://")
                    || u.starts_with("unix://"))
                    && redis::Client::open(u).is_ok()
            });
            check(
                ok,
                "storage.redis_url",
                "hot = \"redis\" needs a redis://host:port URL, or rediss:// for TLS (or REDIS_URL)"
                    .into(),
            );
            check(
                !st.redis_url
                    .as_deref()
                    .is_some_and(|u| u.contains("#insecure")),
                "storage.redis_url",
                "#insecure would accept any certificate; give the CA in storage.redis_ca_file"
                    .into(),
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
        if let Some(ca) = &st.redis_ca_file {
            match crate::tls::read_roots(ca) {
                Ok(_) => check(
                    st.hot != HotKind::Redis
                        || st
                            .redis_url
                            .as_deref()
                            .is_some_and(|u| u.starts_with("rediss://")),
                    "storage.redis_ca_file",
                    "is for TLS: storage.redis_url must be a rediss:// URL".into(),
                ),
                Err(e) => check(false, "storage.redis_ca_file", e.to_string()),
            }
        }
        let sv = &self.server;
        match (&sv.tls_cert, &sv.tls_key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                if let Err(e) = crate::tls::server::ServerTls::load(cert, key) {
                    let key_name = if e.path == *cert {
                        "server.tls_cert"
                    } else {
                        "server.tls_key"
                    };
                    check(false, key_name, e.to_string());
                }
            }
            (Some(_), None) => check(
                false,
                "server.tls_key",
                "server.tls_cert needs its key".into(),
            ),
            (None, Some(_)) => check(
                false,
                "server.tls_cert",
                "server.tls_key needs its certificate".into(),
            ),
        }
        if st.backup_dir.is_some() {
            check(
                st.durable == DurableKind::Redb,
                "storage.backup_dir",
                "scheduled backups copy the redb file; back PostgreSQL up with pg_dump".into(),
            );
            check(
                (1..=30 * 86_400).contains(&st.backup_interval),
                "storage.backup_interval",
                "must be between 1 and 2592000 seconds".into(),
            );
            check(
                (1..=1000).contains(&st.backup_keep),
                "storage.backup_keep",
                "must be between 1 and 1000".into(),
            );
        }
        check(
            st.max_outcomes <= 10_000_000_000,
            "storage.max_outcomes",
            "must be at most 10000000000 (0 = no bound by count)".into(),
        );
        check(
            (1..=65_536).contains(&st.cache_mb),
            "storage.cache_mb",
            "must be between 1 and 65536 MiB".into(),
        );
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
}
