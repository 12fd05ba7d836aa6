//! The conflict actor: KVS's vote on timestamp collisions.
//!
//! A collision is two versions of a key with the same timestamp and different uuids, neither
//! carrying a decision (two nodes wrote the key in the same millisecond, each before seeing the
//! other's write). Storage keeps its own version and reports the collision here
//! (`storage::Applied::Collision`). The actor then asks every live member which version it holds
//! (`SyncRequest::Versions`, one request per member for every collision waiting), counts each
//! member once, and decides by KVS's rules ([`decide`]): the version most members hold; on a tie
//! the one held by the oldest member (earliest `joined_timestamp`); still tied, the greater uuid.
//! It stores the winner with the decision attached (`storage::Resolution`: its votes and its
//! oldest holder's join time), pushes it to every peer, logs it and counts it by reason.
//!
//! **Why every node ends on one winner.** Two nodes may decide the same collision at the same
//! moment from different votes (a partition, a member changing its version between answers).
//! Their decisions are versions, and versions are totally ordered (`storage::Version`): at one
//! timestamp a decided version beats every undecided one, and of two decisions the one with more
//! votes, then the older holder, then the greater uuid wins. Every node keeps the greatest version
//! it has seen, and pushes and anti-entropy bring each node every decision, so all end on the
//! strongest. A candidate that turns up after a decision (from a node that was away) loses to it
//! without a new vote, as a decided version beats an undecided one.
//!
//! A vote that finds the collision moot does nothing: a newer timestamp superseded it, or some
//! member already holds a decision, which reaches this node through replication.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::cluster::frame::{SyncRequest, SyncResponse};
use crate::seam::{reply_channel, Actor, Addr, Context};
use crate::storage::{Collision, Record, Resolution, StorageMsg, StorageReader, Version, Write};

use super::repair::FETCH_KEYS_MAX;
use super::{PeerAnswer, PeerLink, SyncMsg};

/// How often waiting collisions are put to the vote and overdue votes closed.
pub const TICK: Duration = Duration::from_millis(50);
/// Most collisions being voted on at once; beyond, a collision waits (and past
/// [`WAITING_MAX`], is dropped: anti-entropy meets it again and reports it again).
pub const VOTES_MAX: usize = FETCH_KEYS_MAX;
/// Most collisions waiting for a vote.
pub const WAITING_MAX: usize = 4 * VOTES_MAX;
/// How long a vote waits for its answers: longer than the transport's own timeouts, so it only
/// matters if an answer was lost on its way to this actor. Members that did not answer by then
/// do not vote.
pub const VOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Decisions kept for `GET /conflicts/`, the newest.
pub const DECISIONS_KEPT: usize = 256;

/// A live member that votes, with its join time (the tie-breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voter {
    /// Its address.
    pub addr: SocketAddr,
    /// Its `joined_timestamp` (ms).
    pub joined_ms: u64,
}

/// Which rule decided a collision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// More members held the winner than any other candidate.
    Majority,
    /// Tied on votes; the winner's holders include the oldest member.
    OldestNode,
    /// Tied on votes and on the oldest holder's join time (members that joined in the same
    /// millisecond); the greater uuid.
    Uuid,
}

impl Reason {
    /// The reason as logs, `/metrics` and `/conflicts/` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Majority => "majority",
            Reason::OldestNode => "oldest_node",
            Reason::Uuid => "uuid",
        }
    }
}

/// One member's vote: which write it holds at the collision's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ballot {
    /// The member.
    pub voter: SocketAddr,
    /// Its join time.
    pub joined_ms: u64,
    /// The uuid of the version it holds.
    pub uuid: [u8; 16],
}

/// A decided collision, as `GET /conflicts/` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Key path.
    pub path: String,
    /// The winning version, decision attached.
    pub winner: Version,
    /// The rule that decided.
    pub reason: Reason,
    /// Every member's vote, one per member.
    pub ballots: Vec<Ballot>,
    /// When it was decided (ms since the epoch, this node's clock).
    pub decided_ms: u64,
}

/// The decisions a node made, newest last, shared with the HTTP handlers.
pub type DecisionLog = Arc<Mutex<VecDeque<Decision>>>;

