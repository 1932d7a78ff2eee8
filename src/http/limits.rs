//! Rate limits: a token bucket per (route class, party), and the layer that applies them.
//!
//! Every miner and client reaches the API port, so one party must not be able to crowd out
//! the others: registrations of new addresses are limited per source IP (against squatting
//! and flooding), status updates per miner, matches and outcomes per client key (or per IP
//! when no valid key is given), admin calls per source IP. The buckets are governor's GCRA,
//! one keyed limiter per class; a check is a hash lookup and an atomic compare-and-swap, with
//! no lock held across requests.
//!
//! The source IP is the peer's address, or, only when the peer is one of
//! `server.trusted_proxies`, the nearest untrusted hop in its `X-Forwarded-For`
//! ([`crate::net::client_ip`]): a client cannot choose the bucket it is counted in.
//!
//! Reads (`GET` outside the admin API), `/health` and `/metrics` are never limited: they change
//! nothing, and an operator's dashboards must keep working while a flood is refused.

use super::extract::bearer;
use super::ApiError;
use crate::auth::Caller;
use crate::config::{Rate, RateLimits};
use crate::domain::Address;
use crate::hub::Hub;
use crate::net::{client_ip, Cidr};
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often idle parties are forgotten: often enough that memory follows the active
/// parties, rarely enough that the sweep (a pass over every bucket) costs nothing.
pub const FORGET_EVERY: Duration = Duration::from_secs(10);

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

/// One class's buckets, with the rate they were made for.
struct ClassBuckets {
    rate: Rate,
    buckets: DefaultKeyedRateLimiter<Party>,
}

/// The buckets of every class (`None`: the class is not limited). A reload swaps in new
/// buckets for the classes whose rate changed; the others keep theirs, and with them what
/// each party has used.
pub struct Limiter {
    classes: ArcSwap<Vec<Option<Arc<ClassBuckets>>>>,
    clock: DefaultClock,
}

impl Limiter {
    pub fn new(rates: &RateLimits) -> Self {
        let none = vec![None; RouteClass::ALL.len()];
        Self {
            classes: ArcSwap::from_pointee(Self::classes(rates, &none)),
            clock: DefaultClock::default(),
        }
    }

    fn classes(
        rates: &RateLimits,
        old: &[Option<Arc<ClassBuckets>>],
    ) -> Vec<Option<Arc<ClassBuckets>>> {
        RouteClass::ALL
            .iter()
            .map(|c| {
                let rate = rates.rate(c.label());
                match old.get(c.index()).cloned().flatten() {
                    Some(kept) if kept.rate == rate => Some(kept),
                    _ => quota(rate).map(|q| {
                        Arc::new(ClassBuckets {
                            rate,
                            buckets: RateLimiter::keyed(q),
                        })
                    }),
                }
            })
            .collect()
    }

    /// Applies reloaded rates: classes whose rate changed start with fresh buckets.
    pub fn reconfigure(&self, rates: &RateLimits) {
        let old = self.classes.load_full();
        self.classes.store(Arc::new(Self::classes(rates, &old)));
    }

    /// Whether `class` is limited at all (`per_second > 0`): when it is not, the layer does
    /// not even work out the party.
    pub fn limits(&self, class: RouteClass) -> bool {
        self.classes
            .load()
            .get(class.index())
            .is_some_and(|l| l.is_some())
    }

    /// Takes one token from `party`'s bucket for `class`.
    pub fn check(&self, class: RouteClass, party: &Party) -> Result<(), RetryAfter> {
        let classes = self.classes.load();
        match classes.get(class.index()).and_then(Option::as_ref) {
            None => Ok(()),
            Some(c) => c
                .buckets
                .check_key(party)
                .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now()))),
        }
    }

    /// Forgets parties whose buckets are full again, so memory follows the active parties,
    /// not every address ever seen. Called periodically.
    pub fn forget_idle(&self) {
        for c in self.classes.load().iter().flatten() {
            c.buckets.retain_recent();
            c.buckets.shrink_to_fit();
        }
    }

    /// Parties tracked across all classes.
    pub fn tracked(&self) -> usize {
        self.classes
            .load()
            .iter()
            .flatten()
            .map(|c| c.buckets.len())
            .sum()
    }
}

