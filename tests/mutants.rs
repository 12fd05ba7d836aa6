//! The broken variants of `sim/mutants/` (README, "Proof that the tests catch bugs") still apply
//! to the code as it is: a patch that no longer applies proves nothing, and `just mutants` (30
//! minutes) is not run on every change, so this cheap check is. Each names what checks it.
#![cfg(not(madsim))]
// Runs git: test code may use the OS.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;
use std::process::Command;

#[test]
fn every_broken_variant_applies_to_the_current_code_and_names_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut patches: Vec<_> = std::fs::read_dir(root.join("sim/mutants"))
        .expect("sim/mutants")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    patches.sort();
    assert!(patches.len() >= 8, "the issue asks for at least 8 variants");
    let mut stale = Vec::new();
    for patch in &patches {
        let text = std::fs::read_to_string(patch).expect("a patch");
        assert!(
            text.lines().any(|l| l.starts_with("# check: ")),
            "{}: no `# check:` line",
            patch.display()
        );
        // `git apply --check` works in a checkout and outside one alike; it changes nothing.
        let out = Command::new("git")
            .arg("apply")
            .arg("--check")
            .arg(patch)
            .current_dir(root)
            .output()
            .expect("git runs");
        if !out.status.success() {
            stale.push(format!(
                "{}: {}",
                patch.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "patches that no longer apply (make them again from the code as it is):\n{}",
        stale.join("\n")
    );
}
