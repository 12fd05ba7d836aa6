//! The storage writer: group commit of every waiting write into one log frame, synced before any
//! client is answered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand_core::Rng;
use redb::Durability;

use super::tables::{
    apply_records, expired_tombstones, remove_records, MEMBERS_REMEMBERED_MAX, META,
    META_PURGED_MS, META_WAL_SEQ,
};
use super::wal::Wal;
use super::Horizon;
use super::{CommitError, Record, Store, Version, WriteError};
use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::limits::NODE_ID_BYTES_MAX;
use crate::seam::{Actor, Addr, Context, Reply};
use crate::sync::{ConflictMsg, SyncMsg};

mod commit;
mod upkeep;

use commit::Outcome;

/// Most writes committed in one batch (one log frame).
pub const BATCH_WRITES_MAX: usize = 1024;
/// Most key and value bytes gathered for one batch: a write that would take a batch past this
/// commits the batch first and starts the next one.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most key and value bytes one write carries; larger writes are refused
/// ([`WriteError::TooLarge`]). The API's limits keep every client write within it.
pub const WRITE_BYTES_MAX: usize = KEY_BYTES_MAX + VALUE_BYTES_MAX;
/// Most key and value bytes one batch carries: [`BATCH_BYTES_MAX`], or a single write larger
/// than that on its own. The log asserts that such a batch fits one frame.
pub const BATCH_CONTENT_BYTES_MAX: usize = if WRITE_BYTES_MAX > BATCH_BYTES_MAX {
    WRITE_BYTES_MAX
} else {
    BATCH_BYTES_MAX
};
/// A checkpoint (the memtable into redb in one durable commit, log reset) after this many
/// logged records... Bigger checkpoints write each redb page once for more writes: in the HTTP
/// bench (32 clients), checkpoints every 32 batches gave 0.21 of the baseline, every 128 gave
/// 0.27-0.33, every 256 0.30 (this many records is 256 batches of 32). Counted in records, not
/// batches, so that a node's peers, whose batches are the pushes they receive (19 records each
/// in the cluster bench, the writer's 16), checkpoint no more often per write than the node
/// that took the writes.
pub const CHECKPOINT_RECORDS: usize = 8 * 1024;
/// ...or after this many logged batches (a lone client's batches hold one write each)...
pub const CHECKPOINT_BATCHES: u32 = 1024;
/// ...or once the log holds this many bytes, whichever comes first. Together they bound the
/// replay after a crash, the memtable's size and the stall of one checkpoint.
pub const CHECKPOINT_LOG_BYTES: u64 = 8 * 1024 * 1024;

/// Longest a batch of peers' records stays in the log unsynced (a client's write syncs it sooner).
/// Nobody waits for a peer's record to be durable: the peer answered its client when the record
/// was durable there, and anti-entropy repairs what a crash here loses. So replicated writes cost
/// a node a few syncs a second instead of one per push, and a node's peers do not compete with
/// its own syncs for the disk (the cluster bench's PUT ratio).
pub const PEER_RECORDS_SYNC_DELAY: Duration = Duration::from_millis(100);

/// The outcome of one write: its version once durable, or why the batch failed.
pub type WriteResult<T> = Result<T, WriteError>;

/// What a DELETE found. Either way the key ends up with a tombstone newer than anything this node
/// has seen, so the delete also wins over an older write still on its way from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// A live value was replaced by a tombstone with this version.
    Deleted(Version),
    /// There was no live value (never written, or already deleted).
    NotFound,
}

