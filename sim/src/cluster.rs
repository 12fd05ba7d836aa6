//! Cluster scenarios: N nodes (the production assembly), clients writing and deleting through
//! every node, a fault schedule from the scenario file, then healing and the invariants.
//!
//! Invariants, checked after the faults stop and the cluster is healed:
//! * **convergence** within the scenario's liveness budget (simulated time): every node shows
//!   the same hash-tree root (`keyspace_hash`) *and* the same full dump of (key, record);
//! * **no acknowledged write lost**: for every key, the final version is not older than any
//!   acknowledged write or delete of it, and is one of the versions written;
//! * **no resurrection**: a key whose newest acknowledged operation is a delete ends deleted.
//!   (Only when no unacknowledged write to the key could be newer.)
//! * **membership agreement**: every node lists every node `alive`, within the same budget;
//! * **collisions** (`workload.collisions`, `check_collisions`): every timestamp collision still
//!   standing at the end was decided by vote; every decision any node made follows KVS's rules
//!   over its own ballots, each member counted once (rules written again here, independently);
//!   every node ended on the strongest decision made.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use kvs::storage::Version;
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use serde::Deserialize;

use crate::node::SimNode;
use crate::scenario::Outcome;
use crate::trace::Trace;
use crate::SimDisk;

/// A cluster scenario file (`scenarios/<name>.yaml` with `scenario: cluster`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterScenario {
    /// Always `cluster`.
    pub scenario: String,
    /// What the scenario exercises, for the reader of the file and of failures.
    pub about: String,
    /// The pinned seeds.
    pub seeds: crate::scenario_file::Seeds,
    /// Nodes in the cluster.
    pub nodes: u64,
    /// Nodes configured `read_only` (clients' writes through them are refused; replication
    /// reaches them all the same).
    #[serde(default)]
    pub read_only: Vec<u64>,
    /// The clients' work.
    pub workload: ClusterWorkload,
    /// Faults, in time order, from the start of the workload.
    #[serde(default)]
    pub faults: Vec<TimedFault>,
    /// A randomized fault mix drawn from the seed, after the scheduled `faults` (printed in the
    /// trace, so a failure shows what struck).
    #[serde(default)]
    pub swarm: Option<Swarm>,
    /// Simulated time allowed for convergence once everything is healed (ms).
    pub liveness_budget_ms: u64,
    /// How long nodes keep tombstones (ms; default kvs's 7 days, which no run reaches). With
    /// it set, a key acknowledged deleted may end absent (its tombstone collected), and a node
    /// may hold nothing for a key whose newer delete was acknowledged anywhere.
    #[serde(default)]
    pub tombstone_grace_ms: Option<u64>,
    /// How far back a joining node's bootstrap pulls (ms; default kvs's 30 days): anything
    /// older reaches it through anti-entropy only.
    #[serde(default)]
    pub bootstrap_max_age_ms: Option<u64>,
}

/// The clients' work.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterWorkload {
    /// Clients per node, each writing through its node.
    pub clients_per_node: u64,
    /// Operations per client.
    pub ops_per_client: u64,
    /// Distinct keys, shared by every client (so writes to one key race across nodes).
    pub keys: u64,
    /// Share of operations that are deletes (0 to 1).
    pub delete_ratio: f64,
    /// Pause before each operation, drawn from 0..=max (ms).
    pub think_ms_max: u64,
    /// Timestamp collisions made on purpose, besides the clients' work.
    #[serde(default)]
    pub collisions: Option<CollisionStorm>,
}

/// Timestamp collisions on purpose: rounds in which several nodes take a PUT of the same key at
/// the same simulated instant, so that they stamp it with the same millisecond.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollisionStorm {
    /// How many rounds.
    pub rounds: u64,
    /// Pause between rounds (ms): the rate.
    pub every_ms: u64,
    /// Nodes writing in each round (2 to `nodes`), drawn anew each round.
    pub writers: u64,
    /// Distinct keys the rounds write (`c0`, `c1` ...): fewer keys, more collisions on
    /// already-decided keys.
    pub keys: u64,
}

/// A randomized fault mix: `faults` faults at random instants within `span_ms`, each kind drawn
/// from every fault the simulator has (partitions, one-way links, loss, crashes, clock jumps,
/// a leave and rejoin), each healed or undone before the next of its kind.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    /// How many faults.
    pub faults: u64,
    /// Over how long, from the start of the workload (ms).
    pub span_ms: u64,
}

/// A fault and when it strikes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedFault {
    /// When, in ms from the start of the workload.
    pub at_ms: u64,
    /// What.
    #[serde(flatten)]
    pub fault: Fault,
}

