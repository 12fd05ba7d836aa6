//! The crash-durability sweep: the crash scenario under pinned seeds, or under the one seed in
//! `KVS_SIM_SEED` (`just replay <seed>`). A failure names its seeds.

#![cfg(madsim)]

use kvs_sim::{crash_durability, sweep, CrashWorkload};

/// Seeds every run covers; widen the range to search further, pin a failing one by adding it.
const PINNED: std::ops::Range<u64> = 0..32;

#[test]
fn acknowledged_writes_survive_crashes_under_every_pinned_seed() {
    let seeds = sweep::seeds(PINNED);
    sweep::sweep(&seeds, || async {
        let outcome = crash_durability(CrashWorkload::SWEEP).await;
        if std::env::var_os(sweep::SEED_VAR).is_some() {
            print!("{}", outcome.trace.text());
        }
        outcome
    });
}
