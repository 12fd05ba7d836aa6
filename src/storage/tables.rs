//! The keyspaces, declared once as typed redb tables.

use redb::{ReadableTable, Table, TableDefinition};

use super::{Record, StorageError};

/// Key path → postcard-encoded [`crate::storage::Record`] (live value or tombstone).
pub const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// (version timestamp ms, key path) → (): every key's current version in time order, KVS's
/// `_ts:{timestamp}:{path}` index, for bootstrap and catch-up.
pub const BY_TIME: TableDefinition<(u64, &str), ()> = TableDefinition::new("by_time");

/// Node facts that must survive restarts.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `META` key: the sequence number of the last write-ahead-log batch included in the last durable
/// commit; replay after a crash starts above it.
pub const META_WAL_SEQ: &str = "wal_applied_seq";

/// `META` key: when this node first opened its database (ms); the conflict tie-breaker's "oldest node".
pub const META_JOINED_MS: &str = "joined_timestamp_ms";

/// The record stored under `path`, decoded.
pub fn read_record(kv: &Table<&str, &[u8]>, path: &str) -> Result<Option<Record>, StorageError> {
    let found = kv.get(path)?;
    found
        .map(|bytes| Record::decode(bytes.value()))
        .transpose()
        .map_err(|source| StorageError::Corrupt {
            path: path.to_owned(),
            source,
        })
}

/// Stores `record` under `path` and moves the key's time-index entry from the version it replaces
/// (timestamp `previous_ms`, if the key had one).
pub fn put_record(
    kv: &mut Table<&str, &[u8]>,
    index: &mut Table<(u64, &str), ()>,
    path: &str,
    previous_ms: Option<u64>,
    record: &Record,
) -> Result<(), StorageError> {
    if let Some(previous_ms) = previous_ms {
        index.remove((previous_ms, path))?;
    }
    index.insert((record.version.timestamp_ms, path), ())?;
    kv.insert(path, record.encode().as_slice())?;
    Ok(())
}
