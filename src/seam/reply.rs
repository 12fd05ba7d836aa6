//! Request/reply between actors and their callers: a one-shot answer slot carried in a message.

/// The answering half of a request, carried inside a message. Dropping it unanswered tells the
/// asker [`AskError::Dropped`], so a caller never waits forever on a lost request.
pub struct Reply<T>(Slot<T>);

/// Where an answer goes: the asker's channel, or through a conversion to another reply.
enum Slot<T> {
    Channel(futures_channel::oneshot::Sender<T>),
    Mapped(Box<dyn FnOnce(T) + Send>),
}

impl<T> std::fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reply")
    }
}

impl<T> Reply<T> {
    /// Sends the answer. An asker that stopped waiting is not an error for the actor.
    pub fn send(self, value: T) {
        match self.0 {
            Slot::Channel(sender) => {
                let _ = sender.send(value);
            }
            Slot::Mapped(send) => send(value),
        }
    }
}

impl<T: Send + 'static> Reply<T> {
    /// A reply of another type whose answer `convert` turns into this one: an actor hands a
    /// request on to another and lets that one answer the asker, without waiting for it.
    /// Dropping it unanswered drops this one.
    pub fn map<U>(self, convert: impl FnOnce(U) -> T + Send + 'static) -> Reply<U> {
        Reply(Slot::Mapped(Box::new(move |value| {
            self.send(convert(value))
        })))
    }
}

/// Creates a reply slot and the future that resolves to its answer.
pub fn reply_channel<T>() -> (Reply<T>, futures_channel::oneshot::Receiver<T>) {
    let (tx, rx) = futures_channel::oneshot::channel();
    (Reply(Slot::Channel(tx)), rx)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_reply_answers_the_asker_converted_and_dropping_it_drops_the_asker() {
        let (reply, mut answer) = reply_channel::<String>();
        reply.map(|n: u32| format!("n={n}")).send(7);
        assert_eq!(answer.try_recv(), Ok(Some("n=7".to_owned())));
        let (reply, mut answer) = reply_channel::<String>();
        drop(reply.map(|n: u32| n.to_string()));
        assert!(
            answer.try_recv().is_err(),
            "the asker learns it was dropped"
        );
    }
}
