//! Runs the madsim simulator (the `kvs-sim` crate) from a plain `cargo test`.
//!
//! The simulator compiles only under `--cfg madsim`, which changes every crate that depends on
//! madsim-tokio, so it cannot share this build: this test runs a nested
//! `cargo test -p kvs-sim` with that cfg, in its own target directory (`target/madsim`) so that
//! neither build invalidates the other. `KVS_SIM_SEED` passes through to replay one seed.

#![cfg(not(madsim))]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_simulator_passes() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .arg("test")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["-p", "kvs-sim"])
        .env("RUSTFLAGS", "--cfg madsim")
        .env("CARGO_TARGET_DIR", workspace.join("target").join("madsim"))
        // These would override RUSTFLAGS or wrap rustc in ways meant for the outer build only.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    // Inherited anyway; named here because replaying a seed depends on it.
    if let Some(seed) = std::env::var_os("KVS_SIM_SEED") {
        cargo.env("KVS_SIM_SEED", seed);
    }
    let output = cargo.output().expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        output.status.success(),
        "the simulator failed: {}",
        output.status
    );

    let passed = passed_tests(&stdout);
    assert!(
        passed > 0,
        "the simulator run reported no passed test: is kvs-sim built without --cfg madsim?"
    );
}

/// Sums `N passed` over libtest's `test result:` lines.
fn passed_tests(stdout: &str) -> u64 {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(" passed").next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn passed_tests_are_summed_over_every_test_binary() {
    let out = "running 2 tests\n\
               test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
               test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
               test result: ok. 9 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
    assert_eq!(passed_tests(out), 11);
    assert_eq!(passed_tests("running 0 tests\n"), 0);
}
