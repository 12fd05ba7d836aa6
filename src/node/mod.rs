//! One node, wired the same way in production and in the simulator.
//!
//! [`Node::assemble`] is the only place a node's actors are created, connected and started; the
//! production server (`host::server`, on ractor) and the simulator (`kvs-sim`, on tasks) both
//! call it, so the simulator runs exactly what ships. Its order:
//!
//! 1. every actor's mailbox, and so its address, before any actor exists, so that actors can be
//!    built holding each other's addresses (membership, sync, conflict resolution and storage will);
//! 2. every actor, built with the addresses it needs;
//! 3. each actor started with its own random stream ([`RunSeed::rng`]: run seed, node, actor, boot);
//! 4. the HTTP state over them.
//!
//! Shutdown order ([`Node::shutdown`]) is the reverse of dependency: whatever feeds storage stops
//! before storage, which stops last so that its final group commit and checkpoint see every write.
//! The caller stops HTTP first (no new requests), then calls it.

mod seed;

pub use seed::RunSeed;

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use crate::api::{self, ApiState, Mode, SharedMode};
use crate::cluster::frame::FrameKeys;
use crate::cluster::{MembershipActor, MembershipMsg, MembershipSpec, NodeIdentity};
use crate::host::frames::{self, FrameTasks, Incoming};
use crate::host::gossip::{GossipSocket, GossipTasks};
use crate::host::{Host, SpawnError, MAILBOX_CAPACITY};
use crate::metrics::NodeMetrics;
use crate::seam::{Actor, Addr, Clock};
use crate::storage::{StorageActor, Store, Wal};
use crate::sync::conflict::{ConflictCounters, ConflictSpec, DecisionLog};
use crate::sync::{ConflictActor, ConflictMsg, Pace, PeerLink, SyncActor, SyncCounters, SyncMsg};

/// How long a stopping node waits for its departure notice to be handed to the socket.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a node takes part in its cluster.
pub struct ClusterSpec {
    /// The bound gossip socket (UDP, same port number as HTTP).
    pub socket: GossipSocket,
    /// The IP address peers reach this node at (with the socket's port: its identity).
    pub advertise: std::net::IpAddr,
    /// Frame connections from peers (TCP on the HTTP port: the production listener tells them
    /// from HTTP; the simulator accepts them directly).
    pub frames: tokio::sync::mpsc::Receiver<Incoming>,
    /// The keys frames are signed and checked with.
    pub frame_keys: FrameKeys,
    /// Gossip addresses of the seed nodes.
    pub seeds: Vec<SocketAddr>,
    /// How long dead and departed members stay listed.
    pub reap_after: Duration,
    /// Anti-entropy's pace (`sync_interval`, `catchup_interval`, `throttle_delay_ms`,
    /// `fetch_delay_ms`).
    pub pace: Pace,
    /// How far back a new node's bootstrap fetches (`bootstrap_max_age_hours`).
    pub bootstrap_max_age: Duration,
    /// How long tombstones are kept before garbage collection (`tombstone_grace_hours`).
    pub tombstone_grace: Duration,
}

/// What a node is, beyond its storage: identity, limits and the sources of time and randomness.
pub struct NodeSpec {
    /// The node's id (`node_id`).
    pub node_id: String,
    /// Its cluster: gossip socket and seeds.
    pub cluster: ClusterSpec,
    /// Normal or read-only.
    pub mode: Mode,
    /// Largest accepted value, in bytes.
    pub value_bytes_max: usize,
    /// Checkpoint every this many logged batches (`None`: the storage default).
    pub checkpoint_batches: Option<u32>,
    /// The node's clock.
    pub clock: Arc<dyn Clock>,
    /// The run's randomness.
    pub seed: RunSeed,
    /// Which boot of this node this is (0 first), so a rebooted node draws fresh randomness.
    pub boot: u64,
}

