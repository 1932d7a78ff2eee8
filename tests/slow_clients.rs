//! Slow and idle clients cannot hold the API port: a client that trickles its headers is
//! disconnected after `server.header_timeout`, a connection with no request in progress after
//! `server.idle_timeout`, connections past `server.max_connections` are closed as soon as they
//! are accepted, and ordinary requests are answered while all of that goes on.
//!
//! Raw sockets, not an HTTP client: the point is what happens to the connection itself.

use poolhub::config::Config;
use poolhub::server::TestHub;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far longer than any timeout configured here: reaching it means the hub never acted.
const NEVER: Duration = Duration::from_secs(30);

fn cfg(header_timeout: u64, idle_timeout: u64, max_connections: usize) -> Config {
    let mut c = Config::default();
    c.storage.ephemeral = true;
    c.server.header_timeout = header_timeout;
    c.server.idle_timeout = idle_timeout;
    c.server.max_connections = max_connections;
    c
}

const REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: poolhub\r\nUser-Agent: slow-test\r\n\r\n";

/// Reads one response (status line, headers, Content-Length body); `None` when the hub
/// closed the connection first.
async fn read_response(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(head);
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits until the hub closes `s` (EOF or reset), returning whatever it sent before.
async fn closed_by_hub(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let wait = async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(NEVER, wait)
        .await
        .expect("the hub never closed the connection");
    got
}

async fn answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(REQUEST).await.is_err() {
        return false;
    }
    tokio::time::timeout(NEVER, read_response(&mut s))
        .await
        .ok()
        .flatten()
        .is_some_and(|head| head.starts_with("HTTP/1.1 200"))
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_dropped() {
    // The idle timeout is long: only the header timeout can end this connection.
    let hub = TestHub::start(cfg(1, 600, 100)).await.expect("hub starts");
    let mut s = TcpStream::connect(hub.api_addr).await.unwrap();
    let (mut rd, mut wr) = s.split();
    // One byte every 200 ms: the whole request would take about 13 s, far past the 1 s
    // header timeout, so the hub must hang up before the headers are complete.
    let mut sent = 0;
    let trickle = async {
        for b in REQUEST {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut got = Vec::new();
    let hung_up = async {
        let mut chunk = [0u8; 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::select! {
        _ = trickle => {},
        _ = hung_up => {},
    }
    assert!(
        sent < REQUEST.len(),
        "the hub waited for every trickled header byte (sent {sent})"
    );
    assert!(
        !String::from_utf8_lossy(&got).contains(" 200 "),
        "no answer to an incomplete request"
    );
    // The hub still serves everyone else.
    assert!(answers(hub.api_addr).await);
    hub.stop().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let hub = TestHub::start(cfg(600, 1, 100)).await.expect("hub starts");
    let mut s = TcpStream::connect(hub.api_addr).await.unwrap();
    let got = closed_by_hub(&mut s).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    hub.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let hub = TestHub::start(cfg(600, 1, 100)).await.expect("hub starts");
    let mut s = TcpStream::connect(hub.api_addr).await.unwrap();
    // Two requests on one connection: keep-alive works, and the idle timer restarts after
    // each answer.
    for _ in 0..2 {
        s.write_all(REQUEST).await.unwrap();
        let head = read_response(&mut s).await.expect("an answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let got = closed_by_hub(&mut s).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    hub.stop().await;
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_the_rest_served() {
    let hub = TestHub::start(cfg(600, 600, 4)).await.expect("hub starts");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(hub.api_addr).await.unwrap());
    }
    // The fifth is closed without an answer, even though it sends a complete request.
    let mut extra = TcpStream::connect(hub.api_addr).await.unwrap();
    let _ = extra.write_all(REQUEST).await;
    let got = closed_by_hub(&mut extra).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // The four held connections are served.
    for s in &mut held {
        s.write_all(REQUEST).await.unwrap();
        let head = read_response(s).await.expect("an answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // A freed slot is reused: close one and a new connection is answered (the hub frees the
    // slot when it sees the close, so try until it has).
    drop(held.pop());
    let mut served = false;
    for _ in 0..100 {
        if answers(hub.api_addr).await {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a closed connection's slot was never reused");
    hub.stop().await;
}

#[tokio::test]
async fn ordinary_requests_are_answered_beside_1000_idle_and_200_slow_connections() {
    // The defaults: slow clients are held up to 10 s, idle ones 60 s, 10,000 at most.
    let defaults = Config::default().server;
    let hub = TestHub::start(cfg(
        defaults.header_timeout,
        defaults.idle_timeout,
        defaults.max_connections,
    ))
    .await
    .expect("hub starts");
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(hub.api_addr).await.unwrap());
    }
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(hub.api_addr).await.unwrap();
        s.write_all(b"GET /heal").await.unwrap();
        slow.push(s);
    }
    for _ in 0..20 {
        assert!(answers(hub.api_addr).await);
    }
    drop((idle, slow));
    hub.stop().await;
}

#[tokio::test]
async fn requests_still_running_after_the_grace_period_are_aborted() {
    let mut c = cfg(600, 600, 100);
    c.server.shutdown_grace = 1;
    c.server.request_timeout = 20;
    let hub = TestHub::start(c).await.expect("hub starts");
    let mut s = TcpStream::connect(hub.api_addr).await.unwrap();
    // The connection is served...
    s.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut s).await.is_some());
    // ...and now runs a request whose body never comes: its handler waits for it.
    s.write_all(
        b"POST /api/v1/match HTTP/1.1\r\nHost: poolhub\r\nContent-Length: 100\r\n\r\n{\"model\"",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Stopping waits out the grace period, then drops the request before the stores close:
    // the client sees the connection end without an answer (not a 408 much later).
    hub.stop().await;
    let got = closed_by_hub(&mut s).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_gets_408_after_the_request_timeout() {
    let mut c = cfg(600, 600, 100);
    c.server.request_timeout = 1;
    let hub = TestHub::start(c).await.expect("hub starts");
    let mut s = TcpStream::connect(hub.api_addr).await.unwrap();
    s.write_all(
        b"POST /api/v1/match HTTP/1.1\r\nHost: poolhub\r\nContent-Length: 100\r\n\r\n{\"model\"",
    )
    .await
    .unwrap();
    let got = closed_by_hub(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"timeout\""), "{text}");
    hub.stop().await;
}
