//! A cluster scenario file: its types (setup, workload, faults, swarm), its loader, which refuses
//! a malformed file naming the file and the reason, and the swarm's fault draw.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use serde::Deserialize;

use crate::disk::Unsynced;

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
    /// Which nodes each node lists in `seed_nodes` (default `all`).
    #[serde(default)]
    pub seed_nodes: SeedNodes,
    /// What a power cut leaves of a node's unsynced disk writes (default `random`: each lost,
    /// kept or torn, as the seed decides; `lost`: all lost).
    #[serde(default = "unsynced_default")]
    pub unsynced_writes: Unsynced,
}

fn unsynced_default() -> Unsynced {
    Unsynced::Random
}

/// Which nodes each node lists in `seed_nodes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedNodes {
    /// Every node (itself ignored), as a production cluster lists several: a node that restarts
    /// rejoins through whichever answers.
    #[default]
    All,
    /// Node 1 lists none (it founds the cluster), every other lists node 1, as in KVS's README:
    /// a restarted node 1 rejoins only through the members it remembers.
    First,
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
    /// Share of the operations that are not deletes that are reads (`GET`, 0 to 1; default 0:
    /// every one a `PUT`). Each read is checked as it is answered ([`super::reads`]).
    #[serde(default)]
    pub get_ratio: f64,
    /// Hot keys: a share of the operations goes to the first few keys (default none: every key
    /// alike).
    #[serde(default)]
    pub hot: Option<HotKeys>,
    /// Timestamp collisions made on purpose, besides the clients' work.
    #[serde(default)]
    pub collisions: Option<CollisionStorm>,
}

/// A skewed key distribution: `share` of the operations go to keys `k0` .. `k{keys - 1}`, the
/// rest to any key.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotKeys {
    /// Share of the operations on the hot keys (0 to 1).
    pub share: f64,
    /// How many keys are hot (1 to `workload.keys`).
    pub keys: u64,
}