/// KVS's rules over `ballots` (one per member): the winning uuid, its decision, and the rule that
/// decided; `None` without ballots.
pub fn decide(ballots: &[Ballot]) -> Option<([u8; 16], Resolution, Reason)> {
    let voters: BTreeSet<SocketAddr> = ballots.iter().map(|b| b.voter).collect();
    assert_eq!(voters.len(), ballots.len(), "one ballot per member");
    let mut candidates: BTreeMap<[u8; 16], Resolution> = BTreeMap::new();
    for ballot in ballots {
        let c = candidates.entry(ballot.uuid).or_insert(Resolution {
            votes: 0,
            oldest_joined_ms: u64::MAX,
        });
        c.votes += 1;
        c.oldest_joined_ms = c.oldest_joined_ms.min(ballot.joined_ms);
    }
    // Strongest first: votes, then the older holder (`Resolution`'s order), then the uuid.
    let mut ranked: Vec<([u8; 16], Resolution)> = candidates.into_iter().collect();
    ranked.sort_by_key(|&(uuid, resolution)| std::cmp::Reverse((resolution, uuid)));
    let (uuid, resolution) = *ranked.first()?;
    let reason = match ranked.get(1) {
        None => Reason::Majority,
        Some((_, second)) if second.votes < resolution.votes => Reason::Majority,
        Some((_, second)) if second.oldest_joined_ms > resolution.oldest_joined_ms => {
            Reason::OldestNode
        }
        Some(_) => Reason::Uuid,
    };
    Some((uuid, resolution, reason))
}

/// Labels of a decision count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `majority`, `oldest_node` or `uuid`.
    pub reason: &'static str,
}

/// Counters of the conflict actor, exported on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ConflictCounters {
    /// Collisions decided, by the rule that decided.
    pub decided: Family<ReasonLabel, Counter>,
    /// Votes that found the collision moot (superseded, or decided elsewhere).
    pub moot: Counter,
    /// Collisions dropped because too many were waiting.
    pub dropped: Counter,
}

impl ConflictCounters {
    /// Adds the counters to a node's registry.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        // Every reason listed from the start, at zero.
        for reason in [Reason::Majority, Reason::OldestNode, Reason::Uuid] {
            drop(self.decided.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            }));
        }
        registry.register(
            "conflicts_decided",
            "Timestamp collisions decided by vote, by the rule that decided",
            self.decided.clone(),
        );
        registry.register(
            "conflicts_moot",
            "Collision votes that found a newer write or a decision already made",
            self.moot.clone(),
        );
        registry.register(
            "conflicts_dropped",
            "Collisions dropped because too many were waiting for a vote",
            self.dropped.clone(),
        );
    }
}

/// What the conflict actor is told.
#[derive(Debug)]
pub enum ConflictMsg {
    /// Collisions storage met between two undecided versions.
    Collisions(Vec<Collision>),
    /// The live peers and their join times (from membership, on every change).
    Voters(Vec<Voter>),
    /// The answer to one of this actor's requests.
    Answer(PeerAnswer),
    /// Put waiting collisions to the vote; close overdue votes.
    Tick,
}

/// A vote in progress on one key.
struct Vote {
    timestamp_ms: u64,
    began: Duration,
    /// The members asked that have not answered.
    waiting: BTreeSet<SocketAddr>,
    /// The versions members answered with, and the join time each was asked with.
    answers: BTreeMap<SocketAddr, (u64, Option<Version>)>,
    /// Set once decided, while the winner's record is fetched from a holder.
    fetching: Option<Decided>,
}

/// A decision whose winning record is being fetched.
struct Decided {
    uuid: [u8; 16],
    resolution: Resolution,
    reason: Reason,
    ballots: Vec<Ballot>,
}

/// What one of this actor's requests was for.
enum Asked {
    /// The versions of these keys, from this peer.
    Versions(SocketAddr, Vec<String>),
    /// The winner's record of this key.
    Winner(String),
}

/// What a conflict actor works with: who this node is and the addresses it talks to.
pub struct ConflictSpec {
    /// This node's address (its ballot's voter).
    pub me: SocketAddr,
    /// This node's `joined_timestamp` (ms).
    pub joined_ms: u64,
    /// Where decisions are stored.
    pub storage: Addr<StorageMsg>,
    /// This node's versions (its own ballot, the winner's record when it holds it).
    pub reader: StorageReader,
    /// Who pushes decisions to the peers.
    pub sync: Addr<SyncMsg>,
    /// The way to the peers (votes, fetching a winner).
    pub link: PeerLink,
    /// Decisions by reason, on `/metrics`.
    pub counters: ConflictCounters,
    /// Decisions, for `/conflicts/`.
    pub decisions: DecisionLog,
}

