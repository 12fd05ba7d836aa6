//! Request/reply between actors and their callers: a one-shot answer slot carried in a message.

/// The answering half of a request, carried inside a message. Dropping it unanswered tells the
/// asker [`AskError::Dropped`], so a caller never waits forever on a lost request.
#[derive(Debug)]
pub struct Reply<T>(futures_channel::oneshot::Sender<T>);

impl<T> Reply<T> {
    /// Sends the answer. An asker that stopped waiting is not an error for the actor.
    pub fn send(self, value: T) {
        let _ = self.0.send(value);
    }
}

/// Creates a reply slot and the future that resolves to its answer.
pub fn reply_channel<T>() -> (Reply<T>, futures_channel::oneshot::Receiver<T>) {
    let (tx, rx) = futures_channel::oneshot::channel();
    (Reply(tx), rx)
}

/// Why an `ask` got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The actor's mailbox is at its bound.
    #[error("actor mailbox full")]
    Full,
    /// The actor has stopped.
    #[error("actor stopped")]
    Stopped,
    /// The actor dropped the request without answering (it stopped or failed while handling it).
    #[error("actor dropped the request")]
    Dropped,
}
