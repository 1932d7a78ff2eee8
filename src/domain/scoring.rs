//! The scoring engine: pure functions from a miner's history to its score.
//!
//! ```text
//! score = max_score * ( w_s * success_rate + w_l * latency_score
//!                     + w_a * availability + w_r * reputation )
//! ```
//! Every factor lies in [0, 1] and the weights sum to 1, so the score lies in [0, max_score].
//! History is kept as *decayed* sums: every count is multiplied by `decay_factor` per day of
//! age, applied continuously (`decay_factor ^ (age / 1 day)`), so yesterday's failure weighs
//! 0.95 of today's and a month-old one about 0.2. Priors are pseudo-observations added to the
//! decayed sums, so a new miner starts from the priors and its own record takes over as it
//! accumulates. Nothing here reads a clock or does I/O: `now` is always an argument.

use serde::{Deserialize, Serialize};

/// One day in milliseconds: the unit of `decay_factor`.
pub const DAY_MS: f64 = 86_400_000.0;

/// The four weights; validated by the config to be non-negative and sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub success_rate: f64,
    pub latency: f64,
    pub availability: f64,
    pub reputation: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            success_rate: 0.4,
            latency: 0.25,
            availability: 0.2,
            reputation: 0.15,
        }
    }
}

/// Minimums a miner must meet to be matched at all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub min_success_rate: f64,
    /// Milliseconds. Also the latency at which `latency_score` reaches 0.
    pub max_latency: f64,
    pub min_availability: f64,
    /// Decayed job outcomes a miner needs before the success-rate and latency thresholds
    /// apply. Below it, one unlucky early job cannot lock a new miner out for days (it could
    /// never earn the record that would let it back in); failover cooldowns still apply.
    pub min_jobs: f64,
    /// °C. A miner whose last status reports a hotter GPU is not matched: it is about to
    /// throttle, or to fail the job.
    pub max_temperature: f64,
    /// °C. Above this a miner's score is derated (see [`thermal_factor`]), so cooler miners
    /// of equal record are preferred before one reaches `max_temperature`.
    pub derate_temperature: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_success_rate: 0.8,
            max_latency: 5000.0,
            min_availability: 0.95,
            min_jobs: 10.0,
            max_temperature: 90.0,
            derate_temperature: 80.0,
        }
    }
}

/// The factor a miner's score is multiplied by at match time for its GPU temperature:
/// 1 up to `derate_temperature`, then falling linearly to 0.5 at `max_temperature` (and
/// staying there; hotter miners are filtered out anyway). A miner that reports no
/// temperature is not derated. Gentle on purpose: a 5 °C step costs a quarter of the score
/// at most, so a warm miner with a much better record still wins.
pub fn thermal_factor(temperature: Option<f64>, t: &Thresholds) -> f64 {
    let Some(temp) = temperature.filter(|v| v.is_finite()) else {
        return 1.0;
    };
    if temp <= t.derate_temperature {
        return 1.0;
    }
    let span = (t.max_temperature - t.derate_temperature).max(f64::EPSILON);
    (1.0 - 0.5 * (temp - t.derate_temperature) / span).clamp(0.5, 1.0)
}

/// Whether a miner's last reported temperature is over `max_temperature`.
pub fn too_hot(temperature: Option<f64>, t: &Thresholds) -> bool {
    temperature.is_some_and(|v| v > t.max_temperature)
}

/// Where a miner without history starts, and how fast its own record takes over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Priors {
    /// Assumed success rate before any outcome; must pass `min_success_rate` or no new miner
    /// would ever receive its first job.
    pub success_rate: f64,
    /// Assumed average latency (ms) before any outcome.
    pub latency_ms: f64,
    /// Assumed availability before any sample.
    pub availability: f64,
    /// How many job outcomes the success-rate and latency priors are worth.
    pub weight: f64,
    /// How many availability samples the availability prior is worth (60 = one hour at the
    /// default update_interval), so one missed sample does not sink a new miner.
    pub availability_weight: f64,
    /// Stake at which the stake half of reputation reaches 0.5.
    pub stake_half: f64,
    /// Decayed successful jobs at which the track-record half of reputation reaches 0.5.
    pub experience_half: f64,
}

impl Default for Priors {
    fn default() -> Self {
        Self {
            success_rate: 0.9,
            latency_ms: 1000.0,
            availability: 1.0,
            weight: 5.0,
            availability_weight: 60.0,
            stake_half: 10_000.0,
            experience_half: 100.0,
        }
    }
}

