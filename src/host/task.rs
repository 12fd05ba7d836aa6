//! The task host: one (madsim-)tokio task per actor, a bounded channel as its mailbox.
//!
//! Under `--cfg madsim` the task, its timers and its channel all run in simulated time on the
//! simulated node that spawned it, so the seed decides every interleaving.

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha12Rng;
use rand_core::SeedableRng;
use tokio::sync::{mpsc, oneshot, watch};

use crate::seam::{Actor, Addr, Clock, Context, Mailbox, SendError};

enum Envelope<M> {
    Msg(M),
    Stop,
}

struct ChannelMailbox<M>(mpsc::Sender<Envelope<M>>);

impl<M: Send> Mailbox<M> for ChannelMailbox<M> {
    fn deliver(&self, msg: M) -> Result<(), SendError> {
        self.0.try_send(Envelope::Msg(msg)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Stopped,
        })
    }
}

/// A running task-hosted actor.
pub struct TaskActor<M> {
    addr: Addr<M>,
    control: mpsc::Sender<Envelope<M>>,
    done: oneshot::Receiver<()>,
    failure: watch::Receiver<Option<String>>,
}

impl<M: Send + 'static> TaskActor<M> {
    /// Where to send the actor messages.
    pub fn addr(&self) -> &Addr<M> {
        &self.addr
    }

    /// Becomes `Some(reason)` if the actor declared itself failed (see [`Context::fail`]).
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.failure.clone()
    }

    /// Stops the actor after every message sent before this call, runs its `stopped` hook, drops it
    /// and returns.
    pub async fn stop(self) {
        if self.control.send(Envelope::Stop).await.is_ok() {
            let _ = self.done.await;
        }
    }
}

struct TaskContext<M> {
    clock: Arc<dyn Clock>,
    rng: ChaCha12Rng,
    myself: Addr<M>,
    /// The mailbox's sending side, to count what waits in it (capacity in use).
    queue: mpsc::Sender<Envelope<M>>,
    failed: Option<String>,
}

