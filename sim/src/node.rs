//! One simulated kvs node: the production node assembly (`kvs::node`), its actors and its HTTP
//! router, on a simulated machine that can lose power.
//!
//! A [`SimNode`] is a machine: a [`SimDisk`], a [`SimClock`] and a madsim node on which its actors
//! run as tasks (`kvs::host::task`). Clients call its router in-process, as the production server
//! would after parsing a request off a socket.
//!
//! A crash ([`SimNode::crash_and_restart`]) is a power cut, not a shutdown: the disk loses what was
//! not synced, and the madsim node is killed, which drops every task on it without running any
//! `stopped` hook, so a write the storage actor had buffered but not committed is simply gone, and
//! its caller gets an error rather than an acknowledgement. Then the machine boots again: a new
//! store on the same disk, a new actor, a new router. What the node promised survives: the
//! storage actor answers a write only after its commit synced, so every acknowledged write is on
//! the durable image.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use kvs::api::Mode;
use kvs::cluster::frame::FrameKeys;
use kvs::cluster::{ClusterSecret, Sealer};
use kvs::host::frames::Incoming;
use kvs::host::gossip::GossipSocket;
use kvs::host::task::{BusyTime, TaskHost};
use kvs::host::Host;
use kvs::node::{ClusterSpec, Node, NodeSpec, RunSeed};
use kvs::seam::Clock;
use kvs::storage::{OpenError, Record, RecordHead, StorageReader, Store};
use kvs::sync::Pace;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::clock::SimClock;
use crate::disk::SimDisk;
use crate::stall::{Stall, Stalling};

/// How often a simulated node checkpoints (in logged batches): far more often than production,
/// so that the sweep's short runs put crashes before, inside and after checkpoints.
pub const CHECKPOINT_BATCHES: u32 = 16;

/// Pause between anti-entropy rounds on a simulated node.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// How long a dead or departed member stays listed on a simulated node.
pub const MEMBER_REAP_AFTER: Duration = Duration::from_secs(600);

/// Accepts the node's frame connections on its address, each stalled whenever `stall` is set.
/// (No HTTP travels over simulated TCP: clients call the router in-process, so every connection
/// is a peer's.)
async fn accept_frames(addr: SocketAddr, stall: Stall) -> mpsc::Receiver<Incoming> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("a fresh machine's port is free");
    let (tx, rx) = mpsc::channel::<Incoming>(64);
    tokio::spawn(async move {
        while let Ok((stream, from)) = listener.accept().await {
            let stream = Stalling::new(stream, stall.clone());
            if tx.send((Box::new(stream), from)).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The run's cluster secret: derived from the seed, like everything else.
fn sim_secret(run_seed: u64) -> ClusterSecret {
    ClusterSecret::generate(&mut RunSeed::from_u64(run_seed).rng("cluster", "secret", 0))
}

/// Largest accepted value on a simulated node (KVS's default, 1 MiB).
pub const VALUE_BYTES_MAX: usize = 1 << 20;

/// The configuration keys a scenario may set on a node (the rest are kvs's defaults).
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Normal or read-only (`read_only`).
    pub mode: Mode,
    /// How long tombstones are kept (`tombstone_grace_hours`; scenarios use seconds).
    pub tombstone_grace: Duration,
    /// How far back a new node's bootstrap pulls (`bootstrap_max_age_hours`).
    pub bootstrap_max_age: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            mode: Mode::Normal,
            tombstone_grace: kvs::config::Config::default().tombstone_grace(),
            bootstrap_max_age: kvs::config::Config::default().bootstrap_max_age(),
        }
    }
}

/// A simulated machine running one kvs node.
pub struct SimNode {
    machine: Machine,
    boot: Mutex<Boot>,
    /// Whether the machine has power (see [`SimNode::power_off`]).
    up: std::sync::atomic::AtomicBool,
}

/// What survives a crash: the hardware and the node's identity.
struct Machine {
    name: String,
    /// The node's gossip and HTTP address.
    addr: SocketAddr,
    /// Gossip addresses it joins through.
    seeds: Vec<SocketAddr>,
    /// Its configuration keys that scenarios vary.
    setup: Setup,
    madsim_node: NodeId,
    run_seed: u64,
    disk: SimDisk,
    clock: Arc<SimClock>,
    /// Its TCP stall switch (a property of its network path: it outlives reboots).
    stall: Stall,
}

/// What lives only as long as one boot of the machine.
struct Boot {
    number: u64,
    router: Router,
    reader: StorageReader,
    failed: watch::Receiver<Option<String>>,
}

impl SimNode {
    /// Boots node `id` on `disk` (a fresh one, or one that a previous node left behind). Must run
    /// inside a madsim runtime; each actor's randomness derives from the run's seed, the node, the
    /// actor and the boot (`RunSeed::rng`).
    pub async fn start(id: u64, disk: SimDisk) -> Result<SimNode, OpenError> {
        SimNode::start_in_cluster(id, disk, Vec::new()).await
    }

