//! The safety invariants, checked during the faults as well as after: no acknowledged write
//! lost, no resurrected delete; and what tombstone collection may excuse.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvs::storage::Version;

use super::collisions::{winner, ListedDecision};
use super::{ClusterScenario, Fault};
use crate::node::SimNode;

/// An acknowledged operation on a key.
#[derive(Debug, Clone)]
pub(super) struct Acked {
    pub(super) version: Version,
    pub(super) delete: bool,
    /// The node that acknowledged it.
    pub(super) by: String,
    /// The value written (`None`: a delete).
    pub(super) value: Option<String>,
}

/// The newest of `ops` that `node` acknowledged: what it must hold (and read back) from then on.
pub(super) fn newest_by<'a>(ops: &'a [Acked], node: &str) -> Option<&'a Acked> {
    ops.iter()
        .filter(|o| o.by == node)
        .max_by_key(|o| o.version)
}

/// Every key's acknowledged operations.
pub(super) type AckLog = Arc<Mutex<BTreeMap<String, Vec<Acked>>>>;

/// What clients asked of a key, acknowledged or not (a write that timed out, or whose node
/// crashed before answering, may still have landed and spread): every value they sent (each
/// unique in the run) and whether any deleted it. Noted before the request goes.
#[derive(Debug, Clone, Default)]
pub(super) struct Asked {
    pub(super) values: BTreeSet<String>,
    pub(super) deleted: bool,
    /// Deletes asked whose version is not known: on their way, or answered without one (failed,
    /// timed out, or their node stopped), so they may have landed at any version. A delete
    /// leaves this count once its acknowledgement names its version (then in the [`AckLog`]).
    pub(super) deletes_unknown: u32,
}

/// Every key's [`Asked`].
pub(super) type AskLog = Arc<Mutex<BTreeMap<String, Asked>>>;

/// The invariant that nothing is invented: every key the cluster ends with was asked for by a
/// client, a live value is one some client sent for that key (and, at an acknowledged version,
/// the value of that write), and a tombstone stands where some client deleted the key.
pub(super) fn invented(
    finals: &[(String, kvs::storage::Record)],
    asked: &BTreeMap<String, Asked>,
    acked: &BTreeMap<String, Vec<Acked>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, record) in finals {
        let same_write = acked
            .get(key)
            .and_then(|ops| ops.iter().find(|o| o.version.same_write(&record.version)));
        if let Some(write) = same_write {
            let held = record.data.as_deref().map(String::from_utf8_lossy);
            if held.as_deref() != write.value.as_deref() {
                out.push(format!(
                    "invented: {key} ends at the acknowledged {:?} holding {held:?}, not what that write sent ({:?})",
                    record.version, write.value
                ));
            }
        }
        let Some(asked) = asked.get(key) else {
            out.push(format!(
                "invented: {key} ends {:?}, no client wrote it",
                record.version
            ));
            continue;
        };
        match &record.data {
            Some(data) => {
                let text = String::from_utf8_lossy(data);
                if !asked.values.contains(text.as_ref()) {
                    out.push(format!(
                        "invented: {key} ends at {:?} holding {text:?}, a value no client sent for it",
                        record.version
                    ));
                }
            }
            None if !asked.deleted => out.push(format!(
                "invented: {key} ends deleted at {:?}, no client deleted it",
                record.version
            )),
            None => {}
        }
    }
    out
}

/// How often the fault phase's safety check runs (simulated time).
const MONITOR_EVERY: Duration = Duration::from_millis(250);

/// Absences the fault phase excused on a condition only the end can check: the node's write
/// collided with an acknowledged delete (same millisecond), so the vote may have chosen the
/// delete and its tombstone been collected. Key and timestamp → which node held nothing, when.
pub(super) type Pending = BTreeMap<(String, u64), String>;

