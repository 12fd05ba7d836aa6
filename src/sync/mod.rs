//! Anti-entropy: how two nodes find and repair the difference between their keyspaces.
//!
//! [`HashTree`] summarises a node's whole keyspace, tombstones included, as (key, version) pairs
//! hashed into segments, maintained incrementally by the storage writer on every write, so that
//! two nodes can compare roots, then branches, then segments, and exchange only the keys of the
//! segments that differ: repair costs what differs, not what is stored (the exchange comes next).
//!
//! [`SyncActor`] replicates: it pushes every local write to the live peers at once, with retries,
//! and applies theirs.

pub mod actor;
pub mod conflict;
mod counters;
mod link;
mod pace;
pub mod repair;
pub mod tree;

pub use actor::{SyncActor, SyncMsg};
pub use conflict::{ConflictActor, ConflictMsg};
pub use counters::{LagHistogram, SyncCounters};
pub use link::{PeerAnswer, PeerLink, PeerRequest, TransportError};
pub use pace::Pace;
pub use tree::{HashTree, BRANCHES, LEAVES_PER_BRANCH, SEGMENTS};
