//! `GET /api/v1/events`: the hub's event stream as Server-Sent Events (see
//! [`crate::hub::stream`]). `?types=match,outcome` and `?address=0x…` filter it;
//! `Last-Event-ID` (or `?last_event_id=`) resumes it. A comment every 15 s keeps proxies
//! from closing an idle stream. Same role as a match.
//!
//! The comment is also what keeps the stream inside `server.idle_timeout`: once its head is
//! sent, a stream is an answer being written, and each write counts as activity. So the
//! comment comes at least twice per idle timeout, and a subscriber that stops reading (its
//! writes stall) is closed by the idle timeout like any other stalled connection.

use super::auth::ClientCaller;
use super::error::ApiError;
use super::AppState;
use crate::domain::{Address, Invalid};
use crate::hub::stream::{Kind, Kinds, Record, Subscription};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often an idle stream gets a comment, at most.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The comment's interval: [`KEEP_ALIVE`], or half of `server.idle_timeout` when that is
/// shorter, so a quiet stream always writes within the idle timeout.
fn keep_alive(idle_timeout_secs: u64) -> Duration {
    KEEP_ALIVE.min(Duration::from_millis(
        idle_timeout_secs.saturating_mul(500).max(100),
    ))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    types: Option<String>,
    address: Option<String>,
    last_event_id: Option<String>,
}

fn kinds(types: Option<&str>) -> Result<Kinds, Invalid> {
    let Some(list) = types.filter(|t| !t.trim().is_empty()) else {
        return Ok(Kinds::ALL);
    };
    let mut out = Vec::new();
    for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        out.push(Kind::parse(t).ok_or_else(|| {
            let all: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            Invalid::new("types", format!("{t:?} is not one of {}", all.join(", ")))
        })?);
    }
    Ok(Kinds::of(out))
}

fn record_event(r: &Record) -> Event {
    Event::default()
        .id(r.id.to_string())
        .event(r.kind.as_str())
        .data(&r.data)
}

struct Feed {
    dropped: prometheus::IntCounter,
    pending: VecDeque<Event>,
    sub: Subscription,
    kinds: Kinds,
    address: Option<Address>,
    done: bool,
}

impl Feed {
    async fn next(&mut self) -> Option<Event> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        if self.done {
            return None;
        }
        loop {
            let r: Result<Arc<Record>, RecvError> = tokio::select! {
                () = self.sub.closed.cancelled() => return None,
                r = self.sub.live.recv() => r,
            };
            match r {
                Ok(rec) if rec.wanted(self.kinds, self.address.as_ref()) => {
                    return Some(record_event(&rec))
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    // Too slow: it is dropped rather than let the queue grow. It may
                    // reconnect with Last-Event-ID and resume from the ring.
                    self.done = true;
                    self.dropped.inc();
                    return Some(
                        Event::default()
                            .event("dropped")
                            .data(format!("{{\"missed\":{n},\"reason\":\"too slow\"}}")),
                    );
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

pub async fn events(
    State(state): State<AppState>,
    ClientCaller(_caller): ClientCaller,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let kinds = kinds(q.types.as_deref())?;
    let address = match q.address.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => Some(
            a.parse::<Address>()
                .map_err(|_| Invalid::new("address", "must be 0x followed by 40 hex digits"))?,
        ),
        None => None,
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.last_event_id);
    let last = match last.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            Invalid::new("Last-Event-ID", "must be the id of an event this hub sent")
        })?),
        None => None,
    };
    let Some(sub) = state.hub.events().subscribe(last) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            "the event stream has as many subscribers as it serves; try again later",
        ));
    };
    let mut pending = VecDeque::new();
    if let Some((first, last)) = sub.gap {
        pending.push_back(
            Event::default()
                .event("gap")
                .data(format!("{{\"first\":{first},\"last\":{last}}}")),
        );
    }
    pending.extend(
        sub.backlog
            .iter()
            .filter(|r| r.wanted(kinds, address.as_ref()))
            .map(|r| record_event(r)),
    );
    let feed = Feed {
        dropped: state.hub.metrics().event_subscribers_dropped.clone(),
        pending,
        sub,
        kinds,
        address,
        done: false,
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        f.next().await.map(|e| (Ok::<_, Infallible>(e), f))
    });
    let every = keep_alive(state.hub.config().server.idle_timeout);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(every).text("keep-alive"))
        .into_response())
}
