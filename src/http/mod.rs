//! The HTTP adapter: routes, request metrics and logging, body limit, timeouts.

pub mod dto;
mod error;
mod extract;
mod handlers;

pub use error::ApiError;
pub use extract::parse_json;

use crate::hub::Hub;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every handler receives.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
}

/// The API router (port 8000 by default).
pub fn api_router(hub: Arc<Hub>) -> Router {
    let cfg = hub.config().server.clone();
    let state = AppState { hub };
    let mut r = Router::new()
        .route("/health", get(handlers::health))
        .route("/api/v1/status", get(handlers::status))
        .route("/api/v1/miners", get(handlers::list_miners))
        .route("/api/v1/miners/register", post(handlers::register))
        .route(
            "/api/v1/miners/{address}",
            get(handlers::get_miner).delete(handlers::delete_miner),
        )
        .route(
            "/api/v1/miners/{address}/status",
            post(handlers::update_status),
        )
        .route("/api/v1/match", post(handlers::match_job))
        .route("/api/v1/outcomes", post(handlers::report_outcome));
    if cfg.metrics_on_api_port {
        r = r.route("/metrics", get(handlers::metrics));
    }
    r.fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

/// The metrics router (port 9090 by default).
pub fn metrics_router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .with_state(AppState { hub })
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answering 500");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; the hub logged it",
    )
    .into_response()
}

fn method_label(m: &axum::http::Method) -> &'static str {
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
/// let clients create unbounded series), applies the request timeout, logs at debug.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    // MatchedPath shares its string with the router: cloning it does not allocate.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let timeout = state.hub.config().server.request_timeout;
    let res = if timeout > 0 {
        match tokio::time::timeout(Duration::from_secs(timeout), next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request took longer than server.request_timeout",
            )
            .into_response(),
        }
    } else {
        next.run(req).await
    };
    let elapsed = started.elapsed();
    let status = res.status();
    let m = state.hub.metrics();
    m.api_requests_total
        .with_label_values(&[method, route, status.as_str()])
        .inc();
    m.http_request_duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    tracing::debug!(
        method,
        route,
        status = status.as_u16(),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    res
}
