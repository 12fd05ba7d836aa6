//! Membership actor tests: SWIM nodes on a hand-driven network whose links can be cut.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::*;
use crate::seam::testing::TestContext;
use crate::seam::{reply_channel, Mailbox};

/// Collects a node's outgoing datagrams.
#[derive(Default)]
struct Wire(Mutex<Vec<Outgoing>>);

impl Mailbox<Outgoing> for Wire {
    fn deliver(&self, msg: Outgoing) -> Result<(), SendError> {
        self.0.lock().unwrap().push(msg);
        Ok(())
    }
}

/// What a node's storage was last told to remember.
#[derive(Default)]
struct Memory(Mutex<Option<(Vec<SocketAddr>, u64)>>);

impl Mailbox<StorageMsg> for Memory {
    fn deliver(&self, msg: StorageMsg) -> Result<(), SendError> {
        match msg {
            StorageMsg::Members {
                members,
                generation,
            } => *self.0.lock().unwrap() = Some((members, generation)),
            _ => panic!("membership only asks storage to remember members"),
        }
        Ok(())
    }
}

impl Memory {
    fn last(&self) -> Vec<SocketAddr> {
        self.0
            .lock()
            .unwrap()
            .clone()
            .expect("told at least once")
            .0
    }

    fn generation(&self) -> u64 {
        self.0
            .lock()
            .unwrap()
            .clone()
            .expect("told at least once")
            .1
    }
}

struct LanNode {
    actor: MembershipActor,
    ctx: TestContext<MembershipMsg>,
    wire: Arc<Wire>,
    memory: Arc<Memory>,
    counters: Arc<NetCounters>,
    up: bool,
}

/// Membership actors on a hand-driven network: every step advances each clock by one tick,
/// ticks every node and delivers what was sent, unless the link is cut.
struct Lan {
    nodes: Vec<LanNode>,
    cut: BTreeSet<(usize, usize)>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080))
}

impl Lan {
    fn new(n: usize) -> Lan {
        let mut lan = Lan {
            nodes: Vec::new(),
            cut: BTreeSet::new(),
        };
        for i in 0..n {
            lan.boot(i, 1);
        }
        lan
    }

    /// Boots (or reboots) node `i` with `generation`, seeded with node 0.
    fn boot(&mut self, i: usize, generation: u64) {
        self.boot_with(i, generation, vec![addr(0)], Vec::new());
    }

    /// Boots (or reboots) node `i` with `generation`, its seed nodes and the members it
    /// remembers.
    fn boot_with(
        &mut self,
        i: usize,
        generation: u64,
        seeds: Vec<SocketAddr>,
        remembered: Vec<SocketAddr>,
    ) {
        let wire = Arc::new(Wire::default());
        let memory = Arc::new(Memory::default());
        let counters = Arc::new(NetCounters::default());
        let spec = MembershipSpec {
            me: NodeIdentity {
                addr: addr(i),
                node_id: format!("n{i}"),
                generation,
                joined_ms: 1_000 + i as u64,
            },
            seeds,
            remembered,
            reap_after: Duration::from_secs(60),
        };
        let out = Addr::new(Arc::clone(&wire) as Arc<dyn Mailbox<Outgoing>>);
        let storage = Addr::new(Arc::clone(&memory) as Arc<dyn Mailbox<StorageMsg>>);
        let mut node = LanNode {
            actor: MembershipActor::new(spec, out, Arc::clone(&counters)).remember_in(storage),
            ctx: TestContext::new(1_000_000, i as u64 * 7 + generation),
            wire,
            memory,
            counters,
            up: true,
        };
        node.actor.started(&mut node.ctx);
        if i < self.nodes.len() {
            self.nodes[i] = node;
        } else {
            self.nodes.push(node);
        }
    }

