//! The sync actor: replication of this node's writes to its peers, and the receiving end of
//! theirs.
//!
//! * **Push.** Storage tells it of every local write once durable ([`SyncMsg::Committed`]); it
//!   sends the records at once to every live peer (membership keeps it told of them,
//!   [`SyncMsg::Peers`]), in pushes of at most `PUSH_BYTES_MAX`. A push that fails (no answer
//!   within the transport's timeout, a refused connection, a busy peer) is sent again with
//!   exponential backoff, [`PUSH_ATTEMPTS`] times; what still fails is left to anti-entropy.
//!   At most [`OUTSTANDING_PER_PEER_MAX`] pushes wait per peer (so one dead or slow peer never
//!   holds up the others); beyond, new ones are dropped and counted. A peer that leaves the live
//!   list has its waiting pushes dropped: anti-entropy repairs it when it comes back.
//! * **Receive.** A peer's push is validated record by record (key path, origin, value size;
//!   what fails is dropped and counted) and handed to storage, which keeps each record only if it
//!   wins (`storage::Applied`). The push is answered once the records are queued for storage,
//!   `Busy` if storage's mailbox is full.
//!
//! The actor never knows how frames travel: it sends [`PeerRequest`]s to an address the host
//! glue (`host::frames`) serves, and gets [`SyncMsg::Request`]s and [`SyncMsg::Answer`]s back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use rand_core::Rng;

use crate::api::{KeyPath, Mode, SharedMode};
use crate::cluster::frame::{SyncRequest, SyncResponse, PUSH_BYTES_MAX};
use crate::limits::{NODE_ID_BYTES_MAX, VALUE_BYTES_MAX};
use crate::seam::{reply_channel, Actor, Addr, Context, Reply, SendError};
use crate::storage::{Horizon, HorizonChange, Record, StorageMsg, StorageReader, Version, Write};

use super::repair::{self, FETCH_KEYS_MAX, SEGMENTS_PER_ROUND_MAX};

/// How often due retries are sent.
pub const TICK: Duration = Duration::from_millis(100);
/// Attempts per push before it is left to anti-entropy.
pub const PUSH_ATTEMPTS: u32 = 8;
/// First retry delay; doubles per attempt (0.2 s, 0.4 s ... 25.6 s: about 51 s in all).
pub const RETRY_DELAY_MIN: Duration = Duration::from_millis(200);
/// How long a push may wait for its answer before it counts as failed: longer than the
/// transport's own timeouts, so it only matters if an answer was lost on its way to this actor.
pub const IN_FLIGHT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most pushes waiting for an answer or a retry, per peer.
pub const OUTSTANDING_PER_PEER_MAX: usize = 64;
/// How far ahead of this node's clock a peer's record may be stamped: beyond, the record is
/// refused as skewed (a clock gone wrong, or a record stamped near the end of time that would
/// leave no room for later versions).
pub const SKEW_MAX_MS: u64 = 10 * 60 * 1000;

/// How long a tombstone is kept by default (`tombstone_grace_hours`: 7 days): a node away for
/// longer may have missed a delete whose tombstone is gone (README, "Deletes").
pub const TOMBSTONE_GRACE_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Far longer than any accepted clock skew: a tombstone is never purged while a peer whose clock
/// runs behind could still be writing older versions.
const _: () = assert!(TOMBSTONE_GRACE_DEFAULT.as_millis() > 10 * SKEW_MAX_MS as u128);

/// A request for the host glue to deliver to a peer; the answer comes back to `answer_to` with
/// the same id.
#[derive(Debug, Clone)]
pub struct PeerRequest {
    /// The peer (its gossip and HTTP address; frames go to the same port over TCP).
    pub to: SocketAddr,
    /// Correlation id, unique per requesting actor.
    pub id: u64,
    /// What to ask.
    pub request: SyncRequest,
    /// Where the answer goes: the requesting actor.
    pub answer_to: Addr<PeerAnswer>,
}

/// The answer to a [`PeerRequest`], or why there is none.
#[derive(Debug)]
pub struct PeerAnswer {
    /// The request's id.
    pub id: u64,
    /// The peer's answer, or the transport's failure.
    pub result: Result<SyncResponse, TransportError>,
}

/// An actor's way to its peers: requests go to the host glue's queue, answers come back to the
/// actor. Loss, reordering and duplication never reach the actor as such: every request gets
/// exactly one answer or one [`TransportError`] (a timeout at worst), unless the actor's own
/// mailbox is full, which the actor covers with its own timeout.
#[derive(Debug, Clone)]
pub struct PeerLink {
    /// The host glue's queue (`host::frames`).
    pub requests: Addr<PeerRequest>,
    /// Where the answers go.
    pub answers: Addr<PeerAnswer>,
}

