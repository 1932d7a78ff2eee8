//! The layers around every API route, one job each: the request timeout, request metrics and
//! logging, and the panic guard.
//!
//! The timeout is tower's `TimeoutLayer` behind axum's `HandleErrorLayer`, which turns its
//! error into our JSON 408. tower-http's timeout layer answers with an empty body, and its
//! trace layer logs per span rather than the one `request` event (with the matched route) that
//! operators and the log tests rely on, so [`record`] keeps that event beside the metrics.

use super::ApiError;
use crate::metrics::{Metrics, RouteSeries};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::layer::util::{Identity, Stack};
use tower::{BoxError, ServiceBuilder};

/// What the timeout layer's errors become.
type OnError = fn(BoxError) -> std::future::Ready<ApiError>;

/// The timeout layer: tower's timeout inside axum's error handler.
type Timeout = ServiceBuilder<
    Stack<tower::timeout::TimeoutLayer, Stack<HandleErrorLayer<OnError, ()>, Identity>>,
>;

/// `server.request_timeout` seconds (0 = no limit) for the whole request, body reading
/// included; a request that takes longer is answered 408 `timeout`.
pub(super) fn timeout(seconds: u64) -> Timeout {
    let limit = request_limit(seconds);
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(timed_out as OnError))
        .layer(tower::timeout::TimeoutLayer::new(limit))
}

/// `server.request_timeout` as a duration ("no limit" as a century).
pub(super) fn request_limit(seconds: u64) -> Duration {
    // "No limit" as a century, so both settings give the same service type.
    Duration::from_secs(if seconds > 0 {
        seconds
    } else {
        100 * 365 * 86_400
    })
}

/// The 408 answer of a request that took longer than `server.request_timeout`.
pub(super) fn request_timed_out() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "timeout",
        "the request took longer than server.request_timeout",
    )
}

/// The timeout's error is the only one these layers produce; anything else would be a
/// programming error, answered as a 500 rather than a panic.
fn timed_out(e: BoxError) -> std::future::Ready<ApiError> {
    std::future::ready(if e.is::<tower::timeout::error::Elapsed>() {
        request_timed_out()
    } else {
        tracing::error!(error = %e, "request failed in a layer");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the hub logged it",
        )
    })
}

/// A panicking handler answers 500 instead of dropping the connection.
pub(super) fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answering 500");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; the hub logged it",
    )
    .into_response()
}

pub(super) fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts and times every request by its matched route (never the raw path, which would
/// let clients create unbounded series), and logs it at debug.
pub(super) async fn record(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    // MatchedPath shares its string with the router: cloning it does not allocate.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let res = next.run(req).await;
    observe(&m, method, route, res.status(), started.elapsed());
    res
}

/// Counts, times and logs one answered request (the router's layer and `http::fast`).
pub(super) fn observe(
    m: &Metrics,
    method: &'static str,
    route: &str,
    status: StatusCode,
    elapsed: Duration,
) {
    observe_in(m, None, method, route, status, elapsed);
}

/// [`observe`], with the series of a hot route looked up once and kept (`http::fast`).
pub(super) fn observe_in(
    m: &Metrics,
    series: Option<&RouteSeries>,
    method: &'static str,
    route: &str,
    status: StatusCode,
    elapsed: Duration,
) {
    let count = || {
        m.api_requests_total
            .with_label_values(&[method, route, status.as_str()])
    };
    let time = || m.http_request_duration.with_label_values(&[route]);
    match series {
        Some(s) if status == StatusCode::OK => s.ok.get_or_init(count).inc(),
        _ => count().inc(),
    }
    let secs = elapsed.as_secs_f64();
    match series {
        Some(s) => s.duration.get_or_init(time).observe(secs),
        None => time().observe(secs),
    }
    tracing::debug!(
        method,
        route,
        status = status.as_u16(),
        micros = elapsed.as_micros() as u64,
        "request"
    );
}
