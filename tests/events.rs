//! `GET /api/v1/events` against an in-process hub: every kind of event arrives, filters
//! select, `Last-Event-ID` resumes, a subscriber too slow to read is dropped without slowing
//! the hub, and the route follows the client role.

mod common;

use bytes::Bytes;
use common::{addr, Api};
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use poolhub::config::{ClientAuth, Config};
use poolhub::server::TestHub;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// One SSE event: its id (if any), name and data.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// A subscriber reading the stream as it comes.
struct Stream {
    body: hyper::body::Incoming,
    buf: String,
}

async fn subscribe(hub: SocketAddr, query: &str, last_id: Option<u64>) -> Stream {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let mut req = hyper::Request::get(format!("http://{hub}/api/v1/events{query}"));
    if let Some(id) = last_id {
        req = req.header("last-event-id", id.to_string());
    }
    let res = client
        .request(req.body(Empty::new()).expect("request"))
        .await
        .expect("subscribe");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap_or(""),
        "text/event-stream"
    );
    Stream {
        body: res.into_body(),
        buf: String::new(),
    }
}

impl Stream {
    /// The next event (comments skipped), or `None` when the stream ends or `within` passes.
    async fn next(&mut self, within: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if !event.is_empty() {
                    let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                    return Some(Sse { id, event, data });
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??;
            let frame = frame.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Events until one named `event` arrives (it included), failing after 5 s.
    async fn until(&mut self, event: &str) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let e = self
                .next(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("no {event} event; saw {seen:?}"));
            let done = e.event == event;
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

fn cfg() -> Config {
    let mut c = Config::default();
    c.storage.ephemeral = true;
    c.failover.failure_threshold = 1;
    c
}

async fn online(api: &Api, a: &str, token: &str, available: bool) {
    let r = api
        .post(
            &format!("/api/v1/miners/{a}/status"),
            &json!({"available": available, "current_load": 0, "gpu_utilization": 0.5,
                    "temperature": 60}),
            Some(token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn every_kind_arrives_filters_select_and_a_resume_replays() {
    let hub = TestHub::start(cfg()).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let mut all = subscribe(hub.api_addr, "", None).await;
    let (a, b) = (addr(1), addr(2));
    let mut only_b = subscribe(hub.api_addr, &format!("?address={b}"), None).await;
    let mut outcomes = subscribe(hub.api_addr, "?types=outcome,cooldown", None).await;

    let ta = api.register(&a, &["llama3.2"], 16384, 4).await;
    let tb = api.register(&b, &["llama3.2"], 16384, 4).await;
    let e = all.until("registered").await;
    assert_eq!(e[0].data["address"], a.as_str());
    assert_eq!(e[0].data["new"], true);
    online(&api, &a, &ta, true).await;
    online(&api, &a, &ta, true).await; // a plain heartbeat: no event
    online(&api, &a, &ta, false).await; // available -> unavailable: an event
    online(&api, &a, &ta, true).await;
    let seen = all.until("status").await;
    assert_eq!(seen.last().unwrap().data["was_online"], false);
    let next = all.until("status").await;
    assert_eq!(next.last().unwrap().data["available"], false);
    let next = all.until("status").await;
    assert_eq!(next.last().unwrap().data["available"], true);

    let m = api.match_model("llama3.2", 1).await;
    let id = m.json["match_id"].as_str().expect("match id").to_string();
    let offered = m.json["miners"][0]["address"]
        .as_str()
        .expect("offer")
        .to_string();
    let e = all.until("match").await;
    assert_eq!(e.last().unwrap().data["match_id"], id.as_str());
    // A failure with failure_threshold = 1: an outcome, a cooldown and a score change.
    let r = api.outcome(&id, &offered, false, 1000.0).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let e = all.until("outcome").await;
    assert_eq!(e.last().unwrap().data["success"], false);
    let e = all.until("cooldown").await;
    assert_eq!(e.last().unwrap().data["state"], "started");
    let e = all.until("score").await;
    let s = &e.last().unwrap().data;
    assert!(s["score"].as_f64() < s["previous"].as_f64(), "{s}");

    // The type filter saw only the outcome and the cooldown.
    let got: Vec<String> = vec![
        outcomes
            .next(Duration::from_secs(5))
            .await
            .expect("outcome")
            .event,
        outcomes
            .next(Duration::from_secs(5))
            .await
            .expect("cooldown")
            .event,
    ];
    assert_eq!(got, ["outcome", "cooldown"]);
    assert!(outcomes.next(Duration::from_millis(300)).await.is_none());

    // The address filter: b's registration, and the match only if it named b.
    let first = only_b
        .next(Duration::from_secs(5))
        .await
        .expect("b's event");
    assert_eq!(
        (first.event.as_str(), &first.data["address"]),
        ("registered", &json!(b))
    );
    online(&api, &b, &tb, true).await;
    let e = only_b.until("status").await;
    assert!(e.iter().all(|x| x.data.to_string().contains(&b)), "{e:?}");

    // Resume: after the registration's id, the rest is replayed in order.
    let reg_id = {
        let mut s = subscribe(hub.api_addr, "?types=registered", Some(0)).await;
        s.next(Duration::from_secs(5))
            .await
            .expect("replayed")
            .id
            .expect("id")
    };
    let mut resumed = subscribe(hub.api_addr, "", Some(reg_id)).await;
    let again = resumed.next(Duration::from_secs(5)).await.expect("replay");
    assert_eq!(again.id, Some(reg_id + 1));

    // Deregistration.
    let r = api.delete(&format!("/api/v1/miners/{b}"), Some(&tb)).await;
    assert!(r.status.is_success(), "{}", r.text);
    let e = all.until("deregistered").await;
    assert_eq!(e.last().unwrap().data["address"], b.as_str());

    // Bad filters are a 400 naming the parameter.
    let r = api.get("/api/v1/events?types=nonsense").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("types"), "{}", r.text);
    let r = api.get("/api/v1/events?address=0x12").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    hub.stop().await;
}

#[tokio::test]
async fn an_expired_heartbeat_is_an_offline_event() {
    let mut c = cfg();
    c.matching.heartbeat_timeout = 1;
    let hub = TestHub::start(c).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let mut s = subscribe(hub.api_addr, "?types=status", None).await;
    let a = addr(3);
    let t = api.register(&a, &["llama3.2"], 16384, 4).await;
    online(&api, &a, &t, true).await;
    let on = s.next(Duration::from_secs(5)).await.expect("online");
    assert_eq!(on.data["online"], true);
    let off = s.next(Duration::from_secs(5)).await.expect("offline");
    assert_eq!(
        (off.data["online"].as_bool(), off.data["address"].as_str()),
        (Some(false), Some(a.as_str()))
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_dropped_and_the_hub_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = TestHub::start(cfg()).await.expect("hub");
    let api = Api::new(hub.api_addr);
    // A subscriber that asks and then reads nothing, with a small receive window, so the
    // hub's side of its stream backs up.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stalled = socket.connect(hub.api_addr).await.expect("connect");
    stalled
        .write_all(b"GET /api/v1/events?types=registered HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    // Big events (a registration lists its 64 models, 6.6 kB): far more than the socket
    // buffers (a few MB) and the subscriber's queue hold together.
    let models: Vec<String> = (0..64)
        .map(|i| format!("model-{i:02}-{}", "x".repeat(90)))
        .collect();
    let models: Vec<&str> = models.iter().map(String::as_str).collect();
    let a = addr(4);
    let t = api.register(&a, &models, 16384, 4).await;
    for _ in 0..(poolhub::hub::stream::QUEUE + 1500) {
        let r = api
            .post(
                "/api/v1/miners/register",
                &common::registration(&a, &models, 16384, 4),
                Some(&t),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    // The stalled stream ends with a `dropped` event once it is read at last.
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the dropped subscriber's stream did not end");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("event: dropped"),
        "no dropped event in {} bytes",
        raw.len()
    );
    // The hub is unaffected, and a new subscriber is served.
    let r = api.get("/health").await;
    assert_eq!(r.status, StatusCode::OK);
    let mut fresh = subscribe(hub.api_addr, "?types=registered", None).await;
    api.register(&addr(5), &["llama3.2"], 16384, 4).await;
    assert!(fresh.next(Duration::from_secs(5)).await.is_some());
    hub.stop().await;
}

#[tokio::test]
async fn with_client_keys_the_stream_needs_a_key() {
    let mut c = cfg();
    c.auth.clients = ClientAuth::Keys;
    c.auth.admin_token = "events-admin-secret-0123456789".into();
    let hub = TestHub::start(c).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let r = api.get("/api/v1/events").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    hub.stop().await;
}

#[tokio::test]
async fn a_quiet_stream_outlives_the_idle_timeout() {
    // A quiet stream writes a keep-alive comment at least twice per idle timeout, so the
    // idle timeout (which closes connections with nothing to do) never cuts it.
    let mut c = cfg();
    c.server.idle_timeout = 1;
    let hub = TestHub::start(c).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let mut s = subscribe(hub.api_addr, "?types=registered", None).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let a = addr(6);
    api.register(&a, &["llama3.2"], 16384, 4).await;
    let e = s
        .next(Duration::from_secs(5))
        .await
        .expect("still streaming");
    assert_eq!(e.data["address"], a.as_str());
    hub.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_closed_by_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let mut c = cfg();
    c.server.idle_timeout = 1;
    let hub = TestHub::start(c).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stalled = socket.connect(hub.api_addr).await.expect("connect");
    stalled
        .write_all(b"GET /api/v1/events?types=registered HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .expect("request");
    common::eventually(Duration::from_secs(5), "subscribed", || async {
        hub.hub.events().subscribers() == 1
    })
    .await;
    // Enough big events to fill the socket buffers, so the stream's writes stall.
    let models: Vec<String> = (0..64)
        .map(|i| format!("model-{i:02}-{}", "x".repeat(90)))
        .collect();
    let models: Vec<&str> = models.iter().map(String::as_str).collect();
    let a = addr(7);
    let t = api.register(&a, &models, 16384, 4).await;
    for _ in 0..1500 {
        let r = api
            .post(
                "/api/v1/miners/register",
                &common::registration(&a, &models, 16384, 4),
                Some(&t),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    // Nothing written for a second: the connection is closed and the subscriber forgotten,
    // though the client never read or hung up.
    common::eventually(
        Duration::from_secs(10),
        "the stalled subscriber closed",
        || async { hub.hub.events().subscribers() == 0 },
    )
    .await;
    drop(stalled);
    hub.stop().await;
}

#[tokio::test]
async fn a_stream_ends_at_its_max_age_and_a_reconnect_resumes() {
    let mut c = cfg();
    c.server.event_stream_max_age = 1;
    let hub = TestHub::start(c).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let mut s = subscribe(hub.api_addr, "?types=registered", None).await;
    api.register(&addr(1), &["m"], 8192, 2).await;
    let first = s.until("registered").await;
    let id = first.last().and_then(|e| e.id).expect("an id");
    // Within about a second the hub ends the stream (keep-alives do not keep it open).
    let started = std::time::Instant::now();
    assert!(
        s.next(Duration::from_secs(5)).await.is_none(),
        "the stream should end"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    // What happened meanwhile is not lost: a reconnect with the last id gets it.
    api.register(&addr(2), &["m"], 8192, 2).await;
    let mut again = subscribe(hub.api_addr, "?types=registered", Some(id)).await;
    let seen = again.until("registered").await;
    assert_eq!(
        seen.last().map(|e| e.data["address"].clone()),
        Some(json!(addr(2)))
    );
}
