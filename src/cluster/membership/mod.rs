//! The membership actor: SWIM with suspicion (foca), driven through the seam.
//!
//! foca is sans-IO: it is handed datagrams and timer events and answers with datagrams to send,
//! timers to set and notifications. This actor owns it and is its runtime:
//!
//! * datagrams arrive as [`MembershipMsg::Datagram`] (already authenticated by the socket glue,
//!   `cluster::envelope`) and leave through an [`Addr<Outgoing>`] the glue seals and sends, so the
//!   actor never knows which host carries them;
//! * foca's timers (one per probe, per suspect, per periodic task: unbounded in number) live in
//!   a queue inside the actor, ordered by deadline, and one self-scheduled [`MembershipMsg::Tick`]
//!   fires the due ones: every timer is delivered, in order, and the actor needs one seam timer;
//! * joining: until foca has a member, the actor announces itself to the seed nodes with
//!   exponential backoff, and again whenever foca goes idle (every peer down), since foca's own
//!   periodic announcements stop then;
//! * foca's configuration is `Config::new_lan(n)` for the current cluster size `n`, re-applied as
//!   the cluster grows or shrinks, with our packet bound;
//! * the member list (`/members/`) adds what foca does not keep: when each member was last heard
//!   from, whether a down member left gracefully, and reaping of long-dead members.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use foca::{Foca, Notification, OwnedNotification, PostcardCodec, Runtime, State, Timer};
use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};
use serde::Serialize;

use super::counters::NetCounters;
use super::envelope::{Rejected, PAYLOAD_BYTES_MAX};
use super::identity::{NodeIdentity, IDENTITY_BYTES_MAX};
use crate::seam::{Actor, Addr, Context, Reply, SendError};
use crate::storage::{StorageMsg, MEMBERS_REMEMBERED_MAX};
use crate::sync::conflict::Voter;
use crate::sync::{ConflictMsg, SyncMsg};

/// How often due protocol timers are fired: a fifth of the shortest, the probe round trip.
pub const TICK: Duration = Duration::from_millis(50);
const _: () = assert!(TICK.as_millis() * 5 <= PROBE_RTT.as_millis());
/// First pause between announcements to the seed nodes while joining.
pub const JOIN_DELAY_MIN: Duration = Duration::from_millis(500);
/// Longest pause between announcements while joining.
pub const JOIN_DELAY_MAX: Duration = Duration::from_secs(10);
/// Most addresses announced to in one joining round.
const ANNOUNCE_TARGETS_MAX: usize = 8;

/// Largest foca packet: the datagram payload less our kind byte.
pub const PACKET_BYTES_MAX: usize = PAYLOAD_BYTES_MAX - 1;
// A packet must hold the largest header (source, destination and a third identity in indirect
// probes, plus incarnation, message tag, probe number and the update tally) and one update.
const _: () = assert!(3 * IDENTITY_BYTES_MAX + 16 + (IDENTITY_BYTES_MAX + 4) <= PACKET_BYTES_MAX);

/// First byte of a membership payload: what follows.
const KIND_SWIM: u8 = 0;
const KIND_LEAVING: u8 = 1;
/// "You are suspected": a [`Suspected`] notice, sent straight to a member this node suspects
/// but hears from.
const KIND_SUSPECTED: u8 = 2;

/// A suspicion told to its subject, which refutes it (foca raises its incarnation and spreads
/// that it is alive).
///
/// SWIM relies on gossip to carry a suspicion to its subject. A node that formed suspicions
/// while it could hear nobody (cut off, or paused) spread them into the void, their
/// transmissions spent; once it hears the suspected member again, nobody ever tells that member,
/// and the suspicion's timer declares a healthy member dead. The simulator's accuracy check
/// found it: a node isolated for a second declared a healthy member dead two seconds after the
/// partition healed. So a node tells each member it suspects directly, every probe period while
/// the suspicion lasts (a dead one just does not answer), and at once when it hears from one
/// (the first packet after a cut leaves the least time to refute).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
struct Suspected {
    /// The member suspected (its exact identity: an older generation's suspicion is stale).
    id: NodeIdentity,
    /// The incarnation suspected.
    incarnation: foca::Incarnation,
}
// A notice fits a datagram: its kind byte, an identity and an incarnation (a u16 varint).
const _: () = assert!(1 + IDENTITY_BYTES_MAX + 3 <= PAYLOAD_BYTES_MAX);