/// A network fault (node numbers are 1-based, as the nodes are named).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Cut these nodes off from every other, both ways.
    Isolate(Vec<u64>),
    /// Lose everything from one node to another (one way).
    OneWay {
        /// The sender whose datagrams and segments are lost.
        from: u64,
        /// The receiver.
        to: u64,
    },
    /// Lose this share of datagrams everywhere (0 to 1).
    Loss(f64),
    /// Cut this node's power and boot it again (unsynced disk writes lost).
    Crash(u64),
    /// Set this node's wall clock ahead (positive) or behind (negative) of true time, in ms:
    /// an offset, or a jump when it changes.
    Skew {
        /// The node.
        node: u64,
        /// Its offset from true time.
        offset_ms: i64,
    },
    /// This node leaves the cluster gracefully (`POST /members/leave`); it keeps serving its
    /// clients, outside the cluster, until it reboots.
    Leave(u64),
    /// Reboot this node (power cut and boot): it rejoins under a new generation.
    Reboot(u64),
    /// Start this node (until then it does not exist): a new machine with an empty disk joins
    /// the cluster under the clients' load and bootstraps its data. Late nodes are the
    /// highest-numbered, serve no clients and take no fault before they join.
    Join(u64),
    /// Undo every cut and loss.
    Heal,
}

/// An acknowledged operation on a key.
#[derive(Debug, Clone)]
struct Acked {
    version: Version,
    delete: bool,
    /// The node that acknowledged it.
    by: String,
}

/// Every key's acknowledged operations.
type AckLog = Arc<Mutex<BTreeMap<String, Vec<Acked>>>>;

/// How often the fault phase's safety check runs (simulated time).
const MONITOR_EVERY: Duration = Duration::from_millis(250);

/// The safety invariants, checked during the fault phase as well: every `MONITOR_EVERY`, each
/// node holds, for every key acknowledged through it, a version at least as new as the newest
/// it acknowledged (an acknowledgement is durable on its node, through partitions, crashes and
/// clock jumps). A node that holds nothing, or an older version, lost a write; one that holds a
/// live value where it acknowledged a delete at least as new resurrected it.
struct Monitor {
    nodes: Arc<Mutex<Vec<Arc<SimNode>>>>,
    violations: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    fn start(nodes: Vec<Arc<SimNode>>, acked: AckLog, collects: Option<Collects>) -> Monitor {
        let nodes = Arc::new(Mutex::new(nodes));
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (n, v, halt) = (
            Arc::clone(&nodes),
            Arc::clone(&violations),
            Arc::clone(&stop),
        );
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            while !halt.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(MONITOR_EVERY).await;
                let nodes = n.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let found = unsafe_states(&nodes, &acked, collects.as_ref());
                if !found.is_empty() {
                    let at = started.elapsed().as_millis();
                    let mut all = v.lock().unwrap_or_else(|e| e.into_inner());
                    all.extend(
                        found
                            .into_iter()
                            .map(|f| format!("{f} (during faults, t={at} ms)")),
                    );
                    return;
                }
            }
        });
        Monitor {
            nodes,
            violations,
            stop,
            task,
        }
    }

    /// Watches `nodes` from now on (a node joined).
    fn watch(&self, nodes: &[Arc<SimNode>]) {
        *self.nodes.lock().unwrap_or_else(|e| e.into_inner()) = nodes.to_vec();
    }

    /// Stops watching; what it found.
    async fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("the monitor ran");
        let found = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        found.clone()
    }
}

/// What garbage collection may take, in a scenario that collects tombstones (README,
/// "Deletes"): a key whose newest acknowledged operation is a delete may end absent (its
/// tombstone collected), and so may a write acknowledged by a node the scenario cuts off (by a
/// partition, a crash or a leave) if a peer collected a newer tombstone before the write could
/// reach it. Nothing else.
#[derive(Debug, Clone)]
struct Collects {
    /// The nodes some fault cuts off, by name.
    cut_off: BTreeSet<String>,
}

impl Collects {
    fn of(scenario: &ClusterScenario) -> Option<Collects> {
        scenario.tombstone_grace_ms?;
        let cut_off = scenario
            .faults
            .iter()
            .flat_map(|f| match &f.fault {
                Fault::Isolate(n) => n.clone(),
                Fault::OneWay { from, to } => vec![*from, *to],
                Fault::Crash(n) | Fault::Leave(n) => vec![*n],
                _ => vec![],
            })
            .map(|n| format!("node-{n}"))
            .collect();
        Some(Collects { cut_off })
    }
}