/// Messages to the storage writer.
#[derive(Debug)]
pub enum StorageMsg {
    /// A write: a client's, answered only once durable (or failed); a peer's record, answered
    /// once logged and synced soon after ([`PEER_RECORDS_SYNC_DELAY`]).
    Write(Write),
    /// The writer's own timer: commit batch number `batch` if it is still waiting.
    Linger {
        /// Which batch the timer was set for; a later batch ignores it.
        batch: u64,
    },
    /// The writer's own timer: sync the peers' records logged unsynced
    /// ([`PEER_RECORDS_SYNC_DELAY`]).
    SyncLog,
    /// A durability barrier (a peer's anti-entropy round ends with one): answered once every
    /// write that came before it is logged and synced, or with the error that stopped storage.
    Barrier(Reply<WriteResult<()>>),
    /// Garbage collection (the sync actor sends it after every anti-entropy round): remove the
    /// tombstones stamped before `tombstones_before_ms` (now less `tombstone_grace`), at most
    /// [`PURGE_KEYS_MAX`] of them, and the `forget` records (each only if still at that version).
    Purge {
        /// Tombstones stamped before this are removed; later peers' tombstones stamped before it
        /// are ignored for keys this node does not hold.
        tombstones_before_ms: u64,
        /// Records a peer proved deleted: it purged a tombstone newer than them and lacks them.
        forget: Vec<(String, Version)>,
    },
    /// What this node vouches for about keys it lacks changed (the sync actor learnt it).
    Horizon(HorizonChange),
    /// What a restart rejoins with changed (the membership actor sends it): the cluster members
    /// to rejoin through (at most `MEMBERS_REMEMBERED_MAX`), and the generation the node runs
    /// under now, which a node declared down while alive raises without restarting: the next
    /// start must come above it, or it would rejoin as an identity the cluster holds down.
    Members {
        /// The members to rejoin through.
        members: Vec<std::net::SocketAddr>,
        /// The node's current generation.
        generation: u64,
    },
}

/// A change of the node's [`Horizon`], persisted before it takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HorizonChange {
    /// The bootstrap, which pulled the records stamped after `since_ms`, completed (or found no
    /// peer to pull from).
    Bootstrapped {
        /// Where the bootstrap started.
        since_ms: u64,
    },
    /// Anti-entropy found this node's keyspace identical to a peer's, whose horizon this is.
    AgreedWith(Horizon),
}

/// Most tombstones one purge transaction removes: the rest go in the next, queued behind the
/// writes waiting meanwhile, so that no transaction (and no write waiting behind it) is long.
pub const PURGE_KEYS_MAX: usize = 4096;

/// What garbage collection did, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct PurgeCounters {
    /// Tombstones removed after the grace period.
    pub tombstones_purged: Counter,
    /// Records removed because a peer proved them deleted.
    pub records_forgotten: Counter,
    /// Peers' records ignored as older than a purged delete, or as expired tombstones.
    pub records_obsolete: Counter,
}

/// A write, from its arrival until the commit that answers it.
#[derive(Debug)]
pub enum Write {
    /// Store `data` (validated JSON) under `path` with a fresh version.
    Put {
        /// Validated key path.
        path: String,
        /// The JSON document exactly as the client sent it.
        data: Bytes,
        /// Answered with the new version.
        reply: Reply<WriteResult<Version>>,
    },
    /// Replace the value under `path` with a tombstone.
    Delete {
        /// Validated key path.
        path: String,
        /// Answered with what was found.
        reply: Reply<WriteResult<DeleteOutcome>>,
    },
    /// A record from a peer (replication, anti-entropy): kept, with its version and origin, only
    /// if it wins over what this node holds for the key ([`Applied`]).
    Apply {
        /// Validated key path.
        path: String,
        /// The peer's record (validated: its data is JSON within the size limit or a tombstone).
        record: Record,
        /// Answered with what happened.
        reply: Reply<WriteResult<Applied>>,
    },
}

/// What applying a peer's record did. A record replaces this node's when its timestamp is newer.
/// On equal timestamps with different uuids (a collision: two nodes wrote the key in the same
/// millisecond), a version carrying a cluster decision settles it by [`Version`]'s order; two
/// undecided versions are a [`Applied::Collision`]: this node keeps its own (its vote) and the
/// conflict actor asks the cluster (`sync::conflict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It was newer (or the key was unknown, or it is the same write with a stronger decision):
    /// stored.
    Stored,
    /// It collided with this node's version and won by a decision: stored.
    WonCollision,
    /// It collided with this node's version and lost by a decision: ignored.
    LostCollision,
    /// It collided with this node's version and neither carries a decision: ignored for now,
    /// reported to the conflict actor, which runs the vote.
    Collision,
    /// This node holds the same version already: nothing to do (a duplicate or a replay).
    Same,
    /// This node holds a newer version: ignored.
    Stale,
    /// This node does not hold the key, and the record is no newer than a tombstone this node
    /// garbage-collected (a purged delete may have superseded it), or is itself an expired
    /// tombstone: ignored, so that no purge lets a deleted key come back.
    Obsolete,
}

