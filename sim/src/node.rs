//! One simulated kvs node: the real storage actor and HTTP router on a simulated machine that can
//! lose power.
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

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use kvs::api::{self, ApiState, Mode};
use kvs::host::task::BusyTime;
use kvs::host::MAILBOX_CAPACITY;
use kvs::seam::Clock;
use kvs::storage::{OpenError, StorageActor, Store};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::clock::SimClock;
use crate::disk::SimDisk;

/// How often a simulated node checkpoints (in logged batches): far more often than production,
/// so that the sweep's short runs put crashes before, inside and after checkpoints.
pub const CHECKPOINT_BATCHES: u32 = 16;

/// Largest accepted value on a simulated node (KVS's default, 1 MiB).
pub const VALUE_BYTES_MAX: usize = 1 << 20;

/// A simulated machine running one kvs node.
pub struct SimNode {
    machine: Machine,
    boot: Mutex<Boot>,
}

/// What survives a crash: the hardware and the node's identity.
struct Machine {
    name: String,
    id: u64,
    madsim_node: NodeId,
    run_seed: u64,
    disk: SimDisk,
    clock: Arc<SimClock>,
}

/// What lives only as long as one boot of the machine.
struct Boot {
    number: u64,
    router: Router,
    failed: watch::Receiver<Option<String>>,
}

impl SimNode {
    /// Boots node `id` on `disk` (a fresh one, or one that a previous node left behind). Must run
    /// inside a madsim runtime; the actors' randomness derives from the run's seed and `id`.
    pub async fn start(id: u64, disk: SimDisk) -> Result<SimNode, OpenError> {
        let handle = Handle::current();
        let name = format!("node-{id}");
        let madsim_node = handle.create_node().name(name.clone()).build().id();
        let machine = Machine {
            name,
            id,
            madsim_node,
            run_seed: handle.seed(),
            disk,
            clock: Arc::new(SimClock::new()),
        };
        let boot = machine.boot(0).await?;
        Ok(SimNode {
            machine,
            boot: Mutex::new(boot),
        })
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
        self.machine.disk.crash();
        let handle = Handle::current();
        handle.kill(self.machine.madsim_node);
        handle.restart(self.machine.madsim_node);
        let number = self.lock().number + 1;
        let boot = self.machine.boot(number).await?;
        *self.lock() = boot;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Boot> {
        // The simulation runs on one thread; a poisoned lock means a test already panicked.
        self.boot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Machine {
    /// Opens the store on the current boot's view of the disk and starts the node's actors on
    /// its madsim node, with the router serving them.
    async fn boot(&self, number: u64) -> Result<Boot, OpenError> {
        let (store, wal) = Store::open(
            self.disk.backend("kvs.redb"),
            self.disk.backend("kvs.wal"),
            self.clock.wall_ms(),
        )?;
        let actor = StorageActor::new(store.clone(), wal, self.name.clone())
            .checkpoint_every(CHECKPOINT_BATCHES);
        let clock: Arc<dyn Clock> = self.clock.clone();
        let rng_seed = actor_seed(self.run_seed, self.id, number);
        let machine = Handle::current()
            .get_node(self.madsim_node)
            .expect("the node's machine exists");
        let actor_clock = Arc::clone(&clock);
        let disk = self.disk.clone();
        let busy: BusyTime = Arc::new(move || disk.take_io_time());
        let (storage, failed) = machine
            .spawn(async move {
                let actor = kvs::host::task::spawn_paced(
                    actor,
                    actor_clock,
                    rng_seed,
                    MAILBOX_CAPACITY,
                    busy,
                );
                (actor.addr().clone(), actor.failed())
            })
            .await
            .expect("spawning the storage actor on a live node");
        let state = ApiState {
            node_id: self.name.clone(),
            address: format!("{}:8080", self.name),
            joined_timestamp_ms: store.joined_timestamp_ms(),
            mode: Mode::Normal,
            value_bytes_max: VALUE_BYTES_MAX,
            clock,
            storage,
            reader: store.reader(),
        };
        Ok(Boot {
            number,
            router: api::router(state),
            failed,
        })
    }
}

/// The storage actor's RNG seed for boot `boot` of node `id` in run `run_seed`: distinct per node
/// and per boot (a rebooted node must not redraw the uuids it drew before), fixed by the run seed.
fn actor_seed(run_seed: u64, id: u64, boot: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(run_seed) ^ id) ^ boot)
}

/// SplitMix64's finalizer: a cheap bijective mix, so nearby inputs give unrelated seeds.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
