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
use rand_core::Rng;

use crate::api::{KeyPath, Mode, SharedMode};
use crate::cluster::frame::{SyncRequest, SyncResponse, PUSH_BYTES_MAX};
use crate::limits::{NODE_ID_BYTES_MAX, VALUE_BYTES_MAX};
use crate::seam::{reply_channel, Actor, Addr, Context, Reply, SendError};
use crate::storage::{Record, StorageMsg, StorageReader, Write};

use super::repair;

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
    /// Send due retries.
    Tick,
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
    /// Keys anti-entropy fetched from peers.
    pub repaired_fetched: Counter,
    /// Keys anti-entropy pushed to peers.
    pub repaired_pushed: Counter,
}

impl SyncCounters {
    /// Adds the counters to a node's registry.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let pairs: [(&str, &str, &Counter); 10] = [
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

/// The anti-entropy round in progress: with whom, and which request it waits on.
struct Round {
    peer: SocketAddr,
    id: u64,
    stage: Stage,
    sent_at: Duration,
}

/// How long a bootstrapping node waits for a live peer before it gives up and starts empty.
pub const BOOTSTRAP_WAIT_MAX: Duration = Duration::from_secs(30);

/// A new node pulling the cluster's data, page by page in time order, from one peer.
struct Bootstrap {
    /// The node's mode, `Syncing` until this ends.
    mode: SharedMode,
    /// The mode to take when it ends (the configured one).
    then: Mode,
    /// Where the next page starts.
    cursor: (u64, String),
    /// The page request waiting for its answer: (id, peer, sent at).
    waiting: Option<(u64, SocketAddr, Duration)>,
    /// When it began, and how many records it applied.
    began: Duration,
    records: u64,
}

/// The sync actor.
pub struct SyncActor {
    bootstrap: Option<Bootstrap>,
    storage: Addr<StorageMsg>,
    reader: StorageReader,
    /// Pause between anti-entropy rounds.
    round_every: Duration,
    next_round_at: Duration,
    round: Option<Round>,
    transport: PeerLink,
    counters: SyncCounters,
    peers: Vec<SocketAddr>,
    next_id: u64,
    /// Pushes sent and not answered yet, by id.
    in_flight: BTreeMap<u64, Push>,
    /// Pushes waiting to be sent again, by (when, id).
    retries: BTreeMap<(Duration, u64), Push>,
}

impl SyncActor {
    /// A sync actor applying peers' records through `storage` and sending through `transport`.
    pub fn new(
        storage: Addr<StorageMsg>,
        reader: StorageReader,
        transport: PeerLink,
        counters: SyncCounters,
        round_every: Duration,
    ) -> Self {
        SyncActor {
            bootstrap: None,
            storage,
            reader,
            round_every,
            next_round_at: round_every,
            round: None,
            transport,
            counters,
            peers: Vec::new(),
            next_id: 0,
            in_flight: BTreeMap::new(),
            retries: BTreeMap::new(),
        }
    }

    /// Starts as a new node that pulls the cluster's data first: records stamped after `since_ms`
    /// (now less `bootstrap_max_age_hours`), from one live peer, while `mode` says `Syncing`;
    /// then `mode` becomes `then`.
    pub fn bootstrapping(mut self, mode: SharedMode, then: Mode, since_ms: u64) -> Self {
        mode.set(Mode::Syncing);
        self.bootstrap = Some(Bootstrap {
            mode,
            then,
            cursor: (since_ms, String::new()),
            waiting: None,
            began: Duration::ZERO,
            records: 0,
        });
        self
    }

