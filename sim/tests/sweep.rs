//! The crash-durability sweep: the crash scenario under pinned seeds, or under the one seed in
//! `KVS_SIM_SEED` (`just replay crash_sweep <seed>`). A failure names its seeds.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use kvs_sim::{crash_durability, scenario_file, sweep};

#[test]
fn acknowledged_writes_survive_crashes_under_every_pinned_seed() {
    // Seeds and workload: scenarios/crash_sweep.yaml (widen its seeds to search further).
    let file = scenario_file::load("crash_sweep");
    let seeds = sweep::seeds(file.seeds.range());
    sweep::sweep("crash_sweep", &seeds, || crash_durability(file.workload));
}
