//! The storage contracts as reusable test suites (object_store's `integration.rs` pattern):
//! one async function per behaviour, and one `*_suite` per role that runs them all against
//! a store, with the backends' legitimate differences passed as arguments. This crate's
//! tests call them for every backend; an out-of-tree backend can call them too.
//!
//! Built only with the `test-util` feature (and for this crate's own tests).

pub mod hot;
