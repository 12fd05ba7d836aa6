//! The node's TCP listener: HTTP and the cluster's frames on one port, with a bound on open
//! connections.
//!
//! Each connection holds a permit from a semaphore of `max_connections`; when all are taken the
//! listener stops accepting (new connections wait in the kernel's backlog) until one closes. So a
//! flood of connections costs a bounded amount of memory and file descriptors instead of failing
//! the node with `EMFILE` or exhausting memory.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::frames::Incoming;
use crate::cluster::frame::MAGIC;

/// How long a new connection may take to send its first bytes before it is taken for HTTP.
pub const CLASSIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP connections accepted and classified, waiting for axum, at most.
const HTTP_QUEUE: usize = 64;

/// A TCP listener that keeps at most a fixed number of connections open, and hands the cluster's
/// frame connections (they open with `cluster::frame::MAGIC`) to the frame transport instead of
/// HTTP: one port for clients and peers, as KVS's `seed_nodes` assume.
pub struct BoundedListener {
    http: mpsc::Receiver<(BoundedStream, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl BoundedListener {
    /// Accepts on `inner`, at most `max_connections` open at once (frame connections included),
    /// sending frame connections to `frames`.
    pub fn new(
        inner: TcpListener,
        max_connections: usize,
        frames: mpsc::Sender<Incoming>,
    ) -> io::Result<Self> {
        assert!(
            max_connections > 0,
            "a server accepts at least one connection"
        );
        let local = inner.local_addr()?;
        let permits = Arc::new(Semaphore::new(max_connections));
        let (http_tx, http) = mpsc::channel(HTTP_QUEUE);
        let acceptor = tokio::spawn(accept_loop(inner, permits, http_tx, frames));
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
    permits: Arc<Semaphore>,
    http: mpsc::Sender<(BoundedStream, SocketAddr)>,
    frames: mpsc::Sender<Incoming>,
) {
    loop {
        let permit = Arc::clone(&permits)
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
        let (http, frames) = (http.clone(), frames.clone());
        tokio::spawn(async move {
            let is_frames = opens_with_magic(&stream).await;
            let conn = BoundedStream {
                stream,
                _permit: permit,
            };
            if is_frames {
                let _ = frames.send((Box::new(conn), addr)).await;
            } else {
                let _ = http.send((conn, addr)).await;
            }
        });
    }
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