/// A running node: its actors, in shutdown order, and the HTTP state over them.
pub struct Node<H: Host> {
    api: ApiState,
    membership: Addr<MembershipMsg>,
    gossip: GossipTasks,
    frames: FrameTasks,
    /// Started actors, in the order they stop.
    actors: Vec<(&'static str, H::Running)>,
}

impl<H: Host> Node<H> {
    /// Creates, connects and starts a node's actors on `host`, over an opened store and its log.
    pub async fn assemble(
        host: &mut H,
        spec: NodeSpec,
        store: Store,
        wal: Wal,
    ) -> Result<Node<H>, SpawnError> {
        // 1. Every address first (and the socket's way out, which needs membership's address).
        let (storage, storage_mailbox) = host.mailbox::<StorageActor>(MAILBOX_CAPACITY);
        let (membership, membership_mailbox) = host.mailbox::<MembershipActor>(MAILBOX_CAPACITY);
        let (sync, sync_mailbox) = host.mailbox::<SyncActor>(MAILBOX_CAPACITY);
        let (conflict, conflict_mailbox) = host.mailbox::<ConflictActor>(MAILBOX_CAPACITY);
        let ClusterSpec {
            socket,
            advertise,
            frames: incoming,
            frame_keys,
            seeds,
            reap_after,
            pace,
            bootstrap_max_age,
            tombstone_grace,
        } = spec.cluster;
        let port = socket.local_addr().map_err(|e| SpawnError {
            name: MembershipActor::NAME,
            reason: format!("gossip socket: {e}"),
        })?;
        let address = SocketAddr::new(advertise, port.port());
        let counters = std::sync::Arc::clone(socket.counters());
        let sync_counters = SyncCounters::default();
        let conflict_counters = ConflictCounters::default();
        let metrics = std::sync::Arc::new(NodeMetrics::new(
            &counters,
            &sync_counters,
            &conflict_counters,
        ));
        let (outbox, gossip) = socket.start(membership.clone());
        let frames_rng = spec.seed.rng(&spec.node_id, "frames", spec.boot);
        let (transport, frame_tasks) = frames::start(
            frame_keys,
            incoming,
            sync.clone(),
            frames_rng,
            std::sync::Arc::clone(&counters),
        );

        // 2. Every actor.
        let mut storage_actor = StorageActor::new(store.clone(), wal, spec.node_id.clone())
            .observe_batches(metrics.batch_writes.clone())
            .replicate_to(sync.clone())
            .report_collisions_to(conflict.clone())
            .count_purges(metrics.purges.clone());
        let mode = SharedMode::new(spec.mode);
        let link = |answers| PeerLink {
            requests: transport.clone(),
            answers,
        };
        let mut sync_actor = SyncActor::new(
            storage.clone(),
            store.reader(),
            link(sync.wrapping(SyncMsg::Answer)),
            sync_counters,
            pace,
            crate::sync::actor::boot_id(store.joined_timestamp_ms(), store.generation()),
        )
        .tombstone_grace(tombstone_grace);
        let decisions = DecisionLog::default();
        let conflict_actor = ConflictActor::new(ConflictSpec {
            me: address,
            joined_ms: store.joined_timestamp_ms(),
            storage: storage.clone(),
            reader: store.reader(),
            sync: sync.clone(),
            link: link(conflict.wrapping(ConflictMsg::Answer)),
            counters: conflict_counters,
            decisions: std::sync::Arc::clone(&decisions),
        });
        // Where it joins through: the seed nodes, and the members it knew when it last ran.
        let remembered = store.remembered_members().to_vec();
        let clustered = seeds.iter().chain(&remembered).any(|s| *s != address);
        if clustered {
            sync_actor = sync_actor.clustered();
        }
        // A new (or empty) node joining a cluster pulls its data before taking writes; so does
        // one whose bootstrap a crash interrupted (its horizon says it never completed).
        let new_node = store.keys_at_open() == 0 || store.horizon().bootstrapping();
        if new_node && clustered {
            store.mark_bootstrapping().map_err(|e| SpawnError {
                name: StorageActor::NAME,
                reason: format!("recording that the node bootstraps: {e}"),
            })?;
            let age_ms = u64::try_from(bootstrap_max_age.as_millis()).unwrap_or(u64::MAX);
            let since_ms = spec.clock.wall_ms().saturating_sub(age_ms);
            sync_actor = sync_actor.bootstrapping(mode.clone(), spec.mode, since_ms);
        }
        if let Some(batches) = spec.checkpoint_batches {
            storage_actor = storage_actor.checkpoint_every(batches);
        }
        let me = NodeIdentity {
            addr: address,
            node_id: spec.node_id.clone(),
            generation: store.generation(),
            joined_ms: store.joined_timestamp_ms(),
        };
        let membership_spec = MembershipSpec {
            me,
            seeds,
            remembered,
            reap_after,
        };
        let membership_actor = MembershipActor::new(membership_spec, outbox, counters)
            .tell_peers(sync.clone())
            .tell_voters(conflict)
            .remember_in(storage.clone());

        // 3. Started, each on its own random stream.
        let rng = |name: &str| spec.seed.rng(&spec.node_id, name, spec.boot);
        let storage_running = host
            .start(storage_mailbox, storage_actor, rng(StorageActor::NAME))
            .await?;
        let sync_running = host
            .start(sync_mailbox, sync_actor, rng(SyncActor::NAME))
            .await?;
        let conflict_running = host
            .start(conflict_mailbox, conflict_actor, rng(ConflictActor::NAME))
            .await?;
        let membership_running = host
            .start(
                membership_mailbox,
                membership_actor,
                rng(MembershipActor::NAME),
            )
            .await?;

        // 4. HTTP over them.
        let api = ApiState {
            node_id: spec.node_id,
            mode,
            value_bytes_max: spec.value_bytes_max,
            started: spec.clock.monotonic(),
            clock: spec.clock,
            storage,
            membership: membership.clone(),
            reader: store.reader(),
            metrics,
            decisions,
            left: Default::default(),
        };
        Ok(Node {
            api,
            membership,
            gossip,
            frames: frame_tasks,
            actors: vec![
                (MembershipActor::NAME, membership_running),
                (ConflictActor::NAME, conflict_running),
                (SyncActor::NAME, sync_running),
                (StorageActor::NAME, storage_running),
            ],
        })
    }

