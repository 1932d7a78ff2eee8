//! Accepting and serving connections, with the limits `axum::serve` lacks.
//!
//! `axum::serve` holds a connection for as long as the client keeps it open: a client that
//! trickles one header byte every few seconds, or opens a keep-alive connection and never
//! sends a request, costs a task and a file descriptor for ever, and enough of them exhaust
//! the process. Here every connection is bounded three ways:
//!
//! * **header timeout**: once a request's first byte has arrived, its headers must be complete
//!   within `server.header_timeout`;
//! * **idle timeout**: a connection with no request in progress (fresh, or kept alive between
//!   requests) is closed after `server.idle_timeout`;
//! * **connection cap**: at most `server.max_connections` at once; one more is closed as soon as
//!   it is accepted, so the cap holds however fast clients connect.
//!
//! A request being handled has no deadline here: `server.request_timeout` bounds it (and the
//! reading of its body) in the HTTP layer.
//!
//! The timers live in [`TimedIo`], which wraps the socket: hyper polls it for a read whenever
//! it waits for the client, so the deadline is checked exactly when the hub is waiting, and a
//! timed-out read ends the connection like any I/O error.

use crate::http::fast::FastRoutes;
use crate::tls::server::ServerTls;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The per-connection limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(s: &crate::config::ServerConfig) -> Self {
        Self {
            header_timeout: Duration::from_secs(s.header_timeout),
            idle_timeout: Duration::from_secs(s.idle_timeout),
            max_connections: s.max_connections,
        }
    }
}

/// How the server stops its connections: `drain` asks them to finish the request in progress
/// and close; `abort` (after the grace period) drops them, in-flight requests included.
#[derive(Clone)]
pub(crate) struct Stop {
    pub drain: CancellationToken,
    pub abort: CancellationToken,
    pub conns: TaskTracker,
}

/// Where a connection is between requests, shared by its socket ([`TimedIo`]) and its
/// request service ([`Busy`]).
struct Phase {
    /// Requests being handled (more than one only when the client pipelines).
    in_flight: usize,
    /// When the connection last had nothing to do: opened, or finished writing an answer.
    idle_since: Instant,
    /// When the first byte of the request now being received arrived.
    head_since: Option<Instant>,
    /// The task that last found nothing to read while a request was handled. hyper does not
    /// read again by itself once it has answered, so the deadline would never be armed: the
    /// end of the request wakes it to look again.
    reader: Option<Waker>,
}

type Shared = Arc<Mutex<Phase>>;

/// The moment the connection has waited too long, or `None` while a request is handled.
fn deadline(p: &Phase, limits: &Limits) -> Option<Instant> {
    if p.in_flight > 0 {
        return None;
    }
    Some(match p.head_since {
        Some(t) => t + limits.header_timeout,
        None => p.idle_since + limits.idle_timeout,
    })
}

/// Marks a request as being handled for as long as it lives.
struct Busy(Shared);

