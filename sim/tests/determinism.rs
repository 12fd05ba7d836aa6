//! Determinism: one seed, one trace. Running a scenario twice with the same seed must produce the
//! same trace (compared by its stable hash and its text); another seed must produce another.
//!
//! madsim's own determinism check compares only the sequence of random draws; comparing what the
//! run observed catches divergence that changes only outputs.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use kvs_sim::{crash_durability, scenario_file, sweep};

fn trace_of(seed: u64) -> (u64, Vec<String>) {
    let outcome = sweep::run(
        seed,
        crash_durability(scenario_file::load("crash_sweep").workload),
    );
    assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
    (outcome.trace.hash(), outcome.trace.lines())
}

#[test]
fn the_same_seed_replays_the_same_trace_and_another_seed_does_not() {
    let (hash, lines) = trace_of(42);
    let (again, lines_again) = trace_of(42);
    assert_eq!(lines, lines_again, "seed 42 diverged");
    assert_eq!(hash, again);

    let (other, _) = trace_of(43);
    assert_ne!(hash, other, "seeds 42 and 43 gave the same trace");
}