/// What a peer's version `theirs` does to this node's `ours` (see [`Applied`]).
pub fn applying(ours: &Version, theirs: &Version) -> Applied {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match (
        ours.timestamp_ms.cmp(&theirs.timestamp_ms),
        ours.cmp(theirs),
    ) {
        (_, Equal) => Applied::Same,
        (Less, _) => Applied::Stored,
        (Greater, _) => Applied::Stale,
        (Equal, order) if ours.same_write(theirs) => match order {
            Less => Applied::Stored,
            _ => Applied::Stale,
        },
        (Equal, _) if ours.resolution.is_none() && theirs.resolution.is_none() => {
            Applied::Collision
        }
        (Equal, Less) => Applied::WonCollision,
        (Equal, _) => Applied::LostCollision,
    }
}

/// A collision storage met: the key, and the timestamp both versions carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// Key path.
    pub path: String,
    /// The colliding versions' timestamp.
    pub timestamp_ms: u64,
}

/// Most keys storage tracks as contested at once (see `StorageActor::contested`): as many as the
/// conflict actor may have waiting for a vote.
pub const CONTESTED_MAX: usize = crate::sync::conflict::WAITING_MAX;

/// How long a batch smaller than the writer's expected concurrency may wait for more writes before
/// committing anyway. (tokio rounds timers up to a millisecond; a lone writer never waits.)
pub const LINGER: Duration = Duration::from_micros(500);

impl Write {
    fn path(&self) -> &str {
        match self {
            Write::Put { path, .. } | Write::Delete { path, .. } | Write::Apply { path, .. } => {
                path
            }
        }
    }

    fn size_bytes(&self) -> usize {
        match self {
            Write::Put { path, data, .. } => path.len() + data.len(),
            Write::Delete { path, .. } => path.len(),
            Write::Apply { path, record, .. } => {
                path.len() + record.data.as_ref().map_or(0, Vec::len)
            }
        }
    }

    fn fail(self, e: WriteError) {
        match self {
            Write::Put { reply, .. } => reply.send(Err(e)),
            Write::Delete { reply, .. } => reply.send(Err(e)),
            Write::Apply { reply, .. } => reply.send(Err(e)),
        }
    }
}

/// The only writer of a node's store.
///
/// Group commit: writes are buffered and committed together as one frame of the write-ahead log;
/// once that frame is synced they are published in the memtable and each caller is answered,
/// never before. A batch of peers' records only is published and answered at once, and synced
/// within [`PEER_RECORDS_SYNC_DELAY`] (or by the next client batch, or before a horizon change,
/// whichever comes first). Checkpoints move the memtable into redb.
///
/// When to commit: an fsync costs about the same for one write as for thirty, so the batch should
/// hold every writer that is active. The writer estimates that concurrency after each commit as the
/// writes it just answered plus those that arrived while it ran (all of them will be back). A batch
/// commits as soon as the mailbox is empty and the batch has reached that estimate; a smaller one
/// waits for the missing writers, at most [`LINGER`], then commits anyway. Without the wait, 32
/// clients settle into two half-size batches alternating (one committing while the other gathers),
/// doubling the fsyncs per write. A lone client (estimate one) never waits.
pub struct StorageActor {
    store: Store,
    wal: Wal,
    /// Sequence number of the last batch logged and not yet checkpointed.
    logged_seq: Option<u64>,
    /// Batches and records logged since the last checkpoint.
    logged_batches: u32,
    logged_records: usize,
    /// Whether a `SyncLog` timer is in flight.
    log_sync_armed: bool,
    /// Checkpoint after this many batches.
    checkpoint_batches: u32,
    origin: String,
    /// Where each group commit's size is recorded (`/metrics`), if anywhere.
    batch_sizes: Option<Histogram>,
    /// Who replicates local writes once durable (the sync actor), if anyone.
    replicator: Option<Addr<SyncMsg>>,
    /// The local writes of the commit in progress, for the replicator.
    committed_local: Vec<(String, Record)>,
    /// Who decides collisions (the conflict actor), if anyone.
    arbiter: Option<Addr<ConflictMsg>>,
    /// The collisions met by the commit in progress, for the arbiter.
    collisions: Vec<Collision>,
    /// Keys met in a collision of two undecided versions (path: their timestamp), until a
    /// decided or newer version of the key is stored. This node keeps its own version (its vote)
    /// and lacks the other: if its version is a tombstone, collecting it before the vote would
    /// let it vouch that the other version was deleted, and peers forget it, whatever the vote
    /// says. So no tombstone stamped at or after the oldest of them is collected.
    contested: BTreeMap<String, u64>,
    /// The oldest collision `contested` had no room for ([`CONTESTED_MAX`]): it holds the
    /// collection back too, until the node restarts (anti-entropy then meets it again).
    contested_untracked: Option<u64>,
    pending: Vec<Write>,
    pending_bytes: usize,
    /// Number of the batch being gathered (bumped by every commit).
    batch: u64,
    /// How many writers seemed active at the last commit: the batch size worth waiting for.
    expected_batch_len: usize,
    /// Whether a `Linger` timer is in flight (for this batch or an earlier one): at most one is,
    /// so the timers pending stay within `TIMERS_MAX` however fast batches commit. A batch that
    /// should wait while an earlier batch's timer is in flight waits for that one, and decides
    /// again when it arrives.
    lingering: bool,
    /// Set once the writer failed (`Context::fail`): later writes are refused with this error,
    /// never committed by a writer that declared its store unusable.
    failure: Option<WriteError>,
    /// Tombstones stamped before this are expired (from the last `Purge`; 0 before any).
    tombstones_before_ms: u64,
    /// Garbage collection's counters.
    purges: PurgeCounters,
    /// Whether a purge continuing a full one is queued (its timer counts in `TIMERS_MAX`).
    purge_queued: bool,
}

