//! Who is calling: client and admin keys, checked in memory.
//!
//! Matches and outcomes are what scores are made of, so with `auth.clients = "keys"` only a
//! holder of a client (or admin) key may request them. Keys are created by the admin, shown
//! once, and stored only as SHA-256 digests in the durable store, so every hub sharing it
//! accepts the same keys. Each hub keeps the digests in a [`KeyRing`]: a request's key costs
//! one SHA-256 and one hash-map lookup, never a store round trip.

mod keys;

pub use keys::{digest, new_secret, ApiKey, Caller, KeyRing, Role};