/// Everything the scoring functions need from configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoringParams {
    pub weights: Weights,
    pub thresholds: Thresholds,
    pub priors: Priors,
    /// Fraction of weight history keeps per day.
    pub decay_factor: f64,
    pub max_score: f64,
}

impl Default for ScoringParams {
    fn default() -> Self {
        Self {
            weights: Weights::default(),
            thresholds: Thresholds::default(),
            priors: Priors::default(),
            decay_factor: 0.95,
            max_score: 1.0,
        }
    }
}

/// How much history keeps from `from_ms` to `to_ms`; 1 when time did not move forward.
pub fn decay_multiplier(decay_factor: f64, from_ms: u64, to_ms: u64) -> f64 {
    if to_ms <= from_ms {
        return 1.0;
    }
    decay_factor.powf((to_ms - from_ms) as f64 / DAY_MS)
}

/// Job-outcome history of one miner. Durable: updated only together with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MinerStats {
    /// Decayed count of successful jobs.
    pub successes: f64,
    /// Decayed count of failed jobs.
    pub failures: f64,
    /// Decayed sum of reported latencies (ms) and their decayed count.
    pub latency_sum_ms: f64,
    pub latency_count: f64,
    /// Failures since the last success; drives the failover cooldown.
    pub consecutive_failures: u32,
    /// Unix ms of the last failure (0 if none).
    pub last_failure_at: u64,
    /// Lifetime totals, not decayed, for operators.
    pub jobs_total: u64,
    pub jobs_succeeded: u64,
    pub jobs_failed: u64,
    /// Unix ms at which the decayed sums are current.
    pub as_of: u64,
}

/// A job outcome as the scoring engine sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutcomeSample {
    pub success: bool,
    /// Milliseconds the job took, when the client measured it.
    pub latency_ms: Option<f64>,
    pub at: u64,
}

impl MinerStats {
    /// The same history aged to `now`.
    pub fn decayed_to(&self, now: u64, decay_factor: f64) -> Self {
        let m = decay_multiplier(decay_factor, self.as_of, now);
        Self {
            successes: self.successes * m,
            failures: self.failures * m,
            latency_sum_ms: self.latency_sum_ms * m,
            latency_count: self.latency_count * m,
            as_of: self.as_of.max(now),
            ..*self
        }
    }

    /// History after one more outcome.
    pub fn with_outcome(&self, o: OutcomeSample, decay_factor: f64) -> Self {
        let mut s = self.decayed_to(o.at, decay_factor);
        s.jobs_total += 1;
        if o.success {
            s.successes += 1.0;
            s.jobs_succeeded += 1;
            s.consecutive_failures = 0;
        } else {
            s.failures += 1.0;
            s.jobs_failed += 1;
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            s.last_failure_at = s.last_failure_at.max(o.at);
        }
        if let Some(l) = o.latency_ms {
            s.latency_sum_ms += l;
            s.latency_count += 1.0;
        }
        s
    }
}

/// Uptime history: decayed count of heartbeat samples, and of those in which it was online.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Availability {
    pub up: f64,
    pub total: f64,
    pub as_of: u64,
}

impl Availability {
    /// History after one more sample taken at `now`.
    pub fn with_sample(&self, online: bool, now: u64, decay_factor: f64) -> Self {
        let m = decay_multiplier(decay_factor, self.as_of, now);
        Self {
            up: self.up * m + if online { 1.0 } else { 0.0 },
            total: self.total * m + 1.0,
            as_of: self.as_of.max(now),
        }
    }
}

/// The four factors, each in [0, 1], plus what they came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Factors {
    pub success_rate: f64,
    pub latency: f64,
    pub availability: f64,
    pub reputation: f64,
    /// Prior-smoothed average latency in ms.
    pub avg_latency_ms: f64,
    /// Decayed number of job outcomes behind the success rate.
    pub jobs: f64,
}

/// A score and the factors it was made of.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    pub value: f64,
    pub factors: Factors,
}

