//! Opening the store on host-chosen backends: the database, its write-ahead log, and the replay
//! that brings the database up to date with the log after a crash.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageBackend,
};

use super::memtable::Memtable;
use super::tables::{
    apply_records, segment_of, BY_SEGMENT, BY_TIME, FORMAT, FORMAT_MIN, KV, MEMBERS,
    MEMBERS_REMEMBERED_MAX, META, META_COMPLETE_SINCE_MS, META_FORMAT, META_GENERATION,
    META_JOINED_MS, META_PURGED_MS, META_WAL_SEQ, TOMBSTONES,
};
use super::wal::{Wal, WalBatch};
use super::{CommitError, Horizon, OpenError, ReadError, StorageReader};
use crate::sync::HashTree;

/// An open database shared by the writer actor and the readers. The database closes cleanly when
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
    memtable: Memtable,
    commit_failure: CommitFailure,
    joined_timestamp_ms: u64,
    replayed_batches: usize,
    keys_at_open: u64,
    generation: u64,
    tree: SharedTree,
    horizon: SharedHorizon,
    members: Arc<[SocketAddr]>,
}

/// What this node vouches for about keys it lacks (`META_COMPLETE_SINCE_MS`, `META_PURGED_MS`):
/// the writer moves it, readers (anti-entropy) tell peers.
pub(super) type SharedHorizon = Arc<Mutex<Horizon>>;

/// The keyspace's hash tree: the writer updates it with every commit, readers copy it.
pub(super) type SharedTree = Arc<Mutex<HashTree>>;

/// The last commit's failure, if it failed: the writer sets it, health checks read it.
pub(super) type CommitFailure = Arc<Mutex<Option<String>>>;