/// The safety invariants, checked during the fault phase as well: every `MONITOR_EVERY`, each
/// node holds, for every key acknowledged through it, a version at least as new as the newest
/// it acknowledged (an acknowledgement is durable on its node, through partitions, crashes and
/// clock jumps). A node that holds nothing, or an older version, lost a write; one that holds a
/// live value where it acknowledged a delete at least as new resurrected it.
pub(super) struct Monitor {
    nodes: Arc<Mutex<Vec<Arc<SimNode>>>>,
    violations: Arc<Mutex<Vec<String>>>,
    pending: Arc<Mutex<Pending>>,
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
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (n, v, p, halt) = (
            Arc::clone(&nodes),
            Arc::clone(&violations),
            Arc::clone(&pending),
            Arc::clone(&stop),
        );
        let task = tokio::spawn(async move {
            while !halt.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(MONITOR_EVERY).await;
                let nodes = n.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let at = trace.now_ms();
                // Held across the check, which does not yield: no client waits on it.
                let log = acked.lock().unwrap_or_else(|e| e.into_inner());
                let mut pending = p.lock().unwrap_or_else(|e| e.into_inner());
                let found = unsafe_states(&nodes, &log, collects.as_ref(), &mut pending, at);
                drop((log, pending));
                if !found.is_empty() {
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
            pending,
            stop,
            task,
        }
    }

    /// Watches `nodes` from now on (a node joined).
    pub(super) fn watch(&self, nodes: &[Arc<SimNode>]) {
        *self.nodes.lock().unwrap_or_else(|e| e.into_inner()) = nodes.to_vec();
    }

    /// Stops watching; what it found, and what it excused on condition ([`Pending`]).
    pub(super) async fn stop(self) -> (Vec<String>, Pending) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("the monitor ran");
        let found = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        (found.clone(), pending.clone())
    }
}

