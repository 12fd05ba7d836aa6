//! Storage: a node's durable copy of the keyspace, on redb.
//!
//! * [`Store`] opens the database on whatever [`redb::StorageBackend`] the host chooses (a file in
//!   production, the simulator's crash-prone in-memory disk) and declares the tables once
//!   (`tables`).
//! * [`StorageActor`] is the only writer. It group-commits: the writes waiting in its mailbox are
//!   logged as one frame of the write-ahead log ([`Wal`]), and only after that frame is synced are
//!   they published in the memtable and their callers answered (a batch of peers' records only
//!   is published at once and synced soon after). At checkpoints the memtable goes
//!   into redb in one durable transaction and the log starts over (the `wal` and `memtable`
//!   modules say why).
//! * [`StorageReader`] serves reads on the caller's task, from the memtable and then from redb's
//!   MVCC snapshots: reads never enter the writer's mailbox, so they never wait behind a commit.
//!
//! Values are versioned records (`record`): deletes write tombstones that will replicate like any
//! write, and a time index (`by_time`) lists versions in timestamp order for bootstrap and catch-up.

mod actor;
mod error;
mod horizon;
mod memtable;
mod reader;
mod record;
mod store;
mod tables;
mod wal;

pub use actor::{
    applying, Applied, Collision, DeleteOutcome, HorizonChange, PurgeCounters, StorageActor,
    StorageMsg, Write, WriteResult, BATCH_BYTES_MAX, BATCH_WRITES_MAX, PURGE_KEYS_MAX,
    WRITE_BYTES_MAX,
};
pub use error::{CommitError, HealthError, OpenError, ReadError, WriteError};
pub use horizon::Horizon;
pub use reader::{PointReads, StorageReader};
pub use record::{Record, RecordHead, Resolution, Version};
pub use store::Store;
pub use tables::MEMBERS_REMEMBERED_MAX;
pub use wal::{Wal, WalBatch, FRAME_BYTES_MAX, RECORD_OVERHEAD_BYTES_MAX};

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