impl PeerLink {
    /// Asks `to` `request`, to be answered with `id`.
    pub fn send(&self, to: SocketAddr, id: u64, request: SyncRequest) -> Result<(), SendError> {
        self.requests.send(PeerRequest {
            to,
            id,
            request,
            answer_to: self.answers.clone(),
        })
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection, or it broke.
    #[error("connection: {0}")]
    Connection(String),
    /// The peer's answer failed its checks (MAC, encoding, correlation id).
    #[error("answer refused: {0}")]
    Refused(&'static str),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The transport's queue for that peer is full.
    #[error("queue full")]
    QueueFull,
}

/// What the sync actor is told.
pub enum SyncMsg {
    /// The live peers, this node excluded (from membership, on every change).
    Peers(Vec<SocketAddr>),
    /// Local writes that just became durable, to replicate.
    Committed(Vec<(String, Record)>),
    /// A peer's request, to answer through `reply`.
    Request {
        /// Where it came from.
        from: SocketAddr,
        /// What it asks.
        request: SyncRequest,
        /// The answer.
        reply: Reply<SyncResponse>,
    },
    /// The answer to one of this actor's requests.
    Answer(PeerAnswer),
    /// Send due retries, start rounds, ask for bootstrap pages.
    Tick,
    /// A round's or a bootstrap's pause is over: send its next request.
    Resume,
}

/// How a peer's records arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Pushed by their writer: replication.
    Push,
    /// Fetched by an anti-entropy round.
    AntiEntropy,
    /// Fetched as a bootstrap page.
    Bootstrap,
}

/// `Resume` timers pending at most: one for the round, one for the bootstrap.
const RESUMES_MAX: usize = 2;

/// The replication lag histogram: 1 ms to 32 s in powers of two.
#[derive(Debug, Clone)]
pub struct LagHistogram(pub Histogram);

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram(Histogram::new(exponential_buckets(0.001, 2.0, 16)))
    }
}

impl LagHistogram {
    /// Adds one arrival, `seconds` after its stamp.
    pub fn observe(&self, seconds: f64) {
        self.0.observe(seconds);
    }
}

/// Counters of the sync actor, exported on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct SyncCounters {
    /// Records pushed to peers (each copy counted).
    pub pushed_records: Counter,
    /// Pushes given up after every attempt (left to anti-entropy).
    pub pushes_abandoned: Counter,
    /// Pushes dropped because too many were outstanding.
    pub pushes_dropped: Counter,
    /// Records received from peers and handed to storage.
    pub received_records: Counter,
    /// Records received that failed validation.
    pub malformed_records: Counter,
    /// Records received stamped too far ahead of this node's clock.
    pub skewed_records: Counter,
    /// Anti-entropy rounds begun.
    pub rounds: Counter,
    /// Anti-entropy rounds that found the peer in agreement at the root.
    pub rounds_in_agreement: Counter,
    /// Anti-entropy rounds that found differences to repair (each followed by a catch-up round).
    pub rounds_repairing: Counter,
    /// Seconds between a pushed record's timestamp and its arrival here.
    pub replication_lag: LagHistogram,
    /// Keys anti-entropy fetched from peers.
    pub repaired_fetched: Counter,
    /// Keys anti-entropy pushed to peers.
    pub repaired_pushed: Counter,
}

impl SyncCounters {
    /// Adds the counters to a node's registry.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "replication_lag_seconds",
            "How long after its timestamp a pushed record arrived (includes clock differences)",
            self.replication_lag.0.clone(),
        );
        let pairs: [(&str, &str, &Counter); 11] = [
            (
                "antientropy_rounds_repairing",
                "Anti-entropy rounds that found differences (the next comes at the catch-up pace)",
                &self.rounds_repairing,
            ),
            (
                "replication_skewed_records",
                "Peers' records refused as stamped too far in the future",
                &self.skewed_records,
            ),
            (
                "antientropy_rounds",
                "Anti-entropy rounds begun",
                &self.rounds,
            ),
            (
                "antientropy_rounds_in_agreement",
                "Anti-entropy rounds that found the peer in agreement",
                &self.rounds_in_agreement,
            ),
            (
                "antientropy_fetched_keys",
                "Keys anti-entropy fetched from peers",
                &self.repaired_fetched,
            ),
            (
                "antientropy_pushed_keys",
                "Keys anti-entropy pushed to peers",
                &self.repaired_pushed,
            ),
            (
                "replication_pushed_records",
                "Records pushed to peers (each copy)",
                &self.pushed_records,
            ),
            (
                "replication_pushes_abandoned",
                "Pushes given up after every attempt, left to anti-entropy",
                &self.pushes_abandoned,
            ),
            (
                "replication_pushes_dropped",
                "Pushes dropped because too many were outstanding",
                &self.pushes_dropped,
            ),
            (
                "replication_received_records",
                "Records received from peers and handed to storage",
                &self.received_records,
            ),
            (
                "replication_malformed_records",
                "Records from peers that failed validation",
                &self.malformed_records,
            ),
        ];
        for (name, help, counter) in pairs {
            registry.register(name, help, counter.clone());
        }
    }
}