impl<M: Send + 'static> Context<M> for TaskContext<M> {
    fn clock(&self) -> &dyn Clock {
        &*self.clock
    }
    fn rng(&mut self) -> &mut ChaCha12Rng {
        &mut self.rng
    }
    fn myself(&self) -> &Addr<M> {
        &self.myself
    }
    fn schedule(&mut self, after: Duration, msg: M) {
        let addr = self.myself.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            // A timer firing after its actor stopped has no one to tell.
            let _ = addr.send(msg);
        });
    }
    fn blocking(&mut self, work: &mut dyn FnMut()) {
        work();
    }
    fn fail(&mut self, reason: String) {
        self.failed = Some(reason);
    }
    fn backlog(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// How long the side effects of the handler that just ran took (the disk I/O it did), in the
/// host's time. Handlers are synchronous, so in simulated time they take none; the task host sleeps
/// this long after each message instead, and messages queue up behind a slow commit as they do on
/// real hardware (which is what lets group commit form batches in the simulator).
pub type BusyTime = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Starts `actor` as a task with a mailbox of `capacity`, reading `clock`, drawing randomness from
/// a ChaCha stream seeded with `rng_seed`.
pub fn spawn<A: Actor>(
    actor: A,
    clock: Arc<dyn Clock>,
    rng_seed: u64,
    capacity: usize,
) -> TaskActor<A::Msg> {
    spawn_paced(
        actor,
        clock,
        rng_seed,
        capacity,
        Arc::new(|| Duration::ZERO),
    )
}

/// Like [`spawn`], and after each message the task sleeps for what `busy` reports.
pub fn spawn_paced<A: Actor>(
    mut actor: A,
    clock: Arc<dyn Clock>,
    rng_seed: u64,
    capacity: usize,
    busy: BusyTime,
) -> TaskActor<A::Msg> {
    let (tx, mut rx) = mpsc::channel(capacity);
    let (done_tx, done) = oneshot::channel();
    let (failure_tx, failure) = watch::channel(None);
    let addr = Addr::new(Arc::new(ChannelMailbox(tx.clone())));
    let mut ctx = TaskContext {
        clock,
        rng: ChaCha12Rng::seed_from_u64(rng_seed),
        myself: addr.clone(),
        queue: tx.clone(),
        failed: None,
    };
    tokio::spawn(async move {
        actor.started(&mut ctx);
        let mut stopping = false;
        // Until a Stop arrives: wait for messages. After it: refuse new ones, but handle those that
        // made it in before the door closed. A failure ends the loop at once, without `stopped`.
        while ctx.failed.is_none() {
            let envelope = if stopping {
                rx.try_recv().ok()
            } else {
                rx.recv().await
            };
            match envelope {
                Some(Envelope::Msg(msg)) => {
                    actor.handle(&mut ctx, msg);
                    let took = busy();
                    // A failed actor reports at once; it has no next message to hold back.
                    if ctx.failed.is_none() && !took.is_zero() {
                        tokio::time::sleep(took).await;
                    }
                }
                Some(Envelope::Stop) if !stopping => {
                    stopping = true;
                    rx.close();
                }
                Some(Envelope::Stop) => {}
                None => break,
            }
        }
        rx.close();
        match ctx.failed.take() {
            Some(reason) => {
                tracing::error!(actor = A::NAME, %reason, "actor failed");
                failure_tx.send_replace(Some(reason));
            }
            None => actor.stopped(&mut ctx),
        }
        drop(actor);
        let _ = done_tx.send(());
    });
    TaskActor {
        addr,
        control: tx,
        done,
        failure,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::host::system::SystemClock;
    use crate::seam::testing::{Probe, ProbeMsg, StopReport};
    use crate::seam::SendError;

    fn start(capacity: usize) -> (TaskActor<ProbeMsg>, StopReport) {
        let probe = Probe::default();
        let on_stop = Arc::clone(&probe.on_stop);
        (
            spawn(probe, Arc::new(SystemClock::new()), 1, capacity),
            on_stop,
        )
    }

    #[tokio::test]
    async fn handles_in_order_reports_backlog_and_refuses_beyond_capacity() {
        let (actor, _) = start(4);
        let addr = actor.addr().clone();
        // On a current-thread runtime the actor has not run yet: these all wait in the mailbox.
        for n in 0..3 {
            addr.send(ProbeMsg::Push(n)).unwrap();
        }
        let (reply, answer) = crate::seam::reply_channel();
        addr.send(ProbeMsg::Read(reply)).unwrap();
        assert_eq!(addr.send(ProbeMsg::Push(9)), Err(SendError::Full));
        let (seen, backlog) = answer.await.unwrap();
        assert_eq!(seen, vec![0, 1, 2]);
        assert_eq!(backlog, 0);
        let (seen, _) = addr.ask(ProbeMsg::Read).await.unwrap();
        assert_eq!(seen, vec![0, 1, 2], "the refused message was not queued");
        actor.stop().await;
    }

    #[tokio::test]
    async fn the_backlog_counts_messages_behind_the_current_one() {
        let (actor, _) = start(16);
        let addr = actor.addr().clone();
        let (reply, answer) = crate::seam::reply_channel();
        addr.send(ProbeMsg::Read(reply)).unwrap();
        addr.send(ProbeMsg::Push(1)).unwrap();
        addr.send(ProbeMsg::Push(2)).unwrap();
        assert_eq!(answer.await.unwrap().1, 2);
        actor.stop().await;
    }

    #[tokio::test]
    async fn busy_time_holds_the_next_message_back() {
        let probe = Probe::default();
        let busy: BusyTime = Arc::new(|| Duration::from_millis(20));
        let actor = spawn_paced(probe, Arc::new(SystemClock::new()), 1, 16, busy);
        let addr = actor.addr().clone();
        let started = std::time::Instant::now();
        for n in 0..3 {
            addr.send(ProbeMsg::Push(n)).unwrap();
        }
        let (seen, _) = addr.ask(ProbeMsg::Read).await.unwrap();
        assert_eq!(seen, vec![0, 1, 2]);
        assert!(
            started.elapsed() >= Duration::from_millis(60),
            "three pushes, 20 ms each"
        );
        actor.stop().await;
    }

    #[tokio::test]
    async fn timers_deliver_to_the_actor() {
        let (actor, _) = start(16);
        let addr = actor.addr().clone();
        addr.send(ProbeMsg::Later(Duration::from_millis(5), 7))
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (seen, _) = addr.ask(ProbeMsg::Read).await.unwrap();
            if seen == vec![7] {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "timer never fired");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        actor.stop().await;
    }

    #[tokio::test]
    async fn a_failed_actor_reports_it_and_drops_what_was_queued() {
        let (actor, on_stop) = start(16);
        let addr = actor.addr().clone();
        let mut failed = actor.failed();
        addr.send(ProbeMsg::Fail).unwrap();
        let (reply, answer) = crate::seam::reply_channel();
        addr.send(ProbeMsg::Read(reply)).unwrap();
        let reason = failed.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(reason.as_deref(), Some("probe asked to fail"));
        assert!(
            answer.await.is_err(),
            "a queued ask is dropped, not answered"
        );
        assert!(
            on_stop.lock().unwrap().is_none(),
            "a failed actor does not run `stopped`"
        );
        assert_eq!(addr.send(ProbeMsg::Push(1)), Err(SendError::Stopped));
        actor.stop().await;
    }

    #[tokio::test]
    async fn stop_handles_everything_sent_before_it_then_refuses() {
        let (actor, on_stop) = start(256);
        let addr = actor.addr().clone();
        for n in 0..100 {
            addr.send(ProbeMsg::Push(n)).unwrap();
        }
        actor.stop().await;
        let seen = on_stop.lock().unwrap().clone().expect("stopped hook ran");
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(addr.send(ProbeMsg::Push(1)), Err(SendError::Stopped));
    }
}