type Swim = Foca<NodeIdentity, PostcardCodec, ChaCha12Rng, foca::NoCustomBroadcast>;

/// A datagram for the glue to seal and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The member's gossip address.
    pub to: SocketAddr,
    /// The membership payload (the envelope is added by the glue).
    pub payload: Vec<u8>,
}

/// A member's state as `/members/` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared dead unless it refutes in time.
    Suspect,
    /// Declared down by the cluster.
    Dead,
    /// Left gracefully (`POST /members/leave`, SIGTERM).
    Left,
}

impl MemberStatus {
    /// The status as the API and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Dead => "dead",
            MemberStatus::Left => "left",
        }
    }
}

/// A cluster member as `/members/` lists it: KVS's fields plus `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The node's unique id.
    pub id: String,
    /// `host:port` where peers and clients reach it.
    pub address: String,
    /// When this node last heard from it (ms since the epoch; 0 if never).
    pub last_seen: u64,
    /// When it first joined (ms since the epoch); the oldest member breaks conflict ties.
    pub joined_timestamp: u64,
    /// Alive, suspect, dead or left.
    pub status: MemberStatus,
}

/// What the membership actor is told.
pub enum MembershipMsg {
    /// An authenticated membership payload from `from`.
    Datagram {
        /// The sender's socket address.
        from: SocketAddr,
        /// The payload, envelope removed.
        payload: Vec<u8>,
    },
    /// Fire due timers and announcements.
    Tick,
    /// The member list, this node included.
    Members(Reply<Vec<Member>>),
    /// Leave the cluster gracefully; answered once the departure was sent.
    Leave(Reply<()>),
}

/// How a membership actor is set up.
pub struct MembershipSpec {
    /// This node's identity (generation already bumped for this boot).
    pub me: NodeIdentity,
    /// Gossip addresses to join through (this node's own is ignored).
    pub seeds: Vec<SocketAddr>,
    /// The members this node knew when it last ran (`Store::remembered_members`): joined
    /// through like seeds, so that a restarted node with no seed nodes (a cluster's founder)
    /// rejoins at once.
    pub remembered: Vec<SocketAddr>,
    /// How long a dead or departed member stays listed.
    pub reap_after: Duration,
}

/// What this node knows of a member beyond foca's state.
#[derive(Debug, Default)]
struct Seen {
    /// Wall-clock ms of the last datagram from it.
    last_seen_ms: u64,
    /// Monotonic time it went down, if it is down.
    down_since: Option<Duration>,
    /// The generation that announced its departure.
    left_generation: Option<u64>,
    /// When (monotonic) it was last told it is suspected ([`Suspected`]): on the tick, and on
    /// hearing from it.
    told_suspected: [Option<Duration>; 2],
}

/// foca's runtime: collects what a call produced, for the actor to carry out after it.
#[derive(Default)]
struct Effects {
    sends: Vec<(NodeIdentity, Vec<u8>)>,
    timers: Vec<(Timer<NodeIdentity>, Duration)>,
    notifications: Vec<OwnedNotification<NodeIdentity>>,
}

impl Runtime<NodeIdentity> for Effects {
    fn notify(&mut self, notification: Notification<'_, NodeIdentity>) {
        self.notifications.push(notification.to_owned());
    }
    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }
    fn submit_after(&mut self, event: Timer<NodeIdentity>, after: Duration) {
        self.timers.push((event, after));
    }
}

/// Joining: when to announce next, how long to wait after that, and since when.
#[derive(Debug, Clone, Copy)]
struct Join {
    at: Duration,
    delay: Duration,
    since: Duration,
}

impl Join {
    fn starting(now: Duration) -> Join {
        Join {
            at: now,
            delay: JOIN_DELAY_MIN,
            since: now,
        }
    }
}

/// After how long without an answer joining warns (then at every announcement, at most every
/// `JOIN_DELAY_MAX`).
pub const JOIN_WARN_AFTER: Duration = Duration::from_secs(5);

