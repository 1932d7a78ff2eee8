//! Prometheus metrics. The seed's five names are kept exactly; the rest follow Prometheus
//! naming conventions (`_total` counters, `_seconds` durations).
//!
//! Gauges that describe the whole registry (miner counts, per-miner scores) are computed when
//! `/metrics` is scraped rather than on every change, so the hot paths never pay for them and
//! a deregistered miner's score series disappears at the next scrape.

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The series of `poolhub_match_requests_total`, by result.
pub struct MatchResults {
    pub matched: IntCounter,
    pub empty: IntCounter,
    pub panic: IntCounter,
}

/// The `ok` and `error` series of a counter by result (`poolhub_config_reloads_total`,
/// `poolhub_backups_total`).
pub struct OkOrError {
    pub ok: IntCounter,
    pub error: IntCounter,
}

/// One route's request series for its usual answer (200), each looked up once by the hot
/// routes, when first needed: so the series exported are those a label lookup per request
/// would have made, none before their first request.
#[derive(Default)]
pub struct RouteSeries {
    pub ok: std::sync::OnceLock<IntCounter>,
    pub duration: std::sync::OnceLock<Histogram>,
}

/// Every metric poolhub exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub miners_total: IntGauge,
    pub miners_online: IntGauge,
    pub miners_available: IntGauge,
    pub miners_cooled_down: IntGauge,
    pub miners_too_hot: IntGauge,
    pub reservations_in_flight: IntGauge,
    pub jobs_matched_total: IntCounter,
    pub match_requests_total: IntCounterVec,
    /// `match_requests_total`'s three series, looked up once: a label lookup hashes the
    /// labels under a lock, on every match.
    pub match_results: MatchResults,
    pub match_duration: Histogram,
    /// `poolhub_config_reloads_total`, by result.
    pub config_reloads: OkOrError,
    /// `poolhub_backups_total`, by result (scheduled backups).
    pub backups: OkOrError,
    pub backup_last_success: IntGauge,
    pub backup_interval_seconds: IntGauge,
    /// `GET /api/v1/events` subscribers connected now.
    pub event_subscribers: IntGauge,
    /// Subscribers dropped for reading too slowly.
    pub event_subscribers_dropped: IntCounter,
    pub miner_score: GaugeVec,
    pub api_requests_total: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub job_outcomes_total: IntCounterVec,
    pub store_commit_duration: Histogram,
    pub store_commit_batch_size: Histogram,
    pub store_errors_total: IntCounterVec,
    pub score_updates_total: IntCounter,
    pub build_info: IntGaugeVec,
    pub rate_limited_total: IntCounterVec,
    pub rate_limit_parties: IntGauge,
    pub store_file_bytes: IntGauge,
    pub outcomes_stored: IntGauge,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are constants; a failure here is a programming error caught by tests.
    match r {
        Ok(v) => v,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

/// Checks a metric definition and registers it: one step, so a metric cannot be defined
/// without being exported.
fn add<C: Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<C>) -> C {
    let metric = must(metric);
    must(registry.register(Box::new(metric.clone())));
    metric
}

impl Metrics {
    /// The metrics of a hub on the default backends (redb and moka).
    pub fn new() -> Self {
        Self::with_backends(&["redb", "moka"])
    }

