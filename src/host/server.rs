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

use super::gossip::GossipSocket;
use super::listener::BoundedListener;
use super::ractor::RactorHost;
use super::shutdown::{self, Signals};
use super::system::{os_seed, SystemClock};
use super::{Host, SpawnError};
use crate::api::Mode;
use crate::cluster::counters::NetCounters;
use crate::cluster::frame::FrameKeys;
use crate::cluster::{ClusterSecret, Sealer};
use crate::config::{Config, ConfigError};
use crate::node::{ClusterSpec, Node, NodeSpec, RunSeed};
use crate::seam::Clock;
use crate::storage::{OpenError, Store, Wal};
use rand_core::SeedableRng;

/// Frame connections accepted and waiting for the transport, at most.
const FRAME_CONNECTIONS_QUEUE: usize = 64;

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
    /// The gossip port (UDP, the HTTP port's number) could not be bound.
    #[error("cannot bind the gossip port {addr}/udp: {source}")]
    Gossip {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node is told to join a cluster but has no cluster secret (a configuration error).
    #[error("{0}")]
    NoSecret(String),
    /// The node listens on every interface and has no address to give its peers.
    #[error(
        "bind_address {0} listens on every interface, so peers need another address to reach \
         this node: set advertise_address to its IP address"
    )]
    Unadvertised(std::net::IpAddr),
    /// The cluster secret could not be read or written.
    #[error("{0}")]
    Secret(String),
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

impl ServerError {
    /// The process exit code for this error: 78 (`EX_CONFIG`) for what the configuration must
    /// fix, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Config(_) | ServerError::NoSecret(_) | ServerError::Unadvertised(_) => 78,
            _ => 1,
        }
    }
}