/// Calls [`Limiter::forget_idle`] every `every` ([`FORGET_EVERY`] in the server) until
/// `cancel` fires, on the server's background tracker (so shutdown waits for it like for the
/// hub's own tasks), and shows how many parties remain in `parties`
/// (`poolhub_rate_limit_parties`).
pub fn spawn_forgetting(
    limiter: Arc<Limiter>,
    every: Duration,
    parties: prometheus::IntGauge,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    limiter.forget_idle();
                    let n = limiter.tracked();
                    parties.set(i64::try_from(n).unwrap_or(i64::MAX));
                    tracing::debug!(parties = n, "rate limits: idle parties forgotten");
                }
                () = cancel.cancelled() => break,
            }
        }
    });
}

/// The caller the rate-limit layer resolved from a match's or outcome's bearer (`None`: no
/// bearer, or one that is no live key), left in the request's extensions so that
/// [`ClientCaller`](super::auth::ClientCaller) does not hash the same key a second time.
#[derive(Debug, Clone)]
pub struct KnownCaller(pub Option<Caller>);

/// What a limited route is, before its party is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `POST /api/v1/miners/register` (by address) or AITBC's `POST /v1/miners/register`
    /// (by name): counted only when the miner is new.
    Registration { by_name: bool },
    /// A route counted per source IP in `class` (identity challenges and token recovery in
    /// the register class; the admin API).
    PerIp(RouteClass),
    /// A miner's status update: per miner.
    Status,
    /// Match or outcome: per client key, else per source IP.
    PerClient(RouteClass),
}

impl Kind {
    fn class(self) -> RouteClass {
        match self {
            Kind::Registration { .. } => RouteClass::Register,
            Kind::PerIp(c) | Kind::PerClient(c) => c,
            Kind::Status => RouteClass::Status,
        }
    }
}

/// The limited class of a request, by its method and matched route (the route template, so
/// the identity routes are recognised whatever their parameter is called).
fn classify(method: &Method, route: &str) -> Option<Kind> {
    if route == "/api/v1/admin" || route.starts_with("/api/v1/admin/") {
        // Every admin call, reads included: each one is an attempt at the admin secret.
        return Some(Kind::PerIp(RouteClass::Admin));
    }
    let tail = route
        .strip_prefix("/api/v1/miners/")
        .and_then(|r| r.split_once('/'))
        .map(|(_, tail)| tail);
    // Challenges and token recovery mint nonces and tokens whatever the method.
    if matches!(tail, Some("challenge" | "token")) {
        return Some(Kind::PerIp(RouteClass::Register));
    }
    if method != Method::POST {
        return None;
    }
    match route {
        "/api/v1/miners/register" => Some(Kind::Registration { by_name: false }),
        "/v1/miners/register" => Some(Kind::Registration { by_name: true }),
        "/v1/miners/heartbeat" => Some(Kind::Status),
        "/api/v1/match" | "/api/v1/match/explain" | "/v1/match" => {
            Some(Kind::PerClient(RouteClass::Match))
        }
        "/api/v1/outcomes" => Some(Kind::PerClient(RouteClass::Outcome)),
        _ if tail == Some("status") => Some(Kind::Status),
        _ => None,
    }
}

/// The state of the rate-limit layer.
#[derive(Clone)]
pub struct Enforcer {
    hub: Arc<Hub>,
    limiter: Arc<Limiter>,
    trusted: Arc<[Cidr]>,
    max_body: usize,
}

