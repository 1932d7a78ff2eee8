//! The two hottest routes, served without the router: `POST /api/v1/match` and
//! `POST /api/v1/miners/{address}/status`.
//!
//! Under load the router and its layers cost more than the hub's own work: two `from_fn`
//! middlewares (each boxing a future and cloning its state), the router's per-request
//! service clone, the tower timeout's timer and the response-mapping wrappers. A status update
//! took 15–18 µs of CPU through them and 12–13 µs without them (`bench/load.sh`). Here
//! the same steps run in one function, in the same order:
//!
//! 1. the rate limit (the class and party [`limits::enforce`] gives the route);
//! 2. the body, within `server.max_body_bytes` (413 beyond it);
//! 3. the JSON, then the handler's own code ([`handlers::status_update`],
//!    [`handlers::match_for`]);
//! 4. all of it within `server.request_timeout` (408); a panic answers 500;
//! 5. the request counted, timed and logged under its route template ([`layers::observe`]).
//!
//! The routes, answers, error shapes and metrics are those of the router: the black-box
//! tests run unchanged against both. Anything unusual (another method, an encoded path
//! segment) is left to the router.

use super::{auth, extract, handlers, layers, limits, ApiError, AppState};
use crate::hub::Hub;
use crate::metrics::RouteSeries;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MATCH_ROUTE: &str = "/api/v1/match";
const STATUS_ROUTE: &str = "/api/v1/miners/{address}/status";

/// Which hot route a request is for.
pub enum Hot {
    Match,
    /// The raw `{address}` segment.
    Status(String),
}

/// What the hot routes need, built once per listener.
pub struct FastRoutes {
    state: AppState,
    enforcer: limits::Enforcer,
    limit: Duration,
    max_body: usize,
    match_series: RouteSeries,
    status_series: RouteSeries,
}

impl FastRoutes {
    pub fn new(hub: Arc<Hub>, limiter: Arc<limits::Limiter>) -> Self {
        let server = &hub.config().server;
        Self {
            limit: layers::request_limit(server.request_timeout),
            match_series: RouteSeries::default(),
            status_series: RouteSeries::default(),
            max_body: server.max_body_bytes,
            enforcer: limits::Enforcer::new(hub.clone(), limiter),
            state: AppState { hub },
        }
    }

    /// The hot route `req` is for, if it is one this module serves.
    pub fn route(req: &hyper::Request<Incoming>) -> Option<Hot> {
        if req.method() != Method::POST {
            return None;
        }
        let path = req.uri().path();
        if path == MATCH_ROUTE {
            return Some(Hot::Match);
        }
        let segment = path
            .strip_prefix("/api/v1/miners/")?
            .strip_suffix("/status")?;
        // What the router would decode or not match at all is left to it.
        let plain = !segment.is_empty() && !segment.contains(['/', '%']);
        plain.then(|| Hot::Status(segment.to_string()))
    }

    /// Answers one request for a hot route.
    pub async fn serve(
        &self,
        hot: Hot,
        req: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> Response {
        let started = Instant::now();
        let (route, series) = match hot {
            Hot::Match => (MATCH_ROUTE, &self.match_series),
            Hot::Status(_) => (STATUS_ROUTE, &self.status_series),
        };
        let work = AssertUnwindSafe(self.answer(hot, req, peer)).catch_unwind();
        tokio::pin!(work);
        // Most requests arrive whole and finish without waiting: they need no timer.
        let outcome = match work.as_mut().now_or_never() {
            Some(done) => done,
            None => match tokio::time::timeout_at((started + self.limit).into(), work).await {
                Ok(done) => done,
                Err(_) => Ok(layers::request_timed_out().into_response()),
            },
        };
        let res = outcome.unwrap_or_else(layers::on_panic);
        layers::observe_in(
            self.state.hub.metrics(),
            Some(series),
            "POST",
            route,
            res.status(),
            started.elapsed(),
        );
        res
    }

    async fn answer(&self, hot: Hot, req: hyper::Request<Incoming>, peer: SocketAddr) -> Response {
        self.steps(hot, req, peer)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    }

    /// The steps of one request; the first refusal is the answer.
    async fn steps(
        &self,
        hot: Hot,
        req: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response, Response> {
        let (parts, body) = req.into_parts();
        let token = extract::bearer(&parts.headers);
        let max = self.max_body;
        match hot {
            Hot::Status(segment) => {
                self.enforcer
                    .admit_status(parts.uri.path(), &parts.headers, peer)
                    .map_err(fail)?;
                let address =
                    extract::miner_in_path(&segment).map_err(|e| fail(ApiError::invalid(e)))?;
                let bytes = extract::read_body(body, max).await.map_err(fail)?;
                let b = extract::parse_json(&bytes).map_err(fail)?;
                handlers::status_update(&self.state, address, token, b)
                    .await
                    .map_err(fail)
            }
            Hot::Match => {
                let known = self
                    .enforcer
                    .admit_match(&parts.headers, peer)
                    .map_err(fail)?;
                let caller =
                    auth::client_caller(&self.state, token, known.as_ref()).map_err(fail)?;
                let bytes = extract::read_body(body, max).await.map_err(fail)?;
                let b = extract::parse_json(&bytes).map_err(fail)?;
                handlers::match_for(&self.state, caller, b)
                    .await
                    .map_err(fail)
            }
        }
    }
}

/// A refusal as the answer it becomes.
fn fail(e: impl IntoResponse) -> Response {
    e.into_response()
}