/// Anti-entropy's pace, from the config's sync keys (README, "Sync timing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Pause between rounds while this node and its peers agree (`sync_interval`).
    pub round_every: Duration,
    /// Pause between rounds while a round still finds differences (`catchup_interval`): a node
    /// that was away catches up at this pace, then falls back to `round_every`.
    pub catchup_every: Duration,
    /// Pause before each request of a round after its first (`throttle_delay_ms`).
    pub throttle: Duration,
    /// Pause before each fetch of records after the first: a round's fetch batches and a
    /// bootstrap's pages (`fetch_delay_ms`).
    pub fetch_delay: Duration,
}

impl Pace {
    /// A pace whose catch-up is never slower than its ordinary rounds.
    pub fn new(
        round_every: Duration,
        catchup_every: Duration,
        throttle: Duration,
        fetch_delay: Duration,
    ) -> Self {
        Pace {
            round_every,
            catchup_every: catchup_every.min(round_every),
            throttle,
            fetch_delay,
        }
    }
}

/// A push waiting for its answer or its next attempt.
struct Push {
    to: SocketAddr,
    records: Vec<(String, Record)>,
    attempts: u32,
    sent_at: Duration,
}

/// Where an anti-entropy round is: the request it waits for the answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Branches,
    Leaves,
    Segments,
    Fetch,
}

/// What a round does after an answer.
enum Step {
    /// Sends this request (for this stage) after this pause; it asks for this many segments or
    /// keys.
    Next(Stage, SyncRequest, Duration, usize),
    /// Ends: nothing is left to compare or fetch.
    Done,
    /// Ends early (no answer, a busy peer, a failed read): the next round starts over.
    Abort,
}

/// The anti-entropy round in progress: with whom, and which request it waits on or sends next.
struct Round {
    peer: SocketAddr,
    stage: Stage,
    /// The request awaited: (id, sent at); `None` while the next one waits for its pause.
    asked: Option<(u64, Duration)>,
    /// The next request and when it may go (after `throttle_delay_ms` or `fetch_delay_ms`).
    next: Option<(Duration, SyncRequest)>,
    /// Keys still to fetch from the peer after the batch in flight.
    fetch: Vec<String>,
    /// Whether the round found a difference (the next round then comes at the catch-up pace).
    repaired: bool,
    /// The wall clock when it began: if it ends whole, this node held by then everything the
    /// peer held.
    began_ms: u64,
    /// The peer's horizon (from its branches answer).
    horizon: Option<Horizon>,
    /// Whether nothing was left for a later round so far (no list cut short, every key found
    /// fetched and pushed).
    whole: bool,
    /// How many segments or keys the request in flight asks for.
    asking: usize,
}

/// How long a bootstrapping node waits for a live peer before it gives up and starts empty.
pub const BOOTSTRAP_WAIT_MAX: Duration = Duration::from_secs(30);

/// A new node pulling the cluster's data, page by page in time order, from one peer.
struct Bootstrap {
    /// The node's mode, `Syncing` until this ends.
    mode: SharedMode,
    /// The mode to take when it ends (the configured one).
    then: Mode,
    /// Where the first page started: the node holds the records stamped after it once done.
    since_ms: u64,
    /// Where the next page starts.
    cursor: (u64, String),
    /// The page request waiting for its answer: (id, peer, sent at).
    waiting: Option<(u64, SocketAddr, Duration)>,
    /// When the next page may be asked for (`fetch_delay_ms` after the last).
    next_at: Duration,
    /// When it began, and how many records it applied.
    began: Duration,
    records: u64,
}

/// The sync actor.
pub struct SyncActor {
    bootstrap: Option<Bootstrap>,
    storage: Addr<StorageMsg>,
    reader: StorageReader,
    pace: Pace,
    next_round_at: Duration,
    round: Option<Round>,
    /// Whether the last round found differences (logged when it changes).
    catching_up: bool,
    /// `Resume` timers pending (at most `TIMERS_MAX` less the tick's).
    resumes: usize,
    transport: PeerLink,
    counters: SyncCounters,
    peers: Vec<SocketAddr>,
    next_id: u64,
    /// Pushes sent and not answered yet, by id.
    in_flight: BTreeMap<u64, Push>,
    /// Pushes waiting to be sent again, by (when, id).
    retries: BTreeMap<(Duration, u64), Push>,
    /// How long tombstones are kept (`tombstone_grace_hours`).
    grace: Duration,
    /// When storage is next asked to garbage-collect (every `sync_interval`).
    next_purge_at: Duration,
    /// When the last whole anti-entropy round began (wall clock, ms): this node held everything
    /// a peer held then, and it has told that peer what it held newer. It collects only
    /// tombstones older than that, so a node cut off for longer than the grace period keeps the
    /// deletes it made meanwhile until it can pass them on, and vouches for no record it may
    /// have missed while away (`storage::Horizon`).
    synced_ms: Option<u64>,
    /// Whether this node is part of a cluster: it has seed nodes, or has had a live peer since it
    /// started. A node alone needs no round before it collects tombstones.
    clustered: bool,
}