impl Enforcer {
    pub fn new(hub: Arc<Hub>, limiter: Arc<Limiter>) -> Self {
        let server = &hub.config().server;
        // Validated at start-up (`server.trusted_proxies`), so nothing is dropped here.
        let trusted = server
            .trusted_proxies
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        let max_body = server.max_body_bytes;
        Self {
            hub,
            limiter,
            trusted,
            max_body,
        }
    }

    /// The client's address: the peer's, or the one a trusted proxy forwarded for.
    fn source_ip(&self, req: &Request) -> IpAddr {
        // The accept loop always inserts the peer; a router driven in-process has none, and
        // all such callers share one bucket rather than escaping the limits.
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        self.source_ip_of(peer, req.headers())
    }

    /// [`Enforcer::source_ip`] from the peer and the headers alone.
    fn source_ip_of(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        if self.trusted.is_empty() {
            return peer;
        }
        let headers = headers.get_all("x-forwarded-for");
        let mut values = headers.iter().filter_map(|v| v.to_str().ok());
        match (values.next(), values.next()) {
            (None, _) => peer,
            (Some(one), None) => client_ip(peer, Some(one), &self.trusted),
            // Several header lines are one list (RFC 9110 5.3), nearest hop last.
            (Some(_), Some(_)) => {
                let joined = headers
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect::<Vec<_>>()
                    .join(",");
                client_ip(peer, Some(&joined), &self.trusted)
            }
        }
    }

    /// A match or outcome is counted against the caller's key when the bearer is a live key,
    /// so clients behind one address (or one proxy) do not share a bucket; otherwise against
    /// the source address.
    fn client_party(&self, headers: &HeaderMap, ip: IpAddr) -> (Party, KnownCaller) {
        let caller = bearer(headers).and_then(|t| self.hub.keys().caller(t));
        let party = caller
            .as_ref()
            .and_then(Caller::key_id)
            .map_or(Party::Ip(ip), Party::Key);
        (party, KnownCaller(caller))
    }

    /// A status update is counted against its miner only when it carries the miner's token;
    /// anything else (no token, a wrong one, an unknown address) against the source address,
    /// so a stranger cannot use up a miner's allowance and silence its heartbeats.
    fn status_party(&self, path: &str, headers: &HeaderMap, ip: IpAddr) -> Party {
        if path == "/v1/miners/heartbeat" {
            // AITBC's heartbeat names no miner: its key does (through the index).
            return super::aitbc::miner_key(headers)
                .and_then(|k| self.hub.named_miner(k).ok())
                .map_or(Party::Ip(ip), Party::Miner);
        }
        let address = path
            .strip_prefix("/api/v1/miners/")
            .and_then(|r| r.strip_suffix("/status"))
            .and_then(|a| super::extract::miner_in_path(a).ok());
        match (address, bearer(headers)) {
            (Some(a), Some(t)) if self.hub.holds_token(&a, t) => Party::Miner(a),
            _ => Party::Ip(ip),
        }
    }

    /// Takes one request from `party`'s bucket of `class`, or says (and counts) that the
    /// party is over its limit.
    fn take(&self, class: RouteClass, party: &Party) -> Result<(), TooMany> {
        self.limiter.check(class, party).map_err(|retry| {
            self.hub
                .metrics()
                .rate_limited_total
                .with_label_values(&[class.label()])
                .inc();
            tracing::debug!(class = class.label(), "rate limited");
            TooMany(class, retry)
        })
    }