fn unit(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// The factors of a miner at `now`.
pub fn factors(
    stats: &MinerStats,
    avail: &Availability,
    stake: u64,
    now: u64,
    p: &ScoringParams,
) -> Factors {
    let s = stats.decayed_to(now, p.decay_factor);
    let a_m = decay_multiplier(p.decay_factor, avail.as_of, now);
    let w = p.priors.weight;

    let success_rate =
        unit((s.successes + w * p.priors.success_rate) / (s.successes + s.failures + w));
    let avg_latency_ms =
        (s.latency_sum_ms + w * p.priors.latency_ms) / (s.latency_count + w).max(f64::EPSILON);
    let latency = unit(1.0 - avg_latency_ms / p.thresholds.max_latency);
    let aw = p.priors.availability_weight;
    let availability =
        unit((avail.up * a_m + aw * p.priors.availability) / (avail.total * a_m + aw));
    let stake = stake as f64;
    let stake_part = stake / (stake + p.priors.stake_half);
    let track = s.successes / (s.successes + s.failures + p.priors.experience_half);
    let reputation = unit(0.5 * stake_part + 0.5 * track);

    Factors {
        success_rate,
        latency,
        availability,
        reputation,
        avg_latency_ms: avg_latency_ms.max(0.0),
        jobs: s.successes + s.failures,
    }
}

/// The weighted score of a set of factors, in [0, max_score].
pub fn score_of(f: Factors, p: &ScoringParams) -> Score {
    let w = &p.weights;
    let raw = w.success_rate * f.success_rate
        + w.latency * f.latency
        + w.availability * f.availability
        + w.reputation * f.reputation;
    let value = if raw.is_nan() {
        0.0
    } else {
        (raw * p.max_score).clamp(0.0, p.max_score)
    };
    Score { value, factors: f }
}

/// Score of a miner at `now`.
pub fn score(
    stats: &MinerStats,
    avail: &Availability,
    stake: u64,
    now: u64,
    p: &ScoringParams,
) -> Score {
    score_of(factors(stats, avail, stake, now, p), p)
}

/// Whether a miner meets the configured minimums. Success rate and latency are judged only
/// once `min_jobs` outcomes of evidence exist; availability always.
pub fn passes_thresholds(f: &Factors, t: &Thresholds) -> bool {
    failed_threshold(f, t).is_none()
}

/// The first threshold a miner fails: its name as in `[thresholds]`, the miner's value and
/// the limit (what "why not my miner?" answers).
pub fn failed_threshold(f: &Factors, t: &Thresholds) -> Option<(&'static str, f64, f64)> {
    // Each test is "meets it", so a NaN fails rather than slips through.
    let available = f.availability >= t.min_availability;
    if !available {
        return Some(("min_availability", f.availability, t.min_availability));
    }
    if f.jobs < t.min_jobs {
        return None;
    }
    let succeeds = f.success_rate >= t.min_success_rate;
    if !succeeds {
        return Some(("min_success_rate", f.success_rate, t.min_success_rate));
    }
    let fast = f.avg_latency_ms <= t.max_latency;
    if !fast {
        return Some(("max_latency", f.avg_latency_ms, t.max_latency));
    }
    None
}

/// Failover policy: consecutive failures cool a miner down with an escalating backoff.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverParams {
    /// Consecutive failures that start a cooldown.
    pub failure_threshold: u32,
    /// First cooldown, seconds; doubles with each further failure.
    pub base_cooldown: u64,
    /// Longest cooldown, seconds.
    pub max_cooldown: u64,
    /// Below this fraction of healthy candidates, cooled-down miners are matched anyway, so a
    /// wave of failures can never take every miner out at once (Envoy's panic threshold).
    pub panic_threshold: f64,
}

impl Default for FailoverParams {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            base_cooldown: 10,
            max_cooldown: 600,
            panic_threshold: 0.5,
        }
    }
}

