//! What the HTTP handlers share: the node's identity and mode, and its storage handles.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::MembershipMsg;
use crate::metrics::NodeMetrics;
use crate::seam::{Addr, Clock};
use crate::storage::{StorageMsg, StorageReader};

/// A node's operating mode, as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Mode {
    /// Reads and writes.
    Normal,
    /// Client writes are refused; replication from peers is still applied.
    ReadOnly,
    /// A new node pulling the cluster's data: client writes get 503 until it caught up.
    Syncing,
}

impl Mode {
    /// The mode as `/health` and the logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::ReadOnly => "read_only",
            Mode::Syncing => "syncing",
        }
    }
}

/// The node's current mode, shared: the sync actor ends `Syncing`, handlers read it.
#[derive(Debug, Clone)]
pub struct SharedMode(Arc<AtomicU8>);

impl SharedMode {
    /// A cell holding `mode`.
    pub fn new(mode: Mode) -> SharedMode {
        SharedMode(Arc::new(AtomicU8::new(mode as u8)))
    }

    /// The mode now.
    pub fn get(&self) -> Mode {
        match self.0.load(Ordering::Acquire) {
            0 => Mode::Normal,
            1 => Mode::ReadOnly,
            2 => Mode::Syncing,
            other => unreachable!("mode {other} was never stored"),
        }
    }

    /// Changes the mode.
    pub fn set(&self, mode: Mode) {
        self.0.store(mode as u8, Ordering::Release);
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    /// This node's id.
    pub node_id: String,
    /// Normal, read-only, or syncing (changes once, when a bootstrap ends).
    pub mode: SharedMode,
    /// Largest accepted value, in bytes.
    pub value_bytes_max: usize,
    /// The node's clock (for `last_seen`, `uptime_s` and request latency).
    pub clock: Arc<dyn Clock>,
    /// The clock's monotonic reading when the node was assembled (for `uptime_s`).
    pub started: Duration,
    /// The storage writer.
    pub storage: Addr<StorageMsg>,
    /// The membership actor (`/members/`, `member_count`, leaving).
    pub membership: Addr<MembershipMsg>,
    /// Direct reads.
    pub reader: StorageReader,
    /// The node's metrics (`/metrics`, and the request counters updated here).
    pub metrics: Arc<NodeMetrics>,
    /// The conflict actor's recent decisions (`/conflicts/`).
    pub decisions: crate::sync::conflict::DecisionLog,
    /// Set once this node left the cluster (`POST /members/leave`): its peers no longer take
    /// its writes, so client writes are refused from then on.
    pub left: Arc<std::sync::atomic::AtomicBool>,
}
