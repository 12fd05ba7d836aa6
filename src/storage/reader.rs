//! Reads straight from redb's MVCC snapshots, off the writer's path.

use std::sync::Arc;

use redb::{Database, ReadableDatabase};

use super::store::CommitFailure;
use super::tables::{BY_TIME, KV, META, META_JOINED_MS};
use super::{Record, StorageError};

/// A read handle on the store. Each call opens a read transaction: a consistent snapshot of the
/// last committed state, which a concurrent commit neither blocks nor changes.
#[derive(Clone, Debug)]
pub struct StorageReader {
    db: Arc<Database>,
    commit_failure: CommitFailure,
}

impl StorageReader {
    pub(super) fn new(db: Arc<Database>, commit_failure: CommitFailure) -> Self {
        StorageReader { db, commit_failure }
    }

    /// The record for `path` (live or tombstone), if this node has ever seen the key.
    pub fn get(&self, path: &str) -> Result<Option<Record>, StorageError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        let Some(bytes) = table.get(path)? else {
            return Ok(None);
        };
        Record::decode(bytes.value())
            .map(Some)
            .map_err(|source| StorageError::Corrupt {
                path: path.to_owned(),
                source,
            })
    }

    /// Up to `limit` records whose version is after the cursor `(timestamp_ms, path)`, in time
    /// order: the catch-up and bootstrap feed. Pass the last returned pair as the next cursor.
    pub fn since(
        &self,
        after: (u64, &str),
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StorageError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(BY_TIME)?;
        let kv = txn.open_table(KV)?;
        let mut out = Vec::new();
        for entry in index.range(after..)? {
            if out.len() == limit {
                break;
            }
            let (key, _) = entry?;
            let (ts, path) = key.value();
            if (ts, path) == after {
                continue;
            }
            let bytes = kv.get(path)?.ok_or_else(|| StorageError::Corrupt {
                path: path.to_owned(),
                source: postcard::Error::DeserializeUnexpectedEnd,
            })?;
            let record = Record::decode(bytes.value()).map_err(|source| StorageError::Corrupt {
                path: path.to_owned(),
                source,
            })?;
            out.push((path.to_owned(), record));
        }
        Ok(out)
    }

    /// Whether the store works: the last commit succeeded and a read transaction opens.
    pub fn check(&self) -> Result<(), StorageError> {
        let failure = self
            .commit_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(failure) = failure {
            return Err(StorageError::Failing(failure));
        }
        self.db.begin_read()?.open_table(META)?;
        Ok(())
    }

    /// When this node first opened its database (ms since the epoch).
    pub fn joined_timestamp_ms(&self) -> Result<u64, StorageError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(META_JOINED_MS)?.map(|v| v.value()).unwrap_or(0))
    }
}