/// The membership actor.
pub struct MembershipActor {
    spec: MembershipSpec,
    out: Addr<Outgoing>,
    counters: Arc<NetCounters>,
    swim: Option<Swim>,
    effects: Effects,
    /// foca's pending timers by (deadline, sequence): fired in deadline order, ties in order set.
    timers: BTreeMap<(Duration, u64), Timer<NodeIdentity>>,
    timer_seq: u64,
    seen: BTreeMap<SocketAddr, Seen>,
    join: Option<Join>,
    cluster_size: u32,
    leaving: bool,
    /// The member whose packet foca is taking (from its `DataReceived`), while its effects are
    /// carried out: a member that declares itself down is leaving, whichever of its departure
    /// notice and its packet arrives first.
    sender: Option<NodeIdentity>,
    /// Who is told the live peers on every change (the sync actor), and what it was last told.
    peers_to: Option<(Addr<SyncMsg>, Vec<SocketAddr>)>,
    /// Who is told the live peers with their join times (the conflict actor), and what it was
    /// last told.
    voters_to: Option<(Addr<ConflictMsg>, Vec<Voter>)>,
    /// Who records the members to rejoin through after a restart and this node's generation
    /// (storage), what it was last told, and when to look for a change next (reaping changes
    /// the list without a notification).
    remember_in: Option<(Addr<StorageMsg>, Remembered, Duration)>,
}

/// What a restart rejoins with: the members to rejoin through, and the generation it must start
/// above.
type Remembered = (Vec<SocketAddr>, u64);

/// How often the remembered members are compared with the member list (a reaped member leaves
/// it without a notification).
pub const REMEMBER_EVERY: Duration = Duration::from_secs(1);

/// Whether `timer` may go to foca: anything but a suspicion's timer, and that only while the
/// suspicion stands (the member still listed under that identity at that incarnation).
///
/// foca 2.0.0's `ChangeSuspectToDown` checks that the member did not refute the suspicion
/// before declaring it down, but sends it `TurnUndead` ("you are down") either way
/// (`notify_down_members`, on in `new_lan`): `Members::apply_existing_if` answers `Some` even
/// when its condition fails. So every refuted suspicion made a healthy member rejoin under a
/// new generation when its timer ran out (the simulator's `dead_member` seed 1: two members
/// renewed 2 s after a cut healed, with no verdict on either). Dropping the stale timer here
/// leaves foca's own check as it was and sends nothing.
fn suspicion_stands(swim: &Swim, timer: &Timer<NodeIdentity>) -> bool {
    match timer {
        Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } => swim
            .iter_membership_state()
            .any(|m| m.id() == member_id && m.incarnation() == *incarnation),
        _ => true,
    }
}

/// Fewest times an update (a member up, suspected, down) is sent on. foca's LAN default,
/// 4 × log10(n + 1), is 1 or 2 below 5 members: a suspicion may then never reach the suspect
/// (which cannot refute it and is declared down while alive), and two members that joined through
/// a third may never hear of each other. The simulator's 4-node scenarios found both.
pub const TRANSMISSIONS_MIN: u8 = 6;

/// How often a member announces itself to one other and gets its whole member list back:
/// the membership's own anti-entropy, which repairs whatever dissemination missed. foca's LAN
/// default is 30 s; a LAN cluster affords far more often.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);

/// How long a member stays suspected before it is declared down, per decade of cluster size
/// (never less than one decade): foca's LAN default is 4 probe periods of 1 s (4 s up to 10
/// members), which with the failed probe itself put detection of a killed node near 6 s (cluster
/// bench). 2.5 s gives a suspect as long to refute a suspicion as to resume from a 2 s stall.
pub const SUSPICION_PER_DECADE: Duration = Duration::from_millis(2500);

/// How often a member probes another. foca's LAN default is 1 s: detection is the wait until some
/// member probes the dead one (up to a probe period, longer for a member that just joined, which
/// takes its turn at the end of a round), plus the probe period, plus the suspicion; with 1 s the
/// cluster bench measured dead-everywhere after 4.0 to 6.9 s. A loopback or LAN round trip is
/// well under a millisecond, and a missed probe costs only a refuted suspicion.
pub const PROBE_PERIOD: Duration = Duration::from_millis(500);
/// How long a probe waits for its answer before asking others to probe indirectly (foca's LAN
/// default is half the period too).
pub const PROBE_RTT: Duration = Duration::from_millis(250);