impl SyncActor {
    /// A sync actor applying peers' records through `storage` and sending through `transport`.
    pub fn new(
        storage: Addr<StorageMsg>,
        reader: StorageReader,
        transport: PeerLink,
        counters: SyncCounters,
        pace: Pace,
    ) -> Self {
        SyncActor {
            bootstrap: None,
            storage,
            reader,
            pace,
            next_round_at: pace.round_every,
            round: None,
            catching_up: false,
            resumes: 0,
            transport,
            counters,
            peers: Vec::new(),
            next_id: 0,
            in_flight: BTreeMap::new(),
            retries: BTreeMap::new(),
            grace: TOMBSTONE_GRACE_DEFAULT,
            next_purge_at: pace.round_every,
            synced_ms: None,
            clustered: false,
        }
    }

    /// Keeps tombstones for `grace` (instead of [`TOMBSTONE_GRACE_DEFAULT`]) before storage
    /// garbage-collects them.
    pub fn tombstone_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Marks the node as a cluster member from the start (it has seed nodes): it collects
    /// tombstones only after whole anti-entropy rounds.
    pub fn clustered(mut self) -> Self {
        self.clustered = true;
        self
    }

    /// Starts as a new node that pulls the cluster's data first: records stamped after `since_ms`
    /// (now less `bootstrap_max_age_hours`), from one live peer, while `mode` says `Syncing`;
    /// then `mode` becomes `then`.
    pub fn bootstrapping(mut self, mode: SharedMode, then: Mode, since_ms: u64) -> Self {
        mode.set(Mode::Syncing);
        self.bootstrap = Some(Bootstrap {
            mode,
            then,
            since_ms,
            cursor: (since_ms, String::new()),
            waiting: None,
            next_at: Duration::ZERO,
            began: Duration::ZERO,
            records: 0,
        });
        self
    }

    /// Ends the bootstrap, leaving `Syncing`.
    fn finish_bootstrap(&mut self, now: Duration, why: &str) {
        if let Some(b) = self.bootstrap.take() {
            // Storage records it before any record that arrives from now on: the node vouches
            // for what it lacks only once it holds the cluster's data (`storage::Horizon`).
            let change = HorizonChange::Bootstrapped {
                since_ms: b.since_ms,
            };
            if self.storage.send(StorageMsg::Horizon(change)).is_err() {
                tracing::debug!("storage queue full: the horizon waits for the next agreement");
            }
            b.mode.set(b.then);
            tracing::info!(
                records = b.records,
                took_ms = now.saturating_sub(b.began).as_millis() as u64,
                mode = %b.then,
                "bootstrap {why}"
            );
        }
    }

    /// Asks a live peer for the next bootstrap page, if none is awaited; gives up waiting for a
    /// peer after `BOOTSTRAP_WAIT_MAX`.
    fn bootstrap_step(&mut self, now: Duration) {
        let Some(b) = &mut self.bootstrap else {
            return;
        };
        if let Some((_, _, sent_at)) = b.waiting {
            if now.saturating_sub(sent_at) < IN_FLIGHT_TIMEOUT {
                return;
            }
            b.waiting = None;
        }
        if now < b.next_at {
            return;
        }
        let Some(&peer) = self.peers.first() else {
            if now.saturating_sub(b.began) >= BOOTSTRAP_WAIT_MAX {
                self.finish_bootstrap(now, "gave up: no live peer answered, starting empty");
            }
            return;
        };
        self.next_id += 1;
        let id = self.next_id;
        let request = SyncRequest::Since {
            after_ms: b.cursor.0,
            after_path: b.cursor.1.clone(),
        };
        if self.transport.send(peer, id, request).is_ok() {
            b.waiting = Some((id, peer, now));
        }
    }

    /// Applies a bootstrap page and asks for the next, or ends the bootstrap on an empty one.
    fn bootstrap_answered(
        &mut self,
        ctx: &mut dyn Context<SyncMsg>,
        result: Result<SyncResponse, TransportError>,
    ) {
        let now = ctx.clock().monotonic();
        let Some(b) = &mut self.bootstrap else {
            return;
        };
        let Some((_, peer, _)) = b.waiting.take() else {
            return;
        };
        match result {
            Ok(SyncResponse::Page(records)) if records.is_empty() => {
                self.finish_bootstrap(now, "complete");
            }
            Ok(SyncResponse::Page(records)) => {
                let last = records
                    .last()
                    .map(|(p, r)| (r.version.timestamp_ms, p.clone()));
                let count = records.len() as u64;
                let wall_ms = ctx.clock().wall_ms();
                if self.receive(wall_ms, peer, records, Via::Bootstrap) == SyncResponse::Accepted {
                    let b = self.bootstrap.as_mut().expect("still bootstrapping");
                    b.records += count;
                    b.cursor = last.expect("a page that is not empty");
                }
                let delay = self.pace.fetch_delay;
                let b = self.bootstrap.as_mut().expect("still bootstrapping");
                b.next_at = now + delay;
                if delay.is_zero() {
                    self.bootstrap_step(now);
                } else {
                    self.resume_after(ctx, delay);
                }
            }
            // Busy, no answer: the next tick asks again.
            _ => {}
        }
    }

