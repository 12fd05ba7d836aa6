//! Opening the database on a host-chosen backend and preparing its tables.

use std::sync::{Arc, Mutex};

use redb::{Database, ReadableTable, StorageBackend};

use super::tables::{BY_TIME, KV, META, META_JOINED_MS};
use super::{StorageError, StorageReader};

/// An open database shared by the writer actor and the readers. The database closes cleanly when
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
    commit_failure: CommitFailure,
}

/// The last commit's failure, if it failed: the writer sets it, health checks read it.
pub(super) type CommitFailure = Arc<Mutex<Option<String>>>;

impl Store {
    /// Opens (or creates) the database on `backend`, creates missing tables and records the node's
    /// `joined_timestamp` (`now_ms`) the first time. One durable transaction; safe to call after a
    /// crash (redb repairs an unclean file on open).
    pub fn open(backend: impl StorageBackend, now_ms: u64) -> Result<Store, StorageError> {
        let db = Database::builder().create_with_backend(backend)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(KV)?;
            txn.open_table(BY_TIME)?;
            let mut meta = txn.open_table(META)?;
            if meta.get(META_JOINED_MS)?.is_none() {
                meta.insert(META_JOINED_MS, now_ms)?;
            }
        }
        txn.commit()?;
        Ok(Store {
            db: Arc::new(db),
            commit_failure: CommitFailure::default(),
        })
    }

    /// A read handle: cheap, cloneable, never blocked by the writer.
    pub fn reader(&self) -> StorageReader {
        StorageReader::new(Arc::clone(&self.db), Arc::clone(&self.commit_failure))
    }

    pub(super) fn db(&self) -> &Database {
        &self.db
    }

    /// Records the outcome of a commit for health checks.
    pub(super) fn set_commit_failure(&self, failure: Option<String>) {
        *self
            .commit_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = failure;
    }
}
