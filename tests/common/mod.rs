//! Test harness shared by the integration tests (and by `benches/http.rs`, which includes it with
//! `#[path]`): runs the real `kvs` binary on an ephemeral loopback port in a temporary directory,
//! and talks HTTP to it.
//!
//! It is split by concept: `process` (child processes and bounded waits), `node` (a configured
//! node on its own directory) and `http` (the client); everything is re-exported here, so callers
//! name `common::Node`, `common::Process` and so on.
//!
//! * [`Node`]: one node process with its own `config.yaml` and data directory. It parses the port
//!   from the `listening addr=` log line (bounded wait), keeps draining stderr so the pipe never
//!   fills, and can be stopped by signal, killed with SIGKILL and restarted on the same data.
//!   Dropping a `Node` kills its process: no test leaks one.
//! * [`Process`]: any spawned `kvs` process whose stderr is collected on a thread (and, through
//!   [`SpawnOptions`], handed line by line to a callback).
//! * [`Http`] / [`Resp`]: a `ureq` agent that never treats a status as an error, and the response
//!   as (status, content type, bytes), with helpers to assert the `{"error": "..."}` shape.
//! * [`run_kvs`]: runs `kvs` to completion (client commands, config errors) within a deadline.
//!
//! Every wait is bounded: a node that never logs its address, never exits or a client that never
//! returns fails the test instead of hanging it. Only 127.0.0.1 addresses are ever used.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

mod http;
mod node;
mod process;

// Like the items, a re-export may go unused in one test binary (the bench has no use for `http`).
#[allow(unused_imports)]
pub use self::{http::*, node::*, process::*};
