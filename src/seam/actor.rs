//! The [`Actor`] trait and the [`Context`] it is handed: the whole of the seam in two traits.

use std::time::Duration;

use rand_chacha::ChaCha12Rng;

use super::{Addr, Clock};

/// A component with private state that changes only by handling its messages one at a time.
///
/// Handlers are synchronous: an actor never awaits. Anything that blocks (a durable commit) goes
/// through [`Context::blocking`], and the host decides how to keep it from starving other work.
pub trait Actor: Send + 'static {
    /// The messages this actor understands.
    type Msg: Send + 'static;

    /// A short name for logs and supervision reports.
    const NAME: &'static str;

    /// The most timers ([`Context::schedule`]) this actor has pending at once. The host reserves
    /// that much room in the mailbox, so a timer is delivered even when senders have filled it;
    /// scheduling more is a bug in the actor and panics (a component failure).
    const TIMERS_MAX: usize = 4;

    /// Runs once, before the first message.
    fn started(&mut self, _ctx: &mut dyn Context<Self::Msg>) {}

    /// Handles one message.
    fn handle(&mut self, ctx: &mut dyn Context<Self::Msg>, msg: Self::Msg);

    /// Runs once after the mailbox was closed and every message already in it was handled: the
    /// place to finish in-flight work before the actor is dropped.
    fn stopped(&mut self, _ctx: &mut dyn Context<Self::Msg>) {}
}

/// What a host gives an actor while it handles a message.
///
/// Implementers must guarantee: `wall_ms` and `monotonic` come from the host's [`Clock`] (never the
/// OS directly, so the simulator can skew one node); `rng` is seeded by the host (from the run seed
/// in the simulator, so a seed replays bit-for-bit); a message given to `schedule` is delivered to
/// this actor's own mailbox after at least `after` of the host's monotonic time, unless the actor
/// has stopped, even when the mailbox is full (timers have reserved room: [`Actor::TIMERS_MAX`]);
/// `backlog` counts the messages other senders left waiting in this actor's mailbox at the time of
/// the call (fired timers are not counted).
pub trait Context<M> {
    /// This node's clock (monotonic time for timers, skewable wall time for versions).
    fn clock(&self) -> &dyn Clock;

    /// The actor's deterministic random number generator.
    fn rng(&mut self) -> &mut ChaCha12Rng;

    /// The actor's own address, to hand out to others.
    fn myself(&self) -> &Addr<M>;

    /// Delivers `msg` to this actor after `after` (a timer), even if the mailbox is full then.
    /// At most [`Actor::TIMERS_MAX`] may be pending at once.
    fn schedule(&mut self, after: Duration, msg: M);

    /// Runs `work`, which blocks the thread (a durable commit), in a way that does not starve the
    /// host's other work: the ractor host moves its worker thread aside (`block_in_place`), the
    /// simulator just runs it. Everything else a handler does must be quick and non-blocking.
    fn blocking(&mut self, work: &mut dyn FnMut());

    /// Stops this actor as failed, after the current message. The host treats it like a crash of
    /// the component: production stops the node (see `host::ractor`), the simulator reports it to
    /// the scenario. Messages still queued are dropped, so their askers get an error at once.
    /// For states an actor cannot safely continue from (its disk refused a commit).
    fn fail(&mut self, reason: String);

    /// How many messages wait in the mailbox right now, behind the one being handled. Batching
    /// actors (storage's group commit) flush when it reaches zero, since every write that was
    /// waiting has then joined the batch, and read it after a commit to learn how many writes
    /// arrived meanwhile.
    fn backlog(&self) -> usize;
}