impl ClusterWorkload {
    /// The key of the next operation, by the workload's distribution (no draw beyond the uniform
    /// one without hot keys, so files without them replay as before).
    pub(super) fn pick_key(&self) -> String {
        let mut rng = thread_rng();
        let n = match self.hot {
            Some(hot) if rng.gen_bool(hot.share) => rng.gen_range(0..hot.keys),
            _ => rng.gen_range(0..self.keys),
        };
        format!("k{n}")
    }
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
/// from every fault the simulator has (partitions, one-way links, loss, crashes, clock jumps and
/// drift, pauses, power cuts, TCP stalls, a leave and rejoin), each healed or undone at a random
/// later instant.
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
    /// Delay every datagram and TCP segment on every link by a time drawn between these bounds
    /// (madsim's default is 1 to 10 ms), until `heal`: a slow or distant network.
    Latency {
        /// The least delay, ms.
        min_ms: u64,
        /// The greatest delay, ms (exclusive; above `min_ms`, at most `LATENCY_MS_MAX`).
        max_ms: u64,
    },
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
    /// Make this node's wall clock run fast (positive) or slow (negative) by `ppm` millionths
    /// of true time from now on (0 stops the drift, keeping the offset it reached).
    Drift {
        /// The node.
        node: u64,
        /// The rate, in parts per million.
        ppm: i64,
    },
    /// Stop running this node's tasks (a stalled process) until `resume`.
    Pause(u64),
    /// Run a paused node again: it handles every timer and datagram that came due meanwhile.
    Resume(u64),
    /// Cut this node's power and leave it off (unsynced disk writes lost) until `power_on`.
    PowerOff(u64),
    /// Boot a node that is off.
    PowerOn(u64),
    /// Cut this node's power for good (no fault may name it after): the live nodes must list it
    /// dead and converge without it; what only it acknowledged may be lost with it.
    Die(u64),
    /// Stall the frame connections this node accepted (TCP moves no bytes either way) while its
    /// gossip still flows, until `tcp_resume` or `heal`.
    TcpStall(u64),
    /// Lift a node's TCP stall.
    TcpResume(u64),
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

/// The greatest delay a `latency` fault may set, ms: a network slower than this is a partition.
pub const LATENCY_MS_MAX: u64 = 10_000;

/// Loads `scenarios/<name>.yaml` as a cluster scenario.
///
/// # Panics
/// If the file is missing or malformed, naming the file and the reason.
pub fn load(name: &str) -> ClusterScenario {
    let path = crate::scenario_file::folder().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse(&path, &text)
}

/// Parses and checks the text of scenario file `path`.
///
/// # Panics
/// If it is malformed, naming the file and the reason.
pub fn parse(path: &std::path::Path, text: &str) -> ClusterScenario {
    let file: ClusterScenario =
        serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(file.scenario, "cluster", "{}: scenario", path.display());
    assert!(
        (0.0..=1.0).contains(&file.workload.delete_ratio),
        "{}: workload.delete_ratio must be within 0..=1",
        path.display()
    );
    assert!(
        (0.0..=1.0).contains(&file.workload.get_ratio),
        "{}: workload.get_ratio must be within 0..=1",
        path.display()
    );
    if let Some(hot) = file.workload.hot {
        assert!(
            (0.0..=1.0).contains(&hot.share) && (1..=file.workload.keys).contains(&hot.keys),
            "{}: workload.hot needs a share within 0..=1 and 1 to workload.keys keys",
            path.display()
        );
    }
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
        if let Fault::Loss(rate) = &f.fault {
            assert!(
                (0.0..1.0).contains(rate),
                "{}: faults: loss must be within 0..1",
                path.display()
            );
        }
        if let Fault::Latency { min_ms, max_ms } = f.fault {
            assert!(
                min_ms < max_ms && max_ms <= LATENCY_MS_MAX,
                "{}: faults: latency needs min_ms < max_ms <= {LATENCY_MS_MAX}",
                path.display()
            );
        }
        let mut nodes = f.fault.nodes();
        if let Fault::Join(n) = f.fault {
            nodes.push(n);
        }
        assert!(
            nodes.iter().all(|n| (1..=file.nodes).contains(n)),
            "{}: faults: a node number outside 1..={}",
            path.display(),
            file.nodes
        );
    }
    // Pauses and power cuts come in pairs, and a stalled or unpowered node takes no other
    // machine fault before it runs again.
    let mut stopped: BTreeMap<u64, &Fault> = BTreeMap::new();
    let mut dead = BTreeSet::new();
    for f in &file.faults {
        let refuse =
            |why: &str| -> ! { panic!("{}: faults: at {} ms: {why}", path.display(), f.at_ms) };
        if let Some(n) = f.fault.nodes().into_iter().find(|n| dead.contains(n)) {
            refuse(&format!("{:?} of node {n}, which died", f.fault));
        }
        match &f.fault {
            Fault::Die(n) => {
                if let Some(why) = stopped.get(n) {
                    refuse(&format!(
                        "Die({n}) of node {n}, which is stopped by {why:?}"
                    ));
                }
                dead.insert(*n);
            }
            Fault::Resume(n) | Fault::PowerOn(n) => match stopped.remove(n) {
                Some(Fault::Pause(_)) if matches!(f.fault, Fault::Resume(_)) => {}
                Some(Fault::PowerOff(_)) if matches!(f.fault, Fault::PowerOn(_)) => {}
                _ => refuse(&format!(
                    "{:?} of node {n}, which is not {}",
                    f.fault,
                    if matches!(f.fault, Fault::Resume(_)) {
                        "paused"
                    } else {
                        "off"
                    }
                )),
            },
            Fault::Crash(n)
            | Fault::Reboot(n)
            | Fault::Leave(n)
            | Fault::Pause(n)
            | Fault::PowerOff(n) => {
                if let Some(why) = stopped.get(n) {
                    refuse(&format!(
                        "{:?} of node {n}, which is stopped by {why:?}",
                        f.fault
                    ));
                }
                if matches!(f.fault, Fault::Pause(_) | Fault::PowerOff(_)) {
                    stopped.insert(*n, &f.fault);
                }
            }
            _ => {}
        }
    }
    let mut stalled = BTreeSet::new();
    for f in &file.faults {
        match f.fault {
            Fault::TcpStall(n) => {
                stalled.insert(n);
            }
            Fault::TcpResume(n) if !stalled.remove(&n) => panic!(
                "{}: faults: at {} ms: TcpResume({n}) of node {n}, whose TCP is not stalled",
                path.display(),
                f.at_ms
            ),
            Fault::Heal => stalled.clear(),
            _ => {}
        }
    }
    if let Some((n, why)) = stopped.first_key_value() {
        panic!(
            "{}: faults: node {n} is never started again after {why:?} (add a resume or power_on)",
            path.display()
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
        assert!(
            f.fault.nodes().iter().all(|n| joined(*n)),
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

impl Fault {
    /// The nodes it strikes (a joining node is not struck: it starts).
    pub fn nodes(&self) -> Vec<u64> {
        match self {
            Fault::Isolate(n) => n.clone(),
            Fault::OneWay { from, to } => vec![*from, *to],
            Fault::Crash(n)
            | Fault::Leave(n)
            | Fault::Reboot(n)
            | Fault::Pause(n)
            | Fault::Resume(n)
            | Fault::PowerOff(n)
            | Fault::PowerOn(n)
            | Fault::Die(n)
            | Fault::TcpStall(n)
            | Fault::TcpResume(n) => vec![*n],
            Fault::Skew { node, .. } | Fault::Drift { node, .. } => vec![*node],
            Fault::Join(_) | Fault::Loss(_) | Fault::Latency { .. } | Fault::Heal => vec![],
        }
    }
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
/// a skew set back, a drift stopped, a pause resumed, a power cut powered on, a TCP stall healed,
/// a leave followed by a reboot. In time order.
pub(super) fn draw_swarm(swarm: Swarm, nodes: u64) -> Vec<TimedFault> {
    let mut rng = thread_rng();
    let mut out = Vec::new();
    let node = |rng: &mut madsim::rand::GlobalRng| rng.gen_range(1..=nodes);
    for _ in 0..swarm.faults {
        let at_ms = rng.gen_range(0..swarm.span_ms);
        // The fault, and what undoes it (at a random later instant), if anything does.
        let (fault, undo) = match rng.gen_range(0..11) {
            0 => {
                let mut isolated: Vec<u64> = (1..=nodes).filter(|_| rng.gen_bool(0.4)).collect();
                if isolated.is_empty() || isolated.len() as u64 == nodes {
                    isolated = vec![node(&mut rng)];
                }
                (Fault::Isolate(isolated), Some(Fault::Heal))
            }
            1 => {
                let from = node(&mut rng);
                let to = from % nodes + 1;
                (Fault::OneWay { from, to }, Some(Fault::Heal))
            }
            2 => {
                let rate = f64::from(rng.gen_range(5..40u32)) / 100.0;
                (Fault::Loss(rate), Some(Fault::Heal))
            }
            3 => (Fault::Crash(node(&mut rng)), None),
            4 => {
                let n = node(&mut rng);
                let offset_ms = rng.gen_range(-120_000..=120_000);
                let back = Fault::Skew {
                    node: n,
                    offset_ms: 0,
                };
                (Fault::Skew { node: n, offset_ms }, Some(back))
            }
            5 => {
                let n = node(&mut rng);
                (Fault::Leave(n), Some(Fault::Reboot(n)))
            }
            6 => {
                let n = node(&mut rng);
                let ppm = rng.gen_range(-100_000..=100_000);
                let stop = Fault::Drift { node: n, ppm: 0 };
                (Fault::Drift { node: n, ppm }, Some(stop))
            }
            7 => {
                let n = node(&mut rng);
                (Fault::Pause(n), Some(Fault::Resume(n)))
            }
            8 => {
                let n = node(&mut rng);
                (Fault::PowerOff(n), Some(Fault::PowerOn(n)))
            }
            9 => (Fault::TcpStall(node(&mut rng)), Some(Fault::Heal)),
            _ => (Fault::Reboot(node(&mut rng)), None),
        };
        out.push(TimedFault { at_ms, fault });
        if let Some(fault) = undo {
            let until_ms = at_ms + rng.gen_range(200..=swarm.span_ms.max(201) / 2);
            out.push(TimedFault {
                at_ms: until_ms,
                fault,
            });
        }
    }
    out.sort_by_key(|f| f.at_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_faults(faults: &str) -> ClusterScenario {
        parse(
            std::path::Path::new("test.yaml"),
            &format!(
                "scenario: cluster\nabout: x\nseeds: {{first: 0, count: 1}}\nnodes: 3\n\
                 liveness_budget_ms: 1\nworkload: {{clients_per_node: 1, ops_per_client: 1, \
                 keys: 1, delete_ratio: 0, think_ms_max: 1}}\nfaults: [{faults}]\n"
            ),
        )
    }

    #[test]
    fn pauses_and_power_cuts_come_in_pairs() {
        let ok = with_faults(
            "{at_ms: 1, pause: 2}, {at_ms: 2, isolate: [2]}, {at_ms: 3, resume: 2}, \
             {at_ms: 4, power_off: 2}, {at_ms: 5, power_on: 2}, {at_ms: 6, crash: 2}",
        );
        assert_eq!(ok.faults.len(), 6);
    }

    #[test]
    #[should_panic(expected = "test.yaml: faults: node 2 is never started again after Pause(2)")]
    fn a_pause_without_a_resume_is_refused() {
        with_faults("{at_ms: 1, pause: 2}");
    }

    #[test]
    #[should_panic(
        expected = "test.yaml: faults: at 1 ms: Resume(3) of node 3, which is not paused"
    )]
    fn resuming_a_running_node_is_refused() {
        with_faults("{at_ms: 1, resume: 3}");
    }

    #[test]
    #[should_panic(expected = "at 2 ms: Crash(1) of node 1, which is stopped by PowerOff(1)")]
    fn a_machine_fault_on_a_node_that_is_off_is_refused() {
        with_faults("{at_ms: 1, power_off: 1}, {at_ms: 2, crash: 1}, {at_ms: 3, power_on: 1}");
    }

    #[test]
    #[should_panic(expected = "at 2 ms: PowerOn(1) of node 1, which is not off")]
    fn powering_on_a_paused_node_is_refused() {
        with_faults("{at_ms: 1, pause: 1}, {at_ms: 2, power_on: 1}");
    }

    #[test]
    #[should_panic(expected = "test.yaml: faults: latency needs min_ms < max_ms <= 10000")]
    fn a_latency_range_that_is_empty_is_refused() {
        with_faults("{at_ms: 1, latency: {min_ms: 50, max_ms: 50}}");
    }

    #[test]
    #[should_panic(expected = "test.yaml: faults: at 2 ms: Crash(2) of node 2, which died")]
    fn a_fault_on_a_dead_node_is_refused() {
        with_faults("{at_ms: 1, die: 2}, {at_ms: 2, crash: 2}");
    }
}
