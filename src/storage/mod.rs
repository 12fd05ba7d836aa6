//! Storage: a node's durable copy of the keyspace, on redb.
//!
//! * [`Store`] opens the database on whatever [`redb::StorageBackend`] the host chooses (a file in
//!   production, the simulator's crash-prone in-memory disk) and declares the tables once
//!   (`tables`).
//! * [`StorageActor`] is the only writer. It group-commits: the writes waiting in its mailbox are
//!   applied in one redb transaction and logged as one frame of the write-ahead log ([`Wal`]), and
//!   each caller is answered only after that frame is synced; redb itself is made durable at
//!   checkpoints, many batches at a time (the `wal` module says why).
//! * [`StorageReader`] serves reads from redb's MVCC snapshots on the caller's task: reads never enter
//!   the writer's mailbox, so they never wait behind a commit.
//!
//! Values are versioned records (`record`): deletes write tombstones that will replicate like any
//! write, and a time index (`by_time`) lists versions in timestamp order for bootstrap and catch-up.

mod actor;
mod error;
mod reader;
mod record;
mod store;
mod tables;
mod wal;

pub use actor::{DeleteOutcome, StorageActor, StorageMsg, Write, WriteResult};
pub use error::{StorageError, WriteError};
pub use reader::StorageReader;
pub use record::{Record, Version};
pub use store::Store;
pub use wal::{Wal, WalBatch};

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
