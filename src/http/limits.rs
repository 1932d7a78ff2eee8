//! Rate limits: a token bucket per (route class, party).
//!
//! Every miner and client reaches the API port, so one party must not be able to crowd out
//! the others: registrations of new addresses are limited per source IP (against squatting
//! and flooding), status updates per miner, matches and outcomes per client key (or per IP
//! when clients are open), admin calls per key. The buckets are governor's GCRA, one keyed
//! limiter per class; a check is a hash lookup and an atomic compare-and-swap, with no lock
//! held across requests.

use crate::config::{Rate, RateLimits};
use crate::domain::Address;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// The classes of route that are limited separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    Register,
    Status,
    Match,
    Outcome,
    Admin,
}

impl RouteClass {
    pub const ALL: [RouteClass; 5] = [
        RouteClass::Register,
        RouteClass::Status,
        RouteClass::Match,
        RouteClass::Outcome,
        RouteClass::Admin,
    ];

    /// The label in `poolhub_rate_limited_total{class}`.
    pub fn label(self) -> &'static str {
        match self {
            RouteClass::Register => "register",
            RouteClass::Status => "status",
            RouteClass::Match => "match",
            RouteClass::Outcome => "outcome",
            RouteClass::Admin => "admin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// governor's quota for a rate; `None` when the rate is 0 (the class is not limited).
fn quota(rate: Rate) -> Option<Quota> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Some(Quota::per_second(per_second).allow_burst(burst))
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Party {
    Ip(IpAddr),
    /// A client or admin key, by its id.
    Key(u64),
    Miner(Address),
}

/// Over the limit: the request may be retried after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header (at least 1: 0 would invite a retry storm).
    pub fn seconds(self) -> u64 {
        (self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)).max(1)
    }
}

/// The buckets of every class.
pub struct Limiter {
    classes: Vec<Option<DefaultKeyedRateLimiter<Party>>>,
    clock: DefaultClock,
}

impl Limiter {
    pub fn new(rates: &RateLimits) -> Self {
        Self {
            classes: RouteClass::ALL
                .iter()
                .map(|c| quota(rates.rate(c.label())).map(RateLimiter::keyed))
                .collect(),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one token from `party`'s bucket for `class`.
    pub fn check(&self, class: RouteClass, party: &Party) -> Result<(), RetryAfter> {
        match self.classes.get(class.index()).and_then(Option::as_ref) {
            None => Ok(()),
            Some(limiter) => limiter
                .check_key(party)
                .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now()))),
        }
    }

    /// Forgets parties whose buckets are full again, so memory follows the active parties,
    /// not every address ever seen. Called periodically.
    pub fn forget_idle(&self) {
        for l in self.classes.iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Parties tracked across all classes.
    pub fn tracked(&self) -> usize {
        self.classes.iter().flatten().map(|l| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn limits(rate: Rate) -> RateLimits {
        RateLimits {
            register: rate,
            status: rate,
            match_: rate,
            outcome: rate,
            admin: rate,
        }
    }

    #[test]
    fn a_party_gets_its_burst_then_is_told_when_to_retry() {
        let l = Limiter::new(&limits(Rate {
            per_second: 1,
            burst: 3,
        }));
        let a = Party::Ip(ip("192.0.2.1"));
        for _ in 0..3 {
            assert_eq!(l.check(RouteClass::Match, &a), Ok(()));
        }
        let retry = l.check(RouteClass::Match, &a).expect_err("over the burst");
        assert!(retry.0 <= Duration::from_secs(1), "{retry:?}");
        assert_eq!(retry.seconds(), 1);
        // Other parties and other classes have their own buckets.
        assert_eq!(
            l.check(RouteClass::Match, &Party::Ip(ip("192.0.2.2"))),
            Ok(())
        );
        assert_eq!(l.check(RouteClass::Status, &a), Ok(()));
        assert_eq!(l.check(RouteClass::Match, &Party::Key(7)), Ok(()));
        assert_eq!(l.tracked(), 4);
    }

    #[test]
    fn a_zero_rate_turns_the_class_off() {
        let l = Limiter::new(&limits(Rate {
            per_second: 0,
            burst: 0,
        }));
        let a = Party::Key(1);
        for _ in 0..10_000 {
            assert_eq!(l.check(RouteClass::Admin, &a), Ok(()));
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn retry_after_is_a_whole_second_or_more() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).seconds(), 1);
        assert_eq!(RetryAfter(Duration::ZERO).seconds(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1500)).seconds(), 2);
        assert_eq!(RetryAfter(Duration::from_secs(3)).seconds(), 3);
    }
}
