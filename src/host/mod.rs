//! Hosts: the thin adapters that run seam actors, and the glue that touches the OS.
//!
//! Everything here may use real clocks, OS randomness, threads, sockets and files; nothing outside
//! this folder and the binary's edge may (`clippy.toml`). Behaviour lives in the actors, not here.
//!
//! * [`Host`]: what the node assembly (`crate::node`) asks of a host: a mailbox before its actor
//!   exists, starting the actor, stopping it, and a signal when any actor failed.
//! * `mailbox`, `context`: the bounded mailbox (with room reserved for timers) and the actor
//!   context, shared by both hosts.
//! * [`task`]: each actor is one (madsim-)tokio task. The simulator's host.
//! * `ractor` (production only): each actor is a ractor actor under one supervisor.
//! * `system`: the OS clock and OS-seeded randomness for production.
//! * `server`, `shutdown`, `listener`: the production node: open storage on files, assemble the
//!   node, serve HTTP with a bound on connections, stop in order on a signal or a failure.

// The hosts are where the OS is touched: exempt from the seam rule (clippy.toml), with every
// submodule (lint levels inherit).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod context;
pub mod frames;
pub mod gossip;
mod mailbox;
pub mod task;

#[cfg(not(madsim))]
pub mod listener;
#[cfg(not(madsim))]
pub mod ractor;
#[cfg(not(madsim))]
pub mod server;
#[cfg(not(madsim))]
mod shutdown;
#[cfg(not(madsim))]
pub mod system;

#[cfg(all(test, not(madsim)))]
mod conformance;

use std::future::Future;
use std::time::Duration;

use rand_chacha::ChaCha12Rng;
use tokio::sync::watch;

use crate::seam::{Actor, Addr};

/// `future`'s output, or `None` if it took longer than `limit` (host time: simulated in the
/// simulator). For the node assembly, which is not an actor but may not touch `tokio::time`.
pub async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, future).await.ok()
}

/// Default bound of an actor's mailbox: senders beyond it are refused, not queued.
pub const MAILBOX_CAPACITY: usize = 1024;

/// Why a host could not start an actor.
#[derive(Debug, thiserror::Error)]
#[error("starting actor {name}: {reason}")]
pub struct SpawnError {
    /// The actor's name.
    pub name: &'static str,
    /// What the host said.
    pub reason: String,
}

/// A host of actors, as the node assembly uses it. Starting is two steps, so that every actor of a
/// node can be built holding every other actor's address: [`Host::mailbox`] makes an address
/// (messages sent to it wait until the actor starts), [`Host::start`] starts the actor behind it.
pub trait Host {
    /// A mailbox whose actor has not started yet.
    type Pending<A: Actor>: Send;
    /// A started actor, kept to stop it.
    type Running: Send;

    /// A mailbox for an actor of type `A` holding up to `capacity` senders' messages (and
    /// `A::TIMERS_MAX` timers), and its address.
    fn mailbox<A: Actor>(&mut self, capacity: usize) -> (Addr<A::Msg>, Self::Pending<A>);

    /// Starts `actor` behind its mailbox, drawing randomness from `rng`.
    fn start<A: Actor>(
        &mut self,
        pending: Self::Pending<A>,
        actor: A,
        rng: ChaCha12Rng,
    ) -> impl Future<Output = Result<Self::Running, SpawnError>> + Send;

    /// Stops a started actor after the messages already in its mailbox (waiting at most
    /// `timeout`), running its `stopped` hook; later sends are refused.
    fn stop(
        &mut self,
        running: Self::Running,
        timeout: Duration,
    ) -> impl Future<Output = ()> + Send;

    /// Becomes `Some(reason)` once any actor of this host has failed (panicked, or declared
    /// [`Context::fail`](crate::seam::Context::fail)).
    fn failed(&self) -> watch::Receiver<Option<String>>;
}
