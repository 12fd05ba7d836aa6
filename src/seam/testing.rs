//! A hand-driven [`Context`] for unit tests: actors are tested as plain state machines, no runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_chacha::ChaCha12Rng;
use rand_core::SeedableRng;

use super::{Addr, Clock, Context, ContextCore, ContextHost, Mailbox, SendError};

/// A clock that moves only when the test says so.
#[derive(Debug, Default)]
pub struct ManualClock {
    monotonic_ms: AtomicU64,
    wall_ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `wall_ms` on the wall and zero on the monotonic face.
    pub fn at(wall_ms: u64) -> Arc<ManualClock> {
        let clock = ManualClock::default();
        clock.wall_ms.store(wall_ms, Ordering::SeqCst);
        Arc::new(clock)
    }

    /// Moves both faces of the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).expect("a test advances by less than u64 ms");
        self.monotonic_ms.fetch_add(ms, Ordering::SeqCst);
        self.wall_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the wall clock (it may go backwards, as a real one can).
    pub fn set_wall_ms(&self, wall_ms: u64) {
        self.wall_ms.store(wall_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.monotonic_ms.load(Ordering::SeqCst))
    }
    fn wall_ms(&self) -> u64 {
        self.wall_ms.load(Ordering::SeqCst)
    }
}

/// Collects what an actor sends itself.
struct Inbox<M>(Mutex<Vec<M>>);

impl<M: Send> Mailbox<M> for Inbox<M> {
    fn deliver(&self, msg: M) -> Result<(), SendError> {
        self.0.lock().expect("inbox lock").push(msg);
        Ok(())
    }
}

/// A mailbox that keeps what it is sent, for a test to inspect ([`collector`]).
pub struct Collector<M>(Mutex<Vec<M>>);

impl<M> Collector<M> {
    /// What was sent since the last call, in order.
    pub fn take(&self) -> Vec<M> {
        std::mem::take(&mut *self.0.lock().expect("collector lock"))
    }
}

impl<M: Send> Mailbox<M> for Collector<M> {
    fn deliver(&self, msg: M) -> Result<(), SendError> {
        self.0.lock().expect("collector lock").push(msg);
        Ok(())
    }
}

/// An address whose messages a test reads back from the [`Collector`].
pub fn collector<M: Send + 'static>() -> (Arc<Collector<M>>, Addr<M>) {
    let collector = Arc::new(Collector(Mutex::new(Vec::new())));
    let addr = Addr::new(Arc::clone(&collector) as Arc<dyn Mailbox<M>>);
    (collector, addr)
}

/// A [`Context`] whose clock, backlog and timers the test controls and inspects.
pub struct TestContext<M> {
    /// The clock the actor reads.
    pub clock: Arc<ManualClock>,
    /// What `backlog()` answers.
    pub backlog: usize,
    /// Messages that "arrive" while `blocking` work runs: added to `backlog` after it.
    pub arrivals_during_blocking: usize,
    /// Timers the actor asked for, in order.
    pub scheduled: Vec<(Duration, M)>,
    core: ContextCore<M>,
}

impl<M: Send + 'static> TestContext<M> {
    /// A context at wall time `wall_ms` with an RNG seeded by `seed`.
    pub fn new(wall_ms: u64, seed: u64) -> Self {
        let clock = ManualClock::at(wall_ms);
        let myself = Addr::new(Arc::new(Inbox(Mutex::new(Vec::new()))));
        TestContext {
            clock: Arc::clone(&clock),
            backlog: 0,
            arrivals_during_blocking: 0,
            scheduled: Vec::new(),
            core: ContextCore::new(clock, ChaCha12Rng::seed_from_u64(seed), myself),
        }
    }

    /// The reason the actor gave when it declared itself failed.
    pub fn failed(&self) -> Option<&str> {
        self.core.failure()
    }
}

impl<M: Send + 'static> ContextHost<M> for TestContext<M> {
    fn core(&self) -> &ContextCore<M> {
        &self.core
    }
    fn core_mut(&mut self) -> &mut ContextCore<M> {
        &mut self.core
    }
    fn schedule(&mut self, after: Duration, msg: M) {
        self.scheduled.push((after, msg));
    }
    fn blocking(&mut self, work: &mut dyn FnMut()) {
        work();
        self.backlog += self.arrivals_during_blocking;
    }
    fn backlog(&self) -> usize {
        self.backlog
    }
}

/// Messages of [`Probe`].
#[derive(Debug)]
pub enum ProbeMsg {
    /// Record a number.
    Push(u32),
    /// Answer with the numbers so far and the backlog seen when handling this message.
    Read(super::Reply<(Vec<u32>, usize)>),
    /// Ask for `Push(n)` to arrive after `after`.
    Later(Duration, u32),
    /// Panic (a failing component).
    Boom,
    /// Declare itself failed through the context.
    Fail,
    /// Say so on `entered`, then block the handler until `release` is sent to or dropped (a
    /// stalled component), so a test can fill the mailbox behind it.
    Hold {
        /// Told once the handler is blocked.
        entered: futures_channel::oneshot::Sender<()>,
        /// Ends the block.
        release: std::sync::mpsc::Receiver<()>,
    },
}

/// [`Probe`]'s bound on pending timers: small, so tests can exceed it.
pub const PROBE_TIMERS_MAX: usize = 2;

/// What [`Probe`] saw by the time it stopped (`None` until then).
pub type StopReport = Arc<Mutex<Option<Vec<u32>>>>;

/// A test actor for hosts: records what it handles, reports its backlog, can fail on demand.
#[derive(Debug, Default)]
pub struct Probe {
    /// Numbers pushed so far, in handling order.
    pub seen: Vec<u32>,
    /// Filled by `stopped` with everything seen, to check that stopping drains the mailbox.
    pub on_stop: StopReport,
    /// Declare itself failed in `started`.
    pub fail_on_start: bool,
}

impl super::Actor for Probe {
    type Msg = ProbeMsg;
    const NAME: &'static str = "probe";
    const TIMERS_MAX: usize = PROBE_TIMERS_MAX;

    fn handle(&mut self, ctx: &mut dyn Context<ProbeMsg>, msg: ProbeMsg) {
        match msg {
            ProbeMsg::Push(n) => self.seen.push(n),
            ProbeMsg::Read(reply) => reply.send((self.seen.clone(), ctx.backlog())),
            ProbeMsg::Later(after, n) => ctx.schedule(after, ProbeMsg::Push(n)),
            ProbeMsg::Boom => panic!("probe asked to panic"),
            ProbeMsg::Fail => ctx.fail("probe asked to fail".into()),
            ProbeMsg::Hold { entered, release } => {
                let _ = entered.send(());
                // Either outcome releases the handler.
                let _ = release.recv();
            }
        }
    }

    fn started(&mut self, ctx: &mut dyn Context<ProbeMsg>) {
        if self.fail_on_start {
            ctx.fail("probe failed to start".into());
        }
    }

    fn stopped(&mut self, _ctx: &mut dyn Context<ProbeMsg>) {
        *self.on_stop.lock().expect("probe lock") = Some(self.seen.clone());
    }
}
