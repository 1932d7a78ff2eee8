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

const BODY: &[u8] = br#"{"match_id":"0123456789abcdef0123456789abcdef","miners":[{"address":"0x00000000000000000000000000000000000000aa","endpoint":"http://10.0.0.1:8080","score":0.9,"estimated_time":1000}],"reserved":true,"panic":false}"#;

async fn answer(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
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
