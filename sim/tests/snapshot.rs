//! The crash scenario's trace for one pinned seed, snapshotted with insta into the repository's
//! `snapshots/` folder so that a change in behaviour shows up as a reviewable diff of the timeline.
//!
//! A deliberate change: `INSTA_UPDATE=always just sim` (or `cargo insta review`) and commit the new
//! snapshot. With `CI=true` a mismatch fails instead of writing.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use kvs_sim::{crash_durability, scenario_file, sweep};

#[test]
fn crash_scenario_trace() {
    let file = scenario_file::load("crash_trace");
    let outcome = sweep::run(file.seeds.first, crash_durability(file.workload));
    assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots"),
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!("crash_scenario_seed_1", outcome.trace.text());
    });
}
