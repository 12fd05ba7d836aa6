//! Crash durability under load: many concurrent clients, a power cut in the middle of their group
//! commits, a reboot, and every acknowledged write still there with its value.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use kvs_sim::{crash_durability, sweep, CrashWorkload};

#[test]
fn a_power_cut_under_load_loses_no_acknowledged_write() {
    let outcome = sweep::run(
        2024,
        crash_durability(CrashWorkload {
            writers: 32,
            writes_per_writer: 16,
            think_ms_max: 2,
            power_cut_chance: 1.0,
        }),
    );
    let text = outcome.trace.text();
    assert!(
        outcome.violations.is_empty(),
        "{:#?}\n{text}",
        outcome.violations
    );
    assert!(
        text.contains(" failed: "),
        "the power cut struck while clients wrote:\n{text}"
    );
    assert!(
        text.contains(" -> 200 "),
        "writes were acknowledged:\n{text}"
    );
}
