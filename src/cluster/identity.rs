//! Who a member is, as SWIM (foca) sees it: its address, its `node_id`, the generation of this
//! boot and the time it first joined.
//!
//! * The **address** is the member's key: foca keeps one member per address, and it is both
//!   where its gossip goes (UDP) and its HTTP address (TCP), the same port number.
//! * The **generation** is persisted and bumped on every start (`Store::generation`), so a node
//!   that restarts comes back under its own id with a higher generation and wins over its stale
//!   self everywhere (`win_addr_conflict`); `renew` (rejoining after being declared down while
//!   alive) bumps it too.
//! * **`joined_timestamp`** travels with the identity: it decides conflict ties ("oldest node"),
//!   so every node must know every other's.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::limits::NODE_ID_BYTES_MAX;

/// A member's identity in the membership protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Gossip and HTTP address (same port number, UDP and TCP).
    pub addr: SocketAddr,
    /// The node's configured id (empty for a seed not met yet).
    pub node_id: String,
    /// Bumped on every start and every renewal; the higher one is the live incarnation.
    pub generation: u64,
    /// When the node first opened its data directory (ms since the epoch).
    pub joined_ms: u64,
}

/// Largest encoding of an identity: postcard's varints and length prefix at their widest.
pub const IDENTITY_BYTES_MAX: usize = SOCKET_ADDR_BYTES_MAX + 3 + NODE_ID_BYTES_MAX + 10 + 10;
/// An IPv6 socket address in postcard: variant, 16 bytes, port varint, flowinfo and scope id
/// are not serialized by serde's `SocketAddrV6` (address and port only).
const SOCKET_ADDR_BYTES_MAX: usize = 1 + 16 + 3;

impl NodeIdentity {
    /// The placeholder for a seed known only by address: foca accepts an announce whose
    /// destination has the receiver's address, whatever the rest says.
    pub fn seed(addr: SocketAddr) -> NodeIdentity {
        NodeIdentity {
            addr,
            node_id: String::new(),
            generation: 0,
            joined_ms: 0,
        }
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity {
            generation: self.generation.saturating_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, &self.node_id) > (adversary.generation, &adversary.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn widest() -> NodeIdentity {
        NodeIdentity {
            addr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                .parse()
                .unwrap(),
            node_id: "\u{10FFFF}".repeat(NODE_ID_BYTES_MAX / 4) + "nnn",
            generation: u64::MAX,
            joined_ms: u64::MAX,
        }
    }

    #[test]
    fn the_widest_identity_fits_its_bound() {
        let id = widest();
        assert_eq!(id.node_id.len(), NODE_ID_BYTES_MAX);
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert!(bytes.len() <= IDENTITY_BYTES_MAX, "{} bytes", bytes.len());
    }

    #[test]
    fn a_restarted_or_renewed_node_wins_over_its_stale_self() {
        let a = NodeIdentity {
            generation: 3,
            ..NodeIdentity::seed("127.0.0.1:1".parse().unwrap())
        };
        let b = a.renew().unwrap();
        assert_eq!(b.generation, 4);
        assert!(b.win_addr_conflict(&a) && !a.win_addr_conflict(&b));
        assert_eq!(a.addr(), b.addr());
    }
}