/// Unix ms until which the miner is cooled down (0 when it is not).
pub fn cooldown_until(stats: &MinerStats, f: &FailoverParams) -> u64 {
    if f.failure_threshold == 0 || stats.consecutive_failures < f.failure_threshold {
        return 0;
    }
    let doublings = (stats.consecutive_failures - f.failure_threshold).min(32);
    let secs = f
        .base_cooldown
        .saturating_mul(1u64 << doublings)
        .min(f.max_cooldown);
    stats
        .last_failure_at
        .saturating_add(secs.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000_000;

    fn outcome(success: bool, latency: f64, at: u64) -> OutcomeSample {
        OutcomeSample {
            success,
            latency_ms: Some(latency),
            at,
        }
    }

    #[test]
    fn new_miner_starts_from_priors_and_passes_thresholds() {
        let p = ScoringParams::default();
        let s = score(&MinerStats::default(), &Availability::default(), 0, NOW, &p);
        assert!((s.factors.success_rate - 0.9).abs() < 1e-9);
        assert!((s.factors.latency - 0.8).abs() < 1e-9);
        assert!((s.factors.availability - 1.0).abs() < 1e-9);
        assert_eq!(s.factors.reputation, 0.0);
        assert!((s.value - (0.36 + 0.2 + 0.2)).abs() < 1e-9);
        assert!(passes_thresholds(&s.factors, &p.thresholds));
    }

    #[test]
    fn failures_lower_and_successes_raise_the_score() {
        let p = ScoringParams::default();
        let base = score(&MinerStats::default(), &Availability::default(), 0, NOW, &p).value;
        let mut good = MinerStats::default();
        let mut bad = MinerStats::default();
        for i in 0..20 {
            good = good.with_outcome(outcome(true, 300.0, NOW + i), p.decay_factor);
            bad = bad.with_outcome(outcome(false, 4000.0, NOW + i), p.decay_factor);
        }
        let av = Availability::default();
        let g = score(&good, &av, 0, NOW + 100, &p);
        let b = score(&bad, &av, 0, NOW + 100, &p);
        assert!(
            g.value > base && base > b.value,
            "{} {} {}",
            g.value,
            base,
            b.value
        );
        assert!(!passes_thresholds(&b.factors, &p.thresholds));
        assert_eq!(bad.consecutive_failures, 20);
        assert_eq!(good.jobs_succeeded, 20);
    }

    #[test]
    fn one_early_failure_does_not_lock_a_new_miner_out() {
        let p = ScoringParams::default();
        let av = Availability::default();
        let s = MinerStats::default().with_outcome(outcome(false, 800.0, NOW), p.decay_factor);
        let f = factors(&s, &av, 0, NOW, &p);
        assert!(f.success_rate < p.thresholds.min_success_rate);
        assert!(
            passes_thresholds(&f, &p.thresholds),
            "too little evidence to judge"
        );
        // One missed availability sample does not either.
        let a = av.with_sample(false, NOW, p.decay_factor);
        let f = factors(&MinerStats::default(), &a, 0, NOW, &p);
        assert!(
            passes_thresholds(&f, &p.thresholds),
            "availability {}",
            f.availability
        );
    }

    #[test]
    fn decay_is_continuous_and_daily() {
        let m = decay_multiplier(0.95, 0, DAY_MS as u64);
        assert!((m - 0.95).abs() < 1e-12);
        let half = decay_multiplier(0.95, 0, DAY_MS as u64 / 2);
        assert!((half * half - 0.95).abs() < 1e-12);
        assert_eq!(decay_multiplier(0.95, 10, 5), 1.0);
        let s = MinerStats::default().with_outcome(outcome(false, 1.0, 0), 0.95);
        let later = s.decayed_to(10 * DAY_MS as u64, 0.95);
        assert!((later.failures - 0.95f64.powi(10)).abs() < 1e-9);
        assert_eq!(later.jobs_failed, 1, "lifetime totals never decay");
    }

    #[test]
    fn old_failures_fade_back_towards_the_prior() {
        let p = ScoringParams::default();
        let mut s = MinerStats::default();
        for i in 0..10 {
            s = s.with_outcome(outcome(false, 1000.0, NOW + i), p.decay_factor);
        }
        let av = Availability::default();
        let now = factors(&s, &av, 0, NOW + 10, &p).success_rate;
        let later = factors(&s, &av, 0, NOW + 100 * DAY_MS as u64, &p).success_rate;
        assert!(later > now && later <= p.priors.success_rate + 1e-9);
    }

    #[test]
    fn cooldown_escalates_and_is_capped() {
        let f = FailoverParams::default();
        let mut s = MinerStats {
            last_failure_at: NOW,
            ..Default::default()
        };
        s.consecutive_failures = 2;
        assert_eq!(cooldown_until(&s, &f), 0);
        s.consecutive_failures = 3;
        assert_eq!(cooldown_until(&s, &f), NOW + 10_000);
        s.consecutive_failures = 4;
        assert_eq!(cooldown_until(&s, &f), NOW + 20_000);
        s.consecutive_failures = 200;
        assert_eq!(cooldown_until(&s, &f), NOW + 600_000);
    }

    fn arb_params() -> impl Strategy<Value = ScoringParams> {
        (
            0.0f64..1.0,
            0.0f64..1.0,
            0.0f64..1.0,
            0.0f64..1.0,
            0.5f64..1.0,
            0.1f64..100.0,
        )
            .prop_filter_map("weights sum > 0", |(a, b, c, d, decay, max)| {
                let sum = a + b + c + d;
                (sum > 1e-6).then(|| ScoringParams {
                    weights: Weights {
                        success_rate: a / sum,
                        latency: b / sum,
                        availability: c / sum,
                        reputation: d / sum,
                    },
                    decay_factor: decay,
                    max_score: max,
                    ..Default::default()
                })
            })
    }

    #[test]
    fn the_thermal_factor_is_one_until_derate_then_falls_to_a_half_at_the_maximum() {
        let t = Thresholds::default();
        assert_eq!(thermal_factor(None, &t), 1.0);
        assert_eq!(thermal_factor(Some(60.0), &t), 1.0);
        assert_eq!(thermal_factor(Some(80.0), &t), 1.0);
        assert!((thermal_factor(Some(85.0), &t) - 0.75).abs() < 1e-12);
        assert!((thermal_factor(Some(90.0), &t) - 0.5).abs() < 1e-12);
        assert_eq!(thermal_factor(Some(120.0), &t), 0.5);
        assert_eq!(thermal_factor(Some(f64::NAN), &t), 1.0);
        assert!(!too_hot(Some(90.0), &t) && too_hot(Some(90.5), &t) && !too_hot(None, &t));
    }

    #[test]
    fn the_failed_threshold_is_named_with_value_and_limit() {
        let t = Thresholds::default();
        let mut f = Factors {
            success_rate: 0.9,
            latency: 0.5,
            availability: 0.99,
            reputation: 0.5,
            avg_latency_ms: 100.0,
            jobs: 50.0,
        };
        assert_eq!(failed_threshold(&f, &t), None);
        f.success_rate = 0.5;
        assert_eq!(
            failed_threshold(&f, &t),
            Some(("min_success_rate", 0.5, 0.8))
        );
        f.jobs = 1.0; // too little evidence to judge the success rate
        assert_eq!(failed_threshold(&f, &t), None);
        f.availability = f64::NAN;
        assert_eq!(
            failed_threshold(&f, &t).map(|x| x.0),
            Some("min_availability")
        );
    }

    proptest! {
        #[test]
        fn the_thermal_factor_stays_in_range_and_never_rises_with_heat(
            a in -50.0f64..200.0, b in -50.0f64..200.0,
        ) {
            let t = Thresholds::default();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (fl, fh) = (thermal_factor(Some(lo), &t), thermal_factor(Some(hi), &t));
            prop_assert!((0.5..=1.0).contains(&fl) && (0.5..=1.0).contains(&fh));
            prop_assert!(fh <= fl);
        }
    }

    proptest! {
        #[test]
        fn score_is_always_within_range(
            p in arb_params(),
            outcomes in proptest::collection::vec((any::<bool>(), 0.0f64..1e7, 0u64..(400 * DAY_MS as u64)), 0..60),
            samples in proptest::collection::vec((any::<bool>(), 0u64..(400 * DAY_MS as u64)), 0..60),
            stake in any::<u64>(),
            now in 0u64..(800 * DAY_MS as u64),
        ) {
            let mut s = MinerStats::default();
            for (ok, lat, at) in outcomes {
                s = s.with_outcome(OutcomeSample { success: ok, latency_ms: Some(lat), at }, p.decay_factor);
            }
            let mut a = Availability::default();
            for (up, at) in samples {
                a = a.with_sample(up, at, p.decay_factor);
            }
            let sc = score(&s, &a, stake, now, &p);
            prop_assert!(sc.value >= 0.0 && sc.value <= p.max_score, "score {}", sc.value);
            for f in [sc.factors.success_rate, sc.factors.latency, sc.factors.availability, sc.factors.reputation] {
                prop_assert!((0.0..=1.0).contains(&f));
            }
        }

        #[test]
        fn one_more_success_never_lowers_the_success_rate(
            n_ok in 0u32..50, n_fail in 0u32..50,
        ) {
            let p = ScoringParams::default();
            let mut s = MinerStats::default();
            for i in 0..n_ok { s = s.with_outcome(outcome(true, 100.0, NOW + u64::from(i)), p.decay_factor); }
            for i in 0..n_fail { s = s.with_outcome(outcome(false, 100.0, NOW + 100 + u64::from(i)), p.decay_factor); }
            let av = Availability::default();
            let before = factors(&s, &av, 0, NOW + 1000, &p);
            let after = factors(&s.with_outcome(outcome(true, 100.0, NOW + 1000), p.decay_factor), &av, 0, NOW + 1000, &p);
            prop_assert!(after.success_rate >= before.success_rate - 1e-12);
            prop_assert!(after.reputation >= before.reputation - 1e-12);
        }

        #[test]
        fn more_stake_never_lowers_reputation(a in any::<u32>(), b in any::<u32>()) {
            let p = ScoringParams::default();
            let (lo, hi) = (u64::from(a.min(b)), u64::from(a.max(b)));
            let s = MinerStats::default();
            let av = Availability::default();
            prop_assert!(factors(&s, &av, hi, NOW, &p).reputation >= factors(&s, &av, lo, NOW, &p).reputation);
        }
    }
}