/// Where a node holds less than it acknowledged (see [`Monitor`]). With tombstones collected,
/// holding nothing is also fine where a delete at least as new as the node's acknowledgement was
/// acknowledged anywhere, or where the node is one a fault cuts off ([`Collects`]).
fn unsafe_states(
    nodes: &[Arc<SimNode>],
    acked: &BTreeMap<String, Vec<Acked>>,
    collects: Option<&Collects>,
) -> Vec<String> {
    let mut out = Vec::new();
    for node in nodes {
        for (key, ops) in acked {
            let Some(newest) = ops
                .iter()
                .filter(|o| o.by == node.name())
                .max_by_key(|o| o.version)
            else {
                continue;
            };
            let deleted_since = ops.iter().any(|o| o.delete && o.version >= newest.version);
            let forgivable =
                collects.is_some_and(|c| deleted_since || c.cut_off.contains(node.name()));
            match node.record(key) {
                None if forgivable => {}
                None => out.push(format!(
                    "lost write: {} acknowledged {key} at {:?} and holds nothing",
                    node.name(),
                    newest.version
                )),
                Some(r) if r.version < newest.version => out.push(format!(
                    "lost write: {} acknowledged {key} at {:?} and holds the older {:?}",
                    node.name(),
                    newest.version,
                    r.version
                )),
                Some(r) if r.version == newest.version && newest.delete && !r.is_tombstone() => out
                    .push(format!(
                        "resurrection: {} acknowledged the delete of {key} and holds it live",
                        node.name()
                    )),
                Some(_) => {}
            }
        }
    }
    out
}

/// Loads `scenarios/<name>.yaml` as a cluster scenario.
///
/// # Panics
/// If the file is missing or malformed, naming the file and the reason.
pub fn load(name: &str) -> ClusterScenario {
    let path = crate::scenario_file::folder().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file: ClusterScenario =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(file.scenario, "cluster", "{}: scenario", path.display());
    assert!(
        (0.0..=1.0).contains(&file.workload.delete_ratio),
        "{}: workload.delete_ratio must be within 0..=1",
        path.display()
    );
    if let Some(storm) = file.workload.collisions {
        assert!(
            (2..=file.nodes).contains(&storm.writers),
            "{}: workload.collisions.writers must be within 2..={}",
            path.display(),
            file.nodes
        );
        assert!(
            storm.keys > 0,
            "{}: workload.collisions.keys must be positive",
            path.display()
        );
    }
    assert!(
        file.read_only.iter().all(|n| (1..=file.nodes).contains(n)),
        "{}: read_only: a node number outside 1..={}",
        path.display(),
        file.nodes
    );
    for f in &file.faults {
        let nodes: Vec<u64> = match &f.fault {
            Fault::Isolate(n) => n.clone(),
            Fault::OneWay { from, to } => vec![*from, *to],
            Fault::Crash(n) | Fault::Leave(n) | Fault::Reboot(n) | Fault::Join(n) => vec![*n],
            Fault::Skew { node, .. } => vec![*node],
            Fault::Loss(rate) => {
                assert!(
                    (0.0..1.0).contains(rate),
                    "{}: faults: loss must be within 0..1",
                    path.display()
                );
                vec![]
            }
            Fault::Heal => vec![],
        };
        assert!(
            nodes.iter().all(|n| (1..=file.nodes).contains(n)),
            "{}: faults: a node number outside 1..={}",
            path.display(),
            file.nodes
        );
    }
    let late = file.late();
    let first_late = file.nodes + 1 - late.len() as u64;
    assert!(
        late.iter().copied().eq(first_late..=file.nodes),
        "{}: faults: the nodes that join late must be the highest-numbered, joining in order",
        path.display()
    );
    for (i, f) in file.faults.iter().enumerate() {
        let joined = |n: u64| {
            n < first_late
                || file.faults[..i]
                    .iter()
                    .any(|g| matches!(g.fault, Fault::Join(m) if m == n))
        };
        let touched: Vec<u64> = match &f.fault {
            Fault::Isolate(n) => n.clone(),
            Fault::OneWay { from, to } => vec![*from, *to],
            Fault::Crash(n) | Fault::Leave(n) | Fault::Reboot(n) => vec![*n],
            Fault::Skew { node, .. } => vec![*node],
            Fault::Join(_) | Fault::Loss(_) | Fault::Heal => vec![],
        };
        assert!(
            touched.iter().all(|n| joined(*n)),
            "{}: faults: a fault at {} ms strikes a node before it joins",
            path.display(),
            f.at_ms
        );
    }
    assert!(
        file.read_only.iter().all(|n| *n < first_late),
        "{}: read_only: a late node",
        path.display()
    );
    file
}

impl ClusterScenario {
    /// A node's configuration in this scenario.
    fn setup(&self, mode: kvs::api::Mode) -> crate::node::Setup {
        let mut setup = crate::node::Setup {
            mode,
            ..Default::default()
        };
        if let Some(ms) = self.tombstone_grace_ms {
            setup.tombstone_grace = Duration::from_millis(ms);
        }
        if let Some(ms) = self.bootstrap_max_age_ms {
            setup.bootstrap_max_age = Duration::from_millis(ms);
        }
        setup
    }

    /// The nodes that start only when their `join` fault strikes.
    fn late(&self) -> Vec<u64> {
        self.faults
            .iter()
            .filter_map(|f| match f.fault {
                Fault::Join(n) => Some(n),
                _ => None,
            })
            .collect()
    }
}

