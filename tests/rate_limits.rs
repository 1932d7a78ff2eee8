//! Rate limits over HTTP (issue 8, "Limits"): a TestHub on loopback with small bursts (3) and
//! a sustained rate of 1/s, so every request a test sends past the burst arrives well within
//! the second its next token would take.
//!
//! Different source addresses are real ones: the whole of 127.0.0.0/8 is loopback on Linux,
//! so a client bound to 127.0.0.2 reaches the hub from another address.

mod common;

use bytes::Bytes;
use common::{addr, registration};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use poolhub::auth::{digest, new_secret, ApiKey, Role};
use poolhub::config::{Config, Rate, RateLimits};
use poolhub::server::TestHub;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};

const BURST: u32 = 3;
const SMALL: Rate = Rate {
    per_second: 1,
    burst: BURST,
};

/// An ephemeral hub with every class off but the ones `set` turns on.
fn cfg(set: impl FnOnce(&mut RateLimits)) -> Config {
    let mut cfg = Config::default();
    cfg.storage.ephemeral = true;
    cfg.auth.rate_limits = RateLimits::unlimited();
    set(&mut cfg.auth.rate_limits);
    cfg
}

/// A client that connects from a chosen loopback address and can send `X-Forwarded-For`.
struct From {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    json: Value,
}

