//! A match and what became of it: the words the hub, the stores and the API share.
//!
//! * [`MatchId`]: names one match; 128 random bits, always written as 32 lowercase hex digits.
//! * [`MatchTicket`]: what the hot store remembers of a match (which miners it offered), so
//!   that only those miners' outcomes are accepted.
//! * [`OutcomeRecord`]: one job outcome the hub accepted, as kept in the history.
//!   (A client's unchecked claim is an `OutcomeReport` in the hub; the scoring engine sees
//!   only the [`OutcomeSample`] part of a record.)

use crate::domain::miner::{Address, Invalid};
use crate::domain::scoring::OutcomeSample;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// 128 random bits naming one match, rendered as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatchId(pub u128);

impl MatchId {
    /// The 32 hex digits, written into `buf` without the formatting machinery (a match
    /// answer writes one per request).
    pub fn encode<'b>(&self, buf: &'b mut [u8; 32]) -> &'b str {
        // Cannot fail: the buffer is exactly twice the input's length, and hex is ASCII.
        let _ = hex::encode_to_slice(self.0.to_be_bytes(), buf);
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

impl fmt::Display for MatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode(&mut [0; 32]))
    }
}

impl Serialize for MatchId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.encode(&mut [0; 32]))
    }
}

impl FromStr for MatchId {
    type Err = Invalid;

    /// Accepts only the form `Display` writes, so one match has one name everywhere (the
    /// ledger, the history, the logs): `from_str_radix` alone would also take a leading `+`
    /// and uppercase digits.
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let canonical = |b: &u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
        if s.len() != 32 || !s.as_bytes().iter().all(canonical) {
            return Err(invalid_match_id());
        }
        u128::from_str_radix(s, 16)
            .map(MatchId)
            .map_err(|_| invalid_match_id())
    }
}

fn invalid_match_id() -> Invalid {
    Invalid::new(
        "match_id",
        "must be the 32 lowercase hex digits a match answer returned",
    )
}

/// A match the hub made: which miners it offered, and for whom.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchTicket {
    pub id: MatchId,
    pub offered: Vec<Address>,
    pub created_at: u64,
    /// The key that made the match, whose outcomes alone count for it (an outcome is
    /// evidence only from the party that used the miner). `None`: made without a key (open
    /// mode), so anyone may report. See [`crate::hub`]'s `owner_of` for the operator's id.
    pub client: Option<u64>,
}

/// One reported job outcome, kept as history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// The match, in [`MatchId`]'s canonical form.
    pub match_id: String,
    pub address: Address,
    pub success: bool,
    pub latency_ms: Option<f64>,
    /// Unix ms at which the hub accepted it.
    pub at: u64,
    pub error: Option<String>,
}

impl OutcomeRecord {
    /// The outcome as the scoring engine sees it.
    pub fn sample(&self) -> OutcomeSample {
        OutcomeSample {
            success: self.success,
            latency_ms: self.latency_ms,
            at: self.at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_id_round_trips_in_canonical_form() {
        let id = MatchId(0x42);
        let s = id.to_string();
        assert_eq!(s, "00000000000000000000000000000042");
        assert_eq!(s.parse::<MatchId>().unwrap(), id);
        let id = MatchId(u128::MAX - 5);
        assert_eq!(id.to_string().parse::<MatchId>().unwrap(), id);
    }

    /// Defect 7: `from_str_radix` takes a leading `+` and uppercase digits, so several
    /// strings named one match and the history stored whichever the client sent.
    #[test]
    fn match_id_rejects_every_non_canonical_form() {
        for s in [
            "+0000000000000000000000000000042",
            "0000000000000000000000000000ABCD",
            "0000000000000000000000000000aBcd",
            "-0000000000000000000000000000042",
            " 000000000000000000000000000042 ",
            "0x000000000000000000000000000042",
            "0000000000000000000000000000042",
            "000000000000000000000000000000042",
            "",
        ] {
            let e = s.parse::<MatchId>().expect_err(s);
            assert_eq!(e.field, "match_id", "{s}");
        }
    }
}