/// Draws the swarm's faults from the run's randomness: each an instant within the span and a
/// kind, with its parameters; a partition, link cut or loss is healed at a random later instant,
/// a skew set back, a leave followed by a reboot. In time order.
fn draw_swarm(swarm: Swarm, nodes: u64) -> Vec<TimedFault> {
    let mut rng = thread_rng();
    let mut out = Vec::new();
    let node = |rng: &mut madsim::rand::GlobalRng| rng.gen_range(1..=nodes);
    for _ in 0..swarm.faults {
        let at_ms = rng.gen_range(0..swarm.span_ms);
        let until = |rng: &mut madsim::rand::GlobalRng| {
            at_ms + rng.gen_range(200..=swarm.span_ms.max(201) / 2)
        };
        match rng.gen_range(0..7) {
            0 => {
                let mut isolated: Vec<u64> = (1..=nodes).filter(|_| rng.gen_bool(0.4)).collect();
                if isolated.is_empty() || isolated.len() as u64 == nodes {
                    isolated = vec![node(&mut rng)];
                }
                out.push(TimedFault {
                    at_ms,
                    fault: Fault::Isolate(isolated),
                });
                out.push(TimedFault {
                    at_ms: until(&mut rng),
                    fault: Fault::Heal,
                });
            }
            1 => {
                let from = node(&mut rng);
                let to = from % nodes + 1;
                out.push(TimedFault {
                    at_ms,
                    fault: Fault::OneWay { from, to },
                });
                out.push(TimedFault {
                    at_ms: until(&mut rng),
                    fault: Fault::Heal,
                });
            }
            2 => {
                let rate = f64::from(rng.gen_range(5..40u32)) / 100.0;
                out.push(TimedFault {
                    at_ms,
                    fault: Fault::Loss(rate),
                });
                out.push(TimedFault {
                    at_ms: until(&mut rng),
                    fault: Fault::Heal,
                });
            }
            3 => out.push(TimedFault {
                at_ms,
                fault: Fault::Crash(node(&mut rng)),
            }),
            4 => {
                let n = node(&mut rng);
                let offset_ms = rng.gen_range(-120_000..=120_000);
                out.push(TimedFault {
                    at_ms,
                    fault: Fault::Skew { node: n, offset_ms },
                });
                out.push(TimedFault {
                    at_ms: until(&mut rng),
                    fault: Fault::Skew {
                        node: n,
                        offset_ms: 0,
                    },
                });
            }
            5 => {
                let n = node(&mut rng);
                out.push(TimedFault {
                    at_ms,
                    fault: Fault::Leave(n),
                });
                out.push(TimedFault {
                    at_ms: until(&mut rng),
                    fault: Fault::Reboot(n),
                });
            }
            _ => out.push(TimedFault {
                at_ms,
                fault: Fault::Reboot(node(&mut rng)),
            }),
        }
    }
    out.sort_by_key(|f| f.at_ms);
    out
}