impl From {
    fn new(hub: SocketAddr, local: &str) -> Self {
        let mut c = HttpConnector::new();
        c.set_local_address(Some(local.parse::<IpAddr>().expect("ip")));
        Self {
            base: format!("http://{hub}"),
            http: Client::builder(TokioExecutor::new()).build(c),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        bearer: Option<&str>,
        forwarded_for: Option<&str>,
    ) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = bearer {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if let Some(f) = forwarded_for {
            b = b.header("x-forwarded-for", f);
        }
        let body = body.map(|v| v.to_string()).unwrap_or_default();
        let res = self
            .http
            .request(b.body(Full::new(Bytes::from(body))).expect("request"))
            .await
            .expect("http request");
        let status = res.status();
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").to_string());
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            retry_after,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn post(&self, path: &str, body: &Value, bearer: Option<&str>) -> Reply {
        self.send(Method::POST, path, Some(body), bearer, None)
            .await
    }

    async fn register(&self, a: &str, token: Option<&str>) -> Reply {
        self.post(
            "/api/v1/miners/register",
            &registration(a, &["llama3.2"], 16384, 4),
            token,
        )
        .await
    }

    async fn heartbeat(&self, a: &str, token: Option<&str>) -> Reply {
        self.post(
            &format!("/api/v1/miners/{a}/status"),
            &json!({"available": true}),
            token,
        )
        .await
    }

    async fn match_as(&self, bearer: Option<&str>, forwarded_for: Option<&str>) -> Reply {
        let body = json!({"model": "llama3.2", "limit": 1, "reserve": false});
        self.send(
            Method::POST,
            "/api/v1/match",
            Some(&body),
            bearer,
            forwarded_for,
        )
        .await
    }
}

/// A 429 as the issue describes it: `rate_limited`, and a whole number of seconds to wait
/// (1 here: one token comes back per second).
fn assert_limited(r: &Reply, what: &str) {
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{what}: {}",
        r.json
    );
    assert_eq!(
        r.json["error"]["code"], "rate_limited",
        "{what}: {}",
        r.json
    );
    assert!(
        r.json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        r.json
    );
    assert_eq!(r.retry_after.as_deref(), Some("1"), "{what}: Retry-After");
}

/// `poolhub_rate_limited_total{class}` for every class.
async fn limited_counts(hub: &TestHub) -> Vec<(String, u64)> {
    let res = Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>()
        .get(
            format!("http://{}/metrics", hub.metrics_addr)
                .parse()
                .expect("uri"),
        )
        .await
        .expect("scrape");
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    ["register", "status", "match", "outcome", "admin"]
        .iter()
        .map(|c| {
            let prefix = format!("poolhub_rate_limited_total{{class=\"{c}\"}} ");
            let n = text
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no series for class {c}"))
                .trim()
                .parse()
                .expect("a count");
            (c.to_string(), n)
        })
        .collect()
}

fn client_key(hub: &TestHub, id: u64) -> String {
    let secret = new_secret();
    hub.hub.keys().insert(ApiKey {
        id,
        name: format!("client-{id}"),
        role: Role::Client,
        created_at: id,
        digest: digest(&secret),
    });
    secret
}

#[tokio::test]
async fn a_client_over_its_match_burst_is_told_to_retry_while_others_are_served() {
    let hub = TestHub::start(cfg(|r| r.match_ = SMALL))
        .await
        .expect("hub starts");
    let c = From::new(hub.api_addr, "127.0.0.1");
    let (k1, k2) = (client_key(&hub, 1), client_key(&hub, 2));

    for i in 0..BURST {
        assert_eq!(
            c.match_as(Some(&k1), None).await.status,
            StatusCode::OK,
            "{i}"
        );
    }
    assert_limited(&c.match_as(Some(&k1), None).await, "key 1 past its burst");
    // Another key from the same address has its own bucket, and so has the address itself
    // (a request without a key, or with a bearer that is no key).
    for _ in 0..BURST {
        assert_eq!(c.match_as(Some(&k2), None).await.status, StatusCode::OK);
    }
    assert_eq!(c.match_as(None, None).await.status, StatusCode::OK);
    assert_eq!(
        c.match_as(Some("phk_not-a-key"), None).await.status,
        StatusCode::OK
    );
    assert_eq!(c.match_as(None, None).await.status, StatusCode::OK);
    assert_limited(&c.match_as(None, None).await, "the address past its burst");
    // Another address is still served.
    let other = From::new(hub.api_addr, "127.0.0.2");
    assert_eq!(other.match_as(None, None).await.status, StatusCode::OK);
    // Reads are never limited.
    for _ in 0..2 * BURST {
        let r = c
            .send(Method::GET, "/api/v1/miners", None, Some(&k1), None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = c.send(Method::GET, "/health", None, None, None).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(
        limited_counts(&hub).await,
        [
            ("register".into(), 0),
            ("status".into(), 0),
            ("match".into(), 2),
            ("outcome".into(), 0),
            ("admin".into(), 0)
        ]
    );
    hub.stop().await;
}

#[tokio::test]
async fn status_updates_are_limited_per_miner_and_strangers_cannot_use_up_a_miners_allowance() {
    let hub = TestHub::start(cfg(|r| r.status = SMALL))
        .await
        .expect("hub starts");
    let c = From::new(hub.api_addr, "127.0.0.1");
    let (a, b) = (addr(1), addr(2));
    let ta = c.register(&a, None).await.json["token"]
        .as_str()
        .expect("token")
        .to_string();
    let tb = c.register(&b, None).await.json["token"]
        .as_str()
        .expect("token")
        .to_string();

    // A stranger sends updates in a's name: refused, and counted against the stranger's
    // address, not against a.
    let stranger = From::new(hub.api_addr, "127.0.0.3");
    for _ in 0..BURST {
        let r = stranger.heartbeat(&a, Some("ph_forged")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    }
    assert_limited(&stranger.heartbeat(&a, None).await, "the stranger");

    for i in 0..BURST {
        let r = c.heartbeat(&a, Some(&ta)).await;
        assert_eq!(r.status, StatusCode::OK, "{i}: {}", r.json);
    }
    assert_limited(&c.heartbeat(&a, Some(&ta)).await, "miner a past its burst");
    // Miner b, from the same address, is unaffected.
    for _ in 0..BURST {
        assert_eq!(c.heartbeat(&b, Some(&tb)).await.status, StatusCode::OK);
    }
    let counts = limited_counts(&hub).await;
    assert_eq!(counts[1], ("status".into(), 2), "{counts:?}");
    hub.stop().await;
}

#[tokio::test]
async fn registrations_of_new_addresses_are_limited_per_source_ip() {
    let hub = TestHub::start(cfg(|r| r.register = SMALL))
        .await
        .expect("hub starts");
    let c = From::new(hub.api_addr, "127.0.0.1");
    let mut tokens = Vec::new();
    for i in 0..BURST {
        let r = c.register(&addr(i), None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        tokens.push(r.json["token"].as_str().expect("token").to_string());
    }
    assert_limited(&c.register(&addr(100), None).await, "a 4th new address");
    // Re-registering an address that exists is not a new one: never counted, never refused.
    for round in 0..2 {
        for (i, t) in tokens.iter().enumerate() {
            let r = c.register(&addr(i as u32), Some(t)).await;
            assert_eq!(r.status, StatusCode::OK, "round {round}: {}", r.json);
        }
    }
    // A body without a valid address is not counted either (it can register nothing).
    let r = c
        .post("/api/v1/miners/register", &json!({"address": "nope"}), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    // Another source address registers new miners.
    let other = From::new(hub.api_addr, "127.0.0.2");
    let r = other.register(&addr(100), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let counts = limited_counts(&hub).await;
    assert_eq!(counts[0], ("register".into(), 1), "{counts:?}");
    hub.stop().await;
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_a_trusted_proxy() {
    // Behind a trusted proxy (this test's 127.0.0.1), each forwarded client has its bucket.
    let mut trusting = cfg(|r| r.match_ = SMALL);
    trusting.server.trusted_proxies = vec!["127.0.0.1".into()];
    let hub = TestHub::start(trusting).await.expect("hub starts");
    let proxy = From::new(hub.api_addr, "127.0.0.1");
    for _ in 0..BURST {
        let r = proxy.match_as(None, Some("203.0.113.1")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_limited(
        &proxy.match_as(None, Some("203.0.113.1")).await,
        "forwarded client 1",
    );
    // The nearest untrusted hop counts, not a spoofable leftmost entry.
    let r = proxy.match_as(None, Some("203.0.113.1, 203.0.113.2")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "forwarded client 2 has its own bucket"
    );
    // Another peer (not a trusted proxy) cannot pick a bucket with the header.
    let outsider = From::new(hub.api_addr, "127.0.0.2");
    for _ in 0..BURST {
        let r = outsider.match_as(None, Some("198.51.100.1")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_limited(
        &outsider.match_as(None, Some("198.51.100.2")).await,
        "an untrusted peer's header is ignored",
    );
    hub.stop().await;

    // Without trusted proxies the header is ignored: both "clients" are the peer.
    let hub = TestHub::start(cfg(|r| r.match_ = SMALL))
        .await
        .expect("hub starts");
    let peer = From::new(hub.api_addr, "127.0.0.1");
    for _ in 0..BURST {
        let r = peer.match_as(None, Some("203.0.113.1")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_limited(
        &peer.match_as(None, Some("203.0.113.2")).await,
        "no trusted proxies: one bucket",
    );
    let counts = limited_counts(&hub).await;
    assert_eq!(counts[2], ("match".into(), 1), "{counts:?}");
    hub.stop().await;
}

#[tokio::test]
async fn the_default_limits_leave_ordinary_use_alone() {
    // The built-in defaults: a few dozen registrations and heartbeats from one address, as
    // the other black-box tests do, are never refused.
    let mut cfg = Config::default();
    cfg.storage.ephemeral = true;
    let hub = TestHub::start(cfg).await.expect("hub starts");
    let c = From::new(hub.api_addr, "127.0.0.1");
    for i in 0..50 {
        let a = addr(i);
        let r = c.register(&a, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        let t = r.json["token"].as_str().expect("token").to_string();
        assert_eq!(c.heartbeat(&a, Some(&t)).await.status, StatusCode::OK);
        assert_eq!(c.match_as(None, None).await.status, StatusCode::OK);
    }
    let counts = limited_counts(&hub).await;
    assert!(counts.iter().all(|(_, n)| *n == 0), "{counts:?}");
    hub.stop().await;
}

/// AITBC's registrations of new names count like new addresses, also when the body smuggles
/// in the `address` of a registered miner (the handler reads `miner_id`, and so does the
/// limit); a miner re-registering its name at every start is never counted.
#[tokio::test]
async fn registrations_of_new_names_are_limited_per_source_ip() {
    let hub = TestHub::start(cfg(|r| r.register = SMALL))
        .await
        .expect("hub starts");
    let c = From::new(hub.api_addr, "127.0.0.1");
    let known = c.register(&addr(1), None).await;
    assert_eq!(known.status, StatusCode::CREATED, "{}", known.json);
    let named = |i: u32| {
        json!({"miner_id": format!("aitbc-miner-{i}"), "api_key": format!("aitbc-key-{i:08}-0123456789"),
               "addr": "http://10.0.0.7:8101", "gpu_vram_gb": 24.0, "address": addr(1)})
    };
    for i in 1..BURST {
        let r = c.post("/v1/miners/register", &named(i), None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    }
    assert_limited(
        &c.post("/v1/miners/register", &named(50), None).await,
        "a new name past the burst, despite a registered address in the body",
    );
    for round in 0..3 {
        let r = c.post("/v1/miners/register", &named(1), None).await;
        assert_eq!(r.status, StatusCode::OK, "round {round}: {}", r.json);
    }
    hub.stop().await;
}
