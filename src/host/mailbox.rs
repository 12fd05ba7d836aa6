//! The mailbox both hosts share: bounded for senders, with room reserved for the actor's timers.
//!
//! A [`Door`] counts what waits in an actor's queue. Senders are refused beyond the mailbox's
//! capacity ([`SendError::Full`]: the caller sheds load); timers are not counted against it but
//! against the actor's own bound ([`Actor::TIMERS_MAX`](crate::seam::Actor::TIMERS_MAX)), so a
//! self-rearming tick (gossip, anti-entropy) is delivered even when clients have filled the
//! mailbox, and the queue never holds more than capacity + timers. The queue underneath is the
//! host's ([`Queue`]): an unbounded channel for the task host, the ractor actor for ractor; the
//! door is what bounds it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::seam::{Mailbox, SendError};

/// What travels through a host's queue.
pub enum Envelope<M> {
    /// A message from a sender (counted against the capacity).
    Msg(M),
    /// A timer's message (counted against the timer bound).
    Timer(M),
    /// Stop after the messages ahead of this one (the task host's stop signal).
    Stop,
}

/// A host's unbounded, ordered queue into one actor.
pub trait Queue<M>: Send + Sync + 'static {
    /// Enqueues `envelope`, or fails (dropping it) if the actor has stopped.
    fn push(&self, envelope: Envelope<M>) -> Result<(), Closed>;

    /// Whether the actor has stopped (or failed): nothing pushed now would be handled.
    fn is_closed(&self) -> bool;
}

/// The actor behind a queue has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The bounds of one actor's mailbox, in front of its host's queue.
pub struct Door<M> {
    queue: Box<dyn Queue<M>>,
    capacity: usize,
    timers_max: usize,
    /// Senders' messages enqueued and not yet taken by the actor.
    queued: AtomicUsize,
    /// Timers armed and not yet taken by the actor (or dropped because it stopped).
    timers: AtomicUsize,
}

impl<M: Send + 'static> Door<M> {
    /// A door admitting `capacity` senders' messages and `timers_max` timers into `queue`.
    pub fn new(queue: impl Queue<M>, capacity: usize, timers_max: usize) -> Arc<Door<M>> {
        assert!(capacity > 0, "a mailbox holds at least one message");
        Arc::new(Door {
            queue: Box::new(queue),
            capacity,
            timers_max,
            queued: AtomicUsize::new(0),
            timers: AtomicUsize::new(0),
        })
    }

    /// Arms a timer: after `after`, `msg` enters the queue whatever the backlog. Panics if the
    /// actor already has `timers_max` pending: an actor must bound its own timers.
    pub fn schedule(self: &Arc<Self>, after: Duration, msg: M) {
        let pending = self.timers.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(
            pending <= self.timers_max,
            "{pending} timers pending, more than the actor's TIMERS_MAX ({})",
            self.timers_max
        );
        let door = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            // A timer firing after its actor stopped has no one to tell.
            if door.queue.push(Envelope::Timer(msg)).is_err() {
                door.timers.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }

    /// Asks the actor to stop after what is already queued; `false` if it has stopped already.
    pub fn stop(&self) -> bool {
        self.queue.push(Envelope::Stop).is_ok()
    }

    /// The host takes `envelope` out of the queue to handle it: it no longer counts.
    pub fn took(&self, envelope: &Envelope<M>) {
        let counter = match envelope {
            Envelope::Msg(_) => &self.queued,
            Envelope::Timer(_) => &self.timers,
            Envelope::Stop => return,
        };
        let before = counter.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "took an envelope the door never admitted");
    }

    /// Senders' messages waiting (the actor's [`backlog`](crate::seam::Context::backlog)).
    pub fn backlog(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

impl<M: Send + 'static> Mailbox<M> for Door<M> {
    fn deliver(&self, msg: M) -> Result<(), SendError> {
        // Reserve a place without ever counting a refused sender, so `backlog` never reports a
        // message that will not come.
        let reserved = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |queued| {
                (queued < self.capacity).then_some(queued + 1)
            });
        if reserved.is_err() {
            // A stopped actor's mailbox may have been full when it stopped: say stopped, not full.
            return Err(if self.queue.is_closed() {
                SendError::Stopped
            } else {
                SendError::Full
            });
        }
        self.queue.push(Envelope::Msg(msg)).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            SendError::Stopped
        })
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    struct Channel(mpsc::UnboundedSender<Envelope<u32>>);

    impl Queue<u32> for Channel {
        fn push(&self, envelope: Envelope<u32>) -> Result<(), Closed> {
            self.0.send(envelope).map_err(|_| Closed)
        }
        fn is_closed(&self) -> bool {
            self.0.is_closed()
        }
    }

    #[tokio::test]
    async fn a_timer_enters_a_full_mailbox_and_senders_do_not() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let door = Door::new(Channel(tx), 2, 1);
        door.deliver(1).unwrap();
        door.deliver(2).unwrap();
        assert_eq!(door.deliver(3), Err(SendError::Full));
        assert_eq!(door.backlog(), 2);
        door.schedule(Duration::ZERO, 9);
        let mut timers = 0;
        for _ in 0..3 {
            let envelope = rx.recv().await.expect("queued");
            door.took(&envelope);
            match envelope {
                Envelope::Timer(9) => timers += 1,
                Envelope::Msg(n) => assert!(n == 1 || n == 2),
                _ => panic!("unexpected envelope"),
            }
        }
        assert_eq!((timers, door.backlog()), (1, 0));
        // Taken envelopes free their room: senders and the timer slot alike.
        door.deliver(4).unwrap();
        door.deliver(5).unwrap();
        door.schedule(Duration::ZERO, 10);
        // An actor that stopped with a full mailbox is reported stopped, not full.
        drop(rx);
        assert_eq!(door.deliver(6), Err(SendError::Stopped));
    }

    #[tokio::test]
    #[should_panic(expected = "TIMERS_MAX")]
    async fn more_timers_than_declared_is_a_bug() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let door = Door::new(Channel(tx), 2, 1);
        door.schedule(Duration::from_secs(60), 1);
        door.schedule(Duration::from_secs(60), 2);
    }
}