/// Runs `scenario` (inside a madsim runtime: `sweep::run`).
pub async fn run(scenario: ClusterScenario) -> Outcome {
    let trace = Trace::new();
    // Every node lists every other as a seed, as a production cluster lists several: a node
    // that restarts rejoins through whichever answers.
    let seeds: Vec<_> = (1..=scenario.nodes).map(SimNode::addr_of).collect();
    let late = scenario.late();
    let mut nodes = Vec::new();
    for id in (1..=scenario.nodes).filter(|n| !late.contains(n)) {
        let mode = if scenario.read_only.contains(&id) {
            kvs::api::Mode::ReadOnly
        } else {
            kvs::api::Mode::Normal
        };
        let node =
            SimNode::start_configured(id, SimDisk::new(), seeds.clone(), scenario.setup(mode))
                .await
                .expect("a fresh disk opens");
        nodes.push(Arc::new(node));
        // Nodes join one after another, as in a real cluster: their join times (the conflict
        // tie-breaker) differ.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    trace.record(format_args!(
        "{} nodes started: {}",
        nodes.len(),
        scenario.about
    ));
    let mut faults = scenario.faults.clone();
    if let Some(swarm) = scenario.swarm {
        let drawn = draw_swarm(swarm, nodes.len() as u64);
        for f in &drawn {
            trace.record(format_args!("swarm: at {} ms {:?}", f.at_ms, f.fault));
        }
        faults.extend(drawn);
        faults.sort_by_key(|f| f.at_ms);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let acked: AckLog = Arc::default();
    let w = scenario.workload;
    let mut clients = Vec::new();
    for node in &nodes {
        for c in 0..w.clients_per_node {
            let (node, trace, acked) = (Arc::clone(node), trace.clone(), Arc::clone(&acked));
            clients.push(tokio::spawn(async move {
                for _ in 0..w.ops_per_client {
                    let think = thread_rng().gen_range(0..=w.think_ms_max);
                    tokio::time::sleep(Duration::from_millis(think)).await;
                    let key = format!("k{}", thread_rng().gen_range(0..w.keys));
                    let delete = thread_rng().gen_bool(w.delete_ratio);
                    let (status, body) = if delete {
                        node.delete(&key).await
                    } else {
                        node.put(&key, format!("{{\"by\":\"{}/{c}\"}}", node.name()))
                            .await
                    };
                    let deleted = [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND];
                    let version = if delete && deleted.contains(&status) {
                        // DELETE names no version: the tombstone just written does, unless a
                        // newer write already replaced it (then that one counts anyway). A 404
                        // writes a tombstone too (it beats an older write still on its way),
                        // or finds one: either way the node holds a durable delete.
                        node.record(&key)
                            .filter(|r| r.is_tombstone())
                            .map(|r| r.version)
                    } else {
                        ack_version(status, &body, delete)
                    };
                    trace.record(format_args!(
                        "{} {} {key} -> {}",
                        node.name(),
                        if delete { "DELETE" } else { "PUT" },
                        status.as_u16()
                    ));
                    if let Some(version) = version {
                        let mut acked = acked.lock().unwrap_or_else(|e| e.into_inner());
                        acked.entry(key).or_default().push(Acked {
                            version,
                            delete,
                            by: node.name().to_owned(),
                        });
                    }
                }
            }));
        }
    }
    if let Some(storm) = w.collisions {
        let (nodes, trace, acked) = (nodes.clone(), trace.clone(), Arc::clone(&acked));
        clients.push(tokio::spawn(collide(storm, nodes, trace, acked)));
    }
    let net = NetSim::current();
    let started = tokio::time::Instant::now();
    let collects = Collects::of(&scenario);
    let monitor = Monitor::start(nodes.clone(), Arc::clone(&acked), collects.clone());
    // Decisions listed by nodes before their power cuts, and what reading them found.
    let (mut archived, mut early) = (Vec::new(), Vec::new());
    for f in &faults {
        let at = Duration::from_millis(f.at_ms);
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        match f.fault {
            Fault::Join(n) => {
                let setup = scenario.setup(kvs::api::Mode::Normal);
                let node = SimNode::start_configured(n, SimDisk::new(), seeds.clone(), setup)
                    .await
                    .expect("a fresh disk opens");
                let (_, body) = node.request(axum::http::Method::GET, "/health", "").await;
                let health: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                trace.record(format_args!(
                    "{} joins in mode {}",
                    node.name(),
                    health["mode"]
                ));
                nodes.push(Arc::new(node));
                monitor.watch(&nodes);
            }
            Fault::Crash(n) | Fault::Reboot(n) => {
                let node = &nodes[(n - 1) as usize];
                archived.extend(listed_decisions(node, &mut early).await);
                node.crash_and_restart()
                    .await
                    .expect("a crashed disk opens again")
            }
            Fault::Leave(n) => {
                let node = &nodes[(n - 1) as usize];
                let (status, _) = node
                    .request(axum::http::Method::POST, "/members/leave", "")
                    .await;
                assert_eq!(status, StatusCode::OK, "{} leaves", node.name());
            }
            Fault::Skew { node, offset_ms } => {
                nodes[(node - 1) as usize].clock().set_offset_ms(offset_ms)
            }
            _ => apply(&net, &nodes, &f.fault),
        }
        trace.record(format_args!("fault {:?}", f.fault));
    }
    for client in clients {
        client.await.expect("a client finished");
    }
    let mut violations = monitor.stop().await;
    violations.append(&mut early);
    apply(&net, &nodes, &Fault::Heal);
    trace.record("healed; checking convergence");

    let budget = Duration::from_millis(scenario.liveness_budget_ms);
    let mut waited = Duration::ZERO;
    let step = Duration::from_millis(100);
    let dumps = loop {
        let dumps: Vec<_> = nodes.iter().map(|n| n.dump()).collect();
        if dumps.iter().all(|d| *d == dumps[0]) {
            trace.record(format_args!("converged after {} ms", waited.as_millis()));
            break Some(dumps);
        }
        if waited >= budget {
            let sizes: Vec<usize> = dumps.iter().map(Vec::len).collect();
            violations.push(format!(
                "convergence: nodes still differ {} ms after healing (keys per node {sizes:?}); first difference: {}",
                budget.as_millis(),
                first_difference(&nodes, &dumps)
            ));
            break None;
        }
        tokio::time::sleep(step).await;
        waited += step;
    };
    if let Some(dumps) = &dumps {
        let hashes: Vec<String> = keyspace_hashes(&nodes).await;
        if hashes.iter().any(|h| *h != hashes[0]) {
            violations.push(format!(
                "convergence: equal dumps but hash-tree roots {hashes:?}"
            ));
        }
        let finals: BTreeMap<&str, &kvs::storage::Record> =
            dumps[0].iter().map(|(k, r)| (k.as_str(), r)).collect();
        let acked = acked.lock().unwrap_or_else(|e| e.into_inner());
        for (key, ops) in acked.iter() {
            let newest = ops.iter().max_by_key(|o| o.version).expect("at least one");
            match finals.get(key.as_str()) {
                // The newest operation a delete, its tombstone collected; or the newest a write
                // a cut-off node took, forgotten (README, "Deletes"; `Collects`).
                None if collects
                    .as_ref()
                    .is_some_and(|c| newest.delete || c.cut_off.contains(&newest.by)) => {}
                None => violations.push(format!(
                    "lost write: {key} acknowledged by {} at {:?}, absent everywhere",
                    newest.by, newest.version
                )),
                Some(record) if record.version < newest.version && newest.delete => violations
                    .push(format!(
                        "resurrection: {key} was deleted at {:?}, ends at the older {:?}{}",
                        newest.version,
                        record.version,
                        if record.is_tombstone() { "" } else { " (live)" }
                    )),
                Some(record) if record.version < newest.version => violations.push(format!(
                    "lost write: {key} ends at {:?}, older than acknowledged {:?}",
                    record.version, newest.version
                )),
                Some(record)
                    if record.version == newest.version
                        && newest.delete
                        && !record.is_tombstone() =>
                {
                    violations.push(format!("resurrection: {key} was deleted last, ends live"))
                }
                Some(_) => {}
            }
        }
    }
    if let Some(dumps) = &dumps {
        let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        check_collisions(
            &nodes,
            &archived,
            &dumps[0],
            &acked,
            &trace,
            &mut violations,
        )
        .await;
    }
    membership_agreement(&nodes, budget, &trace, &mut violations).await;
    Outcome { trace, violations }
}