/// Runs a node until SIGINT/SIGTERM (clean exit) or a component failure (error). `config_path`
/// is only reported, in the start-up line.
pub async fn run(config: Config, config_path: &Path) -> Result<(), ServerError> {
    let signals = Signals::install().map_err(ServerError::Signals)?;
    // Before anything is bound or created.
    let advertise = config.advertise_ip()?;
    if advertise.is_unspecified() {
        if !config.seed_nodes.is_empty() {
            return Err(ServerError::Unadvertised(advertise));
        }
        tracing::warn!(
            bind_address = %advertise,
            "no node can join this one: set advertise_address to the IP address peers reach it at"
        );
    }
    // The port first: a start that fails on it leaves nothing behind in `data_dir`.
    let addr = SocketAddr::new(config.bind_ip()?, config.port);
    let listen_err = |source| ServerError::Listen { addr, source };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(listen_err)?;
    // Gossip on the same port number over UDP: peers need only the HTTP address KVS's
    // `seed_nodes` give.
    let gossip_err = |source| ServerError::Gossip {
        addr: local,
        source,
    };
    let udp = std::net::UdpSocket::bind(local).map_err(gossip_err)?;

    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let data_dir =
        std::path::absolute(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    let secret = cluster_secret(&config, &data_dir, config_path)?;
    let (store, wal) = open_store(&data_dir, clock.wall_ms())?;
    let (keys, replayed) = (store.keys_at_open(), store.replayed_batches());
    let secret = match secret {
        SecretSource::Known(secret) => secret,
        SecretSource::Generate(file) => generate_secret(&file)?,
    };
    let previous: Vec<ClusterSecret> = config
        .cluster_secrets_previous
        .iter()
        .filter_map(|hex| ClusterSecret::from_hex(hex).ok())
        .collect();
    let net_counters = Arc::new(NetCounters::default());
    let socket = GossipSocket::from_std(
        udp,
        Sealer::new(&secret, &previous),
        Arc::clone(&net_counters),
    )
    .map_err(gossip_err)?;
    let (frames_tx, frames) = tokio::sync::mpsc::channel(FRAME_CONNECTIONS_QUEUE);
    let seeds = resolve_seeds(&config.seed_nodes);
    let mut host = RactorHost::start(Arc::clone(&clock)).await?;
    let mode = if config.read_only {
        Mode::ReadOnly
    } else {
        Mode::Normal
    };
    let spec = NodeSpec {
        node_id: config.node_id.clone(),
        cluster: ClusterSpec {
            socket,
            advertise,
            frames,
            frame_keys: FrameKeys::new(&secret, &previous),
            seeds,
            reap_after: Duration::from_secs(config.member_reap_after_s),
            pace: config.pace(),
            tombstone_grace: config.tombstone_grace(),
            bootstrap_max_age: config.bootstrap_max_age(),
        },
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
        mode = %node.mode(),
        keys,
        wal_replayed_batches = replayed,
        "listening"
    );

    let listener = BoundedListener::new(listener, config.max_connections, frames_tx, net_counters)
        .map_err(listen_err)?;
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

/// Name of the file in `data_dir` holding a generated cluster secret.
pub const SECRET_FILE: &str = "cluster_secret";

/// Where this start's cluster secret comes from: decided before anything is created, so that a
/// start refused for want of one leaves nothing behind.
enum SecretSource {
    /// From the config or from `data_dir/cluster_secret`.
    Known(ClusterSecret),
    /// A new cluster: generate one into this file once the store opened.
    Generate(PathBuf),
}

/// The cluster secret: the config's, else the one in `data_dir/cluster_secret`, else (a node
/// starting a new cluster: no seed nodes) one to generate there. A node told to join a cluster
/// without the secret refuses to start, saying where to find it.
fn cluster_secret(
    config: &Config,
    data_dir: &Path,
    config_path: &Path,
) -> Result<SecretSource, ServerError> {
    if !config.cluster_secret.is_empty() {
        // Validated when the config was loaded.
        return ClusterSecret::from_hex(&config.cluster_secret)
            .map(SecretSource::Known)
            .map_err(|e| ServerError::Secret(format!("cluster_secret: {e}")));
    }
    let file = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            return ClusterSecret::from_hex(&text)
                .map(SecretSource::Known)
                .map_err(|e| ServerError::Secret(format!("{}: {e}", file.display())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ServerError::Secret(format!(
                "reading {}: {e}",
                file.display()
            )));
        }
    }
    if !config.seed_nodes.is_empty() {
        return Err(ServerError::NoSecret(format!(
            "{}: seed_nodes is set but cluster_secret is not: copy the cluster_secret of the \
             cluster you join (the cluster_secret key of a member's config, or the file \
             cluster_secret in the data_dir of the node that started the cluster) into it",
            config_path.display()
        )));
    }
    Ok(SecretSource::Generate(file))
}

/// A new cluster's secret, written to `file` and announced.
fn generate_secret(file: &Path) -> Result<ClusterSecret, ServerError> {
    let secret = ClusterSecret::generate(&mut rand_chacha::ChaCha12Rng::from_seed(os_seed()));
    write_secret(file, &secret)
        .map_err(|e| ServerError::Secret(format!("writing {}: {e}", file.display())))?;
    tracing::info!(
        file = %file.display(),
        "generated a cluster secret: nodes that join this one need it as their cluster_secret"
    );
    Ok(secret)
}

/// Writes the secret readable by its owner alone, atomically: a crash leaves either no file (the
/// next start generates one, no node having seen this one) or the whole secret, durably.
fn write_secret(file: &Path, secret: &ClusterSecret) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = file.with_extension("partial");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    out.write_all(format!("{}\n", secret.to_hex()).as_bytes())?;
    out.sync_all()?;
    std::fs::rename(&partial, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The seed nodes' addresses (their HTTP `host:port`, whose port number gossip uses over UDP).
/// One that does not resolve is skipped with a warning: the others may be enough.
fn resolve_seeds(seeds: &[String]) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for seed in seeds {
        // Every address it resolves to (`localhost` may be ::1 and 127.0.0.1): the one the seed
        // is known by answers, the others are dropped.
        match seed.to_socket_addrs() {
            Ok(addrs) => {
                for addr in addrs {
                    if !out.contains(&addr) {
                        out.push(addr);
                    }
                }
            }
            Err(e) => tracing::warn!(seed, error = %e, "seed node does not resolve: skipped"),
        }
    }
    out
}
