//! The seam rule: outside the hosts and the binary's edge, code never touches the OS clock, OS
//! randomness, threads, sockets, the file system or the environment directly; it goes through the
//! actor seam (`Context`: clock, seeded RNG, timers, mailboxes), so the simulator can decide all of
//! it.
//!
//! Clippy enforces the rule: the workspace's `clippy.toml` lists what is disallowed, CI lints both
//! builds with `-D warnings`, and `src/host/`, `src/main.rs`, `src/cli.rs`, `src/telemetry.rs`,
//! `Config::load`'s file I/O, test modules and test crates opt out with an `#[allow]`. Clippy
//! resolves paths, so `use tokio::{spawn, time}` or `std::fs` cannot slip through as they could
//! past a text scan. But it skips an entry whose crate is not in the build without a word, and only
//! warns about an entry whose item is missing, so this test proves each entry bites: it lints
//! `tests/seam_fixture`, which breaks every entry under its `violations` feature, in the normal
//! build and under `--cfg madsim`, each in its own target directory (`seam-check` and
//! `seam-check/madsim` under the target directory).
#![cfg(not(madsim))]
// Runs cargo and times it: test code may use the OS.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// The rule's configuration.
const CLIPPY_TOML: &str = include_str!("../clippy.toml");

/// A `clippy.toml` entry or a clippy finding: which lint, and the path as `clippy.toml` spells it.
type Entry = (Lint, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lint {
    /// `clippy::disallowed_methods`, from `disallowed-methods`.
    Method,
    /// `clippy::disallowed_types`, from `disallowed-types`.
    Type,
}

/// The two builds CI lints.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Build {
    /// `cargo clippy`: madsim-tokio is real tokio.
    Normal,
    /// `RUSTFLAGS="--cfg madsim"`: madsim-tokio's time, tasks, net and signals are madsim's.
    Simulator,
}

/// Whether only the simulator build can name `path`: its crate is in that build's graph alone
/// (madsim; rand 0.8, rand_core 0.6 and getrandom 0.2, which madsim brings), or it is
/// madsim-tokio's own runtime, an alias of tokio's in the normal build, where the `tokio::` entries
/// name it.
fn simulator_only(path: &str) -> bool {
    ["madsim::", "madsim_tokio::", "rand::", "rand_core::"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
        || path == "getrandom::getrandom"
}

/// Whether only the normal build can name `path`: real tokio, which madsim-tokio replaces (or
/// leaves out) in the simulator build.
fn normal_only(path: &str) -> bool {
    path.starts_with("tokio::")
}

/// The entries of `clippy.toml` text: each `path = "…"` under `disallowed-methods` or
/// `disallowed-types`.
fn entries(toml: &str) -> BTreeSet<Entry> {
    let mut lint = None;
    let mut found = BTreeSet::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with("disallowed-methods") {
            lint = Some(Lint::Method);
        } else if line.starts_with("disallowed-types") {
            lint = Some(Lint::Type);
        } else if let Some(rest) = line.strip_prefix("{ path = \"") {
            let path = rest.split('"').next().expect("a closing quote");
            let lint = lint.unwrap_or_else(|| panic!("{path} outside a disallowed-* list"));
            found.insert((lint, path.to_owned()));
        }
    }
    found
}

/// What clippy's output names: each "use of a disallowed method|type `path`".
fn named(output: &str) -> BTreeSet<Entry> {
    let mut found = BTreeSet::new();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("error: use of a disallowed ") else {
            continue;
        };
        let (lint, rest) = if let Some(rest) = rest.strip_prefix("method `") {
            (Lint::Method, rest)
        } else if let Some(rest) = rest.strip_prefix("type `") {
            (Lint::Type, rest)
        } else {
            panic!("unexpected clippy line: {line}");
        };
        let path = rest.split('`').next().expect("a closing backtick");
        found.insert((lint, path.to_owned()));
    }
    found
}

/// `error:` lines that are neither a disallowed-* finding nor cargo's closing "could not compile".
fn other_errors(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.starts_with("error"))
        .filter(|l| !l.starts_with("error: use of a disallowed "))
        .filter(|l| !l.starts_with("error: could not compile `seam-fixture`"))
        .collect()
}

/// Where the nested builds go: under `CARGO_TARGET_DIR` when the outer build was given one, else
/// under the workspace's `target`.
fn target_dir(workspace: &Path) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace.join(dir))
        .unwrap_or_else(|| workspace.join("target"));
    base.join("seam-check")
}

/// One nested clippy at a time: the machine may have few cores, and each run uses all of them.
static CLIPPY: Mutex<()> = Mutex::new(());

/// Runs `cargo clippy -p seam-fixture -- -D warnings` in `build`, with or without the
/// `violations` feature; returns whether it passed, and its stderr.
fn clippy(build: Build, violations: bool) -> (bool, String) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut target = target_dir(workspace);
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .arg("clippy")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["-p", "seam-fixture"]);
    if violations {
        cargo.args(["--features", "violations"]);
    }
    cargo
        .args(["--", "-D", "warnings"])
        // These would override RUSTFLAGS or wrap rustc in ways meant for the outer build only;
        // clippy must find the workspace's clippy.toml by itself, as in CI.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_CONF_DIR");
    match build {
        Build::Normal => {
            cargo.env_remove("RUSTFLAGS");
        }
        Build::Simulator => {
            cargo.env("RUSTFLAGS", "--cfg madsim");
            target = target.join("madsim");
        }
    }
    cargo.env("CARGO_TARGET_DIR", &target);

    let _one_at_a_time = CLIPPY.lock().unwrap_or_else(|e| e.into_inner());
    let start = Instant::now();
    let output = cargo.output().expect("cargo runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprint!("{stderr}");
    eprintln!(
        "seam_rules: cargo clippy -p seam-fixture ({build:?} build, violations: {violations}) \
         in {}: {:.1?}, {}",
        target.display(),
        start.elapsed(),
        output.status,
    );
    (output.status.success(), stderr)
}

