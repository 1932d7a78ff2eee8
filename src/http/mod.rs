//! The HTTP adapter: routes and the layers around them (body limit, timeout, request
//! metrics and logging, panic guard).

mod admin;
mod aitbc;
pub mod auth;
pub mod dto;
mod error;
mod events;
mod explain;
mod extract;
pub mod fast;
mod handlers;
mod identity;
mod layers;
pub mod limits;
pub mod openapi;
mod ui;

pub use error::ApiError;
pub use extract::parse_json;

use crate::config::Config;
use crate::hub::Hub;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, on, MethodFilter, MethodRouter};
use axum::Router;
use std::sync::Arc;

/// What every handler receives.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
}

/// One route the API serves: the method and path (as the OpenAPI document names them) and
/// the handler. [`api_router`] is built from [`routes`] alone, so a test can hold the
/// document against every route that exists.
pub struct Route {
    pub method: axum::http::Method,
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(method: axum::http::Method, path: &'static str, handler: H) -> Route
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    // Only GET, POST and DELETE are used, all of which axum can route.
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    debug_assert_eq!(MethodFilter::try_from(method.clone()).ok(), Some(filter));
    Route {
        method,
        path,
        handler: on(filter, handler),
    }
}

/// Every route of the API port under `cfg` (the AITBC routes and `/metrics` depend on it).
pub fn routes(cfg: &Config) -> Vec<Route> {
    use axum::http::Method;
    let (get, post, del) = (Method::GET, Method::POST, Method::DELETE);
    let doc = std::sync::Arc::new(openapi::document_bytes(cfg));
    let mut r = vec![
        route(get.clone(), "/", ui::page),
        route(get.clone(), "/ui", ui::page),
        route(get.clone(), "/health", handlers::health),
        route(get.clone(), openapi::DOCUMENT_PATH, {
            let doc = doc.clone();
            move || openapi::openapi_json(axum::extract::State(doc))
        }),
        route(get.clone(), "/api/v1/status", handlers::status),
        route(get.clone(), "/api/v1/miners", handlers::list_miners),
        route(post.clone(), "/api/v1/miners/register", handlers::register),
        route(get.clone(), "/api/v1/miners/{address}", handlers::get_miner),
        route(
            del.clone(),
            "/api/v1/miners/{address}",
            handlers::delete_miner,
        ),
        route(
            post.clone(),
            "/api/v1/miners/{address}/status",
            handlers::update_status,
        ),
        route(
            post.clone(),
            "/api/v1/miners/{address}/challenge",
            identity::challenge,
        ),
        route(
            post.clone(),
            "/api/v1/miners/{address}/token",
            identity::reissue_token,
        ),
        route(get.clone(), "/api/v1/admin/bans", identity::list_bans),
        route(post.clone(), "/api/v1/admin/bans", identity::create_ban),
        route(
            del.clone(),
            "/api/v1/admin/bans/{address}",
            identity::delete_ban,
        ),
        route(post.clone(), "/api/v1/match", handlers::match_job),
        route(post.clone(), "/api/v1/match/explain", explain::explain),
        route(get.clone(), "/api/v1/events", events::events),
        route(post.clone(), "/api/v1/outcomes", handlers::report_outcome),
        route(post.clone(), "/api/v1/admin/keys", admin::create_key),
        route(get.clone(), "/api/v1/admin/keys", admin::list_keys),
        route(del.clone(), "/api/v1/admin/keys/{id}", admin::revoke_key),
        route(post.clone(), "/api/v1/admin/backup", admin::backup),
        route(post.clone(), "/api/v1/admin/replay", admin::replay),
    ];
    if cfg.server.metrics_on_api_port {
        r.push(route(get.clone(), "/metrics", handlers::metrics));
    }
    if cfg.compat.aitbc {
        // AITBC's pool-hub API beside poolhub's own (see `aitbc`).
        r.push(route(post.clone(), "/v1/miners/register", aitbc::register));
        r.push(route(
            post.clone(),
            "/v1/miners/heartbeat",
            aitbc::heartbeat,
        ));
        r.push(route(post, "/v1/match", aitbc::match_job));
        r.push(route(get, "/v1/sla/status", aitbc::sla_status));
    }
    r
}

/// The API router (port 8000 by default).
///
/// `limiter` holds the rate limits' buckets: one per process, shared by every connection
/// (the server also sweeps it, see [`limits::spawn_forgetting`]).
pub fn api_router(hub: Arc<Hub>, limiter: Arc<limits::Limiter>) -> Router {
    let cfg = hub.config().server.clone();
    let enforcer = limits::Enforcer::new(hub.clone(), limiter);
    // Two methods on one path merge into one method router.
    let r = routes(&hub.config())
        .into_iter()
        .fold(Router::new(), |r, route| r.route(route.path, route.handler));
    let state = AppState { hub };
    r.fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        // Innermost first: the rate limits (inside the timeout, since a registration's body
        // is read there), the body limit, then the request timeout (so its 408 is counted),
        // then counting and logging (so 429s are counted), then panics turned into 500s.
        .layer(middleware::from_fn_with_state(enforcer, limits::enforce))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(layers::timeout(cfg.request_timeout))
        .layer(middleware::from_fn_with_state(
            state.hub.metrics().clone(),
            layers::record,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            layers::on_panic,
        ))
        .with_state(state)
}

/// The metrics router (port 9090 by default).
pub fn metrics_router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .with_state(AppState { hub })
}