    /// Boots node `id` on `disk`, joining the cluster through `seeds` (gossip addresses, see
    /// [`SimNode::addr_of`]). Node `id` has the IP address 10.0.{id / 250}.{id % 250 + 1}.
    pub async fn start_in_cluster(
        id: u64,
        disk: SimDisk,
        seeds: Vec<SocketAddr>,
    ) -> Result<SimNode, OpenError> {
        SimNode::start_configured(id, disk, seeds, Setup::default()).await
    }

    /// Like [`SimNode::start_in_cluster`], with the configuration keys scenarios vary.
    pub async fn start_configured(
        id: u64,
        disk: SimDisk,
        seeds: Vec<SocketAddr>,
        setup: Setup,
    ) -> Result<SimNode, OpenError> {
        let handle = Handle::current();
        let name = format!("node-{id}");
        let addr = SimNode::addr_of(id);
        let madsim_node = handle
            .create_node()
            .name(name.clone())
            .ip(addr.ip())
            .build()
            .id();
        crate::timeline::name(madsim_node, &name);
        let machine = Machine {
            name,
            addr,
            seeds,
            setup,
            madsim_node,
            run_seed: handle.seed(),
            disk,
            clock: Arc::new(SimClock::new()),
            stall: Stall::default(),
        };
        let boot = machine.boot(0).await?;
        Ok(SimNode {
            machine,
            boot: Mutex::new(boot),
            up: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// The gossip (and HTTP) address of node `id`.
    pub fn addr_of(id: u64) -> SocketAddr {
        let (high, low) = ((id / 250) as u8, (id % 250) as u8 + 1);
        SocketAddr::from(([10, 0, high, low], 8080))
    }

    /// The node's gossip (and HTTP) address.
    pub fn addr(&self) -> SocketAddr {
        self.machine.addr
    }

    /// Every record the node holds (tombstones included), in key order: the full dump that
    /// convergence checks compare.
    pub fn dump(&self) -> Vec<(String, Record)> {
        let reader = self.lock().reader.clone();
        let mut all = reader
            .since((0, ""), usize::MAX)
            .expect("a live node's store reads");
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The root of the node's hash tree now (`keyspace_hash` in `/health`).
    pub fn root(&self) -> u64 {
        let reader = self.lock().reader.clone();
        reader.tree().root()
    }

    /// The record the node holds for `key` now, if any (a tombstone included).
    pub fn record(&self, key: &str) -> Option<Record> {
        let reader = self.lock().reader.clone();
        reader.get(key).expect("a live node's store reads")
    }

    /// The heads (version, tombstone) of its records of many keys, read from one snapshot
    /// (between two simulated events, when no checkpoint can run) without copying values.
    pub fn heads<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Vec<Option<RecordHead>> {
        let reader = self.lock().reader.clone();
        let reads = reader.point_reads().expect("a live node's store reads");
        keys.into_iter()
            .map(|key| reads.head(key).expect("a live node's store reads"))
            .collect()
    }

    /// The madsim node it runs on (for partitions, pauses and kills).
    pub fn madsim_id(&self) -> NodeId {
        self.machine.madsim_node
    }

    /// The node's id, as `/health` reports it.
    pub fn name(&self) -> &str {
        &self.machine.name
    }

    /// The machine's disk.
    pub fn disk(&self) -> &SimDisk {
        &self.machine.disk
    }

    /// The machine's clock (set its offset to skew the node).
    pub fn clock(&self) -> &SimClock {
        &self.machine.clock
    }

    /// How many times the machine has booted after its first start.
    pub fn restarts(&self) -> u64 {
        self.lock().number
    }

    /// Becomes `Some(reason)` when a component of the current boot fails (a commit that hit a
    /// dead disk, say). The production node stops then; a simulated one waits for the scenario,
    /// its supervisor, to restart it.
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.lock().failed.clone()
    }

    /// Sends one HTTP request to the node's router and returns the status and the whole body.
    /// A request that was already under way when the node crashed finishes against the old boot,
    /// as a client's request to a dying server fails; later ones reach the new boot.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Bytes) {
        let router = self.lock().router.clone();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.into()))
            .expect("a request built from a valid path");
        let response = match router.oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("an in-process response body is readable");
        (status, body)
    }

    /// `PUT /kv/{key}` with a JSON body.
    pub async fn put(&self, key: &str, json: impl Into<Bytes>) -> (StatusCode, Bytes) {
        self.request(Method::PUT, &format!("/kv/{key}"), json).await
    }

    /// `GET /kv/{key}`.
    pub async fn get(&self, key: &str) -> (StatusCode, Bytes) {
        self.request(Method::GET, &format!("/kv/{key}"), Bytes::new())
            .await
    }

