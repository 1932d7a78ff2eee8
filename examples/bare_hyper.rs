//! The yardstick for the load test: a bare hyper HTTP/1 server answering every request with a
//! fixed JSON body, on the same tokio runtime setup as poolhub. A poolhub match or status
//! update should cost barely more than this.
//!
//! `cargo run --release --example bare_hyper -- 127.0.0.1:8088`

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

/// The same allocator as poolhub, so the comparison is of the work, not of malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The answer to every request but a match: the size of a status update's answer.
const BODY: &[u8] = br#"{"match_id":"0123456789abcdef0123456789abcdef","miners":[{"address":"0x00000000000000000000000000000000000000aa","endpoint":"http://10.0.0.1:8080","score":0.9,"estimated_time":1000}],"reserved":true,"panic":false}"#;

/// The answer to `POST /api/v1/match`: five offers, byte for byte the size of the hub's answer
/// to the load test's match (796 bytes), so the comparison is of the work and not of how many bytes go over the wire.
const MATCH: &[u8] = br#"{"match_id":"3d55edd007a0fbcca76e69c259496ff2","miners":[{"address":"0x0000000000000000000000000000beef000002bb","endpoint":"http://10.0.2.187:8080","score":0.8222881355932203,"estimated_time":1000},{"address":"0x0000000000000000000000000000beef00000063","endpoint":"http://10.0.0.99:8080","score":0.8222881355932203,"estimated_time":1000},{"address":"0x0000000000000000000000000000beef000003e7","endpoint":"http://10.0.3.231:8080","score":0.8222881355932203,"estimated_time":1000},{"address":"0x0000000000000000000000000000beef00000351","endpoint":"http://10.0.3.81:8080","score":0.8222881355932203,"estimated_time":1000},{"address":"0x0000000000000000000000000000beef0000018f","endpoint":"http://10.0.1.143:8080","score":0.8222881355932203,"estimated_time":1000}],"reserved":true,"panic":false}"#;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if req.uri().path() == "/api/v1/match" {
        MATCH
    } else {
        BODY
    };
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap_or_default())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8088".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
