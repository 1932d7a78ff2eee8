//! poolhub: the pool hub of a decentralized GPU-inference network, in one binary.
//!
//! Miners register what they can run and report their live status; clients ask which miners
//! should run a job; the hub scores every miner from its track record and answers from an
//! in-memory index.
//!
//! Module map:
//! * [`domain`]: plain types and pure logic (validation, scoring, matching). No I/O.
//! * [`registry`]: the in-memory index that matching reads.
//! * [`store`]: the durable and hot storage traits and their backends (redb, moka).
//! * [`hub`]: the application service tying index, stores and scoring together (and client
//!   keys: created, revoked and reloaded in `hub/keys.rs`).
//! * [`auth`]: the in-memory key ring every client and admin request is checked against;
//!   [`admin_client`]: the CLI's client for the admin API (`poolhub keys`).
//! * [`http`]: the thin HTTP adapter (axum).
//! * [`config`]: the one typed configuration.
//! * [`metrics`], [`telemetry`]: Prometheus metrics and logging.
//! * [`server`]: start-up, listeners, graceful shutdown; [`server::TestHub`] for tests.

pub mod admin_client;
pub mod auth;
pub mod config;
pub mod domain;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod registry;
pub mod server;
pub mod store;
pub mod systemd;
pub mod telemetry;