/// The first key on which the nodes' dumps differ, with each node's version of it.
fn first_difference(
    nodes: &[Arc<SimNode>],
    dumps: &[Vec<(String, kvs::storage::Record)>],
) -> String {
    let maps: Vec<BTreeMap<&str, &kvs::storage::Record>> = dumps
        .iter()
        .map(|d| d.iter().map(|(k, r)| (k.as_str(), r)).collect())
        .collect();
    let keys: std::collections::BTreeSet<&str> =
        maps.iter().flat_map(|m| m.keys().copied()).collect();
    for key in keys {
        let versions: Vec<Option<&kvs::storage::Record>> =
            maps.iter().map(|m| m.get(key).copied()).collect();
        if versions.iter().any(|v| *v != versions[0]) {
            let each: Vec<String> = nodes
                .iter()
                .zip(&versions)
                .map(|(n, r)| match r {
                    None => format!("{} none", n.name()),
                    Some(r) => format!(
                        "{} {:?}{}",
                        n.name(),
                        r.version,
                        if r.is_tombstone() { " deleted" } else { "" }
                    ),
                })
                .collect();
            return format!("{key}: {}", each.join("; "));
        }
    }
    "none".into()
}

/// The collision storm: each round, `storm.writers` nodes drawn anew take a PUT of one key at the
/// same instant.
async fn collide(storm: CollisionStorm, nodes: Vec<Arc<SimNode>>, trace: Trace, acked: AckLog) {
    for round in 0..storm.rounds {
        tokio::time::sleep(Duration::from_millis(storm.every_ms)).await;
        let key = format!("c{}", thread_rng().gen_range(0..storm.keys));
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, thread_rng().gen_range(0..=i));
        }
        let writers: Vec<Arc<SimNode>> = order[..storm.writers as usize]
            .iter()
            .map(|&i| Arc::clone(&nodes[i]))
            .collect();
        let names: Vec<&str> = writers.iter().map(|n| n.name()).collect();
        trace.record(format_args!(
            "collision round {round}: {key} on {}",
            names.join(", ")
        ));
        let puts: Vec<_> = writers
            .iter()
            .map(|node| {
                let (node, key) = (Arc::clone(node), key.clone());
                tokio::spawn(async move {
                    let value = format!("{{\"round\":{round},\"by\":\"{}\"}}", node.name());
                    let (status, body) = node.put(&key, value).await;
                    (node, status, body)
                })
            })
            .collect();
        for put in puts {
            let (node, status, body) = put.await.expect("a collision PUT finished");
            trace.record(format_args!(
                "{} PUT {key} -> {}",
                node.name(),
                status.as_u16()
            ));
            if let Some(version) = ack_version(status, &body, false) {
                let mut acked = acked.lock().unwrap_or_else(|e| e.into_inner());
                acked.entry(key.clone()).or_default().push(Acked {
                    version,
                    delete: false,
                    by: node.name().to_owned(),
                });
            }
        }
    }
}