    fn step(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| n.up) {
            node.ctx.clock.advance(TICK);
            node.ctx.scheduled.clear();
            node.actor.handle(&mut node.ctx, MembershipMsg::Tick);
        }
        let mut in_flight = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for out in node.wire.0.lock().unwrap().drain(..) {
                in_flight.push((i, out));
            }
        }
        for (from, out) in in_flight {
            let Some(to) = self
                .nodes
                .iter()
                .position(|n| n.actor.spec.me.addr == out.to)
            else {
                continue;
            };
            if self.cut.contains(&(from, to)) || !self.nodes[to].up {
                continue;
            }
            let node = &mut self.nodes[to];
            let msg = MembershipMsg::Datagram {
                from: addr(from),
                payload: out.payload,
            };
            node.actor.handle(&mut node.ctx, msg);
        }
    }

    fn run(&mut self, time: Duration) {
        for _ in 0..time.as_millis() / TICK.as_millis() {
            self.step();
        }
    }

    fn members(&mut self, i: usize) -> Vec<Member> {
        let (reply, mut answer) = reply_channel();
        let node = &mut self.nodes[i];
        node.actor
            .handle(&mut node.ctx, MembershipMsg::Members(reply));
        answer.try_recv().unwrap().expect("answered at once")
    }

    fn statuses(&mut self, i: usize) -> Vec<(String, MemberStatus)> {
        self.members(i)
            .into_iter()
            .map(|m| (m.id, m.status))
            .collect()
    }

    /// Has node `i` leave the cluster; whether it answered at once.
    fn leave(&mut self, i: usize) -> bool {
        let (reply, mut answer) = reply_channel();
        let node = &mut self.nodes[i];
        node.actor
            .handle(&mut node.ctx, MembershipMsg::Leave(reply));
        answer.try_recv() == Ok(Some(()))
    }

    fn isolate(&mut self, i: usize) {
        for j in 0..self.nodes.len() {
            self.cut.insert((i, j));
            self.cut.insert((j, i));
        }
    }
}

fn all(status: MemberStatus, ids: &[&str]) -> Vec<(String, MemberStatus)> {
    ids.iter().map(|id| (id.to_string(), status)).collect()
}

#[test]
fn the_swim_configuration_detects_within_5_s_up_to_10_members_and_spreads_every_update() {
    for size in [1, 3, 5, 10] {
        let config = swim_config(size);
        assert_eq!(config.suspect_to_down_after, SUSPICION_PER_DECADE, "{size}");
        assert!(
            config.max_transmissions.get() >= TRANSMISSIONS_MIN,
            "{size}"
        );
        // Until some member probes the dead one (one probe period, twice for one that took its
        // turn just before dying), the failed probe's period, the suspicion, with a second to
        // spare for spreading the news and a loaded machine.
        assert!(
            config.probe_period * 3 + config.suspect_to_down_after <= Duration::from_secs(4),
            "{size}"
        );
        // The two sides of a healed partition find each other again well within the
        // simulator's liveness budgets (20 s for swarm), by announcing to members held down.
        let to_down = config.periodic_announce_to_down_members.expect("enabled");
        assert!(to_down.frequency <= ANNOUNCE_EVERY, "{size}");
    }
    assert_eq!(
        swim_config(100).suspect_to_down_after,
        SUSPICION_PER_DECADE * 2,
        "scaled by log10 beyond 10 members"
    );
}

#[test]
fn members_find_each_other_through_one_seed() {
    let mut lan = Lan::new(3);
    lan.run(Duration::from_secs(5));
    for i in 0..3 {
        let members = lan.members(i);
        assert_eq!(members[0].id, format!("n{i}"), "itself first");
        let mut ids: Vec<(String, MemberStatus)> =
            members.iter().map(|m| (m.id.clone(), m.status)).collect();
        ids.sort();
        assert_eq!(
            ids,
            all(MemberStatus::Alive, &["n0", "n1", "n2"]),
            "node {i}"
        );
        for m in &members {
            let j: usize = m.id[1..].parse().unwrap();
            assert_eq!(m.address, addr(j).to_string());
            assert_eq!(m.joined_timestamp, 1_000 + j as u64);
            assert!(m.last_seen > 1_000_000, "{m:?} heard from");
        }
    }
}

