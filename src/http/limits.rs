//! Rate limits: a token bucket per (route class, party), and the party's source address
//! behind a trusted proxy.
//!
//! Every miner and client reaches the API port, so one party must not be able to crowd out
//! the others: registrations of new addresses are limited per source IP (against squatting
//! and flooding), status updates per miner, matches and outcomes per client key (or per IP
//! when clients are open), admin calls per key. The buckets are governor's GCRA, one keyed
//! limiter per class; a check is a hash lookup and an atomic compare-and-swap, with no lock
//! held across requests.

use crate::domain::Address;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
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

/// One class's bucket: a sustained rate and the burst allowed above it. A rate of 0 turns the
/// class's limit off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests allowed at once before the sustained rate applies.
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

/// Per-class rates (the `[auth.rate_limits]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Registrations of new addresses and identity challenges, per source IP.
    pub register: Rate,
    /// Status updates, per miner.
    pub status: Rate,
    /// Match requests, per client key (per source IP when clients are open).
    pub r#match: Rate,
    /// Outcome reports, per client key (per source IP when clients are open).
    pub outcome: Rate,
    /// Admin calls, per source IP.
    pub admin: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            register: Rate {
                per_second: 2,
                burst: 20,
            },
            status: Rate {
                per_second: 5,
                burst: 20,
            },
            r#match: Rate {
                per_second: 5_000,
                burst: 10_000,
            },
            outcome: Rate {
                per_second: 10_000,
                burst: 20_000,
            },
            admin: Rate {
                per_second: 10,
                burst: 50,
            },
        }
    }
}

impl RateLimits {
    fn rate(&self, class: RouteClass) -> Rate {
        match class {
            RouteClass::Register => self.register,
            RouteClass::Status => self.status,
            RouteClass::Match => self.r#match,
            RouteClass::Outcome => self.outcome,
            RouteClass::Admin => self.admin,
        }
    }
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
                .map(|c| rates.rate(*c).quota().map(RateLimiter::keyed))
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

/// A network (address and prefix length), as `server.trusted_proxies` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            // An IPv4 client seen through a dual-stack socket.
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// nearest address in `X-Forwarded-For` that is not itself a trusted proxy. A client cannot
/// pick its own address by sending the header: an untrusted peer's header is ignored, and
/// entries left of the first untrusted hop are never read.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut current = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                current = ip;
                if !is_trusted(ip) {
                    return ip;
                }
            }
            // A garbled entry: stop at the last address a trusted hop vouched for.
            Err(_) => return current,
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn limits(rate: Rate) -> RateLimits {
        RateLimits {
            register: rate,
            status: rate,
            r#match: rate,
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

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "v4-mapped v6");
        let one: Cidr = "127.0.0.1".parse().expect("single address");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains(ip("203.0.113.9")));
        let v6: Cidr = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let peer_proxy = ip("10.0.0.5");
        let outsider = ip("198.51.100.7");
        // An untrusted peer cannot choose its address.
        assert_eq!(client_ip(outsider, Some("1.2.3.4"), &trusted), outsider);
        // Through the proxy: the nearest untrusted hop, not the spoofable leftmost one.
        assert_eq!(
            client_ip(peer_proxy, Some("6.6.6.6, 203.0.113.9, 10.0.0.9"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(peer_proxy, None, &trusted), peer_proxy);
        assert_eq!(
            client_ip(peer_proxy, Some("garbage, 10.0.0.9"), &trusted),
            ip("10.0.0.9")
        );
        // No trusted proxies configured: the header is never read.
        assert_eq!(client_ip(peer_proxy, Some("1.2.3.4"), &[]), peer_proxy);
    }
}
