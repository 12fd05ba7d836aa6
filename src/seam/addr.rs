//! [`Addr`]: a cloneable, host-agnostic handle for sending an actor messages.

use std::fmt;
use std::sync::Arc;

use super::reply::{reply_channel, AskError, Reply};

/// Why a message could not be delivered (the message is dropped, and with it any reply slot, so an
/// asker learns of it at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The mailbox is at its bound: the caller should shed load (HTTP 503), not wait.
    #[error("mailbox full")]
    Full,
    /// The actor has stopped.
    #[error("actor stopped")]
    Stopped,
}

/// The host side of an address: how a message reaches a mailbox. Implementations must be bounded
/// (refuse with [`SendError::Full`] beyond their capacity) and must deliver one sender's messages in
/// the order they were sent.
pub trait Mailbox<M>: Send + Sync {
    /// Enqueues `msg` without waiting.
    fn deliver(&self, msg: M) -> Result<(), SendError>;
}

/// Where to send an actor its messages; cheap to clone, the same type on every host.
pub struct Addr<M> {
    mailbox: Arc<dyn Mailbox<M>>,
}

impl<M> Clone for Addr<M> {
    fn clone(&self) -> Self {
        Addr {
            mailbox: Arc::clone(&self.mailbox),
        }
    }
}

impl<M> fmt::Debug for Addr<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Addr")
    }
}

/// The mailbox behind [`Addr::wrapping`].
struct Wrapping<M, N> {
    inner: Addr<M>,
    wrap: fn(N) -> M,
}

impl<M: Send + 'static, N: Send + 'static> Mailbox<N> for Wrapping<M, N> {
    fn deliver(&self, msg: N) -> Result<(), SendError> {
        self.inner.send((self.wrap)(msg))
    }
}

impl<M: Send + 'static> Addr<M> {
    /// Wraps a host's mailbox.
    pub fn new(mailbox: Arc<dyn Mailbox<M>>) -> Self {
        Addr { mailbox }
    }

    /// An address for messages of another type that arrive here wrapped by `wrap` (an answer
    /// type that several actors receive, each in its own message type).
    pub fn wrapping<N: Send + 'static>(&self, wrap: fn(N) -> M) -> Addr<N> {
        Addr::new(Arc::new(Wrapping {
            inner: self.clone(),
            wrap,
        }))
    }

    /// Sends `msg` without waiting for it to be handled.
    pub fn send(&self, msg: M) -> Result<(), SendError> {
        self.mailbox.deliver(msg)
    }

    /// Sends the message built around a fresh [`Reply`] and waits for the answer.
    pub async fn ask<T>(&self, build: impl FnOnce(Reply<T>) -> M) -> Result<T, AskError> {
        let (reply, answer) = reply_channel();
        self.send(build(reply)).map_err(|e| match e {
            SendError::Full => AskError::Full,
            SendError::Stopped => AskError::Stopped,
        })?;
        answer.await.map_err(|_| AskError::Dropped)
    }
}
