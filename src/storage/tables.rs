//! The keyspaces, declared once as typed redb tables, and the one way records are written to them.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::record::StoredHead;
use super::{CommitError, ReadError, Record, Version};
use crate::sync::HashTree;

/// `key`'s segment, as the index stores it.
pub fn segment_of(key: &str) -> u16 {
    u16::try_from(HashTree::segment_of(key)).expect("SEGMENTS fits a u16")
}

/// Key path → [`Record`] (live value or tombstone), a typed redb value.
pub const KV: TableDefinition<&str, Record> = TableDefinition::new("kv");
/// [`KV`] read for records' heads only ([`StoredHead`]: version, tombstone), never written.
pub const KV_HEADS: TableDefinition<&str, StoredHead> = TableDefinition::new("kv");

/// (version timestamp ms, key path) → (): every key's current version in time order, KVS's
/// `_ts:{timestamp}:{path}` index, for bootstrap and catch-up.
pub const BY_TIME: TableDefinition<(u64, &str), ()> = TableDefinition::new("by_time");

/// (hash-tree segment, key path) → (): every key by its anti-entropy segment
/// (`sync::HashTree::segment_of`), so that a segment's keys are listed without a scan.
pub const BY_SEGMENT: TableDefinition<(u16, &str), ()> = TableDefinition::new("by_segment");

/// (tombstone timestamp ms, key path) → (): every key whose current record is a tombstone, oldest
/// first, so that garbage collection finds the expired ones without scanning live keys.
pub const TOMBSTONES: TableDefinition<(u64, &str), ()> = TableDefinition::new("tombstones");

/// Gossip address (`host:port`) → (): the cluster members this node knew last (alive, suspect or
/// dead, not departed), so that a restarted node rejoins through them even with no seed nodes
/// configured (a cluster's founding node). At most [`MEMBERS_REMEMBERED_MAX`].
pub const MEMBERS: TableDefinition<&str, ()> = TableDefinition::new("members");

/// Most members remembered: a joining node announces itself to a few of them at a time, and any
/// one that answers tells it the rest.
pub const MEMBERS_REMEMBERED_MAX: usize = 256;

/// Node facts that must survive restarts.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `META` key: the sequence number of the last write-ahead-log batch included in the last durable
/// commit; replay after a crash starts above it.
pub const META_WAL_SEQ: &str = "wal_applied_seq";

/// `META` key: when this node first opened its database (ms); the conflict tie-breaker's "oldest node".
pub const META_JOINED_MS: &str = "joined_timestamp_ms";

/// `META` key: the storage format the database and its log are written in ([`FORMAT`]).
pub const META_FORMAT: &str = "format";

/// The storage format this build writes. 2: versions carry conflict decisions; 3: the
/// `TOMBSTONES` index (built once when a format-2 database is opened). A database without the
/// key is format 1 if it was ever opened (it has a generation).
pub const FORMAT: u64 = 3;

/// The oldest format this build opens (upgrading it to [`FORMAT`]).
pub const FORMAT_MIN: u64 = 2;

/// `META` key: the newest timestamp of a tombstone this node garbage-collected
/// ([`super::Horizon::purged_through_ms`]).
pub const META_PURGED_MS: &str = "purged_through_ms";

/// `META` key: since when this node holds the cluster's data ([`super::Horizon::complete_since_ms`];
/// absent: 0, a founding node's).
pub const META_COMPLETE_SINCE_MS: &str = "complete_since_ms";

/// `META` key: the node's generation, bumped durably on every start, so that a restarted node's
/// identity beats its previous boot's in the membership protocol, and raised by a running node
/// that was declared down while alive and rejoined under a new one (`Store::remember_members`).
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
    let mut tombstones = txn.open_table(TOMBSTONES)?;
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
            if previous.is_tombstone() {
                tombstones.remove((previous.version.timestamp_ms, path))?;
            }
        }
        index.insert((record.version.timestamp_ms, path), ())?;
        if record.is_tombstone() {
            tombstones.insert((record.version.timestamp_ms, path), ())?;
        }
        kv.insert(path, record)?;
    }
    Ok(())
}

/// Removes each key of `records` whose record is still at the given version, from every table;
/// returns the records removed. Garbage collection of tombstones and forgetting records a peer
/// proved deleted both go through here, after a checkpoint (so redb alone holds the keys).
pub fn remove_records<'r>(
    txn: &WriteTransaction,
    records: impl IntoIterator<Item = (&'r str, &'r Version)>,
) -> Result<Vec<(String, Record)>, CommitError> {
    let mut kv = txn.open_table(KV)?;
    let mut index = txn.open_table(BY_TIME)?;
    let mut segments = txn.open_table(BY_SEGMENT)?;
    let mut tombstones = txn.open_table(TOMBSTONES)?;
    let mut removed = Vec::new();
    for (path, version) in records {
        let Some(current) = kv.get(path)?.map(|stored| stored.value()) else {
            continue;
        };
        if current.version != *version {
            continue;
        }
        kv.remove(path)?;
        index.remove((version.timestamp_ms, path))?;
        segments.remove((segment_of(path), path))?;
        if current.is_tombstone() {
            tombstones.remove((version.timestamp_ms, path))?;
        }
        removed.push((path.to_owned(), current));
    }
    Ok(removed)
}

/// The keys whose tombstones are stamped before `before_ms`, with their versions, oldest first,
/// at most `limit`.
pub fn expired_tombstones(
    db: &Database,
    before_ms: u64,
    limit: usize,
) -> Result<Vec<(String, Version)>, ReadError> {
    let txn = db.begin_read()?;
    let tombstones = match txn.open_table(TOMBSTONES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let kv = txn.open_table(KV)?;
    let mut out = Vec::new();
    for entry in tombstones.range(..(before_ms, ""))?.take(limit) {
        let (key, _) = entry?;
        let (_, path) = key.value();
        let record = kv
            .get(path)?
            .map(|stored| stored.value())
            .filter(Record::is_tombstone)
            .ok_or_else(|| ReadError::Unindexed {
                path: path.to_owned(),
            })?;
        out.push((path.to_owned(), record.version));
    }
    Ok(out)
}