    /// `DELETE /kv/{key}`.
    pub async fn delete(&self, key: &str) -> (StatusCode, Bytes) {
        self.request(Method::DELETE, &format!("/kv/{key}"), Bytes::new())
            .await
    }

    /// Cuts the power and boots the machine again: unsynced disk writes are lost, every task of
    /// the node is dropped where it stands, then a new store opens on the same disk (redb repairs
    /// it) with a new storage actor and router.
    pub async fn crash_and_restart(&self) -> Result<(), OpenError> {
        self.power_off();
        self.power_on().await
    }

    /// Cuts the power and leaves the machine off: unsynced disk writes are lost, every task of
    /// the node is dropped where it stands, its peers hear nothing from it and its clients'
    /// requests fail, until [`SimNode::power_on`]. Its store is not readable meanwhile.
    pub fn power_off(&self) {
        assert!(self.is_up(), "{} is already off", self.name());
        self.machine.disk.crash();
        Handle::current().kill(self.machine.madsim_node);
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Boots a machine that is off: a new store opens on the same disk (redb repairs it) with
    /// new actors and a new router.
    pub async fn power_on(&self) -> Result<(), OpenError> {
        assert!(!self.is_up(), "{} is already on", self.name());
        Handle::current().restart(self.machine.madsim_node);
        let number = self.lock().number + 1;
        let boot = self.machine.boot(number).await?;
        *self.lock() = boot;
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Whether the machine has power (its store is readable).
    pub fn is_up(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops running the node's tasks, as a stalled process (a long GC pause, SIGSTOP, a
    /// starved VM): its timers come due and its sockets fill meanwhile, and it handles all of
    /// that at once on [`SimNode::resume`]. Its store stays readable.
    pub fn pause(&self) {
        Handle::current().pause(self.machine.madsim_node);
    }

    /// The machine's TCP stall switch: set, its accepted frame connections move no bytes (in
    /// either direction) until it is lifted; gossip still flows.
    pub fn tcp_stall(&self) -> &Stall {
        &self.machine.stall
    }

    /// Runs a paused node's tasks again.
    pub fn resume(&self) {
        Handle::current().resume(self.machine.madsim_node);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Boot> {
        // The simulation runs on one thread; a poisoned lock means a test already panicked.
        self.boot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Machine {
    /// Opens the store on the current boot's view of the disk and assembles the node on its
    /// madsim node exactly as the production server does (`kvs::node::Node::assemble`), on the
    /// task host, with the router serving it.
    async fn boot(&self, number: u64) -> Result<Boot, OpenError> {
        let (store, wal) = Store::open(
            self.disk.backend("kvs.redb"),
            self.disk.backend("kvs.wal"),
            self.clock.wall_ms(),
        )?;
        let clock: Arc<dyn Clock> = self.clock.clone();
        let (addr, seeds) = (self.addr, self.seeds.clone());
        let secret = sim_secret(self.run_seed);
        let sealer = Sealer::new(&secret, &[]);
        let frame_keys = FrameKeys::new(&secret, &[]);
        let node_id = self.name.clone();
        let (spec_clock, run_seed, setup) = (Arc::clone(&clock), self.run_seed, self.setup);
        let spec = move |socket, frames| NodeSpec {
            node_id,
            cluster: ClusterSpec {
                socket,
                advertise: addr.ip(),
                frames,
                frame_keys,
                seeds,
                reap_after: MEMBER_REAP_AFTER,
                pace: Pace {
                    round_every: SYNC_EVERY,
                    ..kvs::config::Config::default().pace()
                },
                bootstrap_max_age: setup.bootstrap_max_age,
                tombstone_grace: setup.tombstone_grace,
            },
            mode: setup.mode,
            value_bytes_max: VALUE_BYTES_MAX,
            checkpoint_batches: Some(CHECKPOINT_BATCHES),
            clock: spec_clock,
            seed: RunSeed::from_u64(run_seed),
            boot: number,
        };
        let machine = Handle::current()
            .get_node(self.madsim_node)
            .expect("the node's machine exists");
        let disk = self.disk.clone();
        let stall = self.stall.clone();
        let busy: BusyTime = Arc::new(move || disk.take_io_time());
        let (router, reader, failed) = machine
            .spawn(async move {
                let socket = GossipSocket::bind(addr, sealer, Arc::default())
                    .await
                    .expect("a fresh machine's gossip port is free");
                let frames = accept_frames(addr, stall).await;
                let mut host = TaskHost::paced(clock, busy);
                let node = Node::assemble(&mut host, spec(socket, frames), store, wal)
                    .await
                    .expect("the task host starts every actor");
                (node.router(), node.reader(), host.failed())
            })
            .await
            .expect("assembling the node on a live machine");
        Ok(Boot {
            number,
            router,
            reader,
            failed,
        })
    }
}
