//! kvs-sim: the kvs simulator. The real actors and HTTP router run on madsim, where one seed
//! decides every interleaving, every delay and every fault, so a failure replays exactly.
//!
//! The crate exists only under `--cfg madsim` (it is empty otherwise, so a plain workspace build
//! skips it): `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test -p kvs-sim`, or
//! `just sim`; the root package's `tests/simulator.rs` runs that for a plain `cargo test`.
//!
//! * [`disk`]: an in-memory redb backend with a volatile write cache that a crash empties.
//! * [`clock`]: madsim's virtual time plus a per-node wall-clock offset (clock skew).
//! * [`node`]: one simulated machine running a kvs node; crash and reboot it.
//! * [`trace`]: the deterministic, human-readable timeline of a run and its stable hash.
//! * [`scenario`]: workloads with faults, and the invariants checked after them.
//! * [`scenario_file`]: the scenario files in `scenarios/` (workload and pinned seeds).
//! * [`sweep`]: running scenarios under pinned seeds, and replaying one.

#![cfg(madsim)]
// The simulator drives madsim's clock, network and tasks itself: the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod clock;
pub mod cluster;
pub mod disk;
pub mod node;
pub mod scenario;
pub mod scenario_file;
pub mod sweep;
pub mod trace;

pub use clock::SimClock;
pub use disk::{SimBackend, SimDisk};
pub use node::SimNode;
pub use scenario::{crash_durability, CrashWorkload, Outcome};
pub use trace::Trace;