/// foca's LAN configuration for `size` members, with our packet bound, probe period, suspicion,
/// dissemination floor and announce period. Members are never forgotten by foca (a forgotten
/// member's late packet could resurrect it); the member list reaps them instead.
pub fn swim_config(size: u32) -> foca::Config {
    let mut config = foca::Config::new_lan(NonZeroU32::new(size.max(1)).expect("at least 1"));
    config.max_packet_size = NonZeroUsize::new(PACKET_BYTES_MAX).expect("positive");
    config.probe_period = PROBE_PERIOD;
    config.probe_rtt = PROBE_RTT;
    config.remove_down_after = None;
    config.suspect_to_down_after =
        SUSPICION_PER_DECADE.mul_f64(f64::max(1.0, f64::from(size.max(1)).log10()));
    config.max_transmissions = config
        .max_transmissions
        .max(std::num::NonZeroU8::new(TRANSMISSIONS_MIN).expect("positive"));
    if let Some(announce) = &mut config.periodic_announce {
        announce.frequency = ANNOUNCE_EVERY;
    }
    // Two sides of a healed partition that each declared the other dead probe nobody across it:
    // only an announce to a down member brings them back together (foca's LAN default: every
    // 65 s; `swarm` seed 424281470 stayed split 20 s after healing).
    if let Some(announce) = &mut config.periodic_announce_to_down_members {
        announce.frequency = ANNOUNCE_EVERY;
    }
    config
}

impl MembershipActor {
    /// A membership actor sending through `out` and counting drops in `counters`.
    pub fn new(spec: MembershipSpec, out: Addr<Outgoing>, counters: Arc<NetCounters>) -> Self {
        MembershipActor {
            spec,
            out,
            counters,
            swim: None,
            effects: Effects::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            seen: BTreeMap::new(),
            join: None,
            cluster_size: 1,
            leaving: false,
            sender: None,
            peers_to: None,
            voters_to: None,
            remember_in: None,
        }
    }

    /// Has `storage` record the members to rejoin through after a restart (every listed member
    /// but this node and those that left: alive, suspect, or dead and not reaped yet), and the
    /// generation this node runs under, which rises when it is declared down while alive: a
    /// restart must start above it.
    pub fn remember_in(mut self, storage: Addr<StorageMsg>) -> Self {
        let told = (self.spec.remembered.clone(), self.spec.me.generation);
        self.remember_in = Some((storage, told, Duration::ZERO));
        self
    }

    /// Sends the members and the generation to remember to storage if they changed.
    fn remember(&mut self, ctx: &mut dyn Context<MembershipMsg>) {
        if self.remember_in.is_none() || self.leaving {
            return;
        }
        let me = self.spec.me.addr;
        let mut members: Vec<SocketAddr> = self
            .members(ctx)
            .into_iter()
            .filter(|m| m.status != MemberStatus::Left)
            .filter_map(|m| m.address.parse().ok())
            .filter(|addr| *addr != me)
            .collect();
        members.truncate(MEMBERS_REMEMBERED_MAX);
        let now = (members, self.swim().identity().generation);
        let next = ctx.clock().monotonic() + REMEMBER_EVERY;
        let (storage, last, at) = self.remember_in.as_mut().expect("checked above");
        *at = next;
        // Remembered as told only once delivered: a full mailbox is tried again later.
        let msg = || StorageMsg::Members {
            members: now.0.clone(),
            generation: now.1,
        };
        if *last != now && storage.send(msg()).is_ok() {
            *last = now;
        }
    }

    /// Tells `sync` the live peers (alive or suspect, this node excluded) whenever they change.
    pub fn tell_peers(mut self, sync: Addr<SyncMsg>) -> Self {
        self.peers_to = Some((sync, Vec::new()));
        self
    }

    /// Tells `conflict` the live peers with their join times whenever they change: the voters on
    /// collisions.
    pub fn tell_voters(mut self, conflict: Addr<ConflictMsg>) -> Self {
        self.voters_to = Some((conflict, Vec::new()));
        self
    }

    /// Sends the live peers to whoever wants them, if they changed.
    fn publish_peers(&mut self) {
        let Some(swim) = self.swim.as_ref() else {
            return;
        };
        // One entry per address (a restarted member may linger under its previous generation).
        let joined: BTreeMap<SocketAddr, u64> = swim
            .iter_members()
            .map(|m| (m.id().addr, m.id().joined_ms))
            .collect();
        if let Some((conflict, last)) = &mut self.voters_to {
            let voters: Vec<Voter> = joined
                .iter()
                .map(|(&addr, &joined_ms)| Voter { addr, joined_ms })
                .collect();
            if *last != voters && conflict.send(ConflictMsg::Voters(voters.clone())).is_ok() {
                *last = voters;
            }
        }
        let peers: Vec<SocketAddr> = joined.into_keys().collect();
        if let Some((sync, last)) = &mut self.peers_to {
            // Remembered as told only once delivered: a full mailbox is tried again at the next
            // tick (`tick` calls this too).
            if *last != peers && sync.send(SyncMsg::Peers(peers.clone())).is_ok() {
                *last = peers;
            }
        }
    }