    /// Pushes waiting for `peer`'s answer or for a retry to it.
    fn outstanding(&self, peer: SocketAddr) -> usize {
        self.in_flight.values().filter(|p| p.to == peer).count()
            + self.retries.values().filter(|p| p.to == peer).count()
    }

    /// Takes the new live peer list; drops the pushes waiting for peers no longer on it.
    fn set_peers(&mut self, peers: Vec<SocketAddr>) {
        let gone = |p: &Push| !peers.contains(&p.to);
        let before = self.in_flight.len() + self.retries.len();
        self.in_flight.retain(|_, p| !gone(p));
        self.retries.retain(|_, p| !gone(p));
        let dropped = before - self.in_flight.len() - self.retries.len();
        self.counters.pushes_abandoned.inc_by(dropped as u64);
        self.clustered |= !peers.is_empty();
        self.peers = peers;
    }

    /// Sends `records` to every live peer, in pushes of at most `PUSH_BYTES_MAX`.
    fn replicate(&mut self, now: Duration, records: Vec<(String, Record)>) {
        for batch in chunks(records) {
            for peer in self.peers.clone() {
                if self.outstanding(peer) >= OUTSTANDING_PER_PEER_MAX {
                    self.counters.pushes_dropped.inc();
                    continue;
                }
                let push = Push {
                    to: peer,
                    records: batch.clone(),
                    attempts: 0,
                    sent_at: now,
                };
                self.send(now, push);
            }
        }
    }

    fn send(&mut self, now: Duration, mut push: Push) {
        push.attempts += 1;
        push.sent_at = now;
        self.next_id += 1;
        let id = self.next_id;
        let request = SyncRequest::Push {
            records: push.records.clone(),
        };
        self.counters
            .pushed_records
            .inc_by(push.records.len() as u64);
        match self.transport.send(push.to, id, request) {
            Ok(()) => {
                self.in_flight.insert(id, push);
            }
            // The transport is saturated or gone: as if the peer had not answered.
            Err(SendError::Full | SendError::Stopped) => self.retry_later(now, id, push),
        }
    }

    /// Schedules another attempt of `push`, or gives it up to anti-entropy after the last.
    fn retry_later(&mut self, now: Duration, id: u64, push: Push) {
        if push.attempts >= PUSH_ATTEMPTS {
            self.counters.pushes_abandoned.inc();
            tracing::debug!(peer = %push.to, records = push.records.len(), "push abandoned");
            return;
        }
        let delay = RETRY_DELAY_MIN * 2u32.pow(push.attempts - 1);
        self.retries.insert((now + delay, id), push);
    }

    fn answered(
        &mut self,
        ctx: &mut dyn Context<SyncMsg>,
        id: u64,
        result: Result<SyncResponse, TransportError>,
    ) {
        let now = ctx.clock().monotonic();
        let round_id = self.round.as_ref().and_then(|r| r.asked).map(|a| a.0);
        if round_id == Some(id) {
            return self.round_answered(ctx, result);
        }
        let bootstrap_id = self.bootstrap.as_ref().and_then(|b| b.waiting).map(|w| w.0);
        if bootstrap_id == Some(id) {
            return self.bootstrap_answered(ctx, result);
        }
        // An answer to a request already given up on is ignored.
        let Some(push) = self.in_flight.remove(&id) else {
            return;
        };
        match result {
            Ok(SyncResponse::Accepted) => {}
            Ok(_) | Err(_) => self.retry_later(now, id, push),
        }
    }

    /// Starts a round with a random live peer if it is time and none is running; gives up a
    /// round whose answer is overdue.
    fn maybe_start_round(&mut self, ctx: &mut dyn Context<SyncMsg>) {
        let now = ctx.clock().monotonic();
        if let Some(Round {
            asked: Some((_, sent_at)),
            ..
        }) = &self.round
        {
            if now.saturating_sub(*sent_at) < IN_FLIGHT_TIMEOUT {
                return;
            }
            self.end_round(now);
        }
        if self.round.is_some() || now < self.next_round_at || self.peers.is_empty() {
            return;
        }
        let peer = self.peers[(ctx.rng().next_u64() % self.peers.len() as u64) as usize];
        self.counters.rounds.inc();
        self.round = Some(Round {
            peer,
            stage: Stage::Branches,
            asked: None,
            next: Some((now, SyncRequest::Branches)),
            fetch: Vec::new(),
            repaired: false,
            began_ms: ctx.clock().wall_ms(),
            horizon: None,
            whole: true,
            asking: 0,
        });
        self.send_due(now);
    }

