//! One conformance suite for both hosts: every test below runs on the ractor host and on the task
//! host (on real tokio, with two worker threads), through the [`Host`] trait alone, so the
//! simulator's host keeps every promise the production host makes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ractor::RactorHost;
use super::system::SystemClock;
use super::task::TaskHost;
use super::Host;
use crate::seam::testing::{Probe, ProbeMsg, StopReport, PROBE_TIMERS_MAX};
use crate::seam::{Addr, AskError, Clock, SendError};
use rand_chacha::ChaCha12Rng;
use rand_core::SeedableRng;

const WAIT: Duration = Duration::from_secs(10);

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock::new())
}

fn rng() -> ChaCha12Rng {
    ChaCha12Rng::seed_from_u64(7)
}

/// A started probe: its address, its running handle and what it reports when stopped.
async fn probe<H: Host>(host: &mut H, capacity: usize) -> (Addr<ProbeMsg>, H::Running, StopReport) {
    let probe = Probe::default();
    let on_stop = Arc::clone(&probe.on_stop);
    let (addr, pending) = host.mailbox::<Probe>(capacity);
    let running = host
        .start(pending, probe, rng())
        .await
        .expect("probe starts");
    (addr, running, on_stop)
}

/// The failure the host reports, waited for (bounded).
async fn failure<H: Host>(host: &H) -> String {
    let mut failed = host.failed();
    let reported = tokio::time::timeout(WAIT, failed.wait_for(Option::is_some))
        .await
        .expect("failure reported in time")
        .expect("host alive")
        .clone();
    reported.expect("a failure")
}