impl Busy {
    fn start(phase: &Shared) -> Self {
        let mut p = phase.lock();
        p.in_flight += 1;
        p.head_since = None;
        drop(p);
        Self(phase.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut p = self.0.lock();
        p.in_flight = p.in_flight.saturating_sub(1);
        p.idle_since = Instant::now();
        if p.in_flight == 0 {
            if let Some(w) = p.reader.take() {
                w.wake();
            }
        }
    }
}

/// The socket (or the TLS stream over it), with the header and idle deadlines checked
/// whenever hyper waits for a read.
struct TimedIo<S> {
    inner: S,
    phase: Shared,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
}

impl<S> TimedIo<S> {
    fn timed_out(p: &Phase) -> io::Error {
        let what = if p.head_since.is_some() {
            "request headers not complete within server.header_timeout"
        } else {
            "connection idle for server.idle_timeout"
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let mut p = this.phase.lock();
                    if p.in_flight == 0 && p.head_since.is_none() {
                        p.head_since = Some(Instant::now());
                    }
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        // Nothing to read: the client has until the deadline to send something.
        let mut p = this.phase.lock();
        let Some(due) = deadline(&p, &this.limits) else {
            p.reader = Some(cx.waker().clone());
            return Poll::Pending;
        };
        if Instant::now() >= due {
            return Poll::Ready(Err(Self::timed_out(&p)));
        }
        if this.timer.deadline() != due {
            this.timer.as_mut().reset(due);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Self::timed_out(&p))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                // Writing an answer is activity: the idle time starts once it is written.
                let mut p = this.phase.lock();
                if p.in_flight == 0 {
                    p.idle_since = Instant::now();
                }
            }
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` and serves `app` on each until `stop.drain` fires.
///
/// Connections run on `stop.conns`, so the caller can wait for them to drain.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    fast: Option<Arc<FastRoutes>>,
    tls: Option<Arc<ServerTls>>,
    limits: Limits,
    nodelay: bool,
    stop: Stop,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stop.drain.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors (EMFILE) or a connection reset before accept: wait
                // a moment instead of spinning on the error.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    () = stop.drain.cancelled() => break,
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closing it at once tells the client where it stands; leaving it in the backlog
            // would hold it without an answer.
            tracing::debug!("connection closed: server.max_connections reached");
            drop(tcp);
            continue;
        };
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
        let app = app.clone();
        let fast = fast.clone();
        let stop2 = stop.clone();
        let tls = tls.clone();
        stop.conns.spawn(async move {
            match tls {
                None => serve_connection(tcp, peer, app, fast, limits, stop2).await,
                Some(tls) => {
                    if let Some(stream) = handshake(&tls, tcp, limits, &stop2).await {
                        serve_connection(stream, peer, app, fast, limits, stop2).await;
                    }
                }
            }
            drop(slot);
        });
    }
}

/// The TLS handshake, bounded like a request's headers (`server.header_timeout`), so a
/// client that opens a connection and stalls mid-handshake cannot hold it.
async fn handshake(
    tls: &ServerTls,
    tcp: TcpStream,
    limits: Limits,
    stop: &Stop,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = tokio::time::timeout(limits.header_timeout, tls.acceptor().accept(tcp));
    tokio::select! {
        r = accept => match r {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake not complete within server.header_timeout");
                None
            }
        },
        () = stop.drain.cancelled() => None,
    }
}

async fn serve_connection<S>(
    tcp: S,
    peer: SocketAddr,
    app: Router,
    fast: Option<Arc<FastRoutes>>,
    limits: Limits,
    stop: Stop,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase: Shared = Arc::new(Mutex::new(Phase {
        in_flight: 0,
        idle_since: Instant::now(),
        head_since: None,
        reader: None,
    }));
    let io = TimedIo {
        inner: tcp,
        phase: phase.clone(),
        limits,
        timer: Box::pin(tokio::time::sleep_until(
            Instant::now() + limits.idle_timeout,
        )),
    };
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = Busy::start(&phase);
        // The peer, as axum's `ConnectInfo` would carry it: rate limits count per source
        // address (see `http::limits`), and only this loop knows it.
        // The hot routes skip the router (`http::fast`); everything else goes through it.
        let hot = fast
            .as_ref()
            .and_then(|f| FastRoutes::route(&req).map(|h| (f.clone(), h)));
        let app = app.clone();
        async move {
            let res = match hot {
                Some((f, h)) => Ok(f.serve(h, req, peer).await),
                None => {
                    let mut req = req;
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.oneshot(req).await
                }
            };
            drop(busy);
            res
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // The deadlines are TimedIo's; hyper's own header timer would also cut idle
        // keep-alive connections at the header timeout.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.drain.cancelled() => {
            // Finish the request in progress (if any), then close.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                () = stop.abort.cancelled() => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended");
    }
}
