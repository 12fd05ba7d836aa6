//! kvs: an eventually consistent, clustered key-value store whose components are message-passing
//! actors written once and run both in production (ractor + tokio) and in a deterministic simulator
//! (madsim).
//!
//! Where things are decided:
//! * [`seam`]: the actor trait and the context it runs against (clock, RNG, timers, mailboxes).
//! * [`host`]: the adapters that run actors (ractor; madsim-tokio tasks) and the OS glue.
//! * [`storage`]: the redb-backed store: group-committing writer actor, snapshot readers.
//! * [`api`]: the HTTP interface (KVS-compatible), a plain axum `Router`.
//! * [`config`]: YAML configuration with KVS's keys and defaults.
//! * [`node`]: the one node assembly both worlds run: actors created, connected, started, stopped.
//! * [`limits`]: the size bounds (key, value, node id) the others derive from.
//! * `cli`: the `kvs put|get|delete|members|health` client.

pub mod api;
pub mod cluster;
pub mod config;
pub mod host;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod seam;
pub mod storage;
pub mod sync;

#[cfg(not(madsim))]
pub mod cli;
#[cfg(not(madsim))]
pub mod telemetry;
