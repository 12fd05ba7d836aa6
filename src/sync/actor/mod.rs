//! The sync actor: replication of this node's writes to its peers, and the receiving end of
//! theirs.
//!
//! * **Push.** Storage tells it of every local write once durable ([`SyncMsg::Committed`]); it
//!   sends the records at once to every live peer (membership keeps it told of them,
//!   [`SyncMsg::Peers`]), [`PUSH_FANOUT_MAX`] at most (a larger cluster's peers take turns, batch
//!   by batch; anti-entropy brings each the batches it was not pushed), in pushes of at most
//!   `PUSH_BYTES_MAX`. A push that fails (no answer
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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use rand_core::Rng;

use crate::api::{KeyPath, Mode, SharedMode};
use crate::cluster::frame::{SyncRequest, SyncResponse, PUSH_BYTES_MAX};
use crate::limits::{NODE_ID_BYTES_MAX, VALUE_BYTES_MAX};
use crate::seam::{reply_channel, Actor, Addr, Context, Reply, SendError};
use crate::storage::{
    Horizon, HorizonChange, Record, StorageMsg, StorageReader, Version, Write, WriteResult,
};

use super::repair::{self, FETCH_KEYS_MAX, SEGMENTS_PER_ROUND_MAX};
use super::{Pace, PeerAnswer, PeerLink, SyncCounters, TransportError};

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
/// Most peers each batch of writes is pushed to: every peer of a cluster of up to 17 nodes.
pub const PUSH_FANOUT_MAX: usize = 16;
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
    /// Everything compared and fetched; waiting for the peer to take the round's pushes.
    Pushes,
    /// Waiting for the peer to sync what it took ([`SyncRequest::Barrier`]).
    Barrier,
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
    /// Which start of the peer answered its branches: only a barrier synced by that same start
    /// makes the round whole (a power cut in between loses what the peer took unsynced).
    peer_boot: Option<u64>,
    /// Whether nothing was left for a later round so far (no list cut short, every key found
    /// fetched and pushed).
    whole: bool,
    /// How many segments or keys the request in flight asks for.
    asking: usize,
    /// The round's pushes not answered yet (ids): a round is whole only once the peer took
    /// them, and with nothing left to ask it waits for them (`Stage::Pushes`) from `waiting_since`.
    pushes: BTreeSet<u64>,
    waiting_since: Option<Duration>,
}

/// Which start of a node this is (told with branches and the barrier's answer): its generation,
/// bumped on every start, mixed with its `joined_timestamp`, new with a new data directory
/// (where the generation starts at 1 again).
pub fn boot_id(joined_ms: u64, generation: u64) -> u64 {
    joined_ms.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ generation
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
    /// Where in `peers` the next batch's pushes begin, when there are more than
    /// [`PUSH_FANOUT_MAX`]: the peers take turns.
    fanout_from: usize,
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
    /// Which start of this node this is ([`boot_id`]): told to peers with the branches and the
    /// barrier's answer.
    boot: u64,
}

impl SyncActor {
    /// A sync actor applying peers' records through `storage` and sending through `transport`,
    /// in this node's start `boot` ([`boot_id`]).
    pub fn new(
        storage: Addr<StorageMsg>,
        reader: StorageReader,
        transport: PeerLink,
        counters: SyncCounters,
        pace: Pace,
        boot: u64,
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
            fanout_from: 0,
            next_id: 0,
            in_flight: BTreeMap::new(),
            retries: BTreeMap::new(),
            grace: TOMBSTONE_GRACE_DEFAULT,
            next_purge_at: pace.round_every,
            synced_ms: None,
            clustered: false,
            boot,
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
            self.round_push_settled(now, id, false);
        }
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let push = entry.remove();
            self.send(now, push);
        }
    }
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
            SyncMsg::Peers(peers) => self.set_peers(now, peers),
            SyncMsg::Committed(records) => self.replicate(now, records),
            SyncMsg::Request {
                from,
                request,
                reply,
            } => {
                let wall_ms = ctx.clock().wall_ms();
                self.serve(wall_ms, from, request, reply);
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

mod bootstrap;
mod push;
mod rounds;
mod serve;

#[cfg(test)]
mod tests;
