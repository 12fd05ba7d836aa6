//! `just sweep [SCENARIO] [N]`: N more seeds of a scenario (or of every scenario), from a random
//! start printed first, on every core, with a progress bar and a summary table.
//!
//! The parent never enters a simulation: it runs each (scenario, seed) in a child process of
//! itself (`sweep --one SCENARIO SEED`), as many at once as there are cores, because madsim allows
//! one simulation per process at a time (statics leak between runs, system threads are refused).
//! A failing seed prints its scenario, seed, broken invariants and replay command, and is added to
//! `scenarios/regressions.yaml`, which `cargo test` replays.

// A command-line tool, not node code: it reads the OS clock, spawns processes, writes files.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[cfg(madsim)]
mod tool;

#[cfg(madsim)]
fn main() {
    tool::main();
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("the sweep runs the simulator: build it with --cfg madsim (`just sweep`)");
    std::process::exit(2);
}
