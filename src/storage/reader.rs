//! Reads off the writer's path: the memtable (logged writes not yet checkpointed), then redb's
//! MVCC snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use redb::{Database, ReadOnlyTable, ReadableDatabase};

use super::memtable::Memtable;
use super::record::{RecordHead, StoredHead};
use super::store::{CommitFailure, SharedHorizon, SharedTree};
use super::tables::{segment_of, BY_SEGMENT, BY_TIME, KV, KV_HEADS, META};
use super::{HealthError, Horizon, ReadError, Record, Version};
use crate::sync::HashTree;

/// Point reads from one snapshot ([`StorageReader::point_reads`]).
pub struct PointReads {
    memtable: Memtable,
    table: ReadOnlyTable<&'static str, StoredHead>,
    /// The memtable's clears when the snapshot was taken.
    clears: u64,
}

impl PointReads {
    /// The head of the record for `path` (live or tombstone) that [`StorageReader::get`] would
    /// read, without copying its value.
    pub fn head(&self, path: &str) -> Result<Option<RecordHead>, ReadError> {
        let found = self.memtable.head(path);
        assert_eq!(
            self.memtable.clears(),
            self.clears,
            "point reads outlived a checkpoint"
        );
        if let Some(head) = found {
            return Ok(Some(head));
        }
        Ok(self.table.get(path)?.map(|stored| stored.value()))
    }
}

/// A read handle on the store. Each call opens a read transaction: a consistent snapshot of the
/// last committed state, which a concurrent commit neither blocks nor changes.
#[derive(Clone, Debug)]
pub struct StorageReader {
    db: Arc<Database>,
    memtable: Memtable,
    commit_failure: CommitFailure,
    tree: SharedTree,
    horizon: SharedHorizon,
}

impl StorageReader {
    pub(super) fn new(
        db: Arc<Database>,
        memtable: Memtable,
        commit_failure: CommitFailure,
        tree: SharedTree,
        horizon: SharedHorizon,
    ) -> Self {
        StorageReader {
            db,
            memtable,
            commit_failure,
            tree,
            horizon,
        }
    }

    /// What this node vouches for about keys it lacks ([`Horizon`]). It refuses a peer's record
    /// of a key it lacks that the horizon says was deleted, and tells peers, which then forget
    /// such records of their own (`sync::repair`).
    pub fn horizon(&self) -> Horizon {
        *self.horizon.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the keyspace's hash tree as of the last commit (every acknowledged write is in
    /// it): what anti-entropy compares, and whose root `/health` shows.
    pub fn tree(&self) -> HashTree {
        self.tree.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The record for `path` (live or tombstone), if this node has ever seen the key.
    pub fn get(&self, path: &str) -> Result<Option<Record>, ReadError> {
        if let Some(record) = self.memtable.get(path) {
            return Ok(Some(record));
        }
        self.get_checkpointed(path)
    }

    /// Reads of many keys from one redb snapshot (one read transaction, not one per key): for the
    /// writer's lookups while it commits a batch, and the simulator's checks between events.
    /// Only while no checkpoint runs: one moves records out of the memtable into redb after the
    /// snapshot was taken, where these reads would miss them (asserted: a read after a
    /// checkpoint panics).
    pub fn point_reads(&self) -> Result<PointReads, ReadError> {
        let clears = self.memtable.clears();
        Ok(PointReads {
            memtable: self.memtable.clone(),
            table: self.db.begin_read()?.open_table(KV_HEADS)?,
            clears,
        })
    }

    /// The record for `path` in redb alone (as of the last checkpoint).
    pub(super) fn get_checkpointed(&self, path: &str) -> Result<Option<Record>, ReadError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        Ok(table.get(path)?.map(|stored| stored.value()))
    }

    /// Up to `limit` records whose version is after the cursor `(timestamp_ms, path)`, in time
    /// order: the catch-up and bootstrap feed. Pass the last returned pair as the next cursor.
    pub fn since(
        &self,
        after: (u64, &str),
        limit: usize,
    ) -> Result<Vec<(String, Record)>, ReadError> {
        // The memtable first: a checkpoint moves records into redb before it clears them here,
        // so reading in this order can see a record twice (deduplicated below), never miss it.
        let fresh = self.memtable.snapshot();
        let fresh_paths: BTreeSet<&str> = fresh.iter().map(|(p, _)| p.as_str()).collect();
        let mut out: Vec<(String, Record)> = fresh
            .iter()
            .filter(|(path, r)| (r.version.timestamp_ms, path.as_str()) > after)
            .cloned()
            .collect();
        let txn = self.db.begin_read()?;
        let index = txn.open_table(BY_TIME)?;
        let kv = txn.open_table(KV)?;
        let mut from_db = 0;
        for entry in index.range(after..)? {
            if from_db == limit {
                break;
            }
            let (key, _) = entry?;
            let (ts, path) = key.value();
            if (ts, path) == after || fresh_paths.contains(path) {
                continue;
            }
            let record = kv.get(path)?.ok_or_else(|| ReadError::Unindexed {
                path: path.to_owned(),
            })?;
            out.push((path.to_owned(), record.value()));
            from_db += 1;
        }
        out.sort_by(|(a_path, a), (b_path, b)| {
            (a.version.timestamp_ms, a_path).cmp(&(b.version.timestamp_ms, b_path))
        });
        out.truncate(limit);
        Ok(out)
    }

    /// Every key of hash-tree segment `segment` with its current version (tombstones included),
    /// in key order: what anti-entropy compares once the segment's hashes differ. Reads the
    /// segment index, not the whole keyspace.
    pub fn segment(&self, segment: u16) -> Result<Vec<(String, Version)>, ReadError> {
        // The memtable first, as in `since`: a checkpoint between the two reads then shows a
        // record twice (the newer version kept), never hides it.
        let fresh = self
            .memtable
            .versions_matching(|p| segment_of(p) == segment);
        let mut out: BTreeMap<String, Version> = BTreeMap::new();
        let txn = self.db.begin_read()?;
        let index = txn.open_table(BY_SEGMENT)?;
        // Versions only: a segment's values are never copied to list it.
        let kv = txn.open_table(KV_HEADS)?;
        for entry in index.range((segment, "")..)? {
            let (key, _) = entry?;
            let (seg, path) = key.value();
            if seg != segment {
                break;
            }
            let record = kv.get(path)?.ok_or_else(|| ReadError::Unindexed {
                path: path.to_owned(),
            })?;
            out.insert(path.to_owned(), record.value().version);
        }
        // Logged writes not checkpointed yet: newer than redb's, and keys redb may not have.
        for (path, fresh) in fresh {
            let version = out.entry(path).or_insert(fresh);
            *version = (*version).max(fresh);
        }
        Ok(out.into_iter().collect())
    }

    /// Whether the store works: the last commit succeeded and a read transaction opens.
    pub fn check(&self) -> Result<(), HealthError> {
        let failure = self
            .commit_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(failure) = failure {
            return Err(HealthError::CommitFailed(failure));
        }
        let txn = self.db.begin_read().map_err(ReadError::from)?;
        txn.open_table(META).map_err(ReadError::from)?;
        Ok(())
    }
}
