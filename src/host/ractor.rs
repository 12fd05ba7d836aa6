//! The production host: each seam actor runs as a ractor actor under one supervisor.
//!
//! Supervision policy: **a failed component stops the node**. When any actor panics (ractor catches
//! the panic and reports `ActorFailed`) or stops on its own, the supervisor publishes the failure;
//! the server then stops accepting requests, drains the actors that are still alive, closes redb and
//! exits non-zero. We do not restart in place: a half-applied handler leaves the actor's memory
//! state in doubt, while the store is crash-safe, so a process restart (systemd, the orchestrator)
//! rebuilds a node from durable state alone. Callers whose request died with the actor get an error
//! (their write was not acknowledged), never a silent half-alive node.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use rand_chacha::ChaCha12Rng;
use rand_core::SeedableRng;
use tokio::sync::watch;

use super::system::os_seed;
use crate::seam::{Actor, Addr, Clock, Context, Mailbox, SendError};

/// Why the host could not start an actor.
#[derive(Debug, thiserror::Error)]
#[error("starting actor {name}: {source}")]
pub struct SpawnError {
    name: &'static str,
    source: ractor::SpawnErr,
}

/// Runs actors on ractor and watches them.
pub struct RactorHost {
    clock: Arc<dyn Clock>,
    supervisor: ActorRef<()>,
    stopping: Arc<AtomicBool>,
    failure: watch::Receiver<Option<String>>,
    children: Vec<ActorCell>,
}

impl RactorHost {
    /// Starts the supervisor. Actors spawned later read `clock`.
    pub async fn start(clock: Arc<dyn Clock>) -> Result<RactorHost, SpawnError> {
        let (failure_tx, failure) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let state = SupervisorState {
            failure: failure_tx,
            stopping: Arc::clone(&stopping),
        };
        let (supervisor, _) = ractor::Actor::spawn(None, Supervisor, state)
            .await
            .map_err(|source| SpawnError {
                name: "supervisor",
                source,
            })?;
        Ok(RactorHost {
            clock,
            supervisor,
            stopping,
            failure,
            children: Vec::new(),
        })
    }

    /// Starts `actor` under the supervisor with a mailbox bounded at `capacity`.
    pub async fn spawn<A: Actor>(
        &mut self,
        actor: A,
        capacity: usize,
    ) -> Result<Addr<A::Msg>, SpawnError> {
        let queued = Arc::new(AtomicUsize::new(0));
        let args = HostedArgs {
            actor,
            clock: Arc::clone(&self.clock),
            queued: Arc::clone(&queued),
            capacity,
        };
        // ractor's registry is process-wide: a sequence number keeps names unique across hosts.
        static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{}-{}", A::NAME, SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let (actor_ref, _) = ractor::Actor::spawn_linked(
            Some(name),
            Hosted::<A>(PhantomData),
            args,
            self.supervisor.get_cell(),
        )
        .await
        .map_err(|source| SpawnError {
            name: A::NAME,
            source,
        })?;
        self.children.push(actor_ref.get_cell());
        Ok(Addr::new(Arc::new(RactorMailbox {
            actor: actor_ref,
            queued,
            capacity,
        })))
    }

    /// Resolves with a description once any actor has failed.
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.failure.clone()
    }

    /// Stops every actor, newest first, each after the messages already in its mailbox (waiting at
    /// most `timeout` per actor), then the supervisor.
    pub async fn shutdown(self, timeout: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        for child in self.children.iter().rev() {
            if let Err(e) = child.drain_and_wait(Some(timeout)).await {
                tracing::warn!(actor = ?child.get_name(), error = %e, "actor did not drain");
            }
        }
        let _ = self.supervisor.stop_and_wait(None, Some(timeout)).await;
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

/// Counts messages between `deliver` and `handle`: the bound and the backlog in one number.
struct RactorMailbox<M: Send + 'static> {
    actor: ActorRef<M>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl<M: Send + 'static> Mailbox<M> for RactorMailbox<M> {
    fn deliver(&self, msg: M) -> Result<(), SendError> {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SendError::Full);
        }
        self.actor.cast(msg).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            SendError::Stopped
        })
    }
}

struct Hosted<A>(PhantomData<fn() -> A>);

