//! What the sync and conflict actors exchange with the frame transport (`host::frames`): requests
//! to peers with correlation ids, their answers, and why a request failed.

use std::net::SocketAddr;

use crate::cluster::frame::{SyncRequest, SyncResponse};
use crate::seam::{Addr, SendError};

/// A request for the host glue to deliver to a peer; the answer comes back to `answer_to` with
/// the same id.
#[derive(Debug, Clone)]
pub struct PeerRequest {
    /// The peer (its gossip and HTTP address; frames go to the same port over TCP).
    pub to: SocketAddr,
    /// Correlation id, unique per requesting actor.
    pub id: u64,
    /// What to ask.
    pub request: SyncRequest,
    /// Where the answer goes: the requesting actor.
    pub answer_to: Addr<PeerAnswer>,
}

/// The answer to a [`PeerRequest`], or why there is none.
#[derive(Debug)]
pub struct PeerAnswer {
    /// The request's id.
    pub id: u64,
    /// The peer's answer, or the transport's failure.
    pub result: Result<SyncResponse, TransportError>,
}

/// An actor's way to its peers: requests go to the host glue's queue, answers come back to the
/// actor. Loss, reordering and duplication never reach the actor as such: every request gets
/// exactly one answer or one [`TransportError`] (a timeout at worst), unless the actor's own
/// mailbox is full, which the actor covers with its own timeout.
#[derive(Debug, Clone)]
pub struct PeerLink {
    /// The host glue's queue (`host::frames`).
    pub requests: Addr<PeerRequest>,
    /// Where the answers go.
    pub answers: Addr<PeerAnswer>,
}

impl PeerLink {
    /// Asks `to` `request`, to be answered with `id`.
    pub fn send(&self, to: SocketAddr, id: u64, request: SyncRequest) -> Result<(), SendError> {
        self.requests.send(PeerRequest {
            to,
            id,
            request,
            answer_to: self.answers.clone(),
        })
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection, or it broke.
    #[error("connection: {0}")]
    Connection(String),
    /// The peer's answer failed its checks (MAC, encoding, correlation id).
    #[error("answer refused: {0}")]
    Refused(&'static str),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The transport's queue for that peer is full.
    #[error("queue full")]
    QueueFull,
}
