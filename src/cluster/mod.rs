//! The cluster: who is in it (membership), how its nodes authenticate each other (the cluster
//! secret and the envelope), and what the network did (counters).
//!
//! Everything here is written once for both worlds: the membership actor runs on the seam, and
//! the socket glue that feeds it (`host::gossip`) uses `tokio::net`, which is madsim's network in
//! the simulator.

pub mod counters;
pub mod envelope;
pub mod frame;
pub mod identity;
pub mod membership;
pub mod secret;

pub use counters::NetCounters;
pub use envelope::{Rejected, Sealer};
pub use identity::NodeIdentity;
pub use membership::{
    Member, MemberStatus, MembershipActor, MembershipMsg, MembershipSpec, Outgoing,
};
pub use secret::{ClusterSecret, SecretError};
