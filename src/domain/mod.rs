//! Plain types and pure logic: no I/O, no clock, no HTTP. Everything here is a function of
//! its arguments, which is what makes it unit-, property- and benchmark-testable.
//!
//! * [`miner`]: who a miner is, what it can run, what it reports.
//! * [`scoring`]: statistics, factors and the score, cooldowns.
//! * [`matching`]: candidates in, offers out (and panic mode).
//! * [`explain`]: why each miner was or was not offered.
//! * [`replay`]: the outcome history scored again under another configuration.
//! * [`job`]: a match's id and ticket, and the outcome record kept as history.
//! * [`profile`]: miners known by name (AITBC's `miner_id`) and their reserved addresses.
//! * [`aitbc`]: AITBC's match by requirements and its SLA verdict.

pub mod aitbc;
pub mod explain;
pub mod identity;
pub mod job;
pub mod matching;
pub mod miner;
pub mod profile;
pub mod replay;
pub mod scoring;

pub use job::{MatchId, MatchTicket, OutcomeRecord};
pub use miner::{Address, Capabilities, Endpoint, Invalid, Miner, MinerStatus, Resources};
pub use profile::Profile;
pub use scoring::{Availability, MinerStats, Score, ScoringParams};