/// The conflict actor.
pub struct ConflictActor {
    spec: ConflictSpec,
    voters: Vec<Voter>,
    /// Collisions waiting for a vote: key → timestamp.
    waiting: BTreeMap<String, u64>,
    votes: BTreeMap<String, Vote>,
    asked: BTreeMap<u64, Asked>,
    next_id: u64,
}

impl ConflictActor {
    /// A conflict actor working with `spec`.
    pub fn new(spec: ConflictSpec) -> Self {
        ConflictActor {
            spec,
            voters: Vec::new(),
            waiting: BTreeMap::new(),
            votes: BTreeMap::new(),
            asked: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Queues collisions for a vote. One met on a key whose vote is open waits for the next
    /// vote if it is newer (the open one then ends moot), and is that vote's otherwise.
    fn collided(&mut self, collisions: Vec<Collision>) {
        for Collision { path, timestamp_ms } in collisions {
            if self
                .votes
                .get(&path)
                .is_some_and(|v| v.timestamp_ms >= timestamp_ms)
            {
                continue;
            }
            if self.waiting.len() >= WAITING_MAX && !self.waiting.contains_key(&path) {
                self.spec.counters.dropped.inc();
                continue;
            }
            let ts = self.waiting.entry(path).or_insert(timestamp_ms);
            *ts = (*ts).max(timestamp_ms);
        }
    }

    /// Opens votes on waiting collisions: one `Versions` request per live peer for all of them.
    fn open_votes(&mut self, ctx: &mut dyn Context<ConflictMsg>) {
        let room = VOTES_MAX - self.votes.len();
        if room == 0 || self.waiting.is_empty() {
            return;
        }
        let now = ctx.clock().monotonic();
        // A key whose vote is still open waits for it to end.
        let ready: Vec<String> = self
            .waiting
            .keys()
            .filter(|path| !self.votes.contains_key(*path))
            .take(room)
            .cloned()
            .collect();
        if ready.is_empty() {
            return;
        }
        let mut keys = Vec::new();
        for path in ready {
            let timestamp_ms = self.waiting.remove(&path).expect("listed above");
            keys.push(path.clone());
            self.votes.insert(
                path,
                Vote {
                    timestamp_ms,
                    began: now,
                    waiting: BTreeSet::new(),
                    answers: BTreeMap::new(),
                    fetching: None,
                },
            );
        }
        assert!(
            keys.len() <= FETCH_KEYS_MAX,
            "a vote request fits one frame"
        );
        for voter in self.voters.clone() {
            self.next_id += 1;
            let id = self.next_id;
            let request = SyncRequest::Versions { keys: keys.clone() };
            if self.spec.link.send(voter.addr, id, request).is_err() {
                continue;
            }
            self.asked
                .insert(id, Asked::Versions(voter.addr, keys.clone()));
            for key in &keys {
                let vote = self.votes.get_mut(key).expect("opened above");
                vote.waiting.insert(voter.addr);
                vote.answers.insert(voter.addr, (voter.joined_ms, None));
            }
        }
        for key in keys {
            self.maybe_decide(ctx, &key);
        }
    }

    /// Takes the new live peer list. An open vote stops waiting for a member no longer on it
    /// (declared down, or gone): it would only answer when the transport gives up on it.
    fn set_voters(&mut self, ctx: &mut dyn Context<ConflictMsg>, voters: Vec<Voter>) {
        self.voters = voters;
        let live: BTreeSet<SocketAddr> = self.voters.iter().map(|v| v.addr).collect();
        let mut released = Vec::new();
        for (key, vote) in &mut self.votes {
            let before = vote.waiting.len();
            vote.waiting.retain(|addr| live.contains(addr));
            if vote.waiting.len() < before {
                released.push(key.clone());
            }
        }
        for key in released {
            self.maybe_decide(ctx, &key);
        }
    }

    fn answered(&mut self, ctx: &mut dyn Context<ConflictMsg>, answer: PeerAnswer) {
        let Some(asked) = self.asked.remove(&answer.id) else {
            return;
        };
        match asked {
            Asked::Versions(peer, keys) => {
                let versions = match answer.result {
                    Ok(SyncResponse::Versions(v)) if v.len() == keys.len() => v,
                    Ok(_) => vec![None; keys.len()],
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "a member did not answer a vote");
                        vec![None; keys.len()]
                    }
                };
                for (key, version) in keys.iter().zip(versions) {
                    let Some(vote) = self.votes.get_mut(key) else {
                        continue;
                    };
                    if vote.waiting.remove(&peer) {
                        if let Some(entry) = vote.answers.get_mut(&peer) {
                            entry.1 = version;
                        }
                    }
                    self.maybe_decide(ctx, key);
                }
            }
            Asked::Winner(path) => {
                let Some(vote) = self.votes.remove(&path) else {
                    return;
                };
                let Some(Decided {
                    uuid,
                    resolution,
                    reason,
                    ballots,
                }) = vote.fetching
                else {
                    return;
                };
                let record = match answer.result {
                    Ok(SyncResponse::Records(records)) => records
                        .into_iter()
                        .find(|(p, r)| {
                            *p == path
                                && r.version.same_write(&Version::new(vote.timestamp_ms, uuid))
                        })
                        .map(|(_, r)| r),
                    Ok(_) | Err(_) => None,
                };
                match record {
                    Some(record) => self.store(ctx, path, record, resolution, reason, ballots),
                    // Undecided here for now; the next meeting of the versions reports it again.
                    None => tracing::debug!(path, "could not fetch a collision's winner"),
                }
            }
        }
    }

