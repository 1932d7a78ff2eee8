//! Who may call what: the caller's key, taken from `Authorization: Bearer …` and checked
//! against the hub's in-memory [`KeyRing`](crate::auth::KeyRing).
//!
//! * [`ClientCaller`] guards the routes whose requests make scores (match, outcomes). With
//!   `auth.clients = "open"` anyone passes (a valid key is still recognised, so its matches
//!   are its own); with `"keys"` a request without a key gets 401, and one whose bearer is
//!   not a live client or admin key (a miner's token, a revoked key) gets 403.
//! * [`AdminCaller`] guards the admin routes: the operator's secret or an admin-role key.

use super::extract::Bearer;
use super::{ApiError, AppState};
use crate::auth::{Caller, Role};
use crate::config::ClientAuth;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

fn unauthorized(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{what} needs `Authorization: Bearer <key>`"),
    )
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The caller of a client route: `None` when clients are open and no key was given.
pub struct ClientCaller(pub Option<Caller>);

impl FromRequestParts<AppState> for ClientCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Bearer(token) = Bearer::from_request_parts(parts, state).await?;
        let known = parts.extensions.get::<super::limits::KnownCaller>();
        client_caller(state, token.as_deref(), known).map(Self)
    }
}

/// The caller of a client route from its bearer token; `known` is the caller the rate-limit
/// check already looked up for this request, if it did (the key is not hashed twice).
pub(super) fn client_caller(
    state: &AppState,
    token: Option<&str>,
    known: Option<&super::limits::KnownCaller>,
) -> Result<Option<Caller>, ApiError> {
    let caller = match known {
        Some(known) => known.0.clone(),
        None => token.and_then(|t| state.hub.keys().caller(t)),
    };
    match state.hub.config().auth.clients {
        ClientAuth::Open => Ok(caller),
        ClientAuth::Keys => match (token, caller) {
            (None, _) => Err(unauthorized("this route")),
            (Some(_), None) => Err(forbidden(
                "the bearer is not a valid client key (a miner's token, or a revoked or \
                 unknown key)",
            )),
            (Some(_), Some(c)) => Ok(Some(c)),
        },
    }
}

/// The caller of an admin route: always an admin.
pub struct AdminCaller(pub Caller);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Bearer(token) = Bearer::from_request_parts(parts, state).await?;
        let token = token.ok_or_else(|| unauthorized("the admin API"))?;
        match state.hub.keys().caller(&token) {
            Some(c) if c.role() == Role::Admin => Ok(Self(c)),
            Some(_) => Err(forbidden("a client key cannot use the admin API")),
            None => Err(forbidden("the bearer is not an admin key")),
        }
    }
}
