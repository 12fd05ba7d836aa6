//! Opening the database on a host-chosen backend and preparing its tables.

use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend};

use super::tables::{BY_TIME, KV, META, META_JOINED_MS};
use super::{StorageError, StorageReader};

/// An open database shared by the writer actor and the readers. The database closes cleanly when
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
}

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
        Ok(Store { db: Arc::new(db) })
    }

    /// A read handle: cheap, cloneable, never blocked by the writer.
    pub fn reader(&self) -> StorageReader {
        StorageReader::new(Arc::clone(&self.db))
    }

    pub(super) fn db(&self) -> &Database {
        &self.db
    }

    /// Whether the database is readable right now (for health checks).
    pub fn check(&self) -> Result<(), StorageError> {
        self.db.begin_read()?.open_table(META)?;
        Ok(())
    }
}