/// What garbage collection may take, in a scenario that collects tombstones (README,
/// "Deletes"): a key whose newest acknowledged operation is a delete, or a write that collided
/// with an acknowledged delete (same millisecond) and lost the vote to it, may end absent (its
/// tombstone collected), and
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
/// holding nothing is also fine where a delete newer than the node's acknowledgement was
/// acknowledged anywhere, or where the node is one a fault cuts off ([`Collects`]); where the
/// only delete as new was stamped in the same millisecond, it is fine only if the vote chose
/// that delete, which the end checks (`pending`, noted at time `at`).
pub(super) fn unsafe_states(
    nodes: &[Arc<SimNode>],
    acked: &BTreeMap<String, Vec<Acked>>,
    collects: Option<&Collects>,
    pending: &mut Pending,
    at: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    // A node without power has no readable store; it is checked once it runs again.
    for node in nodes.iter().filter(|n| n.is_up()) {
        // Each key this node acknowledged, with its newest acknowledgement there.
        let mine: Vec<(&String, &Vec<Acked>, &Acked)> = acked
            .iter()
            .filter_map(|(key, ops)| {
                let newest = newest_by(ops, node.name())?;
                Some((key, ops, newest))
            })
            .collect();
        let held = node.heads(mine.iter().map(|(key, _, _)| key.as_str()));
        for ((key, ops, newest), held) in mine.into_iter().zip(held) {
            let ts = newest.version.timestamp_ms;
            let deleted_since = ops.iter().any(|o| {
                o.delete && (o.version.timestamp_ms > ts || o.version.uuid == newest.version.uuid)
            });
            let colliding_delete = ops.iter().any(|o| o.delete && o.version.timestamp_ms == ts);
            let forgivable =
                collects.is_some_and(|c| deleted_since || c.cut_off.contains(node.name()));
            match held {
                None if forgivable => {}
                None if collects.is_some() && colliding_delete => {
                    pending
                        .entry((key.clone(), ts))
                        .or_insert_with(|| format!("{} held nothing at t={at} ms", node.name()));
                }
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

/// Whether the vote on `key`'s collision at `ts` chose one of its acknowledged deletes: only
/// then may a write stamped in that millisecond end absent (`tombstone_grace` seed 172276071:
/// the write lost to the oldest node's delete, whose tombstone was then collected). Whether the
/// vote followed KVS's rules is `check_collisions`' to judge.
fn delete_won(key: &str, ops: &[Acked], ts: u64, decisions: &[(String, ListedDecision)]) -> bool {
    winner(decisions, key, ts).is_some_and(|w| {
        ops.iter()
            .any(|o| o.delete && o.version.timestamp_ms == ts && o.version.uuid_string() == w)
    })
}

/// The fault phase's conditional excuses ([`Pending`]) that the decisions do not bear out.
pub(super) fn unexcused(
    pending: &Pending,
    acked: &BTreeMap<String, Vec<Acked>>,
    decisions: &[(String, ListedDecision)],
) -> Vec<String> {
    pending
        .iter()
        .filter(|((key, ts), _)| {
            let ops = acked.get(key).map(Vec::as_slice).unwrap_or_default();
            !delete_won(key, ops, *ts, decisions)
        })
        .map(|((key, ts), seen)| {
            format!(
                "lost write: {seen}, having acknowledged {key}@{ts}; a delete collided with it but no vote chose the delete"
            )
        })
        .collect()
}

/// Whether `key` may end absent with its tombstone collected: its newest acknowledged operations
/// (the latest millisecond's) are all deletes, or collided and the vote chose a delete, or the
/// writes among them were all taken by nodes a fault cuts off ([`Collects`]).
fn may_end_absent(
    key: &str,
    ops: &[Acked],
    all: &[Acked],
    collects: &Collects,
    decisions: &[(String, ListedDecision)],
) -> bool {
    let ts = ops
        .iter()
        .map(|o| o.version.timestamp_ms)
        .max()
        .expect("at least one");
    let latest: Vec<&Acked> = ops
        .iter()
        .filter(|o| o.version.timestamp_ms == ts)
        .collect();
    latest.iter().all(|o| o.delete)
        || delete_won(key, all, ts, decisions)
        || latest
            .iter()
            .filter(|o| !o.delete)
            .all(|o| collects.cut_off.contains(&o.by))
}

/// The safety invariants on the converged keyspace `finals`: for every key, the final version is
/// not older than any acknowledged write or delete of it, and a key deleted last ends deleted;
/// a key may end absent only where tombstone collection excuses it ([`Collects`]).
pub(super) fn final_losses(
    finals: &[(String, kvs::storage::Record)],
    acked: &BTreeMap<String, Vec<Acked>>,
    all: &BTreeMap<String, Vec<Acked>>,
    collects: Option<&Collects>,
    decisions: &[(String, ListedDecision)],
) -> Vec<String> {
    let mut violations = Vec::new();
    let finals: BTreeMap<&str, &kvs::storage::Record> =
        finals.iter().map(|(k, r)| (k.as_str(), r)).collect();
    for (key, ops) in acked.iter() {
        let newest = ops.iter().max_by_key(|o| o.version).expect("at least one");
        match finals.get(key.as_str()) {
            // The newest operation a delete, its tombstone collected; or the newest a write
            // a cut-off node took, forgotten (README, "Deletes"; `Collects`).
            None if collects.is_some_and(|c| {
                let all = all.get(key).map_or(ops.as_slice(), Vec::as_slice);
                may_end_absent(key, ops, all, c, decisions)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn op(ts: u64, uuid: u8, delete: bool, by: &str) -> Acked {
        Acked {
            version: Version::new(ts, [uuid; 16]),
            delete,
            by: by.to_owned(),
            value: (!delete).then(|| format!("{uuid}")),
        }
    }

    /// A decision on k@ts choosing `winner`, as `/conflicts/` lists it.
    fn decided(ts: u64, winner: u8) -> (String, ListedDecision) {
        let uuid = Version::new(ts, [winner; 16]).uuid_string();
        let listed = serde_json::json!({
            "key": "k", "timestamp": ts, "winner": uuid, "reason": "oldest_node", "votes": 1,
            "oldest_joined_timestamp": 1,
            "ballots": [{"address": "node-1", "joined_timestamp": 1, "uuid": uuid}],
        });
        ("node-1".to_owned(), serde_json::from_value(listed).unwrap())
    }

    #[test]
    fn a_write_that_collided_with_a_delete_may_end_absent_only_if_the_vote_chose_the_delete() {
        let collects = Collects {
            cut_off: BTreeSet::new(),
        };
        let ops = vec![op(7, 1, true, "node-1"), op(7, 2, false, "node-2")];
        let finals = [];
        let acked = BTreeMap::from([("k".to_owned(), ops)]);
        // The delete won: its tombstone may be gone.
        assert!(
            final_losses(&finals, &acked, &acked, Some(&collects), &[decided(7, 1)]).is_empty()
        );
        // The write won, or nothing was decided: the write is lost.
        for decisions in [vec![decided(7, 2)], vec![]] {
            let found = final_losses(&finals, &acked, &acked, Some(&collects), &decisions);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].starts_with("lost write: k"), "{found:?}");
        }
        // The same, for what the fault phase excused on condition.
        let pending = Pending::from([(("k".to_owned(), 7), "node-2 held nothing".to_owned())]);
        assert!(unexcused(&pending, &acked, &[decided(7, 1)]).is_empty());
        assert_eq!(unexcused(&pending, &acked, &[decided(7, 2)]).len(), 1);
        // A newer delete, or a write only a cut-off node took, needs no vote.
        let newer = BTreeMap::from([(
            "k".to_owned(),
            vec![op(7, 2, false, "node-2"), op(8, 1, true, "node-1")],
        )]);
        assert!(final_losses(&finals, &newer, &newer, Some(&collects), &[]).is_empty());
        let cut = Collects {
            cut_off: BTreeSet::from(["node-2".to_owned()]),
        };
        assert!(final_losses(&finals, &acked, &acked, Some(&cut), &[]).is_empty());
        // Without tombstone collection nothing may end absent.
        assert_eq!(final_losses(&finals, &newer, &newer, None, &[]).len(), 1);
    }

    #[test]
    fn the_cluster_ends_with_nothing_no_client_asked_for() {
        let record = |ts: u64, uuid: u8, data: Option<&str>| kvs::storage::Record {
            version: Version::new(ts, [uuid; 16]),
            data: data.map(|d| d.as_bytes().to_vec()),
            origin: "node-1".to_owned(),
        };
        let asked = BTreeMap::from([(
            "k".to_owned(),
            Asked {
                values: BTreeSet::from(["1".to_owned(), "2".to_owned()]),
                deleted: false,
                deletes_unknown: 0,
            },
        )]);
        let acked = BTreeMap::from([("k".to_owned(), vec![op(7, 1, false, "node-1")])]);
        // A value sent, unacknowledged: fine; the acknowledged write with its own value: fine.
        assert!(invented(&[("k".into(), record(9, 2, Some("2")))], &asked, &acked).is_empty());
        assert!(invented(&[("k".into(), record(7, 1, Some("1")))], &asked, &acked).is_empty());
        // The acknowledged version with another write's value, a value never sent, a tombstone
        // nobody asked for, a key nobody wrote.
        for end in [
            ("k", record(7, 1, Some("2"))),
            ("k", record(9, 2, Some("3"))),
            ("k", record(9, 2, None)),
            ("j", record(9, 2, Some("1"))),
        ] {
            let found = invented(&[(end.0.into(), end.1.clone())], &asked, &acked);
            assert_eq!(found.len(), 1, "{end:?}: {found:?}");
            assert!(found[0].starts_with("invented: "), "{found:?}");
        }
    }
}
