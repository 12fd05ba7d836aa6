//! The node's TCP listener: HTTP and the cluster's frames on one port, each kind of connection
//! with a bound of its own.
//!
//! A connection is classified by its first bytes (frame connections open with
//! `cluster::frame::MAGIC`), then holds a permit of its kind: `max_connections` HTTP connections,
//! and `max_connections` but at least [`PEER_CONNECTIONS_MIN`] frame connections. So clients
//! holding every HTTP connection cannot cut the node off from its peers, and the connections a
//! flood can make the node hold are bounded:
//!
//! * at most [`UNCLASSIFIED_MAX`] connections wait to be classified, or to be refused; beyond,
//!   new connections wait in the kernel's backlog;
//! * an HTTP connection beyond `max_connections` waits for one to close, [`HTTP_WAITING_MAX`] of
//!   them at most and [`HTTP_WAIT_MAX`] at most; beyond, it is answered 503 with a JSON error
//!   and closed;
//! * a frame connection beyond its bound is closed (its peer connects again later) and counted
//!   as `kvs_frame_connections_dropped_total{reason="too_many_connections"}`; one that sends no
//!   authenticated frame soon is closed by the frame transport (`host::frames`).
//!
//! The process needs a file descriptor limit above the sum (with the default `max_connections`
//! of 1024: about 2,400 sockets); the node does not raise its own limit.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::frames::Incoming;
use crate::cluster::counters::NetCounters;
use crate::cluster::frame::MAGIC;