#[test]
fn a_silent_member_is_suspected_then_dead_and_comes_back_when_heard_again() {
    let mut lan = Lan::new(3);
    lan.run(Duration::from_secs(5));
    lan.isolate(2);
    let mut suspected = false;
    for _ in 0..300 {
        lan.step();
        suspected |= lan
            .members(0)
            .iter()
            .any(|m| m.status == MemberStatus::Suspect);
    }
    assert!(suspected, "suspicion comes before death");
    for i in 0..2 {
        let status = lan.statuses(i);
        assert!(
            status.contains(&("n2".into(), MemberStatus::Dead)),
            "node {i}: {status:?}"
        );
    }
    lan.cut.clear();
    lan.run(Duration::from_secs(30));
    every_node_sees_all_alive(&mut lan, "");
}

#[test]
fn suspicions_a_node_formed_while_cut_off_do_not_outlive_its_return() {
    // However long the cut: a member the isolated node suspected while it could hear nobody
    // must not stay suspect once it is back (its suspicion timers die with its old identity).
    for cut_ms in (1_500..=6_000).step_by(250) {
        let mut lan = Lan::new(4);
        lan.run(Duration::from_secs(5));
        lan.isolate(3);
        lan.run(Duration::from_millis(cut_ms));
        lan.cut.clear();
        lan.run(Duration::from_secs(20));
        every_node_sees_all_alive(&mut lan, &format!(", cut off for {cut_ms} ms"));
    }
}

#[test]
fn a_node_cut_off_briefly_does_not_get_a_healthy_member_declared_dead() {
    // Cut off for less than it takes to be declared dead itself, node 3 suspects the others
    // meanwhile and gossips the suspicions to nobody. The others, who hear each other all along,
    // must never see one of themselves dead.
    for cut_ms in (600..=2_600).step_by(200) {
        let mut lan = Lan::new(4);
        lan.run(Duration::from_secs(5));
        cut_off_then_no_healthy_member_dies(&mut lan, Duration::from_millis(cut_ms));
    }
}

#[test]
fn in_a_large_cluster_a_node_cut_off_briefly_gets_no_healthy_member_declared_dead() {
    // With 40 members a suspect may not send the cut-off node anything before the suspicion
    // runs out: the node tells its suspects every probe period, not only when it hears one.
    let n = 40;
    let mut lan = Lan::new(n);
    lan.run(Duration::from_secs(10));
    for i in 0..n {
        assert_eq!(
            lan.statuses(i).len(),
            n,
            "node {i} knows everyone before the cut"
        );
    }
    cut_off_then_no_healthy_member_dies(&mut lan, Duration::from_millis(2_500));
}

/// Isolates the last node for `cut`, heals, and for 10 s checks at every tick that no other
/// node lists any member but the last dead, and that none of them was told it is down (which
/// makes a node rejoin under a new generation).
fn cut_off_then_no_healthy_member_dies(lan: &mut Lan, cut: Duration) {
    let last = lan.nodes.len() - 1;
    let last_id = format!("n{last}");
    lan.isolate(last);
    lan.run(cut);
    lan.cut.clear();
    for step in 0..(10_000 / TICK.as_millis()) {
        lan.step();
        for i in 0..last {
            let dead: Vec<String> = lan
                .statuses(i)
                .into_iter()
                .filter(|(id, s)| *s == MemberStatus::Dead && *id != last_id)
                .map(|(id, _)| id)
                .collect();
            assert!(
                dead.is_empty(),
                "cut off for {cut:?}: node {i} lists {dead:?} dead, {} ms after the cut healed",
                step * TICK.as_millis()
            );
            assert_eq!(
                lan.nodes[i].memory.generation(),
                1,
                "cut off for {cut:?}: node {i} was told it is down and rejoined, {} ms after \
                 the cut healed",
                step * TICK.as_millis()
            );
        }
    }
}

fn sorted_statuses(lan: &mut Lan, i: usize) -> Vec<(String, MemberStatus)> {
    let mut status = lan.statuses(i);
    status.sort();
    status
}