    /// The limit of a status update served without the router (`http::fast`): the same
    /// class and party as [`enforce`] gives it.
    pub(super) fn admit_status(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<(), TooMany> {
        if !self.limiter.limits(RouteClass::Status) {
            return Ok(());
        }
        let ip = bucket_ip(self.source_ip_of(Some(peer), headers));
        self.take(RouteClass::Status, &self.status_party(path, headers, ip))
    }

    /// The limit of a match served without the router (`http::fast`), as [`enforce`] applies
    /// it; the caller it looked up, if it did, so the key is not hashed twice.
    pub(super) fn admit_match(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<Option<KnownCaller>, TooMany> {
        if !self.limiter.limits(RouteClass::Match) {
            return Ok(None);
        }
        let ip = bucket_ip(self.source_ip_of(Some(peer), headers));
        let (party, caller) = self.client_party(headers, ip);
        self.take(RouteClass::Match, &party)?;
        Ok(Some(caller))
    }
}

/// The address a source's bucket is kept under: an IPv6 client by its /64, since one host
/// commonly holds a whole /64 and could otherwise take a fresh bucket for every request; an
/// IPv4 client seen through a dual-stack socket as its IPv4 address.
fn bucket_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        },
    }
}

/// Just the address of a registration body.
#[derive(Deserialize)]
struct ByAddress {
    address: String,
}

/// Just the name of an AITBC registration body.
#[derive(Deserialize)]
struct ByName {
    miner_id: String,
}

/// Reads a registration's body (within `server.max_body_bytes`, like the handler would) to
/// learn its address, and hands the request on rebuilt. `Err` is the answer to give instead.
async fn registration_address(
    req: Request,
    max_body: usize,
    by_name: bool,
) -> Result<(Request, Option<Address>), Response> {
    let (parts, body) = req.into_parts();
    let bytes = super::extract::read_body(body, max_body)
        .await
        .map_err(IntoResponse::into_response)?;
    // A body the handler will refuse (no address, bad JSON) registers nothing: not counted.
    // The field the handler will read, and only that one: a body cannot name a registered
    // address in one field while the handler registers something new from another.
    let address = if by_name {
        serde_json::from_slice::<ByName>(&bytes)
            .ok()
            .map(|n| Address::for_miner_id(&n.miner_id))
    } else {
        serde_json::from_slice::<ByAddress>(&bytes)
            .ok()
            .and_then(|n| n.address.parse().ok())
    };
    Ok((Request::from_parts(parts, Body::from(bytes)), address))
}

/// A party over its limit in a class: answered 429 (see [`too_many`]).
pub(super) struct TooMany(RouteClass, RetryAfter);

impl IntoResponse for TooMany {
    fn into_response(self) -> Response {
        too_many(self.0, self.1)
    }
}

/// The 429 answer: the JSON error and `Retry-After` in whole seconds.
fn too_many(class: RouteClass, retry: RetryAfter) -> Response {
    let seconds = retry.seconds();
    let mut res = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "too many {} requests; retry after {seconds} s (auth.rate_limits.{})",
            class.label(),
            class.label()
        ),
    )
    .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    res
}

