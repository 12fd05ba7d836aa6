//! Opening the store on host-chosen backends: the database, its write-ahead log, and the replay
//! that brings the database up to date with the log after a crash.

use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableTable, StorageBackend};

use super::memtable::Memtable;
use super::tables::{put_record, read_record, BY_TIME, KV, META, META_JOINED_MS, META_WAL_SEQ};
use super::wal::Wal;
use super::{StorageError, StorageReader};

/// An open database shared by the writer actor and the readers. The database closes cleanly when
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
    memtable: Memtable,
    commit_failure: CommitFailure,
}

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
    ) -> Result<(Store, Wal), StorageError> {
        let db = Database::builder().create_with_backend(db)?;
        let (mut wal, logged) = Wal::open(wal).map_err(StorageError::Wal)?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let replayed = {
            let mut kv = txn.open_table(KV)?;
            let mut index = txn.open_table(BY_TIME)?;
            let mut meta = txn.open_table(META)?;
            if meta.get(META_JOINED_MS)?.is_none() {
                meta.insert(META_JOINED_MS, now_ms)?;
            }
            let applied = meta.get(META_WAL_SEQ)?.map_or(0, |v| v.value());
            let mut replayed = 0;
            for batch in logged.iter().filter(|b| b.seq > applied) {
                for (path, record) in &batch.records {
                    let previous_ms = read_record(&kv, path)?.map(|r| r.version.timestamp_ms);
                    put_record(&mut kv, &mut index, path, previous_ms, record)?;
                }
                meta.insert(META_WAL_SEQ, batch.seq)?;
                replayed += 1;
            }
            wal.continue_after(applied);
            replayed
        };
        txn.commit()?;
        // Everything logged is in the durable database now.
        wal.reset();
        if replayed > 0 {
            tracing::info!(batches = replayed, "replayed the write-ahead log");
        }
        let store = Store {
            db: Arc::new(db),
            memtable: Memtable::default(),
            commit_failure: CommitFailure::default(),
        };
        Ok((store, wal))
    }

    /// A read handle: cheap, cloneable, never blocked by the writer.
    pub fn reader(&self) -> StorageReader {
        StorageReader::new(
            Arc::clone(&self.db),
            self.memtable.clone(),
            Arc::clone(&self.commit_failure),
        )
    }

    pub(super) fn db(&self) -> &Database {
        &self.db
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