    /// A read handle on the node's store (the simulator dumps it to check convergence).
    pub fn reader(&self) -> crate::storage::StorageReader {
        self.api.reader.clone()
    }

    /// The node's mode now (`syncing` while a new node pulls the cluster's data).
    pub fn mode(&self) -> Mode {
        self.api.mode.get()
    }

    /// The node's HTTP interface.
    pub fn router(&self) -> axum::Router {
        api::router(self.api.clone())
    }

    /// Leaves the cluster gracefully (peers list this node as `left`, not dead), then stops the
    /// actors in shutdown order, each after the messages already in its mailbox (waiting at most
    /// `timeout` for each), and the gossip socket once the departure notice went out.
    pub async fn shutdown(self, host: &mut H, timeout: Duration) {
        let leave = self.membership.ask(MembershipMsg::Leave);
        if crate::host::within(LEAVE_TIMEOUT, leave).await.is_none() {
            tracing::warn!("leaving the cluster took too long");
        }
        drop(self.membership);
        drop(self.api);
        let mut gossip = Some(self.gossip);
        let mut frames = Some(self.frames);
        for (name, running) in self.actors {
            tracing::debug!(actor = name, "stopping");
            host.stop(running, timeout).await;
            if name == MembershipActor::NAME {
                if let Some(gossip) = gossip.take() {
                    gossip.stop(LEAVE_TIMEOUT).await;
                }
            }
            if name == SyncActor::NAME {
                if let Some(frames) = frames.take() {
                    frames.stop();
                }
            }
        }
    }
}
