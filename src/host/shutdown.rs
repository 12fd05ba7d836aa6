//! When a production node stops: on SIGINT or SIGTERM, or when a component fails.
//!
//! The order of a stop is the server's (`server::run`): stop accepting and finish in-flight HTTP
//! requests (axum's graceful shutdown, driven by [`requested`]), stop the node's actors in the
//! order the node assembly gives (`Node::shutdown`: storage last, so its final group commit and
//! checkpoint leave nothing to replay), then the supervisor, then drop the last handle on redb,
//! which closes the file cleanly.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

/// SIGINT and SIGTERM, watched from the moment this is created: a signal that arrives while the
/// node is still starting is delivered once the node is up, rather than killing it mid-start.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Resolves when the node should stop: a signal arrived, or `failed` reports a component failure.
pub async fn requested(signals: Signals, mut failed: watch::Receiver<Option<String>>) {
    tokio::select! {
        signal = signals.recv() => tracing::info!(%signal, "shutting down"),
        _ = failed.wait_for(Option::is_some) => {}
    }
}
