//! Runs the madsim simulator (the `kvs-sim` crate) from a plain `cargo test`.
//!
//! The simulator compiles only under `--cfg madsim`, which changes every crate that depends on
//! madsim-tokio, so it cannot share this build: this test runs a nested
//! `cargo test -p kvs-sim` with that cfg, in its own target directory (`target/madsim`) so that
//! neither build invalidates the other (`$CARGO_TARGET_DIR/madsim` when that is set). While it
//! builds, it prints which phase it is in. `KVS_SIM_SEED` passes through to replay one seed.

#![cfg(not(madsim))]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How often, at most, a "still compiling" line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Where the nested build goes: `madsim` under the outer build's target directory
/// (`CARGO_TARGET_DIR` when set, else `target/`), so that a user who moved one moved both.
fn madsim_target_dir(workspace: &Path, cargo_target_dir: Option<OsString>) -> PathBuf {
    match cargo_target_dir {
        Some(dir) => workspace.join(dir).join("madsim"),
        None => workspace.join("target").join("madsim"),
    }
}

/// A line on the terminal now, past libtest's capture: the nested build is long and otherwise
/// silent (the test's own output is only shown once it ends).
fn progress(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "    simulator: {line}");
}

#[test]
fn the_simulator_passes() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = madsim_target_dir(workspace, std::env::var_os("CARGO_TARGET_DIR"));
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .arg("test")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["-p", "kvs-sim"])
        .env("RUSTFLAGS", "--cfg madsim")
        .env("CARGO_TARGET_DIR", &target)
        // These would override RUSTFLAGS or wrap rustc in ways meant for the outer build only.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Inherited anyway; named here because replaying a seed depends on it.
    if let Some(seed) = std::env::var_os("KVS_SIM_SEED") {
        cargo.env("KVS_SIM_SEED", seed);
    }
    let begun = Instant::now();
    progress(&format!(
        "building kvs-sim with --cfg madsim in {} (a first build takes a few minutes)",
        target.display()
    ));
    let mut child = cargo.spawn().expect("cargo runs");
    let mut stdout_pipe = child.stdout.take().expect("piped stdout");
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text);
        text
    });
    let stderr = follow_cargo(
        BufReader::new(child.stderr.take().expect("piped stderr")),
        begun,
        progress,
    );
    let stdout = stdout_reader.join().expect("stdout reader");
    let status = child.wait().expect("cargo exits");
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(status.success(), "the simulator failed: {status}");

    let passed = passed_tests(&stdout);
    progress(&format!(
        "{passed} tests passed in {} s",
        begun.elapsed().as_secs()
    ));
    assert!(
        passed > 0,
        "the simulator run reported no passed test: is kvs-sim built without --cfg madsim?"
    );
}

/// Reads cargo's stderr to its end, saying which phase the nested run is in (compiling, how
/// many crates, running which test binary); returns all of it.
fn follow_cargo(stderr: impl BufRead, begun: Instant, mut report: impl FnMut(&str)) -> String {
    let mut all = String::new();
    let mut compiled = 0;
    let mut last_progress = Instant::now();
    for line in stderr.lines() {
        let Ok(line) = line else { break };
        let trimmed = line.trim_start();
        if let Some(krate) = trimmed.strip_prefix("Compiling ") {
            compiled += 1;
            if compiled == 1 || last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                report(&format!("compiling ({compiled} crates so far: {krate})"));
            }
        } else if trimmed.starts_with("Finished ") {
            report(&format!(
                "built ({compiled} crates compiled) after {} s",
                begun.elapsed().as_secs()
            ));
        } else if let Some(binary) = trimmed.strip_prefix("Running ") {
            report(&format!("running {binary}"));
        }
        all.push_str(&line);
        all.push('\n');
    }
    all
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

#[test]
fn the_nested_build_goes_under_the_outer_target_dir() {
    let root = Path::new("/w");
    assert_eq!(madsim_target_dir(root, None), Path::new("/w/target/madsim"));
    assert_eq!(
        madsim_target_dir(root, Some("/elsewhere/t".into())),
        Path::new("/elsewhere/t/madsim")
    );
    assert_eq!(
        madsim_target_dir(root, Some("rel".into())),
        Path::new("/w/rel/madsim")
    );
}

#[test]
fn the_nested_build_reports_its_phases() {
    let cargo = "   Compiling madsim v0.2.34\n   Compiling kvs v0.1.0 (/w)\n    \
                 Finished `test` profile\n     Running tests/crash.rs (x)\nnoise\n";
    let mut lines = Vec::new();
    let all = follow_cargo(cargo.as_bytes(), Instant::now(), |l| {
        lines.push(l.to_owned())
    });
    assert_eq!(all, cargo);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("compiling (1 crates so far: madsim"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("built (2 crates compiled)"),
        "{lines:?}"
    );
    assert_eq!(lines[2], "running tests/crash.rs (x)");
}
