//! TCP stalls: a machine whose accepted frame connections stop moving bytes while its datagrams
//! still flow (a saturated or misbehaving path, a receiver that stopped reading), until the stall
//! is lifted.
//!
//! The simulator wraps every frame connection a node accepts in a [`Stalling`] stream sharing the
//! machine's [`Stall`]. While it is set, reads and writes on them wait (they are not refused or
//! closed: under a stall nothing tells the peer anything, only its timeouts make it visible),
//! and lifting it wakes them all. Gossip (UDP) is untouched, so membership keeps seeing the node
//! alive while replication and anti-entropy to it stall.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A machine's TCP stall switch; clones share it.
#[derive(Clone, Default)]
pub struct Stall(Arc<Mutex<StallState>>);

#[derive(Default)]
struct StallState {
    on: bool,
    waiting: Vec<Waker>,
}

impl Stall {
    /// Stalls every wrapped connection (now and later ones) until [`Stall::lift`].
    pub fn set(&self) {
        self.lock().on = true;
    }

    /// Lets the stalled connections move again.
    pub fn lift(&self) {
        let waiting = {
            let mut state = self.lock();
            state.on = false;
            std::mem::take(&mut state.waiting)
        };
        for waker in waiting {
            waker.wake();
        }
    }

    /// Whether connections are stalled now.
    pub fn is_set(&self) -> bool {
        self.lock().on
    }

    /// `Pending` (waking `cx` at the lift) while stalled.
    fn poll_clear(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.on {
            if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiting.push(cx.waker().clone());
            }
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StallState> {
        // The simulation runs on one thread; a poisoned lock means a test already panicked.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stream that moves no bytes while its machine's [`Stall`] is set.
pub struct Stalling<S> {
    inner: S,
    stall: Stall,
}

impl<S> Stalling<S> {
    /// Wraps `inner`, stalled whenever `stall` is set.
    pub fn new(inner: S, stall: Stall) -> Self {
        Stalling { inner, stall }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalling<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        std::task::ready!(self.stall.poll_clear(cx));
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalling<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.stall.poll_clear(cx));
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.stall.poll_clear(cx));
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn a_stalled_stream_moves_nothing_until_the_stall_is_lifted() {
        madsim::runtime::Runtime::new().block_on(async {
            let (a, b) = tokio::io::duplex(64);
            let stall = Stall::default();
            let mut reader = Stalling::new(a, stall.clone());
            let mut writer = b;
            writer.write_all(b"ping").await.unwrap();
            stall.set();
            let mut buf = [0u8; 4];
            let read = tokio::time::timeout(Duration::from_secs(5), reader.read_exact(&mut buf));
            assert!(read.await.is_err(), "nothing read while stalled");
            let lift = stall.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                lift.lift();
            });
            reader.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            assert!(!stall.is_set());
        });
    }
}
