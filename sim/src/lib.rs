//! kvs-sim: the kvs simulator. The real actors and HTTP router run on madsim, where one seed
//! decides every interleaving, every delay and every fault, so a failure replays exactly.
//!
//! The crate exists only under `--cfg madsim` (it is empty otherwise, so a plain workspace build
//! skips it): `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test -p kvs-sim`, or
//! `just sim`; the root package's `tests/simulator.rs` runs that for a plain `cargo test`.
//!
//! * [`disk`]: an in-memory redb backend with a volatile write cache that a crash empties, wholly
//!   or in part (unsynced writes lost, kept or torn, as the seed decides).
//! * [`clock`]: madsim's virtual time plus a per-node wall-clock offset and drift (clock skew).
//! * [`node`]: one simulated machine running a kvs node; crash, reboot, power off, pause it.
//! * [`stall`]: TCP stalls: a machine's frame connections stop moving bytes, gossip still flows.
//! * [`cluster`]: cluster scenarios: N nodes, clients, a fault schedule, the invariants.
//! * [`trace`]: the deterministic, human-readable timeline of a run and its stable hash.
//! * [`timeline`]: the nodes' own reports (membership, decisions) added to the timeline.
//! * [`html`]: a timeline as a self-contained HTML page, a lane per node.
//! * [`scenario`]: workloads with faults, and the invariants checked after them.
//! * [`scenario_file`]: the scenario files in `scenarios/` (workload and pinned seeds).
//! * [`sweep`]: running scenarios under pinned seeds, and replaying one.

#![cfg(madsim)]
// The simulator drives madsim's clock, network and tasks itself: the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod clock;
pub mod cluster;
pub mod disk;
pub mod html;
pub mod node;
pub mod scenario;
pub mod scenario_file;
pub mod stall;
pub mod sweep;
pub mod timeline;
pub mod trace;

pub use clock::SimClock;
pub use disk::{SimBackend, SimDisk};
pub use node::SimNode;
pub use scenario::{crash_durability, CrashWorkload, Outcome};
pub use trace::Trace;
