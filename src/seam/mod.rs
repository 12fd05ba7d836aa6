//! The actor seam: the only contact an actor has with the world outside its own state.
//!
//! Every component of a node with behaviour (storage, membership, sync; conflict resolution
//! next) is an [`Actor`]: private state, a typed message enum, a synchronous handler.
//! It is written once, against [`Context`], and runs on two hosts:
//!
//! * production: `host::ractor` puts each actor in a supervised ractor actor on tokio;
//! * simulation: `host::task` runs it as a madsim-tokio task, where one seed decides everything.
//!
//! Actor code never reads `std::time`, `tokio::time`, an OS RNG, a socket or a file: it asks its
//! context for the [`Clock`], the seeded RNG, timers and mailboxes. Clippy refuses such calls
//! outside `src/host/` and the binary's edge, in both builds (`clippy.toml`; `tests/seam_rules.rs`).
//!
//! The network is reached the same way as another actor: through an [`Addr`]. The membership
//! actor sends its datagrams to an `Addr<Outgoing>` and the sync actor its requests to an
//! `Addr<PeerRequest>`, both served by host glue (`host::gossip`, `host::frames`) over the
//! sockets (the OS's in production, madsim's in the simulator), which delivers what arrives as
//! messages; no actor knows which host carries its frames.

mod actor;
mod addr;
mod clock;
mod core;
mod reply;
#[cfg(test)]
pub mod testing;

pub use actor::{Actor, Context};
pub use addr::{Addr, Mailbox, SendError};
pub use clock::Clock;
pub use core::{ContextCore, ContextHost};
pub use reply::{reply_channel, AskError, Reply};
