//! The hub-to-hub event protocol on the wire: its own types, apart from the domain's.
//!
//! Hubs of different builds share one bus during a rolling upgrade, so what they send each
//! other is a protocol, not a dump of whatever the domain types look like today: renaming a
//! domain field must not change it. Every event carries the format version `v`; events
//! without one come from builds before versioning, whose format is version 1.
//!
//! Version 1 (JSON, one object per message):
//! `{"from": <instance id>, "v": 1, "kind": <kind>, ...}` with the kinds
//! `miner {address}`, `deleted {address}`, `stats {address, stats}`,
//! `status {address, status}`, `reserved {match_id, address, expires}` and
//! `released {match_id, address}`, and `keys {}` (a client key was created or revoked:
//! reload them all from the durable store; builds before it ignore it with a warning and
//! catch up by their periodic reload). Addresses are `0x` + 40 hex digits, match ids 32
//! lowercase hex digits, times unix milliseconds.

use super::sync::Event;
use crate::domain::scoring::MinerStats;
use crate::domain::{Address, MatchId, MinerStatus, Resources};
use serde::{Deserialize, Serialize};

/// The format this build writes, and the newest it reads.
pub const EVENT_FORMAT: u32 = 1;

fn unversioned() -> u32 {
    1
}

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The publishing hub's instance id. First, so a hub can skip its own events by prefix.
    pub from: String,
    #[serde(default = "unversioned")]
    pub v: u32,
    #[serde(flatten)]
    pub event: WireEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WireEvent {
    Miner {
        address: String,
    },
    Deleted {
        address: String,
    },
    Stats {
        address: String,
        stats: WireStats,
    },
    Status {
        address: String,
        status: WireStatus,
    },
    Reserved {
        match_id: String,
        address: String,
        expires: u64,
    },
    Released {
        match_id: String,
        address: String,
    },
    Keys {},
}

/// A miner's statistics as version 1 sends them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireStats {
    pub successes: f64,
    pub failures: f64,
    pub latency_sum_ms: f64,
    pub latency_count: f64,
    pub consecutive_failures: u32,
    pub last_failure_at: u64,
    pub jobs_total: u64,
    pub jobs_succeeded: u64,
    pub jobs_failed: u64,
    pub as_of: u64,
}

/// A live status as version 1 sends it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireStatus {
    pub available: bool,
    pub current_load: u32,
    pub gpu_utilization: f64,
    pub temperature: Option<f64>,
    pub reported_at: u64,
    /// Optional figures added within version 1: absent when a hub of an earlier build sent
    /// the status, and ignored by such a hub when this one sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_latency_ms: Option<f64>,
}

impl From<MinerStats> for WireStats {
    fn from(s: MinerStats) -> Self {
        Self {
            successes: s.successes,
            failures: s.failures,
            latency_sum_ms: s.latency_sum_ms,
            latency_count: s.latency_count,
            consecutive_failures: s.consecutive_failures,
            last_failure_at: s.last_failure_at,
            jobs_total: s.jobs_total,
            jobs_succeeded: s.jobs_succeeded,
            jobs_failed: s.jobs_failed,
            as_of: s.as_of,
        }
    }
}

impl From<WireStats> for MinerStats {
    fn from(s: WireStats) -> Self {
        Self {
            successes: s.successes,
            failures: s.failures,
            latency_sum_ms: s.latency_sum_ms,
            latency_count: s.latency_count,
            consecutive_failures: s.consecutive_failures,
            last_failure_at: s.last_failure_at,
            jobs_total: s.jobs_total,
            jobs_succeeded: s.jobs_succeeded,
            jobs_failed: s.jobs_failed,
            as_of: s.as_of,
        }
    }
}

impl From<MinerStatus> for WireStatus {
    fn from(s: MinerStatus) -> Self {
        Self {
            available: s.available,
            current_load: s.current_load,
            gpu_utilization: s.gpu_utilization,
            temperature: s.temperature,
            reported_at: s.reported_at,
            memory_used_mb: s.resources.memory_used_mb,
            memory_total_mb: s.resources.memory_total_mb,
            network_latency_ms: s.resources.network_latency_ms,
        }
    }
}

impl From<WireStatus> for MinerStatus {
    fn from(s: WireStatus) -> Self {
        Self {
            available: s.available,
            current_load: s.current_load,
            gpu_utilization: s.gpu_utilization,
            temperature: s.temperature,
            reported_at: s.reported_at,
            resources: Resources {
                memory_used_mb: s.memory_used_mb,
                memory_total_mb: s.memory_total_mb,
                network_latency_ms: s.network_latency_ms,
            },
        }
    }
}

impl From<&Event> for WireEvent {
    fn from(e: &Event) -> Self {
        match *e {
            Event::Miner { address } => Self::Miner {
                address: address.to_string(),
            },
            Event::Deleted { address } => Self::Deleted {
                address: address.to_string(),
            },
            Event::Stats { address, stats } => Self::Stats {
                address: address.to_string(),
                stats: stats.into(),
            },
            Event::Status { address, status } => Self::Status {
                address: address.to_string(),
                status: status.into(),
            },
            Event::Reserved {
                match_id,
                address,
                expires,
            } => Self::Reserved {
                match_id: match_id.to_string(),
                address: address.to_string(),
                expires,
            },
            Event::Released { match_id, address } => Self::Released {
                match_id: match_id.to_string(),
                address: address.to_string(),
            },
            Event::Keys => Self::Keys {},
        }
    }
}

/// Why a message from the bus is not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("not an event: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("event format {0} is newer than this build's ({EVENT_FORMAT})")]
    Version(u32),
    #[error(transparent)]
    Invalid(#[from] crate::domain::Invalid),
}

