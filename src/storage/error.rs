//! Typed storage errors, one variant per family of redb failure.

use std::sync::Arc;

/// A failure inside redb or in the bytes it returned.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database could not be opened or created.
    #[error("opening the database: {0}")]
    Open(#[from] redb::DatabaseError),
    /// A transaction could not begin.
    #[error("beginning a transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    /// A table could not be opened.
    #[error("opening a table: {0}")]
    Table(#[from] redb::TableError),
    /// The transaction refused the durability we require.
    #[error("setting durability: {0}")]
    Durability(#[from] redb::SetDurabilityError),
    /// Reading or writing pages failed (I/O error, corruption).
    #[error("storage I/O: {0}")]
    Io(#[from] redb::StorageError),
    /// The commit did not reach the disk.
    #[error("committing: {0}")]
    Commit(#[from] redb::CommitError),
    /// The write-ahead log could not be read, written or synced.
    #[error("write-ahead log: {0}")]
    Wal(std::io::Error),
    /// The last commit failed; writes are failing until one succeeds.
    #[error("the last commit failed: {0}")]
    Failing(String),
    /// A stored record did not decode.
    #[error("corrupt record for {path:?}: {source}")]
    Corrupt {
        /// The key whose record is unreadable.
        path: String,
        /// The decoder's complaint.
        source: postcard::Error,
    },
}

/// Why a write was not made durable. Shared by every write of a failed batch, hence the `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The batch's transaction failed; none of its writes happened.
    #[error(transparent)]
    Storage(#[from] Arc<StorageError>),
}
