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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_file_loads() {
        let mut names: Vec<String> = std::fs::read_dir(folder())
            .expect("scenarios/ exists")
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                Some(name.strip_suffix(".yaml")?.to_owned())
            })
            .collect();
        names.sort();
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
