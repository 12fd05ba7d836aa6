//! What every [`Context`] does the same way, written once: the clock, the actor's RNG, its own
//! address and the failure it declared live in a [`ContextCore`]; a host supplies the parts that
//! differ (timers, blocking work, the backlog) by implementing [`ContextHost`], and gets
//! [`Context`] from the blanket implementation here.

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha12Rng;

use super::{Addr, Clock, Context};

/// The state every context holds.
pub struct ContextCore<M> {
    clock: Arc<dyn Clock>,
    rng: ChaCha12Rng,
    myself: Addr<M>,
    failed: Option<String>,
}

impl<M> ContextCore<M> {
    /// A context core for the actor at `myself`, reading `clock`, drawing from `rng`.
    pub fn new(clock: Arc<dyn Clock>, rng: ChaCha12Rng, myself: Addr<M>) -> Self {
        ContextCore {
            clock,
            rng,
            myself,
            failed: None,
        }
    }

    /// The reason the actor gave in [`Context::fail`], if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }
}

/// What a host adds to a [`ContextCore`] to make a [`Context`].
pub trait ContextHost<M> {
    /// The shared state.
    fn core(&self) -> &ContextCore<M>;
    /// The shared state, mutably.
    fn core_mut(&mut self) -> &mut ContextCore<M>;
    /// See [`Context::schedule`].
    fn schedule(&mut self, after: Duration, msg: M);
    /// See [`Context::blocking`].
    fn blocking(&mut self, work: &mut dyn FnMut());
    /// See [`Context::backlog`].
    fn backlog(&self) -> usize;
}

impl<M: 'static, H: ContextHost<M>> Context<M> for H {
    fn clock(&self) -> &dyn Clock {
        &*self.core().clock
    }
    fn rng(&mut self) -> &mut ChaCha12Rng {
        &mut self.core_mut().rng
    }
    fn myself(&self) -> &Addr<M> {
        &self.core().myself
    }
    fn schedule(&mut self, after: Duration, msg: M) {
        ContextHost::schedule(self, after, msg);
    }
    fn blocking(&mut self, work: &mut dyn FnMut()) {
        ContextHost::blocking(self, work);
    }
    fn fail(&mut self, reason: String) {
        self.core_mut().failed = Some(reason);
    }
    fn backlog(&self) -> usize {
        ContextHost::backlog(self)
    }
}
