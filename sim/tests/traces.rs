//! Every scenario's first pinned seed, run twice: the two timelines must be equal line for line
//! (a mismatch names the first diverging line: madsim's own check misses divergence that changes
//! only outputs), and the timeline is snapshotted with insta into the repository's `snapshots/`
//! folder (`<scenario>_seed_<seed>.snap`), so that a change in behaviour shows up as a reviewable
//! diff of faults, client operations, convergence and decisions.
//!
//! A deliberate change: `just review` (cargo-insta) or `INSTA_UPDATE=always cargo test`, then
//! commit the new snapshots. With `CI=true` a mismatch fails instead of writing.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use kvs_sim::scenario_file;

#[test]
fn every_scenario_replays_its_first_seed_exactly_and_matches_its_snapshot() {
    for name in scenario_file::names() {
        let seed = scenario_file::first_seed(&name);
        let (first, _) = scenario_file::run_named(&name, seed);
        let (again, _) = scenario_file::run_named(&name, seed);
        let (a, b) = (first.trace.lines(), again.trace.lines());
        if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
            panic!(
                "{name} seed {seed} diverged at line {i}:\n  {}\n  {}",
                a[i], b[i]
            );
        }
        assert_eq!(a.len(), b.len(), "{name} seed {seed}: one run is longer");
        assert_eq!(first.trace.hash(), again.trace.hash());
        insta::with_settings!({
            snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots"),
            prepend_module_to_snapshot => false,
            description => format!("just replay {name} {seed}"),
        }, {
            insta::assert_snapshot!(format!("{name}_seed_{seed}"), first.trace.text());
        });
    }
}