    /// Sends the round's next request if its pause is over.
    fn send_due(&mut self, now: Duration) {
        let Some(round) = &mut self.round else {
            return;
        };
        if round.next.as_ref().is_none_or(|(at, _)| *at > now) {
            return;
        }
        let (_, request) = round.next.take().expect("checked above");
        self.next_id += 1;
        let id = self.next_id;
        round.asked = Some((id, now));
        if self.transport.send(round.peer, id, request).is_err() {
            self.end_round(now);
        }
    }

    /// Ends the round: the next comes after `catchup_interval` if this one found differences,
    /// else after `sync_interval`.
    fn end_round(&mut self, now: Duration) {
        let Some(round) = self.round.take() else {
            return;
        };
        if round.repaired != self.catching_up {
            self.catching_up = round.repaired;
            if round.repaired {
                tracing::info!(
                    peer = %round.peer,
                    every_ms = self.pace.catchup_every.as_millis() as u64,
                    "anti-entropy found differences: catching up"
                );
            } else {
                tracing::info!(peer = %round.peer, "anti-entropy: caught up");
            }
        }
        if round.repaired {
            self.counters.rounds_repairing.inc();
        }
        let pause = if round.repaired {
            self.pace.catchup_every
        } else {
            self.pace.round_every
        };
        self.next_round_at = now + pause;
    }

    /// Schedules a `Resume` after `delay`, unless every timer is taken (the next tick then
    /// does its work, at most `TICK` later).
    fn resume_after(&mut self, ctx: &mut dyn Context<SyncMsg>, delay: Duration) {
        if self.resumes < RESUMES_MAX {
            self.resumes += 1;
            ctx.schedule(delay, SyncMsg::Resume);
        }
    }

