//! Scenario files: the runs the simulator sweeps are data in the repository's `scenarios/` folder,
//! so a new workload or a wider seed range is a reviewed edit of a YAML file, not of test code.

use std::path::PathBuf;

use serde::Deserialize;

use crate::scenario::CrashWorkload;

/// A scenario file: which scenario, under which seeds, with which workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The scenario's name; `crash_durability` is the only one so far.
    pub scenario: String,
    /// The pinned seeds it runs under.
    pub seeds: Seeds,
    /// The workload's shape.
    pub workload: CrashWorkload,
}

/// `count` consecutive seeds from `first`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seeds {
    /// The first seed.
    pub first: u64,
    /// How many.
    pub count: u64,
}

impl Seeds {
    /// The seeds, in order.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.first..self.first + self.count
    }
}

/// The folder of scenario files.
pub fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// Loads `scenarios/<name>.yaml`.
///
/// # Panics
/// If the file is missing or malformed (a test setup error, reported with the path and the key).
pub fn load(name: &str) -> ScenarioFile {
    let path = folder().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file: ScenarioFile =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        file.scenario,
        "crash_durability",
        "{}: unknown scenario",
        path.display()
    );
    file
}

/// Every scenario file's name (`scenarios/<name>.yaml`), sorted; the regression list is not one.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder())
        .expect("scenarios/ exists")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".yaml")?.to_owned())
        })
        .filter(|name| name != REGRESSIONS)
        .collect();
    names.sort();
    names
}

/// The regression list's file name in `scenarios/` (without `.yaml`).
pub const REGRESSIONS: &str = "regressions";

/// A seed that once broke an invariant: `cargo test` replays it forever after.
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Regression {
    /// The scenario file's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// What it broke, and what fixed it.
    pub found: String,
}

/// The regression list (`scenarios/regressions.yaml`).
///
/// # Panics
/// If the file is malformed, naming it and the reason.
pub fn regressions() -> Vec<Regression> {
    let path = folder().join(format!("{REGRESSIONS}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let list: Option<Vec<Regression>> =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let list = list.unwrap_or_default();
    let known = names();
    for r in &list {
        assert!(
            known.contains(&r.scenario),
            "{}: no scenario file named {:?}",
            path.display(),
            r.scenario
        );
    }
    list
}

/// Adds `new` to the regression list (those not on it yet), keeping the file's comments.
///
/// # Panics
/// If the file cannot be read or written.
pub fn record_regressions(new: &[Regression]) {
    let known = regressions();
    let path = folder().join(format!("{REGRESSIONS}.yaml"));
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if text.trim_end().ends_with("[]") {
        text = text.trim_end().trim_end_matches("[]").to_owned();
    }
    for r in new.iter().filter(|r| {
        !known
            .iter()
            .any(|k| k.scenario == r.scenario && k.seed == r.seed)
    }) {
        let line = serde_json::to_string(r).expect("a regression serializes");
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("- {line}\n"));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The first pinned seed of scenario file `name` (`seeds.first`).
///
/// # Panics
/// If the file is missing or has no `seeds.first`.
pub fn first_seed(name: &str) -> u64 {
    let path = folder().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    value["seeds"]["first"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: seeds.first: a number expected", path.display()))
}

/// Runs scenario file `name` under `seed` in a fresh runtime: its outcome, and the simulated
/// time it took.
///
/// # Panics
/// If the file is missing or malformed, or the run panics.
pub fn run_named(name: &str, seed: u64) -> (crate::Outcome, std::time::Duration) {
    let path = folder().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let timed = |outcome: std::pin::Pin<Box<dyn std::future::Future<Output = crate::Outcome>>>| {
        crate::sweep::run(seed, async move {
            let began = tokio::time::Instant::now();
            let outcome = outcome.await;
            (outcome, began.elapsed())
        })
    };
    match value["scenario"].as_str() {
        Some("cluster") => timed(Box::pin(crate::cluster::run(crate::cluster::load(name)))),
        Some("crash_durability") => timed(Box::pin(crate::crash_durability(load(name).workload))),
        other => panic!("{}: unknown scenario {other:?}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_file_loads() {
        let names = names();
        regressions();
        assert!(names.len() >= 2, "{names:?}");
        for name in names {
            let path = folder().join(format!("{name}.yaml"));
            let text = std::fs::read_to_string(&path).unwrap();
            let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
            let seeds = match value["scenario"].as_str() {
                Some("cluster") => crate::cluster::load(&name).seeds,
                Some("crash_durability") => load(&name).seeds,
                other => panic!("{}: unknown scenario {other:?}", path.display()),
            };
            assert!(seeds.count > 0, "{name}: no seeds");
        }
    }

    #[test]
    #[should_panic(expected = "unknown field `clients`")]
    fn a_misspelt_cluster_key_is_refused() {
        let _: crate::cluster::ClusterScenario = serde_yaml_ng::from_str(
            "scenario: cluster\nabout: x\nseeds: {first: 0, count: 1}\nnodes: 2\nliveness_budget_ms: 1\n\
             workload: {clients: 1, ops_per_client: 1, keys: 1, delete_ratio: 0, think_ms_max: 1}\n",
        )
        .unwrap();
    }

    #[test]
    #[should_panic(expected = "unknown field")]
    fn a_misspelt_key_is_refused() {
        let _: ScenarioFile = serde_yaml_ng::from_str(
            "scenario: crash_durability\nseeds: {first: 0, count: 1}\nworkload: {writers: 1, writes_per_writer: 1, think_ms_max: 1, power_cut_chanse: 1.0}\n",
        )
        .unwrap();
    }
}