    fn swim(&mut self) -> &mut Swim {
        self.swim.as_mut().expect("foca is created in started")
    }

    /// Carries out what the last foca call produced.
    fn apply(&mut self, ctx: &mut dyn Context<MembershipMsg>) {
        let now = ctx.clock().monotonic();
        for (to, data) in std::mem::take(&mut self.effects.sends) {
            let mut payload = Vec::with_capacity(data.len() + 1);
            payload.push(KIND_SWIM);
            payload.extend_from_slice(&data);
            self.send(to.addr, payload);
        }
        for (timer, after) in std::mem::take(&mut self.effects.timers) {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        let notifications = std::mem::take(&mut self.effects.notifications);
        let membership_changed = notifications.iter().any(|n| {
            matches!(
                n,
                OwnedNotification::MemberUp(_)
                    | OwnedNotification::MemberDown(_)
                    | OwnedNotification::Rename(..)
                    | OwnedNotification::Idle
            )
        });
        let rejoined = notifications
            .iter()
            .any(|n| matches!(n, OwnedNotification::Rejoin(_)));
        for notification in notifications {
            self.notified(ctx, notification);
        }
        self.sender = None;
        if rejoined {
            self.forget_stale_suspicions(ctx);
        }
        if membership_changed {
            self.publish_peers();
            self.remember(ctx);
        }
    }

    /// After this node rejoined under a new generation, starts foca over from what it knows,
    /// suspects taken as alive (at the incarnation they had).
    ///
    /// foca keeps a suspicion until its timer declares the member down or the member refutes
    /// it. A change of identity discards every timer set before (foca trusts nothing found
    /// while declared down), but not the suspicions: one formed while this node was cut off
    /// stayed forever, since the member never heard of it (the update's transmissions were spent
    /// while nobody could hear them). Such a suspicion says more about this node than about the
    /// member; a member that really fails is suspected again by the next probe.
    fn forget_stale_suspicions(&mut self, ctx: &mut dyn Context<MembershipMsg>) {
        let swim = self.swim();
        let suspects = swim
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect)
            .count();
        if suspects == 0 {
            return;
        }
        let me = swim.identity().clone();
        let members: Vec<foca::Member<NodeIdentity>> = swim
            .iter_membership_state()
            .map(|m| {
                let state = match m.state() {
                    State::Suspect => State::Alive,
                    other => other,
                };
                foca::Member::new(m.id().clone(), m.incarnation(), state)
            })
            .collect();
        let mut fresh = Foca::new(
            me,
            swim_config(self.cluster_size),
            ChaCha12Rng::from_rng(ctx.rng()),
            PostcardCodec,
        );
        // The old instance's timers are meaningless to the new one.
        self.timers.clear();
        if let Err(e) = fresh.apply_many(members.into_iter(), false, &mut self.effects) {
            tracing::warn!(error = %e, "restarting SWIM after a rejoin");
        }
        // Nobody came up: every member was known already.
        self.effects
            .notifications
            .retain(|n| !matches!(n, OwnedNotification::MemberUp(_)));
        self.swim = Some(fresh);
        tracing::info!(
            suspects,
            "rejoined: dropped the suspicions formed while cut off"
        );
        self.apply(ctx);
    }