    /// Decides the vote on `key` if every member answered.
    fn maybe_decide(&mut self, ctx: &mut dyn Context<ConflictMsg>, key: &str) {
        let vote = self.votes.get(key).expect("a vote in progress");
        if !vote.waiting.is_empty() || vote.fetching.is_some() {
            return;
        }
        self.decide_now(ctx, key);
    }

    /// Decides the vote on `key` with the answers it has.
    fn decide_now(&mut self, ctx: &mut dyn Context<ConflictMsg>, key: &str) {
        let mine = match self.spec.reader.get(key) {
            Ok(mine) => mine,
            Err(e) => {
                tracing::warn!(key, error = %e, "conflict vote: reading this node's version");
                self.votes.remove(key);
                return;
            }
        };
        let vote = self.votes.get_mut(key).expect("a vote in progress");
        let ts = vote.timestamp_ms;
        let mut held: Vec<(SocketAddr, u64, Version)> = vote
            .answers
            .iter()
            .filter_map(|(addr, (joined, v))| v.map(|v| (*addr, *joined, v)))
            .collect();
        if let Some(mine) = &mine {
            held.push((self.spec.me, self.spec.joined_ms, mine.version));
        }
        // Moot: a newer write superseded the collision, or a member holds a decision already.
        if held.iter().any(|(_, _, v)| {
            v.timestamp_ms > ts || (v.timestamp_ms == ts && v.resolution.is_some())
        }) {
            self.spec.counters.moot.inc();
            self.votes.remove(key);
            return;
        }
        let ballots: Vec<Ballot> = held
            .iter()
            .filter(|(_, _, v)| v.timestamp_ms == ts)
            .map(|&(voter, joined_ms, v)| Ballot {
                voter,
                joined_ms,
                uuid: v.uuid,
            })
            .collect();
        let Some((uuid, resolution, reason)) = decide(&ballots) else {
            self.votes.remove(key);
            return;
        };
        match mine {
            Some(record) if record.version.same_write(&Version::new(ts, uuid)) => {
                self.votes.remove(key);
                self.store(ctx, key.to_owned(), record, resolution, reason, ballots);
            }
            _ => {
                // The winner is held elsewhere: fetch it from one of its holders.
                let holder = ballots
                    .iter()
                    .find(|b| b.uuid == uuid)
                    .expect("the winner has a ballot")
                    .voter;
                self.next_id += 1;
                let id = self.next_id;
                let request = SyncRequest::Fetch {
                    keys: vec![key.to_owned()],
                };
                if self.spec.link.send(holder, id, request).is_err() {
                    self.votes.remove(key);
                    return;
                }
                self.asked.insert(id, Asked::Winner(key.to_owned()));
                let vote = self.votes.get_mut(key).expect("a vote in progress");
                vote.fetching = Some(Decided {
                    uuid,
                    resolution,
                    reason,
                    ballots,
                });
            }
        }
    }

