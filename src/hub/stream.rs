//! The live event stream behind `GET /api/v1/events` (Server-Sent Events): registrations,
//! status transitions, matches, outcomes, cooldowns and score changes, as they happen.
//!
//! * **Never slows the hub.** Each subscriber reads a bounded broadcast queue
//!   ([`QUEUE`] events); one that falls further behind is dropped (its stream ends with a
//!   `dropped` event), and the hub never waits for anyone. With nobody watching, an event
//!   costs one atomic load: nothing is formatted or kept.
//! * **Resumable.** The last [`RING`] events are kept while someone watches and for
//!   [`RESUME_WINDOW_MS`] after the last subscriber left, so a client that reconnects with
//!   `Last-Event-ID` gets what it missed; when the ring no longer reaches back that far it
//!   gets a `gap` event naming the ids it lost.

use crate::domain::Address;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events kept for resuming.
pub const RING: usize = 10_000;
/// Events one subscriber may fall behind before it is dropped.
pub const QUEUE: usize = 4096;
/// How long after the last subscriber left events are still kept for a resume.
pub const RESUME_WINDOW_MS: u64 = 5 * 60_000;
/// Most subscribers at once; more are refused (503) rather than served slowly.
pub const MAX_SUBSCRIBERS: usize = 1000;

/// The kinds of event, as `event:` names them and `?types=` filters them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Registered,
    Deregistered,
    Status,
    Match,
    Outcome,
    Cooldown,
    Score,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Registered,
        Kind::Deregistered,
        Kind::Status,
        Kind::Match,
        Kind::Outcome,
        Kind::Cooldown,
        Kind::Score,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Registered => "registered",
            Kind::Deregistered => "deregistered",
            Kind::Status => "status",
            Kind::Match => "match",
            Kind::Outcome => "outcome",
            Kind::Cooldown => "cooldown",
            Kind::Score => "score",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// This kind's bit in a [`Kinds`] set.
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of kinds (a subscriber's `?types=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub const ALL: Kinds = Kinds(0x7f);

    pub fn of(kinds: impl IntoIterator<Item = Kind>) -> Self {
        Kinds(kinds.into_iter().fold(0, |m, k| m | k.bit()))
    }

    pub fn contains(self, k: Kind) -> bool {
        self.0 & k.bit() != 0
    }
}

/// One event: its id (increasing), kind, the miners it concerns (for `?address=`), and its
/// data as JSON.
#[derive(Debug)]
pub struct Record {
    pub id: u64,
    pub kind: Kind,
    pub addresses: Vec<Address>,
    pub data: String,
}

impl Record {
    /// Whether a subscriber with these filters wants it.
    pub fn wanted(&self, kinds: Kinds, address: Option<&Address>) -> bool {
        kinds.contains(self.kind) && address.is_none_or(|a| self.addresses.contains(a))
    }
}

struct Ring {
    next_id: u64,
    kept: VecDeque<Arc<Record>>,
}

/// The hub's event stream.
pub struct EventStream {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Record>>,
    watchers: Arc<AtomicUsize>,
    /// Unix ms when the last subscriber left (0: never had one).
    last_left: Arc<AtomicU64>,
    closed: tokio_util::sync::CancellationToken,
    /// When the sweeper last looked for expired heartbeats and cooldowns.
    swept: AtomicU64,
}

impl Default for EventStream {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(QUEUE);
        Self {
            ring: Mutex::new(Ring {
                next_id: 1,
                kept: VecDeque::new(),
            }),
            tx,
            watchers: Arc::new(AtomicUsize::new(0)),
            last_left: Arc::new(AtomicU64::new(0)),
            closed: tokio_util::sync::CancellationToken::new(),
            swept: AtomicU64::new(0),
        }
    }
}

/// What a new subscriber starts from.
pub struct Subscription {
    /// Kept events after its `Last-Event-ID`, oldest first.
    pub backlog: Vec<Arc<Record>>,
    /// Ids it missed that are no longer kept (first, last).
    pub gap: Option<(u64, u64)>,
    pub live: broadcast::Receiver<Arc<Record>>,
    /// Ends when the hub shuts down.
    pub closed: tokio_util::sync::CancellationToken,
    /// Counts the subscriber until dropped.
    pub guard: Watching,
}

/// A subscriber being counted; dropping it records when it left.
pub struct Watching {
    watchers: Arc<AtomicUsize>,
    last_left: Arc<AtomicU64>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::AcqRel);
        self.last_left.store(super::now_ms(), Ordering::Release);
    }
}

