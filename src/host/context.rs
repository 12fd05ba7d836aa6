//! The one [`Context`](crate::seam::Context) both hosts hand their actors: the seam's shared core,
//! timers and backlog through the actor's [`Door`], and the host's way of running blocking work.

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha12Rng;

use super::mailbox::Door;
use crate::seam::{Addr, Clock, ContextCore, ContextHost};

/// How a host runs work that blocks its thread.
pub type Blocking = fn(&mut dyn FnMut());

/// A hosted actor's context.
pub struct HostContext<M> {
    core: ContextCore<M>,
    door: Arc<Door<M>>,
    blocking: Blocking,
}

impl<M: Send + 'static> HostContext<M> {
    /// The context of the actor behind `door`.
    pub fn new(
        clock: Arc<dyn Clock>,
        rng: ChaCha12Rng,
        door: Arc<Door<M>>,
        blocking: Blocking,
    ) -> Self {
        let myself = Addr::new(Arc::clone(&door) as _);
        HostContext {
            core: ContextCore::new(clock, rng, myself),
            door,
            blocking,
        }
    }
}

impl<M: Send + 'static> ContextHost<M> for HostContext<M> {
    fn core(&self) -> &ContextCore<M> {
        &self.core
    }
    fn core_mut(&mut self) -> &mut ContextCore<M> {
        &mut self.core
    }
    fn schedule(&mut self, after: Duration, msg: M) {
        self.door.schedule(after, msg);
    }
    fn blocking(&mut self, work: &mut dyn FnMut()) {
        (self.blocking)(work);
    }
    fn backlog(&self) -> usize {
        self.door.backlog()
    }
}

/// What a panic carried, as text.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