/// Asserts that every node of `lan` lists every node alive (`context` ends the message).
fn every_node_sees_all_alive(lan: &mut Lan, context: &str) {
    let ids: Vec<String> = (0..lan.nodes.len()).map(|i| format!("n{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for i in 0..lan.nodes.len() {
        assert_eq!(
            sorted_statuses(lan, i),
            all(MemberStatus::Alive, &ids),
            "node {i}{context}"
        );
    }
}

#[test]
fn a_restarted_founder_rejoins_through_the_members_it_remembered() {
    let mut lan = Lan::new(3);
    lan.run(Duration::from_secs(5));
    let remembered = lan.nodes[0].memory.last();
    assert_eq!(remembered, vec![addr(1), addr(2)]);
    // Node 0, the founder, has no seed nodes: killed, it is declared dead, then restarts.
    lan.nodes[0].up = false;
    lan.run(Duration::from_secs(10));
    assert!(lan.statuses(1).contains(&("n0".into(), MemberStatus::Dead)));
    // Without what it remembered it would wait alone until a member announces itself to the
    // members it holds down (every ANNOUNCE_EVERY); with it, it is back at once.
    lan.boot_with(0, 2, Vec::new(), remembered);
    lan.run(Duration::from_millis(500));
    every_node_sees_all_alive(&mut lan, "");
}

#[test]
fn members_are_remembered_until_they_leave_or_are_reaped() {
    let mut lan = Lan::new(4);
    lan.run(Duration::from_secs(5));
    assert_eq!(lan.nodes[0].memory.last(), vec![addr(1), addr(2), addr(3)]);
    assert!(lan.leave(1), "node 1 left at once");
    lan.nodes[3].up = false;
    lan.run(Duration::from_secs(10));
    // The one that left is forgotten at once, the dead one only once reaped.
    assert!(lan.statuses(0).contains(&("n3".into(), MemberStatus::Dead)));
    assert_eq!(lan.nodes[0].memory.last(), vec![addr(2), addr(3)]);
    lan.run(Duration::from_secs(61));
    assert_eq!(lan.nodes[0].memory.last(), vec![addr(2)]);
}

#[test]
fn a_member_that_leaves_is_listed_as_left_even_if_its_notice_is_lost() {
    // Its departure notice and foca's leave are separate datagrams: either may come first, or
    // alone. The members its leave reaches list it as left, not dead.
    let mut lan = Lan::new(3);
    lan.run(Duration::from_secs(5));
    assert!(lan.leave(1), "node 1 left at once");
    lan.nodes[1]
        .wire
        .0
        .lock()
        .unwrap()
        .retain(|o| o.payload.first() != Some(&KIND_LEAVING));
    lets_node_1_go_and_the_others_list_it_left(&mut lan);
    for i in [0, 2] {
        assert_eq!(lan.nodes[i].memory.last(), vec![addr(2 - i)], "node {i}");
    }
}

/// After node 1 of 3 asked to leave: runs 2 s, stops it, and asserts nodes 0 and 2 list it left.
fn lets_node_1_go_and_the_others_list_it_left(lan: &mut Lan) {
    lan.run(Duration::from_secs(2));
    lan.nodes[1].up = false;
    for i in [0, 2] {
        let status = lan.statuses(i);
        assert!(
            status.contains(&("n1".into(), MemberStatus::Left)),
            "node {i}: {status:?}"
        );
    }
}

#[test]
fn a_member_that_leaves_is_listed_as_left_then_reaped() {
    let mut lan = Lan::new(3);
    lan.run(Duration::from_secs(5));
    assert!(lan.leave(1), "node 1 left at once");
    assert_eq!(lan.statuses(1)[0], ("n1".into(), MemberStatus::Left));
    lets_node_1_go_and_the_others_list_it_left(&mut lan);
    lan.run(Duration::from_secs(61));
    let status = lan.statuses(0);
    assert!(
        !status.iter().any(|(id, _)| id == "n1"),
        "reaped: {status:?}"
    );
}

#[test]
fn a_member_learnt_as_already_dead_is_reaped_too() {
    let mut lan = Lan::new(2);
    lan.run(Duration::from_secs(3));
    // Node 0 learns of a member that is down already (as a restarted node can, from
    // gossip still spreading the news): it never saw it alive.
    let ghost = NodeIdentity {
        addr: addr(9),
        node_id: "ghost".into(),
        generation: 1,
        joined_ms: 1,
    };
    let node = &mut lan.nodes[0];
    let swim = node.actor.swim.as_mut().unwrap();
    swim.apply_many(
        std::iter::once(foca::Member::down(ghost)),
        false,
        &mut node.actor.effects,
    )
    .unwrap();
    node.actor.apply(&mut node.ctx);
    assert!(lan
        .statuses(0)
        .contains(&("ghost".into(), MemberStatus::Dead)));
    lan.run(Duration::from_secs(61));
    let status = lan.statuses(0);
    assert!(
        !status.iter().any(|(id, _)| id == "ghost"),
        "reaped: {status:?}"
    );
}

#[test]
fn a_node_that_left_stays_out() {
    // Five nodes: an uninformed member's indirect probe of the leaver, through an informed
    // one, is what would tell foca it is down and make it renew itself back in.
    let mut lan = Lan::new(5);
    lan.run(Duration::from_secs(5));
    assert!(lan.leave(1), "node 1 left at once");
    // It keeps running and hearing gossip (that it is down) for a while.
    lan.run(Duration::from_secs(60));
    for i in [0, 2, 3, 4] {
        let status = lan.statuses(i);
        assert!(
            status.contains(&("n1".into(), MemberStatus::Left)),
            "node {i}: {status:?}"
        );
    }
    assert_eq!(lan.statuses(1)[0], ("n1".into(), MemberStatus::Left));
}

#[test]
fn a_restarted_member_replaces_its_stale_self() {
    let mut lan = Lan::new(3);
    lan.run(Duration::from_secs(5));
    lan.boot(2, 2);
    lan.run(Duration::from_secs(10));
    for i in 0..3 {
        let members = lan.members(i);
        let n2: Vec<&Member> = members.iter().filter(|m| m.id == "n2").collect();
        assert_eq!(n2.len(), 1, "node {i}: {members:?}");
        assert_eq!(n2[0].status, MemberStatus::Alive, "node {i}");
    }
}

#[test]
fn a_generation_raised_while_running_is_remembered_so_a_restart_comes_above_it() {
    let mut lan = Lan::new(3);
    lan.run(Duration::from_secs(5));
    assert_eq!(lan.nodes[2].memory.generation(), 1);
    // Cut off until declared dead, then back: it rejoins under generation 2 without restarting.
    lan.isolate(2);
    lan.run(Duration::from_secs(15));
    lan.cut.clear();
    lan.run(Duration::from_secs(10));
    let remembered = lan.nodes[2].memory.generation();
    assert_eq!(remembered, 2, "the new generation reached storage");
    // It leaves, and restarts as the store would start it (one above what it stored): the
    // others take it back, though they hold generation 2 as departed.
    assert!(lan.leave(2), "node 2 left at once");
    lan.run(Duration::from_secs(2));
    lan.nodes[2].up = false;
    assert!(lan.statuses(0).contains(&("n2".into(), MemberStatus::Left)));
    lan.boot(2, remembered + 1);
    lan.run(Duration::from_secs(10));
    every_node_sees_all_alive(&mut lan, "");
}

#[test]
fn junk_is_counted_and_changes_nothing() {
    let mut lan = Lan::new(2);
    lan.run(Duration::from_secs(3));
    let before = lan.statuses(0);
    let node = &mut lan.nodes[0];
    for payload in [
        vec![],
        vec![KIND_SWIM],
        vec![KIND_SWIM, 0xff, 0xff],
        vec![KIND_LEAVING, 1],
        vec![9; 40],
    ] {
        let msg = MembershipMsg::Datagram {
            from: addr(5),
            payload,
        };
        node.actor.handle(&mut node.ctx, msg);
    }
    assert_eq!(node.counters.rejected(Rejected::Malformed), 5);
    assert_eq!(lan.statuses(0), before);
}