    /// The metrics of a hub whose stores are `backends` (their names as in
    /// `poolhub_store_errors_total{backend=...}`): each backend's error series is exported at
    /// 0 from the start, so the first error is an increase an alert can see.
    pub fn with_backends(backends: &[&str]) -> Self {
        let registry = Registry::new();
        // 10 µs doubling to ~1.3 s: fine enough to see a match's real cost.
        let fine = must(exponential_buckets(0.000_01, 2.0, 18));
        let http = must(exponential_buckets(0.000_05, 2.0, 18));

        let miners_total = add(
            &registry,
            IntGauge::new("poolhub_miners_total", "Registered miners."),
        );
        let miners_online = add(
            &registry,
            IntGauge::new(
                "poolhub_miners_online",
                "Miners whose last status is within the heartbeat timeout.",
            ),
        );
        let miners_available = add(
            &registry,
            IntGauge::new(
                "poolhub_miners_available",
                "Online miners that report themselves available.",
            ),
        );
        let miners_cooled_down = add(
            &registry,
            IntGauge::new(
                "poolhub_miners_cooled_down",
                "Miners in a failover cooldown after consecutive failures.",
            ),
        );
        let miners_too_hot = add(
            &registry,
            IntGauge::new(
                "poolhub_miners_too_hot",
                "Online miners whose last temperature is over thresholds.max_temperature (not matched).",
            ),
        );
        let reservations_in_flight = add(&registry, IntGauge::new(
            "poolhub_reservations_in_flight",
            "Slots reserved by matches whose outcome has not arrived and whose TTL has not passed.",
        ));
        let jobs_matched_total = add(
            &registry,
            IntCounter::new(
                "poolhub_jobs_matched_total",
                "Match requests answered with at least one miner.",
            ),
        );
        let match_requests_total = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "poolhub_match_requests_total",
                    "Match requests by result (matched, empty, panic).",
                ),
                &["result"],
            ),
        );
        let match_duration = add(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "poolhub_match_duration",
                    "Duration of the match operation (index walk and ranking), seconds.",
                )
                .buckets(fine.clone()),
            ),
        );
        let miner_score = add(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "poolhub_miner_score",
                    "Current score of each registered miner.",
                ),
                &["address"],
            ),
        );
        let api_requests_total = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "poolhub_api_requests_total",
                    "API requests by method, matched route and status code.",
                ),
                &["method", "route", "status"],
            ),
        );
        let http_request_duration = add(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "poolhub_http_request_duration_seconds",
                    "API request duration by matched route, seconds.",
                )
                .buckets(http),
                &["route"],
            ),
        );
        let job_outcomes_total = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "poolhub_job_outcomes_total",
                    "Job outcomes accepted, by result (success, failure).",
                ),
                &["result"],
            ),
        );
        let store_commit_duration = add(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "poolhub_store_commit_duration_seconds",
                    "Duration of one durable commit (including fsync), seconds.",
                )
                .buckets(fine),
            ),
        );
        let store_commit_batch_size = add(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "poolhub_store_commit_batch_size",
                    "Writes carried by one durable commit (group commit).",
                )
                .buckets(must(exponential_buckets(1.0, 2.0, 13))),
            ),
        );
        let store_errors_total = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "poolhub_store_errors_total",
                    "Storage operations that failed, by backend.",
                ),
                &["backend"],
            ),
        );
        let score_updates_total = add(
            &registry,
            IntCounter::new(
                "poolhub_score_updates_total",
                "Completed periodic recomputations of every miner's score.",
            ),
        );
        let build_info = add(
            &registry,
            IntGaugeVec::new(
                Opts::new("poolhub_build_info", "Always 1; labelled with the version."),
                &["version"],
            ),
        );
        let rate_limited_total = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "poolhub_rate_limited_total",
                    "Requests refused with 429 by a rate limit, by route class.",
                ),
                &["class"],
            ),
        );
        let rate_limit_parties = add(
            &registry,
            IntGauge::new(
                "poolhub_rate_limit_parties",
                "Rate-limit buckets held in memory (parties per class, summed) after the last sweep of idle ones.",
            ),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Labelled counters are exported at 0 for every known label value from the start: a
        // series that is born at 1 has no earlier sample, so `increase()`/`rate()` (and the
        // PoolhubStorageErrors alert) would miss the first event.
        let reloads = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "poolhub_config_reloads_total",
                    "Configuration reloads (SIGHUP, systemctl reload), by result: ok, or error \
                     when the file was invalid and the running configuration was kept.",
                ),
                &["result"],
            ),
        );
        let config_reloads = OkOrError {
            ok: reloads.with_label_values(&["ok"]),
            error: reloads.with_label_values(&["error"]),
        };
        let backups_total = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "poolhub_backups_total",
                    "Scheduled backups (storage.backup_dir), by result: ok or error.",
                ),
                &["result"],
            ),
        );
        let backups = OkOrError {
            ok: backups_total.with_label_values(&["ok"]),
            error: backups_total.with_label_values(&["error"]),
        };
        let backup_last_success = add(
            &registry,
            IntGauge::new(
                "poolhub_backup_last_success_timestamp_seconds",
                "Unix time of the last scheduled backup written (0: none yet).",
            ),
        );
        let backup_interval_seconds = add(
            &registry,
            IntGauge::new(
                "poolhub_backup_interval_seconds",
                "storage.backup_interval when scheduled backups are on, else 0.",
            ),
        );
        let event_subscribers = add(
            &registry,
            IntGauge::new(
                "poolhub_event_subscribers",
                "Clients connected to the event stream (GET /api/v1/events).",
            ),
        );
        let event_subscribers_dropped = add(
            &registry,
            IntCounter::new(
                "poolhub_event_subscribers_dropped_total",
                "Event-stream subscribers dropped because they fell too far behind.",
            ),
        );
        let match_results = MatchResults {
            matched: match_requests_total.with_label_values(&["matched"]),
            empty: match_requests_total.with_label_values(&["empty"]),
            panic: match_requests_total.with_label_values(&["panic"]),
        };
        for r in ["success", "failure"] {
            let _ = job_outcomes_total.with_label_values(&[r]);
        }
        for b in backends {
            let _ = store_errors_total.with_label_values(&[b]);
        }
        for c in crate::http::limits::RouteClass::ALL {
            let _ = rate_limited_total.with_label_values(&[c.label()]);
        }

        let store_file_bytes = add(
            &registry,
            IntGauge::new(
                "poolhub_store_file_bytes",
                "Size of the durable store on disk, bytes (the redb file; PostgreSQL: the \
                 schema's tables and indexes).",
            ),
        );
        let outcomes_stored = add(
            &registry,
            IntGauge::new(
                "poolhub_outcomes_stored",
                "Outcome records kept as history (bounded by storage.max_outcomes and \
                 storage.outcome_retention_days).",
            ),
        );
        // The process's RSS, open fds, CPU seconds and start time (Linux only: /proc).
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));

        Self {
            registry,
            store_file_bytes,
            outcomes_stored,
            miners_total,
            miners_online,
            miners_available,
            miners_cooled_down,
            miners_too_hot,
            reservations_in_flight,
            jobs_matched_total,
            match_requests_total,
            match_results,
            match_duration,
            config_reloads,
            backups,
            backup_last_success,
            backup_interval_seconds,
            event_subscribers,
            event_subscribers_dropped,
            miner_score,
            api_requests_total,
            http_request_duration,
            job_outcomes_total,
            store_commit_duration,
            store_commit_batch_size,
            store_errors_total,
            score_updates_total,
            build_info,
            rate_limited_total,
            rate_limit_parties,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_names_are_exported_with_help() {
        let m = Metrics::new();
        m.jobs_matched_total.inc();
        m.match_duration.observe(0.0001);
        m.miner_score.with_label_values(&["0xab"]).set(0.5);
        m.api_requests_total
            .with_label_values(&["GET", "/health", "200"])
            .inc();
        let text = m.encode();
        for name in [
            "poolhub_miners_total",
            "poolhub_jobs_matched_total",
            "poolhub_match_duration",
            "poolhub_miner_score",
            "poolhub_api_requests_total",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} missing");
        }
        assert!(text.contains("poolhub_match_duration_bucket{le=\"0.00001\"}"));
    }

    #[test]
    fn labelled_counters_start_at_zero() {
        let text = Metrics::new().encode();
        for series in [
            "poolhub_match_requests_total{result=\"matched\"} 0",
            "poolhub_match_requests_total{result=\"empty\"} 0",
            "poolhub_match_requests_total{result=\"panic\"} 0",
            "poolhub_job_outcomes_total{result=\"success\"} 0",
            "poolhub_job_outcomes_total{result=\"failure\"} 0",
            "poolhub_store_errors_total{backend=\"redb\"} 0",
            "poolhub_store_errors_total{backend=\"moka\"} 0",
            "poolhub_rate_limited_total{class=\"register\"} 0",
            "poolhub_rate_limited_total{class=\"status\"} 0",
            "poolhub_rate_limited_total{class=\"match\"} 0",
            "poolhub_rate_limited_total{class=\"outcome\"} 0",
            "poolhub_rate_limited_total{class=\"admin\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing");
        }
    }

    #[test]
    fn error_series_start_at_zero_for_postgres_and_redis() {
        let text = Metrics::with_backends(&["postgres", "redis"]).encode();
        for series in [
            "poolhub_store_errors_total{backend=\"postgres\"} 0",
            "poolhub_store_errors_total{backend=\"redis\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        assert!(!text.contains("backend=\"redb\""), "redb is not configured");
    }

    /// The process collector reports this process's memory and descriptors.
    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_exported() {
        let text = Metrics::new().encode();
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        };
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_cpu_seconds_total",
        ] {
            assert!(
                value(name).is_some_and(|v| v >= 0.0),
                "{name} missing:\n{text}"
            );
        }
        let rss = value("process_resident_memory_bytes").unwrap_or(0.0);
        assert!(
            rss > 1_000_000.0,
            "a test process uses more than 1 MB: {rss}"
        );
    }
}
