//! The failure detector's accuracy: no generation of a node is declared down while nothing
//! excuses it. SWIM spreads a verdict and foca's is final for a generation, so only the first
//! verdict on each (node, generation) is judged; the others take it up. It is excused when the
//! node declaring was cut off at the time (isolated, on a one-way cut or paused, or had been
//! until less than [`REFUTE_TIME`] before: its suspicions formed while cut off may run out
//! before the suspect can refute them), when the node declared down was away (cut off or paused
//! until less than [`REFUTE_TIME`] before; crashed, powered off or gone after a graceful leave
//! until less than the loss tail before), or during datagram loss and its tail (loss can fail
//! every probe of a healthy node). Every other verdict is a false positive: a clock skew or
//! drift, a TCP stall (gossip is UDP), another node's trouble, or an old fault must not kill
//! anyone.

use std::collections::{BTreeMap, BTreeSet};

use kvs::cluster::membership::{swim_config, PROBE_PERIOD};

use super::scenario::Fault;

/// How long after a node's cut ends a suspicion formed across it may still run out before the
/// suspect could refute it: the suspecting node must first hear the suspect (within a probe
/// period, as a node probes a member at least every period) and tell it
/// (`membership::Suspected`, sent at once on hearing), and the refutation must come back within
/// another.
const REFUTE_TIME: u64 = 2 * PROBE_PERIOD.as_millis() as u64;

/// How long after datagram loss stops (or a node stopped for good) a member may still be
/// declared down for it, in a cluster of `nodes`: a probe that failed in the last moment starts
/// a suspicion up to a probe period later, and it runs out after the suspicion timeout unless
/// refuted before; a node that learns the suspicion by gossip starts its own timer when it
/// hears it, up to a couple of probe periods later still.
fn loss_tail_ms(nodes: u32) -> u64 {
    let suspicion = swim_config(nodes).suspect_to_down_after;
    (3 * PROBE_PERIOD + suspicion).as_millis() as u64
}

/// The first `member down` of each (node, generation) among a run's timeline `lines` (not a
/// graceful leave) in a cluster of `nodes` that nothing in the `applied` faults (each with the
/// time it was applied, in the lines' milliseconds) excuses.
pub(super) fn false_downs(applied: &[(u64, Fault)], lines: &[String], nodes: u32) -> Vec<String> {
    let tail = loss_tail_ms(nodes);
    let lossy = loss_windows(applied, tail);
    let cut_off = away_windows(applied, tail, &[Away::Cut, Away::Paused]);
    let away = away_windows(
        applied,
        tail,
        &[Away::Cut, Away::Paused, Away::Off, Away::Left],
    );
    let within = |windows: &BTreeMap<String, Vec<(u64, u64)>>, node: &str, t: u64| {
        windows
            .get(node)
            .is_some_and(|w| w.iter().any(|&(from, to)| from <= t && t <= to))
    };
    let mut judged: BTreeSet<(String, u64)> = BTreeSet::new();
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
        if down.left || !judged.insert((down.node.to_owned(), down.generation)) {
            continue;
        }
        let excused = lossy
            .iter()
            .any(|&(from, to)| from <= down.t && down.t <= to)
            || within(&cut_off, down.by, down.t)
            || within(&away, down.node, down.t);
        if !excused {
            found.push(format!(
                "false positive: {} declared {} down, and no fault excuses it ({line})",
                down.by, down.node
            ));
        }
    }
    found
}

