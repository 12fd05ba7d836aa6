//! Writes that are durable in the write-ahead log but not yet in redb: the newest record per key.
//!
//! Applying each group commit to redb's B-trees cost more than its log sync (about 20 µs per write,
//! measured), so a batch goes to the log and then here, and redb receives the memtable's contents
//! at checkpoints, sorted by key and with overwritten versions already gone. Readers look here
//! first. A client's batch enters only after its log frame is synced; a batch of peers' records
//! enters once logged, and is synced soon after (`actor::PEER_RECORDS_SYNC_DELAY`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{Record, RecordHead, Version};

/// Shared between the writer (inserts, drains at checkpoints) and the readers (lookups).
#[derive(Clone, Debug, Default)]
pub struct Memtable(Arc<RwLock<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<String, Record>,
    /// How many times it was cleared (checkpoints): a reader that pairs it with a redb
    /// snapshot checks that no checkpoint came between (`reader::PointReads`).
    clears: u64,
}

impl Memtable {
    /// The newest logged record for `path` not yet in redb.
    pub fn get(&self, path: &str) -> Option<Record> {
        self.read().records.get(path).cloned()
    }

    /// The head of the newest logged record for `path` not yet in redb (no value copied).
    pub fn head(&self, path: &str) -> Option<RecordHead> {
        self.read().records.get(path).map(Record::head)
    }

    /// How many times it was cleared so far.
    pub fn clears(&self) -> u64 {
        self.read().clears
    }

    /// Adds a synced batch, in commit order (a later record of a key replaces an earlier one).
    /// Panics if a record is not newer than the one it replaces: the writer's hybrid clock makes
    /// every version of a key newer than the last, and a reader must never see one go back.
    pub fn insert(&self, records: impl IntoIterator<Item = (String, Record)>) {
        let mut inner = self.write();
        let map = &mut inner.records;
        for (path, record) in records {
            if let Some(previous) = map.get(&path) {
                assert!(
                    previous.version < record.version,
                    "version of {path:?} would go back from {:?} to {:?}",
                    previous.version,
                    record.version
                );
            }
            map.insert(path, record);
        }
    }

    /// The versions of the records whose key `keep` accepts, in key order (no value copied).
    pub fn versions_matching(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Version)> {
        self.read()
            .records
            .iter()
            .filter(|(path, _)| keep(path))
            .map(|(path, record)| (path.clone(), record.version))
            .collect()
    }

    /// Every record, sorted by key (for a checkpoint or a time-ordered read).
    pub fn snapshot(&self) -> Vec<(String, Record)> {
        self.read()
            .records
            .iter()
            .map(|(path, record)| (path.clone(), record.clone()))
            .collect()
    }

    /// Forgets everything, once it is durable in redb.
    pub fn clear(&self) {
        let mut inner = self.write();
        inner.records.clear();
        inner.clears += 1;
    }

    /// Whether any record satisfies `test`.
    pub fn any(&self, test: impl Fn(&Record) -> bool) -> bool {
        self.read().records.values().any(test)
    }

    /// Whether it holds nothing (right after a checkpoint).
    pub fn is_empty(&self) -> bool {
        self.read().records.is_empty()
    }

    // A panic while holding the lock cannot leave the map half-updated (each operation is one
    // BTreeMap call), so a poisoned lock is still consistent.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}
