//! The keyspaces, declared once as typed redb tables.

use redb::TableDefinition;

/// Key path → postcard-encoded [`crate::storage::Record`] (live value or tombstone).
pub const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// (version timestamp ms, key path) → (): every key's current version in time order, KVS's
/// `_ts:{timestamp}:{path}` index, for bootstrap and catch-up.
pub const BY_TIME: TableDefinition<(u64, &str), ()> = TableDefinition::new("by_time");

/// Node facts that must survive restarts.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `META` key: when this node first opened its database (ms); the conflict tie-breaker's "oldest node".
pub const META_JOINED_MS: &str = "joined_timestamp_ms";