/// Every rejoin under a new generation among a run's timeline `lines` ("declared down while
/// alive") that no verdict explains: a node renews its identity only when the cluster declared
/// it down, so some node must have logged `member down` on the generation it leaves (judged
/// itself by [`false_downs`]) at or before the rejoin. A renewal without one is a healthy member
/// told it is down by mistake (foca 2.0.0 sent "you are down" to every member that refuted a
/// suspicion, once the suspicion's timer ran out).
pub(super) fn unheard_renewals(lines: &[String]) -> Vec<String> {
    let mut verdicts: BTreeSet<(&str, u64)> = BTreeSet::new();
    let mut found = Vec::new();
    for line in lines {
        if line.contains(" member down node_id=") {
            if let Some(down) = MemberDown::read(line) {
                verdicts.insert((down.node, down.generation));
            }
            // An unreadable one is reported by `false_downs`.
            continue;
        }
        let Some((before, after)) = line.split_once(" declared down while alive: ") else {
            continue;
        };
        let renewed = after
            .split(' ')
            .find_map(|field| field.strip_prefix("generation="))
            .and_then(|g| g.parse::<u64>().ok());
        let node = before.split(' ').nth(1);
        let (Some(renewed), Some(node)) = (renewed, node) else {
            found.push(format!("renewal check: cannot read `{line}`"));
            continue;
        };
        if !verdicts.contains(&(node, renewed.saturating_sub(1))) {
            found.push(format!(
                "{node} was told it is down and rejoined, but no node declared generation {} \
                 of it down ({line})",
                renewed.saturating_sub(1)
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

/// When datagrams were being lost (on every link), with `tail` after: from a loss until a heal
/// or a loss of 0 (to the end of the run if neither came).
fn loss_windows(applied: &[(u64, Fault)], tail: u64) -> Vec<(u64, u64)> {
    let mut windows = Vec::new();
    let mut open: Option<u64> = None;
    for (t, fault) in applied {
        match fault {
            Fault::Loss(rate) if *rate > 0.0 => {
                open.get_or_insert(*t);
            }
            Fault::Loss(_) | Fault::Heal => {
                if let Some(from) = open.take() {
                    windows.push((from, t.saturating_add(tail)));
                }
            }
            _ => {}
        }
    }
    windows.extend(open.map(|from| (from, u64::MAX)));
    windows
}

/// Why a node is away from the cluster, as far as verdicts on it or by it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Away {
    /// Isolated or on a one-way cut, until the next heal.
    Cut,
    /// Paused, until resumed.
    Paused,
    /// Powered off until powered on, or crashed or rebooted (its old generation is gone).
    Off,
    /// Gone after a graceful leave, until it boots again.
    Left,
}

/// When each node was away for one of the `wanted` reasons, each window stretched by the time
/// a verdict may still follow once the node is back: [`REFUTE_TIME`] for a cut or a pause (the
/// node is alive and can refute), the loss `tail` for the others (its old generation is
/// suspected, then declared down, as a silent node is). A window not closed by its own undo
/// lasts to the end of the run.
fn away_windows(
    applied: &[(u64, Fault)],
    tail: u64,
    wanted: &[Away],
) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut windows: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut push = |n: u64, away: Away, from: u64, to: u64| {
        if wanted.contains(&away) {
            let grace = match away {
                Away::Cut | Away::Paused => REFUTE_TIME,
                Away::Off | Away::Left => tail,
            };
            windows
                .entry(format!("node-{n}"))
                .or_default()
                .push((from, to.saturating_add(grace)));
        }
    };
    let mut open: BTreeMap<(u64, Away), u64> = BTreeMap::new();
    for &(t, ref fault) in applied {
        let mut close = |n: u64, away: Away| open.remove(&(n, away)).map(|from| (n, away, from));
        let closed: Vec<(u64, Away, u64)> = match *fault {
            Fault::Pause(n) => {
                open.entry((n, Away::Paused)).or_insert(t);
                vec![]
            }
            Fault::PowerOff(n) | Fault::Die(n) => {
                open.entry((n, Away::Off)).or_insert(t);
                vec![]
            }
            Fault::Leave(n) => {
                open.entry((n, Away::Left)).or_insert(t);
                vec![]
            }
            Fault::Resume(n) => close(n, Away::Paused).into_iter().collect(),
            Fault::PowerOn(n) => [close(n, Away::Off), close(n, Away::Left)]
                .into_iter()
                .flatten()
                .collect(),
            Fault::Crash(n) | Fault::Reboot(n) => close(n, Away::Left)
                .into_iter()
                .chain([(n, Away::Off, t)])
                .collect(),
            Fault::Isolate(_) | Fault::OneWay { .. } => {
                for n in fault.nodes() {
                    open.entry((n, Away::Cut)).or_insert(t);
                }
                vec![]
            }
            Fault::Heal => {
                let cuts: Vec<(u64, Away)> = open
                    .keys()
                    .filter(|(_, away)| *away == Away::Cut)
                    .copied()
                    .collect();
                cuts.into_iter()
                    .filter_map(|(n, away)| open.remove(&(n, away)).map(|from| (n, away, from)))
                    .collect()
            }
            Fault::Loss(_)
            | Fault::Latency { .. }
            | Fault::Skew { .. }
            | Fault::Drift { .. }
            | Fault::TcpStall(_)
            | Fault::TcpResume(_)
            | Fault::Join(_) => vec![],
        };
        for (n, away, from) in closed {
            push(n, away, from, t);
        }
    }
    for ((n, away), from) in open {
        push(n, away, from, u64::MAX);
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(t: u64, by: u8, down: u8, generation: u64) -> String {
        format!(
            "t={t}ms node-{by} member down node_id=node-{down} generation={generation} left=false"
        )
    }

    #[test]
    fn a_node_rejoins_under_a_new_generation_only_after_a_verdict_on_the_old_one() {
        let renewed = |t: u64, node: u32, generation: u64| {
            format!(
                "t={t}ms node-{node} declared down while alive: rejoined under a new generation \
                 generation={generation}"
            )
        };
        let found = unheard_renewals(&[
            // Declared down, then told: explained.
            down(1_000, 1, 3, 1),
            renewed(1_010, 3, 2),
            // A verdict on another generation, or on another node, explains nothing.
            renewed(2_000, 3, 3),
            renewed(2_100, 2, 2),
            // Nor does one that comes after the rejoin.
            down(2_200, 1, 2, 1),
            // Unreadable lines are reported, not skipped.
            "t=3000ms node-4 declared down while alive: rejoined".to_owned(),
        ]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("node-3 was told"), "{found:?}");
        assert!(found[0].contains("generation 2 of it"), "{found:?}");
        assert!(found[1].starts_with("node-2 was told"), "{found:?}");
        assert!(
            found[2].starts_with("renewal check: cannot read"),
            "{found:?}"
        );
    }

    #[test]
    fn only_a_verdict_no_fault_excuses_is_a_false_positive_and_only_the_first_on_a_generation_is_judged(
    ) {
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
            &[
                // Isolated node 4 declares node 3 down while cut off: node 1 may take it up.
                down(800, 4, 3, 1),
                down(900, 1, 3, 1),
                // Anyone may declare node 4 down while it is cut off, or soon after.
                down(1_500, 1, 4, 1),
                // Well after the heal, node 4's verdict on node 2 is its own mistake (node 1
                // taking it up is not judged again).
                down(3_000, 4, 2, 1),
                down(3_005, 1, 2, 1),
                // A skew or a TCP stall excuses nothing.
                down(3_100, 3, 1, 1),
                // Neither does an old cut.
                down(5_000, 3, 4, 2),
                // A graceful leave is no verdict.
                "t=3020ms node-3 member down node_id=node-1 generation=1 left=true".to_owned(),
            ],
            4,
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].contains("node-4 declared node-2 down"),
            "{found:?}"
        );
        assert!(
            found[1].contains("node-3 declared node-1 down"),
            "{found:?}"
        );
        assert!(
            found[2].contains("node-3 declared node-4 down"),
            "{found:?}"
        );

        // A heal does not end a pause; a resume does.
        let paused = [
            (0, Fault::Pause(4)),
            (10, Fault::Heal),
            (5_000, Fault::Resume(4)),
        ];
        let found = false_downs(
            &paused,
            &[
                down(4_000, 4, 3, 1),
                down(5_500, 1, 4, 1),
                down(6_100, 1, 4, 2),
            ],
            4,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("t=6100ms"), "{found:?}");

        // The verdict on a generation may reach a node after that node already saw the next
        // generation (seed 507988239 of bootstrap_past_grace); a verdict on the next
        // generation is judged afresh.
        let back = [
            down(4_000, 4, 3, 1),
            "t=4010ms node-4 member up node_id=node-3 generation=2".to_owned(),
            down(4_012, 1, 3, 1),
            down(9_000, 1, 3, 2),
        ];
        let found = false_downs(&paused, &back, 4);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("generation=2"), "{found:?}");

        // A node crashed, rebooted, powered off or gone may be declared down until a loss tail
        // after it is back.
        let tail = loss_tail_ms(4);
        assert_eq!(tail, 4_000, "three probe periods and 2.5 s of suspicion");
        let crashed = [(1_000, Fault::Crash(2))];
        assert!(false_downs(&crashed, &[down(1_000 + tail, 1, 2, 1)], 4).is_empty());
        assert_eq!(
            false_downs(&crashed, &[down(1_001 + tail, 1, 2, 1)], 4).len(),
            1
        );
        assert_eq!(false_downs(&crashed, &[down(999, 1, 2, 1)], 4).len(), 1);
        let off = [(0, Fault::PowerOff(2)), (10_000, Fault::PowerOn(2))];
        assert!(false_downs(&off, &[down(9_000, 1, 2, 1)], 4).is_empty());
        assert_eq!(
            false_downs(&off, &[down(10_001 + tail, 1, 2, 2)], 4).len(),
            1
        );
        let gone = [(0, Fault::Leave(3))];
        assert!(false_downs(&gone, &[down(50_000, 1, 3, 1)], 4).is_empty());
        let back = [(0, Fault::Leave(3)), (100, Fault::Reboot(3))];
        assert_eq!(false_downs(&back, &[down(101 + tail, 1, 3, 2)], 4).len(), 1);

        // A line the check cannot read is reported, not skipped.
        let changed = ["t=1ms node-1 member down node_id=node-2 reason=x".to_owned()];
        assert_eq!(false_downs(&[], &changed, 4).len(), 1);

        // A verdict during datagram loss, or within the loss's tail after it stopped, is excused
        // (and others may take it up); one after the tail is not.
        let lossy = [
            (1_000, Fault::Loss(0.2)),
            (2_000, Fault::Loss(0.3)),
            (5_000, Fault::Heal),
        ];
        let at = |t| false_downs(&lossy, &[down(t, 1, 2, 1)], 4);
        assert_eq!(at(999).len(), 1, "before the loss");
        assert!(at(1_000).is_empty() && at(5_000 + tail).is_empty());
        assert_eq!(at(5_001 + tail).len(), 1, "after the tail");
        let taken_up = [down(4_000, 1, 2, 1), down(9_000, 3, 2, 1)];
        assert!(false_downs(&lossy, &taken_up, 4).is_empty());
        // Loss never stopped: everything after it began is excused; a loss of 0 stops it.
        let endless = [(1_000, Fault::Loss(0.2))];
        assert!(false_downs(&endless, &[down(60_000, 1, 2, 1)], 4).is_empty());
        let stopped = [(1_000, Fault::Loss(0.2)), (2_000, Fault::Loss(0.0))];
        assert_eq!(false_downs(&stopped, &[down(60_000, 1, 2, 1)], 4).len(), 1);
    }
}