    /// Tells the members this node suspects so ([`Suspected`]): `only` (just heard from), or
    /// every one (on the tick), each at most once per probe period and trigger while the
    /// suspicion lasts.
    fn tell_suspects(&mut self, now: Duration, only: Option<&NodeIdentity>) {
        let trigger = usize::from(only.is_some());
        let suspects: Vec<(NodeIdentity, foca::Incarnation)> = self
            .swim()
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect && only.is_none_or(|id| m.id() == id))
            .map(|m| (m.id().clone(), m.incarnation()))
            .collect();
        for (id, incarnation) in suspects {
            let seen = self.seen.entry(id.addr).or_default();
            if seen.told_suspected[trigger].is_some_and(|at| now.saturating_sub(at) < PROBE_PERIOD)
            {
                continue;
            }
            seen.told_suspected[trigger] = Some(now);
            let mut notice = vec![KIND_SUSPECTED];
            let addr = id.addr;
            let suspected = Suspected { id, incarnation };
            notice.extend(postcard::to_allocvec(&suspected).expect("an identity encodes"));
            tracing::debug!(node_id = %suspected.id.node_id, incarnation, "told a member it is suspected");
            self.send(addr, notice);
        }
    }

    fn send(&self, to: SocketAddr, payload: Vec<u8>) {
        debug_assert!(payload.len() <= PAYLOAD_BYTES_MAX);
        match self.out.send(Outgoing { to, payload }) {
            Ok(()) | Err(SendError::Stopped) => {}
            Err(SendError::Full) => {
                if self.counters.drop_for("send_queue_full") {
                    tracing::warn!(%to, "the gossip send queue is full: dropped a datagram");
                }
            }
        }
    }

    fn notified(
        &mut self,
        ctx: &mut dyn Context<MembershipMsg>,
        notification: OwnedNotification<NodeIdentity>,
    ) {
        let now = ctx.clock().monotonic();
        match notification {
            OwnedNotification::DataReceived(header) => {
                self.sender = Some(header.src.clone());
                let wall = ctx.clock().wall_ms();
                self.seen.entry(header.src.addr).or_default().last_seen_ms = wall;
                // At once: the first packet after a cut is the suspect's chance to refute in time.
                self.tell_suspects(now, Some(&header.src));
            }
            OwnedNotification::MemberUp(id) => {
                tracing::info!(node_id = %id.node_id, addr = %id.addr, generation = id.generation, "member up");
                let seen = self.seen.entry(id.addr).or_default();
                seen.down_since = None;
                if seen.left_generation.is_some_and(|g| g < id.generation) {
                    seen.left_generation = None;
                }
                self.resize();
            }
            OwnedNotification::MemberDown(id) => {
                let seen = self.seen.entry(id.addr).or_default();
                seen.down_since = Some(now);
                if self.sender.as_ref() == Some(&id) {
                    seen.left_generation = Some(id.generation);
                }
                let left = seen.left_generation == Some(id.generation);
                tracing::info!(node_id = %id.node_id, addr = %id.addr, generation = id.generation, left, "member down");
                self.resize();
            }
            OwnedNotification::Rename(old, new) => {
                tracing::debug!(addr = %new.addr, old = old.generation, new = new.generation, "member renamed");
            }
            OwnedNotification::Idle => {
                if !self.leaving {
                    tracing::info!(
                        "no live peer left: announcing to known members and seed nodes until one answers"
                    );
                    self.join = Some(Join::starting(now));
                }
            }
            OwnedNotification::Active => match self.join.take() {
                Some(join) => tracing::info!(
                    after_ms = now.saturating_sub(join.since).as_millis() as u64,
                    "joined the cluster"
                ),
                None => tracing::debug!("a first peer joined"),
            },
            OwnedNotification::Rejoin(id) => {
                tracing::warn!(
                    generation = id.generation,
                    "declared down while alive: rejoined under a new generation"
                );
                // At once: a restart before the next look would start under this generation.
                self.remember(ctx);
            }
            OwnedNotification::Defunct => tracing::debug!("SWIM defunct"),
            OwnedNotification::DataSent(_) | OwnedNotification::ProbeFailed(..) => {}
        }
    }

    /// Re-applies foca's configuration for the current cluster size.
    fn resize(&mut self) {
        let size = u32::try_from(self.swim().num_members() + 1).unwrap_or(u32::MAX);
        if size != self.cluster_size {
            self.cluster_size = size;
            if let Err(e) = self.swim().set_config(swim_config(size)) {
                tracing::warn!(error = %e, size, "re-configuring SWIM");
            }
        }
    }

    fn tick(&mut self, ctx: &mut dyn Context<MembershipMsg>) {
        let now = ctx.clock().monotonic();
        // Fire due timers in deadline order, including those a fired timer sets (a zero delay).
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let swim = self.swim.as_mut().expect("foca is created in started");
            if !suspicion_stands(swim, &timer) {
                continue;
            }
            if let Err(e) = swim.handle_timer(timer, &mut self.effects) {
                tracing::debug!(error = %e, "SWIM timer");
            }
            self.apply(ctx);
        }
        if !self.leaving {
            self.tell_suspects(now, None);
        }
        if let Some(join) = self.join {
            if now >= join.at {
                let waited = now.saturating_sub(join.since);
                if waited >= JOIN_WARN_AFTER {
                    tracing::warn!(
                        seeds = ?self.spec.seeds,
                        waited_s = waited.as_secs(),
                        "no answer from any seed node or known member: are they running, and is \
                         this node's cluster_secret the same as theirs?"
                    );
                }
                self.announce(ctx);
                self.join = Some(Join {
                    at: now + join.delay,
                    delay: (join.delay * 2).min(JOIN_DELAY_MAX),
                    since: join.since,
                });
            }
        }
        self.publish_peers();
        if self
            .remember_in
            .as_ref()
            .is_some_and(|(_, _, at)| now >= *at)
        {
            self.remember(ctx);
        }
        ctx.schedule(TICK, MembershipMsg::Tick);
    }

    /// Announces this node to the seeds, the remembered members and the members it knows as
    /// down (a healed partition): to [`ANNOUNCE_TARGETS_MAX`] of them, drawn at random when
    /// there are more, so that a few dead addresses cannot keep it out forever.
    fn announce(&mut self, ctx: &mut dyn Context<MembershipMsg>) {
        let me = self.spec.me.addr;
        let mut targets: Vec<NodeIdentity> = self
            .spec
            .seeds
            .iter()
            .chain(&self.spec.remembered)
            .map(|addr| NodeIdentity::seed(*addr))
            .collect();
        targets.extend(
            self.swim()
                .iter_membership_state()
                .filter(|m| m.state() == State::Down)
                .map(|m| m.id().clone()),
        );
        let mut seen = std::collections::BTreeSet::from([me]);
        targets.retain(|t| seen.insert(t.addr));
        while targets.len() > ANNOUNCE_TARGETS_MAX {
            let drop = usize::try_from(ctx.rng().next_u64() % targets.len() as u64)
                .expect("an index fits usize");
            targets.swap_remove(drop);
        }
        for target in targets {
            let swim = self.swim.as_mut().expect("foca is created in started");
            if let Err(e) = swim.announce(target, &mut self.effects) {
                tracing::debug!(error = %e, "announce");
            }
        }
        self.apply(ctx);
    }

    fn received(&mut self, ctx: &mut dyn Context<MembershipMsg>, from: SocketAddr, payload: &[u8]) {
        match payload.split_first() {
            // A node that left stays out: foca would otherwise renew itself back in on hearing
            // that it is down.
            Some((&KIND_SWIM, _)) if self.leaving => {}
            Some((&KIND_SWIM, packet)) => {
                let swim = self.swim.as_mut().expect("foca is created in started");
                if let Err(e) = swim.handle_data(packet, &mut self.effects) {
                    if self.counters.reject(Rejected::Malformed) {
                        tracing::warn!(%from, error = %e, "dropped a gossip packet");
                    }
                }
                self.apply(ctx);
            }
            Some((&KIND_SUSPECTED, _)) if self.leaving => {}
            Some((&KIND_SUSPECTED, body)) => match postcard::from_bytes::<Suspected>(body) {
                Ok(notice) => {
                    let swim = self.swim.as_mut().expect("foca is created in started");
                    // Only from an active member (foca takes gossip only from those too), and
                    // only about this identity: a notice about an earlier generation is stale.
                    let member = swim
                        .iter_membership_state()
                        .any(|m| m.id().addr == from && m.state() != State::Down);
                    if member && &notice.id == swim.identity() {
                        let suspicion =
                            foca::Member::new(notice.id, notice.incarnation, State::Suspect);
                        if let Err(e) =
                            swim.apply_many(std::iter::once(suspicion), true, &mut self.effects)
                        {
                            tracing::warn!(%from, error = %e, "refuting a suspicion");
                        }
                        self.apply(ctx);
                    }
                }
                Err(_) => {
                    if self.counters.reject(Rejected::Malformed) {
                        tracing::warn!(%from, "dropped a malformed suspicion notice");
                    }
                }
            },
            Some((&KIND_LEAVING, body)) => match postcard::from_bytes::<NodeIdentity>(body) {
                Ok(id) => {
                    tracing::info!(node_id = %id.node_id, addr = %id.addr, "member is leaving");
                    self.seen.entry(id.addr).or_default().left_generation = Some(id.generation);
                }
                Err(_) => {
                    if self.counters.reject(Rejected::Malformed) {
                        tracing::warn!(%from, "dropped a malformed departure notice");
                    }
                }
            },
            _ => {
                if self.counters.reject(Rejected::Malformed) {
                    tracing::warn!(%from, "dropped a gossip payload of unknown kind");
                }
            }
        }
    }

    fn leave(&mut self, ctx: &mut dyn Context<MembershipMsg>) {
        if self.leaving {
            return;
        }
        // Last chance to store a generation raised while running (a send refused by a full
        // mailbox is retried only while not leaving): a restart must come above it.
        self.remember(ctx);
        self.leaving = true;
        self.join = None;
        let mut notice = vec![KIND_LEAVING];
        // The current identity: foca may have renewed the boot's after a false suspicion.
        let me = self.swim().identity().clone();
        notice.extend(postcard::to_allocvec(&me).expect("an identity serializes"));
        let peers: Vec<SocketAddr> = self.swim().iter_members().map(|m| m.id().addr).collect();
        if !peers.is_empty() {
            tracing::info!(members = peers.len(), "leaving the cluster");
        }
        for peer in peers {
            self.send(peer, notice.clone());
        }
        let swim = self.swim.as_mut().expect("foca is created in started");
        if let Err(e) = swim.leave_cluster(&mut self.effects) {
            tracing::warn!(error = %e, "leaving the cluster");
        }
        self.apply(ctx);
    }

    /// The member list: this node, then every member foca knows, minus those dead or departed
    /// for longer than `reap_after`, in address order.
    fn members(&mut self, ctx: &mut dyn Context<MembershipMsg>) -> Vec<Member> {
        let now = ctx.clock().monotonic();
        let me = &self.spec.me;
        let mut list = vec![Member {
            id: me.node_id.clone(),
            address: me.addr.to_string(),
            last_seen: ctx.clock().wall_ms(),
            joined_timestamp: me.joined_ms,
            status: if self.leaving {
                MemberStatus::Left
            } else {
                MemberStatus::Alive
            },
        }];
        let swim = self.swim.as_ref().expect("foca is created in started");
        let mut others: Vec<Member> = Vec::new();
        for member in swim.iter_membership_state() {
            let id = member.id();
            if member.state() == State::Down {
                // Learnt as already down (no MemberDown for it here): the reaping clock starts
                // when this node first sees it so.
                let seen = self.seen.entry(id.addr).or_default();
                seen.down_since.get_or_insert(now);
            }
            let seen = self.seen.get(&id.addr);
            let status = match member.state() {
                State::Alive => MemberStatus::Alive,
                State::Suspect => MemberStatus::Suspect,
                State::Down if seen.and_then(|s| s.left_generation) == Some(id.generation) => {
                    MemberStatus::Left
                }
                State::Down => MemberStatus::Dead,
            };
            let reaped = seen
                .and_then(|s| s.down_since)
                .is_some_and(|since| now.saturating_sub(since) >= self.spec.reap_after);
            if status >= MemberStatus::Dead && reaped {
                continue;
            }
            others.push(Member {
                id: id.node_id.clone(),
                address: id.addr.to_string(),
                last_seen: seen.map_or(0, |s| s.last_seen_ms),
                joined_timestamp: id.joined_ms,
                status,
            });
        }
        others.sort_by(|a, b| a.address.cmp(&b.address));
        list.extend(others);
        list
    }
}

