//! Configuration reload: the settings a running hub reads on every request live in one
//! [`Tuning`], swapped whole by [`Hub::reload`], so a request sees the old settings or the new
//! ones, never half of each. What a reload may change is [`crate::config::reload`]'s to say.

use super::{now_ms, Hub};
use crate::config::{reload, Config};
use crate::domain::matching::MatchPolicy;
use crate::domain::scoring::{FailoverParams, ScoringParams};
use std::ops::Deref;
use std::sync::Arc;

/// The running configuration and what the hub derives from it.
pub struct Tuning {
    pub config: Config,
    pub params: ScoringParams,
    pub failover: FailoverParams,
    pub policy: MatchPolicy,
    /// [`reload::hash`] of `config`.
    pub hash: String,
    /// Unix ms when this configuration was loaded (start or reload).
    pub loaded_at: u64,
    /// Keys changed in the file that wait for a restart (empty at start).
    pub pending_restart: Vec<String>,
}

impl Tuning {
    pub fn new(config: Config, pending_restart: Vec<String>) -> Self {
        let failover = config.failover;
        Self {
            params: config.scoring_params(),
            policy: MatchPolicy {
                heartbeat_timeout_ms: config.matching.heartbeat_timeout.saturating_mul(1000),
                tie_epsilon: config.matching.tie_epsilon * config.scoring.max_score,
                panic_threshold: failover.panic_threshold,
                scan_cap: config.matching.scan_cap,
                thermal: config.thresholds,
            },
            failover,
            hash: reload::hash(&config),
            loaded_at: now_ms(),
            pending_restart,
            config,
        }
    }
}

impl Deref for Tuning {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

/// Something outside the hub that follows its settings (the rate limiter, the log filter);
/// called after every reload that was applied.
pub type ReloadHook = Box<dyn Fn(&Tuning) + Send + Sync>;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Whether any setting that applies now changed.
    pub changed: bool,
    pub hash: String,
    pub pending_restart: Vec<String>,
}

impl Hub {
    /// The settings in force now: cheap (no shared counter is touched), but not to be held
    /// across an `.await`; take what is needed out of it first.
    pub fn tuning(&self) -> arc_swap::Guard<Arc<Tuning>> {
        self.tuning.load()
    }

    /// The configuration in force now: [`Hub::tuning`], under the name the HTTP layer reads
    /// it by (a [`Tuning`] derefs to its [`Config`]).
    pub fn config(&self) -> arc_swap::Guard<Arc<Tuning>> {
        self.tuning()
    }

    /// Has `hook` called after every applied reload.
    pub fn on_reload(&self, hook: ReloadHook) {
        self.reload_hooks.lock().push(hook);
    }

    /// Applies `new` (a whole configuration, already validated): scoring, matching, failover
    /// and auth settings take effect for the next request, every score is recomputed at once
    /// under the new weights and thresholds, and the hooks follow. Restart-only settings keep
    /// their running values and are reported in `pending_restart`.
    pub fn reload(&self, new: Config) -> Reloaded {
        let running = self.tuning.load_full();
        let split = reload::split(&running.config, new);
        let changed = split.applied != running.config;
        let tuning = Arc::new(Tuning::new(split.applied, split.pending_restart));
        if changed {
            let operator = (!tuning.auth.admin_token.is_empty())
                .then(|| crate::auth::digest(&tuning.auth.admin_token));
            self.keys.set_operator(operator);
            self.registry.set_thresholds(tuning.thresholds);
        }
        self.tuning.store(tuning.clone());
        if changed {
            // Scores and qualification under the new weights and thresholds, now rather than
            // at the next periodic update.
            self.rescore_all(now_ms());
            for hook in self.reload_hooks.lock().iter() {
                hook(&tuning);
            }
        }
        self.metrics.config_reloads.ok.inc();
        Reloaded {
            changed,
            hash: tuning.hash.clone(),
            pending_restart: tuning.pending_restart.clone(),
        }
    }

    /// Counts a reload refused because the file was invalid (the running settings stay).
    pub fn reload_refused(&self) {
        self.metrics.config_reloads.error.inc();
    }
}