/// The decisions `node` lists on `/conflicts/`, with its name. (Its log is in memory: a crash
/// forgets it, so the run reads it before every power cut.)
async fn listed_decisions(
    node: &SimNode,
    violations: &mut Vec<String>,
) -> Vec<(String, ListedDecision)> {
    let (_, body) = node
        .request(axum::http::Method::GET, "/conflicts/", "")
        .await;
    let listed: Vec<ListedDecision> = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{}: /conflicts/ is not a decision list: {e}", node.name()));
    if listed.len() >= kvs::sync::conflict::DECISIONS_KEPT {
        violations.push(format!(
            "{}: its decision log is full, so the check cannot see every decision (fewer rounds)",
            node.name()
        ));
    }
    listed
        .into_iter()
        .map(|d| (node.name().to_owned(), d))
        .collect()
}

/// One decision as `GET /conflicts/` lists it.
#[derive(Debug, Clone, Deserialize)]
struct ListedDecision {
    key: String,
    timestamp: u64,
    winner: String,
    reason: String,
    votes: u16,
    oldest_joined_timestamp: u64,
    ballots: Vec<ListedBallot>,
}

#[derive(Debug, Clone, Deserialize)]
struct ListedBallot {
    address: String,
    joined_timestamp: u64,
    uuid: String,
}

/// KVS's rules, written again here independently of `kvs::sync::conflict`: the uuid most ballots
/// hold; on a tie the one whose holders include the earliest join time; then the greater uuid.
/// Returns (winner, its votes, its oldest holder's join time, reason).
fn kvs_rules(ballots: &[ListedBallot]) -> Option<(String, u16, u64, &'static str)> {
    let mut tally: BTreeMap<&str, (u16, u64)> = BTreeMap::new();
    for b in ballots {
        let entry = tally.entry(b.uuid.as_str()).or_insert((0, u64::MAX));
        entry.0 += 1;
        entry.1 = entry.1.min(b.joined_timestamp);
    }
    let mut ranked: Vec<(&str, (u16, u64))> = tally.into_iter().collect();
    // Strongest first. (Lowercase hyphenated uuids order as their bytes do.)
    ranked.sort_by(|a, b| (b.1 .0, a.1 .1, b.0).cmp(&(a.1 .0, b.1 .1, a.0)));
    let (winner, (votes, oldest)) = *ranked.first()?;
    let reason = match ranked.get(1) {
        None => "majority",
        Some((_, (v, _))) if *v < votes => "majority",
        Some((_, (_, o))) if *o > oldest => "oldest_node",
        Some(_) => "uuid",
    };
    Some((winner.to_owned(), votes, oldest, reason))
}

/// The collision invariants: every collision still standing at the end was decided by vote;
/// every decision any node made follows KVS's rules over its own ballots (each member once); and
/// every node ended on the strongest decision made for each collision.
async fn check_collisions(
    nodes: &[Arc<SimNode>],
    archived: &[(String, ListedDecision)],
    finals: &[(String, kvs::storage::Record)],
    acked: &BTreeMap<String, Vec<Acked>>,
    trace: &Trace,
    violations: &mut Vec<String>,
) {
    let mut decisions: Vec<(String, ListedDecision)> = archived.to_vec();
    for node in nodes {
        decisions.extend(listed_decisions(node, violations).await);
    }
    for (node, d) in &decisions {
        let voters: std::collections::BTreeSet<&str> =
            d.ballots.iter().map(|b| b.address.as_str()).collect();
        if voters.len() != d.ballots.len() {
            violations.push(format!(
                "conflict rule: {node} counted a member twice deciding {}@{}",
                d.key, d.timestamp
            ));
        }
        let expected = kvs_rules(&d.ballots);
        let got = (
            d.winner.clone(),
            d.votes,
            d.oldest_joined_timestamp,
            d.reason.as_str(),
        );
        if expected
            .as_ref()
            .map(|(w, v, o, r)| (w.clone(), *v, *o, *r))
            != Some(got.clone())
        {
            violations.push(format!(
                "conflict rule: {node} decided {}@{} as {got:?}, KVS's rules over its ballots give {expected:?}",
                d.key, d.timestamp
            ));
        }
    }
    let finals: BTreeMap<&str, &kvs::storage::Record> =
        finals.iter().map(|(k, r)| (k.as_str(), r)).collect();
    let (mut met, mut decided) = (0, 0);
    for (key, ops) in acked {
        let mut by_ts: BTreeMap<u64, std::collections::BTreeSet<[u8; 16]>> = BTreeMap::new();
        for op in ops.iter().filter(|o| !o.delete) {
            by_ts
                .entry(op.version.timestamp_ms)
                .or_default()
                .insert(op.version.uuid);
        }
        let Some(record) = finals.get(key.as_str()) else {
            continue;
        };
        for (ts, uuids) in by_ts.iter().filter(|(_, u)| u.len() > 1) {
            met += 1;
            if record.version.timestamp_ms != *ts {
                continue; // superseded by a newer write
            }
            let Some(resolution) = record.version.resolution else {
                violations.push(format!(
                    "collision on {key}@{ts} between {} writes left undecided",
                    uuids.len()
                ));
                continue;
            };
            decided += 1;
            // The strongest decision any node made for it: (votes, older holder, uuid).
            let strongest = decisions
                .iter()
                .map(|(_, d)| d)
                .filter(|d| d.key == *key && d.timestamp == *ts)
                .max_by(|a, b| {
                    (a.votes, b.oldest_joined_timestamp, &a.winner).cmp(&(
                        b.votes,
                        a.oldest_joined_timestamp,
                        &b.winner,
                    ))
                });
            let ended = (
                record.version.uuid_string(),
                resolution.votes,
                resolution.oldest_joined_ms,
            );
            match strongest {
                None => violations.push(format!(
                    "collision on {key}@{ts} ended decided {ended:?}, but no node lists that decision"
                )),
                Some(d) if (d.winner.clone(), d.votes, d.oldest_joined_timestamp) != ended => {
                    violations.push(format!(
                        "collision on {key}@{ts}: every node ended on {ended:?}, not on the strongest decision {:?}",
                        (&d.winner, d.votes, d.oldest_joined_timestamp)
                    ))
                }
                Some(_) => {}
            }
        }
    }
    if met > 0 {
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, d) in &decisions {
            *reasons.entry(d.reason.as_str()).or_default() += 1;
        }
        trace.record(format_args!(
            "collisions: {met} met, {decided} standing at the end and decided; decisions by reason {reasons:?}"
        ));
    }
}