impl Envelope {
    pub(crate) fn new(from: &str, event: &Event) -> Self {
        Self {
            from: from.to_string(),
            v: EVENT_FORMAT,
            event: event.into(),
        }
    }

    /// Parses a message and checks its version (the sender is not checked here).
    pub(crate) fn parse(payload: &str) -> Result<Self, WireError> {
        let env: Self = serde_json::from_str(payload)?;
        if env.v > EVENT_FORMAT {
            return Err(WireError::Version(env.v));
        }
        Ok(env)
    }

    /// The event in domain terms, its addresses and ids validated.
    pub(crate) fn into_event(self) -> Result<Event, WireError> {
        let addr = |s: &str| s.parse::<Address>();
        let id = |s: &str| s.parse::<MatchId>();
        Ok(match self.event {
            WireEvent::Miner { address } => Event::Miner {
                address: addr(&address)?,
            },
            WireEvent::Deleted { address } => Event::Deleted {
                address: addr(&address)?,
            },
            WireEvent::Stats { address, stats } => Event::Stats {
                address: addr(&address)?,
                stats: stats.into(),
            },
            WireEvent::Status { address, status } => Event::Status {
                address: addr(&address)?,
                status: status.into(),
            },
            WireEvent::Reserved {
                match_id,
                address,
                expires,
            } => Event::Reserved {
                match_id: id(&match_id)?,
                address: addr(&address)?,
                expires,
            },
            WireEvent::Released { match_id, address } => Event::Released {
                match_id: id(&match_id)?,
                address: addr(&address)?,
            },
            WireEvent::Keys {} => Event::Keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> Address {
        "0x00000000000000000000000000000000000000aa"
            .parse()
            .expect("address")
    }

    #[test]
    fn envelope_starts_with_the_sender_carries_its_version_and_round_trips() {
        let event = Event::Stats {
            address: address(),
            stats: MinerStats {
                jobs_total: 3,
                successes: 2.5,
                ..MinerStats::default()
            },
        };
        let s = serde_json::to_string(&Envelope::new("0123456789abcdef", &event)).expect("json");
        // apply_remote skips its own events by this prefix, without parsing.
        assert!(
            s.starts_with("{\"from\":\"0123456789abcdef\",\"v\":1,"),
            "{s}"
        );
        let back = Envelope::parse(&s).expect("parse");
        assert_eq!(back.from, "0123456789abcdef");
        assert_eq!(back.into_event().expect("event"), event);
    }

    /// What builds before versioning sent (the domain types serialised as they were): it
    /// must still be understood during a rolling upgrade.
    #[test]
    fn events_from_peers_without_a_version_still_parse() {
        let old = [
            r#"{"from":"aa","kind":"miner","address":"0x00000000000000000000000000000000000000aa"}"#,
            r#"{"from":"aa","kind":"deleted","address":"0x00000000000000000000000000000000000000aa"}"#,
            r#"{"from":"aa","kind":"stats","address":"0x00000000000000000000000000000000000000aa","stats":{"successes":1.0,"failures":0.0,"latency_sum_ms":120.0,"latency_count":1.0,"consecutive_failures":0,"last_failure_at":0,"jobs_total":1,"jobs_succeeded":1,"jobs_failed":0,"as_of":1700000000000}}"#,
            r#"{"from":"aa","kind":"status","address":"0x00000000000000000000000000000000000000aa","status":{"available":true,"current_load":1,"gpu_utilization":0.5,"temperature":null,"reported_at":1700000000000}}"#,
            r#"{"from":"aa","kind":"reserved","match_id":"00000000000000000000000000000007","address":"0x00000000000000000000000000000000000000aa","expires":1700000030000}"#,
            r#"{"from":"aa","kind":"released","match_id":"00000000000000000000000000000007","address":"0x00000000000000000000000000000000000000aa"}"#,
        ];
        for p in old {
            let env = Envelope::parse(p).expect(p);
            assert_eq!(env.v, 1);
            let e = env.into_event().expect(p);
            assert!(matches!(
                e,
                Event::Miner { .. }
                    | Event::Deleted { .. }
                    | Event::Stats { .. }
                    | Event::Status { .. }
                    | Event::Reserved { .. }
                    | Event::Released { .. }
            ));
        }
        let Event::Stats { stats, .. } = Envelope::parse(old[2])
            .and_then(Envelope::into_event)
            .expect("stats")
        else {
            panic!("not stats");
        };
        assert_eq!(stats.jobs_total, 1);
        assert_eq!(stats.latency_sum_ms, 120.0);
    }

    /// The keys event carries nothing but its kind: no id, name or digest on the bus.
    #[test]
    fn the_keys_event_is_pinned_and_carries_no_key_material() {
        let s = serde_json::to_string(&Envelope::new("ab", &Event::Keys)).expect("json");
        assert_eq!(s, r#"{"from":"ab","v":1,"kind":"keys"}"#);
        let back = Envelope::parse(&s).and_then(Envelope::into_event);
        assert_eq!(back.expect("keys"), Event::Keys);
    }

    #[test]
    fn newer_formats_and_bad_ids_are_refused() {
        let newer = r#"{"from":"aa","v":2,"kind":"miner","address":"0x00000000000000000000000000000000000000aa"}"#;
        assert!(matches!(Envelope::parse(newer), Err(WireError::Version(2))));
        let bad = r#"{"from":"aa","v":1,"kind":"released","match_id":"+0000000000000000000000000000007","address":"0x00000000000000000000000000000000000000aa"}"#;
        assert!(matches!(
            Envelope::parse(bad).and_then(Envelope::into_event),
            Err(WireError::Invalid(_))
        ));
    }
}
