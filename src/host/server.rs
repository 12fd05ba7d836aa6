//! The production node: storage on a file, actors on ractor, the router on a TCP listener, and an
//! orderly shutdown on SIGINT/SIGTERM or on a component failure.
//!
//! Shutdown order: stop accepting and finish in-flight requests (axum's graceful shutdown), then
//! drain the storage actor (its last group commit and a checkpoint, so the next start has nothing
//! to replay), then drop the last handle on redb, which closes the file cleanly. Every write acknowledged before that is durable, and since each acknowledgement
//! follows a synced write-ahead-log frame (`storage::Wal`), so is every write acknowledged before a
//! `kill -9` or a power cut.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::ractor::{RactorHost, SpawnError};
use super::system::SystemClock;
use super::MAILBOX_CAPACITY;
use crate::api::{self, ApiState, Mode};
use crate::config::{Config, ConfigError};
use crate::seam::Clock;
use crate::storage::{OpenError, StorageActor, Store, Wal};

/// Name of the database file inside `data_dir`.
pub const DB_FILE: &str = "kvs.redb";
/// Name of the write-ahead log inside `data_dir`.
pub const WAL_FILE: &str = "kvs.wal";

/// Why a node could not run or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The SIGINT/SIGTERM handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// The data directory or database file could not be opened.
    #[error("opening {path}: {source}")]
    DataDir {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Storage(#[from] OpenError),
    /// An actor could not start.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The HTTP listener failed.
    #[error("HTTP server on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A component failed and the node stopped (see the supervision policy in `host::ractor`).
    #[error("stopped after a component failure: {0}")]
    ComponentFailed(String),
}

/// Runs a node until SIGINT/SIGTERM (clean exit) or a component failure (error).
pub async fn run(config: Config) -> Result<(), ServerError> {
    let signals = ShutdownSignals::install().map_err(ServerError::Signals)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let (store, wal) = open_store(&config, clock.wall_ms())?;
    let mut host = RactorHost::start(Arc::clone(&clock)).await?;
    let storage = host
        .spawn(
            StorageActor::new(store.clone(), wal, &config.node_id),
            MAILBOX_CAPACITY,
        )
        .await?;

    let addr = SocketAddr::new(config.bind_ip()?, config.port);
    let listen_err = |source| ServerError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen_err)?;
    let local = listener.local_addr().map_err(listen_err)?;
    let mode = if config.read_only {
        Mode::ReadOnly
    } else {
        Mode::Normal
    };
    let state = ApiState {
        node_id: config.node_id.clone(),
        address: local.to_string(),
        joined_timestamp_ms: store.joined_timestamp_ms(),
        mode,
        value_bytes_max: config.max_value_bytes,
        clock,
        storage,
        reader: store.reader(),
    };
    tracing::info!(addr = %local, node_id = %config.node_id, ?mode, "listening");

    let mut failed = host.failed();
    let stop = async move {
        tokio::select! {
            signal = signals.recv() => tracing::info!(%signal, "shutting down"),
            _ = failed.wait_for(Option::is_some) => {}
        }
    };
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(stop)
        .await
        .map_err(listen_err)?;

    let failure = host.failed().borrow().clone();
    host.shutdown(Duration::from_millis(config.shutdown_timeout_ms))
        .await;
    drop(store);
    tracing::info!("stopped");
    match failure {
        Some(failure) => Err(ServerError::ComponentFailed(failure)),
        None => Ok(()),
    }
}

fn open_store(config: &Config, now_ms: u64) -> Result<(Store, Wal), ServerError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let db = file_backend(&dir.join(DB_FILE))?;
    let wal = file_backend(&dir.join(WAL_FILE))?;
    Ok(Store::open(db, wal, now_ms)?)
}

fn file_backend(path: &Path) -> Result<FileBackend, ServerError> {
    let failed = |source| ServerError::DataDir {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(failed)?;
    FileBackend::new(file).map_err(|e| failed(std::io::Error::other(e.to_string())))
}

/// SIGINT and SIGTERM, watched from the moment this is created: a signal that arrives while the
/// node is still starting is delivered once the node is up, rather than killing it mid-start.
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<ShutdownSignals> {
        Ok(ShutdownSignals {
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
