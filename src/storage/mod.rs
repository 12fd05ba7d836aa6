//! Storage: a node's durable copy of the keyspace, on redb.
//!
//! * [`Store`] opens the database on whatever [`redb::StorageBackend`] the host chooses (a file in
//!   production, the simulator's crash-prone in-memory disk) and declares the tables once
//!   (`tables`).
//! * [`StorageActor`] is the only writer. It group-commits: every write waiting in its mailbox joins
//!   one durable transaction, and each caller is answered only after that transaction is on disk.
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

pub use actor::{DeleteOutcome, StorageActor, StorageMsg, WriteResult};
pub use error::{StorageError, WriteError};
pub use reader::StorageReader;
pub use record::{Record, Version};
pub use store::Store;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