impl StorageActor {
    /// A writer for `store` and its log `wal` (both from [`Store::open`]), stamping writes as
    /// accepted by node `origin`.
    pub fn new(store: Store, wal: Wal, origin: impl Into<String>) -> Self {
        StorageActor {
            store,
            wal,
            logged_seq: None,
            logged_batches: 0,
            logged_records: 0,
            log_sync_armed: false,
            checkpoint_batches: CHECKPOINT_BATCHES,
            batch_sizes: None,
            replicator: None,
            committed_local: Vec::new(),
            arbiter: None,
            collisions: Vec::new(),
            contested: BTreeMap::new(),
            contested_untracked: None,
            origin: origin.into(),
            pending: Vec::new(),
            pending_bytes: 0,
            batch: 0,
            expected_batch_len: 0,
            lingering: false,
            failure: None,
            tombstones_before_ms: 0,
            purges: PurgeCounters::default(),
            purge_queued: false,
        }
    }

    /// Counts garbage collection in `counters`.
    pub fn count_purges(mut self, counters: PurgeCounters) -> Self {
        self.purges = counters;
        self
    }

    /// Checkpoints after every `batches` logged batches instead of [`CHECKPOINT_BATCHES`] (or
    /// [`CHECKPOINT_RECORDS`] records, or [`CHECKPOINT_LOG_BYTES`], as ever). The
    /// simulator checkpoints often, so that its short runs crash around checkpoints too.
    pub fn checkpoint_every(mut self, batches: u32) -> Self {
        self.checkpoint_batches = batches.max(1);
        self
    }

    /// Tells `replicator` of every local write (not peers' records) once it is durable.
    pub fn replicate_to(mut self, replicator: Addr<SyncMsg>) -> Self {
        self.replicator = Some(replicator);
        self
    }

    /// Tells `arbiter` of every collision between two undecided versions ([`Applied::Collision`]).
    pub fn report_collisions_to(mut self, arbiter: Addr<ConflictMsg>) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    /// Records every group commit's number of writes in `histogram`.
    pub fn observe_batches(mut self, histogram: Histogram) -> Self {
        self.batch_sizes = Some(histogram);
        self
    }

    /// Commits the pending batch, arms its linger timer, or leaves it for the messages still
    /// waiting in the mailbox (the last of which will decide again).
    fn decide(&mut self, ctx: &mut dyn Context<StorageMsg>) {
        if self.pending.is_empty() {
            return;
        }
        if self.pending.len() >= BATCH_WRITES_MAX || self.pending_bytes >= BATCH_BYTES_MAX {
            self.flush(ctx);
        } else if ctx.backlog() == 0 {
            if !self.should_wait() {
                self.flush(ctx);
            } else if !self.lingering {
                self.lingering = true;
                ctx.schedule(LINGER, StorageMsg::Linger { batch: self.batch });
            }
        }
    }

    /// Whether the pending batch should wait for more writes rather than commit now.
    fn should_wait(&self) -> bool {
        self.pending.len() < self.expected_batch_len / 2
    }

