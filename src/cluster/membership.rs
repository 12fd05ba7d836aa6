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

/// How often due protocol timers are fired (foca's shortest, the probe round trip, is 500 ms).
pub const TICK: Duration = Duration::from_millis(50);
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
    /// Who is told the live peers on every change (the sync actor), and what it was last told.
    peers_to: Option<(Addr<SyncMsg>, Vec<SocketAddr>)>,
    /// Who is told the live peers with their join times (the conflict actor), and what it was
    /// last told.
    voters_to: Option<(Addr<ConflictMsg>, Vec<Voter>)>,
    /// Who records the members to rejoin through after a restart (storage), what it was last
    /// told, and when to look for a change next (reaping changes the list without a
    /// notification).
    remember_in: Option<(Addr<StorageMsg>, Vec<SocketAddr>, Duration)>,
}

/// How often the remembered members are compared with the member list (a reaped member leaves
/// it without a notification).
pub const REMEMBER_EVERY: Duration = Duration::from_secs(1);

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
/// (never less than one decade): foca's LAN default is 4 probe periods (4 s up to 10 members),
/// which with the failed probe itself put detection of a killed node near 6 s (cluster bench).
/// 2.5 s brings it under 5 s up to 10 members, and still gives a suspect 2.5 probe periods to
/// refute the suspicion.
pub const SUSPICION_PER_DECADE: Duration = Duration::from_millis(2500);

/// foca's LAN configuration for `size` members, with our packet bound, our dissemination floor
/// and announce period. Members are never forgotten by foca (a forgotten member's late packet
/// could resurrect it); the member list reaps them instead.
pub fn swim_config(size: u32) -> foca::Config {
    let mut config = foca::Config::new_lan(NonZeroU32::new(size.max(1)).expect("at least 1"));
    config.max_packet_size = NonZeroUsize::new(PACKET_BYTES_MAX).expect("positive");
    config.remove_down_after = None;
    config.suspect_to_down_after =
        SUSPICION_PER_DECADE.mul_f64(f64::max(1.0, f64::from(size.max(1)).log10()));
    config.max_transmissions = config
        .max_transmissions
        .max(std::num::NonZeroU8::new(TRANSMISSIONS_MIN).expect("positive"));
    if let Some(announce) = &mut config.periodic_announce {
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
            peers_to: None,
            voters_to: None,
            remember_in: None,
        }
    }

    /// Has `storage` record the members to rejoin through after a restart: every listed member
    /// but this node and those that left (alive, suspect, or dead and not reaped yet).
    pub fn remember_in(mut self, storage: Addr<StorageMsg>) -> Self {
        self.remember_in = Some((storage, self.spec.remembered.clone(), Duration::ZERO));
        self
    }

    /// Sends the members to remember to storage if they changed.
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
        let next = ctx.clock().monotonic() + REMEMBER_EVERY;
        let (storage, last, at) = self.remember_in.as_mut().expect("checked above");
        *at = next;
        // Remembered as told only once delivered: a full mailbox is tried again later.
        if *last != members && storage.send(StorageMsg::Members(members.clone())).is_ok() {
            *last = members;
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
                let wall = ctx.clock().wall_ms();
                self.seen.entry(header.src.addr).or_default().last_seen_ms = wall;
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
                let left = seen.left_generation == Some(id.generation);
                tracing::info!(node_id = %id.node_id, addr = %id.addr, left, "member down");
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
            if let Err(e) = swim.handle_timer(timer, &mut self.effects) {
                tracing::debug!(error = %e, "SWIM timer");
            }
            self.apply(ctx);
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
mod tests {
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
    struct Memory(Mutex<Option<Vec<SocketAddr>>>);

    impl Mailbox<StorageMsg> for Memory {
        fn deliver(&self, msg: StorageMsg) -> Result<(), SendError> {
            match msg {
                StorageMsg::Members(members) => *self.0.lock().unwrap() = Some(members),
                _ => panic!("membership only asks storage to remember members"),
            }
            Ok(())
        }
    }

    impl Memory {
        fn last(&self) -> Vec<SocketAddr> {
            self.0.lock().unwrap().clone().expect("told at least once")
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
            assert!(
                config.probe_period + config.probe_rtt + config.suspect_to_down_after
                    < Duration::from_secs(5),
                "{size}"
            );
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
        for i in 0..3 {
            let mut status = lan.statuses(i);
            status.sort();
            assert_eq!(
                status,
                all(MemberStatus::Alive, &["n0", "n1", "n2"]),
                "node {i}"
            );
        }
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
            for i in 0..4 {
                let mut status = lan.statuses(i);
                status.sort();
                assert_eq!(
                    status,
                    all(MemberStatus::Alive, &["n0", "n1", "n2", "n3"]),
                    "node {i}, cut off for {cut_ms} ms"
                );
            }
        }
    }

    fn sorted_statuses(lan: &mut Lan, i: usize) -> Vec<(String, MemberStatus)> {
        let mut status = lan.statuses(i);
        status.sort();
        status
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
        // Without what it remembered it would wait alone for a member to announce itself
        // (foca's announcements to down members come every 65 s).
        lan.boot_with(0, 2, Vec::new(), Vec::new());
        lan.run(Duration::from_secs(10));
        assert_eq!(lan.statuses(0), all(MemberStatus::Alive, &["n0"]));
        lan.boot_with(0, 3, Vec::new(), remembered);
        lan.run(Duration::from_secs(5));
        for i in 0..3 {
            assert_eq!(
                sorted_statuses(&mut lan, i),
                all(MemberStatus::Alive, &["n0", "n1", "n2"]),
                "node {i}"
            );
        }
    }

    #[test]
    fn members_are_remembered_until_they_leave_or_are_reaped() {
        let mut lan = Lan::new(4);
        lan.run(Duration::from_secs(5));
        assert_eq!(lan.nodes[0].memory.last(), vec![addr(1), addr(2), addr(3)]);
        let (reply, _answer) = reply_channel();
        let node = &mut lan.nodes[1];
        node.actor
            .handle(&mut node.ctx, MembershipMsg::Leave(reply));
        lan.nodes[3].up = false;
        lan.run(Duration::from_secs(10));
        // The one that left is forgotten at once, the dead one only once reaped.
        assert!(lan.statuses(0).contains(&("n3".into(), MemberStatus::Dead)));
        assert_eq!(lan.nodes[0].memory.last(), vec![addr(2), addr(3)]);
        lan.run(Duration::from_secs(61));
        assert_eq!(lan.nodes[0].memory.last(), vec![addr(2)]);
    }

    #[test]
    fn a_member_that_leaves_is_listed_as_left_then_reaped() {
        let mut lan = Lan::new(3);
        lan.run(Duration::from_secs(5));
        let (reply, mut answer) = reply_channel();
        let node = &mut lan.nodes[1];
        node.actor
            .handle(&mut node.ctx, MembershipMsg::Leave(reply));
        assert_eq!(answer.try_recv().unwrap(), Some(()));
        assert_eq!(lan.statuses(1)[0], ("n1".into(), MemberStatus::Left));
        lan.run(Duration::from_secs(2));
        lan.nodes[1].up = false;
        for i in [0, 2] {
            let status = lan.statuses(i);
            assert!(
                status.contains(&("n1".into(), MemberStatus::Left)),
                "node {i}: {status:?}"
            );
        }
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
        let (reply, _answer) = reply_channel();
        let node = &mut lan.nodes[1];
        node.actor
            .handle(&mut node.ctx, MembershipMsg::Leave(reply));
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
}