    /// Ends the bootstrap, leaving `Syncing`.
    fn finish_bootstrap(&mut self, now: Duration, why: &str) {
        if let Some(b) = self.bootstrap.take() {
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
                if self.receive(ctx.clock().wall_ms(), peer, records) == SyncResponse::Accepted {
                    let b = self.bootstrap.as_mut().expect("still bootstrapping");
                    b.records += count;
                    b.cursor = last.expect("a page that is not empty");
                }
                self.bootstrap_step(now);
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
        if self.round.as_ref().is_some_and(|r| r.id == id) {
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
        if let Some(round) = &self.round {
            if now.saturating_sub(round.sent_at) < IN_FLIGHT_TIMEOUT {
                return;
            }
            self.round = None;
        }
        if now < self.next_round_at || self.peers.is_empty() {
            return;
        }
        self.next_round_at = now + self.round_every;
        let peer = self.peers[(ctx.rng().next_u64() % self.peers.len() as u64) as usize];
        self.counters.rounds.inc();
        self.ask(now, peer, Stage::Branches, SyncRequest::Branches);
    }

    /// Sends a request of the round in progress (or starting).
    fn ask(&mut self, now: Duration, peer: SocketAddr, stage: Stage, request: SyncRequest) {
        self.next_id += 1;
        let id = self.next_id;
        self.round = Some(Round {
            peer,
            id,
            stage,
            sent_at: now,
        });
        if self.transport.send(peer, id, request).is_err() {
            self.round = None;
        }
    }

    /// Takes the round one step down the tree, or ends it.
    fn round_answered(
        &mut self,
        ctx: &mut dyn Context<SyncMsg>,
        result: Result<SyncResponse, TransportError>,
    ) {
        let now = ctx.clock().monotonic();
        let Some(round) = self.round.take() else {
            return;
        };
        let peer = round.peer;
        let step = match (round.stage, result) {
            (Stage::Branches, Ok(SyncResponse::Branches(theirs))) => {
                let branches = repair::differing_branches(&self.reader.tree(), &theirs);
                if branches.is_empty() {
                    self.counters.rounds_in_agreement.inc();
                    None
                } else {
                    Some((Stage::Leaves, SyncRequest::Leaves { branches }))
                }
            }
            (Stage::Leaves, Ok(SyncResponse::Leaves(theirs))) => {
                let segments = repair::differing_segments(&self.reader.tree(), &theirs);
                (!segments.is_empty())
                    .then_some((Stage::Segments, SyncRequest::Segments { segments }))
            }
            (Stage::Segments, Ok(SyncResponse::Segments(theirs))) => {
                match repair::compare_segments(&self.reader, &theirs) {
                    Ok(diff) => {
                        self.push_newer(now, peer, &diff.push);
                        (!diff.fetch.is_empty())
                            .then_some((Stage::Fetch, SyncRequest::Fetch { keys: diff.fetch }))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "anti-entropy: reading segments");
                        None
                    }
                }
            }
            (Stage::Fetch, Ok(SyncResponse::Records(records))) => {
                let count = records.len() as u64;
                if self.receive(ctx.clock().wall_ms(), peer, records) == SyncResponse::Accepted {
                    self.counters.repaired_fetched.inc_by(count);
                }
                None
            }
            // Busy, an answer to another question, or no answer: try again next round.
            _ => None,
        };
        if let Some((stage, request)) = step {
            self.ask(now, peer, stage, request);
        }
    }

    /// Pushes this node's records of `keys` to `peer` (anti-entropy found it holds them older).
    fn push_newer(&mut self, now: Duration, peer: SocketAddr, keys: &[String]) {
        if keys.is_empty() || self.outstanding(peer) >= OUTSTANDING_PER_PEER_MAX {
            return;
        }
        match repair::records(&self.reader, keys) {
            Ok(records) if !records.is_empty() => {
                self.counters.repaired_pushed.inc_by(records.len() as u64);
                let push = Push {
                    to: peer,
                    records,
                    attempts: 0,
                    sent_at: now,
                };
                self.send(now, push);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "anti-entropy: reading records to push"),
        }
    }

    /// Answers a peer's request.
    fn serve(&mut self, wall_ms: u64, from: SocketAddr, request: SyncRequest) -> SyncResponse {
        let answer = match request {
            SyncRequest::Push { records } => return self.receive(wall_ms, from, records),
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

    /// Hands a peer's records to storage; `Busy` if storage cannot take them now.
    fn receive(
        &mut self,
        wall_ms: u64,
        from: SocketAddr,
        records: Vec<(String, Record)>,
    ) -> SyncResponse {
        for (path, record) in records {
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
    const TIMERS_MAX: usize = 1;

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
                self.bootstrap_step(now);
                self.maybe_start_round(ctx);
                ctx.schedule(TICK, SyncMsg::Tick);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::seam::testing::TestContext;
    use crate::seam::Mailbox;
    use crate::storage::Version;

    /// Collects what is sent to it, or refuses everything.
    struct Sink<M>(Mutex<Vec<M>>, Option<SendError>);

    impl<M: Send> Mailbox<M> for Sink<M> {
        fn deliver(&self, msg: M) -> Result<(), SendError> {
            match self.1 {
                Some(e) => Err(e),
                None => {
                    self.0.lock().unwrap().push(msg);
                    Ok(())
                }
            }
        }
    }

    fn sink<M: Send + 'static>(refuse: Option<SendError>) -> (Arc<Sink<M>>, Addr<M>) {
        let sink = Arc::new(Sink(Mutex::new(Vec::new()), refuse));
        let addr = Addr::new(Arc::clone(&sink) as Arc<dyn Mailbox<M>>);
        (sink, addr)
    }

    fn record(data: &str) -> Record {
        Record {
            version: Version::new(5, [1; 16]),
            origin: "n1".into(),
            data: Some(data.as_bytes().to_vec()),
        }
    }

    struct Fixture {
        actor: SyncActor,
        ctx: TestContext<SyncMsg>,
        requests: Arc<Sink<PeerRequest>>,
        storage: Arc<Sink<StorageMsg>>,
        counters: SyncCounters,
    }

    fn fixture(storage_refuses: Option<SendError>) -> Fixture {
        let (requests, requests_addr) = sink(None);
        let (_, answers) = sink(None);
        let transport = PeerLink {
            requests: requests_addr,
            answers,
        };
        let (storage, storage_addr) = sink(storage_refuses);
        let counters = SyncCounters::default();
        let (store, _) = crate::storage::Store::open(
            redb::backends::InMemoryBackend::new(),
            redb::backends::InMemoryBackend::new(),
            0,
        )
        .unwrap();
        // No anti-entropy round within these tests' hours.
        let every = Duration::from_secs(3600 * 24);
        let mut actor = SyncActor::new(
            storage_addr,
            store.reader(),
            transport,
            counters.clone(),
            every,
        );
        let mut ctx = TestContext::new(0, 1);
        actor.started(&mut ctx);
        Fixture {
            actor,
            ctx,
            requests,
            storage,
            counters,
        }
    }

    fn peer(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 8080))
    }

    impl Fixture {
        fn handle(&mut self, msg: SyncMsg) {
            self.actor.handle(&mut self.ctx, msg);
        }

        fn sent(&self) -> Vec<PeerRequest> {
            std::mem::take(&mut *self.requests.0.lock().unwrap())
        }

        /// Advances the clock by `by` in ticks.
        fn run(&mut self, by: Duration) {
            for _ in 0..by.as_millis() / TICK.as_millis() {
                self.ctx.clock.advance(TICK);
                self.handle(SyncMsg::Tick);
            }
        }
    }

    #[test]
    fn a_commit_is_pushed_to_every_peer_and_an_accepted_push_is_done() {
        let mut f = fixture(None);
        f.handle(SyncMsg::Peers(vec![peer(2), peer(3)]));
        f.handle(SyncMsg::Committed(vec![("k".into(), record("1"))]));
        let sent = f.sent();
        assert_eq!(
            sent.iter().map(|r| r.to).collect::<Vec<_>>(),
            [peer(2), peer(3)]
        );
        for r in &sent {
            f.handle(SyncMsg::Answer(PeerAnswer {
                id: r.id,
                result: Ok(SyncResponse::Accepted),
            }));
        }
        f.run(Duration::from_secs(60));
        assert!(f.sent().is_empty(), "nothing sent again");
        assert_eq!(f.counters.pushed_records.get(), 2);
    }

    #[test]
    fn a_failed_push_is_retried_with_backoff_then_left_to_anti_entropy() {
        let mut f = fixture(None);
        f.handle(SyncMsg::Peers(vec![peer(2)]));
        f.handle(SyncMsg::Committed(vec![("k".into(), record("1"))]));
        let mut attempts_at = Vec::new();
        let mut elapsed = Duration::ZERO;
        let mut failures = [
            Err(TransportError::Timeout),
            Ok(SyncResponse::Busy),
            Err(TransportError::QueueFull),
        ]
        .into_iter()
        .cycle();
        while elapsed < Duration::from_secs(120) {
            for r in f.sent() {
                attempts_at.push(elapsed);
                let result = failures.next().unwrap();
                f.handle(SyncMsg::Answer(PeerAnswer { id: r.id, result }));
            }
            f.run(TICK);
            elapsed += TICK;
        }
        assert_eq!(attempts_at.len(), PUSH_ATTEMPTS as usize, "{attempts_at:?}");
        let gaps: Vec<u128> = attempts_at
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        assert!(
            gaps.windows(2).all(|g| g[1] >= 2 * g[0] - 100),
            "backoff doubles: {gaps:?}"
        );
        assert_eq!(f.counters.pushes_abandoned.get(), 1);
    }

    #[test]
    fn a_lost_answer_times_out_and_the_push_is_sent_again() {
        let mut f = fixture(None);
        f.handle(SyncMsg::Peers(vec![peer(2)]));
        f.handle(SyncMsg::Committed(vec![("k".into(), record("1"))]));
        let first = f.sent();
        assert_eq!(first.len(), 1);
        f.run(IN_FLIGHT_TIMEOUT + RETRY_DELAY_MIN + TICK);
        let again = f.sent();
        assert_eq!(again.len(), 1, "sent again after the answer never came");
        assert_ne!(again[0].id, first[0].id, "a new correlation id");
    }

    #[test]
    fn a_peers_records_are_validated_and_handed_to_storage() {
        let mut f = fixture(None);
        let mut long_origin = record("1");
        long_origin.origin = "n".repeat(NODE_ID_BYTES_MAX + 1);
        let records = vec![
            ("ok".to_string(), record("{\"a\":1}")),
            ("a//b".to_string(), record("1")),
            ("x".to_string(), long_origin),
            ("y".to_string(), record("not json")),
            (
                "gone".to_string(),
                Record {
                    data: None,
                    ..record("")
                },
            ),
        ];
        let (reply, mut answer) = reply_channel();
        f.handle(SyncMsg::Request {
            from: peer(2),
            request: SyncRequest::Push { records },
            reply,
        });
        assert_eq!(answer.try_recv().unwrap(), Some(SyncResponse::Accepted));
        let applied: Vec<String> = f
            .storage
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|m| match m {
                StorageMsg::Write(Write::Apply { path, .. }) => path.clone(),
                _ => panic!("only applies"),
            })
            .collect();
        assert_eq!(applied, ["ok", "gone"]);
        assert_eq!(f.counters.malformed_records.get(), 3);
        assert_eq!(f.counters.received_records.get(), 2);

        let mut busy = fixture(Some(SendError::Full));
        let (reply, mut answer) = reply_channel();
        busy.handle(SyncMsg::Request {
            from: peer(2),
            request: SyncRequest::Push {
                records: vec![("ok".into(), record("1"))],
            },
            reply,
        });
        assert_eq!(answer.try_recv().unwrap(), Some(SyncResponse::Busy));
    }

    #[test]
    fn a_record_stamped_far_in_the_future_is_refused_as_skewed() {
        let mut f = fixture(None);
        let mut future = record("1");
        future.version.timestamp_ms = u64::MAX;
        let mut near = record("1");
        near.version.timestamp_ms = SKEW_MAX_MS;
        let (reply, _answer) = reply_channel();
        f.handle(SyncMsg::Request {
            from: peer(2),
            request: SyncRequest::Push {
                records: vec![("far".into(), future), ("near".into(), near)],
            },
            reply,
        });
        assert_eq!(f.counters.skewed_records.get(), 1);
        assert_eq!(
            f.counters.received_records.get(),
            1,
            "within the bound: taken"
        );
    }

    #[test]
    fn a_dead_peer_holds_up_nobody_and_its_pushes_go_when_it_leaves_the_list() {
        let mut f = fixture(None);
        f.handle(SyncMsg::Peers(vec![peer(2), peer(3)]));
        // peer 3 never answers; peer 2 always does.
        for i in 0..(OUTSTANDING_PER_PEER_MAX + 10) {
            f.handle(SyncMsg::Committed(vec![(format!("k{i}"), record("1"))]));
            for r in f.sent() {
                if r.to == peer(2) {
                    f.handle(SyncMsg::Answer(PeerAnswer {
                        id: r.id,
                        result: Ok(SyncResponse::Accepted),
                    }));
                }
            }
        }
        assert_eq!(f.counters.pushes_dropped.get(), 10, "only peer 3's excess");
        assert_eq!(f.actor.outstanding(peer(2)), 0);
        f.handle(SyncMsg::Peers(vec![peer(2)]));
        assert_eq!(f.actor.outstanding(peer(3)), 0, "dropped with the peer");
        assert_eq!(
            f.counters.pushes_abandoned.get(),
            OUTSTANDING_PER_PEER_MAX as u64
        );
    }

    #[test]
    fn large_commits_are_split_into_bounded_pushes() {
        let big = "x".repeat(PUSH_BYTES_MAX / 3);
        let records: Vec<(String, Record)> = (0..7)
            .map(|i| (format!("k{i}"), record(&format!("\"{big}\""))))
            .collect();
        let pushes = chunks(records);
        assert_eq!(
            pushes.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 2, 2, 1]
        );
        let huge = vec![("h".to_string(), record(&"1".repeat(PUSH_BYTES_MAX * 2)))];
        assert_eq!(
            chunks(huge).len(),
            1,
            "a record larger than a push goes alone"
        );
    }
}
