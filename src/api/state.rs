//! What the HTTP handlers share: the node's identity and mode, and its storage handles.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::seam::{Addr, Clock};
use crate::storage::{StorageMsg, StorageReader};

/// A node's operating mode, as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Reads and writes.
    Normal,
    /// Client writes are refused; replication from peers is still applied.
    ReadOnly,
}

impl Mode {
    /// The mode as `/health` and the logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::ReadOnly => "read_only",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster member as `/members/` lists it (KVS's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The node's unique id.
    pub id: String,
    /// `host:port` where peers and clients reach it.
    pub address: String,
    /// When this node last heard from it (ms since the epoch).
    pub last_seen: u64,
    /// When it first joined (ms since the epoch); the oldest member breaks conflict ties.
    pub joined_timestamp: u64,
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    /// This node's id.
    pub node_id: String,
    /// The address this node advertises.
    pub address: String,
    /// When this node first opened its store (ms).
    pub joined_timestamp_ms: u64,
    /// Normal or read-only.
    pub mode: Mode,
    /// Largest accepted value, in bytes.
    pub value_bytes_max: usize,
    /// The node's clock (for `last_seen`, `uptime_s` and request latency).
    pub clock: Arc<dyn Clock>,
    /// The clock's monotonic reading when the node was assembled (for `uptime_s`).
    pub started: Duration,
    /// The storage writer.
    pub storage: Addr<StorageMsg>,
    /// Direct reads.
    pub reader: StorageReader,
}