/// The rate-limit layer: classifies the request by its matched route, finds its party, and
/// answers 429 when that party's bucket is empty.
pub(super) async fn enforce(State(e): State<Enforcer>, req: Request, next: Next) -> Response {
    let limited = match req.extensions().get::<MatchedPath>() {
        Some(route) => classify(req.method(), route.as_str()),
        None => None,
    };
    let Some(limited) = limited.filter(|k| e.limiter.limits(k.class())) else {
        return next.run(req).await;
    };
    let ip = bucket_ip(e.source_ip(&req));
    let (req, class, party) = match limited {
        Kind::PerIp(class) => (req, class, Party::Ip(ip)),
        Kind::PerClient(class) => {
            let (party, caller) = e.client_party(req.headers(), ip);
            let mut req = req;
            req.extensions_mut().insert(caller);
            (req, class, party)
        }
        Kind::Status => {
            let party = e.status_party(req.uri().path(), req.headers(), ip);
            (req, RouteClass::Status, party)
        }
        Kind::Registration { by_name } => {
            let (req, address) = match registration_address(req, e.max_body, by_name).await {
                Ok(r) => r,
                Err(answer) => return answer,
            };
            match address {
                // Re-registering (or taking over) an address that exists is not a new one.
                Some(a) if !e.hub.is_registered(&a) => (req, RouteClass::Register, Party::Ip(ip)),
                _ => return next.run(req).await,
            }
        }
    };
    if let Err(over) = e.take(class, &party) {
        return over.into_response();
    }
    next.run(req).await
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
    fn routes_are_classified_by_method_and_template() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(
            classify(&post, "/api/v1/match"),
            Some(Kind::PerClient(RouteClass::Match))
        );
        assert_eq!(
            classify(&post, "/api/v1/outcomes"),
            Some(Kind::PerClient(RouteClass::Outcome))
        );
        assert_eq!(
            classify(&post, "/api/v1/miners/register"),
            Some(Kind::Registration { by_name: false })
        );
        assert_eq!(
            classify(&post, "/v1/miners/register"),
            Some(Kind::Registration { by_name: true })
        );
        assert_eq!(classify(&post, "/v1/miners/heartbeat"), Some(Kind::Status));
        assert_eq!(
            classify(&post, "/v1/match"),
            Some(Kind::PerClient(RouteClass::Match))
        );
        assert_eq!(
            classify(&post, "/api/v1/miners/{address}/status"),
            Some(Kind::Status)
        );
        for identity in [
            "/api/v1/miners/{address}/challenge",
            "/api/v1/miners/{a}/token",
        ] {
            assert_eq!(
                classify(&post, identity),
                Some(Kind::PerIp(RouteClass::Register)),
                "{identity}"
            );
        }
        for admin in ["/api/v1/admin/keys", "/api/v1/admin/keys/{id}"] {
            for m in [&get, &post, &Method::DELETE] {
                assert_eq!(
                    classify(m, admin),
                    Some(Kind::PerIp(RouteClass::Admin)),
                    "{m} {admin}"
                );
            }
        }
        // Reads and deregistration are not limited.
        for (m, route) in [
            (&get, "/health"),
            (&get, "/metrics"),
            (&get, "/api/v1/status"),
            (&get, "/api/v1/miners"),
            (&get, "/api/v1/miners/{address}"),
            (&Method::DELETE, "/api/v1/miners/{address}"),
            (&get, "/api/v1/match"),
        ] {
            assert_eq!(classify(m, route), None, "{m} {route}");
        }
    }

    #[test]
    fn an_ipv6_source_is_counted_by_its_64_prefix() {
        assert_eq!(bucket_ip(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(bucket_ip(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(bucket_ip(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            bucket_ip(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            bucket_ip(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            bucket_ip(ip("2001:db8:1:3::1")),
            bucket_ip(ip("2001:db8:1:2::1"))
        );
    }

    #[tokio::test]
    async fn the_sweeper_forgets_idle_parties_and_stops_on_cancel() {
        // 1000/s with a burst of 1: a bucket is full again 1 ms after its one request.
        let l = Arc::new(Limiter::new(&limits(Rate {
            per_second: 1000,
            burst: 1,
        })));
        for i in 0..10u8 {
            assert_eq!(
                l.check(
                    RouteClass::Register,
                    &Party::Ip(IpAddr::from([192, 0, 2, i]))
                ),
                Ok(())
            );
        }
        assert_eq!(l.tracked(), 10);
        let gauge = prometheus::IntGauge::new("parties", "test").expect("gauge");
        gauge.set(-1);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        spawn_forgetting(
            l.clone(),
            Duration::from_millis(10),
            gauge.clone(),
            cancel.clone(),
            &tracker,
        );
        // Polled, not timed: the sweep runs every 10 ms; 10 s is only a bound on a hang.
        let started = std::time::Instant::now();
        while l.tracked() > 0 || gauge.get() != 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never forgotten: {} parties, gauge {}",
                l.tracked(),
                gauge.get()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn retry_after_is_a_whole_second_or_more() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).seconds(), 1);
        assert_eq!(RetryAfter(Duration::ZERO).seconds(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1500)).seconds(), 2);
        assert_eq!(RetryAfter(Duration::from_secs(3)).seconds(), 3);
    }
}
