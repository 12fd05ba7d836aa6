//! What a node can say about the keys it does *not* hold, which tombstone garbage collection
//! depends on.
//!
//! Once a tombstone is collected, "deleted" and "never received" look the same: the key is just
//! absent. A node may treat an absent key as deleted only for records it is sure it would have
//! received: those stamped after the time since which it holds the cluster's data
//! (`complete_since_ms`: 0 for a node that founded the cluster, the bootstrap horizon for a node
//! that pulled only recent data) and no later than the newest tombstone it collected
//! (`purged_through_ms`, which is at least the grace period old, by which time every record has
//! spread). Outside that interval an absent key says nothing.

use serde::{Deserialize, Serialize};

/// The interval `(complete_since_ms, purged_through_ms]` over which a node vouches that a key it
/// lacks was deleted (empty when `purged_through_ms <= complete_since_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizon {
    /// The node holds every record stamped after this that the cluster did not delete
    /// (`u64::MAX` while a bootstrap has not completed: it vouches for nothing).
    pub complete_since_ms: u64,
    /// The newest timestamp of a tombstone it garbage-collected (0: none yet).
    pub purged_through_ms: u64,
}

impl Horizon {
    /// A node that founded its cluster: it has held everything from the start.
    pub const FOUNDER: Horizon = Horizon {
        complete_since_ms: 0,
        purged_through_ms: 0,
    };

    /// A node whose bootstrap has not completed: it vouches for nothing yet.
    pub const BOOTSTRAPPING: Horizon = Horizon {
        complete_since_ms: u64::MAX,
        purged_through_ms: 0,
    };

    /// Whether a record stamped `timestamp_ms`, for a key this node lacks, was deleted: a peer
    /// then forgets its copy, and this node refuses it (`storage::Applied::Obsolete`).
    pub fn vouches_deleted(&self, timestamp_ms: u64) -> bool {
        self.complete_since_ms < timestamp_ms && timestamp_ms <= self.purged_through_ms
    }

    /// Whether this node still waits for its bootstrap.
    pub fn bootstrapping(&self) -> bool {
        self.complete_since_ms == u64::MAX
    }

    /// This node's horizon after it found its keyspace identical to a peer's whose horizon is
    /// `peer`. Holding the same keys, it is as complete as the peer (the older bound), and a key
    /// both lack was deleted as surely as the later watermark says. The claim rests on what every
    /// watermark rests on: a record older than the grace period has reached every node.
    pub fn agreed_with(self, peer: Horizon) -> Horizon {
        Horizon {
            complete_since_ms: self.complete_since_ms.min(peer.complete_since_ms),
            purged_through_ms: self.purged_through_ms.max(peer.purged_through_ms),
        }
    }

    /// This node's horizon once its bootstrap from `since_ms` completed: complete since then,
    /// unless it already knew better (it may have agreed with a peer meanwhile).
    pub fn bootstrapped(self, since_ms: u64) -> Horizon {
        Horizon {
            complete_since_ms: self.complete_since_ms.min(since_ms),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(since: u64, through: u64) -> Horizon {
        Horizon {
            complete_since_ms: since,
            purged_through_ms: through,
        }
    }

    #[test]
    fn a_node_vouches_only_inside_its_interval() {
        let horizon = h(10, 20);
        assert!(
            !horizon.vouches_deleted(10),
            "at the completeness bound: unknown"
        );
        assert!(horizon.vouches_deleted(11));
        assert!(horizon.vouches_deleted(20));
        assert!(
            !horizon.vouches_deleted(21),
            "after the purges: may still be on its way"
        );
        assert!(!Horizon::FOUNDER.vouches_deleted(0));
        assert!((0..u64::MAX)
            .step_by(1 << 40)
            .all(|t| !Horizon::BOOTSTRAPPING.vouches_deleted(t)));
    }

    #[test]
    fn agreeing_nodes_take_the_older_completeness_and_the_newer_watermark() {
        assert_eq!(h(0, 5).agreed_with(h(3, 9)), h(0, 9));
        assert_eq!(h(3, 9).agreed_with(h(0, 5)), h(0, 9));
        assert_eq!(Horizon::BOOTSTRAPPING.agreed_with(h(7, 5)), h(7, 5));
        assert_eq!(
            Horizon::FOUNDER.agreed_with(Horizon::BOOTSTRAPPING),
            Horizon::FOUNDER
        );
        assert_eq!(Horizon::BOOTSTRAPPING.bootstrapped(7), h(7, 0));
        assert_eq!(
            h(0, 5).bootstrapped(7),
            h(0, 5),
            "already complete from earlier"
        );
    }
}
