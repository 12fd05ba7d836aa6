//! The keyspaces, declared once as typed redb tables, and the one way records are written to them.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{CommitError, Record};
use crate::sync::HashTree;

/// `key`'s segment, as the index stores it.
pub fn segment_of(key: &str) -> u16 {
    u16::try_from(HashTree::segment_of(key)).expect("SEGMENTS fits a u16")
}

/// Key path → [`Record`] (live value or tombstone), a typed redb value.
pub const KV: TableDefinition<&str, Record> = TableDefinition::new("kv");

/// (version timestamp ms, key path) → (): every key's current version in time order, KVS's
/// `_ts:{timestamp}:{path}` index, for bootstrap and catch-up.
pub const BY_TIME: TableDefinition<(u64, &str), ()> = TableDefinition::new("by_time");

/// (hash-tree segment, key path) → (): every key by its anti-entropy segment
/// (`sync::HashTree::segment_of`), so that a segment's keys are listed without a scan.
pub const BY_SEGMENT: TableDefinition<(u16, &str), ()> = TableDefinition::new("by_segment");

/// Node facts that must survive restarts.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `META` key: the sequence number of the last write-ahead-log batch included in the last durable
/// commit; replay after a crash starts above it.
pub const META_WAL_SEQ: &str = "wal_applied_seq";

/// `META` key: when this node first opened its database (ms); the conflict tie-breaker's "oldest node".
pub const META_JOINED_MS: &str = "joined_timestamp_ms";

/// `META` key: the storage format the database and its log are written in ([`FORMAT`]).
pub const META_FORMAT: &str = "format";

/// The storage format this build reads and writes. 2: versions carry conflict decisions. A
/// database without the key is format 1 if it was ever opened (it has a generation).
pub const FORMAT: u64 = 2;

/// `META` key: how many times this database was opened: the node's generation, bumped durably on
/// every start, so that a restarted node's identity beats its previous boot's in the membership
/// protocol.
pub const META_GENERATION: &str = "generation";

/// Writes `records` in order, each replacing its key's record and moving the key's time-index entry.
/// The one path by which records reach redb: log replay at open and checkpoints both use it.
///
/// Panics if a record is not newer than the one it replaces: versions of a key only move forward
/// on a node (the writer's hybrid clock guarantees it for local writes), so an older one here means
/// the log and the database disagree about history, and writing it would lose a newer write.
pub fn apply_records<'r>(
    txn: &WriteTransaction,
    records: impl IntoIterator<Item = (&'r str, &'r Record)>,
) -> Result<(), CommitError> {
    let mut kv = txn.open_table(KV)?;
    let mut index = txn.open_table(BY_TIME)?;
    let mut segments = txn.open_table(BY_SEGMENT)?;
    for (path, record) in records {
        let previous = kv.get(path)?.map(|stored| stored.value());
        if previous.is_none() {
            segments.insert((segment_of(path), path), ())?;
        }
        if let Some(previous) = previous {
            assert!(
                previous.version < record.version,
                "version of {path:?} would go back from {:?} to {:?}",
                previous.version,
                record.version
            );
            index.remove((previous.version.timestamp_ms, path))?;
        }
        index.insert((record.version.timestamp_ms, path), ())?;
        kv.insert(path, record)?;
    }
    Ok(())
}