    /// Takes the round one step down the tree, or ends it.
    fn round_answered(
        &mut self,
        ctx: &mut dyn Context<SyncMsg>,
        result: Result<SyncResponse, TransportError>,
    ) {
        let now = ctx.clock().monotonic();
        let Some(round) = &mut self.round else {
            return;
        };
        round.asked = None;
        let (peer, stage, asking) = (round.peer, round.stage, round.asking);
        let (throttle, fetch_delay) = (self.pace.throttle, self.pace.fetch_delay);
        let step = match (stage, result) {
            (Stage::Branches, Ok(SyncResponse::Branches { hashes, horizon })) => {
                round.horizon = Some(horizon);
                let branches = repair::differing_branches(&self.reader.tree(), &hashes);
                if branches.is_empty() {
                    self.counters.rounds_in_agreement.inc();
                    Step::Done
                } else {
                    let asking = branches.len();
                    Step::Next(
                        Stage::Leaves,
                        SyncRequest::Leaves { branches },
                        throttle,
                        asking,
                    )
                }
            }
            (Stage::Leaves, Ok(SyncResponse::Leaves(theirs))) => {
                let segments = repair::differing_segments(&self.reader.tree(), &theirs);
                round.whole &= segments.len() < SEGMENTS_PER_ROUND_MAX && theirs.len() == asking;
                if segments.is_empty() {
                    // The trees moved between the two answers: nothing proven either way.
                    Step::Abort
                } else {
                    let asking = segments.len();
                    Step::Next(
                        Stage::Segments,
                        SyncRequest::Segments { segments },
                        throttle,
                        asking,
                    )
                }
            }
            (Stage::Segments, Ok(SyncResponse::Segments(theirs))) => {
                round.whole &= theirs.lists.len() == asking;
                match repair::compare_segments(&self.reader, &theirs) {
                    Ok(diff) => {
                        let pushed = self.push_newer(now, peer, &diff.push);
                        if !diff.forget.is_empty() {
                            tracing::info!(
                                %peer,
                                records = diff.forget.len(),
                                complete_since_ms = theirs.horizon.complete_since_ms,
                                purged_through_ms = theirs.horizon.purged_through_ms,
                                "forgetting records the peer lacks and that are older than a \
                                 delete it garbage-collected"
                            );
                            self.purge(ctx.clock().wall_ms(), diff.forget.clone());
                        }
                        let round = self.round.as_mut().expect("a round in progress");
                        round.whole &= pushed && !diff.partial;
                        round.repaired = !diff.fetch.is_empty()
                            || !diff.push.is_empty()
                            || !diff.forget.is_empty();
                        round.fetch = diff.fetch;
                        self.next_fetch(throttle)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "anti-entropy: reading segments");
                        Step::Abort
                    }
                }
            }
            (Stage::Fetch, Ok(SyncResponse::Records(records))) => {
                round.whole &= records.len() == asking;
                let count = records.len() as u64;
                let wall_ms = ctx.clock().wall_ms();
                if self.receive(wall_ms, peer, records, Via::AntiEntropy) == SyncResponse::Accepted
                {
                    self.counters.repaired_fetched.inc_by(count);
                    self.next_fetch(fetch_delay)
                } else {
                    Step::Abort
                }
            }
            // Busy, an answer to another question, or no answer: try again next round.
            _ => Step::Abort,
        };
        let (stage, request, delay, asking) = match step {
            Step::Next(stage, request, delay, asking) => (stage, request, delay, asking),
            Step::Done => {
                self.round_whole();
                return self.end_round(now);
            }
            Step::Abort => return self.end_round(now),
        };
        let round = self.round.as_mut().expect("a round in progress");
        round.stage = stage;
        round.asking = asking;
        round.next = Some((now + delay, request));
        if delay.is_zero() {
            self.send_due(now);
        } else {
            self.resume_after(ctx, delay);
        }
    }

    /// The round ended with nothing left over: this node holds what the peer held when the round
    /// began, so it may vouch for what the peer vouches for, and collect tombstones older than
    /// that moment.
    fn round_whole(&mut self) {
        let Some(round) = &self.round else {
            return;
        };
        if !round.whole {
            return;
        }
        self.synced_ms = Some(self.synced_ms.unwrap_or(0).max(round.began_ms));
        if let Some(theirs) = round.horizon {
            self.agreed_with(theirs);
        }
    }

    /// The round's next `Fetch` (the next `FETCH_KEYS_MAX` keys it found), after `delay`, or
    /// its end.
    fn next_fetch(&mut self, delay: Duration) -> Step {
        let Some(round) = self.round.as_mut() else {
            return Step::Abort;
        };
        if round.fetch.is_empty() {
            return Step::Done;
        }
        let rest = round.fetch.split_off(round.fetch.len().min(FETCH_KEYS_MAX));
        let keys = std::mem::replace(&mut round.fetch, rest);
        let asking = keys.len();
        Step::Next(Stage::Fetch, SyncRequest::Fetch { keys }, delay, asking)
    }

    /// Pushes this node's records of `keys` to `peer` (anti-entropy found it holds them older);
    /// whether all of them went.
    fn push_newer(&mut self, now: Duration, peer: SocketAddr, keys: &[String]) -> bool {
        if keys.is_empty() {
            return true;
        }
        if self.outstanding(peer) >= OUTSTANDING_PER_PEER_MAX {
            return false;
        }
        match repair::records(&self.reader, keys) {
            Ok(records) if !records.is_empty() => {
                let all = records.len() == keys.len();
                self.counters.repaired_pushed.inc_by(records.len() as u64);
                let push = Push {
                    to: peer,
                    records,
                    attempts: 0,
                    sent_at: now,
                };
                self.send(now, push);
                all
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "anti-entropy: reading records to push");
                false
            }
        }
    }

    /// Answers a peer's request.
    fn serve(&mut self, wall_ms: u64, from: SocketAddr, request: SyncRequest) -> SyncResponse {
        let answer = match request {
            SyncRequest::Push { records } => {
                return self.receive(wall_ms, from, records, Via::Push)
            }
            SyncRequest::Branches => Ok(repair::answer_branches(&self.reader)),
            SyncRequest::Leaves { branches } => Ok(repair::answer_leaves(&self.reader, &branches)),
            SyncRequest::Segments { segments } => repair::answer_segments(&self.reader, &segments),
            SyncRequest::Fetch { keys } => repair::answer_fetch(&self.reader, &keys),
            SyncRequest::Versions { keys } => repair::answer_versions(&self.reader, &keys),
            SyncRequest::Since {
                after_ms,
                after_path,
            } => repair::answer_since(&self.reader, after_ms, &after_path),
        };
        answer.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "anti-entropy: answering a peer");
            SyncResponse::Busy
        })
    }

    /// This node holds the same keys as a peer whose horizon is `theirs`: it may vouch for what
    /// the peer vouches for (`storage::Horizon::agreed_with`).
    fn agreed_with(&mut self, theirs: Horizon) {
        let ours = self.reader.horizon();
        if ours.agreed_with(theirs) == ours {
            return;
        }
        let change = HorizonChange::AgreedWith(theirs);
        // A full mailbox loses this, not the agreement: the next round finds it again.
        let _ = self.storage.send(StorageMsg::Horizon(change));
    }

    /// Asks storage to garbage-collect the tombstones older than the grace period (and than the
    /// last whole round, in a cluster), and to forget `forget`.
    fn purge(&mut self, wall_ms: u64, forget: Vec<(String, Version)>) {
        let grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX);
        let expired = wall_ms.saturating_sub(grace_ms);
        let synced = if self.clustered {
            self.synced_ms.unwrap_or(0)
        } else {
            u64::MAX
        };
        let purge = StorageMsg::Purge {
            tombstones_before_ms: expired.min(synced),
            forget,
        };
        // A full mailbox loses this purge, not the garbage: the next one collects it.
        let _ = self.storage.send(purge);
    }

    fn tick(&mut self, now: Duration) {
        let lost: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, push)| now.saturating_sub(push.sent_at) >= IN_FLIGHT_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let push = self.in_flight.remove(&id).expect("listed above");
            self.retry_later(now, id, push);
        }
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let push = entry.remove();
            self.send(now, push);
        }
    }

    /// Hands a peer's records to storage; `Busy` if storage cannot take them now. Pushed records
    /// add to the replication lag histogram: how long after its stamp each arrived.
    fn receive(
        &mut self,
        wall_ms: u64,
        from: SocketAddr,
        records: Vec<(String, Record)>,
        via: Via,
    ) -> SyncResponse {
        for (path, record) in records {
            if via == Via::Push {
                let lag_ms = wall_ms.saturating_sub(record.version.timestamp_ms);
                self.counters
                    .replication_lag
                    .observe(lag_ms as f64 / 1000.0);
            }
            if record.version.timestamp_ms > wall_ms.saturating_add(SKEW_MAX_MS) {
                self.counters.skewed_records.inc();
                tracing::warn!(
                    %from,
                    path,
                    timestamp_ms = record.version.timestamp_ms,
                    wall_ms,
                    "dropped a peer's record stamped too far in the future"
                );
                continue;
            }
            if let Err(why) = valid(&path, &record) {
                self.counters.malformed_records.inc();
                tracing::warn!(%from, path, why, "dropped a malformed record from a peer");
                continue;
            }
            // Storage answers with what it did; nobody waits for it (a lost record is repaired
            // by anti-entropy, a duplicate is a no-op).
            let (reply, _) = reply_channel();
            let write = Write::Apply {
                path,
                record,
                reply,
            };
            match self.storage.send(StorageMsg::Write(write)) {
                Ok(()) => {
                    self.counters.received_records.inc();
                }
                Err(_) => return SyncResponse::Busy,
            }
        }
        SyncResponse::Accepted
    }
}

