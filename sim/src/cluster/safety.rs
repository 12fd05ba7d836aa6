//! The safety invariants, checked during the faults as well as after: no acknowledged write
//! lost, no resurrected delete; and what tombstone collection may excuse.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvs::storage::Version;

use super::{ClusterScenario, Fault};
use crate::node::SimNode;

/// An acknowledged operation on a key.
#[derive(Debug, Clone)]
pub(super) struct Acked {
    pub(super) version: Version,
    pub(super) delete: bool,
    /// The node that acknowledged it.
    pub(super) by: String,
}

/// Every key's acknowledged operations.
pub(super) type AckLog = Arc<Mutex<BTreeMap<String, Vec<Acked>>>>;

/// How often the fault phase's safety check runs (simulated time).
const MONITOR_EVERY: Duration = Duration::from_millis(250);

/// The safety invariants, checked during the fault phase as well: every `MONITOR_EVERY`, each
/// node holds, for every key acknowledged through it, a version at least as new as the newest
/// it acknowledged (an acknowledgement is durable on its node, through partitions, crashes and
/// clock jumps). A node that holds nothing, or an older version, lost a write; one that holds a
/// live value where it acknowledged a delete at least as new resurrected it.
pub(super) struct Monitor {
    nodes: Arc<Mutex<Vec<Arc<SimNode>>>>,
    violations: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Checks `nodes` every `MONITOR_EVERY`; violations are stamped with `trace`'s time, as the
    /// timeline's lines are.
    pub(super) fn start(
        nodes: Vec<Arc<SimNode>>,
        acked: AckLog,
        collects: Option<Collects>,
        trace: crate::trace::Trace,
    ) -> Monitor {
        let nodes = Arc::new(Mutex::new(nodes));
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (n, v, halt) = (
            Arc::clone(&nodes),
            Arc::clone(&violations),
            Arc::clone(&stop),
        );
        let task = tokio::spawn(async move {
            while !halt.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(MONITOR_EVERY).await;
                let nodes = n.lock().unwrap_or_else(|e| e.into_inner()).clone();
                // Held across the check, which does not yield: no client waits on it.
                let log = acked.lock().unwrap_or_else(|e| e.into_inner());
                let found = unsafe_states(&nodes, &log, collects.as_ref());
                drop(log);
                if !found.is_empty() {
                    let at = trace.now_ms();
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
    pub(super) fn watch(&self, nodes: &[Arc<SimNode>]) {
        *self.nodes.lock().unwrap_or_else(|e| e.into_inner()) = nodes.to_vec();
    }

    /// Stops watching; what it found.
    pub(super) async fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("the monitor ran");
        let found = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        found.clone()
    }
}

/// What garbage collection may take, in a scenario that collects tombstones (README,
/// "Deletes"): a key whose newest acknowledged operation is a delete, or a write that collided
/// with an acknowledged delete (same millisecond), may end absent (its tombstone collected), and
/// so may a write acknowledged by a node the scenario cuts off (by a
/// partition, a crash, a leave, a pause or a power cut) if a peer collected a newer tombstone before the write could
/// reach it. Nothing else.
#[derive(Debug, Clone)]
pub(super) struct Collects {
    /// The nodes some fault cuts off, by name.
    cut_off: BTreeSet<String>,
}

impl Collects {
    pub(super) fn of(scenario: &ClusterScenario) -> Option<Collects> {
        scenario.tombstone_grace_ms?;
        let cut_off = scenario
            .faults
            .iter()
            .flat_map(|f| match &f.fault {
                Fault::Isolate(_)
                | Fault::OneWay { .. }
                | Fault::Crash(_)
                | Fault::Leave(_)
                | Fault::PowerOff(_)
                | Fault::Pause(_)
                | Fault::TcpStall(_) => f.fault.nodes(),
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
pub(super) fn unsafe_states(
    nodes: &[Arc<SimNode>],
    acked: &BTreeMap<String, Vec<Acked>>,
    collects: Option<&Collects>,
) -> Vec<String> {
    let mut out = Vec::new();
    // A node without power has no readable store; it is checked once it runs again.
    for node in nodes.iter().filter(|n| n.is_up()) {
        // Each key this node acknowledged, with its newest acknowledgement there.
        let mine: Vec<(&String, &Vec<Acked>, &Acked)> = acked
            .iter()
            .filter_map(|(key, ops)| {
                let newest = ops
                    .iter()
                    .filter(|o| o.by == node.name())
                    .max_by_key(|o| o.version)?;
                Some((key, ops, newest))
            })
            .collect();
        let held = node.heads(mine.iter().map(|(key, _, _)| key.as_str()));
        for ((key, ops, newest), held) in mine.into_iter().zip(held) {
            let deleted_since = deleted_at_or_after(ops, &newest.version);
            let forgivable =
                collects.is_some_and(|c| deleted_since || c.cut_off.contains(node.name()));
            match held {
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
                Some(r) if r.version == newest.version && newest.delete && !r.tombstone => out
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

/// Whether a delete of the key was acknowledged at `version` or later, or at its timestamp: a
/// delete stamped in the same millisecond as a write collides with it, and may win the vote
/// (`tombstone_grace` seed 172276071: the write lost to the oldest node's delete, whose tombstone
/// was then collected). Whether the vote followed KVS's rules is `check_collisions`' to judge.
fn deleted_at_or_after(ops: &[Acked], version: &Version) -> bool {
    ops.iter().any(|o| {
        o.delete && (o.version >= *version || o.version.timestamp_ms == version.timestamp_ms)
    })
}

/// The safety invariants on the converged keyspace `finals`: for every key, the final version is
/// not older than any acknowledged write or delete of it, and a key deleted last ends deleted;
/// a key may end absent only where tombstone collection excuses it ([`Collects`]).
pub(super) fn final_losses(
    finals: &[(String, kvs::storage::Record)],
    acked: &BTreeMap<String, Vec<Acked>>,
    collects: Option<&Collects>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let finals: BTreeMap<&str, &kvs::storage::Record> =
        finals.iter().map(|(k, r)| (k.as_str(), r)).collect();
    for (key, ops) in acked.iter() {
        let newest = ops.iter().max_by_key(|o| o.version).expect("at least one");
        match finals.get(key.as_str()) {
            // The newest operation a delete, its tombstone collected; or the newest a write
            // a cut-off node took, forgotten (README, "Deletes"; `Collects`).
            None if collects.as_ref().is_some_and(|c| {
                newest.delete
                    || deleted_at_or_after(ops, &newest.version)
                    || c.cut_off.contains(&newest.by)
            }) => {}
            None => violations.push(format!(
                "lost write: {key} acknowledged by {} at {:?}, absent everywhere",
                newest.by, newest.version
            )),
            Some(record) if record.version < newest.version && newest.delete => {
                violations.push(format!(
                    "resurrection: {key} was deleted at {:?}, ends at the older {:?}{}",
                    newest.version,
                    record.version,
                    if record.is_tombstone() { "" } else { " (live)" }
                ))
            }
            Some(record) if record.version < newest.version => violations.push(format!(
                "lost write: {key} ends at {:?}, older than acknowledged {:?}",
                record.version, newest.version
            )),
            Some(record)
                if record.version == newest.version && newest.delete && !record.is_tombstone() =>
            {
                violations.push(format!("resurrection: {key} was deleted last, ends live"))
            }
            Some(_) => {}
        }
    }
    violations
}
