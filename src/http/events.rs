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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Comma-separated event types (default: all): registered, deregistered, status, match,
    /// outcome, cooldown, score.
    #[param(
        pattern = "^((registered|deregistered|status|match|outcome|cooldown|score)(,(registered|deregistered|status|match|outcome|cooldown|score))*)?$"
    )]
    types: Option<String>,
    /// Only events about this miner.
    #[param(value_type = Option<Address>)]
    address: Option<String>,
    /// Resume after this event id (for clients that cannot send `Last-Event-ID`).
    #[param(pattern = "^([0-9]{1,19})?$")]
    last_event_id: Option<String>,
}

fn kinds(types: Option<&str>) -> Result<Kinds, Invalid> {
    let Some(list) = types.filter(|t| !t.is_empty()) else {
        return Ok(Kinds::ALL);
    };
    let mut out = Vec::new();
    // Exactly as documented: names separated by commas, nothing around them.
    for t in list.split(',') {
        out.push(Kind::parse(t).ok_or_else(|| {
            let all: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            Invalid::new("types", format!("{t:?} is not one of {}", all.join(", ")))
        })?);
    }
    Ok(Kinds::of(out))
}

/// One Server-Sent Event as the stream writes it (the OpenAPI document's schema for
/// `text/event-stream`; the keep-alive comments are not events).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Documentation only: `Event` writes the frames.
pub struct SseEvent {
    /// The event's sequence number: send it back as `Last-Event-ID` to resume. A `gap`
    /// event has none.
    #[schema(pattern = "^[0-9]+$")]
    id: Option<String>,
    /// registered, deregistered, status, match, outcome, cooldown, score; or gap (events
    /// were lost between `first` and `last`).
    #[schema(pattern = "^(registered|deregistered|status|match|outcome|cooldown|score|gap)$")]
    event: String,
    /// The event's JSON object.
    data: String,
}

/// An event id sent back to resume from: 1 to 19 digits (as the hub writes them), or empty
/// for none.
fn event_id(field: &str, raw: &str) -> Result<Option<u64>, Invalid> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid::new(
            field,
            "must be the id of an event this hub sent",
        ));
    }
    Ok(raw.parse::<u64>().ok())
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

#[utoipa::path(get, path = "/api/v1/events", tag = "matching",
    params(EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id", pattern = "^([0-9]{1,19})?$")),
    security(("client_key" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: registered, deregistered, status, match, outcome, cooldown, score (and gap after a lost stretch)", content_type = "text/event-stream", body = SseEvent),
        (status = 401, description = "No client key (auth.clients = \"keys\")", body = super::error::ErrorBody),
        (status = 403, description = "Not a client key", body = super::error::ErrorBody),
        (status = 503, description = "Too many subscribers", body = super::error::ErrorBody),
    ))]
pub async fn events(
    State(state): State<AppState>,
    ClientCaller(_caller): ClientCaller,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let kinds = kinds(q.types.as_deref())?;
    let address = match q.address.as_deref() {
        Some(a) => Some(
            a.parse::<Address>()
                .map_err(|_| Invalid::new("address", "must be 0x followed by 40 hex digits"))?,
        ),
        None => None,
    };
    // Both are checked; the header (what EventSource sends on reconnecting) wins.
    let header = headers
        .get("last-event-id")
        .map(|v| event_id("Last-Event-ID", v.to_str().unwrap_or("?")))
        .transpose()?
        .flatten();
    let query = q
        .last_event_id
        .as_deref()
        .map(|v| event_id("last_event_id", v))
        .transpose()?
        .flatten();
    let last = header.or(query);
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
    let max_age = state.hub.config().server.event_stream_max_age;
    let deadline =
        (max_age > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(max_age));
    let stream = futures_util::stream::unfold(feed, move |mut f| async move {
        let next = match deadline {
            // At the deadline the stream ends; the client reconnects with Last-Event-ID.
            Some(at) => tokio::time::timeout_at(at, f.next()).await.ok().flatten(),
            None => f.next().await,
        };
        next.map(|e| (Ok::<_, Infallible>(e), f))
    });
    let every = keep_alive(state.hub.config().server.idle_timeout);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(every).text("keep-alive"))
        .into_response())
}