/// Why a peer's record cannot be applied, if it cannot.
fn valid(path: &str, record: &Record) -> Result<(), &'static str> {
    KeyPath::parse(path).map_err(|_| "invalid key path")?;
    if record.origin.len() > NODE_ID_BYTES_MAX {
        return Err("origin too long");
    }
    if let Some(data) = &record.data {
        if data.len() > VALUE_BYTES_MAX {
            return Err("value too large");
        }
        let text = std::str::from_utf8(data).map_err(|_| "value is not UTF-8")?;
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|_| "value is not JSON")?;
    }
    Ok(())
}

/// Splits records into pushes of at most `PUSH_BYTES_MAX` of keys and values (a larger record
/// goes alone), in order.
fn chunks(records: Vec<(String, Record)>) -> Vec<Vec<(String, Record)>> {
    let mut out: Vec<Vec<(String, Record)>> = Vec::new();
    let mut size = 0;
    for (path, record) in records {
        let bytes = path.len() + record.data.as_ref().map_or(0, Vec::len);
        if out.is_empty() || size + bytes > PUSH_BYTES_MAX {
            out.push(Vec::new());
            size = 0;
        }
        size += bytes;
        out.last_mut().expect("just pushed").push((path, record));
    }
    out
}

impl Actor for SyncActor {
    type Msg = SyncMsg;
    const NAME: &'static str = "sync";
    const TIMERS_MAX: usize = 1 + RESUMES_MAX;

    fn started(&mut self, ctx: &mut dyn Context<SyncMsg>) {
        let now = ctx.clock().monotonic();
        if let Some(b) = &mut self.bootstrap {
            b.began = now;
            tracing::info!("new node: syncing the cluster's data before taking writes");
        }
        ctx.schedule(TICK, SyncMsg::Tick);
    }

    fn handle(&mut self, ctx: &mut dyn Context<SyncMsg>, msg: SyncMsg) {
        let now = ctx.clock().monotonic();
        match msg {
            SyncMsg::Peers(peers) => self.set_peers(peers),
            SyncMsg::Committed(records) => self.replicate(now, records),
            SyncMsg::Request {
                from,
                request,
                reply,
            } => {
                let wall_ms = ctx.clock().wall_ms();
                reply.send(self.serve(wall_ms, from, request));
            }
            SyncMsg::Answer(PeerAnswer { id, result }) => self.answered(ctx, id, result),
            SyncMsg::Tick => {
                self.tick(now);
                if now >= self.next_purge_at {
                    self.next_purge_at = now + self.pace.round_every;
                    self.purge(ctx.clock().wall_ms(), Vec::new());
                }
                self.bootstrap_step(now);
                self.send_due(now);
                self.maybe_start_round(ctx);
                ctx.schedule(TICK, SyncMsg::Tick);
            }
            SyncMsg::Resume => {
                self.resumes -= 1;
                self.bootstrap_step(now);
                self.send_due(now);
            }
        }
    }
}

#[cfg(test)]
#[path = "actor_tests.rs"]
mod tests;