impl Store {
    /// Opens (or creates) the database on `db` and its write-ahead log on `wal`, creates missing
    /// tables, records the node's `joined_timestamp` (`now_ms`) the first time, and applies the
    /// log's batches that the database's last durable commit does not include (after a crash).
    /// Returns the store and the log, which belongs to the storage writer from then on.
    pub fn open(
        db: impl StorageBackend,
        wal: impl StorageBackend,
        now_ms: u64,
    ) -> Result<(Store, Wal), OpenError> {
        let db = Database::builder()
            .create_with_backend(db)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse,
                e => OpenError::Database(e),
            })?;
        check_format(&db)?;
        let (mut wal, logged) = Wal::open(wal).map_err(OpenError::Wal)?;
        let Replayed {
            joined_ms: joined_timestamp_ms,
            applied_seq,
            batches: replayed_batches,
            keys,
            generation,
            horizon,
            members,
        } = replay(&db, &logged, now_ms)?;
        wal.continue_after(applied_seq);
        let tree = build_tree(&db)?;
        assert_eq!(tree.keys(), keys, "the tree summarises every key");
        // Everything logged is in the durable database now; frames a crash left behind the
        // replayed ones must not outlive it (`wal`'s module doc).
        wal.erase().map_err(OpenError::Wal)?;
        if replayed_batches > 0 {
            tracing::info!(batches = replayed_batches, "replayed the write-ahead log");
        }
        let store = Store {
            db: Arc::new(db),
            memtable: Memtable::default(),
            commit_failure: CommitFailure::default(),
            joined_timestamp_ms,
            replayed_batches,
            keys_at_open: keys,
            generation,
            tree: Arc::new(Mutex::new(tree)),
            horizon: Arc::new(Mutex::new(horizon)),
            members: members.into(),
        };
        Ok((store, wal))
    }

    /// A read handle: cheap, cloneable, never blocked by the writer.
    pub fn reader(&self) -> StorageReader {
        StorageReader::new(
            Arc::clone(&self.db),
            self.memtable.clone(),
            Arc::clone(&self.commit_failure),
            Arc::clone(&self.tree),
            Arc::clone(&self.horizon),
        )
    }

    /// When this node first opened its database (ms since the epoch): the conflict tie-breaker's
    /// "oldest node".
    pub fn joined_timestamp_ms(&self) -> u64 {
        self.joined_timestamp_ms
    }

    /// How many write-ahead-log batches opening the store replayed (0 after a clean stop).
    pub fn replayed_batches(&self) -> usize {
        self.replayed_batches
    }

    /// How many keys the store held once opened, deleted ones (tombstones) included.
    pub fn keys_at_open(&self) -> u64 {
        self.keys_at_open
    }

    /// This boot's generation: 1 at the first open of the database, then one above the stored
    /// generation, which every open bumps and a running node may raise (`remember_members`).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn db(&self) -> &Database {
        &self.db
    }

    pub(super) fn tree(&self) -> &SharedTree {
        &self.tree
    }

    /// The cluster members this node knew when it last ran (gossip addresses, address order):
    /// a restarted node rejoins through them as through seed nodes.
    pub fn remembered_members(&self) -> &[SocketAddr] {
        &self.members
    }

    /// Durably replaces the remembered members and raises the stored generation to `generation`
    /// if it is below (what the next start reads, and bumps).
    pub(super) fn remember_members(
        &self,
        members: &[SocketAddr],
        generation: u64,
    ) -> Result<(), CommitError> {
        assert!(members.len() <= MEMBERS_REMEMBERED_MAX);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(MEMBERS)?;
            table.retain(|_, ()| false)?;
            for member in members {
                table.insert(member.to_string().as_str(), ())?;
            }
            let mut meta = txn.open_table(META)?;
            let stored = meta.get(META_GENERATION)?.map_or(0, |v| v.value());
            if generation > stored {
                meta.insert(META_GENERATION, generation)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// What this node vouches for about keys it lacks (see [`Horizon`]).
    pub fn horizon(&self) -> Horizon {
        *self.horizon.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the store as a new node's that has not pulled the cluster's data yet: until its
    /// bootstrap completes it vouches for nothing, and a restart bootstraps again. Called by the
    /// node's assembly before the writer starts (durable before any record arrives).
    pub fn mark_bootstrapping(&self) -> Result<(), CommitError> {
        self.set_horizon(Horizon::BOOTSTRAPPING)
    }

    /// Publishes a horizon already made durable (by the purge's transaction).
    pub(super) fn publish_horizon(&self, horizon: Horizon) {
        *self.horizon.lock().unwrap_or_else(|e| e.into_inner()) = horizon;
    }

    /// Durably replaces the horizon (if it changed) and publishes it.
    pub(super) fn set_horizon(&self, horizon: Horizon) -> Result<(), CommitError> {
        let mut shared = self.horizon.lock().unwrap_or_else(|e| e.into_inner());
        if *shared == horizon {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_COMPLETE_SINCE_MS, horizon.complete_since_ms)?;
            meta.insert(META_PURGED_MS, horizon.purged_through_ms)?;
        }
        txn.commit()?;
        *shared = horizon;
        Ok(())
    }

    pub(super) fn memtable(&self) -> &Memtable {
        &self.memtable
    }

    /// Records the outcome of a commit for health checks.
    pub(super) fn set_commit_failure(&self, failure: Option<String>) {
        *self
            .commit_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = failure;
    }
}

/// Refuses a database (and so its log) written in another storage format, before either is read.
fn check_format(db: &Database) -> Result<(), OpenError> {
    let read = |e: ReadError| OpenError::Replay(CommitError::Read(e));
    let txn = db.begin_read().map_err(|e| read(e.into()))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        // A new database: the first open's commit records the format.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(read(e.into())),
    };
    let get = |key: &str| -> Result<Option<u64>, OpenError> {
        Ok(meta
            .get(key)
            .map_err(|e| read(e.into()))?
            .map(|v| v.value()))
    };
    let found = match (get(META_FORMAT)?, get(META_GENERATION)?) {
        (Some(format), _) => format,
        (None, Some(_)) => 1,
        (None, None) => return Ok(()),
    };
    if !(FORMAT_MIN..=FORMAT).contains(&found) {
        return Err(OpenError::Format {
            found,
            expected: FORMAT,
        });
    }
    Ok(())
}

/// The hash tree of everything the database holds, from one scan at open; incremental after.
fn build_tree(db: &Database) -> Result<HashTree, OpenError> {
    let read = |e: ReadError| OpenError::Replay(CommitError::Read(e));
    let txn = db.begin_read().map_err(|e| read(e.into()))?;
    let kv = txn.open_table(KV).map_err(|e| read(e.into()))?;
    let mut tree = HashTree::default();
    for entry in kv.iter().map_err(|e| read(e.into()))? {
        let (path, record) = entry.map_err(|e| read(e.into()))?;
        tree.replace(path.value(), None, &record.value().version);
    }
    Ok(tree)
}