    fn flush(&mut self, ctx: &mut dyn Context<StorageMsg>) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        // A batch with a client's write is answered once durable; peers' records alone are not
        // waited for (`PEER_RECORDS_SYNC_DELAY`).
        let durable = batch.iter().any(|w| !matches!(w, Write::Apply { .. }));
        self.batch += 1;
        let count = batch.len();
        // Versions: the wall clock at commit time, and a uuid per write, drawn before the
        // blocking section (which may not touch the context).
        let now_ms = ctx.clock().wall_ms();
        let uuids: Vec<[u8; 16]> = batch
            .iter()
            .map(|_| {
                let mut bytes = [0u8; 16];
                ctx.rng().fill_bytes(&mut bytes);
                uuid::Builder::from_random_bytes(bytes)
                    .into_uuid()
                    .into_bytes()
            })
            .collect();
        let mut result = None;
        ctx.blocking(&mut || result = Some(self.commit(&batch, now_ms, &uuids, durable)));
        match result.expect("the host ran the commit") {
            Ok(outcomes) => {
                self.store.set_commit_failure(None);
                // A reply per write: with fewer outcomes, `zip` would drop the rest unanswered.
                assert_eq!(outcomes.len(), count, "one outcome per write of the batch");
                for (write, outcome) in batch.into_iter().zip(outcomes) {
                    match (write, outcome) {
                        (Write::Put { reply, .. }, Outcome::Put(v)) => reply.send(Ok(v)),
                        (Write::Delete { reply, .. }, Outcome::Delete(d)) => reply.send(Ok(d)),
                        (Write::Apply { reply, .. }, Outcome::Apply(a)) => reply.send(Ok(a)),
                        _ => unreachable!("outcomes follow the batch order"),
                    }
                }
                // Everyone just answered will write again; so will whoever queued meanwhile.
                self.expected_batch_len = (count + ctx.backlog()).min(BATCH_WRITES_MAX);
                tracing::trace!(writes = count, "group commit");
                if let Some(histogram) = &self.batch_sizes {
                    histogram.observe(count as f64);
                }
                let collisions = std::mem::take(&mut self.collisions);
                if let (Some(arbiter), false) = (&self.arbiter, collisions.is_empty()) {
                    // A full arbiter loses the report, not the collision: anti-entropy meets it
                    // again on its next round, and reports it again.
                    if arbiter.send(ConflictMsg::Collisions(collisions)).is_err() {
                        tracing::debug!("conflict queue full: left to the next meeting");
                    }
                }
                let local = std::mem::take(&mut self.committed_local);
                if let (Some(replicator), false) = (&self.replicator, local.is_empty()) {
                    // A full replicator loses the push, not the write: anti-entropy repairs it.
                    if replicator.send(SyncMsg::Committed(local)).is_err() {
                        tracing::debug!("replication queue full: left to anti-entropy");
                    }
                }
                if self.logged_batches >= self.checkpoint_batches
                    || self.logged_records >= CHECKPOINT_RECORDS
                    || self.wal.len_bytes() >= CHECKPOINT_LOG_BYTES
                {
                    self.checkpoint(ctx);
                }
                if !self.wal.is_synced() && !self.log_sync_armed {
                    self.log_sync_armed = true;
                    ctx.schedule(PEER_RECORDS_SYNC_DELAY, StorageMsg::SyncLog);
                }
            }
            Err(e) => {
                // redb refuses every later write after an I/O failure (until reopened), so going
                // on would leave a node that reads but can never write: fail the component.
                self.store.set_commit_failure(Some(e.to_string()));
                ctx.fail(format!("group commit of {count} writes failed: {e}"));
                let e = WriteError::from(Arc::new(e));
                for write in batch {
                    write.fail(e.clone());
                }
                self.failure = Some(e);
            }
        }
    }

    /// Makes redb durable up to the last logged batch (one sync for many batches) and starts the
    /// log over. A failure fails the actor, as a failed commit does.
    fn checkpoint(&mut self, ctx: &mut dyn Context<StorageMsg>) {
        let Some(seq) = self.logged_seq else {
            return;
        };
        let mut result = None;
        ctx.blocking(&mut || result = Some(self.sync_database(seq)));
        match result.expect("the host ran the checkpoint") {
            Ok(()) => {
                // After the commit, not before: a reader that misses the memtable finds redb.
                self.store.memtable().clear();
                self.wal.reset();
                self.logged_seq = None;
                self.logged_batches = 0;
                self.logged_records = 0;
            }
            Err(e) => {
                self.store.set_commit_failure(Some(e.to_string()));
                ctx.fail(format!("checkpoint failed: {e}"));
                self.failure = Some(WriteError::from(Arc::new(e)));
            }
        }
    }

    /// Syncs the peers' records logged unsynced, if any. A failure fails the actor, as a failed
    /// commit does.
    fn sync_log(&mut self, ctx: &mut dyn Context<StorageMsg>) {
        if self.failure.is_some() || self.wal.is_synced() {
            return;
        }
        let mut result = None;
        ctx.blocking(&mut || result = Some(self.wal.sync()));
        if let Err(e) = result.expect("the host ran the sync") {
            let e = CommitError::Wal(e);
            self.store.set_commit_failure(Some(e.to_string()));
            ctx.fail(format!("syncing peers' records failed: {e}"));
            self.failure = Some(WriteError::from(Arc::new(e)));
        }
    }

    /// Writes the memtable into redb in one durable transaction, sorted by key, noting that the
    /// log is applied up to `seq`.
    fn sync_database(&self, seq: u64) -> Result<(), CommitError> {
        let mut txn = self.store.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let records = self.store.memtable().snapshot();
        apply_records(&txn, records.iter().map(|(p, r)| (p.as_str(), r)))?;
        txn.open_table(META)?.insert(META_WAL_SEQ, seq)?;
        txn.commit()?;
        Ok(())
    }
}

