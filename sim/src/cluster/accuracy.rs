//! The failure detector's accuracy: a node that no fault touched is never declared down by
//! another node that no fault touched, unless a node that was cut off at the time (or had been
//! until less than [`REFUTE_TIME`] before), or any node during datagram loss, declared that
//! generation of it down first (SWIM spreads a verdict; foca's is final for that generation).
//! Partitions, crashes, leaves, pauses and power cuts may take a node out of the cluster, and a
//! node they cut off may declare anyone down; a clock skew or drift, a TCP stall (gossip is
//! UDP), another node's trouble, or suspicions a node formed while cut off and kept after it came
//! back must not. Datagram loss can legitimately fail every probe of a healthy node, so verdicts
//! during loss and for a while after it are excused.

use std::collections::{BTreeMap, BTreeSet};

use kvs::cluster::membership::{swim_config, PROBE_PERIOD};

use super::scenario::Fault;

/// How long after a node's cut ends a suspicion it formed while cut off may still run out before
/// the suspect could refute it: the node must first hear the suspect (within a probe period, as
/// a node probes a member at least every period) and tell it (`membership::Suspected`, sent at
/// once on hearing), and the refutation must come back within another.
const REFUTE_TIME: u64 = 2 * PROBE_PERIOD.as_millis() as u64;

/// How long after datagram loss stops a member may still be declared down for it, in a cluster
/// of `nodes`: a probe that failed in the last moment of the loss starts a suspicion up to a
/// probe period later, and it runs out after the suspicion timeout unless refuted before; a
/// node that learns the suspicion by gossip starts its own timer when it hears it, up to a
/// couple of probe periods later still.
fn loss_tail_ms(nodes: u32) -> u64 {
    let suspicion = swim_config(nodes).suspect_to_down_after;
    (3 * PROBE_PERIOD + suspicion).as_millis() as u64
}

/// Every `member down` among a run's timeline `lines` (not a graceful leave) in a cluster of
/// `nodes` where neither the node declared down nor the node declaring it was touched by the
/// `applied` faults (each with the time it was applied, in the lines' milliseconds), the verdict
/// did not come in or soon after datagram loss, and no node cut off at the time (or any node
/// during loss) had declared that node down before.
pub(super) fn false_downs(applied: &[(u64, Fault)], lines: &[String], nodes: u32) -> Vec<String> {
    let tail = loss_tail_ms(nodes);
    let lossy = loss_windows(applied);
    let lossy_at = |t: u64| {
        lossy
            .iter()
            .any(|&(from, to)| from <= t && t <= to.saturating_add(tail))
    };
    let touched: BTreeSet<String> = applied
        .iter()
        .filter(|(_, f)| f.cuts_off_membership())
        .flat_map(|(_, f)| f.nodes())
        .map(|n| format!("node-{n}"))
        .collect();
    let windows = cut_off_windows(applied);
    let cut_off_at = |node: &str, t: u64| {
        windows.get(node).is_some_and(|w| {
            w.iter()
                .any(|&(from, to)| from <= t && t <= to.saturating_add(REFUTE_TIME))
        })
    };
    // Generations of nodes that a node cut off (or any node during loss) declared down: foca's
    // verdict is final for a generation, so everyone else may take it up, however late the
    // gossip reaches them (even after the node rejoined under its next generation).
    let mut condemned: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut found = Vec::new();
    for line in lines {
        if !line.contains(" member down node_id=") {
            continue;
        }
        let Some(down) = MemberDown::read(line) else {
            // A changed log line must not turn the check off silently.
            found.push(format!("accuracy check: cannot read `{line}`"));
            continue;
        };
        if down.left {
            continue;
        }
        let verdict = (down.node.to_owned(), down.generation);
        if cut_off_at(down.by, down.t) || lossy_at(down.t) {
            condemned.insert(verdict.clone());
        }
        let untouched = |n: &str| !touched.contains(n);
        if untouched(down.by) && untouched(down.node) && !condemned.contains(&verdict) {
            found.push(format!(
                "false positive: {} declared {} down, and no fault touched either ({line})",
                down.by, down.node
            ));
        }
    }
    found
}

/// A `member down` line (`t=812ms node-2 member down node_id=node-3 generation=1 left=false`).
struct MemberDown<'a> {
    /// When, in the run's milliseconds.
    t: u64,
    /// The node declaring.
    by: &'a str,
    /// The node declared down.
    node: &'a str,
    /// The generation of it declared down.
    generation: u64,
    /// Whether it left gracefully (no verdict).
    left: bool,
}

impl<'a> MemberDown<'a> {
    fn read(line: &'a str) -> Option<Self> {
        let (before, after) = line.split_once(" member down node_id=")?;
        let (node, rest) = after.split_once(' ')?;
        let field = |name: &str| {
            rest.split(' ')
                .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
        };
        let generation = field("generation")?.parse().ok()?;
        let left = field("left")?.parse().ok()?;
        let (stamp, by) = before.split_once(' ')?;
        let t = stamp.strip_prefix("t=")?.strip_suffix("ms")?.parse().ok()?;
        Some(Self {
            t,
            by,
            node,
            generation,
            left,
        })
    }
}

/// When datagrams were being lost (on every link): from a loss until a heal or a loss of 0
/// (to the end of the run if neither came).
fn loss_windows(applied: &[(u64, Fault)]) -> Vec<(u64, u64)> {
    let mut windows = Vec::new();
    let mut open: Option<u64> = None;
    for (t, fault) in applied {
        match fault {
            Fault::Loss(rate) if *rate > 0.0 => {
                open.get_or_insert(*t);
            }
            Fault::Loss(_) | Fault::Heal => {
                if let Some(from) = open.take() {
                    windows.push((from, *t));
                }
            }
            _ => {}
        }
    }
    windows.extend(open.map(|from| (from, u64::MAX)));
    windows
}

