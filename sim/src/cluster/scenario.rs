//! A cluster scenario file: its types (setup, workload, faults, swarm), its loader, which refuses
//! a malformed file naming the file and the reason, and the swarm's fault draw.

use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use serde::Deserialize;

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
    pub(super) fn setup(&self, mode: kvs::api::Mode) -> crate::node::Setup {
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
    pub(super) fn late(&self) -> Vec<u64> {
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
pub(super) fn draw_swarm(swarm: Swarm, nodes: u64) -> Vec<TimedFault> {
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