    /// Stores the winner with its decision, pushes it to the peers, and records the decision.
    fn store(
        &mut self,
        ctx: &mut dyn Context<ConflictMsg>,
        path: String,
        winner: Record,
        resolution: Resolution,
        reason: Reason,
        ballots: Vec<Ballot>,
    ) {
        let mut record = winner;
        record.version.resolution = Some(resolution);
        tracing::info!(
            path,
            timestamp_ms = record.version.timestamp_ms,
            winner = record.version.uuid_string(),
            votes = resolution.votes,
            oldest_joined_ms = resolution.oldest_joined_ms,
            candidates = ballots
                .iter()
                .map(|b| b.uuid)
                .collect::<BTreeSet<_>>()
                .len(),
            reason = reason.as_str(),
            "conflict decided"
        );
        self.spec
            .counters
            .decided
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
        {
            let mut log = self
                .spec
                .decisions
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if log.len() == DECISIONS_KEPT {
                log.pop_front();
            }
            log.push_back(Decision {
                path: path.clone(),
                winner: record.version,
                reason,
                ballots,
                decided_ms: ctx.clock().wall_ms(),
            });
        }
        // Nobody waits for storage's answer: a decision that lost meanwhile to a newer version
        // or a stronger decision is simply not kept, here or at the peers.
        let (reply, _) = reply_channel();
        let write = Write::Apply {
            path: path.clone(),
            record: record.clone(),
            reply,
        };
        if self.spec.storage.send(StorageMsg::Write(write)).is_err() {
            tracing::debug!(
                path,
                "storage busy: the decision is left to the next meeting"
            );
            return;
        }
        if self
            .spec
            .sync
            .send(SyncMsg::Committed(vec![(path, record)]))
            .is_err()
        {
            tracing::debug!("replication queue full: the decision is left to anti-entropy");
        }
    }

    fn tick(&mut self, ctx: &mut dyn Context<ConflictMsg>) {
        let now = ctx.clock().monotonic();
        let overdue: Vec<String> = self
            .votes
            .iter()
            .filter(|(_, v)| now.saturating_sub(v.began) >= VOTE_TIMEOUT)
            .map(|(k, _)| k.clone())
            .collect();
        for key in overdue {
            let vote = self.votes.get_mut(&key).expect("listed above");
            if vote.fetching.is_some() {
                // The winner's holder never answered: give up; the collision comes back.
                self.votes.remove(&key);
                continue;
            }
            vote.waiting.clear();
            vote.began = now;
            self.decide_now(ctx, &key);
        }
        self.asked.retain(|_, asked| match asked {
            Asked::Versions(_, keys) => keys.iter().any(|k| self.votes.contains_key(k)),
            Asked::Winner(k) => self.votes.contains_key(k),
        });
        self.open_votes(ctx);
    }
}

impl Actor for ConflictActor {
    type Msg = ConflictMsg;
    const NAME: &'static str = "conflict";
    const TIMERS_MAX: usize = 1;

    fn started(&mut self, ctx: &mut dyn Context<ConflictMsg>) {
        ctx.schedule(TICK, ConflictMsg::Tick);
    }

    fn handle(&mut self, ctx: &mut dyn Context<ConflictMsg>, msg: ConflictMsg) {
        match msg {
            ConflictMsg::Collisions(collisions) => self.collided(collisions),
            ConflictMsg::Voters(voters) => self.set_voters(ctx, voters),
            ConflictMsg::Answer(answer) => self.answered(ctx, answer),
            ConflictMsg::Tick => {
                self.tick(ctx);
                ctx.schedule(TICK, ConflictMsg::Tick);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::backends::InMemoryBackend;

    use super::*;
    use crate::seam::testing::{collector, Collector, TestContext};
    use crate::storage::testing::handle_settled;
    use crate::storage::{Applied, StorageActor, Store};
    use crate::sync::PeerRequest;

    const T: u64 = 1_700_000_000_000;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 8080))
    }

