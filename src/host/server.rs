//! The production node: storage on files, the node assembly (`crate::node`) on ractor, the router
//! on a TCP listener with a bound on connections, and an orderly stop (`shutdown`) on SIGINT/SIGTERM
//! or on a component failure.
//!
//! Every write acknowledged before a stop is durable, and since each acknowledgement follows a
//! synced write-ahead-log frame (`storage::Wal`), so is every write acknowledged before a `kill -9`
//! or a power cut.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::listener::BoundedListener;
use super::ractor::RactorHost;
use super::shutdown::{self, Signals};
use super::system::{os_seed, SystemClock};
use super::{Host, SpawnError};
use crate::api::Mode;
use crate::config::{Config, ConfigError};
use crate::node::{Node, NodeSpec, RunSeed};
use crate::seam::Clock;
use crate::storage::{OpenError, Store, Wal};

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
    /// Another process (another kvs) has the data directory's database open.
    #[error("data directory {path} is in use: is another kvs running on it?")]
    DataDirInUse {
        /// The data directory, absolute.
        path: PathBuf,
    },
    /// The store could not be opened.
    #[error("opening the store in {path}: {source}")]
    Storage {
        /// The data directory, absolute.
        path: PathBuf,
        /// What failed.
        source: OpenError,
    },
    /// An actor could not start.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The HTTP port could not be bound.
    #[error("cannot listen on {addr}: {source} (is another kvs running on this port? `port` in the config chooses another)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
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

/// Runs a node until SIGINT/SIGTERM (clean exit) or a component failure (error). `config_path`
/// is only reported, in the start-up line.
pub async fn run(config: Config, config_path: &Path) -> Result<(), ServerError> {
    let signals = Signals::install().map_err(ServerError::Signals)?;
    // The port first: a start that fails on it leaves nothing behind in `data_dir`.
    let addr = SocketAddr::new(config.bind_ip()?, config.port);
    let listen_err = |source| ServerError::Listen { addr, source };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(listen_err)?;

    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let data_dir =
        std::path::absolute(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    let (store, wal) = open_store(&data_dir, clock.wall_ms())?;
    let (keys, replayed) = (store.keys_at_open(), store.replayed_batches());
    let mut host = RactorHost::start(Arc::clone(&clock)).await?;
    let mode = if config.read_only {
        Mode::ReadOnly
    } else {
        Mode::Normal
    };
    let spec = NodeSpec {
        node_id: config.node_id.clone(),
        address: local.to_string(),
        mode,
        value_bytes_max: config.max_value_bytes,
        checkpoint_batches: None,
        clock,
        seed: RunSeed::from_bytes(os_seed()),
        boot: 0,
    };
    let node = Node::assemble(&mut host, spec, store, wal).await?;
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        config = %config_path.display(),
        data_dir = %data_dir.display(),
        addr = %local,
        node_id = %config.node_id,
        %mode,
        keys,
        wal_replayed_batches = replayed,
        "listening"
    );

    let listener = BoundedListener::new(listener, config.max_connections);
    axum::serve(listener, node.router())
        .with_graceful_shutdown(shutdown::requested(signals, host.failed()))
        .await
        .map_err(listen_err)?;

    let timeout = Duration::from_millis(config.shutdown_timeout_ms);
    node.shutdown(&mut host, timeout).await;
    // After the actors stopped: a last commit that failed while stopping counts too.
    let failure = host.failed().borrow().clone();
    host.close(timeout).await;
    tracing::info!("stopped");
    match failure {
        Some(failure) => Err(ServerError::ComponentFailed(failure)),
        None => Ok(()),
    }
}

fn open_store(dir: &Path, now_ms: u64) -> Result<(Store, Wal), ServerError> {
    std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    let db = file_backend(&dir.join(DB_FILE))?;
    let wal = file_backend(&dir.join(WAL_FILE))?;
    Store::open(db, wal, now_ms).map_err(|e| match e {
        OpenError::InUse => ServerError::DataDirInUse {
            path: dir.to_owned(),
        },
        source => ServerError::Storage {
            path: dir.to_owned(),
            source,
        },
    })
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