impl Actor for StorageActor {
    type Msg = StorageMsg;
    const NAME: &'static str = "storage";
    /// One `Linger` in flight at most (see `lingering`), one `SyncLog` (`log_sync_armed`), and
    /// one purge continuing a full one.
    const TIMERS_MAX: usize = 3;

    fn handle(&mut self, ctx: &mut dyn Context<StorageMsg>, msg: StorageMsg) {
        let write = match msg {
            StorageMsg::Write(write) => write,
            StorageMsg::SyncLog => {
                self.log_sync_armed = false;
                self.sync_log(ctx);
                return self.decide(ctx);
            }
            StorageMsg::Linger { batch } => {
                self.lingering = false;
                if batch == self.batch {
                    return self.flush(ctx);
                }
                // A timer for a batch already committed: nothing of its own to do, but it may be
                // the last message in the mailbox, so the pending batch still needs a decision.
                return self.decide(ctx);
            }
            // Every message other than a write ends with a decision on the pending batch: a
            // write handled while this message waited behind it left its batch to "the last
            // message in the mailbox", which may be this one. (Without it a batch waited for
            // the next write, forever if its writers were all waiting on it.)
            StorageMsg::Purge {
                tombstones_before_ms,
                forget,
            } => {
                self.purge_queued = false;
                self.tombstones_before_ms = self.tombstones_before_ms.max(tombstones_before_ms);
                self.purge(ctx, forget);
                return self.decide(ctx);
            }
            StorageMsg::Barrier(reply) => {
                // Everything before the barrier is pending or logged: commit it, sync it.
                self.flush(ctx);
                self.sync_log(ctx);
                match &self.failure {
                    None => {
                        assert!(self.pending.is_empty() && self.wal.is_synced());
                        reply.send(Ok(()));
                    }
                    Some(failure) => reply.send(Err(failure.clone())),
                }
                return self.decide(ctx);
            }
            StorageMsg::Horizon(change) => {
                self.change_horizon(ctx, change);
                return self.decide(ctx);
            }
            StorageMsg::Members {
                members,
                generation,
            } => {
                self.remember_members(ctx, &members, generation);
                return self.decide(ctx);
            }
        };
        if let Some(failure) = &self.failure {
            return write.fail(failure.clone());
        }
        let size_bytes = write.size_bytes();
        if size_bytes > WRITE_BYTES_MAX {
            write.fail(WriteError::TooLarge { size_bytes });
            return self.decide(ctx);
        }
        if self.pending_bytes + size_bytes > BATCH_BYTES_MAX {
            self.flush(ctx);
            if let Some(failure) = &self.failure {
                return write.fail(failure.clone());
            }
        }
        self.pending_bytes += size_bytes;
        self.pending.push(write);
        assert!(self.pending.len() <= BATCH_WRITES_MAX);
        assert!(self.pending_bytes <= BATCH_CONTENT_BYTES_MAX);
        self.decide(ctx);
    }

    fn stopped(&mut self, ctx: &mut dyn Context<StorageMsg>) {
        if self.failure.is_some() {
            return;
        }
        self.flush(ctx);
        // A clean stop leaves nothing to replay.
        self.checkpoint(ctx);
    }
}
