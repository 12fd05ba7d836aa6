//! The task host: one (madsim-)tokio task per actor, its queue an unbounded channel behind the
//! shared bounded [`Door`].
//!
//! Under `--cfg madsim` the task, its timers and its channel all run in simulated time on the
//! simulated node that started it, so the seed decides every interleaving. A handler that panics is
//! caught and reported as the actor's failure, as the ractor host reports it in production.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha12Rng;
use tokio::sync::{mpsc, oneshot, watch};

use super::context::{panic_message, HostContext};
use super::mailbox::{Closed, Door, Envelope, Queue};
use super::{Host, SpawnError};
use crate::seam::{Actor, Addr, Clock, ContextHost};

/// How long the side effects of the handler that just ran took (the disk I/O it did), in the
/// host's time. Handlers are synchronous, so in simulated time they take none; the task host sleeps
/// this long after each message instead, and messages queue up behind a slow commit as they do on
/// real hardware (which is what lets group commit form batches in the simulator).
pub type BusyTime = Arc<dyn Fn() -> Duration + Send + Sync>;

struct ChannelQueue<M>(mpsc::UnboundedSender<Envelope<M>>);

impl<M: Send + 'static> Queue<M> for ChannelQueue<M> {
    fn push(&self, envelope: Envelope<M>) -> Result<(), Closed> {
        self.0.send(envelope).map_err(|_| Closed)
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Runs a node's actors as tasks on the current (madsim-)tokio runtime.
pub struct TaskHost {
    clock: Arc<dyn Clock>,
    busy: BusyTime,
    failure: watch::Sender<Option<String>>,
}

/// A task-hosted mailbox whose actor has not started.
pub struct TaskPending<A: Actor> {
    door: Arc<Door<A::Msg>>,
    queue: mpsc::UnboundedReceiver<Envelope<A::Msg>>,
}

/// A running task-hosted actor.
pub struct TaskRunning {
    stop: Box<dyn FnOnce() -> bool + Send>,
    done: oneshot::Receiver<()>,
}

impl TaskHost {
    /// A host whose actors read `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        TaskHost::paced(clock, Arc::new(|| Duration::ZERO))
    }

    /// Like [`TaskHost::new`], and after each message an actor's task sleeps for what `busy`
    /// reports.
    pub fn paced(clock: Arc<dyn Clock>, busy: BusyTime) -> Self {
        TaskHost {
            clock,
            busy,
            failure: watch::channel(None).0,
        }
    }
}

/// Runs `f`, turning a panic into the failure it is.
fn guarded(f: impl FnOnce()) -> Result<(), String> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|payload| format!("panicked: {}", panic_message(&*payload)))
}

impl Host for TaskHost {
    type Pending<A: Actor> = TaskPending<A>;
    type Running = TaskRunning;

    fn mailbox<A: Actor>(&mut self, capacity: usize) -> (Addr<A::Msg>, TaskPending<A>) {
        let (tx, queue) = mpsc::unbounded_channel();
        let door = Door::new(ChannelQueue(tx), capacity, A::TIMERS_MAX);
        (
            Addr::new(Arc::clone(&door) as _),
            TaskPending { door, queue },
        )
    }

    fn start<A: Actor>(
        &mut self,
        pending: TaskPending<A>,
        mut actor: A,
        rng: ChaCha12Rng,
    ) -> impl std::future::Future<Output = Result<TaskRunning, SpawnError>> + Send {
        let TaskPending { door, mut queue } = pending;
        let mut ctx = HostContext::new(Arc::clone(&self.clock), rng, Arc::clone(&door), |w| w());
        let busy = Arc::clone(&self.busy);
        let failure = self.failure.clone();
        let (done_tx, done) = oneshot::channel();
        let stopper = Arc::clone(&door);
        tokio::spawn(async move {
            let mut failed = guarded(|| actor.started(&mut ctx))
                .err()
                .or_else(|| ctx.core().failure().map(str::to_owned));
            let mut stopping = false;
            // Until a Stop arrives: wait for envelopes. After it: refuse new ones, but handle those
            // that made it in before the door closed. A failure ends the loop at once.
            while failed.is_none() {
                let envelope = if stopping {
                    queue.try_recv().ok()
                } else {
                    queue.recv().await
                };
                let Some(envelope) = envelope else { break };
                door.took(&envelope);
                let msg = match envelope {
                    Envelope::Msg(msg) | Envelope::Timer(msg) => msg,
                    Envelope::Stop => {
                        stopping = true;
                        queue.close();
                        continue;
                    }
                };
                failed = guarded(|| actor.handle(&mut ctx, msg))
                    .err()
                    .or_else(|| ctx.core().failure().map(str::to_owned));
                let took = busy();
                // A failed actor reports at once; it has no next message to hold back.
                if failed.is_none() && !took.is_zero() {
                    tokio::time::sleep(took).await;
                }
            }
            // Queued messages are dropped with the queue: their askers learn at once.
            queue.close();
            if failed.is_none() {
                // A failure while finishing (a last commit the disk refused) is a failure too.
                failed = guarded(|| actor.stopped(&mut ctx))
                    .err()
                    .or_else(|| ctx.core().failure().map(str::to_owned));
            }
            if let Some(reason) = failed {
                tracing::error!(actor = A::NAME, %reason, "actor failed");
                failure.send_replace(Some(format!("actor {} failed: {reason}", A::NAME)));
            }
            drop(actor);
            let _ = done_tx.send(());
        });
        let running = TaskRunning {
            stop: Box::new(move || stopper.stop()),
            done,
        };
        async move { Ok(running) }
    }

    async fn stop(&mut self, running: TaskRunning, timeout: Duration) {
        if (running.stop)() && tokio::time::timeout(timeout, running.done).await.is_err() {
            tracing::warn!(?timeout, "actor did not stop in time");
        }
    }

    fn failed(&self) -> watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }
}