/// Reads the probe until `done` holds for what it has seen (bounded).
async fn read_until(addr: &Addr<ProbeMsg>, done: impl Fn(&[u32]) -> bool) -> Vec<u32> {
    let deadline = Instant::now() + WAIT;
    loop {
        match addr.ask(ProbeMsg::Read).await {
            Ok((seen, _)) if done(&seen) => return seen,
            Ok(_) | Err(AskError::Full) => {}
            Err(e) => panic!("probe stopped answering: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached in {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits (bounded) until sends to `addr` are refused as stopped; `what` names the failure.
async fn refused_as_stopped(addr: &Addr<ProbeMsg>, what: &str) {
    let deadline = Instant::now() + WAIT;
    while addr.send(ProbeMsg::Push(1)) != Err(SendError::Stopped) {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Stalls the probe's handler (returns once it is stalled) until the returned sender is used.
async fn hold(addr: &Addr<ProbeMsg>) -> std::sync::mpsc::Sender<()> {
    let (entered, stalled) = futures_channel::oneshot::channel();
    let (release, blocked) = std::sync::mpsc::channel();
    addr.send(ProbeMsg::Hold {
        entered,
        release: blocked,
    })
    .unwrap();
    tokio::time::timeout(WAIT, stalled)
        .await
        .expect("the probe stalls in time")
        .expect("the probe is alive");
    release
}

/// Messages sent before the actor starts wait for it; all are handled in order.
async fn messages_wait_for_the_actor_and_keep_their_order<H: Host>(mut host: H) {
    let (addr, pending) = host.mailbox::<Probe>(8);
    for n in 0..5 {
        addr.send(ProbeMsg::Push(n)).unwrap();
    }
    let running = host.start(pending, Probe::default(), rng()).await.unwrap();
    let (seen, _) = addr.ask(ProbeMsg::Read).await.unwrap();
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    host.stop(running, WAIT).await;
}

/// The bound refuses senders beyond capacity, and frees up as the actor handles messages.
async fn senders_beyond_capacity_are_refused<H: Host>(mut host: H) {
    let (addr, pending) = host.mailbox::<Probe>(4);
    for n in 0..4 {
        addr.send(ProbeMsg::Push(n)).unwrap();
    }
    assert_eq!(addr.send(ProbeMsg::Push(9)), Err(SendError::Full));
    let running = host.start(pending, Probe::default(), rng()).await.unwrap();
    let seen = read_until(&addr, |seen| seen.len() == 4).await;
    assert_eq!(seen, vec![0, 1, 2, 3], "the refused message was not queued");
    host.stop(running, WAIT).await;
}

/// The backlog counts senders' messages waiting behind the one being handled.
async fn the_backlog_counts_what_waits<H: Host>(mut host: H) {
    let (addr, running, _) = probe(&mut host, 16).await;
    let release = hold(&addr).await;
    let (reply, answer) = crate::seam::reply_channel();
    addr.send(ProbeMsg::Read(reply)).unwrap();
    addr.send(ProbeMsg::Push(1)).unwrap();
    addr.send(ProbeMsg::Push(2)).unwrap();
    release.send(()).unwrap();
    assert_eq!(answer.await.unwrap().1, 2);
    host.stop(running, WAIT).await;
}

/// A timer fires into a mailbox that senders have filled, and is still delivered.
async fn timers_are_delivered_to_a_full_mailbox<H: Host>(mut host: H) {
    let (addr, running, _) = probe(&mut host, 4).await;
    addr.send(ProbeMsg::Later(Duration::from_millis(50), 99))
        .unwrap();
    addr.ask(ProbeMsg::Read).await.unwrap();
    // Let the actor go idle, so its worker starts the timer's task (a task spawned on a worker
    // that then blocks would wait for it, which is not what this test is about).
    tokio::time::sleep(Duration::from_millis(10)).await;
    let release = hold(&addr).await;
    // The actor is stalled: fill its mailbox behind it.
    let mut sent = 0;
    while addr.send(ProbeMsg::Push(sent)).is_ok() {
        sent += 1;
        assert!(sent < 1_000, "a mailbox of 4 took 1000 messages");
    }
    // The timer is due within 40 ms; the mailbox stays full until the release. (Sleeping is the
    // point here: the timer must come due while the mailbox is full.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(addr.send(ProbeMsg::Push(0)), Err(SendError::Full));
    release.send(()).unwrap();
    let seen = read_until(&addr, |seen| seen.contains(&99)).await;
    assert_eq!(
        seen.len() as u32,
        sent + 1,
        "every push and the timer: {seen:?}"
    );
    host.stop(running, WAIT).await;
}

/// An actor that keeps more timers pending than it declared fails.
async fn timers_beyond_the_bound_fail_the_actor<H: Host>(mut host: H) {
    let (addr, _running, _) = probe(&mut host, 16).await;
    for n in 0..=PROBE_TIMERS_MAX as u32 {
        addr.send(ProbeMsg::Later(Duration::from_secs(3600), n))
            .unwrap();
    }
    let failure = failure(&host).await;
    assert!(failure.contains("TIMERS_MAX"), "{failure}");
}

/// `Context::fail` stops the actor: queued asks are dropped, later sends refused, host told.
async fn fail_stops_the_actor_and_is_reported<H: Host>(mut host: H) {
    let (addr, _running, on_stop) = probe(&mut host, 16).await;
    let release = hold(&addr).await;
    addr.send(ProbeMsg::Fail).unwrap();
    let (reply, answer) = crate::seam::reply_channel();
    addr.send(ProbeMsg::Read(reply)).unwrap();
    release.send(()).unwrap();
    let failure = failure(&host).await;
    assert!(failure.contains("probe asked to fail"), "{failure}");
    assert!(
        answer.await.is_err(),
        "a queued ask is dropped, not answered"
    );
    assert!(
        on_stop.lock().unwrap().is_none(),
        "a failed actor does not run `stopped`"
    );
    refused_as_stopped(&addr, "a failed actor still takes messages").await;
}

/// An actor that fails in `started` never runs: the start errs or the failure is reported, what
/// waited for it is dropped, and later sends are refused.
async fn failing_to_start_is_a_failure<H: Host>(mut host: H) {
    let (addr, pending) = host.mailbox::<Probe>(8);
    let (reply, answer) = crate::seam::reply_channel();
    addr.send(ProbeMsg::Read(reply)).unwrap();
    let probe = Probe {
        fail_on_start: true,
        ..Probe::default()
    };
    if host.start(pending, probe, rng()).await.is_ok() {
        let failure = failure(&host).await;
        assert!(failure.contains("probe failed to start"), "{failure}");
    }
    assert!(answer.await.is_err(), "an ask waiting for it is dropped");
    refused_as_stopped(&addr, "an actor that never ran takes messages").await;
}

/// A handler that panics is the actor's failure, on both hosts.
async fn a_panicking_handler_is_a_failure<H: Host>(mut host: H) {
    let (addr, _running, _) = probe(&mut host, 16).await;
    addr.send(ProbeMsg::Boom).unwrap();
    let failure = failure(&host).await;
    assert!(failure.contains("probe"), "{failure}");
    assert!(
        addr.ask(ProbeMsg::Read).await.is_err(),
        "a failed actor answers no more"
    );
}

/// Stopping handles everything sent before it, runs `stopped`, then refuses; not a failure.
async fn stop_drains_the_mailbox_then_refuses<H: Host>(mut host: H) {
    let (addr, running, on_stop) = probe(&mut host, 1024).await;
    for n in 0..500 {
        addr.send(ProbeMsg::Push(n)).unwrap();
    }
    host.stop(running, WAIT).await;
    let seen = on_stop.lock().unwrap().clone().expect("stopped hook ran");
    assert_eq!(seen, (0..500).collect::<Vec<_>>());
    assert_eq!(addr.send(ProbeMsg::Push(1)), Err(SendError::Stopped));
    assert!(host.failed().borrow().is_none(), "a stop is not a failure");
}

/// Runs each named test on both hosts.
macro_rules! on_both_hosts {
    ($($test:ident),* $(,)?) => {
        mod ractor_host {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let host = super::RactorHost::start(super::clock()).await.unwrap();
                    super::$test(host).await;
                }
            )*
        }
        mod task_host {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::TaskHost::new(super::clock())).await;
                }
            )*
        }
    };
}

on_both_hosts!(
    messages_wait_for_the_actor_and_keep_their_order,
    senders_beyond_capacity_are_refused,
    the_backlog_counts_what_waits,
    timers_are_delivered_to_a_full_mailbox,
    timers_beyond_the_bound_fail_the_actor,
    fail_stops_the_actor_and_is_reported,
    a_panicking_handler_is_a_failure,
    failing_to_start_is_a_failure,
    stop_drains_the_mailbox_then_refuses,
);