/// Clippy, with the fixture's violations, fails in `build` naming exactly the entries that build
/// can name, each under its own lint, and for no other reason.
fn every_entry_bites(build: Build) {
    let expected: BTreeSet<Entry> = entries(CLIPPY_TOML)
        .into_iter()
        .filter(|(_, path)| match build {
            Build::Normal => !simulator_only(path),
            Build::Simulator => !normal_only(path),
        })
        .collect();
    let (passed, output) = clippy(build, true);
    assert!(!passed, "clippy passed on the violations ({build:?} build)");
    let found = named(&output);
    let missed: Vec<_> = expected.difference(&found).collect();
    let unexpected: Vec<_> = found.difference(&expected).collect();
    assert!(
        missed.is_empty() && unexpected.is_empty(),
        "{build:?} build: entries clippy did not report (a wrong path, or a violation missing from \
         tests/seam_fixture): {missed:?}; reported but not expected here: {unexpected:?}"
    );
    for lint in ["clippy::disallowed-methods", "clippy::disallowed-types"] {
        assert!(
            output.contains(&format!("`-D {lint}` implied by `-D warnings`")),
            "{lint} not named"
        );
    }
    assert_eq!(
        other_errors(&output),
        Vec::<&str>::new(),
        "failed otherwise"
    );
    assert!(
        !output.contains("does not refer to"),
        "a clippy.toml entry does not resolve ({build:?} build)"
    );
}

#[test]
fn the_normal_build_catches_every_entry() {
    every_entry_bites(Build::Normal);
}

#[test]
fn the_simulator_build_catches_every_entry() {
    every_entry_bites(Build::Simulator);
}

/// Without violations the fixture passes: its host-like module's `#![allow]` reaches a nested
/// module, and an item-level `#[allow]` covers its function, as in `src/`.
#[test]
fn the_exemptions_keep_the_fixture_clean() {
    for build in [Build::Normal, Build::Simulator] {
        let (passed, output) = clippy(build, false);
        assert!(passed, "clippy failed without violations ({build:?} build)");
        assert!(
            !output.contains("does not refer to") && !output.contains("disallowed"),
            "{build:?} build warned"
        );
    }
}

/// Where the rule may be lifted in `src/`, and how many `allow`s each place holds: the hosts, the
/// binary's edges, config file loading and two test modules. An `allow` anywhere else is a hole in
/// the rule, which clippy itself would never report.
const EXEMPTIONS: &[(&str, usize)] = &[
    ("api/mod.rs", 1),
    ("cli.rs", 1),
    ("config.rs", 2),
    ("host/mod.rs", 1),
    ("main.rs", 1),
    ("telemetry.rs", 1),
];

#[test]
fn the_rule_is_lifted_only_where_it_is_meant_to_be() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut pending = vec![src.clone()];
    // Bounded by the size of the tree (no symlinks are followed).
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                let allows = text
                    .lines()
                    .filter(|l| l.contains("allow(") && l.contains("clippy::disallowed_"))
                    .count();
                if allows > 0 {
                    let relative = path.strip_prefix(&src).expect("under src");
                    let relative = relative.to_string_lossy().replace('\\', "/");
                    found.push((relative, allows));
                }
            }
        }
    }
    found.sort();
    let expected: Vec<(String, usize)> = EXEMPTIONS
        .iter()
        .map(|(path, n)| ((*path).to_owned(), *n))
        .collect();
    assert_eq!(found, expected, "the seam rule is lifted somewhere new");
}

#[test]
fn entries_and_findings_are_parsed() {
    let toml = r#"
# { path = "commented::out", reason = "x" },
disallowed-methods = [
    { path = "std::fs::read", reason = "the seam" },
    # a comment
    { path = "madsim::time::sleep", reason = "the seam", allow-invalid = true },
]

disallowed-types = [
    { path = "std::fs::File", reason = "the seam" },
]
"#;
    let method = |p: &str| (Lint::Method, p.to_owned());
    let ty = |p: &str| (Lint::Type, p.to_owned());
    assert_eq!(
        entries(toml),
        BTreeSet::from([
            method("std::fs::read"),
            method("madsim::time::sleep"),
            ty("std::fs::File")
        ])
    );
    let output = "\
    Checking seam-fixture v0.0.0
error: use of a disallowed method `std::fs::read`
  --> tests/seam_fixture/src/violations.rs:1:1
   = note: the seam
   = note: `-D clippy::disallowed-methods` implied by `-D warnings`
error: use of a disallowed type `std::fs::File`
error: use of a disallowed method `std::fs::read`
error: mismatched types
error: could not compile `seam-fixture` (lib) due to 4 previous errors
";
    assert_eq!(
        named(output),
        BTreeSet::from([method("std::fs::read"), ty("std::fs::File")])
    );
    assert_eq!(other_errors(output), ["error: mismatched types"]);
    // The real list: every lint has entries, and the simulator-only ones are not all of them.
    let real = entries(CLIPPY_TOML);
    assert!(real.iter().any(|(l, _)| *l == Lint::Method));
    assert!(real.iter().any(|(l, _)| *l == Lint::Type));
    assert!(real.iter().any(|(_, p)| simulator_only(p)));
    assert!(real.iter().any(|(_, p)| normal_only(p)));
    assert!(real
        .iter()
        .any(|(_, p)| !simulator_only(p) && !normal_only(p)));
}