    fn ballot(i: u8, joined_ms: u64, uuid: u8) -> Ballot {
        Ballot {
            voter: addr(i),
            joined_ms,
            uuid: [uuid; 16],
        }
    }

    #[test]
    fn the_version_most_members_hold_wins_then_the_oldest_holder_then_the_greater_uuid() {
        // Majority, even against the oldest member and the greater uuid.
        let (uuid, resolution, reason) =
            decide(&[ballot(1, 10, 9), ballot(2, 20, 1), ballot(3, 30, 1)]).unwrap();
        assert_eq!((uuid, reason), ([1; 16], Reason::Majority));
        assert_eq!(
            resolution,
            Resolution {
                votes: 2,
                oldest_joined_ms: 20
            }
        );
        // Tied votes: the version the oldest member holds, even with the smaller uuid.
        let (uuid, resolution, reason) = decide(&[
            ballot(1, 30, 9),
            ballot(2, 10, 1),
            ballot(3, 40, 9),
            ballot(4, 20, 1),
        ])
        .unwrap();
        assert_eq!((uuid, reason), ([1; 16], Reason::OldestNode));
        assert_eq!(resolution.oldest_joined_ms, 10);
        // Tied on both (members joined in the same millisecond): the greater uuid.
        let (uuid, _, reason) = decide(&[ballot(1, 10, 3), ballot(2, 10, 7)]).unwrap();
        assert_eq!((uuid, reason), ([7; 16], Reason::Uuid));
        assert_eq!(decide(&[]), None);
    }

    #[test]
    #[should_panic(expected = "one ballot per member")]
    fn a_member_never_votes_twice() {
        decide(&[ballot(1, 10, 3), ballot(1, 10, 3), ballot(2, 5, 7)]);
    }

    struct Fixture {
        actor: ConflictActor,
        ctx: TestContext<ConflictMsg>,
        store: Store,
        storage: Arc<Collector<StorageMsg>>,
        sync: Arc<Collector<SyncMsg>>,
        requests: Arc<Collector<PeerRequest>>,
        decisions: DecisionLog,
        counters: ConflictCounters,
    }

    fn record(ts: u64, uuid: u8, data: &str) -> Record {
        Record {
            version: Version::new(ts, [uuid; 16]),
            origin: format!("writer-{uuid}"),
            data: Some(data.as_bytes().to_vec()),
        }
    }

    /// This node (addr 1, joined at 100) holds `k` at (T, uuid 1); peers 2 (joined 50) and 3
    /// (joined 200) vote.
    fn fixture() -> Fixture {
        let (store, wal) = Store::open(InMemoryBackend::new(), InMemoryBackend::new(), T).unwrap();
        let mut writer = StorageActor::new(store.clone(), wal, "n1");
        let mut wctx = TestContext::new(T, 1);
        let (reply, _) = reply_channel();
        let write = Write::Apply {
            path: "k".into(),
            record: record(T, 1, "1"),
            reply,
        };
        handle_settled(&mut writer, &mut wctx, StorageMsg::Write(write));
        let (storage, storage_addr) = collector();
        let (sync, sync_addr) = collector();
        let (requests, requests_addr) = collector();
        let (_, answers) = collector();
        let decisions = DecisionLog::default();
        let counters = ConflictCounters::default();
        let mut actor = ConflictActor::new(ConflictSpec {
            me: addr(1),
            joined_ms: 100,
            storage: storage_addr,
            reader: store.reader(),
            sync: sync_addr,
            link: PeerLink {
                requests: requests_addr,
                answers,
            },
            counters: counters.clone(),
            decisions: Arc::clone(&decisions),
        });
        let mut ctx = TestContext::new(T, 2);
        actor.started(&mut ctx);
        actor.handle(
            &mut ctx,
            ConflictMsg::Voters(vec![
                Voter {
                    addr: addr(2),
                    joined_ms: 50,
                },
                Voter {
                    addr: addr(3),
                    joined_ms: 200,
                },
            ]),
        );
        Fixture {
            actor,
            ctx,
            store,
            storage,
            sync,
            requests,
            decisions,
            counters,
        }
    }

    impl Fixture {
        fn handle(&mut self, msg: ConflictMsg) {
            self.actor.handle(&mut self.ctx, msg);
        }

