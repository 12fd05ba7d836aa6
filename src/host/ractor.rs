//! The production host: each seam actor runs as a ractor actor under one supervisor.
//!
//! Supervision policy: **a failed component stops the node**. When any actor panics (ractor catches
//! the panic and reports `ActorFailed`) or stops on its own, the supervisor publishes the failure;
//! the server then stops accepting requests, drains the actors that are still alive, closes redb and
//! exits non-zero. We do not restart in place: a half-applied handler leaves the actor's memory
//! state in doubt, while the store is crash-safe, so a process restart (systemd, the orchestrator)
//! rebuilds a node from durable state alone. Callers whose request died with the actor get an error
//! (their write was not acknowledged), never a silent half-alive node.
//!
//! A mailbox exists before its ractor actor does ([`Host::mailbox`]): until the actor starts, what
//! is sent to it waits in a buffer, which starting hands to the actor in order.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{ActorCell, ActorProcessingErr, ActorRef, ActorStatus, SupervisionEvent};
use rand_chacha::ChaCha12Rng;
use tokio::sync::watch;

use super::context::HostContext;
use super::mailbox::{Closed, Door, Envelope, Queue};
use super::{Host, SpawnError};
use crate::seam::{Actor, Addr, Clock, ContextHost};

/// Runs actors on ractor and watches them.
pub struct RactorHost {
    clock: Arc<dyn Clock>,
    supervisor: ActorRef<()>,
    stopping: Arc<AtomicBool>,
    failure: watch::Receiver<Option<String>>,
}

impl RactorHost {
    /// Starts the supervisor. Actors started later read `clock`.
    pub async fn start(clock: Arc<dyn Clock>) -> Result<RactorHost, SpawnError> {
        let (failure_tx, failure) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let state = SupervisorState {
            failure: failure_tx,
            stopping: Arc::clone(&stopping),
        };
        let (supervisor, _) = ractor::Actor::spawn(None, Supervisor, state)
            .await
            .map_err(|e| SpawnError {
                name: "supervisor",
                reason: e.to_string(),
            })?;
        Ok(RactorHost {
            clock,
            supervisor,
            stopping,
            failure,
        })
    }

    /// Stops the supervisor, once the node's actors are stopped ([`Host::stop`]).
    pub async fn close(self, timeout: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.supervisor.stop_and_wait(None, Some(timeout)).await;
    }
}

/// A ractor-hosted mailbox whose actor has not started.
pub struct RactorPending<A: Actor> {
    door: Arc<Door<A::Msg>>,
    queue: Arc<RactorQueue<A::Msg>>,
}

/// The queue into a ractor actor: a buffer until the actor starts, then the actor itself.
struct RactorQueue<M: Send + 'static>(Mutex<Slot<M>>);

enum Slot<M: Send + 'static> {
    Waiting(Vec<Envelope<M>>),
    Running(ActorRef<Envelope<M>>),
    /// The actor could not start: what waited is dropped, so its askers learn at once.
    Failed,
}

impl<M: Send + 'static> RactorQueue<M> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<M>> {
        // Each operation leaves the slot whole, so a poisoned lock is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the buffered envelopes to the started actor, in order, and sends it everything after.
    fn attach(&self, actor: ActorRef<Envelope<M>>) {
        let mut slot = self.lock();
        if let Slot::Waiting(buffered) = &mut *slot {
            for envelope in buffered.drain(..) {
                // An actor that already stopped drops them, as its mailbox would have.
                let _ = actor.cast(envelope);
            }
        }
        *slot = Slot::Running(actor);
    }

    /// The actor could not start.
    fn fail(&self) {
        *self.lock() = Slot::Failed;
    }
}

/// Shares one [`RactorQueue`] between the door and the host that attaches the actor.
struct SharedQueue<M: Send + 'static>(Arc<RactorQueue<M>>);

impl<M: Send + 'static> Queue<M> for SharedQueue<M> {
    fn push(&self, envelope: Envelope<M>) -> Result<(), Closed> {
        match &mut *self.0.lock() {
            Slot::Waiting(buffered) => {
                buffered.push(envelope);
                Ok(())
            }
            Slot::Running(actor) => actor.cast(envelope).map_err(|_| Closed),
            Slot::Failed => Err(Closed),
        }
    }

    fn is_closed(&self) -> bool {
        match &*self.0.lock() {
            Slot::Waiting(_) => false,
            Slot::Running(actor) => !matches!(
                actor.get_status(),
                ActorStatus::Starting | ActorStatus::Running | ActorStatus::Upgrading
            ),
            Slot::Failed => true,
        }
    }
}

impl Host for RactorHost {
    type Pending<A: Actor> = RactorPending<A>;
    type Running = ActorCell;

