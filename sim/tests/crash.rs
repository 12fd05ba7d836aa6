//! Crash durability under load: many concurrent clients, a power cut in the middle of their group
//! commits, a reboot, and every acknowledged write still there with its value.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use kvs_sim::{crash_durability, sweep, CrashWorkload};

/// Seeds from 2024 on until one whose power cut strikes while clients write (most do); every
/// run, whichever, must lose no acknowledged write.
#[test]
fn a_power_cut_under_load_loses_no_acknowledged_write() {
    let mut struck = None;
    for seed in 2024..2044 {
        let outcome = sweep::run(
            seed,
            crash_durability(CrashWorkload {
                writers: 32,
                writes_per_writer: 16,
                think_ms_max: 2,
                power_cut_chance: 1.0,
                unsynced_writes: kvs_sim::disk::Unsynced::Random,
            }),
        );
        let text = outcome.trace.text();
        assert!(
            outcome.violations.is_empty(),
            "seed {seed}: {:#?}\n{text}",
            outcome.violations
        );
        if text.contains(" failed: ") && text.contains(" -> 200 ") {
            struck = Some(seed);
            break;
        }
    }
    assert!(
        struck.is_some(),
        "no seed in 2024..2044 cut the power while clients wrote and were acknowledged"
    );
}