impl Actor for MembershipActor {
    type Msg = MembershipMsg;
    const NAME: &'static str = "membership";
    const TIMERS_MAX: usize = 1;

    fn started(&mut self, ctx: &mut dyn Context<MembershipMsg>) {
        // foca owns its generator: a stream of its own, drawn from the actor's seeded one.
        let rng = ChaCha12Rng::from_rng(ctx.rng());
        self.swim = Some(Foca::new(
            self.spec.me.clone(),
            swim_config(1),
            rng,
            PostcardCodec,
        ));
        let me = self.spec.me.addr;
        if self.spec.seeds.iter().any(|s| *s != me) {
            self.join = Some(Join::starting(ctx.clock().monotonic()));
        }
        let remembered = self.spec.remembered.iter().filter(|s| **s != me).count();
        if remembered > 0 {
            tracing::info!(
                remembered,
                "rejoining through the members known before the restart"
            );
            self.join = Some(Join::starting(ctx.clock().monotonic()));
        }
        ctx.schedule(TICK, MembershipMsg::Tick);
    }

    fn handle(&mut self, ctx: &mut dyn Context<MembershipMsg>, msg: MembershipMsg) {
        match msg {
            MembershipMsg::Datagram { from, payload } => self.received(ctx, from, &payload),
            MembershipMsg::Tick => self.tick(ctx),
            MembershipMsg::Members(reply) => reply.send(self.members(ctx)),
            MembershipMsg::Leave(reply) => {
                self.leave(ctx);
                reply.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