/// Every node lists every node `alive` (they are all up once healed), within `budget`.
async fn membership_agreement(
    nodes: &[Arc<SimNode>],
    budget: Duration,
    trace: &Trace,
    violations: &mut Vec<String>,
) {
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    loop {
        let mut disagreeing = Vec::new();
        for node in nodes {
            let (_, body) = node.request(axum::http::Method::GET, "/members/", "").await;
            let members: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let list = members.as_array().cloned().unwrap_or_default();
            let alive = list.iter().filter(|m| m["status"] == "alive").count();
            if alive != nodes.len() {
                let others: Vec<String> = list
                    .iter()
                    .filter(|m| m["status"] != "alive")
                    .map(|m| format!("{} {}", m["id"], m["status"]))
                    .collect();
                disagreeing.push(format!(
                    "{} sees {alive} alive ({})",
                    node.name(),
                    others.join(", ")
                ));
            }
        }
        if disagreeing.is_empty() {
            trace.record(format_args!(
                "membership agreed after {} ms",
                waited.as_millis()
            ));
            return;
        }
        if waited >= budget {
            violations.push(format!(
                "membership: {} ms after healing, {}",
                budget.as_millis(),
                disagreeing.join(", ")
            ));
            return;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
}

/// The version a PUT's acknowledgement names (`None`: not acknowledged).
fn ack_version(status: StatusCode, body: &[u8], delete: bool) -> Option<Version> {
    if delete || status != StatusCode::OK {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let uuid = uuid_bytes(json["uuid"].as_str()?)?;
    Some(Version::new(json["timestamp"].as_u64()?, uuid))
}

fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

async fn keyspace_hashes(nodes: &[Arc<SimNode>]) -> Vec<String> {
    let mut out = Vec::new();
    for node in nodes {
        let (_, body) = node.request(axum::http::Method::GET, "/health", "").await;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        out.push(json["keyspace_hash"].as_str().unwrap_or("?").to_owned());
    }
    out
}

fn apply(net: &NetSim, nodes: &[Arc<SimNode>], fault: &Fault) {
    let id = |n: u64| nodes[(n - 1) as usize].madsim_id();
    match fault {
        Fault::Isolate(isolated) => {
            for a in isolated {
                for b in 1..=nodes.len() as u64 {
                    if !isolated.contains(&b) {
                        net.clog_link(id(*a), id(b));
                        net.clog_link(id(b), id(*a));
                    }
                }
            }
        }
        Fault::OneWay { from, to } => net.clog_link(id(*from), id(*to)),
        Fault::Loss(rate) => net.update_config(|c| c.packet_loss_rate = *rate),
        Fault::Crash(_)
        | Fault::Skew { .. }
        | Fault::Leave(_)
        | Fault::Reboot(_)
        | Fault::Join(_) => {
            unreachable!("crashes, clocks and leaving are the machines', not the network's")
        }
        Fault::Heal => {
            for a in 1..=nodes.len() as u64 {
                for b in 1..=nodes.len() as u64 {
                    if a != b {
                        net.unclog_link(id(a), id(b));
                    }
                }
            }
            net.update_config(|c| c.packet_loss_rate = 0.0);
        }
    }
}