/// What opening the store found and did.
struct Replayed {
    /// The node's join time.
    joined_ms: u64,
    /// The log sequence number the database now holds.
    applied_seq: u64,
    /// How many logged batches were applied.
    batches: usize,
    /// How many keys the database holds, tombstones included.
    keys: u64,
    /// This open's generation (bumped and durable).
    generation: u64,
    /// What the node vouches for (`META_COMPLETE_SINCE_MS`, `META_PURGED_MS`).
    horizon: Horizon,
    /// The members it knew when it last ran (`MEMBERS`).
    members: Vec<SocketAddr>,
}

/// In one durable transaction: records the join time if this is the database's first open, bumps
/// the generation, and applies the logged batches the database does not hold yet.
fn replay(db: &Database, logged: &[WalBatch], now_ms: u64) -> Result<Replayed, CommitError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    // Opening a table creates it: readers find every table from the first open on.
    txn.open_table(BY_TIME)?;
    txn.open_table(TOMBSTONES)?;
    let members = remembered(&txn.open_table(MEMBERS)?)?;
    {
        // A database from before the segment index: index every key once.
        let kv = txn.open_table(KV)?;
        let mut segments = txn.open_table(BY_SEGMENT)?;
        if segments.len()? != kv.len()? {
            for entry in kv.iter()? {
                let (path, _) = entry?;
                segments.insert((segment_of(path.value()), path.value()), ())?;
            }
        }
        assert_eq!(
            segments.len()?,
            kv.len()?,
            "every key is indexed by segment"
        );
    }
    let (joined_ms, applied, generation, horizon) = {
        let mut meta = txn.open_table(META)?;
        if meta.get(META_FORMAT)?.is_some_and(|f| f.value() < 3) {
            // A database from before the tombstone index: index its tombstones once.
            let kv = txn.open_table(KV)?;
            let mut tombstones = txn.open_table(TOMBSTONES)?;
            for entry in kv.iter()? {
                let (path, record) = entry?;
                let record = record.value();
                if record.is_tombstone() {
                    tombstones.insert((record.version.timestamp_ms, path.value()), ())?;
                }
            }
        }
        let stored_ms = meta.get(META_JOINED_MS)?.map(|v| v.value());
        let joined_ms = match stored_ms {
            Some(joined_ms) => joined_ms,
            None => {
                meta.insert(META_JOINED_MS, now_ms)?;
                now_ms
            }
        };
        let applied = meta.get(META_WAL_SEQ)?.map_or(0, |v| v.value());
        let generation = meta.get(META_GENERATION)?.map_or(0, |v| v.value()) + 1;
        meta.insert(META_GENERATION, generation)?;
        meta.insert(META_FORMAT, FORMAT)?;
        let horizon = Horizon {
            complete_since_ms: meta.get(META_COMPLETE_SINCE_MS)?.map_or(0, |v| v.value()),
            purged_through_ms: meta.get(META_PURGED_MS)?.map_or(0, |v| v.value()),
        };
        (joined_ms, applied, generation, horizon)
    };
    let fresh: Vec<&WalBatch> = logged.iter().filter(|b| b.seq > applied).collect();
    for batch in &fresh {
        apply_records(&txn, batch.records.iter().map(|(p, r)| (p.as_str(), r)))?;
    }
    let now_applied = fresh.last().map_or(applied, |last| last.seq);
    // `Wal::open` stops at the first sequence number that does not increase.
    assert!(fresh.windows(2).all(|w| w[0].seq < w[1].seq));
    if now_applied != applied {
        txn.open_table(META)?.insert(META_WAL_SEQ, now_applied)?;
    }
    let keys = txn.open_table(KV)?.len()?;
    txn.commit()?;
    Ok(Replayed {
        joined_ms,
        applied_seq: now_applied,
        batches: fresh.len(),
        keys,
        generation,
        horizon,
        members,
    })
}

/// The remembered members, skipping any entry that is not an address (the table is only ever
/// written by `Store::remember_members`, but a database is outside input).
fn remembered(
    table: &impl ReadableTable<&'static str, ()>,
) -> Result<Vec<SocketAddr>, CommitError> {
    let mut members = Vec::new();
    for entry in table.iter()?.take(MEMBERS_REMEMBERED_MAX) {
        let (addr, _) = entry?;
        match addr.value().parse() {
            Ok(addr) => members.push(addr),
            Err(_) => tracing::warn!(
                entry = addr.value(),
                "ignored a remembered member that is not an address"
            ),
        }
    }
    Ok(members)
}