/// When each node could hear only part of the cluster, or nothing: from an isolation or a one-way
/// cut until the next heal, from a pause until its resume (to the end of the run if never); each
/// kind closed only by its own undo. (A crash, reboot or power cut leaves no suspicions behind:
/// the node starts over.)
fn cut_off_windows(applied: &[(u64, Fault)]) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut windows: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    // Open windows by (node, paused).
    let mut open: BTreeMap<(u64, bool), u64> = BTreeMap::new();
    let mut close = |n: u64, from: u64, to: u64| {
        windows
            .entry(format!("node-{n}"))
            .or_default()
            .push((from, to));
    };
    for (t, fault) in applied {
        match fault {
            Fault::Isolate(_) | Fault::OneWay { .. } => {
                for n in fault.nodes() {
                    open.entry((n, false)).or_insert(*t);
                }
            }
            Fault::Pause(n) => {
                open.entry((*n, true)).or_insert(*t);
            }
            Fault::Resume(n) => {
                if let Some(from) = open.remove(&(*n, true)) {
                    close(*n, from, *t);
                }
            }
            Fault::Heal => {
                let cuts: Vec<(u64, bool)> = open.keys().filter(|(_, p)| !p).copied().collect();
                for key in cuts {
                    let from = open.remove(&key).expect("listed above");
                    close(key.0, from, *t);
                }
            }
            _ => {}
        }
    }
    for ((n, _), from) in open {
        close(n, from, u64::MAX);
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn a_down_between_untouched_nodes_is_a_false_positive_unless_a_cut_off_node_said_it_first() {
        let applied = [
            (100, Fault::Isolate(vec![4])),
            (
                200,
                Fault::Skew {
                    node: 1,
                    offset_ms: 5_000,
                },
            ),
            (300, Fault::TcpStall(2)),
            (1_000, Fault::Heal),
        ];
        let found = false_downs(
            &applied,
            &lines(&[
                // Isolated node 4 declares node 3 down while cut off: node 1 may follow.
                "t=800ms node-4 member down node_id=node-3 generation=1 left=false",
                "t=900ms node-1 member down node_id=node-3 generation=1 left=false",
                // Well after the heal, node 4's verdict on node 2 is its own mistake, and
                // node 1 following it is a false positive.
                "t=3000ms node-4 member down node_id=node-2 generation=1 left=false",
                "t=3005ms node-1 member down node_id=node-2 generation=1 left=false",
                // Anyone may declare node 4 down, and a graceful leave is no verdict.
                "t=3010ms node-1 member down node_id=node-4 generation=1 left=false",
                "t=3020ms node-3 member down node_id=node-1 generation=1 left=true",
            ]),
            4,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("node-1 declared node-2 down"),
            "{found:?}"
        );
        // A heal does not end a pause; a resume does.
        let paused = [
            (0, Fault::Pause(4)),
            (10, Fault::Heal),
            (5_000, Fault::Resume(4)),
        ];
        let during = lines(&[
            "t=4000ms node-4 member down node_id=node-3 generation=1 left=false",
            "t=4100ms node-1 member down node_id=node-3 generation=1 left=false",
        ]);
        assert!(false_downs(&paused, &during, 4).is_empty());
        // The verdict on a generation may reach a node after that node already saw the next
        // generation (seed 507988239 of bootstrap_past_grace), but a verdict on the next
        // generation is judged afresh.
        let back = lines(&[
            "t=4000ms node-4 member down node_id=node-3 generation=1 left=false",
            "t=4010ms node-4 member up node_id=node-3 generation=2",
            "t=4012ms node-1 member down node_id=node-3 generation=1 left=false",
            "t=9000ms node-1 member down node_id=node-3 generation=2 left=false",
        ]);
        let found = false_downs(&paused, &back, 4);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("generation=2"), "{found:?}");
        // A line the check cannot read is reported, not skipped.
        let changed = lines(&["t=1ms node-1 member down node_id=node-2 reason=x"]);
        assert_eq!(false_downs(&[], &changed, 4).len(), 1);
        // A verdict during datagram loss, or within the loss's tail after it stopped, is excused
        // (and others may take it up); one after the tail is not.
        let tail = loss_tail_ms(4);
        assert_eq!(tail, 4_000, "three probe periods and 2.5 s of suspicion");
        let lossy = [
            (1_000, Fault::Loss(0.2)),
            (2_000, Fault::Loss(0.3)),
            (5_000, Fault::Heal),
        ];
        let down = |t: u64, by: u8, down: u8| {
            format!("t={t}ms node-{by} member down node_id=node-{down} generation=1 left=false")
        };
        let at = |t| false_downs(&lossy, &[down(t, 1, 2)], 4);
        assert_eq!(at(999).len(), 1, "before the loss");
        assert!(at(1_000).is_empty() && at(5_000 + tail).is_empty());
        assert_eq!(at(5_001 + tail).len(), 1, "after the tail");
        let taken_up = [down(4_000, 1, 2), down(9_000, 3, 2)];
        assert!(false_downs(&lossy, &taken_up, 4).is_empty());
        // Loss never stopped: everything after it began is excused; a loss of 0 stops it.
        let endless = [(1_000, Fault::Loss(0.2))];
        assert!(false_downs(&endless, &[down(60_000, 1, 2)], 4).is_empty());
        let stopped = [(1_000, Fault::Loss(0.2)), (2_000, Fault::Loss(0.0))];
        assert_eq!(false_downs(&stopped, &[down(60_000, 1, 2)], 4).len(), 1);
    }
}