impl EventStream {
    /// Whether events are wanted now: someone watches, or left recently enough to resume.
    pub fn active(&self, now: u64) -> bool {
        if self.watchers.load(Ordering::Acquire) > 0 {
            return true;
        }
        let left = self.last_left.load(Ordering::Acquire);
        left != 0 && now.saturating_sub(left) < RESUME_WINDOW_MS
    }

    /// Records an event (callers check [`active`](Self::active) first, so that nothing is
    /// formatted when nobody watches).
    pub fn emit(&self, kind: Kind, addresses: Vec<Address>, data: serde_json::Value) {
        let mut ring = self.ring.lock();
        let record = Arc::new(Record {
            id: ring.next_id,
            kind,
            addresses,
            data: data.to_string(),
        });
        ring.next_id += 1;
        if ring.kept.len() == RING {
            ring.kept.pop_front();
        }
        ring.kept.push_back(record.clone());
        // Sent under the ring's lock, so a subscriber's backlog and live queue neither
        // overlap nor leave a hole. No receiver is not an error.
        let _ = self.tx.send(record);
    }

    /// A new subscriber, resuming after `last_id` when given; `None` when
    /// [`MAX_SUBSCRIBERS`] are already connected.
    pub fn subscribe(&self, last_id: Option<u64>) -> Option<Subscription> {
        if self.watchers.fetch_add(1, Ordering::AcqRel) >= MAX_SUBSCRIBERS {
            self.watchers.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let guard = Watching {
            watchers: self.watchers.clone(),
            last_left: self.last_left.clone(),
        };
        let ring = self.ring.lock();
        let live = self.tx.subscribe();
        let (backlog, gap) = match last_id {
            None => (Vec::new(), None),
            Some(last) => {
                let backlog: Vec<_> = ring.kept.iter().filter(|r| r.id > last).cloned().collect();
                let oldest = ring.kept.front().map_or(ring.next_id, |r| r.id);
                let gap =
                    (last + 1 < oldest && last < ring.next_id).then(|| (last + 1, oldest - 1));
                (backlog, gap)
            }
        };
        drop(ring);
        Some(Subscription {
            backlog,
            gap,
            live,
            closed: self.closed.clone(),
            guard,
        })
    }

    /// Ends every subscriber's stream (the server is shutting down).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Records a sweep at `now` and answers when the previous one was (0: none).
    pub fn swept(&self, now: u64) -> u64 {
        self.swept.swap(now, Ordering::AcqRel)
    }

    pub fn subscribers(&self) -> usize {
        self.watchers.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn a(i: u8) -> Address {
        Address::from_bytes([i; 20])
    }

    #[test]
    fn a_resume_gets_what_it_missed_and_a_gap_beyond_the_ring() {
        let s = EventStream::default();
        let first = s.subscribe(None).expect("subscribe");
        for i in 0..(RING as u64 + 5) {
            s.emit(Kind::Status, vec![a(1)], json!({ "i": i }));
        }
        drop(first);
        assert!(s.active(super::super::now_ms()));
        let r = s.subscribe(Some(RING as u64)).expect("resume");
        assert_eq!(r.backlog.len(), 5);
        assert_eq!(r.backlog[0].id, RING as u64 + 1);
        assert_eq!(r.gap, None);
        let r = s.subscribe(Some(2)).expect("resume from long ago");
        assert_eq!(r.gap, Some((3, 5)));
        assert_eq!(r.backlog.len(), RING);
    }

    #[test]
    fn nothing_is_wanted_without_a_watcher_and_filters_select() {
        let s = EventStream::default();
        assert!(!s.active(1));
        let rec = Record {
            id: 1,
            kind: Kind::Match,
            addresses: vec![a(1), a(2)],
            data: String::new(),
        };
        assert!(rec.wanted(Kinds::ALL, Some(&a(2))));
        assert!(!rec.wanted(Kinds::ALL, Some(&a(3))));
        assert!(!rec.wanted(Kinds::of([Kind::Outcome]), None));
        assert!(rec.wanted(Kinds::of([Kind::Outcome, Kind::Match]), None));
    }

    #[test]
    fn subscribers_are_capped() {
        let s = EventStream::default();
        let held: Vec<_> = (0..MAX_SUBSCRIBERS).map(|_| s.subscribe(None)).collect();
        assert!(held.iter().all(Option::is_some));
        assert!(s.subscribe(None).is_none());
        drop(held);
        assert_eq!(s.subscribers(), 0);
        assert!(s.subscribe(None).is_some());
    }
}

/// The hub's side: what each event says. Every `emit_*` checks first whether anyone
/// watches (one atomic load), so the request paths pay nothing otherwise.
mod emit {
    use super::Kind;
    use crate::domain::{Address, MatchId, MinerStatus, OutcomeRecord};
    use crate::hub::{now_ms, Hub};
    use crate::registry::MinerView;
    use serde_json::json;

    /// Score changes smaller than this (on the 0–`max_score` scale, as a fraction of it)
    /// are not streamed: decay moves every score a little all the time.
    const SCORE_STEP: f64 = 0.001;

    impl Hub {
        /// The event stream (for `GET /api/v1/events`).
        pub fn events(&self) -> &super::EventStream {
            &self.events
        }

        pub(crate) fn emit_registered(&self, address: &Address, new: bool) {
            if !self.events.active(now_ms()) {
                return;
            }
            let models = self
                .registry
                .get(address)
                .map(|v| v.miner.capabilities.models.clone())
                .unwrap_or_default();
            self.events.emit(
                Kind::Registered,
                vec![*address],
                json!({"address": address, "new": new, "models": models}),
            );
        }

        pub(crate) fn emit_deregistered(&self, address: &Address) {
            if self.events.active(now_ms()) {
                self.events.emit(
                    Kind::Deregistered,
                    vec![*address],
                    json!({"address": address}),
                );
            }
        }

        /// A status event when the miner comes online or goes offline, or becomes available
        /// or unavailable; plain heartbeats are not streamed.
        pub(crate) fn emit_status_change(
            &self,
            address: &Address,
            before: Option<MinerStatus>,
            after: &MinerStatus,
        ) {
            let now = now_ms();
            if !self.events.active(now) {
                return;
            }
            let hb = self.heartbeat_timeout_ms();
            let was_online = before.is_some_and(|b| now.saturating_sub(b.reported_at) <= hb);
            let was_available = before.is_some_and(|b| b.available);
            if was_online && was_available == after.available {
                return;
            }
            self.events.emit(
                Kind::Status,
                vec![*address],
                json!({"address": address, "online": true, "was_online": was_online,
                       "available": after.available, "current_load": after.current_load,
                       "temperature": after.temperature}),
            );
        }

        /// Miners whose heartbeat expired (found by the sweeper).
        pub(crate) fn emit_offline(&self, addresses: &[Address]) {
            if addresses.is_empty() || !self.events.active(now_ms()) {
                return;
            }
            for a in addresses {
                self.events.emit(
                    Kind::Status,
                    vec![*a],
                    json!({"address": a, "online": false, "was_online": true}),
                );
            }
        }

        pub(crate) fn emit_match(
            &self,
            id: MatchId,
            miners: &[crate::hub::Offer],
            reserved: bool,
            panic: bool,
            took: std::time::Duration,
        ) {
            let addresses: Vec<Address> = miners.iter().map(|m| m.address).collect();
            self.events.emit(
                Kind::Match,
                addresses.clone(),
                json!({"match_id": id, "miners": addresses, "reserved": reserved,
                       "panic": panic, "duration_us": took.as_micros() as u64}),
            );
        }

        pub(crate) fn emit_outcome(
            &self,
            record: &OutcomeRecord,
            address: &Address,
            before: &MinerView,
            score: f64,
            cooldown_until: u64,
        ) {
            self.events.emit(
                Kind::Outcome,
                vec![*address],
                json!({"match_id": record.match_id, "address": address,
                       "success": record.success, "latency_ms": record.latency_ms}),
            );
            let was_cooling = before.cooldown_until > record.at;
            if cooldown_until > record.at && !was_cooling {
                self.events.emit(
                    Kind::Cooldown,
                    vec![*address],
                    json!({"address": address, "state": "started",
                           "cooldown_until": cooldown_until}),
                );
            }
            let max = self.tuning().scoring.max_score;
            if (score - before.score.value).abs() >= SCORE_STEP * max {
                self.events.emit(
                    Kind::Score,
                    vec![*address],
                    json!({"address": address, "score": score,
                           "previous": before.score.value}),
                );
            }
        }

        /// Cooldowns that ran out (found by the sweeper).
        pub(crate) fn emit_cooldowns_ended(&self, addresses: &[Address]) {
            if addresses.is_empty() || !self.events.active(now_ms()) {
                return;
            }
            for a in addresses {
                self.events.emit(
                    Kind::Cooldown,
                    vec![*a],
                    json!({"address": a, "state": "ended"}),
                );
            }
        }
    }
}
