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
mod ui;

pub use error::ApiError;
pub use extract::parse_json;

use crate::hub::Hub;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};
use axum::Router;
use std::sync::Arc;

/// What every handler receives.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
}

/// The API router (port 8000 by default).
///
/// `limiter` holds the rate limits' buckets: one per process, shared by every connection
/// (the server also sweeps it, see [`limits::spawn_forgetting`]).
pub fn api_router(hub: Arc<Hub>, limiter: Arc<limits::Limiter>) -> Router {
    let cfg = hub.config().server.clone();
    let enforcer = limits::Enforcer::new(hub.clone(), limiter);
    let state = AppState { hub };
    let mut r = Router::new()
        .route("/", get(ui::page))
        .route("/ui", get(ui::page))
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
        .route(
            "/api/v1/miners/{address}/challenge",
            post(identity::challenge),
        )
        .route(
            "/api/v1/miners/{address}/token",
            post(identity::reissue_token),
        )
        .route(
            "/api/v1/admin/bans",
            get(identity::list_bans).post(identity::create_ban),
        )
        .route(
            "/api/v1/admin/bans/{address}",
            axum::routing::delete(identity::delete_ban),
        )
        .route("/api/v1/match", post(handlers::match_job))
        .route("/api/v1/match/explain", post(explain::explain))
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/outcomes", post(handlers::report_outcome))
        .route(
            "/api/v1/admin/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route("/api/v1/admin/keys/{id}", delete(admin::revoke_key))
        .route("/api/v1/admin/backup", post(admin::backup))
        .route("/api/v1/admin/replay", post(admin::replay));
    if cfg.metrics_on_api_port {
        r = r.route("/metrics", get(handlers::metrics));
    }
    if state.hub.config().compat.aitbc {
        // AITBC's pool-hub API beside poolhub's own (see `aitbc`).
        r = r
            .route("/v1/miners/register", post(aitbc::register))
            .route("/v1/miners/heartbeat", post(aitbc::heartbeat))
            .route("/v1/match", post(aitbc::match_job))
            .route("/v1/sla/status", get(aitbc::sla_status));
    }
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
