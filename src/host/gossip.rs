//! The gossip socket: the UDP side of the cluster, between the network and the membership actor.
//!
//! Written once for both worlds: `tokio::net::UdpSocket` is the OS's in production and madsim's
//! simulated one in the simulator (where datagrams are lost, delayed and reordered by the seed).
//! Inbound, every datagram is checked by the envelope (`cluster::envelope`: size, version, MAC)
//! before the membership actor sees its payload; what fails is counted by reason and logged at a
//! bounded rate, never parsed. Outbound, the actor's [`Outgoing`] payloads queue in a bounded
//! channel (full: dropped and counted, as a datagram may be) and a task seals and sends them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cluster::envelope::DATAGRAM_BYTES_MAX;
use crate::cluster::{MembershipMsg, NetCounters, Outgoing, Sealer};
use crate::seam::{Addr, Mailbox, SendError};

/// Datagrams waiting to be sent, at most.
pub const SEND_QUEUE: usize = 1024;

/// A bound gossip socket, before its tasks start.
pub struct GossipSocket {
    socket: Arc<UdpSocket>,
    sealer: Sealer,
    counters: Arc<NetCounters>,
}

/// The running socket's tasks, stopped by [`GossipTasks::stop`] (the simulator's crashes drop
/// them with their node).
pub struct GossipTasks {
    receive: JoinHandle<()>,
    send: JoinHandle<()>,
}

impl GossipSocket {
    /// Binds `addr` (UDP).
    pub async fn bind(
        addr: SocketAddr,
        sealer: Sealer,
        counters: Arc<NetCounters>,
    ) -> io::Result<GossipSocket> {
        let socket = UdpSocket::bind(addr).await?;
        Ok(GossipSocket {
            socket: Arc::new(socket),
            sealer,
            counters,
        })
    }

    /// Adopts a socket bound by the production server before anything else (non-blocking mode
    /// is set here).
    #[cfg(not(madsim))]
    pub fn from_std(
        socket: std::net::UdpSocket,
        sealer: Sealer,
        counters: Arc<NetCounters>,
    ) -> io::Result<GossipSocket> {
        socket.set_nonblocking(true)?;
        Ok(GossipSocket {
            socket: Arc::new(UdpSocket::from_std(socket)?),
            sealer,
            counters,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The counters this socket updates.
    pub fn counters(&self) -> &Arc<NetCounters> {
        &self.counters
    }

    /// Starts receiving into `membership` and returns the address the actor sends through.
    pub fn start(self, membership: Addr<MembershipMsg>) -> (Addr<Outgoing>, GossipTasks) {
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let receive = tokio::spawn(receive(
            Arc::clone(&self.socket),
            self.sealer.clone(),
            Arc::clone(&self.counters),
            membership,
        ));
        let send = tokio::spawn(send(
            self.socket,
            self.sealer,
            Arc::clone(&self.counters),
            rx,
        ));
        let outbox = Addr::new(Arc::new(Outbox(tx)) as Arc<dyn Mailbox<Outgoing>>);
        (outbox, GossipTasks { receive, send })
    }
}

impl GossipTasks {
    /// Stops receiving at once; sending stops once the queue is empty and every sender (the
    /// membership actor) is gone, so a departure notice queued while leaving still goes out,
    /// or after `limit`.
    pub async fn stop(self, limit: Duration) {
        self.receive.abort();
        let abort = self.send.abort_handle();
        if tokio::time::timeout(limit, self.send).await.is_err() {
            abort.abort();
        }
    }
}

/// The membership actor's way out: a bounded queue to the send task.
struct Outbox(mpsc::Sender<Outgoing>);

impl Mailbox<Outgoing> for Outbox {
    fn deliver(&self, msg: Outgoing) -> Result<(), SendError> {
        self.0.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Stopped,
        })
    }
}

async fn receive(
    socket: Arc<UdpSocket>,
    sealer: Sealer,
    counters: Arc<NetCounters>,
    membership: Addr<MembershipMsg>,
) {
    // One byte more than the largest datagram: a longer one arrives truncated to this and is
    // recognised as oversized instead of being read as a shorter one.
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX + 1];
    loop {
        let (len, from) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "gossip receive");
                continue;
            }
        };
        let datagram = &buffer[..len];
        let payload = match sealer.open(datagram) {
            Ok(payload) => payload,
            Err(reason) => {
                if counters.reject(reason) {
                    let n = counters.rejected(reason);
                    tracing::warn!(%from, %reason, dropped = n, "dropped a gossip datagram");
                }
                continue;
            }
        };
        counters.received.inc();
        let msg = MembershipMsg::Datagram {
            from,
            payload: payload.to_vec(),
        };
        match membership.send(msg) {
            Ok(()) => {}
            Err(SendError::Full) => {
                if counters.drop_for("receive_queue_full") {
                    tracing::warn!("membership is behind: dropped a gossip datagram");
                }
            }
            Err(SendError::Stopped) => return,
        }
    }
}

async fn send(
    socket: Arc<UdpSocket>,
    sealer: Sealer,
    counters: Arc<NetCounters>,
    mut queue: mpsc::Receiver<Outgoing>,
) {
    while let Some(Outgoing { to, payload }) = queue.recv().await {
        let datagram = sealer.seal(&payload);
        match send_to(&socket, to, &datagram).await {
            Ok(()) => {
                counters.sent.inc();
            }
            Err(e) => tracing::debug!(%to, error = %e, "gossip send"),
        }
    }
}

/// One datagram; tokio and madsim differ in argument order and return value.
async fn send_to(socket: &UdpSocket, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
    #[cfg(madsim)]
    {
        socket.send_to(to, datagram).await
    }
    #[cfg(not(madsim))]
    {
        socket.send_to(datagram, to).await.map(|_| ())
    }
}
