//! Typed storage errors, one enum per family of operation as redb has them: opening the store,
//! reading it, committing to it; plus what a writer's caller and a health check are told.

use std::sync::Arc;

use super::actor::WRITE_BYTES_MAX;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the database open (its lock is taken).
    #[error("the database is open in another process")]
    InUse,
    /// The database file could not be opened or created.
    #[error("opening the database: {0}")]
    Database(#[from] redb::DatabaseError),
    /// The data directory was written by a build with another storage format.
    #[error("the data directory holds storage format {found}, and this build reads format {expected}: start it with the kvs that wrote it, or with an empty data_dir")]
    Format {
        /// The format found on disk.
        found: u64,
        /// The format this build reads and writes.
        expected: u64,
    },
    /// The write-ahead log could not be read.
    #[error("reading the write-ahead log: {0}")]
    Wal(std::io::Error),
    /// Applying the log's batches (or recording the node's join time) did not commit.
    #[error("replaying the write-ahead log: {0}")]
    Replay(#[from] CommitError),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A read transaction could not begin.
    #[error("beginning a read: {0}")]
    Transaction(#[from] redb::TransactionError),
    /// A table could not be opened.
    #[error("opening a table: {0}")]
    Table(#[from] redb::TableError),
    /// Reading pages failed (I/O error, corruption).
    #[error("storage I/O: {0}")]
    Io(#[from] redb::StorageError),
    /// The time index names a key that has no record: the two tables disagree.
    #[error("the time index lists {path:?}, which has no record")]
    Unindexed {
        /// The key the index names.
        path: String,
    },
}

/// Why a group commit or a checkpoint did not become durable.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Reading the versions the batch replaces failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The write-ahead log could not be written or synced, or refused the frame.
    #[error("write-ahead log: {0}")]
    Wal(std::io::Error),
    /// A write transaction could not begin.
    #[error("beginning a transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    /// A table could not be opened.
    #[error("opening a table: {0}")]
    Table(#[from] redb::TableError),
    /// The transaction refused the durability we require.
    #[error("setting durability: {0}")]
    Durability(#[from] redb::SetDurabilityError),
    /// Writing pages failed.
    #[error("storage I/O: {0}")]
    Io(#[from] redb::StorageError),
    /// The commit did not reach the disk.
    #[error("committing: {0}")]
    Commit(#[from] redb::CommitError),
}

/// Why `StorageReader::check` finds the store unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The last commit failed; the writer has stopped.
    #[error("the last commit failed: {0}")]
    CommitFailed(String),
    /// The database does not answer reads.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Why a write was not made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The batch's commit failed; none of its writes happened. Shared by every write of the
    /// batch, hence the `Arc`.
    #[error(transparent)]
    Commit(#[from] Arc<CommitError>),
    /// Key and value together exceed what one write may carry; nothing was written.
    #[error("write of {size_bytes} bytes exceeds the limit of {WRITE_BYTES_MAX}")]
    TooLarge {
        /// Key path plus value bytes.
        size_bytes: usize,
    },
}