struct HostedArgs<A: Actor> {
    actor: A,
    clock: Arc<dyn Clock>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

struct HostedState<A: Actor> {
    actor: A,
    ctx: RactorContext<A::Msg>,
}

struct RactorContext<M> {
    clock: Arc<dyn Clock>,
    rng: ChaCha12Rng,
    myself: Addr<M>,
    queued: Arc<AtomicUsize>,
    failed: Option<String>,
}

impl<M: Send + 'static> Context<M> for RactorContext<M> {
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
        tokio::task::block_in_place(work);
    }
    fn fail(&mut self, reason: String) {
        self.failed = Some(reason);
    }
    fn backlog(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

impl<A: Actor> ractor::Actor for Hosted<A> {
    type Msg = A::Msg;
    type State = HostedState<A>;
    type Arguments = HostedArgs<A>;

    async fn pre_start(
        &self,
        myself: ActorRef<A::Msg>,
        args: HostedArgs<A>,
    ) -> Result<HostedState<A>, ActorProcessingErr> {
        let queued = args.queued;
        let myself = Addr::new(Arc::new(RactorMailbox {
            actor: myself,
            queued: Arc::clone(&queued),
            capacity: args.capacity,
        }) as Arc<dyn Mailbox<A::Msg>>);
        let mut state = HostedState {
            actor: args.actor,
            ctx: RactorContext {
                clock: args.clock,
                rng: ChaCha12Rng::seed_from_u64(os_seed()),
                myself,
                queued,
                failed: None,
            },
        };
        state.actor.started(&mut state.ctx);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<A::Msg>,
        msg: A::Msg,
        state: &mut HostedState<A>,
    ) -> Result<(), ActorProcessingErr> {
        // Counted from `deliver` until now: what remains counted is the backlog.
        state.ctx.queued.fetch_sub(1, Ordering::SeqCst);
        state.actor.handle(&mut state.ctx, msg);
        if let Some(reason) = state.ctx.failed.clone() {
            // A stop signal overtakes queued messages: they are dropped, not handled.
            myself.stop(Some(reason));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<A::Msg>,
        state: &mut HostedState<A>,
    ) -> Result<(), ActorProcessingErr> {
        if state.ctx.failed.is_none() {
            state.actor.stopped(&mut state.ctx);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::system::SystemClock;
    use crate::seam::testing::{Probe, ProbeMsg};
    use crate::seam::AskError;

    async fn host() -> RactorHost {
        RactorHost::start(Arc::new(SystemClock::new()))
            .await
            .unwrap()
    }

    /// Sends `msg` to a fresh probe and returns the failure the host then reports.
    async fn failure_after(host: &mut RactorHost, msg: ProbeMsg) -> (Addr<ProbeMsg>, String) {
        let addr = host.spawn(Probe::default(), 16).await.unwrap();
        let mut failed = host.failed();
        assert!(failed.borrow().is_none());
        addr.send(msg).unwrap();
        let failure =
            tokio::time::timeout(Duration::from_secs(10), failed.wait_for(Option::is_some))
                .await
                .expect("failure reported in time")
                .unwrap()
                .clone()
                .unwrap();
        (addr, failure)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_actor_is_reported_so_the_node_stops() {
        let mut host = host().await;
        let (addr, failure) = failure_after(&mut host, ProbeMsg::Boom).await;
        assert!(failure.contains("probe"), "{failure}");
        // The failed actor answers no more: callers get an error, not a hang.
        assert!(addr.ask(ProbeMsg::Read).await.is_err());
        host.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_actor_that_declares_failure_stops_the_node_too() {
        let mut host = host().await;
        let (_, failure) = failure_after(&mut host, ProbeMsg::Fail).await;
        assert!(failure.contains("probe asked to fail"), "{failure}");
        host.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_drains_the_mailbox_and_is_not_a_failure() {
        let mut host = host().await;
        let probe = Probe::default();
        let on_stop = Arc::clone(&probe.on_stop);
        let addr = host.spawn(probe, 1024).await.unwrap();
        for n in 0..500 {
            addr.send(ProbeMsg::Push(n)).unwrap();
        }
        let failed = host.failed();
        host.shutdown(Duration::from_secs(10)).await;
        let seen = on_stop.lock().unwrap().clone().expect("stopped hook ran");
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
        assert!(failed.borrow().is_none());
        assert_eq!(addr.ask(ProbeMsg::Read).await, Err(AskError::Stopped));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mailboxes_are_bounded_and_report_their_backlog() {
        let mut host = host().await;
        let addr = host.spawn(Probe::default(), 2).await.unwrap();
        // Fill beyond the bound from inside one synchronous stretch: some sends must be refused.
        let refused = (0..1000)
            .filter(|&n| addr.send(ProbeMsg::Push(n)).is_err())
            .count();
        assert!(refused > 0, "a bound of 2 refused nothing out of 1000");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let (seen, backlog) = loop {
            match addr.ask(ProbeMsg::Read).await {
                Err(AskError::Full) => assert!(std::time::Instant::now() < deadline),
                answer => break answer.unwrap(),
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(seen.len(), 1000 - refused);
        assert_eq!(backlog, 0);
        host.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timers_deliver_to_the_actor() {
        let mut host = host().await;
        let addr = host.spawn(Probe::default(), 16).await.unwrap();
        addr.send(ProbeMsg::Later(Duration::from_millis(5), 3))
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while addr.ask(ProbeMsg::Read).await.unwrap().0 != vec![3] {
            assert!(std::time::Instant::now() < deadline, "timer never fired");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        host.shutdown(Duration::from_secs(5)).await;
    }
}