    fn mailbox<A: Actor>(&mut self, capacity: usize) -> (Addr<A::Msg>, RactorPending<A>) {
        let queue = Arc::new(RactorQueue(Mutex::new(Slot::Waiting(Vec::new()))));
        let door = Door::new(SharedQueue(Arc::clone(&queue)), capacity, A::TIMERS_MAX);
        (
            Addr::new(Arc::clone(&door) as _),
            RactorPending { door, queue },
        )
    }

    fn start<A: Actor>(
        &mut self,
        pending: RactorPending<A>,
        actor: A,
        rng: ChaCha12Rng,
    ) -> impl std::future::Future<Output = Result<ActorCell, SpawnError>> + Send {
        let RactorPending { door, queue } = pending;
        let args = HostedArgs {
            actor,
            ctx: HostContext::new(Arc::clone(&self.clock), rng, Arc::clone(&door), |work| {
                tokio::task::block_in_place(work)
            }),
            door,
        };
        let supervisor = self.supervisor.get_cell();
        async move {
            // ractor's registry is process-wide: a sequence number keeps names unique across hosts.
            static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
            let name = format!("{}-{}", A::NAME, SEQUENCE.fetch_add(1, Ordering::Relaxed));
            let spawned =
                ractor::Actor::spawn_linked(Some(name), Hosted::<A>(PhantomData), args, supervisor)
                    .await;
            let (actor_ref, _) = spawned.map_err(|e| {
                queue.fail();
                SpawnError {
                    name: A::NAME,
                    reason: e.to_string(),
                }
            })?;
            queue.attach(actor_ref.clone());
            Ok(actor_ref.get_cell())
        }
    }

    fn stop(
        &mut self,
        running: ActorCell,
        timeout: Duration,
    ) -> impl std::future::Future<Output = ()> + Send {
        // The node is stopping: actors that end now are not failures.
        self.stopping.store(true, Ordering::SeqCst);
        async move {
            if let Err(e) = running.drain_and_wait(Some(timeout)).await {
                tracing::warn!(actor = ?running.get_name(), error = %e, "actor did not drain");
            }
        }
    }

    fn failed(&self) -> watch::Receiver<Option<String>> {
        self.failure.clone()
    }
}

struct Supervisor;

struct SupervisorState {
    failure: watch::Sender<Option<String>>,
    stopping: Arc<AtomicBool>,
}

impl ractor::Actor for Supervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = SupervisorState;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        state: SupervisorState,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let failure = match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                Some(format!("actor {:?} failed: {error}", cell.get_name()))
            }
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if !state.stopping.load(Ordering::SeqCst) =>
            {
                Some(format!(
                    "actor {:?} stopped unexpectedly ({})",
                    cell.get_name(),
                    reason.unwrap_or_default()
                ))
            }
            _ => None,
        };
        if let Some(failure) = failure {
            tracing::error!(%failure, "component failed: stopping the node");
            state.failure.send_replace(Some(failure));
        }
        Ok(())
    }
}

struct Hosted<A>(PhantomData<fn() -> A>);

struct HostedArgs<A: Actor> {
    actor: A,
    ctx: HostContext<A::Msg>,
    door: Arc<Door<A::Msg>>,
}

impl<A: Actor> ractor::Actor for Hosted<A> {
    type Msg = Envelope<A::Msg>;
    type State = HostedArgs<A>;
    type Arguments = HostedArgs<A>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Envelope<A::Msg>>,
        mut state: HostedArgs<A>,
    ) -> Result<HostedArgs<A>, ActorProcessingErr> {
        state.actor.started(&mut state.ctx);
        if let Some(reason) = state.ctx.core().failure() {
            return Err(reason.into());
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Envelope<A::Msg>>,
        envelope: Envelope<A::Msg>,
        state: &mut HostedArgs<A>,
    ) -> Result<(), ActorProcessingErr> {
        state.door.took(&envelope);
        let (Envelope::Msg(msg) | Envelope::Timer(msg)) = envelope else {
            // The task host's stop signal; ractor stops by draining.
            return Ok(());
        };
        state.actor.handle(&mut state.ctx, msg);
        if let Some(reason) = state.ctx.core().failure() {
            // A stop signal overtakes queued messages: they are dropped, not handled.
            myself.stop(Some(reason.to_owned()));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Envelope<A::Msg>>,
        state: &mut HostedArgs<A>,
    ) -> Result<(), ActorProcessingErr> {
        if state.ctx.core().failure().is_none() {
            state.actor.stopped(&mut state.ctx);
            // A failure while finishing (a last commit the disk refused) is reported as one
            // (ractor turns this error into `ActorFailed`).
            if let Some(reason) = state.ctx.core().failure() {
                return Err(reason.into());
            }
        }
        Ok(())
    }
}
