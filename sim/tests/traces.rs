//! Every scenario's first pinned seed: its timeline is snapshotted with insta into the
//! repository's `snapshots/` folder (`<scenario>_seed_<seed>.snap`), so that a change in
//! behaviour shows up as a reviewable diff of faults, client operations, membership, decisions
//! and convergence. (Every pinned seed also runs twice in the sweeps, `sweep::sweep`, which
//! compare the two timelines line for line.)
//!
//! A deliberate change: `just review` (cargo-insta) or `INSTA_UPDATE=always cargo test`, then
//! commit the new snapshots. With `CI=true` a mismatch fails instead of writing.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use kvs_sim::scenario_file;

#[test]
fn every_scenarios_first_seed_matches_its_snapshot() {
    for name in scenario_file::names() {
        let seed = scenario_file::first_seed(&name);
        let (first, _) = scenario_file::run_named(&name, seed);
        insta::with_settings!({
            snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots"),
            prepend_module_to_snapshot => false,
            description => format!("just replay {name} {seed}"),
        }, {
            insta::assert_snapshot!(format!("{name}_seed_{seed}"), first.trace.text());
        });
    }
}
