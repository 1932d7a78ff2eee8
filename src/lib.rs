//! poolhub: the pool hub of a decentralized GPU-inference network, in one binary.
//!
//! Miners register what they can run and report their live status; clients ask which miners
//! should run a job; the hub scores every miner from its track record and answers from an
//! in-memory index.
//!
//! Module map (ARCHITECTURE.md has the longer version, with the invariants):
//! * [`domain`]: plain types and pure logic (validation, scoring with thermal derating,
//!   matching, "why not my miner?" reasons, what-if replay, job ids, miner identity by
//!   signature, miners named by AITBC's `miner_id`, AITBC's match and SLA). No I/O, no clock.
//! * [`registry`]: the in-memory index that matching reads.
//! * [`store`]: the durable and hot storage traits, their backends (redb, PostgreSQL; moka,
//!   Redis), the versioned row types, and (feature `test-util`) the contract suites.
//! * [`hub`]: the application service tying index, stores, scoring and keys together; the
//!   background tasks, the sync between hubs, client keys (`hub/keys.rs`), the live event
//!   stream (`hub/stream.rs`), explanations and replay.
//! * [`auth`]: client and admin keys, held by digest and checked in memory.
//! * [`http`]: the thin HTTP adapter (axum): router, extractors, DTOs, one error mapping, the
//!   event stream (SSE), the embedded dashboard and the OpenAPI document generated from the
//!   types (`http::openapi`).
//! * [`server`]: start-up, listeners with header/idle timeouts and a connection cap, graceful
//!   shutdown; [`server::TestHub`] for tests.
//! * [`config`]: the one typed configuration; [`net`]: client addresses behind proxies.
//! * [`metrics`], [`telemetry`], [`systemd`]: Prometheus metrics, logging, sd_notify.
//! * [`tls`]: rustls for PostgreSQL, Redis and the hub's own HTTPS listeners.
//! * [`admin_client`]: the CLI's client for a running hub's admin API.

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
pub mod tls;