        /// Reports a collision on `k` and lets the tick open the vote: the requests sent.
        fn collide(&mut self) -> Vec<PeerRequest> {
            self.handle(ConflictMsg::Collisions(vec![Collision {
                path: "k".into(),
                timestamp_ms: T,
            }]));
            assert!(self.requests.take().is_empty(), "votes open on the tick");
            self.ctx.clock.advance(TICK);
            self.handle(ConflictMsg::Tick);
            self.requests.take()
        }

        fn answer(&mut self, request: &PeerRequest, result: Result<SyncResponse, TransportError>) {
            self.handle(ConflictMsg::Answer(PeerAnswer {
                id: request.id,
                result,
            }));
        }

        /// The record the actor had storage apply, if any.
        fn stored(&self) -> Option<Record> {
            let mut applied = self.storage.take().into_iter().map(|msg| match msg {
                StorageMsg::Write(Write::Apply { record, .. }) => record,
                other => panic!("only applies, not {other:?}"),
            });
            let first = applied.next();
            assert!(applied.next().is_none(), "one decision");
            first
        }
    }

    use crate::sync::TransportError;

    #[test]
    fn a_collision_goes_to_a_vote_and_the_majority_is_stored_and_pushed() {
        let mut f = fixture();
        let asked = f.collide();
        assert_eq!(
            asked.iter().map(|r| r.to).collect::<Vec<_>>(),
            [addr(2), addr(3)]
        );
        for r in &asked {
            assert_eq!(
                r.request,
                SyncRequest::Versions {
                    keys: vec!["k".into()]
                }
            );
        }
        // Peer 2 (the oldest) holds the other write; peer 3 holds ours: 2 votes to 1.
        f.answer(
            &asked[0],
            Ok(SyncResponse::Versions(vec![Some(Version::new(T, [2; 16]))])),
        );
        assert_eq!(f.stored(), None, "waits for every member");
        f.answer(
            &asked[1],
            Ok(SyncResponse::Versions(vec![Some(Version::new(T, [1; 16]))])),
        );
        let stored = f.stored().expect("decided");
        let resolution = Resolution {
            votes: 2,
            oldest_joined_ms: 100,
        };
        assert_eq!(stored.version.resolution, Some(resolution));
        assert!(stored.version.same_write(&Version::new(T, [1; 16])));
        assert_eq!(stored.data.as_deref(), Some(&b"1"[..]));
        let pushed: Vec<_> = f
            .sync
            .take()
            .into_iter()
            .map(|msg| match msg {
                SyncMsg::Committed(records) => records,
                _ => panic!("only pushes"),
            })
            .collect();
        assert_eq!(pushed, [vec![("k".to_string(), stored.clone())]]);
        let log = f.decisions.lock().unwrap().clone();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].reason, Reason::Majority);
        assert_eq!(
            log[0].ballots.len(),
            3,
            "one ballot per member, this node's too"
        );
        let majority = ReasonLabel { reason: "majority" };
        assert_eq!(f.counters.decided.get_or_create(&majority).get(), 1);
        // What storage then does with it: the same write, now decided, replaces the undecided.
        let ours = f.store.reader().get("k").unwrap().unwrap();
        assert_eq!(
            crate::storage::applying(&ours.version, &stored.version),
            Applied::Stored
        );
    }

    #[test]
    fn a_tie_goes_to_the_oldest_members_version_fetched_from_it() {
        let mut f = fixture();
        let asked = f.collide();
        // Peer 2 (joined 50, older than this node) holds the other write; peer 3 never answers.
        f.answer(
            &asked[0],
            Ok(SyncResponse::Versions(vec![Some(Version::new(T, [2; 16]))])),
        );
        f.answer(&asked[1], Err(TransportError::Timeout));
        let fetch = f.requests.take();
        assert_eq!(fetch.len(), 1);
        assert_eq!(fetch[0].to, addr(2));
        assert_eq!(
            fetch[0].request,
            SyncRequest::Fetch {
                keys: vec!["k".into()]
            }
        );
        assert_eq!(f.stored(), None);
        f.answer(
            &fetch[0],
            Ok(SyncResponse::Records(vec![("k".into(), record(T, 2, "2"))])),
        );
        let stored = f.stored().expect("decided");
        assert_eq!(stored.data.as_deref(), Some(&b"2"[..]));
        assert_eq!(stored.origin, "writer-2");
        assert_eq!(
            stored.version.resolution,
            Some(Resolution {
                votes: 1,
                oldest_joined_ms: 50
            })
        );
        assert_eq!(f.decisions.lock().unwrap()[0].reason, Reason::OldestNode);
    }

    #[test]
    fn a_vote_that_finds_a_newer_write_or_a_decision_decides_nothing() {
        for peer_holds in [
            Version::new(T + 1, [2; 16]),
            Version {
                resolution: Some(Resolution {
                    votes: 1,
                    oldest_joined_ms: 50,
                }),
                ..Version::new(T, [2; 16])
            },
        ] {
            let mut f = fixture();
            let asked = f.collide();
            f.answer(
                &asked[0],
                Ok(SyncResponse::Versions(vec![Some(peer_holds)])),
            );
            f.answer(&asked[1], Ok(SyncResponse::Versions(vec![None])));
            assert_eq!(f.stored(), None);
            assert!(f.requests.take().is_empty());
            assert_eq!(f.counters.moot.get(), 1);
        }
    }

    #[test]
    fn a_member_declared_down_no_longer_holds_a_vote_up() {
        let mut f = fixture();
        let asked = f.collide();
        // Peer 3 holds our write; peer 2 is unreachable, then declared down.
        f.answer(
            &asked[1],
            Ok(SyncResponse::Versions(vec![Some(Version::new(T, [1; 16]))])),
        );
        assert_eq!(f.stored(), None, "waits for peer 2");
        f.handle(ConflictMsg::Voters(vec![Voter {
            addr: addr(3),
            joined_ms: 200,
        }]));
        let stored = f.stored().expect("decided without peer 2");
        assert_eq!(stored.version.resolution.map(|r| r.votes), Some(2));
        // Its late answer changes nothing.
        f.answer(
            &asked[0],
            Ok(SyncResponse::Versions(vec![Some(Version::new(T, [2; 16]))])),
        );
        assert_eq!(f.stored(), None);
    }

    #[test]
    fn a_newer_collision_met_during_a_vote_on_its_key_is_voted_on_next() {
        let mut f = fixture();
        let asked = f.collide();
        // Meanwhile storage meets a newer collision on k, and again the one being voted on.
        f.handle(ConflictMsg::Collisions(vec![
            Collision {
                path: "k".into(),
                timestamp_ms: T + 5,
            },
            Collision {
                path: "k".into(),
                timestamp_ms: T,
            },
        ]));
        f.ctx.clock.advance(TICK);
        f.handle(ConflictMsg::Tick);
        assert!(f.requests.take().is_empty(), "one vote per key at a time");
        // The open vote ends moot (a peer holds the newer write)...
        f.answer(
            &asked[0],
            Ok(SyncResponse::Versions(vec![Some(Version::new(
                T + 5,
                [2; 16],
            ))])),
        );
        f.answer(&asked[1], Ok(SyncResponse::Versions(vec![None])));
        assert_eq!(f.counters.moot.get(), 1);
        // ...and the next tick puts the newer collision to the vote.
        f.ctx.clock.advance(TICK);
        f.handle(ConflictMsg::Tick);
        let next = f.requests.take();
        assert_eq!(next.len(), 2, "{next:?}");
        assert!(next.iter().all(|r| r.request
            == SyncRequest::Versions {
                keys: vec!["k".into()]
            }));
        let vote = f
            .actor
            .votes
            .get("k")
            .expect("a vote on the newer collision");
        assert_eq!(vote.timestamp_ms, T + 5);
    }

    #[test]
    fn members_that_never_answer_do_not_hold_a_vote_up_forever() {
        let mut f = fixture();
        let asked = f.collide();
        assert_eq!(asked.len(), 2);
        // Both answers lost on their way (a full mailbox): the vote closes at its timeout with
        // this node's ballot alone.
        for _ in 0..(VOTE_TIMEOUT.as_millis() / TICK.as_millis()) {
            f.ctx.clock.advance(TICK);
            f.handle(ConflictMsg::Tick);
        }
        let stored = f.stored().expect("decided alone");
        assert_eq!(stored.version.resolution.map(|r| r.votes), Some(1));
    }
}