/// How long a new connection may take to send its first bytes before it is taken for HTTP.
pub const CLASSIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections accepted and not classified yet, at most (a peer's is classified within a round
/// trip; a silent one holds its place for `CLASSIFY_TIMEOUT`).
pub const UNCLASSIFIED_MAX: usize = 256;

/// HTTP connections beyond `max_connections` waiting for one to close, at most.
pub const HTTP_WAITING_MAX: usize = 64;

/// How long an HTTP connection beyond `max_connections` waits for one to close before it is
/// answered 503 (clients may keep idle connections open indefinitely).
pub const HTTP_WAIT_MAX: Duration = Duration::from_secs(10);

/// Frame connections a node takes at least, whatever `max_connections` says: a peer needs one
/// per member that talks to it.
pub const PEER_CONNECTIONS_MIN: usize = 256;

/// HTTP connections accepted and classified, waiting for axum, at most.
const HTTP_QUEUE: usize = 64;

/// How long the 503 answer to an HTTP connection refused may take to write.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A TCP listener that keeps at most a fixed number of connections of each kind open, and hands
/// the cluster's frame connections to the frame transport instead of HTTP: one port for clients
/// and peers, as KVS's `seed_nodes` assume.
pub struct BoundedListener {
    http: mpsc::Receiver<(BoundedStream, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

/// The permits of each kind of connection.
struct Bounds {
    unclassified: Arc<Semaphore>,
    http: Arc<Semaphore>,
    http_waiting: Arc<Semaphore>,
    peers: Arc<Semaphore>,
    counters: Arc<NetCounters>,
}

impl BoundedListener {
    /// Accepts on `inner`: at most `max_connections` HTTP connections open at once, and as many
    /// frame connections, sent to `frames`; refusals counted in `counters`.
    pub fn new(
        inner: TcpListener,
        max_connections: usize,
        frames: mpsc::Sender<Incoming>,
        counters: Arc<NetCounters>,
    ) -> io::Result<Self> {
        assert!(
            max_connections > 0,
            "a server accepts at least one connection"
        );
        let local = inner.local_addr()?;
        let bounds = Arc::new(Bounds {
            unclassified: Arc::new(Semaphore::new(UNCLASSIFIED_MAX)),
            http: Arc::new(Semaphore::new(max_connections)),
            http_waiting: Arc::new(Semaphore::new(HTTP_WAITING_MAX)),
            peers: Arc::new(Semaphore::new(max_connections.max(PEER_CONNECTIONS_MIN))),
            counters,
        });
        let (http_tx, http) = mpsc::channel(HTTP_QUEUE);
        let acceptor = tokio::spawn(accept_loop(inner, bounds, http_tx, frames));
        Ok(BoundedListener {
            http,
            local,
            acceptor,
        })
    }
}

impl Drop for BoundedListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (BoundedStream, SocketAddr) {
        match self.http.recv().await {
            Some(accepted) => accepted,
            // The acceptor stopped (the listener is being dropped): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    inner: TcpListener,
    bounds: Arc<Bounds>,
    http: mpsc::Sender<(BoundedStream, SocketAddr)>,
    frames: mpsc::Sender<Incoming>,
) {
    loop {
        let unclassified = Arc::clone(&bounds.unclassified)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, addr) = match inner.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin (as axum does).
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (bounds, http, frames) = (Arc::clone(&bounds), http.clone(), frames.clone());
        tokio::spawn(async move {
            let is_frames = opens_with_magic(&stream).await;
            if is_frames {
                drop(unclassified);
                let Ok(permit) = Arc::clone(&bounds.peers).try_acquire_owned() else {
                    if bounds.counters.frame_drop_for("too_many_connections") {
                        tracing::warn!(%addr, "refused a frame connection: too many open");
                    }
                    return;
                };
                let conn = BoundedStream {
                    stream,
                    _permit: permit,
                };
                let _ = frames.send((Box::new(conn), addr)).await;
                return;
            }
            // The place while classifying is kept through a refusal: refusals are bounded too.
            let Some(permit) = bounds.http_permit(unclassified).await else {
                let refused = bounds.counters.http_refused.inc() + 1;
                if refused.is_power_of_two() {
                    tracing::warn!(%addr, refused, "refused an HTTP connection: too many open and waiting");
                }
                refuse(stream).await;
                return;
            };
            let conn = BoundedStream {
                stream,
                _permit: permit,
            };
            let _ = http.send((conn, addr)).await;
        });
    }
}

impl Bounds {
    /// An HTTP connection's permit: at once, or once one closes if fewer than `HTTP_WAITING_MAX`
    /// wait already and one closes within `HTTP_WAIT_MAX`; `None` otherwise. The connection's
    /// place while classifying (`unclassified`) is given back once it waits or gets its permit.
    async fn http_permit(
        &self,
        unclassified: OwnedSemaphorePermit,
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.http).try_acquire_owned() {
            return Some(permit);
        }
        let _waiting = Arc::clone(&self.http_waiting).try_acquire_owned().ok()?;
        drop(unclassified);
        tokio::time::timeout(HTTP_WAIT_MAX, Arc::clone(&self.http).acquire_owned())
            .await
            .ok()
            .map(|permit| permit.expect("the semaphore is never closed"))
    }
}

/// Answers an HTTP connection that cannot be taken with 503 and a JSON error, and closes it
/// (reading what the client sends until it closes too, within `REFUSE_TIMEOUT`: a socket closed
/// with unread bytes resets the connection, and the client might lose the answer).
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":"too many connections; try again later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

/// Whether the connection's first bytes are the frame magic (peeked: HTTP still reads them).
async fn opens_with_magic(stream: &TcpStream) -> bool {
    let look = async {
        let mut buf = [0u8; MAGIC.len()];
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 || buf[..n] != MAGIC[..n] {
                return Ok::<bool, io::Error>(false);
            }
            if n == MAGIC.len() {
                return Ok(true);
            }
            // A prefix of the magic so far: wait for the rest.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    matches!(
        tokio::time::timeout(CLASSIFY_TIMEOUT, look).await,
        Ok(Ok(true))
    )
}

/// An accepted connection; its permit returns to the listener when it is dropped.
pub struct BoundedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_generated_config_states_the_waiting_bound_this_listener_keeps() {
        let doc = crate::config::KEY_DOCS
            .iter()
            .flat_map(|(_, keys)| keys.iter())
            .find(|(key, _)| *key == "max_connections")
            .expect("max_connections is documented")
            .1;
        let stated = format!("{} more wait", super::HTTP_WAITING_MAX);
        assert!(doc.contains(&stated), "{doc:?} does not say {stated:?}");
    }
}
