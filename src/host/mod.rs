//! Hosts: the thin adapters that run seam actors, and the glue that touches the OS.
//!
//! Everything here may use real clocks, OS randomness, threads, sockets and files; nothing outside
//! this folder and the binary's edge may (`clippy.toml`). Behaviour lives in the actors, not here.
//!
//! * [`task`]: each actor is one (madsim-)tokio task with a bounded mailbox. The simulator's host.
//! * `ractor` (production only): each actor is a ractor actor under one supervisor.
//! * `system`: the OS clock and OS-seeded randomness for production.
//! * `server`: the production node: open storage on a file, start actors, serve HTTP, shut down.

// The hosts are where the OS is touched: exempt from the seam rule (clippy.toml), with every
// submodule (lint levels inherit).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod task;

#[cfg(not(madsim))]
pub mod ractor;
#[cfg(not(madsim))]
pub mod server;
#[cfg(not(madsim))]
pub mod system;

/// Default bound of an actor's mailbox: senders beyond it are refused, not queued.
pub const MAILBOX_CAPACITY: usize = 1024;
